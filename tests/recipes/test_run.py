"""End-to-end runs through the Python API on tiny models: every family x case/strategy learns, frozen weights
stay byte-identical, and the outputs load in transformers.pipeline (or PEFT) with the dataset's label names."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import hftl
from hftl.outputs.loading import load
from tests.helpers import base_name, quick_train, saved_state

# the textbook plans, named explicitly (each family's own defaults are tested in tests/transfer/test_cases.py)
SETTINGS = {
    "small_similar": ("small_similar", "head"),
    "small_different": ("small_different", "head"),
    "large_similar": ("large_similar", None),
    "lora": ("large_similar", "lora"),
    "partial": ("small_similar", "partial"),
}
FAMILIES = ("vit", "resnet", "bert")
CHANCE = {"vit": 1 / 3, "resnet": 1 / 3, "bert": 1 / 2}


@pytest.fixture(scope="module")
def runs(model_dirs, data_for, tmp_path_factory):
    """Train each (family, setting) once, on demand; several tests read the same run."""
    cache = {}

    def get(family: str, setting: str):
        if (family, setting) not in cache:
            case, strategy = SETTINGS[setting]
            task, dataset = data_for[family]
            out = tmp_path_factory.mktemp(f"{family}-{setting}")
            cache[family, setting] = quick_train(
                task, case, model_dirs[family], dataset, out, strategy=strategy
            )
        return cache[family, setting]

    return get


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_and_setting_beats_chance(family, setting, runs):
    result = runs(family, setting)
    best = result.metrics["best"]["eval_accuracy"]
    assert best > CHANCE[family] + 0.2, result.metrics["history"]
    assert result.metrics["strategy"] == (
        SETTINGS[setting][1] or hftl.CASE_RULES[SETTINGS[setting][0]].strategy
    )


@pytest.mark.parametrize("setting", ["small_similar", "small_different", "partial", "lora"])
@pytest.mark.parametrize("family", FAMILIES)
def test_frozen_weights_and_batchnorm_statistics_are_byte_identical(family, setting, runs, model_dirs):
    result = runs(family, setting)
    before = saved_state(model_dirs[family])
    frozen_blocks = result.plan.names("frozen", "lora")
    model = result.model
    checked, skipped = 0, 0
    tensors = model.state_dict(keep_vars=True)  # parameters and persistent buffers (BatchNorm statistics)
    for name, tensor in tensors.items():
        original = base_name(name)
        if "lora_" in name or "modules_to_save" in name:
            continue
        if original not in before:
            skipped += 1
            continue
        if any(original.startswith(block + ".") for block in frozen_blocks):
            assert torch.equal(tensor.detach().cpu(), before[original]), original
            if isinstance(tensor, torch.nn.Parameter):
                assert not tensor.requires_grad
            checked += 1
    assert checked > 0 and skipped == 0


@pytest.mark.parametrize("family", ["vit", "resnet", "bert"])
def test_trained_blocks_do_change(family, runs, model_dirs):
    result = runs(family, "partial")
    before = saved_state(model_dirs[family])
    trained = [b for b in result.plan.names("trained")]
    changed = [
        name
        for name, p in result.model.named_parameters()
        if any(name.startswith(b + ".") for b in trained) and not torch.equal(p.detach(), before[name])
    ]
    assert changed


def test_frozen_batchnorm_stays_in_eval_mode(runs):
    model = runs("resnet", "small_similar").model
    model.train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.training for m in norms)


def test_large_case_batchnorm_does_train(runs):
    model = runs("resnet", "large_similar").model
    model.train()
    assert all(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize(
    "family,setting", [("vit", "small_similar"), ("resnet", "small_different"), ("bert", "large_similar")]
)
def test_output_loads_in_transformers_pipeline_with_label_names(family, setting, runs):
    result = runs(family, setting)
    out = result.output_dir
    for name in ("model.safetensors", "config.json", "metrics.json", "run_config.yaml", "transfer_plan.json"):
        assert (out / name).is_file(), name
    if family == "bert":
        classify = pipeline("text-classification", model=str(out))
        predictions = classify(["the film was great", "the film was awful"])
        assert {p["label"] for p in predictions} <= {"positive", "negative"}
        assert [p["label"] for p in predictions] == ["positive", "negative"]
    else:
        classify = pipeline("image-classification", model=str(out))
        red = Image.fromarray(np.full((40, 40, 3), (200, 40, 40), dtype=np.uint8))
        predictions = classify(red)
        assert {p["label"] for p in predictions} == {"red", "green", "blue"}
        assert predictions[0]["label"] == "red"


def test_metrics_file_has_history_best_and_parameter_counts(runs):
    result = runs("vit", "small_different")
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert (
        len(metrics["history"]) == 3
        and metrics["best"]["eval_accuracy"] == result.metrics["best"]["eval_accuracy"]
    )
    assert 0 < metrics["parameters"]["trainable"] < metrics["parameters"]["total"]
    assert metrics["labels"] == ["blue", "green", "red"]
    lines = (result.output_dir / "metrics.jsonl").read_text().splitlines()
    assert any("loss" in json.loads(line) for line in lines) and any(
        "eval_accuracy" in line for line in lines
    )
    plan = hftl.TransferPlan.load(result.output_dir / "transfer_plan.json")
    assert plan == result.plan and plan.keep_layers == 2


@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_a_cut_plan_reports_the_blocks_as_trained(family, runs):
    """Printed plan, transfer_plan.json and the card's table give each kept block's size in the cut network; a
    cut ResNet's head reads the kept stage's narrower features, so it is smaller than the uncut one."""
    result = runs(family, "small_different")
    model, plan = result.model, result.plan
    assert plan.truncated
    kept = [block for block in plan.blocks if block.action != "removed"]
    for block in kept:
        assert block.params == sum(p.numel() for p in model.get_submodule(block.name).parameters()), block
    assert hftl.TransferPlan.load(result.output_dir / "transfer_plan.json") == plan
    card = (result.output_dir / "README.md").read_text()
    for block in kept:
        assert f"| `{block.name}` | {block.kind} | {block.action} | {block.params:,} |" in card
    head = next(block for block in plan.blocks if block.kind == "head")
    width = model.config.hidden_sizes[-1] if family == "resnet" else model.config.hidden_size
    assert head.params == (width + 1) * 3
    if family == "resnet":
        assert width == 16  # the second stage's width, not the uncut network's 32


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_adapter_reloads_with_equal_logits(family, runs, data_for):
    result = runs(family, "lora")
    out = result.output_dir
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / "config.json").is_file() and (
        out / "model.safetensors"
    ).is_file()  # the frozen base it adapts
    reloaded = load(out).eval()
    trained = result.model.eval()
    if family == "bert":
        batch = {"input_ids": torch.tensor([[2, 10, 12, 3], [2, 11, 9, 3]])}
    else:
        batch = {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))}
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, trained(**batch).logits, atol=1e-6)


@pytest.mark.parametrize("family, setting", [("vit", "lora"), ("resnet", "large_similar")])
def test_a_run_model_takes_raw_uint8_batches_and_normalises_them_as_its_processor(runs, family, setting):
    from transformers import AutoImageProcessor

    from hftl.data.image_stats import ImageStats

    result = runs(family, setting)
    stats = ImageStats.from_processor(AutoImageProcessor.from_pretrained(result.output_dir))
    raw = torch.randint(0, 256, (2, 3, stats.height, stats.width), generator=torch.Generator().manual_seed(0))
    raw = raw.to(torch.uint8)  # what hftl's collators hand the model
    model = result.model.eval()
    with torch.no_grad():
        assert torch.equal(model(pixel_values=raw).logits, model(pixel_values=stats.normalise(raw)).logits)


def test_merge_lora_writes_a_pipeline_ready_model(model_dirs, image_folder, tmp_path):
    result = quick_train(
        "image",
        "small_different",
        model_dirs["vit"],
        image_folder,
        tmp_path,
        strategy="lora",
        merge_lora=True,
        epochs=1,
    )
    merged = tmp_path / "merged"
    assert (merged / "model.safetensors").is_file()
    classify = pipeline("image-classification", model=str(merged))
    red = Image.fromarray(np.full((40, 40, 3), (200, 40, 40), dtype=np.uint8))
    assert {p["label"] for p in classify(red)} == {"red", "green", "blue"}
    pixels = torch.randn(1, 3, 32, 32)
    from transformers import AutoModelForImageClassification

    with torch.no_grad():
        expected = result.model.eval()(pixel_values=pixels).logits
        got = AutoModelForImageClassification.from_pretrained(merged).eval()(pixel_values=pixels).logits
    assert torch.allclose(got, expected, atol=1e-5)


def test_scratch_init_starts_from_random_weights(model_dirs, image_folder, tmp_path):
    result = quick_train(
        "image", "large_different", model_dirs["vit"], image_folder, tmp_path, init="scratch", epochs=1
    )
    before = saved_state(model_dirs["vit"])
    stem = result.model.state_dict()["vit.embeddings.patch_embeddings.projection.weight"]
    assert not torch.allclose(stem, before["vit.embeddings.patch_embeddings.projection.weight"], atol=1e-3)


def test_missing_model_path_is_a_clear_error(image_folder, tmp_path):
    with pytest.raises(hftl.ModelError, match="model path does not exist"):
        hftl.train(
            task="image",
            case="small_similar",
            model=str(tmp_path / "no-model"),
            dataset=str(image_folder),
            output_dir=str(tmp_path / "out"),
        )


def test_settings_the_machine_or_model_cannot_honour_are_handled_before_training(
    bert_dir, text_folder, tmp_path
):
    if not torch.cuda.is_available():  # Accelerate would train in fp32 and the run would record fp16
        with pytest.raises(hftl.ConfigError, match="--mixed-precision fp16 needs a CUDA GPU"):
            quick_train(
                "text", "small_similar", bert_dir, text_folder, tmp_path / "fp16", mixed_precision="fp16"
            )
    # a --max-length beyond the model's 64 positions is lowered before tokenizing (a long text would crash)
    long_texts = tmp_path / "long-texts"
    long_texts.mkdir()
    rows = (text_folder / "train.csv").read_text().splitlines()
    rows[1] = " ".join(["great"] * 200) + ",positive"
    (long_texts / "train.csv").write_text("\n".join(rows) + "\n")
    (long_texts / "validation.csv").write_text((text_folder / "validation.csv").read_text())
    result = quick_train(
        "text", "small_similar", bert_dir, long_texts, tmp_path / "long", max_length=512, epochs=1
    )
    assert result.config.max_length == 64
