"""The Accelerate loop: optimizer sees only trainable parameters, accumulation and mixed precision work on CPU."""

from __future__ import annotations

import torch
from transformers import AutoModelForImageClassification

from hftl.training.loop import parameter_groups
from tests.helpers import quick_train


def test_optimizer_gets_only_trainable_parameters_and_no_decay_on_1d(vit_dir):
    model = AutoModelForImageClassification.from_pretrained(vit_dir)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("classifier"))
    decay, no_decay = parameter_groups(model, weight_decay=0.01)
    assert [p.shape for p in decay["params"]] == [model.classifier.weight.shape]
    assert [p.shape for p in no_decay["params"]] == [model.classifier.bias.shape]
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0


def test_gradient_accumulation_and_bf16_autocast_on_cpu(vit_dir, image_folder, tmp_path):
    result = quick_train(
        "image",
        "small_similar",
        vit_dir,
        image_folder,
        tmp_path,
        gradient_accumulation_steps=2,
        mixed_precision="bf16",
        epochs=2,
    )
    assert result.metrics["global_step"] == 2 * 3  # 6 batches per epoch / 2 accumulated = 3 optimizer steps
    assert result.metrics["best"]["eval_accuracy"] > 0.6
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # autocast, weights stay fp32
    assert (
        0 < result.metrics["eval_seconds"] < result.metrics["train_seconds"]
    )  # scoring, timed apart (advisor)


def test_tensorboard_tracker_logs_when_installed(vit_dir, image_folder, tmp_path):
    import pytest

    pytest.importorskip("tensorboard", reason="tensorboard is not installed")
    quick_train("image", "small_similar", vit_dir, image_folder, tmp_path, epochs=1, report_to="auto")
    events = list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert events and max(e.stat().st_size for e in events) > 0


def test_the_loop_reads_the_loss_from_the_device_only_when_it_logs(
    bert_dir, text_folder, tmp_path, monkeypatch
):
    """No host-device sync per step for the loss: `.item()` is not called once per step (it was: 8 steps, 12 calls)."""
    calls = {"n": 0}
    item = torch.Tensor.item

    def counting(self):
        calls["n"] += 1
        return item(self)

    monkeypatch.setattr(torch.Tensor, "item", counting)
    result = quick_train(
        "text",
        "large_similar",
        bert_dir,
        text_folder,
        tmp_path,
        epochs=2,
        log_steps=1000,
        feature_cache=False,
    )
    steps = result.metrics["global_step"]
    assert steps == 16 and calls["n"] < steps / 2, calls
