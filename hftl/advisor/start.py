"""A run's start under ``--init auto``: the source check on the run's own data, decided on the main process and
shared with every process (``resolve_init`` for a run, ``trials_source_check`` before ``--case auto``'s trials). The
rule and its evidence are in ``hftl.advisor.source_check``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets

from hftl.advisor.sample_features import probe_features
from hftl.advisor.source_check import SourceCheck, compare_features, settle_init
from hftl.config import RunConfig
from hftl.data.loading import Splits
from hftl.errors import HftlError
from hftl.outputs.artifacts import PLAN_FILE
from hftl.sources.registry import loads_with_auto_classes
from hftl.tasks import Task
from hftl.transfer.cases import start_is_open
from hftl.transfer.plan import TransferPlan


def trials_source_check(config: RunConfig, task: Task, splits: Splits) -> SourceCheck | None:
    """The source check before the trials (``--init auto`` only), on the main process of the process group the
    trials will run in: where it finds the source worse than random, no trial runs and the run trains from scratch."""
    if config.init != "auto":
        return None
    from hftl.training.engines import make_accelerator

    accelerator = make_accelerator(config.replace(report_to="none"))
    found = on_main_process(accelerator, lambda: checked(config, task, splits, None, accelerator))
    if found is not None:
        accelerator.print(found.render(), flush=True)
    return found


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


START_REASON = "--init auto with --case"  # how the plan's line for a checked start begins


def resolve_init(
    config: RunConfig, task: Task, splits: Splits, processor: Any, accelerator: Any
) -> tuple[RunConfig, str | None]:
    """``--init auto`` inside a run: where the start is open, the main process checks the source (or, resuming,
    reads the start the run's saved plan took: a verdict near the line could otherwise flip and orphan the
    checkpoints) and every process gets the same start; the line the plan gives for it (None: nothing checked)."""
    if not start_is_open(config):
        return settle_init(config, False), None

    def decide() -> tuple[bool, str | None] | None:
        if config.resume:
            earlier = earlier_start(Path(config.output_dir))
            if earlier is not None:
                return earlier
        found = checked(config, task, splits, processor, accelerator)
        if found is None:
            return None
        return found.worse_than_random, f"{START_REASON} {config.case}: {found.render()}"

    decision = on_main_process(accelerator, decide)
    if decision is None:
        return settle_init(config, False), None
    scratch, reason = decision
    if reason is not None:
        accelerator.print(reason)
    return settle_init(config, scratch), reason


def earlier_start(output_dir: Path) -> tuple[bool, str | None] | None:
    """The start a resumed run's saved plan took, and the plan's line for its source check (None where the check
    was skipped there: the run keeps the start it had, whatever a check would say now); None without a saved plan."""
    try:
        plan = TransferPlan.load(output_dir / PLAN_FILE)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    checked_line = plan.reasons[0] if plan.reasons and plan.reasons[0].startswith(START_REASON) else None
    return plan.init == "scratch", checked_line


def checked(
    config: RunConfig, task: Task, splits: Splits, processor: Any | None, accelerator: Any
) -> SourceCheck | None:
    """The source check, or None with a line saying why it was skipped: under a sharded engine (the probes hold two
    whole models on one process, outside ZeRO-3's partitioning) or when the probe fails (the run then starts from
    the pretrained weights, as it did before the check existed)."""
    from hftl.training.engines import is_sharded

    if is_sharded(accelerator):
        print(
            "source check skipped: the probes load two whole models on one process, which sharded engines "
            "(FSDP, ZeRO-3) avoid; starting from the pretrained weights (--init scratch to train from scratch)"
        )
        return None
    try:
        return check_source_features(config, task, splits, processor, accelerator.device)
    except (HftlError, OSError, ValueError, RuntimeError) as error:
        print(f"source check skipped ({type(error).__name__}: {error}); starting from the pretrained weights")
        return None


def on_main_process(accelerator: Any, compute: Callable[[], Any]) -> Any:
    """``compute()`` on the main process, its (picklable) result on every process."""
    result = [compute() if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        result = broadcast_object_list(result)
    return result[0]


__all__ = ["check_source_features", "resolve_init", "trials_source_check"]
