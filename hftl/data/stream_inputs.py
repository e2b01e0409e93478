"""A train stream made ready for the model (``--streaming``): shuffled in a buffer, split between processes,
preprocessed lazily with ``.map``, batched, and able to say where it is so that a resumed run reads on exactly
where the interrupted one stopped.

The order of the steps is the one ``datasets`` documents: ``shuffle(seed, buffer_size)`` (file/shard order and a
buffer of examples), ``split_dataset_by_node(rank, world_size)`` (a process keeps whole shards when their number
divides by the world size, else one example in ``world_size``, so shards never overlap), then ``map`` (tokenize,
or decode and resize). Each pass over the stream calls ``set_epoch(pass)``, which re-seeds both shuffles.

Accelerate never sees this loader: ``Accelerator.prepare`` would shard an IterableDataset a second time (its
``IterableDatasetShard``, or ``dataset.shard``) or, with ``dispatch_batches`` (its default for IterableDatasets),
read every batch on the main process and send slices to the others; batches go to the device with
``accelerate.utils.send_to_device`` instead.

**Exact resume.** A checkpoint records, per process, the pass and the number of examples of it already trained on
(``StreamPosition``). Resuming re-creates the pass (same seed, same epoch: the same order) and skips that many
examples, as transformers' Trainer skips batches: the skipped examples are read and preprocessed again, not trained
on. datasets' own ``IterableDataset.state_dict()`` would resume faster, but its documentation says it drops the
shuffle buffer's content on resume, so the examples seen would differ. The loader draws its seed from a generator of
its own, never the global one, so the restored RNG states stay where the checkpoint left them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader
from torch.utils.data import IterableDataset as TorchIterableDataset

from hftl.data.bad_inputs import ERROR, SkipReport
from hftl.data.image_stats import ImageStats
from hftl.data.loading import Splits
from hftl.data.preprocess import (
    IMAGE_FORMAT,
    ModelInputs,
    collators,
    image_batches,
    prepare_split,
    text_batches,
)
from hftl.data.stream_splits import column_names, label_encoder, needs_max_steps
from hftl.errors import DataError
from hftl.transfer.defaults import DEFAULT_EPOCHS

MIN_READ_FOR_BAD_FRACTION = 200  # a stream's bad fraction is judged once this many examples have been read


@dataclass
class StreamPosition:
    """Where one process is in its share of the stream; every checkpoint holds one per process."""

    passes: int = 0  # passes over this process's share completed
    consumed: int = 0  # examples of the current pass already trained on
    read: int = (
        0  # examples read in all (bad ones included; examples re-read to resume are not counted again)
    )
    skipped: int = 0  # unusable examples dropped
    first_bad: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainStream:
    """The train batches of one process, pass after pass, with the position a checkpoint saves."""

    def __init__(
        self,
        dataset: IterableDataset,
        collator: Any,
        batch_size: int,
        seed: int,
        max_bad_fraction: float,
        fingerprint: str,
        shards: int,
        world_size: int,
    ):
        self.dataset, self.collator, self.batch_size, self.seed = dataset, collator, batch_size, seed
        self.max_bad_fraction, self.fingerprint = max_bad_fraction, fingerprint
        self.shards, self.world_size = shards, world_size
        self.position = StreamPosition()

    def batches(self) -> Iterator[dict[str, Any]]:
        """Batches without end: at the end of a pass the next one starts, re-seeded; the position moves as each
        batch is handed out."""
        position = self.position
        while True:
            self.dataset.set_epoch(position.passes)
            if hasattr(self.collator, "set_epoch"):
                self.collator.set_epoch(position.passes)
            yielded = position.consumed > 0
            for batch in self.loader(skip=position.consumed):
                position.consumed += len(batch["labels"])
                yielded = True
                yield batch
            if not yielded:
                raise DataError(
                    "the train stream gave this process no usable examples"
                    + (
                        f" (it keeps 1 of {self.world_size} examples or shards)"
                        if self.world_size > 1
                        else ""
                    )
                )
            position.passes, position.consumed = position.passes + 1, 0

    def loader(self, skip: int = 0) -> DataLoader:
        """This pass's batches, after the first ``skip`` usable examples (already trained on)."""
        return DataLoader(
            _Reader(self, skip),
            batch_size=self.batch_size,
            collate_fn=self.collator,
            generator=torch.Generator().manual_seed(self.seed),  # the global RNG is left alone
        )

    def report(self) -> SkipReport:
        """The unusable examples met so far, as the in-memory splits report theirs."""
        position = self.position
        reasons: dict[str, int] = {}
        for text in position.first_bad:
            reason = text.split(": ", 1)[-1].split(" (")[0]
            reasons[reason] = reasons.get(reason, 0) + 1
        return SkipReport("train (stream)", position.read, position.skipped, reasons, position.first_bad[:5])

    def summary(self) -> dict[str, Any]:
        """What metrics.json records of the stream."""
        return {
            "position": self.position.to_dict(),
            "shards": self.shards,
            "processes": self.world_size,
            "split_between_processes": split_strategy(self.shards, self.world_size),
        }


class _Reader(TorchIterableDataset):
    """The usable examples of one pass, after skipping those already trained on; counts and drops bad ones."""

    def __init__(self, stream: TrainStream, skip: int):
        self.stream, self.skip = stream, skip

    def __iter__(self) -> Iterator[dict[str, Any]]:
        position, to_skip = self.stream.position, self.skip
        for example in self.stream.dataset:
            bad = example.pop(ERROR)
            if to_skip:  # read again to resume: counted when it was first read
                to_skip -= 0 if bad else 1
                continue
            position.read += 1
            if bad:
                self._count_bad(bad)
                continue
            yield example

    def _count_bad(self, text: str) -> None:
        position = self.stream.position
        position.skipped += 1
        if len(position.first_bad) < 20:
            position.first_bad.append(text)
        fraction = position.skipped / position.read
        if position.read >= MIN_READ_FOR_BAD_FRACTION and fraction > self.stream.max_bad_fraction:
            raise DataError(
                f"{position.skipped} of the first {position.read} train stream examples ({100 * fraction:.1f}%) "
                f"are unusable, above --max-bad-fraction {self.stream.max_bad_fraction}: "
                f"{'; '.join(position.first_bad[:5])}. Fix or remove them, or raise --max-bad-fraction."
            )


def split_strategy(shards: int, world_size: int) -> str:
    """How ``split_dataset_by_node`` divides the stream (its rule for ``strategy="auto"``)."""
    if world_size == 1:
        return "one process reads everything"
    if shards % world_size == 0:
        return f"{shards // world_size} of {shards} shards per process"
    return f"1 example in {world_size} per process (every process reads all {shards} shard(s))"


def prepare_stream_inputs(
    splits: Splits,
    modality: str,
    processor: Any,
    config: Any,
    *,
    rank: int,
    world_size: int,
    pad_to_multiple_of: int | None = None,
) -> ModelInputs:
    """Validation and test preprocessed once, as in memory; train as this process's ``TrainStream``."""
    assert splits.stream is not None, "stream_splits() makes the splits of a stream"
    named = {"validation": splits.validation, **({"test": splits.test} if splits.test is not None else {})}
    stats = ImageStats.from_processor(processor, config.max_image_pixels) if modality == "image" else None
    ready = {
        name: prepare_split(
            split,
            name,
            splits,
            stats,
            processor,
            config.max_length,
            config.max_bad_fraction,
            config.max_image_pixels,
        )
        for name, split in named.items()
    }
    train_collator, eval_collator = collators(
        stats, processor, bool(config.augment), config.seed, pad_to_multiple_of
    )
    shuffled = splits.train.shuffle(seed=config.seed, buffer_size=config.shuffle_buffer)
    shards = shuffled.num_shards
    mine = split_dataset_by_node(shuffled, rank=rank, world_size=world_size)
    encode = label_encoder(
        (splits.train.features or {}).get(splits.label_column), splits.labels, splits.stream.label_origin
    )
    raw_columns = column_names(splits.train)
    where = "train stream (shuffled) example"  # the position the map sees: after the shuffle
    if stats is not None:
        batches = image_batches(splits, processor, stats, config.max_image_pixels, encode, where)
        mapped = mine.map(batches, batched=True, batch_size=64, with_indices=True, remove_columns=raw_columns)
        mapped = mapped.with_format(IMAGE_FORMAT)
    else:
        batches = text_batches(splits, processor, config.max_length, encode, where)
        mapped = mine.map(batches, batched=True, with_indices=True, remove_columns=raw_columns)
    fingerprint = train_fingerprint(splits, config, world_size)
    stream = TrainStream(
        mapped,
        train_collator,
        config.batch_size,
        config.seed,
        config.max_bad_fraction,
        fingerprint,
        shards,
        world_size,
    )
    return ModelInputs(
        mapped,
        ready["validation"][0],
        train_collator,
        eval_collator,
        [report for _, report in ready.values()],
        ready["test"][0] if "test" in ready else None,
        stream,
        stats,
    )


def train_fingerprint(splits: Splits, config: Any, world_size: int) -> str:
    """What decides which examples each process trains on, in which order: a checkpoint resumes only into the same."""
    assert splits.stream is not None
    settings = [splits.stream.fingerprint, splits.labels, config.max_train_samples, config.shuffle_buffer]
    settings += [config.max_length, config.max_image_pixels, world_size]
    return hashlib.blake2b(json.dumps(settings, default=str).encode("utf-8"), digest_size=16).hexdigest()


def steps_to_train(config: Any, known_length: int | None, world_size: int) -> tuple[int, str]:
    """Optimizer steps per process: ``--max-steps``, else ``--epochs`` passes over a train split of known length;
    with the sentence that says which, for the log."""
    if config.max_steps is not None:
        return config.max_steps, f"--max-steps {config.max_steps}"
    if known_length is None:
        raise needs_max_steps(str(config.dataset))
    batches = math.ceil(math.ceil(known_length / world_size) / config.batch_size)
    epochs = config.epochs or DEFAULT_EPOCHS  # a stream is large data: no raised default
    steps = epochs * math.ceil(batches / config.gradient_accumulation_steps)
    return (
        steps,
        f"{epochs} epoch(s) of the {known_length} train examples the dataset states: {steps} steps",
    )
