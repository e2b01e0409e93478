"""Classifiers with a chosen pooling and head: ``encoder -> pool -> dropout -> head``, for any transformers
family hftl knows (BERT family, DistilBERT, ViT/DeiT/DINOv2, ResNet).

A stock ``BertForSequenceClassification`` reads BERT's [CLS] pooler, which a sentence encoder such as
all-MiniLM-L6-v2 never trained: frozen, its head stays near chance on SST-2 where mean-pooled tokens of the same
model reach 76% (docs/calibration.md). The pooling (``cls``, ``mean``, ``max``, or the family's ``pooler``) and
the head (``linear`` or ``mlp:N``, the Keras ResNet50/CIFAR-10 head) are config fields, so a saved model is rebuilt
exactly: each family gets a config/model pair with its own ``model_type`` (``hftl-pooled-bert``, ...) that
subclasses the stock pair (same weights, same module paths, so the backbone adapters, LoRA and the feature cache
work unchanged). ``hftl.register_auto_classes()`` makes ``transformers.pipeline`` know them.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from hftl.settings import head_width

POOLED_PREFIX = "hftl-pooled-"
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


# --- pooling and heads -----------------------------------------------------------------------------------------------
def pool(outputs: Any, mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """One vector per example from a base model's outputs (token sequences or convolutional feature maps).

    ``pooler``: the model's pooled output (BERT's pooler, ResNet's global average), the first token when it has
    none; ``cls``: the first token; ``mean``/``max``: over the real tokens (padding masked) or over all positions
    of a feature map."""
    pooled = getattr(outputs, "pooler_output", None)
    hidden = outputs.last_hidden_state
    if pooling == "pooler" and pooled is not None:
        return pooled.flatten(start_dim=1)
    if hidden.dim() == 4:  # a convolutional feature map [batch, channels, height, width]
        tokens = hidden.flatten(start_dim=2).transpose(1, 2)
        return tokens.amax(dim=1) if pooling == "max" else tokens.mean(dim=1)
    if pooling in ("pooler", "cls"):
        return hidden[:, 0]
    keep = (mask if mask is not None else torch.ones(hidden.shape[:2], device=hidden.device)).unsqueeze(-1)
    keep = keep.to(hidden.dtype)
    if pooling == "max":
        return hidden.masked_fill(keep == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    return (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)


def build_head(head: str, in_features: int, num_labels: int) -> nn.Module:
    """``linear``: Linear(in, labels); ``mlp:N``: Linear(in, N) -> ReLU -> Linear(N, labels)."""
    width = head_width(head)
    if width is None:
        return nn.Linear(in_features, num_labels)
    return nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, num_labels))


def feature_width(config: Any) -> int:
    """Width of the pooled features: the last stage's channels (CNNs), else the hidden size."""
    sizes = getattr(config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    return int(getattr(config, "hidden_size", None) or config.dim)


def head_dropout(config: Any) -> float:
    """The dropout the family's own text head uses before its classifier (none for images)."""
    for name in ("classifier_dropout", "seq_classif_dropout", "hidden_dropout_prob"):
        value = getattr(config, name, None)
        if value is not None:
            return float(value)
    return 0.0


def classification_loss(config: Any, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss transformers' classifiers use, chosen by ``config.problem_type`` (inferred as they infer it)."""
    from transformers.loss.loss_utils import ForSequenceClassificationLoss

    return ForSequenceClassificationLoss(labels, logits, config)


# --- the pooled classifier -------------------------------------------------------------------------------------------
class PooledClassifier:
    """Mixin for a stock task model: replaces its head with ``dropout -> head`` on pooled encoder outputs.

    Must come first in the bases so that its ``forward`` wins; the stock ``__init__`` builds the encoder."""

    base_model_type: str
    output_class: type

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)  # type: ignore[call-arg]
        for unused in ("pre_classifier",):  # DistilBERT's head layer before its classifier
            if hasattr(self, unused):
                delattr(self, unused)
        encoder = self.encoder_module()
        pooler = getattr(encoder, "pooler", None)  # ViT's task model builds its encoder with pooler=None
        pooler_weights = pooler is not None and any(True for _ in pooler.parameters())
        if config.classifier_pooling != "pooler" and pooler_weights:
            encoder.pooler = (
                None  # a trained pooler the chosen pooling never reads: no dead parameters in DDP
            )
        self.dropout = nn.Dropout(head_dropout(config))
        self.rebuild_head()

    def encoder_module(self) -> nn.Module:
        return getattr(self, self.base_model_prefix)  # type: ignore[attr-defined]

    def rebuild_head(self) -> None:
        """A new head sized for the current features (after a cut, the kept stage's width)."""
        config = self.config  # type: ignore[attr-defined]
        self.classifier = build_head(config.classifier_head, feature_width(config), config.num_labels)

    def pool_outputs(self, outputs: Any, mask: torch.Tensor | None) -> torch.Tensor:
        return pool(outputs, mask, self.config.classifier_pooling)  # type: ignore[attr-defined]

    def forward(
        self, labels: torch.Tensor | None = None, return_dict: bool | None = None, **inputs: Any
    ) -> Any:
        inputs = {key: value for key, value in inputs.items() if value is not None}
        outputs = self.encoder_module()(**inputs, return_dict=True)
        features = self.pool_outputs(outputs, inputs.get("attention_mask"))
        logits = self.classifier(self.dropout(features))
        loss = None if labels is None else classification_loss(self.config, logits, labels)  # type: ignore[attr-defined]
        return self.output_class(
            loss=loss,
            logits=logits,
            hidden_states=getattr(outputs, "hidden_states", None),
            attentions=getattr(outputs, "attentions", None),
        )


def pooled_model_type(model_type: str) -> str:
    return f"{POOLED_PREFIX}{model_type}"


def supported_model_types() -> dict[str, tuple[str, str, str]]:
    """model_type -> (config class, task-model class, task kind) for every family that can be pooled."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    from hftl.backbones import available_backbones

    found: dict[str, tuple[str, str, str]] = {}
    for model_types in available_backbones().values():
        for model_type in model_types:
            for kind, mapping in (
                ("text", MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES),
                ("image", MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES),
            ):
                name = mapping.get(model_type)
                name = name[0] if isinstance(name, tuple) else name
                if name and model_type in CONFIG_MAPPING_NAMES:
                    found[model_type] = (CONFIG_MAPPING_NAMES[model_type], name, kind)
    return found


@functools.cache
def pooled_classes(model_type: str) -> tuple[type, type]:
    """The (config, model) pair of ``hftl-pooled-MODEL_TYPE``, created and registered with the Auto classes once."""
    import transformers
    from huggingface_hub.dataclasses import strict
    from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification
    from transformers.modeling_outputs import ImageClassifierOutput, SequenceClassifierOutput

    supported = supported_model_types()
    if model_type not in supported:
        raise ValueError(
            f"no pooled classifier for model type {model_type!r}; supported: {', '.join(sorted(supported))}"
        )
    config_name, model_name, kind = supported[model_type]
    base_config = getattr(transformers, config_name)
    base_model = getattr(transformers, model_name)
    pooled_type = pooled_model_type(model_type)
    config_class = strict(
        type(
            f"Pooled{config_name}",
            (base_config,),
            {
                "__module__": __name__,
                "__annotations__": {"classifier_pooling": str, "classifier_head": str},
                "model_type": pooled_type,
                "base_model_type": model_type,
                "classifier_pooling": "mean",
                "classifier_head": "linear",
            },
        )
    )
    model_class = type(
        f"Pooled{model_name}",
        (PooledClassifier, base_model),
        {
            "__module__": __name__,
            "config_class": config_class,
            "base_model_type": model_type,
            "stock_class": base_model,  # what the family's forward pieces (the feature cache) were written for
            "output_class": SequenceClassifierOutput if kind == "text" else ImageClassifierOutput,
        },
    )
    auto = AutoModelForSequenceClassification if kind == "text" else AutoModelForImageClassification
    AutoConfig.register(pooled_type, config_class, exist_ok=True)
    auto.register(config_class, model_class, exist_ok=True)
    return config_class, model_class


def register_pooled_classes() -> None:
    """Register every family's pooled classifier with the Auto classes (imports each family's modeling code)."""
    for model_type in supported_model_types():
        pooled_classes(model_type)


def register_for_source(source: str, **kwargs: Any) -> None:
    """Before ``AutoConfig`` reads ``source`` (a folder or Hub id): register the pooled pair its config names, and
    only that family's (cheap). Other models are left to transformers."""
    from transformers import PretrainedConfig

    try:
        config_dict, _ = PretrainedConfig.get_config_dict(source, **kwargs)
    except (OSError, ValueError):
        return  # AutoConfig will report it, with hftl's message
    model_type = str(config_dict.get("model_type", ""))
    if model_type.startswith(POOLED_PREFIX):
        pooled_classes(model_type.removeprefix(POOLED_PREFIX))


def pooled_config(config: Any, pooling: str, head: str) -> Any:
    """``config`` (a stock family config) as its pooled counterpart with ``pooling`` and ``head``."""
    head_width(head)  # a bad head spec fails here, before any weights load
    model_type = getattr(config, "base_model_type", None) or config.model_type
    config_class, _ = pooled_classes(model_type)
    fields = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "transformers_version")}
    fields.update(classifier_pooling=pooling, classifier_head=head)
    return config_class(**fields)


def is_pooled(model_or_config: Any) -> bool:
    config = getattr(model_or_config, "config", model_or_config)
    return str(getattr(config, "model_type", "")).startswith(POOLED_PREFIX)
