"""One transfer run, start to finish: config -> task -> data -> model -> plan -> apply -> loop -> artifacts.

``run`` reads as a table of contents; each step is a function here that calls into its stage's package.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from datasets import Dataset, DatasetDict
from torch import nn

from hftl.backbones import Backbone, backbone_for
from hftl.config import RunConfig, check_named_inputs, keyword_values, resolve_config
from hftl.data.augmentation import apply as apply_augmentation
from hftl.data.augmentation import decide_augmentation
from hftl.data.loading import Splits
from hftl.data.preprocess import ModelInputs
from hftl.errors import ConfigError, unknown_choice
from hftl.outputs.artifacts import NO_SPACE_REMEDY, save_model, write_metrics, write_run_files
from hftl.outputs.card import write_cards
from hftl.outputs.files import any_write_space_checked, space_checked
from hftl.outputs.hub import publish_after_run, token_warning
from hftl.outputs.run_metrics import run_metrics
from hftl.outputs.run_report import write_run_report
from hftl.recipes.prepare import counted_from, not_for_streams, prepare_data, train_label_ids
from hftl.settings import AUTO_CASE, AUTO_METRIC
from hftl.settings.choices import AUTO_LR
from hftl.sources.quantization import check_quantization, prepare_quantized
from hftl.sources.registry import build_model, check_source
from hftl.tasks import Task, get_task
from hftl.training import engines
from hftl.training.class_weights import class_weights, describe_weights
from hftl.training.contrastive import tune_body_first
from hftl.training.devices import (
    apply_memory_format,
    enable_gradient_checkpointing,
    maybe_compile,
    switches_used,
    wants_channels_last,
)
from hftl.training.engines import check_sharded_settings, configure_engine, make_accelerator, whole_weights
from hftl.training.evaluation import evaluate_split, predict_split, settle_problem
from hftl.training.feature_cache import CachedTraining, keep_frozen_prefix_in_eval, use_feature_cache
from hftl.training.feature_cache import describe as describe_cache
from hftl.training.guards import with_auto_batch_size
from hftl.training.loop import FitResult, fit
from hftl.training.lr_finder import LrSearch, find_lr
from hftl.training.metrics import MULTI_LABEL_METRICS, load_metrics
from hftl.training.resume import (
    check_resume_target,
    check_run_folder,
    claim_output_dir,
    resumed_augment,
    resumed_epochs,
    run_fingerprint,
)
from hftl.training.sharded_state import gather_full_state
from hftl.training.stream_loop import fit_stream
from hftl.training.throughput import format_summary
from hftl.transfer.apply import ParameterCount, adapt_to_plan, count_parameters, shape_to_plan
from hftl.transfer.cases import make_plan, measure_blocks
from hftl.transfer.defaults import settle_epochs
from hftl.transfer.plan import TransferPlan


@dataclass
class RunResult:
    """What ``hftl.train`` returns: where the model is, its metrics, the plan it followed, and the model itself."""

    output_dir: Path
    metrics: dict[str, Any]
    plan: TransferPlan
    config: RunConfig
    model: nn.Module


def run(config: RunConfig, dataset: Dataset | DatasetDict | None = None, *, trial: bool = False) -> RunResult:
    """Train one transfer setup and write its outputs; ``dataset`` overrides ``config.dataset`` (Python API).
    ``trial``: one of the advisor's trials, whose score is all that is kept (no model, report or card written)."""
    quiet_library_logs()
    release_accelerator_state()  # a previous run in this process may have failed before releasing it
    task = get_task(config.task)
    check_named_inputs(config, dataset)
    check_metric_for_best(config, task)
    trials = None
    if config.case == AUTO_CASE and config.advise_budget > 0:  # short trials of every plan pick the plan
        from hftl.advisor.advise import choose_by_trials

        check_run_folder(config)  # before trials
        config, trials = choose_by_trials(config, dataset, trial_run)
        release_accelerator_state()
    accelerator = make_accelerator(config)
    check_model_name(config, accelerator)
    check_sharded_settings(config, accelerator)
    check_quantization(config)
    if not trial and (warning := token_warning(config)):
        accelerator.print(f"hftl: warning: {warning}")
    lock = claim_output_dir(config, accelerator)
    try:
        with any_write_space_checked(Path(config.output_dir)):
            return run_claimed(config, task, dataset, accelerator, trials, trial)
    finally:
        if lock is not None:
            lock.release()


def trial_run(config: RunConfig, dataset: DatasetDict) -> RunResult:
    """One of the advisor's trials: a run whose score is all that is kept."""
    return run(config, dataset, trial=True)


def run_claimed(
    config: RunConfig,
    task: Task,
    dataset: Dataset | DatasetDict | None,
    accelerator: Accelerator,
    trials: Any = None,
    trial: bool = False,
) -> RunResult:
    """The run proper, in an output folder it holds (``trials``: those that chose its plan; ``trial``: it is one)."""
    splits, processor, inputs = prepare_data(config, task, dataset, accelerator)
    known = None if inputs.stream is not None else len(inputs.train)  # --epochs, or 3 raised on small data
    epochs, note = settle_epochs(config, known, accelerator.num_processes, resumed_epochs(config))
    augmentation = decide_augmentation(config.augment, task.modality, epochs, inputs, resumed_augment(config))
    apply_augmentation(augmentation, inputs)
    config = config.replace(epochs=epochs, augment=augmentation.augment)
    said = task.modality == "image" or augmentation.reason.endswith("(--augment is for images)")
    for line in [note] + (augmentation.log_lines(config.cache_views) if said else []):
        if line:
            accelerator.print(line)
    metric_names = settle_problem(config, task.metrics, splits.multi_label)  # auto -> what the data holds
    if trials is not None and accelerator.is_main_process:
        from hftl.advisor.decision import write_advice

        write_advice(config.output_dir, [], trials)
    if config.case == AUTO_CASE:  # no trial budget: the LogME rules pick the case (and the cut)
        from hftl.advisor.advise import resolve_auto_case

        config = resolve_auto_case(config, task, splits, processor, accelerator)
    from hftl.advisor.start import resolve_init

    config, start_reason = resolve_init(config, task, splits, processor, accelerator)  # --init auto
    model, backbone, plan, channels_last = build_network(config, task, splits, processor, accelerator)
    if start_reason is not None:
        plan = dataclasses.replace(plan, reasons=(start_reason, *plan.reasons))
    configure_engine(accelerator, model, backbone, config)
    fingerprint = run_fingerprint(config, plan, inputs, model)
    check_resume_target(config, fingerprint)  # before the run files are written over
    params = count_parameters(model)
    announce(config, plan, params, splits, inputs, accelerator)
    contrastive = tune_body_first(model, plan, inputs, config, accelerator)
    keep_frozen_prefix_in_eval(
        model, plan
    )  # from here the frozen part is a fixed feature extractor, cached or not

    cached = use_feature_cache(model, plan, backbone, inputs, processor, config, accelerator, task.modality)
    for line in [
        *describe_cache(cached.status, config.augment, task.modality),
        *not_for_streams(config, task.modality),
    ]:
        accelerator.print(line)
    lr_search = None
    if config.lr == AUTO_LR:
        plan, lr_search = search_lr(cached, config, plan, accelerator)
    metric_modules = load_metrics(metric_names, splits.multi_label, config.trust_remote_code)
    train_labels = train_label_ids(config, splits)
    weights = class_weights(config.class_weights, splits.labels, train_labels, splits.multi_label)
    if weights is not None:
        accelerator.print(describe_weights(splits.labels, weights, splits.multi_label) + counted_from(splits))
    result = train_network(cached, config, plan, metric_modules, accelerator, fingerprint, weights)
    # a cached run trained the real model's own modules in place: save the whole network
    trained = model if cached.status.used else accelerator.unwrap_model(result.model)
    accelerator.print(format_summary(result.throughput))
    test = score_test(trained, inputs, config, accelerator, metric_modules)
    predictions = (
        None
        if trial
        else predict_split(trained, inputs.validation, inputs.eval_collator, config, accelerator)
    )

    accelerator.wait_for_everyone()
    # FSDP/ZeRO: every process holds a shard; the whole model is assembled (on the main process) to be saved
    # (a trial saves nothing: no gather)
    sharded = engines.is_sharded(accelerator) and not trial
    gathered = gather_full_state(accelerator, result.model) if sharded else None
    metrics = run_metrics(
        task_name=task.name,
        config=config,
        plan=plan,
        result=result,
        splits=splits,
        inputs=inputs,
        test=test,
        params=params,
        num_processes=accelerator.num_processes,
        device=str(accelerator.device),
        feature_cache=cached.status.to_dict(),
        speed=switches_used(model, config, channels_last, accelerator),
    )
    if task.modality == "image":
        metrics["augmentation"] = augmentation.to_dict()
    if lr_search is not None:
        metrics["lr_search"] = lr_search.to_dict()
    if contrastive is not None:
        metrics["contrastive"] = contrastive.to_dict()
    if weights is not None:
        metrics["class_weights"] = dict(zip(splits.labels, weights, strict=True))
    output_dir = Path(config.output_dir)
    if accelerator.is_main_process and predictions is not None:
        save_outputs(trained, processor, config, metrics, inputs, result, accelerator, predictions, gathered)
    accelerator.wait_for_everyone()
    publish_after_run(output_dir, config, accelerator, metrics)  # main process only; a failure never raises
    end_run(accelerator)
    return RunResult(output_dir, metrics, plan, config, trained)


def check_metric_for_best(config: RunConfig, task: Task) -> None:
    """``--metric-for-best`` names one of the task's metrics, a multi-label metric or the loss (a typo would silently
    keep epoch 1); whether the data has the metric is checked once it is loaded (``settle_problem``)."""
    valid = list(dict.fromkeys([AUTO_METRIC, *task.metrics, *MULTI_LABEL_METRICS, "loss"]))
    if config.metric_for_best not in valid:
        raise unknown_choice("metric_for_best", config.metric_for_best, valid)


def score_test(
    trained: nn.Module, inputs: ModelInputs, config: RunConfig, accelerator: Accelerator, metrics: list
) -> dict[str, float] | None:
    """The test split, when the data has one, scored once by the network that is saved (best epoch restored)."""
    if inputs.test is None:
        return None
    scores = evaluate_split(trained, inputs.test, inputs.eval_collator, config, accelerator, metrics)
    accelerator.print("test: " + ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))
    return scores


def check_model_name(config: RunConfig, accelerator: Accelerator) -> None:
    """Fail on a mistyped model path (or several models for ``--case auto``) before any data is loaded."""
    if config.case == AUTO_CASE:
        from hftl.advisor.advise import model_names

        model_names(config, single=True)  # one model to train; `hftl advise` ranks several
    check_source(config.model)
    if config.trust_remote_code:
        accelerator.print("WARNING: --trust-remote-code is ON: code from the model repository will run.")


def build_network(
    config: RunConfig, task: Task, splits: Splits, processor: Any, accelerator: Accelerator
) -> tuple[nn.Module, Backbone, TransferPlan, bool]:
    """The model with its plan applied: kept, frozen, cut, adapted or re-initialised as the plan says."""
    set_seed(config.seed)  # the new head's initial weights depend only on the seed
    with whole_weights(accelerator):  # ZeRO-3 partitions at prepare, after the plan has reshaped the model
        model = build_model(task, config, splits.labels, processor)
    backbone = backbone_for(model.config)
    plan = make_plan(config, model, backbone)
    shape_to_plan(plan, model, backbone)  # cut, new head
    model = prepare_quantized(model, config)  # --quantize: the 4-bit base frozen, norms and head in fp32
    plan = measure_blocks(plan, model)  # what is printed and saved: the blocks as they train, after the cut
    model = adapt_to_plan(plan, model)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    channels_last = wants_channels_last(config, backbone, accelerator.device)
    apply_memory_format(model, channels_last)
    return model, backbone, plan, channels_last


def announce(
    config: RunConfig,
    plan: TransferPlan,
    params: ParameterCount,
    splits: Splits,
    inputs: ModelInputs,
    accelerator: Accelerator,
) -> None:
    """The run documents itself before training: config and plan on disk, trackers started, the plan printed."""
    if accelerator.is_main_process:
        write_run_files(Path(config.output_dir), config, plan)
    if accelerator.log_with:
        scalars = {k: v for k, v in config.to_dict().items() if isinstance(v, int | float | str | bool)}
        accelerator.init_trackers("logs", config=scalars)
    accelerator.print("Resolved configuration:\n" + _indent(config.to_yaml()))
    accelerator.print(plan.render(params.trainable, params.total))
    train = "a stream of" if inputs.stream is not None else len(inputs.train)
    held_out = f" ({splits.validation_origin})" if splits.validation_origin != "validation" else ""
    accelerator.print(
        f"Data: {train} train / {len(inputs.validation)} validation examples{held_out}, "
        f"{len(splits.labels)} labels from {splits.source}"
    )


def search_lr(
    cached: CachedTraining, config: RunConfig, plan: TransferPlan, accelerator: Accelerator
) -> tuple[TransferPlan, LrSearch]:
    """``--lr auto``: the range test on what ``fit`` will train (cached features included); the main process's
    suggestion is shared, so every process trains with the same rate; the plan on disk gets it."""
    search = find_lr(cached.model, cached.inputs, config, plan, accelerator)
    search.suggestion = broadcast_object_list([search.suggestion])[0]
    accelerator.print(
        f"--lr auto: the LR range test suggests {search.suggestion:.3g} ({search.steps} steps; the default was "
        f"{plan.lr:g})"
    )
    plan = dataclasses.replace(plan, lr=search.suggestion)
    if accelerator.is_main_process:
        write_run_files(Path(config.output_dir), config, plan)
    return plan, search


def train_network(
    cached: CachedTraining,
    config: RunConfig,
    plan: TransferPlan,
    metrics: list,
    accelerator: Accelerator,
    fingerprint: dict[str, Any],
    weights: list[float] | None = None,
) -> FitResult:
    """The loop, with ``--auto-batch-size`` halving the batch (and doubling accumulation) on out-of-memory."""
    fit_model = maybe_compile(cached.model, config.compile)

    def train_with(batch_size: int, accumulation: int) -> FitResult:
        accelerator.free_memory()  # drop what a failed (out-of-memory) attempt prepared
        accelerator.gradient_accumulation_steps = accumulation
        settings = config.replace(batch_size=batch_size, gradient_accumulation_steps=accumulation)
        train = fit_stream if cached.inputs.stream is not None else fit
        return train(
            fit_model, cached.inputs, settings, plan.lr, metrics, accelerator, plan, fingerprint, weights
        )

    if config.auto_batch_size:
        return with_auto_batch_size(
            train_with, fit_model, config.batch_size, config.gradient_accumulation_steps, accelerator.print
        )
    return train_with(config.batch_size, config.gradient_accumulation_steps)


def save_outputs(
    trained: nn.Module,
    processor: Any,
    config: RunConfig,
    metrics: dict[str, Any],
    inputs: ModelInputs,
    result: FitResult,
    accelerator: Accelerator,
    predictions: tuple[list[Any], list[Any]],
    state_dict: dict[str, Any] | None = None,
) -> None:
    """Main process: the model (or adapter; ``state_dict``: its weights gathered from a sharded run), processor,
    metrics.json, the run report (per-class scores and plots on the validation split) and the model card (a full
    disk: one line)."""
    output_dir = Path(config.output_dir)
    auto_model = get_task(config.task).auto_model
    save_model(
        trained,
        processor,
        output_dir,
        merge_lora=config.merge_lora,
        auto_model=auto_model,
        state_dict=state_dict,
        max_shard_size=config.max_shard_size,
    )
    write_metrics(output_dir, metrics)
    with space_checked(output_dir, "the run report", NO_SPACE_REMEDY):
        threshold = metrics.get("threshold")  # multi-label: the predictions are 0/1 rows
        for note in write_run_report(output_dir, metrics["labels"], *predictions, "validation", threshold):
            accelerator.print(note)
    with space_checked(output_dir, "the model card", NO_SPACE_REMEDY):
        write_cards(output_dir, repo_id=config.push_to_hub)
    for report in [*inputs.skipped, *([inputs.stream.report()] if inputs.stream is not None else [])]:
        if report.skipped:
            accelerator.print(f"Unusable examples skipped: {report.summary()}")
    accelerator.print(
        f"Saved to {output_dir} (best epoch {result.best['epoch']}: "
        f"{config.metric_for_best}={result.best.get('eval_' + config.metric_for_best)})"
    )


def end_run(accelerator: Accelerator) -> None:
    """The trackers finished and Accelerate's settings cleared; the process group is kept for the next run in this
    process (the advisor's trials under torchrun, ``hftl compare``, a notebook) and destroyed when it exits:
    Accelerate's ``end_training`` destroys it at once, and the next run then fails in its first collective."""
    for tracker in accelerator.trackers:
        tracker.finish()
    release_accelerator_state()
    _destroy_process_group_at_exit()


@functools.cache
def _destroy_process_group_at_exit() -> None:
    def destroy() -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    atexit.register(destroy)


def release_accelerator_state() -> None:
    """Accelerate keeps its settings (mixed precision, accumulation) in process-wide singletons; clear them so the
    next run in this process (``hftl compare``, notebooks, tests) gets its own. The process group is kept."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def train(config: str | Path | None = None, *, dataset: Any = None, **settings: Any) -> RunResult:
    """Python entry point: the same settings as the CLI flags, as keywords. ``dataset`` may also be a
    ``datasets.Dataset``/``DatasetDict`` in memory; ``config`` a YAML file whose values the keywords override."""
    values = keyword_values(settings)  # "false" for a switch is refused, not taken as true
    if config is not None:
        if not Path(config).is_file():
            raise ConfigError(
                f"hftl.train({str(config)!r}, ...): the first argument is a YAML run config file, and there is "
                f"none at {config}; pass settings as keywords (task=..., model=..., dataset=...)"
            )
        values["config"] = str(config)
    in_memory = dataset if isinstance(dataset, Dataset | DatasetDict) else None
    if dataset is not None:
        values["dataset"] = "<in-memory dataset>" if in_memory is not None else str(dataset)
    return run(resolve_config(values), dataset=in_memory)


class _DropTorchvisionFallbackNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision" not in record.getMessage()


def quiet_library_logs() -> None:
    """transformers warns once per image processor that torchvision is missing; hftl works without it."""
    logging.getLogger("transformers").addFilter(_DropTorchvisionFallbackNotice())
    for handler in logging.getLogger("transformers").handlers:
        handler.addFilter(_DropTorchvisionFallbackNotice())
    torch.set_float32_matmul_precision("high")


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.rstrip().splitlines())
