"""bench/rerun_drift.py: a rerun's rows are matched to the recorded ones by their settings, seed by seed, and a
pair's best plan is named with the plans tied with it."""

from __future__ import annotations

import pytest

from bench.rerun_drift import drift, leaders, render


def row(plan: str, seed: int, accuracy: float, lr: float = 0.01) -> dict:
    return {"pair": "p", "plan": plan, "lr": lr, "seed": seed, "epochs": 3, "best_accuracy": accuracy}


def test_rows_are_matched_by_their_settings_and_the_latest_recorded_row_counts():
    recorded = [row("full", 0, 0.5), row("full", 0, 0.80), row("full", 1, 0.90), row("head", 0, 0.70)]
    rerun = [row("full", 0, 0.82), row("full", 1, 0.89), row("head", 0, 0.70), row("head", 0, 0.7, lr=0.1)]
    result = drift(recorded, rerun)
    assert result["unmatched"] == 1  # another learning rate: not the same row
    assert result["changes"][("p", "full")] == pytest.approx([0.02, -0.01])
    assert result["changes"][("p", "head")] == [0.0]
    assert result["best"]["p"] == {"before": "full (0.850)", "after": "full (0.855)"}
    assert "3 rows matched (1 unmatched)" in render(result)


def test_a_tie_names_every_plan_in_it():
    assert (
        leaders({"full": [1.0, 1.0], "scratch": [1.0, 1.0], "head": [0.9, 0.95]}) == "full = scratch (1.000)"
    )
