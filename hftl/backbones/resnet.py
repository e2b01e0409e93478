"""ResNet: conv stem (embedder) + 4 stages + global pooling + linear head."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hftl.backbones.base import Backbone, register_backbone

if TYPE_CHECKING:  # torch is imported where it is used: listing the families (hftl tasks) needs none
    import torch
    from torch import nn


@register_backbone
class ResNetBackbone(Backbone):
    family = "resnet"
    model_types = ("resnet",)
    layer_word = "stage"
    layer_paths = ("encoder.stages",)
    stem_names = ("embedder",)
    head_names = ("classifier",)
    # the 3x3/1x1 convolutions of every residual block (PEFT LoRA supports Conv2d); not the stem, not shortcuts
    lora_pattern = r".*\.stages\.\d+\.layers\.\d+\.layer\.\d+\.convolution"
    cache_classes = ("ResNetForImageClassification",)
    convolutional = True

    def num_layers(self, config: Any) -> int:
        return len(config.depths)

    def set_num_layers(self, config: Any, keep: int) -> None:
        config.depths = list(config.depths)[:keep]
        config.hidden_sizes = list(config.hidden_sizes)[:keep]
        config.stage_names = ["stem"] + [f"stage{i}" for i in range(1, keep + 1)]
        config.set_output_features_output_indices(out_features=None, out_indices=None)

    def truncate(self, model: nn.Module, keep: int) -> None:
        from torch import nn

        super().truncate(model, keep)
        # the pooled features now have the kept stage's width: resize the head's input to match
        if hasattr(model, "rebuild_head"):  # hftl's pooled classifier (linear or MLP head)
            model.rebuild_head()
            return
        old = model.classifier[-1]
        model.classifier[-1] = nn.Linear(model.config.hidden_sizes[-1], old.out_features)

    def run_layers(
        self, model: nn.Module, hidden: torch.Tensor, start: int, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        for stage in list(model.get_submodule(self.layers_path(model)))[start:]:
            hidden = stage(hidden)
        return hidden

    def base_outputs(self, model: nn.Module, hidden: torch.Tensor) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        pooler = model.get_submodule(self._qualify(model, "pooler"))
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooler(hidden))

    def head_input(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        return model.get_submodule(self._qualify(model, "pooler"))(hidden)
