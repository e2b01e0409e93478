"""timm models in hftl: ``--model timm:NAME`` sources, timm-compatible image processors, and cut (truncated) timm
networks that survive ``save_pretrained``/``from_pretrained``.

Every timm model reaches hftl through transformers' timm wrapper (``TimmWrapperForImageClassification``, model type
``timm_wrapper``), so a ``timm/...`` Hub id or a saved folder goes the ordinary way; ``timm:NAME`` is a timm
architecture name (``timm:resnet18``, ``timm:efficientnet_lite0.ra_in1k``): its pretrained weights come from the
Hub repository timm names for it, or random weights with ``--init scratch`` (offline).

A network cut after its first N stages is saved as timm architecture ``hftl_truncated`` with
``model_args = {"base": ARCH, "keep": N, "base_args": {...}}``: hftl registers that timm entry point (it builds the
base architecture and cuts it the same way) before building or loading such a model. With plain transformers, call
``hftl.timm_source.register_truncated()`` first.

timm is optional (``pip install "hftl[timm]"``, which needs a torchvision matching torch); nothing here imports it
until a timm model is used.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from hftl.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from hftl.config import RunConfig
    from hftl.tasks import Task

TIMM_PREFIX = "timm:"
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
def is_timm_name(name: str | None) -> bool:
    return bool(name) and str(name).startswith(TIMM_PREFIX)


def timm_name(name: str) -> str:
    """``timm:resnet18.a1_in1k`` -> ``resnet18.a1_in1k``; fails for names timm does not know."""
    arch = str(name)[len(TIMM_PREFIX) :]
    if not arch:
        raise ConfigError(
            "--model timm: needs a timm architecture, e.g. timm:resnet18 or timm:efficientnet_lite0"
        )
    timm = require_timm()
    base = arch.split(".", 1)[0]
    if not timm.is_model(base):
        close = timm.list_models(f"*{base[:6]}*")[:8]
        raise ModelError(
            f"timm does not know the architecture {base!r}; similar names: {', '.join(close) or 'none'}"
        )
    return arch


def hub_id_of(name: str) -> str:
    """The Hub repository timm loads ``NAME`` (optionally ``NAME.TAG``) pretrained weights from."""
    from timm.models import get_pretrained_cfg

    arch = timm_name(name)
    base, _, tag = arch.partition(".")
    cfg = get_pretrained_cfg(arch if tag else base)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        raise ModelError(
            f"timm has no Hub weights for {arch!r}; use --init scratch (random weights) or a local model folder"
        )
    if hub_id == "timm/" or hub_id.endswith("/"):
        hub_id = f"{hub_id}{base}.{cfg.tag}" if getattr(cfg, "tag", None) else f"{hub_id}{base}"
    return hub_id


def timm_config(name: str, labels: Sequence[str] | None = None) -> Any:
    """A ``TimmWrapperConfig`` for a timm architecture name (random weights), sized for ``labels``."""
    from transformers import TimmWrapperConfig

    from hftl.models import label_kwargs

    arch = timm_name(name).split(".", 1)[0]
    return TimmWrapperConfig(architecture=arch, **(label_kwargs(list(labels)) if labels else {}))


def build_model(task: Task, config: RunConfig, labels: list[str]) -> Any:
    """The timm classifier for ``timm:NAME``: random weights (``--init scratch``) or the Hub weights timm names."""
    from transformers import TimmWrapperForImageClassification

    check_image_task(task)
    if config.init == "scratch":
        return TimmWrapperForImageClassification(timm_config(config.model, labels))
    from hftl.models import build_model as build_hub_model

    hub_config = copy.copy(config)
    hub_config.model = hub_id_of(config.model)
    return build_hub_model(task, hub_config, labels)


def build_meta_model(task: Task, config: RunConfig, labels: list[str] | None = None) -> Any:
    from transformers import TimmWrapperForImageClassification

    check_image_task(task)
    model_config = timm_config(config.model, labels or ["0", "1"])
    with torch.device("meta"):
        return TimmWrapperForImageClassification(model_config)


def load_processor(config: RunConfig) -> Any:
    """The image processor matching timm's evaluation transform for ``timm:NAME`` (no download needed)."""
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    arch = timm_name(config.model)
    cfg = get_pretrained_cfg(arch) or get_pretrained_cfg(arch.split(".", 1)[0])
    data_config = resolve_data_config(
        {}, pretrained_cfg=cfg.to_dict() if cfg is not None else {}, verbose=False
    )
    return processor_from_data_config(data_config)


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


def check_image_task(task: Task) -> None:
    if task.modality != "image":
        raise ConfigError(f"--model timm:... needs an image task; task {task.name!r} is {task.modality}")


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
    from hftl.backbones.timm import structure_of

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


__all__ = [
    "TIMM_PREFIX",
    "TRUNCATED",
    "build_meta_model",
    "build_model",
    "cut_timm_model",
    "hftl_truncated",
    "hub_id_of",
    "imagenet_labels",
    "is_timm_name",
    "load_processor",
    "meta_timm_model",
    "prepare_config",
    "processor_for",
    "processor_from_data_config",
    "register_truncated",
    "require_timm",
    "standard_processor",
    "timm_available",
    "truncated_args",
]
