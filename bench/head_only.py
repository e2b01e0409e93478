"""Benchmark (a): a new head on a frozen backbone for 10 epochs. hftl with the frozen-feature cache vs the usual way,
`transformers.Trainer` with every backbone parameter frozen (which runs the whole backbone on every example in
every epoch). Same model, data, batch size, epochs, learning rate, schedule and seed; both evaluate every epoch.

    python bench/head_only.py                                   # MiniLM-L6 (real weights) on SST-2, CPU
    python bench/head_only.py --task image --model resnet-18    # ResNet-18 shape on ants/bees photos
    python bench/head_only.py --device cuda --train-size 20000  # on a GPU
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402  # `python bench/head_only.py` from anywhere


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", choices=["text", "image"], default="text")
    parser.add_argument("--model", default=None, help="minilm | vit-tiny | resnet-18 | ... | a model folder")
    parser.add_argument("--train-size", type=int, default=2000, help="text: SST-2 training phrases")
    parser.add_argument(
        "--eval-size", type=int, default=None, help="text: validation sentences (default 872)"
    )
    common.add_run_args(parser, epochs=10, batch_size=32, lr=1e-2)
    args = parser.parse_args()
    common.setup(args)
    args.model = args.model or ("minilm" if args.task == "text" else "resnet-18")

    import torch

    import hftl

    work = args.out or Path(tempfile.mkdtemp(prefix="hftl-bench-head-"))
    shutil.rmtree(work / "features", ignore_errors=True)
    model_path = common.resolve_model(args.model, work / "model")
    data = common.sst2(args.train_size, args.eval_size) if args.task == "text" else common.hymenoptera()
    print(f"machine: {common.machine()} ({common.load_average()})")
    print(
        f"model {args.model} ({model_path}); {len(data['train'])} train / {len(data['validation'])} validation"
    )

    settings = dict(
        task=args.task,
        case="small_similar",
        strategy="head",  # head-only on the whole frozen body (a small ResNet's or ViT's small_similar default is partial)
        model=str(model_path),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        augment=False,
        save_total_limit=1,
        log_steps=5,
        feature_cache_dir=str(work / "features"),
    )
    started = time.perf_counter()
    first = hftl.train(dataset=data, output_dir=str(work / "hftl"), **settings)
    hftl_seconds = time.perf_counter() - started
    started = time.perf_counter()
    again = hftl.train(dataset=data, output_dir=str(work / "hftl-again"), **settings)
    again_seconds = time.perf_counter() - started

    # the usual way: Trainer, every parameter but the head frozen, the full forward pass every step
    started = time.perf_counter()
    model, encoded, collator = common.baseline_inputs(args.task, data, model_path, args.seed)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("classifier"))
    baseline = common.trainer_run(model, encoded, collator, work / "trainer", args)
    trainer_seconds = time.perf_counter() - started

    hftl_final = first.metrics["history"][-1]["eval_accuracy"]
    cache = first.metrics["feature_cache"]
    common.print_report(
        f"(a) head-only, {args.epochs} epochs, batch {args.batch_size}, lr {args.lr}, seed {args.seed}, {args.device}",
        [
            (
                "hftl (cache built in this run)",
                f"{hftl_seconds:.1f} s end to end (cache build {cache['build_seconds']:.1f} s, training loop {first.metrics['train_seconds']:.1f} s)",
            ),
            (
                "hftl (cache reused)",
                f"{again_seconds:.1f} s end to end (hit={again.metrics['feature_cache']['hit']})",
            ),
            (
                "Trainer, frozen backbone",
                f"{trainer_seconds:.1f} s end to end (training loop {baseline.train_seconds:.1f} s)",
            ),
            (
                "speed-up (end to end)",
                f"{trainer_seconds / hftl_seconds:.1f}x (cache reused: {trainer_seconds / again_seconds:.1f}x)",
            ),
            (
                "accuracy, final epoch",
                f"hftl {100 * hftl_final:.2f}% vs Trainer {100 * baseline.accuracy[-1]:.2f}% ({100 * (hftl_final - baseline.accuracy[-1]):+.2f} points)",
            ),
            (
                "accuracy, best epoch",
                f"hftl {100 * first.metrics['best']['eval_accuracy']:.2f}% vs Trainer {100 * max(baseline.accuracy):.2f}%",
            ),
            ("cache", f"{cache['cut']}; {cache['bytes'] / 2**20:.1f} MiB at {cache['path']}"),
            ("torch threads", str(torch.get_num_threads())),
        ],
    )


if __name__ == "__main__":
    main()
