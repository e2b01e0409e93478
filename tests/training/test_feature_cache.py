"""The frozen-feature cache: prefix + suffix equals the full forward, cached runs train exactly what uncached runs
train, the key misses on any change, corruption is detected and rebuilt, and the saved model is the whole network."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageClassification, pipeline

import hftl
from hftl.backbones import backbone_for
from hftl.backbones.base import Cut
from hftl.config import RunConfig
from hftl.outputs.loading import load
from hftl.training.feature_cache import (
    CachedFeaturesModel,
    FeatureCollator,
    find_cut,
    keep_frozen_prefix_in_eval,
)
from hftl.training.feature_store import verify_cache
from hftl.transfer.apply import apply_plan
from hftl.transfer.cases import make_plan
from tests.helpers import cached_and_uncached, keep_only_checkpoint, quick_train

RED = Image.fromarray(np.full((40, 40, 3), (200, 40, 40), dtype=np.uint8))


def planned(model_dir, task, case, strategy=None, keep_layers=None):
    """A model with a plan applied, as run.py builds it (without data)."""
    model = load(model_dir)
    config = RunConfig(task=task, case=case, strategy=strategy, keep_layers=keep_layers, model=str(model_dir))
    backbone = backbone_for(model.config)
    plan = make_plan(config, model, backbone)
    return apply_plan(plan, model, backbone), plan, backbone


@pytest.mark.parametrize(
    "family, case, strategy, expected",
    [
        ("vit", "small_similar", "head", Cut(4, head_input=True)),
        ("vit", "small_different", "head", Cut(2, first_token=True)),
        ("vit", "small_similar", "partial", Cut(2)),
        ("resnet", "small_different", "head", Cut(2, head_input=True)),  # no neck: pooled stage-2 features
        ("resnet", "small_similar", "partial", Cut(2)),
        ("bert", "small_different", "head", Cut(2, first_token=True)),
        ("bert", "small_similar", "partial", Cut(2)),
    ],
)
def test_the_cut_follows_the_frozen_prefix_of_the_plan(
    family, case, strategy, expected, model_dirs, data_for
):
    model, plan, backbone = planned(model_dirs[family], data_for[family][0], case, strategy)
    assert find_cut(plan, backbone, model) == (expected, "")


@pytest.mark.parametrize("strategy, why", [("full", "freezes no layer"), ("lora", "LoRA adapts")])
def test_plans_without_a_frozen_prefix_are_not_cached(strategy, why, vit_dir):
    model, plan, backbone = planned(vit_dir, "image", "large_similar", strategy)
    cut, reason = find_cut(plan, backbone, model)
    assert cut is None and why in reason


def _batch(family):
    if family == "bert":  # different lengths, so padding and the rebuilt attention mask matter
        ids = [[2, 10, 12, 14, 9, 3], [2, 11, 3, 0, 0, 0], [2, 13, 8, 7, 3, 0]]
        mask = [[1 if t else 0 for t in row] for row in ids]
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
    return {"pixel_values": torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))}


@pytest.mark.parametrize(
    "family, case, strategy",
    [
        ("vit", "small_similar", "head"),
        ("vit", "small_different", "head"),
        ("vit", "small_similar", "partial"),
        ("resnet", "small_similar", None),
        ("resnet", "small_similar", "partial"),
        ("bert", "small_similar", None),
        ("bert", "small_different", None),
        ("bert", "small_similar", "partial"),
    ],
)
def test_prefix_then_cached_rows_then_suffix_equals_the_full_forward(
    family, case, strategy, model_dirs, data_for
):
    model, plan, backbone = planned(model_dirs[family], data_for[family][0], case, strategy)
    model.eval()
    cut, _ = find_cut(plan, backbone, model)
    batch = _batch(family)
    with torch.no_grad():
        expected = model(**batch).logits
        out = backbone.forward_prefix(model, batch, cut)
        # what the cache stores per example: padding removed from token sequences
        if "attention_mask" in out:
            rows = [
                {"features": f[m.bool()].numpy(), "labels": 0}
                for f, m in zip(out["features"], out["attention_mask"], strict=True)
            ]
        else:
            rows = [{"features": f.numpy(), "labels": 0} for f in out["features"]]
        collated = FeatureCollator(sequences="attention_mask" in out)(rows)
        suffix = CachedFeaturesModel(model, backbone, cut).eval()
        got = suffix(**{k: v for k, v in collated.items() if k != "labels"}).logits
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)


def test_frozen_prefix_stays_in_eval_mode(vit_dir):
    model, plan, _ = planned(vit_dir, "image", "small_similar", "partial")
    pinned = keep_frozen_prefix_in_eval(model, plan)
    model.train()
    assert pinned == ["vit.embeddings", "vit.layers.0", "vit.layers.1"]
    assert not model.vit.layers[1].training and model.vit.layers[2].training and model.classifier.training


@pytest.mark.parametrize("family", ["vit", "resnet", "bert"])
def test_cached_head_only_run_trains_the_same_weights_as_an_uncached_run(
    family, model_dirs, data_for, tmp_path
):
    task, dataset = data_for[family]
    runs = cached_and_uncached(task, "small_similar", model_dirs[family], dataset, tmp_path)
    assert runs[True].metrics["feature_cache"]["used"] and not runs[False].metrics["feature_cache"]["used"]
    cached, plain = runs[True].model.state_dict(), runs[False].model.state_dict()
    assert cached.keys() == plain.keys()
    for name in cached:
        assert torch.allclose(cached[name], plain[name], atol=1e-6), name
    for cached_epoch, plain_epoch in zip(
        runs[True].metrics["history"], runs[False].metrics["history"], strict=True
    ):
        assert cached_epoch == pytest.approx(plain_epoch)


def test_cached_augmented_views_reproduce_the_uncached_augmented_run(vit_dir, image_folder, tmp_path):
    common = {"epochs": 2, "augment": True, "feature_cache_dir": str(tmp_path / "features")}
    cached = quick_train(
        "image", "small_similar", vit_dir, image_folder, tmp_path / "a", cache_views=2, **common
    )
    plain = quick_train(
        "image", "small_similar", vit_dir, image_folder, tmp_path / "b", feature_cache=False, **common
    )
    assert cached.metrics["feature_cache"]["views"] == 2
    assert torch.allclose(cached.model.classifier.weight, plain.model.classifier.weight, atol=1e-6)
    # augmented views are made from crops rounded back to uint8: views cached before that are not reused
    keys = [json.loads(meta.read_text())["key"] for meta in (tmp_path / "features").rglob("meta.json")]
    assert [key.get("crops") for key in keys] == ["uint8"]


@pytest.fixture(scope="module")
def cached_run(vit_dir, image_folder, tmp_path_factory):
    """One cached head-only run, and a function that repeats it with changes (same feature-cache folder)."""
    root = tmp_path_factory.mktemp("cached-run")
    settings = {"epochs": 2, "feature_cache_dir": str(root / "features")}

    def again(name, model=vit_dir, case="small_similar", **changes):
        return quick_train("image", case, model, image_folder, root / name, **{**settings, **changes})

    return again("first"), again


def test_a_cached_run_saves_the_whole_network_for_pipeline(cached_run):
    result, _ = cached_run
    status = result.metrics["feature_cache"]
    assert status["used"] and status["hit"] is False and status["build_seconds"] > 0
    meta = json.loads((Path(status["path"]) / "meta.json").read_text())
    assert status["views"] == 1 and "crops" not in meta["key"]  # one un-augmented view: the key it always had
    assert status["rows"] == {"train": 48, "validation": 18}
    classify = pipeline("image-classification", model=str(result.output_dir))
    predictions = classify(RED)
    assert {p["label"] for p in predictions} == {"red", "green", "blue"} and predictions[0]["label"] == "red"
    reloaded = AutoModelForImageClassification.from_pretrained(result.output_dir).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(
            reloaded(pixel_values=pixels).logits, result.model.eval()(pixel_values=pixels).logits
        )


def test_throughput_and_cache_figures_are_in_metrics_json(cached_run):
    result, _ = cached_run
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    throughput = metrics["throughput"]
    for key in (
        "samples_per_second",
        "data_wait_fraction",
        "peak_cpu_rss_mb",
        "steady_batches",
        "flops_per_sample",
    ):
        assert key in throughput, key
    assert throughput["samples_per_second"] > 0 and 0 <= throughput["data_wait_fraction"] < 1
    assert throughput["warmup_batches_excluded"] == 5 and throughput["steady_batches"] == 12 - 5
    assert "FlopCounterMode" in throughput["flop_convention"]
    assert metrics["feature_cache"]["build_seconds"] > 0
    assert metrics["speed"]["attn_implementation"] == "sdpa"


def test_the_same_run_reuses_the_cache(cached_run):
    first, again = cached_run
    second = again("second")
    status = second.metrics["feature_cache"]
    assert (
        status["hit"] is True
        and status["build_seconds"] == 0
        and status["path"] == first.metrics["feature_cache"]["path"]
    )
    assert torch.equal(second.model.classifier.weight, first.model.classifier.weight)


def test_a_changed_cut_model_or_dataset_misses_the_cache(cached_run, vit_dir, tmp_path):
    first, again = cached_run
    other_model = tmp_path / "other-vit"
    shutil.copytree(vit_dir, other_model)
    weights = load_file(str(other_model / "model.safetensors"))
    name = next(k for k in weights if "embeddings" in k and k.endswith("cls_token"))
    weights[name] = weights[name] + 0.01
    save_file(weights, str(other_model / "model.safetensors"), metadata={"format": "pt"})
    changed = {
        "cut": again("cut", case="small_different", keep_layers=2, epochs=1),
        "model": again("model", model=other_model, epochs=1),
        "dataset": again("dataset", max_train_samples=30, epochs=1),
    }
    paths = {first.metrics["feature_cache"]["path"]}
    for what, result in changed.items():
        status = result.metrics["feature_cache"]
        assert status["used"] and status["hit"] is False, what
        paths.add(status["path"])
    assert len(paths) == 4


def test_a_corrupted_cache_file_is_detected_and_rebuilt(cached_run):
    first, again = cached_run
    path = first.metrics["feature_cache"]["path"]
    arrow = Path(path) / "train.arrow"
    data = bytearray(arrow.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arrow.write_bytes(bytes(data))
    assert "checksum" in verify_cache(Path(path))
    rebuilt = again("rebuilt")
    status = rebuilt.metrics["feature_cache"]
    assert status["hit"] is False and "checksum" in status["rebuilt_because"]
    assert verify_cache(Path(path)) is None
    assert torch.allclose(rebuilt.model.classifier.weight, first.model.classifier.weight)
    with open(arrow, "r+b") as handle:  # a truncated file is caught by its size
        handle.truncate(100)
    assert "bytes, expected" in verify_cache(Path(path))


def test_a_cache_recording_another_key_or_no_checksums_is_not_used(cached_run, tmp_path):
    _, again = cached_run
    path = Path(
        again("key-check").metrics["feature_cache"]["path"]
    )  # whole again, whatever a test before did
    meta = json.loads((path / "meta.json").read_text())
    assert verify_cache(path, meta["key"]) is None
    assert "another key" in verify_cache(path, {**meta["key"], "model": "someone else's"})
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    (copy / "meta.json").write_text(json.dumps({**meta, "files": {}}))  # nothing to check: not a pass
    assert "no checksum for train.arrow, validation.arrow" in verify_cache(copy)
    no_validation = {k: v for k, v in meta["splits"].items() if k != "validation"}
    (copy / "meta.json").write_text(json.dumps({**meta, "splits": no_validation}))
    assert "records no validation split" in verify_cache(copy)


def test_a_cache_another_run_built_meanwhile_is_kept_not_replaced(cached_run, monkeypatch):
    """Two runs with one key building at once: the later build leaves the earlier one in place (the earlier run
    may be reading it), and trains on the same features."""
    import hftl.training.feature_cache as feature_cache

    first, again = cached_run
    path = Path(
        again("before-race").metrics["feature_cache"]["path"]
    )  # whole again, whatever a test before did
    inode = (path / "train.arrow").stat().st_ino
    monkeypatch.setattr(feature_cache, "verify_cache", lambda *args: "not there yet (as the run saw it)")
    raced = again("raced")
    assert (
        raced.metrics["feature_cache"]["path"] == str(path) and raced.metrics["feature_cache"]["hit"] is False
    )
    assert (path / "train.arrow").stat().st_ino == inode
    assert not [
        p for p in path.parent.iterdir() if p.name != path.name and path.name in p.name
    ]  # no build left
    assert torch.allclose(raced.model.classifier.weight, first.model.classifier.weight)


def test_resume_of_a_cached_run_matches_an_uninterrupted_one(vit_dir, image_folder, tmp_path):
    common = {"epochs": 3, "save_total_limit": 10, "feature_cache_dir": str(tmp_path / "features")}
    full = quick_train("image", "small_different", vit_dir, image_folder, tmp_path / "full", **common)
    quick_train("image", "small_different", vit_dir, image_folder, tmp_path / "split", save_steps=4, **common)
    mid_epoch = keep_only_checkpoint(tmp_path / "split", step=4)  # inside epoch 1
    resumed = quick_train(
        "image",
        "small_different",
        vit_dir,
        image_folder,
        tmp_path / "split",
        resume="auto",
        save_steps=4,
        **common,
    )
    assert resumed.metrics["resumed_from"].endswith(mid_epoch.name)
    assert resumed.metrics["feature_cache"]["hit"] is True
    for name, tensor in full.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


def test_public_api_exports_the_speed_helpers():
    assert {"Cut", "find_cut", "use_feature_cache", "LengthGroupedSampler", "ThroughputMeter"} <= set(
        hftl.__all__
    )


def test_speed_flags_parse_from_the_command_line_and_are_validated():
    from hftl.config import explicit_cli_values, resolve_config

    argv = ["--task", "image", "--case", "small_similar", "--no-feature-cache", "--cache-views", "3"]
    argv += [
        "--feature-cache-dir",
        "/tmp/features",
        "--no-group-by-length",
        "--compile",
        "--channels-last",
        "true",
    ]
    config = resolve_config(explicit_cli_values(argv))
    assert (config.feature_cache, config.cache_views, config.feature_cache_dir) == (False, 3, "/tmp/features")
    assert (config.group_by_length, config.compile, config.channels_last) == (False, True, True)
    with pytest.raises(hftl.ConfigError, match="cache_views must be a positive integer"):
        RunConfig(task="image", case="small_similar", cache_views=0)


def test_conservative_training_on_cached_features_trains_what_an_uncached_run_trains(
    resnet_dir, image_folder, tmp_path
):
    """L2-SP, layer-wise lr decay and gradual unfreezing act on the trained suffix by parameter name, which the
    cached model keeps: a cached partial run and an uncached one end with the same weights."""
    runs = {
        cache: quick_train(
            "image",
            "small_similar",
            resnet_dir,
            image_folder,
            tmp_path / f"cache-{cache}",
            strategy="partial",
            keep_layers=2,
            epochs=2,
            augment=False,
            regularizer=["l2sp"],
            layer_decay=0.5,
            unfreeze_schedule=1,
            feature_cache=cache,
            feature_cache_dir=str(tmp_path / "features"),
        )
        for cache in (True, False)
    }
    assert runs[True].metrics["feature_cache"]["used"] and not runs[False].metrics["feature_cache"]["used"]
    assert runs[True].plan.conservative is not None
    cached, plain = runs[True].model.state_dict(), runs[False].model.state_dict()
    for name in cached:
        assert torch.allclose(cached[name], plain[name], atol=1e-5), name


def test_a_cache_reached_through_a_link_or_naming_files_outside_is_not_used(cached_run, tmp_path):
    """A cache folder is untrusted: an entry or file that is a link, and a meta.json naming a file outside it or
    of another shape, are not used (and a linked entry is replaced by a real build, its target left alone)."""
    _, again = cached_run
    path = Path(again("link-check").metrics["feature_cache"]["path"])
    meta = json.loads((path / "meta.json").read_text())
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    for change in (
        {"rows": 999},
        {"sequences": "yes"},
        {"shape": "big"},
    ):  # what the run reads back from meta.json
        train = {**meta["splits"]["train"], **change}
        (copy / "meta.json").write_text(json.dumps({**meta, "splits": {**meta["splits"], "train": train}}))
        assert "train" in verify_cache(copy) and (
            "rows" in verify_cache(copy) or "record" in verify_cache(copy)
        )
    (copy / "meta.json").write_text(json.dumps(meta))
    assert verify_cache(copy) is None
    (copy / "train.arrow").unlink()
    (copy / "train.arrow").symlink_to(path / "train.arrow")
    assert "train.arrow is a link" in verify_cache(copy)
    outside = {**meta["files"], "../../../etc/hostname": {"size": 1, "blake2b": "x"}}
    for bad in ({**meta, "files": outside}, [], {**meta, "files": {"train.arrow": "1 2"}}):
        (copy / "meta.json").write_text(json.dumps(bad))
        assert "not one a build writes" in verify_cache(copy) or "cache format" in verify_cache(copy), bad
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(path), elsewhere)
    path.symlink_to(elsewhere, target_is_directory=True)
    assert "is a link" in verify_cache(path)
    rebuilt = again("link-rebuilt").metrics["feature_cache"]
    assert rebuilt["hit"] is False and "link" in rebuilt["rebuilt_because"]
    assert not path.is_symlink() and verify_cache(path) is None and verify_cache(elsewhere) is None


def test_cleaning_killed_builds_leaves_anything_a_build_did_not_write(tmp_path):
    from hftl.training.feature_store import BUILDING, remove_stale_builds

    host = socket.gethostname()
    dead = 2**22 + 12345  # above the usual pid_max: no process has it
    killed = tmp_path / f"{BUILDING}vit-head-0123-{dead}@{host}"
    killed.mkdir()
    (killed / "train.arrow").write_bytes(b"partial")
    user = tmp_path / f"{BUILDING}photos-{dead}@{host}"
    (user / "album").mkdir(parents=True)
    (user / "cat.jpg").write_bytes(b"jpeg")
    link = tmp_path / f"{BUILDING}link-{dead}@{host}"
    link.symlink_to(user, target_is_directory=True)
    assert remove_stale_builds(tmp_path) == [killed.name]
    assert not killed.exists() and (user / "cat.jpg").is_file() and link.is_symlink()


def test_an_unusable_feature_cache_dir_is_one_error_naming_the_flag(vit_dir, image_folder, tmp_path):
    from tests.helpers import quick_train

    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    with pytest.raises(
        hftl.ConfigError, match=r"--feature-cache-dir .*not-a-folder: cannot keep features there"
    ):
        quick_train(
            "image", "small_similar", vit_dir, image_folder, tmp_path / "o", feature_cache_dir=str(a_file)
        )
