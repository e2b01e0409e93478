"""``hftl compare``: does transfer pay off here, and which plan? Every plan against a from-scratch baseline.

For each training-set size (``--train-sizes 100,1000,all``) and seed (``--seeds 1,2,3``) it trains, with
``hftl.recipes.run.run`` (the one training loop), every plan of ``--plans`` (default all: head-only, a cut + head,
partial, LoRA, full fine-tuning, each at its default learning rate; ``--plans case``: only the setup ``--case`` names,
``--case auto`` resolved once per size by the advisor's rules) and the baseline: the same architecture from random
weights (``--init scratch``), every weight trained, with the same epochs, batch size and training examples. The
baseline uses the from-scratch default learning rate unless ``--scratch-lr`` is given, and no conservative
regularizers (there is no pretrained solution to stay near). Both evaluate every ``--eval-steps`` (default: about
``--evals-per-epoch`` times per epoch), which draws the learning curves that ``hftl.recipes.report`` turns into the three
benefits, ``report.json``, PNG plots, ``report.md`` and a self-contained ``report.html``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from hftl.advisor.advise import advise_splits, apply_decision
from hftl.advisor.decision import write_advice
from hftl.config import RunConfig, check_named_inputs
from hftl.data.loading import splits_for
from hftl.errors import ConfigError
from hftl.outputs.files import write_text
from hftl.outputs.run_folder import check_recipe_folder
from hftl.recipes.report import benefits, plot_curves, plot_sizes, render_html, render_markdown
from hftl.settings import AUTO_CASE, AUTO_METRIC
from hftl.settings.compare import COMPARE_PLANS, CompareSettings, parse_seeds, parse_sizes
from hftl.tasks import get_task
from hftl.training.metrics import default_metric_for_best
from hftl.transfer.cases import uses_keep_layers
from hftl.transfer.defaults import default_epochs, steps_per_epoch

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"


def scratch_config(config: RunConfig, lr: float | None, output_dir: Path) -> RunConfig:
    """The baseline: the same architecture (and cut) from random weights, every weight trained, same budget."""
    case = "small_different" if config.case == "small_different" else "large_different"
    return config.replace(
        case=case,
        keep_layers=cut_for(config, case, "full"),
        strategy="full",
        init="scratch",
        lr=lr,
        regularizer=None,
        layer_decay=None,
        head_lr=None,
        unfreeze_schedule=None,
        merge_lora=False,
        output_dir=str(output_dir),
    )


def plan_configs(base: RunConfig, plans: list[str] | None) -> dict[str, RunConfig]:
    """The transfer arms: each named plan as its case and strategy (default cut, default LR unless --lr), or, for
    ``--plans case``, the configured setup alone."""
    if plans is None:
        return {"transfer": base}
    return {
        name: base.replace(
            case=case,
            strategy=strategy,
            init="pretrained",
            keep_layers=cut_for(base, case, strategy),
        )
        for name, (case, strategy) in ((name, COMPARE_PLANS[name]) for name in plans)
    }


def cut_for(config: RunConfig, case: str, strategy: str) -> int | None:
    """``--keep-layers`` for the arms that use it (partial freezing, and a small_different arm's cut); the others
    keep every layer, and a plan refuses a setting it would not use. The arms name their strategy, so the family's
    measured defaults do not enter."""
    uses = uses_keep_layers(config.replace(case=case, strategy=strategy), None)
    return config.keep_layers if uses else None


def describe_setup(config: RunConfig) -> str:
    parts = [f"case {config.case}"]
    if config.strategy:
        parts.append(f"strategy {config.strategy}")
    if config.keep_layers:
        parts.append(f"keep {config.keep_layers}")
    if config.init not in ("auto", "pretrained"):
        parts.append(f"init {config.init}")
    if config.regularizer:
        parts.append("+".join(config.regularizer))
    if config.layer_decay:
        parts.append(f"layer decay {config.layer_decay:g}")
    if config.unfreeze_schedule:
        parts.append(f"unfreeze every {config.unfreeze_schedule}")
    return ", ".join(parts)


def eval_every(examples: int, config: RunConfig, evals_per_epoch: int, processes: int) -> int:
    """Optimizer steps between evaluations so that each epoch has about ``evals_per_epoch`` of them."""
    return max(1, steps_per_epoch(examples, config, processes) // evals_per_epoch)


def _one_or_each(values: list[Any]) -> Any:
    """The value all sizes share, else each distinct one in order ("6 / 3")."""
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else " / ".join(map(str, distinct))


def check_compare_folder(output_dir: Path, config: RunConfig) -> None:
    """A compare's runs are trained models: a second compare into the same OUTPUT_DIR would replace them (and the
    report) without being told to, and one into a training run's folder would mix the two."""
    told = bool(config.resume or config.overwrite_output_dir)
    how = "Continue it with --resume auto, replace it with --overwrite-output-dir"
    check_recipe_folder(output_dir, "compare", (REPORT_JSON, "runs"), told, how)


def compare(
    config: RunConfig, settings: CompareSettings | None = None, dataset: Dataset | DatasetDict | None = None
) -> dict[str, Any]:
    """Train transfer and scratch runs for every size x seed; write and return the report."""
    from hftl.recipes.run import run

    settings = settings or CompareSettings()
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if processes > 1 and config.case == AUTO_CASE and settings.plan_list is None:
        raise ConfigError(
            "hftl compare --case auto runs in one process; resolve the case with `hftl advise` first"
        )
    task = get_task(config.task)
    output_dir = Path(config.output_dir)
    check_named_inputs(config, dataset)
    check_compare_folder(output_dir, config)
    seeds = settings.seed_list or [config.seed]
    splits = splits_for(config, task, dataset)
    metric = config.metric_for_best
    if metric == AUTO_METRIC:  # what each run will choose on: accuracy, or micro-F1 for multi-label data
        metric = default_metric_for_best(splits.multi_label)
    available = len(splits.train)
    sizes_out: list[dict[str, Any]] = []
    for size in settings.sizes:
        examples = available if size is None or size >= available else size
        label = "all" if size is None else str(size)
        # one epochs for every arm of a size; compare owns OUTPUT_DIR/runs (check_compare_folder asked before
        # replacing an earlier compare's)
        base = config.replace(
            epochs=default_epochs(config, examples, processes)[0],
            overwrite_output_dir=True,
            max_train_samples=size,
            eval_steps=config.eval_steps or eval_every(examples, config, settings.evals_per_epoch, processes),
        )
        note = None
        if base.case == AUTO_CASE and settings.plan_list is None:
            advice = advise_splits(base, task, splits_for(base, task, dataset))
            write_advice(output_dir / "runs" / f"size-{label}", [advice])
            base = apply_decision(base, advice.decision)
            note = f"--case auto chose {advice.decision.case}: " + " ".join(advice.decision.rationale)
        plans = plan_configs(base, settings.plan_list)
        curves: dict[str, list] = {arm: [] for arm in [*plans, "scratch"]}
        folders: dict[str, list[str]] = {arm: [] for arm in curves}
        skipped: dict[str, str] = {}
        for seed in seeds:
            folder = output_dir / "runs" / f"size-{label}" / f"seed-{seed}"
            arms = {arm: plan.replace(seed=seed, output_dir=str(folder / arm)) for arm, plan in plans.items()}
            arms["scratch"] = scratch_config(base.replace(seed=seed), settings.scratch_lr, folder / "scratch")
            for arm, arm_config in arms.items():
                if arm in skipped:
                    continue
                try:
                    result = run(arm_config, dataset=dataset)
                except ConfigError as error:  # a plan this model has no use for (LoRA on word vectors, ...)
                    if arm == "scratch" or len(plans) == 1:
                        raise
                    skipped[arm] = str(error)
                    continue
                curves[arm].append(result.metrics["curve"])
                folders[arm].append(str(result.output_dir))
        curves = {arm: runs for arm, runs in curves.items() if arm not in skipped}
        if skipped:
            note = ((note + " ") if note else "") + " ".join(
                f"{arm} skipped: {why}" for arm, why in skipped.items()
            )
        size_report = {
            "train_size": label,
            "train_examples": examples,
            "epochs": base.epochs,
            "eval_steps": base.eval_steps,
            "case": base.case,
            "case_note": note,
            "plot": f"curves-{label}.png",
            "curves": curves,
            "output_dirs": folders,
            "transfer_setup": "; ".join(
                f"{arm}: {describe_setup(plan)}" for arm, plan in plans.items() if arm not in skipped
            ),
            "scratch_setup": describe_setup(scratch_config(base, settings.scratch_lr, output_dir)),
        }
        sizes_out.append(summarise_size(size_report, metric, settings.target, output_dir))
    report = {
        "task": task.name,
        "model": str(config.model),
        "metric": metric,
        "transfer_setup": " / ".join(dict.fromkeys(s["transfer_setup"] for s in sizes_out)),
        "scratch_setup": " / ".join(dict.fromkeys(s["scratch_setup"] for s in sizes_out)),
        "epochs": _one_or_each([size["epochs"] for size in sizes_out]),  # without --epochs: per size
        "batch_size": config.batch_size,
        "seeds": seeds,
        "sizes": sizes_out,
        "sizes_plot": None,
    }
    if len(sizes_out) > 1:
        report["sizes_plot"] = "sizes.png"
    if _is_main_process():
        if report["sizes_plot"]:
            plot_sizes(sizes_out, metric, output_dir / report["sizes_plot"])
        write_report(output_dir, report)
    return report


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def summarise_size(
    size: dict[str, Any], metric: str, target: float | None, output_dir: Path
) -> dict[str, Any]:
    """One training-set size's benefits (from its curves) and its learning-curve plot."""
    figures = benefits(size["curves"], metric, target)
    if _is_main_process():
        title = f"{size['train_examples']:,} training examples"
        plot_curves(size["curves"], metric, figures["target"], title, output_dir / size["plot"])
    return {**size, **figures}


def rebuild_report(output_dir: str | Path, target: float | None = None) -> dict[str, Any]:
    """Recompute benefits, plots and summaries from a finished comparison's ``report.json`` (e.g. with another
    ``target``), without training again."""
    output_dir = Path(output_dir)
    report = json.loads((output_dir / REPORT_JSON).read_text(encoding="utf-8"))
    report["sizes"] = [summarise_size(s, report["metric"], target, output_dir) for s in report["sizes"]]
    if report.get("sizes_plot"):
        plot_sizes(report["sizes"], report["metric"], output_dir / report["sizes_plot"])
    write_report(output_dir, report)
    return report


def write_report(output_dir: Path, report: dict[str, Any]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text(output_dir / REPORT_JSON, json.dumps(report, indent=2) + "\n")  # atomic: links replaced
    write_text(output_dir / REPORT_MD, render_markdown(report))
    write_text(output_dir / REPORT_HTML, render_html(report, output_dir))


__all__ = [
    "CompareSettings",
    "compare",
    "parse_seeds",
    "parse_sizes",
    "rebuild_report",
    "scratch_config",
    "write_report",
]
