"""The training loop, on Accelerate, in the shape of accelerate's ``nlp_example.py``: dataloaders, optimizer and
schedule, resume, one epoch, evaluation, each a function of its own; ``fit`` reads as their table of contents.

AdamW over the trainable parameters only, warmup + schedule, gradient accumulation, clipping, evaluation every
epoch, a checkpoint at every epoch end (and every ``save_steps``), exact resume, and the best epoch's weights
restored at the end.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from hftl.config import RunConfig
from hftl.data.preprocess import ModelInputs
from hftl.data.raw_pixels import accept_raw_pixels
from hftl.outputs.artifacts import RUN_LOG
from hftl.training import engines
from hftl.training.checkpoints import (
    COMPLETE,
    checkpoint_dir,
    checkpoint_name,
    damage,
    restore_rng,
    restore_trained_weights,
    save_checkpoint,
)
from hftl.training.class_weights import weighted_loss
from hftl.training.dataloaders import make_dataloaders
from hftl.training.devices import fused_adamw
from hftl.training.evaluation import evaluate, is_better, should_stop_early
from hftl.training.guards import finite_flag, skip_unless_finite, skips_on_device
from hftl.training.resume import resume, run_fingerprint
from hftl.training.schedules import make_schedule
from hftl.training.sharded_state import all_finite, restore_sharded_weights
from hftl.training.state import TrainState, begin_state
from hftl.transfer.conservative import ConservativeTraining
from hftl.transfer.conservative import parameter_groups as plan_parameter_groups
from hftl.transfer.plan import TransferPlan


@dataclass
class FitResult:
    """What one call of ``fit`` did: the evaluations, the best one, counts and timings, and the trained model."""

    history: list[dict[str, Any]]  # one record per epoch end
    best: dict[str, Any]
    global_step: int
    train_seconds: float
    train_samples: int
    model: nn.Module  # as prepared by Accelerate (unwrap it to save)
    curve: list[dict[str, Any]]  # every evaluation: epoch ends and each --eval-steps
    throughput: dict[str, Any]
    nonfinite_skipped: int
    batch_size: int
    gradient_accumulation_steps: int
    resumed_from: str | None = None
    stopped_early_at: int | None = None  # the epoch after which --early-stopping-patience stopped the run
    eval_seconds: float = 0.0  # of train_seconds, scoring on the validation split


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters only; no weight decay on biases and normalisation weights (1-D tensors)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def fit(
    model: nn.Module,
    inputs: ModelInputs,
    config: RunConfig,
    lr: float,
    metrics: list,
    accelerator: Accelerator,
    plan: TransferPlan | None = None,
    fingerprint: dict[str, Any] | None = None,
    class_weights: list[float] | None = None,
) -> FitResult:
    """Train ``model``; ``plan`` (when given) brings its per-block learning rates, penalties and unfreezing;
    ``fingerprint`` (default: from ``inputs``) is what a checkpoint must match to be resumed."""
    train_dl, eval_dl = make_dataloaders(inputs, config)
    optimizer = make_optimizer(model, plan, config, lr)
    # counted before sharding: Accelerate steps a prepared scheduler once per process for every optimizer step
    scheduler = make_scheduler(optimizer, config, steps_per_epoch(len(train_dl), config))
    model, optimizer, train_dl, eval_dl, scheduler = accelerator.prepare(
        model, optimizer, train_dl, eval_dl, scheduler
    )
    unwrapped = accelerator.unwrap_model(model)
    accept_raw_pixels(unwrapped, inputs.image_stats)  # again: ahead of the input hooks the engine added
    tuning = ConservativeTraining.build(unwrapped, plan)  # before resume: w0 = pretrained
    fingerprint = fingerprint if fingerprint is not None else run_fingerprint(config, plan, inputs)
    progress, resumed_from = resume(accelerator, model, optimizer, scheduler, config, fingerprint)
    state = begin_state(
        accelerator,
        config,
        model,
        optimizer,
        scheduler,
        train_dl,
        eval_dl,
        metrics,
        progress,
        tuning,
        resumed_from,
        class_weights,
        total_steps=steps_per_epoch(len(train_dl), config) * config.epochs,  # sharded
    )
    started = time.perf_counter()
    first_epoch = progress.epoch
    try:
        for epoch in range(first_epoch, config.epochs):
            train_epoch(state, epoch, inputs, resuming=bool(resumed_from) and epoch == first_epoch)
            end_epoch(state, epoch)
            if should_stop_early(state.progress, config.early_stopping_patience):
                state.stopped_early_at = epoch + 1
                accelerator.print(
                    f"Early stopping after epoch {epoch + 1}: {config.metric_for_best} has not improved for "
                    f"{config.early_stopping_patience} epoch(s) (best: epoch {progress.best_epoch})"
                )
                break
    finally:
        state.bar.close()  # on an error too, so its one-line message starts a line of its own
    seconds = time.perf_counter() - started
    if tuning is not None:
        tuning.close()
    return finish(state, seconds)


# --- set-up -------------------------------------------------------------------------------------------------------
def make_optimizer(
    model: nn.Module, plan: TransferPlan | None, config: RunConfig, lr: float
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; a conservative plan brings per-block groups (lrs, decay)."""
    if plan is not None and plan.conservative is not None:
        groups = plan_parameter_groups(model, plan, config.weight_decay)
    else:
        groups = parameter_groups(model, config.weight_decay)
    return torch.optim.AdamW(groups, lr=lr, **fused_adamw(model))


def steps_per_epoch(batches: int, config: RunConfig) -> int:
    return math.ceil(batches / config.gradient_accumulation_steps)


def make_scheduler(optimizer: torch.optim.Optimizer, config: RunConfig, epoch_steps: int) -> Any:
    total_steps = epoch_steps * config.epochs
    return make_schedule(config.scheduler, optimizer, int(config.warmup_ratio * total_steps), total_steps)


# --- one epoch ----------------------------------------------------------------------------------------------------
def train_mode(state: TrainState, epoch: int, epoch_start: bool = True) -> None:
    """Back to training mode; gradual unfreezing lets the next block join at an epoch start."""
    state.model.train()
    if state.tuning is not None:
        joined = state.tuning.start_epoch(epoch)
        if joined and epoch_start:
            log(state, {"step": state.progress.global_step, "epoch": epoch, "unfrozen": joined})


def epoch_batches(state: TrainState, epoch: int, inputs: ModelInputs, resuming: bool) -> Any:
    """The epoch's batches, skipping those a mid-epoch checkpoint already trained on."""
    progress = state.progress
    state.train_dl.set_epoch(epoch)
    if hasattr(inputs.train_collator, "set_epoch"):
        inputs.train_collator.set_epoch(epoch)
    skip = progress.batches_done if epoch == progress.epoch else 0
    batches: Any = state.accelerator.skip_first_batches(state.train_dl, skip) if skip else state.train_dl
    if resuming:
        # The DataLoader iterator draws a seed from the global RNG when it starts. A mid-epoch checkpoint saved
        # the RNG after its epoch's iterator had started: start it, then restore. An epoch-end checkpoint saved it
        # before the next epoch's iterator: restore first, so the new iterator draws what the unbroken run drew.
        checkpoint = Path(state.resumed_from)
        if skip == 0:
            restore_rng(checkpoint, state.accelerator.process_index)
        else:
            batches = iter(batches)
            first = next(batches, None)
            restore_rng(checkpoint, state.accelerator.process_index)
            batches = itertools.chain([first] if first is not None else [], batches)
    progress.epoch, progress.batches_done = epoch, skip
    return batches


def train_epoch(state: TrainState, epoch: int, inputs: ModelInputs, resuming: bool = False) -> None:
    """One pass over the training data: forward, backward, guarded step, logs, mid-epoch checkpoints and evals."""
    train_mode(state, epoch)
    for batch in state.meter.timed(epoch_batches(state, epoch, inputs, resuming)):
        loss = train_step(state, batch)
        state.progress.batches_done += 1
        state.samples += batch["labels"].shape[0] * state.accelerator.num_processes
        summed = loss.float() if state.running_loss is None else state.running_loss + loss.float()
        state.running_loss, state.loss_count = summed, state.loss_count + 1
        state.meter.step_done(batch["labels"].shape[0])
        if state.accelerator.sync_gradients:
            after_optimizer_step(state, epoch)


def train_step(state: TrainState, batch: dict[str, Any]) -> torch.Tensor:
    """Forward and backward on one batch; on the accumulation boundary, clip and step unless non-finite."""
    accelerator, tuning = state.accelerator, state.tuning
    with accelerator.accumulate(state.model), state.meter.count_flops(enabled=not state.config.compile):
        outputs = state.model(**batch)
        loss = (
            outputs.loss
            if state.class_weights is None
            else weighted_loss(outputs.logits, batch["labels"], state.class_weights)
        )
        objective = (loss + tuning.penalty()) if tuning is not None else loss
        accelerator.backward(objective)
        if accelerator.sync_gradients:
            if tuning is not None:
                tuning.drop_frozen_gradients()
            norm = accelerator.clip_grad_norm_(
                state.model.parameters(), state.config.max_grad_norm or math.inf
            )
            guarded_step(state, finite_flag(objective, norm, accelerator))
        state.optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def guarded_step(state: TrainState, finite: torch.Tensor) -> None:
    """The optimizer and schedule step, skipped for a non-finite loss or gradient. With a fused AdamW the device
    skips it (no sync; the schedule still advances, as Trainer's does over fp16 overflow steps); otherwise the
    host reads ``finite`` first and neither steps."""
    step = state.progress.global_step + 1
    state.guard.watch(finite, step)
    if skips_on_device(state.optimizer, state.accelerator):
        skip_unless_finite(state.optimizer, finite)
    elif state.guard.read(last_good(state)):
        state.accelerator.print(f"step {step}: non-finite loss/gradients, skipped")
        return
    state.optimizer.step()
    state.scheduler.step()


def read_guard(state: TrainState) -> None:
    """The guard's device counters, read where the host syncs anyway (log steps, checkpoints, the end)."""
    skipped = state.guard.read(last_good(state))
    if skipped:
        step = state.progress.global_step
        state.accelerator.print(
            f"up to step {step}: {skipped} step(s) with a non-finite loss/gradients skipped"
        )


def after_optimizer_step(state: TrainState, epoch: int) -> None:
    """Count the step; log the loss every ``log_steps``; checkpoint/evaluate every ``save_steps``/``eval_steps``."""
    config, progress = state.config, state.progress
    progress.global_step += 1
    state.bar.update(1)
    log_loss(state, epoch)
    at_epoch_end = state.accelerator.gradient_state.end_of_dataloader  # the epoch-end checkpoint follows
    if config.save_steps and progress.global_step % config.save_steps == 0 and not at_epoch_end:
        checkpoint(state)
    if config.eval_steps and progress.global_step % config.eval_steps == 0 and not at_epoch_end:
        # the global RNG as it was: the evaluation's loader draws from it (which dropout reads), and a run resumed
        # from this step's checkpoint, written before, would not; nor should --eval-steps change what trains
        with torch.random.fork_rng(devices=[]):
            scores = score(state)
        point = {"step": progress.global_step, "epoch": epoch + progress.batches_done / len(state.train_dl)}
        state.curve.append({**point, **{f"eval_{k}": v for k, v in scores.items()}})
        log(state, state.curve[-1])
        train_mode(state, epoch, epoch_start=False)


def log_loss(state: TrainState, epoch: int) -> None:
    """Every ``log_steps`` optimizer steps: the mean training loss since the last log (one device sync)."""
    if state.progress.global_step % state.config.log_steps:
        return
    read_guard(state)
    record = {
        "step": state.progress.global_step,
        "epoch": epoch,
        "loss": float(state.running_loss) / state.loss_count,
        "lr": state.scheduler.get_last_lr()[0],
    }
    log(state, record)
    state.bar.set_postfix(loss=f"{record['loss']:.4f}")
    state.running_loss, state.loss_count = None, 0


def end_epoch(state: TrainState, epoch: int, name: str | None = None, last: bool | None = None) -> None:
    """Evaluate, record, keep track of the best epoch, checkpoint (``name``: how the log calls the epoch;
    ``--eval-strategy end``: evaluate only after the last epoch, which is then the one kept; ``last``: whether this
    is the run's last, default the last of --epochs, a stream's loop says)."""
    config, progress = state.config, state.progress
    last = epoch + 1 >= config.epochs if last is None else last
    if config.eval_strategy == "end" and not last:
        progress.epoch, progress.batches_done = epoch + 1, 0
        checkpoint(state)
        return
    scores = score(state)
    record = {"epoch": epoch + 1, "step": progress.global_step, **{f"eval_{k}": v for k, v in scores.items()}}
    progress.history.append(record)
    state.curve.append(record)
    log(state, record)
    state.accelerator.print(
        f"{name or f'epoch {epoch + 1}/{config.epochs}'}: "
        + ", ".join(f"{k}={v:.4f}" for k, v in scores.items())
    )
    progress.epoch, progress.batches_done = epoch + 1, 0
    value = scores.get(config.metric_for_best)
    if value is not None and is_better(value, progress.best_metric, config.metric_for_best):
        progress.best_metric, progress.best_epoch = value, epoch + 1
        progress.best_checkpoint = checkpoint_name(progress)
    checkpoint(state)


def score(state: TrainState) -> dict[str, float]:
    """Evaluate on the validation split, timing it: the advisor prices a trial's scoring apart from its training
    (on a small CPU model a forward pass is about half a training step, not the third a GPU gives)."""
    synchronize(state.accelerator.device)  # the training steps still queued on the device are not scoring's
    started = time.perf_counter()
    scores = evaluate(state.model, state.eval_dl, state.accelerator, state.metrics, state.threshold)
    synchronize(state.accelerator.device)
    state.eval_seconds += time.perf_counter() - started
    return scores


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def checkpoint(state: TrainState) -> None:
    """Save a checkpoint; it counts as good (kept out of rotation, named by the guard) only with finite weights and
    a finite loss at the last evaluation."""
    read_guard(state)
    state.progress.nonfinite_skipped = state.guard.skipped
    if is_good(state):
        state.progress.last_good_checkpoint = checkpoint_name(state.progress)
    save_checkpoint(
        state.accelerator,
        state.model,
        state.optimizer,
        state.scheduler,
        state.progress,
        state.output_dir,
        state.config.save_total_limit,
        None if state.stream is None else state.stream.position.to_dict(),
    )


def is_good(state: TrainState) -> bool:
    evaluations = [record for record in state.curve if "eval_loss" in record]
    if evaluations and not math.isfinite(evaluations[-1]["eval_loss"]):
        return False
    if engines.is_sharded(state.accelerator):  # each process holds its shards: check them, then agree
        return all_finite(state.model, state.accelerator)
    return all(bool(torch.isfinite(p).all()) for p in state.model.parameters() if p.requires_grad)


def last_good(state: TrainState) -> str | None:
    name = state.progress.last_good_checkpoint
    return str(checkpoint_dir(state.output_dir) / name) if name else None


def finish(state: TrainState, seconds: float) -> FitResult:
    """Restore the best epoch's weights and report."""
    progress, accelerator = state.progress, state.accelerator
    read_guard(state)
    best_epoch = progress.best_epoch
    if progress.best_checkpoint and not restore_best(state, progress.best_checkpoint):
        # the best epoch's checkpoint is gone or damaged: the last epoch's weights stay, and the record says so
        accelerator.print(
            f"The best checkpoint {progress.best_checkpoint} is missing or damaged: keeping the last epoch's weights"
        )
        best_epoch = progress.history[-1]["epoch"]
    best = next((h for h in progress.history if h["epoch"] == best_epoch), progress.history[-1])
    return FitResult(
        history=progress.history,
        best=best,
        global_step=progress.global_step,
        train_seconds=seconds,
        train_samples=state.samples,
        model=state.model,
        curve=state.curve,
        throughput=state.meter.summary(str(accelerator.mixed_precision)),
        nonfinite_skipped=state.guard.skipped,
        batch_size=state.config.batch_size,
        gradient_accumulation_steps=state.config.gradient_accumulation_steps,
        resumed_from=state.resumed_from,
        stopped_early_at=state.stopped_early_at,
        eval_seconds=state.eval_seconds,
    )


def restore_best(state: TrainState, name: str) -> bool:
    """The best epoch's trained weights back into the model (on every process when they are sharded)."""
    accelerator = state.accelerator
    if not engines.is_sharded(accelerator):
        return restore_trained_weights(accelerator.unwrap_model(state.model), state.output_dir, name)
    if name == checkpoint_name(state.progress):
        # the weights in memory are that checkpoint's: the last epoch was the best (always, with --eval-strategy
        # end); reading every shard back on every process would change nothing
        return True
    folder = checkpoint_dir(state.output_dir) / name
    if not (folder / COMPLETE).is_file() or damage(folder) is not None:
        return False
    restore_sharded_weights(accelerator, state.model, folder)
    return True


# --- evaluation and logs ------------------------------------------------------------------------------------------


def log(state: TrainState, record: dict[str, Any]) -> None:
    """One line of metrics.jsonl (main process) and the trackers (TensorBoard, ...)."""
    accelerator = state.accelerator
    if accelerator.is_main_process:
        state.output_dir.mkdir(parents=True, exist_ok=True)
        with open(state.output_dir / RUN_LOG, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    if accelerator.trackers:
        accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])
