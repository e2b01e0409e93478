"""The splits of a dataset read as a stream (``--streaming``): ``load_dataset(..., streaming=True)`` gives
IterableDatasets that are read while training runs, so memory does not grow with the data.

A stream has no length, no random access and no cheap full pass; what the in-memory path reads from the whole split
comes from elsewhere here:

- **label names**: ``--labels`` (or a task card's ``defaults: labels``), else the dataset's ``ClassLabel`` feature
  (image folders, most Hub datasets), else the label column of at most ``--label-scan-examples`` train examples, as
  the log says. A label met later that is not among them stops the run with its example named.
- **validation**: the dataset's validation split, else the train examples whose content hash falls in
  ``--validation-split`` (the same example is always on the same side, in any order and on any pass; duplicates
  never straddle the split). Its first ``--max-eval-samples`` examples (default ``STREAM_EVAL_DEFAULT``) are written
  once to an Arrow file (memory-mapped, keyed by the source's fingerprint), so every evaluation scores the same
  examples through the usual in-memory path.
- **length**: only what the dataset's metadata states (Hub datasets); the run then derives its steps from it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
from datasets import ClassLabel, Dataset, IterableDataset, IterableDatasetDict, LargeList, List

from hftl.data.folder_files import files_stamp
from hftl.data.labels import as_class_label, check_label_spellings, check_not_list_text
from hftl.data.loading import TEST_NAMES, VALIDATION_NAMES, Splits, StreamInfo, find_column, load_raw
from hftl.errors import ConfigError, DataError

if TYPE_CHECKING:
    from hftl.config import RunConfig
    from hftl.tasks import Task

# validation (and test) examples kept from a stream when --max-eval-samples is not set
STREAM_EVAL_DEFAULT = 10_000


def stream_splits(config: RunConfig, task: Task) -> Splits:
    """Train as a stream (raw labels), validation and test as capped in-memory splits with encoded labels."""
    source = str(config.dataset)
    raw = load_raw(source, task.modality, config.dataset_config, config.data_encoding, streaming=True)
    if not isinstance(raw, IterableDatasetDict):
        raise DataError(f"{source}: could not be opened as a stream")
    hints = [config.label_column] if config.label_column else list(task.label_columns)
    train, validation, test = pick_stream_splits(raw, hints)
    inputs, pair, label = stream_columns(train, config, task)
    if task.modality == "image":
        train, validation, test = (
            None if split is None else split.cast_column(inputs[0], datasets.Image(decode=False))
            for split in (train, validation, test)
        )
    fingerprint = source_fingerprint(source, config)
    cap = config.max_eval_samples or STREAM_EVAL_DEFAULT
    if validation is None:
        fraction = config.validation_split
        validation = train.filter(held_out, fn_kwargs={"columns": inputs, "fraction": fraction})
        train = train.filter(lambda example: not held_out(example, inputs, fraction))
        origin = f"held out from the train stream (the {fraction:.0%} of examples by a hash of their input)"
        length = None
    else:
        origin = validation.split or "validation"
        length = stated_length(train)
    if config.max_steps is None and length is None:  # before anything is read
        raise needs_max_steps(source)
    feature = (train.features or {}).get(label)
    refuse_label_lists(feature, f"the label column {label!r}")
    names, label_origin, scanned = stream_labels(train, label, feature, config)
    target = ClassLabel(names=names)
    held = origin.startswith("held out")
    kept = {"validation": materialize(validation, cap, fingerprint, "validation", (*inputs, label), held)}
    if test is not None:
        kept["test"] = materialize(test, cap, fingerprint, "test", (*inputs, label))
    for split in kept.values():
        refuse_label_lists(split.features[label], f"the label column {label!r}")
    kept = {name: as_class_label(split, label, target, name) for name, split in kept.items()}
    if config.max_train_samples is not None:
        train = train.take(config.max_train_samples)
        length = None if length is None else min(length, config.max_train_samples)
    info = StreamInfo(fingerprint, label_origin, length, scanned)
    return Splits(
        train,
        kept["validation"],
        names,
        inputs[0],
        label,
        source,
        kept.get("test"),
        origin,
        pair,
        stream=info,
    )


def pick_stream_splits(
    raw: IterableDatasetDict, label_hints: Sequence[str]
) -> tuple[IterableDataset, IterableDataset | None, IterableDataset | None]:
    """Train, a labelled validation split and a labelled test split, as ``loading.pick_splits`` chooses them (a
    split's first 100 labels tell a hidden-label test split)."""
    if "train" not in raw:
        if len(raw) == 1:
            return next(iter(raw.values())), None, None
        raise DataError(f"no 'train' split; the dataset has splits {list(raw)}")
    validation = next(
        (raw[n] for n in VALIDATION_NAMES if n in raw and _has_labels(raw[n], label_hints)), None
    )
    test = next((raw[n] for n in TEST_NAMES if n in raw and _has_labels(raw[n], label_hints)), None)
    return raw["train"], validation, test


def _has_labels(split: IterableDataset, label_columns: Sequence[str]) -> bool:
    column = next((c for c in label_columns if c in column_names(split)), None)
    if column is None:
        return False
    values = [row[column] for row in split.select_columns([column]).take(100)]
    return bool(values) and not all(v is None or (isinstance(v, int) and v < 0) for v in values)


def column_names(split: IterableDataset) -> list[str]:
    """The columns of a stream: from its features, else from its first example."""
    if split.features is not None:
        return list(split.features)
    first = next(iter(split.take(1)), None)
    return list(first) if first else []


class _Columns:
    """Just enough of a Dataset for ``loading.find_column``."""

    def __init__(self, names: list[str]):
        self.column_names = names


def stream_columns(
    train: IterableDataset, config: RunConfig, task: Task
) -> tuple[tuple[str, ...], str | None, str]:
    """The input column(s) (two for a sentence pair), the pair column and the label column."""
    columns = _Columns(column_names(train))
    if config.text_columns:
        if task.modality != "text":
            raise DataError("--text-columns reads a sentence pair: it is for text tasks")
        first, second = config.text_columns
        inputs = (
            find_column(columns, first, [first], "first text of the pair", "--text-columns"),
            find_column(columns, second, [second], "second text of the pair", "--text-columns"),
        )
        pair = inputs[1]
    else:
        what = f"{task.modality} input"
        inputs, pair = (
            (find_column(columns, config.input_column, task.input_columns, what, "--input-column"),),
            None,
        )
    label = find_column(columns, config.label_column, task.label_columns, "label", "--label-column")
    return inputs, pair, label


def held_out(example: dict[str, Any], columns: Sequence[str], fraction: float) -> bool:
    """Whether ``example`` belongs to the held-out validation: a hash of its input, so the answer never depends
    on the order it is read in, and identical inputs always fall on the same side."""
    digest = hashlib.blake2b(digest_size=8)
    for column in columns:
        digest.update(_content(example[column]))
    return int.from_bytes(digest.digest(), "little") < fraction * 2**64


def _content(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict):  # an image as datasets stores it: its bytes, else its file
        return value.get("bytes") or str(value.get("path")).encode("utf-8")
    return repr(value).encode("utf-8")


def refuse_label_lists(feature_or_value: Any, where: str) -> None:
    """Multi-label data (a label column of lists) is refused with --streaming, as ``config.check_streaming`` refuses
    --label-columns and --problem-type multi_label: one line, naming the flags."""
    from hftl.config import MULTI_LABEL_STREAM_MESSAGE

    if isinstance(feature_or_value, List | LargeList | list | tuple):
        raise ConfigError(f"{where} holds lists of labels; {MULTI_LABEL_STREAM_MESSAGE}")


def stream_labels(
    train: IterableDataset, column: str, feature: Any, config: RunConfig
) -> tuple[list[str], str, list[int] | None]:
    """The label names, where they came from, and (when read) the label ids of the scanned examples: the counts
    ``--class-weights auto`` needs. The stream is read only when neither ``--labels`` nor a ClassLabel names them,
    or for those counts, and then only ``--label-scan-examples`` far."""
    limit = config.label_scan_examples
    need_counts = config.class_weights == "auto"
    values = None
    if config.labels:
        names, origin = list(config.labels), "--labels"
    elif isinstance(feature, ClassLabel):
        names, origin = list(feature.names), f"the dataset's ClassLabel feature {column!r}"
    else:
        values = scan_labels(train, column, limit)
        names = sorted({v for v in values}, key=lambda v: (isinstance(v, str), v))
        names = [str(v) for v in names]
        check_label_spellings(names, values, column)
        origin = f"the first {len(values)} train examples (--label-scan-examples {limit})"
        if len(names) < 2:
            raise DataError(
                f"the first {len(values)} train examples have a single label ({names}): name every class with "
                "--labels a,b,... or raise --label-scan-examples"
            )
    if not need_counts:
        return names, origin, None
    values = values if values is not None else scan_labels(train, column, limit)
    encode = label_encoder(feature, names, origin)
    return names, origin, [encode(value, f"train stream example {row}") for row, value in enumerate(values)]


def scan_labels(train: IterableDataset, column: str, limit: int) -> list[Any]:
    """The label column of the first ``limit`` train examples (only that column is read and decoded)."""
    values = [row[column] for row in train.select_columns([column]).take(limit)]
    if not values:
        raise DataError("the train stream is empty")
    for row, value in enumerate(values):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"train stream example {row}: empty label in column {column!r}")
        refuse_label_lists(value, f"train stream example {row}: the label column {column!r}")
    if all(isinstance(value, str) for value in values):  # '["a", "b"]' in a CSV cell: named as in memory
        check_not_list_text(Dataset.from_dict({column: values}), column, "the train stream")
    return values


def label_encoder(feature: Any, names: list[str], origin: str) -> Callable[[Any, str], int]:
    """Raw label -> id in ``names``; a ClassLabel's ids are read by name. An unknown label names its example."""
    index = {name: i for i, name in enumerate(names)}
    source_names = list(feature.names) if isinstance(feature, ClassLabel) else None

    def encode(value: Any, where: str) -> int:
        refuse_label_lists(value, f"{where}: the label column")
        name = value
        if source_names is not None and isinstance(value, int):
            name = source_names[value] if 0 <= value < len(source_names) else None
        found = index.get(None if name is None else str(name))
        if found is None:
            raise DataError(
                f"{where}: label {value!r} is not in the label set {names} (from {origin}); name every class "
                "with --labels a,b,..."
            )
        return found

    return encode


def needs_max_steps(source: str) -> ConfigError:
    """The refusal of a stream whose length is unknown and no --max-steps."""
    return ConfigError(
        f"--streaming needs --max-steps N (optimizer steps): the train stream of {source} states no length, and "
        "counting it would read it through"
    )


def stated_length(train: IterableDataset) -> int | None:
    """The number of train examples the dataset's metadata states (Hub datasets), else None: counting would be a
    full pass."""
    splits = train.info.splits if train.info is not None else None
    name = str(train.split) if train.split is not None else "train"
    if splits and name in splits and splits[name].num_examples:
        return int(splits[name].num_examples)
    return None


def source_fingerprint(source: str, config: RunConfig) -> str:
    """What the stream reads and how it is cut: local files by name, size and times (``files_stamp``; not content:
    that would be a full pass), a Hub dataset by id and configuration; with the settings that choose its examples."""
    path = Path(source).expanduser()
    where: Any = [files_stamp(path)] if path.exists() else [source, config.dataset_config]
    settings = [config.validation_split, config.max_eval_samples, config.labels, config.input_column]
    settings += [config.label_column, config.text_columns, config.data_encoding, datasets.__version__]
    text = json.dumps([where, settings], default=str)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def materialize(
    stream: IterableDataset,
    cap: int,
    fingerprint: str,
    split: str,
    columns: Sequence[str],
    held: bool = False,
) -> Dataset:
    """The first ``cap`` examples of ``stream`` as an Arrow file in the datasets cache (memory-mapped, not in RAM),
    written once per source fingerprint: every evaluation, and every process, reads the same examples."""
    kept = stream.select_columns(list(dict.fromkeys(columns)))
    if next(iter(kept.take(1)), None) is None:
        raise DataError(
            f"the {split} split of the stream is empty"
            + (
                " (no train example's input hash fell in --validation-split): give a validation file"
                if held
                else ""
            )
        )
    dataset = Dataset.from_generator(
        _first_examples,
        gen_kwargs={"stream": kept, "cap": cap},
        features=kept.features,
        fingerprint=f"hftl-stream-{split}-{cap}-{fingerprint}",
        split=datasets.NamedSplit(split),
    )
    return dataset


def _first_examples(stream: IterableDataset, cap: int) -> Any:
    yield from stream.take(cap)
