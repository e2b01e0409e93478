"""Non-finite steps are skipped and stop the run after K in a row; out-of-memory halves the batch."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import hftl
import hftl.recipes.run
from hftl.training.guards import TrainingDiverged
from tests.helpers import quick_train


def inject(monkeypatch, hook_factory):
    """Wrap the model hftl builds with a forward hook made by ``hook_factory()`` (training calls only)."""
    original = hftl.recipes.run.adapt_to_plan

    def adapt_and_hook(plan, model):
        model = original(plan, model)
        model.register_forward_hook(hook_factory())
        return model

    monkeypatch.setattr(hftl.recipes.run, "adapt_to_plan", adapt_and_hook)


def nan_loss_on(calls: set[int] | None = None, start: int | None = None):
    def factory():
        seen = {"n": 0}

        def hook(module, args, output):
            if not module.training:
                return output
            seen["n"] += 1
            if (calls and seen["n"] in calls) or (start is not None and seen["n"] >= start):
                output.loss = output.loss * float("nan")
            return output

        return hook

    return factory


def test_nonfinite_steps_are_skipped_and_counted(monkeypatch, vit_dir, image_folder, tmp_path):
    inject(monkeypatch, nan_loss_on(calls={3, 4}))
    result = quick_train("image", "large_similar", vit_dir, image_folder, tmp_path, epochs=2)
    assert result.metrics["nonfinite_steps_skipped"] == 2
    assert result.metrics["global_step"] == 12
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert result.metrics["best"]["eval_accuracy"] > 0.5


def test_a_nonfinite_multi_label_bce_step_is_skipped_on_the_device(monkeypatch, vit_dir, tmp_path):
    """Multi-label with --class-weights auto: the loss is hftl's BCE-with-logits (pos_weight) on the logits, not
    the model's; NaN logits make it NaN, and the device-side guard (fused AdamW skips) leaves the weights finite."""
    from tests.training.test_multilabel import write_squares

    def factory():
        seen = {"n": 0}

        def hook(module, args, output):
            if module.training:
                seen["n"] += 1
                if seen["n"] in (3, 4):
                    output.logits = output.logits * float("nan")
            return output

        return hook

    inject(monkeypatch, factory)
    squares = write_squares(tmp_path / "squares")
    result = quick_train(
        "image", "large_similar", vit_dir, squares, tmp_path / "run", epochs=2, class_weights="auto"
    )
    assert (
        result.metrics["problem_type"] == "multi_label_classification" and "class_weights" in result.metrics
    )
    assert result.metrics["nonfinite_steps_skipped"] == 2 and result.metrics["global_step"] == 12
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_run_stops_after_k_nonfinite_steps_in_a_row_and_keeps_the_good_checkpoint(
    monkeypatch, vit_dir, image_folder, tmp_path
):
    inject(monkeypatch, nan_loss_on(start=8))  # epoch 1 (steps 1-6) is clean, then every step is NaN
    with pytest.raises(
        TrainingDiverged, match=r"not finite for 3 optimizer steps in a row.*last good checkpoint"
    ):
        quick_train(
            "image", "large_similar", vit_dir, image_folder, tmp_path, epochs=3, max_nonfinite_steps=3
        )
    checkpoints = sorted((tmp_path / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["checkpoint-00000006-e1b0"]
    weights = load_file(str(checkpoints[0] / "trainable.safetensors"))
    assert weights and all(torch.isfinite(t).all() for t in weights.values())
    progress = json.loads((checkpoints[0] / "progress.json").read_text())
    assert progress["epoch"] == 1 and progress["global_step"] == 6


def test_the_named_good_checkpoint_has_a_finite_eval_loss_and_survives_rotation(
    monkeypatch, vit_dir, image_folder, tmp_path
):
    """Epoch 1 is clean; from epoch 2 the evaluation is NaN (weights gone bad while the training loss still looks
    finite); from epoch 3 training is NaN too. The epoch-2 checkpoint is the newest, but not good."""

    def factory():
        seen = {"train": 0}

        def hook(module, args, output):
            if module.training:
                seen["train"] += 1
                if seen["train"] > 12:  # epoch 3 onwards (6 steps per epoch)
                    output.loss = output.loss * float("nan")
            elif seen["train"] > 6:  # evaluations after epoch 1
                output.loss = output.loss * float("nan")
                output.logits = output.logits * float("nan")
            return output

        return hook

    inject(monkeypatch, factory)
    with pytest.raises(TrainingDiverged, match=r"last good checkpoint is .*checkpoint-00000006-e1b0"):
        quick_train(
            "image",
            "large_similar",
            vit_dir,
            image_folder,
            tmp_path,
            epochs=4,
            max_nonfinite_steps=3,
            save_total_limit=1,
        )
    names = sorted(c.name for c in (tmp_path / "checkpoints").iterdir())
    assert "checkpoint-00000006-e1b0" in names and "checkpoint-00000012-e2b0" in names
    progress = json.loads(
        (tmp_path / "checkpoints" / "checkpoint-00000012-e2b0" / "progress.json").read_text()
    )
    assert progress["last_good_checkpoint"] == "checkpoint-00000006-e1b0"


def test_simulated_out_of_memory_halves_batch_and_doubles_accumulation(
    monkeypatch, vit_dir, image_folder, tmp_path
):
    def factory():
        def hook(module, args, output):
            if module.training and output.logits.shape[0] > 4:
                raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
            return output

        return hook

    inject(monkeypatch, factory)
    result = quick_train(
        "image",
        "small_similar",
        vit_dir,
        image_folder,
        tmp_path,
        epochs=2,
        batch_size=16,
        auto_batch_size=True,
        feature_cache=False,  # the hook sits on the full model's forward, which a cached run skips
    )
    assert result.metrics["batch_size"] == 4 and result.metrics["gradient_accumulation_steps"] == 4
    assert result.metrics["global_step"] == 2 * 3  # 48 examples / effective batch 16 = 3 steps per epoch
    assert result.metrics["best"]["eval_accuracy"] > 0.6


def test_without_auto_batch_size_out_of_memory_propagates(monkeypatch, vit_dir, image_folder, tmp_path):
    def factory():
        def hook(module, args, output):
            if module.training:
                raise RuntimeError("CUDA out of memory. (simulated)")
            return output

        return hook

    inject(monkeypatch, factory)
    with pytest.raises(RuntimeError, match="out of memory"):
        quick_train("image", "small_similar", vit_dir, image_folder, tmp_path, epochs=1, feature_cache=False)


def test_max_nonfinite_steps_must_be_positive():
    with pytest.raises(hftl.ConfigError, match="max_nonfinite_steps must be a positive integer"):
        hftl.RunConfig(task="image", case="small_similar", max_nonfinite_steps=0)


HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__")


def test_a_training_step_never_waits_for_the_device_even_when_a_step_is_skipped(
    monkeypatch, vit_dir, image_folder, tmp_path
):
    """No host read (``.item()``, ``.cpu()``, ``bool(tensor)``...) inside a training step: the guard counts non-finite
    steps on the device and the fused AdamW skips them there. It was one ``bool()`` per optimizer step."""
    import hftl.training.loop as loop

    inject(monkeypatch, nan_loss_on(calls={3}))
    reads, inside = {"n": 0, "where": set()}, {"step": False}
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            if inside["step"]:
                reads["n"] += 1
                reads["where"].add(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    train_step = loop.train_step

    def watched_step(state, batch):
        inside["step"] = True
        try:
            return train_step(state, batch)
        finally:
            inside["step"] = False

    monkeypatch.setattr(loop, "train_step", watched_step)
    result = quick_train("image", "large_similar", vit_dir, image_folder, tmp_path, epochs=2, log_steps=1000)
    assert result.metrics["global_step"] == 12
    assert result.metrics["nonfinite_steps_skipped"] == 1  # read at the checkpoints, outside the steps
    assert reads["n"] == 0, reads
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
