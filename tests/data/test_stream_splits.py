"""The splits of a stream (--streaming): label names without a full pass, a validation split held out by hash and
kept on disk, and the run's length in steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import hftl
from hftl.config import RunConfig
from hftl.data.stream_inputs import steps_to_train
from hftl.data.stream_splits import stream_splits
from hftl.tasks import get_task


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def config(dataset: Path, task: str = "text", **values) -> RunConfig:
    values = {"max_steps": 5, **values}
    return RunConfig(task=task, case="large_similar", streaming=True, dataset=str(dataset), **values)


def splits_of(dataset: Path, task: str = "text", **values):
    return stream_splits(config(dataset, task, **values), get_task(task))


def test_labels_come_from_the_flag_a_class_label_or_a_bounded_scan_that_the_log_names(tmp_path, image_folder):
    rows = [{"text": f"text {i}", "label": ["b", "a"][i % 2]} for i in range(30)]
    data = write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    scanned = splits_of(data, label_scan_examples=10)
    assert scanned.labels == ["a", "b"] and scanned.stream.label_origin.startswith(
        "the first 10 train examples"
    )
    named = splits_of(data, labels=["b", "a"])
    assert named.labels == ["b", "a"] and named.stream.label_origin == "--labels"
    assert named.validation["label"][:2] == [1 - v for v in scanned.validation["label"][:2]]
    folders = splits_of(image_folder, "image")
    assert folders.labels == ["blue", "green", "red"] and "ClassLabel" in folders.stream.label_origin
    assert folders.stream.scanned_labels is None  # nothing was read for the names


def test_a_scan_with_a_single_label_or_an_empty_one_is_refused(tmp_path):
    rows = [{"text": f"text {i}", "label": "a" if i < 20 else "b"} for i in range(30)]
    data = write_jsonl(tmp_path / "one" / "train.jsonl", rows)
    with pytest.raises(hftl.DataError, match=r"single label \(\['a'\]\): name every class with --labels"):
        splits_of(data, label_scan_examples=10)
    rows[3]["label"] = " "
    data = write_jsonl(tmp_path / "empty" / "train.jsonl", rows)
    with pytest.raises(hftl.DataError, match=r"train stream example 3: empty label"):
        splits_of(data)


def test_class_weights_auto_counts_the_scanned_examples(tmp_path):
    rows = [{"text": f"text {i}", "label": "rare" if i % 5 == 0 else "common"} for i in range(50)]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    write_jsonl(tmp_path / "data" / "validation.jsonl", rows[:4])
    splits = splits_of(
        tmp_path / "data", class_weights="auto", label_scan_examples=20, labels=["common", "rare"]
    )
    assert splits.stream.scanned_labels == [1 if i % 5 == 0 else 0 for i in range(20)]


def test_validation_held_out_by_hash_never_meets_train_and_is_the_same_every_time(tmp_path):
    rows = [{"text": f"sentence number {i}", "label": "ab"[i % 2]} for i in range(400)]
    data = write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    first = splits_of(data, validation_split=0.25)
    validation = set(first.validation["text"])
    train = {row["text"] for row in first.train}
    assert validation.isdisjoint(train) and validation | train == {row["text"] for row in rows}
    assert 60 <= len(validation) <= 140  # about a quarter of 400
    reversed_rows = write_jsonl(tmp_path / "reversed" / "train.jsonl", rows[::-1])
    assert set(splits_of(reversed_rows, validation_split=0.25).validation["text"]) == validation
    assert first.validation_origin.startswith("held out from the train stream")
    capped = splits_of(data, validation_split=0.25, max_eval_samples=7)
    assert len(capped.validation) == 7


def test_a_named_validation_split_is_capped_written_once_and_its_labels_checked(tmp_path):
    folder = tmp_path / "data"
    write_jsonl(folder / "train.jsonl", [{"text": f"t {i}", "label": "ab"[i % 2]} for i in range(20)])
    write_jsonl(folder / "validation.jsonl", [{"text": f"v {i}", "label": "ab"[i % 2]} for i in range(12)])
    first = splits_of(folder, max_eval_samples=5)
    again = splits_of(folder, max_eval_samples=5)
    assert len(first.validation) == 5 and first.validation_origin == "validation"
    assert first.validation._fingerprint == again.validation._fingerprint
    assert first.validation.cache_files == again.validation.cache_files  # on disk, not in memory
    write_jsonl(folder / "validation.jsonl", [{"text": "v", "label": "c"}])
    with pytest.raises(
        hftl.DataError, match=r"validation row 0: label 'c' is not in the label set \['a', 'b'\]"
    ):
        splits_of(folder)


def test_steps_come_from_max_steps_or_a_stated_length_else_a_refusal_naming_the_flag(tmp_path):
    settings = config(tmp_path, max_steps=None, epochs=2, batch_size=8, gradient_accumulation_steps=2)
    with pytest.raises(hftl.ConfigError, match=r"--streaming needs --max-steps N .* states no length"):
        steps_to_train(settings, None, 1)
    # 100 examples over 2 processes: 50 each, 7 batches of 8, 4 optimizer steps per epoch
    assert steps_to_train(settings, 100, 2)[0] == 8
    assert steps_to_train(config(tmp_path, max_steps=30), 100, 2) == (30, "--max-steps 30")


def test_local_files_without_max_steps_or_a_held_out_validation_are_one_clear_error(tmp_path):
    data = write_jsonl(
        tmp_path / "data" / "train.jsonl", [{"text": "a b", "label": "x"}, {"text": "c", "label": "y"}]
    )
    with pytest.raises(hftl.ConfigError, match=r"--streaming needs --max-steps N .* states no length"):
        splits_of(data, max_steps=None)
    with pytest.raises(
        hftl.DataError, match=r"validation split of the stream is empty .* give a validation file"
    ):
        splits_of(data, validation_split=0.01)


def test_multi_label_data_in_a_stream_is_one_line_naming_the_flags(tmp_path):
    lists = [{"text": f"text {i}", "label": [["a"], ["a", "b"], []][i % 3]} for i in range(30)]
    message = (
        r"holds lists of labels; --streaming reads single-label data only: .* trains without --streaming$"
    )
    with pytest.raises(hftl.ConfigError, match=message):  # the label names read from the stream
        splits_of(write_jsonl(tmp_path / "scan" / "train.jsonl", lists))
    folder = tmp_path / "named"  # the names given: the kept validation split is where the lists show
    write_jsonl(folder / "train.jsonl", lists)
    write_jsonl(folder / "validation.jsonl", lists[:6])
    with pytest.raises(hftl.ConfigError, match=message):
        splits_of(folder, labels=["a", "b"])
    texts = tmp_path / "train.csv"  # a CSV cell cannot hold a list: named as in memory
    texts.write_text(
        "text,label\n" + "".join(f't {i},"[""a"", ""b""]"\n' for i in range(5)), encoding="utf-8"
    )
    with pytest.raises(
        hftl.DataError, match=r"the train stream, row 0: .* looks like a list written as text"
    ):
        splits_of(texts)
