"""The data half of a run: splits, the processor and model-ready inputs, in memory or as a stream
(``--streaming``), and what a stream changes about the rest of the run (its steps, its class counts, its notes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from accelerate import Accelerator
from datasets import Dataset, DatasetDict

from hftl.config import RunConfig
from hftl.data.loading import Splits, splits_for
from hftl.data.preprocess import ModelInputs, prepare_inputs
from hftl.errors import ConfigError, DataError
from hftl.sources.registry import load_processor, source_for
from hftl.tasks import Task
from hftl.training.dataloaders import loader_workers


def prepare_data(
    config: RunConfig, task: Task, dataset: Dataset | DatasetDict | None, accelerator: Accelerator
) -> tuple[Splits, Any, ModelInputs]:
    """Splits, the processor (for word vectors: a vocabulary of the training split) and model-ready inputs."""
    if config.streaming:
        return prepare_stream(config, task, dataset, accelerator)
    with accelerator.main_process_first():
        splits = splits_for(config, task, dataset)
        processor = load_processor(task, config, splits)
        fit_max_length(config, task, processor, accelerator)
        inputs = prepare_inputs(
            splits,
            task.modality,
            processor,
            max_length=config.max_length,
            augment=bool(config.augment),  # settled once the epochs are known (hftl.data.augmentation)
            seed=config.seed,
            pad_to_multiple_of=8 if accelerator.device.type == "cuda" else None,
            max_bad_fraction=config.max_bad_fraction,
            max_image_pixels=config.max_image_pixels,
            processes=max(1, loader_workers(config)),  # the DataLoader's workers decode images once, first
        )
    return splits, processor, inputs


def prepare_stream(
    config: RunConfig, task: Task, dataset: Dataset | DatasetDict | None, accelerator: Accelerator
) -> tuple[Splits, Any, ModelInputs]:
    """``--streaming``: the train split as this process's share of a stream, validation and test capped and kept
    on disk (the main process writes them first), and the run's length in optimizer steps."""
    from hftl.data.stream_inputs import prepare_stream_inputs, steps_to_train
    from hftl.data.stream_splits import stream_splits

    if dataset is not None:
        raise ConfigError(
            "--streaming reads --dataset as a stream; a dataset already in memory trains without --streaming"
        )
    with accelerator.main_process_first():
        splits = stream_splits(config, task)
        processor = load_processor(task, config, splits)
        fit_max_length(config, task, processor, accelerator)
        inputs = prepare_stream_inputs(
            splits,
            task.modality,
            processor,
            config,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
            pad_to_multiple_of=8 if accelerator.device.type == "cuda" else None,
        )
    assert splits.stream is not None and inputs.stream is not None
    config.max_steps, how = steps_to_train(config, splits.stream.known_length, accelerator.num_processes)
    accelerator.print(
        f"Streaming {config.dataset}: {how}; labels from {splits.stream.label_origin}; "
        f"{inputs.stream.summary()['split_between_processes']}; shuffle buffer {config.shuffle_buffer}"
    )
    return splits, processor, inputs


def train_label_ids(config: RunConfig, splits: Splits) -> Sequence[Any]:
    """The labels ``--class-weights auto`` counts: the whole train split (multi-label: its lists of label ids), or
    the examples a stream's label scan read (``--label-scan-examples``), every class among them."""
    if splits.stream is None:
        return splits.train[splits.label_column]
    scanned = splits.stream.scanned_labels or []
    missing = [name for i, name in enumerate(splits.labels) if i not in set(scanned)]
    if config.class_weights == "auto" and missing:
        raise DataError(
            f"--class-weights auto: class(es) {missing} have no example among the first {len(scanned)} train "
            "examples read; raise --label-scan-examples, or give --class-weights FILE"
        )
    return scanned


def not_for_streams(config: RunConfig, modality: str) -> list[str]:
    """Notes on the settings a stream leaves aside (on by default, so not refused)."""
    if config.streaming and config.group_by_length and modality == "text":
        return ["--group-by-length: not applied to a stream (batches come in stream order)"]
    return []


def counted_from(splits: Splits) -> str:
    """Where ``--class-weights auto`` took its counts, when not from the whole train split."""
    if splits.stream is None or splits.stream.scanned_labels is None:
        return ""
    return f" (counted on the first {len(splits.stream.scanned_labels)} train examples of the stream)"


def fit_max_length(config: RunConfig, task: Task, processor: Any, accelerator: Accelerator) -> None:
    """Texts are cut to what the model can read: ``--max-length`` beyond its position embeddings (or the tokenizer's
    own limit) would crash on the first long text, so it is lowered, with a note (as run_glue.py does)."""
    if task.modality != "text":
        return
    limits = [getattr(processor, "model_max_length", None)]
    if source_for(config.model).name == "hub":
        from hftl.sources.hub import load_model_config

        limits.append(getattr(load_model_config(config), "max_position_embeddings", None))
    usable = min(
        [limit for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000], default=None
    )
    if usable is not None and config.max_length > usable:
        accelerator.print(
            f"--max-length {config.max_length} is more than {config.model} reads: using {usable}"
        )
        config.max_length = usable
