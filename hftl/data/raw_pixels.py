"""Image batches reach the model as raw uint8 pixels and are rescaled and normalised on the model's own device.

Why: a float32 batch is four times the bytes of its pixels through every copy between a DataLoader worker and the
GPU (the worker's shared memory, pinned memory, the host-to-device copy), and normalising costs the workers time;
on an H200, ViT-B/16 full fine-tuning waited for data in 45% of its steps with float32 batches (docs/benchmarks.md).
timm's ``PrefetchLoader`` and FFCV normalise on the device for the same reason.

hftl does it at the model's entry, a forward pre-hook, not in each loop that feeds it: training, evaluation, the
feature cache, the learning-rate finder and the advisor's probes all call the model, so none can skip the step or
run it twice. The dtype is the rule: uint8 ``pixel_values`` are raw and normalised once; floating ones (an image
processor's output, what ``pipeline`` and the saved model's users pass) go through untouched. The hook runs before
any other: an engine's own input hook (FSDP2 casts floating inputs to its compute dtype, and lets uint8 through)
must see the normalised pixels, as it saw float32 batches before, so the loops hook again after ``prepare``.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from torch import nn

    from hftl.data.image_stats import ImageStats

PIXELS = "pixel_values"
_HOOK = "_hftl_raw_pixels"  # (stats, hook handle) on each module that accepts raw pixels


def accept_raw_pixels(model: nn.Module, stats: ImageStats | None) -> nn.Module:
    """Let ``model`` take raw uint8 ``pixel_values`` and normalise them with ``stats``, before any other forward
    pre-hook (a no-op for text, where ``stats`` is None; calling it again only moves the hook back to the front).
    A PEFT wrapper's inner model is hooked too, for callers that reach it past the wrapper (``peft_model.base_model``
    runs the inner model without the wrapper's hooks); the dtype rule makes the second hook a no-op."""
    if stats is None:
        return model
    inner = getattr(model, "get_base_model", None)
    for module in [model, inner()] if callable(inner) else [model]:
        held = module.__dict__.get(_HOOK)  # not getattr: a PEFT wrapper would answer with its inner model's
        if (
            held is not None
            and held[0] == stats
            and next(iter(module._forward_pre_hooks), None) == held[1].id
        ):
            continue
        if held is not None:  # another hook went first (an engine's), or the batches are another processor's
            held[1].remove()
        hook = partial(_normalise_pixels, stats)
        handle = module.register_forward_pre_hook(hook, with_kwargs=True, prepend=True)
        module.__dict__[_HOOK] = (stats, handle)
    return model


def is_raw(pixels: Any) -> bool:
    return isinstance(pixels, torch.Tensor) and pixels.dtype == torch.uint8


def _normalise_pixels(
    stats: ImageStats, module: nn.Module, args: tuple, kwargs: dict[str, Any]
) -> tuple[tuple, dict[str, Any]] | None:
    if is_raw(kwargs.get(PIXELS)):
        return args, {**kwargs, PIXELS: stats.normalise(kwargs[PIXELS])}
    if PIXELS not in kwargs and args and is_raw(args[0]):
        return (stats.normalise(args[0]), *args[1:]), kwargs
    return None
