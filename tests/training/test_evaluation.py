"""Honest evaluation: the best epoch is chosen on validation, a test split is scored once by the saved network and
never used to choose; early stopping; the loss is better when lower; a mistyped metric is refused."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

import hftl
from hftl.errors import ConfigError
from hftl.training.checkpoints import Progress
from hftl.training.evaluation import is_better, should_stop_early
from tests.conftest import sentences
from tests.helpers import quick_train


def _write(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def _flipped(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    swap = {"positive": "negative", "negative": "positive"}
    return [(text, swap[label]) for text, label in rows]


@pytest.fixture(scope="module")
def with_test_split(text_folder, tmp_path_factory) -> Path:
    """train + validation + a test split whose labels are all wrong: choosing on it would show."""
    root = tmp_path_factory.mktemp("reviews-with-test")
    for name in ("train.csv", "validation.csv"):
        shutil.copy(text_folder / name, root / name)
    _write(root / "test.csv", _flipped(sentences(20, 7)))
    return root


def test_test_split_is_scored_once_and_never_chooses(bert_dir, with_test_split, tmp_path):
    result = quick_train("text", "small_similar", bert_dir, with_test_split, tmp_path / "run", epochs=2)
    metrics = result.metrics
    assert metrics["validation_examples"] == 24 and metrics["test"]["examples"] == 20
    assert metrics["evaluation"]["selection"] == "validation: validation"
    # validation picks the best epoch and agrees with the labels; the flipped test split scores the same network
    assert metrics["best"]["eval_accuracy"] >= 0.9
    assert metrics["test"]["test_accuracy"] <= 0.1
    assert all("test_accuracy" not in record for record in metrics["history"])
    predicted = hftl.predict(result.output_dir, [text for text, _ in sentences(20, 7)])
    truth = [label for _, label in _flipped(sentences(20, 7))]
    accuracy = sum(p["label"] == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
    assert metrics["test"]["test_accuracy"] == pytest.approx(accuracy)
    card = (result.output_dir / "README.md").read_text()
    assert "## Test metrics" in card and "never used to choose" in card


def test_a_train_and_test_dataset_holds_validation_out_of_train(bert_dir, text_folder, tmp_path):
    root = tmp_path / "train-test"
    root.mkdir()
    shutil.copy(text_folder / "train.csv", root / "train.csv")
    shutil.copy(text_folder / "validation.csv", root / "test.csv")
    metrics = quick_train("text", "small_similar", bert_dir, root, tmp_path / "run", epochs=1).metrics
    assert metrics["validation_examples"] == 7 and metrics["train_examples"] == 57  # 10% of 64, stratified
    assert metrics["test"]["examples"] == 24
    assert metrics["evaluation"]["selection"].startswith("validation: held out from train (10%")


def test_early_stopping_stops_when_the_metric_stops_improving(bert_dir, text_folder, tmp_path):
    # a learning rate too small to change anything: accuracy is flat after the first epoch
    result = quick_train(
        "text",
        "small_similar",
        bert_dir,
        text_folder,
        tmp_path / "run",
        epochs=5,
        lr=1e-12,
        early_stopping_patience=1,
    )
    assert [h["epoch"] for h in result.metrics["history"]] == [1, 2]
    assert result.metrics["stopped_early_at"] == 2 and result.metrics["best"]["epoch"] == 1


def test_eval_strategy_end_scores_once_and_keeps_the_last_epoch(bert_dir, text_folder, tmp_path):
    result = quick_train(
        "text", "small_similar", bert_dir, text_folder, tmp_path / "run", epochs=3, eval_strategy="end"
    )
    assert [h["epoch"] for h in result.metrics["history"]] == [3] and result.metrics["best"]["epoch"] == 3
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints  # every epoch still checkpoints, so the run resumes
    with pytest.raises(ConfigError, match="--early-stopping-patience needs an evaluation per epoch"):
        hftl.RunConfig(task="text", case="small_similar", eval_strategy="end", early_stopping_patience=2)


def test_loss_as_the_metric_for_best_keeps_the_lowest_loss(bert_dir, text_folder, tmp_path):
    metrics = quick_train(
        "text", "small_similar", bert_dir, text_folder, tmp_path / "run", epochs=3, metric_for_best="loss"
    ).metrics
    losses = {h["epoch"]: h["eval_loss"] for h in metrics["history"]}
    assert metrics["best"]["epoch"] == min(losses, key=losses.get)


def test_a_mistyped_metric_is_refused_before_training(bert_dir, text_folder, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown metric_for_best 'acc'.*did you mean 'accuracy'"):
        quick_train("text", "small_similar", bert_dir, text_folder, tmp_path / "run", metric_for_best="acc")
    assert not (tmp_path / "run").exists()


def test_better_and_stopping_rules():
    assert is_better(0.9, 0.8, "accuracy") and not is_better(0.8, 0.8, "accuracy")
    assert is_better(0.2, 0.3, "loss") and not is_better(0.4, 0.3, "loss") and is_better(5.0, None, "loss")
    assert not should_stop_early(Progress(epoch=3, best_epoch=1), None)
    assert not should_stop_early(Progress(epoch=2, best_epoch=1), 2)
    assert should_stop_early(Progress(epoch=3, best_epoch=1), 2)
