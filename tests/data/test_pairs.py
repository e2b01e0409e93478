"""Sentence pairs for --strategy contrastive: balanced, never an example with itself, the same under a seed."""

from __future__ import annotations

from collections import Counter

import pytest

from hftl.data.pairs import sentence_pairs
from hftl.errors import DataError

LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 2]


def test_every_round_gives_each_example_one_positive_and_one_negative():
    pairs = sentence_pairs(LABELS, iterations=5, seed=0)
    assert len(pairs) == 2 * 5 * len(LABELS)
    targets = Counter(pair.target for pair in pairs)
    assert targets == {1.0: 5 * len(LABELS), 0.0: 5 * len(LABELS)}
    for pair in pairs:
        assert pair.first != pair.second
        assert (LABELS[pair.first] == LABELS[pair.second]) == (pair.target == 1.0)
    firsts = Counter((pair.first, pair.target) for pair in pairs)
    assert set(firsts.values()) == {5}  # each example leads 5 positives and 5 negatives


def test_pairs_depend_only_on_the_seed():
    first = sentence_pairs(LABELS, iterations=3, seed=7)
    assert sentence_pairs(LABELS, iterations=3, seed=7) == first
    assert sentence_pairs(LABELS, iterations=3, seed=8) != first
    # a label of two examples has one possible partner each: always the other one
    assert {(p.first, p.second) for p in first if p.target == 1.0 and LABELS[p.first] == 1} == {
        (3, 4),
        (4, 3),
    }


def test_a_label_with_one_example_or_a_single_label_is_refused_by_name():
    with pytest.raises(DataError, match=r"only one of: 'neutral'"):
        sentence_pairs([0, 0, 1, 2, 2], iterations=1, seed=0, names=["negative", "neutral", "positive"])
    with pytest.raises(DataError, match=r"at least two labels .*found: 'negative'"):
        sentence_pairs([0, 0, 0], iterations=1, seed=0, names=["negative", "positive"])
