"""Device switches on tiny models: channels_last for CNNs, the attention kernel, and torch.compile."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import quick_train


def test_channels_last_and_attention_kernel_are_applied_and_reported(
    resnet_dir, vit_dir, image_folder, tmp_path
):
    cnn = quick_train(
        "image", "large_similar", resnet_dir, image_folder, tmp_path / "cnn", epochs=1, channels_last=True
    )
    conv = cnn.model.resnet.embedder.embedder.convolution.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert cnn.metrics["speed"]["channels_last"] is True and cnn.metrics["best"]["eval_accuracy"] > 0.5
    vit = quick_train(
        "image",
        "small_similar",
        vit_dir,
        image_folder,
        tmp_path / "vit",
        epochs=1,
        attn_implementation="eager",
    )
    assert vit.model.config._attn_implementation == "eager"
    assert vit.metrics["speed"] == {
        "mixed_precision": "no",
        "attn_implementation": "eager",
        "channels_last": False,  # auto: only CNNs, only on a GPU
        "compile": False,
        "group_by_length": True,
    }


@pytest.mark.slow
def test_compile_trains_a_cached_head_on_cpu(vit_dir, image_folder, tmp_path):
    result = quick_train("image", "small_similar", vit_dir, image_folder, tmp_path, epochs=1, compile=True)
    assert result.metrics["speed"]["compile"] is True and result.metrics["best"]["eval_accuracy"] > 0.5
    assert "flops_per_sample" not in result.metrics["throughput"]  # not counted under compile
