"""``--lr auto``: an LR range test picks the learning rate on the run's own model and data, is recorded, and leaves
no trace: the run that follows is exactly the run with that learning rate given by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from hftl.config import RunConfig
from hftl.errors import ConfigError
from hftl.training.lr_finder import END, START, valley
from tests.helpers import quick_train


def test_valley_picks_the_long_descent_of_the_loss_curve():
    lrs = [1e-7 * 10 ** (i / 10) for i in range(80)]
    # flat, then falling from step 20 to step 59, then exploding
    losses = [2.0] * 20 + [2.0 - 0.04 * i for i in range(40)] + [0.5 * 1.3**i for i in range(20)]
    suggestion = valley(lrs, losses, fallback=1.0)
    assert lrs[20] < suggestion < lrs[59]
    assert valley(lrs[:2], losses[:2], fallback=0.5) == 0.5  # too short a curve: keep the default


def test_lr_auto_is_recorded_and_equals_the_run_with_that_lr(bert_dir, text_folder, tmp_path):
    settings = {"epochs": 1, "strategy": "full", "seed": 3}
    auto = quick_train(
        "text", "large_similar", bert_dir, text_folder, tmp_path / "auto", **settings, lr="auto"
    )
    search = auto.metrics["lr_search"]
    assert START < search["suggestion"] < END and search["steps"] > 10 and search["curve"]
    assert search["default"] == pytest.approx(
        1e-3
    )  # the tiny-BERT table's full rate (the tests' BERT is 32 wide)
    plan = json.loads((tmp_path / "auto" / "transfer_plan.json").read_text())
    assert plan["lr"] == search["suggestion"] == auto.plan.lr
    assert "--lr auto" in " ".join(auto.plan.reasons)
    by_hand = quick_train(
        "text", "large_similar", bert_dir, text_folder, tmp_path / "hand", **settings, lr=search["suggestion"]
    )
    a, b = (
        load_file(tmp_path / "auto" / "model.safetensors"),
        load_file(tmp_path / "hand" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert auto.metrics["history"] == by_hand.metrics["history"]


def test_lr_auto_with_the_feature_cache_and_a_frozen_body(resnet_dir, image_folder, tmp_path):
    result = quick_train(
        "image", "small_similar", resnet_dir, image_folder, tmp_path, strategy="head", lr="auto"
    )
    assert result.metrics["feature_cache"]["used"]
    assert (
        math.isfinite(result.metrics["lr_search"]["suggestion"])
        and result.metrics["best"]["eval_accuracy"] > 0
    )


def test_lr_auto_refuses_per_block_learning_rates():
    with pytest.raises(ConfigError, match="--lr auto picks one learning rate"):
        RunConfig(task="image", case="large_similar", lr="auto", layer_decay=0.8)
    with pytest.raises(ConfigError, match="positive number or 'auto'"):
        RunConfig(task="image", case="large_similar", lr="fast")
