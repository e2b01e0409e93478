"""Benchmark (c): text with mixed lengths. hftl's dynamic padding + length-grouped batches vs padding every example
to the maximum length (the longest sequence in the data, rounded up to 8: the most favourable fixed length), with
`transformers.Trainer`. Full fine-tuning; same model, data, batch size, epochs, learning rate and seed. hftl with
plain shuffling (dynamic padding only) is printed too, to show what grouping adds.

    python bench/padding.py                      # MiniLM-L6 (real weights) on SST-2 phrases, CPU, 2 epochs
    python bench/padding.py --device cuda --train-size 20000
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
    parser.add_argument("--model", default="minilm", help="minilm | bert-mini | a model folder")
    parser.add_argument("--train-size", type=int, default=1024)
    parser.add_argument("--eval-size", type=int, default=256)
    common.add_run_args(parser, epochs=2, batch_size=16, lr=5e-05)
    args = parser.parse_args()
    common.setup(args)

    import numpy as np
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        default_data_collator,
        set_seed,
    )

    import hftl

    work = args.out or Path(tempfile.mkdtemp(prefix="hftl-bench-padding-"))
    model_path = common.resolve_model(args.model, work / "model")
    data = common.sst2(args.train_size, args.eval_size)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    lengths = np.array(
        [
            len(ids)
            for ids in tokenizer(list(data["train"]["text"]), truncation=True, max_length=128)["input_ids"]
        ]
    )
    max_length = int(-(-lengths.max() // 8) * 8)
    samples = len(data["train"]) * args.epochs
    print(f"machine: {common.machine()} ({common.load_average()})")
    print(
        f"model {args.model}; {len(data['train'])} SST-2 training phrases: tokens per example mean {lengths.mean():.1f}, "
        f"median {np.median(lengths):.0f}, max {lengths.max()} -> fixed length {max_length}"
    )

    rates, accuracy = {}, {}
    for name, grouped in (
        ("hftl, dynamic padding + length grouping", True),
        ("hftl, dynamic padding only", False),
    ):
        result = hftl.train(
            dataset=data,
            task="text",
            case="large_similar",
            model=str(model_path),
            output_dir=str(work / f"hftl-{grouped}"),
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            max_length=128,
            group_by_length=grouped,
            save_total_limit=1,
        )
        steady = result.metrics["throughput"]["samples_per_second"]
        rates[name] = (steady, samples / result.metrics["train_seconds"])
        accuracy[name] = result.metrics["history"][-1]["eval_accuracy"]

    set_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    encoded = common.encode_text(data, tokenizer, max_length=max_length, padding="max_length")
    baseline = common.trainer_run(model, encoded, default_data_collator, work / "trainer", args)
    fixed = f"Trainer, padded to {max_length}"
    rates[fixed] = (baseline.steady_samples_per_second, samples / baseline.train_seconds)
    accuracy[fixed] = baseline.accuracy[-1]

    best, plain = "hftl, dynamic padding + length grouping", "hftl, dynamic padding only"
    rows = [
        (
            name,
            f"steady state {steady:.1f} samples/s, whole loop {whole:.1f} samples/s, accuracy {100 * accuracy[name]:.2f}%",
        )
        for name, (steady, whole) in rates.items()
    ]
    rows.append(
        (
            "speed-up vs fixed length",
            f"{rates[best][0] / rates[fixed][0]:.2f}x steady state, {rates[best][1] / rates[fixed][1]:.2f}x whole loop "
            f"(dynamic padding only: {rates[plain][0] / rates[fixed][0]:.2f}x steady state)",
        )
    )
    common.print_report(
        f"(c) mixed lengths, full fine-tuning, {args.epochs} epochs, batch {args.batch_size}, {args.device}",
        rows,
    )


if __name__ == "__main__":
    main()
