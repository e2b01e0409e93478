"""Checkpoints and final weights of a sharded run (FSDP, DeepSpeed ZeRO), where no process holds the whole state.

Every process writes its shard through ``accelerator.save_state`` into the checkpoint's temporary folder; hftl's own
files (progress, RNG, ``engine.json``, checksums, ``COMPLETE``) sit beside them, and the main process renames the
folder into place once every process is done (``hftl.training.checkpoints.save_checkpoint``): the same atomic write,
exact resume and refusal to mix runs as the single-process format.

Why runs that are not sharded keep that format (only trainable tensors as safetensors, the optimizer and scheduler
from the main process): it stores no frozen weight (a head-only checkpoint of ViT-B is kilobytes, not 350 MB), and
the checkpoints of existing runs still resume. ``save_state`` is used where it is needed: when a process holds a
shard, only Accelerate (DCP for FSDP, DeepSpeed's engine for ZeRO) knows how to write and reassemble it.

What is read back is screened: torch's distributed-checkpoint metadata (``.metadata``) is a plain pickle that
``torch.distributed.checkpoint`` unpickles without restriction, so hftl first unpickles it with an allow-list of the
classes DCP writes; Accelerate reads the rest with ``weights_only=True``. DeepSpeed reads its own files with
``torch.load`` and no such restriction: resume only DeepSpeed checkpoints you wrote (the checksums catch damage, not
tampering).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hftl.errors import ConfigError, OutputError
from hftl.sources.safety import check_pickle
from hftl.training import engines

ENGINE_FILE = "engine.json"
SHARDED_ENGINES = (engines.FSDP, engines.DEEPSPEED)
# what torch.distributed.checkpoint writes into .metadata (torch 2.2 onwards), nothing that runs code
DCP_METADATA_CLASSES: dict[str, set[str]] = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorProperties",
        "TensorStorageMetadata",
        "ChunkStorageMetadata",
        "BytesStorageMetadata",
        "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size", *(name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype))},
    "pathlib": {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"},
    "collections": {"OrderedDict"},
    "builtins": {"int", "float", "str", "bytes", "tuple", "list", "dict", "set", "frozenset", "slice"},
}


def write_engine(folder: Path, accelerator: Any) -> None:
    """Record how the checkpoint was written: resuming it needs the same engine (and, for ZeRO, as many
    processes; FSDP's DCP files reshard to another process count)."""
    record = {"engine": engines.engine_name(accelerator), "processes": accelerator.num_processes}
    (folder / ENGINE_FILE).write_text(json.dumps(record) + "\n", encoding="utf-8")


def read_engine(folder: Path) -> dict[str, Any] | None:
    """The engine record of a sharded checkpoint; None for the single-process format."""
    path = folder / ENGINE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_same_engine(folder: Path, accelerator: Any) -> None:
    """Refuse to resume a checkpoint with an engine that cannot read it, naming what to launch instead."""
    saved, sharded = read_engine(folder), engines.is_sharded(accelerator)
    current = engines.engine_name(accelerator)
    if saved is None and sharded:
        raise ConfigError(
            f"--resume: {folder} was written without sharding (one process or DDP); resume it with the same "
            f"launch (not {current.upper()}), or start a new run"
        )
    if saved is None:
        return
    if not sharded or saved["engine"] != current:
        raise ConfigError(
            f"--resume: {folder} holds {saved['engine']} shards from {saved['processes']} process(es); resume it "
            f"under the same accelerate config (this launch is {current})"
        )
    if saved["engine"] == engines.DEEPSPEED and saved["processes"] != accelerator.num_processes:
        raise ConfigError(
            f"--resume: {folder} holds ZeRO shards of {saved['processes']} processes; DeepSpeed reloads them only "
            f"with as many (this launch has {accelerator.num_processes})"
        )


def save_sharded(accelerator: Any, folder: Path) -> None:
    """Every process writes its shard of the model and optimizer (and the main process the scheduler) into
    ``folder``; a collective call: all processes must make it."""
    accelerator.save_state(str(folder), safe_serialization=True)


def check_every_rank_wrote(folder: Path, processes: int) -> None:
    """On the main process, after the barrier: each process's RNG file must be there. When one is missing, the
    processes wrote to different disks (nodes without a shared filesystem) and the checkpoint is incomplete."""
    missing = [rank for rank in range(processes) if not (folder / f"rng-{rank}.pt").is_file()]
    if missing:
        raise OutputError(
            f"checkpoint {folder.name.removeprefix('.tmp-')}: the files of process(es) {missing} are not in {folder.parent} as the main "
            "process sees it. Sharded checkpoints need OUTPUT_DIR on a filesystem every node shares (NFS, Lustre, "
            "a cloud bucket mount); point --output-dir there"
        )


def screen_metadata(folder: Path) -> None:
    """Unpickle every DCP ``.metadata`` under ``folder`` with the allow-list before torch reads it."""
    for path in sorted(folder.rglob(".metadata")):
        check_pickle(path, DCP_METADATA_CLASSES)


def load_sharded(accelerator: Any, folder: Path) -> None:
    """Every process reads its shard of the model and optimizer, and the scheduler (a collective call)."""
    screen_metadata(folder)
    accelerator.load_state(str(folder))


def restore_sharded_weights(accelerator: Any, model: nn.Module, folder: Path) -> None:
    """The model weights of checkpoint ``folder`` (the best epoch's) back into the sharded ``model``; optimizer
    and RNG are left alone. A collective call."""
    screen_metadata(folder)
    engine = engines.engine_name(accelerator)
    if engine == engines.FSDP:
        from accelerate.utils import load_fsdp_model

        load_fsdp_model(accelerator.state.fsdp_plugin, accelerator, model, str(folder))
    elif engine == engines.DEEPSPEED:
        from accelerate.utils import MODEL_NAME

        model.load_checkpoint(
            str(folder),
            MODEL_NAME,
            load_module_only=True,
            load_optimizer_states=False,
            load_lr_scheduler_states=False,
        )
    else:  # save_state's single-process layout: the whole model as one safetensors file
        from accelerate.utils import SAFE_WEIGHTS_NAME
        from safetensors.torch import load_model

        load_model(model, str(folder / SAFE_WEIGHTS_NAME), device=str(accelerator.device))


def all_finite(model: nn.Module, accelerator: Any) -> bool:
    """Every trainable tensor finite, on every process: each checks its own shards, then one all-reduce."""
    local = all(
        bool(torch.isfinite(_local(p)).all()) for p in model.parameters() if p.requires_grad and p.numel()
    )
    flags = accelerator.reduce(torch.tensor([0.0 if local else 1.0], device=accelerator.device), "sum")
    return float(flags.sum()) == 0.0


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The part of a (possibly distributed) tensor this process holds."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def gather_full_state(accelerator: Any, model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights, assembled from every process's shards (full on the main process; a
    collective call), for ``save_pretrained(state_dict=...)``."""
    return accelerator.get_state_dict(model)
