"""The training and validation DataLoaders: sampling order, workers, and keeping the device fed.

On a GPU the input pipeline must never make the device wait: batches are pinned (page-locked host memory, so the
copy to the device is asynchronous), and with workers each one keeps a few batches ready (``prefetch_factor``)
and lives across epochs (``persistent_workers``), unless the collator changes with the epoch (augmentation: fresh
workers take the new epoch).

Neither loader draws from the global RNG. A DataLoader draws its workers' base seed from its ``generator`` each
time it starts an iterator (a persistent one only the first time); without one it drew from the global RNG, which
dropout also reads, so a resumed run, whose loaders start fresh or skip an evaluation the checkpoint was written
before, drew a different number of times than the run it continued and its dropout masks parted from it (exact
resume failed with 2 workers, and with an ``--eval-steps`` evaluation at a checkpoint's step). Each loader has its
own generator instead, as the streaming loader does; the order comes from the seeded samplers, (seed, epoch) only.
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


def feeding(workers: int, seed: int, persistent: bool = True) -> dict[str, Any]:
    """A loader's own generator (the global RNG is left alone); pinned memory on CUDA; with workers, persistent ones
    and ``PREFETCH_BATCHES`` batches each in flight."""
    switches: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": torch.cuda.is_available(),
        "generator": torch.Generator().manual_seed(seed),
    }
    if workers > 0:
        switches.update(persistent_workers=persistent, prefetch_factor=PREFETCH_BATCHES)
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
        collate_fn=inputs.train_collator,
        # persistent workers keep their copy of the collator: per-epoch augmentation needs fresh ones
        **feeding(workers, config.seed, persistent=not hasattr(inputs.train_collator, "set_epoch")),
    )
    eval_dl = DataLoader(
        inputs.validation,
        batch_size=config.eval_batch_size or 2 * config.batch_size,
        collate_fn=inputs.eval_collator,
        **feeding(workers, config.seed),
    )
    return train_dl, eval_dl
