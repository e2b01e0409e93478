"""Turning splits into model inputs: images decoded and resized once, texts tokenized once, batches built by
collators (per-epoch image augmentation, dynamic padding for text).

Images are stored after resize/crop as uint8 (``datasets.map``, cached by fingerprint; raw bytes in Arrow, which
datasets hands over as they are, where its torch formatting copied every pixel into int64: reading a batch took 30
times as long, bench/image_loader.py), so decoding JPEGs never happens twice and augmentation still differs per
epoch. Batches stay uint8 up to the model, which rescales and normalises them on its own device
(``hftl.data.raw_pixels``: a quarter of float32's bytes through every copy on the way). The numbers follow the
model's own image processor, so ``transformers.pipeline`` sees the same inputs at inference.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, Features, List, Value
from transformers import DataCollatorWithPadding

from hftl.data.bad_inputs import (
    ERROR,
    BadInput,
    SkipReport,
    decode_image,
    problem,
    screen,
    text_problem,
)
from hftl.data.image_stats import ImageStats
from hftl.data.labels import multi_hot
from hftl.data.loading import Splits
from hftl.errors import DataError
from hftl.settings.data import DEFAULT_MAX_IMAGE_PIXELS

LABELS = "labels"
EXAMPLE_ID = "example_id"
# decoding fans out to more processes only past this many images each: a process costs about a second to start
IMAGES_PER_PROCESS = 1000
# image splits are read as plain Python objects, the stored bytes as they are: numpy's formatting turns them into
# numpy.bytes_, which drops trailing zero bytes (a dark last pixel), and torch's would copy them into int64
IMAGE_FORMAT = None


@dataclass
class ModelInputs:
    """Model-ready splits, the collators that batch them, and what was skipped as unusable."""

    train: Dataset
    validation: Dataset
    train_collator: Any
    eval_collator: Any
    skipped: list[SkipReport] = field(default_factory=list)
    test: Dataset | None = None  # scored once, at the end, by the saved network (never used to choose)
    stream: Any = (
        None  # --streaming: the train split as a ``TrainStream`` (``train`` is then its IterableDataset)
    )
    # image batches carry raw uint8 pixels: what the model does to them on its device (``accept_raw_pixels``)
    image_stats: ImageStats | None = None


def prepare_inputs(
    splits: Splits,
    modality: str,
    processor: Any,
    *,
    max_length: int = 128,
    augment: bool = True,
    seed: int = 42,
    pad_to_multiple_of: int | None = None,
    max_bad_fraction: float = 0.05,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    processes: int = 1,
) -> ModelInputs:
    """Preprocess both splits once for ``modality`` ('image' or 'text'), skipping and reporting unusable examples
    (see ``hftl.data.bad_inputs`` for the policy); images are decoded with at most ``max_image_pixels`` pixels, by
    up to ``processes`` processes for large splits."""
    named = {"train": splits.train, "validation": splits.validation}
    if splits.test is not None:
        named["test"] = splits.test
    stats = ImageStats.from_processor(processor, max_image_pixels) if modality == "image" else None
    mapped = {
        name: prepare_split(
            split,
            name,
            splits,
            stats,
            processor,
            max_length,
            max_bad_fraction,
            max_image_pixels,
            processes,
        )
        for name, split in named.items()
    }
    train_collator, eval_collator = collators(stats, processor, augment, seed, pad_to_multiple_of)
    return ModelInputs(
        mapped["train"][0],
        mapped["validation"][0],
        train_collator,
        eval_collator,
        [report for _, report in mapped.values()],
        mapped["test"][0] if "test" in mapped else None,
        image_stats=stats,
    )


def prepare_split(
    split: Dataset,
    name: str,
    splits: Splits,
    stats: ImageStats | None,
    processor: Any,
    max_length: int,
    max_bad_fraction: float,
    max_image_pixels: int,
    processes: int = 1,
) -> tuple[Dataset, SkipReport]:
    """One split preprocessed once (``datasets.map``, cached by fingerprint), its unusable examples dropped; images
    (``stats``: what the processor does, ``ImageStats.from_processor``) or, without ``stats``, texts."""
    if stats is not None:
        workers = decode_processes(processes, len(split))
        ready, report = screen(
            _map_images(split, splits, processor, stats, max_image_pixels, workers), name, max_bad_fraction
        )
        return ready.with_format(IMAGE_FORMAT), report
    return screen(_map_texts(split, splits, processor, max_length), name, max_bad_fraction)


def collators(
    stats: ImageStats | None, processor: Any, augment: bool, seed: int, pad_to_multiple_of: int | None
) -> tuple[Any, Any]:
    """The train and evaluation collators: seeded augmentation of raw pixels (images: ``stats``), dynamic padding
    (text)."""
    if stats is not None:
        return ImageCollator(stats, augment=augment, seed=seed), ImageCollator(
            stats, augment=False, seed=seed
        )
    padding = DataCollatorWithPadding(processor, pad_to_multiple_of=pad_to_multiple_of)
    return padding, padding


def label_tensor(values: Sequence[Any]) -> torch.Tensor:
    """A batch's targets: class ids (long) for single-label data, multi-hot rows (float32, what BCE-with-logits
    reads) for multi-label data."""
    if isinstance(values[0], int | np.integer) or np.ndim(values[0]) == 0:
        return torch.as_tensor(np.array([int(v) for v in values]), dtype=torch.long)
    return torch.as_tensor(np.stack([np.asarray(v, dtype=np.float32) for v in values]))


def model_labels(splits: Splits, values: list) -> list:
    """What the preprocessed split stores as ``labels``: class ids, or multi-hot rows for multi-label data."""
    return multi_hot(values, len(splits.labels)).tolist() if splits.multi_label else values


# --- images --------------------------------------------------------------------------------------------------------
def decode_processes(available: int, images: int) -> int | None:
    """How many processes decode a split: one per ``IMAGES_PER_PROCESS`` images, at most ``available``; None (this
    process) below two. In one process decoding and resizing took 4 ms per 224 px image (bench/image_loader.py),
    36 s of a 37 s head-only run on an H200 (docs/benchmarks.md)."""
    count = min(available, images // IMAGES_PER_PROCESS)
    return count if count > 1 else None


def _map_images(
    split: Dataset,
    splits: Splits,
    processor: Any,
    stats: ImageStats,
    max_pixels: int,
    processes: int | None = None,
) -> Dataset:
    """Decode (capped at ``max_pixels``: datasets would decode every file at full size), resize and store as uint8,
    marking the rows that cannot be decoded; ``processes`` share the work (not part of the cache key)."""
    if isinstance(split.features[splits.input_column], datasets.Image):
        split = split.cast_column(splits.input_column, datasets.Image(decode=False))  # one bad file at a time
    return split.map(
        image_batches(splits, processor, stats, max_pixels),
        batched=True,
        batch_size=64,
        with_indices=True,
        remove_columns=split.column_names,
        features=image_features(stats, splits.labels, splits.multi_label),
        desc="Decoding and resizing images (once)",
        num_proc=processes,
    )


def image_features(stats: ImageStats, labels: list[str], multi_label: bool = False) -> Features:
    """What an image split holds after preprocessing: uint8 pixels, the label (multi-label: the multi-hot row), the
    example id, why it is bad."""
    return Features(
        {
            "pixel_values": Value("binary"),  # uint8, channels first, stats.height x stats.width
            LABELS: List(Value("float32"), length=len(labels)) if multi_label else ClassLabel(names=labels),
            EXAMPLE_ID: Value("int64"),
            ERROR: Value("string"),
        }
    )


def image_batches(
    splits: Splits,
    processor: Any,
    stats: ImageStats,
    max_pixels: int,
    encode_label: Callable[[Any, str], int] | None = None,
    row: str = "row",
) -> Callable[[Mapping[str, list], list[int]], dict[str, Any]]:
    """The batched map function of an image split (a stream passes ``encode_label``, turning raw labels into ids,
    and calls its rows ``row``)."""
    column, label = splits.input_column, splits.label_column
    blank = np.zeros((3, stats.height, stats.width), dtype=np.uint8)

    def resize(batch: Mapping[str, list], indices: list[int]) -> dict[str, Any]:
        images, problems = [], []
        for i, raw in enumerate(batch[column]):
            try:
                target = 2 * max(stats.height, stats.width)
                images.append(decode_image(raw, target_size=target, max_pixels=max_pixels))
                problems.append("")
            except BadInput as error:
                where = (
                    raw.get("path") if isinstance(raw, dict) and raw.get("path") else f"{row} {indices[i]}"
                )
                problems.append(problem(str(where), str(error)))
        good = iter(
            processor(images, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"]
            if images
            else []
        )
        pixels = [
            (blank if text else stored_image(next(good), stats, processor)).tobytes() for text in problems
        ]
        labels = batch[label]
        if encode_label is not None:
            labels = [encode_label(value, f"{row} {indices[i]}") for i, value in enumerate(labels)]
        labels = model_labels(splits, labels)
        return {"pixel_values": pixels, LABELS: labels, EXAMPLE_ID: indices, ERROR: problems}

    return resize


class ImageCollator:
    """Stacks uint8 images and applies seeded per-example augmentation (train); the batch stays uint8, for the
    model to rescale and normalise on its device (``ImageStats.normalise``).

    The augmentation of an example depends only on (seed, epoch, example id), so it is the same whatever the batch
    order, number of workers or resume point.
    """

    def __init__(
        self, stats: ImageStats, *, augment: bool, seed: int, scale: tuple[float, float] = (0.6, 1.0)
    ):
        self.stats, self.augment, self.seed, self.scale = stats, augment, seed, scale
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        pixels = self.augmented(image_batch(examples, self.stats), examples)
        return {"pixel_values": pixels, LABELS: label_tensor([e[LABELS] for e in examples])}

    def augmented(self, pixels: torch.Tensor, examples: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """``pixels`` with each example's seeded crop, in place, when this collator augments (uint8 stays uint8)."""
        if self.augment:
            for i, example in enumerate(examples):
                generator = torch.Generator().manual_seed(
                    _seed_for(self.seed, self.epoch, int(example[EXAMPLE_ID]))
                )
                pixels[i] = resized_crop(pixels[i], crop_box(pixels.shape[-2:], generator, self.scale))
        return pixels


def stored_image(pixels: np.ndarray, stats: ImageStats, processor: Any) -> np.ndarray:
    """One processed image as the cache keeps it (uint8, channels first), refused unless it has the shape every
    image must share: a processor that keeps each image's aspect ratio (no crop) makes one per image."""
    if pixels.shape != (3, stats.height, stats.width):
        raise DataError(
            f"the image processor made a {'x'.join(map(str, pixels.shape))} image where "
            f"3x{stats.height}x{stats.width} was expected ({type(processor).__name__}, size={getattr(processor, 'size', None)!r}): "
            "hftl needs a processor that resizes or crops every image to one size (e.g. size={'height': H, "
            "'width': W} or do_center_crop=True in the model's preprocessor_config.json)"
        )
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def image_batch(examples: Sequence[Mapping[str, Any]], stats: ImageStats) -> torch.Tensor:
    """The examples' stored pixels as one uint8 tensor (batch, 3, height, width)."""
    shape = (len(examples), 3, stats.height, stats.width)
    raw = bytearray().join(e["pixel_values"] for e in examples)  # one copy, writable: torch shares it
    if len(raw) != np.prod(shape):
        raise DataError(
            f"cached images are not {stats.height}x{stats.width} RGB: they were prepared for another image "
            "processor than this model's"
        )
    return torch.frombuffer(raw, dtype=torch.uint8).view(shape)


def _seed_for(*parts: int) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class CropBox:
    """A crop of an image (pixels from the top left) and whether it is mirrored."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


def crop_box(
    size: Sequence[int], generator: torch.Generator, scale: tuple[float, float] = (0.6, 1.0)
) -> CropBox:
    """Light augmentation without torchvision: a random crop of ``scale`` of the area (aspect 3/4 to 4/3), maybe
    flipped."""
    height, width = int(size[0]), int(size[1])
    rand = torch.rand(4, generator=generator).tolist()
    area = scale[0] + (scale[1] - scale[0]) * rand[0]
    aspect = float(np.exp(np.log(3 / 4) + (np.log(4 / 3) - np.log(3 / 4)) * rand[1]))
    crop_h = min(height, max(1, round((area * height * width / aspect) ** 0.5)))
    crop_w = min(width, max(1, round((area * height * width * aspect) ** 0.5)))
    top = int(rand[2] * (height - crop_h + 1))
    left = int(rand[3] * (width - crop_w + 1))
    return CropBox(top, left, crop_h, crop_w, torch.rand(1, generator=generator).item() < 0.5)


def resized_crop(image: torch.Tensor, box: CropBox) -> torch.Tensor:
    """The crop resized back to the image's size (bilinear, in float32; a uint8 image comes back uint8, rounded),
    mirrored when the box says so. One image at a time: on a CPU collating a batch this way beat resampling its crops
    alone in one ``grid_sample`` (0.7-1.0 vs 1.4 ms per 224 px image, bench/image_loader.py)."""
    crop = image[:, box.top : box.top + box.height, box.left : box.left + box.width].float()
    out = F.interpolate(crop[None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0]
    out = out.flip(-1) if box.flip else out
    return out.round_().clamp_(0, 255).to(torch.uint8) if image.dtype == torch.uint8 else out


# --- texts ---------------------------------------------------------------------------------------------------------
def _map_texts(split: Dataset, splits: Splits, tokenizer: Any, max_length: int) -> Dataset:
    mapped = split.map(
        text_batches(splits, tokenizer, max_length),
        batched=True,
        with_indices=True,
        remove_columns=split.column_names,
        desc="Tokenizing (once)",
    )
    if splits.multi_label:  # the output column keeps the input's int type (same name): targets are floats
        mapped = mapped.cast_column(LABELS, List(Value("float32"), length=len(splits.labels)))
    return mapped


def text_batches(
    splits: Splits,
    tokenizer: Any,
    max_length: int,
    encode_label: Callable[[Any, str], int] | None = None,
    row: str = "row",
) -> Callable[[Mapping[str, list], list[int]], dict[str, Any]]:
    """The batched map function of a text split (a stream passes ``encode_label`` and calls its rows ``row``)."""
    column, label, pair = splits.input_column, splits.label_column, splits.pair_column
    columns = (column, pair) if pair else (column,)

    def tokenize(batch: Mapping[str, list], indices: list[int]) -> dict[str, Any]:
        problems = [
            next((text_problem(batch[c][i]) for c in columns if text_problem(batch[c][i])), "")
            for i in range(len(batch[column]))
        ]
        for c in columns:
            for i, text in enumerate(batch[c]):
                if not problems[i] and not isinstance(text, str):
                    raise DataError(
                        f"{row} {indices[i]}: text in column {c!r} is {type(text).__name__}, not a string; "
                        "is --input-column (or --text-columns) the right column?"
                    )
        texts = [[text if not problems[i] else "" for i, text in enumerate(batch[c])] for c in columns]
        encoded = dict(tokenizer(*texts, truncation=True, max_length=max_length))
        labels = batch[label]
        if encode_label is not None:
            labels = [encode_label(value, f"{row} {indices[i]}") for i, value in enumerate(labels)]
        encoded[LABELS] = model_labels(splits, labels)
        encoded[ERROR] = [
            problem(f"{row} {indices[i]}", text) if text else "" for i, text in enumerate(problems)
        ]
        return encoded

    return tokenize
