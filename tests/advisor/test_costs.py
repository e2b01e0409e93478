"""The advisor's cost model: each plan's start and training rates from its own trials, predictions for a bigger rung,
rung 1 sized to the seconds left, and --case auto's trials kept within the budget when a plan's start grows with
the data (head-only's feature cache)."""

from __future__ import annotations

import pytest

from hftl.advisor.costs import EVAL_WEIGHT, MIN_SHARE, Costs
from hftl.advisor.trials import SAFETY, Trial, run_trials
from tests.advisor.test_trials import FakeRuns, config, labelled

# what the machine does: a fixed start, a start per example prepared, loop seconds per example-epoch
FIXED = 2.0
PREPARE = {"head": 0.05, "partial": 0.02, "full": 0.001}
TRAIN = {"head": 0.0005, "partial": 0.004, "full": 0.01}


def timed(plan: str, epochs: int, examples: int, scored: int) -> Trial:
    loop = TRAIN[plan] * (epochs * examples + EVAL_WEIGHT * scored)
    start = FIXED + PREPARE[plan] * (examples + scored)
    return Trial(plan, 0, epochs, examples, scored, score=0.5, seconds=start + loop, train_seconds=loop)


def test_each_plan_gets_its_own_rates_and_predicts_a_bigger_rung():
    costs = Costs.fit([timed(plan, 2, 100, 200) for plan in ("head", "partial", "full")])
    assert costs.fixed == pytest.approx(FIXED + PREPARE["full"] * 300)  # the shortest start measured
    for plan in ("head", "partial"):  # their starts beyond the fixed one grow with the examples prepared
        bigger = timed(plan, 5, 1000, 500)
        predicted = costs.seconds(plan, 5, 1000, 500)
        assert predicted == pytest.approx(bigger.seconds, rel=0.03)  # full's own preparing taken as fixed
    lora = costs.rates("lora")  # no trial of its own: each rate the dearest measured
    assert (lora.prepare, lora.train) == (costs.rates("head").prepare, costs.rates("full").train)
    one_run = costs.full_run(epochs=3, train=1000, validation=500)
    assert one_run > costs.seconds("full", 3, 1000, 500)  # a run scores after every epoch, a trial once


def test_scoring_timed_by_the_loop_is_priced_apart_from_training():
    """Scoring at half a training step (MiniLM on a CPU), not the third assumed: a full run, scored every epoch,
    is predicted from trials whose mix of training and scoring was quite another."""
    train, score = 0.01, 0.005

    def trial(epochs: int, examples: int, scored: int) -> Trial:
        loop = train * epochs * examples + score * scored
        return Trial(
            "full", 0, epochs, examples, scored, 0.5, FIXED + loop, loop, eval_seconds=score * scored
        )

    costs = Costs.fit([trial(1, 200, 400)])  # rung 0: more scoring than training
    assert (costs.rates("full").train, costs.rates("full").score) == pytest.approx((train, score))
    run = FIXED + train * 3 * 1000 + score * 3 * 800
    assert costs.full_run(epochs=3, train=1000, validation=800) == pytest.approx(run)
    untimed = Costs.fit([trial(1, 200, 400).__class__(**{**vars(trial(1, 200, 400)), "eval_seconds": 0.0})])
    assert untimed.full_run(3, 1000, 800) != pytest.approx(run, rel=0.05)  # the old folding-in was 10%+ off


def test_timed_and_untimed_trials_of_a_plan_each_count_their_own_scoring():
    """One trial timed its scoring, one did not (counted at EVAL_WEIGHT of a training example, 1/3 here too):
    each trial's own scoring comes off its own loop, so the rates stay those of the machine."""
    timed_trial = Trial("full", 0, 1, 200, 300, 0.5, FIXED + 2.0 + 1.5, 3.5, eval_seconds=1.5)
    untimed = Trial("full", 1, 2, 400, 300, 0.5, FIXED + 8.0 + 1.0, 9.0, eval_seconds=0.0)  # scoring at 1/3
    rates = Costs.fit([timed_trial, untimed]).rates("full")
    assert rates.train == pytest.approx(10.0 / 1000, rel=0.01)  # 2 s for 200 + 8 s for 800 example-epochs
    assert rates.score == pytest.approx((1.5 + 1.0) / 600)
    instant = Trial("head", 0, 1, 10, 10, 0.5, FIXED, 0.01, eval_seconds=0.01)
    assert Costs.fit([instant]).rates("head").train == 0.0  # never negative


def test_rung_one_gets_whole_epochs_when_they_fit_else_a_share_else_nothing():
    costs = Costs.fit([timed(plan, 1, 100, 100) for plan in ("head", "full")])
    plans = ["head", "full"]
    roomy = costs.schedule(plans, 1e6, train=1000, validation=100, max_epochs=4)
    assert roomy.epochs == 4 and roomy.share == 1.0
    two = sum(costs.seconds(p, 2, 1000, 100) for p in plans)
    assert costs.schedule(plans, two + 1e-6, 1000, 100, 4).epochs == 2
    one = sum(costs.seconds(p, 1, 1000, 100) for p in plans)
    partial = costs.schedule(plans, one / 2 + costs.fixed, 1000, 100, 4)
    assert partial.epochs == 1 and MIN_SHARE <= partial.share < 1
    spent = sum(costs.seconds(p, 1, partial.share * 1000, 100) for p in plans)
    assert spent == pytest.approx(one / 2 + costs.fixed)  # fills what it was given
    assert costs.schedule(plans, 2 * costs.fixed, 1000, 100, 4) is None  # the starts alone do not fit


class SlowStarts(FakeRuns):
    """FakeRuns whose head-only and partial trials spend most of their time preparing (a feature cache per example
    prepared): the start grows with the data, as on MiniLM."""

    def __call__(self, settings, data):
        result = super().__call__(settings, data)
        name = "scratch" if settings.init == "scratch" else settings.strategy
        self.now += {"head": 1e-3, "partial": 3e-4}.get(name, 0.0) * (
            len(data["train"]) + len(data["validation"])
        )
        return result


def test_trials_stay_within_the_budget_when_a_plans_start_grows_with_the_data(tmp_path, monkeypatch):
    import types

    import hftl.advisor.trials as trials_module

    runs = SlowStarts({"full": 0.6, "partial": 0.85, "lora": 0.55, "head": 0.84, "scratch": 0.5})
    monkeypatch.setattr(trials_module, "time", types.SimpleNamespace(perf_counter=runs.clock))
    train, validation = labelled({0: 500, 1: 500}), labelled({0: 150, 1: 150})
    report = run_trials(config(tmp_path, epochs=5), train, validation, "label", runs)
    assert any(t.rung == 1 for t in report.trials)  # the survivors still got their longer trials
    full_run = 0.1 + 1e-3 * 5 * (1000 + EVAL_WEIGHT * 300)  # the fake's full run: a start, 5 scored epochs
    assert runs.now <= report.budget * full_run
    assert report.cost_ratio <= report.budget and SAFETY < 1
