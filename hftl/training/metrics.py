"""Classification metrics as ``evaluate`` modules that need no Hub download.

``evaluate.load("accuracy")`` fetches a script from the Hub, which fails offline. The built-ins here are
``evaluate.Metric`` subclasses computed with scikit-learn, so they behave like any evaluate metric (``add_batch``,
``compute``) and work everywhere. Other names in a task card go through ``evaluate.load`` (needs the Hub or a cache).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import datasets
import evaluate
from sklearn.metrics import accuracy_score, f1_score

from hftl.errors import ConfigError

_FEATURES = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})


class Accuracy(evaluate.Metric):
    """Share of predictions equal to the reference label."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Accuracy (offline, scikit-learn).", citation="", features=_FEATURES
        )

    def _compute(self, predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
        return {"accuracy": float(accuracy_score(references, predictions))}


class MacroF1(evaluate.Metric):
    """F1 averaged over classes with equal weight: honest on imbalanced label sets."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Macro-averaged F1 (offline, scikit-learn).", citation="", features=_FEATURES
        )

    def _compute(self, predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
        return {"f1_macro": float(f1_score(references, predictions, average="macro", zero_division=0))}


BUILTIN_METRICS: dict[str, type[evaluate.Metric]] = {"accuracy": Accuracy, "f1_macro": MacroF1}


def load_metrics(names: Iterable[str]) -> list[evaluate.EvaluationModule]:
    """Instantiate metrics by name, in memory (no cache files shared between processes)."""
    modules = []
    for name in names:
        if name in BUILTIN_METRICS:
            modules.append(BUILTIN_METRICS[name](keep_in_memory=True))
            continue
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
