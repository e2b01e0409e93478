"""The source check: a linear probe on pretrained against random-weights features decides, where the rules leave it
open (--init auto with a different case, and --case auto, which then runs no trials), whether a run starts from the
source or from scratch."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

import hftl
from hftl.advisor.advise import earlier_trials
from hftl.advisor.probes import DepthFeatures
from hftl.advisor.scores import probe_accuracy
from hftl.advisor.source_check import EVIDENCE, KEEP_SHARE, SourceCheck, compare_features, settle_init


def separable(n: int = 120, dims: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes apart on the first axis, noise elsewhere."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    features = rng.normal(size=(n, dims))
    features[:, 0] += 4.0 * labels
    return features, labels


def test_the_probe_reads_a_signal_and_not_noise():
    features, labels = separable()
    assert probe_accuracy(features, labels) > 0.95
    noise = np.random.default_rng(1).normal(size=features.shape)
    assert abs(probe_accuracy(noise, labels) - 0.5) < 0.15
    assert probe_accuracy(features[:3], np.array([0, 1, 1])) is None  # a class with one example: no fold


def test_worse_than_random_needs_strong_evidence():
    close = SourceCheck(
        pretrained=0.625, random=0.80, pretrained_depth=1, random_depth=2, samples=40, chance=0.5
    )
    assert close.noise == pytest.approx(np.sqrt(2 * 0.7125 * 0.2875 / 40))
    assert 1.5 * close.noise < 0.175 < EVIDENCE * close.noise
    assert not close.worse_than_random  # 17.5 points behind on 40 examples: not enough to drop the source
    far = SourceCheck(
        pretrained=0.40, random=0.58, pretrained_depth=2, random_depth=4, samples=2000, chance=1 / 3
    )
    assert far.worse_than_random and "start from scratch" in far.render() and "here 27%" in far.render()
    assert far.to_dict()["worse_than_random"] is True and far.to_dict()["kept"] == pytest.approx(
        0.27, abs=0.01
    )
    ceiling = SourceCheck(
        pretrained=0.985, random=0.995, pretrained_depth=1, random_depth=1, samples=2000, chance=0.5
    )
    assert EVIDENCE * ceiling.noise < 0.01 and not ceiling.worse_than_random  # 20 examples: no evidence


def test_a_source_that_keeps_most_of_what_random_features_hold_is_kept():
    """A wide network's random features make a strong probe: a ViT 192 wide on digits (10 classes, 20 per class)
    probed 78.7% pretrained, 87.0% random (3.7 standard errors behind), and its partial fine-tuning reached 81.1%
    where scratch reached 55.6%. Its features hold 0.89 of the random ones' lead over chance: not set aside. The
    recorded checks nearest the line on either side (bench/results/source_check_seeds.jsonl) fall where they should."""
    wide = SourceCheck(0.787, 0.870, 3, 4, 559, chance=0.102)
    assert wide.random - wide.pretrained > EVIDENCE * wide.noise  # behind, beyond doubt
    assert (
        wide.kept == pytest.approx(0.89, abs=0.01) and wide.kept >= KEEP_SHARE and not wide.worse_than_random
    )
    assert "no worse than random" in wide.render()
    blank = SourceCheck(0.392, 0.573, 2, 3, 510, chance=0.333)  # tinybert-domains-20: 0.25 of it
    assert blank.kept < KEEP_SHARE and blank.worse_than_random
    # the highest share where scratch won (distilbert-domains-20, seed 4: scratch 54.7%, transfer at most 42.7%) and
    # the lowest where transfer won (resnet59-antsbees-all, seed 1: full fine-tuning 5.4 points over scratch)
    scratch_won = SourceCheck(0.421, 0.513, 4, 1, 510, chance=0.333)
    transfer_won = SourceCheck(0.624, 0.698, 2, 2, 398, chance=0.513)
    for check in (scratch_won, transfer_won):
        assert check.random - check.pretrained > EVIDENCE * check.noise
    assert scratch_won.kept < KEEP_SHARE < transfer_won.kept
    assert scratch_won.worse_than_random and not transfer_won.worse_than_random
    assert SourceCheck(0.5, 0.5, 1, 1, 100, chance=0.5).kept == 1.0  # random at chance: nothing to compare


def test_compare_features_takes_each_sides_best_depth():
    signal, labels = separable()
    noise = np.random.default_rng(2).normal(size=signal.shape)
    pretrained = DepthFeatures({1: noise, 2: noise[:, ::-1].copy()}, labels)
    random = DepthFeatures({1: noise, 2: signal}, labels)
    check = compare_features(pretrained, random)
    assert check.worse_than_random and check.random_depth == 2 and check.samples == len(labels)
    assert check.chance == np.unique(labels, return_counts=True)[1].max() / len(labels)
    assert not compare_features(random, pretrained).worse_than_random


def config(**overrides):
    return hftl.RunConfig(**{"task": "text", "model": "m", "output_dir": "out", **overrides})


WORSE = SourceCheck(0.40, 0.58, 2, 4, 2000, 1 / 3)
BETTER = SourceCheck(0.80, 0.60, 4, 4, 2000, 1 / 3)


@pytest.mark.parametrize("case", ["small_different", "large_different"])
def test_a_different_case_whose_source_is_worse_than_random_trains_the_whole_network_from_scratch(case):
    settled = settle_init(config(case=case), WORSE.worse_than_random)
    assert (settled.case, settled.strategy, settled.init, settled.keep_layers) == (
        "large_different",
        "full",
        "scratch",
        None,
    )
    assert settle_init(config(case=case), BETTER.worse_than_random).init == "pretrained"


@pytest.mark.parametrize(
    "overrides",
    [
        {"case": "large_similar"},  # the user says the data is similar: no check
        {"case": "large_different", "init": "pretrained"},  # the user chose the start
        {"case": "small_different", "strategy": "head"},  # a frozen random body would be no transfer
        {"case": "small_different", "keep_layers": 2},  # a cut of the source: the user chose to transfer
        {"case": "large_different", "regularizer": "l2sp"},  # L2-SP's anchor is the pretrained weights
        {"case": "large_different", "layer_decay": 0.8},
        {"case": "large_different", "unfreeze_schedule": 1},
    ],
)
def test_the_start_stays_with_the_user_where_the_rules_do_not_leave_it_open(overrides):
    settled = settle_init(config(**overrides), True)
    assert settled.init == overrides.get("init", "pretrained") and settled.case == overrides["case"]


def train(model: str, case: str, dataset, tmp_path):
    """One epoch of ``case`` with hftl's defaults (--init auto)."""
    return hftl.train(
        task="text",
        case=case,
        model=model,
        dataset=str(dataset),
        output_dir=str(tmp_path / "run"),
        epochs=1,
        batch_size=16,
    )


@pytest.fixture(scope="module")
def blank_bert(bert_dir, tmp_path_factory):
    """The tiny source BERT with every token, position and type embedding made one vector: whatever the sentence,
    its features are the same, so they say less about the target than random weights do."""
    from transformers import AutoModelForSequenceClassification

    folder = tmp_path_factory.mktemp("blank-bert")
    shutil.copytree(bert_dir, folder, dirs_exist_ok=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        for table in (
            model.bert.embeddings.word_embeddings,
            model.bert.embeddings.position_embeddings,
            model.bert.embeddings.token_type_embeddings,
        ):
            table.weight.copy_(table.weight.mean(dim=0, keepdim=True).expand_as(table.weight))
    model.save_pretrained(folder)
    return folder


def test_a_different_case_on_a_blank_source_trains_from_scratch_and_says_why(
    blank_bert, text_folder, tmp_path
):
    result = train(str(blank_bert), "small_different", text_folder, tmp_path)
    plan = result.plan
    assert (plan.case, plan.strategy, plan.init) == ("large_different", "full", "scratch")
    assert plan.reasons[0].startswith("--init auto with --case small_different: source check")
    assert "worse than random weights" in plan.reasons[0]
    assert result.metrics["parameters"]["percent"] == 100.0  # the whole network trains
    assert result.metrics["init"] == "scratch"


def test_case_auto_on_a_blank_source_trains_from_scratch_without_trials(
    blank_bert, text_folder, tmp_path, capsys
):
    result = train(str(blank_bert), "auto", text_folder, tmp_path)
    assert (result.plan.case, result.plan.strategy, result.plan.init) == (
        "large_different",
        "full",
        "scratch",
    )
    trials = json.loads((tmp_path / "run" / "advice.json").read_text())["trials"]
    assert trials["trials"] == [] and trials["pick"] == "scratch" and trials["cost_ratio"] == 0.0
    assert trials["source_check"]["worse_than_random"]
    assert "Trials: none. The source check found the pretrained features worse" in capsys.readouterr().out
    resumed = earlier_trials(result.config.replace(resume="auto"))  # a resume keeps the pick, no trials
    assert resumed is not None and resumed.candidate().name == "scratch" and resumed.trials == []
    advice = tmp_path / "run" / "advice.json"
    saved = json.loads(advice.read_text())
    for damaged in ({**saved, "trials": {**trials, "pick": "nonsense"}}, [], {"trials": []}):
        advice.write_text(json.dumps(damaged))  # a damaged advice.json: the trials run again, no crash
        assert earlier_trials(result.config.replace(resume="auto")) is None


def test_a_different_case_on_a_useful_source_keeps_it(bert_dir, text_folder, tmp_path):
    result = train(str(bert_dir), "large_different", text_folder, tmp_path)
    assert (result.plan.case, result.plan.init) == ("large_different", "pretrained")
    assert "no worse than random weights" in result.plan.reasons[0]


def test_word_vectors_have_no_probe_twin_and_keep_their_start(glove_file, text_folder, tmp_path):
    result = train(f"vectors:{glove_file}", "large_different", text_folder, tmp_path)
    assert (result.plan.case, result.plan.init) == ("large_different", "pretrained")
    assert not any("source check:" in reason for reason in result.plan.reasons)


def test_streams_multi_label_data_and_word_vectors_are_not_checked():
    from types import SimpleNamespace

    from datasets import Dataset

    from hftl.advisor.start import check_source_features

    table = Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})
    stream = SimpleNamespace(multi_label=False, train=table.to_iterable_dataset())
    multi = SimpleNamespace(multi_label=True, train=table)
    words = SimpleNamespace(multi_label=False, train=table)
    assert check_source_features(config(case="large_different"), None, stream, None, "cpu") is None
    assert check_source_features(config(case="large_different"), None, multi, None, "cpu") is None
    vectors = config(case="large_different", model="vectors:words.txt")
    assert check_source_features(vectors, None, words, None, "cpu") is None


def test_the_check_reads_the_validation_examples_too(bert_dir, text_folder, monkeypatch):
    """Both labelled splits are probed (never the test split): at 20 per class the training split alone was too
    weak a witness (docs/calibration.md)."""
    import hftl.advisor.start as start_module
    from hftl.data.loading import splits_for
    from hftl.tasks import get_task

    seen = {}
    real = start_module.probe_features

    def spy(config, task, splits, *args):
        seen["examples"] = len(splits.train)
        return real(config, task, splits, *args)

    monkeypatch.setattr(start_module, "probe_features", spy)
    run = config(case="large_different", model=str(bert_dir), dataset=str(text_folder))
    splits = splits_for(run, get_task("text"))
    check = start_module.check_source_features(run, get_task("text"), splits, None, "cpu")
    assert seen["examples"] == len(splits.train) + len(splits.validation) == check.samples


def accelerator(**overrides):
    """What resolve_init reads of an Accelerator: one process, the main one, not sharded."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    values = {"is_main_process": True, "num_processes": 1, "device": "cpu", "print": print}
    return SimpleNamespace(**{"distributed_type": DistributedType.NO, **values, **overrides})


def test_a_failed_probe_or_a_sharded_engine_skips_the_check_and_says_so(monkeypatch, capsys):
    from accelerate.utils import DistributedType

    import hftl.advisor.start as start_module

    def broken(*args):
        raise hftl.DataError("features contain NaN or infinite values")

    monkeypatch.setattr(start_module, "check_source_features", broken)
    settled, reason = start_module.resolve_init(
        config(case="large_different"), None, None, None, accelerator()
    )
    assert (settled.init, reason) == ("pretrained", None)
    assert "source check skipped (DataError: features contain NaN" in capsys.readouterr().out
    sharded = accelerator(distributed_type=DistributedType.FSDP, num_processes=1)
    settled, _ = start_module.resolve_init(config(case="large_different"), None, None, None, sharded)
    assert settled.init == "pretrained" and "sharded engines" in capsys.readouterr().out


def test_a_resumed_run_takes_the_start_its_saved_plan_took(blank_bert, text_folder, tmp_path, monkeypatch):
    """Resuming never measures again: a verdict near the line could flip and make the checkpoints another run's."""
    import hftl.advisor.start as start_module
    from hftl.outputs.artifacts import PLAN_FILE

    first = train(str(blank_bert), "small_different", text_folder, tmp_path)
    assert (tmp_path / "run" / PLAN_FILE).is_file() and first.plan.init == "scratch"

    def must_not_run(*args):
        raise AssertionError("the check ran again on resume")

    monkeypatch.setattr(start_module, "check_source_features", must_not_run)
    resumed = config(case="small_different", output_dir=str(tmp_path / "run"), resume="auto")
    settled, reason = start_module.resolve_init(resumed, None, None, None, accelerator())
    assert (settled.case, settled.init) == ("large_different", "scratch") and reason == first.plan.reasons[0]
    # a run whose check was skipped (a sharded engine, a failed probe) keeps the source when it resumes
    unchecked = dataclasses.replace(first.plan, init="pretrained", reasons=first.plan.reasons[1:])
    unchecked.save(tmp_path / "run" / PLAN_FILE)
    settled, reason = start_module.resolve_init(resumed, None, None, None, accelerator())
    assert (settled.case, settled.init, reason) == ("small_different", "pretrained", None)


def test_case_auto_with_a_chosen_init_runs_no_check(monkeypatch):
    import hftl.advisor.start as start_module

    monkeypatch.setattr(start_module, "check_source_features", lambda *a: pytest.fail("checked"))
    assert start_module.trials_source_check(config(case="auto", init="pretrained"), None, None) is None
