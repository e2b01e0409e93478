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


def test_eval_strategy_end_evaluates_the_last_step_only_and_still_checkpoints_every_period(
    stream_setup, tmp_path
):
    model, data = stream_setup
    result = train(model, data, tmp_path / "end", eval_strategy="end")
    metrics = result.metrics
    assert metrics["global_step"] == 12
    assert [(h["epoch"], h["step"]) for h in metrics["history"]] == [(3, 12)]  # periods 1 and 2: not scored
    assert metrics["best"]["epoch"] == 3 and "eval_accuracy" in metrics["best"]
    checkpoints = sorted((tmp_path / "end" / "checkpoints").iterdir())
    assert [int(c.name.split("-")[1]) for c in checkpoints] == [4, 8, 12]
    assert all((c / "stream-0.json").is_file() for c in checkpoints)


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


TWO_PROCESSES = """
import json, sys
from pathlib import Path
import hftl
from hftl.config import resolve_config
from hftl.recipes.prepare import prepare_data
from hftl.recipes.run import make_accelerator, release_accelerator_state
from hftl.tasks import get_task

settings, out = json.loads(sys.argv[1]), Path(sys.argv[2])
config = resolve_config({**settings, "output_dir": str(out / "probe")})
accelerator = make_accelerator(config)
_, _, inputs = prepare_data(config, get_task("text"), None, accelerator)
seen = [ids for batch in inputs.stream.loader() for ids in batch["input_ids"].tolist()]
rank = accelerator.process_index
(out / f"seen-{rank}.json").write_text(json.dumps([accelerator.num_processes, seen]))
release_accelerator_state()
hftl.train(**{**settings, "output_dir": str(out / "run")})
"""


@pytest.mark.slow  # two processes start torch and transformers: about 20 s of both cores
def test_two_processes_each_train_on_their_own_disjoint_share(stream_setup, tmp_path):
    import os
    import subprocess
    import sys

    from tests.helpers import free_port

    model, data = stream_setup
    settings = {**STREAM, "model": str(model), "dataset": str(data), "max_steps": 6, "batch_size": 5}
    script = tmp_path / "two.py"
    script.write_text(TWO_PROCESSES)
    torchrun = Path(sys.executable).parent / "torchrun"
    args = [str(torchrun), "--nproc_per_node", "2", "--master_port", free_port(), str(script)]
    repo = str(Path(__file__).resolve().parents[2])  # this checkout's hftl, whatever is installed
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": repo,
    }
    done = subprocess.run(
        [*args, json.dumps(settings), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    shares = [json.loads((tmp_path / f"seen-{rank}.json").read_text()) for rank in (0, 1)]
    assert [share[0] for share in shares] == [2, 2]
    first, second = ({tuple(ids) for ids in share[1]} for share in shares)
    assert len(shares[0][1]) == len(shares[1][1]) == 30  # 60 examples, one in two each
    assert first.isdisjoint(second)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["global_step"] == 6
    # 6 steps x batch 5 = each process's whole share, read once: nobody read (or was sent) the other's
    last = sorted((tmp_path / "run" / "checkpoints").iterdir())[-1]
    for rank in (0, 1):
        position = json.loads((last / f"stream-{rank}.json").read_text())
        assert (position["passes"], position["consumed"], position["read"]) == (0, 30, 30)
