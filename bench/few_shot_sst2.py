"""Few-shot SST-2 with MiniLM-L6: contrastive (SetFit's recipe, ``--strategy contrastive``) vs head-only vs full.

all-MiniLM-L6-v2 (``get-registry-assets.sh``) on the shared SST-2 copy: K training sentences per class (at least 6
words, as bench/minilm_sst2.py; sampled per seed from train.tsv), 100 held-out sentences of dev.tsv (at least 6
words, the same for every run) to pick the best epoch, and the 872 labelled GLUE dev sentences (test.tsv) as the test
split, scored once by the saved model and never used to choose it. Three arms, each an ``hftl.train`` run:

- ``contrastive``: stage 1 tunes the encoder on 2 x R x N sentence pairs (R = 20 rounds, 1 epoch, lr 2e-5, batch 16:
  SetFit's defaults; R = 5 at 64 per class, see ``DEFAULT_ITERATIONS``), stage 2 trains hftl's linear head on the frozen tuned embeddings (cached features);
- ``head``: the same head on the frozen pretrained encoder, mean-pooled (hftl's default for this model);
- ``full``: every weight fine-tuned at hftl's default learning rate for this model.

For the two frozen-body arms the script also fits SetFit's head, scikit-learn's ``LogisticRegression()``, on the same
embeddings (``logreg`` columns): that is the measurement behind the choice of head. Every run appends one JSON line to
bench/results/few_shot_sst2.jsonl (runs already there are skipped, so the script resumes); ``--write`` puts the table
into docs/results.md between its markers. Run:

    python bench/few_shot_sst2.py                                   # 8,16,64 per class x seeds 0,1,2 x 3 arms
    python bench/few_shot_sst2.py --per-class 8 --seeds 0 --arms contrastive
    python bench/few_shot_sst2.py --report --write docs/results.md  # the table from the JSON lines only
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ASSETS, REPO, cpu_model, load_average, minilm  # noqa: E402

ARMS = ("contrastive", "head", "full")
MIN_WORDS = 6
VALIDATION_SIZE = 100
BEGIN, END = "<!-- few_shot_sst2: begin -->", "<!-- few_shot_sst2: end -->"
RESULTS = REPO / "bench" / "results" / "few_shot_sst2.jsonl"
# SetFit's R = 20, except at 64 per class: 5 rounds (1,280 pairs, the pairs of 16 per class at R = 20) keep a seed's
# contrastive stage within minutes on a shared 2-core CPU instead of most of an hour
DEFAULT_ITERATIONS = "20,64:5"


def iterations_for(spec: str, k: int) -> int:
    """R for ``k`` per class from ``20`` or ``20,64:5`` (a bare number is the default for every other size)."""
    default, by_size = 20, {}
    for part in spec.split(","):
        size, _, rounds = part.rpartition(":")
        if size:
            by_size[int(size)] = int(rounds)
        else:
            default = int(rounds)
    return by_size.get(k, default)


# --- data ----------------------------------------------------------------------------------------------------------
def read(name: str, min_words: int = 0) -> list[tuple[str, int]]:
    with open(ASSETS / "sst2" / name, encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [(text.strip(), int(label)) for text, label in rows if len(text.split()) >= min_words]


def per_class(rows: list[tuple[str, int]], k: int, seed: int) -> list[tuple[str, int]]:
    """``k`` rows of each label, drawn with numpy's generator from ``seed``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    picked = []
    for label in sorted({y for _, y in rows}):
        indices = [i for i, (_, y) in enumerate(rows) if y == label]
        picked += [rows[i] for i in rng.choice(indices, size=k, replace=False)]
    return picked


def dataset(k: int, seed: int):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["negative", "positive"])})

    def build(rows: list[tuple[str, int]]) -> Dataset:
        return Dataset.from_dict(
            {"text": [t for t, _ in rows], "label": [y for _, y in rows]}, features=features
        )

    validation = per_class(read("dev.tsv", MIN_WORDS), VALIDATION_SIZE // 2, seed=1234)
    return DatasetDict(
        train=build(per_class(read("train.tsv", MIN_WORDS), k, seed)),
        validation=build(validation),
        test=build(read("test.tsv")),
    )


# --- one run -------------------------------------------------------------------------------------------------------
def arm_settings(arm: str, k: int, args: argparse.Namespace) -> dict[str, Any]:
    if arm == "full":
        return {"case": "large_similar", "strategy": "full", "epochs": args.full_epochs}
    settings = {"case": "small_similar", "strategy": arm, "epochs": args.head_epochs}
    if arm == "contrastive":
        settings["contrastive_iterations"] = iterations_for(args.iterations, k)
    return settings


def embeddings(model: Any, tokenizer: Any, texts: list[str], max_length: int):
    """Mean-pooled embeddings of the (frozen) encoder, as the head reads them."""
    import torch

    from hftl.modeling.pooled import pool

    encoder = model.base_model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            batch = tokenizer(
                texts[start : start + 64],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            out.append(pool(encoder(**batch), batch["attention_mask"], "mean"))
    return torch.cat(out).numpy()


def logreg_accuracy(model: Any, output_dir: Path, data: Any, max_length: int, test: Any = None) -> float:
    """SetFit's head: ``LogisticRegression()`` on the train embeddings, scored on the test split (``test``: its
    embeddings, when already computed)."""
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    train = embeddings(model, tokenizer, data["train"]["text"], max_length)
    if test is None:
        test = embeddings(model, tokenizer, data["test"]["text"], max_length)
    head = LogisticRegression().fit(train, data["train"]["label"])
    return float(head.score(test, data["test"]["label"]))


def run_one(
    arm: str, k: int, seed: int, args: argparse.Namespace, work: Path, frozen: dict
) -> dict[str, Any]:
    """One hftl run; ``frozen`` keeps the frozen pretrained encoder's test embeddings (the same in every head run)."""
    import hftl

    data = dataset(k, seed)
    started = time.perf_counter()
    result = hftl.train(
        dataset=data,
        task="text",
        model=str(args.model),
        output_dir=str(work / f"{arm}-{k}-{seed}"),
        overwrite_output_dir=True,
        batch_size=16,
        max_length=args.max_length,
        seed=seed,
        save_total_limit=1,
        report_to="none",
        feature_cache_dir=str(work / "features"),
        **arm_settings(arm, k, args),
    )
    seconds = time.perf_counter() - started
    metrics = result.metrics
    row = {
        "arm": arm,
        "per_class": k,
        "seed": seed,
        "test_accuracy": metrics["test"]["test_accuracy"],
        "best_epoch": metrics["best"]["epoch"],
        "validation_accuracy": metrics["best"]["eval_accuracy"],
        "epochs": arm_settings(arm, k, args)["epochs"],
        "lr": result.plan.lr,
        "train_examples": metrics["train_examples"],
        "trainable_params": metrics["parameters"]["trainable"],
        "wall_seconds": round(seconds, 1),
    }
    if arm == "contrastive":
        stage = metrics["contrastive"]
        row.update(
            iterations=iterations_for(args.iterations, k),
            pairs=stage["pairs"],
            stage_steps=stage["steps"],
            stage_seconds=stage["seconds"],
            stage_loss=[round(stage["losses"][0], 4), round(stage["losses"][-1], 4)],
        )
    if arm == "head" and "test" not in frozen:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
        frozen["test"] = embeddings(result.model, tokenizer, data["test"]["text"], args.max_length)
    if arm in ("contrastive", "head"):
        test = frozen["test"] if arm == "head" else None
        row["logreg_test_accuracy"] = logreg_accuracy(
            result.model, result.output_dir, data, args.max_length, test
        )
    return row


# --- the report ----------------------------------------------------------------------------------------------------
def load_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cell(values: list[float], signed: bool = False) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.mean(values)
    spread = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return (
        f"{mean:+.1f} ± {spread:.1f} (n={len(values)})"
        if signed
        else f"{mean:.1f} ± {spread:.1f} (n={len(values)})"
    )


def table(rows: list[dict[str, Any]]) -> str:
    """Test accuracy, mean ± sample std over seeds, per size and arm."""
    sizes = sorted({r["per_class"] for r in rows})
    columns = [
        ("contrastive, linear head (hftl)", "contrastive", "test_accuracy"),
        ("contrastive, LogisticRegression (SetFit's head)", "contrastive", "logreg_test_accuracy"),
        ("head-only, linear head (hftl default)", "head", "test_accuracy"),
        ("head-only, LogisticRegression", "head", "logreg_test_accuracy"),
        ("full fine-tuning", "full", "test_accuracy"),
    ]
    lines = [
        "| per class | " + " | ".join(name for name, _, _ in columns) + " |",
        "| ---: |" + " ---: |" * len(columns),
    ]
    for k in sizes:
        values = [
            cell([r[key] for r in rows if r["per_class"] == k and r["arm"] == arm and key in r])
            for _, arm, key in columns
        ]
        lines.append(f"| {k} | " + " | ".join(values) + " |")
    lines += [
        "",
        "Paired by seed (the same training sentences), in points: mean ± sample std (n = seeds).",
        "",
    ]
    lines += gains_table(rows, sizes)
    timing = []
    for k in sizes:
        parts = []
        for arm in ARMS:
            times = [r["wall_seconds"] for r in rows if r["per_class"] == k and r["arm"] == arm]
            if times:
                parts.append(f"{arm} {statistics.mean(times):.0f} s")
        stage = [r["stage_seconds"] for r in rows if r["per_class"] == k and r["arm"] == "contrastive"]
        pairs = {r["pairs"] for r in rows if r["per_class"] == k and r["arm"] == "contrastive"}
        if stage:
            parts.append(
                f"of which the contrastive stage {statistics.mean(stage):.0f} s on {min(pairs)} pairs"
            )
        timing.append(f"- {k} per class: " + ", ".join(parts))
    return (
        "\n".join(lines)
        + "\n\nMean wall time per run (training, evaluation and saving):\n"
        + "\n".join(timing)
    )


GAINS = (
    (
        "contrastive minus head-only (linear heads)",
        ("contrastive", "test_accuracy"),
        ("head", "test_accuracy"),
    ),
    ("contrastive minus full fine-tuning", ("contrastive", "test_accuracy"), ("full", "test_accuracy")),
    (
        "linear head minus LogisticRegression, contrastive body",
        ("contrastive", "test_accuracy"),
        ("contrastive", "logreg_test_accuracy"),
    ),
    (
        "linear head minus LogisticRegression, frozen body",
        ("head", "test_accuracy"),
        ("head", "logreg_test_accuracy"),
    ),
)


def gains_table(rows: list[dict[str, Any]], sizes: list[int]) -> list[str]:
    """Per-seed differences between two cells of the same size (only seeds that have both)."""
    lines = [
        "| per class | " + " | ".join(name for name, _, _ in GAINS) + " |",
        "| ---: |" + " ---: |" * len(GAINS),
    ]
    for k in sizes:
        cells = []
        for _, (arm_a, key_a), (arm_b, key_b) in GAINS:
            a = {
                r["seed"]: r[key_a] for r in rows if r["per_class"] == k and r["arm"] == arm_a and key_a in r
            }
            b = {
                r["seed"]: r[key_b] for r in rows if r["per_class"] == k and r["arm"] == arm_b and key_b in r
            }
            diffs = [a[seed] - b[seed] for seed in sorted(a.keys() & b.keys())]
            cells.append(cell(diffs, signed=True))
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return lines


def write_doc(path: Path, text: str) -> None:
    doc = path.read_text(encoding="utf-8")
    if BEGIN not in doc or END not in doc:
        sys.exit(f"{path} has no {BEGIN} ... {END} markers to write the table between")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}", encoding="utf-8")


# --- main ----------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="default: MiniLM-L6 from the registry assets"
    )
    parser.add_argument(
        "--per-class", default="8,16,64", help="training sentences per class, comma-separated"
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {', '.join(ARMS)}")
    parser.add_argument(
        "--iterations",
        default=DEFAULT_ITERATIONS,
        help="contrastive pair-generation rounds (SetFit's R): one number, or per size as 20,64:5",
    )
    parser.add_argument("--head-epochs", type=int, default=50, help="head training on cached features: cheap")
    parser.add_argument("--full-epochs", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "hftl-few-shot-sst2")
    parser.add_argument("--report", action="store_true", help="only print the table from --out")
    parser.add_argument("--write", type=Path, default=None, help="put the table into this markdown file")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if not args.report:
        args.model = args.model or minilm()
        done = {(r["arm"], r["per_class"], r["seed"]) for r in load_rows(args.out)}
        frozen: dict[str, Any] = {}
        for k in (int(s) for s in args.per_class.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                for arm in args.arms.split(","):
                    if (arm, k, seed) in done:
                        continue
                    row = run_one(arm, k, seed, args, args.work, frozen)
                    row.update(machine=cpu_model(), load=load_average())
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    with open(args.out, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(row) + "\n")
                    print(f"RESULT {json.dumps(row)}", flush=True)
    text = table(load_rows(args.out))
    print(text)
    if args.write:
        write_doc(args.write, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
