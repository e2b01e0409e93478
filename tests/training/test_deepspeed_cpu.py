"""DeepSpeed ZeRO-2/3 through configs/accelerate/, in two CPU processes: DeepSpeed picks its CPU accelerator (gloo)
where there is no GPU, so the partitioning, the sharded checkpoints and the resume are DeepSpeed's own code here
too. A ZeRO-3 run stopped mid-epoch and resumed ends byte-identical to one that never stopped; head-only, partial
and LoRA plans keep their frozen weights.

Skipped where deepspeed is not installed (it is not in the dev extra: its source build pulls a CUDA torch), and
slow (accelerate launch of two processes, about 30 s a run on two cores): ``pytest -m slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install deepspeed)")

from accelerate.utils import DeepSpeedPlugin, DistributedType  # noqa: E402

from hftl.training.engines import whole_weights  # noqa: E402
from tests.helpers import base_name, free_port, keep_until, saved_state  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def test_zero3_loads_the_pretrained_weights_whole_and_restores_accelerates_config():
    from transformers.integrations import is_deepspeed_zero3_enabled

    plugin = DeepSpeedPlugin(zero_stage=3, zero3_init_flag=False)
    plugin.set_deepspeed_weakref()  # what Accelerator() does: transformers would load partitioned
    accelerator = SimpleNamespace(
        distributed_type=DistributedType.DEEPSPEED,
        num_processes=1,
        state=SimpleNamespace(deepspeed_plugin=plugin),
    )
    assert is_deepspeed_zero3_enabled()
    with whole_weights(accelerator):
        assert not is_deepspeed_zero3_enabled()
    assert is_deepspeed_zero3_enabled()


def launch(stage: int, settings: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    config = REPO / f"configs/accelerate/deepspeed_zero{stage}.yaml"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    command += ["--num_processes", "2", "--main_process_port", free_port(), "-m", "hftl.train", *settings]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]


def flags(model: Path, data: Path, out: Path, strategy: str, *extra: str) -> list[str]:
    return [
        "--task", "text", "--case", "large_similar", "--strategy", strategy, "--model", str(model),
        "--dataset", str(data), "--output-dir", str(out), "--epochs", "2", "--batch-size", "4", "--lr", "1e-3",
        "--seed", "7", "--report-to", "none", "--save-total-limit", "30", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_zero3_resumes_exactly_and_zero2_and_zero3_keep_frozen_weights(bert_dir, text_folder, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    launch(3, flags(bert_dir, text_folder, straight, "full", "--save-steps", "3"), tmp_path)
    shutil.copytree(straight, stopped)
    keep_until(stopped, 3)  # as if killed after step 3 (mid first epoch)
    launch(
        3, [*flags(bert_dir, text_folder, stopped, "full", "--save-steps", "3"), "--resume", "auto"], tmp_path
    )

    a, b = (json.loads((run / "metrics.json").read_text()) for run in (straight, stopped))
    assert b["resumed_from"].endswith("checkpoint-00000003-e0b3") and a["history"] == b["history"]
    first, second = saved_state(straight), saved_state(stopped)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    checkpoint = sorted((stopped / "checkpoints").iterdir())[-1]
    assert json.loads((checkpoint / "engine.json").read_text()) == {"engine": "deepspeed", "processes": 2}
    before = saved_state(bert_dir)
    assert any(not torch.equal(before[k].bfloat16(), first[k]) for k in first if k.startswith("bert.encoder"))

    for stage, strategy in ((2, "lora"), (3, "head"), (3, "partial")):
        out = tmp_path / f"zero{stage}-{strategy}"
        launch(stage, flags(bert_dir, text_folder, out, strategy), tmp_path)
        after = {base_name(k): v for k, v in saved_state(out).items()}
        # DeepSpeed's bf16 (the configs' mixed_precision) keeps the whole model in bf16: frozen weights come back
        # as the pretrained ones cast to bf16, unchanged by training
        frozen = [k for k in before if k.startswith("bert.embeddings") and k in after]
        assert frozen and all(after[k].dtype == torch.bfloat16 for k in frozen), (stage, strategy)
        assert all(torch.equal(before[k].bfloat16(), after[k]) for k in frozen), (stage, strategy)
        head = [k for k in after if k.startswith("classifier") and k in before]
        assert head and any(not torch.equal(before[k].bfloat16(), after[k]) for k in head), (stage, strategy)
