"""A model folder or run folder copied in part, or cut short, is one error naming the file and what to do: never a
raw JSON or safetensors traceback, and never "the Hub could not provide it" for a folder that is right there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import hftl
from hftl.cli import main
from tests.helpers import quick_train


def _cut_short(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.fixture(scope="module")
def lora_run(bert_dir, text_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("damaged") / "run"
    return quick_train(
        "text", "small_similar", bert_dir, text_folder, out, strategy="lora", epochs=1
    ).output_dir


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (
            lambda m: _cut_short(m / "model.safetensors"),
            r"from the folder .*model \(model.safetensors does not read",
        ),
        (lambda m: (m / "config.json").write_text(""), r"config.json is not valid JSON"),
        (
            lambda m: (m / "tokenizer.json").write_text(""),
            r"tokenizer of .*\(tokenizer.json is not valid JSON",
        ),
    ],
    ids=["weights cut short", "empty config", "empty tokenizer"],
)
def test_a_damaged_model_folder_is_one_error_naming_the_file(damage, named, bert_dir, text_folder, tmp_path):
    model = Path(shutil.copytree(bert_dir, tmp_path / "model"))
    damage(model)
    with pytest.raises(hftl.ModelError, match=named) as caught:
        quick_train("text", "small_similar", model, text_folder, tmp_path / "run", epochs=1)
    assert "Hub could not provide it" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("adapter_config.json", r"cannot read .*adapter_config.json: .*copy it again"),
        ("adapter_model.safetensors", r"cannot load .*run: adapter_model.safetensors does not read"),
    ],
)
def test_a_damaged_run_folder_loads_as_one_error_naming_the_file(name, named, lora_run, tmp_path):
    run = Path(shutil.copytree(lora_run, tmp_path / "run"))
    _cut_short(run / name, keep=10)
    with pytest.raises(hftl.ModelError, match=named):
        hftl.load(run)


@pytest.mark.parametrize("name", ["eval_predictions.json", "transfer_plan.json", "metrics.json"])
def test_hftl_report_and_the_card_name_a_damaged_run_file(name, lora_run, tmp_path, capsys):
    from hftl.outputs.card import RunRecord

    run = Path(shutil.copytree(lora_run, tmp_path / "run"))
    _cut_short(run / name, keep=10)
    if name == "eval_predictions.json":
        assert main(["report", str(run)]) == 2
        assert f"cannot read {run / name}" in capsys.readouterr().err
    else:
        with pytest.raises(hftl.ModelError, match=rf"cannot read .*{name}: "):
            RunRecord.read(run)
