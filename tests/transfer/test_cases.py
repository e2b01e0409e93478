"""The four cases and the strategy overrides produce the documented plan, block by block, for every family."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

import hftl
from hftl.backbones import backbone_for
from hftl.cli import main as cli_main
from hftl.config import RunConfig
from hftl.transfer.apply import apply_plan, count_parameters, shape_to_plan
from hftl.transfer.cases import make_plan, measure_blocks

FAMILIES = {"vit": ("image", 4), "resnet": ("image", 4), "bert": ("text", 4)}


def load(family, model_dirs, num_labels=3):
    auto = AutoModelForSequenceClassification if family == "bert" else AutoModelForImageClassification
    return auto.from_pretrained(model_dirs[family], num_labels=num_labels, ignore_mismatched_sizes=True)


def plan_for(family, model_dirs, case, **overrides):
    task, _ = FAMILIES[family]
    config = RunConfig(task=task, case=case, model=str(model_dirs[family]), **overrides)
    model = load(family, model_dirs)
    backbone = backbone_for(model.config)
    return make_plan(config, model, backbone), model, backbone


def actions(plan, kind):
    return [b.action for b in plan.blocks if b.kind == kind]


@pytest.mark.parametrize("family", FAMILIES)
def test_small_similar_head_freezes_the_whole_body(family, model_dirs):
    plan, _, _ = plan_for(family, model_dirs, "small_similar", strategy="head")
    assert plan.strategy == "head" and not plan.truncated
    assert set(actions(plan, "stem")) == {"frozen"} and set(actions(plan, "layer")) == {"frozen"}
    assert set(actions(plan, "neck")) <= {"frozen"} and set(actions(plan, "head")) == {"new"}


@pytest.mark.parametrize("family", FAMILIES)
def test_small_different_head_keeps_the_first_half_frozen_by_default(family, model_dirs):
    plan, _, _ = plan_for(family, model_dirs, "small_different", strategy="head")
    assert plan.keep_layers == 2 and plan.num_layers == 4 and plan.truncated
    assert actions(plan, "layer") == ["frozen", "frozen", "removed", "removed"]
    assert set(actions(plan, "neck")) <= {"trained"}  # the neck now sits on a different layer: retrain it


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_layers_sets_the_cut(family, model_dirs):
    plan, _, _ = plan_for(family, model_dirs, "small_different", strategy="head", keep_layers=3)
    assert actions(plan, "layer") == ["frozen", "frozen", "frozen", "removed"]
    with pytest.raises(hftl.ConfigError, match=r"keep_layers=9 is out of range.*use 1..4"):
        plan_for(family, model_dirs, "small_different", keep_layers=9)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", ["large_similar", "large_different"])
def test_large_cases_fine_tune_everything(family, case, model_dirs):
    plan, model, backbone = plan_for(family, model_dirs, case)
    assert plan.strategy == "full" and not plan.truncated
    assert {b.action for b in plan.blocks} == {"trained", "new"}
    model = apply_plan(plan, model, backbone)
    counts = count_parameters(model)
    assert counts.trainable == counts.total


@pytest.mark.parametrize("family", FAMILIES)
def test_partial_freezes_the_first_n_and_trains_the_rest(family, model_dirs):
    plan, model, backbone = plan_for(family, model_dirs, "small_different", strategy="partial", keep_layers=1)
    assert not plan.truncated  # partial keeps every layer
    assert actions(plan, "layer") == ["frozen", "trained", "trained", "trained"]
    frozen = sum(b.params for b in plan.blocks if b.action == "frozen")
    model = apply_plan(plan, model, backbone)
    counts = count_parameters(model)
    assert counts.total - counts.trainable == frozen


@pytest.mark.parametrize("family", FAMILIES)
def test_head_only_trains_exactly_the_head(family, model_dirs):
    plan, model, backbone = plan_for(family, model_dirs, "small_similar", strategy="head")
    model = apply_plan(plan, model, backbone)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    head = set(plan.names("new"))
    assert trainable and all(any(n.startswith(h + ".") for h in head) for n in trainable)
    expected = sum(p.numel() for h in head for p in model.get_submodule(h).parameters())
    assert count_parameters(model).trainable == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_truncation_cuts_the_model_and_its_config(family, model_dirs, tmp_path):
    plan, model, backbone = plan_for(family, model_dirs, "small_different", strategy="head", keep_layers=1)
    model = apply_plan(plan, model, backbone)
    assert len(model.get_submodule(backbone.layers_path(model))) == 1
    assert backbone.num_layers(model.config) == 1
    model.save_pretrained(tmp_path)  # the saved config rebuilds the cut model
    reloaded = type(model).from_pretrained(tmp_path)
    assert len(reloaded.get_submodule(backbone.layers_path(reloaded))) == 1
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_adapts_only_kept_layers_and_saves_neck_and_head(family, model_dirs):
    plan, model, backbone = plan_for(family, model_dirs, "small_different", strategy="lora")
    assert plan.lora is not None and plan.lora.target_modules
    kept = [b.name for b in plan.blocks if b.action == "lora"]
    assert all(any(t.startswith(k + ".") for k in kept) for t in plan.lora.target_modules)
    assert "classifier" in plan.lora.modules_to_save
    model = apply_plan(plan, model, backbone)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable) and any("modules_to_save" in n for n in trainable)
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)


@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_a_plan_measured_after_the_cut_counts_the_head_it_trains(family, model_dirs, capsys):
    plan, model, backbone = plan_for(family, model_dirs, "small_different", strategy="head")
    shape_to_plan(plan, model, backbone)
    measured = measure_blocks(plan, model)
    for block in measured.blocks:
        if block.action != "removed":
            assert block.params == sum(p.numel() for p in model.get_submodule(block.name).parameters())
    head = next(b.params for b in measured.blocks if b.kind == "head")
    uncut = next(b.params for b in plan.blocks if b.kind == "head")
    assert (head < uncut) if family == "resnet" else (head == uncut)  # ViT's head reads the same width
    # `hftl plan` prints the same sizes from the meta model (the base's 7 labels: no data is read)
    assert (
        cli_main(
            [
                "plan",
                "--task",
                "image",
                "--case",
                "small_different",
                "--strategy",
                "head",
                "--model",
                str(model_dirs[family]),
            ]
        )
        == 0
    )
    head_line = next(line for line in capsys.readouterr().out.splitlines() if "new head" in line)
    width = 16 if family == "resnet" else 32
    assert head_line.split()[-1] == str((width + 1) * 7)


def test_resnet_lora_targets_convolutions(model_dirs):
    plan, _, _ = plan_for("resnet", model_dirs, "large_similar", strategy="lora")
    assert all(name.endswith(".convolution") and ".stages." in name for name in plan.lora.target_modules)


def test_plan_renders_and_round_trips(model_dirs, tmp_path):
    plan, _, _ = plan_for("vit", model_dirs, "small_different", keep_layers=1, strategy="head")
    text = plan.render(10, 100)
    assert "removed (truncated)" in text and "new head, trained" in text and "10.00%" in text
    assert "keeps 1 of 4 layers (--keep-layers)" in text
    plan.save(tmp_path / "plan.json")
    assert hftl.TransferPlan.load(tmp_path / "plan.json") == plan


def meta_plan(model, task: str, case: str, **overrides):
    run = RunConfig(task=task, case=case, model="x", **overrides)
    return make_plan(run, model, backbone_for(model.config))


def vit_of_width(hidden: int, layers: int = 4):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
    )
    with torch.device("meta"):
        return ViTForImageClassification(config)


def test_the_textbook_rules_are_the_defaults_where_nothing_was_measured():
    wide = vit_of_width(768)  # ViT-B's width: no ViT that wide was calibrated
    assert meta_plan(wide, "image", "small_similar").strategy == "head"
    cut = meta_plan(wide, "image", "small_different")
    assert cut.strategy == "head" and cut.truncated
    assert meta_plan(wide, "image", "large_similar").lr == 5e-5  # the generic (BERT-style) table


def test_small_vit_defaults_follow_the_calibration_and_say_why(model_dirs):
    similar, _, _ = plan_for("vit", model_dirs, "small_similar")  # the tests' ViT: 32 wide
    assert similar.strategy == "partial" and not similar.truncated and similar.lr == 3e-3
    assert actions(similar, "layer") == ["frozen", "frozen", "trained", "trained"]
    assert "small ViT" in similar.reasons[0] and "docs/calibration.md" in similar.reasons[0]
    different, _, _ = plan_for("vit", model_dirs, "small_different")  # full: "ViT small_different" in the doc
    assert different.strategy == "full" and not different.truncated and different.lr == 3e-3
    assert set(actions(different, "layer")) == {"trained"} and "small ViTs" in different.reasons[0]
    # the 192-wide table: full fine-tuning at a third of the small-ViT rate ("ViT small_different" too)
    wider_different = meta_plan(vit_of_width(132), "image", "small_different")
    assert wider_different.strategy == "full" and not wider_different.truncated and wider_different.lr == 1e-3
    assert "192-wide ViT" in wider_different.reasons[0]
    assert plan_for("vit", model_dirs, "large_similar")[0].lr == 3e-3
    assert plan_for("vit", model_dirs, "small_similar", strategy="head")[0].lr == 9e-2
    assert plan_for("vit", model_dirs, "large_similar", strategy="lora")[0].lr == 1e-2
    assert plan_for("vit", model_dirs, "large_different", init="scratch")[0].lr == 3e-3
    measured = vit_of_width(128)  # up to twice the calibrated width
    assert meta_plan(measured, "image", "small_similar").strategy == "partial"
    # wider, up to 384 and 8 layers: the 192-wide ViT's table, a third of the rates; ViT-Ti's depth (12) or ViT-B's
    # width: not measured, the textbook rules at the generic rates
    wider = meta_plan(vit_of_width(132), "image", "small_similar")
    assert wider.strategy == "partial" and wider.lr == 1e-3 and "docs/calibration.md" in wider.reasons[0]
    assert meta_plan(vit_of_width(384, layers=8), "image", "large_different", init="scratch").lr == 1e-3
    for uncovered in (vit_of_width(192, layers=12), vit_of_width(388)):
        assert meta_plan(uncovered, "image", "small_similar").strategy == "head"
        assert meta_plan(uncovered, "image", "large_similar").lr == 5e-5


def test_a_config_without_a_width_keeps_the_generic_table():
    from hftl.transfer.defaults import case_choice, default_lr

    assert (
        default_lr("vit", "full", "pretrained") == 5e-5 and default_lr("bert", "full", "pretrained") == 5e-5
    )
    assert default_lr("bert", "full", "scratch", object()) == 1e-3  # the generic scratch rate
    from transformers import ResNetConfig

    # the ResNet table covers ResNets up to twice as wide as the widest measured (512); ResNet-50 (2048) keeps the
    # generic one, and so do the textbook cases
    demo = ResNetConfig(hidden_sizes=[16, 32, 64, 128], depths=[1] * 4, layer_type="basic")
    assert default_lr("resnet", "full", "pretrained", demo) == 3e-3
    assert default_lr("resnet", "full", "pretrained", ResNetConfig(hidden_sizes=[64, 128, 256, 512])) == 3e-3
    assert default_lr("resnet", "full", "pretrained", ResNetConfig()) == 5e-5  # ResNet-50's widths
    assert case_choice("resnet", "small_different", ResNetConfig()) is None
    assert case_choice("resnet", "small_different", demo).strategy == "full"


def test_small_bert_defaults_follow_the_calibration_and_larger_berts_keep_the_generic_table():
    from transformers import BertConfig, BertForSequenceClassification

    def plan(hidden: int, case: str):
        config = BertConfig(
            hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
        )
        with torch.device("meta"):
            model = BertForSequenceClassification(config)
        return meta_plan(model, "text", case)

    small = plan(384, "small_similar")  # MiniLM-L6's width: what was measured
    assert small.strategy == "partial" and small.lr == 3e-4 and "MiniLM" in small.reasons[0]
    assert plan(384, "small_different").strategy == "partial"
    # the tiny BERT developed on SST-2: a third of MiniLM's rates was too low; its cases are the textbook's
    tiny = plan(128, "large_similar")
    assert tiny.strategy == "full" and tiny.lr == 1e-3 and plan(192, "small_similar").strategy == "head"
    assert plan(196, "small_similar").strategy == "partial" and plan(196, "large_similar").lr == 3e-4
    assert plan(512, "large_similar").lr == 3e-4 and plan(516, "large_similar").lr == 5e-5
    base = plan(768, "small_similar")  # BERT-base: not measured
    assert base.strategy == "head" and base.lr == 1e-3 and plan(768, "large_similar").lr == 5e-5


def test_resnet_defaults_follow_the_calibration_and_say_why(model_dirs):
    similar, _, _ = plan_for("resnet", model_dirs, "small_similar")
    assert similar.strategy == "partial" and not similar.truncated and similar.lr == 1e-2
    assert actions(similar, "layer") == ["frozen", "frozen", "trained", "trained"]
    assert "textbook rule" in similar.reasons[0] and "docs/calibration.md" in similar.reasons[0]
    different, _, _ = plan_for("resnet", model_dirs, "small_different")
    assert different.strategy == "full" and not different.truncated and different.lr == 3e-3
    assert plan_for("resnet", model_dirs, "small_similar", strategy="head")[0].lr == 9e-2
    assert plan_for("resnet", model_dirs, "large_different", init="scratch")[0].lr == 3e-3
    assert plan_for("resnet", model_dirs, "small_similar", lr=1e-4)[0].lr == 1e-4  # --lr always wins
    explicit, _, _ = plan_for("resnet", model_dirs, "small_different", strategy="head")
    assert explicit.truncated and "textbook rule" in explicit.reasons[0]  # an explicit strategy gets the cut


def test_scratch_init_is_noted_in_the_plan(model_dirs):
    plan, _, _ = plan_for("resnet", model_dirs, "large_different", init="scratch")
    assert plan.init == "scratch" and any("no-transfer baseline" in r for r in plan.reasons)


def test_unsupported_architecture_names_the_supported_ones():
    from transformers import GPT2Config

    with pytest.raises(
        hftl.ModelError, match=r"architecture .gpt2. is not supported.*bert: bert.*resnet: resnet.*vit: vit"
    ):
        backbone_for(GPT2Config())
