"""What a trial costs in seconds on this machine, from the trials that already ran: the advisor sizes rung 1 with it
and states the advising cost against one full fine-tuning run.

A trial's seconds = a fixed start (loading the model, the same for every plan) + a start that grows with the
examples it prepares (tokenising or decoding them and, for plans with a frozen prefix, building the feature cache:
most of a head-only trial) + its training loop, per example-epoch + its scoring, per validation example (timed apart
by the loop; where it was not, counted as ``EVAL_WEIGHT`` of a training example: on MiniLM on the CPU scoring is
about half a training step, so folding it in at a third priced a full run 15% over what it took). Every plan gets
its own rates, from its own trials: one pooled rate with a median start took a head-only trial's cache build for a
fixed cost, and rung 1 then ran 2x over its plan on MiniLM (docs/calibration.md, the auto rows before this model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

EVAL_WEIGHT = 1 / 3  # scoring an example (forward) against training on it (forward and backward)
MIN_SHARE = 0.05  # of the training split, the least a rung trains on


@dataclass(frozen=True)
class Schedule:
    """How long a rung's trials train: ``epochs`` over a ``share`` of the training split."""

    epochs: int
    share: float
    train_examples: int

    @property
    def example_epochs(self) -> float:
        return self.epochs * self.share * self.train_examples


@dataclass(frozen=True)
class PlanRates:
    """One plan's seconds per example prepared (start-up beyond the fixed part), per training example-epoch and per
    validation example scored."""

    prepare: float
    train: float
    score: float


@dataclass(frozen=True)
class Costs:
    """Seconds of any trial, from the ``Trial`` records that finished (``fit``)."""

    fixed: float
    plans: dict[str, PlanRates]

    @classmethod
    def fit(cls, trials: Sequence[Any]) -> Costs:
        """The fixed start is the shortest start measured (a plan that prepares little); each plan's rates are its
        trials' start beyond that per example prepared and its loop seconds per unit of training."""
        done = [t for t in trials if t.score is not None and t.seconds > 0]
        if not done:
            return cls(0.0, {})
        starts = [t.seconds - min(t.train_seconds, t.seconds) for t in done]
        fixed = min(starts)
        plans = {}
        for name in dict.fromkeys(t.candidate for t in done):
            mine = [(t, start) for t, start in zip(done, starts, strict=True) if t.candidate == name]
            prepared = sum(t.examples + t.scored for t, _ in mine)
            extra = sum(start - fixed for _, start in mine)
            training = scoring = 0.0
            for trial, _ in mine:
                loop = min(trial.train_seconds, trial.seconds)
                if trial.eval_seconds > 0:  # the loop timed its scoring
                    spent = min(trial.eval_seconds, loop)
                else:  # scoring counted as EVAL_WEIGHT of a training example
                    work = _work(trial.epochs, trial.examples, trial.scored)
                    spent = loop * EVAL_WEIGHT * trial.scored / max(work, 1e-9)
                training, scoring = training + loop - spent, scoring + spent
            train = max(training, 0.0) / max(sum(t.epochs * t.examples for t, _ in mine), 1e-9)
            score = scoring / max(sum(t.scored for t, _ in mine), 1)
            plans[name] = PlanRates(extra / max(prepared, 1), train, score)
        return cls(fixed, plans)

    def rates(self, plan: str) -> PlanRates:
        """A plan's own rates; one that never finished a trial is costed like the dearest that did."""
        if plan in self.plans:
            return self.plans[plan]
        if not self.plans:
            return PlanRates(0.0, 0.0, 0.0)
        rates = self.plans.values()
        return PlanRates(
            max(r.prepare for r in rates), max(r.train for r in rates), max(r.score for r in rates)
        )

    def seconds(self, plan: str, epochs: int, examples: float, scored: int) -> float:
        """A trial of ``plan``: ``epochs`` over ``examples`` training examples, scored once on ``scored``."""
        rates = self.rates(plan)
        return (
            self.fixed
            + rates.prepare * (examples + scored)
            + rates.train * epochs * examples
            + rates.score * scored
        )

    def full_run(self, epochs: int, train: int, validation: int) -> float:
        """One full fine-tuning run as a user runs it: all the data, scored after every epoch (a trial scores
        once)."""
        rates = self.rates("full")
        return (
            self.fixed
            + rates.prepare * (train + validation)
            + rates.train * epochs * train
            + rates.score * epochs * validation
        )

    def schedule(
        self, plans: Sequence[str], seconds: float, train: int, validation: int, max_epochs: int
    ) -> Schedule | None:
        """The longest training every plan of a rung gets in ``seconds`` (their starts included): whole epochs over
        all the data, up to ``max_epochs``, else one epoch over a share of it; None when not even ``MIN_SHARE``
        of one epoch fits."""

        def total(epochs: int, examples: float) -> float:
            return sum(self.seconds(plan, epochs, examples, validation) for plan in plans)

        for epochs in range(max_epochs, 0, -1):
            if total(epochs, train) <= seconds:
                return Schedule(epochs, 1.0, train)
        base = total(1, 0)
        per_example = total(1, 1) - base  # the total is linear in the examples
        share = (seconds - base) / per_example / max(train, 1) if per_example > 0 else 0.0
        if not math.isfinite(share) or share < MIN_SHARE:
            return None
        return Schedule(1, min(share, 1.0), train)


def _work(epochs: int, examples: float, scored: int) -> float:
    """Training example-epochs plus the one scoring pass, in training examples."""
    return epochs * examples + EVAL_WEIGHT * scored
