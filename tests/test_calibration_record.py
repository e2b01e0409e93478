"""The small-ViT and tiny-BERT defaults are what the recorded calibration says: their candidate rates, and a default
rule that beats scratch where the source's task is the target's (bench/results/calibration.jsonl, the rows
docs/calibration.md is written from)."""

from __future__ import annotations

import importlib
import math
import os
from unittest import mock

import pytest

with mock.patch.dict(os.environ):  # the script sets its threads and offline switches: not this session's
    calibrate = importlib.import_module("bench.calibrate")


@pytest.fixture(scope="module")
def rows():
    recorded = calibrate.REPO / "bench" / "results" / "calibration.jsonl"
    return calibrate.default_pooling_rows(calibrate.load_rows(recorded))


def test_small_vit_rates_are_the_calibration_candidates(rows):
    from hftl.transfer.defaults import SMALL_VIT

    cells = {key: cell for key, cell in calibrate.summarize(rows).items() if cell["family"] == "vit"}
    picks = {c["plan"]: c["pick"]["lr"] for c in calibrate.candidate_defaults(cells, 0.01)}
    assert set(picks) == {"head", "head_trunc", "partial", "lora", "full", "scratch"}
    for plan, strategy in [("head", "head"), ("lora", "lora"), ("partial", "partial"), ("full", "full")]:
        assert math.isclose(picks[plan], SMALL_VIT.lrs[strategy]), plan
    assert math.isclose(picks["scratch"], SMALL_VIT.scratch_lr)


def test_the_default_rule_beats_scratch_on_every_small_vit_pair_and_the_old_one_did_not(rows):
    wins, old_losses = [], 0
    for pair in calibrate.PAIR_GROUPS["vit"]:
        plan, lr = calibrate.default_rule(pair)
        accuracy, n = calibrate._mean_at(rows, pair, plan, lr)
        scratch, m = calibrate._mean_at(rows, pair, "scratch", calibrate.scratch_default(pair))
        assert n == m == 3, pair  # three seeds of each
        wins.append(accuracy - scratch)
        old_plan = {"small_similar": "head", "small_different": "head_trunc"}.get(
            calibrate.case_of(pair), "full"
        )
        old, _ = calibrate._mean_at(rows, pair, old_plan, calibrate.TODAY_DEFAULTS["vit"][old_plan])
        old_scratch, _ = calibrate._mean_at(rows, pair, "scratch", calibrate.TODAY_DEFAULTS["vit"]["scratch"])
        old_losses += old < old_scratch
    assert min(wins) > 0 and len(wins) == 6
    assert (
        old_losses >= 4
    )  # the generic (BERT-base) table lost to scratch on most pairs: why the family is measured


def test_tiny_bert_rates_are_the_calibration_candidates_and_beat_scratch_on_sentiment(rows):
    from hftl.transfer.defaults import TINY_BERT

    cells = {key: cell for key, cell in calibrate.summarize(rows).items() if cell["family"] == "tinybert"}
    picks = {c["plan"]: c["pick"]["lr"] for c in calibrate.candidate_defaults(cells, 0.01)}
    for plan in ("head", "lora", "partial", "full"):
        assert math.isclose(picks[plan], TINY_BERT.lrs[plan]), plan
    assert math.isclose(picks["scratch"], TINY_BERT.scratch_lr)
    for pair in calibrate.PAIR_GROUPS["tinybert"]:
        if calibrate.PAIRS[pair]["target"] == "uci-domains":
            continue  # another task: every transfer plan stays near chance, scratch learns (docs/calibration.md)
        plan, lr = calibrate.default_rule(pair)
        accuracy, n = calibrate._mean_at(rows, pair, plan, lr)
        scratch, m = calibrate._mean_at(rows, pair, "scratch", calibrate.scratch_default(pair))
        assert n == m == 3 and accuracy > scratch, pair


def test_the_small_vit_rule_beats_scratch_on_the_held_out_narrower_vit(rows):
    pairs = calibrate.PAIR_GROUPS["vit32"]
    assert {calibrate.case_of(pair) for pair in pairs} == {
        "small_similar",
        "small_different",
        "large_similar",
        "large_different",
    }
    for pair in pairs:
        plan, lr = calibrate.default_rule(
            pair
        )  # the 64-wide ViT's table: the 32-wide one was not measured for it
        accuracy, n = calibrate._mean_at(rows, pair, plan, lr)
        scratch, m = calibrate._mean_at(rows, pair, "scratch", calibrate.scratch_default(pair))
        assert n == m == 3 and accuracy > scratch, pair
