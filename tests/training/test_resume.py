"""A run resumed from a checkpoint ends with the same weights and metrics as a run that was never stopped (CPU, same
seed): a CLI run killed with SIGKILL and restarted with --resume auto (LoRA), and runs resumed from mid-epoch and
epoch-end checkpoints (full fine-tuning, head-only, word vectors, dropout, dataloader workers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hftl.training.checkpoints import list_checkpoints
from tests.helpers import assert_resume_matches, saved_state

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def command(task: str, model: Path, dataset: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hftl.train",
        "--task",
        task,
        "--case",
        "large_similar",
        "--model",
        str(model),
        "--dataset",
        str(dataset),
        "--output-dir",
        str(out),
        "--epochs",
        "8",
        "--batch-size",
        "8",
        "--save-steps",
        "3",
        "--save-total-limit",
        "3",
        "--seed",
        "7",
        "--report-to",
        "none",
        *extra,
    ]


def run_killed_then_resumed(args: list[str], out: Path) -> int:
    """Start the run, SIGKILL it as soon as a mid-run checkpoint is complete, then resume; returns the step it
    was killed after."""
    process = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        found = list_checkpoints(out / "checkpoints")
        if found and int(found[-1].name.split("-")[1]) >= 6:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "metrics.json").exists()
    killed_after = int(list_checkpoints(out / "checkpoints")[-1].name.split("-")[1])
    done = subprocess.run([*args, "--resume", "auto"], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Resumed from" in done.stdout
    return killed_after


def same_outcome(reference: Path, resumed: Path, loader) -> None:
    a, b = (
        json.loads((reference / "metrics.json").read_text()),
        json.loads((resumed / "metrics.json").read_text()),
    )
    assert a["history"] == b["history"] and a["global_step"] == b["global_step"]
    first, second = loader(reference), loader(resumed)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(model_dirs, data_for, tmp_path):
    """LoRA with dropout on the tiny BERT, killed in a real process (three interpreters: about 40 s); full
    fine-tuning's resume is checked in-process below, from mid-epoch and epoch-end checkpoints."""
    family, task, extra = "bert", "text", ["--strategy", "lora", "--lora-dropout", "0.2"]
    _, dataset = data_for[family]
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    done = subprocess.run(
        command(task, model_dirs[family], dataset, reference, *extra),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    killed_after = run_killed_then_resumed(
        command(task, model_dirs[family], dataset, interrupted, *extra), interrupted
    )
    assert 6 <= killed_after < json.loads((reference / "metrics.json").read_text())["global_step"]
    same_outcome(reference, interrupted, saved_state)


# 48 images / batch 8 = 6 steps per epoch, 64 texts = 8: step 4 is mid-epoch, the epoch's last step its end
@pytest.mark.parametrize("where", ["mid-epoch", "epoch-end"])
@pytest.mark.parametrize("setting", ["full-resnet-augmented", "head-vit", "word-vectors"])
def test_resume_from_mid_epoch_and_epoch_end_checkpoints_matches_an_uninterrupted_run(
    setting, where, model_dirs, data_for, glove_file, tmp_path
):
    image_step = 4 if where == "mid-epoch" else 6
    if setting == "full-resnet-augmented":
        resumed = assert_resume_matches(
            "image",
            "large_similar",
            model_dirs["resnet"],
            data_for["resnet"][1],
            tmp_path,
            at_step=image_step,
            augment=True,
        )
    elif setting == "head-vit":
        resumed = assert_resume_matches(
            "image", "small_similar", model_dirs["vit"], data_for["vit"][1], tmp_path, at_step=image_step
        )
    else:
        resumed = assert_resume_matches(
            "text",
            "large_similar",
            f"vectors:{glove_file}",
            data_for["bert"][1],
            tmp_path,
            lr=0.01,
            at_step=4 if where == "mid-epoch" else 8,
        )
    assert resumed.metrics["resumed_from"].endswith("e1b0" if where == "epoch-end" else "e0b4")


@pytest.mark.parametrize("at_step", [4, 8], ids=["mid-epoch", "epoch-end"])
def test_resume_with_dropout_is_exact_from_mid_epoch_and_epoch_end_checkpoints(
    at_step, bert_dir, text_folder, tmp_path
):
    """BERT with dropout, full fine-tuning: 64 examples / batch 8 = 8 steps per epoch, so step 8 is the checkpoint
    written at the end of the first epoch (the next epoch's DataLoader must draw its seed from the restored RNG)."""
    resumed = assert_resume_matches(
        "text", "large_similar", bert_dir, text_folder, tmp_path, at_step=at_step, strategy="full"
    )
    assert resumed.metrics["resumed_from"].endswith("e1b0" if at_step == 8 else "e0b4")


def test_resume_refuses_a_checkpoint_of_another_run_before_writing_anything(
    glove_file, text_folder, tmp_path
):
    from hftl.errors import ConfigError
    from tests.conftest import write_text_csv
    from tests.helpers import quick_train

    model = f"vectors:{glove_file}"
    out = tmp_path / "run"
    quick_train("text", "large_similar", model, text_folder, out, epochs=2, lr=0.01, seed=1)
    config_before = (out / "run_config.yaml").read_text()
    other = write_text_csv(tmp_path / "other-data", seeds=(21, 22))
    with pytest.raises(
        ConfigError,
        match=r"was made by a different run \(lr: 0.01 -> 0.05; seed: 1 -> 2; train_data: .*; validation_data",
    ):
        quick_train("text", "large_similar", model, other, out, epochs=3, lr=0.05, seed=2, resume="auto")
    assert (out / "run_config.yaml").read_text() == config_before
    # epochs may change on resume: the same run continues
    resumed = quick_train(
        "text", "large_similar", model, text_folder, out, epochs=3, lr=0.01, seed=1, resume="auto"
    )
    assert [h["epoch"] for h in resumed.metrics["history"]] == [1, 2, 3] and resumed.metrics["resumed_from"]


def test_resume_refuses_a_base_model_changed_at_the_same_path(bert_dir, text_folder, tmp_path):
    """The frozen weights are not in a checkpoint (they are rebuilt from --model): a model re-saved at that path with
    other weights would resume into a network that never trained, so the fingerprint holds their digest."""
    import shutil

    from transformers import AutoModelForSequenceClassification

    from hftl.errors import ConfigError
    from hftl.training.checkpoints import check_same_run
    from tests.helpers import quick_train

    model = shutil.copytree(bert_dir, tmp_path / "model")
    out = tmp_path / "run"
    quick_train("text", "small_similar", model, text_folder, out, epochs=1, strategy="partial", seed=1)
    torch.manual_seed(123)  # the same architecture re-saved at the same path with other weights
    AutoModelForSequenceClassification.from_config(
        AutoModelForSequenceClassification.from_pretrained(model).config
    ).save_pretrained(model)
    with pytest.raises(
        ConfigError, match=r"was made by a different run \(frozen_weights: '[0-9a-f]{32}' -> '"
    ):
        quick_train(
            "text",
            "small_similar",
            model,
            text_folder,
            out,
            epochs=2,
            strategy="partial",
            seed=1,
            resume="auto",
        )
    # checkpoints written before the digest existed still resume: an entry they lack is not compared
    check_same_run({"seed": 1}, {"seed": 1, "frozen_weights": "abc"}, out)
    with pytest.raises(ConfigError, match="seed: 1 -> 2"):
        check_same_run({"seed": 1}, {"seed": 2, "frozen_weights": "abc"}, out)


def test_a_run_resumes_however_its_model_and_data_paths_are_typed(
    resnet_dir, image_folder, tmp_path, monkeypatch
):
    """``--model ./m/``, ``m`` and its absolute path are one model, and the same for ``--dataset``: a resume typed
    another way (or from another working directory) continues the run instead of refusing it."""
    import shutil

    from hftl.errors import ConfigError
    from hftl.training.checkpoints import check_same_run
    from tests.helpers import quick_train

    shutil.copytree(resnet_dir, tmp_path / "m")
    shutil.copytree(image_folder, tmp_path / "d")
    out = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    quick_train("image", "small_similar", "m", "d", out, epochs=1, seed=1)
    monkeypatch.chdir(tmp_path / "run")
    resumed = quick_train(
        "image", "small_similar", "../m/", str(tmp_path / "d"), out, epochs=2, seed=1, resume="auto"
    )
    assert [h["epoch"] for h in resumed.metrics["history"]] == [1, 2] and resumed.metrics["resumed_from"]
    # a checkpoint written before paths were resolved (model as typed) still matches from where it was typed, and
    # one from the earlier data reader (no data_reader entry: other data fingerprints) is not compared on its data
    monkeypatch.chdir(tmp_path)
    check_same_run({"model": "m"}, {"model": str((tmp_path / "m").resolve())}, out)
    vectors = tmp_path / "v.txt"
    vectors.write_text("the 0.1 0.2\n")
    check_same_run({"model": "vectors:v.txt"}, {"model": f"vectors:{vectors.resolve()}"}, out)
    old = {"train_data": "a", "validation_data": "b", "seed": 1}
    check_same_run(old, {"train_data": "c", "validation_data": "d", "seed": 1, "data_reader": 3}, out)
    check_same_run({**old, "data_reader": 2}, {**old, "train_data": "c", "data_reader": 3}, out)
    with pytest.raises(ConfigError, match="train_data: 'a' -> 'c'"):
        check_same_run({**old, "data_reader": 3}, {**old, "train_data": "c", "data_reader": 3}, out)
    with pytest.raises(ConfigError, match="seed: 1 -> 2"):  # the rest is still compared
        check_same_run({**old, "data_reader": 2}, {**old, "seed": 2, "data_reader": 3}, out)


def test_augmented_image_runs_refuse_checkpoints_trained_on_float_crops():
    from types import SimpleNamespace

    from hftl.config import RunConfig
    from hftl.data.image_stats import ImageStats
    from hftl.training.resume import run_fingerprint

    split = SimpleNamespace(_fingerprint="data")
    stats = ImageStats(8, 8, 1 / 255, (0.5,) * 3, (0.5,) * 3)

    def fingerprint(image_stats, augment):
        config = RunConfig(task="image", case="small_similar", augment=augment)
        inputs = SimpleNamespace(train=split, validation=split, stream=None, image_stats=image_stats)
        return run_fingerprint(config, None, inputs)

    assert fingerprint(stats, True)["augmentation"] == "crops rounded to uint8"
    # the pixels un-augmented image runs and text runs train on did not change: their checkpoints still resume
    assert "augmentation" not in fingerprint(stats, False) and "augmentation" not in fingerprint(None, True)


@pytest.mark.parametrize(
    "at_step, workers, eval_steps",
    [(8, 2, None), (4, 2, None), (4, 0, 4)],
    ids=["epoch-end-2-workers", "mid-epoch-2-workers", "evaluated-at-the-checkpoint-step"],
)
def test_resume_is_exact_whatever_the_loaders_start_or_skip(
    bert_dir, text_folder, tmp_path, at_step, workers, eval_steps
):
    """A loader draws its workers' seed from the global RNG, which dropout reads: persistent workers drew it once
    where a resumed run's fresh loaders drew it again, and an --eval-steps evaluation drew after the checkpoint of
    its step, which a resumed run does not repeat; either way the resumed run's dropout parted from the run it
    continued. Workers start afresh each epoch, and a mid-epoch evaluation leaves the RNG as it was."""
    assert_resume_matches(
        "text",
        "large_similar",
        bert_dir,
        text_folder,
        tmp_path,
        at_step=at_step,
        strategy="full",
        num_workers=workers,
        eval_steps=eval_steps,
    )


def test_mid_epoch_evaluations_do_not_change_what_trains(bert_dir, text_folder, tmp_path):
    from tests.helpers import quick_train

    plain, evaluated = (
        quick_train("text", "large_similar", bert_dir, text_folder, tmp_path / name, epochs=2, **extra)
        for name, extra in (("plain", {}), ("evaluated", {"eval_steps": 3}))
    )
    assert plain.metrics["history"] == evaluated.metrics["history"]
    first, second = plain.model.state_dict(), evaluated.model.state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_the_number_of_dataloader_workers_does_not_change_a_run(bert_dir, text_folder, tmp_path):
    from tests.helpers import quick_train

    runs = [
        quick_train(
            "text", "large_similar", bert_dir, text_folder, tmp_path / str(n), epochs=2, num_workers=n
        )
        for n in (0, 2)
    ]
    assert runs[0].metrics["history"] == runs[1].metrics["history"]
    first, second = (run.model.state_dict() for run in runs)
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_a_resume_without_epochs_reads_its_runs_epochs_from_run_config(tmp_path):
    from hftl.config import RunConfig
    from hftl.training.resume import resumed_epochs

    config = RunConfig(task="image", case="small_similar", output_dir=str(tmp_path), resume="auto")
    assert resumed_epochs(config) is None  # no run yet
    (tmp_path / "run_config.yaml").write_text("task: image\nepochs: 7\n", encoding="utf-8")
    assert resumed_epochs(config) == 7
    assert resumed_epochs(config.replace(epochs=2)) is None  # given: the flag decides
    assert resumed_epochs(config.replace(resume=None)) is None  # a new run
    for damaged in ("epochs: [7]\n", "epochs: true\n", "- 1\n", "a: &x [*x]\n"):
        (tmp_path / "run_config.yaml").write_text(damaged, encoding="utf-8")
        assert resumed_epochs(config) is None, damaged


@pytest.mark.parametrize(
    "changed",
    [
        {"lora_alpha": 64},
        {"lora_dropout": 0.0},
        {"regularizer": "l2sp", "l2sp_alpha": 10.0},
        {"head_lr": 1.0},
        {"layer_decay": 0.5},
        {"unfreeze_schedule": 1},
        {"metric_for_best": "loss"},
        {"feature_cache": False},
    ],
    ids=lambda changed: ",".join(changed),
)
def test_resume_refuses_changed_training_settings_before_writing_anything(
    changed, lora_run, bert_dir, text_folder
):
    """An adapter's scaling, a conservative term, a block's rate, when a block thaws, how the best epoch is chosen,
    and whether features are cached change what training does: a checkpoint does not resume into other values of
    them (the optimizer would restore the old rates under a run record that names the new ones)."""
    from hftl.errors import ConfigError
    from tests.helpers import quick_train

    out, settings = lora_run
    before = {name: (out / name).read_bytes() for name in ("run_config.yaml", "transfer_plan.json")}
    with pytest.raises(ConfigError, match=r"was made by a different run \(training\.\w+"):
        quick_train(**{**settings, **changed, "epochs": 2, "resume": "auto"})
    assert {name: (out / name).read_bytes() for name in before} == before


@pytest.fixture(scope="module")
def lora_run(bert_dir, text_folder, tmp_path_factory):
    """A one-epoch LoRA run on the tiny BERT, with the settings that made it."""
    from tests.helpers import quick_train

    out = tmp_path_factory.mktemp("lora-run") / "run"
    settings = dict(
        task="text",
        case="small_similar",
        model=bert_dir,
        dataset=text_folder,
        output_dir=out,
        strategy="lora",
        lora_alpha=16,
        lora_dropout=0.1,
        seed=1,
    )
    quick_train(**settings, epochs=1)
    return out, settings


def test_resume_refuses_class_weights_edited_at_the_same_path(glove_file, text_folder, tmp_path):
    from hftl.errors import ConfigError
    from tests.helpers import quick_train

    weights = tmp_path / "weights.json"
    weights.write_text('{"negative": 1.0, "positive": 1.0}')
    settings = dict(model=f"vectors:{glove_file}", class_weights=str(weights), seed=1)
    out = tmp_path / "run"
    quick_train("text", "large_similar", dataset=text_folder, output_dir=out, epochs=1, **settings)
    weights.write_text('{"negative": 1000.0, "positive": 1.0}')
    with pytest.raises(ConfigError, match=r"different run \(training\.class_weights: '[0-9a-f]{16}' -> '"):
        quick_train(
            "text", "large_similar", dataset=text_folder, output_dir=out, epochs=2, resume="auto", **settings
        )


def test_a_checkpoint_from_before_the_training_settings_were_compared_is_one_error_when_they_differ(
    lora_run, tmp_path
):
    """Its fingerprint lacks them, so it gets as far as loading: another LoRA rank's tensors are then one error
    naming the file, not torch's shape mismatch."""
    import shutil

    from hftl.errors import ConfigError
    from hftl.training.checkpoints import list_checkpoints, write_checksums
    from tests.helpers import quick_train

    out, settings = lora_run
    copy = Path(shutil.copytree(out, tmp_path / "run"))
    for checkpoint in list_checkpoints(copy / "checkpoints"):
        progress = json.loads((checkpoint / "progress.json").read_text())
        del progress["fingerprint"]["training"]
        (checkpoint / "progress.json").write_text(json.dumps(progress))
        write_checksums(checkpoint)
    with pytest.raises(ConfigError, match=r"trainable.safetensors does not fit this run \(RuntimeError"):
        quick_train(**{**settings, "output_dir": copy, "lora_r": 2, "epochs": 2, "resume": "auto"})
