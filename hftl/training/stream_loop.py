"""Training on a stream (``--streaming``): ``loop.py``'s steps, counted in optimizer steps instead of epochs.

A stream has no length, so the run is ``--max-steps`` optimizer steps long; every process takes that many, its
batches coming from its own share of the stream (``hftl.data.stream_inputs``), so the processes stay in step
whatever their shares' lengths. Every ``--eval-steps`` steps (default: ``EVALUATIONS`` over the run) ends a period,
which plays the part of an epoch (as Keras' ``steps_per_epoch`` does): evaluate, record it in the history as an
"epoch", keep the best, checkpoint with each process's stream position. ``--save-steps`` adds checkpoints between.
With ``--eval-strategy end`` a period ends with the checkpoint alone, and only the last step is evaluated (and kept).

Gradient accumulation syncs every ``gradient_accumulation_steps`` batches and never at a pass's end (no prepared
train loader tells Accelerate that one ended): with processes whose shares end at different batches, a sync at the
end of one process's pass would not be matched by the others.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device
from torch import nn
from torch.utils.data import DataLoader

from hftl.config import RunConfig
from hftl.data.preprocess import ModelInputs
from hftl.data.raw_pixels import accept_raw_pixels
from hftl.data.stream_inputs import StreamPosition
from hftl.errors import ConfigError
from hftl.training.checkpoints import read_process_state, restore_rng
from hftl.training.evaluation import should_stop_early
from hftl.training.loop import (
    FitResult,
    checkpoint,
    end_epoch,
    finish,
    log_loss,
    make_optimizer,
    train_mode,
    train_step,
)
from hftl.training.resume import resume, run_fingerprint
from hftl.training.schedules import make_schedule
from hftl.training.state import TrainState, begin_state
from hftl.transfer.conservative import ConservativeTraining
from hftl.transfer.plan import TransferPlan

EVALUATIONS = 5  # evaluations over a streamed run when --eval-steps is not given


def eval_period(config: RunConfig) -> int:
    """Optimizer steps between evaluations (the streamed run's "epoch")."""
    return config.eval_steps or max(1, math.ceil(config.max_steps / EVALUATIONS))


def fit_stream(
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
    """Train ``model`` for ``config.max_steps`` optimizer steps on ``inputs.stream``; as ``loop.fit`` otherwise."""
    if config.max_steps is None:
        raise ConfigError("--streaming needs --max-steps N")
    eval_dl = DataLoader(
        inputs.validation,
        batch_size=config.eval_batch_size or 2 * config.batch_size,
        collate_fn=inputs.eval_collator,
        num_workers=min(4, (os.cpu_count() or 1) // 2) if torch.cuda.is_available() else 0,
    )
    optimizer = make_optimizer(model, plan, config, lr)
    # Accelerate steps a prepared scheduler once per process for every optimizer step
    total = config.max_steps * accelerator.num_processes
    scheduler = make_schedule(config.scheduler, optimizer, int(config.warmup_ratio * total), total)
    model, optimizer, eval_dl, scheduler = accelerator.prepare(model, optimizer, eval_dl, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    accept_raw_pixels(unwrapped, inputs.image_stats)  # again: ahead of the input hooks the engine added
    tuning = ConservativeTraining.build(unwrapped, plan)  # before resume: w0 = pretrained
    fingerprint = fingerprint if fingerprint is not None else run_fingerprint(config, plan, inputs)
    progress, resumed_from = resume(accelerator, model, optimizer, scheduler, config, fingerprint)
    inputs.stream.position = stream_position(resumed_from, accelerator.process_index)
    inputs.stream.batch_size = (
        config.batch_size
    )  # --auto-batch-size may have halved it since the stream was made
    state = begin_state(
        accelerator,
        config,
        model,
        optimizer,
        scheduler,
        None,
        eval_dl,
        metrics,
        progress,
        tuning,
        resumed_from,
        class_weights,
        total_steps=config.max_steps,
        desc="training (stream)",
        stream=inputs.stream,
    )
    started = time.perf_counter()
    try:
        train_steps(state, config.max_steps, eval_period(config))
    finally:
        state.bar.close()
    seconds = time.perf_counter() - started
    if tuning is not None:
        tuning.close()
    return finish(state, seconds)


def stream_position(resumed_from: str | None, process_index: int) -> StreamPosition:
    """Where this process's share of the stream stands: the start, or what the resumed checkpoint saved (its RNG
    states are restored with it: nothing draws from them between here and the first step)."""
    if resumed_from is None:
        return StreamPosition()
    saved = read_process_state(Path(resumed_from), process_index)
    if saved is None:
        raise ConfigError(
            f"--resume: {resumed_from} holds no stream position for process {process_index} (was it saved by a run "
            "with another number of processes?); resume with the processes it was saved with, or start a new run"
        )
    restore_rng(Path(resumed_from), process_index)
    return StreamPosition(**saved)


def train_steps(state: TrainState, max_steps: int, every: int) -> None:
    """Forward, backward and step on the stream's batches until ``max_steps`` optimizer steps are done."""
    progress, accelerator = state.progress, state.accelerator
    if progress.global_step >= max_steps:
        return
    train_mode(state, 0)
    for batch in state.meter.timed(state.stream.batches()):
        batch = send_to_device(batch, accelerator.device)
        loss = train_step(state, batch)
        progress.batches_done += 1
        state.samples += batch["labels"].shape[0] * accelerator.num_processes
        summed = loss.float() if state.running_loss is None else state.running_loss + loss.float()
        state.running_loss, state.loss_count = summed, state.loss_count + 1
        state.meter.step_done(batch["labels"].shape[0])
        if accelerator.sync_gradients and after_stream_step(state, max_steps, every):
            return


def after_stream_step(state: TrainState, max_steps: int, every: int) -> bool:
    """Count the step, log, and at a period's end evaluate and checkpoint; True when the run is over (the last
    step, or early stopping)."""
    config, progress = state.config, state.progress
    progress.global_step += 1
    state.bar.update(1)
    log_loss(state, progress.epoch)
    step = progress.global_step
    if step % every == 0 or step == max_steps:
        # --eval-strategy end: the periods before the last end with a checkpoint only
        end_epoch(state, progress.epoch, name=f"step {step}/{max_steps}", last=step >= max_steps)
        if should_stop_early(progress, config.early_stopping_patience):
            state.stopped_early_at = progress.epoch
            state.accelerator.print(
                f"Early stopping at step {step}: {config.metric_for_best} has not improved for "
                f"{config.early_stopping_patience} evaluation(s) (best: evaluation {progress.best_epoch})"
            )
            return True
        train_mode(state, progress.epoch, epoch_start=False)
    elif config.save_steps and step % config.save_steps == 0:
        checkpoint(state)
    return step >= max_steps
