"""What a model's image processor does to pixels after resizing (rescale and normalise), read once from the
processor so that hftl can store uint8 pixels and apply the same arithmetic on the model's device."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hftl.data.bad_inputs import check_processor_size
from hftl.settings.data import DEFAULT_MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class ImageStats:
    """What the model's image processor does after resizing: the rescale factor and the normalisation."""

    height: int
    width: int
    rescale_factor: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_processor(cls, processor: Any, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> ImageStats:
        """What ``processor`` does, probed on one small image once its target size is known to be sane (up to
        ``max_image_pixels``: ``check_processor_size``)."""
        check_processor_size(processor, max_image_pixels)
        probe = processor(
            [np.zeros((37, 41, 3), dtype=np.uint8)], do_rescale=False, do_normalize=False, return_tensors="np"
        )["pixel_values"]
        _, channels, height, width = probe.shape
        rescale = processor.rescale_factor if getattr(processor, "do_rescale", True) else 1.0
        if getattr(processor, "do_normalize", True):
            mean, std = (
                _per_channel(processor.image_mean, channels),
                _per_channel(processor.image_std, channels),
            )
        else:
            mean, std = (0.0,) * channels, (1.0,) * channels
        return cls(height, width, float(rescale), mean, std)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw uint8 pixels (batch, channels, height, width) rescaled and normalised as the processor does, in
        float32 on their own device (the constants are made once per device: no copy, so no sync, per batch)."""
        mean, std = _channel_constants(self.mean, self.std, pixels.device)
        return (pixels.float() * self.rescale_factor - mean) / std


@functools.cache
def _channel_constants(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.tensor(mean, device=device).view(-1, 1, 1),
        torch.tensor(std, device=device).view(-1, 1, 1),
    )


def _per_channel(values: float | Sequence[float], channels: int) -> tuple[float, ...]:
    if isinstance(values, int | float):
        return (float(values),) * channels
    return tuple(float(v) for v in values)
