"""Transfer benefits from learning curves, and the plots and summaries a person reads.

Three benefits of transfer (Torrey & Shavlik's "higher start, higher slope, higher asymptote"), measured on the
validation curves of each transfer plan's runs and the from-scratch runs with the same budget:

- **start**: the metric at the first evaluation (after the first ``eval_steps`` steps, or the first epoch);
- **slope**: the area under the learning curve, normalised to the mean metric over the run (trapezoids over the
  evaluated steps), and the steps each run needs to reach a target (default: 90% of the better arm's best metric;
  an arm that never gets there is reported as such);
- **asymptote**: the best metric.

With several seeds each number is a mean (with its standard deviation) over seeds; benefits are each plan minus
scratch, except steps to target, reported for every arm (fewer is better); one sentence per training-set size says
which plan wins and by how much. Plots use matplotlib (``pip install hftl[report]``) on the Agg backend.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hftl.errors import ConfigError

BASELINE = "scratch"
COLOURS = {"scratch": "#d62728"}
PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
KEYS = ("start", "auc", "asymptote")


def arms_of(runs: dict[str, Any]) -> list[str]:
    """The arms in report order: the plans as given, the baseline last."""
    return [arm for arm in runs if arm != BASELINE] + [BASELINE]


def colour(arm: str, arms: list[str]) -> str:
    return COLOURS.get(arm) or PALETTE[arms.index(arm) % len(PALETTE)]


TARGET_FRACTION = 0.9


def curve_points(curve: Sequence[dict[str, Any]], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one run's evaluations, in step order."""
    key = f"eval_{metric}"
    points = sorted((int(p["step"]), float(p[key])) for p in curve if key in p)
    if not points:
        raise ConfigError(
            f"the learning curve has no {key!r}; evaluated metrics: {sorted(curve[0]) if curve else []}"
        )
    steps, values = zip(*points, strict=True)
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def area_under_curve(steps: np.ndarray, values: np.ndarray) -> float:
    """Mean metric over the evaluated span (trapezoids); a single evaluation is its own value."""
    if len(steps) < 2 or steps[-1] == steps[0]:
        return float(values[-1])
    area = np.sum((values[1:] + values[:-1]) / 2 * np.diff(steps))
    return float(area / (steps[-1] - steps[0]))


def steps_to(steps: np.ndarray, values: np.ndarray, target: float) -> int | None:
    """The first evaluated step at which the metric reaches ``target`` (None if it never does)."""
    reached = np.nonzero(values >= target)[0]
    return int(steps[reached[0]]) if reached.size else None


def run_figures(curve: Sequence[dict[str, Any]], metric: str, target: float) -> dict[str, Any]:
    steps, values = curve_points(curve, metric)
    return {
        "start": float(values[0]),
        "start_step": int(steps[0]),
        "auc": area_under_curve(steps, values),
        "steps_to_target": steps_to(steps, values, target),
        "asymptote": float(values.max()),
    }


def _summary(values: Sequence[float | None]) -> dict[str, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "reached": 0}
    return {"mean": float(np.mean(present)), "std": float(np.std(present)), "reached": len(present)}


def benefits(
    runs: dict[str, list[Sequence[dict[str, Any]]]], metric: str, target: float | None = None
) -> dict:
    """Figures per arm (mean/std over seeds) and each plan's benefits over scratch, from every arm's curves;
    ``benefit`` and ``best_plan`` are the plan with the best asymptote."""
    order = arms_of(runs)
    for arm in order:
        if not runs.get(arm):
            raise ConfigError(f"no {arm} runs to compare")
    if len(order) < 2:
        raise ConfigError("no transfer runs to compare with scratch")
    if target is None:
        best = {arm: np.mean([curve_points(c, metric)[1].max() for c in runs[arm]]) for arm in order}
        target = TARGET_FRACTION * float(max(best.values()))
    per_run = {arm: [run_figures(c, metric, target) for c in runs[arm]] for arm in order}
    arms = {
        arm: {key: _summary([f[key] for f in per_run[arm]]) for key in (*KEYS, "steps_to_target")}
        for arm in order
    }
    gains = {
        arm: {key: arms[arm][key]["mean"] - arms[BASELINE][key]["mean"] for key in KEYS}
        for arm in order
        if arm != BASELINE
    }
    best_plan = max(gains, key=lambda arm: arms[arm]["asymptote"]["mean"])
    return {
        "metric": metric,
        "target": target,
        "arms": arms,
        "benefits": gains,
        "best_plan": best_plan,
        "benefit": gains[best_plan],
        "runs": per_run,
    }


def verdict(size: dict[str, Any]) -> str:
    """One sentence: which arm is best at this size and by how much against scratch (points of the metric)."""
    arms, metric, examples = size["arms"], size["metric"], size["train_examples"]
    best = max(arms, key=lambda arm: arms[arm]["asymptote"]["mean"])
    scratch = arms[BASELINE]["asymptote"]["mean"]
    if best == BASELINE:
        plan = size["best_plan"]
        value = arms[plan]["asymptote"]["mean"]
        return (
            f"With {examples:,} training examples no plan beats scratch: scratch reaches {metric} {scratch:.4f}, "
            f"the best plan ({plan}) {value:.4f} ({100 * (value - scratch):+.1f} points)."
        )
    value, gain = arms[best]["asymptote"]["mean"], size["benefits"][best]
    return (
        f"With {examples:,} training examples {best} is best: {metric} {value:.4f}, "
        f"{100 * (value - scratch):+.1f} points over scratch ({scratch:.4f}), starting "
        f"{100 * gain['start']:+.1f} points higher."
    )


# --- plots --------------------------------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ConfigError("plots need matplotlib: pip install 'hftl[report]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, figure: Any, axis: Any, xlabel: str, metric: str, title: str, path: Path) -> Path:
    """Labels, grid, legend, and the PNG written to ``path``."""
    axis.set_xlabel(xlabel)
    axis.set_ylabel(f"validation {metric}")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_curves(
    runs: dict[str, list[Sequence[dict[str, Any]]]], metric: str, target: float, title: str, path: Path
) -> Path:
    """Learning curves of every arm: the mean over seeds, with the seeds' range shaded."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    order = arms_of(runs)
    for arm in order:
        curves = [curve_points(c, metric) for c in runs[arm]]
        steps = curves[0][0]
        values = np.stack([np.interp(steps, s, v) for s, v in curves])
        tint = colour(arm, order)
        axis.plot(steps, values.mean(axis=0), marker="o", markersize=3, color=tint, label=arm)
        if len(curves) > 1:
            axis.fill_between(steps, values.min(axis=0), values.max(axis=0), color=tint, alpha=0.2)
    axis.axhline(target, color="grey", linestyle=":", linewidth=1, label=f"target {target:.3f}")
    return _save(plt, figure, axis, "optimizer steps", metric, title, path)


def plot_sizes(sizes: list[dict[str, Any]], metric: str, path: Path) -> Path:
    """Start and best metric of every arm against the training-set size."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    xs = [s["train_examples"] for s in sizes]
    order = arms_of(sizes[0]["arms"])
    for arm in order:
        for key, style in (("asymptote", "-"), ("start", "--")):
            ys = [s["arms"][arm][key]["mean"] for s in sizes]
            axis.plot(
                xs,
                ys,
                style,
                marker="o",
                color=colour(arm, order),
                label=f"{arm}: {'best' if key == 'asymptote' else 'start'}",
            )
    axis.set_xscale("log")
    return _save(
        plt, figure, axis, "training examples", metric, "Transfer benefit by training-set size", path
    )


# --- summaries ----------------------------------------------------------------------------------------------------
def _num(summary: dict[str, float | None], digits: int = 4) -> str:
    if summary["mean"] is None:
        return "never"
    text = f"{summary['mean']:.{digits}f}"
    if summary["std"]:
        text += f" ± {summary['std']:.{digits}f}"
    return text


def _steps(summary: dict[str, float | None], seeds: int) -> str:
    if summary["mean"] is None:
        return "never"
    text = f"{summary['mean']:.0f}"
    return text + (f" ({summary['reached']}/{seeds} seeds)" if summary["reached"] < seeds else "")


def size_rows(size: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The header (one column per arm) and the rows (start, slope, steps to target, asymptote) of one size, then
    one row per plan's benefits over scratch."""
    order = arms_of(size["arms"])
    arms, seeds = size["arms"], len(size["runs"][order[0]])
    start_step = size["runs"][order[0]][0]["start_step"]
    rows = [
        [f"start ({size['metric']} at step {start_step})"] + [_num(arms[a]["start"]) for a in order],
        ["slope: area under the curve (mean metric)"] + [_num(arms[a]["auc"]) for a in order],
        [f"slope: steps to reach {size['target']:.4f}"]
        + [_steps(arms[a]["steps_to_target"], seeds) for a in order],
        ["asymptote: best"] + [_num(arms[a]["asymptote"]) for a in order],
    ]
    for plan, gain in size["benefits"].items():
        rows.append(
            [f"{plan} - scratch: start / area / best"]
            + [
                f"{gain['start']:+.4f} / {gain['auc']:+.4f} / {gain['asymptote']:+.4f} ({_speedup(arms, plan)})"
                if arm == plan
                else ""
                for arm in order
            ]
        )
    return ["", *order], rows


def _speedup(arms: dict[str, Any], plan: str) -> str:
    mine, scratch = arms[plan]["steps_to_target"]["mean"], arms[BASELINE]["steps_to_target"]["mean"]
    if mine is None:
        return "never reached the target"
    if scratch is None:
        return "scratch never reached the target"
    if mine == scratch:
        return "same steps to target"
    return (
        f"{scratch / max(mine, 1e-9):.1f}x fewer steps"
        if mine < scratch
        else f"{mine / scratch:.1f}x more steps"
    )


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Transfer benefit report",
        "",
        f"Task `{report['task']}`, model `{report['model']}`: **{report['transfer_setup']}** against a "
        f"from-scratch baseline ({report['scratch_setup']}) with the same budget ({report['epochs']} epochs, "
        f"batch size {report['batch_size']}), seeds {', '.join(map(str, report['seeds']))}. Numbers are "
        f"validation {report['metric']}.",
        "",
    ]
    if report.get("sizes_plot"):
        lines += [f"![start and best by training-set size]({report['sizes_plot']})", ""]
    for size in report["sizes"]:
        lines += [f"## {size['train_examples']:,} training examples", ""]
        lines += [f"**{verdict(size)}**", ""]
        lines += [f"Plans: {size['transfer_setup']}; baseline: {size['scratch_setup']}.", ""]
        if size.get("case_note"):
            lines += [size["case_note"], ""]
        header, rows = size_rows(size)
        lines += [f"| {' | '.join(header)} |", "| " + " | ".join("---" for _ in header) + " |"]
        lines += [f"| {' | '.join(row)} |" for row in rows]
        lines += ["", f"![learning curves, {size['train_examples']} examples]({size['plot']})", ""]
    return "\n".join(lines)


def render_html(report: dict[str, Any], folder: Path) -> str:
    """The same summary as one self-contained HTML page (plots embedded as data URIs)."""

    def image(name: str, alt: str) -> str:
        data = base64.b64encode((folder / name).read_bytes()).decode("ascii")
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>hftl transfer benefit report</title>",
        "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}</style>",
        "</head><body><h1>Transfer benefit report</h1>",
        f"<p>Task <code>{html.escape(report['task'])}</code>, model <code>{html.escape(report['model'])}</code>: "
        f"<b>{html.escape(report['transfer_setup'])}</b> against a from-scratch baseline "
        f"({html.escape(report['scratch_setup'])}) with the same budget ({report['epochs']} epochs, batch size "
        f"{report['batch_size']}), seeds {', '.join(map(str, report['seeds']))}.</p>",
    ]
    if report.get("sizes_plot"):
        parts.append(image(report["sizes_plot"], "start and best by training-set size"))
    for size in report["sizes"]:
        parts.append(f"<h2>{size['train_examples']:,} training examples</h2>")
        parts.append(f"<p><b>{html.escape(verdict(size))}</b></p>")
        parts.append(
            f"<p>Plans: {html.escape(size['transfer_setup'])}; baseline: {html.escape(size['scratch_setup'])}.</p>"
        )
        if size.get("case_note"):
            parts.append(f"<p>{html.escape(size['case_note'])}</p>")
        header, rows = size_rows(size)
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
        parts.append("</table>")
        parts.append(image(size["plot"], f"learning curves, {size['train_examples']} examples"))
    parts.append("</body></html>")
    return "\n".join(parts)


def size_label(size: int | None) -> str:
    return "all" if size is None else str(size)


__all__ = [
    "area_under_curve",
    "benefits",
    "curve_points",
    "plot_curves",
    "plot_sizes",
    "render_html",
    "render_markdown",
    "steps_to",
    "verdict",
]
