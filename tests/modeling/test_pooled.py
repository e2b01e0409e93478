"""Pooled classifiers (--pooling / --head): the pooling is what the docs say, the choice is saved in config.json,
and pipeline, hftl.load and the run give the same predictions; cached and uncached runs agree."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, pipeline

import hftl
from hftl.errors import ConfigError
from hftl.modeling.pooled import pool, pooled_classes, pooled_config
from hftl.outputs.loading import load
from hftl.sources.pooling import declared_pooling, resolve_pooling
from tests.helpers import quick_train

TEXTS = ["the film was great", "the film was awful and the plot was bad", "a great plot"]


def test_mean_and_max_pooling_ignore_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    outputs = type("Outputs", (), {"last_hidden_state": hidden, "pooler_output": None})()
    assert pool(outputs, mask, "mean").tolist() == [[2.0, 4.0]]
    assert pool(outputs, mask, "max").tolist() == [[3.0, 6.0]]
    assert pool(outputs, mask, "cls").tolist() == [[1.0, 2.0]]
    assert pool(outputs, mask, "pooler").tolist() == [[1.0, 2.0]]  # no pooler: the first token


def test_a_pooled_bert_predicts_the_same_with_and_without_padding(bert_dir):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = pooled_config(AutoConfig.from_pretrained(bert_dir, num_labels=2), "mean", "mlp:8")
    model = AutoModelForSequenceClassification.from_pretrained(bert_dir, config=config).eval()
    assert type(model).__name__ == "PooledBertForSequenceClassification"
    assert model.bert.pooler is None  # mean pooling never reads BERT's pooler: no dead parameters
    assert [type(m).__name__ for m in model.classifier] == ["Linear", "ReLU", "Linear"]
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    alone = model(**tokenizer(TEXTS[:1], return_tensors="pt")).logits
    padded = model(**tokenizer(TEXTS[:2], padding=True, return_tensors="pt")).logits[:1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


def test_a_pooled_vit_builds_and_pools_its_patch_tokens():
    """ViT's task model builds its encoder without a pooler (``pooler=None``): nothing to drop."""
    from transformers import ViTConfig

    config = pooled_config(
        ViTConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=8,
            image_size=16,
            patch_size=8,
            num_labels=3,
        ),
        "mean",
        "linear",
    )
    _, model_class = pooled_classes("vit")
    model = model_class(config).eval()
    assert model.vit.pooler is None and model.classifier.in_features == 16
    assert model(pixel_values=torch.randn(2, 3, 16, 16)).logits.shape == (2, 3)


def test_sentence_transformers_folders_declare_their_pooling(tmp_path):
    folder = tmp_path / "encoder"
    (folder / "1_Pooling").mkdir(parents=True)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    pooling_config = folder / "1_Pooling" / "config.json"
    pooling_config.write_text(json.dumps({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}))
    assert declared_pooling(str(folder)) == "mean"
    assert resolve_pooling("auto", str(folder), None) == "mean"
    assert resolve_pooling("cls", str(folder), None) == "cls"  # an explicit choice wins
    pooling_config.write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert declared_pooling(str(folder)) == "cls"
    # a module path that leads outside the folder is not followed
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    modules[1]["path"] = "../outside"
    (folder / "modules.json").write_text(json.dumps(modules))
    assert declared_pooling(str(folder)) is None
    assert resolve_pooling("auto", str(tmp_path), None) == "pooler"  # no modules.json: the family's own head


@pytest.fixture(scope="module")
def pooled_text_run(bert_dir, text_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("pooled-bert")
    return quick_train(
        "text", "small_similar", bert_dir, text_folder, out, pooling="mean", head="mlp:16", epochs=4
    )


def test_the_pooling_and_head_are_saved_and_pipeline_matches_the_run(pooled_text_run):
    result = pooled_text_run
    assert result.metrics["best"]["eval_accuracy"] > 0.7, result.metrics["history"]
    saved = json.loads((result.output_dir / "config.json").read_text())
    assert saved["model_type"] == "hftl-pooled-bert"
    assert (saved["classifier_pooling"], saved["classifier_head"]) == ("mean", "mlp:16")
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = result.model.eval().cpu()(**batch).logits.softmax(-1)
        loaded = load(result.output_dir).eval()(**batch).logits.softmax(-1)
    torch.testing.assert_close(loaded, expected)
    classify = pipeline("text-classification", model=str(result.output_dir), top_k=None)
    for row, scores in zip(expected, classify(TEXTS), strict=True):
        by_label = {s["label"]: s["score"] for s in scores}
        labels = result.model.config.id2label
        assert by_label == pytest.approx({labels[i]: float(p) for i, p in enumerate(row)}, abs=1e-5)


def test_cached_and_uncached_partial_runs_agree_with_mean_pooling(bert_dir, text_folder, tmp_path):
    runs = {
        cache: quick_train(
            "text",
            "small_similar",
            bert_dir,
            text_folder,
            tmp_path / f"cache-{cache}",
            strategy="partial",
            keep_layers=1,
            pooling="mean",
            epochs=1,
            feature_cache=cache,
            feature_cache_dir=str(tmp_path / "features"),
        )
        for cache in (True, False)
    }
    assert runs[True].metrics["feature_cache"]["used"] and not runs[False].metrics["feature_cache"]["used"]
    cached, uncached = (dict(runs[c].model.named_parameters()) for c in (True, False))
    for name, value in uncached.items():
        torch.testing.assert_close(cached[name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_a_cut_resnet_gets_an_mlp_head_sized_for_the_kept_stage(resnet_dir, image_folder, tmp_path):
    result = quick_train(
        "image", "small_different", resnet_dir, image_folder, tmp_path / "run", strategy="head", head="mlp:8"
    )
    model = result.model
    kept_width = model.config.hidden_sizes[-1]
    assert model.classifier[0].in_features == kept_width and model.classifier[0].out_features == 8
    classify = pipeline("image-classification", model=str(result.output_dir))
    red = Image.fromarray(np.full((40, 40, 3), (200, 40, 40), dtype=np.uint8))
    assert {p["label"] for p in classify(red)} == {"red", "green", "blue"}


def test_bad_pooling_and_head_choices_are_refused_with_the_flag(resnet_dir, image_folder, tmp_path):
    with pytest.raises(ConfigError, match="--head"):
        hftl.train(task="image", case="small_similar", model=str(resnet_dir), head="mlp:wide")
    with pytest.raises(ConfigError, match="pooling"):
        hftl.train(task="image", case="small_similar", model=str(resnet_dir), pooling="attention")
    with pytest.raises(ConfigError, match="first token"):
        quick_train("image", "small_similar", resnet_dir, image_folder, tmp_path / "cls", pooling="cls")


def test_every_family_with_a_stock_classifier_has_a_pooled_one():
    for model_type in ("bert", "roberta", "distilbert", "electra", "vit", "deit", "resnet"):
        config_class, model_class = pooled_classes(model_type)
        assert config_class.model_type == f"hftl-pooled-{model_type}"
        assert model_class.config_class is config_class


def test_word_vectors_take_pooling_and_head_from_the_same_flags():
    from hftl.config import RunConfig
    from hftl.sources.vectors import vectors_hidden_size, vectors_pooling

    def settings(**kwargs):
        return RunConfig(task="text", case="small_similar", model="vectors:glove.txt", **kwargs)

    assert (vectors_pooling(settings()), vectors_hidden_size(settings())) == ("mean", 128)  # the calibrated
    assert vectors_pooling(settings(pooling="max")) == "max"
    assert vectors_hidden_size(settings(head="linear")) == 0
    assert vectors_hidden_size(settings(head="mlp:64")) == 64
    with pytest.raises(ConfigError, match="use mean or max"):
        vectors_pooling(settings(pooling="cls"))


def test_the_plan_and_the_card_say_how_the_head_reads(pooled_text_run):
    plan = json.loads((pooled_text_run.output_dir / "transfer_plan.json").read_text())
    assert "the head (mlp:16, --head mlp:16) reads mean-pooled features (--pooling)" in plan["reasons"]
    card = (pooled_text_run.output_dir / "README.md").read_text()
    assert "hftl.register_auto_classes()  # the hftl-pooled-bert model type" in card


def test_an_mlp_head_on_a_cut_resnet_trains_at_its_measured_rate(resnet_dir, image_folder, tmp_path):
    from hftl.transfer.defaults import default_lr

    result = hftl.train(
        task="image",
        case="small_different",
        strategy="head",
        head="mlp:64",
        model=str(resnet_dir),
        dataset=str(image_folder),
        output_dir=str(tmp_path / "run"),
        epochs=1,
        batch_size=8,
    )
    assert result.model.config.classifier_head == "mlp:64"
    assert result.plan.lr == default_lr("resnet", "head", "pretrained", result.model.config) == 3e-2
    linear = hftl.train(
        task="image",
        case="small_different",
        strategy="head",
        model=str(resnet_dir),
        dataset=str(image_folder),
        output_dir=str(tmp_path / "linear"),
        epochs=1,
        batch_size=8,
    )
    assert (
        linear.model.config.model_type == "resnet" and linear.plan.lr == 9e-2
    )  # --head auto: the stock head
