"""The Backbone adapter interface and its registry.

Every family answers the same small questions (timm's ``get_classifier`` / ``prune_intermediate_layers`` idea):
where the stem is, which ordered layers follow it, what sits between the last layer and the head (the neck), what
the head is, how to keep only the first N layers, and which modules LoRA adapts. The transfer plan is written in
those terms, so head-only training, truncation, partial freezing and LoRA work the same way for every family.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from hftl.errors import ModelError

if TYPE_CHECKING:  # torch is imported where it is used: listing the families (hftl tasks) needs none
    import torch
    from torch import nn


@dataclass(frozen=True)
class Cut:
    """Where the frozen prefix of a network ends (timm's ``forward_features``/``forward_head`` split).

    The prefix is the stem plus the first ``layers`` layers; with ``head_input`` it also runs through the neck, so
    its output is exactly what the head receives. ``first_token`` means only the first token of the layer output is
    needed by the rest of the network (a [CLS]-pooled head after no further layers), so only that token is cached.
    """

    layers: int
    head_input: bool = False
    first_token: bool = False

    def describe(self, layer_word: str = "layer") -> str:
        if self.head_input:
            return "head inputs (stem, every kept layer and the neck frozen)"
        token = ", first token only" if self.first_token else ""
        return f"outputs of {layer_word} {self.layers - 1} (stem + {self.layers} {layer_word}s frozen{token})"


class _PrefixDone(Exception):
    """Raised by a hook once the cut is reached: the rest of the forward pass is not needed."""


class Backbone:
    """Structure of one architecture family, expressed as module paths inside the task model."""

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    layer_word: ClassVar[str] = "layer"
    # candidate paths (relative to the base model) of the ordered layer stack; the first that exists is used
    layer_paths: ClassVar[tuple[str, ...]] = ()
    stem_names: ClassVar[tuple[str, ...]] = ("embeddings",)
    neck_names: ClassVar[tuple[str, ...]] = ()
    head_names: ClassVar[tuple[str, ...]] = ("classifier",)
    # LoRA targets: module-name suffixes tried in order (the first group present wins), or a regex
    lora_suffixes: ClassVar[tuple[tuple[str, ...], ...]] = ()
    lora_pattern: ClassVar[str | None] = None
    # frozen-feature cache (hftl.training.feature_cache): task-model classes whose forward pieces below are exact
    cache_classes: ClassVar[tuple[str, ...]] = ()
    # convolutional families run faster in channels_last memory format on GPUs
    convolutional: ClassVar[bool] = False
    # checkpoint classes that only run inference -> the family's class that fine-tunes the same body
    inference_only_classes: ClassVar[dict[str, str]] = {}

    # --- structure -------------------------------------------------------------------------------------------
    def prefix(self, model: nn.Module) -> str:
        return getattr(model, "base_model_prefix", "") or ""

    def _qualify(self, model: nn.Module, name: str) -> str:
        prefix = self.prefix(model)
        return f"{prefix}.{name}" if prefix else name

    def stem(self, model: nn.Module) -> list[str]:
        """Module paths of the stem (patch/token embeddings, conv stem): always kept."""
        return [path for path in (self._qualify(model, n) for n in self.stem_names) if _has(model, path)]

    def layers_path(self, model: nn.Module) -> str:
        """Path of the ModuleList/Sequential holding the ordered layers (encoder layers, ResNet stages)."""
        for candidate in self.layer_paths:
            path = self._qualify(model, candidate)
            if _has(model, path):
                return path
        raise ModelError(
            f"{self.family}: no layer stack found at any of {self.layer_paths} in {type(model).__name__}"
        )

    def layers(self, model: nn.Module) -> list[str]:
        path = self.layers_path(model)
        return [f"{path}.{i}" for i in range(len(model.get_submodule(path)))]

    def neck(self, model: nn.Module) -> list[str]:
        """Modules between the last layer and the head that are tied to the last layer's output (final norm, pooler)."""
        return [
            path for path in (self._qualify(model, n) for n in self.neck_names) if _has_params(model, path)
        ]

    def head(self, model: nn.Module) -> list[str]:
        """Modules of the task head (replaced by a new one)."""
        return [name for name in self.head_names if _has(model, name)]

    def num_layers(self, config: Any) -> int:
        raise NotImplementedError

    def default_keep_layers(self, num_layers: int) -> int:
        """How many early layers small_different keeps when --keep-layers is not given: the first half."""
        return max(1, num_layers // 2)

    # --- surgery ---------------------------------------------------------------------------------------------
    def truncate(self, model: nn.Module, keep: int) -> None:
        """Keep only the first ``keep`` layers, and record it in the config so save/load rebuilds the cut model."""
        path = self.layers_path(model)
        stack = model.get_submodule(path)
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, attr, type(stack)(list(stack)[:keep]))
        self.set_num_layers(model.config, keep)

    def set_num_layers(self, config: Any, keep: int) -> None:
        raise NotImplementedError

    def neck_removed_by_cut(self, model: nn.Module, keep: int) -> list[str]:
        """Neck modules that truncation to ``keep`` layers removes because they were sized for the last layer's
        output (timm's EfficientNet ``conv_head``); by default none."""
        return []

    def reset_head(self, model: nn.Module) -> None:
        """Re-initialise the head so that it is new even when the checkpoint had one of the right size."""
        from torch import nn

        std = getattr(model.config, "initializer_range", 0.02)
        for name in self.head(model):
            for module in model.get_submodule(name).modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=std)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
                elif isinstance(module, nn.LayerNorm | nn.BatchNorm1d | nn.BatchNorm2d):
                    module.reset_parameters()

    def lora_targets(self, model: nn.Module, within: list[str]) -> list[str]:
        """Full names of the modules LoRA adapts, limited to the blocks ``within``."""
        names = [name for name, _ in model.named_modules() if any(name.startswith(b + ".") for b in within)]
        if self.lora_pattern is not None:
            pattern = re.compile(self.lora_pattern)
            return [name for name in names if pattern.fullmatch(name)]
        for group in self.lora_suffixes:
            found = [name for name in names if name.rsplit(".", 1)[-1] in group]
            if found:
                return found
        return []

    def check_strategy(self, strategy: str) -> None:
        """Raise ``ConfigError`` for a strategy that is meaningless for this family (by default all apply)."""

    def plan_reasons(self, case: str, strategy: str, init: str) -> list[str]:
        """Family-specific lines for the plan's "why" (by default none)."""
        return []

    def describe(self) -> str:
        return f"{self.family} ({', '.join(self.model_types)})"

    # --- frozen prefix / trained suffix (the feature cache) --------------------------------------------------
    def cache_support(self, model: nn.Module, cut: Cut) -> str | None:
        """Why features at ``cut`` cannot be cached for ``model`` (None when they can)."""
        name = getattr(
            type(model), "stock_class", type(model)
        ).__name__  # a pooled classifier: its stock class
        if name not in self.cache_classes:
            supported = ", ".join(self.cache_classes) or "none"
            return f"{self.family} has no feature-cache forward pieces for {name} (supported: {supported})"
        return None

    def first_token_pools(self, model: nn.Module) -> bool:
        """True when the neck and head read only the first token of the last layer's output ([CLS] pooling)."""
        pooling = own_pooling(model)
        if pooling is None or pooling == "pooler":
            return self.stock_first_token_pools(model)
        return pooling == "cls"

    def stock_first_token_pools(self, model: nn.Module) -> bool:
        """The same for the family's own head (hftl's pooled heads say it with their pooling)."""
        return False

    def base_outputs(self, model: nn.Module, hidden: torch.Tensor) -> Any:
        """The base model's outputs (``last_hidden_state``, ``pooler_output``) from its last layer's output: what
        a pooled head reads. By default the layer output itself, with no pooler."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(last_hidden_state=hidden)

    def forward_prefix(self, model: nn.Module, batch: dict[str, Any], cut: Cut) -> dict[str, torch.Tensor]:
        """Run the frozen prefix on a model-input batch; returns ``features`` (and ``attention_mask`` when the
        features are token sequences with padding). The model's own forward runs and stops at the cut, so the
        features are exactly what the rest of the network receives in an uncached run."""
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        captured: dict[str, torch.Tensor] = {}
        if cut.head_input:
            target = model.get_submodule(self.head(model)[0])

            def before_head(module: nn.Module, args: tuple, kwargs: dict) -> None:
                captured["x"] = args[0] if args else next(iter(kwargs.values()))
                raise _PrefixDone

            handle = target.register_forward_pre_hook(before_head, with_kwargs=True)
        else:
            target = model.get_submodule(self.layers(model)[cut.layers - 1])

            def after_layer(module: nn.Module, args: tuple, output: Any) -> None:
                captured["x"] = output[0] if isinstance(output, tuple) else output
                raise _PrefixDone

            handle = target.register_forward_hook(after_layer)
        try:
            model(**inputs)
        except _PrefixDone:
            pass
        finally:
            handle.remove()
        if "x" not in captured:
            raise ModelError(f"{self.family}: the forward pass never reached the cut {cut}")
        features = captured["x"]
        if cut.first_token or (cut.head_input and features.ndim == 3 and self.first_token_pools(model)):
            return {"features": features[:, :1]}
        if features.ndim == 3 and "attention_mask" in inputs and not cut.head_input:
            return {"features": features, "attention_mask": inputs["attention_mask"]}
        return {"features": features}

    def forward_suffix(self, model: nn.Module, features: dict[str, torch.Tensor], cut: Cut) -> torch.Tensor:
        """Logits from cached features: the layers after the cut, the neck and the head, as the model runs them."""
        hidden = features["features"]
        pooled = own_pooling(model) is not None
        if not cut.head_input:
            mask = features.get("attention_mask")
            hidden = self.run_layers(model, hidden, cut.layers, mask)
            if pooled:
                hidden = model.pool_outputs(self.base_outputs(model, hidden), mask)
            else:
                hidden = self.head_input(model, hidden)
        if pooled:
            return model.classifier(model.dropout(hidden))
        return self.forward_head(model, hidden)

    def run_layers(
        self, model: nn.Module, hidden: torch.Tensor, start: int, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The kept layers from ``start`` on (transformer layers: ``layer(hidden, mask)``)."""
        from transformers.masking_utils import create_bidirectional_mask

        stack = model.get_submodule(self.layers_path(model))
        if len(stack) > start:
            mask = create_bidirectional_mask(
                config=model.config, inputs_embeds=hidden, attention_mask=attention_mask
            )
            for layer in list(stack)[start:]:
                output = layer(hidden, mask)
                hidden = output[0] if isinstance(output, tuple) else output
        return hidden

    def head_input(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """What the neck makes of the last layer's output: the head's input."""
        raise NotImplementedError(f"{self.family} does not define head_input")

    def forward_head(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The head on its input (the head modules in order; families with glue between them override this)."""
        for name in self.head(model):
            x = model.get_submodule(name)(x)
        return x


def own_pooling(model: nn.Module) -> str | None:
    """The pooling of an hftl pooled classifier (hftl.modeling.pooled); None for a family's stock head."""
    return getattr(getattr(model, "config", None), "classifier_pooling", None)


def block_module(model: nn.Module, name: str) -> nn.Module | None:
    """The module a plan block names, or None when the block is a single parameter (a timm ViT's ``cls_token``)."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        model.get_parameter(name)  # neither a module nor a parameter: let that error name it
        return None


def block_tensors(model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The state (parameters and buffers) of a plan block, module or single parameter, by name inside it."""
    module = block_module(model, name)
    return module.state_dict() if module is not None else {"": model.get_parameter(name)}


def _has(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def _has_params(model: nn.Module, path: str) -> bool:
    return _has(model, path) and any(True for _ in model.get_submodule(path).parameters())


_FAMILIES: dict[str, type[Backbone]] = {}


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    """Class decorator: make a family known for each of its ``model_types``."""
    if not getattr(cls, "family", None) or not getattr(cls, "model_types", None):
        raise TypeError(f"{cls.__name__} must define `family` and `model_types`")
    for model_type in cls.model_types:
        if model_type in _FAMILIES and _FAMILIES[model_type] is not cls:
            raise ValueError(
                f"model_type {model_type!r} is already handled by {_FAMILIES[model_type].__name__}"
            )
        _FAMILIES[model_type] = cls
    return cls


def available_backbones() -> dict[str, tuple[str, ...]]:
    """Family name -> the model types it handles."""
    families: dict[str, tuple[str, ...]] = {}
    for cls in _FAMILIES.values():
        families[cls.family] = cls.model_types
    return families


def backbone_for(config: Any) -> Backbone:
    """The family adapter for a transformers config (by ``model_type``), or a clear error naming what works."""
    # hftl's pooled classifiers (hftl.modeling.pooled) keep their family's modules under a model type of their own
    model_type = getattr(config, "base_model_type", None) or getattr(config, "model_type", None)
    if model_type not in _FAMILIES:
        supported = "; ".join(
            f"{family}: {', '.join(types)}" for family, types in available_backbones().items()
        )
        raise ModelError(
            f"architecture {model_type!r} is not supported by hftl's transfer plans. Supported model types "
            f"({supported}). Add a family with @hftl.register_backbone."
        )
    return _FAMILIES[model_type]()


def trainable_architecture(config: Any) -> None:
    """Point a config saved from an inference-only class (a distilled DeiT's two heads, which need the teacher to
    train) at its family's fine-tuning class, in place: the Auto classes build what the config's ``architectures``
    names, and the new head replaces the old ones either way."""
    family = _FAMILIES.get(getattr(config, "model_type", None))
    replaced = family.inference_only_classes if family else {}
    names = getattr(config, "architectures", None) or []
    if any(name in replaced for name in names):
        config.architectures = [replaced.get(name, name) for name in names]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = ["Backbone", "Cut", "register_backbone", "backbone_for", "available_backbones", "count_parameters"]
