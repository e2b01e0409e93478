"""The advisor's trials: successive halving within the budget, losers cut after rung 0, ties reported and settled
the same way every time, the test split never read, and --case auto trains the pick."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from datasets import ClassLabel, Dataset

import hftl
import hftl.advisor.trials as trials_module
from hftl.advisor.candidates import candidates_for
from hftl.advisor.trials import (
    CANDIDATES,
    EVAL_WEIGHT,
    SEED_VARIANCE,
    Budget,
    TrialsReport,
    decide,
    noise_of,
    promoted,
    run_trials,
    stratified_share,
)


def labelled(per_class: dict[int, int]) -> Dataset:
    labels = [label for label, count in per_class.items() for _ in range(count)]
    data = Dataset.from_dict({"text": [f"t{i}" for i in range(len(labels))], "label": labels})
    return data.cast_column("label", ClassLabel(names=[str(k) for k in sorted(per_class)]))


def config(tmp_path, **overrides):
    settings = {
        "task": "text",
        "case": "auto",
        "model": "m",
        "epochs": 4,
        "output_dir": str(tmp_path / "run"),
    }
    return hftl.RunConfig(**{**settings, **overrides})


class FakeRuns:
    """Stands in for hftl's run: each plan's accuracy grows with its epochs and data; records what it was given; each
    trial takes a tenth of a second to start plus a millisecond per cost unit on the advisor's (patched) clock."""

    def __init__(self, quality: dict[str, float], fail: tuple[str, ...] = ()):
        self.quality, self.fail, self.calls, self.now = quality, fail, [], 0.0

    def clock(self) -> float:
        return self.now

    def __call__(self, settings, data):
        name = "scratch" if settings.init == "scratch" else settings.strategy
        self.calls.append((name, settings.epochs, len(data["train"]), sorted(data)))
        cost = next(c.cost for c in CANDIDATES if c.name == name)
        training = 1e-3 * (
            cost * settings.epochs * len(data["train"]) + EVAL_WEIGHT * len(data["validation"])
        )
        self.now += 0.1 + training
        if name in self.fail:
            raise hftl.ConfigError(f"{name} does not apply")
        score = self.quality[name] * (1 - 0.1 / settings.epochs) * (0.9 + 0.1 * len(data["train"]) / 400)
        return SimpleNamespace(metrics={"best": {"eval_accuracy": score}, "train_seconds": training})


@pytest.fixture
def fake_runs(monkeypatch):
    """FakeRuns on the advisor's clock."""

    def make(*args, **kwargs) -> FakeRuns:
        runs = FakeRuns(*args, **kwargs)
        monkeypatch.setattr(trials_module, "time", SimpleNamespace(perf_counter=runs.clock))
        return runs

    return make


def test_stratified_share_keeps_every_class():
    data = labelled({0: 100, 1: 100, 2: 1})
    part = stratified_share(data, "label", 0.1, seed=0)
    assert sorted(part["label"]).count(0) == 10 and part["label"].count(2) == 1
    assert stratified_share(data, "label", 1.0, seed=0) is data


def test_successive_halving_cuts_losers_and_stays_within_budget(tmp_path, fake_runs):
    runs = fake_runs({"full": 0.9, "partial": 0.75, "lora": 0.6, "head": 0.5, "scratch": 0.4})
    train, validation = labelled({0: 200, 1: 200}), labelled({0: 100, 1: 100})
    report = run_trials(config(tmp_path), train, validation, "label", runs)
    rung0 = [t for t in report.trials if t.rung == 0]
    rung1 = [t for t in report.trials if t.rung == 1]
    assert [t.candidate for t in rung0] == report.order  # 200 per class: large data, full fine-tuning first
    assert report.order == ["full", "partial", "head", "lora", "scratch"] and report.per_class == 200
    assert {t.candidate for t in rung1} == {"full", "partial"}  # the losers were cut after rung 0
    assert all(
        t.examples == 400 for t in rung1
    )  # the survivors get more: all the data, at least as many epochs
    assert rung1[0].examples * rung1[0].epochs > rung0[0].examples * rung0[0].epochs
    full_run = 0.1 + 1e-3 * 4 * (400 + EVAL_WEIGHT * 200)  # a start, 4 epochs of training, scored after each
    assert runs.now <= report.budget * full_run + 1e-9  # the budget: 1.5 full runs, in seconds
    assert report.cost_ratio == pytest.approx(
        runs.now / full_run, rel=0.05
    )  # the fitted clock (seconds rounded)
    full, partial = (next(t for t in rung1 if t.candidate == name) for name in ("full", "partial"))
    assert report.pick == "full" and report.margin == pytest.approx(full.score - partial.score)
    assert all(
        sorted_keys == ["train", "validation"] for *_, sorted_keys in runs.calls
    )  # never the test split
    text = report.render()
    assert f"full beats partial by {100 * report.margin:.1f} points" in text


def test_trials_score_once_and_rung_0_scores_on_part_of_a_large_validation_split(tmp_path, fake_runs):
    """Little training data, much validation data: scoring would eat the budget, so rung 0 scores on a stratified
    part (at least 200 examples) and the survivors are scored on all of it; every trial evaluates only at its end."""
    runs = fake_runs({"full": 0.9, "partial": 0.85, "lora": 0.7, "head": 0.6, "scratch": 0.5})
    settings = []
    runs_with_settings = lambda s, d: settings.append(s) or runs(s, d)  # noqa: E731
    train, validation = labelled({0: 20, 1: 20}), labelled({0: 500, 1: 500})
    report = run_trials(config(tmp_path, epochs=10), train, validation, "label", runs_with_settings)
    rung0 = [t for t in report.trials if t.rung == 0]
    rung1 = [t for t in report.trials if t.rung == 1]
    assert all(200 <= t.scored < 1000 for t in rung0) and rung1 and all(t.scored == 1000 for t in rung1)
    assert {s.eval_strategy for s in settings} == {"end"}


def test_a_rung_that_cannot_pay_for_an_epoch_trains_one_on_a_share():
    budget = Budget(runs=1.0, epochs=2, train_examples=1000, validation_examples=300)
    two = [c for c in CANDIDATES if c.name in ("full", "partial")]
    schedule = budget.schedule(two, budget.units / 2, 300)
    assert schedule.epochs == 1 and 0 < schedule.share < 1
    spent = sum(c.cost for c in two) * schedule.example_epochs + 2 * EVAL_WEIGHT * 300
    assert spent == pytest.approx(budget.units / 2)  # the whole half, training and scoring
    assert budget.schedule(two, 100 * budget.units, 300).epochs == 2  # never beyond the run's epochs


def test_a_plan_that_does_not_apply_is_skipped_and_said(tmp_path, fake_runs):
    runs = fake_runs({"full": 0.9, "partial": 0.85, "lora": 0.7, "head": 0.6, "scratch": 0.5}, fail=("lora",))
    report = run_trials(config(tmp_path), labelled({0: 40, 1: 40}), labelled({0: 20, 1: 20}), "label", runs)
    lora = next(t for t in report.trials if t.candidate == "lora")
    assert lora.score is None and "does not apply" in lora.error
    assert "does not apply" in report.render()


def test_a_tie_within_noise_is_reported_and_settled_by_the_candidate_order():
    report = TrialsReport(metric="accuracy", validation_examples=300, budget=1.5)
    decide(report, {"head": 0.905, "full": 0.900, "scratch": 0.7}, list(CANDIDATES))
    assert report.tie and report.pick == "full" and report.runner_up == "head"
    assert report.tied == ["full", "head"]  # in the candidates' order
    assert report.noise == pytest.approx(noise_of(0.905, 300))
    assert "tie within noise (+-" in report.render() and "of full, head: full chosen" in report.render()
    clear = TrialsReport(metric="accuracy", validation_examples=300, budget=1.5)
    decide(clear, {"head": 0.95, "full": 0.80}, list(CANDIDATES))
    assert not clear.tie and clear.pick == "head"


def test_rung_1_keeps_the_best_its_ties_and_the_next_plans_within_noise_of_the_last_kept():
    names = lambda kept: [c.name for c in kept]  # noqa: E731
    n = 236  # one standard error of a difference here: about 4.5 points
    # minilm-yelp-20, seed 2: head ties with full; partial, 1.2 points under head, is kept as the third
    rung0 = {"partial": 0.797, "full": 0.852, "head": 0.809, "lora": 0.763, "scratch": 0.513}
    assert names(promoted(rung0, list(CANDIDATES), n)) == ["partial", "full", "head"]
    # no ties: the two best, and a third only within noise of the second
    clear = {"partial": 0.60, "full": 0.90, "head": 0.80, "lora": 0.79, "scratch": 0.50}
    assert names(promoted(clear, list(CANDIDATES), n)) == ["full", "head", "lora"]
    apart = {"partial": 0.60, "full": 0.90, "head": 0.80, "lora": 0.70, "scratch": 0.50}
    assert names(promoted(apart, list(CANDIDATES), n)) == ["full", "head"]
    # ties fill the places in the candidates' order, the best always kept
    level = {"partial": 0.80, "full": 0.80, "head": 0.81, "lora": 0.80, "scratch": 0.80}
    assert names(promoted(level, list(CANDIDATES), n)) == ["partial", "full", "head"]


def test_no_plan_training_is_the_advisors_error_and_an_older_tie_names_its_pick(tmp_path, fake_runs):
    every = ("full", "partial", "lora", "head", "scratch")
    runs = fake_runs({name: 0.5 for name in every}, fail=every)
    with pytest.raises(hftl.HftlError, match="no candidate plan trained"):
        run_trials(config(tmp_path), labelled({0: 40, 1: 40}), labelled({0: 20, 1: 20}), "label", runs)
    older = TrialsReport(
        "accuracy", 300, 1.5, pick="partial", runner_up="full", margin=0.0, noise=0.03, tie=True
    )
    assert "of partial: partial chosen" in older.render()  # advice.json from before the tied plans were saved


def test_the_noise_counts_what_another_seed_moves_a_trial_by():
    """Scored on many examples the validation sample's noise vanishes, a seed's does not: two trials 3 points apart
    on 10,000 examples are still a tie (the calibration's seeds reversed such leads)."""
    binomial = (2 * 0.8 * 0.2 / 300) ** 0.5
    assert noise_of(0.8, 300) > binomial
    assert noise_of(0.8, 10**9) == pytest.approx((2 * 0.8 * 0.2 * SEED_VARIANCE) ** 0.5)
    report = TrialsReport(metric="accuracy", validation_examples=10_000, budget=1.5)
    decide(report, {"full": 0.83, "partial": 0.80}, list(CANDIDATES))
    assert report.tie and report.pick == "partial"
    assert noise_of(0.999, 10_000) < 0.005  # near-perfect scores leave little room to move


def test_case_auto_trains_the_plan_the_trials_pick(model_dirs, text_folder, tmp_path):
    result = hftl.train(
        task="text",
        case="auto",
        model=str(model_dirs["bert"]),
        dataset=str(text_folder),
        output_dir=str(tmp_path),
        epochs=1,
        batch_size=8,
    )
    advice = json.loads((tmp_path / "advice.json").read_text())
    pick = advice["recommended"]
    assert advice["recommended"]["by"] == "trials" and advice["trials"]["pick"]
    assert (result.plan.case, result.plan.strategy) == (pick["case"], pick["strategy"])
    assert "## Trials (these decide)" in (tmp_path / "advice.md").read_text()
    assert not (tmp_path / ".hftl-trials").exists()
    assert {t["candidate"] for t in advice["trials"]["trials"]} == {c.name for c in CANDIDATES}


def test_case_auto_on_images_hands_the_trials_the_image_tie_order(
    model_dirs, image_folder, tmp_path, monkeypatch
):
    """The task's modality reaches the trials (full fine-tuning first on images) and is saved with them."""
    import hftl.advisor.advise as advise_module

    seen = {}

    def trials(config, train, validation, label_column, run, metric, check, modality):
        seen["modality"] = modality
        order = [c.name for c in candidates_for(config, 20, modality)]
        return TrialsReport(
            metric=metric,
            validation_examples=len(validation),
            budget=1.5,
            order=order,
            pick=order[0],
            modality=modality,
        )

    monkeypatch.setattr(advise_module, "run_trials", trials)
    result = hftl.train(
        task="image",
        case="auto",
        model=str(model_dirs["vit"]),
        dataset=str(image_folder),
        output_dir=str(tmp_path),
        epochs=1,
        batch_size=8,
        init="pretrained",
    )
    assert seen["modality"] == "image" and result.plan.strategy == "full"
    saved = json.loads((tmp_path / "advice.json").read_text())["trials"]
    assert saved["modality"] == "image" and saved["order"][0] == "full"


def test_hftl_advise_prints_the_prior_and_the_trials_that_decide(model_dirs, text_folder, tmp_path, capsys):
    from hftl.cli import main

    out = tmp_path / "advice"
    args = ["advise", "--task", "text", "--model", str(model_dirs["bert"]), "--dataset", str(text_folder)]
    assert (
        main(
            [*args, "--output-dir", str(out), "--epochs", "1", "--batch-size", "8", "--advise-budget", "0.5"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "gain" in printed and "Trials (successive halving" in printed and "pick: " in printed
    advice = json.loads((out / "advice.json").read_text())
    assert advice["recommended"]["by"] == "trials" and advice["models"][0]["scores"]


def test_resuming_a_case_auto_run_keeps_its_trials_pick(model_dirs, text_folder, tmp_path, monkeypatch):
    """An interrupted --case auto run resumes with the plan its trials chose, without running them again."""
    import hftl.advisor.advise as advise_module

    settings = dict(
        task="text",
        case="auto",
        model=str(model_dirs["bert"]),
        dataset=str(text_folder),
        output_dir=str(tmp_path),
        epochs=1,
        batch_size=8,
        advise_budget=0.5,
    )
    first = hftl.train(**settings)

    def no_trials(*args, **kwargs):
        raise AssertionError("the trials ran again")

    monkeypatch.setattr(advise_module, "run_trials", no_trials)
    resumed = hftl.train(**settings, resume="auto")
    assert (resumed.plan.case, resumed.plan.strategy) == (first.plan.case, first.plan.strategy)


def test_a_trials_folder_that_is_a_link_is_removed_as_a_link_and_its_target_kept(tmp_path, fake_runs):
    """The trials' folders (``OUT/.hftl-trials/rungN-plan``) are made and removed by the advisor: a link planted at
    ``.hftl-trials`` must not make it delete the user's folders of those names where the link leads."""
    victim = tmp_path / "victim"
    (victim / "rung0-full").mkdir(parents=True)
    (victim / "rung0-full" / "keep.txt").write_text("the user's")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / trials_module.TRIALS_DIR).symlink_to(victim, target_is_directory=True)
    runs = fake_runs({"full": 0.9, "partial": 0.85, "lora": 0.7, "head": 0.6, "scratch": 0.5})
    run_trials(config(tmp_path), labelled({0: 40, 1: 40}), labelled({0: 20, 1: 20}), "label", runs)
    assert (victim / "rung0-full" / "keep.txt").read_text() == "the user's"
    assert not (tmp_path / "run" / trials_module.TRIALS_DIR).is_symlink()
