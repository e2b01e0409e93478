"""Word-vector transfer on SST-2: frozen GloVe vs fine-tuned GloVe vs random vectors (the scratch baseline).

Real data and real vectors, offline: the SST-2 copy and GloVe 6B 50-d (top 50k words) in ../shared/assets.
For a small and a larger training set it trains the three setups with ``hftl.train`` (same architecture: mean of
the word vectors -> MLP with 128 hidden units) and reports the best accuracy on the 872 labelled GLUE dev
sentences (``test.tsv``), the trainable parameters and the training time, as ratios against the scratch run of
the same size. Run:

    python bench/word_vectors_sst2.py                      # about 2 minutes on 2 CPU cores
    python bench/word_vectors_sst2.py --small 1000 --large 20000 --epochs 8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from datasets import DatasetDict, load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hftl  # noqa: E402
from bench.common import ASSETS  # noqa: E402  # `python bench/word_vectors_sst2.py` from anywhere

SETUPS = {
    "frozen GloVe (small_similar --strategy head)": {"case": "small_similar", "strategy": "head"},
    "fine-tuned GloVe (large_similar)": {"case": "large_similar"},
    "random vectors (large_different --init scratch)": {"case": "large_different", "init": "scratch"},
}


def sst2(folder: Path, train_size: int, seed: int) -> DatasetDict:
    files = {"train": str(folder / "train.tsv"), "validation": str(folder / "test.tsv")}
    data = load_dataset("csv", data_files=files, delimiter="\t", quoting=3)
    return DatasetDict(
        {
            "train": data["train"].shuffle(seed=seed).select(range(train_size)),
            "validation": data["validation"],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glove", default=str(ASSETS / "glove/glove.6B.50d.top50k.txt"))
    parser.add_argument("--sst2", default=str(ASSETS / "sst2"))
    parser.add_argument("--small", type=int, default=2000, help="training sentences of the small case")
    parser.add_argument("--large", type=int, default=20000, help="training sentences of the large case")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output-dir", default="runs/bench-word-vectors")
    args = parser.parse_args()

    rows = []
    for size in (args.small, args.large):
        data = sst2(Path(args.sst2), size, args.seed)
        for name, setup in SETUPS.items():
            out = (
                Path(args.output_dir)
                / f"{size}-{setup['case']}-{setup.get('strategy', setup.get('init', 'default'))}"
            )
            result = hftl.train(
                task="text",
                model=f"vectors:{args.glove}",
                dataset=data,
                output_dir=str(out),
                epochs=args.epochs,
                batch_size=64,
                seed=args.seed,
                save_total_limit=1,
                log_steps=50,
                **setup,
            )
            rows.append(
                {
                    "train_sentences": size,
                    "setup": name,
                    "accuracy": result.metrics["best"]["eval_accuracy"],
                    "trainable": result.metrics["parameters"]["trainable"],
                    "seconds": result.metrics["train_seconds"],
                }
            )
    print(f"\nSST-2, GloVe 6B 50-d, best accuracy on the 872 GLUE dev sentences ({args.epochs} epochs)")
    print(f"{'train':>6}  {'setup':<48}{'accuracy':>9}{'vs scratch':>12}{'trainable':>11}{'seconds':>9}")
    for row in rows:
        scratch = next(
            r["accuracy"]
            for r in rows
            if r["train_sentences"] == row["train_sentences"] and "scratch" in r["setup"]
        )
        print(
            f"{row['train_sentences']:>6}  {row['setup']:<48}{row['accuracy']:>9.3f}"
            f"{row['accuracy'] / scratch:>11.3f}x{row['trainable']:>11,}{row['seconds']:>9.1f}"
        )
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
