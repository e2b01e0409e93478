"""Huge images are decoded within ``--max-image-pixels``: what memory holds depends on the cap, not on the file
(JPEGs are reduced by the decoder itself), in training, prediction and embedding alike; files over PIL's
decompression-bomb limit are one error naming the file."""

from __future__ import annotations

import pytest
from PIL import Image, ImageFile

import hftl
from hftl.data.bad_inputs import decode_image

CAP = 250_000  # 500 x 500: low enough that a 2000 x 2000 image must shrink 16 times


def write_large(path, size: tuple[int, int]) -> str:
    """A smooth picture (quick to encode and decode at any size) of ``size`` pixels."""
    gradient = Image.linear_gradient("L").resize(size)
    Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_90).resize(size), gradient)).save(
        path
    )
    return str(path)


@pytest.fixture
def decoded_sizes(monkeypatch):
    """The size of every image at the moment PIL decodes it (after any reduced-size request to the decoder)."""
    sizes: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def recording_load(self):
        if self.tile:  # not decoded yet: this call decodes it at self.size
            sizes.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    return sizes


def pixels(size: tuple[int, int]) -> int:
    return size[0] * size[1]


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_decoded_size_is_capped_and_does_not_grow_with_the_source(tmp_path, suffix, decoded_sizes):
    for side in (2000, 4000):  # 4 and 16 million pixels in the file: both come out within the cap
        path = write_large(tmp_path / f"big{side}.{suffix}", (side, side))
        image = decode_image({"bytes": None, "path": path}, target_size=64, max_pixels=CAP)
        assert image.mode == "RGB" and CAP / 5 <= pixels(image.size) <= CAP
    if suffix == "jpg":  # the decoder itself worked at reduced size: the full picture never existed
        assert len(decoded_sizes) == 2 and all(pixels(size) <= CAP for size in decoded_sizes)


def test_aspect_ratio_is_kept_and_small_images_are_untouched(tmp_path):
    wide = decode_image(
        {"bytes": None, "path": write_large(tmp_path / "wide.png", (3000, 1000))}, max_pixels=CAP
    )
    assert pixels(wide.size) <= CAP and abs(wide.width / wide.height - 3.0) < 0.02
    small = decode_image(
        {"bytes": None, "path": write_large(tmp_path / "small.png", (300, 200))}, max_pixels=CAP
    )
    assert small.size == (300, 200)


def test_training_inputs_are_decoded_within_the_flag(tmp_path, vit_dir, monkeypatch):
    from transformers import AutoImageProcessor

    import hftl.data.preprocess
    from hftl.data.loading import load_splits
    from hftl.data.preprocess import prepare_inputs

    for split in ("train", "validation"):
        for label in ("dark", "light"):
            folder = tmp_path / "data" / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                write_large(folder / f"{label}{i}.png", (2000, 1600))
    seen = []
    original = hftl.data.preprocess.decode_image

    def recording_decode(raw, **options):
        image = original(raw, **options)
        seen.append(image.size)
        return image

    monkeypatch.setattr(hftl.data.preprocess, "decode_image", recording_decode)
    splits = load_splits(
        str(tmp_path / "data"), modality="image", input_columns=["image"], label_columns=["label"]
    )
    inputs = prepare_inputs(
        splits, "image", AutoImageProcessor.from_pretrained(vit_dir), max_image_pixels=CAP
    )
    assert len(inputs.train) == 4 and len(seen) == 8
    assert all(pixels(size) <= CAP for size in seen)


def test_max_image_pixels_must_be_positive():
    with pytest.raises(hftl.ConfigError, match="max_image_pixels must be a positive integer"):
        hftl.RunConfig(task="image", case="small_similar", max_image_pixels=0)


def test_prediction_and_embedding_decode_within_the_cap(tmp_path, vit_dir, decoded_sizes):
    from hftl.inference.predict import as_image

    png = write_large(tmp_path / "big.png", (2000, 2000))
    jpg = write_large(tmp_path / "big.jpg", (2000, 2000))
    assert all(pixels(as_image(path, CAP).size) <= CAP for path in (png, jpg))
    assert pixels(decoded_sizes[-1]) <= CAP  # the JPEG was decoded at reduced size
    assert hftl.predict(vit_dir, png, max_image_pixels=CAP)["label"]
    assert hftl.embed(vit_dir, [png, jpg], max_image_pixels=CAP).shape[0] == 2


def test_a_file_over_the_bomb_limit_is_one_line_naming_it(tmp_path, vit_dir, capsys):
    from hftl.cli import main

    bomb = tmp_path / "bomb.png"
    Image.new("1", (13000, 14000)).save(bomb)  # 182M pixels: over PIL's 179M-pixel error limit
    with pytest.raises(hftl.DataError, match=r"bomb\.png: over PIL's decompression-bomb limit"):
        hftl.predict(vit_dir, str(bomb))
    assert main(["predict", str(vit_dir), str(bomb)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("hftl: error:")]
    assert len(errors) == 1 and "bomb.png" in errors[0] and "Traceback" not in err


def test_a_processor_config_that_would_blow_up_every_image_is_refused_before_resizing(
    tmp_path, vit_dir, image_folder
):
    """preprocessor_config.json is an untrusted file: a size of 100,000 px a side would allocate 30 GB per image."""
    from tests.helpers import copy_with_json, quick_train

    huge = {"height": 100_000, "width": 100_000}
    model = copy_with_json(vit_dir, tmp_path / "model", "preprocessor_config.json", size=huge)
    with pytest.raises(hftl.DataError, match=r"resizes to \{'height': 100000, 'width': 100000\} \(size in"):
        quick_train("image", "small_similar", model, image_folder, tmp_path / "o")


def test_raising_max_image_pixels_raises_the_processor_bound_with_it():
    """A model that really reads 5,000 px images needs --max-image-pixels raised; the refusal says so, and the
    raised limit then lets the processor through."""
    from types import SimpleNamespace

    from hftl.data.bad_inputs import MAX_PROCESSOR_PIXELS, check_processor_size

    processor = SimpleNamespace(size={"height": 5000, "width": 5000})
    assert MAX_PROCESSOR_PIXELS < 5000 * 5000
    with pytest.raises(hftl.DataError, match=r"25,000,000 pixels per image.*raise --max-image-pixels"):
        check_processor_size(processor)
    check_processor_size(processor, max_image_pixels=5000 * 5000)
    with pytest.raises(hftl.DataError, match="more than 24,999,999"):
        check_processor_size(processor, max_image_pixels=5000 * 5000 - 1)
    # transformers' SizeDict and a bare side length are read the same way
    from transformers.image_utils import SizeDict

    for size in (SizeDict(height=5000, width=5000), 5000):
        with pytest.raises(hftl.DataError, match="25,000,000 pixels per image"):
            check_processor_size(SimpleNamespace(size=size))
        check_processor_size(SimpleNamespace(size=size), max_image_pixels=5000 * 5000)


def test_every_image_path_checks_the_processor_against_the_runs_max_image_pixels(monkeypatch, vit_dir):
    """prepare_inputs reads the processor once (for its splits, collators and stats), against the run's
    --max-image-pixels."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature
    from transformers import AutoImageProcessor

    from hftl.data import image_stats, preprocess
    from hftl.data.loading import Splits

    seen: list[int] = []
    real = image_stats.check_processor_size
    monkeypatch.setattr(
        image_stats, "check_processor_size", lambda p, bound: seen.append(bound) or real(p, bound)
    )
    images = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(4)]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    split = Dataset.from_dict({"image": images, "label": [0, 1, 0, 1]}, features=features)
    splits = Splits(split, split, ["a", "b"], input_column="image", label_column="label", source="memory")
    processor = AutoImageProcessor.from_pretrained(vit_dir)
    preprocess.prepare_inputs(splits, "image", processor, max_image_pixels=123_456_789)
    assert seen == [123_456_789]
