"""The demo's data: Fashion-MNIST, scikit-learn's digits and generated shapes as small grey image sets, the
source/target splits of each case, and the small ResNet the source model starts from.

Fashion-MNIST is found in ``--data``, ``$HFTL_ASSETS_CACHE/fashion-mnist``, ``~/.cache/hftl-assets/fashion-mnist``
or Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``); without it the demo falls back to
digits and shapes, which need no download.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hftl.errors import DataError

FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SHAPES = ("circle", "square", "triangle", "cross", "ring")


# --- sizes ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoSizes:
    """How much data and training each part of the demo gets (per class, where it says so)."""

    source_per_class: int
    small_per_class: int
    large_per_class: int  # large_similar: examples per class of the other source classes
    eval_per_class: int
    image_size: int
    source_epochs: int
    small_epochs: int
    large_epochs: int
    different_per_class: int | None = None  # large_different: None = all of the other dataset
    batch_size: int = 64
    source_lr: float = 2e-3  # the source model's own training; transfers and baselines use hftl's defaults
    widths: tuple[int, ...] = (16, 32, 64, 128)


# the default demo: about 1 minute on 2 idle CPU cores, up to 10 on busy ones (docs/results.md: measured)
STANDARD = DemoSizes(
    source_per_class=1000,
    small_per_class=25,
    large_per_class=800,
    eval_per_class=100,
    image_size=28,
    source_epochs=3,
    small_epochs=20,
    large_epochs=3,
)
# the test suite's mode: tiny everything, a few seconds
QUICK = DemoSizes(
    source_per_class=16,
    small_per_class=4,
    large_per_class=12,
    eval_per_class=4,
    image_size=16,
    source_epochs=1,
    small_epochs=1,
    large_epochs=1,
    different_per_class=12,
    batch_size=16,
    widths=(4, 8, 8, 8),
)


# --- image sets ----------------------------------------------------------------------------------------------------
@dataclass
class ImageSet:
    """Grey images (N x H x W, uint8) with integer labels and their names."""

    images: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]

    def take(self, classes: Sequence[int], per_class: int | None, seed: int) -> ImageSet:
        """At most ``per_class`` random examples of each of ``classes``, relabelled 0..len(classes)-1."""
        rng = np.random.default_rng(seed)
        picked: list[np.ndarray] = []
        for cls in classes:
            where = np.flatnonzero(self.labels == cls)
            rng.shuffle(where)
            picked.append(where[:per_class] if per_class is not None else where)
        index = np.concatenate(picked)
        rng.shuffle(index)
        remap = {cls: i for i, cls in enumerate(classes)}
        labels = np.array([remap[int(c)] for c in self.labels[index]], dtype=np.int64)
        return ImageSet(self.images[index], labels, tuple(self.names[c] for c in classes))

    def __len__(self) -> int:
        return len(self.labels)


# Fashion-MNIST's largest file (60,000 28x28 images) is 47,040,016 bytes uncompressed
IDX_MAX_BYTES = 256 << 20


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format, gzipped or not) as a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read(IDX_MAX_BYTES + 1)  # bounded: a small .gz may inflate without end
    except (OSError, EOFError, zlib.error) as error:
        # truncated or damaged: gzip's own words, naming the file
        raise DataError(
            f"{path}: cannot be read ({type(error).__name__}: {error}); download it again"
        ) from error
    if len(data) > IDX_MAX_BYTES:
        raise DataError(
            f"{path}: more than {IDX_MAX_BYTES >> 20} MiB of data; the Fashion-MNIST files hold 45 MiB"
        )
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    dims = data[3]
    if dims < 1 or len(data) < 4 + 4 * dims:
        raise DataError(f"{path}: an IDX header of {dims} dimensions in {len(data)} bytes; download it again")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if array.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says {shape} but holds {array.size} bytes")
    return array.reshape(shape)


def assets_cache() -> Path:
    """Where ``get-registry-assets.sh`` puts real weights and data: ``$HFTL_ASSETS_CACHE`` or ~/.cache/hftl-assets."""
    return Path(os.environ.get("HFTL_ASSETS_CACHE", Path.home() / ".cache" / "hftl-assets"))


def find_fashion_mnist(data: str | Path | None = None) -> Path | None:
    """The first folder holding the four Fashion-MNIST files: ``data``, the hftl assets cache, Debian's path."""
    names = [name for pair in FASHION_FILES.values() for name in pair]
    if data:
        folder = Path(data).expanduser()
        if not all((folder / name).is_file() for name in names):
            raise DataError(f"--data {data}: expected the Fashion-MNIST files there ({', '.join(names)})")
        return folder
    candidates = [assets_cache() / "fashion-mnist", DEBIAN_FASHION_MNIST]
    return next((f for f in candidates if all((f / name).is_file() for name in names)), None)


def load_fashion_mnist(folder: Path) -> dict[str, ImageSet]:
    """The four Fashion-MNIST files as train/test sets: images N x H x W, one label 0-9 per image."""
    sets = {}
    for split, (images, labels) in FASHION_FILES.items():
        pixels, ids = read_idx(folder / images), read_idx(folder / labels)
        if pixels.ndim != 3 or ids.ndim != 1 or len(pixels) != len(ids) or (ids >= len(FASHION_NAMES)).any():
            raise DataError(
                f"{folder}: {images} holds {pixels.shape} and {labels} {ids.shape} (max {ids.max(initial=0)}); "
                "Fashion-MNIST has N x 28 x 28 images and N labels 0-9: download them again"
            )
        sets[split] = ImageSet(pixels, ids.astype(np.int64), FASHION_NAMES)
    return sets


def load_digits_set() -> ImageSet:
    """scikit-learn's 1,797 handwritten digits (8x8, 0-16), shipped with scikit-learn: always offline."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * 16.0, 0, 255).astype(np.uint8)
    return ImageSet(images, digits.target.astype(np.int64), tuple(str(d) for d in range(10)))


def make_shapes(per_class: int, seed: int, size: int = 28) -> ImageSet:
    """Generated outlines and blobs (circle, square, triangle, cross, ring) at random places and sizes."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, shape in enumerate(SHAPES):
        for _ in range(per_class):
            canvas = Image.new("L", (size, size), 0)
            draw = ImageDraw.Draw(canvas)
            r = rng.uniform(0.2, 0.4) * size
            cx, cy = rng.uniform(r, size - r, 2)
            draw_shape(draw, shape, cx, cy, r, int(rng.integers(150, 256)))
            images.append(np.asarray(canvas))
            labels.append(label)
    return ImageSet(np.stack(images), np.array(labels, dtype=np.int64), SHAPES)


def draw_shape(draw: Any, shape: str, cx: float, cy: float, r: float, ink: int) -> None:
    """One of ``SHAPES`` centred at (cx, cy), ``r`` from its centre to its sides, in grey level ``ink``
    (``draw``: a ``PIL.ImageDraw.Draw``)."""
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=ink)
    elif shape == "square":
        draw.rectangle(box, fill=ink)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=ink)
    elif shape == "cross":
        draw.line((cx - r, cy, cx + r, cy), fill=ink, width=3)
        draw.line((cx, cy - r, cx, cy + r), fill=ink, width=3)
    else:
        draw.ellipse(box, outline=ink, width=3)


def split_set(full: ImageSet, eval_fraction: float, seed: int) -> dict[str, ImageSet]:
    """A stratified train/test split of a set that ships without one."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(full), dtype=bool)
    for cls in np.unique(full.labels):
        where = np.flatnonzero(full.labels == cls)
        rng.shuffle(where)
        test[where[: max(1, round(len(where) * eval_fraction))]] = True
    return {
        "train": ImageSet(full.images[~test], full.labels[~test], full.names),
        "test": ImageSet(full.images[test], full.labels[test], full.names),
    }


# --- the demo's datasets -------------------------------------------------------------------------------------------
@dataclass
class Target:
    """One dataset the demo trains on: its train and validation sets and a short description."""

    name: str
    description: str
    train: ImageSet
    validation: ImageSet


@dataclass
class DemoData:
    source: Target
    targets: dict[str, Target]  # case -> target
    origin: str


def demo_data(sizes: DemoSizes, data: str | Path | None = None, seed: int = 0) -> DemoData:
    """Source and the four case targets, from Fashion-MNIST when found, else from scikit-learn's digits."""
    folder = None if str(data) == "digits" else find_fashion_mnist(data)
    if folder is not None:
        fashion = load_fashion_mnist(folder)
        similar, similar_name = fashion, "Fashion-MNIST 5-9"
        source_split = fashion
        source_name, source_classes, similar_classes = "Fashion-MNIST 0-4", range(5), range(5, 10)
        different = split_set(load_digits_set(), 0.2, seed)
        different_name, different_classes = "digits 0-9", range(10)
        origin = f"Fashion-MNIST from {folder}; different = scikit-learn digits"
    else:
        digits = split_set(load_digits_set(), 0.25, seed)
        similar = source_split = digits
        source_name, source_classes, similar_classes = "digits 0-4", range(5), range(5, 10)
        similar_name = "digits 5-9"
        shapes_per_class = (sizes.different_per_class or 300) + sizes.eval_per_class
        different = split_set(make_shapes(shapes_per_class, seed, sizes.image_size), 0.2, seed)
        different_name, different_classes = "shapes", range(len(SHAPES))
        origin = "scikit-learn digits (Fashion-MNIST not found); different = generated shapes"

    def target(name: str, split: dict[str, ImageSet], classes: range, per_class: int | None) -> Target:
        train = split["train"].take(list(classes), per_class, seed)
        validation = split["test"].take(list(classes), sizes.eval_per_class, seed + 1)
        amount = f"{per_class}/class" if per_class is not None else "all"
        return Target(name, f"{name}, {amount} ({len(train)} train)", train, validation)

    return DemoData(
        source=target(source_name, source_split, source_classes, sizes.source_per_class),
        targets={
            "small_similar": target(similar_name, similar, similar_classes, sizes.small_per_class),
            "large_similar": target(similar_name, similar, similar_classes, sizes.large_per_class),
            "small_different": target(different_name, different, different_classes, sizes.small_per_class),
            "large_different": target(
                different_name, different, different_classes, sizes.different_per_class
            ),
        },
        origin=origin,
    )


def to_dataset(target: Target) -> Any:
    """A ``datasets.DatasetDict`` (train/validation) of PIL images with class names, as hftl reads any dataset."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as ImageFeature
    from PIL import Image

    features = Features({"image": ImageFeature(), "label": ClassLabel(names=list(target.train.names))})

    def build(part: ImageSet) -> Dataset:
        images = [Image.fromarray(array, mode="L") for array in part.images]
        return Dataset.from_dict({"image": images, "label": part.labels.tolist()}, features=features)

    return DatasetDict({"train": build(target.train), "validation": build(target.validation)})


def make_resnet_folder(path: Path, sizes: DemoSizes, num_labels: int) -> Path:
    """A small randomly initialised ResNet (the source architecture) saved with its image processor."""
    import torch
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(
        embedding_size=sizes.widths[0],
        hidden_sizes=list(sizes.widths),
        depths=[1] * len(sizes.widths),
        layer_type="basic",
        num_labels=num_labels,
    )
    ResNetForImageClassification(config).save_pretrained(path)
    processor = ConvNextImageProcessor(
        size={"shortest_edge": sizes.image_size},
        crop_pct=1.0,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor.save_pretrained(path)
    return path
