"""Length-grouped sampling for text: batches of similar length need less padding.

Examples are shuffled, cut into mega-batches and sorted by length inside each (transformers'
``get_length_grouped_indices``), so a batch holds examples of similar length while the order stays random. The
order depends only on (seed, epoch): Accelerate calls ``set_epoch`` on it, all processes see the same order and
shard it by batches, and an exact resume skips the same batches the interrupted run saw.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow.compute as pc
import torch
from datasets import Dataset
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices

LENGTH_COLUMNS = ("length", "input_ids")


class LengthGroupedSampler(Sampler[int]):
    """Random order, grouped by length, reproducible from (seed, epoch)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 42):
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def sequence_lengths(dataset: Dataset) -> list[int] | None:
    """Token counts per example (a ``length`` column, else the ``input_ids`` lists), or None for non-text data."""
    columns = getattr(dataset, "column_names", None) or []
    for column in LENGTH_COLUMNS:
        if column in columns:
            values = dataset.with_format("arrow")[column]
            if column == "input_ids":
                values = pc.list_value_length(values)
            return [int(v) for v in values.to_pylist()]
    return None


def length_grouped_sampler(dataset: Dataset, batch_size: int, seed: int) -> LengthGroupedSampler | None:
    """A sampler for ``dataset`` when its examples have lengths (text), else None (plain shuffling)."""
    lengths = sequence_lengths(dataset)
    return LengthGroupedSampler(lengths, batch_size, seed) if lengths else None
