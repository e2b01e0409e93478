"""The source check on every calibration pair: is the pretrained network's linear probe behind random weights'?

Runs hftl's own check (``hftl.advisor.start.check_source_features``: a cross-validated linear probe on the pooled
features after every layer, pretrained against the same architecture with random weights, on up to 2,000 training
and validation examples) on each pair of ``bench/calibrate.py`` and writes one JSON line per pair. ``calibrate.py --report`` reads
the file: its table sets each pair's verdict beside what transfer and scratch reached, and the defaults and
``--case auto`` tables apply the verdict (a different case whose source is worse than random trains from scratch;
``--case auto`` trains from scratch without trials).

    python bench/source_check.py --pairs all,between-sizes        # -> bench/results/source_check.jsonl
    # how far a verdict moves with the run's seed (the sample, the random twin, the probe's folds), and with one
    # draw of the folds instead of hftl's PROBE_REPEATS
    python bench/source_check.py --pairs distilbert-domains-20 --seeds 0,1,2,3,4 --probe-repeats 1
        # -> bench/results/source_check_seeds.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import calibrate  # noqa: E402  (sets the offline and thread settings first)

RECORD = calibrate.REPO / "bench" / "results" / "source_check.jsonl"
SEEDS_RECORD = calibrate.REPO / "bench" / "results" / "source_check_seeds.jsonl"


def check_pair(pair: str, cache: Path, work: Path, seed: int | None = None) -> dict[str, Any]:
    """hftl's source check on ``pair``'s training and validation examples, as a run of its case measures it (with
    ``seed``: as a run with that ``--seed`` does; else hftl's default seed)."""
    from hftl.advisor import scores
    from hftl.advisor.start import check_source_features
    from hftl.config import RunConfig
    from hftl.data.loading import splits_for
    from hftl.tasks import get_task

    spec = calibrate.PAIRS[pair]
    task = "image" if spec["family"] in calibrate.IMAGE_FAMILIES else "text"
    extra = {} if task == "image" else {"max_length": calibrate.TEXT_MAX_LENGTH}
    model = calibrate.model_for(pair, cache, work)
    config = RunConfig(
        task=task,
        case=calibrate.case_of(pair),
        model=model,
        output_dir=str(work / "check"),
        feature_cache_dir=str(cache / "features"),
        **extra,
        **({} if seed is None else {"seed": seed}),
    )
    started = time.perf_counter()
    splits = splits_for(config, get_task(task), calibrate.dataset_for(pair))
    check = check_source_features(config, get_task(task), splits, None, "cpu")
    return {
        "pair": pair,
        "case": calibrate.case_of(pair),
        "source_accuracy": source_accuracy(model),
        "seed": config.seed,
        "probe_repeats": scores.PROBE_REPEATS,
        **(check.to_dict() if check else {"error": not_checked(model)}),
        "seconds": round(time.perf_counter() - started, 1),
    }


def not_checked(model: str) -> str:
    from hftl.sources.registry import loads_with_auto_classes

    if not loads_with_auto_classes(model):
        return "not checked: no transformers random-weights twin (word vectors, timm)"
    return "not checked: a class has fewer than two examples"


def source_accuracy(model: str) -> float | None:
    """How the source built by calibrate.py scored on its own task (sources are rebuilt where the cache is empty:
    training is not bit-identical across machines, so a rebuilt source may differ a little from the recorded one)."""
    info = Path(model) / "source.json"
    return json.loads(info.read_text(encoding="utf-8"))["accuracy"] if info.is_file() else None


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load(path: Path = RECORD) -> dict[str, dict[str, Any]]:
    """pair -> its recorded check with hftl's draws of the probe's folds (the last line per pair wins; the main
    record holds hftl's default seed, ``--seeds`` studies go to SEEDS_RECORD)."""
    from hftl.advisor.scores import PROBE_REPEATS

    return {row["pair"]: row for row in _rows(path) if row.get("probe_repeats") == PROBE_REPEATS}


def load_seeds(path: Path = SEEDS_RECORD) -> dict[tuple[str, int], dict[int, dict[str, Any]]]:
    """(pair, draws of the folds) -> seed -> its recorded check (the last line per pair, draws and seed wins)."""
    runs: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}
    for row in _rows(path):
        if "pretrained" in row:
            runs.setdefault((row["pair"], row["probe_repeats"]), {})[row["seed"]] = row
    return runs


def verdict(row: dict[str, Any]) -> Any:
    """The recorded probes judged by today's rule (``hftl.advisor.source_check``: ``EVIDENCE``, ``MIN_GAP``,
    ``KEEP_SHARE``)."""
    from hftl.advisor.source_check import SourceCheck

    fields = ("pretrained", "random", "pretrained_depth", "random_depth", "samples", "chance")
    return SourceCheck(**{name: row[name] for name in fields}) if "pretrained" in row else None


def worse_than_random(pair: str, checks: dict[str, dict[str, Any]]) -> bool:
    check = verdict(checks.get(pair, {}))
    return check is not None and check.worse_than_random


def table(checks: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    """Per pair: the check, and what the best transfer plan and scratch reached at hftl's default rates."""
    if not checks:
        return []
    lines = [
        "| pair | case | probe: pretrained (depth) | probe: random weights (depth) | examples | difference (SE) | "
        "kept | verdict | best transfer plan at default LR | scratch at default LR |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for pair in [
        p for p in calibrate.PAIR_GROUPS["all"] if p in checks
    ]:  # the between-sizes pairs' checks: their rule rows' start
        c = checks[pair]
        if "pretrained" not in c:
            lines.append(f"| {pair} | {c['case']} | - | - | - | - | - | {c.get('error')} | - | - |")
            continue
        transfer = {
            plan: calibrate._mean_at(rows, pair, plan, calibrate.plan_default(pair, plan))[0]
            for plan in calibrate.FAMILY_PLANS[calibrate.PAIRS[pair]["family"]]
            if plan not in ("auto", "scratch", "head_trunc")
        }
        transfer = {plan: value for plan, value in transfer.items() if value is not None}
        best = max(transfer, key=transfer.get) if transfer else None
        scratch = calibrate._mean_at(rows, pair, "scratch", calibrate.scratch_default(pair))[0]
        check = verdict(c)
        difference = check.pretrained - check.random
        lines.append(
            f"| {pair} | {c['case']} | {c['pretrained']:.3f} ({c['pretrained_depth']}) | {c['random']:.3f} "
            f"({c['random_depth']}) | {c['samples']} | {100 * difference:+.1f} ({difference / check.noise:+.1f}) | "
            f"{check.kept:.2f} | "
            f"{'**worse than random**' if check.worse_than_random else 'no worse'} | "
            + (f"{best} {transfer[best]:.3f} | " if best else "- | ")
            + (f"{scratch:.3f} |" if scratch is not None else "- |")
        )
    return lines


def seeds_table(path: Path = SEEDS_RECORD) -> list[str]:
    """Per pair and number of draws of the probe's folds: how the verdict moved over run seeds."""
    order = list(calibrate.PAIRS)
    runs = {key: by_seed for key, by_seed in load_seeds(path).items() if key[0] in order}
    if not runs:
        return []
    lines = [
        "| pair | draws of the folds | seeds | probe: pretrained | probe: random weights | kept | fires (today's rule) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]

    def spread(values: list[float], digits: int = 3) -> str:
        return f"{min(values):.{digits}f}-{max(values):.{digits}f}"

    for (pair, repeats), by_seed in sorted(
        runs.items(), key=lambda item: (order.index(item[0][0]), item[0][1])
    ):
        checks = [verdict(row) for row in by_seed.values()]
        lines.append(
            f"| {pair} | {repeats} | {','.join(map(str, sorted(by_seed)))} | "
            f"{spread([c.pretrained for c in checks])} | {spread([c.random for c in checks])} | "
            f"{spread([c.kept for c in checks], 2)} | {sum(c.worse_than_random for c in checks)} of {len(checks)} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="all", help="comma list of pairs or groups, as calibrate.py takes")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"default {RECORD.name}; with --seeds or --probe-repeats {SEEDS_RECORD.name}",
    )
    parser.add_argument(
        "--seeds", default=None, help="comma list of run seeds (default: hftl's --seed default)"
    )
    parser.add_argument(
        "--probe-repeats", type=int, default=None, help="draws of the probe's folds (default: hftl's)"
    )
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "hftl-calibrate")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "hftl-source-check")
    args = parser.parse_args(argv)
    pairs = calibrate.expand_pairs(args.pairs)
    if args.probe_repeats is not None and args.probe_repeats < 1:
        parser.error(f"--probe-repeats {args.probe_repeats}: draw the folds at least once")
    # hftl's own check at its default seed is the main record; anything else is a study of how the verdict moves
    out = args.out or (SEEDS_RECORD if args.seeds or args.probe_repeats is not None else RECORD)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.probe_repeats is not None:
        from hftl.advisor import scores

        scores.PROBE_REPEATS = args.probe_repeats
    seeds = [int(seed) for seed in args.seeds.split(",")] if args.seeds else [None]
    for pair in pairs:
        for seed in seeds:
            row = check_pair(pair, args.cache, args.work, seed)
            print(json.dumps(row), flush=True)
            with open(out, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
