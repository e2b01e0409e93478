"""timm networks as hftl uses them: their structure (stem, stages, neck, head) and cutting one after N stages.

The structure is read from the timm network itself, the way timm's ``features_only`` does:

- **stages** ("layers" of the plan): the ``feature_info`` taps of the most common kind (``layer1..4``,
  ``stages.N``, ``blocks.N``, ``s1..s4``), or every ``blocks.N`` stage for EfficientNet/MobileNet (cut with
  ``extra_blocks``); taps before them (a stem output such as ResNet's ``act1``) belong to the stem, taps after them
  (``final_conv``) to the neck;
- **head**: the module ``get_classifier()`` returns; **stem**: every weight before the first stage (including
  direct parameters such as a ViT's ``cls_token``/``pos_embed``); **neck**: every weight between the last stage and
  the head (EfficientNet's ``conv_head``/``bn2``, a ViT's final ``norm``, ConvNeXt's ``head.norm``).

A network cut after its first N stages is saved as timm architecture ``hftl_truncated`` with
``model_args = {"base": ARCH, "keep": N, "base_args": {...}}``: ``register_truncated`` makes that a timm entry
point (it builds the base architecture and cuts it the same way), so cut models load again. timm is optional and
imported only when a timm model is met.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hftl.errors import ConfigError, ModelError

if TYPE_CHECKING:  # torch is imported where it is used: listing the families (hftl tasks) needs none
    from torch import nn


TRUNCATED = "hftl_truncated"
TIMM_MODEL_TYPE = "timm_wrapper"
_INTERPOLATION = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}


def require_timm() -> Any:
    """Import timm, or say how to install it (it also needs a torchvision built for the installed torch)."""
    try:
        import timm
    except (ImportError, RuntimeError) as error:
        raise ModelError(
            f"timm models need timm ({type(error).__name__}: {error}); install it with "
            '`pip install "hftl[timm]"` and a torchvision that matches your torch '
            "(e.g. torch==2.14.1 with torchvision==0.29.1)"
        ) from error
    return timm


def timm_available() -> bool:
    try:
        require_timm()
    except ModelError:
        return False
    return True


# --- timm:NAME sources -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimmStructure:
    """Paths (relative to the timm network) of its parts; stem/neck entries may be parameter paths."""

    stem: tuple[str, ...]
    layers: tuple[str, ...]
    neck: tuple[str, ...]
    head: tuple[str, ...]
    cut_offset: int  # prune_intermediate_layers index of stage k (1-based) is cut_offset + k - 1
    extra_blocks: bool  # EfficientNet/MobileNet: index every blocks.N (stem is index 0)


def structure_of(net: nn.Module) -> TimmStructure:
    """Stem, stages, neck and head of a timm network (see the module docstring for the rules)."""
    layers, offset, extra = _stages(net)
    layers = _drop_cut_stages(net, layers)
    classifier = net.get_classifier() if hasattr(net, "get_classifier") else None
    head = [name for name, module in net.named_modules() if module is classifier and name]
    if not head:
        raise ModelError(f"timm {type(net).__name__}: no classifier module found (get_classifier())")
    groups: dict[str, list[str]] = {"stem": [], "neck": []}
    seen_layer = seen_last_layer = False
    for name, _ in net.named_parameters():
        owner = next((layer for layer in layers if name.startswith(layer + ".")), None)
        if owner is not None:
            seen_layer = True
            seen_last_layer = seen_last_layer or owner == layers[-1]
        elif name.startswith(head[0] + "."):
            continue
        elif not seen_layer:
            groups["stem"].append(name)
        elif not seen_last_layer:
            raise ModelError(
                f"timm {type(net).__name__}: weights {name!r} sit between stages; hftl cannot split this "
                "architecture into stem / stages / head (use a model whose feature_info names its stages)"
            )
        else:
            groups["neck"].append(name)
    return TimmStructure(
        stem=tuple(_owners(net, groups["stem"])),
        layers=tuple(layers),
        neck=tuple(_owners(net, groups["neck"])),
        head=tuple(head),
        cut_offset=offset,
        extra_blocks=extra,
    )


def _stages(net: nn.Module) -> tuple[list[str], int, bool]:
    from torch import nn

    prune = getattr(net, "prune_intermediate_layers", None)
    taps = [info["module"] for info in getattr(net, "feature_info", None) or [] if isinstance(info, dict)]
    if prune is None or not taps:
        raise ModelError(
            f"timm {type(net).__name__} does not report its stages (feature_info) or cannot be cut "
            "(prune_intermediate_layers); hftl needs both (most timm >= 1.0 models have them)"
        )
    blocks = getattr(net, "blocks", None)
    if "extra_blocks" in inspect.signature(prune).parameters and isinstance(blocks, nn.Sequential):
        return [f"blocks.{i}" for i in range(len(blocks))], 1, True

    kinds = [re.sub(r"\d+", "", tap) for tap in taps]
    stage_kind = max(kinds, key=kinds.count)  # layer1..4, stages.N, blocks.N, s1..s4
    first = kinds.index(stage_kind)
    last = len(kinds) - 1 - kinds[::-1].index(stage_kind)
    # taps before the stages (act1, stem) are stem outputs, taps after them (final_conv) feed the head
    return taps[first : last + 1], first, False


def _drop_cut_stages(net: nn.Module, layers: list[str]) -> list[str]:
    """A cut network keeps its feature_info; its removed trailing stages are gone or empty."""
    kept = list(layers)
    while kept and not _has_params(net, kept[-1]):
        kept.pop()
    if not kept:
        raise ModelError(f"timm {type(net).__name__}: no stage holds weights")
    return kept


def _has_params(net: nn.Module, path: str) -> bool:
    try:
        return any(True for _ in net.get_submodule(path).parameters())
    except AttributeError:
        return False


def _owners(net: nn.Module, names: list[str]) -> list[str]:
    """The fewest module (or parameter) paths that own exactly ``names``: the shallowest module whose weights all
    belong to the group, else the parameter itself (a ViT's ``cls_token``)."""
    group, owners = set(names), []
    all_names = [name for name, _ in net.named_parameters()]
    for name in names:
        parts = name.split(".")
        owner = name
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth])
            inside = [n for n in all_names if n.startswith(prefix + ".")]
            if inside and all(n in group for n in inside):
                owner = prefix
                break
        if owner not in owners:
            owners.append(owner)
    return owners


# --- cut networks ------------------------------------------------------------------------------------------------
def hftl_truncated(
    pretrained: bool = False,
    *,
    base: str,
    keep: int,
    base_args: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """timm entry point: ``base`` built with ``base_args``, kept up to its ``keep``-th stage, new classifier."""
    timm = require_timm()
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    num_classes = kwargs.pop("num_classes", 1000)
    model = timm.create_model(base, pretrained=False, num_classes=num_classes, **(base_args or {}), **kwargs)
    cut_timm_model(model, keep, num_classes)
    return model


def register_truncated() -> None:
    """Make ``hftl_truncated`` a timm architecture (idempotent), so cut models saved by hftl load again."""
    timm = require_timm()
    if not timm.is_model(TRUNCATED):
        from timm.models import register_model

        register_model(hftl_truncated)


def cut_timm_model(model: Any, keep: int, num_classes: int) -> None:
    """Keep the stem and the first ``keep`` stages of a timm model, with timm's own ``prune_intermediate_layers``
    (which also drops what was sized for the last stage, e.g. EfficientNet's ``conv_head``), then a new classifier
    sized for the kept features. Checks that exactly the first ``keep`` stages still hold weights."""
    structure = structure_of(model)
    pool = _pool_type(model)  # timm's pruning may drop the pooling with the head; the new head gets it back
    if not 1 <= keep <= len(structure.layers):
        raise ConfigError(f"keep={keep} is out of range: this timm model has {len(structure.layers)} stages")
    if structure.extra_blocks:
        model.prune_intermediate_layers(indices=[keep], prune_head=False, extra_blocks=True)
    else:
        model.prune_intermediate_layers(indices=[structure.cut_offset + keep - 1], prune_head=False)
    if pool is None:
        model.reset_classifier(num_classes)
    else:
        model.reset_classifier(num_classes, pool)
    kept = [path for path in structure.layers if _param_count(model, path)]
    if kept != list(structure.layers[:keep]):
        raise ModelError(
            f"cutting {type(model).__name__} after stage {keep} kept {kept}, not {list(structure.layers[:keep])}: "
            "this timm architecture cannot be truncated by hftl; use --strategy partial instead"
        )


def _pool_type(model: Any) -> str | None:
    pool = getattr(model, "global_pool", None)
    if pool is None:
        pool = getattr(getattr(model, "head", None), "global_pool", None)
    if isinstance(pool, str) or pool is None:
        return pool
    return getattr(pool, "pool_type", None)


def truncated_args(config: Any, keep: int) -> dict[str, Any]:
    """``model_args`` of the ``hftl_truncated`` architecture for a (possibly already cut) timm config."""
    args = dict(config.model_args or {})
    if config.architecture == TRUNCATED:
        return {**args, "keep": keep}
    return {"base": config.architecture, "keep": keep, "base_args": args}


@functools.lru_cache(maxsize=32)
def _meta_model(architecture: str, model_args_json: str) -> Any:
    import torch

    timm = require_timm()
    if architecture == TRUNCATED:
        register_truncated()
    with torch.device("meta"):
        return timm.create_model(architecture, pretrained=False, num_classes=2, **json.loads(model_args_json))


def meta_timm_model(config: Any) -> Any:
    """The timm network a ``TimmWrapperConfig`` describes, on the meta device (shapes only; cached)."""
    return _meta_model(config.architecture, json.dumps(config.model_args or {}, sort_keys=True))


def _param_count(model: Any, path: str) -> int:
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return 0
    return sum(p.numel() for p in module.parameters())


def prepare_config(model_config: Any) -> Any:
    """Make a loaded ``TimmWrapperConfig`` ready for hftl: register the ``hftl_truncated`` timm architecture before
    a model saved as one is built, and drop the stale ``label_names`` copy (``from_dict`` already turned it into
    ``id2label``; left in place, ``to_dict`` would save the source's labels instead of the new ones)."""
    if getattr(model_config, "model_type", None) != TIMM_MODEL_TYPE:
        return model_config
    if model_config.architecture == TRUNCATED:
        register_truncated()
    if "label_names" in vars(model_config):
        del model_config.label_names
    return model_config


# --- image processors --------------------------------------------------------------------------------------------
def processor_for(
    input_size: int,
    crop_pct: float,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
) -> Any:
    """timm's evaluation transform (resize the short side to ``input_size / crop_pct``, centre crop, normalise) as
    a transformers image processor, so hftl's preprocessing and ``pipeline`` need neither timm nor torchvision."""
    from transformers import ConvNextImageProcessor

    return ConvNextImageProcessor(
        size={"shortest_edge": int(input_size)},
        crop_pct=float(crop_pct),
        resample=_INTERPOLATION.get(interpolation, 3),
        image_mean=list(mean),
        image_std=list(std),
    )


def processor_from_data_config(data_config: dict[str, Any]) -> Any:
    """A transformers image processor from a timm data config (``input_size``, ``crop_pct``, ``mean``, ``std``)."""
    size = data_config.get("input_size", (3, 224, 224))
    return processor_for(
        input_size=min(size[-2:]),
        crop_pct=data_config.get("crop_pct") or 0.875,
        mean=data_config.get("mean", (0.485, 0.456, 0.406)),
        std=data_config.get("std", (0.229, 0.224, 0.225)),
        interpolation=data_config.get("interpolation", "bicubic"),
    )


def standard_processor(processor: Any) -> Any:
    """transformers' ``TimmWrapperImageProcessor`` (what a ``timm/...`` Hub id gives) takes no rescale/normalise
    switches; hftl decodes images once and normalises per batch, so it uses the equivalent standard processor."""
    if type(processor).__name__ != "TimmWrapperImageProcessor":
        return processor
    return processor_from_data_config(dict(processor.data_config))


def imagenet_labels() -> list[str]:
    """The 1,000 ImageNet-1k class descriptions, in class-index order (from timm, offline)."""
    require_timm()
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(info.num_classes())]
