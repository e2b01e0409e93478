"""Transfer vs from-scratch on real data, with the advisor's verdicts: the figures in docs/transfer_benefits.md.

Text: all-MiniLM-L6-v2 (a real pretrained BERT, from `get-registry-assets.sh`) on SST-2 sentences.
Images: no ImageNet ResNet/ViT weights are reachable offline, so a source model is developed first (the "develop a
model" route): a small ResNet trained from scratch on Fashion-MNIST classes 0-4, then transferred to classes 5-9
(similar domain) and scored on ants/bees photos (a different domain).

    ../shared/assets/get-registry-assets.sh            # once: MiniLM-L6 and Fashion-MNIST into ~/.cache/hftl-assets
    python bench/transfer_benefits.py --out runs/bench  # all parts (tens of CPU minutes); --parts text,image,advise

Each part writes its `hftl compare` report (report.md, report.html, PNG curves) or its advice under --out and the
headline numbers to OUT/summary.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import hftl  # noqa: E402
from bench.common import ASSETS as SHARED  # noqa: E402
from bench.common import REGISTRY_ASSETS as CACHE  # noqa: E402
from hftl.advisor.advise import advise  # noqa: E402
from hftl.advisor.decision import write_advice  # noqa: E402
from hftl.config import resolve_config  # noqa: E402
from hftl.recipes.compare import CompareSettings, compare  # noqa: E402
from hftl.recipes.demo_data import find_fashion_mnist, read_idx  # noqa: E402

FASHION = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
]


# --- data ---------------------------------------------------------------------------------------------------------
def sst2(train_size: int, seed: int = 0) -> DatasetDict:
    """SST-2: `train_size` sentences (>= 6 words) sampled from train.tsv; the 872 labelled GLUE dev sentences
    (shipped as test.tsv) as validation."""

    def read(name: str) -> list[tuple[str, int]]:
        with open(SHARED / "sst2" / name, encoding="utf-8") as handle:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        return [(text.strip(), int(label)) for text, label in rows]

    train = [row for row in read("train.tsv") if len(row[0].split()) >= 6]
    train = random.Random(seed).sample(train, train_size)
    validation = read("test.tsv")
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"])})

    def build(rows):
        return Dataset.from_dict(
            {"sentence": [t for t, _ in rows], "label": [y for _, y in rows]}, features=features
        )

    return DatasetDict({"train": build(train), "validation": build(validation)})


def _idx(name: str) -> np.ndarray:
    folder = find_fashion_mnist()
    if folder is None:
        raise SystemExit("Fashion-MNIST not found: run ../shared/assets/get-registry-assets.sh first")
    return read_idx(folder / name)


def fashion(classes: list[int], train_size: int, validation_size: int, seed: int = 0) -> DatasetDict:
    """Fashion-MNIST restricted to `classes` (relabelled 0..k-1), balanced samples of train and test."""
    rng = np.random.default_rng(seed)
    names = [FASHION[c] for c in classes]
    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    splits = {}
    for split, prefix, count in (("train", "train", train_size), ("validation", "t10k", validation_size)):
        images, labels = _idx(f"{prefix}-images-idx3-ubyte.gz"), _idx(f"{prefix}-labels-idx1-ubyte.gz")
        chosen = np.concatenate(
            [rng.choice(np.nonzero(labels == c)[0], count // len(classes), replace=False) for c in classes]
        )
        rng.shuffle(chosen)
        splits[split] = Dataset.from_dict(
            {
                "image": [PILImage.fromarray(images[i]).convert("RGB") for i in chosen],
                "label": [classes.index(int(labels[i])) for i in chosen],
            },
            features=features,
        )
    return DatasetDict(splits)


def hymenoptera() -> str:
    return str(SHARED / "hymenoptera_data")


# --- models -------------------------------------------------------------------------------------------------------
def develop_source_resnet(out: Path, epochs: int) -> Path:
    """A small ResNet trained from scratch on Fashion-MNIST 0-4 with hftl itself: the source model."""
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    random_dir = out / "resnet-random"
    config = ResNetConfig(
        num_channels=3,
        embedding_size=32,
        hidden_sizes=[32, 64, 128, 256],
        depths=[1, 1, 1, 1],
        layer_type="basic",
    )
    ResNetForImageClassification(config).save_pretrained(random_dir)
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor.save_pretrained(random_dir)
    source = out / "resnet-fashion-0-4"
    if not (source / "model.safetensors").is_file():
        result = hftl.train(
            task="image",
            case="large_different",
            init="scratch",
            model=str(random_dir),
            dataset=fashion([0, 1, 2, 3, 4], 10000, 1000, seed=1),
            output_dir=str(source),
            epochs=epochs,
            batch_size=64,
            lr=2e-3,
            augment=False,
            save_total_limit=1,
        )
        print(f"source model: {result.metrics['best']}")
    return source


# --- parts --------------------------------------------------------------------------------------------------------
def run_compare(
    out: Path, dataset: DatasetDict, settings: dict, sizes: str, seeds: str, scratch_lr: float
) -> dict:
    config = resolve_config({**settings, "output_dir": str(out)})
    arms = CompareSettings(plans="case", train_sizes=sizes, seeds=seeds, scratch_lr=scratch_lr)
    report = compare(config, arms, dataset)
    return {
        "setup": report["transfer_setup"],
        "baseline": report["scratch_setup"],
        "sizes": [
            {
                "train_examples": size["train_examples"],
                "target": size["target"],
                "transfer": {k: v["mean"] for k, v in size["arms"]["transfer"].items()},
                "scratch": {k: v["mean"] for k, v in size["arms"]["scratch"].items()},
            }
            for size in report["sizes"]
        ],
    }


def learning_rate(case: str, fine_tune: float, head: float) -> float:
    """Full fine-tuning (large cases) or a new head on frozen features (small cases, and "auto" on these sets)."""
    return fine_tune if case.startswith("large") else head


def part_text(out: Path, args: argparse.Namespace) -> dict:
    settings = {
        "task": "text",
        "case": args.text_case,
        "model": str(CACHE / "minilm-l6"),
        "input_column": "sentence",
        "epochs": args.epochs,
        "batch_size": 32,
        "max_length": 64,
        "lr": learning_rate(args.text_case, 1e-4, 1e-3),
        "warmup_ratio": 0.0,  # both arms learn from the first step: "start" compares where they start from
        "save_total_limit": 1,
    }
    data = sst2(args.text_train)
    return run_compare(out / f"text-{args.text_case}", data, settings, args.text_sizes, args.seeds, 5e-4)


def part_image(out: Path, args: argparse.Namespace) -> dict:
    settings = {
        "task": "image",
        "case": args.image_case,
        "model": str(develop_source_resnet(out, args.source_epochs)),
        "epochs": args.epochs,
        "batch_size": 32,
        "lr": learning_rate(args.image_case, 2e-3, 1e-2),  # 2e-3: the source's and the baseline's lr
        "warmup_ratio": 0.0,
        "augment": False,
        "save_total_limit": 1,
    }
    data = fashion([5, 6, 7, 8, 9], args.image_train, 1000, seed=2)
    return run_compare(out / f"image-{args.image_case}", data, settings, args.image_sizes, args.seeds, 2e-3)


def part_advise(out: Path, args: argparse.Namespace) -> dict:
    source = develop_source_resnet(out, args.source_epochs)
    verdicts = {}
    for name, task, model, dataset in (
        ("minilm-sst2", "text", CACHE / "minilm-l6", sst2(args.text_train)),
        ("fashion04-to-fashion59", "image", source, fashion([5, 6, 7, 8, 9], args.image_train, 1000, seed=2)),
        ("fashion04-to-hymenoptera", "image", source, None),
    ):
        config = resolve_config(
            {
                "task": task,
                "case": "auto",
                "model": str(model),
                "dataset": hymenoptera() if dataset is None else "<in-memory>",
                "input_column": "sentence" if task == "text" else None,
                "max_length": 64,
            }
        )
        (advice,) = advise(config, dataset=dataset)
        write_advice(out / "advice" / name, [advice])
        print(advice.render())
        verdicts[name] = {
            "case": advice.decision.case,
            "keep_layers": advice.decision.keep_layers,
            "top_gain": next(s.gain for s in advice.scores if s.depth == advice.decision.top_depth),
            "scores": [(s.depth, s.logme, s.logme_random) for s in advice.scores],
            "leep": advice.leep,
            "per_class": advice.size.mean_per_class,
        }
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/bench-transfer")
    parser.add_argument("--parts", default="advise,text,image")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--source-epochs", type=int, default=2)
    parser.add_argument("--text-train", type=int, default=2000)
    parser.add_argument("--text-sizes", default="1000")
    parser.add_argument("--text-case", default="large_similar")
    parser.add_argument("--image-train", type=int, default=2000)
    parser.add_argument("--image-sizes", default="250,1000")
    parser.add_argument("--image-case", default="large_similar")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    parts = {"advise": part_advise, "text": part_text, "image": part_image}
    for name in args.parts.split(","):
        case = {"text": args.text_case, "image": args.image_case}.get(name)
        summary[f"{name}-{case}" if case else name] = parts[name](out, args)
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
