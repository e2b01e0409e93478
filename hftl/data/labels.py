"""Label sets: the spelling check every label column gets, a split's single labels in a given numbering, and
multi-label data (a column of lists, or one 0/1 column per label) encoded as lists of class ids.

A multi-label split keeps its labels as ``List(ClassLabel(names))`` (ids, readable, what ``datasets`` itself uses
for such data, e.g. ``Sequence(ClassLabel)`` features on the Hub); preprocessing turns them into float multi-hot
vectors, the targets of BCE-with-logits. An empty list is a valid row: an example none of the labels applies to.
Every bad row is named by where it is (the file, when a split is one file: ``place``, written with ``str``) and its
row number (from 0).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, LargeList, List

from hftl.errors import DataError

# --label-columns: the list column they are joined into (another name if the data has a column of that name)
JOINED_COLUMN = "labels"


def check_label_spellings(
    names: Sequence[str], values: Sequence[Any], column: str, first_rows: dict[str, int] | None = None
) -> None:
    """Refuse labels that would silently split one class ('1' and '1.0'; 'positive' and 'positive ') or mix numbers
    with words ('1' and 'positive'): each name becomes its own class, and the model learns the wrong task. Labels that
    differ only in capitals ('Positive', 'positive') are warned about, not refused: letters ('a', 'A') can be
    classes of their own. ``first_rows`` names the row of each label (multi-label rows hold several); else it is
    found in ``values``."""

    def number(name: str) -> float | None:
        try:
            return float(name)
        except ValueError:
            return None

    numeric = {name: number(name) for name in names}
    by_value: dict[float, list[str]] = {}
    for name, value in numeric.items():
        if value is not None:
            by_value.setdefault(value, []).append(name)
    by_word: dict[str, list[str]] = {}
    by_letters: dict[str, list[str]] = {}
    for name, value in numeric.items():
        if value is None:
            spaced = " ".join(name.split())
            by_word.setdefault(spaced, []).append(name)
            by_letters.setdefault(spaced.casefold(), []).append(name)
    same = next((group for group in by_value.values() if len(group) > 1), None)
    same_word = next((group for group in by_word.values() if len(group) > 1), None)
    words = [name for name, value in numeric.items() if value is None]

    def rows_of(clash: list[str]) -> list[int]:
        return [
            first_rows[name] if first_rows else next(i for i, v in enumerate(values) if str(v) == name)
            for name in clash
        ]

    cased = next((group for group in by_letters.values() if len(group) > 1), None)
    if same is None and same_word is None and cased is not None:
        rows = rows_of(cased)
        warnings.warn(
            f"labels in column {column!r} differ only in capitals: {cased[0]!r} (train row {rows[0]}) and "
            f"{cased[1]!r} (train row {rows[1]}) are separate classes; if they are one, write them the same way",
            stacklevel=2,
        )
    if same is None and same_word is None and (not words or len(words) == len(names)):
        return
    if same is not None:
        clash, what = same, "spell the same number differently"
    elif same_word is not None:
        clash, what = same_word, "differ only in spacing"
    else:
        clash, what = [next(n for n in names if numeric[n] is not None), words[0]], "mix numbers and words"
    rows = rows_of(clash)
    raise DataError(
        f"labels in column {column!r} {what}: {clash[0]!r} (train row {rows[0]}) and {clash[1]!r} (train row "
        f"{rows[1]}) would become separate classes; write every label the same way"
    )


# --- one label per example ---------------------------------------------------------------------------------------
def as_class_label(split: Dataset, column: str, target: ClassLabel, split_name: str) -> Dataset:
    """``split`` with ``column`` as ``target`` (single-label): a ``ClassLabel`` of other names is renumbered by name,
    raw values by their text; a label outside ``target`` is named with its row."""
    feature = split.features[column]
    if isinstance(feature, ClassLabel):
        if feature.names == target.names:
            values = split[column]
            for row, value in enumerate(values):
                if not 0 <= value < target.num_classes:
                    raise DataError(
                        f"{split_name} row {row}: label {value} is outside the label set {target.names}"
                    )
            return split
        remap = {i: name for i, name in enumerate(feature.names)}
        values = [remap.get(v) for v in split[column]]
    else:
        values = [None if v is None else str(v) for v in split[column]]
    index = {name: i for i, name in enumerate(target.names)}
    for row, value in enumerate(values):
        if value not in index:
            raise DataError(
                f"{split_name} row {row}: label {value!r} is not in the label set {target.names} "
                "(labels are taken from the train split, or --labels)"
            )
    encoded = split.remove_columns(column).add_column(column, [index[v] for v in values])
    return encoded.cast_column(column, target)


# --- is it multi-label? ------------------------------------------------------------------------------------------
def holds_lists(split: Dataset, column: str) -> bool:
    return isinstance(split.features[column], List | LargeList)


def is_multi_label(
    split: Dataset, column: str, problem_type: str, joined: bool, place: object = "train"
) -> bool:
    """``--problem-type auto``: multi-label when the labels are lists (or 0/1 columns were joined into lists)."""
    lists = joined or holds_lists(split, column)
    if problem_type == "single_label" and lists:
        raise DataError(
            f"the label column {column!r} holds lists of labels (a multi-label task); use --problem-type "
            "multi_label (or auto), or give one label per row"
        )
    if not lists:
        check_not_list_text(split, column, place)
    return lists or problem_type == "multi_label"


def check_not_list_text(split: Dataset, column: str, place: object = "train") -> None:
    """A CSV cell cannot hold a list: '["a", "b"]' would silently become a class of its own."""
    if getattr(split.features[column], "dtype", None) not in ("string", "large_string"):
        return
    for row, value in enumerate(split[column]):
        if isinstance(value, str) and value.strip().startswith("[") and value.strip().endswith("]"):
            raise DataError(
                f"{place}, row {row}: label {value!r} in column {column!r} looks like a list written as text; CSV "
                "cells cannot hold lists: give one 0/1 column per label (--label-columns a,b,c) or use JSON lines "
                "or Parquet, whose list columns are read as multi-label"
            )


# --- 0/1 columns ------------------------------------------------------------------------------------------------
def joined_column(split: Dataset, columns: Sequence[str]) -> str:
    """The name the joined label lists get: ``labels``, unless the data has a column of that name."""
    taken = set(split.column_names) | set(columns)
    return next(n for n in (JOINED_COLUMN, "hftl_labels", "hftl_label_lists") if n not in taken)


def as_flag(value: Any) -> bool | None:
    """0/1, 0.0/1.0, true/false (any case), or None for anything else (a missing value included)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
        return value.strip().lower() in ("1", "true")
    return None


def join_label_columns(split: Dataset, columns: Sequence[str], target: str, place: object) -> Dataset:
    """One list column ``target`` holding, per row, the ``columns`` that are 1 (an empty list when none is), as
    ``List(ClassLabel)`` named by the columns in their order; a missing column, or a value other than 0/1 or
    true/false, is named with its row."""
    missing = [c for c in columns if c not in split.column_names]
    if missing:
        raise DataError(
            f"{place}: --label-columns {missing} not found; the data has columns {list(split.column_names)}"
        )
    lists: list[list[int]] = [[] for _ in range(len(split))]
    for index, column in enumerate(columns):
        for row, value in enumerate(split[column]):
            flag = as_flag(value)
            if flag is None:
                raise DataError(
                    f"{place}, row {row}: column {column!r} holds {value!r}; --label-columns reads one 0/1 (or "
                    "true/false) column per label"
                )
            if flag:
                lists[row].append(index)
    return split.add_column(target, lists, feature=List(ClassLabel(names=list(columns))))


# --- label lists -> class ids --------------------------------------------------------------------------------------
def label_lists(split: Dataset, column: str, place: object) -> tuple[list[list[Any]], ClassLabel | None]:
    """Each row's labels as a list (a single label becomes a one-element list), and the ``ClassLabel`` naming them
    when the data has one; a missing value or a nested one is named with its row."""
    feature = split.features[column]
    inner = feature.feature if isinstance(feature, List | LargeList) else feature
    rows = []
    for row, value in enumerate(split[column]):
        if value is None:
            raise DataError(
                f"{place}, row {row}: no labels in column {column!r} (a missing value); write [] for an example "
                "none of the labels applies to"
            )
        items = list(value) if isinstance(value, list | tuple) else [value]
        for item in items:
            if (
                item is None
                or isinstance(item, list | tuple | dict)
                or (isinstance(item, str) and not item.strip())
            ):
                raise DataError(
                    f"{place}, row {row}: label {item!r} in column {column!r} is not a label name or id; a row "
                    "holds a list of names or ids (or [] for none)"
                )
        rows.append(items)
    return rows, inner if isinstance(inner, ClassLabel) else None


def multi_label_names(
    train: Dataset, column: str, place: object, given: Sequence[str] | None = None
) -> list[str]:
    """The label names: ``given`` (``--labels``), else the dataset's own (``Sequence(ClassLabel)``), else the sorted
    union of train's labels."""
    rows, named = label_lists(train, column, place)
    if given:
        names = list(given)
    elif named is not None:
        names = list(named.names)
    else:
        values = {item for items in rows for item in items}
        ordered = sorted(values, key=lambda v: (isinstance(v, str), v))
        names = [str(v) for v in ordered]
        first_rows: dict[str, int] = {}
        for row, items in enumerate(rows):
            for item in items:
                first_rows.setdefault(str(item), row)
        check_label_spellings(names, [], column, first_rows)
    if not names:
        raise DataError(
            f"{place}: no row has a label in column {column!r} (every list is empty); a multi-label task needs "
            "examples of its labels"
        )
    return names


def as_label_lists(split: Dataset, column: str, target: ClassLabel, place: object) -> Dataset:
    """``split`` with ``column`` as ``List(ClassLabel)`` in ``target``'s numbering; a label outside it is named."""
    rows, named = label_lists(split, column, place)
    index = {name: i for i, name in enumerate(target.names)}
    encoded = []
    for row, items in enumerate(rows):
        names = [named.int2str(int(item)) if named is not None else str(item) for item in items]
        unknown = [name for name in names if name not in index]
        if unknown:
            raise DataError(
                f"{place}, row {row}: label {unknown[0]!r} is not in the label set {target.names} (labels are "
                "taken from the train split, or --labels)"
            )
        encoded.append(sorted({index[name] for name in names}))
    return split.remove_columns(column).add_column(column, encoded, feature=List(target))


def encode_multi_labels(
    train: Dataset,
    validation: Dataset,
    column: str,
    train_place: object,
    validation_place: object,
    given: Sequence[str] | None = None,
) -> tuple[Dataset, Dataset, list[str]]:
    """Both splits' label lists as ``List(ClassLabel)`` in train's label set (``given``, else the dataset's own
    names, else the sorted union of train's labels); every label needs a training example."""
    names = multi_label_names(train, column, train_place, given)
    target = ClassLabel(names=names)
    train = as_label_lists(train, column, target, train_place)
    validation = as_label_lists(validation, column, target, validation_place)
    check_every_label_trained(train, column, names)
    return train, validation, names


def check_every_label_trained(train: Dataset, column: str, names: Sequence[str]) -> None:
    """A label no training example has cannot be learnt (the single-label rule, per label)."""
    counts = Counter(i for items in train[column] for i in items)
    unseen = [name for i, name in enumerate(names) if counts[i] == 0]
    if unseen:
        raise DataError(
            f"label(s) {unseen} have no training example (no train row in column {column!r} has them); add "
            "training examples or remove them from the label set"
        )


# --- what training and sampling use ------------------------------------------------------------------------------
def multi_hot(rows: Sequence[Sequence[int]], count: int) -> np.ndarray:
    """[rows, labels] float32 0/1 targets: what BCE-with-logits reads."""
    targets = np.zeros((len(rows), count), dtype=np.float32)
    for i, ids in enumerate(rows):
        targets[i, list(ids)] = 1.0
    return targets


def rarest_label(rows: Sequence[Sequence[int]], count: int) -> list[int]:
    """A stratum per row for multi-label data: its rarest label (``count`` for a row with none). Sampling each
    stratum in proportion keeps every label represented, where a stratum per label set would splinter."""
    frequency = Counter(i for ids in rows for i in ids)
    return [min(ids, key=lambda i: (frequency[i], i)) if len(ids) else count for ids in rows]


def stratified_holdout(train: Dataset, column: str, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A validation split held out of multi-label train, stratified by each row's rarest label (seeded); plain
    seeded when a stratum is too small to split."""
    count = train.features[column].feature.num_classes
    strata = rarest_label(train[column], count)
    name = next(n for n in ("stratum", "hftl_stratum") if n not in train.column_names)
    keyed = train.add_column(name, strata, feature=ClassLabel(num_classes=count + 1))
    try:
        parts = keyed.train_test_split(test_size=fraction, stratify_by_column=name, seed=seed)
    except ValueError:
        parts = keyed.train_test_split(test_size=fraction, seed=seed)
    return parts["train"].remove_columns(name), parts["test"].remove_columns(name)
