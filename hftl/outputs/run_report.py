"""The report of every run, beside metrics.json: per-class precision/recall/F1 and the confusion matrix of the saved
model on the validation split, and the learning curve (training loss, validation metric).

The predictions are kept (``eval_predictions.json``) so ``hftl report RUN_DIR`` redraws everything without the
model. Multi-label runs keep 0/1 rows (each label predicted above the run's threshold): the table is per label (with
micro, macro and per-example averages) and the matrix is one 2x2 matrix per label (scikit-learn's
``multilabel_confusion_matrix``), since one example may be right about one label and wrong about another. scikit-learn computes the per-class table; the PNGs need matplotlib (``pip install "hftl[report]"``) and
are skipped, with a note, without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hftl.errors import ConfigError, OutputError
from hftl.outputs.artifacts import (
    CLASS_REPORT_FILE,
    CONFUSION_PNG,
    CURVE_PNG,
    PREDICTIONS_FILE,
    read_json_file,
)
from hftl.outputs.artifacts import RUN_LOG as LOG_FILE
from hftl.outputs.files import check_no_link_leaves, write_text


def per_class(labels: list[str], predictions: list[Any], references: list[Any]) -> dict[str, Any]:
    """Precision, recall, F1 and support per class (per label for 0/1 rows), plus the averages (scikit-learn's
    classification_report)."""
    from sklearn.metrics import classification_report

    return classification_report(
        references,
        predictions,
        labels=list(range(len(labels))),
        target_names=labels,
        output_dict=True,
        zero_division=0,
    )


def per_label_counts(labels: list[str], predictions: list[Any], references: list[Any]) -> dict[str, Any]:
    """Multi-label: true/false positives and negatives of each label."""
    from sklearn.metrics import multilabel_confusion_matrix

    matrices = multilabel_confusion_matrix(references, predictions, labels=list(range(len(labels))))
    return {
        label: {"tn": int(m[0, 0]), "fp": int(m[0, 1]), "fn": int(m[1, 0]), "tp": int(m[1, 1])}
        for label, m in zip(labels, matrices, strict=True)
    }


def write_run_report(
    output_dir: Path,
    labels: list[str],
    predictions: list[Any],
    references: list[Any],
    split: str,
    threshold: float | None = None,
) -> list[str]:
    """Save the predictions and draw the report; returns notes (e.g. plots skipped without matplotlib).
    ``threshold``: multi-label predictions (0/1 rows, each label predicted above it)."""
    record = {"split": split, "labels": labels, "predictions": predictions, "references": references}
    if threshold is not None:
        record.update(multi_label=True, threshold=threshold)
    write_text(output_dir / PREDICTIONS_FILE, json.dumps(record) + "\n")
    return redraw(output_dir)


def redraw(output_dir: str | Path) -> list[str]:
    """The per-class table and both plots from a run folder's saved predictions and logs."""
    output_dir = Path(output_dir)
    # the plots and table replace files there: never an outside one
    check_no_link_leaves(output_dir, OutputError)
    source = output_dir / PREDICTIONS_FILE
    if not source.is_file():
        raise ConfigError(
            f"{output_dir} has no {PREDICTIONS_FILE}: runs write it at their end (a run from an older hftl or one "
            "that did not finish has none)"
        )
    record = read_json_file(source, ConfigError)
    missing = [key for key in ("split", "labels", "predictions", "references") if key not in record]
    if missing:
        raise ConfigError(
            f"{source}: lacks {', '.join(missing)}: not the predictions a run writes; train again"
        )
    table = {
        "split": record["split"],
        **per_class(record["labels"], record["predictions"], record["references"]),
    }
    if record.get("multi_label"):
        table.update(multi_label=True, threshold=record["threshold"])
        table["confusion"] = per_label_counts(record["labels"], record["predictions"], record["references"])
    write_text(output_dir / CLASS_REPORT_FILE, json.dumps(table, indent=2) + "\n")
    try:
        if record.get("multi_label"):
            plot_label_confusion(record, table["confusion"], output_dir / CONFUSION_PNG)
        else:
            plot_confusion(record, output_dir / CONFUSION_PNG)
        plot_learning_curve(output_dir, output_dir / CURVE_PNG)
    except ImportError:
        return ["plots skipped: matplotlib is not installed (pip install 'hftl[report]')"]
    return []


def plot_confusion(record: dict[str, Any], path: Path) -> None:
    """Counts of (true class, predicted class) on the split, labelled with the class names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    labels = record["labels"]
    matrix = confusion_matrix(record["references"], record["predictions"], labels=list(range(len(labels))))
    size = min(3 + 0.5 * len(labels), 14)
    figure, axis = plt.subplots(figsize=(size, size), dpi=110)
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"confusion matrix ({record['split']}, {len(record['references'])} examples)")
    if len(labels) <= 30:
        for (row, column), count in _cells(matrix):
            colour = "white" if count > matrix.max() / 2 else "black"
            axis.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_label_confusion(record: dict[str, Any], counts: dict[str, dict[str, int]], path: Path) -> None:
    """Multi-label: one 2x2 matrix per label (true no/yes x predicted no/yes), in a grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = record["labels"]
    columns = min(len(labels), 5)
    rows = -(-len(labels) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(2.4 * columns, 2.4 * rows + 0.6), dpi=110, squeeze=False
    )
    for axis in axes.flat[len(labels) :]:
        axis.axis("off")
    for axis, label in zip(axes.flat, labels, strict=False):
        c = counts[label]
        matrix = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
        axis.imshow(matrix, cmap="Blues")
        axis.set_title(label, fontsize=9)
        axis.set_xticks([0, 1], ["no", "yes"])
        axis.set_yticks([0, 1], ["no", "yes"])
        for (row, column), count in _cells(matrix):
            colour = "white" if count > matrix.max() / 2 else "black"
            axis.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=8)
    figure.suptitle(
        f"per-label confusion ({record['split']}, {len(record['references'])} examples; rows true, columns "
        f"predicted above {record['threshold']})",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _cells(matrix: Any) -> list[tuple[tuple[int, int], int]]:
    return [((r, c), int(matrix[r, c])) for r in range(matrix.shape[0]) for c in range(matrix.shape[1])]


def plot_learning_curve(output_dir: Path, path: Path) -> None:
    """Training loss (each logged step) and the validation metrics (each evaluation) against optimizer steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses, evaluations = read_log(output_dir / LOG_FILE)
    figure, loss_axis = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    if losses:
        loss_axis.plot(*zip(*losses, strict=True), color="#7f7f7f", label="training loss")
    loss_axis.set_xlabel("optimizer steps")
    loss_axis.set_ylabel("training loss")
    metric_axis = loss_axis.twinx()
    for name in sorted({k for _, values in evaluations for k in values if k != "eval_loss"}):
        points = [(step, values[name]) for step, values in evaluations if name in values]
        metric_axis.plot(
            *zip(*points, strict=True), marker="o", label=f"validation {name.removeprefix('eval_')}"
        )
    metric_axis.set_ylabel("validation metric")
    handles = loss_axis.get_legend_handles_labels()[0] + metric_axis.get_legend_handles_labels()[0]
    if handles:
        loss_axis.legend(handles=handles, loc="center right")
    loss_axis.set_title("learning curve")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def read_log(path: Path) -> tuple[list[tuple[int, float]], list[tuple[int, dict[str, float]]]]:
    """(step, training loss) and (step, evaluation metrics) from metrics.jsonl; damaged lines are skipped."""
    losses, evaluations = [], []
    if not path.is_file():
        return losses, evaluations
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or "step" not in entry:
            continue
        if "loss" in entry:
            losses.append((int(entry["step"]), float(entry["loss"])))
        metrics = {
            k: float(v) for k, v in entry.items() if k.startswith("eval_") and isinstance(v, int | float)
        }
        if metrics:
            evaluations.append((int(entry["step"]), metrics))
    return losses, evaluations
