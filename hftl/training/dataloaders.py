"""The training and validation DataLoaders: sampling order, workers, and keeping the device fed.

On a GPU the input pipeline must never make the device wait: batches are pinned (page-locked host memory, so the
copy to the device is asynchronous), and with workers each one keeps a few batches ready (``prefetch_factor``).

Workers are started afresh for every epoch and evaluation, not kept (``persistent_workers``): a DataLoader draws
its workers' base seed from the global RNG, which dropout also reads, each time it starts an iterator, and a
persistent one only the first time. A resumed run's loaders start fresh, so with persistent workers it drew once
more than the run it continues and its dropout masks parted from it (exact resume failed with 2 workers,
mid-epoch and at an epoch's end). Fresh workers draw as a worker-less loader does, so the number of workers never
changes a run's results. (Own generators would leave the global RNG alone too, but change every run's dropout
masks from what the calibration measured.)
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import DataLoader

from hftl.config import RunConfig
from hftl.data.preprocess import ModelInputs
from hftl.data.sampling import length_grouped_sampler

PREFETCH_BATCHES = 4  # per worker; torch's default is 2


def loader_workers(config: Any) -> int:
    """DataLoader workers: the configured number, else none on CPU and up to 4 on a GPU machine."""
    if config.num_workers is not None:
        return config.num_workers
    return min(4, (os.cpu_count() or 1) // 2) if torch.cuda.is_available() else 0


def feeding(workers: int) -> dict[str, Any]:
    """Pinned memory on CUDA; with workers, ``PREFETCH_BATCHES`` batches each in flight (workers not persistent:
    see above)."""
    switches: dict[str, Any] = {"num_workers": workers, "pin_memory": torch.cuda.is_available()}
    if workers > 0:
        switches.update(persistent_workers=False, prefetch_factor=PREFETCH_BATCHES)
    return switches


def make_dataloaders(inputs: ModelInputs, config: RunConfig) -> tuple[DataLoader, DataLoader]:
    """Train (shuffled, or length-grouped for text) and validation loaders; workers and pinned memory per device."""
    workers = loader_workers(config)
    # text: batches of similar length (less padding); the order depends only on (seed, epoch)
    sampler = (
        length_grouped_sampler(inputs.train, config.batch_size, config.seed)
        if config.group_by_length
        else None
    )
    train_dl = DataLoader(
        inputs.train,
        batch_size=config.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=inputs.train_collator,  # fresh workers also take the collator's epoch (augmentation)
        **feeding(workers),
    )
    eval_dl = DataLoader(
        inputs.validation,
        batch_size=config.eval_batch_size or 2 * config.batch_size,
        collate_fn=inputs.eval_collator,
        **feeding(workers),
    )
    return train_dl, eval_dl
