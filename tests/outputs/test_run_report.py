"""The report of every run: per-class scores and plots on the validation split beside metrics.json, linked from
the card, redrawn by `hftl report` from the saved predictions."""

from __future__ import annotations

import json

import pytest
from sklearn.metrics import precision_recall_fscore_support

from hftl.cli import main
from hftl.outputs.run_report import read_log
from tests.helpers import quick_train

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def reported_run(bert_dir, text_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("reported")
    return quick_train("text", "small_similar", bert_dir, text_folder, out, epochs=2)


def test_a_run_writes_per_class_scores_that_match_its_predictions(reported_run):
    out = reported_run.output_dir
    saved = json.loads((out / "eval_predictions.json").read_text())
    assert saved["split"] == "validation" and saved["labels"] == reported_run.metrics["labels"]
    assert len(saved["predictions"]) == reported_run.metrics["validation_examples"]
    accuracy = sum(p == r for p, r in zip(saved["predictions"], saved["references"], strict=True)) / len(
        saved["references"]
    )
    assert accuracy == pytest.approx(
        reported_run.metrics["best"]["eval_accuracy"]
    )  # the saved (best) weights
    report = json.loads((out / "classification_report.json").read_text())
    precision, recall, f1, support = precision_recall_fscore_support(
        saved["references"], saved["predictions"], labels=[0, 1], zero_division=0
    )
    for i, name in enumerate(saved["labels"]):
        assert report[name]["recall"] == pytest.approx(recall[i]) and report[name]["support"] == support[i]
        assert report[name]["precision"] == pytest.approx(precision[i])
    for name in ("confusion_matrix.png", "learning_curve.png"):
        assert (out / name).read_bytes().startswith(PNG), name
    card = (out / "README.md").read_text()
    assert (
        "## Per-class scores (validation split" in card
        and "![confusion matrix](confusion_matrix.png)" in card
    )
    assert f"| `{saved['labels'][0]}` | {report[saved['labels'][0]]['precision']:.4f}" in card


def test_hftl_report_redraws_from_the_saved_predictions(reported_run, tmp_path, capsys):
    out = reported_run.output_dir
    for name in ("confusion_matrix.png", "learning_curve.png", "classification_report.json"):
        (out / name).unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "confusion_matrix.png").read_bytes().startswith(PNG)
    assert json.loads((out / "classification_report.json").read_text())["split"] == "validation"
    assert main(["report", str(tmp_path)]) == 2
    assert "has no eval_predictions.json" in capsys.readouterr().err


def test_the_learning_curve_reads_losses_and_evaluations_and_skips_damaged_lines(tmp_path):
    log = tmp_path / "metrics.jsonl"
    lines = [
        '{"step": 2, "epoch": 0, "loss": 0.7, "lr": 0.01}',
        '{"step": 4, "ep',  # a line cut by a kill
        '{"epoch": 1, "step": 4, "eval_accuracy": 0.75, "eval_loss": 0.5}',
    ]
    log.write_text("\n".join(lines) + "\n")
    losses, evaluations = read_log(log)
    assert losses == [(2, 0.7)] and evaluations == [(4, {"eval_accuracy": 0.75, "eval_loss": 0.5})]


def test_hftl_report_never_draws_through_a_link_leading_out(reported_run, tmp_path, capsys):
    out = tmp_path / "copied-run"
    (out).mkdir()
    (out / "eval_predictions.json").write_bytes(
        (reported_run.output_dir / "eval_predictions.json").read_bytes()
    )
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / "confusion_matrix.png").symlink_to(victim)
    assert main(["report", str(out)]) != 0
    assert "holds links that lead out of it (confusion_matrix.png" in capsys.readouterr().err
    assert victim.read_text() == "keep"
