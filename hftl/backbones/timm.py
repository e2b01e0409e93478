"""timm models (through transformers' ``TimmWrapperForImageClassification``): any timm architecture that reports
its stages (``feature_info``) and can be cut (``prune_intermediate_layers``), e.g. ResNet, EfficientNet,
MobileNet, ConvNeXt, RegNet, ViT/DeiT, Swin.

The structure (stem, stages, neck, head) is read from the timm network itself and cutting uses timm's own
``prune_intermediate_layers``: both live in ``hftl.modeling.timm_nets``; this adapter maps them onto hftl's plan.
timm is imported only when a timm model is met.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from hftl.backbones.base import Backbone, Cut, register_backbone
from hftl.modeling.timm_nets import (
    TRUNCATED,
    TimmStructure,
    cut_timm_model,
    meta_timm_model,
    register_truncated,
    structure_of,
    truncated_args,
)

if TYPE_CHECKING:  # torch is imported where it is used: listing the families (hftl tasks) needs none
    from torch import nn


PREFIX = "timm_model"


@register_backbone
class TimmBackbone(Backbone):
    family = "timm"
    model_types = ("timm_wrapper",)
    layer_word = "stage"
    # a new classifier on top of pretrained features; same defaults as the other image families

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

        return len(structure_of(meta_timm_model(config)).layers)

    def neck_removed_by_cut(self, model: nn.Module, keep: int) -> list[str]:
        """Neck modules that cutting after ``keep`` stages removes (sized for the last stage's output)."""

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

        register_truncated()
        cut_timm_model(self._net(model), keep, model.config.num_labels)
        self.set_num_layers(model.config, keep)

    def set_num_layers(self, config: Any, keep: int) -> None:

        config.model_args = truncated_args(config, keep)
        config.architecture = TRUNCATED

    def lora_targets(self, model: nn.Module, within: list[str]) -> list[str]:
        """Attention ``qkv`` projections where there are any (ViT-like), else every non-depthwise convolution."""
        from torch import nn

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
