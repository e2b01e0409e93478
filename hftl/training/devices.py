"""Device speed and memory switches: channels_last for CNNs, the attention kernel, optional ``torch.compile``, and
gradient (activation) checkpointing.

Mixed precision (bf16/fp16 autocast) is Accelerate's (``--mixed-precision``); SDPA attention is what transformers
picks by default where a model supports it (``--attn-implementation`` overrides it when loading).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hftl.backbones import Backbone
from hftl.errors import ConfigError


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


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """``--gradient-checkpointing``: each layer keeps only its input and recomputes its activations in the
    backward pass (transformers' activation checkpointing; for a timm model, transformers' wrapper calls timm's
    ``set_grad_checkpointing``). Non-reentrant (``use_reentrant=False``): gradients reach LoRA adapters and the
    layers after frozen ones without making the layer inputs require grad, which the reentrant variant needs
    PEFT's ``enable_input_require_grads`` for; the RNG is replayed, so dropout masks and gradients are unchanged.
    Frozen layers pinned to eval mode are not recomputed: they keep no activations for the backward anyway."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ConfigError(
            f"--gradient-checkpointing: {type(base).__name__} cannot recompute its layers (transformers implements "
            "it for transformer families such as ViT, BERT and DistilBERT, and timm models whose architecture has "
            "set_grad_checkpointing; not for ResNet or word vectors); leave the flag out"
        )
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x; the older name is deprecated
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if hasattr(base, "disable_input_require_grads"):
        # transformers also makes the input embeddings' output require grad, which only the reentrant variant
        # needs: with it, a plan that freezes the early layers would backpropagate through them for nothing
        base.disable_input_require_grads()


def switches_used(model: nn.Module, config: Any, channels_last: bool, accelerator: Any) -> dict[str, Any]:
    """What the run actually used (for metrics.json)."""
    return {
        "mixed_precision": str(accelerator.mixed_precision),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "channels_last": channels_last,
        "compile": bool(config.compile),
        "gradient_checkpointing": bool(config.gradient_checkpointing),
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
