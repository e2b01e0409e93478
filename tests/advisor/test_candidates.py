"""The trials' tie order: partial fine-tuning first on small text data, full fine-tuning first on images and on large
data; word vectors never offer partial or LoRA; the printed verdict says why."""

from __future__ import annotations

import pytest
from datasets import ClassLabel, Dataset, Features, List

import hftl
from hftl.advisor.candidates import (
    FULL_FIRST_PER_CLASS,
    candidates_for,
    examples_per_class,
    order_reason,
)
from hftl.advisor.trials import TrialsReport, decide


def config(model: str = "m") -> hftl.RunConfig:
    return hftl.RunConfig(task="text", case="auto", model=model, output_dir="out")


def names(candidates) -> list[str]:
    return [c.name for c in candidates]


@pytest.mark.parametrize(
    "per_class, expected",
    [
        (None, ["partial", "full", "head", "lora", "scratch"]),
        (20, ["partial", "full", "head", "lora", "scratch"]),
        (FULL_FIRST_PER_CLASS, ["partial", "full", "head", "lora", "scratch"]),  # the line is "more than"
        (FULL_FIRST_PER_CLASS + 1, ["full", "partial", "head", "lora", "scratch"]),
        (350, ["full", "partial", "head", "lora", "scratch"]),
    ],
)
def test_the_tie_order_follows_the_size_rule(per_class, expected):
    assert names(candidates_for(config(), per_class)) == expected


@pytest.mark.parametrize("per_class", [None, 5, 20, FULL_FIRST_PER_CLASS, 1000])
def test_images_put_full_fine_tuning_first_on_every_size(per_class):
    order = candidates_for(hftl.RunConfig(task="image", case="auto", model="m"), per_class, "image")
    assert names(order) == ["full", "partial", "head", "lora", "scratch"]
    assert order_reason(names(order), per_class, "image") == "full first: images"
    # the same data as text keeps the size rule
    assert names(candidates_for(config(), 20, "text"))[0] == "partial"


def test_word_vectors_offer_full_head_and_scratch_on_any_size():
    for per_class in (20, 1000):
        assert names(candidates_for(config("vectors:glove.txt"), per_class)) == [
            "full",
            "head",
            "scratch",
        ]


def test_examples_per_class_reads_the_label_feature():
    single = Dataset.from_dict({"label": [0, 0, 0, 1]}).cast_column(
        "label", ClassLabel(names=["a", "b", "c"])
    )
    assert examples_per_class(single, "label") == 4 / 3  # a class with no training example still counts
    plain = Dataset.from_dict({"label": [3, 3, 7, 7, 7, 9]})  # no ClassLabel: the distinct values
    assert examples_per_class(plain, "label") == 2
    features = Features({"labels": List(ClassLabel(names=["x", "y"]))})
    multi = Dataset.from_dict({"labels": [[0], [0, 1], [1], []]}, features=features)
    assert examples_per_class(multi, "labels") == 2
    bare = Dataset.from_dict({"labels": [[0], [0, 1], [2]]})
    assert examples_per_class(bare, "labels") == 1


def test_the_printed_tie_says_why_full_fine_tuning_came_first():
    order = candidates_for(config(), 350)
    report = TrialsReport(
        metric="accuracy", validation_examples=300, budget=1.5, order=names(order), per_class=350
    )
    decide(report, {"full": 0.80, "partial": 0.795, "head": 0.70}, order)
    assert report.tie and report.pick == "full"
    assert "full first: 350.0 training examples per class, more than 50" in report.render()
    # on images at 20 per class a tie goes to full fine-tuning too, and the verdict says it is the images' order
    images = candidates_for(config(), 20, "image")
    small = TrialsReport(
        metric="accuracy",
        validation_examples=300,
        budget=1.5,
        order=names(images),
        per_class=20,
        modality="image",
    )
    decide(small, {"partial": 0.80, "full": 0.795, "head": 0.70}, images)
    assert small.tie and small.pick == "full" and "full first: images" in small.render()
    assert order_reason(["partial", "full"], 20) == ""
    # word vectors put full first on any size: that is their order, not the size rule, so nothing is said
    vectors = names(candidates_for(config("vectors:glove.txt"), 16))
    assert vectors[0] == "full" and order_reason(vectors, 16) == ""
    # just above the line, the count is not rounded down onto it
    assert "50.4 training examples per class" in order_reason(["full", "partial"], 50.4)
