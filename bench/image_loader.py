"""Where an image batch's CPU time goes before it reaches the GPU, hftl's way against the usual ways, on synthetic
224 px BMP images (docs/benchmarks.md, GPU section):

- decoding and resizing every image once (``datasets.map``);
- reading a batch of the cache as a DataLoader does (``Dataset.__getitems__``): hftl's raw uint8 bytes against the
  same pixels in an ``Array3D`` column formatted for torch (widened to int64 on the way);
- collating with augmentation: hftl's batched crops (one ``grid_sample``) against cropping and resizing each image;
- the whole loader in one process, hftl's against the per-item ``with_transform`` pipeline.

    python bench/image_loader.py [--images 512]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from datasets import Array3D  # noqa: E402
from transformers import ViTImageProcessor, default_data_collator  # noqa: E402

from bench import common  # noqa: E402
from bench.gpu_benchmarks import images  # noqa: E402
from hftl.data.loading import Splits  # noqa: E402
from hftl.data.preprocess import EXAMPLE_ID, _seed_for, crop_box, image_batch, prepare_inputs  # noqa: E402

BATCH = 64


def per_image_ms(work, count: int, repeats: int = 3) -> float:
    """The best of ``repeats`` timings of ``work``, per image (a shared machine's other load only slows)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best / count * 1000


def loader_rate(dataset, collate) -> float:
    started, seen = time.perf_counter(), 0
    for chunk in torch.utils.data.DataLoader(dataset, batch_size=BATCH, collate_fn=collate, num_workers=0):
        seen += len(chunk["pixel_values"])
    return seen / (time.perf_counter() - started)


def crops_one_by_one(rows, collator) -> torch.Tensor:
    """The usual augmentation: each image cropped and resized on its own, the same boxes as hftl draws."""
    pixels = image_batch(rows, collator.stats).float()
    out = torch.empty_like(pixels)
    for i, row in enumerate(rows):
        generator = torch.Generator().manual_seed(_seed_for(collator.seed, 0, int(row[EXAMPLE_ID])))
        box = crop_box(pixels.shape[-2:], generator, collator.scale)
        crop = pixels[i][:, box.top : box.top + box.height, box.left : box.left + box.width]
        resized = F.interpolate(crop[None], size=pixels.shape[-2:], mode="bilinear", align_corners=False)[0]
        out[i] = resized.flip(-1) if box.flip else resized
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=512)
    args = parser.parse_args()
    count = args.images
    data, processor = images(count, 16, 224), ViTImageProcessor()
    splits = Splits(data["train"], data["validation"], ["red", "blue"], "image", "label", "synthetic")
    started = time.perf_counter()
    inputs = prepare_inputs(splits, "image", processor, augment=True)
    once = (time.perf_counter() - started) / (count + 16) * 1000
    cached, collator = inputs.train, inputs.train_collator
    widened = cached.map(
        lambda row: {"pixel_values": np.frombuffer(row["pixel_values"], np.uint8).reshape(3, 224, 224)},
        features=cached.features.copy() | {"pixel_values": Array3D((3, 224, 224), "uint8")},
    ).with_format("torch")
    batches = [list(range(i, min(i + BATCH, count))) for i in range(0, count, BATCH)]
    rows = cached.__getitems__(batches[0])
    bytes_read = per_image_ms(lambda: [cached.__getitems__(b) for b in batches], count)
    int64_read = per_image_ms(lambda: [widened.__getitems__(b) for b in batches], count)
    batched = per_image_ms(lambda: collator(rows), len(rows))
    one_by_one = per_image_ms(lambda: crops_one_by_one(rows, collator), len(rows))
    report = [
        ("hftl: decode and resize once (datasets.map, one process)", f"{once:.2f} ms/image"),
        (f"read a batch of {BATCH}: hftl's uint8 bytes", f"{bytes_read:.3f} ms/image"),
        (f"read a batch of {BATCH}: Array3D uint8, torch format (int64)", f"{int64_read:.3f} ms/image"),
        ("  ratio (Array3D torch / hftl)", f"{int64_read / bytes_read:.1f}x"),
        ("collate with augmentation: hftl, the batch's crops at once", f"{batched:.3f} ms/image"),
        ("collate with augmentation: each image cropped and resized", f"{one_by_one:.3f} ms/image"),
        ("  ratio (one by one / hftl)", f"{one_by_one / batched:.1f}x"),
        ("hftl loader with augmentation, one process", f"{loader_rate(cached, collator):.0f} images/s"),
        (
            "with_transform loader (decode + processor per item), one process",
            f"{loader_rate(common.encode_images(data['train'], processor), default_data_collator):.0f} images/s",
        ),
    ]
    common.print_report(f"Image batches on {common.machine()}, {count} images at 224 px", report)


if __name__ == "__main__":
    main()
