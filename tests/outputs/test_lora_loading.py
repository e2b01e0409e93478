"""A LoRA run's folder loads with the stock tools (``transformers.pipeline``, PEFT's ``AutoPeftModel``) and with
``hftl.load``: the run's labels and the trained logits, for every family that takes LoRA, cut or not, pooled or
not, from bases whose label count differs from the target's (7-class image bases for 3 colours, a 3-label BERT
for 2 sentiments)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForSequenceClassification, pipeline

import hftl
from tests.conftest import REPO_ROOT
from tests.helpers import quick_train

# name -> (family, case, extra settings); small_different cuts the base to its first half
RUNS = {
    "vit-cut": ("vit", "small_different", {}),
    "resnet": ("resnet", "large_similar", {}),
    "resnet-cut": ("resnet", "small_different", {}),
    "bert": ("bert", "large_similar", {}),
    "bert-cut-mean": ("bert", "small_different", {"pooling": "mean"}),
}
IMAGE_LABELS = {"blue", "green", "red"}
TEXT_LABELS = {"negative", "positive"}
PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
TOKENS = {"input_ids": torch.tensor([[2, 10, 12, 3], [2, 11, 9, 3]])}


@pytest.fixture(scope="module")
def bert3_dir(bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pretrained BERT with a 3-label head: a base whose label count differs from the 2-label target."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert-3-labels")
    model = AutoModelForSequenceClassification.from_pretrained(
        bert_dir, num_labels=3, ignore_mismatched_sizes=True
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(bert_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def lora_runs(vit_dir, resnet_dir, bert3_dir, image_folder, text_folder, tmp_path_factory):
    """Each LoRA run once, on demand."""
    bases = {"vit": vit_dir, "resnet": resnet_dir, "bert": bert3_dir}
    cache = {}

    def get(name: str):
        if name not in cache:
            family, case, extra = RUNS[name]
            task, data = ("text", text_folder) if family == "bert" else ("image", image_folder)
            out = tmp_path_factory.mktemp(name)
            cache[name] = quick_train(
                task, case, bases[family], data, out, strategy="lora", epochs=1, **extra
            )
        return cache[name]

    return get


def trained_logits(result) -> torch.Tensor:
    with torch.no_grad():
        return logits_of(result.model.eval(), result.config.task)


def logits_of(model: torch.nn.Module, task: str) -> torch.Tensor:
    batch = TOKENS if task == "text" else {"pixel_values": PIXELS}
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("name", RUNS)
def test_the_folder_holds_the_base_with_the_runs_head_and_labels(name, lora_runs):
    result = lora_runs(name)
    out = result.output_dir
    for file in ("adapter_config.json", "adapter_model.safetensors", "config.json", "model.safetensors"):
        assert (out / file).is_file(), file
    config = json.loads((out / "config.json").read_text())
    labels = TEXT_LABELS if result.config.task == "text" else IMAGE_LABELS
    assert set(config["id2label"].values()) == labels
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == out.resolve()
    if RUNS[name][1] == "small_different":
        assert hftl.TransferPlan.load(out / "transfer_plan.json").truncated


@pytest.mark.parametrize("name", RUNS)
def test_pipeline_loads_the_folder_with_the_runs_labels_and_logits(name, lora_runs):
    result = lora_runs(name)
    hftl.register_auto_classes()  # hftl's pooled model type (--pooling mean), as the card says
    if result.config.task == "text":
        classify = pipeline("text-classification", model=str(result.output_dir))
        predictions = classify(["the film was great", "the film was awful"], top_k=None)
        assert {p["label"] for p in predictions[0]} == TEXT_LABELS
    else:
        classify = pipeline("image-classification", model=str(result.output_dir))
        red = Image.fromarray(np.full((40, 40, 3), (200, 40, 40), dtype=np.uint8))
        assert {p["label"] for p in classify(red)} == IMAGE_LABELS
    got = logits_of(classify.model.eval(), result.config.task)
    assert torch.allclose(got, trained_logits(result), atol=1e-5)


@pytest.mark.parametrize("name", RUNS)
def test_auto_peft_model_and_hftl_load_give_the_trained_model(name, lora_runs):
    from peft import AutoPeftModel, AutoPeftModelForSequenceClassification, PeftModel

    result = lora_runs(name)
    hftl.register_auto_classes()
    text = result.config.task == "text"
    auto = AutoPeftModelForSequenceClassification if text else AutoPeftModel
    expected = trained_logits(result)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = hftl.load(result.output_dir)
    assert not [w for w in caught if "peft_config" in str(w.message)]  # hftl loads the adapter once
    for model in (auto.from_pretrained(str(result.output_dir)), loaded):
        assert isinstance(model, PeftModel)
        assert set(model.config.id2label.values()) == (TEXT_LABELS if text else IMAGE_LABELS)
        assert torch.allclose(logits_of(model.eval(), result.config.task), expected, atol=1e-5)


def test_a_moved_folder_still_loads_in_pipeline_and_hftl(lora_runs, tmp_path):
    """pipeline and hftl.load read the base from the folder itself, wherever it is now (the adapter still names
    the folder it was saved in)."""
    import shutil

    result = lora_runs("resnet-cut")
    expected = trained_logits(result)
    moved = Path(shutil.move(result.output_dir, tmp_path / "moved"))
    try:
        classify = pipeline("image-classification", model=str(moved))
        assert torch.allclose(logits_of(classify.model.eval(), "image"), expected, atol=1e-5)
        assert torch.allclose(logits_of(hftl.load(moved).eval(), "image"), expected, atol=1e-5)
    finally:
        shutil.move(moved, result.output_dir)


@pytest.mark.parametrize("name", ["resnet", "bert-cut-mean"])
def test_the_cards_snippets_run_as_written(name, lora_runs, tmp_path, monkeypatch):
    """pipeline, AutoPeftModel and hftl.load, as the card writes them for the local folder (an hftl pooled model
    type: after ``hftl.register_auto_classes()``, which the snippets call)."""
    from tests.outputs.test_hub import python_blocks, write_example_image

    result = lora_runs(name)
    card = (result.output_dir / "README.md").read_text()
    blocks = python_blocks(card)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    # in a fresh interpreter, the card's call is all pipeline needs (a pooled type)
    if name == "bert-cut-mean":
        assert all("hftl.register_auto_classes()" in code for code in blocks[:2])
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        done = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "'label': 'positive'" in done.stdout or "'label': 'negative'" in done.stdout
    write_example_image(tmp_path / "example.jpg")
    expected = trained_logits(result)
    for code in blocks:
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)
        model = namespace["classify"].model if "classify" in namespace else namespace["model"]
        assert torch.allclose(logits_of(model.eval(), result.config.task), expected, atol=1e-5)


def test_a_folder_copied_without_its_weights_is_one_error_naming_it(lora_runs, tmp_path):
    import shutil

    partial = Path(shutil.copytree(lora_runs("resnet").output_dir, tmp_path / "partial"))
    (partial / "model.safetensors").unlink()  # the base's weights, left behind by a partial copy
    with pytest.raises(hftl.ModelError, match=r"cannot load .*partial: .*A run folder holds its weights"):
        hftl.load(partial)
