from pathlib import Path

import pytest
import yaml

import hftl
from hftl.config import RunConfig, build_parser, explicit_cli_values, resolve_config

REPO = Path(__file__).resolve().parents[1]


def test_cli_over_yaml_over_task_card_over_defaults(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("task: text\ncase: large_similar\nepochs: 7\nlr: 0.001\nmodel: from-yaml/model\n")
    values = explicit_cli_values(["--config", str(config_file), "--epochs", "2", "--batch-size", "4"])
    config = resolve_config(values)
    assert config.epochs == 2  # CLI wins over YAML
    assert config.lr == 0.001 and config.model == "from-yaml/model"  # YAML wins over the task card
    assert config.dataset == hftl.get_task("text").defaults["dataset"]  # task card fills what is left
    assert config.batch_size == 4 and config.seed == 42  # dataclass defaults
    assert config.output_dir == "runs/text-large_similar"


def test_python_keywords_use_the_same_names():
    config = resolve_config({"task": "image", "case": "small_different", "keep_layers": 3, "batch_size": 16})
    assert (config.keep_layers, config.batch_size) == (3, 16)
    assert config.model == hftl.get_task("image").defaults["model"]


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"task": "image", "case": "medium"},
            r"unknown case 'medium'; valid cases: small_similar, small_different",
        ),
        (
            {"task": "image", "case": "small_similar", "strategy": "half"},
            r"valid strategys: head, partial, lora, full",
        ),
        ({"task": "image"}, r"no case given; choose --case from: small_similar"),
        ({"case": "small_similar"}, r"no task given; choose --task from: .*image"),
        ({"task": "image", "case": "small_similar", "epochs": 0}, r"epochs must be a positive integer"),
        (
            {"task": "image", "case": "small_similar", "seed": -5},
            r"--seed must be from 0 to 4294967295, got -5",
        ),
        (
            {"task": "image", "case": "small_similar", "btach_size": 3},
            r"unknown setting 'btach_size'.*batch_size",
        ),
    ],
)
def test_bad_settings_say_what_is_valid(values, message):
    with pytest.raises(hftl.ConfigError, match=message):
        resolve_config(values)


def test_unknown_yaml_key_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: image\ncase: small_similar\nlearning_rate: 0.1\n")
    with pytest.raises(hftl.ConfigError, match=r"bad.yaml: unknown setting 'learning_rate'"):
        resolve_config({"config": str(bad)})


def test_cli_rejects_unknown_case_with_choices(capsys):
    with pytest.raises(SystemExit):
        explicit_cli_values(["--task", "image", "--case", "tiny"])
    assert "invalid choice" in capsys.readouterr().err


def test_issue_flags_exist_on_the_cli():
    options = {opt for action in build_parser()._actions for opt in action.option_strings}
    for flag in (
        "--task",
        "--case",
        "--strategy",
        "--model",
        "--dataset",
        "--output-dir",
        "--epochs",
        "--batch-size",
        "--lr",
        "--seed",
        "--keep-layers",
        "--init",
        "--mixed-precision",
        "--resume",
        "--config",
        "--merge-lora",
    ):
        assert flag in options, flag


def test_config_round_trips_through_yaml():
    config = RunConfig(task="image", case="small_similar", epochs=5)
    assert RunConfig(**yaml.safe_load(config.to_yaml())) == config


def test_every_shipped_run_config_is_valid():
    files = sorted((REPO / "configs" / "runs").glob("*.yaml"))
    assert files, "configs/runs/ should ship example run configs"
    for path in files:
        config = resolve_config({"config": str(path)})
        assert config.case in hftl.CASES


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"case": "auto"},
            r"--case auto runs trials over the data in memory; with --streaming name the case",
        ),
        ({"lr": "auto"}, r"--lr auto .* with --streaming give --lr"),
        ({"strategy": "contrastive"}, r"--strategy contrastive pairs every training example"),
        ({"unfreeze_schedule": 2}, r"--unfreeze-schedule counts epochs"),
        ({"num_workers": 2}, r"--num-workers: a stream is read in the training process"),
        (
            {"model": "vectors:glove.txt"},
            r"--model vectors: builds its vocabulary from the whole train split",
        ),
        (
            {"streaming": False, "max_steps": 10},
            r"--max-steps counts the optimizer steps of a --streaming run",
        ),
        ({"labels": ["only"]}, r"--labels takes two or more different label names"),
        (
            {"label_columns": "action,comedy"},
            r"^--streaming reads single-label data only: multi-label data \(--label-columns, --problem-type "
            r"multi_label, or a label column of lists\) trains without --streaming$",
        ),
        (
            {"problem_type": "multi_label"},
            r"^--streaming reads single-label data only: .* without --streaming$",
        ),
    ],
)
def test_streaming_refuses_what_needs_the_whole_dataset_naming_the_flag(values, message):
    settings = {"task": "text", "case": "large_similar", "streaming": True, "max_steps": 10, **values}
    with pytest.raises(hftl.ConfigError, match=message):
        RunConfig(**settings)


def test_labels_take_words_or_commas():
    assert RunConfig(task="text", case="small_similar", labels=["neg,pos", "neutral"]).labels == [
        "neg",
        "pos",
        "neutral",
    ]


def test_labels_and_label_columns_are_one_or_the_other():
    with pytest.raises(hftl.ConfigError, match=r"--label-columns names the labels .*; drop --labels"):
        RunConfig(task="text", case="small_similar", label_columns="a,b", labels="a,b")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"model": ""}, r"--model is empty \(an unset shell variable\?\)"),
        ({"dataset": " "}, r"--dataset is empty"),
        ({"output_dir": ""}, r"--output-dir is empty"),
        ({"max_grad_norm": -1.0}, r"max_grad_norm must be a finite number >= 0, got -1.0"),
        ({"weight_decay": float("nan")}, r"weight_decay must be a finite number >= 0, got nan"),
        ({"l2sp_alpha": float("inf")}, r"l2sp_alpha must be a finite number >= 0"),
        ({"lr": float("inf")}, r"lr must be a finite number > 0, got inf"),
        ({"head_lr": float("nan")}, r"head_lr must be a finite number > 0"),
        ({"scheduler": "linaer"}, r"unknown scheduler 'linaer'.*inverse_sqrt"),
        ({"scheduler": "reduce_lr_on_plateau"}, r"unknown scheduler"),
        ({"data_encoding": "utf-9"}, r"--data-encoding 'utf-9' is not an encoding"),
        ({"num_workers": -2}, r"num_workers must be >= 0"),
        ({"lora_dropout": 1.5}, r"lora_dropout must be in \[0, 1\)"),
        ({"lora_alpha": 0}, r"lora_alpha must be a positive integer"),
    ],
    ids=lambda value: str(value)[:40],
)
def test_a_value_that_would_train_wrongly_or_crash_later_is_refused_at_once(values, message):
    """Each of these used to run: a negative clipping norm turned every step around (gradient ascent, exit 0), an
    infinite rate saved a model of NaNs, an empty --model ("$MODEL" unset) trained the working directory's model,
    and the rest failed with a traceback after the model and data had loaded."""
    with pytest.raises(hftl.ConfigError, match=message):
        resolve_config({"task": "text", "case": "small_similar", "model": "m", "dataset": "d", **values})


@pytest.mark.parametrize("switch", ["overwrite_output_dir", "trust_remote_code", "augment", "streaming"])
def test_python_keywords_are_type_checked_so_false_as_a_string_is_not_true(switch, tmp_path):
    """``hftl.train(..., overwrite_output_dir="false")`` replaced the previous run: a non-empty string is truthy."""
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(hftl.ConfigError, match=rf"hftl.train: {switch} must be bool( or null)?, got .false."):
        hftl.train(
            task="text",
            case="small_similar",
            model="m",
            dataset="d",
            output_dir=tmp_path,
            **{switch: "false"},
        )
    assert (tmp_path / "metrics.json").is_file()
    with pytest.raises(hftl.ConfigError, match=r"threshold must be float or int, got '0.5'"):
        hftl.train(task="text", case="small_similar", model="m", dataset="d", threshold="0.5")
    with pytest.raises(hftl.ConfigError, match=r"the first argument is a YAML run config file"):
        hftl.train("image", case="small_similar")


@pytest.mark.parametrize("where", ["/", "~"])
def test_the_root_or_home_folder_is_no_runs_output_folder(where):
    from hftl.outputs.run_folder import check_output_dir

    with pytest.raises(hftl.ConfigError, match=r"is not a folder for one run; give one such as runs/NAME"):
        check_output_dir(Path(where), None, False)


def test_a_yaml_number_pyyaml_reads_as_a_string_is_taken_as_the_number(tmp_path):
    """YAML 1.1 wants 1.0e-2: ``weight_decay: 1e-2`` was refused as a string while ``lr: 1e-3`` passed."""
    from hftl.config import load_yaml

    path = tmp_path / "run.yaml"
    path.write_text("task: text\ncase: small_similar\nweight_decay: 1e-2\nlr: auto\nthreshold: 5e-1\n")
    assert load_yaml(path) == {
        "task": "text",
        "case": "small_similar",
        "weight_decay": 0.01,
        "lr": "auto",
        "threshold": 0.5,
    }


def test_python_keywords_in_any_reasonable_type_resolve_as_the_flags_do(tmp_path):
    """Paths, tuples and NumPy numbers are what Python code passes; a byte count is a shard size save_pretrained
    takes (as text it failed at the end of a run); one LoRA module name is a list of one, not of its letters."""
    import numpy as np

    from hftl.config import keyword_values

    config = resolve_config(
        keyword_values(
            {
                "task": "text",
                "case": "small_similar",
                "model": "m",
                "dataset": tmp_path,
                "labels": ("neg", "pos"),
                "text_columns": ("a", "b"),
                "regularizer": ("l2sp",),
                "lora_target_modules": "query",
                "max_shard_size": 500_000_000,
                "lr": np.float32(1e-3),
                "seed": np.int64(3),
            }
        )
    )
    assert config.labels == ["neg", "pos"] and config.text_columns == ["a", "b"]
    assert config.regularizer == ["l2sp"] and config.lora_target_modules == ["query"]
    assert config.max_shard_size == 500_000_000 and config.seed == 3 and config.lr == pytest.approx(1e-3)
    assert config.dataset == str(tmp_path.resolve())
    assert (
        resolve_config({"task": "text", "case": "small_similar", "max_shard_size": "2GiB"}).max_shard_size
        == "2GiB"
    )
    assert explicit_cli_values(["--max-shard-size", "1000"])["max_shard_size"] == 1000
