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
    state untouched). After ``limit`` in a row the run stops, so the newest checkpoint is still a good one.

    The counting happens on the device (``watch``): no step waits for the GPU to say whether it was finite. The
    host reads the counters (``read``: one transfer) when it reads the loss anyway, at every --log-steps, and
    before a checkpoint; a run that went bad stops there, naming the step where the limit was reached."""

    limit: int
    skipped: int = 0  # read so far
    streak: int = 0
    _counts: torch.Tensor | None = (
        None  # on the device: [skipped since the last read, streak, step the limit hit]
    )

    def watch(self, finite: torch.Tensor, step: int) -> None:
        """Count optimizer step ``step`` (``finite``: a 0-d bool tensor on the device) without a host sync."""
        if self._counts is None:
            self._counts = torch.tensor([0, self.streak, 0], device=finite.device)
        bad = (~finite).long()
        pending, streak, hit = self._counts.unbind()
        streak = (streak + 1) * bad
        reached = (streak >= self.limit) & (hit == 0)
        self._counts = torch.stack([pending + bad, streak, torch.where(reached, step, hit)])

    def read(self, last_checkpoint: str | None) -> int:
        """Bring the device counters to the host (one sync); returns the steps skipped since the last read, or
        raises ``TrainingDiverged`` when ``limit`` steps in a row were not finite."""
        if self._counts is None:
            return 0
        pending, self.streak, hit = self._counts.tolist()
        self._counts = None
        self.skipped += pending
        if hit:
            where = (
                f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint yet"
            )
            raise TrainingDiverged(
                f"training stopped at step {hit}: the loss or gradients were not finite for {self.limit} "
                f"optimizer steps in a row ({self.skipped} skipped in all); {where}. Lower --lr, prefer "
                "--mixed-precision bf16 to fp16, check the data, then continue with --resume auto."
            )
        return pending


def finite_flag(loss: torch.Tensor, grad_norm: torch.Tensor | None, accelerator: Any) -> torch.Tensor:
    """Whether the step is finite, as a 0-d bool tensor on the device, agreed by every process: the gradient norm
    is all-reduced (the same everywhere); with fp16 the grad scaler owns overflowing gradients, so only the loss
    counts, gathered from every process. No host sync."""
    if grad_norm is not None and accelerator.mixed_precision != "fp16":
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor; full_tensor reduces it on the device
            grad_norm = grad_norm.full_tensor()
        return torch.isfinite(torch.as_tensor(grad_norm)).all()
    return torch.isfinite(accelerator.gather(loss.detach().float().reshape(1))).all()


def skips_on_device(optimizer: Any, accelerator: Any) -> bool:
    """Whether a non-finite step can be skipped without the host knowing: torch's fused Adam/AdamW skips its whole
    update when told ``found_inf`` (the way GradScaler uses it), so the device decides. Not with the fp16 grad
    scaler (which sets ``found_inf`` itself), DeepSpeed's engine or a non-fused optimizer; those steps are decided
    on the host, one sync each, as before. FSDP2's sharded (DTensor) parameters skip on the device too."""
    inner = getattr(optimizer, "optimizer", optimizer)
    if accelerator.scaler is not None or not isinstance(inner, torch.optim.Adam):
        return False
    return bool(inner.defaults.get("fused"))


def skip_unless_finite(optimizer: Any, finite: torch.Tensor) -> None:
    """Make the next ``optimizer.step()`` a no-op on the device when ``finite`` is false (weights, moments and
    the step count untouched)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    inner.found_inf = (~finite).float()


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
