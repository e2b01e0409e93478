"""Decoding images once in several processes gives exactly what one process gives: the same uint8 pixels, labels
and example ids, in the same order (the ids are what seeded augmentation and bad-row reports use); cached images
are read as uint8; the batch's crops resample as cropping and resizing each image would."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
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


def test_cached_images_are_read_as_uint8_and_collated_normalised():
    data = pictures(6)
    splits = Splits(data, data, ["a", "b", "c"], "image", "label", "generated")
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    inputs = preprocess.prepare_inputs(splits, "image", processor, augment=True)
    rows = inputs.train.__getitems__([0, 1, 2])  # what a DataLoader fetches
    assert len(rows[0]["pixel_values"]) == 3 * 16 * 16  # uint8, not widened to int64 (8x the bytes per pipe)
    batch = inputs.eval_collator(rows)
    stored = np.stack([np.frombuffer(r["pixel_values"], np.uint8).reshape(3, 16, 16) for r in rows])
    expected = (torch.from_numpy(stored).float() / 255 - 0.5) / 0.5
    assert torch.allclose(batch["pixel_values"], expected, atol=1e-6) and batch["labels"].tolist() == [
        0,
        1,
        2,
    ]
    again = inputs.train_collator(list(reversed(rows)))  # an example's augmentation ignores the batch order
    black = io.BytesIO()
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(black, format="PNG")
    dark = data.cast_column("image", ImageFeature(decode=False)).select(range(1))
    dark = dark.map(lambda row: {"image": {"bytes": black.getvalue(), "path": None}})
    dark = preprocess.prepare_inputs(Splits(dark, dark, ["a", "b", "c"], "image", "label", "generated"), "image",
                                     processor, augment=False)  # fmt: skip
    # every byte zero: numpy's bytes_ formatting would have dropped them all
    assert inputs.eval_collator(dark.train.__getitems__([0]))["pixel_values"].eq(-1.0).all()
    assert torch.equal(inputs.train_collator(rows)["pixel_values"][0], again["pixel_values"][2])


def crop_then_resize(image: torch.Tensor, box: preprocess.CropBox) -> torch.Tensor:
    """The per-image reference: crop, resize back (bilinear), maybe mirror."""
    crop = image[:, box.top : box.top + box.height, box.left : box.left + box.width]
    out = F.interpolate(crop[None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0]
    return out.flip(-1) if box.flip else out


def test_batched_crops_equal_cropping_and_resizing_each_image_inside_the_crop_edge():
    """At the crop's outer ring of output pixels grid_sample blends in the pixel beyond the crop where interpolate
    repeats the edge one; everywhere else they agree."""
    images = torch.rand(3, 3, 32, 40) * 255
    boxes = [
        preprocess.CropBox(0, 0, 32, 40, False),  # the whole image: unchanged
        preprocess.CropBox(5, 7, 20, 24, True),
        preprocess.CropBox(3, 2, 16, 30, False),
    ]
    batched = preprocess.resized_crops(images, boxes)
    assert torch.allclose(batched[0], images[0], atol=1e-3)
    for i, box in enumerate(boxes):
        reference = crop_then_resize(images[i], box)
        assert torch.allclose(batched[i][:, 1:-1, 1:-1], reference[:, 1:-1, 1:-1], atol=1e-3), i
    drawn = preprocess.crop_box((32, 40), torch.Generator().manual_seed(0), (0.6, 1.0))
    assert 0.6 * 32 * 40 * 0.9 <= drawn.height * drawn.width <= 32 * 40
    assert drawn.top + drawn.height <= 32 and drawn.left + drawn.width <= 40
