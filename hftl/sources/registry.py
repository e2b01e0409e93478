"""Model sources as a registry, dispatched the way PEFT dispatches its tuners: first match wins.

A source knows one way a model can be named and built: ``vectors:PATH`` (word vectors), ``timm:NAME`` (a timm
architecture), or anything else (a Hub id or a local ``save_pretrained`` folder, the fallback). Each one is an
object with ``matches``, ``check``, ``build_model``, ``build_meta_model`` and ``load_processor``; adding a source is
one new module that calls ``register_source``. The rest of hftl calls the dispatching functions below and never
asks which source a model came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hftl.errors import ConfigError, ModelError
from hftl.outputs.files import check_no_link_leaves

if TYPE_CHECKING:
    from hftl.config import RunConfig
    from hftl.tasks import Task


class ModelSource(Protocol):
    """Where a model comes from. ``matches`` decides by the model name alone (no I/O)."""

    name: str

    def matches(self, model: str) -> bool: ...

    def check(self, model: str) -> str:
        """``model`` as the run records it, after a cheap check (a missing file fails here, before any data)."""
        ...

    def build_model(self, task: Task, config: RunConfig, labels: list[str], processor: Any) -> Any:
        """The task model sized for ``labels``: pretrained weights, or random ones with ``--init scratch``."""
        ...

    def build_meta_model(self, task: Task, config: RunConfig, labels: list[str] | None) -> Any:
        """The architecture without weights (meta device): enough to make and print a plan instantly."""
        ...

    def load_processor(self, task: Task, config: RunConfig, splits: Any) -> Any:
        """The image processor or tokenizer that goes with the model."""
        ...


_SOURCES: list[ModelSource] = []
_FALLBACK: list[ModelSource] = []


def register_source(source: ModelSource, *, fallback: bool = False) -> ModelSource:
    """Add a source; the fallback (the Hub/local source) is asked last. Names are unique."""
    if any(known.name == source.name for known in (*_SOURCES, *_FALLBACK)):
        raise ConfigError(f"a model source named {source.name!r} is registered already")
    (_FALLBACK if fallback else _SOURCES).append(source)
    return source


def source_for(model: str | None) -> ModelSource:
    """The first registered source that matches ``model``."""
    name = str(model or "")
    for source in (*_SOURCES, *_FALLBACK):
        if source.matches(name):
            return source
    raise ModelError(f"no model source accepts {name!r}")  # only without the Hub/local fallback


def loads_with_auto_classes(name: str) -> bool:
    """Whether ``name`` is a Hub or local transformers model (the fallback source), as the advisor's probes need."""
    return source_for(name) in _FALLBACK


def check_source(name: str) -> str:
    """``name`` if it is usable as a model name (a local path is made absolute); a clear error otherwise."""
    return source_for(name).check(name)


def build_model(task: Task, config: RunConfig, labels: list[str], processor: Any = None) -> Any:
    """The task model for ``config.model``, sized for ``labels`` (word vectors align to ``processor``)."""
    return source_for(config.model).build_model(task, config, labels, processor)


def build_meta_model(task: Task, config: RunConfig, labels: list[str] | None = None) -> Any:
    """The architecture of ``config.model`` on the meta device (for ``hftl plan``)."""
    return source_for(config.model).build_meta_model(task, config, labels)


def load_processor(task: Task, config: RunConfig, splits: Any = None) -> Any:
    """The processor of ``config.model``; word vectors build their vocabulary from ``splits.train``."""
    return source_for(config.model).load_processor(task, config, splits)


def looks_like_path(name: str) -> bool:
    """True for names that can only be a local path (not a Hub ``owner/name`` id)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def local_or_hub(name: str, what: str = "model") -> str:
    """An existing local path, made absolute (what is recorded then works from any directory), or a name that can
    be a Hub id; a path that does not exist fails here."""
    if Path(name).expanduser().exists():
        path = Path(name).expanduser().resolve()
        if path.is_dir():  # its files are read as the model's: none through a link that leads out of it
            check_no_link_leaves(path)
        return str(path)
    if looks_like_path(name):
        raise ModelError(f"{what} path does not exist: {name}")
    return name


def label_kwargs(labels: list[str], problem_type: str | None = None) -> dict[str, Any]:
    """The config fields that name a classifier's labels and, once the data has said (``single_label`` or
    ``multi_label``), its ``problem_type``: transformers' heads, hftl's own and ``pipeline`` read it to choose
    cross-entropy/softmax or BCE-with-logits/sigmoid (a pretrained multi-label config must not keep its own)."""
    from hftl.settings.choices import TRANSFORMERS_PROBLEM_TYPES

    fields: dict[str, Any] = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }
    if problem_type in TRANSFORMERS_PROBLEM_TYPES:
        fields["problem_type"] = TRANSFORMERS_PROBLEM_TYPES[problem_type]
    return fields
