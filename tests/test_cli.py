"""The real entry points in subprocesses: `accelerate launch -m hftl.train`, a 2-process `torchrun` on CPU (gloo),
and the `hftl` console script. Outputs must load in transformers.pipeline with the dataset's label names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import assert_pipeline_uses_label_names, free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def train_flags(model: Path, dataset: Path, out: Path) -> list[str]:
    return [
        "--task",
        "image",
        "--case",
        "small_different",
        "--strategy",
        "head",  # the textbook plan: a head on the cut network (trained on cached features)
        "--model",
        str(model),
        "--dataset",
        str(dataset),
        "--output-dir",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--lr",
        "0.05",
    ]


def test_accelerate_launch_runs_the_module_and_writes_a_pipeline_model(vit_dir, image_folder, tmp_path):
    out = tmp_path / "out"
    args = [
        str(BIN / "accelerate"),
        "launch",
        "--config_file",
        str(REPO / "configs/accelerate/cpu.yaml"),
        "-m",
        "hftl.train",
        *train_flags(vit_dir, image_folder, out),
    ]
    done = run(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Transfer plan: case=small_different" in done.stdout and "Resolved configuration" in done.stdout
    assert_pipeline_uses_label_names(out)
    saved = (out / "run_config.yaml").read_text()
    assert "case: small_different" in saved and "epochs: 2" in saved


def test_torchrun_case_auto_runs_its_trials_and_the_pick_in_one_process_group(
    resnet_dir, image_folder, tmp_path
):
    """Each trial is a run of its own in the same processes: a run keeps the process group for the next one."""
    out = tmp_path / "auto"
    flags = ["--task", "image", "--case", "auto", "--model", str(resnet_dir), "--dataset", str(image_folder)]
    flags += ["--output-dir", str(out), "--epochs", "2", "--batch-size", "8"]
    args = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", free_port(), "-m", "hftl.train"]
    done = run([*args, *flags, "--advise-budget", "0.5"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    advice = json.loads((out / "advice.json").read_text())
    assert len(advice["trials"]["trials"]) >= 4 and advice["recommended"]["by"] == "trials"
    assert json.loads((out / "metrics.json").read_text())["num_processes"] == 2


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--task", "imgae", "--case", "small_similar"], "unknown task 'imgae'"),
        (
            ["--task", "image", "--case", "small_similar", "--model", "./does/not/exist"],
            "model path does not exist",
        ),
        (["--task", "image", "--case", "tiny"], "invalid choice"),
    ],
)
def test_cli_errors_are_one_clear_line(flags, message, capsys):
    from hftl.train import main

    try:
        code = main(flags)
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    stderr = capsys.readouterr().err
    assert code == 2
    assert message in stderr and "Traceback" not in stderr


def test_python_m_hftl_train_exits_2_with_one_line(tmp_path):
    done = run([sys.executable, "-m", "hftl.train", "--task", "imgae", "--case", "small_similar"], tmp_path)
    assert done.returncode == 2
    assert "unknown task 'imgae'" in done.stderr and "Traceback" not in done.stderr


def test_hftl_plan_prints_the_plan_without_training(vit_dir, capsys):
    from hftl.cli import main

    flags = ["--task", "image", "--case", "small_different", "--model", str(vit_dir), "--keep-layers", "3"]
    # --strategy head: the textbook's cut (a small ViT's measured default keeps every layer)
    assert main(["plan", *flags, "--strategy", "head"]) == 0
    printed = capsys.readouterr().out
    assert "vit.layers.0-2" in printed and "removed (truncated)" in printed
    assert "feature cache: the frozen prefix runs once" in printed and "outputs of layer 2" in printed


def test_hftl_tasks_lists_tasks_families_and_cases(tmp_path):
    done = run([str(BIN / "hftl"), "tasks"], tmp_path)
    assert done.returncode == 0
    for word in ("task image", "task text", "family vit", "family resnet", "family bert", "small_different"):
        assert word in done.stdout


def test_command_line_slips_get_one_line_that_says_what_was_meant(capsys, monkeypatch):
    """A mistyped command, a Trainer flag name, an abbreviation, Ctrl-C: one line each, never a traceback."""
    from hftl import cli
    from hftl.train import main as train_main

    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian' (did you mean 'train'?)" in capsys.readouterr().err
    for typed, meant in (
        ("--learning-rate", "--lr"),
        ("--num-train-epochs", "--epochs"),
        ("--per-device-train-batch-size", "--batch-size"),
        ("--warmup", "--warmup-ratio"),  # an abbreviation of two spellings was "ambiguous"; none is taken now
        ("--epoch", "--epochs"),
    ):
        with pytest.raises(SystemExit) as stopped:
            train_main(["--task", "text", "--case", "small_similar", typed, "3"])
        assert stopped.value.code == 2
        assert f"unrecognized arguments: {typed} 3 (did you mean {meant}?)" in capsys.readouterr().err
    monkeypatch.setitem(cli.COMMANDS, "tasks", (lambda argv: (_ for _ in ()).throw(KeyboardInterrupt), ""))
    assert cli.main(["tasks"]) == 130
    stderr = capsys.readouterr().err
    assert "interrupted" in stderr and "--resume auto" in stderr and "Traceback" not in stderr
    for argv in (
        ["predict", "m", "x", "--top-k", "0"],
        ["embed", "m", "x", "--output", "o", "--batch-size", "0"],
    ):
        with pytest.raises(SystemExit) as stopped:
            cli.main(argv)
        assert stopped.value.code == 2 and "expected a positive integer, got '0'" in capsys.readouterr().err


def test_a_keep_layers_the_plan_would_not_use_is_refused_naming_the_strategies_that_use_it(vit_dir, capsys):
    """A small ViT's small_different default fine-tunes every layer: --keep-layers 2 was silently dropped (and still
    turned off the source check as a transfer-only setting)."""
    from hftl.cli import main

    flags = ["--task", "image", "--case", "small_different", "--model", str(vit_dir), "--keep-layers", "2"]
    assert main(["plan", *flags]) == 2
    assert "--keep-layers 2 does not apply to this plan (small_different: full" in capsys.readouterr().err
    assert main(["plan", *flags, "--strategy", "partial"]) == 0
    assert "freezes the stem and the first 2 of 4" in capsys.readouterr().out


def test_flags_a_run_cannot_use_are_said_not_dropped(vit_dir, capsys):
    """--merge-lora on a plan without LoRA is named in the plan, and `hftl advise --case X` is refused (it decides
    the case), where both used to vanish without a word."""
    from hftl.cli import main

    flags = ["--task", "image", "--model", str(vit_dir)]
    assert main(["plan", *flags, "--case", "large_similar", "--merge-lora"]) == 0
    assert (
        "--merge-lora: nothing to merge, this plan (full) trains no LoRA adapter" in capsys.readouterr().out
    )
    assert main(["advise", *flags, "--dataset", "d", "--case", "small_similar"]) == 2
    assert (
        "hftl advise decides the case from the data: leave --case small_similar out"
        in capsys.readouterr().err
    )
