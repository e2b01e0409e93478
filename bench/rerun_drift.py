"""How far a rerun of calibration rows lands from the recorded ones: did a change to the code move what the plan
tables say? Rows are matched by (pair, plan, learning rate, seed, epochs, kept layers); per pair and plan the
accuracy differences, then per pair whether the best plan (mean over seeds) is the same.

    python bench/calibrate.py --pairs resnet --plans head,head_trunc,partial,lora,full,scratch --lrs hftl \\
        --seeds 0,1,2 --out bench/results/image_uint8_rerun.jsonl --work /tmp/calwork
    python bench/rerun_drift.py bench/results/image_uint8_rerun.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

RECORDED = Path(__file__).resolve().parent / "results" / "calibration.jsonl"


def row_key(row: dict[str, Any]) -> tuple:
    return (row["pair"], row["plan"], str(row["lr"]), row["seed"], row["epochs"], row.get("keep_layers"))


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def drift(recorded: list[dict[str, Any]], rerun: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (pair, plan): the rerun's best accuracy minus the recorded one, seed by seed (the last recorded row of
    a key counts); per pair: the best plan by mean over the matched seeds, before and after."""
    latest = {row_key(row): row for row in recorded}
    matched = [(latest[row_key(row)], row) for row in rerun if row_key(row) in latest]
    changes: dict[tuple[str, str], list[float]] = defaultdict(list)
    means: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: {"before": defaultdict(list), "after": defaultdict(list)}
    )
    for before, after in matched:
        changes[after["pair"], after["plan"]].append(after["best_accuracy"] - before["best_accuracy"])
        means[after["pair"]]["before"][after["plan"]].append(before["best_accuracy"])
        means[after["pair"]]["after"][after["plan"]].append(after["best_accuracy"])
    best = {pair: {side: leaders(plans) for side, plans in sides.items()} for pair, sides in means.items()}
    return {"unmatched": len(rerun) - len(matched), "changes": dict(changes), "best": best}


def leaders(plans: dict[str, list[float]], tie: float = 5e-4) -> str:
    """The best plan by mean accuracy, with any other plan as good to within ``tie`` (``full = scratch (1.000)``)."""
    mean = {plan: statistics.mean(values) for plan, values in plans.items()}
    top = max(mean.values())
    return " = ".join(plan for plan in mean if mean[plan] >= top - tie) + f" ({top:.3f})"


def render(result: dict[str, Any]) -> str:
    every = [d for values in result["changes"].values() for d in values]
    lines = [
        f"{len(every)} rows matched ({result['unmatched']} unmatched): mean change {statistics.mean(every):+.4f}, "
        f"mean |change| {statistics.mean(abs(d) for d in every):.4f}, max |change| {max(map(abs, every)):.3f}",
        "",
        "| pair | plan | change per seed |",
        "| --- | --- | --- |",
    ]
    for (pair, plan), values in sorted(result["changes"].items()):
        lines.append(f"| {pair} | {plan} | {' '.join(f'{d:+.3f}' for d in values)} |")
    lines += ["", "| pair | best plan before | best plan after |", "| --- | --- | --- |"]
    for pair, sides in sorted(result["best"].items()):
        lines.append(f"| {pair} | {sides['before']} | {sides['after']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("rerun", type=Path)
    parser.add_argument("--recorded", type=Path, default=RECORDED)
    args = parser.parse_args()
    print(render(drift(read_rows(args.recorded), read_rows(args.rerun))))


if __name__ == "__main__":
    main()
