"""BERT-family text encoders: token embeddings + encoder layers (+ pooler) + classification head."""

from __future__ import annotations

from typing import Any

from hftl.backbones.base import Backbone, register_backbone


@register_backbone
class BertBackbone(Backbone):
    family = "bert"
    model_types = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
    layer_paths = ("encoder.layer", "encoder.layers", "layers")
    stem_names = ("embeddings",)
    neck_names = ("pooler",)  # BERT's [CLS] pooler; RoBERTa/ELECTRA keep theirs inside the head
    head_names = ("classifier",)
    lora_suffixes = (("query", "value"), ("q_proj", "v_proj"))

    def num_layers(self, config: Any) -> int:
        return config.num_hidden_layers

    def set_num_layers(self, config: Any, keep: int) -> None:
        config.num_hidden_layers = keep


@register_backbone
class DistilBertBackbone(Backbone):
    family = "distilbert"
    model_types = ("distilbert",)
    layer_paths = ("transformer.layer",)
    stem_names = ("embeddings",)
    head_names = ("pre_classifier", "classifier")
    lora_suffixes = (("q_lin", "v_lin"),)

    def num_layers(self, config: Any) -> int:
        return config.n_layers

    def set_num_layers(self, config: Any, keep: int) -> None:
        config.n_layers = keep
