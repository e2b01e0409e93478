"""A full disk while writing a checkpoint, the final model or the feature cache is one line naming the path and what
to do, with nothing half-written left; a feature-cache build killed mid-way leaves no temporary folder behind for
long, while a build that is still running keeps its own."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

import hftl
import hftl.training.checkpoints
import hftl.training.feature_store
from tests.helpers import quick_train

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def half_written_then_full(path: str | Path) -> None:
    """What a full disk does: part of the file is on disk, then the write fails."""
    Path(path).write_bytes(b"\0" * 100)
    raise ENOSPC


def temp_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".tmp-*")) if folder.exists() else []


def test_no_space_is_recognised_wherever_the_library_puts_the_errno(tmp_path):
    from safetensors import SafetensorError

    from hftl.outputs.files import no_space_reason

    try:
        raise RuntimeError("file write failed") from ENOSPC  # torch.save through a Python file object
    except RuntimeError as chained:
        assert no_space_reason(chained) == "the disk is full"
    rust = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert no_space_reason(rust) == "the disk is full"
    assert no_space_reason(OSError(errno.EDQUOT, "Disk quota exceeded")) == "the disk quota is exceeded"
    assert no_space_reason(OSError(errno.EACCES, "Permission denied")) is None
    assert no_space_reason(RuntimeError("something else (os error 2)")) is None


def test_disk_full_during_a_checkpoint_is_one_line_on_the_command_line(
    monkeypatch, vit_dir, image_folder, tmp_path, capsys
):
    from hftl.cli import main

    monkeypatch.setattr(
        hftl.training.checkpoints, "save_file", lambda tensors, path, **_: half_written_then_full(path)
    )
    out = tmp_path / "out"
    flags = [
        "--task",
        "image",
        "--case",
        "small_similar",
        "--model",
        str(vit_dir),
        "--dataset",
        str(image_folder),
    ]
    flags += ["--output-dir", str(out), "--epochs", "1", "--batch-size", "8", "--no-feature-cache"]
    assert main(["train", *flags]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("hftl: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert (
        str(out / "checkpoints") in errors[0]
        and "the disk is full" in errors[0]
        and "--output-dir" in errors[0]
    )
    assert temp_entries(out) == []  # the half-written checkpoint is gone


def test_disk_full_while_saving_the_model_leaves_no_half_written_model(
    monkeypatch, vit_dir, image_folder, tmp_path
):
    import transformers.modeling_utils
    from safetensors import SafetensorError

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_disk)
    with pytest.raises(
        hftl.OutputError, match=r"cannot write the trained model to .*out: the disk is full\. Free"
    ):
        quick_train(
            "image", "small_similar", vit_dir, image_folder, tmp_path / "out", epochs=1, feature_cache=False
        )
    assert not (tmp_path / "out" / "model.safetensors").exists() and temp_entries(tmp_path / "out") == []
    assert (tmp_path / "out" / "checkpoints").is_dir()  # what was saved before stays, for --resume auto


def test_disk_full_while_building_the_feature_cache(monkeypatch, vit_dir, image_folder, tmp_path):
    def full_disk(model, backbone, cut, source, file, *args):
        half_written_then_full(file)

    monkeypatch.setattr(hftl.training.feature_store, "_write_split", full_disk)
    root = tmp_path / "features"
    with pytest.raises(hftl.OutputError, match=r"feature cache .* the disk is full\. .*--feature-cache-dir"):
        quick_train(
            "image",
            "small_similar",
            vit_dir,
            image_folder,
            tmp_path / "out",
            epochs=1,
            feature_cache_dir=str(root),
        )
    assert temp_entries(root) == []


def test_disk_full_anywhere_else_in_a_run_is_one_line_naming_the_file(
    monkeypatch, vit_dir, image_folder, tmp_path
):
    import hftl.training.loop

    def full_log(state, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(state.output_dir / "metrics.jsonl"))

    monkeypatch.setattr(hftl.training.loop, "log", full_log)
    with pytest.raises(
        hftl.OutputError, match=r"cannot write .*out/metrics\.jsonl: the disk is full\. Free space"
    ):
        quick_train(
            "image", "small_similar", vit_dir, image_folder, tmp_path / "out", epochs=1, feature_cache=False
        )


def killed_build(root: Path) -> Path:
    """A build folder whose writer was killed with SIGKILL half-way: named after a real process that is dead (a
    bare interpreter that kills itself: importing hftl there would cost a torch import for nothing)."""
    code = "import os, signal\nprint(os.getpid(), flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == -9, done.stderr
    with mock.patch.object(hftl.training.feature_store.os, "getpid", return_value=int(done.stdout)):
        tmp = hftl.training.feature_store.build_folder(root / "vit-head-0123456789abcdef0123")
    tmp.mkdir(parents=True)
    (tmp / "train.arrow").write_bytes(b"0" * 1000)
    return tmp


def test_a_killed_cache_build_is_removed_by_the_next_run_but_live_builds_are_kept(
    vit_dir, image_folder, tmp_path
):
    root = tmp_path / "features"
    dead = killed_build(root)
    live = hftl.training.feature_store.build_folder(root / "vit-head-live")  # this process: still running
    elsewhere = root / f".tmp-vit-head-other-{os.getpid()}@not-{socket.gethostname()}"  # another host's build
    for folder in (live, elsewhere):
        folder.mkdir()
    assert dead.is_dir()
    result = quick_train("image", "small_similar", vit_dir, image_folder, tmp_path / "out", epochs=1,
                         feature_cache_dir=str(root))  # fmt: skip
    assert result.metrics["feature_cache"]["used"]
    assert not dead.exists() and live.is_dir() and elsewhere.is_dir()
    assert sorted(temp_entries(root)) == sorted([live.name, elsewhere.name])
