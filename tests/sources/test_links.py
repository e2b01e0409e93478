"""Model and dataset folders are untrusted input: no file is read through a link that leads out of the folder (a
Hugging Face cache snapshot, whose files link into its own repo's blobs, is read as it is)."""

from __future__ import annotations

import pytest

from hftl.data.loading import load_raw
from hftl.errors import DataError, ModelError
from hftl.sources.registry import local_or_hub


def test_a_model_folder_with_a_link_leading_out_is_refused_naming_it(tmp_path):
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes(b"someone else's weights")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").symlink_to(secret)
    with pytest.raises(
        ModelError, match=r"model holds links that lead out of it \(model.safetensors -> .*secret"
    ):
        local_or_hub(str(model))
    (model / "model.safetensors").unlink()
    (model / "weights.safetensors").write_bytes(b"w")
    (model / "model.safetensors").symlink_to("weights.safetensors")  # a link that stays inside is fine
    assert local_or_hub(str(model)) == str(model.resolve())


def test_a_hub_cache_snapshot_links_into_its_own_blobs(tmp_path):
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "abc123").write_text("{}")
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").symlink_to("../../blobs/abc123")
    assert local_or_hub(str(snapshot)) == str(snapshot.resolve())
    (snapshot / "data").mkdir()  # a subfolder of a snapshot (a dataset repo's data/, say) links the same way
    (snapshot / "data" / "train.csv").symlink_to("../../../blobs/abc123")
    assert local_or_hub(str(snapshot / "data")) == str((snapshot / "data").resolve())
    (snapshot / "vocab.txt").symlink_to(tmp_path / "elsewhere.txt")  # but not out of the repo
    (tmp_path / "elsewhere.txt").write_text("x")
    with pytest.raises(ModelError, match=r"vocab.txt -> "):
        local_or_hub(str(snapshot))


def test_a_dataset_folder_with_a_link_leading_out_is_refused_naming_it(tmp_path):
    outside = tmp_path / "passwd.csv"
    outside.write_text("text,label\nroot,a\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("text,label\nhello,a\nworld,b\n")
    (data / "extra.csv").symlink_to(outside)
    with pytest.raises(DataError, match=r"data holds links that lead out of it \(extra.csv -> .*passwd.csv"):
        load_raw(str(data), "text")


def test_embedding_with_a_plain_encoder_folder_refuses_a_link_leading_out(tmp_path):
    """``hftl.embed`` on a folder holding a bare encoder (BertModel: no head) reads it as a model folder too."""
    from transformers import BertConfig, BertModel

    import hftl

    encoder = tmp_path / "encoder"
    BertModel(
        BertConfig(
            vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    ).save_pretrained(encoder)
    outside = tmp_path / "outside.safetensors"
    (encoder / "model.safetensors").rename(outside)
    (encoder / "model.safetensors").symlink_to(outside)
    with pytest.raises(ModelError, match=r"encoder holds links that lead out of it \(model.safetensors"):
        hftl.embed(str(encoder), ["a sentence"])
