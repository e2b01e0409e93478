"""``--lr auto``: an LR range test (Smith 2017; fastai's ``lr_find``) on the run's own model and data.

The planned network trains for up to ``steps`` optimizer steps while the learning rate grows geometrically from
``start`` to ``end``; the smoothed training loss is recorded and the test stops once it explodes. The suggestion is
fastai's "valley": the learning rate two thirds of the way into the longest stretch over which the loss keeps
falling. Everything the test touches is put back (trainable weights, BatchNorm statistics, every random number
stream), so the real run that follows is exactly the run ``--lr SUGGESTION`` would have been.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from hftl.config import RunConfig
from hftl.data.preprocess import ModelInputs
from hftl.training.checkpoints import load_trainable_state, trainable_state
from hftl.transfer.plan import TransferPlan

START, END, STEPS = 1e-7, 10.0, 100
SMOOTHING = 0.98  # exponential moving average of the loss, debiased
DIVERGED = 4.0  # stop once the smoothed loss exceeds 4x its best


@dataclass
class LrSearch:
    """What the range test saw and suggests (metrics.json ``lr_search``)."""

    suggestion: float
    default: float  # what the run would have used without --lr auto
    steps: int
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # smoothed

    def to_dict(self) -> dict[str, Any]:
        every = max(1, len(self.lrs) // 25)  # a readable curve, not every step
        return {
            "method": "lr range test (valley)",
            "suggestion": self.suggestion,
            "default": self.default,
            "steps": self.steps,
            "curve": [[lr, loss] for lr, loss in zip(self.lrs[::every], self.losses[::every], strict=True)],
        }


def find_lr(
    model: nn.Module,
    inputs: ModelInputs,
    config: RunConfig,
    plan: TransferPlan,
    accelerator: Accelerator,
    steps: int = STEPS,
) -> LrSearch:
    """Run the range test on ``model`` (the network ``fit`` will train) and put everything back afterwards."""
    from hftl.training.dataloaders import make_dataloaders
    from hftl.training.loop import make_optimizer

    # copies: on the CPU trainable_state's tensors are the live parameters themselves
    saved_state = {name: tensor.clone() for name, tensor in trainable_state(model).items()}
    saved_rng, was_training = _rng_state(), model.training
    device = accelerator.device
    model.to(device)
    train_dl, _ = make_dataloaders(inputs, config)
    optimizer = make_optimizer(model, None, config, START)
    lrs, losses = [], []
    average, best = 0.0, math.inf
    model.train()
    try:
        for step, batch in enumerate(itertools.islice(_forever(train_dl), steps)):
            lr = START * (END / START) ** (step / max(1, steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = {key: value.to(device) for key, value in batch.items()}
            with accelerator.autocast():
                loss = model(**batch).loss
            if not torch.isfinite(loss):
                break
            loss.backward()
            torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], config.max_grad_norm or math.inf
            )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            average = SMOOTHING * average + (1 - SMOOTHING) * float(loss.detach())
            smoothed = average / (1 - SMOOTHING ** (step + 1))
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if smoothed > DIVERGED * best:
                break
    finally:
        optimizer.zero_grad(set_to_none=True)
        load_trainable_state(model, saved_state)
        _restore_rng(saved_rng)
        model.train(was_training)
    return LrSearch(valley(lrs, losses, fallback=plan.lr), plan.lr, len(lrs), lrs, losses)


def _forever(loader: Any) -> Any:
    """The loader's batches, epoch after epoch (``itertools.cycle`` would keep every batch in memory)."""
    while True:
        yield from loader


def valley(lrs: list[float], losses: list[float], fallback: float) -> float:
    """fastai's valley: the longest decreasing stretch of the loss curve, two thirds of the way in."""
    n = len(losses)
    if n < 3:
        return fallback
    run = [1] * n
    best_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[i] > run[best_end]:
            best_end = i
    best_start = best_end - run[best_end] + 1
    if best_end - best_start < 2:
        return fallback
    third = (best_end - best_start) / 3
    return float(lrs[best_start + int(third) + int(third / 2)])


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])
