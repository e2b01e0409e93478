"""--class-weights: auto is sklearn's balanced rule with a cap, a file names every class, the loss uses them, and the
run records what it used (metrics.json, the card); the minority class gains recall on imbalanced data."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from hftl.errors import ConfigError
from hftl.training.class_weights import AUTO_CAP, class_weights, weighted_loss
from tests.conftest import sentences
from tests.helpers import quick_train


def test_auto_weights_are_inverse_frequency_and_capped():
    assert class_weights("none", ["a", "b"], [0, 1]) is None
    assert class_weights("auto", ["a", "b"], [0, 0, 0, 1]) == pytest.approx([4 / 6, 4 / 2])
    heavy = class_weights("auto", ["a", "b"], [0] * 1000 + [1])
    assert heavy[1] == pytest.approx(AUTO_CAP * heavy[0])  # 1 example in 1001 would weigh 1000x: capped


def test_a_weights_file_must_name_every_class_with_a_positive_number(tmp_path):
    good = tmp_path / "weights.json"
    good.write_text(json.dumps({"negative": 3, "positive": 1.0}))
    assert class_weights(str(good), ["positive", "negative"], []) == [1.0, 3.0]
    for content, message in (
        ({"positive": 1.0}, "no weight for 'negative'"),
        ({"positive": 1.0, "negative": 2.0, "neutral": 1.0}, "labels not in the data: 'neutral'"),
        ({"positive": 1.0, "negative": -2.0}, "must be a number from 1e-06 to 1e\\+06, got -2.0"),
        ({"positive": 1.0, "negative": 1e308}, "got 1e\\+308"),  # inf in the float32 loss
        ({"positive": 1.0, "negative": 1e-320}, "got 1e-320"),  # zero there: every step skipped
        ({"positive": 1.0, "negative": 10**400}, "got 1000000000"),  # float() itself overflows
        ({"positive": 1.0, "negative": True}, "got True"),
    ):
        good.write_text(json.dumps(content))
        with pytest.raises(ConfigError, match=message):
            class_weights(str(good), ["positive", "negative"], [])
    good.write_text("not json")
    with pytest.raises(ConfigError, match="cannot read it as JSON"):
        class_weights(str(good), ["positive", "negative"], [])


def test_the_weighted_loss_is_cross_entropy_with_the_weights():
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([0, 1, 1])
    weights = torch.tensor([1.0, 4.0])
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=weights)
    assert torch.allclose(weighted_loss(logits, labels, weights), expected)


def imbalanced(root, positives: int, negatives: int):
    root.mkdir(parents=True, exist_ok=True)
    rows = [r for r in sentences(4 * max(positives, negatives), 7)]
    train = [r for r in rows if r[1] == "positive"][:positives] + [r for r in rows if r[1] == "negative"][
        :negatives
    ]
    validation = sentences(40, 8)
    for name, data in (("train", train), ("validation", validation)):
        with open(root / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(data)
    return root


def test_auto_weights_lift_the_minority_class_and_are_recorded(bert_dir, tmp_path):
    data = imbalanced(tmp_path / "data", positives=60, negatives=6)
    runs = {
        setting: quick_train(
            "text",
            "small_similar",
            bert_dir,
            data,
            tmp_path / setting,
            epochs=2,
            lr=0.02,
            class_weights=setting,
        )
        for setting in ("none", "auto")
    }
    recall = {
        setting: json.loads((run.output_dir / "classification_report.json").read_text())["negative"]["recall"]
        for setting, run in runs.items()
    }
    assert recall["auto"] > recall["none"], recall
    weights = runs["auto"].metrics["class_weights"]
    assert weights["negative"] == pytest.approx(
        10 * weights["positive"]
    )  # 60/6: inverse frequency, at the cap
    assert "class_weights" not in runs["none"].metrics
    card = (runs["auto"].output_dir / "README.md").read_text()
    assert "| class weights | `negative` " in card and "--class-weights auto" in card
