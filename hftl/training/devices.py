"""Device speed switches: channels_last for CNNs, the attention kernel, and optional ``torch.compile``.

Mixed precision (bf16/fp16 autocast) is Accelerate's (``--mixed-precision``); SDPA attention is what transformers
picks by default where a model supports it (``--attn-implementation`` overrides it when loading).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hftl.backbones import Backbone


def wants_channels_last(config: Any, backbone: Backbone, device: torch.device) -> bool:
    """``--channels-last`` when given, else on for convolutional families on a GPU (where cuDNN gains from it)."""
    if config.channels_last is not None:
        return bool(config.channels_last)
    return backbone.convolutional and device.type == "cuda"


def apply_memory_format(model: nn.Module, channels_last: bool) -> None:
    """Store 4-D weights as NHWC; convolutions then produce NHWC activations."""
    if channels_last:
        model.to(memory_format=torch.channels_last)


def maybe_compile(model: nn.Module, enabled: bool) -> nn.Module:
    """Compile the module in place (``nn.Module.compile``): parameter names, checkpoints and saving are unchanged."""
    if enabled:
        model.compile()
    return model


def switches_used(model: nn.Module, config: Any, channels_last: bool, accelerator: Any) -> dict[str, Any]:
    """What the run actually used (for metrics.json)."""
    return {
        "mixed_precision": str(accelerator.mixed_precision),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "channels_last": channels_last,
        "compile": bool(config.compile),
        "group_by_length": bool(config.group_by_length),
    }


def fused_adamw(model: nn.Module) -> dict[str, Any]:
    """``fused=True`` for AdamW when every trainable tensor is a float on CPU or CUDA: one kernel per step instead
    of a Python loop over parameters (the CPU default), as transformers' Trainer does (``adamw_torch_fused``)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    supported = trainable and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in trainable
    )
    return {"fused": True} if supported else {}
