"""``hftl.load`` and ``hftl.predict`` give label names and scores for every family: image (ViT), transformer
text (BERT, full and LoRA) and word vectors, from an output folder, a RunResult or a model object."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import hftl
from tests.helpers import quick_train

RED = np.full((40, 40, 3), (200, 40, 40), dtype=np.uint8)
GREEN = Image.fromarray(np.full((40, 40, 3), (40, 200, 40), dtype=np.uint8))
REVIEWS = ["the film was great", "the film was awful"]


@pytest.fixture(scope="module")
def vit_run(vit_dir, image_folder, tmp_path_factory):
    return quick_train(
        "image", "small_similar", vit_dir, image_folder, tmp_path_factory.mktemp("vit-colours")
    )


def test_image_model_predicts_the_colour_names(vit_run):
    predictions = hftl.predict(vit_run.output_dir, [RED, GREEN])
    assert [p["label"] for p in predictions] == ["red", "green"]
    assert all(0.0 < p["score"] <= 1.0 for p in predictions)
    ranked = hftl.predict(vit_run.output_dir, [RED], top_k=3)
    assert {p["label"] for p in ranked[0]} == {"red", "green", "blue"}
    assert sum(p["score"] for p in ranked[0]) == pytest.approx(1.0, abs=1e-5)


def test_bert_model_predicts_the_sentiment_names(bert_dir):
    assert [p["label"] for p in hftl.predict(bert_dir, REVIEWS)] == ["positive", "negative"]


def test_word_vector_model_predicts_the_sentiment_names(vectors_dir):
    assert [p["label"] for p in hftl.predict(vectors_dir, REVIEWS)] == ["positive", "negative"]
    assert isinstance(hftl.load(vectors_dir), hftl.WordVectorsForSequenceClassification)


def test_lora_folder_runs_base_plus_adapter(bert_lora_run):
    predictions = hftl.predict(bert_lora_run.output_dir, REVIEWS)
    assert {p["label"] for p in predictions} <= {"positive", "negative"}
    again = hftl.predict(bert_lora_run, REVIEWS)  # the in-memory PeftModel gives the same scores
    assert [p["score"] for p in predictions] == pytest.approx([p["score"] for p in again], abs=1e-6)


def test_single_input_run_result_and_model_object(vit_run, vectors_dir):
    single = hftl.predict(vectors_dir, "a superb story")
    assert isinstance(single, dict) and single["label"] == "positive"
    assert hftl.predict(vit_run, RED)["label"] == "red"  # a RunResult: its model, its folder's processor
    model = hftl.load(vit_run.output_dir)
    assert hftl.predict(model, [RED])[0]["label"] == "red"  # a loaded model knows its folder


def test_model_without_a_processor_is_a_clear_error(vit_dir):
    from transformers import ViTConfig, ViTForImageClassification

    bare = ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2))
    with pytest.raises(hftl.ModelError, match="pass processor="):
        hftl.predict(bare, [RED])


def test_hftl_predict_command_prints_one_json_line_per_input(vectors_dir, capsys):
    import json

    from hftl.cli import main

    assert main(["predict", str(vectors_dir), *REVIEWS, "--top-k", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [line["input"] for line in lines] == REVIEWS
    assert [line["predictions"][0]["label"] for line in lines] == ["positive", "negative"]
    assert all(len(line["predictions"]) == 2 for line in lines)


def test_careless_inputs_to_predict_and_embed_are_one_error_or_an_empty_answer(bert_dir, vit_run, tmp_path):
    """An image file given to a text model was scored as the words of its path; no inputs, a batch size of 0 and a
    top-k under 1 failed inside torch or the pipeline (or answered with no labels)."""
    image = tmp_path / "red.png"
    Image.fromarray(RED).save(image)
    with pytest.raises(
        hftl.DataError, match=r"input 0 \(.*red.png\) is an image file, and this is a text model"
    ):
        hftl.predict(bert_dir, [str(image)])
    with pytest.raises(hftl.DataError, match=r"is an image file, and this is a text model"):
        hftl.embed(bert_dir, [image])
    assert hftl.predict(bert_dir, []) == []
    with pytest.raises(hftl.DataError, match="no inputs to embed"):
        hftl.embed(bert_dir, [])
    for bad in ({"batch_size": 0}, {"top_k": 0}, {"top_k": -1}):
        with pytest.raises(hftl.ConfigError, match=r"(batch_size|top_k) must be a positive integer"):
            hftl.predict(bert_dir, REVIEWS, **bad)
    with pytest.raises(hftl.ConfigError, match="batch_size must be a positive integer"):
        hftl.embed(bert_dir, REVIEWS, batch_size=-3)


def test_a_mistyped_image_path_is_named_as_missing(vit_run, tmp_path):
    """It went on to transformers as base64 text ("Invalid base64-encoded string")."""
    with pytest.raises(hftl.DataError, match=r"image .*nope.png: no such file \(check the path\)"):
        hftl.predict(vit_run.output_dir, [str(tmp_path / "nope.png")])


def test_a_folder_that_holds_no_model_is_one_error_saying_what_to_load(vit_run, tmp_path):
    with pytest.raises(
        hftl.ModelError, match=r"is not a saved model \(no config.json\): give a run's output"
    ):
        hftl.load(tmp_path)
    checkpoint = next((vit_run.output_dir / "checkpoints").iterdir())
    with pytest.raises(hftl.ModelError, match=r"a checkpoint holds only what trains; load its run folder"):
        hftl.predict(checkpoint, [RED])
