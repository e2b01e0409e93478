"""What a run leaves in OUTPUT_DIR: a model ``transformers.pipeline`` loads (for LoRA, the PEFT adapter beside the
frozen base it adapts, plus an optional merged model), its processor or tokenizer, the resolved config, the transfer
plan and the metrics.

Only the main process writes. Nothing here touches the network: pushing is a separate, last step.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from hftl.config import RunConfig
from hftl.errors import HftlError, ModelError, first_line
from hftl.outputs.files import move_into, remove_path, space_checked, write_text
from hftl.transfer.plan import TransferPlan
from hftl.untrusted_yaml import load_untrusted_yaml

CONFIG_FILE = "run_config.yaml"
PLAN_FILE = "transfer_plan.json"
METRICS_FILE = "metrics.json"
MERGED_DIR = "merged"
BASE_CONFIG_DIR = "base_config"
RUN_LOG = "metrics.jsonl"  # the loop's log: one JSON line per log step and evaluation
CHECKPOINTS = "checkpoints"
PUSH_LOG = "hub_push.json"
ONNX_DIR = "onnx"  # where `hftl export` puts model.onnx, config.json and the processor, unless told otherwise
STAGING_PREFIX = ".tmp-save-"  # the final model is written here, then renamed into OUTPUT_DIR
NO_SPACE_REMEDY = "Free space on that disk (or lower --save-total-limit), or choose another --output-dir."
ADVICE_JSON = "advice.json"  # the case advisor's report (hftl advise, --case auto)
ADVICE_MD = "advice.md"
# the run report (hftl.outputs.run_report): validation predictions, per-class scores, plots
PREDICTIONS_FILE = "eval_predictions.json"
CLASS_REPORT_FILE = "classification_report.json"
CONFUSION_PNG = "confusion_matrix.png"
CURVE_PNG = "learning_curve.png"
REPORT_FILES = (PREDICTIONS_FILE, CLASS_REPORT_FILE, CONFUSION_PNG, CURVE_PNG)
# the files of a saved model, adapter and processor (hub push sends them; --overwrite-output-dir removes them)
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
)
ADAPTER_CONFIG = "adapter_config.json"
# a LoRA folder: the adapter and the frozen base it adapts (base_config/: how runs saved before the base was kept)
ADAPTER_FILES = (ADAPTER_CONFIG, "adapter_model.safetensors", *MODEL_FILES, f"{BASE_CONFIG_DIR}/config.json")
PROCESSOR_FILES = (
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def read_run_settings(folder: str | Path) -> dict[str, Any]:
    """A run folder's ``run_config.yaml`` (untrusted: a folder from anywhere), as a mapping; a ModelError naming the
    file where it cannot be read, uses YAML aliases or is not a mapping of setting names."""
    path = Path(folder) / CONFIG_FILE
    try:
        settings = load_untrusted_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ModelError(f"cannot read {path}: {first_line(error)}") from error
    if not isinstance(settings, dict) or not all(isinstance(key, str) for key in settings):
        raise ModelError(
            f"{path}: a run config must be a YAML mapping of setting: value (is it an hftl run's?)"
        )
    return settings


def read_json_file(path: Path, error: type[HftlError] = ModelError) -> dict[str, Any]:
    """A JSON object from a folder that may come from anywhere: ``error`` naming the file where it cannot be read,
    is not JSON (an interrupted copy leaves it empty or cut short) or holds something other than an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as problem:
        raise error(
            f"cannot read {path}: {first_line(problem) or type(problem).__name__}. The file is damaged or cut "
            "short (an interrupted copy?): copy it again, or re-save the folder it belongs to"
        ) from problem
    if not isinstance(value, dict):
        raise error(f"{path}: holds a JSON {type(value).__name__}, not an object: is it the file hftl wrote?")
    return value


def is_peft_model(model: nn.Module) -> bool:
    """A PEFT model, asked without importing PEFT: if nothing imported it, no model can be one."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def write_run_files(output_dir: Path, config: RunConfig, plan: TransferPlan) -> None:
    """Config and plan go to disk before training starts, so even an interrupted run documents itself."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")
    plan.save(output_dir / PLAN_FILE)


def save_model(
    model: nn.Module,
    processor: Any,
    output_dir: Path,
    merge_lora: bool = False,
    auto_model: str | None = None,
    state_dict: dict[str, Any] | None = None,
    max_shard_size: str = "5GB",
) -> list[Path]:
    """Save weights (safetensors, split into files of at most ``max_shard_size``) with the processor; LoRA models
    save the adapter (head included) beside the frozen base it adapts (``write_adapter``) and, if asked, a merged
    full model in ``merged/``. ``auto_model``: the task's Auto class, which PEFT's ``AutoPeftModel`` builds the
    base with. ``state_dict``: the whole model's weights gathered from a sharded run (FSDP, ZeRO), whose
    ``model`` holds only this process's shards. Returns the folders that ``pipeline`` can load.

    Everything is written to a staging folder first and renamed into place, so a save that fails (a full disk)
    leaves no half-written model beside the run's other files, and says so in one line."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for leftover in output_dir.glob(f"{STAGING_PREFIX}*"):  # a save killed before: this run holds the folder
        remove_path(leftover)
    staging = output_dir / f"{STAGING_PREFIX}{os.getpid()}"
    staging.mkdir()
    try:
        with space_checked(output_dir, "the trained model", NO_SPACE_REMEDY, partial=[staging]):
            written = Written(staging, output_dir, auto_model, state_dict, max_shard_size)
            loadable = _write_model(model, processor, written, merge_lora)
        move_into(staging, output_dir)
    finally:
        remove_path(staging)
    return [output_dir / path.relative_to(staging) for path in loadable]


@dataclass
class Written:
    """Where and how a model is written: ``folder`` (staging) and ``home`` (where the files will live, which the
    adapter names as its base), the task's Auto class, gathered weights of a sharded run, the largest file."""

    folder: Path
    home: Path
    auto_model: str | None = None
    state_dict: dict[str, Any] | None = None
    max_shard_size: str = "5GB"


def _write_model(model: nn.Module, processor: Any, written: Written, merge_lora: bool) -> list[Path]:
    folder, loadable = written.folder, []
    if is_peft_model(model):
        write_adapter(model, folder, written.home, written.auto_model, written)
        loadable.append(folder)
        if merge_lora:
            merged = copy.deepcopy(model).merge_and_unload()
            merged.save_pretrained(folder / MERGED_DIR, max_shard_size=written.max_shard_size)
            processor.save_pretrained(folder / MERGED_DIR)
            loadable.append(folder / MERGED_DIR)
    else:
        model.save_pretrained(folder, state_dict=written.state_dict, max_shard_size=written.max_shard_size)
        loadable.append(folder)
    processor.save_pretrained(folder)
    return loadable


def write_adapter(
    model: nn.Module, folder: Path, home: Path, auto_model: str | None = None, written: Written | None = None
) -> None:
    """The LoRA adapter (with its new head) beside the frozen base it was trained on: ``config.json`` (this run's
    labels, truncation and head fields) and ``model.safetensors`` next to ``adapter_config.json`` and
    ``adapter_model.safetensors``, the layout transformers calls a local model with an embedded adapter.

    Why the base's weights and not only its config: ``pipeline`` and ``from_pretrained`` read an adapter folder's
    config.json only together with its weights (without them they build the base named by
    ``base_model_name_or_path``, with that model's head size and labels, and stop on the head's size mismatch), a
    pushed repo's config.json is never read, and PEFT's ``AutoPeftModel`` builds whatever
    ``base_model_name_or_path`` names. So the adapter names this folder (``hftl push`` names the repo in the
    copy it sends), and every stock loader finds the base with this run's head shape and labels."""
    written = written or Written(folder, home, auto_model)
    model.save_pretrained(folder, state_dict=written.state_dict)
    if written.state_dict is None:
        frozen_base(model).save_pretrained(folder, max_shard_size=written.max_shard_size)
    else:  # a sharded run: the base's weights come from the gathered state, not from the (sharded) modules
        base = base_state(written.state_dict)
        model.get_base_model().save_pretrained(folder, state_dict=base, max_shard_size=written.max_shard_size)
    write_text(folder / ADAPTER_CONFIG, adapter_config_text(folder, str(home.resolve()), auto_model))


def frozen_base(model: nn.Module) -> nn.Module:
    """The base network a LoRA model adapts (cut, with a head of the run's shape), its adapters taken out of a copy:
    the trained model stays as it is."""
    return copy.deepcopy(model).unload()


def base_state(peft_state: dict[str, Any]) -> dict[str, Any]:
    """What ``frozen_base`` would hold, from a PEFT model's full state dict: LoRA tensors dropped, the trained copy
    of a ``modules_to_save`` module (the head) in place of the original, PEFT's prefixes taken off."""
    base = {}
    for name, tensor in peft_state.items():
        if ".lora_" in name or ".original_module." in name:
            continue
        name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        base[name.replace(".modules_to_save.default.", ".")] = tensor
    return base


def adapter_config_text(folder: Path, base: str, auto_model: str | None = None) -> str:
    """``folder``'s adapter_config.json pointed at ``base`` (a folder or Hub id holding the frozen base). Without a
    PEFT task type (image models), ``AutoPeftModel`` builds the base with the class in ``auto_mapping``: the
    task's Auto class there builds any model type transformers knows (hftl's own once registered)."""
    config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base
    if auto_model and config.get("task_type") is None:
        config["auto_mapping"] = {"base_model_class": auto_model, "parent_library": "transformers"}
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def holds_base(folder: Path) -> bool:
    """A LoRA folder that carries its frozen base (config.json beside the adapter), as hftl saves them now."""
    return (folder / ADAPTER_CONFIG).is_file() and (folder / "config.json").is_file()


def write_metrics(output_dir: Path, metrics: dict[str, Any]) -> None:
    """metrics.json, replaced atomically: a failed write (a full disk) leaves the previous file or none."""
    with space_checked(output_dir, METRICS_FILE, NO_SPACE_REMEDY):
        write_text(output_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
