"""The evidence behind the trials' seed-noise term: the spread of plan differences over seeds, pooled from
calibration rows, and the calibration's consistency count (the same pick, or a reported tie, on every seed)."""

from __future__ import annotations

import pytest

from bench.trial_noise import consistent, seed_spread


def auto_row(seed: int, scores: dict[str, float], pick: str = "full", tied: list[str] | None = None) -> dict:
    trials = [[name, 0, 1, 100, score, 300, 1.0, 0.5, 0.1] for name, score in scores.items()]
    return {"pair": "p", "plan": "auto", "seed": seed, "trials": trials, "auto_pick": pick, "auto_tied": tied}


def test_the_spread_of_a_difference_over_seeds_is_pooled_as_a_share_of_the_binomial():
    rows = [
        auto_row(0, {"full": 0.80, "head": 0.70, "scratch": 0.50}),
        auto_row(1, {"full": 0.82, "head": 0.68, "scratch": 0.50}),
        auto_row(2, {"full": 0.78, "head": 0.72, "scratch": 0.51}),
    ]
    pairs, sd, share = seed_spread(rows)["all"]
    assert pairs == 1  # scratch is at chance: left out
    differences = [0.10, 0.14, 0.06]
    mean = sum(differences) / 3
    variance = sum((d - mean) ** 2 for d in differences) / 2
    assert sd == pytest.approx(variance**0.5)
    assert share == pytest.approx(variance / (2 * 0.75 * 0.25))
    assert "51-230" in seed_spread(rows)  # 100 training examples


def test_a_pair_is_consistent_when_one_plan_is_every_seeds_pick_or_in_its_reported_tie():
    assert consistent([auto_row(s, {}, "partial") for s in range(3)])
    tie = auto_row(2, {}, "partial", ["partial", "full"])
    assert consistent([auto_row(0, {}, "full"), auto_row(1, {}, "full"), tie])
    assert not consistent([auto_row(0, {}, "full"), auto_row(1, {}, "head"), tie])
    assert not consistent([auto_row(0, {}, "full"), auto_row(1, {}, "partial")])  # no tie reported


def test_perfect_scores_on_every_seed_do_not_break_the_table():
    from bench.trial_noise import noise_table

    rows = [auto_row(seed, {"full": 1.0, "head": 1.0}) for seed in range(3)]
    assert seed_spread(rows) == {} and noise_table(rows) == []
