"""Frozen features at every depth, in one forward pass: what the advisor scores.

``depth_features`` runs a model once over a batch loader with ``output_hidden_states=True`` and pools the output
of each layer/stage: token sequences by their first token (``cls``) or their mask-weighted mean (``mean``),
feature maps (ResNet stages) by global average pooling. It also returns the pretrained head's class probabilities
(for LEEP) when asked.

``cached_depth_features`` keeps the result in the frozen-feature cache's folder (``hftl.training.feature_cache``), keyed by the
weights, the preprocessing, the examples' fingerprint and the pooling: ``hftl advise`` followed by ``--case auto``,
or a second look with other thresholds, runs no forward pass again.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def cached_depth_features(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    key: Mapping[str, Any],
    root: Path | None,
    rows: int | None = None,
    refresh: bool = False,
    **settings: Any,
) -> tuple[DepthFeatures, bool]:
    """``depth_features`` stored as ``root/probe-DIGEST.npz`` (no pickles); returns (features, reused). ``key`` must
    name everything the features depend on; an unreadable or corrupted file, or one of other than ``rows`` examples,
    is rebuilt, and ``refresh`` rebuilds it anyway; ``root=None``: no cache."""
    if root is None:
        return depth_features(model, batches, **settings), False
    from hftl.training.feature_store import key_digest  # the feature cache's key hashing

    path = Path(root) / f"probe-{key_digest({**key, **settings, 'device': None})[:24]}.npz"
    stored = None if refresh else _read(path)
    if stored is not None and (rows is None or len(stored.labels) == rows):
        return stored, True
    features = depth_features(model, batches, **settings)
    _write(path, features)
    return features, False


def _write(path: Path, features: DepthFeatures) -> None:
    arrays = {f"depth_{depth}": array for depth, array in features.features.items()}
    arrays["labels"], arrays["pooling"] = features.labels, np.array(features.pooling)
    if features.source_probabilities is not None:
        arrays["source_probabilities"] = features.source_probabilities
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(partial, **arrays)
    os.replace(partial, path)  # atomic: a reader sees the whole file or none


def _read(path: Path) -> DepthFeatures | None:
    """The stored features, or None when missing or damaged (zip CRCs are checked as the arrays are read)."""
    if path.is_symlink() or not path.is_file():  # a link is the cache folder's only by accident: rebuilt
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        depths = {int(name.split("_")[1]): arrays[name] for name in arrays if name.startswith("depth_")}
        if not depths:
            return None
        features = DepthFeatures(
            depths, arrays["labels"], arrays.get("source_probabilities"), str(arrays["pooling"])
        )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return features if _well_formed(features) else None


def _well_formed(features: DepthFeatures) -> bool:
    """What ``depth_features`` writes: one finite float row per example at every depth (and for the source head's
    probabilities), labels of one kind per example; anything else (an edited or foreign file) is rebuilt."""
    labels = features.labels
    if labels.ndim not in (1, 2) or labels.dtype.kind not in "iub" or not len(labels):
        return False
    arrays = list(features.features.values())
    if features.source_probabilities is not None:
        arrays.append(features.source_probabilities)
    return min(features.features) >= 1 and all(
        array.ndim == 2
        and array.dtype.kind == "f"
        and array.shape[0] == len(labels)
        and array.shape[1] > 0
        and bool(np.isfinite(array).all())
        for array in arrays
    )


__all__ = ["DepthFeatures", "cached_depth_features", "depth_features", "pool"]
