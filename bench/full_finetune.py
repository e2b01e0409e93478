"""Benchmark (b): full fine-tuning throughput. hftl vs `transformers.Trainer` on the same model, data, batch size,
epochs, learning rate, schedule and seed; both evaluate every epoch, and both use plain shuffling with dynamic
padding (hftl's length grouping is off here, so the batches have the same shapes).

    python bench/full_finetune.py                                   # MiniLM-L6 (real weights) on SST-2, CPU
    python bench/full_finetune.py --task image --model vit-tiny     # ViT-tiny shape on ants/bees photos
    # the H100 MFU check: ViT-B/16 in bf16 (target: MFU >= 30%)
    python bench/full_finetune.py --task image --model vit-b16 --device cuda --mixed-precision bf16 \
        --batch-size 128 --epochs 2 --repeat 40
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", choices=["text", "image"], default="text")
    parser.add_argument(
        "--model", default=None, help="minilm | vit-tiny | vit-b16 | resnet-18 | ... | a folder"
    )
    parser.add_argument("--train-size", type=int, default=1024, help="text: SST-2 training phrases")
    parser.add_argument("--eval-size", type=int, default=256, help="text: validation sentences")
    parser.add_argument("--repeat", type=int, default=1, help="repeat the training split (throughput runs)")
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    common.add_run_args(parser, epochs=2, batch_size=16, lr=5e-05)
    args = parser.parse_args()
    common.setup(args)
    args.model = args.model or ("minilm" if args.task == "text" else "vit-tiny")

    from datasets import concatenate_datasets

    import hftl

    work = args.out or Path(tempfile.mkdtemp(prefix="hftl-bench-full-"))
    model_path = common.resolve_model(args.model, work / "model")
    data = common.sst2(args.train_size, args.eval_size) if args.task == "text" else common.hymenoptera()
    if args.repeat > 1:
        data["train"] = concatenate_datasets([data["train"]] * args.repeat)
    samples = len(data["train"]) * args.epochs
    print(f"machine: {common.machine()} ({common.load_average()})")
    print(
        f"model {args.model} ({model_path}); {len(data['train'])} train / {len(data['validation'])} validation"
    )

    result = hftl.train(
        dataset=data,
        task=args.task,
        case="large_similar",  # new head, fine-tune everything
        model=str(model_path),
        output_dir=str(work / "hftl"),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        augment=False,
        group_by_length=False,
        mixed_precision=args.mixed_precision,
        save_total_limit=1,
        log_steps=5,
    )
    hftl_rate = samples / result.metrics["train_seconds"]

    pad = 8 if args.device == "cuda" else None
    model, encoded, collator = common.baseline_inputs(args.task, data, model_path, args.seed, pad)
    baseline = common.trainer_run(
        model, encoded, collator, work / "trainer", args, bf16=args.mixed_precision == "bf16"
    )
    trainer_rate = samples / baseline.train_seconds

    throughput = result.metrics["throughput"]
    ours = common.hftl_losses(work / "hftl")
    mfu = throughput.get("mfu")
    common.print_report(
        f"(b) full fine-tuning, {args.epochs} epochs, batch {args.batch_size}, {args.mixed_precision}, {args.device}",
        [
            (
                "hftl",
                f"steady state {throughput['samples_per_second']:.1f} samples/s (waiting for data "
                f"{100 * throughput['data_wait_fraction']:.1f}%); whole loop {hftl_rate:.1f} samples/s "
                f"({result.metrics['train_seconds']:.1f} s incl. eval + checkpoints)",
            ),
            (
                "Trainer",
                f"steady state {baseline.steady_samples_per_second:.1f} samples/s; whole loop {trainer_rate:.1f} "
                f"samples/s ({baseline.train_seconds:.1f} s incl. eval, no checkpoints)",
            ),
            (
                "ratio hftl / Trainer",
                f"{throughput['samples_per_second'] / baseline.steady_samples_per_second:.2f} steady state, "
                f"{hftl_rate / trainer_rate:.2f} whole loop",
            ),
            (
                "accuracy, final epoch",
                f"hftl {100 * result.metrics['history'][-1]['eval_accuracy']:.2f}% vs Trainer {100 * baseline.accuracy[-1]:.2f}%",
            ),
            (
                "loss curves (every 5 steps)",
                f"correlation {common.curve_similarity(ours, baseline.losses):.3f}",
            ),
            ("  hftl", " ".join(f"{x:.3f}" for x in ours[:12])),
            ("  Trainer", " ".join(f"{x:.3f}" for x in baseline.losses[:12])),
            ("FLOPs per sample (fwd+bwd)", f"{throughput.get('flops_per_sample', float('nan')):.3e}"),
            (
                "MFU",
                f"{100 * mfu:.1f}% of {throughput['peak_source']}"
                if mfu is not None
                else f"n/a on {args.device}",
            ),
        ],
    )


if __name__ == "__main__":
    main()
