"""Sentence pairs from a few labelled examples, for the contrastive stage of ``--strategy contrastive``.

SetFit's recipe (``sentence_pairs_generation``, the ``num_iterations`` mode): in each of R rounds every example is
paired once with another example of its label (a positive, target 1) and once with an example of another label (a
negative, target 0). N examples give 2 x R x N pairs, half positive, half negative, so 16 sentences already make 640
pairs at SetFit's R = 20. Unlike SetFit's original sampler, an example is never its own partner (a pair of one
sentence with itself teaches nothing but the identity). Partners are drawn by numpy's generator from the seed alone,
so a run and its resumed twin see the same pairs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from hftl.errors import DataError


class Pair(NamedTuple):
    """Two training examples (row indices) and the cosine similarity their embeddings should have."""

    first: int
    second: int
    target: float


def sentence_pairs(
    labels: Sequence[int], iterations: int, seed: int, names: Sequence[str] | None = None
) -> list[Pair]:
    """``iterations`` rounds of one positive and one negative pair per example, in generation order.

    ``names`` (the label names, by id) only make the error messages readable."""
    check_pairable(labels, names)
    labels_array = np.asarray(labels)
    rng = np.random.default_rng(seed)
    by_label = {label: np.flatnonzero(labels_array == label) for label in sorted(set(labels))}
    others = {label: np.flatnonzero(labels_array != label) for label in by_label}
    pairs: list[Pair] = []
    for _ in range(iterations):
        for index, label in enumerate(labels):
            same = by_label[label]
            partner = same[same != index][rng.integers(len(same) - 1)]
            pairs.append(Pair(index, int(partner), 1.0))
            pairs.append(Pair(index, int(others[label][rng.integers(len(others[label]))]), 0.0))
    return pairs


def check_pairable(labels: Sequence[int], names: Sequence[str] | None = None) -> None:
    """Every label needs a second example (a positive partner) and another label must exist (a negative one)."""
    counts = Counter(labels)

    def name(label: int) -> str:
        return repr(names[label]) if names is not None and 0 <= label < len(names) else str(label)

    if len(counts) < 2:
        found = ", ".join(name(label) for label in counts) or "none"
        raise DataError(
            f"--strategy contrastive needs examples of at least two labels in the training split (found: {found}): "
            "a different-label pair needs both"
        )
    alone = sorted(label for label, count in counts.items() if count < 2)
    if alone:
        raise DataError(
            "--strategy contrastive needs at least two training examples of every label (a same-label pair never "
            f"pairs an example with itself); only one of: {', '.join(name(label) for label in alone)}. Add examples "
            "of those labels or use --strategy head"
        )
