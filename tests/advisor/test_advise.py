"""The case advisor: its documented rules on crafted scores, per-depth features for every family, `hftl advise`
(ranking several models, JSON + Markdown rationale) and `--case auto` runs that follow the advice."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

import hftl
from hftl.advisor.advise import advise
from hftl.advisor.decision import DatasetSize, DepthScore, Thresholds, decide
from hftl.advisor.probes import depth_features, pool
from hftl.cli import main
from hftl.outputs.loading import load

RULES = Thresholds(small_per_class=1000, similar_logme=0.05, depth_margin=0.05)


def size(per_class: int, classes: int = 2) -> DatasetSize:
    return DatasetSize(per_class * classes, {str(i): per_class for i in range(classes)})


def profile(logme: list[float], random: list[float]) -> list[DepthScore]:
    return [DepthScore(d, s, r) for d, (s, r) in enumerate(zip(logme, random, strict=True), start=1)]


GOOD_TOP = profile([0.10, 0.20, 0.30, 0.40], [0.10, 0.12, 0.14, 0.15])  # top best, gain 0.25
NO_GAIN = profile([0.10, 0.30, 0.25, 0.20], [0.10, 0.28, 0.24, 0.19])  # top gain 0.01; peak at depth 2
PEAK_EARLY = profile([0.10, 0.60, 0.40, 0.30], [0.0, 0.0, 0.0, 0.0])  # top gain 0.3 but 0.3 below depth 2


@pytest.mark.parametrize(
    "per_class, scores, case, keep",
    [
        (50, GOOD_TOP, "small_similar", None),
        (5000, GOOD_TOP, "large_similar", None),
        (50, NO_GAIN, "small_different", 2),
        (5000, NO_GAIN, "large_different", None),
        (50, PEAK_EARLY, "small_different", 2),  # a clearly better early layer: late features source-specific
        (999, GOOD_TOP, "small_similar", None),  # the size boundary: below the threshold is small
        (1000, GOOD_TOP, "large_similar", None),
    ],
)
def test_decision_follows_the_documented_rules(per_class, scores, case, keep):
    decision = decide(size(per_class), scores, RULES)
    assert (decision.case, decision.keep_layers) == (case, keep)
    assert decision.small == case.startswith("small") and decision.similar == case.endswith("similar")


def test_thresholds_are_overridable_and_the_rationale_names_numbers_and_flags():
    assert decide(size(50), NO_GAIN, Thresholds(1000, similar_logme=0.005, depth_margin=0.2)).case == (
        "small_similar"
    )
    assert decide(size(50), GOOD_TOP, Thresholds(small_per_class=10)).case == "large_similar"
    assert decide(size(50), PEAK_EARLY, Thresholds(depth_margin=0.5)).case == "small_similar"
    rationale = "\n".join(decide(size(50), NO_GAIN, RULES).rationale)
    for text in (
        "50.0 per class < 1000",
        "--advise-small-per-class",
        "+0.0100 < 0.05",
        "--advise-similar-logme",
    ):
        assert text in rationale
    assert "keep the first 2 layers" in rationale


def test_ties_cut_at_the_shallowest_depth_and_useless_pretraining_is_flagged():
    flat = profile([0.2, 0.2, 0.2], [0.3, 0.3, 0.3])
    decision = decide(size(10), flat, RULES, layer_word="stage")
    assert decision.case == "small_different" and decision.keep_layers == 1
    assert any("no better than random weights" in line for line in decision.rationale)


def test_pooling_averages_feature_maps_and_masks_padding():
    maps = torch.arange(2 * 3 * 2 * 2, dtype=torch.float).reshape(2, 3, 2, 2)
    assert torch.equal(pool(maps, "cls"), maps.mean(dim=(2, 3)))
    tokens = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(tokens, "mean", mask).item() == 2.0 and pool(tokens, "cls").item() == 1.0


@pytest.mark.parametrize("family", ["vit", "resnet", "bert"])
def test_one_pass_gives_pooled_features_after_every_layer(family, model_dirs):
    model = load(model_dirs[family])
    if family == "bert":
        batch = {
            "input_ids": torch.tensor([[2, 10, 12, 3], [2, 11, 3, 0]]),
            "attention_mask": torch.tensor([[1] * 4, [1, 1, 1, 0]]),
        }
    else:
        batch = {"pixel_values": torch.randn(2, 3, 32, 32)}
    batch["labels"] = torch.tensor([0, 1])
    found = depth_features(model, [batch, batch], probabilities=True)
    assert found.depths == [1, 2, 3, 4]
    widths = {"vit": [32] * 4, "resnet": [8, 16, 24, 32], "bert": [32] * 4}[family]
    assert [found.features[d].shape for d in found.depths] == [(4, w) for w in widths]
    assert np.allclose(found.source_probabilities.sum(axis=1), 1.0) and found.labels.tolist() == [0, 1, 0, 1]


def test_hftl_advise_ranks_models_and_writes_its_rationale(model_dirs, image_folder, tmp_path, capsys):
    out = tmp_path / "advice"
    models = f"{model_dirs['vit']},{model_dirs['resnet']}"
    code = main(
        [
            "advise",
            "--task",
            "image",
            "--model",
            models,
            "--dataset",
            str(image_folder),
            "--output-dir",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Candidate models, best first" in printed and "gain" in printed
    advice = json.loads((out / "advice.json").read_text())
    ranked = advice["models"]
    assert [m["score"] for m in ranked] == sorted((m["score"] for m in ranked), reverse=True)
    assert advice["recommended"]["model"] == ranked[0]["model"]
    for model in ranked:
        assert [s["depth"] for s in model["scores"]] == [1, 2, 3, 4]
        assert model["size"]["total"] == 48 and model["size"]["per_class"] == {
            "blue": 16,
            "green": 16,
            "red": 16,
        }
        assert model["leep"] is not None and model["leep"] <= 0  # the tiny checkpoints have a classifier
        scores = [
            DepthScore(s["depth"], s["logme"], s["logme_random"], s["h_score"]) for s in model["scores"]
        ]
        again = decide(DatasetSize(48, model["size"]["per_class"]), scores, Thresholds())
        # a small CNN's or ViT's small_different default fine-tunes every layer: the advice names no cut there
        uncut = any(line.startswith("no cut: ") for line in model["decision"]["rationale"])
        assert uncut == (again.case == "small_different")
        assert model["decision"]["case"] == again.case
        assert model["decision"]["keep_layers"] == (None if uncut else again.keep_layers)
    markdown = (out / "advice.md").read_text()
    assert "**Recommended:**" in markdown and "| rank | model |" in markdown and "LogME" in markdown


def test_leep_is_left_out_when_the_checkpoint_has_no_classifier(tmp_path, text_folder):
    from transformers import BertConfig, BertModel

    from tests.conftest import make_bert

    head_less = make_bert(tmp_path / "bert")
    BertModel(BertConfig.from_pretrained(head_less)).save_pretrained(head_less)  # the body only
    (advice,) = advise(
        hftl.RunConfig(task="text", case="auto", model=str(head_less), dataset=str(text_folder))
    )
    assert advice.leep is None and "n/a" in advice.render()


def test_case_auto_run_cuts_where_the_advisor_says(model_dirs, image_folder, tmp_path):
    result = hftl.train(
        task="image",
        case="auto",
        model=str(model_dirs["vit"]),
        dataset=str(image_folder),
        output_dir=str(tmp_path),
        epochs=1,
        batch_size=8,
        lr=0.05,
        advise_similar_logme=100.0,  # nothing is similar: the small dataset gets small_different
        advise_budget=0,  # no trials: the size and LogME rules decide
        strategy="head",  # the textbook's cut (a small ViT's measured default keeps every layer)
    )
    advice = json.loads((tmp_path / "advice.json").read_text())["models"][0]
    assert advice["decision"]["case"] == "small_different" == result.plan.case == result.metrics["case"]
    assert result.plan.truncated
    assert result.plan.keep_layers == advice["decision"]["keep_layers"] == advice["decision"]["best_depth"]
    assert (tmp_path / "advice.md").is_file()
    assert "case: small_different" in (tmp_path / "run_config.yaml").read_text()


def test_case_auto_with_a_low_size_threshold_fine_tunes_everything(model_dirs, text_folder, tmp_path):
    result = hftl.train(
        task="text",
        case="auto",
        model=str(model_dirs["bert"]),
        dataset=str(text_folder),
        output_dir=str(tmp_path),
        epochs=1,
        batch_size=8,
        lr=3e-3,
        advise_small_per_class=10,
        advise_similar_logme=-100.0,
        advise_depth_margin=100.0,
        advise_budget=0,
    )
    assert result.plan.case == "large_similar" and result.plan.strategy == "full"


def test_plan_and_several_models_with_auto_are_clear_errors(model_dirs, image_folder, tmp_path, capsys):
    assert main(["plan", "--task", "image", "--case", "auto", "--model", str(model_dirs["vit"])]) == 2
    assert "--case auto is decided from the data" in capsys.readouterr().err
    with pytest.raises(hftl.ConfigError, match="rank several candidates"):
        hftl.train(
            task="image",
            case="auto",
            model=f"{model_dirs['vit']},{model_dirs['resnet']}",
            dataset=str(image_folder),
            output_dir=str(tmp_path),
        )


def test_probe_features_are_cached_keyed_and_rebuilt_when_damaged(model_dirs, image_folder, tmp_path):
    cache = tmp_path / "features"

    def look(model: str, **settings):
        config = hftl.RunConfig(
            task="image",
            case="auto",
            model=str(model),
            dataset=str(image_folder),
            feature_cache_dir=str(cache),
            **settings,
        )
        (advice,) = advise(config)
        return advice

    first = look(model_dirs["vit"])
    files = sorted(cache.glob("probe-*.npz"))
    assert len(files) == 2  # the pretrained weights' features and the random-weights baseline's
    again = look(model_dirs["vit"])
    assert any("reused from the feature cache" in note for note in again.notes)
    assert [dataclasses.astuple(s) for s in again.scores] == [dataclasses.astuple(s) for s in first.scores]

    for path in files:  # damaged files are detected (zip CRC) and rebuilt
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    rebuilt = look(model_dirs["vit"])
    assert not any("reused" in note for note in rebuilt.notes)
    assert [s.logme for s in rebuilt.scores] == pytest.approx([s.logme for s in first.scores])

    from hftl.advisor.probes import DepthFeatures, _read, _write

    whole = _read(
        files[0]
    )  # one file edited to fewer depths than its twin: both are rebuilt, not scored apart
    _write(
        files[0],
        DepthFeatures({1: whole.features[1]}, whole.labels, whole.source_probabilities, whole.pooling),
    )
    mended = look(model_dirs["vit"])
    assert [s.logme for s in mended.scores] == pytest.approx([s.logme for s in first.scores])
    assert _read(files[0]).depths == whole.depths

    look(model_dirs["resnet"])  # another model misses: two more files
    assert len(list(cache.glob("probe-*.npz"))) == 4
    look(model_dirs["vit"], advise_pooling="mean")  # so does another pooling (ViT's tokens; one more pair)
    assert len(list(cache.glob("probe-*.npz"))) == 6
    look(model_dirs["vit"], feature_cache=False)
    assert len(list(cache.glob("probe-*.npz"))) == 6
    look(model_dirs["vit"], max_image_pixels=400)  # the 40x40 images decoded smaller: features of their own
    assert len(list(cache.glob("probe-*.npz"))) == 8


def test_probe_features_of_another_text_column_are_not_read_from_the_cache(bert_dir, text_folder, tmp_path):
    """The cache key names the columns read: --input-column b after a (or a sentence pair after one column) builds
    its own features instead of reusing column a's, which would decide the source check on the wrong text."""
    import csv

    from hftl.advisor.sample_features import probe_features
    from hftl.data.loading import splits_for
    from hftl.tasks import get_task

    with open(text_folder / "train.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    two = tmp_path / "two.csv"
    with open(two, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "label"])
        writer.writerows(
            [row["text"], f"noise {i % 7} words here", row["label"]] for i, row in enumerate(rows)
        )
    task = get_task("text")

    def probe(**columns):
        config = hftl.RunConfig(
            task="text",
            case="auto",
            model=str(bert_dir),
            dataset=str(two),
            label_column="label",
            feature_cache_dir=str(tmp_path / "cache"),
            advise_max_samples=32,
            **columns,
        )
        return probe_features(config, task, splits_for(config, task), device="cpu")

    a = probe(input_column="a")
    assert probe(input_column="a").reused  # the same columns: read back
    b = probe(input_column="b")
    assert not b.reused and not np.array_equal(a.pretrained.features[1], b.pretrained.features[1])
    assert not probe(text_columns=["a", "b"]).reused


def test_hftl_advise_writes_nothing_inside_the_dataset_folder(model_dirs, image_folder, tmp_path, capsys):
    """advice.json beside the images would be read as data by the next run on the folder."""
    data = shutil.copytree(image_folder, tmp_path / "data")
    args = ["advise", "--task", "image", "--model", str(model_dirs["vit"]), "--dataset", str(data)]
    assert main([*args, "--output-dir", str(data / "advice")]) == 2
    err = capsys.readouterr().err
    assert "hftl: error: --output-dir" in err and "is inside --dataset" in err
    assert sorted(p.name for p in data.iterdir()) == sorted(p.name for p in image_folder.iterdir())


def test_a_probe_file_of_the_wrong_shape_or_with_nan_is_rebuilt_not_scored(tmp_path):
    """The probe cache is an untrusted folder: a file that is not what ``depth_features`` wrote (edited, foreign,
    a link) reads as a miss, not as features for LogME to score or crash on."""
    import numpy as np

    from hftl.advisor.probes import DepthFeatures, _read, _write

    def stored(**changes) -> DepthFeatures | None:
        values = {
            "features": {1: np.ones((4, 3), np.float32), 2: np.ones((4, 5), np.float32)},
            "labels": np.array([0, 1, 0, 1]),
            "source_probabilities": np.full((4, 2), 0.5, np.float32),
            **changes,
        }
        path = tmp_path / "probe-x.npz"
        _write(path, DepthFeatures(**values))
        return _read(path)

    good = stored()
    assert good is not None and good.depths == [1, 2] and good.labels.tolist() == [0, 1, 0, 1]
    nan = np.ones((4, 3), np.float32)
    nan[2, 1] = np.nan
    for bad in (
        {"features": {1: nan}},
        {"features": {1: np.ones((3, 3), np.float32)}},  # rows that are not the labels'
        {"features": {1: np.ones(4, np.float32)}},
        {"features": {0: np.ones((4, 3), np.float32)}},
        {"labels": np.array([0.5, 1.0, 0.0, 1.0])},
        {"source_probabilities": np.full((2, 2), 0.5, np.float32)},
        {"source_probabilities": np.full((4, 2), np.inf, np.float32)},
    ):
        assert stored(**bad) is None, bad
    link = tmp_path / "probe-link.npz"
    link.symlink_to(tmp_path / "probe-x.npz")
    assert stored() is not None and _read(link) is None


def test_the_advised_cut_is_dropped_where_the_familys_measured_default_keeps_every_layer():
    """The run's plan refuses a --keep-layers it would not use, so the advice names a cut only where small_different
    cuts: the textbook rule (an uncovered BERT-base) or an explicit --strategy head, not a small ResNet's measured
    full fine-tuning."""
    from transformers import BertConfig, ResNetConfig

    from hftl.advisor.advise import uncut_where_measured
    from hftl.advisor.decision import Decision
    from hftl.backbones import backbone_for

    advised = Decision("small_different", 2, True, False, 4, 2, ("size: ...", "cut: keep the first 2 stages"))
    resnet = ResNetConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], embedding_size=8)
    config = hftl.RunConfig(task="image", case="auto", model="m")
    uncut = uncut_where_measured(advised, config, backbone_for(resnet), resnet)
    assert uncut.keep_layers is None and uncut.rationale[-1].startswith("no cut: the resnet default")
    assert not any(line.startswith("cut: ") for line in uncut.rationale)
    head = uncut_where_measured(advised, config.replace(strategy="head"), backbone_for(resnet), resnet)
    assert head == advised
    partial = uncut_where_measured(advised, config.replace(strategy="partial"), backbone_for(resnet), resnet)
    assert partial == advised  # partial freezes that many: used
    contrastive = uncut_where_measured(
        advised, config.replace(strategy="contrastive"), backbone_for(resnet), resnet
    )
    assert contrastive.rationale[-1] == "no cut: --strategy contrastive keeps every stage"
    bert = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12)
    text = hftl.RunConfig(task="text", case="auto", model="m")
    assert uncut_where_measured(advised, text, backbone_for(bert), bert) == advised


def test_case_auto_gives_keep_layers_only_to_a_decided_plan_that_uses_it():
    """``--case auto --keep-layers 2``: the advisor may decide a case whose plan keeps every layer, which would refuse
    the setting after the advice was paid for; it is dropped there (and said), kept for a cut or partial freezing."""
    from hftl.advisor.advise import apply_decision
    from hftl.advisor.decision import Decision

    config = hftl.RunConfig(task="text", case="auto", model="m", keep_layers=2)
    cut = Decision("small_different", 3, True, False, 4, 3, ())
    uncut = Decision("small_different", None, True, False, 4, 4, ())
    large = Decision("large_different", None, False, False, 4, 4, ())
    assert apply_decision(config, cut).keep_layers == 2  # the user's over the advised
    assert apply_decision(config.replace(keep_layers=None), cut).keep_layers == 3
    assert apply_decision(config, uncut).keep_layers is None
    assert apply_decision(config, large).keep_layers is None
    assert apply_decision(config.replace(strategy="partial"), large).keep_layers == 2
