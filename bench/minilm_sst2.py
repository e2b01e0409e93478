"""MiniLM-L6 on SST-2: head-only, LoRA and full fine-tuning vs the same architecture from scratch, at a few sizes.

Real weights and data, offline: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT, 22.7M parameters) from
``get-registry-assets.sh`` and the SST-2 copy of the shared assets (training sentences of at least 6 words sampled
from ``train.tsv``; the 872 labelled GLUE dev sentences as the test set). Full fine-tuning vs scratch goes through
``hftl.recipes.compare`` (learning curves, and the three benefits: start, area under the curve, asymptote); head-only
(frozen features, cached) and LoRA are ordinary ``hftl.train`` runs on the same sentences. Run:

    python bench/minilm_sst2.py                       # sizes 250,600; 31 minutes on 2 heavily shared CPU cores
    python bench/minilm_sst2.py --sizes 250,1000,4000 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REGISTRY_ASSETS  # noqa: E402
from bench.transfer_benefits import sst2  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REGISTRY_ASSETS / "minilm-l6"))
    parser.add_argument("--sizes", default="250,600", help="training sentences, comma-separated")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--head-epochs", type=int, default=10, help="head-only trains on cached features: cheap"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output-dir", default="runs/bench-minilm-sst2")
    parser.add_argument(
        "--parts", default="compare,head,lora", help="what to run: compare (full vs scratch), head, lora"
    )
    args = parser.parse_args()

    import hftl
    from hftl.config import resolve_config
    from hftl.recipes.compare import CompareSettings, compare

    sizes = [int(s) for s in args.sizes.split(",")]
    data = sst2(max(sizes), seed=args.seed)
    out = Path(args.output_dir)
    common = {
        "task": "text",
        "model": args.model,
        "batch_size": 32,
        "max_length": 40,
        "seed": args.seed,
        "save_total_limit": 1,
        "report_to": "none",
    }
    config = resolve_config(
        {
            **common,
            "case": "large_similar",
            "epochs": args.epochs,
            "lr": 1e-4,
            "output_dir": str(out / "compare"),
        }
    )
    parts = set(args.parts.split(","))
    rows = []
    report = (
        compare(
            config,
            CompareSettings(plans="case", train_sizes=args.sizes, scratch_lr=5e-4, evals_per_epoch=1),
            data,
        )
        if "compare" in parts
        else {"sizes": []}
    )
    for size in report["sizes"]:
        transfer, scratch = size["arms"]["transfer"], size["arms"]["scratch"]
        rows.append({"train": size["train_examples"], "setup": "full (large_similar)", **_arm(transfer)})
        rows.append(
            {"train": size["train_examples"], "setup": "scratch (same architecture)", **_arm(scratch)}
        )
        rows[-2]["benefit"] = size["benefit"]
    for size in sizes:
        for setup, settings in {
            "head (small_similar)": {"case": "small_similar", "strategy": "head", "epochs": args.head_epochs},
            "LoRA r=8": {"case": "large_similar", "strategy": "lora", "epochs": args.epochs, "lr": 5e-4},
        }.items():
            if setup.split()[0].lower() not in parts:
                continue
            result = hftl.train(
                dataset=data,
                max_train_samples=size,
                output_dir=str(out / f"{size}-{settings.get('strategy', settings['case'])}"),
                **common,
                **settings,
            )
            rows.append(
                {
                    "train": result.metrics["train_examples"],
                    "setup": setup,
                    "accuracy": result.metrics["best"]["eval_accuracy"],
                    "trainable_percent": result.metrics["parameters"]["percent"],
                }
            )
    rows.sort(key=lambda r: (r["train"], r["setup"]))
    print(
        f"\nSST-2 (872 GLUE dev sentences), all-MiniLM-L6-v2, {args.epochs} epochs ({args.head_epochs} head-only)"
    )
    print(f"{'train':>6}  {'setup':<30}{'accuracy':>9}{'trainable %':>13}  benefit (start / auc / asymptote)")
    for row in rows:
        gain = row.get("benefit")
        benefit = f"{gain['start']:+.3f} / {gain['auc']:+.3f} / {gain['asymptote']:+.3f}" if gain else ""
        share = f"{row['trainable_percent']:.2f}" if "trainable_percent" in row else ""
        print(f"{row['train']:>6}  {row['setup']:<30}{row['accuracy']:>9.3f}{share:>13}  {benefit}")
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


def _arm(arm: dict) -> dict:
    return {"accuracy": arm["asymptote"]["mean"], "start": arm["start"]["mean"], "auc": arm["auc"]["mean"]}


if __name__ == "__main__":
    main()
