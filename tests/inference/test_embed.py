"""``hftl.embed`` and ``hftl.similar``: features from image, transformer-text and word-vector sources (plain
folders, hftl output folders, LoRA folders, gensim vectors), with the documented shapes and pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, AutoTokenizer

import hftl
from tests.conftest import POSITIVE, make_bert

IMAGES = [Image.fromarray(np.full((40, 40, 3), c, dtype=np.uint8)) for c in ((200, 40, 40), (40, 40, 200))]
TEXTS = ["the film was great", "awful", "a really boring and dull story"]


@pytest.fixture(scope="module")
def kv(glove_file):
    return hftl.load_vectors(glove_file)


@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_image_features_have_the_encoder_width(family, model_dirs):
    features = hftl.embed(model_dirs[family], IMAGES)
    assert isinstance(features, np.ndarray) and features.shape == (2, 32) and features.dtype == np.float32


def test_resnet_features_are_the_pooled_output_the_head_sees(resnet_dir):
    processor = AutoImageProcessor.from_pretrained(resnet_dir)
    model = AutoModelForImageClassification.from_pretrained(resnet_dir).eval()
    with torch.no_grad():
        pooled = model.resnet(**processor(IMAGES, return_tensors="pt")).pooler_output.flatten(1)
    assert torch.allclose(hftl.embed(resnet_dir, IMAGES, return_tensors="pt"), pooled, atol=1e-5)


def test_text_features_mean_pool_real_tokens_only(bert_dir):
    features = hftl.embed(bert_dir, TEXTS, return_tensors="pt")
    assert features.shape == (3, 32)
    alone = hftl.embed(bert_dir, [TEXTS[1]], return_tensors="pt")  # no padding at all
    assert torch.allclose(features[1], alone[0], atol=1e-5)
    cls = hftl.embed(bert_dir, TEXTS, pooling="cls", return_tensors="pt")
    assert cls.shape == (3, 32) and not torch.allclose(cls, features)


def test_plain_encoder_folder_loads_with_automodel(tmp_path):
    from transformers import AutoModel

    make_bert(tmp_path / "classifier")
    AutoModel.from_pretrained(tmp_path / "classifier").save_pretrained(tmp_path / "encoder")
    AutoTokenizer.from_pretrained(tmp_path / "classifier").save_pretrained(tmp_path / "encoder")
    assert hftl.embed(tmp_path / "encoder", TEXTS, pooling="pooler").shape == (3, 32)


def test_lora_folder_features_include_the_adapters(bert_lora_run, bert_dir):
    adapted = hftl.embed(bert_lora_run.output_dir, TEXTS)
    assert adapted.shape == (3, 32)
    assert not np.allclose(adapted, hftl.embed(bert_dir, TEXTS), atol=1e-4)
    assert np.allclose(adapted, hftl.embed(bert_lora_run, TEXTS), atol=1e-5)


def test_word_vectors_pool_known_words(kv, glove_file):
    features = hftl.embed(kv, ["great", "The film was GREAT", "unicorn zebra"])
    assert features.shape == (3, 8)
    assert np.array_equal(features[0], kv["great"])
    assert np.allclose(features[1], np.mean([kv[w] for w in ("the", "film", "was", "great")], axis=0))
    assert not features[2].any()  # no known word
    assert np.array_equal(hftl.embed(f"vectors:{glove_file}", "great"), kv["great"])
    maxed = hftl.embed(kv, ["film great"], pooling="max")[0]
    assert np.array_equal(maxed, np.maximum(kv["film"], kv["great"]))


def test_trained_word_vector_model_gives_its_configured_pooling(vectors_dir, kv):
    features = hftl.embed(vectors_dir, ["great film", "great"], return_tensors="pt", normalize=True)
    assert features.shape == (2, 8) and torch.allclose(features.norm(dim=1), torch.ones(2))
    raw = hftl.embed(vectors_dir, "great film")  # frozen vectors, mean pooling: the mean of the two rows
    assert np.allclose(raw, (kv["great"] + kv["film"]) / 2, atol=1e-6)


def test_similar_words_from_vectors_and_from_a_trained_model(kv, vectors_dir):
    neighbours = hftl.similar(kv, "great", top_k=5)
    assert {word for word, _ in neighbours} == set(POSITIVE) - {"great"}
    assert all(-1.0 <= score <= 1.0 for _, score in neighbours)
    from_model = hftl.similar(vectors_dir, ["great", "awful"], top_k=5)
    assert [w for w, _ in from_model[0]] == [w for w, _ in neighbours]
    assert not {w for w, _ in from_model[1]} & {"[PAD]", "[UNK]"}
    with pytest.raises(hftl.DataError, match="'unicorn' is not in the vectors' vocabulary"):
        hftl.similar(kv, "unicorn")


def test_similar_inputs_rank_candidates_by_cosine(kv, bert_dir):
    ranked = hftl.similar(kv, "a great film", ["an awful plot", "a superb story", "terrible acting"], top_k=2)
    assert ranked[0][0] == 1 and len(ranked) == 2
    texts = hftl.similar(bert_dir, ["the film was great"], ["the film was great", "awful"], top_k=1)
    assert texts[0][0][0] == 0 and texts[0][0][1] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(hftl.ConfigError, match="pass candidates="):
        hftl.similar(bert_dir, "great")


def test_bad_pooling_and_tensor_type_are_rejected(kv):
    with pytest.raises(hftl.ConfigError, match="valid poolings: pooler, cls, mean, max"):
        hftl.embed(kv, ["x"], pooling="sum")
    with pytest.raises(hftl.ConfigError, match="valid return_tensorss"):
        hftl.embed(kv, ["x"], return_tensors="tf")


def test_hftl_embed_command_writes_a_npy_array(glove_file, kv, tmp_path, capsys):
    from hftl.cli import main

    listed = tmp_path / "words.txt"
    listed.write_text("film\n\nawful\n", encoding="utf-8")
    out = tmp_path / "features.npy"
    assert (
        main(["embed", f"vectors:{glove_file}", "great", "--input-file", str(listed), "--output", str(out)])
        == 0
    )
    features = np.load(out)
    assert features.shape == (3, 8) and np.array_equal(features[2], kv["awful"])
    assert "Saved 3 x 8 features" in capsys.readouterr().out


def test_hftl_embed_names_an_input_file_with_nothing_in_it(glove_file, tmp_path, capsys):
    from hftl.cli import main

    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    args = ["embed", f"vectors:{glove_file}", "--input-file", str(blank), "--output", str(tmp_path / "f.npy")]
    with pytest.raises(SystemExit):
        main(args)
    assert "blank.txt has no non-blank lines" in capsys.readouterr().err


def test_hftl_embed_replaces_a_link_at_its_output_and_names_the_file_it_wrote(glove_file, tmp_path, capsys):
    """--output is written atomically: a link there is replaced, never written through (its target is untouched);
    a name without .npy is saved as np.save saves it, and the message names that file."""
    from hftl.cli import main

    target = tmp_path / "precious.txt"
    target.write_text("keep me", encoding="utf-8")
    link = tmp_path / "out" / "link.npy"
    link.parent.mkdir()
    link.symlink_to(target)
    with pytest.raises(SystemExit):  # an existing --output (a link too) is replaced only when told to
        main(["embed", f"vectors:{glove_file}", "film", "--output", str(link)])
    assert "pass --overwrite" in capsys.readouterr().err and link.is_symlink()
    assert main(["embed", f"vectors:{glove_file}", "film", "--output", str(link), "--overwrite"]) == 0
    assert target.read_text(encoding="utf-8") == "keep me" and not link.is_symlink()
    assert np.load(link).shape == (1, 8)
    written = link.read_bytes()
    with pytest.raises(SystemExit):  # features written before are not replaced silently either
        main(["embed", f"vectors:{glove_file}", "great", "--output", str(link)])
    assert link.read_bytes() == written
    assert main(["embed", f"vectors:{glove_file}", "film", "--output", str(tmp_path / "new" / "feat")]) == 0
    assert (
        tmp_path / "new" / "feat.npy"
    ).is_file() and f"to {tmp_path / 'new' / 'feat.npy'}" in capsys.readouterr().out
    for bad in (tmp_path / "missing.txt", target.with_name("latin1.txt")):
        if bad.name == "latin1.txt":
            bad.write_bytes("caf\xe9\n".encode("latin-1"))
        with pytest.raises(SystemExit):
            main(
                [
                    "embed",
                    f"vectors:{glove_file}",
                    "--input-file",
                    str(bad),
                    "--output",
                    str(tmp_path / "x.npy"),
                ]
            )
        assert f"--input-file {bad}" in capsys.readouterr().err
