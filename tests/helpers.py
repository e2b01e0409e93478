"""Shared helpers for tests that train: quick settings and weight comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

QUICK = {"epochs": 3, "batch_size": 8, "log_steps": 2}
# learning rates that let tiny random-feature models learn in a few steps
LR = {"head": 5e-2, "partial": 1e-2, "lora": 1e-2, "full": 3e-3}


def quick_train(
    task: str,
    case: str,
    model: Path,
    dataset: Path,
    output_dir: Path,
    strategy: str | None = None,
    **overrides: Any,
):
    import hftl

    settings = {**QUICK, "lr": LR[strategy or hftl.CASE_RULES[case].strategy], **overrides}
    return hftl.train(
        task=task,
        case=case,
        strategy=strategy,
        model=str(model),
        dataset=str(dataset),
        output_dir=str(output_dir),
        **settings,
    )


def saved_state(model_dir: Path) -> dict[str, torch.Tensor]:
    """The tensors of a save_pretrained folder (before any training), under the in-memory module names
    (transformers may store legacy key names on disk)."""
    from hftl.loading import load

    return {name: tensor.detach().clone() for name, tensor in load(model_dir).state_dict().items()}


def base_name(name: str) -> str:
    """Parameter name without PEFT's wrapping (base_model.model.) or LoRA layer indirection (.base_layer)."""
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".").replace(".original_module.", ".")


def keep_only_checkpoint(output_dir: Path, step: int) -> Path:
    """Delete every checkpoint but the one taken at optimizer step ``step`` (an interrupted run); return it."""
    import shutil

    checkpoints = sorted((output_dir / "checkpoints").iterdir())
    kept = next(c for c in checkpoints if c.name.startswith(f"checkpoint-{step:08d}"))
    for other in checkpoints:
        if other != kept:
            shutil.rmtree(other)
    return kept
