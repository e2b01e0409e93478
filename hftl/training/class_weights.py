"""Class weights for imbalanced data (``--class-weights none|auto|FILE``): the training loss weighs each class.

``auto`` is scikit-learn's "balanced" rule (``n / (classes * count)``: every class contributes as much to the loss
as if the classes were equal), capped so that no class weighs more than ``AUTO_CAP`` times the lightest: a class
with a handful of examples would otherwise dominate every batch it appears in. ``FILE`` is a JSON object
``{"label": weight, ...}`` naming every class. Evaluation and the saved model are unchanged; the per-class recall in
``classification_report.json`` shows the effect.

Multi-label data has no classes competing in one softmax: each label is its own yes/no decision, so the weights are
BCE-with-logits' ``pos_weight``, one per label. ``auto`` is negatives/positives in the training split (a label on
10% of the examples weighs its positives 9x: the positives then count as much as the negatives), kept within
``1/AUTO_CAP``..``AUTO_CAP`` for the same reason as the single-label cap; ``FILE`` gives each label's pos_weight.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hftl.errors import ConfigError

AUTO_CAP = 10.0


def class_weights(
    setting: str, labels: list[str], train_labels: Sequence[Any], multi_label: bool = False
) -> list[float] | None:
    """The weight of each class (in label order), or None for ``none``; ``multi_label``: each label's
    ``pos_weight`` (``train_labels`` are then lists of label ids)."""
    if setting == "none":
        return None
    if setting == "auto":
        return positive_weights(labels, train_labels) if multi_label else balanced(labels, train_labels)
    return from_file(Path(setting).expanduser(), labels)


def positive_weights(labels: list[str], train_labels: Sequence[Sequence[int]]) -> list[float]:
    """Each label's negatives/positives in the training split, within [1/AUTO_CAP, AUTO_CAP]."""
    import numpy as np

    positives = np.zeros(len(labels))
    for ids in train_labels:
        positives[list(ids)] += 1
    negatives = len(train_labels) - positives
    ratio = negatives / np.maximum(positives, 1)
    return [round(float(w), 6) for w in np.clip(ratio, 1 / AUTO_CAP, AUTO_CAP)]


def balanced(labels: list[str], train_labels: Sequence[int]) -> list[float]:
    """Inverse class frequency (sklearn's "balanced"), capped at ``AUTO_CAP`` x the lightest class."""
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    present = np.asarray(train_labels)
    weights = compute_class_weight("balanced", classes=np.arange(len(labels)), y=present)
    cap = AUTO_CAP * float(weights.min())
    return [round(min(float(w), cap), 6) for w in weights]


# a weight the float32 loss can hold and still tell from zero (1e308 becomes inf, 1e-320 zero: every step skipped)
MIN_WEIGHT, MAX_WEIGHT = 1e-6, 1e6


def from_file(path: Path, labels: list[str]) -> list[float]:
    """A JSON object mapping every label to a positive weight; anything else is one error naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"--class-weights {path}: cannot read it as JSON ({error}); give none, auto or a JSON file such as "
            '{"positive": 1.0, "negative": 3.0}'
        ) from error
    if not isinstance(data, dict):
        raise ConfigError(f"--class-weights {path}: expected a JSON object {{label: weight}}")
    missing = [label for label in labels if label not in data]
    unknown = [key for key in data if key not in labels]
    if missing or unknown:
        raise ConfigError(
            f"--class-weights {path}: "
            + "; ".join(
                part
                for part in (
                    f"no weight for {', '.join(map(repr, missing))}" if missing else "",
                    f"labels not in the data: {', '.join(map(repr, unknown))}" if unknown else "",
                )
                if part
            )
            + f" (the labels are {', '.join(map(repr, labels))})"
        )
    weights = []
    for label in labels:
        value = data[label]
        number = math.nan
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(min(value, 2 * MAX_WEIGHT))  # an integer of 400 digits would overflow float()
        if not MIN_WEIGHT <= number <= MAX_WEIGHT:  # NaN fails both
            raise ConfigError(
                f"--class-weights {path}: the weight of {label!r} must be a number from {MIN_WEIGHT:g} to "
                f"{MAX_WEIGHT:g}, got {str(value)[:40]}"
            )
        weights.append(number)
    return weights


def describe_weights(labels: list[str], weights: list[float], multi_label: bool = False) -> str:
    what = "positive-example weights per label (BCE pos_weight)" if multi_label else "class weights"
    return f"{what}: " + ", ".join(
        f"{label} {weight:g}" for label, weight in zip(labels, weights, strict=True)
    )


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the class weights (PyTorch normalises by the summed weights of the batch); for
    multi-hot targets, BCE-with-logits with the weights as each label's ``pos_weight``."""
    if labels.is_floating_point():
        return nn.functional.binary_cross_entropy_with_logits(
            logits.float(), labels.float(), pos_weight=weights.to(logits.device)
        )
    return nn.functional.cross_entropy(logits.float(), labels, weight=weights.to(logits.device))
