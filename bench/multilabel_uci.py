"""Multi-label text classification on real sentences: which domain and sentiment pairs a short review text holds.

Real data, offline: the UCI "Sentiment Labelled Sentences" (movies, restaurants, products; 1,000 sentences each,
`sentence<TAB>0|1`) in the shared assets, and all-MiniLM-L6-v2 from `get-registry-assets.sh`. Each example joins 1-3
sentences (half the examples one, a third two, the rest three), each from a random domain; its labels are the
(domain, sentiment) pairs of its sentences: six labels (`movies-negative` ... `products-positive`), 1-3 per example,
1.5 on average, so predicting every label scores a micro-F1 near 0.4. Telling the pairs apart needs both what a
sentence is about and how it judges it, sentence by sentence. Sentences are split once (seeded) into train,
validation and test pools, so no sentence is in two splits. Setups (each an ordinary ``hftl.train`` run with
``problem_type`` detected from the list column, at hftl's default learning rates):

- ``head``: frozen MiniLM, mean-pooled, new linear head (``small_similar``; the features are cached);
- ``head-weighted``: the same with ``--class-weights auto`` (each label's BCE ``pos_weight``);
- ``glove``: frozen averaged GloVe 50-d with a new MLP;
- ``full``: MiniLM fine-tuned (``large_similar``; with ``--setups``, tens of CPU minutes).

It prints validation micro-F1 of the best epoch, the test split's micro-/macro-F1 and subset accuracy (scored once,
by the saved model), the all-labels and no-label baselines, and the per-label test F1; ``hftl.predict`` on the test
texts gives the same micro-F1 as the run's own test score (checked). Run:

    python bench/multilabel_uci.py                   # head, head-weighted, glove: 10-20 minutes on 2 busy CPU cores
    python bench/multilabel_uci.py --setups head full --epochs 4
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ASSETS, REGISTRY_ASSETS  # noqa: E402
from bench.uci_domain_shift import read_domain  # noqa: E402

DOMAINS = {
    "movies": "imdb_labelled.txt",
    "restaurants": "yelp_labelled.txt",
    "products": "amazon_cells_labelled.txt",
}
SENTIMENTS = ("negative", "positive")
LABELS = [f"{domain}-{sentiment}" for domain in DOMAINS for sentiment in SENTIMENTS]
SETUPS = {
    "head": {"case": "small_similar", "epochs": 20},
    "head-weighted": {"case": "small_similar", "epochs": 20, "class_weights": "auto"},
    "glove": {"case": "small_similar", "epochs": 20, "model": "glove"},
    "full": {"case": "large_similar"},
}
DEFAULT_SETUPS = ["head", "head-weighted", "glove"]


def pools(uci: Path, seed: int) -> dict[str, dict[str, list[tuple[str, int]]]]:
    """Per split, per domain, the sentences it may draw from (60% / 15% / 25% of each domain)."""
    out: dict[str, dict[str, list]] = {"train": {}, "validation": {}, "test": {}}
    for domain, file in DOMAINS.items():
        rows = read_domain(uci / file)
        random.Random(seed).shuffle(rows)
        a, b = int(0.6 * len(rows)), int(0.75 * len(rows))
        out["train"][domain], out["validation"][domain], out["test"][domain] = rows[:a], rows[a:b], rows[b:]
    return out


def examples(pool: dict[str, list[tuple[str, int]]], count: int, seed: int) -> list[dict]:
    """Texts of 1-3 sentences; the labels are their (domain, sentiment) pairs."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(count):
        sentences = rnd.choices([1, 2, 3], weights=[0.5, 0.35, 0.15])[0]
        picked = [(domain, rnd.choice(pool[domain])) for domain in rnd.choices(list(DOMAINS), k=sentences)]
        labels = sorted({f"{domain}-{SENTIMENTS[y]}" for domain, (_, y) in picked})
        rows.append({"text": " ".join(text for _, (text, _) in picked), "labels": labels})
    return rows


def f1s(references: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    binarize = MultiLabelBinarizer(classes=LABELS).fit([LABELS])
    y, p = binarize.transform(references), binarize.transform(predicted)
    per_label = f1_score(y, p, average=None, zero_division=0)
    return {
        "f1_micro": float(f1_score(y, p, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(y, p, average="macro", zero_division=0)),
        "subset_accuracy": float(accuracy_score(y, p)),
        **{f"f1_{label}": float(v) for label, v in zip(LABELS, per_label, strict=True)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uci", default=str(ASSETS / "uci_sentences"))
    parser.add_argument("--model", default=str(REGISTRY_ASSETS / "minilm-l6"))
    parser.add_argument("--glove", default=str(ASSETS / "glove" / "glove.6B.50d.top50k.txt"))
    parser.add_argument("--setups", nargs="+", default=DEFAULT_SETUPS, choices=list(SETUPS))
    parser.add_argument("--sizes", type=int, nargs=3, default=(1200, 300, 500), help="train validation test")
    parser.add_argument("--epochs", type=int, default=4, help="full (head-only setups: 15)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output-dir", default="runs/bench-multilabel-uci")
    args = parser.parse_args()

    from datasets import Dataset, DatasetDict

    import hftl

    drawn = pools(Path(args.uci), args.seed)
    data = {
        split: examples(drawn[split], size, args.seed + i)
        for i, (split, size) in enumerate(zip(("train", "validation", "test"), args.sizes, strict=True))
    }
    dataset = DatasetDict({split: Dataset.from_list(rows) for split, rows in data.items()})
    truth = [row["labels"] for row in data["test"]]
    results = {
        "baseline: every label": f1s(truth, [LABELS] * len(truth)),
        "baseline: no label": f1s(truth, [[] for _ in truth]),
    }
    for setup in args.setups:
        settings = {"epochs": args.epochs, **SETUPS[setup]}
        settings["model"] = f"vectors:{args.glove}" if settings.get("model") == "glove" else args.model
        result = hftl.train(
            task="text",
            dataset=dataset,
            output_dir=str(Path(args.output_dir) / setup),
            batch_size=32,
            max_length=128,
            seed=args.seed,
            save_total_limit=1,
            report_to="none",
            overwrite_output_dir=True,
            **settings,
        )
        threshold = result.metrics["threshold"]
        scores = hftl.predict(result, [row["text"] for row in data["test"]], batch_size=64)
        predicted = [[s["label"] for s in row if s["score"] > threshold] for row in scores]
        test = f1s(truth, predicted)
        assert abs(test["f1_micro"] - result.metrics["test"]["test_f1_micro"]) < 1e-6, "predict == the run"
        results[setup] = {
            "validation_f1_micro": result.metrics["best"]["eval_f1_micro"],
            "best_epoch": result.metrics["best"]["epoch"],
            "train_seconds": result.metrics["train_seconds"],
            "class_weights": result.metrics.get("class_weights"),
            **test,
        }
        print(f"== {setup}: {results[setup]}", flush=True)

    print(
        f"\nUCI review sentences, multi-label ({', '.join(LABELS)}); {args.sizes[0]} train / {args.sizes[1]} "
        f"validation / {args.sizes[2]} test examples; test scores at threshold 0.5"
    )
    header = f"{'setup':<24}{'micro-F1':>9}{'macro-F1':>9}{'subset':>8}" + "".join(
        f"{label.replace('restaurants', 'rest'):>18}" for label in LABELS
    )
    print(header)
    for name, row in results.items():
        cells = "".join(f"{row[f'f1_{label}']:>18.3f}" for label in LABELS)
        print(
            f"{name:<24}{row['f1_micro']:>9.3f}{row['f1_macro']:>9.3f}{row['subset_accuracy']:>8.3f}{cells}"
        )
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "results.json").write_text(
        json.dumps(results, indent=2) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main()
