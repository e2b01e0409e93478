"""How much another seed moves the advisor's trial scores (the evidence for ``SEED_VARIANCE`` in
``hftl/advisor/trials.py``) and whether the picks agree over seeds, from the ``--case auto`` rows of
``bench/results/calibration.jsonl``.

For every pair, rung, tie rule and two plans that both trained on all of a pair's seeds, the variance over seeds of
their score difference, pooled (weighted by degrees of freedom) and divided by the binomial ``2 p(1-p)``: the share
of a trial's ``p(1-p)`` that training noise adds, i.e. as noisy as scoring on ``1 / share`` more examples. Plans at
chance (mean below 0.55) are left out: their scores do not move.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from typing import Any

AT_CHANCE = 0.55
BUCKETS = ((50, "<= 50"), (230, "51-230"), (1500, "231-1,500"), (math.inf, "> 1,500"))


def rule_of(row: dict[str, Any]) -> str:
    """The advisor's tie rule an auto row was measured with (rows from before rules were recorded: the binomial
    one)."""
    return row.get("advisor_rule", "binomial, 1 SE")


def seed_spread(rows: list[dict[str, Any]]) -> dict[str, tuple[int, float, float]]:
    """Per trial-size bucket (and ``all``): (plan pairs, sd of a difference over seeds, share of 2p(1-p))."""
    scores: dict[tuple[str, int, str], dict[int, dict[str, tuple[float, int]]]] = defaultdict(dict)
    for row in rows:
        if row.get("plan") != "auto" or row.get("error"):
            continue
        for trial in row.get("trials", []):
            name, rung, _epochs, examples, score = trial[:5]
            if score is not None:
                key = (row["pair"], rung, rule_of(row))  # each rule's seeds apart
                scores[key].setdefault(row["seed"], {})[name] = (score, examples)
    cells: dict[str, list[tuple[float, int, float]]] = defaultdict(list)
    seen: set[frozenset] = set()
    for seeds in scores.values():
        # rung 0 trains the same trials whatever the rule (same seeds, same scores): counted once
        record = frozenset(
            (seed, name, score) for seed, plans in seeds.items() for name, (score, _) in plans.items()
        )
        if len(seeds) < 2 or record in seen:
            continue
        seen.add(record)
        common = set.intersection(*(set(plans) for plans in seeds.values()))
        for a, b in itertools.combinations(sorted(common), 2):
            diffs = [plans[a][0] - plans[b][0] for plans in seeds.values()]
            p = statistics.mean(plans[n][0] for plans in seeds.values() for n in (a, b))
            if min(statistics.mean(plans[n][0] for plans in seeds.values()) for n in (a, b)) < AT_CHANCE:
                continue
            if p * (1 - p) == 0:  # both plans perfect (or at zero) on every seed: nothing to scale
                continue
            examples = next(iter(seeds.values()))[a][1]
            bucket = next(label for top, label in BUCKETS if examples <= top)
            for key in (bucket, "all"):
                cells[key].append((statistics.variance(diffs), len(diffs) - 1, 2 * p * (1 - p)))
    out = {}
    for key, found in cells.items():
        dof = sum(d for _, d, _ in found)
        variance = sum(v * d for v, d, _ in found) / dof
        out[key] = (len(found), math.sqrt(variance), variance / (sum(w * d for _, d, w in found) / dof))
    return out


def noise_table(rows: list[dict[str, Any]]) -> list[str]:
    spread = seed_spread(rows)
    if not spread:
        return []
    lines = [
        "### Trial noise over seeds (the advisor's SEED_VARIANCE)",
        "",
        "Per pair, rung and two plans trained on every seed: the variance over seeds of their score difference, "
        "pooled; 'as noisy as scoring on' = 2p(1-p) / that variance (`bench/trial_noise.py`).",
        "",
        "| trial training examples | plan pairs | sd of a difference over seeds (points) | share of p(1-p) | "
        "as noisy as scoring on |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for _, label in [*BUCKETS, (None, "all")]:
        if label in spread:
            n, sd, share = spread[label]
            scoring = f"{1 / share:.0f} examples" if share > 0 else "- (no spread)"
            lines.append(f"| {label} | {n} | {100 * sd:.1f} | {share:.4f} | {scoring} |")
    return [*lines, ""]


def consistent(runs: list[dict[str, Any]]) -> bool:
    """Whether one plan is every seed's pick or among the plans it reported tied (rows from before the tied plans
    were recorded count their pick only)."""
    tied = [set(r.get("auto_tied") or []) | {r["auto_pick"]} for r in runs]
    return bool(set.intersection(*tied))
