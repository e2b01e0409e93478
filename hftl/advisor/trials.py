"""The advisor's evidence: short trials of the candidate plans on the user's own data, by successive halving.

LogME and friends rank features, not plans: on held-out pairs the fixed size line (1,000 per class) and the
similarity verdict picked plans 7-17 points below the best (docs/calibration.md). So ``--case auto`` trains each
candidate plan (head, partial, LoRA, full fine-tuning, scratch), every one with its calibrated default learning rate,
and lets the run's validation metric decide (accuracy by default; micro-F1 for multi-label data):

- **rung 0**: every candidate on a stratified share of the training split (all of it when the budget allows, for as
  many epochs as half the budget pays for; multi-label rows are stratified by their rarest label);
- **rung 1**: the best and those within its noise (earliest in the tie order first), then by score the next plans
  while each is within the noise of the last kept (the second whatever its score); at most three, on all the data,
  for as many epochs (up to the run's) as the rest allows.

The budget (``--advise-budget``, default 1.5) is in units of one full fine-tuning run, scoring included (epochs x
(train examples + a third of the validation examples: a forward pass against a forward and backward one)); candidates
are costed by what they train (a cached head-only epoch is a fraction of a full one). A trial scores once, after its
last epoch, so on small data (where scoring every epoch would cost more than training) trials run longer; rung 0
scores on a stratified part of a validation split too large to score five times. Rung 1 is sized in seconds to end
within ``SAFETY`` of what is left, from each plan's own start-up and training rates measured by rung 0
(``hftl.advisor.costs``: a head-only trial's start grows with the data, its feature cache), and is skipped when not
even a share of one epoch fits. Trials are ranked by the validation metric (the test split is never read); the pick
is the best of the last rung; when its lead over the runner-up is within one standard error (``noise_of``: the
validation sample's and what another seed moves a trial by), it is reported as a tie and the earlier candidate in the
tie order is chosen, so that reruns with other seeds agree (``hftl.advisor.candidates``: full fine-tuning first on
images and on large data, partial fine-tuning first on small text data, the orders that did best on the recorded
calibration trials). Before the trials, the source check (``hftl.advisor.source_check``) probes the pretrained
features against random weights: where they are worse, no trial runs and the whole network trains from scratch
(``scratch_without_trials``: short trials leave every plan near chance there, scratch too). Every trial is an
ordinary hftl run in ``OUTPUT_DIR/.hftl-trials`` (deleted), sharing the feature cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, LargeList, List

from hftl.advisor.candidates import CANDIDATES, Candidate, candidates_for, examples_per_class, order_reason
from hftl.advisor.costs import EVAL_WEIGHT, MIN_SHARE, Costs, Schedule
from hftl.advisor.source_check import SourceCheck
from hftl.config import RunConfig
from hftl.data.labels import rarest_label
from hftl.errors import HftlError
from hftl.outputs.files import remove_path
from hftl.transfer.defaults import default_epochs

TRIALS_DIR = ".hftl-trials"
METRIC = "accuracy"  # what trials rank on unless the run names its own (--metric-for-best)
FIRST_RUNG = 1 / 2  # of the budget: the survivors' longer trials on all the data get the rest
MAX_SURVIVORS = 3
# rung 0 is planned in cost units before anything is timed: it spends this share of its half of the budget on
# training, leaving the rest for the trials' start-up (loading, preparing the data, the feature cache); rung 1 is
# planned in seconds, from what rung 0's trials took
PLANNED_SHARE = 0.75
MIN_VALIDATION = 200  # rung 0 scores on at least this many validation examples (about +-5 points of noise)
# what another seed moves a trial's score by (its subset, initialisation and batch order), as a share of the binomial
# p(1-p): as noisy as scoring on 275 more examples. Pooled over 113 pairs of plans x 3 seeds of the calibration
# trials (docs/calibration.md, "Trial noise over seeds": 274; 1/216 to 1/608 by the trials' size). Without it the
# seeds' picks agreed (or were reported as ties that agreed) on 8 of 14 calibration pairs; with it on 13. The small
# ViT's and the tiny BERT's trials, measured with this value, brought the pooled table to 187 pairs and 203 examples
# (1/147 for trials of 50 examples or fewer); with every trial recorded since (the held-out pairs, photos and the
# large image pairs included) it is 964 and 227 (1/197 for trials of 50 examples or fewer): more noise; kept until a
# rerun of every pair's --case auto measures it
SEED_VARIANCE = 1 / 275
# rung 1 is planned to end this far inside what is left of the budget: the seconds it predicts are rung 0's rates
# carried over to more data, and a busy machine moves them
SAFETY = 0.9


@dataclass
class Trial:
    candidate: str
    rung: int
    epochs: int
    examples: int
    scored: int = 0  # validation examples
    score: float | None = None
    seconds: float = 0.0
    train_seconds: float = 0.0  # of ``seconds``, in the training loop (the rest: loading, preparing, caching)
    eval_seconds: float = 0.0  # of ``train_seconds``, scoring
    error: str | None = None


@dataclass
class TrialsReport:
    """The trials, the pick, its margin over the runner-up, and what the advising cost."""

    metric: str
    validation_examples: int
    budget: float
    trials: list[Trial] = field(default_factory=list)
    pick: str = ""
    runner_up: str | None = None
    margin: float | None = None
    noise: float | None = None
    tie: bool = False
    tied: list[str] = field(default_factory=list)  # the plans within noise of the best, the pick among them
    cost_ratio: float | None = None  # trial seconds / the seconds of one full run (estimated from the trials)
    seconds: float = 0.0
    # the tie order the trials used (hftl.advisor.candidates: by the data's size and modality)
    order: list[str] = field(default_factory=list)
    per_class: float | None = None  # training examples per class, which set the order
    modality: str | None = None  # the task's ("image" puts full fine-tuning first at every size)
    source_check: dict[str, Any] | None = None  # hftl.advisor.source_check, measured before the trials

    def candidate(self) -> Candidate:
        return next(c for c in CANDIDATES if c.name == self.pick)

    @property
    def tie_order(self) -> list[str]:
        return self.order or [c.name for c in CANDIDATES]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def render(self) -> str:
        if not self.trials and self.pick == "scratch":
            return (
                "Trials: none. The source check found the pretrained features worse than random weights, so the "
                "whole network trains from scratch (--init pretrained lets the trials choose among transfer plans)"
            )
        lines = [
            f"Trials (successive halving, budget {self.budget:g} full runs, validation {self.metric} on "
            f"{self.validation_examples} examples):",
            f"  {'rung':>4} {'plan':<8} {'epochs':>6} {'examples':>8} {self.metric:>10} {'seconds':>8}",
        ]
        for t in self.trials:
            score = f"{t.score:.4f}" if t.score is not None else (t.error or "-")[:40]
            lines.append(
                f"  {t.rung:>4} {t.candidate:<8} {t.epochs:>6} {t.examples:>8} {score:>10} {t.seconds:>8.1f}"
            )
        if self.runner_up is not None and self.margin is not None:
            verdict = (
                f"tie within noise (+-{100 * (self.noise or 0):.1f} points) of {', '.join(self.tied or [self.pick])}: "
                f"{self.pick} chosen (ties go to the earlier of "
                + ", ".join(self.tie_order)
                + (
                    f"; {reason}"
                    if (reason := order_reason(self.tie_order, self.per_class, self.modality))
                    else ""
                )
                + ")"
                if self.tie
                else f"{self.pick} beats {self.runner_up} by {100 * self.margin:.1f} points "
                f"(noise +-{100 * (self.noise or 0):.1f})"
            )
        else:
            verdict = f"{self.pick} is the only candidate that trained"
        lines.append(f"  pick: {self.pick}; {verdict}")
        if self.cost_ratio is not None:
            lines.append(
                f"  cost: {self.seconds:.0f} s of trials = {self.cost_ratio:.2f}x one full fine-tuning run"
            )
        return "\n".join(lines)


def stratified_share(dataset: Dataset, label_column: str, share: float, seed: int) -> Dataset:
    """``share`` of every class (at least one example each), in a seeded order; multi-label rows (lists of
    label ids) are grouped by their rarest label, so every label keeps examples."""
    if share >= 1.0:
        return dataset
    feature = dataset.features[label_column]
    if isinstance(feature, List | LargeList):
        count = feature.feature.num_classes
        labels = np.asarray(rarest_label(dataset[label_column], count))
    else:
        labels = np.asarray(dataset[label_column])
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        rng.shuffle(rows)
        keep += rows[: max(1, round(share * len(rows)))].tolist()
    return dataset.select(sorted(keep))


def noise_of(score: float, examples: int) -> float:
    """One standard error of the difference of two trials' scores: the validation sample's (binomial, on
    ``examples`` examples) and the training's, which another ``--seed`` redraws (``SEED_VARIANCE``). For F1 scores
    the same estimate: a rough guide, not a bound."""
    p = min(max(score, 1.0 / max(examples, 1)), 1.0 - 1.0 / max(examples, 1))
    return math.sqrt(2.0 * p * (1.0 - p) * (1.0 / max(examples, 1) + SEED_VARIANCE))


def run_trials(
    config: RunConfig,
    train: Dataset,
    validation: Dataset,
    label_column: str,
    run: Callable[[RunConfig, DatasetDict], Any],
    metric: str = METRIC,
    source_check: SourceCheck | None = None,
    modality: str | None = None,
) -> TrialsReport:
    """Successive halving over ``candidates_for(config)``; ``run`` trains one trial (``hftl.recipes.run.run``);
    trials are ranked by their validation ``metric``; ``source_check`` (measured before) is recorded; the task's
    ``modality`` sets the tie order with the data's size."""
    # the trials read the loaded splits, whose labels are one column already (0/1 columns joined)
    config = config.replace(label_columns=None, label_column=label_column)
    per_class = examples_per_class(train, label_column)
    candidates = candidates_for(config, per_class, modality)
    report = TrialsReport(
        metric=metric,
        validation_examples=len(validation),
        budget=config.advise_budget,
        order=[c.name for c in candidates],
        per_class=per_class,
        modality=modality,
        source_check=source_check.to_dict() if source_check is not None else None,
    )
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # the run's: its default epochs depend on them
    config = config.replace(epochs=default_epochs(config, len(train), processes)[0])  # the budget's unit
    budget = Budget(config.advise_budget * PLANNED_SHARE, config.epochs, len(train), len(validation))
    started = time.perf_counter()
    work = Path(config.output_dir) / TRIALS_DIR  # the same on every process of a distributed run
    remove_path(work)  # what a killed advisor left (a link planted there goes, never what it leads to)
    try:
        # rung 0: everyone, on the share of the data (or the epochs) that spends half the budget; when scoring
        # everyone on all the validation data would cost more than half of that, on a stratified part of it
        first_units = FIRST_RUNG * budget.units
        scored = min(1.0, (first_units / 2) / (len(candidates) * budget.eval_units(len(validation))))
        first_validation = stratified_share(
            validation, label_column, max(scored, MIN_VALIDATION / max(len(validation), 1)), config.seed
        )
        first = budget.schedule(candidates, first_units, len(first_validation))
        subset = stratified_share(train, label_column, first.share, config.seed)
        scores = _rung(report, config, candidates, 0, first.epochs, subset, first_validation, run, work)
        if not scores:
            raise no_trial_trained(report)
        survivors = promoted(scores, candidates, len(first_validation))
        # rung 1: the survivors, scored on all the validation data, trained as long as the rest of the budget pays
        # for, in seconds: rung 0's trials measured what each plan's start and training cost here
        costs = Costs.fit(report.trials)
        full_run = costs.full_run(config.epochs, len(train), len(validation))
        left = SAFETY * (config.advise_budget * full_run - (time.perf_counter() - started))
        names = [c.name for c in survivors]
        second = costs.schedule(names, left, len(train), len(validation), config.epochs)
        if len(survivors) > 1 and second is not None and second.example_epochs > first.example_epochs:
            subset = stratified_share(train, label_column, second.share, config.seed)
            scores = _rung(report, config, survivors, 1, second.epochs, subset, validation, run, work)
        elif len(first_validation) < len(validation) and left >= sum(
            costs.seconds(name, first.epochs, len(subset), len(validation)) for name in names
        ):
            # rung 0 is all there is: score its survivors on all the validation data, where that still fits
            scores = _rung(report, config, survivors, 1, first.epochs, subset, validation, run, work)
        if not scores:
            raise no_trial_trained(report)
        if not any(t.rung == 1 for t in report.trials):  # the noise of the scores decided on
            report.validation_examples = len(first_validation)
        decide(report, scores, candidates)
    finally:
        remove_path(work)
    report.seconds = round(time.perf_counter() - started, 1)
    full_run = Costs.fit(report.trials).full_run(config.epochs, len(train), len(validation))
    report.cost_ratio = report.seconds / full_run if full_run > 0 else None  # None: too fast to time
    return report


def scratch_without_trials(
    config: RunConfig, train: Dataset, validation: Dataset, label_column: str, metric: str, check: SourceCheck
) -> TrialsReport:
    """``--case auto`` where the source check found the pretrained features worse than random ones: scratch, and no
    trials. Where it fired (docs/calibration.md, tinybert-domains-*), scratch beat every transfer plan by 14 and 45
    points, but one-epoch trials leave scratch near chance too, so noise picked a transfer plan on 1 of 3 seeds
    (47.6% against scratch's 85.3%): the check's evidence (2 standard errors and 2 points, on up to 2,000 examples)
    is stronger than a trial's."""
    return TrialsReport(
        metric=metric,
        validation_examples=len(validation),
        budget=config.advise_budget,
        pick="scratch",
        cost_ratio=0.0,
        order=["scratch"],
        per_class=examples_per_class(train, label_column),
        source_check=check.to_dict(),
    )


def no_trial_trained(report: TrialsReport) -> HftlError:
    return HftlError(
        "no candidate plan trained in the advisor's trials: "
        + "; ".join(f"{t.candidate}: {t.error}" for t in report.trials if t.error)
    )


@dataclass(frozen=True)
class Budget:
    """The trials' budget in cost units: one training example-epoch of full fine-tuning is 1, scoring one
    validation example ``EVAL_WEIGHT`` (a forward pass, no backward). One full run costs ``epochs`` x (train +
    ``EVAL_WEIGHT`` x validation): the trials score once, at their end (``--eval-strategy end``)."""

    runs: float
    epochs: int
    train_examples: int
    validation_examples: int

    @property
    def full_run(self) -> float:
        return self.epochs * (self.train_examples + EVAL_WEIGHT * self.validation_examples)

    @property
    def units(self) -> float:
        return self.runs * self.full_run

    @staticmethod
    def eval_units(validation: int) -> float:
        """Scoring ``validation`` examples once."""
        return EVAL_WEIGHT * validation

    def schedule(self, candidates: list[Candidate], units: float, validation: int) -> Schedule:
        """The longest training ``units`` pays for, for every candidate alike: whole epochs over all the data (up to
        the run's), else one epoch over a share of it."""
        training = max(0.0, units - len(candidates) * self.eval_units(validation))
        example_epochs = training / max(sum(c.cost for c in candidates), 1e-9)
        if example_epochs >= self.train_examples:
            return Schedule(
                min(self.epochs, math.floor(example_epochs / self.train_examples)), 1.0, self.train_examples
            )
        return Schedule(1, max(example_epochs / max(self.train_examples, 1), MIN_SHARE), self.train_examples)


def promoted(scores: dict[str, float], candidates: list[Candidate], examples: int) -> list[Candidate]:
    """The best of a rung and those within noise of it, earliest in ``candidates`` first (short trials favour fast
    starters, so a tie is no reason to cut a plan that does better trained longer: on fashion59-20, five plans were
    within 1.4 points after 9 of 30 epochs); then, by score, the next plans while each is within noise of the last
    kept (the second whatever its score). At most three: with only the best and one tied plan kept, a third plan
    within noise of them was cut, and on minilm-yelp-20 that was the plan the other seeds picked."""
    ranked = sorted(scores, key=lambda name: -scores[name])
    best = ranked[0]
    tied = [
        c.name
        for c in candidates
        if c.name in scores
        and c.name != best
        and scores[best] - scores[c.name] <= noise_of(scores[best], examples)
    ]
    keep = [best, *tied][:MAX_SURVIVORS]
    for name in ranked:
        if len(keep) >= MAX_SURVIVORS:
            break
        if name in keep:
            continue
        last = min(keep, key=scores.__getitem__)
        if len(keep) > 1 and scores[last] - scores[name] > noise_of(scores[last], examples):
            break
        keep.append(name)
    return [c for c in candidates if c.name in keep]


def decide(report: TrialsReport, scores: dict[str, float], candidates: list[Candidate]) -> None:
    """The best score wins; a runner-up within one standard error of the difference (``noise_of``) is a tie, settled
    by the candidates' order (a wider band, 1.645 standard errors, made the seeds agree more often, 12 of 14 pairs,
    but chose the order's first plan where another was better by 3-5 points: within a point of the best on 11 of 14
    pairs instead of 13; docs/calibration.md)."""
    ranked = sorted(scores, key=lambda name: -scores[name])
    best = ranked[0]
    report.noise = noise_of(scores[best], report.validation_examples)
    tied = [name for name in ranked if scores[best] - scores[name] <= report.noise]
    order = [c.name for c in candidates]
    report.pick = min(tied, key=order.index)
    report.tied = sorted(tied, key=order.index)
    others = [name for name in ranked if name != report.pick]
    if others:
        report.runner_up = others[0]
        report.margin = scores[report.pick] - scores[report.runner_up]
        report.tie = len(tied) > 1


def _rung(
    report: TrialsReport,
    config: RunConfig,
    candidates: list[Candidate],
    rung: int,
    epochs: int,
    train: Dataset,
    validation: Dataset,
    run: Callable[[RunConfig, DatasetDict], Any],
    work: Path,
) -> dict[str, float]:
    """Train each candidate of a rung (recorded in ``report``); the scores of those that trained."""
    scores = {}
    for candidate in candidates:
        trial = _trial(config, candidate, rung, epochs, train, validation, run, work, report.metric)
        report.trials.append(trial)
        if trial.score is not None:
            scores[candidate.name] = trial.score
    return scores


def _trial(
    config: RunConfig,
    candidate: Candidate,
    rung: int,
    epochs: int,
    train: Dataset,
    validation: Dataset,
    run: Callable[[RunConfig, DatasetDict], Any],
    work: Path,
    metric: str = METRIC,
) -> Trial:
    trial = Trial(candidate.name, rung, epochs, len(train), len(validation))
    folder = work / f"rung{rung}-{candidate.name}"
    settings = config.replace(
        case=candidate.case,
        strategy=candidate.strategy,
        init=candidate.init,
        keep_layers=None,
        epochs=epochs,
        output_dir=str(folder),
        resume=None,
        overwrite_output_dir=True,
        push_to_hub=None,
        save_total_limit=1,
        report_to="none",
        early_stopping_patience=None,
        eval_strategy="end",  # one score per trial, of its last epoch: half or less of the cost on small data
        max_train_samples=None,
    )
    started = time.perf_counter()
    try:
        with _quiet():
            result = run(settings, DatasetDict(train=train, validation=validation))
        trial.score = float(result.metrics["best"][f"eval_{metric}"])
        trial.train_seconds = round(float(result.metrics.get("train_seconds", 0.0)), 3)
        trial.eval_seconds = round(float(result.metrics.get("eval_seconds", 0.0)), 3)
    except HftlError as error:  # a plan that does not apply to this model is skipped, and said so
        trial.error = f"{type(error).__name__}: {error}"
    finally:
        remove_path(folder)
    trial.seconds = round(time.perf_counter() - started, 2)
    return trial


@contextlib.contextmanager
def _quiet():
    """Trial runs' plans and progress bars would bury the advisor's table: they go nowhere (the trials' scores and
    errors are what the report keeps)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield
