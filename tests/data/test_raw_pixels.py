"""Image batches reach the model as raw uint8 pixels: the model normalises them once, on its device, exactly as the
image processor does; floating pixels (a processor's output) pass untouched; a LoRA wrapper normalises through
each of its entries; hooking twice adds nothing."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoImageProcessor, AutoModelForImageClassification

from hftl.data.preprocess import ImageStats
from hftl.data.raw_pixels import accept_raw_pixels


def hooks(module: torch.nn.Module) -> int:
    return len(module._forward_pre_hooks)


def loaded(path):
    processor = AutoImageProcessor.from_pretrained(path)
    model = AutoModelForImageClassification.from_pretrained(path).eval()
    stats = ImageStats.from_processor(processor)
    raw = torch.randint(0, 256, (2, 3, stats.height, stats.width), dtype=torch.uint8)
    return model, processor, stats, raw


@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_a_model_normalises_raw_pixels_once_as_the_processor_does(family, model_dirs):
    model, processor, stats, raw = loaded(model_dirs[family])
    as_processed = processor(
        list(raw.permute(0, 2, 3, 1).numpy()), do_resize=False, do_center_crop=False, return_tensors="pt"
    )["pixel_values"]
    assert torch.allclose(stats.normalise(raw), as_processed, atol=1e-6)
    floats = torch.randn(2, 3, stats.height, stats.width)
    with torch.no_grad():
        expected, plain = model(pixel_values=stats.normalise(raw)).logits, model(pixel_values=floats).logits
        assert accept_raw_pixels(model, stats) is model and hooks(model) == 1
        assert torch.equal(model(pixel_values=raw).logits, expected)
        assert torch.equal(model(raw).logits, expected)  # positional, as a task model calls its base model
        assert torch.equal(model(pixel_values=floats).logits, plain)  # floats are already normalised


def test_a_lora_model_normalises_raw_pixels_through_each_entry(model_dirs):
    model, _, stats, raw = loaded(model_dirs["vit"])
    lora = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"])
    )
    with torch.no_grad():
        expected = lora(pixel_values=stats.normalise(raw)).logits
        accept_raw_pixels(lora, stats)
        assert hooks(lora) == 1 and hooks(lora.get_base_model()) == 1
        assert torch.equal(lora(pixel_values=raw).logits, expected)
        # LoraModel calls the task model's forward directly, past hooks on the wrapper's own call
        assert torch.equal(lora.base_model(pixel_values=raw).logits, expected)
        assert torch.equal(lora.get_base_model()(pixel_values=raw).logits, expected)


def test_hooking_again_adds_nothing_and_other_statistics_replace_the_old(model_dirs):
    model, _, stats, raw = loaded(model_dirs["vit"])
    accept_raw_pixels(model, stats)
    accept_raw_pixels(model, stats)
    assert hooks(model) == 1
    other = ImageStats(stats.height, stats.width, 1 / 255, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    accept_raw_pixels(model, other)
    with torch.no_grad():
        assert hooks(model) == 1
        assert torch.allclose(
            model(pixel_values=raw).logits, model(pixel_values=raw.float() / 255).logits, atol=1e-6
        )


def test_text_models_are_left_alone(model_dirs):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dirs["bert"])
    assert accept_raw_pixels(model, None) is model and hooks(model) == 0
