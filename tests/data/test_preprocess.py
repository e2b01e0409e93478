"""Decoding images once in several processes gives exactly what one process gives: the same uint8 pixels, labels
and example ids, in the same order (the ids are what seeded augmentation and bad-row reports use); cached images
are read as uint8 bytes and batched as uint8 (normalised by the model, as the processor would); crops stay inside
the image."""

from __future__ import annotations

import io

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature
from PIL import Image
from transformers import ViTImageProcessor

import hftl.data.preprocess as preprocess
from hftl.data.loading import Splits


def pictures(count: int) -> Dataset:
    rng = np.random.default_rng(0)

    def png(i: int) -> dict:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (20 + i % 7, 24, 3), dtype=np.uint8)).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b", "c"])})
    return Dataset.from_dict(
        {"image": [png(i) for i in range(count)], "label": [i % 3 for i in range(count)]}, features=features
    )


def test_images_decoded_by_several_processes_equal_one_process(monkeypatch):
    data = pictures(24)
    splits = Splits(data, data.select(range(6)), ["a", "b", "c"], "image", "label", "generated")
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    one = preprocess.prepare_inputs(splits, "image", processor, augment=False)
    monkeypatch.setattr(preprocess, "IMAGES_PER_PROCESS", 8)  # 24 images: three processes
    assert preprocess.decode_processes(4, 24) == 3 and preprocess.decode_processes(1, 24) is None
    several = preprocess.prepare_inputs(splits, "image", processor, augment=False, processes=4)
    for column in ("pixel_values", "labels", "example_id"):
        assert np.array_equal(np.asarray(one.train[column]), np.asarray(several.train[column])), column
    assert list(several.train["example_id"]) == list(range(24))


def test_cached_images_are_read_and_collated_as_uint8_and_normalised_as_the_processor_does():
    data = pictures(6)
    splits = Splits(data, data, ["a", "b", "c"], "image", "label", "generated")
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    inputs = preprocess.prepare_inputs(splits, "image", processor, augment=True)
    rows = inputs.train.__getitems__([0, 1, 2])  # what a DataLoader fetches
    assert len(rows[0]["pixel_values"]) == 3 * 16 * 16  # uint8 bytes, not widened to int64 (30x the read)
    batch = inputs.eval_collator(rows)
    stored = np.stack([np.frombuffer(r["pixel_values"], np.uint8).reshape(3, 16, 16) for r in rows])
    assert batch["pixel_values"].dtype == torch.uint8 and torch.equal(
        batch["pixel_values"], torch.from_numpy(stored)
    )
    assert batch["labels"].tolist() == [0, 1, 2]
    # the model's side: what the processor itself makes of the same (resized) pixels
    expected = processor(list(stored.transpose(0, 2, 3, 1)), do_resize=False, return_tensors="pt")[
        "pixel_values"
    ]
    assert inputs.image_stats is not None
    assert torch.allclose(inputs.image_stats.normalise(batch["pixel_values"]), expected, atol=1e-6)
    augmented = inputs.train_collator(rows)["pixel_values"]
    assert augmented.dtype == torch.uint8 and augmented.shape == (3, 3, 16, 16)
    assert not torch.equal(augmented, batch["pixel_values"])  # cropped, still uint8
    again = inputs.train_collator(list(reversed(rows)))  # an example's augmentation ignores the batch order
    black = io.BytesIO()
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(black, format="PNG")
    dark = data.cast_column("image", ImageFeature(decode=False)).select(range(1))
    dark = dark.map(lambda row: {"image": {"bytes": black.getvalue(), "path": None}})
    dark = preprocess.prepare_inputs(Splits(dark, dark, ["a", "b", "c"], "image", "label", "generated"), "image",
                                     processor, augment=False)  # fmt: skip
    # every byte zero: numpy's bytes_ formatting would have dropped them all
    assert inputs.eval_collator(dark.train.__getitems__([0]))["pixel_values"].eq(0).all()
    assert torch.equal(inputs.train_collator(rows)["pixel_values"][0], again["pixel_values"][2])


def test_a_crop_box_stays_inside_the_image_and_the_whole_image_comes_back_unchanged():
    images = torch.rand(3, 32, 40) * 255
    assert torch.allclose(preprocess.resized_crop(images, preprocess.CropBox(0, 0, 32, 40, False)), images)
    mirrored = preprocess.resized_crop(images, preprocess.CropBox(0, 0, 32, 40, True))
    assert torch.equal(mirrored, images.flip(-1))
    raw = images.round().to(torch.uint8)  # what a batch holds: uint8 in, uint8 out, the float crop rounded
    box = preprocess.CropBox(3, 5, 20, 30, True)
    cropped = preprocess.resized_crop(raw, box)
    floating = preprocess.resized_crop(raw.float(), box)
    assert cropped.dtype == torch.uint8 and torch.equal(
        cropped, floating.round().clamp(0, 255).to(torch.uint8)
    )
    for seed in range(20):
        box = preprocess.crop_box((32, 40), torch.Generator().manual_seed(seed), (0.6, 1.0))
        assert 0.6 * 32 * 40 * 0.9 <= box.height * box.width <= 32 * 40
        assert box.top + box.height <= 32 and box.left + box.width <= 40


def test_a_processor_that_keeps_each_images_shape_is_refused_when_the_cache_is_built():
    stats = preprocess.ImageStats(16, 16, 1 / 255, (0.5,) * 3, (0.5,) * 3)
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    assert preprocess.stored_image(np.full((3, 16, 16), 300.0), stats, processor).max() == 255
    try:
        preprocess.stored_image(np.zeros((3, 16, 20)), stats, processor)
    except preprocess.DataError as error:
        assert "3x16x20 image where 3x16x16 was expected" in str(error)
    else:
        raise AssertionError("a 16x20 image was stored as 16x16")
