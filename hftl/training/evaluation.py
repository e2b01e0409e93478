"""Scoring a model on a split, and what counts as better: the loop's per-epoch evaluation, the early-stopping rule,
and the final, one-time score of a held-out test split."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from hftl.config import RunConfig
from hftl.training.checkpoints import Progress
from hftl.training.metrics import compute_metrics


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
    model: nn.Module, dataloader: DataLoader, accelerator: Accelerator
) -> tuple[list[int], list[int], float]:
    """Predicted and true class ids over the whole loader, gathered across processes (duplicates from padding
    dropped), and the mean loss; a progress bar on the main process (a large split takes minutes)."""
    from tqdm.auto import tqdm

    model.eval()
    predictions, references, losses = [], [], []
    batches = tqdm(dataloader, desc="evaluating", leave=False, disable=not accelerator.is_local_main_process)
    for batch in batches:
        with torch.no_grad():
            outputs = model(**batch)
        preds, refs, loss = accelerator.gather_for_metrics(
            (outputs.logits.argmax(dim=-1), batch["labels"], outputs.loss.detach().reshape(1))
        )
        predictions.append(preds.cpu())
        references.append(refs.cpu())
        losses.append(loss.float().mean().cpu())
    return torch.cat(predictions).tolist(), torch.cat(references).tolist(), float(torch.stack(losses).mean())


def evaluate(
    model: nn.Module, dataloader: DataLoader, accelerator: Accelerator, metrics: list
) -> dict[str, float]:
    """Metrics over the whole validation set, gathered across processes."""
    predictions, references, loss = collect(model, dataloader, accelerator)
    scores = compute_metrics(metrics, predictions, references)
    scores["loss"] = loss
    return scores


def evaluate_split(
    model: nn.Module, dataset: Any, collator: Any, config: RunConfig, accelerator: Accelerator, metrics: list
) -> dict[str, float]:
    """Score a split that took no part in training or selection (the test split) with the whole network, the one
    that is saved; each process scores its shard, the results are gathered."""
    with accelerator.autocast():
        return evaluate(
            model, split_loader(model, dataset, collator, config, accelerator), accelerator, metrics
        )


def predict_split(
    model: nn.Module, dataset: Any, collator: Any, config: RunConfig, accelerator: Accelerator
) -> tuple[list[int], list[int]]:
    """Predicted and true class ids of the whole network on a split (the run report's confusion matrix)."""
    with accelerator.autocast():
        predictions, references, _ = collect(
            model, split_loader(model, dataset, collator, config, accelerator), accelerator
        )
    return predictions, references


def split_loader(
    model: nn.Module, dataset: Any, collator: Any, config: RunConfig, accelerator: Accelerator
) -> Any:
    loader = accelerator.prepare_data_loader(
        DataLoader(dataset, batch_size=config.eval_batch_size or 2 * config.batch_size, collate_fn=collator)
    )
    model.to(accelerator.device)
    return loader
