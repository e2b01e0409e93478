"""The feature cache on disk: its key, its files, and checking them.

A cache folder holds ``<split>.arrow`` files (memory-mapped Arrow) and ``meta.json`` (the key and each file's size
and BLAKE2b digest). Builds go to a temporary folder named after its writer (pid and host) and renamed into place, so
a crash leaves nothing half-written, and the folder a killed build leaves is removed by the next run on that host.
How a run uses the cache is ``hftl.training.feature_cache``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Array2D, Array3D, Array4D, Array5D, Dataset, Features, List, Value
from datasets.arrow_writer import ArrowWriter
from torch import nn
from torch.utils.data import DataLoader

from hftl.backbones.base import Backbone, Cut, block_tensors
from hftl.data.preprocess import LABELS, ModelInputs
from hftl.errors import ModelError
from hftl.outputs.files import file_digest, space_checked
from hftl.training.checkpoints import tensors_digest
from hftl.transfer.plan import TransferPlan

CACHE_VERSION = 1
META_FILE = "meta.json"
SPLITS = ("train", "validation")
LENGTH = "length"
FEATURES = "features"
BUILDING = ".tmp-"  # prefix of the folders builds write to
NO_SPACE_REMEDY = "Free space there, point --feature-cache-dir at a disk with room, or train without it (--no-feature-cache)."
_LABEL_KEYS = {"id2label", "label2id", "num_labels", "problem_type", "_name_or_path", "transformers_version"}


def default_cache_root() -> Path:
    """``$HF_DATASETS_CACHE/hftl-features`` (by default ~/.cache/huggingface/datasets/hftl-features)."""
    import datasets.config

    return Path(datasets.config.HF_DATASETS_CACHE) / "hftl-features"


def cache_root(config: Any) -> Path:
    """``--feature-cache-dir``, else the default folder: cached features and the advisor's probe features."""
    return Path(config.feature_cache_dir) if config.feature_cache_dir else default_cache_root()


# --- the key -------------------------------------------------------------------------------------------------------
def cache_key(
    model: nn.Module,
    plan: TransferPlan,
    cut: Cut,
    inputs: ModelInputs,
    *,
    model_id: str,
    revision: str | None,
    preprocessing: Mapping[str, Any],
    precision: str,
    views: int,
    seed: int,
) -> dict[str, Any]:
    """Everything the cached features depend on, as plain JSON-able values."""
    key = {
        "version": CACHE_VERSION,
        "model": model_id,
        "revision": revision,
        "model_class": type(model).__name__,
        "architecture": architecture_of(model.config),
        "prefix_weights": prefix_digest(model, plan.frozen_prefix()),
        "cut": asdict(cut),
        "preprocessing": dict(preprocessing),
        "train_fingerprint": inputs.train._fingerprint,
        "validation_fingerprint": inputs.validation._fingerprint,
        "precision": precision,
        "dtype": "float32",
        "views": views,
        "augmentation_seed": seed if views > 1 else None,
    }
    # augmented crops are rounded back to uint8 (batches reach the model raw): views cached before differ
    if views > 1:
        key["crops"] = "uint8"
    return key


def key_digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def cache_dir_name(family: str, cut: Cut, key: Mapping[str, Any]) -> str:
    where = "head" if cut.head_input else f"layer{cut.layers}"
    return f"{family}-{where}-{key_digest(key)[:20]}"


def prefix_digest(model: nn.Module, blocks: Sequence[str]) -> str:
    """BLAKE2b of the prefix's tensors (names, dtypes, shapes, bytes): a re-saved or re-initialised model misses."""
    return tensors_digest(
        (f"{block}.{name}", tensor)
        for block in blocks
        for name, tensor in block_tensors(model, block).items()
    )


def architecture_of(config: Any) -> dict[str, Any]:
    """The model config without label names: what the architecture is, as plain JSON values."""
    values = {k: v for k, v in config.to_diff_dict().items() if k not in _LABEL_KEYS}
    values["attn_implementation"] = getattr(config, "_attn_implementation", None)
    return json.loads(json.dumps(values, sort_keys=True, default=str))


def preprocessing_of(processor: Any, modality: str, max_length: int) -> dict[str, Any]:
    """The settings that turn raw examples into model inputs (beyond what the dataset fingerprints cover)."""
    if modality == "image" and hasattr(processor, "to_dict"):
        settings = processor.to_dict()
    else:
        settings = {
            "class": type(processor).__name__,
            "name_or_path": getattr(processor, "name_or_path", None),
            "vocab_size": getattr(processor, "vocab_size", None),
            "max_length": max_length,
        }
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def verify_cache(path: Path, key: Mapping[str, Any] | None = None) -> str | None:
    """Why the cache at ``path`` cannot be used: None when it records ``key`` (its folder is named by that key's
    digest, so another key there is a tampered or misplaced cache) and a checksum for every split it holds, and
    every file matches its recorded size and digest."""
    meta_file = path / META_FILE
    if path.is_symlink() or meta_file.is_symlink():
        return "it is a link (a cache is read only from its own folder)"
    if not meta_file.is_file():
        return "no meta.json (incomplete build)"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return f"meta.json is not valid JSON ({error})"
    if not isinstance(meta, dict) or meta.get("version") != CACHE_VERSION:
        return f"cache format {meta.get('version') if isinstance(meta, dict) else meta!r} != {CACHE_VERSION}"
    if key is not None and meta.get("key") != json.loads(json.dumps(dict(key))):
        return "meta.json records another key (not the cache of this model, data and settings)"
    files, splits = meta.get("files", {}), meta.get("splits", {})
    if not _well_formed(files, splits):
        return "meta.json is not one a build writes (its files or splits are malformed)"
    if missing := [split for split in SPLITS if split not in splits]:
        return f"meta.json records no {' or '.join(missing)} split"
    unlisted = sorted({f"{split}.arrow" for split in splits} - set(files))
    if unlisted:
        return f"meta.json lists no checksum for {', '.join(unlisted)}"
    for name, expected in files.items():
        file = path / name
        if file.is_symlink():
            return f"{name} is a link (a cache is read only from its own folder)"
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != expected["size"]:
            return f"{name} has {file.stat().st_size} bytes, expected {expected['size']}"
        if file_digest(file) != expected["blake2b"]:
            return f"{name} does not match its checksum (corrupted)"
    return _splits_disagree(path, splits)


def _splits_disagree(path: Path, splits: Mapping[str, Any]) -> str | None:
    """Why meta.json's record of a split (which the run reads back: rows, shape, sequences, views) cannot be its
    Arrow file's: of another type, or another row count."""
    for split in SPLITS:
        info = splits[split]
        rows, shape = info.get("rows"), info.get("shape")
        if not (
            isinstance(rows, int)
            and isinstance(info.get("sequences"), bool)
            and isinstance(info.get("views"), int)
            and isinstance(shape, list)
            and all(size is None or isinstance(size, int) for size in shape)
        ):
            return f"meta.json's record of the {split} split is not one a build writes"
        if Dataset.from_file(str(path / f"{split}.arrow")).num_rows != rows:
            return f"meta.json records {rows} {split} rows, its Arrow file holds another count"
    return None


def _well_formed(files: Any, splits: Any) -> bool:
    """A build's meta.json: ``files`` maps plain ``<split>.arrow`` names in the cache folder to their size and
    digest, ``splits`` maps split names to what was written (a name with a path in it would point outside)."""
    if not isinstance(files, dict) or not isinstance(splits, dict):
        return False
    if not all(isinstance(info, dict) for info in splits.values()):
        return False
    return all(
        isinstance(name, str)
        and name == Path(name).name
        and name.endswith(".arrow")
        and not name.startswith(".")
        and isinstance(entry, dict)
        and isinstance(entry.get("size"), int)
        and isinstance(entry.get("blake2b"), str)
        for name, entry in files.items()
    )


def load_cached_split(path: Path, split: str) -> Dataset:
    """A cached split as a memory-mapped dataset (numpy rows, batched into tensors by FeatureCollator)."""
    return Dataset.from_file(str(path / f"{split}.arrow")).with_format("numpy")


def read_meta(path: Path) -> dict[str, Any]:
    return json.loads((path / META_FILE).read_text(encoding="utf-8"))


@dataclass
class SplitSource:
    """One split to encode: its preprocessed dataset, the collator that makes model inputs, and its views."""

    dataset: Any
    collator: Any
    views: int = 1


def build_cache(
    model: nn.Module,
    backbone: Backbone,
    cut: Cut,
    sources: Mapping[str, SplitSource],
    path: Path,
    key: Mapping[str, Any],
    *,
    device: torch.device,
    batch_size: int,
    autocast: Any = None,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Encode every split with the frozen prefix and write ``<split>.arrow`` + ``meta.json`` into ``path``
    atomically. The random number streams are left untouched, so a cached run draws the same dropout masks as an
    uncached one."""
    tmp = build_folder(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    meta: dict[str, Any] = {"version": CACHE_VERSION, "key": dict(key), "files": {}, "splits": {}}
    try:
        with space_checked(path.parent, f"the feature cache {path.name}", NO_SPACE_REMEDY, partial=[tmp]):
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
                for split, source in sources.items():
                    info = _write_split(
                        model,
                        backbone,
                        cut,
                        source,
                        tmp / f"{split}.arrow",
                        device,
                        batch_size,
                        autocast,
                        num_workers,
                    )
                    meta["splits"][split] = info
            for file in sorted(tmp.glob("*.arrow")):
                meta["files"][file.name] = {"size": file.stat().st_size, "blake2b": file_digest(file)}
            meta["build_seconds"] = round(time.perf_counter() - started, 3)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if path.is_symlink():  # a link put in a cache entry's place: removed, never followed
            path.unlink()
        elif path.exists():
            # built meanwhile by another run with the same key: keep theirs, which that run may be reading already
            # (this build is removed below); a broken one is replaced
            if verify_cache(path, key) is None:
                return read_meta(path)
            shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        model.train(was_training)
    return meta


def build_folder(path: Path) -> Path:
    """Where a build of ``path`` is written before it is renamed into place, named after its writer
    (``.tmp-NAME-PID@HOST``) so that a later run can tell a killed build's leftovers from a live build's."""
    return path.parent / f"{BUILDING}{path.name}-{os.getpid()}@{socket.gethostname()}"


def remove_stale_builds(root: Path) -> list[str]:
    """Delete the build folders under ``root`` whose writer is dead (killed mid-build: SIGKILL, preemption, power
    loss); returns their names. A folder whose writer runs, or ran on another host (whose processes cannot be
    asked), is left alone: another run may be building it right now."""
    if not root.is_dir():
        return []
    here, removed = socket.gethostname(), []
    for folder in sorted(root.glob(f"{BUILDING}*")):
        writer = writer_of(folder.name)
        if folder.is_symlink() or not folder.is_dir() or not _holds_only_cache_files(folder):
            continue  # not a build's folder (a user's, or a link): left alone
        if writer is not None and writer[1] == here and not process_alive(writer[0]):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def _holds_only_cache_files(folder: Path) -> bool:
    """What a build writes: ``<split>.arrow`` files and meta.json, nothing else (no subfolders, no links)."""
    return all(
        entry.is_file() and not entry.is_symlink() and (entry.suffix == ".arrow" or entry.name == META_FILE)
        for entry in folder.iterdir()
    )


def writer_of(name: str) -> tuple[int, str] | None:
    """(pid, host) from a build folder's name; None for a name that does not record both."""
    rest, _, host = name.rpartition("@")
    pid = rest.rpartition("-")[2]
    return (int(pid), host) if rest and host and pid.isdigit() else None


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_split(
    model: nn.Module,
    backbone: Backbone,
    cut: Cut,
    source: SplitSource,
    file: Path,
    device: torch.device,
    batch_size: int,
    autocast: Any,
    num_workers: int,
) -> dict[str, Any]:
    loader = DataLoader(
        source.dataset, batch_size=batch_size, shuffle=False, collate_fn=list, num_workers=num_workers
    )
    writer, rows, shape = None, 0, None
    for examples in loader:
        views, lengths, labels = [], None, None
        for view in range(source.views):
            if hasattr(source.collator, "set_epoch"):
                source.collator.set_epoch(view)
            batch = source.collator(examples)
            labels = batch[LABELS]
            if "attention_mask" in batch:
                lengths = batch["attention_mask"].sum(dim=1)
            batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            with autocast() if autocast is not None else _no_context():
                views.append(backbone.forward_prefix(model, batch, cut))
        columns, sequences = _rows(views, source.views)
        columns[LABELS] = labels.tolist()
        if lengths is not None:
            columns[LENGTH] = lengths.tolist()
        if writer is None:
            shape = _example_shape(columns[FEATURES][0], sequences)
            targets = len(columns[LABELS][0]) if labels.dim() == 2 else None
            writer = ArrowWriter(
                features=_schema(shape, sequences, lengths is not None, targets), path=str(file)
            )
        writer.write_batch(columns)
        rows += len(columns[LABELS])
    if writer is None:
        raise ModelError(f"cannot cache features of an empty split ({file.stem})")
    writer.finalize()
    writer.close()
    return {"rows": rows, "shape": list(shape), "sequences": sequences, "views": source.views}


def _rows(views: list[dict[str, torch.Tensor]], count: int) -> tuple[dict[str, list], bool]:
    """Per-example float32 arrays; padded token sequences are cut back to their real tokens."""
    first = views[0]
    if "attention_mask" in first:
        feats, mask = first[FEATURES].float().cpu(), first["attention_mask"].bool().cpu()
        return {FEATURES: [feats[i][mask[i]].numpy() for i in range(feats.shape[0])]}, True
    stacked = [v[FEATURES].float().cpu() for v in views]
    tensor = torch.stack(stacked, dim=1) if count > 1 else stacked[0]
    return {FEATURES: list(tensor.numpy())}, False


def _example_shape(example: np.ndarray, sequences: bool) -> tuple[int | None, ...]:
    return (None, example.shape[-1]) if sequences else tuple(example.shape)


def _schema(
    shape: tuple[int | None, ...], sequences: bool, has_length: bool, targets: int | None = None
) -> Features:
    """The cached split's columns; ``targets``: multi-label rows are stored as multi-hot float32 vectors."""
    if len(shape) == 1:
        column: Any = List(Value("float32"), length=shape[0])
    else:
        arrays = {2: Array2D, 3: Array3D, 4: Array4D, 5: Array5D}
        if len(shape) not in arrays:
            raise ModelError(f"cannot cache features of shape {shape}: at most 5 dimensions per example")
        column = arrays[len(shape)](shape=shape, dtype="float32")
    label = Value("int64") if targets is None else List(Value("float32"), length=targets)
    schema = {FEATURES: column, LABELS: label}
    if has_length:
        schema[LENGTH] = Value("int64")
    return Features(schema)


class _no_context:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
