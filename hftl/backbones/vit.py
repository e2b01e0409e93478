"""ViT-style image transformers: patch embeddings + encoder layers + final LayerNorm + linear head on [CLS]."""

from __future__ import annotations

from typing import Any

from hftl.backbones.base import Backbone, register_backbone


@register_backbone
class ViTBackbone(Backbone):
    family = "vit"
    model_types = ("vit", "deit", "dinov2")
    layer_paths = ("layers", "encoder.layer", "encoder.layers")
    stem_names = ("embeddings",)
    neck_names = ("layernorm",)
    head_names = ("classifier",)
    lora_suffixes = (("q_proj", "v_proj"), ("query", "value"))

    def num_layers(self, config: Any) -> int:
        return config.num_hidden_layers

    def set_num_layers(self, config: Any, keep: int) -> None:
        config.num_hidden_layers = keep
