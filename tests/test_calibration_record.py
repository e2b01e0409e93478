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


def candidate_rates(rows, family: str) -> dict[str, float]:
    """Per plan, the rate the recorded runs' candidate-defaults table picks for ``family``."""
    cells = {key: cell for key, cell in calibrate.summarize(rows).items() if cell["family"] == family}
    return {c["plan"]: c["pick"]["lr"] for c in calibrate.candidate_defaults(cells, 0.01)}


def rule_over_scratch(rows, pair: str) -> float:
    """The default rule's mean accuracy as hftl runs it minus scratch's at its default rate (on images the better of
    with and without augmentation where both ran), each over three seeds."""
    accuracy, n = calibrate.rule_mean(rows, pair)
    scratch, m = calibrate.scratch_mean(rows, pair)
    assert n == m == 3, pair
    return accuracy - scratch


ALL_CASES = {"small_similar", "small_different", "large_similar", "large_different"}
OWN_BUDGET = calibrate.PAIR_GROUPS["all"]  # the pairs at their own budgets (not the between-sizes ones)


def generic_minus_scratch(rows, pair: str) -> tuple[float, int]:
    """What an uncovered model gets (the textbook plan at the generic, BERT-base rates) minus scratch at the generic
    rate, and over how many seeds (the fewer of the two)."""
    from hftl.transfer.defaults import GENERIC_LRS, GENERIC_SCRATCH_LR

    plan = {"small_similar": "head", "small_different": "head_trunc"}.get(calibrate.case_of(pair), "full")
    generic, n = calibrate._mean_at(rows, pair, plan, GENERIC_LRS["head" if plan == "head_trunc" else plan])
    scratch, m = calibrate._mean_at(rows, pair, "scratch", GENERIC_SCRATCH_LR)
    return generic - scratch, min(n, m)


def test_small_vit_rates_are_the_calibration_candidates(rows):
    from hftl.transfer.defaults import SMALL_VIT

    picks = candidate_rates(rows, "vit")
    assert set(picks) == {"head", "head_trunc", "partial", "lora", "full", "scratch"}
    for plan in ("head", "lora", "partial", "full"):
        assert math.isclose(picks[plan], SMALL_VIT.lrs[plan]), plan
    assert math.isclose(picks["scratch"], SMALL_VIT.scratch_lr)


def test_the_default_rule_beats_scratch_on_every_small_vit_pair_and_the_old_one_did_not(rows):
    pairs = [p for p in calibrate.PAIR_GROUPS["vit"] if not calibrate.PAIRS[p].get("held_out")]  # the table's
    assert len(pairs) == 6 and all(rule_over_scratch(rows, pair) > 0 for pair in pairs)
    old_rates = calibrate.TODAY_DEFAULTS["vit"]
    old_losses = 0
    for pair in pairs:
        old_plan = {"small_similar": "head", "small_different": "head_trunc"}.get(
            calibrate.case_of(pair), "full"
        )
        old, _ = calibrate._mean_at(rows, pair, old_plan, old_rates[old_plan])
        old_scratch, _ = calibrate._mean_at(rows, pair, "scratch", old_rates["scratch"])
        old_losses += old < old_scratch
    # the generic (BERT-base) table lost to scratch on most pairs: why the family is measured
    assert old_losses >= 4


@pytest.fixture(scope="module")
def short_rows():
    """The runs at hftl's default --epochs (bench/results/short_budget.jsonl, docs/calibration.md "Short budget")."""
    return calibrate.load_rows(calibrate.SHORT_BUDGET_RECORD)


@pytest.fixture(scope="module")
def augmentation_rows():
    """The image pairs at their own budgets without augmentation, and the rule as hftl's augmentation default runs
    it (docs/calibration.md "Augmentation: hftl's default")."""
    return calibrate.default_pooling_rows(calibrate.load_rows(calibrate.AUGMENTATION_RECORD))


@pytest.fixture(scope="module")
def own_rows(rows, augmentation_rows):
    """Every pair at its own budget with the image rules as they run (docs/calibration.md, the defaults table): the
    main record, and the augmentation and ViT small_different records' unaugmented and command runs."""
    return calibrate.own_budget_rows(
        rows, augmentation_rows, calibrate.load_rows(calibrate.VIT_DIFFERENT_RECORD)
    )


@pytest.fixture(scope="module")
def between_rows():
    """The pairs between the sizes, run as a user's command runs them (docs/calibration.md "Between the sizes")."""
    return calibrate.load_rows(calibrate.BETWEEN_SIZES_RECORD)


# the small_similar ResNet pairs measured at hftl's default 3 epochs: the table's, and the 1.5x and 4x wide held out
SHORT_RESNET_SIMILAR = ("fashion59-20", "resnet59-fashion04-20", "resnet4x-fashion59-20")


def test_at_three_epochs_the_resnet_similar_rule_beats_scratch_where_its_old_rate_lost(
    short_rows,
):
    """hftl's default --epochs 3 is 12 optimizer steps at 20 per class: partial fine-tuning at 1e-3 (the long-budget
    table's lowest rate within 2 points) lost to scratch there (the better of with and without augmentation) by 20-21
    points; at today's 1e-2 the rule beats it on all three ResNets, the two held out included (by 3.9-7.6)."""
    from hftl.transfer.defaults import RESNET

    assert short_rows and all(r["epochs"] == calibrate.SHORT_BUDGET_EPOCHS for r in short_rows)
    for pair in SHORT_RESNET_SIMILAR:
        assert calibrate.default_rule(pair) == ("partial", RESNET.lrs["partial"])
        assert rule_over_scratch(short_rows, pair) > 0.035, pair
    for pair in SHORT_RESNET_SIMILAR[:2]:
        old, n = calibrate._mean_at(short_rows, pair, "partial", 1e-3)
        scratch, m = calibrate.scratch_mean(short_rows, pair)
        assert n == m == 3 and old < scratch - 0.20, pair


def test_at_three_epochs_the_resnet_digits_rule_is_within_two_points_of_scratch(short_rows):
    """Recorded, not a target: at 3 epochs (21 optimizer steps) full fine-tuning as the rule runs it (not augmented:
    under 10 epochs, and the digits are registered) is 0.8 and 1.8 points under scratch without augmentation on
    digits; partial fine-tuning at 1e-2 and --case auto are within 2.2 points of that scratch either way, and scratch
    with augmentation is over 20 points under it."""
    for pair in ("digits-20", "resnet59-digits-20"):
        assert calibrate.default_rule(pair) == ("full", 3e-3)
        assert all(r["augment"] is False for r in calibrate._at(short_rows, pair, "full", 3e-3))
        assert -0.02 < rule_over_scratch(short_rows, pair) < -0.005, pair
        scratch, _ = calibrate.scratch_mean(short_rows, pair)
        for plan, lr in (("partial", 1e-2), ("auto", "default")):
            accuracy, n = calibrate._mean_at(short_rows, pair, plan, lr)
            assert n == 3 and abs(accuracy - scratch) < 0.025, (pair, plan)
        augmented, _ = calibrate._mean_at(short_rows, pair, "scratch", calibrate.scratch_default(pair))
        assert augmented < scratch - 0.2, pair


def test_the_resnet_partial_rate_holds_at_both_budgets(rows, short_rows):
    """At 3 epochs today's partial rate was the best of 1e-3, 3e-3 and 1e-2 on every pair measured (small digits and
    shapes too); at the pairs' own budgets (8-30 epochs) it is within half a point of the best rate measured over
    three seeds on every ResNet pair, held out or not (17 pairs)."""
    from hftl.transfer.defaults import RESNET

    rate = RESNET.lrs["partial"]
    for pair in (*SHORT_RESNET_SIMILAR, "digits-20", "shapes-20"):
        by_rate = {lr: calibrate._mean_at(short_rows, pair, "partial", lr) for lr in (1e-3, 3e-3, 1e-2)}
        assert all(n == 3 for _, n in by_rate.values()), pair
        assert max(by_rate, key=lambda lr: by_rate[lr][0]) == rate, pair
    families = ("resnet", "resnet59", "resnet4x")
    pairs = [p for p in calibrate.PAIRS if calibrate.PAIRS[p]["family"] in families]
    measured = 0
    for pair in pairs:
        rates = {r["lr"] for r in rows if r["pair"] == pair and r["plan"] == "partial"}
        means = [calibrate._mean_at(rows, pair, "partial", lr) for lr in rates]
        best = max((mean for mean, n in means if n == 3), default=None)
        today, n = calibrate._mean_at(rows, pair, "partial", rate)
        if best is None or n != 3:
            continue
        measured += 1
        assert today >= best - 0.005, pair
    assert measured >= 17


def test_tiny_bert_rates_are_the_calibration_candidates_and_beat_scratch_on_sentiment(rows):
    from hftl.transfer.defaults import TINY_BERT

    picks = candidate_rates(rows, "tinybert")
    for plan in ("head", "lora", "partial", "full"):
        assert math.isclose(picks[plan], TINY_BERT.lrs[plan]), plan
    assert math.isclose(picks["scratch"], TINY_BERT.scratch_lr)
    # the domain task is another task: every transfer plan stays near chance there, scratch learns (docs)
    sentiment = [
        p
        for p in calibrate.PAIR_GROUPS["tinybert"]
        if calibrate.PAIRS[p]["target"] != "uci-domains" and not calibrate.PAIRS[p].get("held_out")
    ]
    assert len(sentiment) == 4 and all(rule_over_scratch(rows, pair) > 0 for pair in sentiment)


def test_the_small_vit_rule_beats_scratch_on_the_held_out_narrower_vit(rows):
    pairs = calibrate.PAIR_GROUPS["vit32"]  # the 64-wide ViT's table was set without them
    assert {calibrate.case_of(pair) for pair in pairs} == ALL_CASES
    assert all(rule_over_scratch(rows, pair) > 0 for pair in pairs)


# where scratch beat every transfer plan: the tiny BERT's domain task, and the held-out ELECTRA's and DistilBERT's
# (the same task, other model types); the source check must fire on these pairs and no others
SCRATCH_WON = [
    f"{family}-domains-{size}" for family in ("tinybert", "electra", "distilbert") for size in (20, "all")
]


def test_the_recorded_source_check_fires_only_where_scratch_beats_every_transfer_plan(rows):
    """bench/results/source_check.jsonl: where the check sets the source aside, scratch beat every transfer plan at
    hftl's rates (and the default rule becomes scratch); it never fires where a transfer plan beat scratch."""
    from bench.source_check import load, worse_than_random

    checks = load()
    assert set(OWN_BUDGET) <= set(checks)
    fired = [pair for pair in OWN_BUDGET if worse_than_random(pair, checks)]
    assert fired == SCRATCH_WON
    # behind by more than two standard errors, but holding most of what random features hold: kept, and right to
    # be (the rule's share came from this pair: held out, it fired, and scratch lost 25 points to the default)
    from bench.source_check import verdict
    from hftl.advisor.source_check import EVIDENCE, KEEP_SHARE

    wide = verdict(checks["vit192-digits-20"])
    assert wide.random - wide.pretrained > EVIDENCE * wide.noise and wide.kept >= KEEP_SHARE
    assert all(verdict(checks[pair]).kept < KEEP_SHARE for pair in fired)
    assert rule_over_scratch(rows, "vit192-digits-20") > 0.2
    for pair in OWN_BUDGET:
        scratch, _ = calibrate._mean_at(rows, pair, "scratch", calibrate.scratch_default(pair))
        plans = [
            p for p in calibrate.FAMILY_PLANS[calibrate.PAIRS[pair]["family"]] if p not in ("auto", "scratch")
        ]
        transfer = [calibrate._mean_at(rows, pair, p, calibrate.plan_default(pair, p))[0] for p in plans]
        best = max(value for value in transfer if value is not None)
        if pair in fired:
            assert scratch > best + 0.05 and calibrate.default_rule(pair)[0] == "scratch"
        elif best > scratch + 0.02:  # transfer won by two points or more: the check left the source alone
            assert not worse_than_random(pair, checks), pair
    assert all(rule_over_scratch(rows, pair) == 0.0 for pair in fired)  # the default is scratch itself


def test_the_recorded_source_check_gives_one_verdict_over_five_run_seeds():
    """bench/results/source_check_seeds.jsonl: on the pairs nearest the line, each run seed draws its own sample,
    random twin and folds. With the probe's folds drawn PROBE_REPEATS times, every seed agrees: the domain pairs
    (scratch won) fire, the pairs where random weights' probe leads but transfer won do not; with one draw, the
    held-out DistilBERT's 20-per-class pair held up to 59% of random's lead and escaped the check on a seed. Held out
    after the line was set, the weak ELECTRA's 20-per-class domain pair escapes it on one seed of five: its share,
    0.58, sits between the line and the one check where transfer won with random weights ahead (0.60)."""
    from bench.source_check import load_seeds, verdict
    from hftl.advisor.scores import PROBE_REPEATS
    from hftl.advisor.source_check import KEEP_SHARE

    by_pair = {key: [verdict(row) for row in by_seed.values()] for key, by_seed in load_seeds().items()}
    transfer_won = ["vit192-digits-20", "vit12-digits-20", "resnet59-antsbees-all"]
    escaped = "electra-domains-20"
    for pair in SCRATCH_WON + transfer_won:
        checks = by_pair[(pair, PROBE_REPEATS)]
        assert len(checks) == 5, pair
        fired = sum(check.worse_than_random for check in checks)
        assert fired == (5 - (pair == escaped) if pair in SCRATCH_WON else 0), pair
    assert max(check.kept for check in by_pair[("distilbert-domains-20", 1)]) > KEEP_SHARE
    kept = max(check.kept for check in by_pair[(escaped, PROBE_REPEATS)])
    assert KEEP_SHARE < kept < min(c.kept for c in by_pair[("resnet59-antsbees-all", PROBE_REPEATS)])


def test_every_recorded_case_auto_run_skipped_its_trials_exactly_where_todays_check_fires_at_its_seed(rows):
    """The auto table is today's advisor: at each auto run's own seed, the recorded check (source_check_seeds.jsonl)
    fires where that run trained from scratch without trials, and only there."""
    from bench.source_check import load_seeds, verdict
    from hftl.advisor.scores import PROBE_REPEATS

    checks = {
        (pair, seed): verdict(row)
        for (pair, repeats), by_seed in load_seeds().items()
        if repeats == PROBE_REPEATS
        for seed, row in by_seed.items()
    }
    skipping = (calibrate.ADVISOR_RULE, calibrate.SMALL_PARTIAL_RULE)  # the rules that skip the trials there
    runs = [r for r in rows if r["plan"] == "auto" and r.get("advisor_rule") in skipping]
    checked = [
        r for r in runs if calibrate.HFTL_FAMILY[calibrate.PAIRS[r["pair"]]["family"]] != "word-vectors"
    ]
    assert len(checked) > 90
    for run in checked:
        skipped = run["trials"] == [] and run["auto_order"] == ["scratch"]
        assert checks[(run["pair"], run["seed"])].worse_than_random == skipped, (run["pair"], run["seed"])


def test_the_resnet_rules_hold_on_a_resnet_four_times_as_wide_where_the_generic_table_loses(rows):
    """The ResNet table was set on ResNets 128 and 192 wide; on one 512 wide (ResNet-18's widths), developed the same
    way and held out, the default rule is level with scratch or ahead in every case (+4.1, +1.1, +0.5, 0.0 points),
    while what an uncovered model gets (the textbook plan at the generic, BERT-base rates) loses to scratch at the
    generic rate by 5.3-19.9 points: why the table covers ResNets up to twice that width (hftl.transfer.defaults)."""
    from hftl.transfer.defaults import RESNET, RESNET_MEASURED_MAX_WIDTH

    pairs = calibrate.PAIR_GROUPS["resnet4x"]
    assert {calibrate.case_of(p) for p in pairs} == ALL_CASES
    assert all(calibrate.PAIRS[p].get("held_out") for p in pairs)
    assert max(calibrate.RESNET4X_WIDTHS) == RESNET_MEASURED_MAX_WIDTH
    assert all(RESNET.covers(calibrate._config_of(p)) for p in pairs)
    for pair in pairs:
        assert rule_over_scratch(rows, pair) >= 0, pair
        loss, seeds = generic_minus_scratch(rows, pair)
        assert seeds == 3 and loss < -0.05, pair


def test_a_vit_three_times_as_wide_needs_a_third_of_the_small_vit_rates(rows):
    """On a 192-wide ViT (ViT-Ti's width), developed the same way, the small-ViT rates were a step too high: scratch
    at 3e-3 stayed far under 1e-3 on the small pairs, and full fine-tuning at 3e-3 fell under scratch at 1e-3 on
    Fashion 5-9 at 600/class. At a third of them (MID_VIT, read from this table) the default rule is ahead of
    scratch on every pair, where the generic table, which the model got before, lost to scratch on three of four."""
    from hftl.transfer.defaults import MID_VIT, SMALL_VIT

    # one pair per case (the group's other small_different pairs came with the full fine-tuning rule: its own test)
    pairs = ["vit192-fashion59-20", "vit192-digits-20", "vit192-fashion59-600", "vit192-shapes-400"]
    assert set(pairs) < set(calibrate.PAIR_GROUPS["vit192"])
    assert {calibrate.case_of(p) for p in pairs} == ALL_CASES
    assert all(
        MID_VIT.covers(calibrate._config_of(p)) and not SMALL_VIT.covers(calibrate._config_of(p))
        for p in pairs
    )
    for pair in ("vit192-fashion59-20", "vit192-digits-20"):
        high, n = calibrate._mean_at(rows, pair, "scratch", SMALL_VIT.scratch_lr)
        low, m = calibrate._mean_at(rows, pair, "scratch", MID_VIT.scratch_lr)
        assert n == m == 3 and low > high + 0.15, pair
    too_high, n = calibrate._mean_at(rows, "vit192-fashion59-600", "full", SMALL_VIT.lrs["full"])
    scratch, m = calibrate._mean_at(rows, "vit192-fashion59-600", "scratch", MID_VIT.scratch_lr)
    assert n >= 1 and m == 3 and too_high < scratch
    assert all(rule_over_scratch(rows, pair) > 0 for pair in pairs if pair != "vit192-shapes-400")
    assert rule_over_scratch(rows, "vit192-shapes-400") >= -0.01  # both at 99-100%
    assert sum(generic_minus_scratch(rows, pair)[0] < -0.05 for pair in pairs) >= 3


def test_a_distilbert_takes_the_bert_rates_which_beat_the_generic_ones_it_got_before(rows):
    """A tiny DistilBERT (the tiny BERT's shape and SST-2 recipe, another family), held out from every text rule: at
    the tiny BERT's rates the default rule beats scratch on every sentiment pair, and on the large ones full
    fine-tuning at 1e-3 is 4.1 points over the generic 5e-5 it got before (80.2/84.4% against 76.1/80.3%); on the
    domain task the source check fires and the default is scratch (docs/calibration.md, distilbert)."""
    from hftl.transfer.defaults import GENERIC_LRS, TINY_BERT, measured_for

    pairs = calibrate.PAIR_GROUPS["distilbert"]
    assert all(measured_for("distilbert", calibrate._config_of(p)) is TINY_BERT for p in pairs)
    for pair in pairs:
        if calibrate.PAIRS[pair]["target"] == "uci-domains":  # the source check sets the source aside
            assert calibrate.default_rule(pair)[0] == "scratch", pair
        else:
            assert rule_over_scratch(rows, pair) > 0.05, pair
    for pair in ("distilbert-yelp-350", "distilbert-imdb-350"):
        ours, n = calibrate._mean_at(rows, pair, "full", TINY_BERT.lrs["full"])
        generic, m = calibrate._mean_at(rows, pair, "full", GENERIC_LRS["full"])
        assert n == m == 3 and ours > generic + 0.03, pair


def test_the_small_vit_rates_hold_on_a_vit_three_times_as_deep(rows, autos):
    """The 64-wide ViT with 12 layers (ViT-B's depth), developed the same way and held out: the small-ViT table
    covers it (no depth limit), its default rule beats scratch at both rates on every pair (+1.2 to +45.6 points),
    and a step lower (1e-3, MID_VIT's) is no better; ``--case auto`` on its small pairs is never behind the default
    rule's recorded rows (72.9% on Fashion 5-9 against partial's 68.9%; 88.1% on digits against full fine-tuning's
    augmented 71.8%, 1.1 under the rule as it runs there, without augmentation) (docs/calibration.md, vit12)."""
    from hftl.transfer.defaults import MID_VIT, SMALL_VIT, measured_for

    pairs = calibrate.PAIR_GROUPS["vit12"]
    different = calibrate.load_rows(calibrate.VIT_DIFFERENT_RECORD)
    assert {calibrate.case_of(p) for p in pairs} == ALL_CASES
    assert all(calibrate.PAIRS[p].get("held_out") for p in pairs)
    assert all(measured_for("vit", calibrate._config_of(p)) is SMALL_VIT for p in pairs)
    for pair in pairs:
        plan, lr = calibrate.default_rule(pair)
        ours, n = calibrate._mean_at(rows, pair, plan, lr)
        rates = (SMALL_VIT.scratch_lr, MID_VIT.scratch_lr)
        scratch = [calibrate._mean_at(rows, pair, "scratch", rate) for rate in rates]
        assert n == 3 and all(m == 3 and ours > value + 0.01 for value, m in scratch), pair
        lower, m = calibrate._mean_at(rows, pair, plan, MID_VIT.lrs[plan])
        if plan == "full" and calibrate.PAIRS[pair]["size"] == 20:
            # the small_different rule, full fine-tuning, runs digits without augmentation (these rows augment: at
            # 1e-3 they were 5.2 points over 3e-3); as it runs, a step lower is level (89.7% against 89.2%)
            rule, _ = calibrate._mean_at(different, pair, "full_noaug", SMALL_VIT.lrs["full"])
            lower, m = calibrate._mean_at(different, pair, "full_noaug", MID_VIT.lrs["full"])
            assert m == 3 and lower < rule + 0.01, pair
        else:
            assert m == 3 and lower < ours + 0.01, pair
        if calibrate.PAIRS[pair]["size"] == 20:
            picked = [r["best_accuracy"] for r in autos[pair]]
            assert len(picked) == 3 and sum(picked) / 3 >= ours - 0.01, pair


# pairs added after every rule was set, each family at each size: UCI imdb (from MiniLM-L6, the tiny BERT, the tiny
# DistilBERT and GloVe), the tiny DistilBERT on one pair per case, image sources developed the other way round (on
# Fashion-MNIST 5-9: a ResNet 1.5x as wide as the demo's and the small ViT) on every image target, and real photos
# (ants and bees) from all four image sources
HELD_OUT = {
    # GloVe's imdb pairs set today's word-vector rules: not held out (test_the_word_vector_rules_...)
    # the ELECTRA's imdb pairs are in its own group: its weak source lost there (test_on_the_held_out_electra_...)
    "imdb": [
        p
        for p in OWN_BUDGET
        if calibrate.PAIRS[p]["target"] == "uci-imdb"
        and calibrate.PAIRS[p].get("held_out")
        and calibrate.PAIRS[p]["family"] != "electra"
    ],
    "distilbert": [
        p for p in calibrate.PAIR_GROUPS["distilbert"] if calibrate.PAIRS[p]["target"] != "uci-imdb"
    ],
    "electra": calibrate.PAIR_GROUPS["electra"],
    "fashion5-9 sources": [
        p
        for p in OWN_BUDGET
        if calibrate.PAIRS[p]["source"] == "fashion5-9" and calibrate.PAIRS[p]["target"] != "ants-bees"
    ],
    # from the four sources of the photo pairs (the 192-wide ViT's photos are measured with its small_different rule,
    # in VIT_DIFFERENT_RECORD)
    "photos": [
        p
        for p in OWN_BUDGET
        if calibrate.PAIRS[p]["target"] == "ants-bees" and calibrate.PAIRS[p]["family"] != "vit192"
    ],
}


def test_the_held_out_pairs_are_held_out_and_cover_every_case():
    assert len(HELD_OUT["imdb"]) == 8  # MiniLM-L6, the tiny BERT, DistilBERT, word2vec
    assert len(HELD_OUT["distilbert"]) == 4 and len(HELD_OUT["electra"]) == 6
    assert len(HELD_OUT["fashion5-9 sources"]) == 12
    assert len(HELD_OUT["photos"]) == 8
    for pairs in HELD_OUT.values():
        assert all(calibrate.PAIRS[p].get("held_out") for p in pairs)
    for group in ("fashion5-9 sources", "distilbert", "electra"):
        assert {calibrate.case_of(p) for p in HELD_OUT[group]} == ALL_CASES
    assert {calibrate.case_of(p) for p in HELD_OUT["photos"]} == {"small_different", "large_different"}


def paired_gaps(rows, pair: str) -> list[float]:
    """Per seed, the default rule as it runs (a user's command where one ran) minus scratch's better way (with or
    without augmentation), both at their default rates, on the same photos."""
    plan, lr = calibrate.default_rule(pair)
    scratch = calibrate.scratch_default(pair)

    def by_seed(name: str, rate: float | str) -> dict[int, float]:
        return {r["seed"]: r["best_accuracy"] for r in calibrate._at(rows, pair, name, rate)}

    ours = by_seed("rule", "default") or by_seed(plan, lr)
    theirs = max(
        (by_seed(name, scratch) for name in ("scratch", "scratch_noaug")),
        key=lambda runs: sum(runs.values()) / max(len(runs), 1),
    )
    return [ours[seed] - theirs[seed] for seed in sorted(ours) if seed in theirs]


def test_on_held_out_pairs_the_rule_as_it_runs_trails_scratch_once_and_beats_it_on_imdb(own_rows):
    """On the held-out image sources, each rule as it runs against scratch's better way (docs/calibration.md, the
    defaults table): level or ahead on all but Fashion 0-4 at 20/class from the ResNet developed on 5-9, where its
    partial fine-tuning trails scratch without augmentation by 0.7 points (79.8% against 80.5%; 1.3 ahead of scratch
    with it); its small_different rule (full fine-tuning, not augmented on the registered digits) is ahead on digits
    and shapes at 400/class is 100% for both. Held-out text pairs: level or ahead, ahead on every imdb pair."""
    gaps = {
        pair: rule_over_scratch(own_rows, pair)
        for group, pairs in HELD_OUT.items()
        if group not in ("photos", "electra")
        for pair in pairs
    }
    behind = {pair: round(100 * gap, 1) for pair, gap in gaps.items() if gap < -0.0005}
    assert behind == {"resnet59-fashion04-20": -0.7}
    augmented, _ = calibrate._mean_at(own_rows, "resnet59-fashion04-20", "scratch", 3e-3)
    assert calibrate.rule_mean(own_rows, "resnet59-fashion04-20")[0] > augmented + 0.01
    assert all(gaps[pair] > 0 for pair in HELD_OUT["imdb"])


def test_the_word_vector_rules_are_level_with_scratch_or_ahead_on_every_pair(rows):
    """In-sample (the word-vector rates and case choices were set on these pairs, docs/calibration.md "vectors"):
    fine-tuned GloVe at 3e-2 against random vectors at 3e-2, each at 3 seeds or more, is level or ahead on every pair
    (-0.0 to +8.1 points), and clearly ahead where the pretrained vectors matter most: little data, another task, or
    both. The rates these replaced (1e-3; 3e-3 for random vectors) were 2-10 points under on the UCI pairs, and
    fine-tuning at 1e-2 was behind scratch on two pairs (by 0.4 and 0.6)."""
    gaps, at_1e2 = {}, {}
    for pair in calibrate.PAIR_GROUPS["vectors"]:
        plan, lr = calibrate.default_rule(pair)
        accuracy, n = calibrate._mean_at(rows, pair, plan, lr)
        scratch, m = calibrate._mean_at(rows, pair, "scratch", calibrate.scratch_default(pair))
        assert (plan, lr, calibrate.scratch_default(pair)) == ("full", 3e-2, 3e-2) and min(n, m) >= 3, pair
        gaps[pair] = accuracy - scratch
        at_1e2[pair] = calibrate._mean_at(rows, pair, "full", 1e-2)[0] - scratch
    assert len(gaps) == 10 and all(gap > -0.001 for gap in gaps.values()), gaps
    assert all(gaps[f"glove-{name}"] > 0.04 for name in ("yelp-20", "imdb-20", "domains-20")), gaps
    assert sum(gap < -0.001 for gap in at_1e2.values()) == 2 and min(at_1e2.values()) < -0.005, at_1e2
    old_full, n = calibrate._mean_at(rows, "glove-yelp-350", "full", 1e-3)
    assert n == 3 and old_full < calibrate._mean_at(rows, "glove-yelp-350", "full", 3e-2)[0] - 0.05


def test_at_three_epochs_word_vectors_fine_tune_best_at_3e_2(short_rows):
    """At 3 epochs (15-66 optimizer steps) fine-tuning at 3e-2 was the best of 3e-3, 1e-2 and 3e-2 on 8 of the 9
    GloVe and word2vec pairs measured and within half a point on the ninth; 1e-2 was behind scratch on four of them
    (by up to 4.8 points), 3e-2 on three, by at most 1.8 (docs/calibration.md, "Short budget")."""
    pairs = [p for p in calibrate.PAIRS if any(r["pair"] == p and r["plan"] == "full" for r in short_rows)]
    pairs = [p for p in pairs if calibrate.PAIRS[p]["family"] in ("vectors", "w2v")]
    assert len(pairs) == 9
    best, behind, behind_1e2 = 0, [], []
    for pair in pairs:
        full = {lr: calibrate._mean_at(short_rows, pair, "full", lr) for lr in (3e-3, 1e-2, 3e-2)}
        scratch, m = calibrate._mean_at(short_rows, pair, "scratch", 3e-2)
        assert m == 3 and all(n == 3 for _, n in full.values()), pair
        top = max(accuracy for accuracy, _ in full.values())
        best += full[3e-2][0] == top
        assert full[3e-2][0] > top - 0.005, pair
        behind += [full[3e-2][0] - scratch] if full[3e-2][0] < scratch else []
        behind_1e2 += [full[1e-2][0] - scratch] if full[1e-2][0] < scratch else []
    assert best == 8 and len(behind) == 3 and min(behind) > -0.02, behind
    assert len(behind_1e2) == 4 and min(behind_1e2) < -0.04, behind_1e2


def test_on_the_held_out_electra_the_rates_hold_and_its_weak_source_loses_only_on_imdb(rows):
    """A tiny ELECTRA developed by the tiny BERT's recipe trained worst of the sources (60.4% on SST-2's dev set,
    diverging after its first epoch). At the tiny BERT's rates, which it takes by width, the default beats scratch on
    both yelp pairs (+7.5 and +5.4 points) and the source check sets it aside on the domain task (scratch 49.3/83.9%,
    every transfer plan 34-41%); on imdb the default is 3.4 and 3.5 points under scratch, and at 350 per class no
    plan measured beats scratch at any rate: full fine-tuning's best rate is hftl's 1e-3 (61.9%; 55.0% at 3e-4, 51.3%
    at 3e-3) against scratch's 65.4%. The source, not the rates: a weak source can lose to random weights on a
    similar task, which the check (different cases and --case auto only) does not look for."""
    from bench.source_check import load, worse_than_random

    gaps = {pair: rule_over_scratch(rows, pair) for pair in HELD_OUT["electra"]}
    assert gaps["electra-yelp-20"] > 0.05 and gaps["electra-yelp-350"] > 0.05, gaps
    assert all(worse_than_random(f"electra-domains-{size}", load()) for size in (20, "all"))
    assert all(-0.04 < gaps[f"electra-imdb-{size}"] < 0 for size in (20, 350)), gaps
    full = {lr: calibrate._mean_at(rows, "electra-imdb-350", "full", lr)[0] for lr in (3e-4, 1e-3, 3e-3)}
    assert max(full, key=full.get) == calibrate.default_rule("electra-imdb-350")[1] == 1e-3


def test_case_auto_on_the_held_out_electra_is_at_most_four_points_behind_its_default(rows, autos):
    """Recorded, not a target: on the weak ELECTRA source --case auto was behind the default rule on three pairs
    (yelp and imdb at 350 per class: partial picked on some seeds where full won by 2-3 points; the domain task at 20
    per class, where the source check's kept share, 0.58 at seed 0, sat between the line (0.55) and the one check where
    transfer won with random weights ahead (0.60), so trials ran and picked full fine-tuning: 34.0% against scratch's
    49.8-52.4% on the other seeds), and level or ahead on the other three (docs/calibration.md)."""
    behind = {}
    for pair in HELD_OUT["electra"]:
        auto, plans = auto_and_plans(rows, autos, pair)
        behind[pair] = plans[calibrate.default_rule(pair)[0]] - auto
    assert all(gap < 0.04 for gap in behind.values()), behind
    assert sum(gap > 0.01 for gap in behind.values()) == 3, behind


def test_the_word_vector_rules_hold_on_held_out_word2vec_vectors(rows):
    """Held out at their own budgets (docs/calibration.md, w2v; their 3-epoch runs were among those that moved
    fine-tuning to 3e-2): word2vec vectors developed with gensim on SST-2's phrases, on the seven UCI targets, 3 seeds.
    Fine-tuning the vectors (every case's default) at 3e-2 is within 2.3 points of its best rate (yelp at 350 per
    class: 1e-2) and ahead of a classifier on frozen vectors on every pair; against random vectors at 3e-2 it is ahead
    on five (+1.6 to +4.0 points) and 0.4 and 0.1 behind on two (amazon at 20 per class; the domain task with all 1,900
    sentences, whose restaurant and product words vectors from movie phrases know least; 1e-2 was 1.3 behind there)."""
    pairs = calibrate.PAIR_GROUPS["w2v"]
    assert len(pairs) == 7 and all(calibrate.PAIRS[p].get("held_out") for p in pairs)
    gaps = {pair: rule_over_scratch(rows, pair) for pair in pairs}
    assert sum(gap > 0.015 for gap in gaps.values()) == 5 and min(gaps.values()) > -0.005, gaps
    for pair in pairs:
        full = {lr: calibrate._mean_at(rows, pair, "full", lr)[0] for lr in (3e-3, 1e-2, 3e-2)}
        head = max(calibrate._mean_at(rows, pair, "head", lr)[0] for lr in (3e-3, 1e-2, 3e-2))
        assert calibrate.default_rule(pair) == ("full", 3e-2), pair
        assert full[3e-2] > max(full.values()) - 0.025 and full[3e-2] > head, pair


def test_case_auto_on_word_vectors_is_within_its_trials_noise_of_the_best_plan(rows, autos):
    """With fine-tuning at 3e-2, ``--case auto`` (trials at every plan's default rate) is within a point of the best
    plan on nine of the ten GloVe pairs and 1.6 under it on yelp at 20 per class (a classifier on frozen vectors picked
    on one seed of three), and within 0.4 on all seven held-out word2vec pairs."""
    gaps = {}
    for pair in calibrate.PAIR_GROUPS["vectors"] + calibrate.PAIR_GROUPS["w2v"]:
        auto, plans = auto_and_plans(rows, autos, pair)
        gaps[pair] = auto - max(plans.values())
    assert len(gaps) == 17 and min(gaps.values()) > -0.017, gaps
    assert sum(gap < -0.01 for gap in gaps.values()) == 1, gaps
    assert all(gaps[pair] > -0.005 for pair in calibrate.PAIR_GROUPS["w2v"]), gaps


def test_on_photos_the_vit_rules_beat_scratch_and_the_resnet_rule_is_level_with_it(rows, own_rows):
    """Ants and bees, 153 validation photos (one standard error of an accuracy there: 3.6-4.0 points), each rule as
    it runs against scratch's better way: the small ViTs' rules (full fine-tuning, for both cases) beat scratch on all
    four pairs by 3.9-7.4 points; the ResNets' full fine-tuning is level with it on average (per pair +0.2, -2.6,
    -2.4, +5.4 points: no pair further below than one standard error)."""
    gaps = {pair: paired_gaps(own_rows, pair) for pair in HELD_OUT["photos"]}
    assert all(len(seeds) == 3 for seeds in gaps.values()), gaps
    validation = {r["validation_examples"] for r in rows if r["pair"] in gaps}
    assert validation == {153}
    for pair, seeds in gaps.items():
        mean = sum(seeds) / 3
        scratch, _ = calibrate._mean_at(rows, pair, "scratch", calibrate.scratch_default(pair))
        assert mean >= -math.sqrt(scratch * (1 - scratch) / 153), (pair, seeds)
        if calibrate.PAIRS[pair]["family"].startswith("vit"):
            assert mean > 0.038, (pair, seeds)
    resnets = [
        g
        for pair, seeds in gaps.items()
        if calibrate.PAIRS[pair]["family"].startswith("resnet")
        for g in seeds
    ]
    assert len(resnets) == 12 and sum(resnets) > 0


@pytest.fixture(scope="module")
def autos(rows):
    """Per pair, today's tie rule's ``--case auto`` rows, as the auto table reads them (calibrate.auto_rows)."""
    return calibrate.auto_rows(rows)


def auto_and_plans(rows, autos, pair: str) -> tuple[float, dict[str, float]]:
    """``--case auto``'s mean accuracy over its three seeds under today's tie rule (rows of an earlier rule count
    where their trials ran in today's tie order, as in the auto table) and every plan's at its default rate."""
    accuracies = [r["best_accuracy"] for r in autos.get(pair, [])]
    assert len(accuracies) == 3, pair
    lrs = {
        plan: calibrate.scratch_default(pair) if plan == "scratch" else calibrate.plan_default(pair, plan)
        for plan in calibrate.auto_candidates(pair)
    }
    return sum(accuracies) / 3, {
        plan: calibrate._mean_at(rows, pair, plan, lr)[0] or 0.0 for plan, lr in lrs.items()
    }


def test_case_auto_is_within_a_point_of_the_best_plan_on_every_held_out_imdb_pair(rows, autos):
    """Today's tie rule (full fine-tuning first on large data) measured on pairs it was not set on."""
    for pair in HELD_OUT["imdb"]:
        auto, plans = auto_and_plans(rows, autos, pair)
        assert auto >= max(plans.values()) - 0.01, pair


def test_the_small_vits_small_different_rule_is_full_fine_tuning(rows):
    """docs/calibration.md "ViT small_different: full against partial": the small ViTs' small_different rule was
    partial fine-tuning, measured against full fine-tuning on augmented images while partial trained on unaugmented
    cached features, and it fell 22 points under scratch on the centred shapes held out from the augmentation rule.
    Run in one session from the same sources, the rule now (full fine-tuning with hftl's augmentation default) beats
    partial on all ten pairs (by 4.5-14.7 points on every digits and shapes pair from four ViTs, by 43.7 and 5.9 on
    the two held-out targets, 0.7 and 3.3 on the photos) and scratch on every one; and on the 192-wide ViT, whose
    rule it became after, on digits, shapes and photos (by 8.2, 19.9 and 5.7 points; scratch without augmentation
    reached 86.1% on its digits, 2.9 over partial and 5.3 under the rule)."""
    from hftl.data.augmentation import MIN_EPOCHS

    recorded = calibrate.load_rows(calibrate.VIT_DIFFERENT_RECORD)
    augmentation = calibrate.load_rows(calibrate.AUGMENTATION_RECORD)
    registered = {"digits", "shapes-centred"}
    for pair in calibrate.VIT_DIFFERENT_PAIRS:
        assert calibrate.case_of(pair) == "small_different" and calibrate.default_rule(pair)[0] == "full", (
            pair
        )
        ran = [r for r in recorded if r["pair"] == pair and r["plan"] == "rule"]
        assert len(ran) == 3 and all(r["epochs"] >= MIN_EPOCHS for r in ran), pair
        assert {(r["resolved_strategy"], r["resolved_init"]) for r in ran} == {("full", "pretrained")}, pair
        assert {r["augment"] for r in ran} == {calibrate.PAIRS[pair]["target"] not in registered}, pair
        rule, n = calibrate._mean_at(recorded, pair, "rule", "default")
        partial, m = calibrate._mean_at(recorded, pair, "partial", calibrate.default_rate(pair, "partial"))
        assert n == m == 3 and rule > partial + (0.005 if "antsbees" in pair else 0.04), pair
        rate = calibrate.scratch_default(pair)
        scratches = [
            (rows, "scratch"),
            (augmentation, "scratch"),
            (augmentation, "scratch_noaug"),
            (recorded, "scratch_noaug"),
        ]
        scratch = max(calibrate._mean_at(record, pair, plan, rate)[0] or 0.0 for record, plan in scratches)
        assert rule > scratch + 0.03, pair


def test_case_auto_follows_the_vit_small_different_rule_with_full_fine_tuning_first_on_images(rows):
    """docs/calibration.md "ViT small_different: full against partial": on those 12 pairs (the same sources) the
    trials tie more often than not; with partial fine-tuning first in the tie order ``--case auto`` was 1.4 points
    under the rule on average (5.8 at worst, within a point or ahead on 5), with full fine-tuning first (today's order
    on images) 0.2 over (1.2 under at worst, within a point or ahead on 10)."""
    recorded = calibrate.load_rows(calibrate.VIT_DIFFERENT_RECORD)
    gaps: dict[str, list[float]] = {calibrate.ADVISOR_RULE: [], calibrate.SMALL_PARTIAL_RULE: []}
    # where each order's rows of this session are: the partial-first ones in this record only (the main record's are
    # older), today's here and in the main record (the pairs it shares)
    sources = {calibrate.ADVISOR_RULE: recorded + rows, calibrate.SMALL_PARTIAL_RULE: recorded}
    # the pairs --case auto ran on in both orders (the 32-wide ViT's digits ran in today's only: held out, below)
    for pair in [p for p in calibrate.VIT_DIFFERENT_PAIRS if p != "vit32-digits-20"]:
        rule, n = calibrate._mean_at(recorded, pair, "rule", "default")
        for tie_rule, found in gaps.items():
            autos = [
                r["best_accuracy"]
                for r in sources[tie_rule]
                if r["pair"] == pair and r["plan"] == "auto" and calibrate.rule_of(r) == tie_rule
            ]
            if autos:
                assert n == len(autos) == 3, (pair, tie_rule)
                found.append(sum(autos) / 3 - rule)
    today, before = gaps[calibrate.ADVISOR_RULE], gaps[calibrate.SMALL_PARTIAL_RULE]
    assert len(today) == len(before) == 12
    assert sum(g >= -0.01 for g in today) == 10 and min(today) > -0.015 and sum(today) > 0
    assert sum(g >= -0.01 for g in before) == 5 and min(before) < -0.05
    assert sum(today) / 12 > sum(before) / 12 + 0.01
    # held out from the order: two sources it was not set on, the similar and the different small pair of each; the
    # rule as it runs (the ViT small_different record's on the 32-wide ViT's digits, the main record's elsewhere)
    held_out = {}
    for pair in ("vit32-fashion59-20", "vit32-digits-20", "resnet4x-fashion59-20", "resnet4x-digits-20"):
        auto, n = calibrate._mean_at(rows, pair, "auto", "default")
        record, plan, lr = (
            (recorded, "rule", "default")
            if pair == "vit32-digits-20"
            else (rows, *calibrate.default_rule(pair))
        )
        rule, m = calibrate._mean_at(record, pair, plan, lr)
        assert n == m == 3, pair
        held_out[pair] = round(100 * (auto - rule), 1)
    assert held_out == {
        "vit32-fashion59-20": 0.5,
        "vit32-digits-20": -0.7,
        "resnet4x-fashion59-20": -2.2,
        "resnet4x-digits-20": 1.2,
    }


def test_case_auto_is_never_behind_the_default_rule_on_a_held_out_pair(autos, own_rows):
    """Advising is worth its cost: on every held-out pair ``--case auto`` reaches the default rule's accuracy for the
    true case as the rule runs (less a point of noise; 0.9 under at worst, on vit59-fashion04-20), and beats scratch
    (its better way) wherever the best plan does by more than two points. With partial fine-tuning first in the tie
    order on small images, vit59-digits-20 (short trials put partial 7.5-11.4 points ahead of augmented full
    fine-tuning) and resnet59-shapes-20 (partial's nine-epoch trial tied full's at one seed) were 2.6 and 2.0 points
    under; with full fine-tuning first, and the trials' full fine-tuning following hftl's augmentation default, they
    are level or ahead."""
    held_out = [
        pair for group, pairs in HELD_OUT.items() if group not in ("photos", "electra") for pair in pairs
    ]
    gaps = []
    for pair in held_out:
        runs = autos[pair]
        assert len(runs) == 3, pair
        auto = sum(r["best_accuracy"] for r in runs) / 3
        rule, scratch = calibrate.rule_mean(own_rows, pair)[0], calibrate.scratch_mean(own_rows, pair)[0]
        gaps.append(auto - rule)
        assert auto >= rule - 0.01, pair
        best = calibrate.best_as_run(own_rows, pair, {r["seed"] for r in runs})
        if best > scratch + 0.02:
            assert auto > scratch + 0.02, pair
    assert len(gaps) == 24 and min(gaps) == pytest.approx(-0.009, abs=5e-4)


def test_case_auto_on_photos_is_within_the_trials_noise_of_the_best_and_above_scratch_from_the_vits(
    rows, autos
):
    """On 153 validation photos a trial's noise is 6-7 points and the best plan's run leads the runner-up by 0-2.6,
    so the trials mostly report ties and the tie order decides: ``--case auto`` is from 3.3 points under the best plan
    there to 1.5 over it, and behind the default rule on 5 of 8 pairs (docs/calibration.md): within what its trials
    can tell apart, and above scratch on the four pairs from the small ViTs (by 3.9-6.8 points)."""
    from hftl.advisor.trials import noise_of

    for pair in HELD_OUT["photos"]:
        auto, plans = auto_and_plans(rows, autos, pair)
        best = max(plans.values())
        assert auto >= best - noise_of(best, 153), pair
        if calibrate.PAIRS[pair]["family"].startswith("vit"):
            assert auto > plans["scratch"] + 0.02, pair


def test_each_record_holds_one_budget_per_pair():
    """Runs are matched without their epochs, so ``--epochs`` may not write into the main record, and the short-budget
    record takes only runs at hftl's default epochs: neither mixes two budgets of a pair."""
    import torch

    main_record = str(calibrate.MAIN_RECORD)
    short = str(calibrate.SHORT_BUDGET_RECORD)
    threads = torch.get_num_threads()  # the script sets its own
    for argv in (
        ["--pairs", "fashion59-20", "--epochs", "3", "--out", main_record, "--dry-run"],
        ["--pairs", "fashion59-20", "--epochs", "5", "--out", short, "--dry-run"],
        ["--pairs", "fashion59-20", "--out", short, "--dry-run"],
    ):
        with pytest.raises(SystemExit) as stopped:
            calibrate.main(argv)
        assert stopped.value.code == 2, argv
    try:
        assert calibrate.main(["--pairs", "fashion59-20", "--epochs", "3", "--out", short, "--dry-run"]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = calibrate.load_rows(calibrate.SHORT_BUDGET_RECORD)
    assert rows and {r["epochs"] for r in rows} == {calibrate.SHORT_BUDGET_EPOCHS}


# the ResNet small_different pairs of bench/results/budget_sweep.jsonl (docs/calibration.md, "Between the budgets")
SWEEP_PAIRS = (
    "digits-20",
    "shapes-20",
    "resnet59-digits-20",
    "resnet59-shapes-20",
    "antsbees-20",
    "resnet59-antsbees-20",
)


def test_between_the_budgets_the_resnet_different_rule_is_behind_scratch_only_under_few_steps(
    rows, short_rows, augmentation_rows
):
    """The record FEW_STEPS cites: every pair at 3, 6, 10, 15 and its own 30 epochs, the rule as hftl runs it (its
    augmentation default) against scratch with or without augmentation, whichever was better; under 40 optimizer
    steps the default (full fine-tuning) was behind scratch on 9 of 14 budgets by up to 13.3 points; from 40 on level
    or ahead on 14 of 18, at most 0.7 behind but on the photos from the ResNet developed on Fashion 5-9 (2.4-3.9)."""
    from hftl.transfer.defaults import FEW_STEPS

    sweep = [r for r in calibrate.load_rows(calibrate.BUDGET_SWEEP_RECORD) if r["pair"] in SWEEP_PAIRS]
    assert {r["epochs"] for r in sweep} == {6, 10, 15, 20}
    full = [r for r in short_rows + sweep if r["pair"] in SWEEP_PAIRS and r["plan"] == "full"]
    augmented = [r.get("augment") is not False for r in full]  # rows older than the key all augmented
    assert augmented == [r["epochs"] >= 10 and "digits" not in r["pair"] for r in full]
    own = calibrate.own_budget_rows(rows, augmentation_rows)  # the rule there: a user's command
    gaps: dict[bool, list[float]] = {True: [], False: []}
    photos_59: list[float] = []
    for pair in SWEEP_PAIRS:
        assert calibrate.default_rule(pair)[0] == "full"
        for record in (short_rows, sweep, own):
            for epochs in sorted({r["epochs"] for r in record if r["pair"] == pair}):
                at = [r for r in record if r["pair"] == pair and r["epochs"] == epochs]
                steps = next(calibrate._steps(r) for r in at)
                gap = rule_over_scratch(at, pair)
                if steps >= FEW_STEPS and pair == "resnet59-antsbees-20":
                    photos_59.append(gap)
                else:
                    gaps[steps < FEW_STEPS].append(gap)
    few, enough = gaps[True], gaps[False] + photos_59
    assert len(few) == 14 and sum(gap < 0 for gap in few) == 9 and min(few) == pytest.approx(-0.133, abs=5e-4)
    assert len(enough) == 18 and sum(gap >= -0.0005 for gap in enough) == 14
    assert min(gaps[False]) > -0.0075 and min(photos_59) > -0.040 and max(photos_59) < -0.023


def test_the_budget_sweep_record_takes_runs_between_the_budgets_and_resumes_per_budget(capsys):
    import torch

    sweep = str(calibrate.BUDGET_SWEEP_RECORD)
    threads = torch.get_num_threads()  # the script sets its own
    base = ["--pairs", "digits-20", "--plans", "partial,full,scratch", "--lrs", "hftl", "--seeds", "0,1,2"]
    try:
        for epochs in ([], ["--epochs", "3"], ["--epochs", "30"]):  # 30: digits-20's own budget
            with pytest.raises(SystemExit) as stopped:
                calibrate.main([*base, *epochs, "--out", sweep, "--dry-run"])
            assert stopped.value.code == 2, epochs
        capsys.readouterr()
        assert calibrate.main([*base, "--epochs", "10", "--out", sweep, "--dry-run"]) == 0
        assert "0 runs to launch" in capsys.readouterr().out  # recorded at 10 epochs
        assert calibrate.main([*base, "--epochs", "20", "--out", sweep, "--dry-run"]) == 0
        assert "9 runs to launch" in capsys.readouterr().out  # other budgets' rows are not this one's
    finally:
        torch.set_num_threads(threads)


def test_at_the_default_budget_the_default_rule_is_level_with_scratch_or_ahead_on_45_of_50_small_pairs(rows):
    """Each small pair at the epochs a run without --epochs takes (3, raised to 40 optimizer steps), the rule as hftl
    runs it, and on images scratch the better of with and without augmentation: the rule is behind scratch only on
    two of the three ResNets' digits pairs and on Fashion 0-4 from the ResNet developed on 5-9 (0.5-0.7 points; its
    partial fine-tuning trains on cached, unaugmented features), the photos
    from that ResNet (3.9) and the weak ELECTRA on imdb (2.6, as at its own budget); at 3 epochs it was behind on 7
    of the 29 measured there."""
    from hftl.config import RunConfig
    from hftl.transfer.defaults import FEW_STEPS, default_epochs

    sweep = calibrate.default_pooling_rows(calibrate.load_rows(calibrate.BUDGET_SWEEP_RECORD))
    leads = {}
    for pair, spec in calibrate.PAIRS.items():
        examples = next(
            (r["train_examples"] for r in rows if r["pair"] == pair and r.get("train_examples")), 0
        )
        if not calibrate.case_of(pair).startswith("small") or not examples:
            continue
        epochs = default_epochs(
            RunConfig(task="text", case="small_similar", batch_size=spec["batch_size"]), examples
        )[0]
        assert epochs * math.ceil(examples / spec["batch_size"]) >= FEW_STEPS, pair
        at = [r for r in sweep if r["pair"] == pair and r["epochs"] == epochs]
        if spec["family"] in calibrate.IMAGE_FAMILIES:  # scratch both ways: the better one counts
            noaug = calibrate._mean_at(at, pair, "scratch_noaug", calibrate.scratch_default(pair))
            assert noaug[1] == 3, pair
        leads[pair] = rule_over_scratch(at, pair)
    behind = {pair: round(100 * lead, 1) for pair, lead in leads.items() if lead < -0.0005}
    assert len(leads) == 50
    assert behind == {
        "digits-20": -0.7,
        "resnet59-digits-20": -0.6,
        "resnet59-fashion04-20": -0.5,
        "resnet59-antsbees-20": -3.9,
        "electra-imdb-20": -2.6,
    }
    assert sum(leads.values()) / len(leads) == pytest.approx(0.153, abs=5e-4)


def test_between_the_sizes_a_users_command_is_level_with_scratch_or_ahead(between_rows):
    """docs/calibration.md "Between the sizes": every family at 50 and 100 per class (sizes no rule was measured at),
    each plan as a user's command runs it (the case alone, batch 32, hftl's default budget), 3 seeds. Every rule row
    ran today's rule (its plan, scratch where the recorded source check fires, and augmentation only on the photos'
    10 epochs); the rule is level with scratch (within a point; on images the better of scratch with augmentation and
    without) or ahead on every pair, and ``--case auto`` is never 2 points behind. And on the image pairs hftl's light
    augmentation costs full fine-tuning points at this budget on most pairs: why it is off below 10 epochs."""
    from hftl.data.augmentation import MIN_EPOCHS

    pairs = calibrate.PAIR_GROUPS["between-sizes"]
    assert len(pairs) == 24 and all(calibrate.PAIRS[p].get("held_out") for p in pairs)
    assert {calibrate.case_of(p) for p in pairs} == ALL_CASES
    assert {calibrate.PAIRS[p]["size"] for p in pairs} == {50, 100}
    gaps, auto_gaps, augmented = {}, {}, {}
    for pair in pairs:
        plan, _ = calibrate.default_rule(pair)
        expected = (
            ("full", "scratch") if plan == "scratch" else (calibrate.PLANS[plan]["strategy"], "pretrained")
        )
        ran = calibrate._at(between_rows, pair, "rule", "default")
        assert len(ran) == 3 and {(r["resolved_strategy"], r["resolved_init"]) for r in ran} == {expected}, (
            pair
        )
        if calibrate.PAIRS[pair]["family"] in calibrate.IMAGE_FAMILIES:
            photos = calibrate.PAIRS[pair]["target"] == "ants-bees"
            assert all(r["augment"] is (photos and r["epochs"] >= MIN_EPOCHS) for r in ran), pair
        mean = {
            p: calibrate._mean_at(between_rows, pair, p, "default") for p in calibrate.BETWEEN_SIZES_PLANS
        }
        assert mean["rule"][1] == mean["scratch"][1] == mean["auto"][1] == 3, pair
        scratch = max(mean["scratch"][0], mean["scratch_noaug"][0] or 0.0)
        gaps[pair] = mean["rule"][0] - scratch
        auto_gaps[pair] = mean["auto"][0] - scratch
        if mean["full_noaug"][1]:
            augmented[pair] = mean["full"][0] - mean["full_noaug"][0]
    assert min(gaps.values()) >= -0.01 and sum(gaps.values()) / len(gaps) > 0.1
    assert min(auto_gaps.values()) > -0.02
    assert len(augmented) == 12 and sum(gap < 0 for gap in augmented.values()) >= 10
    assert min(augmented.values()) < -0.1 and sum(augmented.values()) / 12 < -0.03


def test_augmentation_costs_on_registered_images_and_gains_where_content_moves(rows):
    """docs/calibration.md "Augmentation: hftl's default": at the small image pairs' own 30 epochs, hftl's light
    augmentation costs full fine-tuning points on every Fashion-MNIST and digits target (registered: centred at one
    size), from all four sources, and gains on every shapes target (at random places and sizes): what the default's
    registration test reads."""
    recorded = calibrate.load_rows(calibrate.AUGMENTATION_RECORD)
    held_out = set(calibrate.PAIR_GROUPS["augmentation"])
    effects = {}
    for pair in {r["pair"] for r in recorded if r["plan"] == "full_noaug"} - held_out:
        rate = calibrate.plan_default(pair, "full")
        augmented, n = calibrate._mean_at(rows, pair, "full", rate)
        plain, m = calibrate._mean_at(recorded, pair, "full_noaug", rate)
        assert n == m == 3, pair
        effects[pair] = augmented - plain
    assert len(effects) == 15

    def target(pair: str) -> str:
        return calibrate.PAIRS[pair]["target"]

    assert all(effects[p] < 0.005 for p in effects if target(p) in ("fashion5-9", "fashion0-4", "digits"))
    assert all(effects[p] > 0 for p in effects if target(p) == "shapes")
    assert min(effects.values()) < -0.05 and max(effects.values()) > 0.05


def test_the_augmentation_default_chose_what_its_rule_says_and_mostly_the_better(rows):
    """Each image pair at its own budget run as a user's command (plan ``rule``, ``AUGMENTATION_RECORD``) augmented
    exactly where the rule says (10 epochs or more, and a mean image correlation, recorded where measured, below
    ``REGISTERED``): registered on every Fashion-MNIST, digits and centred-shapes target, not on the photos, the
    shapes at random and the placed Fashion-MNIST; the large pairs' 8 epochs not at all. On full fine-tuning that
    choice is the better one or level on 14 of the 15 calibration pairs measured both ways, and on 2 of the 4 pairs
    held out from it, by more on average than the other choice."""
    from hftl.data.augmentation import MIN_EPOCHS, REGISTERED

    recorded = calibrate.load_rows(calibrate.AUGMENTATION_RECORD)
    held_out = set(calibrate.PAIR_GROUPS["augmentation"])
    registered = {"fashion5-9", "fashion0-4", "digits", "shapes-centred"}
    for pair in {r["pair"] for r in recorded}:
        ruled = [r for r in recorded if r["pair"] == pair and r["plan"] == "rule"]
        assert len(ruled) == 3, pair
        for r in ruled:
            long = r["epochs"] >= MIN_EPOCHS
            assert (r["image_correlation"] is not None) is long, pair  # measured only where it decides
            assert r["augment"] is (long and r["image_correlation"] < REGISTERED), pair
            assert r["augment"] is (long and calibrate.PAIRS[pair]["target"] not in registered), pair
    gains: dict[bool, list[float]] = {True: [], False: []}
    for pair in {r["pair"] for r in recorded if r["plan"] == "full_noaug"}:
        ruled = [r for r in recorded if r["pair"] == pair and r["plan"] == "rule"]
        rate = calibrate.plan_default(pair, "full")
        augmented, _ = calibrate._mean_at(recorded if pair in held_out else rows, pair, "full", rate)
        plain, _ = calibrate._mean_at(recorded, pair, "full_noaug", rate)
        gains[pair in held_out].append((augmented - plain) * (1 if ruled[0]["augment"] else -1))
    assert len(gains[False]) == 15 and sum(g >= 0 for g in gains[False]) == 14
    assert len(gains[True]) == 4 and sum(g >= 0 for g in gains[True]) == 2 and sum(gains[True]) > 0


def test_the_rule_is_a_users_command_where_one_ran_todays_rule_and_scratch_the_better_of_its_two_ways():
    pair = "digits-20"  # today's rule: full fine-tuning from the pretrained weights at 3e-3

    def run(plan, lr, accuracy, seed, **resolved):
        return {"pair": pair, "plan": plan, "lr": lr, "seed": seed, "best_accuracy": accuracy, **resolved}

    plan_rows = [run("full", 3e-3, 0.9, seed) for seed in range(3)]
    stale = [
        run("rule", "default", 0.5, s, resolved_strategy="partial", resolved_init="pretrained")
        for s in range(3)
    ]
    assert calibrate.rule_mean(plan_rows + stale, pair) == (pytest.approx(0.9), 3)  # resolved to another plan
    today = [
        run("rule", "default", 0.95, s, resolved_strategy="full", resolved_init="pretrained")
        for s in range(2)
    ]
    assert calibrate.rule_mean(plan_rows + stale + today, pair) == (pytest.approx(0.95), 2)
    scratch = [run("scratch", 3e-3, 0.8, seed) for seed in range(3)]
    assert calibrate.scratch_mean(scratch, pair) == (pytest.approx(0.8), 3)
    unaugmented = [run("scratch_noaug", 3e-3, 0.85, seed) for seed in range(3)]
    assert calibrate.scratch_mean(scratch + unaugmented, pair) == (pytest.approx(0.85), 3)


def test_on_the_large_image_pairs_hftl_leaves_unaugmented_scratch_gains_without_it_and_the_rule_holds(
    rows, augmentation_rows
):
    """Measured after the augmentation rule was set: the 12 large image pairs it does not augment (registered, or 8
    epochs), each as a user's command runs it, beside scratch without augmentation. Scratch without it beat scratch
    with it on all 12 (0.5-16.7 points); the rule's unaugmented full fine-tuning was ahead of the main record's
    augmented runs on all 12 (+0.3 to +5.8, an earlier session) and is level with scratch's better way or ahead on 11
    (+16.2 at most), 0.4 under on Fashion 5-9 from the demo's ResNet."""
    large = sorted(
        {
            r["pair"]
            for r in augmentation_rows
            if r["plan"] == "rule" and calibrate.case_of(r["pair"]).startswith("large")
        }
    )
    assert len(large) == 12
    own = calibrate.own_budget_rows(rows, augmentation_rows)
    scratch_gains, over_augmented, leads = [], [], {}
    for pair in large:
        ran = [r for r in augmentation_rows if r["pair"] == pair and r["plan"] == "rule"]
        assert {(r["resolved_strategy"], r["augment"]) for r in ran} == {("full", False)}, pair
        rate = calibrate.scratch_default(pair)
        (augmented, n), (plain, m) = (
            calibrate._mean_at(own, pair, plan, rate) for plan in ("scratch", "scratch_noaug")
        )
        assert n == m == 3, pair
        scratch_gains.append(plain - augmented)
        full, k = calibrate._mean_at(rows, pair, "full", calibrate.default_rate(pair, "full"))
        assert k == 3, pair
        over_augmented.append(calibrate.rule_mean(own, pair)[0] - full)
        leads[pair] = rule_over_scratch(own, pair)
    assert min(scratch_gains) == pytest.approx(0.005, abs=5e-4) and max(scratch_gains) == pytest.approx(
        0.167, abs=5e-4
    )
    assert min(over_augmented) == pytest.approx(0.003, abs=5e-4) and max(over_augmented) == pytest.approx(
        0.058, abs=5e-4
    )
    behind = {pair: round(100 * lead, 1) for pair, lead in leads.items() if lead < -0.0005}
    assert behind == {"fashion59-600": -0.4} and max(leads.values()) == pytest.approx(0.162, abs=5e-4)


def test_case_auto_on_the_large_unaugmented_image_pairs_ends_near_the_rule_as_it_runs(rows, own_rows):
    """The large image pairs hftl does not augment (registered, 8-10 epochs), measured again with today's trials,
    whose full fine-tuning follows the augmentation default (off below 10 epochs): ``--case auto`` ends within 0.65
    points of the rule as it runs on all eight. The earlier rows (the same tie order on large data; their trials
    augmented full fine-tuning) ended 1.3-3.5 points under it on four, mostly on partial fine-tuning."""
    pairs = [
        "fashion59-600",
        "digits-all",
        "vit-fashion59-600",
        "vit-digits-all",
        "resnet59-fashion04-600",
        "resnet59-digits-all",
        "vit59-fashion04-600",
        "vit59-digits-all",
    ]
    today = calibrate.auto_rows(rows)
    earlier = calibrate.auto_rows(rows, calibrate.SMALL_PARTIAL_RULE)
    behind_before = []
    for pair in pairs:
        runs = today[pair]
        assert len(runs) == 3 and {calibrate.rule_of(r) for r in runs} == {calibrate.ADVISOR_RULE}, pair
        rule, n = calibrate.rule_mean(own_rows, pair)
        assert n == 3 and calibrate.case_of(pair).startswith("large"), pair
        assert sum(r["best_accuracy"] for r in runs) / 3 >= rule - 0.0065, pair
        before = sum(r["best_accuracy"] for r in earlier[pair]) / 3
        behind_before += [round(100 * (before - rule), 1)] if before < rule - 0.01 else []
    assert len(behind_before) == 4 and min(behind_before) == -3.5 and max(behind_before) == -1.3


def test_case_auto_on_the_held_out_models_large_pairs_ends_near_the_rule_and_never_under_scratch(
    rows, own_rows
):
    """Held out from every rule: the large pairs of the 4x-wide ResNet and the 32-wide, 12-layer and 192-wide ViTs
    (8-10 epochs; measured with today's tie rule from the source builds of the rule's command rows on Fashion 5-9).
    ``--case auto`` ends within 1.1 points of the rule as it runs on all eight (within a point on seven: 1.1 under on
    vit32-fashion59-600, its trials picking full, partial and LoRA), level with scratch's better way or over it on
    every one and, where the best plan leads scratch by more than two points, over scratch by more than two as well;
    advising costs at most 1.5 full runs on average on each."""
    pairs = [
        p
        for p in calibrate.PAIRS
        if p.startswith(("resnet4x-", "vit32-", "vit12-", "vit192-"))
        and calibrate.case_of(p).startswith("large")
    ]
    today = calibrate.auto_rows(rows)
    gaps = {}
    for pair in pairs:
        runs = today[pair]
        assert len(runs) == 3 and {calibrate.rule_of(r) for r in runs} == {calibrate.ADVISOR_RULE}, pair
        # the rule's command rows (Fashion 5-9) ran from the same build; on shapes it reads the main record's rows
        rule_builds = {r["source_weights"] for r in own_rows if r["pair"] == pair and r["plan"] == "rule"}
        assert len({r["source_weights"] for r in runs}) == 1 and rule_builds in (
            set(),
            {runs[0]["source_weights"]},
        )
        assert bool(rule_builds) == ("fashion59" in pair), pair
        auto = sum(r["best_accuracy"] for r in runs) / 3
        rule, n = calibrate.rule_mean(own_rows, pair)
        scratch = calibrate.scratch_mean(own_rows, pair)[0]
        assert n == 3 and auto >= scratch - 1e-9, pair
        if calibrate.best_as_run(own_rows, pair, {0, 1, 2}) > scratch + 0.02:
            assert auto > scratch + 0.02, pair
        assert sum(r["advise_cost_ratio"] for r in runs) / 3 <= 1.5, pair
        gaps[pair] = round(100 * (auto - rule), 1)
    assert len(gaps) == 8 and min(gaps.values()) == -1.1 and sum(gap >= -1.0 for gap in gaps.values()) == 7


def test_every_run_records_the_fingerprint_of_its_source_weights(tmp_path):
    """Sources rebuilt by their recipes differ by a few points: each row names the weights it ran from."""
    folder = tmp_path / "source"
    folder.mkdir()
    assert calibrate.source_fingerprint(str(folder)) is None  # nothing to read
    (folder / "model.safetensors").write_bytes(b"weights, first build")
    (folder / "config.json").write_text("{}")
    first = calibrate.source_fingerprint(str(folder))
    assert first is not None and len(first) == 16
    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    (rebuilt / "model.safetensors").write_bytes(b"weights, second build")
    assert calibrate.source_fingerprint(str(rebuilt)) not in (None, first)
    vectors = tmp_path / "w2v.kv"
    vectors.write_bytes(b"header")
    alone = calibrate.source_fingerprint(f"vectors:{vectors}")
    (tmp_path / "w2v.kv.vectors.npy").write_bytes(b"arrays gensim saves beside it")
    assert calibrate.source_fingerprint(f"vectors:{vectors}") != alone
