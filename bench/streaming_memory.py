"""Peak memory of --streaming against dataset size: does it stay flat?

Generates JSONL files of short labelled sentences (200,000 and 2,000,000 rows by default, plus a 2,000-row
validation file) in a temporary folder on local disk, and trains a tiny BERT built from a config (2 layers, hidden
32, a 30-word vocabulary) on them, each run in a fresh process whose peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``)
is recorded when it ends:

- ``stream-small``, ``stream-large``: ``--streaming`` on the small file and on the large one, for the same number of
  optimizer steps (one pass over the small file), so the two runs do the same work and differ only in the size of
  what they stream from;
- ``memory-small``: the in-memory path on the small file, for one epoch (the same number of steps);
- ``memory-large``: the in-memory path on the large file with ``--max-train-samples`` the small size (the same
  steps again: the whole file is loaded and its labels encoded before the sample is drawn);
- ``stream-large-full``: ``--streaming`` through the whole large file (10x the steps; not run by default);
- ``resume-skip``: what an exact resume costs: the seconds a stream takes to hand out its first batch after
  skipping half the small file's examples as already trained on (they are read and tokenized again), against
  its first batch from the start (not run by default).

The folder (files, datasets cache, run outputs) is deleted at the end. Each run's row replaces the row of the same
run in ``bench/results/streaming_memory.json`` (so runs can be made one at a time) and the table of all rows is
printed (``docs/scaling.md`` holds it).

    python bench/streaming_memory.py --threads 1
    python bench/streaming_memory.py --threads 1 --runs stream-large-full
    python bench/streaming_memory.py --threads 1 --sizes 20000,200000 --out /tmp/quick.json   # smaller, quicker
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.tiny_models import FILLER, NEGATIVE, POSITIVE, make_bert  # noqa: E402

RUNS = ("stream-small", "stream-large", "memory-small", "memory-large", "stream-large-full", "resume-skip")


def write_jsonl(path: Path, rows: int, seed: int) -> int:
    """``rows`` short reviews whose sentiment word decides the label; returns the file's size in bytes."""
    rnd = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(rows):
            label = "positive" if i % 2 == 0 else "negative"
            words = rnd.sample(FILLER, 5) + [rnd.choice(POSITIVE if label == "positive" else NEGATIVE)]
            rnd.shuffle(words)
            handle.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return path.stat().st_size


def child(settings: dict, result: Path) -> None:
    """One training run in this process; writes its peak RSS and what it did to ``result``."""
    import hftl

    if "skip" in settings:
        return skip_child(settings, result)

    started = time.perf_counter()
    run = hftl.train(**settings)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    metrics = run.metrics
    record = {
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "global_step": metrics["global_step"],
        "train_samples_per_second": metrics["train_samples_per_second"],
        "eval_accuracy": metrics["final"]["eval_accuracy"],
        "stream_position": (metrics.get("streaming") or {}).get("position"),
        "max_train_samples": settings.get("max_train_samples"),
    }
    result.write_text(json.dumps(record), encoding="utf-8")


def skip_child(settings: dict, result: Path) -> None:
    """Time a stream's first batch from the start and after skipping ``skip`` examples (an exact resume)."""
    from transformers import AutoTokenizer

    from hftl.config import RunConfig
    from hftl.data.stream_inputs import StreamPosition, prepare_stream_inputs
    from hftl.data.stream_splits import stream_splits
    from hftl.tasks import get_task

    skip = settings.pop("skip")
    config = RunConfig(**{key: value for key, value in settings.items() if key != "output_dir"})
    splits = stream_splits(config, get_task("text"))
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    stream = prepare_stream_inputs(splits, "text", tokenizer, config, rank=0, world_size=1).stream
    seconds = {}
    for skipped in (0, skip):
        stream.position = StreamPosition(consumed=skipped)
        started = time.perf_counter()
        next(stream.batches())
        seconds[skipped] = time.perf_counter() - started
    extra = seconds[skip] - seconds[0]
    record = {
        "skipped": skip,
        "first_batch_seconds": round(seconds[0], 2),
        "after_skip_seconds": round(seconds[skip], 2),
    }
    record["skip_examples_per_second"] = round(skip / extra) if extra > 0 else None
    record["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result.write_text(json.dumps(record), encoding="utf-8")


def run_child(settings: dict, work: Path, threads: int | None) -> dict:
    result = work / f"result-{time.time_ns()}.json"
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "datasets-cache"), "TOKENIZERS_PARALLELISM": "false"}
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    args = [sys.executable, __file__, "--child", json.dumps(settings), "--result", str(result)]
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"run failed: {settings}\n{done.stderr[-3000:]}")
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="200000,2000000", help="small,large train rows")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--shuffle-buffer", type=int, default=10_000)
    parser.add_argument("--runs", default=",".join(RUNS[:4]), help=f"which runs, of {', '.join(RUNS)}")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="streamed runs: this many steps (default: one pass of the small file)",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "streaming_memory.json")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child), args.result)

    import torch

    small, large = (int(x) for x in args.sizes.split(","))
    steps = args.steps or -(-small // args.batch_size)  # one pass over the small file
    work = Path(tempfile.mkdtemp(prefix="hftl-streaming-memory-"))
    report = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": []}
    rows = {row["run"]: row for row in report["rows"] if "run" in row}
    try:
        model = make_bert(work / "tiny-bert", num_layers=2)
        sizes = {}
        for name, count in (("small", small), ("large", large)):
            folder = work / name
            folder.mkdir()
            sizes[name] = write_jsonl(folder / "train.jsonl", count, seed=1)
            write_jsonl(folder / "validation.jsonl", 2000, seed=2)
        common = {
            "task": "text",
            "case": "large_similar",
            "strategy": "full",
            "model": str(model),
            "batch_size": args.batch_size,
            "lr": 3e-3,
            "report_to": "none",
            "save_total_limit": 1,
        }
        for run in args.runs.split(","):
            if run not in RUNS:
                sys.exit(f"unknown run {run!r}; choose from {', '.join(RUNS)}")
            path, name = run.split("-")[:2]
            name = "small" if path == "resume" else name
            count = small if name == "small" else large
            settings = {**common, "dataset": str(work / name), "output_dir": str(work / f"run-{run}")}
            if path == "resume":  # half a pass of the small file trained on, then interrupted
                settings.update(
                    streaming=True, max_steps=1, skip=small // 2, shuffle_buffer=args.shuffle_buffer
                )
            elif path == "stream":
                run_steps = -(-large // args.batch_size) if run.endswith("full") else steps
                settings.update(streaming=True, max_steps=run_steps, shuffle_buffer=args.shuffle_buffer)
            else:
                settings.update(epochs=1, max_train_samples=small if name == "large" else None)
            record = run_child(settings, work, args.threads)
            key = f"{run}@{steps}" if args.steps and path == "stream" and not run.endswith("full") else run
            rows[key] = {
                "run": key,
                "path": {"stream": "streaming", "memory": "in memory", "resume": "resume (skip)"}[path],
                "train_rows": count,
                "file_mib": round(sizes[name] / 2**20, 1),
                "batch_size": args.batch_size,
                "shuffle_buffer": args.shuffle_buffer if path != "memory" else None,
                "load_average": [round(x, 1) for x in os.getloadavg()],
                **record,
            }
            print(json.dumps(rows[key]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "machine": f"{os.cpu_count()} CPUs visible, torch {torch.__version__}, threads {args.threads or 'default'}",
        "rows": sorted(rows.values(), key=lambda row: (RUNS.index(row["run"].split("@")[0]), row["run"])),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(report["rows"]))


def table(rows: list[dict]) -> str:
    lines = [
        "| path | train rows (JSONL) | optimizer steps | examples read | peak RSS | samples/s | wall | load avg |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if row["run"] == "resume-skip":
            continue
        position = row["stream_position"]
        read = f"{position['read']:,}" if position else f"{row['train_rows']:,} (all, loaded first)"
        if row.get("max_train_samples"):
            read += f", trains on {row['max_train_samples']:,}"
        lines.append(
            f"| {row['path']} | {row['train_rows']:,} ({row['file_mib']} MiB) | {row['global_step']:,} | {read} | "
            f"{row['peak_rss_mib']:,.0f} MiB | {row['train_samples_per_second']:,.0f} | {row['wall_seconds']:.0f} s | "
            f"{row['load_average'][0]:.1f} |"
        )
    skips = [row for row in rows if row["run"] == "resume-skip"]
    for row in skips:
        lines.append(
            f"\nResuming {row['skipped']:,} examples into a pass: first batch after {row['after_skip_seconds']} s "
            f"(from the start: {row['first_batch_seconds']} s), {row['skip_examples_per_second'] or 0:,} examples/s"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
