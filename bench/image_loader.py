"""Where an image batch's CPU time goes before it reaches the GPU: hftl's decode-once preprocessing, reading one
cached uint8 image (datasets' torch formatting vs plain Arrow), hftl's collator, and the usual per-item
``with_transform`` pipeline, on synthetic 224 px BMP images (docs/benchmarks.md, GPU section).

    python bench/image_loader.py [--images 512]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import ViTImageProcessor, default_data_collator  # noqa: E402

from bench import common  # noqa: E402
from bench.gpu_benchmarks import images  # noqa: E402
from hftl.data.loading import Splits  # noqa: E402
from hftl.data.preprocess import prepare_inputs  # noqa: E402


def per_item_ms(work, count: int) -> float:
    started = time.perf_counter()
    work()
    return (time.perf_counter() - started) / count * 1000


def loader_rate(dataset, collate, batch: int = 64) -> float:
    started, seen = time.perf_counter(), 0
    for chunk in torch.utils.data.DataLoader(dataset, batch_size=batch, collate_fn=collate, num_workers=0):
        seen += len(chunk["pixel_values"])
    return seen / (time.perf_counter() - started)


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
    inputs = prepare_inputs(splits, "image", processor, augment=False)
    once = (time.perf_counter() - started) / (count + 16) * 1000
    cached = inputs.train
    arrow, sample = cached.with_format("arrow"), [cached[i] for i in range(64)]
    rows = [
        ("hftl: decode and resize once (datasets.map, one process)", f"{once:.2f} ms/image"),
        ("read one cached image, torch format", f"{per_item_ms(lambda: [cached[i] for i in range(count)], count):.3f} ms"),
        ("read one cached image, arrow format", f"{per_item_ms(lambda: [arrow[i] for i in range(count)], count):.3f} ms"),
        ("hftl collator (stack, rescale, normalise)", f"{per_item_ms(lambda: [inputs.train_collator(sample) for _ in range(8)], 8 * 64):.3f} ms/image"),
        ("hftl loader, one process", f"{loader_rate(cached, inputs.train_collator):.0f} images/s"),
        ("with_transform loader (decode + processor per item), one process", f"{loader_rate(common.encode_images(data['train'], processor), default_data_collator):.0f} images/s"),
    ]  # fmt: skip
    common.print_report(f"Image batches on {common.machine()}, {count} images at 224 px", rows)


if __name__ == "__main__":
    main()
