"""Shared helpers for tests that train: quick settings and weight comparisons."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

import torch

QUICK = {"epochs": 3, "batch_size": 8, "log_steps": 2}
# learning rates that let tiny random-feature models learn in a few steps
LR = {"head": 5e-2, "partial": 1e-2, "lora": 1e-2, "full": 3e-3, "contrastive": 5e-2}


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

    # the textbook strategy unless one is named: these tests check mechanics, not a family's calibrated defaults
    strategy = strategy or hftl.CASE_RULES[case].strategy
    settings = {**QUICK, "lr": LR[strategy], **overrides}
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
    from hftl.outputs.loading import load

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


def assert_resume_matches(
    task: str, case: str, model: Any, dataset: Path, tmp_path: Path, at_step: int = 4, **settings: Any
):
    """Train once straight through, and once stopped after the checkpoint of optimizer step ``at_step`` (later
    checkpoints deleted, as if killed) then resumed with ``--resume auto``: weights and history must be identical.
    ``at_step`` 4 is mid-epoch; an epoch's last step is an epoch-end checkpoint."""
    settings = {"epochs": 3, "save_total_limit": 10, **settings}
    full = quick_train(task, case, model, dataset, tmp_path / "full", **settings)
    quick_train(task, case, model, dataset, tmp_path / "split", save_steps=4, **settings)
    mid_epoch = keep_only_checkpoint(tmp_path / "split", at_step)
    (tmp_path / "split" / "metrics.json").unlink()
    resumed = quick_train(
        task, case, model, dataset, tmp_path / "split", save_steps=4, resume="auto", **settings
    )
    assert resumed.metrics["resumed_from"].endswith(mid_epoch.name)
    assert resumed.metrics["global_step"] == full.metrics["global_step"]
    assert resumed.metrics["history"] == full.metrics["history"]
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for name, tensor in full_state.items():
        assert torch.equal(tensor, resumed_state[name]), name
    return resumed


def free_port() -> str:
    """A TCP port nobody listens on now: torchrun's rendezvous port, so that parallel test runs never collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def cached_and_uncached(task: str, case: str, model: Path, dataset: Path, tmp_path: Path) -> dict[bool, Any]:
    """The same one-epoch run with the frozen-feature cache on (True) and off (False), no augmentation."""
    return {
        cache: quick_train(
            task,
            case,
            model,
            dataset,
            tmp_path / f"cache-{cache}",
            epochs=1,
            augment=False,
            feature_cache=cache,
            feature_cache_dir=str(tmp_path / "features"),
        )
        for cache in (True, False)
    }


def keep_until(out: Path, step: int) -> None:
    """As if the run had been killed after the checkpoint of ``step``: later checkpoints and outputs removed."""
    for folder in (out / "checkpoints").iterdir():
        if int(folder.name.split("-")[1]) > step:
            shutil.rmtree(folder)
    (out / "metrics.json").unlink()


def assert_pipeline_uses_label_names(out: Path) -> None:
    """The saved folder loads in a plain transformers pipeline and names the red/green/blue classes of the
    colour-square image folder."""
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    classify = pipeline("image-classification", model=str(out))
    red = Image.fromarray(np.full((40, 40, 3), (200, 40, 40), dtype=np.uint8))
    predictions = classify(red)
    assert {p["label"] for p in predictions} == {"red", "green", "blue"}
    assert predictions[0]["label"] == "red"


def copy_with_json(folder: Path, dest: Path, name: str, **changes: Any) -> Path:
    """A copy of a model folder whose JSON file ``name`` (config.json, preprocessor_config.json) has ``changes``:
    untrusted files a user or an attacker edited."""
    import json

    copy = Path(shutil.copytree(folder, dest))
    settings = json.loads((copy / name).read_text(encoding="utf-8"))
    (copy / name).write_text(json.dumps({**settings, **changes}), encoding="utf-8")
    return copy
