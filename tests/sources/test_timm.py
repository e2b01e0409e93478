"""timm backbones (through transformers' timm wrapper) follow the same case rules as ViT and ResNet: the same
plans block by block, truncation that survives save/load, LoRA inside the kept stages, and end-to-end runs.

Tiny timm test architectures (``test_resnet``: 4 stages, ``test_efficientnet``: 5 block stages, ``test_vit``: 6
blocks) are built locally from their configs. Skipped where timm cannot be imported (it needs a torchvision built
for the installed torch); ``test_timm_missing_says_how_to_install`` runs exactly there instead.
"""

from __future__ import annotations

import pytest
import torch

import hftl
from hftl.config import RunConfig
from hftl.transfer.apply import apply_plan, count_parameters
from hftl.transfer.cases import make_plan
from tests.assets import needs_timm, timm_skip_reason

ARCHS = {"test_resnet": 4, "test_efficientnet": 5, "test_vit": 6}


def tiny_timm(arch: str, num_labels: int = 3):
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    torch.manual_seed(0)
    return TimmWrapperForImageClassification(TimmWrapperConfig(architecture=arch, num_labels=num_labels))


def plan_for(arch: str, case: str, **overrides):
    from hftl.backbones import backbone_for

    model = tiny_timm(arch)
    backbone = backbone_for(model.config)
    config = RunConfig(task="image", case=case, model=f"timm:{arch}", init="scratch", **overrides)
    return make_plan(config, model, backbone), model, backbone


def actions(plan, kind):
    return [b.action for b in plan.blocks if b.kind == kind]


def stages_with_weights(model, backbone) -> int:
    return sum(
        1 for name in backbone.layers(model) if any(True for _ in model.get_submodule(name).parameters())
    )


@needs_timm
@pytest.mark.parametrize("arch", ARCHS)
def test_structure_reads_stem_stages_neck_head(arch):
    from hftl.backbones import backbone_for

    model = tiny_timm(arch)
    backbone = backbone_for(model.config)
    assert backbone.family == "timm" and backbone.num_layers(model.config) == ARCHS[arch]
    parts = backbone.stem(model) + backbone.layers(model) + backbone.neck(model) + backbone.head(model)
    # every weight belongs to exactly one block
    owners = [
        [p for p in parts if name == p or name.startswith(p + ".")] for name, _ in model.named_parameters()
    ]
    assert all(len(found) == 1 for found in owners)
    assert backbone.head(model) == [
        f"timm_model.{n}"
        for n, m in model.timm_model.named_modules()
        if m is model.timm_model.get_classifier()
    ]


@needs_timm
@pytest.mark.parametrize("arch", ARCHS)
def test_small_similar_freezes_the_whole_body(arch):
    plan, _, _ = plan_for(arch, "small_similar")
    assert plan.strategy == "head" and not plan.truncated and plan.family == "timm"
    assert set(actions(plan, "stem")) == {"frozen"} and set(actions(plan, "layer")) == {"frozen"}
    assert set(actions(plan, "neck")) <= {"frozen"} and set(actions(plan, "head")) == {"new"}


@needs_timm
@pytest.mark.parametrize("arch", ARCHS)
def test_small_different_keeps_the_first_half_frozen_by_default(arch):
    plan, _, _ = plan_for(arch, "small_different")
    half = ARCHS[arch] // 2
    assert plan.keep_layers == half and plan.num_layers == ARCHS[arch] and plan.truncated
    assert actions(plan, "layer") == ["frozen"] * half + ["removed"] * (ARCHS[arch] - half)
    # a neck sized for the last stage is cut away with it; one that still fits is retrained
    assert set(actions(plan, "neck")) <= {"trained", "removed"}


@needs_timm
@pytest.mark.parametrize("arch", ARCHS)
def test_keep_layers_sets_the_cut(arch):
    plan, _, _ = plan_for(arch, "small_different", keep_layers=3)
    assert actions(plan, "layer") == ["frozen"] * 3 + ["removed"] * (ARCHS[arch] - 3)
    with pytest.raises(hftl.ConfigError, match=rf"keep_layers=9 is out of range.*use 1..{ARCHS[arch]}"):
        plan_for(arch, "small_different", keep_layers=9)


@needs_timm
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("case", ["large_similar", "large_different"])
def test_large_cases_fine_tune_everything(arch, case):
    plan, model, backbone = plan_for(arch, case)
    assert plan.strategy == "full" and not plan.truncated
    assert {b.action for b in plan.blocks} == {"trained", "new"}
    counts = count_parameters(apply_plan(plan, model, backbone))
    assert counts.trainable == counts.total


@needs_timm
@pytest.mark.parametrize("arch", ARCHS)
def test_partial_freezes_the_first_n_and_trains_the_rest(arch):
    plan, model, backbone = plan_for(arch, "small_different", strategy="partial", keep_layers=1)
    assert not plan.truncated
    assert actions(plan, "layer") == ["frozen"] + ["trained"] * (ARCHS[arch] - 1)
    frozen = sum(b.params for b in plan.blocks if b.action == "frozen")
    counts = count_parameters(apply_plan(plan, model, backbone))
    assert counts.total - counts.trainable == frozen


@needs_timm
@pytest.mark.parametrize("arch", ARCHS)
def test_head_only_trains_exactly_the_head(arch):
    plan, model, backbone = plan_for(arch, "small_similar")
    model = apply_plan(plan, model, backbone)
    head = plan.names("new")
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(any(n.startswith(h + ".") for h in head) for n in trainable)
    expected = sum(p.numel() for h in head for p in model.get_submodule(h).parameters())
    assert count_parameters(model).trainable == expected


@needs_timm
@pytest.mark.parametrize("arch", ARCHS)
def test_truncation_cuts_the_model_and_its_config(arch, tmp_path):
    from transformers import TimmWrapperForImageClassification

    plan, model, backbone = plan_for(arch, "small_different", keep_layers=1)
    model = apply_plan(plan, model, backbone).eval()
    assert stages_with_weights(model, backbone) == 1 and backbone.num_layers(model.config) == 1
    kept = sum(b.params for b in plan.blocks if b.action not in ("removed", "new"))
    head = sum(p.numel() for h in plan.names("new") for p in model.get_submodule(h).parameters())
    assert kept + head == count_parameters(model).total  # the head is resized for the kept stage's width
    pixels = torch.rand(2, 3, 32, 32)
    model.save_pretrained(tmp_path)  # the saved config (architecture hftl_truncated) rebuilds the cut model
    reloaded = TimmWrapperForImageClassification.from_pretrained(tmp_path).eval()
    assert stages_with_weights(reloaded, backbone) == 1
    assert count_parameters(reloaded).total == count_parameters(model).total
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=pixels).logits, model(pixel_values=pixels).logits)


@needs_timm
@pytest.mark.parametrize("arch", ARCHS)
def test_lora_adapts_only_kept_layers_and_saves_neck_and_head(arch):
    plan, model, backbone = plan_for(arch, "small_different", strategy="lora")
    assert plan.lora is not None and plan.lora.target_modules
    kept = plan.names("lora")
    assert all(any(t.startswith(k + ".") for k in kept) for t in plan.lora.target_modules)
    assert set(plan.names("new")) <= set(plan.lora.modules_to_save)
    model = apply_plan(plan, model, backbone)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable) and any("modules_to_save" in n for n in trainable)
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)


@needs_timm
def test_vit_lora_targets_attention_and_cnn_lora_targets_convolutions():
    vit, _, _ = plan_for("test_vit", "large_similar", strategy="lora")
    assert vit.lora.target_modules and all(t.endswith(".qkv") for t in vit.lora.target_modules)
    cnn, model, _ = plan_for("test_resnet", "large_similar", strategy="lora")
    convs = [model.get_submodule(t) for t in cnn.lora.target_modules]
    assert convs and all(isinstance(c, torch.nn.Conv2d) and c.groups == 1 for c in convs)


@pytest.fixture(scope="module")
def timm_folder(tmp_path_factory):
    """A tiny timm-wrapper model folder with an image processor, as ``save_pretrained`` writes it."""
    from transformers import ConvNextImageProcessor

    path = tmp_path_factory.mktemp("tiny-timm")
    tiny_timm("test_resnet", num_labels=7).save_pretrained(path)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(path)
    return path


@needs_timm
def test_cut_timm_run_saves_loads_and_predicts_with_label_names(timm_folder, image_folder, tmp_path):
    from transformers import pipeline

    from tests.helpers import quick_train, saved_state

    before = saved_state(timm_folder)
    result = quick_train("image", "small_different", timm_folder, image_folder, tmp_path, epochs=1)
    assert result.plan.family == "timm" and result.plan.keep_layers == 2
    model = hftl.load(tmp_path)
    assert type(model).__name__ == "TimmWrapperForImageClassification"
    # the kept stages were frozen: byte-identical to the source
    for name, tensor in model.state_dict().items():
        if name.startswith(("timm_model.layer1.", "timm_model.layer2.", "timm_model.conv1.")):
            assert torch.equal(tensor, before[name]), name
    from PIL import Image

    classify = pipeline("image-classification", model=str(tmp_path))  # hftl.load registered hftl_truncated
    labels = {p["label"] for p in classify(Image.new("RGB", (32, 32), (200, 40, 40)), top_k=3)}
    assert labels == {"red", "green", "blue"}


@pytest.fixture(scope="module")
def timm_vit_folder(tmp_path_factory):
    """A tiny timm ViT folder: its stem holds bare parameters (cls_token, pos_embed), not only modules."""
    from transformers import ViTImageProcessor

    path = tmp_path_factory.mktemp("tiny-timm-vit")
    tiny_timm("test_vit", num_labels=7).save_pretrained(path)
    ViTImageProcessor(size={"height": 160, "width": 160}).save_pretrained(path)
    return path


@needs_timm
@pytest.mark.parametrize("case", ["small_similar", "small_different"])
@pytest.mark.parametrize("folder", ["timm_folder", "timm_vit_folder"])
def test_cached_head_only_timm_run_trains_what_an_uncached_run_trains(
    folder, case, image_folder, tmp_path, request
):
    from tests.helpers import cached_and_uncached

    runs = cached_and_uncached("image", case, request.getfixturevalue(folder), image_folder, tmp_path)
    uses_cache = folder == "timm_folder" or case == "small_similar"  # a cut ViT retrains its final norm
    assert runs[True].metrics["feature_cache"]["used"] is uses_cache
    assert not runs[False].metrics["feature_cache"]["used"]
    cached, plain = runs[True].model.state_dict(), runs[False].model.state_dict()
    assert cached.keys() == plain.keys()
    for name in cached:
        assert torch.allclose(cached[name], plain[name], atol=1e-5), name


@needs_timm
def test_conservative_training_reaches_parameter_blocks_of_a_timm_vit(
    timm_vit_folder, image_folder, tmp_path
):
    """Layer-wise lr decay, gradual unfreezing and L2-SP on a timm ViT, whose stem is bare parameters."""
    from tests.helpers import quick_train

    result = quick_train(
        "image",
        "large_similar",
        timm_vit_folder,
        image_folder,
        tmp_path,
        epochs=2,
        layer_decay=0.5,
        unfreeze_schedule=1,
        regularizer=["l2sp"],
    )
    blocks = {b.name: b for b in result.plan.blocks}
    assert blocks["timm_model.cls_token"].lr < blocks["timm_model.blocks.5"].lr
    assert blocks["timm_model.cls_token"].unfreeze_epoch > 0
    assert result.metrics["final"]["epoch"] == 2


@needs_timm
def test_timm_name_trains_from_scratch_offline(image_folder, tmp_path):
    result = hftl.train(
        task="image",
        case="large_different",
        model="timm:test_resnet",
        init="scratch",
        dataset=str(image_folder),
        output_dir=str(tmp_path),
        epochs=1,
        batch_size=8,
        lr=3e-3,
    )
    assert result.plan.init == "scratch" and result.metrics["parameters"]["percent"] == 100.0
    assert (tmp_path / "preprocessor_config.json").is_file()
    assert hftl.load(tmp_path).config.architecture == "test_resnet"


@needs_timm
def test_unknown_timm_name_lists_similar_ones():
    with pytest.raises(hftl.ModelError, match=r"timm does not know the architecture 'resnet_nope'.*resnet"):
        hftl.train(task="image", case="small_similar", model="timm:resnet_nope", init="scratch", dataset="x")


@pytest.mark.skipif(
    timm_skip_reason() is None, reason="timm imports here; the missing-timm message is not shown"
)
def test_timm_missing_says_how_to_install(image_folder, tmp_path):
    with pytest.raises(hftl.ModelError, match=r'pip install "hftl\[timm\]"'):
        hftl.train(
            task="image",
            case="small_similar",
            model="timm:resnet18",
            init="scratch",
            dataset=str(image_folder),
            output_dir=str(tmp_path),
        )
