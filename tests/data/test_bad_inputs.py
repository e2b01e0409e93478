"""A folder with every kind of bad input: each is converted, or skipped and counted, or stops the run with a
message that names the file/row and what to do."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from PIL import Image

import hftl
from hftl.data.bad_inputs import BadInput, decode_image
from tests.conftest import write_image_folder
from tests.helpers import quick_train

# file name -> expected outcome: "ok" (converted to RGB and kept) or a phrase of the skip reason
BAD_IMAGES = {
    "zero.png": "empty file (0 bytes)",
    "truncated.jpg": "unreadable or truncated",
    "not_an_image.jpg": "not an image file",
    "bomb.png": "decompression-bomb limit",
    "cmyk.jpg": "ok",
    "rgba.png": "ok",
    "gray.png": "ok",
    "gray16.png": "ok",
    "palette_transparent.png": "ok",
    "huge.jpg": "ok",
}


def write_bad_images(folder) -> None:
    rng = np.random.default_rng(0)
    red = np.clip(np.array([200, 40, 40]) + rng.normal(0, 20, (48, 48, 3)), 0, 255).astype(np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(red).save(jpeg, format="JPEG")
    (folder / "zero.png").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (folder / "not_an_image.jpg").write_text("this is a text file, not a JPEG\n")
    Image.new("1", (13000, 14000)).save(folder / "bomb.png")  # 182M pixels: over PIL's 179M-pixel error limit
    Image.fromarray(red).convert("CMYK").save(folder / "cmyk.jpg")
    rgba = Image.fromarray(red).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba.png")
    Image.fromarray(red).convert("L").save(folder / "gray.png")
    Image.fromarray(np.asarray(Image.fromarray(red).convert("L"), dtype=np.uint16) * 256).save(
        folder / "gray16.png"
    )
    palette = Image.fromarray(red).convert("P")
    palette.info["transparency"] = 0
    palette.save(folder / "palette_transparent.png", transparency=0)
    Image.fromarray(red).resize((4000, 3000)).save(folder / "huge.jpg", quality=70)


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory):
    root = write_image_folder(tmp_path_factory.mktemp("messy"), per_class=(8, 4))
    write_bad_images(root / "train" / "red")
    return root


@pytest.mark.parametrize("name, expected", BAD_IMAGES.items())
def test_each_bad_image_is_converted_or_refused_with_its_reason(messy_folder, name, expected):
    path = messy_folder / "train" / "red" / name
    raw = {"bytes": None, "path": str(path)}
    if expected == "ok":
        image = decode_image(raw, target_size=64)
        assert image.mode == "RGB" and min(image.size) > 0
    else:
        with pytest.raises(BadInput, match=re.escape(expected)):
            decode_image(raw)


def test_run_skips_and_reports_unreadable_images_and_keeps_converted_ones(messy_folder, vit_dir, tmp_path):
    result = quick_train(
        "image", "small_similar", vit_dir, messy_folder, tmp_path, epochs=1, max_bad_fraction=0.2
    )
    report = result.metrics["skipped_examples"]["train"]
    assert report["examples"] == 24 + len(BAD_IMAGES) and report["skipped"] == 4
    assert result.metrics["train_examples"] == 24 + 6  # the six convertible images are kept
    listed = " ".join(report["first"])
    for name, expected in BAD_IMAGES.items():
        if expected != "ok":
            assert name in listed and expected in listed
    assert json.loads((tmp_path / "metrics.json").read_text())["skipped_examples"]["train"]["skipped"] == 4


def test_too_many_bad_images_stop_the_run_with_the_files_named(messy_folder, vit_dir, tmp_path):
    with pytest.raises(
        hftl.DataError, match=r"4 of 34 train examples .* above --max-bad-fraction 0.05: .*zero.png"
    ):
        quick_train("image", "small_similar", vit_dir, messy_folder, tmp_path, epochs=1)


def test_empty_and_whitespace_texts_are_skipped_and_counted(bert_dir, text_folder, tmp_path):
    with open(text_folder / "train.csv", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    rows[3][0], rows[7][0] = "", "   \t "
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "train.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    (data / "validation.csv").write_text((text_folder / "validation.csv").read_text(encoding="utf-8"))
    result = quick_train("text", "small_similar", bert_dir, data, tmp_path / "out", epochs=1)
    report = result.metrics["skipped_examples"]["train"]
    assert report["skipped"] == 2 and report["reasons"] == {"missing text": 1, "empty text": 1}
    assert result.metrics["train_examples"] == 62


def test_non_utf8_file_names_the_file_line_and_the_fix(tmp_path, bert_dir):
    data = tmp_path / "latin"
    data.mkdir()
    (data / "train.csv").write_bytes(
        "text,label\ngood film,positive\ncafé crème,negative\n".encode("latin-1")
    )
    with pytest.raises(hftl.DataError, match=r"train.csv: line 3 is not valid utf-8 .*--data-encoding"):
        quick_train("text", "small_similar", bert_dir, data, tmp_path / "out", epochs=1)


@pytest.mark.parametrize("block", [1, 2, 3, 7, 1 << 20])
def test_the_undecodable_byte_is_found_the_same_in_pieces_of_any_size(block, tmp_path):
    """The check reads a file piece by piece (constant memory on a huge file): a character cut between two pieces
    is no error, and the bad byte's line and offset are those of the whole file; so is a character cut by the end."""
    from hftl.data.local_files import _first_undecodable

    good = "naïve café ✓\n" * 3
    path = tmp_path / "train.csv"
    path.write_bytes(good.encode() + b"caf\xe9 cr\xe8me\n")
    offset = len(good.encode()) + 3
    assert _first_undecodable([path], "utf-8", block) == (
        f"{path}: line 4 is not valid utf-8 (byte 0xe9 at offset {offset})"
    )
    path.write_bytes(good.encode())
    assert _first_undecodable([path], "utf-8", block) is None
    path.write_bytes(good.encode() + "✓".encode()[:2])  # cut short in the middle of a character
    assert _first_undecodable([path], "utf-8", block) == (
        f"{path}: line 4 is not valid utf-8 (byte 0xe2 at offset {len(good.encode())})"
    )
    path.write_bytes(b"text,label\n\xd6\xd0,a\nx,b\xfc6\n")  # gb18030 holds back '\xfc6\n', a newline in it
    assert (
        _first_undecodable([path], "gb18030", block)
        == f"{path}: line 3 is not valid gb18030 (byte 0xfc at offset 19)"
    )


def test_data_encoding_reads_latin1(tmp_path):
    from hftl.data.loading import load_raw

    path = tmp_path / "train.csv"
    path.write_bytes("text,label\ncafé crème,a\n".encode("latin-1"))
    assert load_raw(str(path), "text", encoding="latin-1")["train"][0]["text"] == "café crème"


def test_empty_validation_split_is_refused(tmp_path, bert_dir, text_folder):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text((text_folder / "train.csv").read_text(encoding="utf-8"))
    (data / "validation.csv").write_text("text,label\n")
    with pytest.raises(hftl.DataError, match="no 'train' split|validation split is empty|empty"):
        quick_train("text", "small_similar", bert_dir, data, tmp_path / "out", epochs=1)


def test_train_label_outside_the_class_label_set_names_the_row(tmp_path, bert_dir):
    from datasets import ClassLabel, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    train = Dataset.from_dict({"text": ["good", "bad", "ok"], "label": [1, 0, -1]}, features=features)
    with pytest.raises(
        hftl.DataError, match=r"(train|validation) row \d+: label -1 is outside the label set"
    ):
        hftl.train(
            task="text",
            case="small_similar",
            model=str(bert_dir),
            dataset=DatasetDict({"train": train}),
            output_dir=str(tmp_path / "out"),
        )
