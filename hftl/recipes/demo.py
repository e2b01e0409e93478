"""``hftl demo``: the four transfer cases measured end to end, offline, in minutes on a CPU.

No pretrained weights are reachable without the Hub, so the demo develops its own source model (the "develop a
model" route): a small ResNet trained from scratch, with hftl itself, on one half of a real dataset. It then
transfers that model to four targets, one per case, and trains the same architecture from random weights on each
target as the baseline:

| case            | target                                              |
| --------------- | --------------------------------------------------- |
| small_similar   | the other classes of the source dataset, a few dozen examples per class |
| large_similar   | the other classes of the source dataset, many examples per class       |
| small_different | another dataset, a few dozen examples per class                        |
| large_different | another dataset, all of it                                             |

Data: Fashion-MNIST (source: classes 0-4, similar: classes 5-9; different: scikit-learn's handwritten digits),
found in ``--data``, ``$HFTL_ASSETS_CACHE/fashion-mnist``, ``~/.cache/hftl-assets/fashion-mnist`` or Debian's
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``). Without it: digits 0-4 -> digits 5-9, and
generated shapes as the different dataset. Every run is an ordinary ``hftl.train`` call with the case's defaults;
each writes its output folder and log under the demo's output directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hftl.errors import DataError
from hftl.recipes.demo_data import (
    QUICK,
    STANDARD,
    DemoSizes,
    Target,
    demo_data,
    make_resnet_folder,
    to_dataset,
)

CASE_ORDER = ("small_similar", "small_different", "large_similar", "large_different")


# --- running -------------------------------------------------------------------------------------------------------
@dataclass
class DemoRow:
    """One case: the transfer run and its from-scratch baseline on the same target."""

    case: str
    target: str
    strategy: str
    trainable_percent: float
    accuracy: float
    scratch_accuracy: float
    seconds: float
    scratch_seconds: float
    train_examples: int
    # transfer minus scratch on the validation curves (hftl.recipes.report): first evaluation, area under the curve, best
    benefit: dict[str, float] = field(default_factory=dict)


@dataclass
class DemoResult:
    rows: list[DemoRow]
    source_accuracy: float
    source: str
    origin: str
    output_dir: Path
    table: str
    plot: Path | None
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _no_follow(path: str, flags: int) -> int:
    """Open for ``open(opener=...)`` without following a link at ``path``: the log replaces nothing outside."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o666)


@contextlib.contextmanager
def quiet_output(log: Path) -> Any:
    """hftl's printout and progress bars sent to ``log`` (the demo draws its own bar); transformers' load reports
    (the new head's size mismatch, expected here) are silenced."""
    from transformers.utils import logging as hf_logging

    log.parent.mkdir(parents=True, exist_ok=True)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with (
            open(log, "w", encoding="utf-8", opener=_no_follow) as handle,
            contextlib.redirect_stdout(handle),
            contextlib.redirect_stderr(handle),
        ):
            yield
    finally:
        hf_logging.set_verbosity(verbosity)


def _train_quietly(log: Path, **settings: Any) -> Any:
    """One ``hftl.train`` call, its output in ``log``."""
    from hftl.recipes.run import train

    with quiet_output(log):
        return train(report_to="none", save_total_limit=1, log_steps=1000, **settings)


def run_demo(
    output_dir: str | Path = "runs/demo",
    *,
    quick: bool = False,
    data: str | Path | None = None,
    seed: int = 0,
    sizes: DemoSizes | None = None,
    cases: Sequence[str] = CASE_ORDER,
    progress: bool = True,
    on_row: Callable[[DemoRow], None] | None = None,
    overwrite: bool = False,
) -> DemoResult:
    """Develop the source model, transfer it to the four case targets, train the scratch baselines, and write
    ``results.json``, ``results.md`` and ``demo.png`` (when matplotlib is installed) under ``output_dir``;
    ``overwrite``: replace an earlier demo there (else refused)."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    sizes = sizes or (QUICK if quick else STANDARD)
    output = Path(output_dir)
    check_demo_folder(output, overwrite)
    output.mkdir(parents=True, exist_ok=True)
    unknown = [case for case in cases if case not in CASE_ORDER]
    if unknown:
        raise DataError(f"unknown demo case(s) {unknown}; choose from {', '.join(CASE_ORDER)}")
    prepared = demo_data(sizes, data, seed)
    # the demo owns its output folder (check_demo_folder asked before replacing an earlier demo's runs)
    common = {
        "task": "image",
        "batch_size": sizes.batch_size,
        "seed": seed,
        "warmup_ratio": 0.0,
        "overwrite_output_dir": True,
    }
    total = 1 + sum(1 + len(strategies_for(case)) for case in cases)
    bar = tqdm(total=total, desc="demo", unit="run", disable=not progress, file=sys.stderr)

    bar.set_postfix_str(f"source model on {prepared.source.name}")
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):  # the save's progress bar
        random_source = make_resnet_folder(output / "source-init", sizes, len(prepared.source.train.names))
    source = _train_quietly(
        output / "logs" / "source.log",
        case="large_different",
        init="pretrained",  # the saved random init itself: no source check
        model=str(random_source),
        dataset=to_dataset(prepared.source),
        output_dir=str(output / "source"),
        epochs=sizes.source_epochs,
        lr=sizes.source_lr,
        **common,
    )
    bar.update()

    rows: list[DemoRow] = []
    for case in cases:
        for row in _run_case(case, prepared.targets[case], output, sizes, common, bar):
            rows.append(row)
            if on_row is not None:
                on_row(row)
    bar.close()

    result = DemoResult(
        rows=rows,
        source_accuracy=source.metrics["best"]["eval_accuracy"],
        source=prepared.source.description,
        origin=prepared.origin,
        output_dir=output,
        table="",
        plot=None,
        seconds=time.perf_counter() - started,
        extra={"sizes": asdict(sizes)},
    )
    result = replace(result, table=render_table(result))
    result.plot = write_plot(rows, output / "demo.png")
    write_results(result)
    return result


def strategies_for(case: str) -> list[str | None]:
    """The case's default plan (None: hftl decides; for this small ResNet the calibrated defaults, see
    ``hftl.transfer.defaults``) and, for the small cases, the textbook's head-only plan beside it, so the table shows
    what the evidence behind the default is."""
    return [None, "head"] if case.startswith("small") else [None]


def _run_case(
    case: str, target: Target, output: Path, sizes: DemoSizes, common: dict[str, Any], bar: Any
) -> list[DemoRow]:
    """The transfer run(s) of one case from the source model, and the same architecture trained from scratch."""
    dataset = to_dataset(target)
    epochs = sizes.small_epochs if case.startswith("small") else sizes.large_epochs
    bar.set_postfix_str(f"{case}: scratch")
    scratch = _train_quietly(
        output / "logs" / f"{case}-scratch.log",
        case="large_different",
        init="scratch",
        model=str(output / "source"),
        dataset=dataset,
        output_dir=str(output / case / "scratch"),
        epochs=epochs,
        **common,  # no lr: every run uses hftl's defaults, as a user's would
    )
    bar.update()
    rows = []
    for strategy in strategies_for(case):
        name = strategy or "transfer"
        bar.set_postfix_str(f"{case}: {name}")
        transfer = _train_quietly(
            output / "logs" / f"{case}-{name}.log",
            case=case,
            strategy=strategy,
            model=str(output / "source"),
            dataset=dataset,
            output_dir=str(output / case / name),
            epochs=epochs,
            **common,
        )
        bar.update()
        rows.append(
            DemoRow(
                case=case,
                target=target.description,
                strategy=transfer.plan.strategy
                + (" (truncated)" if transfer.plan.truncated else "")
                # the source check set the source aside: this row is a scratch run too, and says so
                + (" (from scratch: source check)" if transfer.plan.init == "scratch" else ""),
                trainable_percent=transfer.metrics["parameters"]["percent"],
                accuracy=transfer.metrics["best"]["eval_accuracy"],
                scratch_accuracy=scratch.metrics["best"]["eval_accuracy"],
                seconds=transfer.metrics["train_seconds"],
                scratch_seconds=scratch.metrics["train_seconds"],
                train_examples=transfer.metrics["train_examples"],
                benefit=curve_benefits(transfer.metrics["history"], scratch.metrics["history"]),
            )
        )
    return rows


def curve_benefits(transfer: list[dict[str, Any]], scratch: list[dict[str, Any]]) -> dict[str, float]:
    """Start, slope (area under the curve) and asymptote benefits of one transfer run over its scratch run."""
    from hftl.recipes.report import benefits

    return benefits({"transfer": [transfer], "scratch": [scratch]}, "accuracy")["benefit"]


# --- reporting -----------------------------------------------------------------------------------------------------
def render_table(result: DemoResult) -> str:
    """The demo's table as Markdown (it reads as plain text in a terminal too)."""
    lines = [
        f"Source model: ResNet trained from scratch on {result.source}: "
        f"validation accuracy {result.source_accuracy:.1%}",
        f"Data: {result.origin}",
        "",
        "| case | target | strategy | trainable % | accuracy | scratch accuracy | time (s) | scratch time (s) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result.rows:
        lines.append(
            f"| {row.case} | {row.target} | {row.strategy} | {row.trainable_percent:.2f} | {row.accuracy:.1%} "
            f"| {row.scratch_accuracy:.1%} | {row.seconds:.1f} | {row.scratch_seconds:.1f} |"
        )
    lines += [
        "",
        "Transfer benefits (transfer minus scratch, accuracy points, on the validation curves, one eval per epoch):",
        "",
        "| case | strategy | start | area under curve | asymptote |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in result.rows:
        gain = row.benefit
        lines.append(
            f"| {row.case} | {row.strategy} | {gain['start']:+.3f} | {gain['auc']:+.3f} | {gain['asymptote']:+.3f} |"
        )
    return "\n".join(lines)


def write_plot(rows: Sequence[DemoRow], path: Path) -> Path | None:
    """Grouped bars, transfer vs scratch accuracy per case; None (and no file) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(x - 0.2, [r.accuracy for r in rows], 0.4, label="transfer from the source model")
    ax.bar(x + 0.2, [r.scratch_accuracy for r in rows], 0.4, label="from scratch")
    for i, row in enumerate(rows):
        ax.text(i - 0.2, row.accuracy + 0.01, f"{row.accuracy:.0%}", ha="center", fontsize=8)
        ax.text(i + 0.2, row.scratch_accuracy + 0.01, f"{row.scratch_accuracy:.0%}", ha="center", fontsize=8)
    ax.set_xticks(x, [f"{r.case}\n{r.strategy}" for r in rows], fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("validation accuracy")
    ax.set_title("hftl demo: transfer from a source ResNet vs training from scratch", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def check_demo_folder(output: Path, overwrite: bool) -> None:
    """The demo's runs are trained models: an earlier demo's are replaced only when told, and a training run's
    folder is never used."""
    from hftl.outputs.run_folder import check_recipe_folder  # here: `hftl demo --help` imports nothing heavy

    how = "Replace them with --overwrite-output-dir"
    check_recipe_folder(output, "demo", ("results.json", "source-init"), overwrite, how)


def write_results(result: DemoResult) -> None:
    payload = {
        "rows": [asdict(row) for row in result.rows],
        "source_accuracy": result.source_accuracy,
        "source": result.source,
        "origin": result.origin,
        "seconds": round(result.seconds, 1),
        **result.extra,
    }
    (result.output_dir / "results.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    (result.output_dir / "results.md").write_text(result.table + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """``hftl demo``: parse the flags, run, print the table."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="hftl demo",
        description="Offline demo of the four transfer cases: develops a source ResNet from scratch on "
        "Fashion-MNIST classes 0-4 (or scikit-learn digits), transfers it to targets for each case and trains "
        "from-scratch baselines; prints one table and writes a plot. No network needed.",
    )
    parser.add_argument("--output-dir", default="runs/demo", help="where runs, logs, table and plot go")
    parser.add_argument(
        "--data",
        default=None,
        help="folder with the Fashion-MNIST idx .gz files (default: looked up), or 'digits' for scikit-learn's digits",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for smoke tests)")
    parser.add_argument(
        "--overwrite-output-dir", action="store_true", help="replace an earlier demo's runs in --output-dir"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for data selection and training")
    parser.add_argument(
        "--cases", nargs="+", default=list(CASE_ORDER), choices=CASE_ORDER, help="cases to run (default all)"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2**32:  # numpy's seeds, as a run's --seed
        parser.error(f"--seed must be from 0 to {2**32 - 1}, got {args.seed}")
    from hftl.recipes.run import quiet_library_logs

    quiet_library_logs()
    result = run_demo(
        args.output_dir,
        quick=args.quick,
        data=args.data,
        seed=args.seed,
        cases=args.cases,
        overwrite=args.overwrite_output_dir,
    )
    print(result.table)
    print(
        f"\nTotal {result.seconds:.0f} s. Runs and logs in {result.output_dir}; table in results.md", end=""
    )
    print(f"; plot {result.plot}" if result.plot else " (pip install 'hftl[report]' for the plot)")
    return 0


__all__ = ["DemoResult", "DemoRow", "DemoSizes", "QUICK", "STANDARD", "demo_data", "main", "run_demo"]
