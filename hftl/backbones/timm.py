"""timm models (through transformers' ``TimmWrapperForImageClassification``): any timm architecture that reports
its stages (``feature_info``) and can be cut (``prune_intermediate_layers``), e.g. ResNet, EfficientNet,
MobileNet, ConvNeXt, RegNet, ViT/DeiT, Swin.

The structure is read from the timm network itself, the way timm's ``features_only`` does:

- **stages** ("layers" of the plan): the ``feature_info`` taps of the most common kind (``layer1..4``,
  ``stages.N``, ``blocks.N``, ``s1..s4``), or every ``blocks.N`` stage for EfficientNet/MobileNet (cut with
  ``extra_blocks``); taps before them (a stem output such as ResNet's ``act1``) belong to the stem, taps after them
  (``final_conv``) to the neck;
- **head**: the module ``get_classifier()`` returns; **stem**: every weight before the first stage (including
  direct parameters such as a ViT's ``cls_token``/``pos_embed``); **neck**: every weight between the last stage and
  the head (EfficientNet's ``conv_head``/``bn2``, a ViT's final ``norm``, ConvNeXt's ``head.norm``).

Cutting after N stages uses timm's ``prune_intermediate_layers`` and a new classifier sized for the kept features;
the cut is recorded in the config (architecture ``hftl_truncated``, see ``hftl.timm_source``). timm is imported only
when a timm model is met.
"""

from __future__ import annotations

import copy
import inspect
import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from hftl.backbones.base import Backbone, Cut, register_backbone
from hftl.errors import ModelError

PREFIX = "timm_model"


@dataclass(frozen=True)
class TimmStructure:
    """Paths (relative to the timm network) of its parts; stem/neck entries may be parameter paths."""

    stem: tuple[str, ...]
    layers: tuple[str, ...]
    neck: tuple[str, ...]
    head: tuple[str, ...]
    cut_offset: int  # prune_intermediate_layers index of stage k (1-based) is cut_offset + k - 1
    extra_blocks: bool  # EfficientNet/MobileNet: index every blocks.N (stem is index 0)


def structure_of(net: nn.Module) -> TimmStructure:
    """Stem, stages, neck and head of a timm network (see the module docstring for the rules)."""
    layers, offset, extra = _stages(net)
    layers = _drop_cut_stages(net, layers)
    classifier = net.get_classifier() if hasattr(net, "get_classifier") else None
    head = [name for name, module in net.named_modules() if module is classifier and name]
    if not head:
        raise ModelError(f"timm {type(net).__name__}: no classifier module found (get_classifier())")
    groups: dict[str, list[str]] = {"stem": [], "neck": []}
    seen_layer = seen_last_layer = False
    for name, _ in net.named_parameters():
        owner = next((layer for layer in layers if name.startswith(layer + ".")), None)
        if owner is not None:
            seen_layer = True
            seen_last_layer = seen_last_layer or owner == layers[-1]
        elif name.startswith(head[0] + "."):
            continue
        elif not seen_layer:
            groups["stem"].append(name)
        elif not seen_last_layer:
            raise ModelError(
                f"timm {type(net).__name__}: weights {name!r} sit between stages; hftl cannot split this "
                "architecture into stem / stages / head (use a model whose feature_info names its stages)"
            )
        else:
            groups["neck"].append(name)
    return TimmStructure(
        stem=tuple(_owners(net, groups["stem"])),
        layers=tuple(layers),
        neck=tuple(_owners(net, groups["neck"])),
        head=tuple(head),
        cut_offset=offset,
        extra_blocks=extra,
    )


def _stages(net: nn.Module) -> tuple[list[str], int, bool]:
    prune = getattr(net, "prune_intermediate_layers", None)
    taps = [info["module"] for info in getattr(net, "feature_info", None) or [] if isinstance(info, dict)]
    if prune is None or not taps:
        raise ModelError(
            f"timm {type(net).__name__} does not report its stages (feature_info) or cannot be cut "
            "(prune_intermediate_layers); hftl needs both (most timm >= 1.0 models have them)"
        )
    blocks = getattr(net, "blocks", None)
    if "extra_blocks" in inspect.signature(prune).parameters and isinstance(blocks, nn.Sequential):
        return [f"blocks.{i}" for i in range(len(blocks))], 1, True

    kinds = [re.sub(r"\d+", "", tap) for tap in taps]
    stage_kind = max(kinds, key=kinds.count)  # layer1..4, stages.N, blocks.N, s1..s4
    first = kinds.index(stage_kind)
    last = len(kinds) - 1 - kinds[::-1].index(stage_kind)
    # taps before the stages (act1, stem) are stem outputs, taps after them (final_conv) feed the head
    return taps[first : last + 1], first, False


def _drop_cut_stages(net: nn.Module, layers: list[str]) -> list[str]:
    """A cut network keeps its feature_info; its removed trailing stages are gone or empty."""
    kept = list(layers)
    while kept and not _has_params(net, kept[-1]):
        kept.pop()
    if not kept:
        raise ModelError(f"timm {type(net).__name__}: no stage holds weights")
    return kept


def _has_params(net: nn.Module, path: str) -> bool:
    try:
        return any(True for _ in net.get_submodule(path).parameters())
    except AttributeError:
        return False


def _owners(net: nn.Module, names: list[str]) -> list[str]:
    """The fewest module (or parameter) paths that own exactly ``names``: the shallowest module whose weights all
    belong to the group, else the parameter itself (a ViT's ``cls_token``)."""
    group, owners = set(names), []
    all_names = [name for name, _ in net.named_parameters()]
    for name in names:
        parts = name.split(".")
        owner = name
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth])
            inside = [n for n in all_names if n.startswith(prefix + ".")]
            if inside and all(n in group for n in inside):
                owner = prefix
                break
        if owner not in owners:
            owners.append(owner)
    return owners


@register_backbone
class TimmBackbone(Backbone):
    family = "timm"
    model_types = ("timm_wrapper",)
    layer_word = "stage"
    # a new classifier on top of pretrained features; same defaults as the other image families
    default_lrs: dict[str, float] = {}

    def _net(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(PREFIX)

    def _structure(self, model: nn.Module) -> TimmStructure:
        return structure_of(self._net(model))

    def _q(self, paths: tuple[str, ...]) -> list[str]:
        return [f"{PREFIX}.{path}" for path in paths]

    def prefix(self, model: nn.Module) -> str:
        return PREFIX

    def stem(self, model: nn.Module) -> list[str]:
        return self._q(self._structure(model).stem)

    def layers(self, model: nn.Module) -> list[str]:
        return self._q(self._structure(model).layers)

    def neck(self, model: nn.Module) -> list[str]:
        return self._q(self._structure(model).neck)

    def head(self, model: nn.Module) -> list[str]:
        return self._q(self._structure(model).head)

    def num_layers(self, config: Any) -> int:
        from hftl.timm_source import meta_timm_model

        return len(structure_of(meta_timm_model(config)).layers)

    def neck_removed_by_cut(self, model: nn.Module, keep: int) -> list[str]:
        """Neck modules that cutting after ``keep`` stages removes (sized for the last stage's output)."""
        from hftl.timm_source import cut_timm_model, meta_timm_model

        if keep >= self.num_layers(model.config):
            return []
        cut = copy.deepcopy(meta_timm_model(model.config))
        cut_timm_model(cut, keep, 2)
        remaining = {name for name, _ in cut.named_parameters()}
        return [
            f"{PREFIX}.{path}"
            for path in self._structure(model).neck
            if not any(name == path or name.startswith(path + ".") for name in remaining)
        ]

    def truncate(self, model: nn.Module, keep: int) -> None:
        from hftl.timm_source import cut_timm_model, register_truncated

        register_truncated()
        cut_timm_model(self._net(model), keep, model.config.num_labels)
        self.set_num_layers(model.config, keep)

    def set_num_layers(self, config: Any, keep: int) -> None:
        from hftl.timm_source import TRUNCATED, truncated_args

        config.model_args = truncated_args(config, keep)
        config.architecture = TRUNCATED

    def lora_targets(self, model: nn.Module, within: list[str]) -> list[str]:
        """Attention ``qkv`` projections where there are any (ViT-like), else every non-depthwise convolution."""
        inside = [
            (name, module)
            for name, module in model.named_modules()
            if any(name.startswith(block + ".") for block in within)
        ]
        qkv = [name for name, module in inside if isinstance(module, nn.Linear) and name.endswith(".qkv")]
        if qkv:
            return qkv
        return [name for name, module in inside if isinstance(module, nn.Conv2d) and module.groups == 1]

    def cache_support(self, model: nn.Module, cut: Cut) -> str | None:
        """Features can be cached at the head's input (head-only, cut or not): the hook before timm's classifier
        sees the pooled features exactly as an uncached forward computes them. Deeper cuts would need each
        architecture's neck (``conv_head``, ``norm``, pooling) rebuilt by hand, so they train uncached."""
        if type(model).__name__ != "TimmWrapperForImageClassification":
            return f"timm: no feature-cache forward pieces for {type(model).__name__}"
        if not cut.head_input:
            return "timm: only the head's input is cached (partial/neck-trained plans run uncached)"
        return None

    def plan_reasons(self, case: str, strategy: str, init: str) -> list[str]:
        return ["timm: stages from the network's feature_info; cut with timm's prune_intermediate_layers"]
