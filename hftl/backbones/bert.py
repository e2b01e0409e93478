"""BERT-family text encoders: token embeddings + encoder layers (+ pooler) + classification head."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hftl.backbones.base import Backbone, register_backbone

if TYPE_CHECKING:  # torch is imported where it is used: listing the families (hftl tasks) needs none
    import torch
    from torch import nn


@register_backbone
class BertBackbone(Backbone):
    family = "bert"
    model_types = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
    layer_paths = ("encoder.layer", "encoder.layers", "layers")
    # ELECTRA projects its narrower embeddings up to the encoder's width (``embeddings_project``): part of the stem
    stem_names = ("embeddings", "embeddings_project")
    neck_names = ("pooler",)  # BERT's [CLS] pooler; RoBERTa/ELECTRA keep theirs inside the head
    head_names = ("classifier",)
    lora_suffixes = (("query", "value"), ("q_proj", "v_proj"))
    cache_classes = (
        "BertForSequenceClassification",
        "RobertaForSequenceClassification",
        "XLMRobertaForSequenceClassification",
        "CamembertForSequenceClassification",
        "ElectraForSequenceClassification",
    )

    def num_layers(self, config: Any) -> int:
        return config.num_hidden_layers

    def set_num_layers(self, config: Any, keep: int) -> None:
        config.num_hidden_layers = keep

    def stock_first_token_pools(self, model: nn.Module) -> bool:
        return True  # BERT's pooler and the RoBERTa/ELECTRA heads read the first token only

    def head_input(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        pooler = getattr(model.get_submodule(self.prefix(model)), "pooler", None)
        return pooler(hidden) if pooler is not None else hidden

    def base_outputs(self, model: nn.Module, hidden: torch.Tensor) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        pooler = getattr(model.get_submodule(self.prefix(model)), "pooler", None)
        pooled = pooler(hidden) if pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)

    def forward_head(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        from torch import nn

        dropout = getattr(
            model, "dropout", None
        )  # BertForSequenceClassification: dropout, then the classifier
        if isinstance(dropout, nn.Dropout):
            x = dropout(x)
        return model.classifier(x)


@register_backbone
class DistilBertBackbone(Backbone):
    family = "distilbert"
    model_types = ("distilbert",)
    layer_paths = ("transformer.layer",)
    stem_names = ("embeddings",)
    head_names = ("pre_classifier", "classifier")
    lora_suffixes = (("q_lin", "v_lin"),)
    cache_classes = ("DistilBertForSequenceClassification",)

    def num_layers(self, config: Any) -> int:
        return config.n_layers

    def set_num_layers(self, config: Any, keep: int) -> None:
        config.n_layers = keep

    def stock_first_token_pools(self, model: nn.Module) -> bool:
        return True

    def head_input(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        return hidden[:, 0]

    def forward_head(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        from torch import nn

        x = nn.functional.relu(model.pre_classifier(x))
        return model.classifier(model.dropout(x))
