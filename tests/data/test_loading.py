"""Loading datasets from folders and files into labelled train/validation splits, with clear errors."""

from __future__ import annotations

import json

import pytest
from datasets import ClassLabel, Dataset, DatasetDict

import hftl
from hftl.data.loading import load_splits
from hftl.tasks import get_task


def splits_of(source, task="text", **kwargs):
    t = get_task(task)
    return load_splits(
        source, modality=t.modality, input_columns=t.input_columns, label_columns=t.label_columns, **kwargs
    )


def test_image_folder_gives_label_names_from_folders(image_folder):
    splits = splits_of(str(image_folder), "image")
    assert splits.labels == ["blue", "green", "red"]
    assert (len(splits.train), len(splits.validation)) == (48, 18)
    assert isinstance(splits.train.features[splits.label_column], ClassLabel)


def test_csv_folder_splits_by_file_name_and_encodes_string_labels(text_folder):
    splits = splits_of(str(text_folder))
    assert splits.labels == ["negative", "positive"] and splits.input_column == "text"
    assert (len(splits.train), len(splits.validation)) == (64, 24)
    assert splits.validation.features["label"].names == splits.labels


def _write_rows(path, labels: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("text,label\n" + "".join(f"sentence {i},{label}\n" for i, label in enumerate(labels)))


def test_hidden_files_are_not_data_and_split_names_are_whole_words(tmp_path):
    """A stale Jupyter copy with flipped labels is not extra training data, and a file's split is a whole word of its
    name (or its folder's): 'constraints' is not train, 'latest' not test, 'dev_clean' and validation/ are
    validation."""
    good, flipped = ["pos", "neg"] * 10, ["neg", "pos"] * 10
    _write_rows(tmp_path / "train.csv", good)
    _write_rows(tmp_path / ".ipynb_checkpoints" / "train-checkpoint.csv", flipped)
    _write_rows(tmp_path / "__pycache__" / "train.csv", flipped)
    _write_rows(tmp_path / "constraints.csv", good[:4])
    _write_rows(tmp_path / "latest.csv", good[:6])
    _write_rows(tmp_path / "dev_clean.csv", good[:8])
    _write_rows(tmp_path / "validation" / "part-0.csv", good[:2])
    _write_rows(tmp_path / "test-2024.csv", good[:2])
    _write_rows(tmp_path / "TestData.csv", good[:2])
    _write_rows(tmp_path / "devset.csv", good[:2])
    _write_rows(tmp_path / "test(1).csv", good[:2])  # a browser's second download
    splits = splits_of(str(tmp_path))
    assert len(splits.train) == 20 + 4 + 6 and len(splits.validation) == 8 + 2 + 2
    assert len(splits.test) == 2 + 2 + 2


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_single_file_gets_a_stratified_seeded_validation_split(tmp_path, fmt):
    rows = [{"sentence": f"text {i}", "label": "a" if i % 4 else "b"} for i in range(80)]
    path = tmp_path / f"data.{fmt}"
    frame = Dataset.from_list(rows)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        path.write_text("sentence\tlabel\n" + "".join(f"{r['sentence']}\t{r['label']}\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        frame.to_parquet(path)
    first = splits_of(str(path), validation_split=0.25, seed=3)
    again = splits_of(str(path), validation_split=0.25, seed=3)
    assert len(first.validation) == 20 and first.validation["sentence"] == again.validation["sentence"]
    ratio = first.validation["label"].count(first.labels.index("b")) / len(first.validation)
    assert ratio == pytest.approx(0.25)  # stratified: the 1-in-4 class keeps its share


def test_integer_labels_get_names_and_test_split_with_hidden_labels_is_skipped():
    raw = DatasetDict(
        {
            "train": Dataset.from_dict({"text": ["a", "b", "c", "d"] * 5, "label": [0, 1, 0, 1] * 5}),
            "test": Dataset.from_dict({"text": ["x", "y"], "label": [-1, -1]}),
        }
    )
    splits = splits_of(raw, validation_split=0.5)
    assert splits.labels == ["0", "1"] and len(splits.validation) == 10


def test_missing_label_column_lists_the_columns():
    raw = Dataset.from_dict({"text": ["a", "b"], "stars": [1, 2]})
    with pytest.raises(
        hftl.DataError, match=r"no label column found .*columns \['text', 'stars'\].*--label-column"
    ):
        splits_of(raw)
    with pytest.raises(hftl.DataError, match=r"label column 'rating' not found; the dataset has columns"):
        splits_of(raw, label_column="rating")


def test_validation_label_outside_train_labels_names_the_row():
    raw = DatasetDict(
        {
            "train": Dataset.from_dict({"text": ["a", "b", "c"], "label": ["x", "y", "x"]}),
            "validation": Dataset.from_dict({"text": ["d", "e"], "label": ["x", "z"]}),
        }
    )
    with pytest.raises(
        hftl.DataError, match=r"validation row 1: label 'z' is not in the label set \['x', 'y'\]"
    ):
        splits_of(raw)


def test_single_class_is_refused():
    raw = Dataset.from_dict({"text": ["a"] * 10, "label": ["only"] * 10})
    with pytest.raises(hftl.DataError, match="single class"):
        splits_of(raw)


def test_missing_dataset_path_is_a_clear_error(tmp_path):
    with pytest.raises(hftl.DataError, match="dataset path does not exist"):
        splits_of(str(tmp_path / "nope" / "data.csv"))


def test_offline_hub_dataset_says_how_to_pass_local_data():
    with pytest.raises(hftl.DataError, match=r"could not load dataset .* Offline, pass a local"):
        splits_of("nobody/no-such-dataset-hftl")


@pytest.mark.parametrize(
    "labels, message",
    [
        (
            ["1", "1.0", "0", "0"],
            r"spell the same number differently: '1' \(train row 0\) and '1.0' \(train row 1\)",
        ),
        (["1", "positive", "0", "positive"], r"mix numbers and words: '0' \(train row 2\) and 'positive'"),
        (
            ["positive", "other", "positive ", "other"],
            r"differ only in spacing: 'positive' \(train row 0\) and 'positive ' \(train row 2\)",
        ),
    ],
)
def test_labels_that_would_split_or_mix_classes_are_refused(labels, message):
    raw = DatasetDict(
        {
            "train": Dataset.from_dict({"text": list("abcd") * 3, "label": labels * 3}),
            "validation": Dataset.from_dict({"text": ["e"], "label": [labels[-1]]}),
        }
    )
    with pytest.raises(hftl.DataError, match=message):
        splits_of(raw)


def test_a_class_with_no_training_examples_is_refused():
    names = ClassLabel(names=["cat", "dog", "fox"])  # as an image folder with fox/ only under validation/
    raw = DatasetDict(
        {
            "train": Dataset.from_dict({"text": ["a", "b"] * 4, "label": [0, 1] * 4}).cast_column(
                "label", names
            ),
            "validation": Dataset.from_dict({"text": ["c"], "label": [2]}).cast_column("label", names),
        }
    )
    with pytest.raises(hftl.DataError, match=r"class\(es\) \['fox'\] .* have no training examples"):
        splits_of(raw)


@pytest.mark.parametrize("content,what", [("", "is empty"), ("text,label\n", "has a header and no rows")])
def test_an_empty_or_header_only_csv_is_one_error_naming_the_file(tmp_path, content, what):
    from hftl.data.loading import splits_for
    from hftl.errors import DataError

    (tmp_path / "train.csv").write_text(content)
    config = hftl.RunConfig(task="text", case="small_similar", dataset=str(tmp_path))
    with pytest.raises(DataError, match=f"train.csv \\(train split\\) {what}; it needs a header"):
        splits_for(config, hftl.get_task("text"))


def test_labels_flag_sets_the_order_and_refuses_a_label_outside_it(text_folder):
    splits = splits_of(str(text_folder), labels=["positive", "negative"])
    assert splits.labels == ["positive", "negative"]
    assert splits.train.features["label"].names == ["positive", "negative"]
    assert splits.train[0]["label"] == (0 if splits_of(str(text_folder)).train[0]["label"] == 1 else 1)
    with pytest.raises(
        hftl.DataError, match=r"label 'positive' is not in the label set \['negative', 'neutral'\]"
    ):
        splits_of(str(text_folder), labels=["negative", "neutral"])


def test_words_pandas_would_call_missing_are_labels_and_texts(tmp_path):
    """Only an empty CSV field is missing: a class named None or NA, and a text that reads "nan", are data."""
    rows = [("nan", "None"), ("a fine day", "NA"), ("null and void", "None"), ("so so", "NA")] * 4
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    (tmp_path / "validation.csv").write_text("text,label\nNA,None\n")
    splits = splits_of(str(tmp_path))
    assert splits.labels == ["NA", "None"] and len(splits.train) == 16
    assert splits.train["text"][:3] == ["nan", "a fine day", "null and void"]
    assert splits.validation["text"] == ["NA"]


def test_a_malformed_csv_row_is_named_by_its_line(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\nfine,0\nnot, fine,1\n")
    with pytest.raises(hftl.DataError, match=r"train.csv.*Expected 2 fields in line 3, saw 3"):
        splits_of(str(tmp_path / "train.csv"))


@pytest.mark.parametrize("modality", ["text", "image"])
def test_a_folder_is_the_same_data_however_its_path_is_typed(
    modality, text_folder, image_folder, monkeypatch
):
    """datasets fingerprints the paths it is given (an image folder's as typed): a run resumed with ./data/ must see
    the fingerprint it had with data."""
    from hftl.data.loading import load_raw

    folder = text_folder if modality == "text" else image_folder
    monkeypatch.chdir(folder.parent)
    spellings = [str(folder), f"./{folder.name}/", folder.name]
    fingerprints = {load_raw(spelling, modality)["train"]._fingerprint for spelling in spellings}
    assert len(fingerprints) == 1


@pytest.mark.parametrize("stray", ["train/stray.png", "train/red/sub/deep.png"])
def test_an_image_folder_whose_layout_names_no_classes_names_the_files_that_break_it(
    image_folder, tmp_path, stray
):
    import shutil

    folder = shutil.copytree(image_folder, tmp_path / "images")
    (folder / stray).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(next((folder / "train" / "red").glob("*.png")), folder / stray)
    with pytest.raises(
        hftl.DataError, match=rf"SPLIT/LABEL/IMAGE .* 1 image\(s\) sit elsewhere: {stray}; move"
    ):
        splits_of(str(folder), "image")


def test_labels_that_differ_only_in_capitals_are_classes_with_a_warning():
    """Letters can be classes of their own ('a' and 'A'); a user who meant one class is told, not refused."""
    raw = DatasetDict(
        {
            "train": Dataset.from_dict({"text": list("abcd") * 3, "label": ["Bee", "ant", "bee", "ant"] * 3}),
            "validation": Dataset.from_dict({"text": ["e"], "label": ["bee"]}),
        }
    )
    with pytest.warns(
        UserWarning, match=r"differ only in capitals: 'Bee' \(train row 0\) and 'bee' \(train row 2\)"
    ):
        splits = splits_of(raw)
    assert splits.labels == ["Bee", "ant", "bee"]


def _rewrite_keeping_mtime(path, text: str) -> None:
    """An edit whose modification time is put back, as ``rsync -a``, ``tar x`` or ``touch -d`` leave one."""
    import os

    before = path.stat()
    path.write_text(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns


@pytest.mark.parametrize("layout", ["file", "folder", "saved"])
def test_an_edit_with_its_modification_time_put_back_is_read_not_the_old_build(tmp_path, layout):
    """datasets caches local files by path and modification time: the edit must reach the run, and the data
    fingerprints (feature cache and resume keys) must change with it."""
    from hftl.data.loading import load_raw

    folder = tmp_path / "data"
    folder.mkdir()
    data = folder / "train.csv"
    data.write_text("text,label\nold one,0\nold two,1\n")
    if layout == "saved":
        Dataset.from_dict({"text": ["old one", "old two"], "label": [0, 1]}).save_to_disk(folder / "saved")
        data = next((folder / "saved").glob("*.arrow"))
    source = str(data if layout == "file" else folder / "saved" if layout == "saved" else folder)
    first = load_raw(source, "text")["train"]
    first_rows = list(first["text"])  # read now: the Arrow file is memory-mapped
    if layout == "saved":  # the Arrow file rewritten in place, state.json (and its fingerprint) untouched
        replaced = tmp_path / "other"
        Dataset.from_dict({"text": ["new one", "new two"], "label": [0, 1]}).save_to_disk(replaced)
        import os

        before = data.stat()
        data.write_bytes(next(replaced.glob("*.arrow")).read_bytes())
        os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    else:
        _rewrite_keeping_mtime(data, "text,label\nnew one,0\nnew two,1\n")
    second = load_raw(source, "text")["train"]
    assert first_rows == ["old one", "old two"]
    assert list(second["text"]) == ["new one", "new two"]
    assert second._fingerprint != first._fingerprint
    assert load_raw(source, "text")["train"]._fingerprint == second._fingerprint  # unchanged data: same key


def test_a_stream_of_local_files_is_keyed_by_their_change_time_too(tmp_path):
    from hftl.config import RunConfig
    from hftl.data.stream_splits import source_fingerprint

    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "a", "label": 0}\n')
    config = RunConfig(task="text", case="large_similar", streaming=True, dataset=str(data), max_steps=1)
    first = source_fingerprint(str(data), config)
    assert source_fingerprint(str(data), config) == first
    _rewrite_keeping_mtime(data, '{"text": "b", "label": 0}\n')
    assert source_fingerprint(str(data), config) != first


def test_the_stamp_follows_data_not_what_datasets_or_tools_write_beside_it(tmp_path):
    """datasets writes cache-*.arrow beside a save_to_disk folder's files as it maps them, and a folder may be a git
    checkout: neither is data, so neither changes the key (a resume would be refused as another run's data)."""
    from hftl.data.folder_files import files_stamp
    from hftl.data.loading import load_raw

    saved = tmp_path / "saved"
    Dataset.from_dict({"text": ["a", "b", "c", "d"], "label": [0, 1, 0, 1]}).save_to_disk(saved)
    first = load_raw(str(saved), "text")["train"]
    first.map(lambda row: {"n": len(row["text"])}).filter(lambda row: row["label"] == 0)
    assert list(saved.glob("cache-*.arrow"))  # what the map and filter left beside the data
    assert load_raw(str(saved), "text")["train"]._fingerprint == first._fingerprint
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\na,0\nb,1\n")
    stamp = files_stamp(folder)
    (folder / ".git").mkdir()
    (folder / ".git" / "index").write_bytes(b"x")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "x.pyc").write_bytes(b"x")
    assert files_stamp(folder) == stamp
    (folder / "notes.csv").write_text("text,label\nc,0\n")  # another data file: other data
    assert files_stamp(folder) != stamp


def test_a_data_file_slip_is_named_with_what_to_do(tmp_path):
    """An empty label names its file and CSV line; a ';'-separated file is not answered with '--input-column';
    capitalised headers are found; a validation split too large, or a --max-train-samples that keeps one class,
    is one error naming the flag."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("text,label\ngood,pos\nbad,neg\nfine,\nnice,pos\n")
    with pytest.raises(
        hftl.DataError, match=r"train.csv: row 2 \(line 4\) has an empty label in column 'label'"
    ):
        splits_of(str(data))
    lines = tmp_path / "lines"
    lines.mkdir()
    (lines / "train.jsonl").write_text('{"text": "good", "label": "pos"}\n{"text": "bad", "label": ""}\n')
    with pytest.raises(hftl.DataError, match=r"train.jsonl: row 1 \(line 2\) has an empty label"):
        splits_of(str(lines))
    semicolons = tmp_path / "semi.csv"
    semicolons.write_text("text;label\ngood;pos\nbad;neg\n")
    with pytest.raises(hftl.DataError, match=r"looks separated by ';', not commas"):
        splits_of(str(semicolons))
    capitals = Dataset.from_dict({"Text": ["good", "bad"] * 5, "Label": ["pos", "neg"] * 5})
    assert splits_of(capitals).label_column == "Label"
    with pytest.raises(
        hftl.DataError, match=r"--validation-split 0.99: 10 training examples cannot give 99%"
    ):
        splits_of(capitals, validation_split=0.99)
    own = DatasetDict(train=capitals, validation=capitals.select(range(4)))  # its own validation, "Label" too
    assert splits_of(own).validation_origin == "validation"
    assert splits_of(own, validation_split=0.5).validation_origin == (
        "validation, the data's own (--validation-split 0.5 unused)"  # said in the run's Data line
    )
    with pytest.raises(
        hftl.DataError, match=r"--max-train-samples 1 keeps only \['(pos|neg)'\] of the 2 classes"
    ):
        splits_of(capitals, max_train_samples=1)
