"""metrics.json: everything a run measured, assembled in one place from the typed results of each stage."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hftl.config import RunConfig
    from hftl.data.loading import Splits
    from hftl.data.preprocess import ModelInputs
    from hftl.training.loop import FitResult
    from hftl.transfer.apply import ParameterCount
    from hftl.transfer.plan import TransferPlan


def run_metrics(
    *,
    task_name: str,
    config: RunConfig,
    plan: TransferPlan,
    result: FitResult,
    splits: Splits,
    inputs: ModelInputs,
    test: dict[str, float] | None,
    params: ParameterCount,
    num_processes: int,
    device: str,
    feature_cache: dict[str, Any],
    speed: dict[str, Any],
) -> dict[str, Any]:
    """The run's record: what was trained (plan, sizes), how it scored (best, final, every evaluation, test), how
    fast. ``evaluation`` says which split each score comes from: validation chose the best epoch, test (when the
    data has one) was scored once by the saved network and never used to choose."""
    return {
        "task": task_name,
        "case": plan.case,
        "strategy": plan.strategy,
        "init": plan.init,
        "model": config.model,
        "best": result.best,
        "final": result.history[-1],
        "history": result.history,
        "curve": result.curve,  # every evaluation, incl. each --eval-steps
        "test": None
        if test is None
        else {**{f"test_{k}": v for k, v in test.items()}, "examples": len(inputs.test)},
        "evaluation": {
            "selection": f"validation: {splits.validation_origin}",
            "best_and_history": "validation",
            "test": "test split (scored once, after training)" if test is not None else "no test split",
            "metric_for_best": config.metric_for_best,
        },
        "stopped_early_at": result.stopped_early_at,
        "problem_type": "multi_label_classification" if splits.multi_label else "single_label_classification",
        **({"threshold": config.threshold} if splits.multi_label else {}),
        "labels": splits.labels,
        "parameters": {
            "trainable": params.trainable,
            "total": params.total,
            "percent": round(params.percent, 4),
        },
        "train_examples": None if inputs.stream is not None else len(inputs.train),
        "validation_examples": len(inputs.validation),
        "skipped_examples": {
            r.split: dataclasses.asdict(r) for r in [*inputs.skipped, *stream_reports(inputs)]
        },
        # --streaming: where the main process stands in its share of the stream, and how it was shared
        "streaming": None
        if inputs.stream is None
        else {**inputs.stream.summary(), "max_steps": config.max_steps},
        "train_seconds": round(result.train_seconds, 3),
        "eval_seconds": round(result.eval_seconds, 3),  # of train_seconds
        "train_samples_per_second": round(result.train_samples / max(result.train_seconds, 1e-9), 2),
        "global_step": result.global_step,
        "nonfinite_steps_skipped": result.nonfinite_skipped,
        "batch_size": result.batch_size,
        "gradient_accumulation_steps": result.gradient_accumulation_steps,
        "resumed_from": result.resumed_from,
        "num_processes": num_processes,
        "device": device,
        "throughput": result.throughput,
        "feature_cache": feature_cache,
        "speed": speed,
    }


def stream_reports(inputs: ModelInputs) -> list[Any]:
    """The train stream's unusable examples, as far as the main process read it."""
    return [] if inputs.stream is None else [inputs.stream.report()]
