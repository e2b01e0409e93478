"""Conservative fine-tuning: L2-SP and BSS penalties, layer-wise lr decay, head lr, and gradual unfreezing (also
under a 2-process torchrun), for every backbone family, and their place in the printed and saved plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import hftl
from hftl.backbones import backbone_for
from hftl.config import RunConfig
from hftl.outputs.loading import load
from hftl.transfer.apply import apply_plan
from hftl.transfer.cases import make_plan
from hftl.transfer.conservative import (
    ConservativeTraining,
    batch_spectral_shrinkage,
    block_of_parameter,
    parameter_groups,
)
from tests.helpers import free_port, quick_train, saved_state

FAMILY_TASK = {"vit": "image", "resnet": "image", "bert": "text"}


def planned(model_dir: Path, task: str, **settings):
    """(plan, model with the plan applied) for a tiny model folder, without training."""
    config = RunConfig(
        task=task, model=str(model_dir), **{"case": "large_similar", "strategy": "full", **settings}
    )
    model = load(model_dir)
    backbone = backbone_for(model.config)
    plan = make_plan(config, model, backbone)
    return plan, apply_plan(plan, model, backbone)


@pytest.mark.parametrize("family", ["vit", "resnet", "bert"])
def test_layer_decay_and_head_lr_give_each_parameter_the_documented_rate(family, model_dirs):
    lr, decay, head_lr = 1e-3, 0.5, 2e-2
    plan, model = planned(model_dirs[family], FAMILY_TASK[family], lr=lr, layer_decay=decay, head_lr=head_lr)
    layers = [b.name for b in plan.blocks if b.kind == "layer"]
    expected = {name: lr * decay ** (len(layers) - i) for i, name in enumerate(layers)}  # top layer: decay^1
    expected.update({b.name: lr * decay ** (len(layers) + 1) for b in plan.blocks if b.kind == "stem"})
    expected.update({b.name: lr for b in plan.blocks if b.kind == "neck"})
    expected.update({b.name: head_lr for b in plan.blocks if b.kind == "head"})
    rate_of = {id(p): group["lr"] for group in parameter_groups(model, plan, 0.01) for p in group["params"]}
    checked = 0
    for name, parameter in model.named_parameters():
        block = block_of_parameter(name, list(expected))
        assert rate_of[id(parameter)] == pytest.approx(expected[block]), name
        checked += 1
    assert checked == len(list(model.parameters()))
    rendered = plan.render()
    assert "layer-wise lr decay 0.5" in rendered and f"lr {head_lr:.3g}" in rendered


def train_vit(model_dirs, image_folder, output_dir: Path, **settings):
    return quick_train("image", "large_similar", model_dirs["vit"], image_folder, output_dir, **settings)


def test_layer_decay_reaches_the_optimizer_in_a_real_run(model_dirs, image_folder, tmp_path):
    """With a steep decay the stem barely moves while the top layer trains (Adam steps scale with the lr)."""
    before = saved_state(model_dirs["vit"])
    result = train_vit(
        model_dirs,
        image_folder,
        tmp_path,
        epochs=1,
        layer_decay=0.01,
        scheduler="constant",
        warmup_ratio=0.0,
    )

    def moved(prefix: str) -> float:
        deltas = [
            (p.detach() - before[n]).abs().mean().item()
            for n, p in result.model.named_parameters()
            if n.startswith(prefix) and p.ndim >= 2
        ]
        return float(np.mean(deltas))

    assert moved("vit.embeddings.") < 1e-3 * moved("vit.layers.3.")


def test_l2sp_keeps_the_body_closer_to_the_pretrained_weights(model_dirs, text_folder, tmp_path):
    before = saved_state(model_dirs["bert"])
    body = [n for n in before if n.startswith("bert.") and "pooler" not in n]

    def distance(result) -> float:
        state = result.model.state_dict()
        return float(sum((state[n].float() - before[n].float()).pow(2).sum() for n in body) ** 0.5)

    common = {"epochs": 1, "lr": 3e-3, "weight_decay": 0.0}
    plain = quick_train(
        "text", "large_similar", model_dirs["bert"], text_folder, tmp_path / "plain", **common
    )
    pulled = quick_train(
        "text",
        "large_similar",
        model_dirs["bert"],
        text_folder,
        tmp_path / "l2sp",
        regularizer=["l2sp"],
        l2sp_alpha=5.0,
        **common,
    )
    assert distance(pulled) < 0.5 * distance(plain), (distance(pulled), distance(plain))
    assert pulled.plan.conservative.regularizers == ("l2sp",)
    assert hftl.TransferPlan.load(tmp_path / "l2sp" / "transfer_plan.json") == pulled.plan


def test_l2sp_penalty_is_the_documented_sum(model_dirs):
    plan, model = planned(model_dirs["vit"], "image", regularizer=["l2sp"], l2sp_alpha=0.3, l2sp_beta=0.7)
    tuning = ConservativeTraining(model, plan)
    assert float(tuning.penalty().detach()) == pytest.approx(
        0.7 / 2 * sum(p.pow(2).sum().item() for p in tuning.head)
    )
    with torch.no_grad():
        for parameter in model.vit.layers[0].parameters():
            parameter.add_(0.1)
    shift = sum(p.numel() for p in model.vit.layers[0].parameters()) * 0.01
    head = 0.7 / 2 * sum(p.pow(2).sum().item() for p in tuning.head)
    assert float(tuning.penalty().detach()) == pytest.approx(0.3 / 2 * shift + head, rel=1e-4)


def test_batch_spectral_shrinkage_matches_numpy():
    features = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    singular = np.linalg.svd(features.numpy(), compute_uv=False)
    assert batch_spectral_shrinkage(features, k=2).item() == pytest.approx(float(np.sum(singular[-2:] ** 2)))


@pytest.mark.parametrize("family", ["vit", "resnet", "bert", "word-vectors"])
def test_every_family_trains_with_every_conservative_setting(
    family, model_dirs, data_for, glove_file, text_folder, tmp_path
):
    task, dataset = data_for.get(family, ("text", text_folder))
    model = f"vectors:{glove_file}" if family == "word-vectors" else model_dirs[family]
    result = quick_train(
        task,
        "large_similar",
        model,
        dataset,
        tmp_path,
        epochs=2,
        regularizer=["l2sp", "bss"],
        layer_decay=0.8,
        head_lr=1e-2,
        unfreeze_schedule=1,
    )
    assert result.metrics["best"]["eval_accuracy"] > (0.5 if family == "bert" else 1 / 3)
    rendered = result.plan.render()
    for text in ("L2-SP", "BSS", "layer-wise lr decay", "gradual unfreezing", "from epoch 2"):
        assert text in rendered


def test_bss_reads_the_head_input_of_a_lora_model(model_dirs):
    """PEFT wraps the head in modules_to_save; the penalty still finds the head-input features."""
    plan, model = planned(model_dirs["vit"], "image", strategy="lora", regularizer=["bss"])
    tuning = ConservativeTraining(model, plan)
    model.train()
    model(pixel_values=torch.randn(5, 3, 32, 32))
    assert float(tuning.penalty()) > 0


def epoch_checkpoints(output_dir: Path) -> dict[int, dict[str, torch.Tensor]]:
    """Trained tensors saved at the end of each epoch, by epoch number."""
    found = {}
    for folder in (output_dir / "checkpoints").iterdir():
        if folder.name.endswith("b0"):
            found[int(folder.name.rsplit("-e", 1)[1][:-2])] = load_file(str(folder / "trainable.safetensors"))
    return found


def changed(state: dict[str, torch.Tensor], before: dict[str, torch.Tensor], block: str) -> bool:
    names = [n for n in state if n.startswith(block + ".")]
    assert names, block
    return any(not torch.equal(state[n], before[n]) for n in names)


def test_gradual_unfreezing_changes_the_trainable_set_at_the_scheduled_epochs(
    model_dirs, image_folder, tmp_path
):
    before = saved_state(model_dirs["vit"])
    result = train_vit(model_dirs, image_folder, tmp_path, unfreeze_schedule=1, epochs=3, save_total_limit=5)
    schedule = {b.name: b.unfreeze_epoch for b in result.plan.blocks}
    assert schedule["vit.layers.3"] == 1 and schedule["vit.layers.2"] == 2 and schedule["vit.embeddings"] == 5
    assert schedule["classifier"] == 0 and schedule["vit.layernorm"] == 0
    after = epoch_checkpoints(tmp_path)
    assert changed(after[1], before, "classifier") and changed(after[1], before, "vit.layernorm")
    assert not changed(after[1], before, "vit.layers.3")
    assert changed(after[2], before, "vit.layers.3") and not changed(after[2], before, "vit.layers.2")
    assert changed(after[3], before, "vit.layers.2") and not changed(after[3], before, "vit.layers.1")
    assert not changed(after[3], before, "vit.embeddings")
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["unfrozen"] for r in log if "unfrozen" in r] == [["vit.layers.3"], ["vit.layers.2"]]


def test_waiting_resnet_stage_keeps_its_batchnorm_statistics(model_dirs, image_folder, tmp_path):
    before = saved_state(model_dirs["resnet"])
    quick_train(
        "image", "large_similar", model_dirs["resnet"], image_folder, tmp_path, unfreeze_schedule=1, epochs=1
    )
    state = epoch_checkpoints(tmp_path)[1]
    waiting = [n for n in state if n.startswith("resnet.encoder.stages.3.")]
    assert any("running_mean" in n for n in waiting)
    assert all(torch.equal(state[n], before[n]) for n in waiting)
    assert changed(state, before, "classifier")


def test_nothing_to_unfreeze_and_l2sp_from_scratch_are_clear_errors(model_dirs):
    with pytest.raises(hftl.ConfigError, match="nothing to unfreeze"):
        planned(model_dirs["vit"], "image", case="small_similar", strategy="head", unfreeze_schedule=1)
    with pytest.raises(hftl.ConfigError, match="--init scratch"):
        planned(model_dirs["vit"], "image", init="scratch", regularizer=["l2sp"])
    with pytest.raises(hftl.ConfigError, match="layer_decay"):
        RunConfig(task="image", case="large_similar", layer_decay=1.5)
    with pytest.raises(hftl.ConfigError, match="unknown regularizer"):
        RunConfig(task="image", case="large_similar", regularizer=["delta2"])


def test_plans_saved_before_conservative_fields_still_load(model_dirs, tmp_path):
    plan, _ = planned(model_dirs["vit"], "image")
    data = plan.to_dict()
    data.pop("conservative")
    for block in data["blocks"]:
        block.pop("lr"), block.pop("unfreeze_epoch")
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert hftl.TransferPlan.load(tmp_path / "old.json") == plan


DDP_SCRIPT = textwrap.dedent(
    """
    import hashlib, os, sys
    import hftl, hftl.training.loop

    def hash_then_restore(model, *args, restore=hftl.training.loop.restore_trained_weights):
        # each process's live weights at the end of training, before the best epoch is restored from rank 0's file
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode()); digest.update(tensor.detach().cpu().numpy().tobytes())
        with open(os.path.join(out, f"rank{os.environ['RANK']}.sha"), "w") as handle:
            handle.write(digest.hexdigest())
        return restore(model, *args)

    model, dataset, out = sys.argv[1:4]
    hftl.training.loop.restore_trained_weights = hash_then_restore
    hftl.train(task="image", case="large_similar", model=model, dataset=dataset, output_dir=out, epochs=2,
               batch_size=8, lr=1e-2, unfreeze_schedule=1, regularizer=["l2sp"], save_total_limit=5)
    """
)


def test_gradual_unfreezing_syncs_gradients_under_two_process_torchrun(resnet_dir, image_folder, tmp_path):
    """The stage unfrozen at epoch 2 trains, and both processes end with identical weights: its gradients are
    synced by DDP although it joined after the model was wrapped."""
    script = tmp_path / "ddp_unfreeze.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    torchrun = Path(sys.executable).parent / "torchrun"
    args = [str(torchrun), "--nproc_per_node", "2", "--master_port", free_port(), str(script)]
    done = subprocess.run(
        [*args, str(resnet_dir), str(image_folder), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "rank0.sha").read_text() == (out / "rank1.sha").read_text()
    assert json.loads((out / "metrics.json").read_text())["num_processes"] == 2
    before = saved_state(resnet_dir)
    after = epoch_checkpoints(out)
    assert not changed(after[1], before, "resnet.encoder.stages.3")
    assert changed(after[2], before, "resnet.encoder.stages.3")
    assert not changed(after[2], before, "resnet.encoder.stages.2")


def test_hftl_plan_shows_per_block_rates_and_unfreezing(model_dirs, capsys):
    from hftl.cli import main

    args = [
        "plan",
        "--task",
        "image",
        "--case",
        "large_similar",
        "--model",
        str(model_dirs["vit"]),
        "--lr",
        "1e-3",
    ]
    assert (
        main([*args, "--layer-decay", "0.5", "--unfreeze-schedule", "2", "--regularizer", "l2sp", "bss"]) == 0
    )
    printed = capsys.readouterr().out
    assert "vit.layers.3" in printed and "lr 0.0005, from epoch 3" in printed  # top layer: 1e-3 * 0.5^1
    assert "vit.layers.2" in printed and "lr 0.00025, from epoch 5" in printed
    assert "conservative: L2-SP" in printed and "conservative: BSS" in printed
