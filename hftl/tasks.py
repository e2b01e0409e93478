"""The task registry: what a task's inputs and labels are and which model, dataset and metrics it defaults to.

Built-in tasks are YAML cards shipped in ``tasks/`` (installed as ``hftl.task_cards``). A new task is one entry:
``register_task(Task(...))`` in code, a YAML card passed as ``--task path/to/card.yaml``, or a card dropped in
``tasks/``.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hftl.errors import ConfigError, unknown_choice
from hftl.untrusted_yaml import load_untrusted_yaml

Modality = Literal["image", "text"]


@dataclass(frozen=True)
class Task:
    """One kind of problem hftl can transfer to, with its defaults (a parsed task card)."""

    name: str
    modality: Modality
    auto_model: str
    pipeline_tag: str
    description: str = ""
    input_columns: tuple[str, ...] = ()
    label_columns: tuple[str, ...] = ("label", "labels")
    metrics: tuple[str, ...] = ("accuracy", "f1_macro")
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def model_class(self) -> type:
        """The transformers Auto class that builds models for this task."""
        import transformers

        return getattr(transformers, self.auto_model)

    @classmethod
    def from_card(cls, card: Mapping[str, Any], source: str = "<dict>") -> Task:
        """Parse a task card; ``source`` names the file in errors."""
        known = {
            "name",
            "description",
            "modality",
            "auto_model",
            "pipeline_tag",
            "columns",
            "metrics",
            "defaults",
        }
        unknown = set(card) - known
        if unknown:
            raise ConfigError(
                f"{source}: unknown task-card keys {sorted(unknown)}; valid keys: {sorted(known)}"
            )
        missing = {"name", "modality", "auto_model", "pipeline_tag"} - set(card)
        if missing:
            raise ConfigError(f"{source}: task card is missing {sorted(missing)}")
        if card["modality"] not in ("image", "text"):
            raise ConfigError(f"{source}: modality must be 'image' or 'text', got {card['modality']!r}")
        for key in ("name", "auto_model", "pipeline_tag"):
            if not isinstance(card[key], str) or not card[key]:
                raise ConfigError(f"{source}: {key} must be a name, got {card[key]!r}")
        if not card["auto_model"].startswith("AutoModelFor"):
            raise ConfigError(
                f"{source}: auto_model must name a transformers AutoModelFor... class, got {card['auto_model']!r}"
            )
        columns = card.get("columns") or {}
        metrics = card.get("metrics", ("accuracy", "f1_macro"))
        if (
            not isinstance(columns, Mapping)
            or not set(columns) <= {"input", "label"}
            or not all(map(_names, columns.values()))
            or not _names(metrics)
        ):
            raise ConfigError(
                f"{source}: columns must be a mapping of input: [names] and label: [names], and metrics a list of "
                f"names; got columns {str(columns)[:80]!r}, metrics {str(metrics)[:80]!r}"
            )
        defaults = card.get("defaults") or {}
        if not isinstance(defaults, Mapping) or not all(isinstance(key, str) for key in defaults):
            raise ConfigError(
                f"{source}: defaults must be a mapping of setting: value, got {str(defaults)[:80]!r}"
            )
        if not isinstance(card.get("description") or "", str):
            raise ConfigError(f"{source}: description must be text, got {str(card['description'])[:80]!r}")
        return cls(
            name=card["name"],
            modality=card["modality"],
            auto_model=card["auto_model"],
            pipeline_tag=card["pipeline_tag"],
            description=card.get("description") or "",
            input_columns=tuple(columns.get("input", ())),
            label_columns=tuple(columns.get("label", ("label", "labels"))),
            metrics=tuple(metrics),
            defaults=dict(defaults),
        )


def _names(values: Any) -> bool:
    return isinstance(values, list | tuple) and all(isinstance(value, str) and value for value in values)


_TASKS: dict[str, Task] = {}
_BUILTINS_LOADED = False
_BUILTIN_NAMES: set[str] = set()  # the shipped cards' task names: a card file may not replace them


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add ``task`` to the registry; refuses to silently shadow an existing task unless ``replace``."""
    if task.name in _TASKS and not replace:
        raise ConfigError(f"task {task.name!r} is already registered; pass replace=True to override it")
    _TASKS[task.name] = task
    return task


def load_task_card(path: str | Path) -> Task:
    """Read one YAML task card from disk."""
    path = Path(path)
    try:
        card = load_untrusted_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read task card {path}: {error}") from error
    if not isinstance(card, dict):
        raise ConfigError(f"{path}: a task card must be a YAML mapping")
    return Task.from_card(card, source=str(path))


def _load_builtin_cards() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    for entry in sorted(importlib.resources.files("hftl.task_cards").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            card = yaml.safe_load(entry.read_text(encoding="utf-8"))
            task = Task.from_card(card, source=f"hftl.task_cards/{entry.name}")
            _TASKS.setdefault(task.name, task)
            _BUILTIN_NAMES.add(task.name)


def available_tasks() -> list[str]:
    """Names of every registered task, built-ins included."""
    _load_builtin_cards()
    return sorted(_TASKS)


def builtin_tasks() -> list[str]:
    """Names of the shipped tasks (cards in ``hftl.task_cards``)."""
    _load_builtin_cards()
    return sorted(_BUILTIN_NAMES)


def get_task(name: str) -> Task:
    """Look a task up by name, or load it from a YAML card path."""
    _load_builtin_cards()
    if name in _TASKS:
        return _TASKS[name]
    if name.endswith((".yaml", ".yml")):
        task = load_task_card(name)
        # a card file must not change what `--task text` means for the process
        if task.name in _BUILTIN_NAMES:
            raise ConfigError(
                f"{name}: the card names a built-in task ({task.name!r}); give it a name of its own"
            )
        return register_task(task, replace=True)
    raise unknown_choice("task", name, available_tasks(), hint="or pass a task card path (tasks/*.yaml)")
