"""Multi-label classification end to end: a tiny model learns label sets (coloured squares, keywords) well above the
all-zero and all-one baselines; the loss is BCE-with-logits on multi-hot targets; ``pipeline(top_k=None)`` and
``hftl.predict`` give every label with the same sigmoid scores; the feature cache, resume and the run report work."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, List
from transformers import AutoImageProcessor, pipeline

import hftl
from hftl.advisor.advise import trial_metric
from hftl.advisor.trials import run_trials, stratified_share
from hftl.config import RunConfig
from hftl.training.class_weights import AUTO_CAP, class_weights
from hftl.training.metrics import compute_metrics, load_metrics
from tests.conftest import FILLER
from tests.helpers import assert_resume_matches, quick_train

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
TOPICS = {"sport": ("match", "goal"), "food": ("pizza", "soup"), "music": ("song", "guitar")}


def write_squares(root: Path, sizes: tuple[int, int] = (48, 24), seed: int = 0) -> Path:
    """An image folder with a metadata.jsonl per split (datasets' ImageFolder layout): grey 32x32 images with a
    square of each colour in the example's label set (any number of them, none included)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "validation"), sizes, strict=True):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(count):
            pixels = np.full((32, 32, 3), 128, dtype=np.uint8)
            labels = [name for name in COLOURS if rng.random() < 0.5]
            for slot, name in enumerate(labels):
                top, left = rng.integers(0, 12), 11 * slot + rng.integers(0, 2)
                pixels[top + 4 : top + 14, left : left + 10] = COLOURS[name]
            Image.fromarray(pixels).save(folder / f"{i}.png")
            lines.append(json.dumps({"file_name": f"{i}.png", "labels": labels}))
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def keyword_rows(count: int, seed: int) -> list[dict]:
    """Sentences of filler words plus a keyword of each topic in the example's label set."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(count):
        labels = [topic for topic in TOPICS if rnd.random() < 0.4]
        words = rnd.sample(FILLER, 4) + [rnd.choice(TOPICS[topic]) for topic in labels]
        rnd.shuffle(words)
        rows.append({"text": " ".join(words), "labels": labels})
    return rows


def write_keywords(root: Path, sizes: tuple[int, int] = (96, 40)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", sizes[0], 1), ("validation", sizes[1], 2)):
        rows = keyword_rows(count, seed)
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def baselines(references: list[list[int]]) -> float:
    """The better micro-F1 of predicting no label or every label."""
    metrics = load_metrics(["f1_micro"], multi_label=True)
    width = len(references[0])
    return max(
        compute_metrics(metrics, [[value] * width for _ in references], references)["f1_micro"]
        for value in (0, 1)
    )


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_squares(tmp_path_factory.mktemp("squares"))


@pytest.fixture(scope="module")
def keywords(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_keywords(tmp_path_factory.mktemp("keywords"))


@pytest.fixture(scope="module")
def squares_run(resnet_dir, squares, tmp_path_factory):
    """The tiny ResNet's stages 3-4 and head trained on the squares (stem and stages 1-2 frozen and cached)."""
    out = tmp_path_factory.mktemp("squares-run")
    return quick_train(
        "image",
        "large_similar",
        resnet_dir,
        squares,
        out,
        strategy="partial",
        epochs=6,
        lr=2e-2,
        warmup_ratio=0.0,
        augment=False,
        feature_cache_dir=str(out / "features"),
    )


@pytest.fixture(scope="module")
def keywords_run(glove_file, keywords, tmp_path_factory):
    """Word vectors fine-tuned on the keyword sentences, max-pooled (a word's presence is what matters)."""
    out = tmp_path_factory.mktemp("keywords-run")
    return quick_train(
        "text",
        "large_different",
        f"vectors:{glove_file}",
        keywords,
        out,
        strategy="full",
        vectors_pooling="max",
        epochs=6,
        lr=3e-2,
    )


@pytest.mark.parametrize("name", ["squares_run", "keywords_run"])
def test_label_sets_are_learnt_well_above_the_all_or_nothing_baselines(name, request):
    result = request.getfixturevalue(name)
    saved = json.loads((result.output_dir / "eval_predictions.json").read_text())
    best = result.metrics["best"]
    assert result.config.metric_for_best == "f1_micro" and result.config.problem_type == "multi_label"
    assert best == max(result.metrics["history"], key=lambda h: h["eval_f1_micro"])
    assert best["eval_f1_micro"] > baselines(saved["references"]) + 0.15
    assert set(best) >= {"eval_f1_micro", "eval_f1_macro", "eval_subset_accuracy", "eval_loss"}


def pooled_bert() -> torch.nn.Module:
    from transformers import BertConfig

    from hftl.modeling.pooled import pooled_classes, pooled_config

    torch.manual_seed(0)
    stock = BertConfig(
        vocab_size=12, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
        num_labels=3, problem_type="multi_label_classification",
    )  # fmt: skip
    return pooled_classes("bert")[1](pooled_config(stock, "mean", "linear"))


def test_the_loss_is_bce_with_logits_on_multi_hot_targets(keywords_run, squares_run, squares):
    from PIL import Image

    from hftl.outputs.loading import load
    from hftl.training.class_weights import weighted_loss

    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    images = [Image.open(squares / "validation" / f"{i}.png") for i in range(2)]
    processor = AutoImageProcessor.from_pretrained(squares_run.output_dir)
    ids = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    text = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    for model, inputs in (
        (load(squares_run.output_dir), processor(images, return_tensors="pt")),  # transformers' ResNet head
        (load(keywords_run.output_dir), text),  # hftl's word-vector model
        (pooled_bert(), text),  # hftl's pooled head on BERT (--pooling mean)
    ):
        model.eval()
        assert model.config.problem_type == "multi_label_classification"
        with torch.no_grad():
            out = model(**inputs, labels=targets)
        p = torch.sigmoid(out.logits)
        by_hand = -(targets * p.log() + (1 - targets) * (1 - p).log()).mean()
        assert torch.allclose(out.loss, by_hand, atol=1e-5)
        weights = torch.tensor([4.0, 1.0, 0.5])  # --class-weights: each label's pos_weight
        weighted = -(weights * targets * p.log() + (1 - targets) * (1 - p).log()).mean()
        assert torch.allclose(weighted_loss(out.logits, targets, weights), weighted, atol=1e-5)


def test_pipeline_top_k_none_and_predict_give_every_label_with_its_sigmoid_score(
    squares_run, keywords_run, squares
):
    from PIL import Image

    from hftl.outputs.loading import load

    hftl.register_auto_classes()  # the word-vector model type
    image = Image.open(squares / "validation" / "0.png").convert("RGB")
    for run, item, task in (
        (squares_run, image, "image-classification"),
        (keywords_run, "the match was a goal and a song", "text-classification"),
    ):
        labels = run.metrics["labels"]
        piped = pipeline(task, model=str(run.output_dir))(item, top_k=None)
        predicted = hftl.predict(run.output_dir, item)  # multi-label: every label by default
        assert {p["label"] for p in piped} == set(labels) == {p["label"] for p in predicted}
        model, processor = load(run.output_dir).eval(), pipeline(task, model=str(run.output_dir))
        inputs = (processor.image_processor if task.startswith("image") else processor.tokenizer)(
            item, return_tensors="pt"
        )
        with torch.no_grad():
            sigmoid = torch.sigmoid(model(**inputs).logits)[0]
        expected = {label: float(sigmoid[i]) for i, label in enumerate(labels)}
        for output in (piped, predicted):
            assert {p["label"]: p["score"] for p in output} == pytest.approx(expected, abs=1e-5)
        assert sum(expected.values()) != pytest.approx(1.0)  # independent scores, not a softmax


def test_the_run_report_card_and_metrics_say_multi_label(squares_run):
    out = squares_run.output_dir
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["problem_type"] == "multi_label_classification" and metrics["threshold"] == 0.5
    assert json.loads((out / "config.json").read_text())["problem_type"] == "multi_label_classification"
    report = json.loads((out / "classification_report.json").read_text())
    assert report["multi_label"] and set(report["confusion"]) == set(COLOURS)
    for label in COLOURS:
        counts = report["confusion"][label]
        assert counts["tp"] + counts["fn"] == report[label]["support"]
    assert {"micro avg", "macro avg", "samples avg"} <= set(report)
    card = (out / "README.md").read_text()
    assert "**multi-label**" in card and "## Per-label scores" in card and "top_k=3" in card
    assert "metrics:\n- f1\n- accuracy\n" in card.split("---")[1]  # the Hub's metric ids, each once
    assert "f1_micro " in card and "subset_accuracy " in card


def test_feature_cache_on_and_off_train_the_same_head(resnet_dir, squares, tmp_path):
    runs = {
        cache: quick_train(
            "image", "small_similar", resnet_dir, squares, tmp_path / f"cache-{cache}", epochs=1, augment=False,
            max_train_samples=24, feature_cache=cache, feature_cache_dir=str(tmp_path / "features"),
        )
        for cache in (True, False)
    }  # fmt: skip
    assert runs[True].metrics["feature_cache"]["used"] and not runs[False].metrics["feature_cache"]["used"]
    cached, plain = runs[True].model.state_dict(), runs[False].model.state_dict()
    for name in cached:
        assert torch.allclose(cached[name], plain[name], atol=1e-6), name
    cached_history, plain_history = runs[True].metrics["history"], runs[False].metrics["history"]
    assert len(cached_history) == len(plain_history)
    for cached_record, plain_record in zip(cached_history, plain_history, strict=True):
        assert cached_record == pytest.approx(plain_record)  # approx compares flat dicts, not lists of them


def test_resume_is_exact(glove_file, keywords, tmp_path):
    resumed = assert_resume_matches(  # stopped after step 4 of 12, mid-epoch
        "text", "large_different", f"vectors:{glove_file}", keywords, tmp_path, strategy="full", epochs=1
    )
    assert resumed.config.problem_type == "multi_label"


@pytest.mark.parametrize(
    "case, strategy, init",
    [  # full (from pretrained or scratch) and partial: the runs above
        ("small_different", "head", "pretrained"),  # the truncated cut: stages 1-2 kept, a new head on them
        ("large_similar", "lora", "pretrained"),
    ],
)
def test_every_other_strategy_trains_a_multi_label_model(case, strategy, init, resnet_dir, squares, tmp_path):
    result = quick_train(
        "image",
        case,
        resnet_dir,
        squares,
        tmp_path / "run",
        strategy=strategy,
        init=init,
        epochs=1,
        max_train_samples=16,
    )
    scores = hftl.predict(result.output_dir, str(squares / "validation" / "0.png"))
    assert {s["label"] for s in scores} == set(COLOURS)
    assert pipeline("image-classification", model=str(result.output_dir)).model.config.problem_type == (
        "multi_label_classification"
    )


def test_the_feature_score_advisor_refuses_multi_label_data(resnet_dir, squares, tmp_path):
    with pytest.raises(hftl.ConfigError, match="assume one label per example; .* --advise-budget > 0"):
        quick_train("image", "auto", resnet_dir, squares, tmp_path / "run", strategy="full", advise_budget=0)


def test_the_contrastive_strategy_refuses_multi_label_data(bert_dir, keywords, tmp_path):
    with pytest.raises(hftl.ConfigError, match="--strategy contrastive pairs examples by their one label"):
        quick_train("text", "small_similar", bert_dir, keywords, tmp_path / "run", strategy="contrastive")


def test_trials_sample_label_lists_and_rank_on_micro_f1(tmp_path):
    names = ClassLabel(names=["a", "b", "c"])
    data = Dataset.from_dict({"labels": [[0], [0, 1], [1], [], [2], [0]] * 4}).cast_column(
        "labels", List(names)
    )
    share = stratified_share(data, "labels", 0.5, seed=0)
    assert len(share) == 12 and {i for ids in share["labels"] for i in ids} == {0, 1, 2}
    config = RunConfig(task="text", case="auto", model="m", output_dir=str(tmp_path), label_columns=["a,b,c"])
    assert trial_metric(config, ("accuracy", "f1_macro"), multi_label=True) == "f1_micro"
    assert trial_metric(config, ("accuracy", "f1_macro"), multi_label=False) == "accuracy"
    with pytest.raises(hftl.ConfigError, match="unknown metric_for_best 'accuracy'"):
        trial_metric(config.replace(metric_for_best="accuracy"), ("accuracy",), multi_label=True)
    f1 = {
        "full": 0.6,
        "partial": 0.8,
        "lora": 0.5,
        "head": 0.7,
        "scratch": 0.3,
    }  # subset accuracy ranks the other way
    seen = []

    def fake_run(settings, splits):
        seen.append((settings.label_column, settings.label_columns))
        name = "scratch" if settings.init == "scratch" else settings.strategy
        return SimpleNamespace(
            metrics={"best": {"eval_f1_micro": f1[name], "eval_subset_accuracy": 1 - f1[name]}}
        )

    report = run_trials(config, data, data, "labels", fake_run, "f1_micro")
    assert report.pick == "partial" and report.metric == "f1_micro"
    assert set(seen) == {
        ("labels", None)
    }  # the trials read the loaded label lists, not the 0/1 columns again


def test_auto_pos_weights_are_negatives_over_positives_within_the_cap():
    labels = ["half", "rare", "everywhere"]
    rows = [[0, 2]] * 50 + [[2]] * 49 + [[1, 2]]  # 'rare' on 1 of 100 rows would weigh 99x
    assert class_weights("auto", labels, rows, multi_label=True) == pytest.approx(
        [1.0, AUTO_CAP, 1 / AUTO_CAP]
    )
