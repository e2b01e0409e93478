"""Protections around training: skip non-finite steps (and stop after too many in a row), and shrink the batch on
out-of-memory while keeping the effective batch size.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from accelerate.utils import find_executable_batch_size
from torch import nn

from hftl.errors import HftlError
from hftl.training.checkpoints import load_trainable_state, trainable_state

T = TypeVar("T")


class TrainingDiverged(HftlError, RuntimeError):
    """The loss or the gradients stayed non-finite for too many optimizer steps in a row."""


@dataclasses.dataclass
class NonFiniteGuard:
    """Counts optimizer steps whose loss or gradient norm is NaN/inf; such a step is skipped (weights and optimizer
    state untouched). After ``limit`` in a row the run stops, so the newest checkpoint is still a good one."""

    limit: int
    skipped: int = 0
    streak: int = 0

    def allows(self, finite: bool, step: int, last_checkpoint: str | None) -> bool:
        if finite:
            self.streak = 0
            return True
        self.skipped += 1
        self.streak += 1
        if self.streak >= self.limit:
            where = (
                f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint yet"
            )
            raise TrainingDiverged(
                f"training stopped at step {step}: the loss or gradients were not finite for {self.streak} "
                f"optimizer steps in a row ({self.skipped} skipped in all); {where}. Lower --lr, prefer "
                "--mixed-precision bf16 to fp16, check the data, then continue with --resume auto."
            )
        return False


def step_is_finite(loss: torch.Tensor, grad_norm: torch.Tensor | None, accelerator: Any) -> bool:
    """Agreed by every process: with fp16 the grad scaler owns overflowing gradients, so only the loss counts."""
    if grad_norm is not None and accelerator.mixed_precision != "fp16":
        return bool(torch.isfinite(grad_norm).all())  # gradients are all-reduced: the same on every rank
    losses = accelerator.gather(loss.detach().float().reshape(1))
    return bool(torch.isfinite(losses).all())


def with_auto_batch_size(
    train: Callable[[int, int], T],
    model: nn.Module,
    batch_size: int,
    accumulation: int,
    log: Callable[[str], None] = print,
) -> T:
    """Call ``train(batch_size, accumulation)``; on out-of-memory, restore the model's trainable weights and the
    RNG, halve the per-device batch and raise gradient accumulation so that batch x accumulation stays the same
    (Accelerate's ``find_executable_batch_size`` does the catching)."""
    start_weights, start_rng = trainable_state(model), torch.get_rng_state()
    effective, current, first = batch_size * accumulation, batch_size, True

    def halve() -> int:
        nonlocal current
        current //= 2
        return current

    @find_executable_batch_size(starting_batch_size=batch_size, reduce_batch_size_fn=halve)
    def attempt(size: int) -> T:
        nonlocal first
        steps = max(1, math.ceil(effective / size))
        if not first:
            load_trainable_state(model, start_weights)
            torch.set_rng_state(start_rng)
            log(
                f"out of memory: retrying with per-device batch {size} x {steps} accumulation steps "
                f"(effective batch {size * steps}, asked {effective})"
            )
        first = False
        return train(size, steps)

    return attempt()
