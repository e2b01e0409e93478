"""Which pooling and head a run's classifier gets: ``--pooling``/``--head``, with ``auto`` read from the model.

A sentence-transformers model says how it was trained to be read: ``modules.json`` names its Pooling module, whose
``config.json`` sets ``pooling_mode_mean_tokens`` (all-MiniLM-L6-v2, most of them), ``_cls_token`` or
``_max_tokens``. Its [CLS] pooler was never trained, which is why a stock head on it stays near chance
(docs/calibration.md). Other models keep their family's own head (``pooler``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hftl.errors import ConfigError

# sentence-transformers pooling modes -> hftl poolings (weighted/sqrt-length means are means too)
_MODES = (
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean"),
    ("pooling_mode_weightedmean_tokens", "mean"),
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_max_tokens", "max"),
)
_POOLING_MODULE = "sentence_transformers.models.Pooling"
_MAX_JSON_BYTES = 1 << 20


def _read_json(folder: Path, relative: str) -> Any | None:
    """A small JSON file inside ``folder`` (never one a link or ``..`` leads outside), or None."""
    path = (folder / relative).resolve()
    if (
        not path.is_relative_to(folder.resolve())
        or not path.is_file()
        or path.stat().st_size > _MAX_JSON_BYTES
    ):
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _hub_file(repo: str, filename: str, revision: str | None) -> Path | None:
    """A file of a Hub repo from the local cache or the Hub; None when it is absent or unreachable."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, filename, revision=revision))
    except Exception:  # absent file, offline, gated: the model simply declares nothing
        return None


def _model_json(model: str, relative: str, revision: str | None) -> Any | None:
    """A small JSON file of a model: inside its local folder, or from the Hub (cache first)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return _read_json(folder, relative)
    found = _hub_file(model, relative, revision)
    return _read_json(found.parent, found.name) if found else None


def declared_pooling(model: str, revision: str | None = None) -> str | None:
    """The pooling a sentence-transformers model declares, or None for any other model."""
    modules = _model_json(model, "modules.json", revision)
    if not isinstance(modules, list):
        return None
    for module in modules:
        if isinstance(module, dict) and module.get("type") == _POOLING_MODULE:
            path = f"{str(module.get('path', '')).strip('/')}/config.json".lstrip("/")
            settings = _model_json(model, path, revision)
            if isinstance(settings, dict):
                for key, pooling in _MODES:
                    if settings.get(key):
                        return pooling
    return None


def resolve_pooling(
    setting: str, model: str, revision: str | None, current: str | None = None, fallback: str = "pooler"
) -> str:
    """The pooling a run uses: an explicit ``setting``; for ``auto``, a saved hftl model's own (``current``), a
    sentence-transformers model's declared one, else ``fallback`` (the family's ``pooler``; ``mean`` for
    ``--strategy contrastive``, as sentence-transformers pools a plain model)."""
    if setting != "auto":
        return setting
    return current or declared_pooling(model, revision) or fallback


def refuse_custom_head(config: Any, family: str, how: str) -> None:
    """Families whose head hftl does not rebuild take only the defaults."""
    if config.pooling not in ("auto", "pooler") or config.head not in ("auto", "linear"):
        raise ConfigError(
            f"--pooling {config.pooling} / --head {config.head}: {family} models keep their own head ({how}); "
            "leave --pooling and --head at auto"
        )


def auto_head(current: Any) -> str:
    """``--head auto``: a saved hftl model's own, else linear (an MLP on a cut CNN was measured and is not the
    default: hftl.transfer.defaults says why)."""
    return current.classifier_head if current is not None else "linear"


def hub_head(config: Any, model_config: Any) -> Any:
    """``model_config`` as hftl's pooled classifier when ``--pooling``/``--head`` ask for anything but the family's
    own head; unchanged otherwise, so default runs save stock transformers models."""
    from hftl.backbones import backbone_for
    from hftl.modeling.pooled import is_pooled, pooled_config

    current = model_config if is_pooled(model_config) else None
    pooling = resolve_pooling(
        config.pooling,
        config.model,
        config.revision,
        getattr(current, "classifier_pooling", None),
        fallback="mean" if config.strategy == "contrastive" else "pooler",
    )
    backbone = backbone_for(model_config)
    head = config.head if config.head != "auto" else auto_head(current)
    if current is None and pooling == "pooler" and head == "linear":
        return model_config
    if pooling == "cls" and backbone.convolutional:
        raise ConfigError(
            "--pooling cls: a convolutional network has no first token; use pooler, mean or max"
        )
    return pooled_config(model_config, pooling, head)
