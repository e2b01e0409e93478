"""What the training steps share: one ``TrainState``, started the same way by the epoch loop and the stream loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hftl.config import RunConfig
from hftl.training.checkpoints import Progress
from hftl.training.evaluation import decision_threshold
from hftl.training.guards import NonFiniteGuard
from hftl.training.throughput import ThroughputMeter
from hftl.transfer.conservative import ConservativeTraining


@dataclass
class TrainState:
    """Everything the epoch and evaluation steps share, in one visible place (no closures, no hidden state)."""

    accelerator: Accelerator
    config: RunConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_dl: DataLoader | None  # None for a stream: ``stream`` hands out its batches
    eval_dl: DataLoader
    metrics: list
    progress: Progress
    guard: NonFiniteGuard
    tuning: ConservativeTraining | None
    meter: ThroughputMeter
    bar: Any
    resumed_from: str | None
    curve: list[dict[str, Any]] = field(default_factory=list)
    stopped_early_at: int | None = None
    samples: int = 0
    eval_seconds: float = 0.0  # of the loop's time, in evaluation
    running_loss: torch.Tensor | None = None  # summed on the device: read (one sync) every --log-steps
    loss_count: int = 0
    class_weights: torch.Tensor | None = None  # --class-weights: the training loss weighs each class
    threshold: float | None = None  # multi-label: a label is predicted above this sigmoid score
    stream: Any = None  # --streaming: the TrainStream, whose position every checkpoint saves

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)


def begin_state(
    accelerator: Accelerator,
    config: RunConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    train_dl: DataLoader | None,
    eval_dl: DataLoader,
    metrics: list,
    progress: Progress,
    tuning: ConservativeTraining | None,
    resumed_from: str | None,
    class_weights: list[float] | None,
    total_steps: int,
    desc: str = "training",
    stream: Any = None,
) -> TrainState:
    """The state a loop starts from (fresh or resumed): the guard's count and the bar's position come from
    ``progress``."""
    return TrainState(
        accelerator=accelerator,
        config=config,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        train_dl=train_dl,
        eval_dl=eval_dl,
        metrics=metrics,
        progress=progress,
        guard=NonFiniteGuard(config.max_nonfinite_steps, skipped=progress.nonfinite_skipped),
        tuning=tuning,
        meter=ThroughputMeter(accelerator.device, accelerator.num_processes),
        bar=tqdm(
            total=total_steps,
            initial=progress.global_step,
            disable=not accelerator.is_local_main_process,
            desc=desc,
            unit="step",
        ),
        resumed_from=resumed_from,
        class_weights=None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32),
        threshold=decision_threshold(config),
        stream=stream,
    )
