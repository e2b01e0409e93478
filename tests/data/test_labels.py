"""Multi-label data: a column of lists (names, ids or the dataset's Sequence(ClassLabel)) and one 0/1 column per
label both load as label lists; --problem-type decides or refuses; bad rows are named by file and row."""

from __future__ import annotations

import json

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, List

import hftl
from hftl.config import RunConfig
from hftl.data.labels import multi_hot, rarest_label
from hftl.data.loading import load_splits
from hftl.tasks import get_task


def splits_of(source, task="text", **kwargs):
    t = get_task(task)
    return load_splits(
        source, modality=t.modality, input_columns=t.input_columns, label_columns=t.label_columns, **kwargs
    )


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


TRAIN = [
    {"text": "a", "labels": ["sport", "music"]},
    {"text": "b", "labels": []},
    {"text": "c", "labels": ["food"]},
    {"text": "d", "labels": ["music"]},
]


def test_a_list_column_is_multi_label_with_the_sorted_union_as_labels(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", TRAIN)
    write_jsonl(tmp_path / "validation.jsonl", [{"text": "e", "labels": ["food", "sport"]}, TRAIN[1]])
    splits = splits_of(str(tmp_path))
    assert splits.multi_label and splits.labels == ["food", "music", "sport"]
    assert splits.train.features["labels"] == List(ClassLabel(names=["food", "music", "sport"]))
    assert splits.train["labels"] == [[1, 2], [], [0], [1]]  # an empty list is a row with no label
    assert splits.validation["labels"] == [[0, 2], []]
    assert multi_hot(splits.validation["labels"], 3).tolist() == [[1, 0, 1], [0, 0, 0]]


def test_zero_one_columns_are_joined_in_the_given_order(tmp_path):
    rows = "text,sport,food,music\na,1,0,1\nb,0,0,0\nc,0,1,0\nd,true,false,1\n"
    (tmp_path / "train.csv").write_text(rows)
    (tmp_path / "validation.csv").write_text("text,sport,food,music\ne,0,1,1\n")
    config = RunConfig(task="text", case="small_similar", label_columns=["sport,food", "music"])
    splits = splits_of(str(tmp_path), flag_columns=config.label_columns)
    assert (
        splits.multi_label and splits.labels == ["sport", "food", "music"] and splits.label_column == "labels"
    )
    assert splits.train["labels"] == [[0, 2], [], [1], [0, 2]]
    assert splits.validation["labels"] == [[1, 2]]


def test_ids_and_sequence_class_label_features_keep_their_names():
    names = ClassLabel(names=["cat", "dog", "fox"])
    train = Dataset.from_dict({"text": list("abcd"), "labels": [[0, 2], [1], [], [2, 1]]})
    train = train.cast_column("labels", List(names))
    raw = DatasetDict({"train": train, "validation": train.select([0])})
    assert splits_of(raw).labels == ["cat", "dog", "fox"]
    ids = Dataset.from_dict({"text": list("abcdefghij"), "labels": [[0, 10], [2], [10]] * 3 + [[]]})
    splits = splits_of(ids, validation_split=0.3)
    assert splits.labels == ["0", "2", "10"]  # ids sorted as numbers
    assert "stratified by each example's rarest label" in splits.validation_origin


def test_problem_type_decides_or_refuses():
    lists = Dataset.from_dict({"text": list("abcd") * 3, "labels": [["x"], ["y"], ["x", "y"], []] * 3})
    with pytest.raises(hftl.DataError, match="holds lists of labels .* --problem-type multi_label"):
        splits_of(lists, problem_type="single_label")
    single = Dataset.from_dict({"text": list("abcd") * 3, "label": ["x", "y", "x", "z"] * 3})
    assert not splits_of(single).multi_label
    one_each = splits_of(single, problem_type="multi_label")  # one label per row, as a one-element list
    assert one_each.multi_label and one_each.labels == ["x", "y", "z"]
    with pytest.raises(hftl.ConfigError, match="either --label-column .* or --label-columns"):
        RunConfig(task="text", case="small_similar", label_column="label", label_columns=["a", "b"])
    with pytest.raises(hftl.ConfigError, match="cannot be --problem-type single_label"):
        RunConfig(task="text", case="small_similar", label_columns=["a", "b"], problem_type="single_label")


@pytest.mark.parametrize(
    "train, validation, message",
    [
        (
            TRAIN,
            [{"text": "e", "labels": ["sport", "chess"]}],
            r"validation.jsonl, row 0: label 'chess' is not",
        ),
        ([*TRAIN, {"text": "e", "labels": None}], TRAIN, r"train.jsonl, row 4: no labels .* write \[\]"),
        (
            [*TRAIN, {"text": "e", "labels": ["", "food"]}],
            TRAIN,
            r"train.jsonl, row 4: label '' .* not a label",
        ),
    ],
)
def test_a_bad_label_names_the_file_and_row(tmp_path, train, validation, message):
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "validation.jsonl", validation)
    with pytest.raises(hftl.DataError, match=message):
        splits_of(str(tmp_path))


def test_a_train_split_without_any_label_is_refused():
    with pytest.raises(hftl.DataError, match=r"train split .*: no row has a label in column 'labels'"):
        splits_of(
            Dataset.from_dict({"text": list("abc"), "labels": [[], [], []]}), problem_type="multi_label"
        )


def test_bad_zero_one_columns_and_lists_written_as_text_are_named(tmp_path):
    (tmp_path / "train.csv").write_text("text,sport,food\na,1,0\nb,2,1\n")
    (tmp_path / "validation.csv").write_text("text,sport,food\nc,0,1\n")
    with pytest.raises(hftl.DataError, match=r"train.csv, row 1: column 'sport' holds 2; .* 0/1"):
        splits_of(str(tmp_path), flag_columns=["sport", "food"])
    with pytest.raises(hftl.DataError, match=r"--label-columns \['music'\] not found"):
        splits_of(str(tmp_path), flag_columns=["sport", "music"])
    (tmp_path / "train.csv").write_text("text,sport,food\na,1,0\nb,0,0\n")
    with pytest.raises(hftl.DataError, match=r"label\(s\) \['food'\] have no training example"):
        splits_of(str(tmp_path), flag_columns=["sport", "food"])
    text = tmp_path / "text"
    text.mkdir()
    (text / "train.csv").write_text('text,label\na,"[""x"", ""y""]"\nb,"[""y""]"\n')
    with pytest.raises(
        hftl.DataError, match=r"row 0: label .* looks like a list written as text; .*--label-columns"
    ):
        splits_of(str(text))


def test_the_rarest_label_is_each_rows_stratum():
    rows = [[0, 1], [1], [1, 2], [], [0]]  # label 2 is the rarest, then 0
    assert rarest_label(rows, 3) == [0, 1, 2, 3, 0]


def test_labels_flag_names_the_multi_label_set_and_its_order(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", TRAIN)
    splits = splits_of(str(tmp_path), labels=["sport", "music", "food"])  # --labels, held-out validation too
    assert splits.multi_label and splits.labels == ["sport", "music", "food"]
    rows = [
        *zip(splits.train["text"], splits.train["labels"], strict=True),
        *zip(splits.validation["text"], splits.validation["labels"], strict=True),
    ]
    assert dict(rows) == {"a": [0, 1], "b": [], "c": [2], "d": [1]}
    with pytest.raises(
        hftl.DataError, match=r"label 'food' is not in the label set \['sport', 'music'\] .* --labels"
    ):
        splits_of(str(tmp_path), labels=["sport", "music"])
