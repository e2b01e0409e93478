"""Checkpoints: atomic writes, rotation that keeps the best, safe loading, and deterministic training."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

import hftl.training.checkpoints
from hftl.errors import ConfigError
from hftl.training.checkpoints import COMPLETE, list_checkpoints, resolve_resume, rotate
from tests.helpers import quick_train


def test_a_checkpoint_write_failing_half_way_leaves_the_previous_one_usable(
    monkeypatch, resnet_dir, image_folder, tmp_path
):
    original, calls = hftl.training.checkpoints.save_file, {"n": 0}

    def fail_on_third(tensors, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            with open(filename, "wb") as handle:  # half a file, then the disk "fills up"
                handle.write(b"\0" * 100)
            raise OSError("No space left on device (simulated)")
        return original(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(hftl.training.checkpoints, "save_file", fail_on_third)
    with pytest.raises(OSError, match="No space left"):
        quick_train("image", "large_similar", resnet_dir, image_folder, tmp_path, epochs=3, save_steps=2)
    root = tmp_path / "checkpoints"
    partial = [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert len(partial) == 1 and not (partial[0] / COMPLETE).exists()
    newest = resolve_resume("auto", tmp_path)
    assert newest.name.startswith("checkpoint-00000004")  # the partial step-6 checkpoint is ignored

    monkeypatch.setattr(hftl.training.checkpoints, "save_file", original)
    resumed = quick_train(
        "image", "large_similar", resnet_dir, image_folder, tmp_path, epochs=3, save_steps=2, resume="auto"
    )
    assert resumed.metrics["resumed_from"].endswith(newest.name)
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]  # cleaned up
    assert resumed.metrics["global_step"] == 18


def test_rotation_keeps_the_newest_n_plus_the_best(tmp_path):
    for step in (2, 4, 6, 8, 10):
        folder = tmp_path / f"checkpoint-{step:08d}-e0b{step}"
        folder.mkdir()
        (folder / COMPLETE).write_text("ok")
    (tmp_path / ".tmp-checkpoint-00000012-e1b0").mkdir()
    rotate(tmp_path, keep=2, protect="checkpoint-00000004-e0b4")
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "checkpoint-00000004-e0b4",
        "checkpoint-00000008-e0b8",
        "checkpoint-00000010-e0b10",
    ]


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_a_checkpoint_pickle_that_would_run_code_is_refused(resnet_dir, image_folder, tmp_path, monkeypatch):
    quick_train("image", "small_similar", resnet_dir, image_folder, tmp_path / "run", epochs=1)
    checkpoint = list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    with open(checkpoint / "optimizer.pt", "wb") as handle:
        pickle.dump({"state": _RunsCode()}, handle)
    from hftl.training.checkpoints import write_checksums

    write_checksums(
        checkpoint
    )  # an attacker who also rewrites the checksums: torch.load(weights_only) still refuses
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"checkpoint file .*optimizer.pt cannot be read \(UnpicklingError: Weights only load",
    ):
        quick_train(
            "image", "small_similar", resnet_dir, image_folder, tmp_path / "run", epochs=2, resume="auto"
        )
    assert not (tmp_path / "PWNED").exists()


def test_a_checkpoint_without_its_checksums_still_fails_as_one_error_naming_the_file(
    resnet_dir, image_folder, tmp_path
):
    """Checksums catch damage first; a checkpoint from before them (or stripped of them) is read as it is, and what
    cannot be read is named."""
    quick_train("image", "small_similar", resnet_dir, image_folder, tmp_path / "run", epochs=1)
    checkpoint = list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    (checkpoint / "checksums.json").unlink()
    weights = checkpoint / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:20])
    with pytest.raises(
        ConfigError, match=r"checkpoint file .*trainable.safetensors cannot be read \(Safetensor"
    ):
        quick_train(
            "image", "small_similar", resnet_dir, image_folder, tmp_path / "run", epochs=2, resume="auto"
        )


@pytest.mark.parametrize("pointer", ["../../outside", "/tmp/outside", "checkpoint-00000001-e0b0/../../x"])
def test_a_progress_file_cannot_point_the_run_at_weights_outside_its_checkpoints(
    resnet_dir, image_folder, tmp_path, pointer
):
    """The best checkpoint's name comes from progress.json, which an edited checkpoint controls: it must be a
    checkpoint name, not a path (checksums do not help, a checkpoint may be stripped of them)."""
    quick_train("image", "small_similar", resnet_dir, image_folder, tmp_path / "run", epochs=1)
    checkpoint = list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    (checkpoint / "checksums.json").unlink()
    progress = json.loads((checkpoint / "progress.json").read_text())
    progress["best_checkpoint"], progress["best_metric"] = pointer, 2.0
    (checkpoint / "progress.json").write_text(json.dumps(progress))
    with pytest.raises(ConfigError, match=r"progress.json: best_checkpoint is .* not a checkpoint name"):
        quick_train(
            "image", "small_similar", resnet_dir, image_folder, tmp_path / "run", epochs=2, resume="auto"
        )


def test_a_model_folder_with_a_malicious_pickle_is_refused(vit_dir, image_folder, tmp_path, monkeypatch):
    import shutil

    import hftl

    evil = tmp_path / "evil-model"
    shutil.copytree(vit_dir, evil)
    (evil / "model.safetensors").unlink()
    torch.save({"weights": _RunsCode()}, evil / "pytorch_model.bin")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        hftl.ModelError, match=r"evil-model: the weights \(pytorch_model.bin\) are a pickle"
    ) as refused:
        hftl.train(
            task="image",
            case="small_similar",
            model=str(evil),
            dataset=str(image_folder),
            output_dir=str(tmp_path / "out"),
            epochs=1,
        )
    assert str(refused.value).startswith(
        str(evil)
    )  # named as a pickle, not as a model the Hub could not provide
    with pytest.raises(hftl.ModelError, match=r"the weights \(pytorch_model.bin\) are a pickle"):
        hftl.load(evil)  # predict, embed and export load through it
    assert not (tmp_path / "PWNED").exists()


def test_same_seed_same_data_gives_identical_loss_curve_and_weights(vit_dir, image_folder, tmp_path):
    runs = [
        quick_train("image", "large_similar", vit_dir, image_folder, tmp_path / name, epochs=2, log_steps=1)
        for name in ("a", "b")
    ]
    curves = [
        [
            json.loads(line)["loss"]
            for line in (r.output_dir / "metrics.jsonl").read_text().splitlines()
            if '"loss"' in line
        ]
        for r in runs
    ]
    assert len(curves[0]) == 12 and curves[0] == curves[1]
    first, second = (r.model.state_dict() for r in runs)
    assert all(torch.equal(first[name], second[name]) for name in first)


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_checkpoints_are_noticed_and_auto_resume_falls_back(
    glove_file, text_folder, tmp_path, capsys
):
    from hftl.errors import ConfigError
    from hftl.training.checkpoints import damage, list_checkpoints, restore_trained_weights

    model, out = f"vectors:{glove_file}", tmp_path / "run"
    quick_train("text", "large_similar", model, text_folder, out, epochs=3, lr=0.01, save_total_limit=10)
    found = list_checkpoints(out / "checkpoints")
    newest, previous = found[-1], found[-2]
    assert damage(newest) is None and (newest / "checksums.json").is_file()
    _flip_a_byte(newest / "trainable.safetensors")
    assert damage(newest) == "trainable.safetensors does not match its checksum"
    with pytest.raises(ConfigError, match="the checkpoint is damaged"):
        quick_train("text", "large_similar", model, text_folder, out, epochs=4, lr=0.01, resume=str(newest))
    resumed = quick_train("text", "large_similar", model, text_folder, out, epochs=4, lr=0.01, resume="auto")
    assert resumed.metrics["resumed_from"] == str(previous)
    assert f"skipping damaged checkpoint {newest.name}" in capsys.readouterr().out
    # a damaged checkpoint (the best one, say) is not restored into the final model; which checkpoints the resumed
    # run kept depends on its scores, so take one it kept
    kept = list_checkpoints(out / "checkpoints")[-1]
    _flip_a_byte(kept / "trainable.safetensors")
    assert not restore_trained_weights(torch.nn.Linear(1, 1), out, kept.name)


@pytest.mark.parametrize(
    "checksums", ['{"trainable.safetensors": {"size": 1', '{"trainable.safetensors": 5}']
)
def test_unreadable_checksums_are_damage_and_a_copied_checkpoint_folder_is_ignored(checksums, tmp_path):
    """A truncated or reshaped checksums.json makes its checkpoint one to skip (naming the file), as a flipped byte
    does; a user's copy (``checkpoints/checkpoint-backup``) is neither resumed from nor rotated away."""
    from hftl.training.checkpoints import COMPLETE, damage, list_checkpoints, resolve_resume, rotate

    root = tmp_path / "run" / "checkpoints"
    good, bad, backup = (
        root / name for name in ("checkpoint-00000004-e1b0", "checkpoint-00000008-e2b0", "checkpoint-backup")
    )
    for folder in (good, bad, backup):
        folder.mkdir(parents=True)
        (folder / COMPLETE).write_text("")
    (bad / "checksums.json").write_text(checksums)
    assert damage(bad) == "checksums.json cannot be read"
    assert list_checkpoints(root) == [good, bad]
    assert resolve_resume("auto", tmp_path / "run") == good
    rotate(root, keep=1, protect={good.name})
    assert backup.is_dir() and good.is_dir() and bad.is_dir()
