"""Running the advisor: probe the model's features on the target data, score them, decide, and apply the decision
to a run (``--case auto``) or rank several models (``hftl advise --model a,b,c``). The rules are in
``hftl.advisor.decision``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict

from hftl.advisor.decision import (
    Advice,
    Decision,
    Thresholds,
    decide,
    measure_size,
    score_depths,
    write_advice,
)
from hftl.advisor.sample_features import probe_features
from hftl.advisor.scores import leep
from hftl.advisor.start import trials_source_check
from hftl.advisor.trials import Trial, TrialsReport, run_trials, scratch_without_trials
from hftl.backbones import Backbone
from hftl.config import RunConfig, check_named_inputs
from hftl.data.loading import Splits, splits_for
from hftl.errors import ConfigError, unknown_choice
from hftl.outputs.artifacts import ADVICE_JSON
from hftl.settings import AUTO_METRIC
from hftl.sources.vectors import vectors_held
from hftl.tasks import Task, get_task
from hftl.training.metrics import default_metric_for_best, metric_names
from hftl.transfer.cases import cuts
from hftl.transfer.defaults import case_choice


def advise_splits(
    config: RunConfig,
    task: Task,
    splits: Splits,
    processor: Any | None = None,
    device: torch.device | str | None = None,
    model_name: str | None = None,
) -> Advice:
    """Measure and decide for one model on already-loaded splits."""
    refuse_multi_label(splits)
    model_name = model_name or str(config.model)
    size = measure_size(splits)
    probed = probe_features(config, task, splits, processor, device, model_name)
    features, random_features, backbone = probed.pretrained, probed.random, probed.backbone
    count, has_head, reused, root = probed.samples, probed.has_head, probed.reused, probed.root

    scores = score_depths(features, random_features)
    decision = uncut_where_measured(
        decide(size, scores, Thresholds.from_config(config), backbone.layer_word),
        config,
        backbone,
        probed.model_config,
    )
    notes = []
    if count < len(splits.train):
        notes.append(f"scored a seeded sample of {count} of {len(splits.train)} training examples")
    if reused:
        notes.append(f"per-depth features reused from the feature cache in {root}")
    dims = max(array.shape[1] for array in features.features.values())
    if count <= dims:
        notes.append(
            f"only {count} examples for {dims}-dimensional features: a linear model fits any labels, so the "
            "similarity scores are unreliable; the size rule still applies"
        )
    elif count < 2 * dims:
        notes.append(
            f"{count} examples for {dims}-dimensional features: LogME differences shrink when examples are few "
            "relative to the feature size, so a small gain may understate the similarity"
        )
    return Advice(
        model=model_name,
        family=backbone.family,
        layer_word=backbone.layer_word,
        size=size,
        samples=count,
        scores=scores,
        decision=decision,
        thresholds=Thresholds.from_config(config),
        leep=leep(features.source_probabilities, features.labels) if has_head else None,
        pooling=features.pooling,
        notes=notes,
    )


def uncut_where_measured(
    decision: Decision, config: RunConfig, backbone: Backbone, model_config: Any
) -> Decision:
    """small_different's cut, where the run's plan would cut: a family whose measured small_different default keeps
    every layer (full fine-tuning on small CNNs and ViTs) gets no --keep-layers, which its plan would refuse."""
    if decision.keep_layers is None or config.strategy == "partial":  # partial freezes that many: it is used
        return decision
    measured = case_choice(backbone.family, "small_different", model_config)
    if cuts(config.replace(case="small_different"), measured):
        return decision
    why = (
        f"no cut: the {backbone.family} default for small_different ({measured.strategy}) keeps every "
        f"{backbone.layer_word} (docs/calibration.md)"
        if measured is not None and config.strategy is None
        else f"no cut: --strategy {config.strategy} keeps every {backbone.layer_word}"
    )
    rationale = tuple(line for line in decision.rationale if not line.startswith("cut: ")) + (why,)
    return dataclasses.replace(decision, keep_layers=None, rationale=rationale)


def refuse_multi_label(splits: Splits) -> None:
    """LogME, H-score and LEEP score features against one class per example, and the size rule counts examples
    per class: none of it has a calibrated meaning for label sets, so the rules are not applied to them."""
    if splits.multi_label:
        raise ConfigError(
            "the advisor's feature scores (LogME, H-score, LEEP) and its size rule assume one label per example; "
            "for multi-label data use --case auto with --advise-budget > 0 (short trials of every plan on your "
            "data decide, ranked by micro-F1) or choose --case yourself"
        )


def model_names(config: RunConfig, single: bool = False) -> list[str]:
    """``--model a,b,c`` -> the candidate models; ``single``: exactly one is allowed (``--case auto``)."""
    names = [name.strip() for name in str(config.model).split(",") if name.strip()]
    if not names:
        raise ConfigError("no --model given to advise on")
    if single and len(names) > 1:
        raise ConfigError(
            "--case auto trains one model; rank several candidates with `hftl advise --model a,b,c`"
        )
    return names


def advise(
    config: RunConfig, dataset: Dataset | DatasetDict | None = None, device: torch.device | str | None = None
) -> list[Advice]:
    """Advise for every candidate model of ``config.model`` (comma-separated), best-ranked first. Multi-label data
    has no feature-score advice: with one model and a trial budget the list is empty (the trials decide), else
    the advisor refuses it, saying what to do."""
    check_named_inputs(config, dataset)
    task = get_task(config.task)
    splits = splits_for(config, task, dataset)
    if splits.multi_label and config.advise_budget > 0 and len(model_names(config)) == 1:
        print(
            "Multi-label data: no feature-score prior (LogME assumes one label per example); the trials decide"
        )
        return []
    advices = [
        advise_splits(config, task, splits, device=device, model_name=name) for name in model_names(config)
    ]
    return sorted(advices, key=lambda a: a.score, reverse=True)


def apply_decision(config: RunConfig, decision: Decision) -> RunConfig:
    """The run's config with the advised case and cut: --keep-layers (else the advised cut) where the decided plan
    uses it (partial freezing, a small_different that cuts: ``uncut_where_measured``); elsewhere none, which the
    plan would refuse."""
    uses = config.strategy == "partial" or (
        decision.case == "small_different" and decision.keep_layers is not None
    )
    keep = config.keep_layers if config.keep_layers is not None else decision.keep_layers
    return config.replace(case=decision.case, keep_layers=keep if uses else None)


def choose_by_trials(
    config: RunConfig, dataset: Dataset | DatasetDict | None, run: Callable[[RunConfig, DatasetDict], Any]
) -> tuple[RunConfig, TrialsReport]:
    """``--case auto`` with a budget: short trials of every candidate plan on the data (``run`` trains one) pick
    the case, strategy and init of the run."""
    model_names(config, single=True)
    report = earlier_trials(config) if config.resume else None
    if report is None:
        task = get_task(config.task)
        splits = splits_for(config, task, dataset)
        metric = trial_metric(config, task.metrics, splits.multi_label)
        with vectors_held():  # word vectors are parsed once for all the trials
            check = trials_source_check(config, task, splits)
            data = (splits.train, splits.validation, splits.label_column)
            if check is not None and check.worse_than_random:
                report = scratch_without_trials(config, *data, metric, check)
            else:
                report = run_trials(config, *data, run, metric, check, task.modality)
    else:
        print(f"--case auto --resume: the trials in {config.output_dir}/{ADVICE_JSON} chose; not run again")
    pick = report.candidate()
    if config.strategy is not None and config.strategy != pick.strategy:
        print(f"--case auto: the trials' pick ({pick.name}) replaces --strategy {config.strategy}")
    print(report.render(), flush=True)
    return config.replace(case=pick.case, strategy=pick.strategy, init=pick.init, keep_layers=None), report


def trial_metric(config: RunConfig, task_metrics: Sequence[str], multi_label: bool) -> str:
    """What trials rank on: the run's ``--metric-for-best``, or (for auto and loss) accuracy, micro-F1 for
    multi-label data; a metric the data has not is refused before any trial trains."""
    chosen = config.metric_for_best
    if chosen in (AUTO_METRIC, "loss"):
        return default_metric_for_best(multi_label)
    names = metric_names(task_metrics, multi_label)
    if chosen not in names:
        raise unknown_choice("metric_for_best", chosen, [*names, "loss"])
    return chosen


def earlier_trials(config: RunConfig) -> TrialsReport | None:
    """The trials an interrupted ``--case auto`` run saved: resuming it keeps their pick (rerunning them would cost
    the budget again, and a pick that changed would make its checkpoints another run's)."""
    path = Path(config.output_dir) / ADVICE_JSON
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["trials"]
        trials = [Trial(**trial) for trial in saved.pop("trials")]
        report = TrialsReport(**saved, trials=trials)
        report.candidate()  # a pick that names no candidate is a damaged file: the trials run again
        return report
    except (OSError, ValueError, KeyError, TypeError, AttributeError, StopIteration):
        return None


def resolve_auto_case(
    config: RunConfig, task: Task, splits: Splits, processor: Any, accelerator: Any
) -> RunConfig:
    """``--case auto`` inside a run: the main process advises (and writes its rationale to OUTPUT_DIR); every
    process gets the same decision."""
    model_names(config, single=True)
    decision = [None]
    if accelerator.is_main_process:
        advice = advise_splits(config, task, splits, processor, accelerator.device)
        write_advice(config.output_dir, [advice])
        print(advice.render(), flush=True)
        decision = [advice.decision]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        decision = broadcast_object_list(decision)
    applied = apply_decision(config, decision[0])
    if config.keep_layers is not None and applied.keep_layers is None:
        accelerator.print(
            f"--keep-layers {config.keep_layers} is not used: --case auto chose {applied.case}, whose plan keeps every layer"
        )
    return applied


__all__ = [
    "advise",
    "advise_splits",
    "apply_decision",
    "choose_by_trials",
    "model_names",
    "resolve_auto_case",
    "trial_metric",
]
