"""``hftl.load``: any hftl output folder (full model or LoRA adapter) or Hub id back as a ready model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from torch import nn
from transformers import AutoConfig

from hftl.errors import ModelError, first_line
from hftl.modeling.pooled import register_for_source
from hftl.modeling.timm_nets import prepare_config
from hftl.outputs.artifacts import (
    ADAPTER_CONFIG,
    BASE_CONFIG_DIR,
    CONFIG_FILE,
    holds_base,
    read_json_file,
    read_run_settings,
)
from hftl.outputs.download import resolve_folder
from hftl.sources.registry import check_source
from hftl.sources.safety import pickled_weights_refused
from hftl.tasks import Task, available_tasks, builtin_tasks, get_task

NO_ADAPTER_HERE = "hftl-no-adapter-here"  # a subfolder no folder has: transformers finds no adapter to load


def task_of(source: str, model_config: Any | None = None) -> Task:
    """The task a saved model belongs to: from hftl's run config where it names a registered task, else from the
    architecture name. A task card path there is not followed: the folder may come from anywhere, and a card can name
    metrics whose scripts would run (a run trained with a card of its own loads as the built-in task of its
    architecture)."""
    if (Path(source) / CONFIG_FILE).is_file():
        task = read_run_settings(source).get("task")
        if isinstance(task, str) and task in available_tasks():
            return get_task(task)
    architectures = getattr(model_config, "architectures", None) or []
    builtins = builtin_tasks()
    for name in sorted(available_tasks(), key=lambda name: name not in builtins):  # built-in tasks first
        task = get_task(name)
        suffix = task.auto_model.removeprefix("AutoModelFor")
        if any(arch.endswith(suffix) for arch in architectures):
            return task
    raise ModelError(
        f"cannot tell which task {source!r} is for (architectures {architectures}); "
        f"known tasks: {', '.join(available_tasks())}"
    )


def load(source: str | Path, *, trust_remote_code: bool = False) -> nn.Module:
    """Load a trained model for inference or further transfer. LoRA folders are the frozen base they hold (with
    the run's labels and truncation) plus the adapter, returned as a ``PeftModel``."""
    source = resolve_folder(source)  # a Hub id becomes its downloaded snapshot
    try:
        return _load(source, trust_remote_code)
    except (
        OSError,
        SafetensorError,
    ) as error:  # transformers/PEFT: a file there is missing, unreadable or cut
        from hftl.sources.hub import damaged_file

        raise ModelError(
            f"cannot load {source}: {damaged_file(Path(source)) or first_line(error)}. A run folder holds its "
            "weights (model.safetensors, or "
            "for LoRA adapter_model.safetensors beside the base's): if this is one, was it copied in part, or is "
            "the run unfinished? (A LoRA folder saved before runs kept their base reads it from the base's Hub id or "
            "folder.)"
        ) from error


def _load(source: str, trust_remote_code: bool) -> nn.Module:
    adapter_config = Path(source) / ADAPTER_CONFIG
    if (
        Path(source).is_dir()
        and not (Path(source) / "config.json").is_file()
        and not adapter_config.is_file()
    ):
        inside = Path(source).resolve().parent.name == "checkpoints"
        raise ModelError(
            f"{source} is not a saved model (no config.json): "
            + (
                "a checkpoint holds only what trains; load its run folder (two levels up), which holds the model"
                if inside
                else "give a run's output folder, a save_pretrained folder or a Hub id"
            )
        )
    if adapter_config.is_file():
        adapter = read_json_file(adapter_config)
        return _load_adapter(source, adapter, trust_remote_code)
    register_for_source(source)  # an hftl pooled classifier: its family's pair, before AutoConfig reads it
    model_config = prepare_config(AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code))
    task = task_of(source, model_config)
    with pickled_weights_refused(source):
        return task.model_class().from_pretrained(source, trust_remote_code=trust_remote_code)


def _load_adapter(source: str, adapter: dict[str, Any], trust_remote_code: bool) -> nn.Module:
    from peft import PeftModel

    if holds_base(Path(source)):
        base = _held_base(source, trust_remote_code)
    else:
        base = _rebuilt_base(source, adapter, trust_remote_code)
    return PeftModel.from_pretrained(base, source)


def _held_base(source: str, trust_remote_code: bool) -> nn.Module:
    """The frozen base a LoRA folder holds, read from the folder itself (so the folder may move), without the
    adapter: transformers would load the adapter found beside the weights itself, and PEFT then a second time.
    An adapter subfolder that does not exist tells transformers there is none."""
    register_for_source(source)
    config = prepare_config(AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code))
    model_class = task_of(source, config).model_class()
    with pickled_weights_refused(source):
        return model_class.from_pretrained(
            source,
            config=config,
            trust_remote_code=trust_remote_code,
            adapter_kwargs={"subfolder": NO_ADAPTER_HERE},
        )


def _rebuilt_base(source: str, adapter: dict[str, Any], trust_remote_code: bool) -> nn.Module:
    """Runs saved before the base was kept: the base named by the adapter, rebuilt with ``base_config/``."""
    base_config_dir = Path(source) / BASE_CONFIG_DIR
    base_id = adapter["base_model_name_or_path"]
    config_source = str(base_config_dir) if base_config_dir.is_dir() else base_id
    register_for_source(config_source)
    base_config = AutoConfig.from_pretrained(config_source, trust_remote_code=trust_remote_code)
    prepare_config(base_config)  # a cut timm network: its architecture must be registered with timm
    task = task_of(source, base_config)
    return task.model_class().from_pretrained(
        check_source(base_id),
        config=base_config,
        ignore_mismatched_sizes=True,
        trust_remote_code=trust_remote_code,
    )
