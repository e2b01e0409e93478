"""Which engine a run trains with (one process, DDP, FSDP, DeepSpeed ZeRO), refusing what this machine cannot run.

``accelerate launch --config_file configs/accelerate/X.yaml`` puts the engine in the environment
(``ACCELERATE_USE_FSDP``, ``ACCELERATE_USE_DEEPSPEED``) and Accelerate decides from it. Two of its decisions are
silent or obscure, and hftl makes them one clear line before any data is loaded: DeepSpeed without the deepspeed
package (Accelerate fails deep inside its import), and FSDP or DeepSpeed where Accelerate quietly runs DDP instead
(FSDP on the CPU or with one process), so a model that needed sharding would hold every weight and optimizer state
on every process. DeepSpeed itself runs without a GPU (its CPU accelerator, over gloo): slow, but the same ZeRO
partitioning and checkpoints, which is how the tests run it.

FSDP and ZeRO shard the model and the optimizer state across processes: checkpoints then go through
``accelerator.save_state`` on every rank (``hftl.training.sharded_state``), and the final weights are gathered with
``accelerator.get_state_dict``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from accelerate import (
    Accelerator,
    DataLoaderConfiguration,
    DistributedDataParallelKwargs,
    InitProcessGroupKwargs,
)
from accelerate.utils import DistributedType
from torch import nn

from hftl.backbones import Backbone
from hftl.config import RunConfig
from hftl.errors import ConfigError, unknown_choice

FSDP, DEEPSPEED, DDP, SINGLE = "fsdp", "deepspeed", "ddp", "single"
CPU_CONFIG = "configs/accelerate/cpu_2proc.yaml"


def requested_engine(env: Mapping[str, str] | None = None) -> str | None:
    """The sharded engine the launcher asked for (``accelerate launch`` with an FSDP or DeepSpeed config)."""
    env = os.environ if env is None else env  # read at call time: a test or notebook may have replaced it
    if env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return DEEPSPEED
    if env.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return FSDP
    return None


def deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def check_requested_engine(env: Mapping[str, str] | None = None, installed: bool | None = None) -> None:
    """Before the Accelerator exists: a DeepSpeed config needs the deepspeed package (Accelerate fails deep inside
    its import otherwise). On GPUs DeepSpeed runs its CUDA kernels over NCCL; without one it picks its CPU
    accelerator over gloo (slow, but the same ZeRO partitioning and checkpoints: how the tests run it)."""
    installed = deepspeed_installed() if installed is None else installed
    if requested_engine(env) == DEEPSPEED and not installed:
        raise ConfigError(
            "the accelerate config asks for DeepSpeed, which is not installed: pip install deepspeed "
            f"(or train with DDP: --config_file {CPU_CONFIG} on CPU, configs/accelerate/multi_gpu.yaml on GPUs)"
        )


def check_engine_started(accelerator: Accelerator, env: Mapping[str, str] | None = None) -> None:
    """After the Accelerator exists: an FSDP or DeepSpeed config that Accelerate turned into something else (DDP,
    one process) is refused: the run would keep every weight and optimizer state on every process, silently."""
    if requested_engine(env) == DEEPSPEED and accelerator.distributed_type != DistributedType.DEEPSPEED:
        raise ConfigError(
            f"the accelerate config asks for DeepSpeed, but Accelerate set up {accelerator.distributed_type.value} "
            f"with {accelerator.num_processes} process(es); launch it with accelerate launch --config_file "
            "configs/accelerate/deepspeed_zero2.yaml (or zero3), and leave cpu: false in that config"
        )
    if requested_engine(env) == FSDP and accelerator.distributed_type != DistributedType.FSDP:
        raise ConfigError(
            f"the accelerate config asks for FSDP, but Accelerate set up {accelerator.distributed_type.value} "
            f"with {accelerator.num_processes} process(es): it runs FSDP only with 2 or more GPU processes, and "
            "would otherwise keep every weight on every process. Launch it on 2+ GPUs (num_processes in the "
            f"config), or use --config_file {CPU_CONFIG} on CPU"
        )


def make_accelerator(config: RunConfig) -> Accelerator:
    """The run's Accelerator: precision, accumulation, trackers and a seeded sampler; the engine comes from the
    launcher's config (checked before and after, see the module docstring)."""
    check_requested_engine()
    # torchrun on a machine without GPUs: Accelerate only forms a gloo group when told it runs on the CPU
    cpu_processes = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    # DeepSpeed there: cpu=True would turn its config off, so the gloo group is asked for by name instead
    cpu_deepspeed = cpu_processes and requested_engine() == DEEPSPEED
    group = [InitProcessGroupKwargs(backend="gloo")] if cpu_deepspeed else []
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        # Accelerate would train in fp32 while the run records fp16
        raise ConfigError("--mixed-precision fp16 needs a CUDA GPU; on this machine use bf16 or no")
    accelerator = Accelerator(
        cpu=cpu_processes and not cpu_deepspeed,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=trackers(config.report_to),
        project_dir=config.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=config.ddp_find_unused_parameters),
            *group,
        ],
    )
    check_engine_started(accelerator)
    return accelerator


def trackers(report_to: str) -> list[str] | None:
    """Accelerate trackers for ``--report-to``; ``auto`` picks only the ones that need no account (TensorBoard)."""
    if report_to == "none":
        return None
    if report_to == "auto":
        from accelerate.utils import is_tensorboard_available

        return ["tensorboard"] if is_tensorboard_available() else None
    from accelerate.utils import LoggerType

    names = [name.strip() for name in report_to.split(",") if name.strip()]
    known = [kind.value for kind in LoggerType]
    for name in names:
        if name not in known:
            raise unknown_choice("--report-to tracker", name, ["auto", "none", *known])
    return names


def engine_name(accelerator: Any) -> str:
    """fsdp, deepspeed, ddp (several processes, each with the whole model) or single."""
    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        return FSDP
    if kind == DistributedType.DEEPSPEED:
        return DEEPSPEED
    return DDP if accelerator.num_processes > 1 else SINGLE


def is_sharded(accelerator: Any) -> bool:
    """Whether each process holds only a shard of the model or optimizer state (FSDP, ZeRO): then every process
    writes its part of a checkpoint, and the final weights must be gathered."""
    return engine_name(accelerator) in (FSDP, DEEPSPEED)


# settings whose code holds a second copy of the weights or re-prepares the model: not run under sharding
UNSHARDED_ONLY = {
    "regularizer": "L2-SP/BSS keep an unsharded copy of the pretrained weights or features on every process",
    "unfreeze_schedule": "gradual unfreezing changes which parameters train after FSDP/ZeRO has wrapped them",
    "auto_batch_size": "retrying with a smaller batch prepares the already sharded model a second time",
    "compile": "use the accelerate config's dynamo settings, which compile after sharding",
    "merge_lora": "merge afterwards: load the saved adapter with PEFT and call merge_and_unload()",
}


def check_sharded_settings(config: RunConfig, accelerator: Any) -> None:
    """Refuse, naming the flag, the settings this engine cannot honour (before any data is loaded)."""
    if not is_sharded(accelerator):
        return
    engine = "FSDP" if engine_name(accelerator) == FSDP else "DeepSpeed"
    for name, why in UNSHARDED_ONLY.items():
        if getattr(config, name):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} is not supported with {engine} ({why}); leave it out or use DDP")
    if config.lr == "auto":
        raise ConfigError(
            f"--lr auto is not supported with {engine}: the range test runs the unsharded model on each process; "
            "give --lr (run --lr auto once with DDP or on a smaller model to pick it)"
        )
    plugin = accelerator.state.deepspeed_plugin if engine == "DeepSpeed" else None
    if plugin is not None and plugin.zero_stage == 3 and plugin.zero3_init_flag:
        raise ConfigError(
            "the accelerate config sets zero3_init_flag: true, which loads the pretrained model already partitioned; "
            "hftl fits a new head and cuts or freezes layers before training, which needs the whole weights: set "
            "zero3_init_flag: false (configs/accelerate/deepspeed_zero3.yaml; each process then needs CPU memory "
            "for the whole model while it loads)"
        )
    if config.quantize:
        raise ConfigError(f"--quantize is not supported with {engine}; QLoRA runs on one GPU or with DDP")
    if config.strategy == "contrastive":
        raise ConfigError(
            f"--strategy contrastive is not supported with {engine}: its pair stage trains the unsharded encoder; "
            "few-shot data fits one process (use DDP or none)"
        )


def layer_classes(model: nn.Module, backbone: Backbone) -> list[str]:
    """Class names of the backbone's repeated layers (ViTLayer, BertLayer, ResNetStage...): FSDP's wrap units."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return sorted({type(base.get_submodule(path)).__name__ for path in backbone.layers(base)})


def wrap_each_layer(accelerator: Any, model: nn.Module, backbone: Backbone) -> list[str] | None:
    """Under FSDP with the transformer-based wrap policy, make each backbone layer one FSDP unit unless the
    accelerate config named the classes (``fsdp_transformer_layer_cls_to_wrap``).

    Why hftl names them: Accelerate's default is the model's ``_no_split_modules``, which for BERT and ViT also
    lists the embeddings; Accelerate then shards the input embeddings a second time and stops. Layers are what a
    plan freezes or trains as a whole (head-only, partial, LoRA, full), and FSDP2 shards per parameter, so a unit
    may hold frozen and trainable tensors alike; what is left outside the layers (stem, neck, head) is the root
    unit. Returns the class names set, or None when nothing was changed."""
    if engine_name(accelerator) != FSDP:
        return None
    plugin = accelerator.state.fsdp_plugin
    policy = getattr(plugin.auto_wrap_policy, "func", plugin.auto_wrap_policy)
    if (
        getattr(policy, "__name__", "") != "transformer_auto_wrap_policy"
        or plugin.transformer_cls_names_to_wrap
    ):
        return None
    plugin.transformer_cls_names_to_wrap = layer_classes(model, backbone)
    return plugin.transformer_cls_names_to_wrap


@contextmanager
def whole_weights(accelerator: Any) -> Iterator[None]:
    """Load the pretrained weights whole on each process, also under ZeRO-3.

    Accelerate registers its DeepSpeed config with transformers whatever ``zero3_init_flag`` says, and under ZeRO-3
    ``from_pretrained`` then partitions every weight as it loads (``deepspeed.zero.Init``): each parameter holds an
    empty tensor, so the new head cannot be initialised and decay groups (decided by a weight's shape) come out
    empty, which DeepSpeed drops and the scheduler then fails on. hftl reshapes the model before training (new head,
    cut, frozen layers), so it loads it whole and lets ``prepare`` partition it."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if engine_name(accelerator) != DEEPSPEED or plugin is None or plugin.zero_stage != 3:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()  # what Accelerate set, for prepare and the saves


def configure_engine(accelerator: Any, model: nn.Module, backbone: Backbone, config: RunConfig) -> None:
    """What the sharded engines need to know about the model and the run, before ``prepare``."""
    wrap_each_layer(accelerator, model, backbone)
    fill_deepspeed_clipping(accelerator, config.max_grad_norm)


def fill_deepspeed_clipping(accelerator: Any, max_grad_norm: float) -> None:
    """DeepSpeed clips inside its own step: give it ``--max-grad-norm`` where the config says ``auto``."""
    if engine_name(accelerator) != DEEPSPEED:
        return
    ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
    if ds_config.get("gradient_clipping", "auto") == "auto":
        ds_config["gradient_clipping"] = float(max_grad_norm)
