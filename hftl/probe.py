"""Frozen features at every depth, in one forward pass: what the advisor scores.

``depth_features`` runs a model once over a batch loader with ``output_hidden_states=True`` and pools the output
of each layer/stage: token sequences by their first token (``cls``) or their mask-weighted mean (``mean``),
feature maps (ResNet stages) by global average pooling. It also returns the pretrained head's class probabilities
(for LEEP) when asked.

This is the seam for the frozen-feature cache (``hftl.features``): a cache that can return pooled per-depth
features for a model and dataset fingerprint can replace the forward pass here without changing the advisor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hftl.errors import ModelError

POOLINGS = ("cls", "mean")


@dataclass
class DepthFeatures:
    """Pooled features after each layer (depth 1 = after the first layer/stage), with the examples' labels."""

    features: dict[int, np.ndarray]
    labels: np.ndarray
    source_probabilities: np.ndarray | None = None
    pooling: str = "cls"  # how the hidden states were pooled ("global average" for feature maps)

    @property
    def depths(self) -> list[int]:
        return sorted(self.features)


def pool(hidden: torch.Tensor, pooling: str, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, tokens, dims) -> (batch, dims) by ``pooling``; (batch, channels, h, w) -> global average."""
    if hidden.ndim == 4:
        return hidden.float().mean(dim=(2, 3))
    if hidden.ndim != 3:
        raise ModelError(f"cannot pool hidden states of shape {tuple(hidden.shape)}")
    if pooling == "cls":
        return hidden[:, 0].float()
    if attention_mask is None:
        return hidden.float().mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1).float() / weights.sum(dim=1).clamp(min=1).float()


@torch.no_grad()
def depth_features(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    pooling: str = "mean",
    device: torch.device | str = "cpu",
    probabilities: bool = False,
) -> DepthFeatures:
    """One forward pass over ``batches`` (dicts with the model inputs and ``labels``), pooled at every depth."""
    if pooling not in POOLINGS:
        raise ModelError(f"unknown pooling {pooling!r}; valid poolings: {', '.join(POOLINGS)}")
    model = model.to(device).eval()
    per_depth: dict[int, list[np.ndarray]] = {}
    labels, probs, maps = [], [], False
    for batch in batches:
        inputs = {k: v.to(device) for k, v in batch.items() if k not in ("labels", "example_id")}
        outputs = model(**inputs, output_hidden_states=True)
        hidden_states = outputs.hidden_states
        if not hidden_states or len(hidden_states) < 2:
            raise ModelError(f"{type(model).__name__} returned no per-layer hidden states")
        mask = inputs.get("attention_mask")
        for depth, hidden in enumerate(hidden_states[1:], start=1):  # [0] is the stem's output
            per_depth.setdefault(depth, []).append(pool(hidden, pooling, mask).cpu().numpy())
            maps = maps or hidden.ndim == 4
        labels.append(batch["labels"].cpu().numpy())
        if probabilities:
            probs.append(torch.softmax(outputs.logits.float(), dim=-1).cpu().numpy())
    if not labels:
        raise ModelError("no examples to compute features on")
    return DepthFeatures(
        {depth: np.concatenate(chunks).astype(np.float64) for depth, chunks in per_depth.items()},
        np.concatenate(labels),
        np.concatenate(probs).astype(np.float64) if probabilities else None,
        "global average" if maps else pooling,
    )


__all__ = ["DepthFeatures", "depth_features", "pool"]
