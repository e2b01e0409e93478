"""Scoring a model on a split, and what counts as better: the loop's per-epoch evaluation, the early-stopping rule,
and the final, one-time score of a held-out test split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from hftl.config import RunConfig
from hftl.errors import unknown_choice
from hftl.settings.choices import AUTO_METRIC
from hftl.training.checkpoints import Progress
from hftl.training.metrics import compute_metrics, default_metric_for_best, metric_names


def settle_problem(config: RunConfig, task_metrics: Sequence[str], multi_label: bool) -> tuple[str, ...]:
    """Once the data has said what its labels are, ``--problem-type auto`` and ``--metric-for-best auto`` become
    what they mean (and are recorded so); returns the metrics the run scores. A metric the problem does not have
    (accuracy for multi-label data) is refused, naming those it has."""
    config.problem_type = "multi_label" if multi_label else "single_label"
    names = metric_names(task_metrics, multi_label)
    if config.metric_for_best == AUTO_METRIC:
        config.metric_for_best = default_metric_for_best(multi_label)
    elif config.metric_for_best not in (*names, "loss"):
        kind = "multi-label" if multi_label else "single-label"
        raise unknown_choice(
            "metric_for_best", config.metric_for_best, [*names, "loss"], hint=f"(this data is {kind})"
        )
    return names


def decision_threshold(config: RunConfig) -> float | None:
    """The sigmoid score above which a label is predicted (multi-label); None: the top class (single-label)."""
    return config.threshold if config.problem_type == "multi_label" else None


def is_better(value: float, best: float | None, metric: str) -> bool:
    """Higher is better for every metric but the loss (as Trainer's ``greater_is_better``)."""
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def should_stop_early(progress: Progress, patience: int | None) -> bool:
    """``patience`` epoch ends in a row without a new best (derived from the progress, so resume keeps it)."""
    if not patience or progress.best_epoch is None:
        return False
    return progress.epoch - progress.best_epoch >= patience


def collect(
    model: nn.Module, dataloader: DataLoader, accelerator: Accelerator, threshold: float | None = None
) -> tuple[list[Any], list[Any], float]:
    """Predicted and true class ids over the whole loader, gathered across processes (duplicates from padding
    dropped), and the mean loss; a progress bar on the main process (a large split takes minutes). With a
    ``threshold`` (multi-label), 0/1 rows: a label is predicted when its sigmoid score is above it."""
    from tqdm.auto import tqdm

    model.eval()
    predictions, references, losses = [], [], []
    batches = tqdm(dataloader, desc="evaluating", leave=False, disable=not accelerator.is_local_main_process)
    for batch in batches:
        with torch.no_grad():
            outputs = model(**batch)
        preds, refs, loss = accelerator.gather_for_metrics(
            (decide(outputs.logits, threshold), batch["labels"].long(), outputs.loss.detach().reshape(1))
        )
        predictions.append(preds.cpu())
        references.append(refs.cpu())
        losses.append(loss.float().mean().cpu())
    return torch.cat(predictions).tolist(), torch.cat(references).tolist(), float(torch.stack(losses).mean())


def decide(logits: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """The top class per example, or (multi-label) a 0/1 row of the labels whose sigmoid score is above
    ``threshold``."""
    if threshold is None:
        return logits.argmax(dim=-1)
    return (torch.sigmoid(logits.float()) > threshold).long()


def evaluate(
    model: nn.Module,
    dataloader: DataLoader,
    accelerator: Accelerator,
    metrics: list,
    threshold: float | None = None,
) -> dict[str, float]:
    """Metrics over the whole validation set, gathered across processes."""
    predictions, references, loss = collect(model, dataloader, accelerator, threshold)
    scores = compute_metrics(metrics, predictions, references)
    scores["loss"] = loss
    return scores


def evaluate_split(
    model: nn.Module, dataset: Any, collator: Any, config: RunConfig, accelerator: Accelerator, metrics: list
) -> dict[str, float]:
    """Score a split that took no part in training or selection (the test split) with the whole network, the one
    that is saved; each process scores its shard, the results are gathered."""
    with accelerator.autocast():
        loader = split_loader(model, dataset, collator, config, accelerator)
        return evaluate(model, loader, accelerator, metrics, decision_threshold(config))


def predict_split(
    model: nn.Module, dataset: Any, collator: Any, config: RunConfig, accelerator: Accelerator
) -> tuple[list[Any], list[Any]]:
    """Predicted and true class ids (multi-label: 0/1 rows) of the whole network on a split (the run report)."""
    with accelerator.autocast():
        loader = split_loader(model, dataset, collator, config, accelerator)
        predictions, references, _ = collect(model, loader, accelerator, decision_threshold(config))
    return predictions, references


def split_loader(
    model: nn.Module, dataset: Any, collator: Any, config: RunConfig, accelerator: Accelerator
) -> Any:
    loader = accelerator.prepare_data_loader(
        DataLoader(dataset, batch_size=config.eval_batch_size or 2 * config.batch_size, collate_fn=collator)
    )
    model.to(accelerator.device)
    return loader
