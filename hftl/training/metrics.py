"""Classification metrics as ``evaluate`` modules that need no Hub download.

``evaluate.load("accuracy")`` fetches a script from the Hub, which fails offline. The built-ins here are
``evaluate.Metric`` subclasses computed with scikit-learn, so they behave like any evaluate metric (``add_batch``,
``compute``) and work everywhere. Other names in a task card go through ``evaluate.load`` (a script it runs: only with
``--trust-remote-code``; needs the Hub or a cache).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import datasets
import evaluate
from sklearn.metrics import accuracy_score, f1_score

from hftl.errors import ConfigError

_FEATURES = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})
# multi-label: one 0/1 row per example (thresholded sigmoid scores and the true label set), as evaluate's own
# "multilabel" configurations of accuracy and f1 take them
_MULTILABEL_FEATURES = datasets.Features(
    {
        "predictions": datasets.Sequence(datasets.Value("int64")),
        "references": datasets.Sequence(datasets.Value("int64")),
    }
)
MULTILABEL = "multilabel"
MULTI_LABEL_METRICS = ("f1_micro", "f1_macro", "subset_accuracy")


class _SklearnMetric(evaluate.Metric):
    """An offline metric over class ids, or over 0/1 rows with ``config_name="multilabel"``."""

    description = ""

    def _info(self) -> evaluate.MetricInfo:
        features = _MULTILABEL_FEATURES if self.config_name == MULTILABEL else _FEATURES
        return evaluate.MetricInfo(
            description=f"{self.description} (offline, scikit-learn).", citation="", features=features
        )


class Accuracy(_SklearnMetric):
    """Share of predictions equal to the reference label."""

    description = "Accuracy"

    def _compute(self, predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
        return {"accuracy": float(accuracy_score(references, predictions))}


class SubsetAccuracy(_SklearnMetric):
    """Multi-label: share of examples whose whole predicted label set is right (scikit-learn's accuracy on 0/1
    rows). Strict: one wrong label of ten makes the example wrong."""

    description = "Subset accuracy"

    def _compute(self, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
        return {"subset_accuracy": float(accuracy_score(references, predictions))}


class MacroF1(_SklearnMetric):
    """F1 averaged over classes (or labels) with equal weight: honest on imbalanced label sets."""

    description = "Macro-averaged F1"

    def _compute(self, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
        return {"f1_macro": float(f1_score(references, predictions, average="macro", zero_division=0))}


class MicroF1(_SklearnMetric):
    """F1 over every (example, label) decision pooled: the usual headline of multi-label tasks, where rare
    labels count by their share."""

    description = "Micro-averaged F1"

    def _compute(self, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
        return {"f1_micro": float(f1_score(references, predictions, average="micro", zero_division=0))}


BUILTIN_METRICS: dict[str, type[evaluate.Metric]] = {
    "accuracy": Accuracy,
    "f1_macro": MacroF1,
    "f1_micro": MicroF1,
    "subset_accuracy": SubsetAccuracy,
}


def metric_names(task_metrics: Sequence[str], multi_label: bool) -> tuple[str, ...]:
    """What a run scores: the task card's metrics, or for multi-label data micro-F1, macro-F1 and subset
    accuracy (the card's single-label metrics have no multi-label meaning)."""
    return MULTI_LABEL_METRICS if multi_label else tuple(task_metrics)


def default_metric_for_best(multi_label: bool) -> str:
    """``--metric-for-best auto``: accuracy, or micro-F1 for multi-label data (subset accuracy is too strict to
    tell epochs apart when labels are many)."""
    return "f1_micro" if multi_label else "accuracy"


def load_metrics(
    names: Iterable[str], multi_label: bool = False, trust_remote_code: bool = False
) -> list[evaluate.EvaluationModule]:
    """Instantiate metrics by name, in memory (no cache files shared between processes); ``multi_label``: the
    built-ins read 0/1 rows. Any other name is a Python script that ``evaluate.load`` runs (from the Hub, or a path
    in a task card: untrusted input), so it needs ``trust_remote_code``, as a model's own code does."""
    modules = []
    for name in names:
        if name in BUILTIN_METRICS:
            config = MULTILABEL if multi_label else None
            modules.append(BUILTIN_METRICS[name](config_name=config, keep_in_memory=True))
            continue
        if not trust_remote_code:
            raise ConfigError(
                f"metric {name!r} is not built in ({', '.join(BUILTIN_METRICS)}): evaluate.load would run its "
                "Python script; name a built-in metric in the task card, or pass --trust-remote-code if you trust "
                "that script"
            )
        try:
            modules.append(evaluate.load(name, keep_in_memory=True))
        except Exception as error:  # evaluate raises many types when offline
            raise ConfigError(
                f"metric {name!r} is not built in ({', '.join(BUILTIN_METRICS)}) and evaluate.load could not "
                f"fetch it ({type(error).__name__}); use a built-in name or make it available offline"
            ) from error
    return modules


def compute_metrics(
    modules: Iterable[evaluate.EvaluationModule], predictions: Sequence[int], references: Sequence[int]
) -> dict[str, float]:
    """Run every metric on the same predictions and merge their results into one dict."""
    results: dict[str, float] = {}
    for module in modules:
        results.update(module.compute(predictions=list(predictions), references=list(references)))
    return results
