"""`hftl compare` and the benefit arithmetic of hftl.recipes.report: start, slope (area, steps to target), asymptote."""

from __future__ import annotations

import json

import pytest

import hftl
from hftl.cli import main
from hftl.config import RunConfig
from hftl.recipes.compare import CompareSettings, parse_sizes, rebuild_report, scratch_config
from hftl.recipes.report import area_under_curve, benefits, curve_points, steps_to, verdict
from hftl.settings.compare import COMPARE_PLANS

PNG = b"\x89PNG\r\n\x1a\n"


def curve(values: list[float], every: int = 10) -> list[dict]:
    return [{"step": every * (i + 1), "eval_accuracy": v} for i, v in enumerate(values)]


def test_benefits_are_start_area_steps_to_target_and_best():
    runs = {
        "transfer": [curve([0.6, 0.8, 0.9, 0.9]), curve([0.7, 0.8, 0.9, 0.95])],
        "scratch": [curve([0.3, 0.5, 0.6, 0.8]), curve([0.3, 0.4, 0.7, 0.8])],
    }
    report = benefits(runs, "accuracy")
    arms = report["arms"]
    assert report["target"] == pytest.approx(0.9 * 0.925)  # 90% of the better mean best (transfer)
    assert arms["transfer"]["start"]["mean"] == pytest.approx(0.65)
    assert arms["scratch"]["asymptote"]["mean"] == pytest.approx(0.8)
    assert arms["transfer"]["steps_to_target"]["mean"] == pytest.approx(30)  # 0.8325: both seeds at step 30
    assert (
        arms["scratch"]["steps_to_target"]["mean"] is None
        and arms["scratch"]["steps_to_target"]["reached"] == 0
    )
    assert report["benefit"]["start"] == pytest.approx(0.35)
    assert report["benefit"]["asymptote"] == pytest.approx(0.925 - 0.8)
    steps, values = curve_points(runs["transfer"][0], "accuracy")
    assert area_under_curve(steps, values) == pytest.approx((0.7 + 0.85 + 0.9) / 3)
    assert steps_to(steps, values, 0.99) is None


def test_steps_to_target_counts_only_the_seeds_that_reach_it():
    runs = {"transfer": [curve([0.9]), curve([0.2])], "scratch": [curve([0.1]), curve([0.1])]}
    arms = benefits(runs, "accuracy", target=0.5)["arms"]
    assert arms["transfer"]["steps_to_target"] == {"mean": 10.0, "std": 0.0, "reached": 1}
    assert arms["scratch"]["steps_to_target"]["mean"] is None


def test_the_baseline_keeps_the_architecture_and_drops_conservative_settings(tmp_path):
    transfer = RunConfig(
        task="image",
        case="small_different",
        keep_layers=2,
        regularizer=["l2sp"],
        layer_decay=0.7,
        unfreeze_schedule=1,
        strategy="lora",
    )
    scratch = scratch_config(transfer, None, tmp_path)
    assert (scratch.case, scratch.keep_layers, scratch.strategy, scratch.init) == (
        "small_different",
        2,
        "full",
        "scratch",
    )
    assert scratch.regularizer is None and scratch.layer_decay is None and scratch.unfreeze_schedule is None
    assert (
        scratch_config(RunConfig(task="text", case="small_similar"), 0.01, tmp_path).case == "large_different"
    )


def test_sizes_and_seeds_are_parsed_with_clear_errors():
    assert parse_sizes("100, 1000,all") == [100, 1000, None]
    with pytest.raises(hftl.ConfigError, match="'ten' is not a positive integer"):
        parse_sizes("ten")
    with pytest.raises(hftl.ConfigError, match="--seeds"):
        CompareSettings(seeds="1,x")
    with pytest.raises(hftl.ConfigError, match="--seeds: each seed must be from 0 to 4294967295, got -3"):
        CompareSettings(seeds="1,-3")


def test_hftl_compare_writes_report_plots_and_summaries(model_dirs, image_folder, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--task", "image", "--model", str(model_dirs["vit"]), "--dataset", str(image_folder)]
    args += ["--output-dir", str(out), "--train-sizes", "12,all", "--epochs", "1", "--batch-size", "8"]
    args += ["--lr", "0.05", "--evals-per-epoch", "3", "--case", "auto", "--advise-similar-logme", "-100"]
    args += ["--advise-depth-margin", "100", "--plans", "case"]
    assert main(args) == 0
    assert "start" in capsys.readouterr().out
    for name in ("report.json", "report.md", "report.html", "curves-12.png", "curves-all.png", "sizes.png"):
        assert (out / name).is_file(), name
    assert (out / "curves-all.png").read_bytes().startswith(PNG)
    report = json.loads((out / "report.json").read_text())
    assert [s["train_examples"] for s in report["sizes"]] == [12, 48]
    for size in report["sizes"]:
        assert size["case"] == "small_similar"  # resolved by the advisor (forced thresholds), per size
        assert set(size["benefit"]) == {"start", "auc", "asymptote"}
        for arm in ("transfer", "scratch"):
            (points,) = size["curves"][arm]
            assert len(points) >= 2 and points[-1]["epoch"] == 1  # mid-epoch evaluations, then the epoch end
            assert (out / size["output_dirs"][arm][0] / "metrics.json").is_file()
    all_size = report["sizes"][1]
    assert all_size["eval_steps"] == 2 and [p["step"] for p in all_size["curves"]["scratch"][0]] == [2, 4, 6]
    scratch_metrics = json.loads((out / "runs/size-all/seed-42/scratch/metrics.json").read_text())
    assert scratch_metrics["init"] == "scratch" and scratch_metrics["strategy"] == "full"
    assert (out / "runs/size-all/advice.json").is_file()
    markdown = (out / "report.md").read_text()
    assert "![learning curves, 48 examples](curves-all.png)" in markdown and "asymptote: best" in markdown
    assert "data:image/png;base64," in (out / "report.html").read_text()
    rebuilt = rebuild_report(out, target=0.5)  # new target, no training
    assert all(size["target"] == 0.5 for size in rebuilt["sizes"])
    assert json.loads((out / "report.json").read_text())["sizes"][0]["target"] == 0.5
    # a second compare into the folder would replace the first's trained runs: refused before any data is read
    capsys.readouterr()
    before = (out / "runs/size-all/seed-42/scratch/metrics.json").read_bytes()
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "holds an earlier compare (report.json, runs)" in error and "--overwrite-output-dir" in error
    assert (out / "runs/size-all/seed-42/scratch/metrics.json").read_bytes() == before


def test_an_earlier_compare_is_continued_or_replaced_only_when_told(tmp_path):
    from hftl.config import RunConfig
    from hftl.recipes.compare import check_compare_folder

    (tmp_path / "runs").mkdir()
    config = RunConfig(task="text", case="small_similar", output_dir=str(tmp_path))
    with pytest.raises(hftl.ConfigError, match=r"holds an earlier compare \(runs\)"):
        check_compare_folder(tmp_path, config)
    check_compare_folder(tmp_path, config.replace(resume="auto"))
    check_compare_folder(tmp_path, config.replace(overwrite_output_dir=True))
    check_compare_folder(tmp_path / "new", config)


def test_hftl_compare_refuses_a_training_runs_folder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    args = ["compare", "--task", "text", "--model", "m", "--dataset", "d", "--output-dir", str(out)]
    assert main(args) == 2
    assert "holds a training run" in capsys.readouterr().err


def test_hftl_compare_help_lists_its_own_and_the_run_flags(capsys):
    assert main(["compare", "--help"]) == 0
    printed = capsys.readouterr().out
    assert "--train-sizes" in printed and "--scratch-lr" in printed and "--regularizer" in printed


def test_the_verdict_names_the_best_plan_and_its_margin_over_scratch():
    runs = {
        "head": [curve([0.6, 0.7])],
        "full": [curve([0.5, 0.9])],
        "scratch": [curve([0.3, 0.8])],
    }
    figures = benefits(runs, "accuracy")
    assert figures["best_plan"] == "full" and figures["benefits"]["head"]["start"] == pytest.approx(0.3)
    size = {**figures, "train_examples": 1200}
    assert verdict(size) == (
        "With 1,200 training examples full is best: accuracy 0.9000, +10.0 points over scratch (0.8000), "
        "starting +20.0 points higher."
    )
    losing = benefits({"head": [curve([0.5, 0.6])], "scratch": [curve([0.4, 0.7])]}, "accuracy")
    assert verdict({**losing, "train_examples": 50}) == (
        "With 50 training examples no plan beats scratch: scratch reaches accuracy 0.7000, the best plan (head) "
        "0.6000 (-10.0 points)."
    )


def test_hftl_compare_trains_every_plan_against_scratch(model_dirs, text_folder, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--task", "text", "--model", str(model_dirs["bert"]), "--dataset", str(text_folder)]
    assert (
        main([*args, "--output-dir", str(out), "--epochs", "1", "--batch-size", "8", "--keep-layers", "1"])
        == 0
    )
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    (size,) = report["sizes"]
    assert set(size["curves"]) == {"head", "head_cut", "partial", "lora", "full", "scratch"}
    assert set(size["benefits"]) == {"head", "head_cut", "partial", "lora", "full"}
    for plan, (case, strategy) in COMPARE_PLANS.items():
        metrics = json.loads((out / size["output_dirs"][plan][0] / "metrics.json").read_text())
        assert (metrics["case"], metrics["strategy"], metrics["init"]) == (case, strategy, "pretrained")
    assert verdict(size) in printed and verdict(size) in (out / "report.md").read_text()
    best = max(size["arms"], key=lambda arm: size["arms"][arm]["asymptote"]["mean"])
    assert f" {best} is best" in verdict(size) or "no plan beats scratch" in verdict(size)
    header = next(
        line for line in (out / "report.md").read_text().splitlines() if line.startswith("|  | head")
    )
    assert header == "|  | head | head_cut | partial | lora | full | scratch |"
