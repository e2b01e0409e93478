"""The word-vector classifier: a transformers model (save/load, Auto classes, pipeline), planned by the case rules
(frozen vs fine-tuned vectors, scratch baseline, no LoRA), trained through the CLI and the Python API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, pipeline

import hftl
from hftl.backbones import backbone_for
from hftl.cli import main as cli_main
from hftl.config import RunConfig
from hftl.modeling.word_vectors import WordVectorsConfig, WordVectorsForSequenceClassification
from hftl.transfer.cases import make_plan
from tests.conftest import VECTORS_MISSING

EMBEDDINGS = "word_vectors.embeddings.weight"


def tiny(**overrides) -> WordVectorsForSequenceClassification:
    torch.manual_seed(0)
    settings = {"vocab_size": 12, "embedding_dim": 6, "num_labels": 3, "hidden_size": 8, **overrides}
    return WordVectorsForSequenceClassification(WordVectorsConfig(**settings)).eval()


# --- the model -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoder", ["bag", "cnn"])
@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_padding_never_changes_the_output(encoder, pooling):
    model = tiny(encoder=encoder, pooling=pooling, cnn_channels=4)
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[3, 4, 5, 0, 0, 0, 0]])
    mask = (padded != 0).long()
    with torch.no_grad():
        assert torch.allclose(model(short).logits, model(padded, attention_mask=mask).logits, atol=1e-6)
        empty = model(torch.tensor([[0, 0]]), attention_mask=torch.tensor([[0, 0]]))
    assert torch.isfinite(empty.logits).all()


@pytest.mark.parametrize("encoder", ["bag", "cnn"])
def test_save_pretrained_round_trip_through_the_auto_classes(encoder, tmp_path):
    model = tiny(encoder=encoder, cnn_channels=4, vectors="glove.txt")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "hftl-word-vectors"
    assert isinstance(AutoConfig.from_pretrained(tmp_path), WordVectorsConfig)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, WordVectorsForSequenceClassification) and loaded.config.vectors == "glove.txt"
    ids = torch.tensor([[2, 3, 4, 5, 6], [7, 8, 0, 0, 0]])
    with torch.no_grad():
        assert torch.equal(loaded(ids, attention_mask=(ids != 0).long()).logits, model(ids).logits)


def test_loss_is_cross_entropy_on_labels():
    model = tiny()
    ids, labels = torch.tensor([[2, 3], [4, 5]]), torch.tensor([0, 2])
    out = model(ids, labels=labels)
    assert torch.isclose(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))


def test_bad_pooling_is_rejected():
    from huggingface_hub.errors import StrictDataclassClassValidationError

    with pytest.raises(StrictDataclassClassValidationError, match="pooling='avg'; valid: mean, max"):
        WordVectorsConfig(pooling="avg")


# --- the plan ------------------------------------------------------------------------------------------------------
def plan_for(case, **overrides):
    config = RunConfig(task="text", case=case, model="vectors:glove.txt", **overrides)
    model = tiny(encoder="cnn", cnn_channels=4)
    return make_plan(config, model, backbone_for(model.config))


def actions(plan):
    return {block.name: block.action for block in plan.blocks}


@pytest.mark.parametrize("case", ["small_similar", "small_different"])
def test_small_cases_fine_tune_the_vectors_as_measured_and_head_freezes_them(case):
    plan = plan_for(case)
    assert plan.family == "word-vectors" and plan.strategy == "full" and not plan.truncated
    assert actions(plan)["word_vectors.embeddings"] == "trained" and plan.lr == 3e-2
    assert any("docs/calibration.md, vectors" in reason for reason in plan.reasons)
    head = plan_for(case, strategy="head")
    assert actions(head) == {
        "word_vectors.embeddings": "frozen",
        "word_vectors.encoder": "new",
        "classifier": "new",
    }
    assert head.lr == 1e-2 and not head.truncated
    if case == "small_different":
        assert any("no layer stack to cut" in reason for reason in head.reasons)


@pytest.mark.parametrize("case", ["large_similar", "large_different"])
def test_large_cases_fine_tune_the_embeddings(case):
    plan = plan_for(case)
    assert plan.strategy == "full" and actions(plan)["word_vectors.embeddings"] == "trained"
    assert plan.lr == 3e-2 and any("fine-tuned" in reason for reason in plan.reasons)
    assert "word_vectors.embeddings" in plan.render() and "frozen" not in plan.render()
    assert plan_for(case, init="scratch").lr == 3e-2  # random vectors: docs/calibration.md, vectors


def test_lora_and_keep_layers_are_clear_errors():
    with pytest.raises(hftl.ConfigError, match="LoRA is not meaningful for word vectors"):
        RunConfig(task="text", case="large_similar", strategy="lora", model="vectors:glove.txt")
    config = RunConfig(task="text", case="large_similar", model="vectors:glove.txt")
    config.strategy = "lora"  # past validation: the backbone still refuses
    model = tiny()
    with pytest.raises(hftl.ConfigError, match="LoRA is not meaningful for word vectors"):
        make_plan(config, model, backbone_for(model.config))
    with pytest.raises(hftl.ConfigError, match="keep_layers does not apply"):
        plan_for("small_different", keep_layers=2)


def test_hftl_plan_command_reads_the_vectors(glove_file, capsys):
    assert (
        cli_main(
            ["plan", "--task", "text", "--case", "small_different", "--strategy", "head"]
            + ["--model", f"vectors:{glove_file}"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "word_vectors.embeddings  frozen" in printed and "(word-vectors, 0 layers)" in printed


def test_missing_vectors_and_image_tasks_fail_early(glove_file, image_folder, tmp_path):
    with pytest.raises(hftl.ModelError, match="word vectors file does not exist"):
        hftl.train(
            task="text", case="small_similar", model="vectors:/no/such/glove.txt", dataset=str(tmp_path)
        )
    with pytest.raises(hftl.ConfigError, match="needs a text task"):
        hftl.train(
            task="image",
            case="small_similar",
            model=f"vectors:{glove_file}",
            dataset=str(image_folder),
            output_dir=str(tmp_path / "out"),
        )


# --- training through the CLI --------------------------------------------------------------------------------------
def test_cli_run_beats_chance_and_reports_coverage(vectors_dir):
    metrics = json.loads((vectors_dir / "metrics.json").read_text())
    assert metrics["best"]["eval_accuracy"] > 0.7, metrics["history"]
    assert metrics["labels"] == ["negative", "positive"]
    vocab = AutoTokenizer.from_pretrained(vectors_dir).get_vocab()
    words = len(vocab) - 2
    report = json.loads((vectors_dir / "config.json").read_text())["oov_report"]
    assert (report["vocab_size"], report["found"]) == (words, words - len(VECTORS_MISSING))
    assert {word for word, _ in report["top_missing"]} == set(VECTORS_MISSING)
    stdout = (vectors_dir / "stdout.txt").read_text()
    assert f"Word vectors cover {words - 2} of {words} vocabulary words" in stdout
    assert "word_vectors.embeddings  frozen (pretrained, not trained)" in stdout


def test_cli_run_keeps_the_frozen_vectors_byte_identical(vectors_dir, glove_file):
    tokenizer = AutoTokenizer.from_pretrained(vectors_dir)
    expected, _ = hftl.embedding_matrix(hftl.load_vectors(glove_file), tokenizer, oov_init="random", seed=42)
    saved = load_file(str(vectors_dir / "model.safetensors"))[EMBEDDINGS]
    assert torch.equal(saved, torch.from_numpy(expected))


def test_cli_run_writes_a_card_and_pushes_its_vocabulary(vectors_dir, capsys):
    card = (vectors_dir / "README.md").read_text()
    assert "hftl.register_auto_classes()  # the hftl-word-vectors model type" in card
    assert "| `word_vectors.embeddings` | stem | frozen |" in card and "base_model" not in card
    assert cli_main(["push", str(vectors_dir), "--repo-id", "me/reviews-glove", "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("model.safetensors", "config.json", "tokenizer.json"))


def test_cli_model_loads_in_transformers_pipeline_with_label_names(vectors_dir):
    classify = pipeline("text-classification", model=str(vectors_dir))
    predictions = classify(["the film was great", "the film was awful", "excellent acting"])
    assert [p["label"] for p in predictions] == ["positive", "negative", "positive"]


# --- training through the Python API -------------------------------------------------------------------------------
def vector_run(glove_file, text_folder, out, case, **overrides):
    settings = {"epochs": 4, "batch_size": 8, "lr": 0.01, "save_total_limit": 1, "log_steps": 4, **overrides}
    return hftl.train(
        task="text",
        case=case,
        model=f"vectors:{glove_file}",
        dataset=str(text_folder),
        output_dir=str(out),
        **settings,
    )


def test_large_case_fine_tunes_the_vectors_and_reloads_with_equal_logits(glove_file, text_folder, tmp_path):
    result = vector_run(glove_file, text_folder, tmp_path, "large_similar")
    assert result.metrics["best"]["eval_accuracy"] > 0.7
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    start, _ = hftl.embedding_matrix(hftl.load_vectors(glove_file), tokenizer, oov_init="random", seed=42)
    trained = result.model.get_input_embeddings().weight.detach()
    vocab = tokenizer.get_vocab()
    changed = [
        w
        for w in ("great", "awful", "film")
        if not torch.equal(trained[vocab[w]], torch.from_numpy(start[vocab[w]]))
    ]
    assert changed == ["great", "awful", "film"]
    assert not trained[tokenizer.pad_token_id].any()  # the padding row stays zero

    reloaded = hftl.load(tmp_path).eval()
    batch = tokenizer(["the film was great", "awful plot"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, result.model.eval()(**batch).logits)


def test_cnn_with_max_pooling_learns_on_frozen_vectors(glove_file, text_folder, tmp_path):
    result = vector_run(
        glove_file,
        text_folder,
        tmp_path,
        "small_different",
        strategy="head",
        vectors_encoder="cnn",
        vectors_pooling="max",
    )
    assert result.metrics["best"]["eval_accuracy"] > 0.7, result.metrics["history"]
    config = AutoConfig.from_pretrained(tmp_path)
    assert (config.encoder, config.pooling) == ("cnn", "max")
    assert not result.model.get_input_embeddings().weight.requires_grad
    assert result.plan.names("new") == ["word_vectors.encoder", "classifier"]


def test_scratch_init_uses_random_vectors_of_the_same_size(glove_file, text_folder, tmp_path):
    result = vector_run(glove_file, text_folder, tmp_path, "large_different", init="scratch", epochs=1)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    pretrained, _ = hftl.embedding_matrix(hftl.load_vectors(glove_file), tokenizer, seed=42)
    weights = result.model.get_input_embeddings().weight.detach().numpy()
    assert weights.shape == pretrained.shape
    rows = np.arange(1, len(weights))
    assert abs(np.corrcoef(weights[rows, 0], pretrained[rows, 0])[0, 1]) < 0.5  # no sentiment axis
    assert 0.5 < weights[rows].std() / pretrained[rows].std() < 2.0
    assert any("random vectors (--init scratch)" in reason for reason in result.plan.reasons)
