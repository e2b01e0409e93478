"""Checkpoints that are safe to load and never half-written.

A checkpoint holds only what training changed (trainable parameters and buffers, as safetensors), the optimizer
and scheduler states, every process's RNG states and the loop's progress. Frozen weights are not copied: they are
rebuilt identically from the base model and the seed. Each checkpoint is written to a temporary folder, marked
complete, then renamed, so a crash mid-write leaves the previous checkpoint as the newest complete one; a full disk
removes the temporary folder and stops the run with one line saying so.
Everything is read back with ``weights_only=True`` or from JSON/safetensors: nothing executes code on load.
A sharded run (FSDP, ZeRO) writes its shards through Accelerate beside the same files: ``sharded_state``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hftl.config import resolved_local_path
from hftl.errors import ConfigError, HftlError, first_line
from hftl.outputs.artifacts import CHECKPOINTS, NO_SPACE_REMEDY
from hftl.outputs.files import file_digest, space_checked
from hftl.training import engines
from hftl.training.sharded_state import (
    check_every_rank_wrote,
    check_same_engine,
    load_sharded,
    read_engine,
    save_sharded,
    write_engine,
)

PREFIX = "checkpoint-"
# what ``checkpoint_name`` writes: a progress file naming anything else (a path, ``..``) is not hftl's, and a folder
# named otherwise is not a checkpoint
CHECKPOINT_NAME = re.compile(rf"{PREFIX}\d{{8,}}-e\d+b\d+")
COMPLETE = "COMPLETE"
MODEL_FILE = "trainable.safetensors"
PROCESS_STATE = "stream"  # stream-<process index>.json: where that process is in its share of a stream


@dataclass
class Progress:
    """Where the loop is, and what it has seen; saved as JSON in every checkpoint."""

    epoch: int = 0  # epoch in progress (or the next one when ``batches_done`` is 0)
    batches_done: int = 0  # batches of ``epoch`` already trained on
    global_step: int = 0  # optimizer steps taken
    best_metric: float | None = None
    best_epoch: int | None = None
    best_checkpoint: str | None = None
    # the newest checkpoint with finite weights whose last evaluation had a finite loss: the one to go back to
    last_good_checkpoint: str | None = None
    # what the run is: data, model, plan and optimisation settings (see ``run_fingerprint``); checked on resume
    fingerprint: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    nonfinite_skipped: int = 0  # optimizer steps skipped for a NaN/inf loss or gradient


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors training can change: parameters with gradients and all buffers (e.g. BatchNorm statistics)."""
    state = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    state.update({name: b.detach() for name, b in model.named_buffers() if b is not None})
    return {name: t.contiguous().cpu() for name, t in state.items()}


def tensors_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """BLAKE2b of tensors' names, dtypes, shapes and bytes: the same weights, or not."""
    hasher = hashlib.blake2b(digest_size=16)
    for name, tensor in named:
        data = tensor.detach().cpu().contiguous()
        hasher.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        hasher.update(memoryview(data.reshape(-1).view(torch.uint8).numpy()))
    return hasher.hexdigest()


def frozen_digest(model: nn.Module) -> str | None:
    """``tensors_digest`` of what a checkpoint does not hold (the frozen parameters, rebuilt from --model on resume;
    None when every parameter trains): a model changed at that path does not resume into this run."""
    frozen = [(name, p) for name, p in model.named_parameters() if not p.requires_grad]
    return tensors_digest(frozen) if frozen else None


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a ``trainable_state`` back, refusing names the model does not have."""
    current = dict(model.named_parameters()) | dict(model.named_buffers())
    unknown = sorted(set(state) - set(current))
    if unknown:
        raise ConfigError(
            f"checkpoint does not match this model/plan (unknown tensors such as {unknown[:3]})"
        )
    with torch.no_grad():
        for name, tensor in state.items():
            current[name].copy_(tensor.to(current[name].device))


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS


def checkpoint_name(progress: Progress) -> str:
    """Folder name of the checkpoint taken at ``progress``: sortable by step, readable by epoch and batch."""
    return f"{PREFIX}{progress.global_step:08d}-e{progress.epoch}b{progress.batches_done}"


def restore_trained_weights(model: nn.Module, output_dir: str | Path, name: str) -> bool:
    """Load the trained tensors of checkpoint ``name`` (e.g. the best epoch's) into ``model``."""
    path = checkpoint_dir(output_dir) / name / MODEL_FILE
    if not path.is_file() or damage(path.parent) is not None:
        return False
    load_trainable_state(model, read_tensors(path))
    return True


def save_checkpoint(
    accelerator: Any,
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    progress: Progress,
    output_dir: str | Path,
    keep: int,
    process_state: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint atomically on every process, then rotate old ones (the best is kept).
    ``process_state`` is what this process alone knows (a stream's position), saved as JSON beside its RNG."""
    root = checkpoint_dir(output_dir)
    name = checkpoint_name(progress)
    final, tmp = root / name, root / f".tmp-{name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    sharded = engines.is_sharded(accelerator)
    with space_checked(root, f"checkpoint {name}", NO_SPACE_REMEDY, partial=[tmp]):
        _save_torch(_rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
        if sharded:  # every process writes its shard of the model and optimizer
            save_sharded(accelerator, tmp)
        if process_state is not None:
            (tmp / f"{PROCESS_STATE}-{accelerator.process_index}.json").write_text(
                json.dumps(process_state), encoding="utf-8"
            )
        if accelerator.is_main_process:
            if sharded:
                write_engine(tmp, accelerator)
            else:
                _save_unsharded(accelerator, model, optimizer, scheduler, tmp)
            (tmp / "progress.json").write_text(json.dumps(asdict(progress), indent=2), encoding="utf-8")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if sharded:
                check_every_rank_wrote(tmp, accelerator.num_processes)
            write_checksums(tmp)
            (tmp / COMPLETE).write_text("ok\n", encoding="utf-8")
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        rotate(root, keep, protect={progress.best_checkpoint, progress.last_good_checkpoint})
    accelerator.wait_for_everyone()
    return final


def _save_unsharded(accelerator: Any, model: nn.Module, optimizer: Any, scheduler: Any, folder: Path) -> None:
    """The main process holds the whole state: trainable tensors, optimizer, scheduler (and the fp16 scaler)."""
    save_file(trainable_state(accelerator.unwrap_model(model)), str(folder / MODEL_FILE))
    _save_torch(optimizer.state_dict(), folder / "optimizer.pt")
    _save_torch(scheduler.state_dict(), folder / "scheduler.pt")
    if accelerator.scaler is not None:
        _save_torch(accelerator.scaler.state_dict(), folder / "scaler.pt")


def _save_torch(state: Any, path: Path) -> None:
    """``torch.save`` through a Python file object: a full disk then surfaces as the ``OSError`` it is (with a
    path, torch reports only "file write failed")."""
    with open(path, "wb") as handle:
        torch.save(state, handle)


CHECKSUMS = "checksums.json"


def write_checksums(folder: Path) -> None:
    """Size and BLAKE2b of every file (in subfolders too: a sharded checkpoint's shards), so flipped bytes are
    noticed before they are resumed from."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (CHECKSUMS, COMPLETE))
    sums = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "blake2b": file_digest(p)} for p in files
    }
    (folder / CHECKSUMS).write_text(json.dumps(sums, indent=2) + "\n", encoding="utf-8")


def damage(folder: Path) -> str | None:
    """Why ``folder`` cannot be trusted (None: every file matches its checksum; older checkpoints have none)."""
    listed = folder / CHECKSUMS
    if not listed.is_file():
        return None
    try:
        sums = json.loads(listed.read_text(encoding="utf-8"))
        entries = [(str(name), int(want["size"]), str(want["blake2b"])) for name, want in sums.items()]
    except (ValueError, TypeError, KeyError, AttributeError):  # truncated, or not {name: {size, blake2b}}
        return f"{CHECKSUMS} cannot be read"
    for name, size, digest in entries:
        file = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts or file.is_symlink():
            return f"{CHECKSUMS} names {name!r}, which is not a file inside the checkpoint"
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size or file_digest(file) != digest:
            return f"{name} does not match its checksum"
    return None


def remove_partial(root: Path) -> list[str]:
    """Delete half-written checkpoints (``.tmp-*`` folders left by a crash mid-write); returns their names."""
    if not root.is_dir():
        return []
    partial = [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    for path in partial:
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in partial]


def rotate(root: Path, keep: int, protect: set[str | None] | None = None) -> None:
    """Delete all but the newest ``keep`` complete checkpoints, never the protected ones (the best, the last
    good)."""
    complete = list_checkpoints(root)
    for path in complete[: max(0, len(complete) - keep)]:
        if path.name not in (protect or set()):
            shutil.rmtree(path, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (half-written ones have no COMPLETE marker and are ignored, and a folder
    not named as hftl names them, a user's ``checkpoint-backup`` copy say, is neither read nor rotated away)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if CHECKPOINT_NAME.fullmatch(p.name) and (p / COMPLETE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :].split("-")[0]))


def resolve_resume(resume: str, output_dir: str | Path) -> Path | None:
    """``auto`` -> the newest complete checkpoint under OUTPUT_DIR (None if there is none); else the given folder."""
    if resume == "auto":
        for path in reversed(list_checkpoints(checkpoint_dir(output_dir))):
            problem = damage(path)
            if problem is None:
                return path
            print(
                f"--resume auto: skipping damaged checkpoint {path.name} ({problem}); trying the one before"
            )
        return None
    path = Path(resume)
    if not (path / COMPLETE).is_file():
        raise ConfigError(f"--resume {resume}: not a complete hftl checkpoint folder (no {COMPLETE} marker)")
    problem = damage(path)
    if problem is not None:
        raise ConfigError(f"--resume {resume}: the checkpoint is damaged ({problem}); resume another one")
    return path


def read_progress(path: Path) -> Progress:
    """The progress saved in checkpoint ``path``; the checkpoints it names (the best, the last good) must be
    checkpoint names, so that an edited file cannot point the run at weights outside its checkpoints folder."""
    progress = Progress(**json.loads((path / "progress.json").read_text(encoding="utf-8")))
    for key in ("best_checkpoint", "last_good_checkpoint"):
        name = getattr(progress, key)
        if name is not None and not (isinstance(name, str) and CHECKPOINT_NAME.fullmatch(name)):
            raise ConfigError(
                f"{path / 'progress.json'}: {key} is {name!r}, not a checkpoint name ({PREFIX}<step>-e<epoch>b<batch>); "
                "the file was edited or damaged: resume another checkpoint or start a new run"
            )
    return progress


# fingerprint entries added after checkpoints were first written: compared only where the checkpoint has them
ADDED_KEYS = ("frozen_weights", "data_reader", "training")
# how the data fingerprints are made: a checkpoint from an earlier reader (CSV words such as NA read as missing, folders
# fingerprinted by the path as typed; local files by modification time only, before their change time was added)
# cannot be compared on them, so its data is taken as the same (the rest is checked)
DATA_READER = 3
DATA_KEYS = ("train_data", "validation_data")


def check_same_run(saved: dict[str, Any], current: dict[str, Any], checkpoint: Path) -> None:
    """Refuse to resume a checkpoint made by another run (other data, model, plan or optimisation), naming what
    differs. Settings outside the fingerprint (epochs, logging, checkpoint and evaluation frequency, workers,
    trackers, early stopping) may change on resume."""
    if not saved:
        return  # a checkpoint from before fingerprints: nothing to compare
    if isinstance(saved.get("model"), str):  # checkpoints from before local paths were resolved
        saved = {**saved, "model": resolved_local_path(saved["model"])}
    skipped = {key for key in ADDED_KEYS if key not in saved}
    # an earlier data reader's fingerprints: not comparable with today's
    if saved.get("data_reader") != current.get("data_reader"):
        skipped |= {"data_reader", *DATA_KEYS}
    keys = (set(saved) | set(current)) - skipped
    differ = _differences(saved, current, sorted(keys))
    if differ:
        details = "; ".join(f"{key}: {before!r} -> {after!r}" for key, before, after in differ[:6])
        raise ConfigError(
            f"--resume: {checkpoint} was made by a different run ({details}); resume with the same data, model, "
            "plan and optimisation settings, or start a new run (--overwrite-output-dir or another --output-dir)"
        )


def _differences(
    saved: dict[str, Any], current: dict[str, Any], keys: list[str]
) -> list[tuple[str, Any, Any]]:
    """``keys`` whose values differ, a nested setting named by its path (``training.lora``) rather than whole."""
    differ = []
    for key in keys:
        before, after = saved.get(key), current.get(key)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            inner = sorted(set(before) | set(after))
            differ += [(f"{key}.{name}", b, a) for name, b, a in _differences(before, after, inner)]
        else:
            differ.append((key, before, after))
    return differ


def load_checkpoint(
    accelerator: Any, model: nn.Module, optimizer: Any, scheduler: Any, path: Path
) -> Progress:
    """Restore weights, optimizer, scheduler and scaler; returns the saved progress (RNG: ``restore_rng``)."""
    check_same_engine(path, accelerator)
    if read_engine(path) is not None:
        load_sharded(accelerator, path)
        return read_progress(path)
    with _fitting(path / MODEL_FILE):
        load_trainable_state(accelerator.unwrap_model(model), read_tensors(path / MODEL_FILE))
    with _fitting(path / "optimizer.pt"):
        optimizer.load_state_dict(read_state(path / "optimizer.pt"))
    with _fitting(path / "scheduler.pt"):
        scheduler.load_state_dict(read_state(path / "scheduler.pt"))
    if accelerator.scaler is not None and (path / "scaler.pt").is_file():
        with _fitting(path / "scaler.pt"):
            accelerator.scaler.load_state_dict(read_state(path / "scaler.pt"))
    return read_progress(path)


@contextmanager
def _fitting(file: Path) -> Iterator[None]:
    """A state read whole but shaped for other settings (another LoRA rank, other parameter groups) as one error
    naming the file; fingerprints catch this first, except on checkpoints from before they held those settings."""
    try:
        yield
    except HftlError:
        raise
    except (KeyError, RuntimeError, ValueError) as error:
        raise ConfigError(
            f"--resume: {file} does not fit this run ({type(error).__name__}: {first_line(error)}): the checkpoint "
            "was made with other training settings. Resume with the settings that made it, or start a new run"
        ) from error


# what a damaged file, or a pickle that ``weights_only`` refuses to run, raises on the way in
UNREADABLE = (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, SafetensorError)


def unreadable(file: Path, error: Exception) -> ConfigError:
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return ConfigError(
        f"checkpoint file {file} cannot be read ({type(error).__name__}: {first}); it is damaged or was not "
        "written by hftl (nothing in it ran). Resume another checkpoint (--resume auto takes the newest complete "
        "one) or start over with --overwrite-output-dir"
    )


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's safetensors, or one error naming the file."""
    try:
        return load_file(str(file))
    except UNREADABLE as error:
        raise unreadable(file, error) from None


def read_state(file: Path) -> Any:
    """A checkpoint's optimizer, scheduler, scaler or RNG state (tensors and plain values only: ``weights_only``),
    or one error naming the file."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except UNREADABLE as error:
        raise unreadable(file, error) from None


def read_process_state(path: Path, process_index: int) -> dict[str, Any] | None:
    """What ``save_checkpoint`` saved for this process (None: nothing was)."""
    file = path / f"{PROCESS_STATE}-{process_index}.json"
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None


def restore_rng(path: Path, process_index: int) -> None:
    """Put this process's random generators back as they were when ``path`` was saved. Call it after the epoch's
    DataLoader iterator exists: creating one draws a seed from the global generator."""
    rng_file = path / f"rng-{process_index}.pt"
    _set_rng_state(read_state(rng_file if rng_file.is_file() else path / "rng-0.pt"))


def _rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "python": json.dumps(random.getstate()),
        "numpy": json.dumps([numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = json.loads(state["numpy"])
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
