"""--strategy contrastive (SetFit's recipe): the encoder is tuned on sentence pairs, then frozen under a new head;
the pairs pull same-label embeddings together, the saved folder predicts through hftl.load and pipeline, a resumed
run is the same run, and models that are no text encoder are refused."""

from __future__ import annotations

import json
from itertools import combinations

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, pipeline

import hftl
from hftl.config import RunConfig
from hftl.errors import ConfigError, DataError
from hftl.outputs.loading import load
from tests.conftest import make_bert, sentences
from tests.helpers import assert_resume_matches, quick_train

# the stage needs a rate a random tiny BERT moves at; 4 rounds of 64 sentences = 512 pairs, 32 steps
STAGE = {"contrastive_iterations": 4, "contrastive_lr": 1e-2, "contrastive_batch_size": 16, "pooling": "auto"}
PROBE = sentences(24, seed=5)


@pytest.fixture(scope="module")
def random_bert(tmp_path_factory):
    """Random weights: any label structure in its embeddings after the run comes from the pairs."""
    return make_bert(tmp_path_factory.mktemp("random-bert"), num_layers=2)


@pytest.fixture(scope="module")
def contrastive_run(random_bert, text_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("contrastive")
    return quick_train(
        "text", "small_similar", random_bert, text_folder, out, strategy="contrastive", **STAGE
    )


def label_gap(encoder: torch.nn.Module, tokenizer) -> float:
    """Mean cosine of same-label probe sentences minus that of different-label ones (mean-pooled)."""
    batch = tokenizer([text for text, _ in PROBE], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.eval()(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    same, different = [], []
    for i, j in combinations(range(len(PROBE)), 2):
        (same if PROBE[i][1] == PROBE[j][1] else different).append(float(embeddings[i] @ embeddings[j]))
    return sum(same) / len(same) - sum(different) / len(different)


def test_the_pairs_pull_same_label_sentences_together(contrastive_run, random_bert):
    tokenizer = AutoTokenizer.from_pretrained(random_bert)
    before = label_gap(AutoModel.from_pretrained(random_bert), tokenizer)
    after = label_gap(contrastive_run.model.base_model, tokenizer)
    assert abs(before) < 0.05, before  # random weights: no label structure to start with
    assert after > before + 0.2, (before, after)
    stage = contrastive_run.metrics["contrastive"]
    assert (stage["pairs"], stage["positive_pairs"], stage["steps"]) == (512, 256, 32)
    assert stage["losses"][-1] < stage["losses"][0]


def test_the_head_trains_on_the_frozen_tuned_body_and_the_folder_predicts(contrastive_run):
    result = contrastive_run
    assert result.metrics["parameters"]["trainable"] == 32 * 2 + 2  # the linear head only
    assert result.metrics["feature_cache"]["used"]
    assert result.metrics["best"]["eval_accuracy"] >= 0.9, result.metrics["history"]
    saved = json.loads((result.output_dir / "config.json").read_text())
    # a plain BERT folder declares no pooling: contrastive reads it mean-pooled, as sentence-transformers would
    assert (saved["model_type"], saved["classifier_pooling"]) == ("hftl-pooled-bert", "mean")
    texts = [text for text, _ in PROBE[:6]]
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = result.model.eval().cpu()(**batch).logits.softmax(-1)
        loaded = load(result.output_dir).eval()(**batch).logits.softmax(-1)
    torch.testing.assert_close(loaded, expected)
    labels = result.model.config.id2label
    predicted = [
        top[0]["label"]
        for top in pipeline("text-classification", model=str(result.output_dir), top_k=1)(texts)
    ]
    assert predicted == [labels[int(i)] for i in expected.argmax(-1)]


def test_the_plan_and_the_card_say_what_was_done(contrastive_run):
    plan = hftl.TransferPlan.load(contrastive_run.output_dir / "transfer_plan.json")
    assert plan == contrastive_run.plan and plan.contrastive is not None
    assert (plan.contrastive.iterations, plan.contrastive.lr, plan.contrastive.pooling) == (4, 1e-2, "mean")
    assert {b.action for b in plan.blocks if b.kind != "head"} == {"frozen"}
    text = plan.render()
    assert "tuned on pairs, then frozen" in text and "stage 1, contrastive" in text
    card = (contrastive_run.output_dir / "README.md").read_text()
    assert "contrastive stage (before the head) | 512 sentence pairs (256 same-label), 32 steps" in card
    assert "first tuned on sentence pairs" in card and "- few-shot" in card


def test_a_resumed_contrastive_run_is_the_same_run(random_bert, text_folder, tmp_path):
    # the stage writes no checkpoint: the resumed run repeats it from the seed and must rebuild the same body
    settings = {**STAGE, "contrastive_iterations": 1, "epochs": 2}
    resumed = assert_resume_matches(
        "text", "small_similar", random_bert, text_folder, tmp_path, strategy="contrastive", **settings
    )
    assert resumed.metrics["contrastive"]["pairs"] == 128
    with pytest.raises(ConfigError, match="contrastive"):  # other stage settings: another run's checkpoint
        quick_train(
            "text", "small_similar", random_bert, text_folder, tmp_path / "split", strategy="contrastive",
            resume="auto", save_steps=4, **{**settings, "contrastive_lr": 5e-4},
        )  # fmt: skip


def test_models_that_are_no_text_encoder_are_refused(vit_dir, random_bert, glove_file):
    from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

    from hftl.backbones import backbone_for
    from hftl.transfer.cases import make_plan

    def plan(network, **settings):
        return make_plan(
            RunConfig(case="small_similar", strategy="contrastive", **settings),
            network,
            backbone_for(network.config),
        )

    with pytest.raises(ConfigError, match="needs a transformer text encoder.*reads images"):
        plan(AutoModelForImageClassification.from_pretrained(vit_dir), task="image", model=str(vit_dir))
    with pytest.raises(ConfigError, match="word vectors are a lookup table"):
        RunConfig(task="text", case="small_similar", strategy="contrastive", model=f"vectors:{glove_file}")
    bert = AutoModelForSequenceClassification.from_pretrained(random_bert)
    with pytest.raises(ConfigError, match="--keep-layers does not apply"):
        plan(bert, task="text", model=str(random_bert), keep_layers=1)
    assert plan(bert, task="text", model=str(random_bert)).lr == 1e-2  # the loop trains the head: its rate


def test_a_label_with_one_example_stops_the_run_by_name(random_bert, tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["negative", "positive"])})
    rows = {"text": ["good film", "great plot", "bad film"], "label": [1, 1, 0]}
    data = DatasetDict(
        train=Dataset.from_dict(rows, features=features),
        validation=Dataset.from_dict(rows, features=features),
    )
    with pytest.raises(DataError, match="only one of: 'negative'"):
        hftl.train(
            task="text", case="small_similar", strategy="contrastive", model=str(random_bert), dataset=data,
            output_dir=str(tmp_path / "out"), epochs=1, report_to="none",
        )  # fmt: skip
