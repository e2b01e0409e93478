"""The EfficientNet-PyTorch -> timm key mapping for the ImageNet EfficientNet-Lite0 weights: renaming checked on a
synthetic state dict with the real key names (no timm needed), against timm's own names where timm imports, and
on the real weights by the ImageNet class they predict for ant photos (skipped when the asset is absent)."""

from __future__ import annotations

import pytest
import torch

import hftl
from hftl.modeling.efficientnet_lite import stage_layout, to_timm_keys
from tests.assets import EFFICIENTNET_LITE0, HYMENOPTERA, needs, needs_timm

# EfficientNet-Lite0: blocks per stage and each stage's output width (no squeeze-excitation)
LITE0_STAGES = [(1, 16), (2, 24), (2, 40), (3, 80), (3, 112), (4, 192), (1, 320)]
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def synthetic_lite0() -> dict[str, torch.Tensor]:
    """Every key of the published efficientnet-lite0.pth (296), with tiny tensors: only the project convs' output
    width matters to the mapping (it marks where a stage starts)."""
    state: dict[str, torch.Tensor] = {"_conv_stem.weight": torch.zeros(32, 1, 1, 1)}
    state |= {f"_bn0.{leaf}": torch.zeros(1) for leaf in BN}
    index = 0
    for count, width in LITE0_STAGES:
        for _ in range(count):
            block = f"_blocks.{index}"
            modules = ["_depthwise_conv", "_bn1", "_project_conv", "_bn2"]
            if index > 0:  # every block but the first expands (inverted residual)
                modules = ["_expand_conv", "_bn0"] + modules
            for module in modules:
                if module.startswith("_bn"):
                    state |= {f"{block}.{module}.{leaf}": torch.zeros(1) for leaf in BN}
                else:
                    out = width if module == "_project_conv" else 8
                    state[f"{block}.{module}.weight"] = torch.full((out, 1, 1, 1), float(index))
            index += 1
    state["_conv_head.weight"] = torch.zeros(1280, 1, 1, 1)
    state |= {f"_bn1.{leaf}": torch.zeros(1) for leaf in BN}
    state |= {"_fc.weight": torch.zeros(1000, 1280), "_fc.bias": torch.zeros(1000)}
    return state


def test_stage_layout_is_read_from_the_projection_widths():
    assert stage_layout(synthetic_lite0()) == [count for count, _ in LITE0_STAGES]


def test_keys_are_renamed_to_timm_names_and_tensors_kept():
    state = synthetic_lite0()
    renamed = to_timm_keys(state)
    assert len(state) == len(renamed) == 296
    assert {id(t) for t in renamed.values()} == {
        id(t) for t in state.values()
    }  # names only, tensors untouched
    expected = {
        "_conv_stem.weight": "conv_stem.weight",
        "_bn0.running_var": "bn1.running_var",
        # block 0 is depthwise-separable: depthwise, then pointwise projection
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
        "_blocks.0._bn1.weight": "blocks.0.0.bn1.weight",
        "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
        "_blocks.0._bn2.bias": "blocks.0.0.bn2.bias",
        # inverted residuals: expand, depthwise, project
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        "_blocks.1._bn0.running_mean": "blocks.1.0.bn1.running_mean",
        "_blocks.2._depthwise_conv.weight": "blocks.1.1.conv_dw.weight",
        "_blocks.2._bn1.weight": "blocks.1.1.bn2.weight",
        "_blocks.3._project_conv.weight": "blocks.2.0.conv_pwl.weight",
        "_blocks.3._bn2.num_batches_tracked": "blocks.2.0.bn3.num_batches_tracked",
        "_blocks.14._project_conv.weight": "blocks.5.3.conv_pwl.weight",
        "_blocks.15._expand_conv.weight": "blocks.6.0.conv_pw.weight",
        "_conv_head.weight": "conv_head.weight",
        "_bn1.weight": "bn2.weight",
        "_fc.weight": "classifier.weight",
        "_fc.bias": "classifier.bias",
    }
    for old, new in expected.items():
        assert renamed[new] is state[old], (old, new)


def test_unknown_keys_are_named():
    state = synthetic_lite0()
    with pytest.raises(hftl.ModelError, match=r"unexpected EfficientNet key '_extra.weight'"):
        to_timm_keys({**state, "_extra.weight": torch.zeros(1)})
    with pytest.raises(hftl.ModelError, match=r"unexpected EfficientNet block key '_blocks.3._gate.weight'"):
        to_timm_keys({**state, "_blocks.3._gate.weight": torch.zeros(1)})
    with pytest.raises(hftl.ModelError, match="not an EfficientNet-PyTorch state dict"):
        to_timm_keys({"conv.weight": torch.zeros(1)})


@needs_timm
def test_renamed_keys_are_exactly_timms_tf_efficientnet_lite0():
    import timm

    with torch.device("meta"):
        net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert set(to_timm_keys(synthetic_lite0())) == set(net.state_dict())


ANTS = ["1119630822_cd325ea21a.jpg", "1124525276_816a07c17f.jpg", "1053149811_f62a3410d3.jpg"]
BEES = ["10870992_eebeeb3a12.jpg", "1181173278_23c36fac71.jpg"]


@needs_timm
@needs(EFFICIENTNET_LITE0)
@needs(HYMENOPTERA, "the shared hymenoptera_data folder")
def test_real_imagenet_weights_see_ants_and_bees(tmp_path):
    from transformers import pipeline

    from hftl.modeling.efficientnet_lite import convert

    folder = convert(EFFICIENTNET_LITE0, tmp_path / "lite0")
    classify = pipeline("image-classification", model=hftl.load(folder), image_processor=str(folder))
    val = HYMENOPTERA / "val"
    top = {name: classify(str(val / "ants" / name), top_k=1)[0]["label"] for name in ANTS}
    top |= {name: classify(str(val / "bees" / name), top_k=1)[0]["label"] for name in BEES}
    assert all(top[name] == "ant, emmet, pismire" for name in ANTS), top
    assert all(top[name] == "bee" for name in BEES), top
