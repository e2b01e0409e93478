"""The training loop, on Accelerate: one screen that reads top to bottom (like accelerate's nlp_example.py).

AdamW over the trainable parameters only, warmup + schedule, gradient accumulation, clipping, evaluation every
epoch, a checkpoint at every epoch end (and every ``save_steps``), exact resume, and the best epoch's weights
restored at the end.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from hftl.config import RunConfig
from hftl.data.preprocess import ModelInputs
from hftl.data.sampling import length_grouped_sampler
from hftl.training.checkpoints import (
    Progress,
    checkpoint_name,
    load_checkpoint,
    remove_partial,
    resolve_resume,
    restore_rng,
    restore_trained_weights,
    save_checkpoint,
)
from hftl.training.devices import fused_adamw
from hftl.training.guards import NonFiniteGuard, step_is_finite
from hftl.training.metrics import compute_metrics
from hftl.training.throughput import ThroughputMeter
from hftl.transfer.conservative import ConservativeTraining
from hftl.transfer.conservative import parameter_groups as plan_parameter_groups
from hftl.transfer.plan import TransferPlan

LOG_FILE = "metrics.jsonl"


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best: dict[str, Any]
    global_step: int
    train_seconds: float
    train_samples: int
    resumed_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


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
) -> FitResult:
    """Train ``model``; ``plan`` (when given) brings its per-block learning rates, penalties and unfreezing."""
    output_dir = Path(config.output_dir)
    workers = (
        config.num_workers if config.num_workers is not None else (min(4, _cpus() // 2) if _cuda() else 0)
    )
    # text: batches of similar length (less padding); the order depends only on (seed, epoch)
    sampler = (
        length_grouped_sampler(inputs.train, config.batch_size, config.seed)
        if getattr(config, "group_by_length", False)
        else None
    )
    train_dl = DataLoader(
        inputs.train,
        batch_size=config.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=inputs.train_collator,
        num_workers=workers,
        pin_memory=_cuda(),
        # persistent workers keep their copy of the collator: per-epoch augmentation needs fresh ones
        persistent_workers=workers > 0 and not hasattr(inputs.train_collator, "set_epoch"),
    )
    eval_dl = DataLoader(
        inputs.validation,
        batch_size=config.eval_batch_size or 2 * config.batch_size,
        collate_fn=inputs.eval_collator,
        num_workers=workers,
        pin_memory=_cuda(),
    )
    # counted before sharding: Accelerate steps a prepared scheduler once per process for every optimizer step
    total_steps = math.ceil(len(train_dl) / config.gradient_accumulation_steps) * config.epochs
    conservative = plan is not None and plan.conservative is not None
    groups = (
        plan_parameter_groups(model, plan, config.weight_decay)
        if conservative
        else parameter_groups(model, config.weight_decay)
    )
    optimizer = torch.optim.AdamW(groups, lr=lr, **fused_adamw(model))
    scheduler = get_scheduler(
        config.scheduler,
        optimizer,
        num_warmup_steps=int(config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    model, optimizer, train_dl, eval_dl, scheduler = accelerator.prepare(
        model, optimizer, train_dl, eval_dl, scheduler
    )
    tuning = ConservativeTraining.build(
        accelerator.unwrap_model(model), plan
    )  # before resume: w0 = pretrained

    progress, resumed_from = Progress(), None
    if accelerator.is_main_process:
        for name in remove_partial(output_dir / "checkpoints"):
            accelerator.print(f"Removed a half-written checkpoint ({name}) left by an interrupted run")
    accelerator.wait_for_everyone()
    if config.resume:
        checkpoint = resolve_resume(config.resume, output_dir)
        if checkpoint is not None:
            progress = load_checkpoint(accelerator, model, optimizer, scheduler, checkpoint)
            resumed_from = str(checkpoint)
            accelerator.print(
                f"Resumed from {checkpoint} (epoch {progress.epoch}, step {progress.global_step})"
            )
        else:
            accelerator.print(f"--resume auto: no complete checkpoint in {output_dir}, starting fresh")

    guard = NonFiniteGuard(config.max_nonfinite_steps, skipped=progress.nonfinite_skipped)
    last_saved = resumed_from

    def checkpoint() -> None:
        nonlocal last_saved
        progress.nonfinite_skipped = guard.skipped
        last_saved = str(
            save_checkpoint(
                accelerator, model, optimizer, scheduler, progress, output_dir, config.save_total_limit
            )
        )

    local_steps = (
        math.ceil(len(train_dl) / config.gradient_accumulation_steps) * config.epochs
    )  # after sharding
    bar = tqdm(
        total=local_steps,
        initial=progress.global_step,
        disable=not accelerator.is_local_main_process,
        desc="training",
        unit="step",
    )

    def train_mode(epoch: int, epoch_start: bool = True) -> None:
        model.train()
        if tuning is not None:
            joined = tuning.start_epoch(epoch)
            if joined and epoch_start:
                _log(
                    accelerator,
                    output_dir,
                    {"step": progress.global_step, "epoch": epoch, "unfrozen": joined},
                )

    curve: list[dict[str, Any]] = []  # every evaluation (epoch ends and every eval_steps): the learning curve
    started, samples, running_loss, loss_count = time.perf_counter(), 0, 0.0, 0
    first_epoch = progress.epoch
    meter = ThroughputMeter(accelerator.device, accelerator.num_processes)
    for epoch in range(first_epoch, config.epochs):
        train_mode(epoch)
        train_dl.set_epoch(epoch)
        _set_collator_epoch(inputs.train_collator, epoch)
        skip = progress.batches_done if epoch == progress.epoch else 0
        batches: Any = accelerator.skip_first_batches(train_dl, skip) if skip else train_dl
        if resumed_from and epoch == first_epoch:
            # the DataLoader iterator draws a seed from the global RNG when it starts: start it, then restore
            batches = iter(batches)
            first = next(batches, None)
            restore_rng(Path(resumed_from), accelerator.process_index)
            batches = itertools.chain([first] if first is not None else [], batches)
        progress.epoch, progress.batches_done = epoch, skip
        for batch in meter.timed(batches):
            with (
                accelerator.accumulate(model),
                meter.count_flops(enabled=not getattr(config, "compile", False)),
            ):
                loss = model(**batch).loss
                objective = (loss + tuning.penalty()) if tuning is not None else loss
                accelerator.backward(objective)
                if accelerator.sync_gradients:
                    if tuning is not None:
                        tuning.drop_frozen_gradients()
                    norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm or math.inf)
                    if guard.allows(
                        step_is_finite(objective, norm, accelerator), progress.global_step + 1, last_saved
                    ):
                        optimizer.step()
                        scheduler.step()
                    else:
                        accelerator.print(
                            f"step {progress.global_step + 1}: non-finite loss/gradients, skipped"
                        )
                optimizer.zero_grad(set_to_none=True)
            progress.batches_done += 1
            samples += batch["labels"].shape[0] * accelerator.num_processes
            running_loss, loss_count = running_loss + loss.detach().float().item(), loss_count + 1
            meter.step_done(batch["labels"].shape[0])
            if not accelerator.sync_gradients:
                continue
            progress.global_step += 1
            bar.update(1)
            if progress.global_step % config.log_steps == 0:
                record = {
                    "step": progress.global_step,
                    "epoch": epoch,
                    "loss": running_loss / loss_count,
                    "lr": scheduler.get_last_lr()[0],
                }
                _log(accelerator, output_dir, record)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                running_loss, loss_count = 0.0, 0
            at_epoch_end = accelerator.gradient_state.end_of_dataloader  # the epoch-end checkpoint follows
            if config.save_steps and progress.global_step % config.save_steps == 0 and not at_epoch_end:
                checkpoint()
            if config.eval_steps and progress.global_step % config.eval_steps == 0 and not at_epoch_end:
                scores = evaluate(model, eval_dl, accelerator, metrics)
                point = {"step": progress.global_step, "epoch": epoch + progress.batches_done / len(train_dl)}
                curve.append({**point, **{f"eval_{k}": v for k, v in scores.items()}})
                _log(accelerator, output_dir, curve[-1])
                train_mode(epoch, epoch_start=False)

        scores = evaluate(model, eval_dl, accelerator, metrics)
        record = {
            "epoch": epoch + 1,
            "step": progress.global_step,
            **{f"eval_{k}": v for k, v in scores.items()},
        }
        progress.history.append(record)
        curve.append(record)
        _log(accelerator, output_dir, record)
        accelerator.print(
            f"epoch {epoch + 1}/{config.epochs}: " + ", ".join(f"{k}={v:.4f}" for k, v in scores.items())
        )
        progress.epoch, progress.batches_done = epoch + 1, 0
        value = scores.get(config.metric_for_best)
        if value is not None and (progress.best_metric is None or value > progress.best_metric):
            progress.best_metric, progress.best_epoch = value, epoch + 1
            progress.best_checkpoint = checkpoint_name(progress)
        checkpoint()
    bar.close()
    seconds = time.perf_counter() - started
    if tuning is not None:
        tuning.close()

    if progress.best_checkpoint:
        restore_trained_weights(accelerator.unwrap_model(model), output_dir, progress.best_checkpoint)
    best = next((h for h in progress.history if h["epoch"] == progress.best_epoch), progress.history[-1])
    throughput = meter.summary(str(accelerator.mixed_precision))
    return FitResult(
        progress.history,
        best,
        progress.global_step,
        seconds,
        samples,
        resumed_from,
        {
            "model": model,
            "curve": curve,
            "throughput": throughput,
            "nonfinite_skipped": guard.skipped,
            "batch_size": config.batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
        },
    )


def evaluate(
    model: nn.Module, dataloader: DataLoader, accelerator: Accelerator, metrics: list
) -> dict[str, float]:
    """Metrics over the whole validation set, gathered across processes (duplicates from padding dropped)."""
    model.eval()
    predictions, references, losses = [], [], []
    for batch in dataloader:
        with torch.no_grad():
            outputs = model(**batch)
        preds, refs, loss = accelerator.gather_for_metrics(
            (outputs.logits.argmax(dim=-1), batch["labels"], outputs.loss.detach().reshape(1))
        )
        predictions.append(preds.cpu())
        references.append(refs.cpu())
        losses.append(loss.float().mean().cpu())
    scores = compute_metrics(metrics, torch.cat(predictions).tolist(), torch.cat(references).tolist())
    scores["loss"] = float(torch.stack(losses).mean())
    return scores


def _set_collator_epoch(collator: Any, epoch: int) -> None:
    if hasattr(collator, "set_epoch"):
        collator.set_epoch(epoch)


def _log(accelerator: Accelerator, output_dir: Path, record: dict[str, Any]) -> None:
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        with open(output_dir / LOG_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    if accelerator.trackers:
        accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])


def _cuda() -> bool:
    return torch.cuda.is_available()


def _cpus() -> int:
    import os

    return os.cpu_count() or 1
