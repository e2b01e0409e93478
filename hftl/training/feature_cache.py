"""Frozen-prefix feature cache: run the frozen part of the network once, train the rest on stored features.

The usual way to train a head on a frozen backbone runs the whole backbone forward on every example in every
epoch. When the plan freezes a prefix (head-only: everything up to the head; truncated ``small_different``: the
stem and the kept layers; ``partial``: the stem and the first N layers), hftl runs that prefix once (eval mode, no
gradients) over the train and validation splits, writes its outputs to disk as memory-mapped Arrow files, and
trains the rest of the network on them with the same loop (``hftl.training.loop.fit``).

- **Exact**: the frozen prefix runs in inference mode in every run, cached or not (dropout off, BatchNorm
  statistics fixed, as Keras' ``training=False``), so a cached run trains the same weights as an uncached one.
- **Keyed** by the model (id, revision, class, architecture config and a hash of the prefix weights), the cut point,
  the preprocessing (processor settings, max_length, the preprocessed datasets' fingerprints), the precision and
  the number of augmented views. Any change misses the cache; an identical run reuses it.
- **Checked**: ``meta.json`` records each file's size and BLAKE2b digest; a file that does not match is reported
  and the cache rebuilt. Builds go to a temporary folder that is renamed into place, so a crash leaves nothing.
- **Augmentation vs cache**: the cache wins by default (features of un-augmented images). ``--no-feature-cache``
  keeps per-epoch augmentation (and the full forward cost); ``--cache-views K`` caches K augmented views per
  training image and epoch ``e`` trains on view ``e % K`` (with K >= epochs this equals the uncached augmented run).
- **Distributed**: the main process builds or verifies first; then the local main process of every other node
  verifies it (a filesystem the nodes share: built once) or builds its own (node-local disks); the other processes
  wait and read the same files. Under FSDP/DeepSpeed the cache is off: it would run the prefix unsharded.

The model that ``fit`` trains is a :class:`CachedFeaturesModel`: the real model's submodules under their own names
(so checkpoints, resume and the best-epoch restore see the same tensor names) with a forward that runs only the
part after the cut. The real model is what gets saved: the whole network, usable by ``transformers.pipeline``.
"""

from __future__ import annotations

import os
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from hftl.backbones.base import Backbone, Cut, block_module
from hftl.data.preprocess import LABELS, ModelInputs, label_tensor
from hftl.data.raw_pixels import accept_raw_pixels
from hftl.errors import ConfigError, ModelError, first_line
from hftl.training import engines
from hftl.training.dataloaders import loader_workers
from hftl.training.feature_store import (
    FEATURES,
    META_FILE,
    SPLITS,
    SplitSource,
    build_cache,
    cache_dir_name,
    cache_key,
    cache_root,
    load_cached_split,
    preprocessing_of,
    read_meta,
    remove_stale_builds,
    verify_cache,
)
from hftl.transfer.plan import TransferPlan


# --- where to cut ---------------------------------------------------------------------------------------------------
def find_cut(plan: TransferPlan, backbone: Backbone, model: nn.Module) -> tuple[Cut | None, str]:
    """The cut after the plan's frozen prefix, or None with the reason no features can be cached."""
    if plan.lora is not None:
        return None, "LoRA adapts every kept layer, so no layer output is fixed"
    prefix = plan.frozen_prefix()
    kinds = {block.name: block.kind for block in plan.blocks}
    frozen_layers = sum(1 for name in prefix if kinds[name] == "layer")
    if not prefix or kinds[prefix[0]] != "stem" or frozen_layers == 0:
        return None, f"strategy {plan.strategy!r} freezes no layer, so there is no fixed prefix to cache"
    rest = [b for b in plan.blocks if b.action != "removed" and b.name not in prefix]
    head_input = all(block.kind == "head" for block in rest)
    later_layers = any(block.kind == "layer" for block in rest)
    first_token = not head_input and not later_layers and backbone.first_token_pools(model)
    cut = Cut(layers=frozen_layers, head_input=head_input, first_token=first_token)
    reason = backbone.cache_support(model, cut)
    return (None, reason) if reason else (cut, "")


def keep_frozen_prefix_in_eval(model: nn.Module, plan: TransferPlan) -> list[str]:
    """Pin the frozen prefix to inference mode whatever ``model.train()`` says: the frozen part is a fixed feature
    extractor (no dropout, fixed BatchNorm statistics), so caching its outputs changes nothing. Returns the blocks."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    pinned = []
    for name in plan.frozen_prefix():
        module = block_module(base, name)
        if module is None:  # a block that is a single parameter (a timm ViT's cls_token): no mode to pin
            continue
        for sub in module.modules():
            sub.train = types.MethodType(_stay_in_eval, sub)
        module.eval()
        pinned.append(name)
    return pinned


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


@dataclass
class CacheStatus:
    """What happened to the cache in this run (written to metrics.json under ``feature_cache``)."""

    used: bool
    reason: str = ""
    cut: str | None = None
    path: str | None = None
    hit: bool | None = None
    rebuilt_because: str | None = None
    build_seconds: float = 0.0
    verify_seconds: float = 0.0
    views: int = 1
    rows: dict[str, int] = field(default_factory=dict)
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- training on cached features -----------------------------------------------------------------------------------
class FeatureCollator:
    """Batches cached features: stacks fixed-shape features, pads token sequences (and rebuilds their attention
    mask), and picks the augmented view of the current epoch."""

    def __init__(self, views: int = 1, sequences: bool = False, pad_to_multiple_of: int | None = None):
        self.views, self.sequences, self.pad_to_multiple_of = views, sequences, pad_to_multiple_of
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        labels = label_tensor([e[LABELS] for e in examples])
        if self.sequences:
            return {**self._pad([np.asarray(e[FEATURES]) for e in examples]), LABELS: labels}
        features = torch.from_numpy(np.stack([np.asarray(e[FEATURES]) for e in examples]))
        if self.views > 1:
            features = features[:, self.epoch % self.views]
        return {FEATURES: features, LABELS: labels}

    def _pad(self, sequences: list[np.ndarray]) -> dict[str, torch.Tensor]:
        longest = max(s.shape[0] for s in sequences)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        features = torch.zeros(len(sequences), longest, sequences[0].shape[-1])
        mask = torch.zeros(len(sequences), longest, dtype=torch.long)
        for i, sequence in enumerate(sequences):
            features[i, : sequence.shape[0]] = torch.from_numpy(sequence)
            mask[i, : sequence.shape[0]] = 1
        return {FEATURES: features, "attention_mask": mask}


class CachedFeaturesModel(nn.Module):
    """The part of ``model`` after the cut, trained on cached features.

    It registers the real model's children under their own names, so parameter and buffer names (checkpoints,
    resume, best-epoch restore) are those of the real model, and training it trains the real model in place. The
    frozen prefix is pinned to eval mode and receives no gradients; its forward never runs here.
    """

    def __init__(self, model: nn.Module, backbone: Backbone, cut: Cut):
        super().__init__()
        if any(True for _ in model.named_parameters(recurse=False)):
            raise ModelError(f"{type(model).__name__} has parameters outside its submodules; cannot cache")
        for name, child in model.named_children():
            self.add_module(name, child)
        self.__dict__["full_model"] = model  # not a submodule: its children are registered above
        self.backbone, self.cut = backbone, cut
        self.config = model.config

    def forward(
        self,
        features: torch.Tensor,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **_: Any,
    ) -> SequenceClassifierOutput:
        model = self.full_model
        inputs = {FEATURES: features, "attention_mask": attention_mask}
        logits = self.backbone.forward_suffix(model, inputs, self.cut)
        loss = model.loss_function(labels, logits, model.config) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


# --- the step run.py calls -----------------------------------------------------------------------------------------
@dataclass
class CachedTraining:
    """What to hand to ``fit``: the model and inputs to train on, and what the cache did."""

    model: nn.Module
    inputs: ModelInputs
    status: CacheStatus


def use_feature_cache(
    model: nn.Module,
    plan: TransferPlan,
    backbone: Backbone,
    inputs: ModelInputs,
    processor: Any,
    config: Any,
    accelerator: Any,
    modality: str,
) -> CachedTraining:
    """Decide whether to cache, build or reuse the cache, and return what ``fit`` should train (``model`` takes
    the inputs' raw image batches from here on)."""
    accept_raw_pixels(model, inputs.image_stats)
    if not config.feature_cache:
        return CachedTraining(model, inputs, CacheStatus(False, "turned off (--no-feature-cache)"))
    if engines.is_sharded(accelerator) or inputs.stream is not None:
        reason = (
            "FSDP/DeepSpeed shard the whole model; building the cache would run its prefix unsharded"
            if inputs.stream is None
            else "--streaming: the cache stores every training example's features, which needs a finite split"
        )
        return CachedTraining(model, inputs, CacheStatus(False, reason))
    cut, reason = find_cut(plan, backbone, model)
    if cut is None:
        return CachedTraining(model, inputs, CacheStatus(False, reason))
    views = config.cache_views if modality == "image" and config.augment else 1
    key = cache_key(
        model,
        plan,
        cut,
        inputs,
        model_id=str(config.model),
        revision=config.revision,
        preprocessing=preprocessing_of(processor, modality, config.max_length),
        precision=str(accelerator.mixed_precision),
        views=views,
        seed=config.seed,
    )
    path = cache_root(config) / cache_dir_name(backbone.family, cut, key)
    status = CacheStatus(True, cut=cut.describe(backbone.layer_word), path=str(path), views=views)
    model.to(accelerator.device)
    build = (model, backbone, cut, inputs, path, key, views, status, config, accelerator)
    # the main process first: on a filesystem the nodes share, the other nodes then find its cache
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            _load_or_build(*build)
    with accelerator.local_main_process_first():  # then each other node's local main process (its own disk)
        if accelerator.is_local_main_process and not accelerator.is_main_process:
            _load_or_build(*build)
        elif not accelerator.is_local_main_process and verify_quick(path) is not None:
            raise ModelError(f"feature cache {path} was not built by the local main process")
    meta = read_meta(path)
    status.rows = {split: meta["splits"][split]["rows"] for split in SPLITS}
    status.bytes = sum(f["size"] for f in meta["files"].values())
    sequences = meta["splits"]["train"]["sequences"]
    pad = 8 if accelerator.device.type == "cuda" and sequences else None
    cached = ModelInputs(
        load_cached_split(path, "train"),
        load_cached_split(path, "validation"),
        FeatureCollator(views, sequences, pad),
        FeatureCollator(1, sequences, pad),
    )
    return CachedTraining(CachedFeaturesModel(model, backbone, cut), cached, status)


def verify_quick(path: Path) -> str | None:
    """Presence and sizes only (other processes trust the local main process's full check)."""
    if not (path / META_FILE).is_file():
        return "missing"
    meta = read_meta(path)
    for name, expected in meta["files"].items():
        if not (path / name).is_file() or (path / name).stat().st_size != expected["size"]:
            return f"{name} differs"
    return None


def _load_or_build(
    model: nn.Module,
    backbone: Backbone,
    cut: Cut,
    inputs: ModelInputs,
    path: Path,
    key: Mapping[str, Any],
    views: int,
    status: CacheStatus,
    config: Any,
    accelerator: Any,
) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise PermissionError("not writable")
    except OSError as error:
        raise ConfigError(
            f"--feature-cache-dir {path.parent}: cannot keep features there ({first_line(error)}); point it at a "
            "writable folder, or train without the cache (--no-feature-cache)"
        ) from error
    for name in remove_stale_builds(path.parent):
        accelerator.print(f"Feature cache: removed {name}, left by a build that was killed")
    if path.exists():
        started = time.perf_counter()
        problem = verify_cache(path, key)
        status.verify_seconds = round(time.perf_counter() - started, 3)
        if problem is None:
            status.hit = True
            accelerator.print(f"Feature cache: reusing {path} (verified in {status.verify_seconds:.1f}s)")
            return
        status.rebuilt_because = problem
        accelerator.print(f"Feature cache: {path} is unusable ({problem}); rebuilding it")
    status.hit = False
    train_collator = inputs.train_collator if views > 1 else inputs.eval_collator
    sources = {
        "train": SplitSource(inputs.train, train_collator, views),
        "validation": SplitSource(inputs.validation, inputs.eval_collator, 1),
    }
    started = time.perf_counter()
    build_cache(
        model,
        backbone,
        cut,
        sources,
        path,
        key,
        device=accelerator.device,
        batch_size=config.eval_batch_size or 2 * config.batch_size,
        autocast=accelerator.autocast,
        num_workers=loader_workers(config),
    )
    status.build_seconds = round(time.perf_counter() - started, 3)
    accelerator.print(f"Feature cache: built {path} in {status.build_seconds:.1f}s")


def describe(status: CacheStatus, augment: bool, modality: str) -> Iterator[str]:
    """Lines for the run log: what is cached, where, and what it means for augmentation."""
    if not status.used:
        yield f"Feature cache: not used ({status.reason})"
        return
    yield f"Feature cache: the rest of the network trains on stored {status.cut}"
    if modality == "image" and augment:
        if status.views > 1:
            yield f"  {status.views} augmented views cached; epoch e trains on view e % {status.views}"
        else:
            yield (
                "  train-time augmentation is not applied to cached features; --no-feature-cache keeps it, "
                "--cache-views K caches K augmented views"
            )
