"""Learning-rate schedules without importing ``transformers.trainer_utils`` (which imports PEFT into every run).

The common schedules are the same ``LambdaLR`` functions transformers' ``get_scheduler`` builds (a test compares them
step by step); any other name goes to ``get_scheduler`` itself.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR


def _warmup(step: int, warmup: int) -> float | None:
    return step / max(1, warmup) if step < warmup else None


def _linear(step: int, *, warmup: int, total: int) -> float:
    rising = _warmup(step, warmup)
    return rising if rising is not None else max(0.0, (total - step) / max(1, total - warmup))


def _cosine(step: int, *, warmup: int, total: int, cycles: float = 0.5) -> float:
    rising = _warmup(step, warmup)
    if rising is not None:
        return rising
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * cycles * 2.0 * progress)))


def _constant(step: int, *, warmup: int, total: int) -> float:
    return 1.0


def _constant_with_warmup(step: int, *, warmup: int, total: int) -> float:
    rising = _warmup(step, warmup)
    return rising if rising is not None else 1.0


SCHEDULES = {
    "linear": _linear,
    "cosine": _cosine,
    "constant": _constant,
    "constant_with_warmup": _constant_with_warmup,
}


def make_schedule(name: str, optimizer: torch.optim.Optimizer, warmup: int, total: int) -> Any:
    """The scheduler ``name`` (any transformers ``SchedulerType``) over ``total`` steps with ``warmup``."""
    schedule = SCHEDULES.get(str(name))
    if schedule is None:
        from transformers import get_scheduler

        return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)
    return LambdaLR(optimizer, functools.partial(schedule, warmup=warmup, total=total))
