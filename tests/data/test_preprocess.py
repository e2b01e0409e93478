"""Decoding images once in several processes gives exactly what one process gives: the same uint8 pixels, labels
and example ids, in the same order (the ids are what seeded augmentation and bad-row reports use)."""

from __future__ import annotations

import io

import numpy as np
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
