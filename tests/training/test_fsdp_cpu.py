"""FSDP2 in two CPU processes (gloo): every process writes its shard of each checkpoint, a run stopped and resumed
ends byte-identical to one that never stopped, and every plan (head-only, partial, LoRA, full) trains sharded and
saves a model transformers loads. Accelerate runs FSDP only on GPUs, so ``fsdp_on_cpu.py`` switches the Accelerator
hftl makes to the plugin built from configs/accelerate/fsdp.yaml (see its docstring).

Slow (about 90 s on two cores: one torchrun of six short runs), so off by default: ``pytest -m slow``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hftl
from tests.helpers import base_name, free_port, keep_until, saved_state
from tests.training.test_multilabel import write_squares

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("fsdp_on_cpu.py")
REPO = Path(__file__).resolve().parents[2]


def torchrun(runs: list[dict], tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    args = [
        str(Path(sys.executable).parent / "torchrun"),
        "--nproc_per_node",
        "2",
        "--master_port",
        free_port(),
    ]
    done = subprocess.run(
        [*args, str(SCRIPT), json.dumps(runs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]


def test_fsdp_checkpoints_resume_exactly_and_every_plan_trains_sharded(vit_dir, image_folder, tmp_path):
    common = {
        "task": "image",
        "model": str(vit_dir),
        "dataset": str(image_folder),
        "epochs": 2,
        "batch_size": 8,
        "seed": 3,
        "augment": False,
        "report_to": "none",
        "save_total_limit": 10,
        "max_shard_size": "20KB",
    }
    full = {**common, "case": "large_similar", "strategy": "full", "lr": 3e-3}
    plans = {
        "head": {**common, "case": "small_similar", "strategy": "head", "lr": 5e-2},
        "partial": {**common, "case": "large_similar", "strategy": "partial", "keep_layers": 2, "lr": 1e-2},
        "lora": {**common, "case": "large_similar", "strategy": "lora", "lr": 1e-2},
    }
    # multi-label (BCE-with-logits with pos_weight on multi-hot float targets) under the device-side guard, scored
    # only at the end while every epoch still writes its shards
    multi_label = {
        **full,
        "dataset": str(write_squares(tmp_path / "squares")),
        "class_weights": "auto",
        "eval_strategy": "end",
        "output_dir": str(tmp_path / "multi-label"),
    }
    first = [
        {**full, "output_dir": str(tmp_path / "straight")},
        {**full, "output_dir": str(tmp_path / "stopped"), "save_steps": 2},
        *({**settings, "output_dir": str(tmp_path / name)} for name, settings in plans.items()),
        multi_label,
    ]
    torchrun(first, tmp_path)
    # 48 images / (2 processes x 8) = 3 steps per epoch: step 2 is mid-epoch (2 batches done)
    keep_until(tmp_path / "stopped", 2)
    torchrun([{**full, "output_dir": str(tmp_path / "stopped"), "save_steps": 2, "resume": "auto"}], tmp_path)

    straight, resumed = tmp_path / "straight", tmp_path / "stopped"
    a, b = (json.loads((run / "metrics.json").read_text()) for run in (straight, resumed))
    assert b["resumed_from"].endswith("checkpoint-00000002-e0b2")
    assert a["history"] == b["history"] and a["global_step"] == b["global_step"] == 6
    first_weights, second_weights = saved_state(straight), saved_state(resumed)
    assert first_weights.keys() == second_weights.keys()
    assert all(torch.equal(first_weights[k], second_weights[k]) for k in first_weights)

    checkpoint = sorted((resumed / "checkpoints").iterdir())[-1]
    assert json.loads((checkpoint / "engine.json").read_text()) == {"engine": "fsdp", "processes": 2}
    shards = sorted(p.name for p in (checkpoint / "pytorch_model_fsdp_0").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # each process wrote its own
    assert "pytorch_model_fsdp_0/__1_0.distcp" in json.loads((checkpoint / "checksums.json").read_text())
    # the final model is gathered and split into files of at most --max-shard-size, with an index
    assert (straight / "model.safetensors.index.json").is_file()
    assert len(list(straight.glob("model-*-of-*.safetensors"))) > 1

    wrapping = json.loads((straight / "fsdp-rank1.json").read_text())
    assert "FSDPViTLayer" in wrapping["units"] and wrapping["local_numel"] < 0.6 * wrapping["numel"]
    before = saved_state(vit_dir)
    for name in plans:
        out = tmp_path / name
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["global_step"] == 6 and not metrics["feature_cache"]["used"], name
        assert metrics["best"]["eval_accuracy"] > 0.5, name  # 3 colours: chance is 1/3
        assert "FSDPViTLayer" in json.loads((out / "fsdp-rank0.json").read_text())["units"], name
        after = {base_name(k): v for k, v in saved_state(out).items()}
        frozen = [k for k in before if k.startswith("vit.embeddings") and k in after]
        assert frozen and all(torch.equal(before[k], after[k]) for k in frozen), name
    tagged = json.loads((tmp_path / "multi-label" / "metrics.json").read_text())
    assert tagged["problem_type"] == "multi_label_classification" and tagged["nonfinite_steps_skipped"] == 0
    assert [h["epoch"] for h in tagged["history"]] == [2] and math.isfinite(tagged["best"]["eval_loss"])
    epochs = sorted((tmp_path / "multi-label" / "checkpoints").iterdir())
    assert [c.name.split("-e")[1] for c in epochs] == ["1b0", "2b0"]
    assert all((c / "pytorch_model_fsdp_0" / "__1_0.distcp").is_file() for c in epochs)
    assert hftl.load(tmp_path / "multi-label").config.problem_type == "multi_label_classification"
    lora = saved_state(tmp_path / "lora")
    assert any("lora_A" in k for k in lora), "the LoRA run saved an adapter that loads back"
