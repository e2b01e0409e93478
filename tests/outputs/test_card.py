"""Model cards: Hub metadata huggingface_hub can load, the transfer plan, settings, per-epoch metrics and labels in
the body, and usage snippets that run as written (executed here against the local folders)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from huggingface_hub import ModelCard

import hftl
from hftl.outputs.card import build_card
from hftl.outputs.card_usage import EXAMPLE_TEXT
from tests.helpers import quick_train
from tests.outputs.test_hub import python_blocks, write_example_image

PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def head_run(resnet_dir, image_folder, tmp_path_factory):
    """A frozen ResNet body with a new head (small_similar): a full model output."""
    return quick_train(
        "image",
        "small_similar",
        resnet_dir,
        image_folder,
        tmp_path_factory.mktemp("head"),
        strategy="head",
        epochs=2,
    )


@pytest.fixture(scope="module")
def merged_lora_run(vit_dir, image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora-merged")
    return quick_train(
        "image", "large_similar", vit_dir, image_folder, out, strategy="lora", merge_lora=True, epochs=1
    )


def test_every_run_writes_its_card_with_metadata_huggingface_hub_loads(head_run):
    card = ModelCard.load(head_run.output_dir / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "image-classification"
    assert {"hftl", "transfer-learning", "small-similar", "resnet"} <= set(data["tags"])
    assert data["metrics"] == ["accuracy", "f1"]
    assert "base_model" not in data and "datasets" not in data  # local paths are no Hub references


def test_card_body_states_plan_settings_metrics_per_epoch_and_labels(head_run):
    text = ModelCard.load(head_run.output_dir / "README.md").text
    plan, metrics = head_run.plan, head_run.metrics
    assert "transfer case: **small_similar**, strategy **head**" in text
    for block in plan.blocks:
        assert f"| `{block.name}` | {block.kind} | {block.action} | {block.params:,} |" in text
    assert f"({metrics['parameters']['percent']:.2f}%)" in text
    assert "| epochs | 2 |" in text and f"| learning rate | {plan.lr:g} " in text
    rows = [line for line in text.splitlines() if line.startswith(("| 1", "| 2"))]
    assert len(rows) == len(metrics["history"]) == 2
    best = metrics["best"]
    assert f"| {best['epoch']} (best) | {best['step']} | {best['eval_accuracy']:.4f} |" in text
    assert "- 0: `blue`\n- 1: `green`\n- 2: `red`" in text


def test_full_model_pipeline_snippet_runs_and_names_the_labels(head_run, tmp_path, monkeypatch):
    (code,) = python_blocks((head_run.output_dir / "README.md").read_text())
    assert 'pipeline("image-classification"' in code
    monkeypatch.chdir(tmp_path)
    write_example_image(tmp_path / "example.jpg")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    predictions = namespace["classify"]("example.jpg")
    assert {p["label"] for p in predictions} == {"red", "green", "blue"}


def test_text_card_snippet_truncates_and_predicts_a_label(bert_dir, tmp_path, capsys):
    """The snippet, fed a text far longer than the model's 64 positions, still classifies it."""
    folder = tmp_path / "bert"
    shutil.copytree(bert_dir, folder, ignore=shutil.ignore_patterns("checkpoints"))
    card = build_card(folder, "full")
    (code,) = python_blocks(str(card))
    assert 'pipeline("text-classification"' in code and "max_length=64" in code  # capped by the positions
    long_text = " ".join(["the film was great"] * 200)
    code = code.replace(json.dumps(EXAMPLE_TEXT), json.dumps(long_text))
    exec(compile(code, "README.md", "exec"), {})
    assert "'label': 'positive'" in capsys.readouterr().out
    assert card.data.pipeline_tag == "text-classification"


def test_hub_ids_become_base_model_datasets_and_eval_results(head_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(head_run.output_dir, folder, ignore=shutil.ignore_patterns("checkpoints"))
    settings = yaml.safe_load((folder / "run_config.yaml").read_text())
    settings.update(model="microsoft/resnet-50", dataset="AI-Lab-Makerere/beans")
    (folder / "run_config.yaml").write_text(yaml.safe_dump(settings))
    card = ModelCard(str(build_card(folder, "full", repo_id="me/resnet-beans")))
    assert card.data.base_model == "microsoft/resnet-50" and card.data.datasets == ["AI-Lab-Makerere/beans"]
    results = {r.metric_type: r for r in card.data.eval_results}
    assert set(results) == {"accuracy", "f1"} and card.data.model_name == "me/resnet-beans"
    assert results["accuracy"].metric_value == head_run.metrics["best"]["eval_accuracy"]
    assert (
        results["f1"].metric_name == "f1_macro"
        and results["accuracy"].dataset_type == "AI-Lab-Makerere/beans"
    )
    assert "model-index" in card.data.to_dict()
    assert 'pipeline("image-classification", model="me/resnet-beans")' in card.text


def test_lora_run_cards_adapter_and_merged_model(merged_lora_run, tmp_path, monkeypatch):
    out = merged_lora_run.output_dir
    adapter_card, merged_card = (
        ModelCard.load(out / "README.md"),
        ModelCard.load(out / "merged" / "README.md"),
    )
    assert adapter_card.data.library_name == "peft" and "lora" in adapter_card.data.tags
    assert merged_card.data.library_name == "transformers"
    for snippet in ('pipeline("image-classification"', "AutoPeftModel.from_pretrained(", "hftl.load("):
        assert snippet in adapter_card.text
    assert (
        "base_config" not in adapter_card.text
        and "model.safetensors` + `config.json` (the frozen base" in (adapter_card.text)
    )
    monkeypatch.chdir(tmp_path)
    write_example_image(tmp_path / "example.jpg")
    (code,) = python_blocks(merged_card.content)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["classify"]("example.jpg")[0]["label"] in {"red", "green", "blue"}
    with torch.no_grad():
        pipeline_model = namespace["classify"].model.eval()
        expected = merged_lora_run.model.eval()(pixel_values=PIXELS).logits
        assert torch.allclose(pipeline_model(pixel_values=PIXELS).logits, expected, atol=1e-5)


def test_a_folder_that_is_no_finished_run_is_a_clear_error(vit_dir):
    with pytest.raises(
        hftl.ModelError, match="is not a finished hftl run: run_config.yaml, transfer_plan.json"
    ):
        build_card(vit_dir, "full")
