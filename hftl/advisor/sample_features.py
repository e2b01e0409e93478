"""The advisor's forward passes over a seeded sample of a run's splits: pooled features at every depth of the
pretrained model and of the same architecture with random weights (``probe_features``), kept in the feature cache.
LogME's advice (``hftl.advisor.advise``) and the source check (``hftl.advisor.start``) score them."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from hftl.advisor.decision import DEFAULT_POOLING
from hftl.advisor.probes import DepthFeatures, cached_depth_features
from hftl.backbones import Backbone, backbone_for
from hftl.config import RunConfig
from hftl.data.image_stats import ImageStats
from hftl.data.loading import Splits
from hftl.data.preprocess import prepare_inputs
from hftl.data.raw_pixels import accept_raw_pixels
from hftl.settings import AUTO_CASE, VECTORS_PREFIX
from hftl.sources.registry import check_source, load_processor
from hftl.sources.safety import pickled_weights_refused
from hftl.tasks import Task
from hftl.training.feature_store import architecture_of, cache_root, prefix_digest, preprocessing_of


def probe_batches(
    config: RunConfig, task: Task, splits: Splits, processor: Any, sample: Dataset
) -> tuple[DataLoader, ImageStats | None]:
    """Model-ready, un-augmented batches of ``sample`` (a subset of the examples probed), and what a model does to
    their raw pixels (images)."""
    probe_splits = dataclasses.replace(splits, train=sample, validation=sample.select(range(1)))
    inputs = prepare_inputs(
        probe_splits,
        task.modality,
        processor,
        max_length=config.max_length,
        augment=False,
        seed=config.seed,
        max_image_pixels=config.max_image_pixels,
    )
    loader = DataLoader(
        inputs.train,
        batch_size=config.eval_batch_size or 2 * config.batch_size,
        collate_fn=inputs.eval_collator,
    )
    return loader, inputs.image_stats


@dataclass
class ProbedFeatures:
    """One forward pass of the pretrained model and of the same architecture with random weights over a seeded
    sample of ``splits.train`` (the training split for the advisor; training and validation examples for the source
    check): pooled features at every depth, what the advisor and the source check score."""

    pretrained: DepthFeatures
    random: DepthFeatures
    backbone: Backbone
    has_head: bool  # the checkpoint has its own classifier (LEEP's source probabilities)
    samples: int
    reused: bool  # read from the feature cache
    root: Path | None
    model_config: Any = None  # the pretrained model's config (which measured defaults cover it)


def probe_features(
    config: RunConfig,
    task: Task,
    splits: Splits,
    processor: Any | None = None,
    device: torch.device | str | None = None,
    model_name: str | None = None,
) -> ProbedFeatures:
    """Pooled per-depth features of ``model_name`` (default: the run's model) and of its random-weights twin."""
    model_name = model_name or str(config.model)
    model_config = config.replace(model=model_name, case=AUTO_CASE)
    processor = processor if processor is not None else load_processor(task, model_config, splits)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    count = min(config.advise_max_samples, len(splits.train))
    sample = splits.train.shuffle(seed=config.seed).select(range(count))
    batches, image_stats = probe_batches(config, task, splits, processor, sample)
    pooling = probe_pooling(config, model_name)

    model_class = task.model_class()
    source = check_source(model_name)
    with pickled_weights_refused(model_name):
        pretrained, info = model_class.from_pretrained(
            source,
            revision=config.revision,
            trust_remote_code=config.trust_remote_code,
            output_loading_info=True,
        )
    accept_raw_pixels(pretrained, image_stats)
    backbone = backbone_for(pretrained.config)
    head = backbone.head(pretrained)
    has_head = not any(
        key == name or key.startswith(name + ".") for key in info["missing_keys"] for name in head
    )
    root = probe_cache_root(config)
    key = probe_key(model_name, config, task, processor, sample, splits)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        random_model = model_class.from_config(pretrained.config, trust_remote_code=config.trust_remote_code)
    accept_raw_pixels(random_model, image_stats)
    random_key = {
        **key,
        "weights": f"random init, seed {config.seed}",
        "architecture": architecture_of(pretrained.config),
    }
    for refresh in (False, True):  # two cached files that disagree (edited, or foreign) are both rebuilt
        features, reused = cached_depth_features(
            pretrained,
            batches,
            {**key, "weights": prefix_digest(pretrained, [""])},
            root,
            count,
            refresh,
            pooling=pooling,
            device=device,
            probabilities=has_head,
        )
        random_features, _ = cached_depth_features(
            random_model, batches, random_key, root, count, refresh, pooling=pooling, device=device
        )
        if random_features.depths == features.depths:
            break
    return ProbedFeatures(
        features, random_features, backbone, has_head, count, reused, root, pretrained.config
    )


def probe_pooling(config: RunConfig, model_name: str) -> str:
    """``--advise-pooling auto`` scores what the run's head will read: mean-pooled tokens when the run pools by
    mean or max (a sentence encoder's declared pooling), else the first token."""
    if config.advise_pooling != "auto":
        return config.advise_pooling
    from hftl.sources.pooling import resolve_pooling

    if model_name.startswith(VECTORS_PREFIX):
        return DEFAULT_POOLING
    run_pooling = resolve_pooling(config.pooling, model_name, config.revision)
    return "mean" if run_pooling in ("mean", "max") else DEFAULT_POOLING


def probe_cache_root(config: RunConfig) -> Path | None:
    """Where per-depth probe features are kept: the feature cache's folder (``--no-feature-cache``: nowhere)."""
    return cache_root(config) if config.feature_cache else None


def probe_key(
    model_name: str,
    config: RunConfig,
    task: Task,
    processor: Any,
    sample: Dataset,
    splits: Splits,
) -> dict[str, Any]:
    """What the probe features depend on besides the weights and the pooling settings: the sampled rows are the
    raw split's, so the columns read from them are named too (input, a sentence pair's second, the labels, and
    whether they are lists), and so is how they are decoded (the image pixel cap, the tokenizer's settings)."""
    return {
        "kind": "advisor-probe",
        "version": 1,
        "model": model_name,
        "revision": config.revision,
        "preprocessing": preprocessing_of(processor, task.modality, config.max_length),
        "examples": sample._fingerprint,
        "columns": [splits.input_column, splits.pair_column, splits.label_column, splits.multi_label],
        "max_image_pixels": config.max_image_pixels if task.modality == "image" else None,
        "tokenizer": None
        if task.modality == "image"
        else json.loads(json.dumps(getattr(processor, "init_kwargs", None), sort_keys=True, default=str)),
    }
