"""--text-columns: two text columns read as a sentence pair (run_glue.py's encoding), for BERT-family models and word
vectors; the model learns a label that only the second sentence decides, and pipeline takes the pair."""

from __future__ import annotations

import csv
import random

import pytest
from transformers import pipeline

import hftl
from hftl.config import RunConfig
from hftl.errors import ConfigError, DataError
from tests.conftest import FILLER, NEGATIVE, POSITIVE
from tests.helpers import quick_train


def pairs(root, count: int, seed: int):
    """Premise: filler words only; hypothesis: a sentiment word among fillers, which decides the label."""
    rnd = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", count), ("validation", count // 2)):
        with open(root / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["premise", "hypothesis", "label"])
            for i in range(n):
                label = "positive" if i % 2 == 0 else "negative"
                words = rnd.sample(FILLER, 2) + [rnd.choice(POSITIVE if label == "positive" else NEGATIVE)]
                writer.writerow([" ".join(rnd.sample(FILLER, 4)), " ".join(words), label])
    return root


def test_text_columns_take_two_names_in_either_spelling():
    config = RunConfig(task="text", case="small_similar", text_columns=["premise,hypothesis"])
    assert config.text_columns == ["premise", "hypothesis"]
    assert RunConfig(task="text", case="small_similar", text_columns=["a", "b"]).text_columns == ["a", "b"]
    with pytest.raises(ConfigError, match="two columns"):
        RunConfig(task="text", case="small_similar", text_columns=["premise"])


def test_a_pair_model_reads_the_second_sentence_and_pipeline_takes_pairs(bert_dir, tmp_path):
    data = pairs(tmp_path / "data", 64, seed=3)
    result = quick_train(
        "text", "large_similar", bert_dir, data, tmp_path / "run", text_columns=["premise", "hypothesis"]
    )
    assert result.metrics["best"]["eval_accuracy"] > 0.8, result.metrics["history"]
    classify = pipeline("text-classification", model=str(result.output_dir))
    good = classify({"text": "the movie was long", "text_pair": "it was great"})
    bad = classify({"text": "the movie was long", "text_pair": "it was awful"})
    assert (good["label"], bad["label"]) == ("positive", "negative")
    pair = {"text": "the movie was long", "text_pair": "it was great"}
    assert hftl.predict(result.output_dir, pair)["label"] == "positive"  # one pair, and a list of pairs
    assert [
        p["label"] for p in hftl.predict(result.output_dir, [pair, {**pair, "text_pair": "it was awful"}])
    ] == [
        "positive",
        "negative",
    ]


def test_word_vectors_read_both_sentences(glove_file, tmp_path):
    data = pairs(tmp_path / "data", 64, seed=4)
    result = quick_train(
        "text",
        "large_similar",
        f"vectors:{glove_file}",
        data,
        tmp_path / "run",
        text_columns=["premise", "hypothesis"],
        lr=0.01,
        epochs=4,
    )
    assert result.metrics["best"]["eval_accuracy"] > 0.7, result.metrics["history"]


def test_a_missing_pair_column_is_named(bert_dir, tmp_path):
    data = pairs(tmp_path / "data", 16, seed=5)
    with pytest.raises(DataError, match="hypo"):
        hftl.train(
            task="text",
            case="large_similar",
            model=str(bert_dir),
            dataset=str(data),
            output_dir=str(tmp_path / "run"),
            text_columns=["premise", "hypo"],
        )
