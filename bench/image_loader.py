"""Where an image batch's CPU time goes before it reaches the GPU, hftl's way against the usual ways, on synthetic
224 px BMP images (docs/benchmarks.md, GPU section):

- decoding and resizing every image once (``datasets.map``);
- reading a batch of the cache as a DataLoader does (``Dataset.__getitems__``): hftl's raw uint8 bytes against the
  same pixels in an ``Array3D`` column formatted for torch (widened to int64 on the way);
- collating: without augmentation, and with hftl's per-image crops, beside the batch's crops in one ``grid_sample``
  (measured slower on a CPU, so not used); hftl's uint8 batches against float32 batches normalised in the worker
  (what hftl sent before the model normalised on its device), and the bytes each sends per batch;
- the whole loader in one process, hftl's against the per-item ``with_transform`` pipeline, and with two workers
  (the copy through shared memory included), uint8 against float32 batches; what starting the workers afresh for
  each epoch costs (hftl does, for exact resume: hftl/training/dataloaders.py).

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
from datasets import Array3D, Features  # noqa: E402
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


def loader_rate(dataset, collate, workers: int = 0) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, collate_fn=collate, num_workers=workers)
    best = 0.0
    for _ in range(2 if workers else 1):  # with workers: the second pass, their start-up paid
        started, seen = time.perf_counter(), 0
        for chunk in loader:
            seen += len(chunk["pixel_values"])
        best = max(best, seen / (time.perf_counter() - started))
    return best


def first_batch_ms(dataset, collate, persistent: bool, epochs: int = 4) -> float:
    """Time to an epoch's first batch with two workers, after the first epoch: fresh workers (hftl: exact resume
    needs them) or workers kept across epochs."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=BATCH, collate_fn=collate, num_workers=2, persistent_workers=persistent
    )
    waits = []
    for _ in range(epochs):
        started = time.perf_counter()
        for i, _batch in enumerate(loader):
            if i == 0:
                waits.append(time.perf_counter() - started)
    return 1000 * min(waits[1:])


def crops_in_one_call(rows, collator) -> torch.Tensor:
    """The alternative hftl measured and left: the batch's crops (the same boxes) resampled in one ``grid_sample``."""
    pixels = image_batch(rows, collator.stats).float()
    count, _, height, width = pixels.shape
    theta = torch.zeros(count, 2, 3)
    for i, row in enumerate(rows):
        generator = torch.Generator().manual_seed(_seed_for(collator.seed, 0, int(row[EXAMPLE_ID])))
        box = crop_box((height, width), generator, collator.scale)
        theta[i, 0, 0] = (-1.0 if box.flip else 1.0) * box.width / width
        theta[i, 0, 2] = (2 * box.left + box.width) / width - 1
        theta[i, 1, 1] = box.height / height
        theta[i, 1, 2] = (2 * box.top + box.height) / height - 1
    grid = F.affine_grid(theta, [count, 1, height, width], align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)


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
        features=Features({**cached.features, "pixel_values": Array3D((3, 224, 224), "uint8")}),
    ).with_format("torch")
    batches = [list(range(i, min(i + BATCH, count))) for i in range(0, count, BATCH)]
    rows = cached.__getitems__(batches[0])
    bytes_read = per_image_ms(lambda: [cached.__getitems__(b) for b in batches], count)
    int64_read = per_image_ms(lambda: [widened.__getitems__(b) for b in batches], count)
    one_by_one = per_image_ms(lambda: collator(rows), len(rows))
    batched = per_image_ms(lambda: crops_in_one_call(rows, collator), len(rows))
    plain = per_image_ms(lambda: inputs.eval_collator(rows), len(rows))
    as_uint8 = collator(rows)["pixel_values"]
    with common.float32_batches():  # what the workers did before batches stayed uint8
        plain_floats = per_image_ms(lambda: inputs.eval_collator(rows), len(rows))
        augmented_floats = per_image_ms(lambda: collator(rows), len(rows))
        as_float = collator(rows)["pixel_values"]
        float_loader = loader_rate(cached, collator, 2)
    megabytes = [t.element_size() * t[0].numel() * 128 / 1e6 for t in (as_uint8, as_float)]
    report = [
        ("hftl: decode and resize once (datasets.map, one process)", f"{once:.2f} ms/image"),
        (f"read a batch of {BATCH}: hftl's uint8 bytes", f"{bytes_read:.3f} ms/image"),
        (f"read a batch of {BATCH}: Array3D uint8, torch format (int64)", f"{int64_read:.3f} ms/image"),
        ("  ratio (Array3D torch / hftl)", f"{int64_read / bytes_read:.1f}x"),
        ("collate without augmentation: hftl (stack; uint8 out)", f"{plain:.3f} ms/image"),
        (
            "  hftl before: rescaled and normalised in the worker (float32 out)",
            f"{plain_floats:.3f} ms/image",
        ),
        (
            "collate with augmentation: hftl, each image cropped and resized (uint8 out)",
            f"{one_by_one:.3f} ms/image",
        ),
        (
            "  hftl before: rescaled and normalised in the worker (float32 out)",
            f"{augmented_floats:.3f} ms/image",
        ),
        ("crops alone: the batch's in one grid_sample", f"{batched:.3f} ms/image"),
        ("bytes per batch of 128: uint8 / float32", f"{megabytes[0]:.1f} MB / {megabytes[1]:.1f} MB"),
        ("hftl loader with augmentation, one process", f"{loader_rate(cached, collator):.0f} images/s"),
        ("  two workers, uint8 batches", f"{loader_rate(cached, collator, 2):.0f} images/s"),
        (
            "  two workers, float32 batches (hftl before)",
            f"{float_loader:.0f} images/s",
        ),
        (
            "an epoch's first batch, two workers: started afresh (hftl) / kept",
            f"{first_batch_ms(cached, collator, False):.0f} ms / {first_batch_ms(cached, collator, True):.0f} ms",
        ),
        (
            "with_transform loader (decode + processor per item), one process",
            f"{loader_rate(common.encode_images(data['train'], processor), default_data_collator):.0f} images/s",
        ),
    ]
    common.print_report(f"Image batches on {common.machine()}, {count} images at 224 px", report)


if __name__ == "__main__":
    main()
