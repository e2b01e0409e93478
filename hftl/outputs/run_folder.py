"""One run per output folder: a finished run is never silently retrained over, and two runs never share a folder.

- A folder that already holds a run (its metrics, log or checkpoints) is refused unless ``--resume`` continues it or
  ``--overwrite-output-dir`` replaces it; so is a folder holding a saved model no run wrote (``save_pretrained``'s
  files) or files with the names a run writes (a README.md, say) where no run has held the lock, and any folder with
  a link that leads out of it: nothing is written through one. Replacing removes what
  hftl writes there (checkpoints, logs, the model or adapter, run files, and the ONNX export in ``onnx/``, which
  would no longer match the weights) and nothing else: files hftl does not know are the user's.
- A run holds an exclusive lock on ``OUTPUT_DIR/.hftl.lock`` (``fcntl.flock``) until it ends; a second run stops at
  once, naming the holder. The operating system releases the lock when a run dies, so a crash leaves no stale lock.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from hftl.errors import ConfigError, OutputError
from hftl.outputs.artifacts import (
    ADAPTER_CONFIG,
    ADAPTER_FILES,
    ADVICE_JSON,
    ADVICE_MD,
    BASE_CONFIG_DIR,
    CHECKPOINTS,
    CONFIG_FILE,
    MERGED_DIR,
    METRICS_FILE,
    MODEL_FILES,
    ONNX_DIR,
    PLAN_FILE,
    PROCESSOR_FILES,
    PUSH_LOG,
    REPORT_FILES,
    RUN_LOG,
)
from hftl.outputs.card import CARD_FILE
from hftl.outputs.files import check_no_link_leaves

LOCK_FILE = ".hftl.lock"
# what marks a folder as holding a run
RUN_MARKERS = (METRICS_FILE, RUN_LOG, CHECKPOINTS)
# what marks a folder as holding a saved model or adapter (save_pretrained's files; a PyTorch pickle too)
SAVED_MODEL_MARKERS = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    ADAPTER_CONFIG,
    "adapter_model.safetensors",
    "pytorch_model.bin",
)
# what a run writes, and so what --overwrite-output-dir removes (names or glob patterns)
RUN_FILES = (
    METRICS_FILE,
    RUN_LOG,
    CHECKPOINTS,
    PUSH_LOG,
    CONFIG_FILE,
    PLAN_FILE,
    CARD_FILE,
    ADVICE_JSON,
    ADVICE_MD,
    MERGED_DIR,
    BASE_CONFIG_DIR,
    ONNX_DIR,
    *REPORT_FILES,
    "logs",
    *MODEL_FILES,
    *ADAPTER_FILES,
    *PROCESSOR_FILES,
)


def previous_run(folder: Path) -> list[str]:
    """What in ``folder`` shows a run already happened there (empty: nothing)."""
    return [name for name in RUN_MARKERS if (folder / name).exists()]


def check_recipe_folder(folder: Path, recipe: str, markers: Sequence[str], told: bool, how: str) -> None:
    """A recipe's output folder (``hftl compare``, ``hftl demo``) holds the runs it trained: it is never a training
    run's folder, and an earlier one's runs (found by ``markers``) are replaced only when ``told``; ``how``: the
    flags that tell it. A link in it that leads out is refused: its runs are written (and replaced) there."""
    if folder.is_dir():
        check_no_link_leaves(folder, OutputError)
    if previous_run(folder):
        raise ConfigError(f"{folder} holds a training run; choose another --output-dir for hftl {recipe}")
    earlier = [name for name in markers if (folder / name).exists()]
    if earlier and not told:
        raise ConfigError(
            f"{folder} holds an earlier {recipe} ({', '.join(earlier)}): its trained runs would be replaced. "
            f"{how}, or choose another --output-dir"
        )


def check_advice_folder(folder: Path) -> None:
    """``hftl advise`` writes its advice (and its trials) in ``folder``: never through a link that leads out, and
    never over a training run's own advice, which says why that run trained as it did."""
    if not folder.is_dir():
        return
    check_no_link_leaves(folder, OutputError)
    if previous_run(folder):
        raise ConfigError(
            f"{folder} holds a training run; its {ADVICE_JSON} would be replaced. Choose another --output-dir "
            "for hftl advise."
        )


def check_output_dir(folder: Path, resume: str | None, overwrite: bool) -> None:
    """Refuse a folder holding a run unless told to continue (--resume) or replace it (--overwrite-output-dir); a
    folder holding a saved model that no run wrote unless told to replace it; and any folder with a link that leads
    out of it (a run writes its lock, plan, log and checkpoints there: never through a link). The filesystem's root
    and the home folder are no run's folder: a run's files would mix with everything else there."""
    if folder.expanduser().resolve() in (Path("/"), Path.home().resolve()):
        raise ConfigError(f"--output-dir {folder} is not a folder for one run; give one such as runs/NAME")
    if folder.is_dir():
        check_no_link_leaves(folder, OutputError)
    found = previous_run(folder)
    if not found:
        saved = [name for name in SAVED_MODEL_MARKERS if (folder / name).exists()]
        if saved and not overwrite:
            raise ConfigError(
                f"{folder} holds a saved model ({', '.join(saved)}) that no hftl run wrote; a run would write over "
                "it. Choose another --output-dir, or replace those files with --overwrite-output-dir."
            )
        # files with the names a run writes, in a folder no run has locked: the user's (a README.md, say)
        # (files only: a folder such as logs/ may be a job scheduler's, written before the run starts)
        theirs = (
            [] if (folder / LOCK_FILE).exists() else sorted(p for p in _run_file_paths(folder) if p.is_file())
        )
        if theirs and not overwrite:
            names = ", ".join(path.name for path in theirs[:5]) + (", ..." if len(theirs) > 5 else "")
            raise ConfigError(
                f"{folder} holds files a run would write over ({names}) and no hftl run has used it. Choose "
                "another --output-dir, or replace those files with --overwrite-output-dir."
            )
        return
    if resume or overwrite:
        return
    raise ConfigError(
        f"{folder} already holds a run ({', '.join(found)}); hftl will not train over it. Continue it with "
        "--resume auto, replace it with --overwrite-output-dir, or choose another --output-dir."
    )


def _run_file_paths(folder: Path) -> set[Path]:
    """The paths in ``folder`` with the names (or patterns) of what a run writes."""
    return {path for pattern in RUN_FILES for path in folder.glob(pattern)}


def clear_previous_run(folder: Path) -> list[str]:
    """Remove what a previous run wrote in ``folder`` (never other files); returns the names removed."""
    removed = []
    for path in sorted(_run_file_paths(folder)):
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            continue
        removed.append(path.name)
    return removed


class RunLock:
    """An exclusive, non-blocking lock on ``OUTPUT_DIR/.hftl.lock``, held for the whole run."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self.handle: IO[str] | None = None

    def acquire(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # never through a link (O_NOFOLLOW: one planted after the folder was checked fails here instead)
        if self.path.is_symlink():
            raise ConfigError(
                f"{self.path} is a link: hftl takes its lock on a file of its own; remove the link"
            )
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        handle = os.fdopen(descriptor, "a+", encoding="utf-8")  # held open for the lock's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(
                f"{self.path.parent} is in use by another hftl run ({holder}); wait for it to finish or choose "
                "another --output-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        handle.write(json.dumps(holder))
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            import fcntl

            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
