"""Training on a stream (--streaming): counted in optimizer steps, evaluated every --eval-steps, and resumed exactly:
a run stopped at step k and resumed ends with the same weights, byte for byte, as a run never stopped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import hftl
from tests.conftest import make_bert, sentences

# 60 examples / batch 8: a pass is 8 batches (the last one of 4), so 12 steps run past the end of the first pass
STREAM = {
    "task": "text",
    "case": "large_similar",
    "strategy": "full",  # BERT keeps its dropout: the restored RNG states matter
    "streaming": True,
    "max_steps": 12,
    "eval_steps": 4,
    "batch_size": 8,
    "shuffle_buffer": 16,
    "lr": 3e-3,
    "seed": 5,
    "save_total_limit": 10,
    "report_to": "none",
}


@pytest.fixture(scope="module")
def stream_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small random BERT and a JSONL folder (train and validation files) it reads as a stream."""
    root = tmp_path_factory.mktemp("stream")
    model = make_bert(root / "bert", num_layers=2)
    data = root / "data"
    data.mkdir()
    for split, count, seed in (("train", 60, 3), ("validation", 16, 4)):
        rows = [json.dumps({"text": text, "label": label}) for text, label in sentences(count, seed)]
        (data / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return model, data


def train(model: Path, data: Path, out: Path, **extra):
    return hftl.train(model=str(model), dataset=str(data), output_dir=str(out), **{**STREAM, **extra})


@pytest.fixture(scope="module")
def runs(stream_setup, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same streamed run twice: straight through, and with a checkpoint every 2 steps (to be cut short)."""
    model, data = stream_setup
    root = tmp_path_factory.mktemp("stream-runs")
    full = train(model, data, root / "full")
    train(model, data, root / "split", save_steps=2)
    return {"full": full, "split": root / "split"}


def interrupted_at(split: Path, step: int, copy: Path) -> Path:
    """A copy of ``split`` as a run killed after the checkpoint of ``step``: later checkpoints and the run's
    results are gone. Returns the checkpoint it resumes from."""
    shutil.copytree(split, copy)
    for folder in (copy / "checkpoints").iterdir():
        if int(folder.name.split("-")[1]) > step:
            shutil.rmtree(folder)
    (copy / "metrics.json").unlink()
    return next(f for f in (copy / "checkpoints").iterdir() if int(f.name.split("-")[1]) == step)


def test_a_stream_trains_for_max_steps_and_evaluates_every_eval_steps(runs):
    metrics = runs["full"].metrics
    assert metrics["global_step"] == 12
    assert [(h["epoch"], h["step"]) for h in metrics["history"]] == [(1, 4), (2, 8), (3, 12)]
    # 12 batches: the 8 of the first pass (60 examples, the last batch of 4), then 4 of the second (32)
    assert metrics["streaming"]["position"] == {
        "passes": 1,
        "consumed": 32,
        "read": 92,
        "skipped": 0,
        "first_bad": [],
    }
    assert metrics["train_examples"] is None and metrics["validation_examples"] == 16
    assert metrics["feature_cache"]["used"] is False
    checkpoints = list((runs["split"] / "checkpoints").iterdir())
    assert len(checkpoints) == 6 and all((c / "stream-0.json").is_file() for c in checkpoints)


@pytest.mark.parametrize("at_step", [6, 8], ids=["mid-pass", "pass-end-and-evaluation"])
def test_resume_from_step_k_ends_with_the_weights_of_an_uninterrupted_run(
    at_step, runs, stream_setup, tmp_path
):
    """Step 6 is mid-pass and mid-period; step 8 is the end of the first pass (60 examples, not yet noticed) and
    an evaluation. The resumed run re-reads the pass, skips what was trained on, and restores the RNG (dropout)."""
    model, data = stream_setup
    out = tmp_path / "resumed"
    kept = interrupted_at(runs["split"], at_step, out)
    saved = json.loads((kept / "stream-0.json").read_text())
    assert (saved["passes"], saved["consumed"]) == (0, at_step * 8 if at_step < 8 else 60)
    resumed = train(model, data, out, save_steps=2, resume="auto")
    full = runs["full"]
    assert resumed.metrics["resumed_from"].endswith(kept.name)
    assert resumed.metrics["history"] == full.metrics["history"]
    assert resumed.metrics["streaming"]["position"] == full.metrics["streaming"]["position"]
    last = "checkpoint-00000012-e3b0"
    for name in (f"checkpoints/{last}/trainable.safetensors", "model.safetensors"):
        assert (out / name).read_bytes() == (runs["split"] / name).read_bytes(), name
    first, second = full.model.state_dict(), resumed.model.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(tensor, second[name]) for name, tensor in first.items())


def test_resume_refuses_a_checkpoint_of_another_stream_order(runs, stream_setup, tmp_path):
    model, data = stream_setup
    interrupted_at(runs["split"], 6, tmp_path / "run")
    with pytest.raises(hftl.ConfigError, match=r"made by a different run \(.*train_data"):
        train(model, data, tmp_path / "run", save_steps=2, shuffle_buffer=32, resume="auto")
