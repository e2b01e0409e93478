"""Task cards, run configs and a run folder's run_config.yaml are files from anywhere: no script they name runs
without --trust-remote-code, a card never replaces a built-in task, and YAML aliases (a few KB that expand to
gigabytes, or recurse) are refused naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import hftl
from hftl.tasks import available_tasks, get_task

CARD_HEAD = (
    "modality: text\nauto_model: AutoModelForSequenceClassification\npipeline_tag: text-classification\n"
)
# 2 KB of nested aliases: each level repeats the one before ten times (ten levels: 10^10 strings)
ALIAS_BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)
)


def evil_script(tmp_path: Path) -> tuple[Path, Path]:
    """A metric script that would leave a marker file if anything ran it."""
    marker = tmp_path / "it-ran"
    script = tmp_path / "evil" / "evil.py"
    script.parent.mkdir()
    script.write_text(f"open({str(marker)!r}, 'w').write('ran')\n", encoding="utf-8")
    return script, marker


def test_a_metric_that_is_not_built_in_runs_no_script_without_trust_remote_code(tmp_path):
    from hftl.training.metrics import load_metrics

    script, marker = evil_script(tmp_path)
    for name in (str(script), "bleu"):
        with pytest.raises(hftl.ConfigError, match=r"not built in .* --trust-remote-code"):
            load_metrics(["accuracy", name])
    assert not marker.exists()
    assert [type(m).__name__ for m in load_metrics(["accuracy", "f1_macro"])] == ["Accuracy", "MacroF1"]


def test_a_task_card_may_not_replace_a_built_in_task(tmp_path):
    builtin = get_task("text")
    card = tmp_path / "mine.yaml"
    card.write_text("name: text\n" + CARD_HEAD, encoding="utf-8")
    with pytest.raises(hftl.ConfigError, match=r"mine.yaml: the card names a built-in task \('text'\)"):
        get_task(str(card))
    assert get_task("text") is builtin


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("columns: [text]\n", "columns must be a mapping"),
        ("metrics: 5\n", "metrics a list of names"),
        ("columns: {input: text}\n", "columns must be a mapping"),
        ("columns: {inputs: [text]}\n", "columns must be a mapping of input: .names. and label"),
        ("defaults: [1, 2]\n", "defaults must be a mapping of setting: value"),
        ("defaults: x\n", "defaults must be a mapping of setting: value"),
        ("defaults: {1: 2}\n", "defaults must be a mapping of setting: value"),
        ("description: [1]\n", "description must be text"),
    ],
)
def test_a_task_card_of_the_wrong_shape_is_one_error_naming_it(tmp_path, extra, message):
    card = tmp_path / "odd.yaml"
    card.write_text("name: odd\n" + CARD_HEAD + extra, encoding="utf-8")
    with pytest.raises(hftl.ConfigError, match=rf"odd.yaml: .*{message}"):
        get_task(str(card))
    card.write_text("name: odd\n" + CARD_HEAD.replace("AutoModelForSequenceClassification", "pipeline"))
    with pytest.raises(hftl.ConfigError, match="auto_model must name a transformers AutoModelFor"):
        get_task(str(card))


def test_a_model_folders_run_config_cannot_bring_a_task_card(tmp_path, bert_dir):
    """A folder's run_config.yaml naming a card (here one that would also shadow `text` and run a metric script) is
    not followed: the model loads as the built-in task of its architecture, and no task is registered."""
    from transformers import AutoConfig

    from hftl.outputs.loading import task_of

    script, marker = evil_script(tmp_path)
    folder = tmp_path / "model"
    shutil.copytree(bert_dir, folder)
    card = folder / "card.yaml"
    card.write_text(f"name: sneaky\n{CARD_HEAD}metrics: [accuracy, {script}]\n", encoding="utf-8")
    (folder / "run_config.yaml").write_text(f"task: {card}\n", encoding="utf-8")
    before = available_tasks()
    assert task_of(str(folder), AutoConfig.from_pretrained(folder)).name == "text"
    assert available_tasks() == before and not marker.exists()
    assert hftl.load(folder) is not None


@pytest.mark.parametrize("text", ["[]\n", "1: 2\n", ALIAS_BOMB, "l: &a [*a]\n"])
def test_a_malformed_run_config_in_a_model_folder_is_one_error_naming_it(tmp_path, bert_dir, text):
    from hftl.outputs.card import RunRecord

    folder = tmp_path / "model"
    shutil.copytree(bert_dir, folder)
    (folder / "run_config.yaml").write_text(text, encoding="utf-8")
    for read in (hftl.load, RunRecord.read):
        with pytest.raises(hftl.ModelError, match=r"run_config.yaml"):
            read(folder)


def test_yaml_aliases_are_refused_in_run_configs_and_task_cards(tmp_path):
    from hftl.config import load_yaml

    config = tmp_path / "run.yaml"
    config.write_text("epochs: 3\n" + ALIAS_BOMB.replace("a0:", "labels:", 1), encoding="utf-8")
    with pytest.raises(hftl.ConfigError, match=r"cannot parse config file .*run.yaml: an alias \(\*a0\)"):
        load_yaml(config)
    card = tmp_path / "card.yaml"
    card.write_text("name: aliased\n" + CARD_HEAD + "x: &m [accuracy]\nmetrics: *m\n", encoding="utf-8")
    with pytest.raises(hftl.ConfigError, match=r"cannot read task card .*card.yaml: an alias"):
        get_task(str(card))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: {a: 1}\n", "model must be null or str"),
        ("output_dir: 7\n", "output_dir must be null or str"),
        ("class_weights: [1]\n", "class_weights must be str"),
        ("epochs: true\n", "epochs must be int"),
        ("lora_target_modules: [query, 5]\n", "lora_target_modules must be a list of names"),
        ("1: 2\n", "setting names must be words"),
    ],
)
def test_a_run_config_value_of_the_wrong_type_is_one_error_naming_the_setting(tmp_path, text, message):
    from hftl.config import load_yaml

    config = tmp_path / "run.yaml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(hftl.ConfigError, match=rf"run.yaml: {message}"):
        load_yaml(config)
    config.write_text("epochs: 3\nwarmup_ratio: 0\nlr: auto\nlora_target_modules: [query, value]\n")
    assert load_yaml(config)["lora_target_modules"] == ["query", "value"]


def test_a_task_cards_default_values_are_checked_and_a_missing_model_or_dataset_is_named(tmp_path, capsys):
    from hftl.cli import main

    card = tmp_path / "bare.yaml"
    card.write_text("name: bare\n" + CARD_HEAD + "defaults: {dataset: 5}\n", encoding="utf-8")
    args = ["train", "--task", str(card), "--case", "small_similar", "--output-dir", str(tmp_path / "out")]
    assert main([*args, "--model", "m"]) == 2
    assert "task card 'bare' defaults: dataset must be null or str, got '5'" in capsys.readouterr().err
    card.write_text("name: bare\n" + CARD_HEAD, encoding="utf-8")  # names no default model or dataset
    for given, missing in ((["--dataset", "d.csv"], "--model"), (["--model", "m"], "--dataset")):
        assert main([*args, *given]) == 2
        assert (
            f"no {missing}: task '{card}' names no default for it; pass {missing}" in capsys.readouterr().err
        )
    # before any trial, comparison or advice reads data (they load the splits first)
    auto = [a if a != "small_similar" else "auto" for a in args]
    for command in (
        auto,
        ["compare", *args[1:]],
        ["advise", *args[1:3], "--output-dir", str(tmp_path / "adv")],
    ):
        assert main([*command, "--model", "m"]) == 2, command
        assert f"no --dataset: task '{card}'" in capsys.readouterr().err, command
