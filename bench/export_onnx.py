"""ONNX export of real runs: how long ``hftl export`` takes, how far ONNX Runtime's logits are from PyTorch's on the
run's validation examples, and how long each takes for one batch of 32 on the CPU; and, for the choice of exporter,
the export call alone through torch.export (hftl's) and through torch's deprecated TorchScript exporter.

Offline, real weights where they exist: all-MiniLM-L6-v2 fine-tuned on SST-2 sentences (``full``, and ``lora``,
which the export merges), GloVe-50d word vectors on the same sentences, and a ResNet-18-shaped network (random
weights: no pretrained ResNet is reachable offline) cut to its first two stages (``small_different``) on the
ants/bees photos. Each run trains one short epoch (the numbers here are about the export, not the accuracy); the
data is written as files so that the export's check reads the run's own validation examples. Run:

    python bench/export_onnx.py --threads 1          # about 15 minutes (training included) on 2 shared CPU cores
    python bench/export_onnx.py --runs minilm-full --train-size 1000
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

RUNS = ("minilm-full", "minilm-lora", "glove", "resnet18-cut")
LATENCY_BATCH = 32


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, from {', '.join(RUNS)}")
    parser.add_argument("--train-size", type=int, default=256, help="SST-2 training sentences")
    parser.add_argument(
        "--repeats", type=int, default=10, help="timed batches per side (the median is shown)"
    )
    common.add_run_args(parser, epochs=1, batch_size=32, lr=1e-4)
    args = parser.parse_args()
    common.setup(args)
    out = args.out or Path("runs/bench-export-onnx")
    rows = []
    for name in args.runs.split(","):
        run = train(name, out, args)
        rows.append({"run": name, **measure(run, args.repeats)})
        print(json.dumps(rows[-1]))
    print(f"\n{common.machine()} | {common.load_average()}\n")
    print(
        "| run | hftl export (load, export, check) | max abs logit difference | export call: torch.export vs "
        "TorchScript | TorchScript's difference | ONNX Runtime, batch 32 | PyTorch, batch 32 | model.onnx |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['run']} | {row['export_seconds']:.1f} s | {row['max_abs_diff']:.2g} ({row['checked_on']}) | "
            f"{row['dynamo_call_seconds']:.1f} s vs {row['torchscript_call_seconds']:.2f} s | "
            f"{row['torchscript_max_abs_diff']:.2g} | {row['onnx_ms']:.1f} ms | {row['torch_ms']:.1f} ms | "
            f"{row['onnx_mb']:.1f} MB |"
        )
    (out / "export_onnx.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


def sst2_files(folder: Path, train_size: int, seed: int) -> Path:
    """A seeded SST-2 sample as train.csv / validation.csv (the 872 labelled dev sentences)."""
    data = common.sst2(train_size, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        names = data[split].features["label"].names
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows((row["text"], names[row["label"]]) for row in data[split])
    return folder


def train(name: str, out: Path, args: argparse.Namespace) -> Path:
    """One short run (reused when its folder already holds one)."""
    import hftl

    folder = out / name
    if (folder / "metrics.json").is_file():
        return folder
    settings = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "save_total_limit": 1,
        "report_to": "none",
        "output_dir": str(folder),
    }
    if name.startswith(("minilm", "glove")):
        data = sst2_files(out / "sst2", args.train_size, args.seed)
        model = str(common.minilm()) if name.startswith("minilm") else f"vectors:{glove()}"
        strategy = {"minilm-full": "full", "minilm-lora": "lora", "glove": "head"}[name]
        hftl.train(
            task="text",
            case="large_similar" if name.startswith("minilm") else "small_similar",
            strategy=strategy,
            model=model,
            dataset=str(data),
            max_length=64,
            lr={"full": args.lr, "lora": 1e-3, "head": 1e-2}[strategy],
            **settings,
        )
    elif name == "resnet18-cut":
        model = common.shaped_model("resnet-18", out / "resnet-18-shape", seed=args.seed)
        hftl.train(
            task="image",
            case="small_different",
            strategy="head",  # the textbook rule: the first two stages, frozen, a new head (the cut)
            model=str(model),
            dataset=str(common.ASSETS / "hymenoptera_data"),
            lr=1e-3,
            augment=False,
            **settings,
        )
    else:
        sys.exit(f"unknown run {name!r}; choose from {', '.join(RUNS)}")
    return folder


def glove() -> Path:
    path = common.ASSETS / "glove" / "glove.6B.50d.top50k.txt"
    if not path.is_file():
        sys.exit(f"GloVe vectors not found at {path}")
    return path


def measure(run: Path, repeats: int) -> dict:
    """Export (timed), then one validation batch of 32 through ONNX Runtime and through the PyTorch model."""
    import onnxruntime
    import torch

    import hftl
    from hftl.inference.predict import load_processor_of
    from hftl.outputs.onnx_check import encode, validation_items
    from hftl.outputs.onnx_export import merged

    started = time.perf_counter()
    result = hftl.export(run, overwrite=(run / "onnx").is_dir())
    export_seconds = time.perf_counter() - started
    model = merged(hftl.load(run)).eval()  # LoRA merged, as in the graph: the same arithmetic on both sides
    modality = "image" if result.inputs == ("pixel_values",) else "text"
    items, pairs, max_length = validation_items(run, modality, LATENCY_BATCH)
    batch = encode(load_processor_of(run, modality), modality, items, pairs, max_length)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(
        str(result.model_file), options, providers=["CPUExecutionProvider"]
    )
    feed = {node.name: batch[node.name].numpy() for node in session.get_inputs()}

    def onnx_call() -> None:
        session.run(None, feed)

    def torch_call() -> None:
        with torch.no_grad():
            model(**batch)

    size = sum(p.stat().st_size for p in result.folder.glob("model.onnx*"))
    return {
        "export_seconds": export_seconds,
        "max_abs_diff": result.max_abs_diff,
        "checked_on": result.checked_on,
        "onnx_ms": median_ms(onnx_call, repeats),
        "torch_ms": median_ms(torch_call, repeats),
        "onnx_mb": size / 1e6,
        **exporters(run, result.folder.parent / "onnx-exporters"),
        "inputs": list(result.inputs),
        "opset": result.opset,
    }


def exporters(run: Path, folder: Path) -> dict[str, float]:
    """The export call alone, through torch.export (what ``hftl export`` uses) and through the deprecated
    TorchScript exporter (``dynamo=False``), on the same merged model and example batch; each graph's max abs logit
    difference from PyTorch on the same check batch."""
    import warnings

    import torch

    from hftl.outputs import onnx_check, onnx_export

    model, processor, modality = onnx_export.load_for_export(run)
    batch = onnx_check.check_batch(run, processor, modality)
    expected = onnx_check.torch_logits(model, batch.inputs)
    model = onnx_export.merged(model)
    example = onnx_check.example_batch(processor, modality)
    names = tuple(example)
    axes = {n: ({0: "batch", 1: "sequence"} if example[n].dim() == 2 else {0: "batch"}) for n in names}
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    onnx_export.to_onnx(model, example, folder / "dynamo.onnx", None)
    dynamo_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            onnx_export.LogitsOnly(model, names).eval(),
            tuple(example[n] for n in names),
            str(folder / "torchscript.onnx"),
            input_names=list(names),
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}},
            dynamo=False,
        )
    torchscript_seconds = time.perf_counter() - started
    diffs = {
        name: onnx_check.max_abs_diff(onnx_check.onnx_logits(folder / f"{name}.onnx", batch.inputs), expected)
        for name in ("dynamo", "torchscript")
    }
    return {
        "dynamo_call_seconds": dynamo_seconds,
        "torchscript_call_seconds": torchscript_seconds,
        "torchscript_max_abs_diff": diffs["torchscript"],
    }


def median_ms(call, repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


if __name__ == "__main__":
    main()
