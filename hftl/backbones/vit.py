"""ViT-style image transformers: patch embeddings + encoder layers + final LayerNorm + linear head on [CLS]."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hftl.backbones.base import Backbone, register_backbone

if TYPE_CHECKING:  # torch is imported where it is used: listing the families (hftl tasks) needs none
    import torch
    from torch import nn


@register_backbone
class ViTBackbone(Backbone):
    family = "vit"
    model_types = ("vit", "deit", "dinov2")
    layer_paths = ("layers", "encoder.layer", "encoder.layers")
    stem_names = ("embeddings",)
    neck_names = ("layernorm",)
    head_names = ("classifier",)
    lora_suffixes = (("q_proj", "v_proj"), ("query", "value"))
    cache_classes = (
        "ViTForImageClassification",
        "DeiTForImageClassification",
        "Dinov2ForImageClassification",
    )
    # a distilled DeiT (facebook/deit-*-distilled-*) is saved with a class head and a distillation head that only
    # predict; transformers fine-tunes its body with DeiTForImageClassification (the distillation token stays)
    inference_only_classes = {"DeiTForImageClassificationWithTeacher": "DeiTForImageClassification"}

    def num_layers(self, config: Any) -> int:
        return config.num_hidden_layers

    def set_num_layers(self, config: Any, keep: int) -> None:
        config.num_hidden_layers = keep

    def stock_first_token_pools(self, model: nn.Module) -> bool:
        # ViT and DeiT classify the [CLS] token; DINOv2 also averages the patch tokens
        return model.config.model_type != "dinov2"

    def base_outputs(self, model: nn.Module, hidden: torch.Tensor) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        layernorm = model.get_submodule(self._qualify(model, "layernorm"))
        return BaseModelOutputWithPooling(last_hidden_state=layernorm(hidden))

    def head_input(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        import torch

        sequence = model.get_submodule(self._qualify(model, "layernorm"))(hidden)
        if model.config.model_type == "dinov2":
            return torch.cat([sequence[:, 0], sequence[:, 1:].mean(dim=1)], dim=1)
        return sequence[:, 0, :]
