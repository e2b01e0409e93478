"""GPU benchmarks in one command (``bench/gpu_benchmarks.sh``): hftl against ``transformers.Trainer`` on the same
randomly initialised models (built from their configs: the GPU machine has no Hub), the same synthetic data, batch
size, epochs, learning rate, seed and bf16 autocast. Writes a markdown table.

1. ViT-B/16, full fine-tuning: steady samples/s and MFU; again with float32 batches normalised in the DataLoader
   workers, as hftl sent them before its batches stayed uint8 up to the model (Trainer's run is not repeated).
2. ViT-B/16, head-only: hftl trains on its frozen-feature cache (the backbone runs once); Trainer freezes the backbone
   and runs it on every example in every epoch. Wall time of the whole run, cache build included.
3. BERT-base on SST-2-like sentences (8-40 words, two labels), full fine-tuning: steady samples/s and MFU.

MFU: FLOPs per training sample counted by hftl (torch's FlopCounterMode on one real step: matmuls, convolutions,
attention; see hftl.training.throughput) x steady samples/s / the device's peak dense bf16 FLOP/s. Trainer's MFU
uses the same FLOPs per sample (same model, same batch), so the two differ only by their speed.

    bash bench/gpu_benchmarks.sh                 # one GPU, about 5 minutes on an H100
    python bench/gpu_benchmarks.py --smoke       # tiny sizes on CPU: checks that everything runs (no numbers)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench import common  # noqa: E402  # `python bench/gpu_benchmarks.py` from anywhere

# full sizes fit one H100 in about 5 minutes; --smoke runs the same code on tiny ones
SIZES = {
    "full": {
        "images": 4096,
        "image_eval": 512,
        "image_side": 224,
        "texts": 16384,
        "text_eval": 872,
        "epochs": 2,
    },
    "smoke": {"images": 96, "image_eval": 16, "image_side": 32, "texts": 96, "text_eval": 32, "epochs": 1},
}
BATCH = {"full": {"vit": 128, "head": 256, "bert": 64}, "smoke": {"vit": 8, "head": 8, "bert": 8}}
LR = {"vit": 5e-5, "head": 1e-3, "bert": 3e-5}
# DataLoader workers on both sides: images are decoded and resized on the CPU (16 cores on the lent machines)
WORKERS = min(12, max(0, (os.cpu_count() or 1) - 2)) if torch.cuda.is_available() else 0


@dataclass
class Row:
    name: str
    hftl: dict[str, Any]
    trainer: dict[str, Any]
    mfu: bool = True


def vit(folder: Path, smoke: bool) -> Path:
    """ViT-B/16 at 224 px (or a tiny ViT for --smoke), random weights, with its processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    tiny = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=8
    )
    config = ViTConfig(image_size=32, **tiny) if smoke else ViTConfig()  # ViTConfig() is ViT-B/16
    ViTForImageClassification(config).save_pretrained(folder)
    side = config.image_size
    ViTImageProcessor(size={"height": side, "width": side}).save_pretrained(folder)
    return folder


def bert(folder: Path, smoke: bool, **shape: int) -> Path:
    """BERT-base (or a tiny BERT, or ``shape``'s sizes), random weights, with a WordPiece tokenizer over a made-up
    vocabulary of BERT's 30,522 entries."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(30522 - 5))]
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(words)}, do_lower_case=True)
    tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    config = BertConfig(**(shape or (tiny if smoke else {})))  # BertConfig() is BERT-base, vocabulary 30522
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def images(train: int, validation: int, side: int):
    """RGB images of two classes (more red or more blue), stored as BMP: encoding and decoding them costs the CPU
    next to nothing, so the benchmark measures training, not PNG compression."""
    import io

    import numpy as np
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as ImageFeature
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(side), np.arange(side))[..., None]
    ramps = [((ramp * k) % 256).astype(np.uint8) for k in (1, 2, 3)]  # uint8 sums wrap: no wide arrays

    def bmp(label: int) -> dict[str, Any]:
        colour = rng.integers(60, 200, size=3).astype(np.uint8)
        colour[0 if label else 2] += 55
        buffer = io.BytesIO()
        Image.fromarray(ramps[int(rng.integers(3))] + colour).save(buffer, format="BMP")
        return {"bytes": buffer.getvalue(), "path": None}

    def split(count: int) -> Dataset:
        labels = [i % 2 for i in range(count)]
        features = Features({"image": ImageFeature(), "label": ClassLabel(names=["red", "blue"])})
        return Dataset.from_dict(
            {"image": [bmp(label) for label in labels], "label": labels}, features=features
        )

    return DatasetDict(train=split(train), validation=split(validation))


def sentences(train: int, validation: int):
    """SST-2-like: 8-40 words each (SST-2's phrases are short); the label is the parity of the first word."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    rnd = random.Random(0)

    def split(count: int) -> Dataset:
        texts = [
            " ".join(f"w{rnd.randrange(30000)}" for _ in range(rnd.randint(8, 40))) for _ in range(count)
        ]
        labels = [int(text.split()[0][1:]) % 2 for text in texts]
        features = Features({"text": Value("string"), "label": ClassLabel(names=["negative", "positive"])})
        return Dataset.from_dict({"text": texts, "label": labels}, features=features)

    return DatasetDict(train=split(train), validation=split(validation))


def run_hftl(
    task: str,
    case: str,
    model: Path,
    data,
    out: Path,
    batch: int,
    lr: float,
    epochs: int,
    floats: bool = False,
) -> dict:
    import hftl

    started = time.perf_counter()
    with common.float32_batches() if floats else contextlib.nullcontext():
        result = train(hftl, task, case, model, data, out, batch, lr, epochs)
    throughput = result.metrics["throughput"]
    return {
        "samples_per_second": throughput["samples_per_second"],
        "data_wait": throughput["data_wait_fraction"],
        "mfu": throughput.get("mfu"),
        "flops_per_sample": throughput.get("flops_per_sample"),
        "wall_seconds": time.perf_counter() - started,
        "accuracy": result.metrics["best"].get("eval_accuracy"),
        "feature_cache": result.metrics["feature_cache"]["used"],
    }


def train(hftl: Any, task: str, case: str, model: Path, data, out: Path, batch: int, lr: float, epochs: int):
    return hftl.train(
        task=task,
        case=case,
        strategy="head" if case == "small_similar" else "full",
        model=str(model),
        dataset=data,
        output_dir=str(out),
        epochs=epochs,
        batch_size=batch,
        lr=lr,
        seed=42,
        mixed_precision="bf16",
        augment=False,
        save_total_limit=1,
        report_to="none",
        feature_cache_dir=str(out.parent / "features"),
        num_workers=WORKERS,
    )


def run_trainer(
    task: str, model: Path, data, out: Path, batch: int, lr: float, epochs: int, head: bool
) -> dict:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    network, encoded, collator = common.baseline_inputs(task, data, model, seed=42)
    if head:  # the usual head-only: every backbone parameter frozen, the whole forward pass every step
        for name, parameter in network.named_parameters():
            parameter.requires_grad_(name.startswith("classifier"))
    args = SimpleNamespace(epochs=epochs, batch_size=batch, lr=lr, seed=42, device=device)
    run = common.trainer_run(network, encoded, collator, out, args, bf16=True, num_workers=WORKERS)
    return {
        "samples_per_second": run.steady_samples_per_second,
        "wall_seconds": time.perf_counter() - started,
        "accuracy": run.accuracy[-1] if run.accuracy else None,
    }


def trainer_mfu(row: Row) -> float | None:
    """Trainer's MFU with hftl's FLOPs per sample (same model and batch) and the device's bf16 peak."""
    import torch

    from hftl.training.throughput import peak_flops

    per_sample = row.hftl.get("flops_per_sample")
    peak = peak_flops(torch.cuda.get_device_name(0), "bf16") if torch.cuda.is_available() else None
    if not per_sample or peak is None:
        return None
    return per_sample * row.trainer["samples_per_second"] / peak[0]


def table(rows: list[Row], machine: str, smoke: bool) -> str:
    def number(value: Any, pattern: str = "{:.0f}") -> str:
        return "—" if value is None or value != value else pattern.format(value)  # None or NaN: not measured

    lines = [
        f"GPU benchmarks ({'smoke: tiny sizes, not measurements' if smoke else 'bf16'}) on {machine}",
        "",
        "| benchmark | hftl samples/s | Trainer samples/s | hftl / Trainer | hftl MFU | Trainer MFU "
        "| hftl wall s | Trainer wall s | hftl data wait |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        hftl, trainer = row.hftl, row.trainer
        ratio = hftl["samples_per_second"] / trainer["samples_per_second"]  # NaN: Trainer had no steady steps
        mfu = hftl.get("mfu") if row.mfu else None
        lines.append(
            f"| {row.name} | {number(hftl['samples_per_second'])} | {number(trainer['samples_per_second'])} "
            f"| {number(ratio, '{:.2f}x')} | {number(mfu, '{:.1%}')} "
            f"| {number(trainer_mfu(row) if row.mfu else None, '{:.1%}')} | {number(hftl['wall_seconds'])} "
            f"| {number(trainer['wall_seconds'])} | {number(hftl['data_wait'], '{:.1%}')} |"
        )
    lines += [
        "",
        "Samples/s: steady state (first 5 steps and evaluations left out), per run on one device. Wall: the whole "
        "run, model loading, preprocessing, every epoch's evaluation and (hftl, head-only) the feature-cache build "
        "included. MFU as in the script's docstring; head-only shows none (the frozen backbone's forward is not "
        "training work).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny models and data (CPU is fine): a dry run")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--report", type=Path, default=None, help="write the markdown table here too")
    args = parser.parse_args()
    scale = "smoke" if args.smoke else "full"
    sizes, batch = SIZES[scale], BATCH[scale]
    work = args.out or Path(tempfile.mkdtemp(prefix="hftl-gpu-bench-"))
    started = time.perf_counter()
    machine = common.machine()
    print(f"machine: {machine}; work folder {work}", flush=True)

    vit_dir, bert_dir = vit(work / "vit-b16", args.smoke), bert(work / "bert-base", args.smoke)
    pictures = images(sizes["images"], sizes["image_eval"], sizes["image_side"])
    texts = sentences(sizes["texts"], sizes["text_eval"])
    epochs, rows = sizes["epochs"], []
    full_vit = ("image", "large_similar", vit_dir, pictures, "vit", False)
    plans = [  # name, task, case, model, data, kind, head-only, float32 batches
        ("ViT-B/16 full fine-tuning", *full_vit, False),
        ("ViT-B/16 full fine-tuning, float32 batches (before)", *full_vit, True),
        (
            "ViT-B/16 head-only (hftl: feature cache)",
            "image",
            "small_similar",
            vit_dir,
            pictures,
            "head",
            True,
            False,
        ),
        (
            "BERT-base SST-2-like full fine-tuning",
            "text",
            "large_similar",
            bert_dir,
            texts,
            "bert",
            False,
            False,
        ),
    ]
    for index, (name, task, case, model, data, kind, head, floats) in enumerate(plans):
        mine = run_hftl(
            task, case, model, data, work / f"hftl-{index}", batch[kind], LR[kind], epochs, floats
        )
        print(f"{name}: hftl {json.dumps(mine)} ({time.perf_counter() - started:.0f} s so far)", flush=True)
        if floats:  # the same Trainer run as the row above
            rows.append(Row(name, mine, rows[-1].trainer, mfu=True))
            continue
        theirs = run_trainer(
            task, model, data, work / f"trainer-{index}", batch[kind], LR[kind], epochs, head
        )
        print(
            f"{name}: Trainer {json.dumps(theirs)} ({time.perf_counter() - started:.0f} s so far)", flush=True
        )
        rows.append(Row(name, mine, theirs, mfu=not head))
    report = table(rows, machine, args.smoke)
    print("\n" + report)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report, encoding="utf-8")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
