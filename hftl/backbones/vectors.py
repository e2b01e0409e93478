"""Word vectors: the embedding matrix is the only pretrained block (the stem); the CNN encoder (if any) and the MLP
classifier are new. There is no layer stack, so nothing is truncated and LoRA has nothing to adapt."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hftl.backbones.base import Backbone, register_backbone
from hftl.errors import ConfigError, ModelError
from hftl.settings import VECTORS_LORA_MESSAGE

if TYPE_CHECKING:  # torch is imported where it is used: listing the families (hftl tasks) needs none
    from torch import nn


LORA_MESSAGE = VECTORS_LORA_MESSAGE


@register_backbone
class WordVectorsBackbone(Backbone):
    family = "word-vectors"
    model_types = ("hftl-word-vectors",)
    stem_names = ("embeddings",)
    head_names = ("word_vectors.encoder", "classifier")
    # the classifier on top of the vectors is always new: it needs a from-scratch learning rate in every strategy

    def num_layers(self, config: Any) -> int:
        return 0

    def layers(self, model: nn.Module) -> list[str]:
        return []

    def set_num_layers(self, config: Any, keep: int) -> None:
        raise ModelError("word-vector models have no layer stack to truncate")

    def check_strategy(self, strategy: str) -> None:
        if strategy == "lora":
            raise ConfigError(LORA_MESSAGE)

    def plan_reasons(self, case: str, strategy: str, init: str) -> list[str]:
        vectors = "random vectors (--init scratch)" if init == "scratch" else "the pretrained word vectors"
        reasons = [
            f"word vectors: the embedding matrix holds {vectors}; the encoder and MLP classifier are new"
        ]
        if case == "small_different" and strategy == "head":
            reasons.append(
                "small_different: word vectors have no layer stack to cut (every dimension of a vector is as "
                "generic as another), so the whole matrix is kept frozen and only the new classifier is trained"
            )
        if strategy == "partial":
            reasons.append("--strategy partial: with no layer stack it equals head (frozen embeddings)")
        if strategy == "full":
            reasons.append(
                "the embeddings are fine-tuned with the classifier: the vectors of the training split's words move "
                "with the task"
            )
        elif init != "scratch":
            reasons.append(
                "the embeddings stay frozen, so words seen only at test time keep their neighbours"
            )
        return reasons

    def reset_head(self, model: nn.Module) -> None:
        """PyTorch's default init (Kaiming-uniform) for the new CNN and MLP: they sit on ReLUs."""
        from torch import nn

        for name in self.head(model):
            for module in model.get_submodule(name).modules():
                if isinstance(module, nn.Linear | nn.Conv1d):
                    module.reset_parameters()
