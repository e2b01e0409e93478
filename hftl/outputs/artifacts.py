"""What a run leaves in OUTPUT_DIR: a model ``transformers.pipeline`` loads (or a PEFT adapter, plus an optional
merged model), its processor or tokenizer, the resolved config, the transfer plan and the metrics.

Only the main process writes. Nothing here touches the network: pushing is a separate, last step.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

from torch import nn

from hftl.config import RunConfig
from hftl.transfer.plan import TransferPlan

CONFIG_FILE = "run_config.yaml"
PLAN_FILE = "transfer_plan.json"
METRICS_FILE = "metrics.json"
MERGED_DIR = "merged"
BASE_CONFIG_DIR = "base_config"
RUN_LOG = "metrics.jsonl"  # the loop's log: one JSON line per log step and evaluation
CHECKPOINTS = "checkpoints"
PUSH_LOG = "hub_push.json"
ADVICE_JSON = "advice.json"  # the case advisor's report (hftl advise, --case auto)
ADVICE_MD = "advice.md"
# the files of a saved model, adapter and processor (hub push sends them; --overwrite-output-dir removes them)
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", f"{BASE_CONFIG_DIR}/config.json")
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


def is_peft_model(model: nn.Module) -> bool:
    """A PEFT model, asked without importing PEFT: if nothing imported it, no model can be one."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def write_run_files(output_dir: Path, config: RunConfig, plan: TransferPlan) -> None:
    """Config and plan go to disk before training starts, so even an interrupted run documents itself."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")
    plan.save(output_dir / PLAN_FILE)


def save_model(model: nn.Module, processor: Any, output_dir: Path, merge_lora: bool = False) -> list[Path]:
    """Save weights (safetensors) with the processor; LoRA models save the adapter (head included) and, if asked,
    a merged full model in ``merged/``. Returns the folders that ``pipeline`` can load."""
    output_dir.mkdir(parents=True, exist_ok=True)
    loadable = []
    if is_peft_model(model):
        model.save_pretrained(output_dir)
        # the architecture the adapter expects (labels, truncation), so the base can be rebuilt before loading it
        model.get_base_model().config.save_pretrained(output_dir / BASE_CONFIG_DIR)
        if merge_lora:
            merged = copy.deepcopy(model).merge_and_unload()
            merged.save_pretrained(output_dir / MERGED_DIR)
            processor.save_pretrained(output_dir / MERGED_DIR)
            loadable.append(output_dir / MERGED_DIR)
    else:
        model.save_pretrained(output_dir)
        loadable.append(output_dir)
    processor.save_pretrained(output_dir)
    return loadable


def write_metrics(output_dir: Path, metrics: dict[str, Any]) -> None:
    (output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
