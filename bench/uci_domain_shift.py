"""Text domain shift: train on one UCI domain (movies, restaurants or products), test on all three.

Real data, offline: the UCI "Sentiment Labelled Sentences" (1,000 sentences per domain, `sentence<TAB>label`) in the
shared assets, and all-MiniLM-L6-v2 (a real pretrained 6-layer BERT) from `get-registry-assets.sh`. Each domain is
split once (seeded) into 800 training and 200 test sentences; a model is trained on one domain's 800 with
``hftl.train`` and scored on the 200 test sentences of every domain with ``hftl.predict``. Setups: frozen MiniLM
with a new head (``small_similar``, features cached) and frozen averaged GloVe 50-d with a new MLP by default;
MiniLM fine-tuned (``large_similar``) and the MiniLM architecture from random weights (``large_different --init
scratch``) with ``--setups``. Run:

    python bench/uci_domain_shift.py                 # head + glove: a few minutes on 2 CPU cores
    python bench/uci_domain_shift.py --setups head glove full scratch --epochs 4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ASSETS, REGISTRY_ASSETS  # noqa: E402

DOMAINS = {
    "movies": "imdb_labelled.txt",
    "restaurants": "yelp_labelled.txt",
    "products": "amazon_cells_labelled.txt",
}
SETUPS = {
    "head": {"case": "small_similar", "epochs": 10},  # frozen MiniLM (cached features), new head
    "glove": {"case": "small_similar", "epochs": 10, "model": "glove"},  # frozen GloVe 50-d average, new MLP
    "full": {"case": "large_similar"},  # MiniLM fine-tuned
    "scratch": {
        "case": "large_different",
        "init": "scratch",
        "lr": 5e-4,
    },  # MiniLM architecture, random weights
}
DEFAULT_SETUPS = ["head", "glove"]  # the cheap ones; add full and scratch with --setups (tens of CPU minutes)


def read_domain(path: Path) -> list[tuple[str, int]]:
    """``sentence<TAB>label`` lines (no header, no quoting: the sentences contain quotes)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            text, label = line.rsplit("\t", 1)
            rows.append((text.strip(), int(label)))
    return rows


def split(rows: list[tuple[str, int]], test: int, seed: int) -> tuple[list, list]:
    import random

    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    return shuffled[test:], shuffled[:test]


def as_dataset(train: list, test: list):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["negative", "positive"])})

    def build(rows):
        return Dataset.from_dict(
            {"text": [t for t, _ in rows], "label": [y for _, y in rows]}, features=features
        )

    return DatasetDict({"train": build(train), "validation": build(test)})


def accuracy(result, rows: list) -> float:
    import hftl

    predictions = hftl.predict(result, [t for t, _ in rows], batch_size=64)
    names = ["negative", "positive"]
    return sum(p["label"] == names[y] for p, (_, y) in zip(predictions, rows, strict=True)) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uci", default=str(ASSETS / "uci_sentences"))
    parser.add_argument("--model", default=str(REGISTRY_ASSETS / "minilm-l6"))
    parser.add_argument("--glove", default=str(ASSETS / "glove" / "glove.6B.50d.top50k.txt"))
    parser.add_argument("--setups", nargs="+", default=DEFAULT_SETUPS, choices=list(SETUPS))
    parser.add_argument("--test", type=int, default=200, help="test sentences held out per domain")
    parser.add_argument("--epochs", type=int, default=4, help="full and scratch (head-only setups: 10)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output-dir", default="runs/bench-uci-domain-shift")
    args = parser.parse_args()

    import hftl

    data = {
        name: split(read_domain(Path(args.uci) / file), args.test, args.seed)
        for name, file in DOMAINS.items()
    }
    rows = []
    for setup in args.setups:
        for domain, (train, test) in data.items():
            settings = {"epochs": args.epochs, **SETUPS[setup]}
            settings["model"] = f"vectors:{args.glove}" if settings.get("model") == "glove" else args.model
            result = hftl.train(
                task="text",
                dataset=as_dataset(train, test),
                output_dir=str(Path(args.output_dir) / f"{setup}-{domain}"),
                batch_size=32,
                max_length=64,
                seed=args.seed,
                save_total_limit=1,
                report_to="none",
                **settings,
            )
            scores = {other: accuracy(result, data[other][1]) for other in DOMAINS}
            rows.append({"setup": setup, "train_domain": domain, "accuracy": scores})
            print(f"== {setup} trained on {domain}: {scores}", flush=True)

    print(
        f"\nUCI sentiment sentences, accuracy on {args.test} test sentences per domain (shift: others minus own)"
    )
    print(f"{'setup':<8}{'trained on':<13}" + "".join(f"{d:>13}" for d in DOMAINS) + f"{'shift':>9}")
    for row in rows:
        own = row["accuracy"][row["train_domain"]]
        others = [v for d, v in row["accuracy"].items() if d != row["train_domain"]]
        cells = "".join(f"{row['accuracy'][d]:>13.3f}" for d in DOMAINS)
        print(f"{row['setup']:<8}{row['train_domain']:<13}{cells}{sum(others) / len(others) - own:>+9.3f}")
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
