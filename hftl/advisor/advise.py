"""Running the advisor: probe the model's features on the target data, score them, decide, and apply the decision
to a run (``--case auto``) or rank several models (``hftl advise --model a,b,c``). The rules are in
``hftl.advisor.decision``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict, concatenate_datasets
from torch.utils.data import DataLoader

from hftl.advisor.decision import (
    DEFAULT_POOLING,
    Advice,
    Decision,
    Thresholds,
    decide,
    measure_size,
    score_depths,
    write_advice,
)
from hftl.advisor.probes import DepthFeatures, cached_depth_features
from hftl.advisor.scores import leep
from hftl.advisor.source_check import SourceCheck, compare_features, settle_init
from hftl.advisor.trials import Trial, TrialsReport, run_trials
from hftl.backbones import Backbone, backbone_for
from hftl.config import RunConfig
from hftl.data.loading import Splits, splits_for
from hftl.data.preprocess import ImageStats, prepare_inputs
from hftl.data.raw_pixels import accept_raw_pixels
from hftl.errors import ConfigError, unknown_choice
from hftl.outputs.artifacts import ADVICE_JSON
from hftl.settings import AUTO_CASE, AUTO_METRIC, VECTORS_PREFIX
from hftl.sources.registry import check_source, load_processor, loads_with_auto_classes
from hftl.sources.vectors import vectors_held
from hftl.tasks import Task, get_task
from hftl.training.feature_store import architecture_of, cache_root, prefix_digest, preprocessing_of
from hftl.training.metrics import default_metric_for_best, metric_names
from hftl.transfer.cases import start_is_open


def probe_batches(
    config: RunConfig, task: Task, splits: Splits, processor: Any, sample: Dataset
) -> tuple[DataLoader, ImageStats | None]:
    """Model-ready, un-augmented batches of ``sample`` (a subset of the training split), and what a model does to
    their raw pixels (images)."""
    probe_splits = dataclasses.replace(splits, train=sample, validation=sample.select(range(1)))
    inputs = prepare_inputs(
        probe_splits,
        task.modality,
        processor,
        max_length=config.max_length,
        augment=False,
        seed=config.seed,
        max_image_pixels=config.max_image_pixels,
    )
    loader = DataLoader(
        inputs.train,
        batch_size=config.eval_batch_size or 2 * config.batch_size,
        collate_fn=inputs.eval_collator,
    )
    return loader, inputs.image_stats


@dataclass
class ProbedFeatures:
    """One forward pass of the pretrained model and of the same architecture with random weights over a seeded
    sample of the training split: pooled features at every depth, what the advisor and the source check score."""

    pretrained: DepthFeatures
    random: DepthFeatures
    backbone: Backbone
    has_head: bool  # the checkpoint has its own classifier (LEEP's source probabilities)
    samples: int
    reused: bool  # read from the feature cache
    root: Path | None


def probe_features(
    config: RunConfig,
    task: Task,
    splits: Splits,
    processor: Any | None = None,
    device: torch.device | str | None = None,
    model_name: str | None = None,
) -> ProbedFeatures:
    """Pooled per-depth features of ``model_name`` (default: the run's model) and of its random-weights twin."""
    model_name = model_name or str(config.model)
    model_config = config.replace(model=model_name, case=AUTO_CASE)
    processor = processor if processor is not None else load_processor(task, model_config, splits)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    count = min(config.advise_max_samples, len(splits.train))
    sample = splits.train.shuffle(seed=config.seed).select(range(count))
    batches, image_stats = probe_batches(config, task, splits, processor, sample)
    pooling = probe_pooling(config, model_name)

    model_class = task.model_class()
    source = check_source(model_name)
    pretrained, info = model_class.from_pretrained(
        source, revision=config.revision, trust_remote_code=config.trust_remote_code, output_loading_info=True
    )
    accept_raw_pixels(pretrained, image_stats)
    backbone = backbone_for(pretrained.config)
    head = backbone.head(pretrained)
    has_head = not any(
        key == name or key.startswith(name + ".") for key in info["missing_keys"] for name in head
    )
    root = probe_cache_root(config)
    key = probe_key(model_name, config, task, processor, sample)
    features, reused = cached_depth_features(
        pretrained,
        batches,
        {**key, "weights": prefix_digest(pretrained, [""])},
        root,
        pooling=pooling,
        device=device,
        probabilities=has_head,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        random_model = model_class.from_config(pretrained.config, trust_remote_code=config.trust_remote_code)
    accept_raw_pixels(random_model, image_stats)
    random_features, _ = cached_depth_features(
        random_model,
        batches,
        {
            **key,
            "weights": f"random init, seed {config.seed}",
            "architecture": architecture_of(pretrained.config),
        },
        root,
        pooling=pooling,
        device=device,
    )
    return ProbedFeatures(features, random_features, backbone, has_head, count, reused, root)


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
    decision = decide(size, scores, Thresholds.from_config(config), backbone.layer_word)
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


def refuse_multi_label(splits: Splits) -> None:
    """LogME, H-score and LEEP score features against one class per example, and the size rule counts examples
    per class: none of it has a calibrated meaning for label sets, so the rules are not applied to them."""
    if splits.multi_label:
        raise ConfigError(
            "the advisor's feature scores (LogME, H-score, LEEP) and its size rule assume one label per example; "
            "for multi-label data use --case auto with --advise-budget > 0 (short trials of every plan on your "
            "data decide, ranked by micro-F1) or choose --case yourself"
        )


def probe_pooling(config: RunConfig, model_name: str) -> str:
    """``--advise-pooling auto`` scores what the run's head will read: mean-pooled tokens when the run pools by
    mean or max (a sentence encoder's declared pooling), else the first token."""
    if config.advise_pooling != "auto":
        return config.advise_pooling
    from hftl.sources.pooling import resolve_pooling

    if model_name.startswith(VECTORS_PREFIX):
        return DEFAULT_POOLING
    run_pooling = resolve_pooling(config.pooling, model_name, config.revision)
    return "mean" if run_pooling in ("mean", "max") else DEFAULT_POOLING


def probe_cache_root(config: RunConfig) -> Path | None:
    """Where per-depth probe features are kept: the feature cache's folder (``--no-feature-cache``: nowhere)."""
    return cache_root(config) if config.feature_cache else None


def probe_key(
    model_name: str, config: RunConfig, task: Task, processor: Any, sample: Dataset
) -> dict[str, Any]:
    """What the probe features depend on besides the weights and the pooling settings."""
    return {
        "kind": "advisor-probe",
        "version": 1,
        "model": model_name,
        "revision": config.revision,
        "preprocessing": preprocessing_of(processor, task.modality, config.max_length),
        "examples": sample._fingerprint,
    }


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
    """The run's config with the advised case (and cut, unless --keep-layers was given)."""
    keep = config.keep_layers
    if decision.case == "small_different" and keep is None:
        keep = decision.keep_layers
    return config.replace(case=decision.case, keep_layers=keep)


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
            report = run_trials(
                config, splits.train, splits.validation, splits.label_column, run, metric, check
            )
    else:
        print(f"--case auto --resume: the trials in {config.output_dir}/{ADVICE_JSON} chose; not run again")
    pick = report.candidate()
    if config.strategy is not None and config.strategy != pick.strategy:
        print(f"--case auto: the trials' pick ({pick.name}) replaces --strategy {config.strategy}")
    print(report.render(), flush=True)
    return config.replace(case=pick.case, strategy=pick.strategy, init=pick.init, keep_layers=None), report


def trials_source_check(config: RunConfig, task: Task, splits: Splits) -> SourceCheck | None:
    """The source check before the trials, on the main process of the process group the trials will run in (every
    process gets its verdict): it sets their tie order."""
    from hftl.training.engines import make_accelerator

    accelerator = make_accelerator(config.replace(report_to="none"))
    main = accelerator.is_main_process
    check = [check_source_features(config, task, splits, None, accelerator.device) if main else None]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        check = broadcast_object_list(check)
    if check[0] is not None:
        accelerator.print(check[0].render(), flush=True)
    return check[0]


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
        return TrialsReport(**saved, trials=trials)
    except (OSError, ValueError, KeyError, TypeError):
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
    return apply_decision(config, decision[0])


def check_source_features(
    config: RunConfig, task: Task, splits: Splits, processor: Any | None, device: torch.device | str | None
) -> SourceCheck | None:
    """The source check on this run's training and validation examples (the test split is never read: at 20 per
    class the training split alone left the check too weak to see what it saw with the validation examples too,
    docs/calibration.md); None for multi-label data (the probe scores one label per example), streams (no sample
    to hold) and models the probes cannot load (word vectors, timm: no transformers random-weights twin)."""
    if (
        splits.multi_label
        or not isinstance(splits.train, Dataset)
        or not loads_with_auto_classes(str(config.model))
    ):
        return None
    labelled = splits.train
    if isinstance(splits.validation, Dataset) and splits.validation.features == splits.train.features:
        labelled = concatenate_datasets([splits.train, splits.validation])
    probed = probe_features(config, task, dataclasses.replace(splits, train=labelled), processor, device)
    return compare_features(probed.pretrained, probed.random, config.seed)


def resolve_init(
    config: RunConfig, task: Task, splits: Splits, processor: Any, accelerator: Any
) -> tuple[RunConfig, str | None]:
    """``--init auto`` inside a run: where the start is open, the main process checks the source and every process
    gets the same start; the line the plan gives for it (None where nothing was checked)."""
    if not start_is_open(config):
        return settle_init(config, None), None
    check = [None]
    if accelerator.is_main_process:
        check = [check_source_features(config, task, splits, processor, accelerator.device)]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        check = broadcast_object_list(check)
    if check[0] is None:
        return settle_init(config, None), None
    reason = f"--init auto with --case {config.case}: {check[0].render()}"
    accelerator.print(reason)
    return settle_init(config, check[0]), reason


__all__ = [
    "advise",
    "advise_splits",
    "apply_decision",
    "choose_by_trials",
    "model_names",
    "resolve_auto_case",
    "resolve_init",
    "trial_metric",
]
