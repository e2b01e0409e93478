"""The timm source: ``--model timm:NAME`` (timm's networks and cut timm networks live in ``hftl.modeling.timm_nets``).

Every timm model reaches hftl through transformers' timm wrapper (``TimmWrapperForImageClassification``, model type
``timm_wrapper``), so a ``timm/...`` Hub id or a saved folder goes the ordinary way; ``timm:NAME`` is a timm
architecture name (``timm:resnet18``, ``timm:efficientnet_lite0.ra_in1k``): its pretrained weights come from the
Hub repository timm names for it, or random weights with ``--init scratch`` (offline).

A network cut after its first N stages is saved as timm architecture ``hftl_truncated``; with plain transformers,
call ``hftl.modeling.timm_nets.register_truncated()`` before loading one.

timm is optional (``pip install "hftl[timm]"``, which needs a torchvision matching torch); nothing here imports it
until a timm model is used.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from hftl.errors import ConfigError, ModelError
from hftl.modeling.timm_nets import processor_from_data_config, require_timm
from hftl.sources.hub import SOURCE as HUB_SOURCE
from hftl.sources.pooling import refuse_custom_head
from hftl.sources.registry import label_kwargs, register_source

if TYPE_CHECKING:
    from hftl.config import RunConfig
    from hftl.tasks import Task

TIMM_PREFIX = "timm:"


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


def timm_config(name: str, labels: Sequence[str] | None = None, problem_type: str | None = None) -> Any:
    """A ``TimmWrapperConfig`` for a timm architecture name (random weights), sized for ``labels``."""
    from transformers import TimmWrapperConfig

    arch = timm_name(name).split(".", 1)[0]
    fields = label_kwargs(list(labels), problem_type) if labels else {}
    return TimmWrapperConfig(architecture=arch, **fields)


class TimmSource:
    """``timm:NAME``: a timm architecture, pretrained from the Hub repository timm names for it, or random."""

    name = "timm"

    def matches(self, model: str) -> bool:
        return is_timm_name(model)

    def check(self, model: str) -> str:
        timm_name(model)  # timm installed and the architecture known
        return model

    def build_model(self, task: Task, config: RunConfig, labels: list[str], processor: Any = None) -> Any:
        from transformers import TimmWrapperForImageClassification

        check_image_task(task)
        refuse_custom_head(config, "timm", "timm's global pool and classifier, set by the architecture")
        if config.init == "scratch":
            return TimmWrapperForImageClassification(timm_config(config.model, labels, config.problem_type))
        hub_config = copy.copy(config)
        hub_config.model = hub_id_of(config.model)
        return HUB_SOURCE.build_model(task, hub_config, labels)

    def build_meta_model(self, task: Task, config: RunConfig, labels: list[str] | None = None) -> Any:
        from transformers import TimmWrapperForImageClassification

        check_image_task(task)
        refuse_custom_head(config, "timm", "timm's global pool and classifier, set by the architecture")
        model_config = timm_config(config.model, labels or ["0", "1"])
        with torch.device("meta"):
            return TimmWrapperForImageClassification(model_config)

    def load_processor(self, task: Task, config: RunConfig, splits: Any = None) -> Any:
        """The image processor matching timm's evaluation transform (no download needed)."""
        from timm.data import resolve_data_config
        from timm.models import get_pretrained_cfg

        arch = timm_name(config.model)
        cfg = get_pretrained_cfg(arch) or get_pretrained_cfg(arch.split(".", 1)[0])
        data_config = resolve_data_config(
            {}, pretrained_cfg=cfg.to_dict() if cfg is not None else {}, verbose=False
        )
        return processor_from_data_config(data_config)


def check_image_task(task: Task) -> None:
    if task.modality != "image":
        raise ConfigError(f"--model timm:... needs an image task; task {task.name!r} is {task.modality}")


SOURCE = register_source(TimmSource())
