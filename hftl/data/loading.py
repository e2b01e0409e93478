"""Loading a dataset (Hub id, image folder, CSV/JSON/Parquet files, save_to_disk folder) into train/validation
splits with integer labels and their names.

Everything goes through ``datasets`` so loading, caching and fingerprints are theirs; this module only decides
which builder to use, which split is which, which columns hold inputs and labels, and how labels are numbered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, IterableDatasetDict

from hftl.data.folder_files import (
    FILE_BUILDERS,
    check_folder_labels,
    data_files_in,
    files_stamp,
    fingerprint_with,
    split_files,
)
from hftl.data.labels import (
    as_class_label,
    as_label_lists,
    check_label_spellings,
    encode_multi_labels,
    is_multi_label,
    join_label_columns,
    joined_column,
    multi_label_names,
    stratified_holdout,
)
from hftl.data.local_files import load_files
from hftl.errors import DataError
from hftl.outputs.files import check_no_link_leaves
from hftl.settings.data import DEFAULT_VALIDATION_SPLIT
from hftl.sources.registry import looks_like_path

if TYPE_CHECKING:
    from hftl.config import RunConfig
    from hftl.tasks import Task

VALIDATION_NAMES = ("validation", "valid", "val", "dev", "eval")
TEST_NAMES = ("test",)
IMAGEFOLDER_METADATA = ("metadata.jsonl", "metadata.csv", "metadata.parquet")


@dataclass
class StreamInfo:
    """What a --streaming run knows of its train stream without reading it through (``hftl.data.stream_splits``)."""

    fingerprint: (
        str  # the source files (names, sizes, times) or Hub id, and how the stream is cut: for resume
    )
    label_origin: str  # where the label names came from, for the log
    known_length: int | None = None  # train examples, when the dataset's metadata states it
    scanned_labels: list[int] | None = (
        None  # label ids of the examples read for label names (--class-weights auto)
    )


@dataclass
class Splits:
    """Train, validation and (when the data has a labelled one) test data, labels encoded as ``ClassLabel`` in the
    column ``label_column``. Validation picks the best epoch; test is only ever scored, once, at the end."""

    train: Dataset
    validation: Dataset
    labels: list[str]
    input_column: str
    label_column: str
    source: str
    test: Dataset | None = None
    validation_origin: str = "validation"  # the split's name, or how it was held out of train
    pair_column: str | None = (
        None  # text: the second sentence of a pair (--text-columns), encoded with the first
    )
    multi_label: bool = False  # labels are lists of class ids (List(ClassLabel)): any number per example
    stream: StreamInfo | None = None  # --streaming: ``train`` is an IterableDataset with raw labels


def load_raw(
    source: str,
    modality: str,
    dataset_config: str | None = None,
    encoding: str = "utf-8",
    streaming: bool = False,
) -> DatasetDict | IterableDatasetDict:
    """Load ``source`` as a DatasetDict, choosing the builder from what is on disk, else the Hub; ``streaming``
    gives an IterableDatasetDict read as it is iterated (``load_dataset(..., streaming=True)``)."""
    path = Path(source).expanduser()
    stamp, named = "", {}
    if path.exists():
        # one spelling per folder (./data/, data, its absolute path): datasets fingerprints the paths it is given,
        # and a resumed run must see the same fingerprint however the folder was typed
        path = path.resolve()
        if path.is_dir():  # every file read is the folder's own, not one a link leads to
            check_no_link_leaves(path, DataError)
        # a stream builds no cache; its key is stream_splits.source_fingerprint's (the stamp)
        if not streaming:
            # datasets caches local files by path and modification time: naming the build by the files' stamp
            # (change times too) keeps an edit with its modification time put back from reading the old build
            stamp = files_stamp(path)
            named = {"name": f"hftl-{stamp}"}
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            loaded = datasets.load_from_disk(str(path))
            loaded = loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
            if streaming:  # memory-mapped already: read it in order, one shard per Arrow file
                return IterableDatasetDict(
                    {name: split.to_iterable_dataset() for name, split in loaded.items()}
                )
            for split in loaded.values():  # a fingerprint read from state.json says nothing of edits after it
                split._fingerprint = fingerprint_with(split._fingerprint, stamp)
            return loaded
        found = data_files_in(path)
        if modality == "image" and any(p.name in IMAGEFOLDER_METADATA for p in found):
            # datasets' ImageFolder layout with a metadata file per split: its columns (label lists too) are read
            return datasets.load_dataset("imagefolder", data_dir=str(path), streaming=streaming, **named)
        if found:
            return load_files(split_files(found, path), encoding, streaming, named)
        if modality == "image":
            loaded = datasets.load_dataset("imagefolder", data_dir=str(path), streaming=streaming, **named)
            check_folder_labels(loaded, path)
            return loaded
        raise DataError(f"{path}: no CSV/TSV/JSON/Parquet files in this folder")
    if path.is_file():
        if path.suffix.lower() not in FILE_BUILDERS:
            raise DataError(
                f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(FILE_BUILDERS)}"
            )
        return load_files({"train": [path]}, encoding, streaming, named)
    if looks_like_path(source) or Path(source).suffix.lower() in FILE_BUILDERS:
        raise DataError(f"dataset path does not exist: {source}")
    try:
        return datasets.load_dataset(source, dataset_config, streaming=streaming)
    except Exception as error:  # the Hub client raises many types when offline or the id is wrong
        raise DataError(
            f"could not load dataset {source!r} from the Hugging Face Hub ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). Offline, pass a local image folder or "
            "CSV/JSON/Parquet file with --dataset."
        ) from error


def find_column(
    dataset: Dataset, explicit: str | None, candidates: Sequence[str], what: str, flag: str
) -> str:
    """The column holding ``what``: the one the user named, else the first known name present."""
    columns = list(dataset.column_names)
    if explicit is not None:
        if explicit not in columns:
            raise DataError(f"{what} column {explicit!r} not found; the dataset has columns {columns}")
        return explicit
    for name in candidates:
        if name in columns:
            return name
    by_lower = {column.lower(): column for column in columns}
    for name in candidates:  # "Text", "Label": a header's capitals
        if name.lower() in by_lower:
            return by_lower[name.lower()]
    separators = [sep for sep in (";", "\t", "|") if len(columns) == 1 and sep in columns[0]]
    raise DataError(
        f"no {what} column found (looked for {list(candidates)}); the dataset has columns {columns}. "
        + (
            f"The file looks separated by {separators[0]!r}, not commas: save it with commas (or tabs, as .tsv)."
            if separators
            else f"Name it with {flag}."
        )
    )


def pick_splits(
    raw: DatasetDict, label_column_hint: Sequence[str]
) -> tuple[Dataset, tuple[str, Dataset] | None, Dataset | None]:
    """The train split, a labelled validation split (with its name) and a labelled test split, when the dataset
    has them. A ``test`` split is never taken as validation: the best epoch would be chosen on the data that reports
    it."""
    if "train" not in raw:
        if len(raw) == 1:
            return next(iter(raw.values())), None, None
        raise DataError(f"no 'train' split; the dataset has splits {list(raw)}")
    validation = next(
        (
            (name, raw[name])
            for name in VALIDATION_NAMES
            if name in raw and _has_labels(raw[name], label_column_hint)
        ),
        None,
    )
    test = next(
        (raw[name] for name in TEST_NAMES if name in raw and _has_labels(raw[name], label_column_hint)), None
    )
    return raw["train"], validation, test


def _has_labels(split: Dataset, label_columns: Sequence[str]) -> bool:
    """False for hidden-label test splits (GLUE marks them -1); label columns are found whatever their capitals,
    as ``find_column`` finds them in train."""
    wanted = {name.lower() for name in label_columns}
    column = next((c for c in split.column_names if c.lower() in wanted), None)
    if column is None or len(split) == 0:
        return False
    values = split[column][:100]
    return not all(v is None or (isinstance(v, int) and v < 0) for v in values)


def encode_labels(
    train: Dataset,
    validation: Dataset,
    column: str,
    given: Sequence[str] | None = None,
    place: RowPlace | str = "train",
) -> tuple[Dataset, Dataset, list[str]]:
    """Give both splits the same ``ClassLabel`` numbering; names are ``given`` (``--labels``), else come from the
    dataset when it has them (train's: ``as_class_label`` gives any further split the same numbering)."""
    feature = train.features[column]
    if given:
        names = list(given)
    elif isinstance(feature, ClassLabel):
        names = list(feature.names)
    else:
        values = train.unique(column)
        bad = [v for v in values if v is None or (isinstance(v, str) and not v.strip())]
        if bad:
            row = train[column].index(bad[0])
            # a file's line, where the split is one CSV (under its header) or JSON Lines file
            line = {".csv": row + 2, ".tsv": row + 2, ".jsonl": row + 1}.get(Path(str(place)).suffix.lower())
            raise DataError(
                f"{place}: row {row}{f' (line {line})' if line else ''} has an empty label in column {column!r}; "
                "give it its label or remove the row"
            )
        names = [str(v) for v in sorted(values, key=lambda v: (isinstance(v, str), v))]
        check_label_spellings(names, train[column], column)
    label_feature = ClassLabel(names=names)
    train = as_class_label(train, column, label_feature, "train")
    validation = as_class_label(validation, column, label_feature, "validation")
    if len(names) < 2:
        raise DataError(
            f"the label column {column!r} has a single class ({names}); classification needs two or more"
        )
    counts = Counter(train[column])
    unseen = [name for i, name in enumerate(names) if counts[i] == 0]
    if unseen:
        raise DataError(
            f"class(es) {unseen} of column {column!r} have no training examples (they appear only in another "
            "split, e.g. an image folder present only under validation/); add training examples or remove them"
        )
    return train, validation, names


def holdout(train: Dataset, column: str, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split a validation set off train, stratified by label when every class has enough examples."""
    try:
        parts = train.train_test_split(test_size=fraction, stratify_by_column=column, seed=seed)
    except ValueError:
        try:
            parts = train.train_test_split(test_size=fraction, seed=seed)
        except ValueError as error:
            raise DataError(
                f"--validation-split {fraction}: {len(train)} training examples cannot give {fraction:.0%} to "
                "validation and keep some to train on; use a smaller fraction, or give a validation split"
            ) from error
    return parts["train"], parts["test"]


def load_splits(
    source: str | DatasetDict | Dataset,
    *,
    modality: str,
    input_columns: Sequence[str],
    label_columns: Sequence[str],
    input_column: str | None = None,
    label_column: str | None = None,
    text_columns: Sequence[str] | None = None,
    flag_columns: Sequence[str] | None = None,
    problem_type: str = "auto",
    dataset_config: str | None = None,
    validation_split: float = DEFAULT_VALIDATION_SPLIT,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 42,
    encoding: str = "utf-8",
    labels: Sequence[str] | None = None,
) -> Splits:
    """Everything between ``--dataset`` and model-ready splits, except preprocessing. ``flag_columns``
    (``--label-columns``): one 0/1 column per label, joined into one column of label lists (multi-label)."""
    if isinstance(source, Dataset):
        raw, name = DatasetDict({"train": source}), "<in-memory Dataset>"
    elif isinstance(source, DatasetDict):
        raw, name = source, "<in-memory DatasetDict>"
    else:
        raw, name = load_raw(source, modality, dataset_config, encoding), source
    hints = [label_column] if label_column else list(flag_columns or label_columns)
    train, named_validation, test = pick_splits(raw, hints)
    validation = named_validation[1] if named_validation else None
    if len(train) == 0:
        raise DataError(f"{name}: the train split is empty")
    pair = None
    if text_columns:
        if modality != "text":
            raise DataError("--text-columns reads a sentence pair: it is for text tasks")
        first, second = text_columns
        image_or_text = find_column(train, first, [first], "first text of the pair", "--text-columns")
        pair = find_column(train, second, [second], "second text of the pair", "--text-columns")
    else:
        image_or_text = find_column(train, input_column, input_columns, f"{modality} input", "--input-column")
    if flag_columns:
        label = joined_column(train, flag_columns)
        train = join_label_columns(train, flag_columns, label, RowPlace(name, "train"))
        if validation is not None:
            validation = join_label_columns(
                validation, flag_columns, label, RowPlace(name, named_validation[0])
            )
        if test is not None:
            test = join_label_columns(test, flag_columns, label, RowPlace(name, "test"))
    else:
        label = find_column(train, label_column, label_columns, "label", "--label-column")
    multi = is_multi_label(train, label, problem_type, bool(flag_columns), RowPlace(name, "train"))
    if validation is None:
        if multi:
            target = ClassLabel(names=multi_label_names(train, label, RowPlace(name, "train"), labels))
            train = as_label_lists(train, label, target, RowPlace(name, "train"))
            train, validation = stratified_holdout(train, label, validation_split, seed)
            how = "stratified by each example's rarest label"
        else:
            if not isinstance(train.features[label], ClassLabel):
                train, _, _ = encode_labels(
                    train, train.select(range(1)), label, labels, RowPlace(name, "train")
                )
            train, validation = holdout(train, label, validation_split, seed)
            how = "stratified"
        origin = f"held out from train ({validation_split:.0%}, {how}, seed {seed})"
    else:
        origin = named_validation[0]
        if validation_split != DEFAULT_VALIDATION_SPLIT:  # given, and not needed: said in the run's Data line
            origin += f", the data's own (--validation-split {validation_split} unused)"
        find_column(validation, label, [label], "label", "--label-column")
        for column in (image_or_text, pair) if pair else (image_or_text,):
            find_column(validation, column, [column], f"{modality} input", "--input-column/--text-columns")
    if len(validation) == 0:
        raise DataError(f"{name}: the validation split is empty")
    if multi:
        places = (
            RowPlace(name, "train"),
            RowPlace(name, named_validation[0] if named_validation else "train"),
        )
        train, validation, names = encode_multi_labels(train, validation, label, *places, given=labels)
    else:
        train, validation, names = encode_labels(train, validation, label, labels, RowPlace(name, "train"))
    if test is not None:
        for column in (image_or_text, pair) if pair else (image_or_text,):
            find_column(test, column, [column], f"{modality} input", "--input-column/--text-columns")
        find_column(test, label, [label], "label", "--label-column")
        test = (
            as_label_lists(test, label, train.features[label].feature, RowPlace(name, "test"))
            if multi
            else as_class_label(test, label, train.features[label], "test")
        )
    if max_train_samples is not None and max_train_samples < len(train):
        train = train.shuffle(seed=seed).select(range(max_train_samples))
        kept = set(train[label]) if not multi else set(range(len(names)))
        if len(kept) < 2:
            raise DataError(
                f"--max-train-samples {max_train_samples} keeps only {[names[i] for i in sorted(kept)]} of the "
                f"{len(names)} classes: a classifier needs examples of two or more; give it more examples"
            )
    if max_eval_samples is not None and max_eval_samples < len(validation):
        validation = validation.shuffle(seed=seed).select(range(max_eval_samples))
    if test is not None and max_eval_samples is not None and max_eval_samples < len(test):
        test = test.shuffle(seed=seed).select(range(max_eval_samples))
    return Splits(train, validation, names, image_or_text, label, name, test, origin, pair, multi)


@dataclass(frozen=True)
class RowPlace:
    """Where a split's rows come from, for errors that name a row: its file when the split is one file. Worked out
    only when an error is written (``str``): a large image folder is not listed otherwise."""

    source: str
    split: str

    def __str__(self) -> str:
        path = Path(self.source).expanduser()
        if path.is_file():
            return str(path)
        if path.is_dir() and not (path / "dataset_dict.json").exists() and not (path / "state.json").exists():
            files = split_files(data_files_in(path), path)
            if len(files.get(self.split, [])) == 1:
                return str(files[self.split][0])
        return f"the {self.split} split of {self.source}"


def splits_for(config: RunConfig, task: Task, dataset: Dataset | DatasetDict | None = None) -> Splits:
    """The run's train/validation splits (``dataset`` in memory overrides ``config.dataset``)."""
    return load_splits(
        dataset if dataset is not None else config.dataset,
        modality=task.modality,
        input_columns=task.input_columns,
        label_columns=task.label_columns,
        input_column=config.input_column,
        label_column=config.label_column,
        text_columns=config.text_columns,
        flag_columns=config.label_columns,
        problem_type=config.problem_type,
        dataset_config=config.dataset_config,
        validation_split=config.validation_split,
        max_train_samples=config.max_train_samples,
        max_eval_samples=config.max_eval_samples,
        encoding=config.data_encoding,
        seed=config.seed,
        labels=config.labels,
    )
