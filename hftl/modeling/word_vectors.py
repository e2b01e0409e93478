"""A word-vector text classifier as a regular transformers model (``model_type="hftl-word-vectors"``).

Embeddings (pretrained word vectors) -> optional 1-D CNN -> mean/max pooling over the real tokens (padding masked)
-> MLP. It is a ``PreTrainedModel``/``PretrainedConfig`` pair registered with the Auto classes when hftl is
imported, so ``save_pretrained``/``from_pretrained``/``push_to_hub`` and ``transformers.pipeline`` work on it like
on any Hub model; the vocabulary travels beside it as a standard ``tokenizer.json``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from hftl.settings import VECTOR_ENCODERS as ENCODERS
from hftl.settings import VECTOR_POOLINGS

MODEL_TYPE = "hftl-word-vectors"


@strict
class WordVectorsConfig(PreTrainedConfig):
    """Sizes of the word-vector classifier, and where its vectors came from (for the model card and reports).

    ``encoder="bag"`` pools the word vectors directly; ``"cnn"`` runs a 1-D convolution per kernel size first
    (Kim, 2014). ``hidden_size=0`` makes the head a single linear layer.
    """

    model_type = MODEL_TYPE
    vocab_size: int = 2
    embedding_dim: int = 50
    pooling: str = "mean"
    encoder: str = "bag"
    cnn_channels: int = 100
    kernel_sizes: list[int] | tuple[int, ...] = (3, 4, 5)
    hidden_size: int = 128
    dropout: float | int = 0.1
    pad_token_id: int | None = 0
    vectors: str | None = None
    lowercase: bool | None = None
    oov_report: dict | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        self.kernel_sizes = list(self.kernel_sizes)
        super().__post_init__(**kwargs)

    def validate_choices(self) -> None:
        if self.pooling not in VECTOR_POOLINGS:
            raise ValueError(f"pooling={self.pooling!r}; valid: {', '.join(VECTOR_POOLINGS)}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder={self.encoder!r}; valid: {', '.join(ENCODERS)}")

    @property
    def feature_size(self) -> int:
        """Width of the pooled features the head sees."""
        return self.cnn_channels * len(self.kernel_sizes) if self.encoder == "cnn" else self.embedding_dim


def masked_pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Mean or max over the positions where ``mask`` is 1; a text with no tokens pools to zeros."""
    keep = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "mean":
        return (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
    filled = hidden.masked_fill(keep == 0, torch.finfo(hidden.dtype).min)
    pooled = filled.max(dim=1).values
    return torch.where(keep.sum(dim=1) > 0, pooled, torch.zeros_like(pooled))


class ConvEncoder(nn.Module):
    """Parallel 1-D convolutions over the word sequence, zero-padded to keep its length (any length works), ReLU."""

    def __init__(self, config: WordVectorsConfig):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(config.embedding_dim, config.cnn_channels, k) for k in config.kernel_sizes
        )

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = (hidden * mask.unsqueeze(-1).to(hidden.dtype)).transpose(1, 2)  # [batch, dim, length]
        outputs = []
        for conv in self.convs:
            k = conv.kernel_size[0]
            outputs.append(torch.relu(conv(nn.functional.pad(x, ((k - 1) // 2, k // 2)))))
        return torch.cat(outputs, dim=1).transpose(1, 2)


class WordVectorsPreTrainedModel(PreTrainedModel):
    config_class = WordVectorsConfig
    base_model_prefix = "word_vectors"
    main_input_name = "input_ids"

    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's defaults (Kaiming-uniform) suit a ReLU MLP/CNN; embeddings start small, padding row zero
        if isinstance(module, nn.Linear | nn.Conv1d):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                init.uniform_(module.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=0.1)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])


class WordVectorsModel(WordVectorsPreTrainedModel):
    """The encoder: word vectors (+ CNN) and pooling. ``pooler_output`` is the sentence feature."""

    def __init__(self, config: WordVectorsConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(
            config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id
        )
        self.encoder = ConvEncoder(config) if config.encoder == "cnn" else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> BaseModelOutputWithPooling:
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        hidden = self.embeddings(input_ids)
        if self.encoder is not None:
            hidden = self.encoder(hidden, attention_mask)
        pooled = masked_pool(hidden, attention_mask, self.config.pooling)
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)


class WordVectorsForSequenceClassification(WordVectorsPreTrainedModel):
    """Pooled word vectors -> dropout -> MLP (one hidden ReLU layer, or linear when ``hidden_size=0``)."""

    def __init__(self, config: WordVectorsConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.word_vectors = WordVectorsModel(config)
        if config.hidden_size > 0:
            self.classifier = nn.Sequential(
                nn.Dropout(config.dropout),
                nn.Linear(config.feature_size, config.hidden_size),
                nn.ReLU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden_size, config.num_labels),
            )
        else:
            self.classifier = nn.Sequential(
                nn.Dropout(config.dropout), nn.Linear(config.feature_size, config.num_labels)
            )
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.word_vectors.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.word_vectors.embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        features = self.word_vectors(input_ids, attention_mask=attention_mask)
        logits = self.classifier(features.pooler_output)
        loss = classification_loss(self.config, logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=None)


def classification_loss(config: PreTrainedConfig, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss transformers' sequence classifiers use for ``config.problem_type`` (inferred when unset)."""
    problem = config.problem_type
    if problem is None:
        if config.num_labels == 1:
            problem = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
    if problem == "regression":
        return nn.functional.mse_loss(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype))
    if problem == "multi_label_classification":
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    return nn.functional.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1))


def register_word_vectors() -> None:
    """Make ``AutoConfig``/``AutoModel``/``AutoModelForSequenceClassification`` (and so ``pipeline``) know the
    model type. Runs when this module is imported (by every hftl call that builds or loads such a model); a plain
    ``pipeline(model=FOLDER)`` needs ``hftl.register_auto_classes()`` first."""
    AutoConfig.register(MODEL_TYPE, WordVectorsConfig, exist_ok=True)
    AutoModel.register(WordVectorsConfig, WordVectorsModel, exist_ok=True)
    AutoModelForSequenceClassification.register(
        WordVectorsConfig, WordVectorsForSequenceClassification, exist_ok=True
    )


register_word_vectors()
