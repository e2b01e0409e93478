"""Loading word vectors in every format, the vocabulary tokenizer, the aligned embedding matrix and its OOV report."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors
from transformers import AutoTokenizer

import hftl
from hftl.sources.vector_files import detect_format
from hftl.sources.word_vectors import keyed_vectors, vectors_are_lowercase
from tests.assets import SHARED

GLOVE_REAL = SHARED / "glove" / "glove.6B.50d.top50k.txt"
WORDS = ["the", "cat", "sat", "on", "mat", "Paris", "naïve"]


@pytest.fixture(scope="module")
def kv() -> KeyedVectors:
    rng = np.random.default_rng(3)
    vectors = KeyedVectors(vector_size=5)
    vectors.add_vectors(WORDS, rng.normal(size=(len(WORDS), 5)).astype(np.float32))
    return vectors


@pytest.fixture(scope="module")
def files(kv, tmp_path_factory) -> dict[str, Path]:
    """The same vectors written by gensim in each format the loader supports."""
    root = tmp_path_factory.mktemp("formats")
    paths = {
        "word2vec-bin": root / "vectors.bin",
        "word2vec-txt": root / "vectors.w2v.txt",
        "glove": root / "glove.txt",
        "kv": root / "vectors.kv",
    }
    kv.save_word2vec_format(str(paths["word2vec-bin"]), binary=True)
    kv.save_word2vec_format(str(paths["word2vec-txt"]), binary=False)
    kv.save_word2vec_format(str(paths["glove"]), binary=False, write_header=False)
    kv.save(str(paths["kv"]))
    return paths


@pytest.mark.parametrize("format", ["word2vec-bin", "word2vec-txt", "glove", "kv"])
def test_every_format_is_detected_and_loads_to_the_identical_matrix(format, files, kv):
    assert detect_format(files[format]) == format
    loaded = hftl.load_vectors(files[format])
    assert loaded.index_to_key == WORDS
    # text formats store decimals: equal to float32 rounding of what gensim wrote; binary and .kv bit-exact
    if format in ("word2vec-bin", "kv"):
        assert np.array_equal(loaded.vectors, kv.vectors)
    else:
        assert np.allclose(loaded.vectors, kv.vectors, atol=1e-6)
    explicit = hftl.load_vectors(files[format], format=format)
    assert np.array_equal(explicit.vectors, loaded.vectors)


def test_text_formats_agree_bit_for_bit_with_each_other(files):
    w2v = hftl.load_vectors(files["word2vec-txt"]).vectors
    glove = hftl.load_vectors(files["glove"]).vectors
    assert np.array_equal(w2v, glove)


def test_binary_file_without_extension_and_gzip_text_are_sniffed(files, tmp_path):
    plain = tmp_path / "vectors"
    shutil.copy(files["word2vec-bin"], plain)
    assert detect_format(plain) == "word2vec-bin"
    packed = tmp_path / "glove.txt.gz"
    with open(files["glove"], "rb") as source, gzip.open(packed, "wb") as target:
        target.write(source.read())
    assert detect_format(packed) == "glove"
    assert hftl.load_vectors(packed).index_to_key == WORDS


def test_limit_keeps_the_first_vectors_in_every_format(files, kv):
    for format, path in files.items():
        loaded = hftl.load_vectors(path, limit=3)
        assert loaded.index_to_key == WORDS[:3], format
        assert np.allclose(loaded.vectors, kv.vectors[:3], atol=1e-6), format


def test_kv_files_are_memory_mapped(kv, tmp_path):
    big = KeyedVectors(vector_size=64)
    big.add_vectors([f"w{i}" for i in range(2000)], np.ones((2000, 64), dtype=np.float32))
    path = tmp_path / "big.kv"
    big.save(str(path), sep_limit=0)  # arrays in their own .npy files, as gensim does for large vectors
    loaded = hftl.load_vectors(path)
    assert isinstance(loaded.vectors, np.memmap)
    assert not isinstance(hftl.load_vectors(path, mmap=None).vectors, np.memmap)


def test_unknown_format_wrong_override_and_missing_file_are_clear_errors(files, tmp_path):
    junk = tmp_path / "junk.txt"
    junk.write_text("hello world\nthis is not a vectors file\n")
    with pytest.raises(hftl.ModelError, match="cannot tell the format.*--vectors-format"):
        hftl.load_vectors(junk)
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("the 0.1 0.2 0.3 0.4\ncat 0.1 0.2 0.3 0.4\ndog 0.1 0.2\n")
    with pytest.raises(hftl.ModelError, match=r"ragged.txt: line 3 \('dog'\) has 2 values, not 4"):
        hftl.load_vectors(ragged)
    import gzip

    truncated = tmp_path / "truncated.txt.gz"
    truncated.write_bytes(gzip.compress(("the 0.1 0.2 0.3 0.4\n" * 200).encode())[:60])
    with pytest.raises(hftl.ModelError, match=r"cannot read .*truncated.txt.gz"):
        hftl.load_vectors(truncated, format="glove")
    with pytest.raises(hftl.ModelError, match="cannot read .* as word2vec-bin vectors"):
        hftl.load_vectors(files["glove"], format="word2vec-bin")
    with pytest.raises(hftl.ConfigError, match="valid vectors formats: auto, word2vec-bin"):
        hftl.load_vectors(files["glove"], format="fasttext")
    with pytest.raises(hftl.ModelError, match="does not exist"):
        hftl.load_vectors(tmp_path / "nope.txt")


@pytest.mark.parametrize("binary", [True, False])
def test_a_header_that_does_not_fit_its_file_is_refused_before_any_allocation(kv, tmp_path, binary):
    """gensim allocates the header's count x dim floats up front: 3,000,000,000 words of 300 would take 3.6 TB."""
    honest = tmp_path / "honest.bin"
    kv.save_word2vec_format(str(honest), binary=binary)
    body = honest.read_bytes().partition(b"\n")[2]
    lying = tmp_path / "lying.bin"
    lying.write_bytes(b"3000000000 5\n" + body)
    with pytest.raises(
        hftl.ModelError, match=r"lying.bin: its header says 3,000,000,000 words of 5 numbers.*--vectors-limit"
    ):
        hftl.load_vectors(lying)
    assert hftl.load_vectors(lying, limit=len(WORDS)).index_to_key == WORDS  # the words it does hold: fine


@pytest.mark.parametrize("format", ["word2vec-bin", "glove", "kv"])
def test_a_nan_vector_is_refused_naming_the_word(kv, tmp_path, format):
    """One NaN word would fill the unknown words' initial vectors and turn the loss into NaN."""
    broken = KeyedVectors(vector_size=5)
    vectors = kv.vectors.copy()
    vectors[2, 3] = np.nan
    broken.add_vectors(WORDS, vectors)
    path = tmp_path / f"nan.{format}"
    if format == "kv":
        broken.save(str(path))
    else:
        broken.save_word2vec_format(
            str(path), binary=format == "word2vec-bin", write_header=format != "glove"
        )
    with pytest.raises(hftl.ModelError, match=r"^\S*nan\.\S+: the vector of 'sat' \(word 3\) holds NaN"):
        hftl.load_vectors(path, format=format)


def test_gensim_data_names_load_from_the_local_cache_or_fail_offline_with_a_hint(
    files, tmp_path, monkeypatch
):
    import gensim.downloader

    monkeypatch.setattr(gensim.downloader, "BASE_DIR", str(tmp_path))
    cached = tmp_path / "tiny-vectors-5"
    cached.mkdir()
    with open(files["word2vec-txt"], "rb") as source, gzip.open(cached / "tiny-vectors-5.gz", "wb") as target:
        target.write(source.read())
    (cached / "__init__.py").write_text("")
    assert hftl.load_vectors("tiny-vectors-5").index_to_key == WORDS
    # not downloaded, and no network (the test disables it): the error says how to pass a local file
    monkeypatch.setattr(gensim.downloader, "urlopen", _no_network)
    with pytest.raises(hftl.ModelError, match=r"Offline, download the vectors elsewhere.*vectors:/"):
        hftl.load_vectors("glove-wiki-gigaword-100")


def _no_network(*args, **kwargs):
    raise OSError("network disabled in this test")


def test_lowercase_is_detected_from_the_vectors(kv):
    glove_like = keyed_vectors(["the", "paris", "film"], np.zeros((3, 2)))
    assert vectors_are_lowercase(glove_like)
    assert not vectors_are_lowercase(kv)  # 'Paris': cased vectors (GoogleNews-style)


# --- vocabulary and OOV --------------------------------------------------------------------------------------------
TEXTS = ["The cat sat on the mat.", "the dog sat", "Zzz: cat!", "a dog, a DOG"]


def test_vocabulary_orders_by_frequency_and_is_saved_with_its_normalisation(tmp_path):
    tokenizer = hftl.build_word_tokenizer(TEXTS)
    vocab = tokenizer.get_vocab()
    assert vocab["[PAD]"] == 0 and vocab["[UNK]"] == 1 and tokenizer.pad_token_id == 0
    assert tokenizer.word_counts == {
        "the": 3,
        "dog": 3,
        "cat": 2,
        "sat": 2,
        "a": 2,
        "!": 1,
        ".": 1,
        ",": 1,
        ":": 1,
        "on": 1,
        "mat": 1,
        "zzz": 1,
    }
    assert [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])][2:6] == ["dog", "the", "a", "cat"]
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "THE Cat sat, on a unicorn!"
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reloaded.convert_ids_to_tokens(reloaded(text)["input_ids"]) == [
        "the",
        "cat",
        "sat",
        ",",
        "on",
        "a",
        "[UNK]",
        "!",
    ]


def test_cased_whitespace_vocabulary_with_min_freq_and_max_vocab(tmp_path):
    tokenizer = hftl.build_word_tokenizer(TEXTS, lowercase=False, split="whitespace", min_freq=2)
    assert set(tokenizer.get_vocab()) == {"[PAD]", "[UNK]", "the", "sat", "a"}
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).tokenize("The cat sat") == ["[UNK]", "[UNK]", "sat"]
    capped = hftl.build_word_tokenizer(TEXTS, max_vocab=2)
    assert list(capped.get_vocab()) and len(capped.get_vocab()) == 4


def test_missing_texts_are_skipped_and_other_types_name_the_row():
    assert set(hftl.build_word_tokenizer(["fine", None, ""]).get_vocab()) == {"[PAD]", "[UNK]", "fine"}
    with pytest.raises(hftl.DataError, match="row 1: the text is int"):
        hftl.build_word_tokenizer(["fine", 3])


@pytest.fixture
def crafted():
    """Vectors for 'the', 'cat', 'sat', 'mat' and a vocabulary where 'dog' (3x) and 'zzz' etc. are missing."""
    vectors = KeyedVectors(vector_size=4)
    vectors.add_vectors(
        ["the", "cat", "sat", "mat", "on"], np.arange(20, dtype=np.float32).reshape(5, 4) + 1.0
    )
    return vectors, hftl.build_word_tokenizer(TEXTS)


def test_oov_report_numbers_are_exact(crafted):
    vectors, tokenizer = crafted
    _, report = hftl.embedding_matrix(vectors, tokenizer, oov_init="zeros")
    # vocabulary: 12 words (specials excluded); found: the, cat, sat, on, mat
    assert (report.vocab_size, report.found, report.missing) == (12, 5, 7)
    assert report.type_coverage == pytest.approx(5 / 12)
    # 19 running words; found ones: the 3 + cat 2 + sat 2 + on 1 + mat 1 = 9
    assert (report.tokens, report.tokens_found) == (19, 9)
    assert report.token_coverage == pytest.approx(9 / 19)
    assert report.top_missing[:3] == (("dog", 3), ("a", 2), ("!", 1))
    assert "5 of 12 vocabulary words (41.67% of types, 47.37% of training tokens)" in report.render()
    assert report.to_dict()["top_missing"][0] == ["dog", 3]


def _rows(tokenizer, words):
    vocab = tokenizer.get_vocab()
    return [vocab[w] for w in words]


def test_found_rows_are_the_vectors_and_padding_is_zero_for_every_init(crafted):
    vectors, tokenizer = crafted
    found = _rows(tokenizer, ["the", "cat", "sat", "on", "mat"])
    for init in ("zeros", "random", "mean"):
        matrix, _ = hftl.embedding_matrix(vectors, tokenizer, oov_init=init)
        assert matrix.dtype == np.float32 and matrix.shape == (14, 4)
        for row, word in zip(found, ["the", "cat", "sat", "on", "mat"], strict=True):
            assert np.array_equal(matrix[row], vectors[word])
        assert not matrix[0].any()  # [PAD]


def test_each_oov_init_does_what_it_says(crafted):
    vectors, tokenizer = crafted
    missing = _rows(tokenizer, ["dog", "a", "zzz", "[UNK]"])
    found_rows = np.stack([vectors[w] for w in ["the", "cat", "sat", "on", "mat"]])

    zeros, _ = hftl.embedding_matrix(vectors, tokenizer, oov_init="zeros")
    assert not zeros[missing].any()

    mean, _ = hftl.embedding_matrix(vectors, tokenizer, oov_init="mean")
    assert np.allclose(mean[missing], found_rows.mean(axis=0))

    random, _ = hftl.embedding_matrix(vectors, tokenizer, oov_init="random", seed=1)
    again, _ = hftl.embedding_matrix(vectors, tokenizer, oov_init="random", seed=1)
    other, _ = hftl.embedding_matrix(vectors, tokenizer, oov_init="random", seed=2)
    assert np.array_equal(random, again) and not np.array_equal(random, other)
    assert len({tuple(row) for row in random[missing]}) == len(missing)  # distinct rows


def test_random_init_is_scaled_to_the_vectors():
    rng = np.random.default_rng(0)
    vectors = keyed_vectors([f"w{i}" for i in range(500)], rng.normal(3.0, 0.5, size=(500, 16)))
    words = [f"w{i}" for i in range(500)] + [f"oov{i}" for i in range(4000)]
    matrix, report = hftl.embedding_matrix(vectors, words, oov_init="random", special_tokens=())
    assert report.found == 500 and report.tokens is None
    drawn = matrix[500:]
    assert abs(drawn.mean() - 3.0) < 0.05 and abs(drawn.std() - 0.5) < 0.02


def test_embedding_layer_freezes_or_not_and_keeps_padding_out_of_the_gradient(crafted):
    vectors, tokenizer = crafted
    layer, report = hftl.embedding_layer(vectors, tokenizer, freeze=True)
    assert not layer.weight.requires_grad and layer.padding_idx == 0 and report.found == 5
    trainable, _ = hftl.embedding_layer(vectors, tokenizer, freeze=False)
    assert trainable.weight.requires_grad
    trainable(torch.tensor([[0, 2, 0]])).sum().backward()
    assert not trainable.weight.grad[0].any() and trainable.weight.grad[2].any()


@pytest.mark.skipif(not GLOVE_REAL.is_file(), reason=f"real GloVe vectors not present at {GLOVE_REAL}")
def test_real_glove_file_loads_and_covers_english_reviews():
    kv = hftl.load_vectors(GLOVE_REAL, limit=20_000)
    assert len(kv) == 20_000 and kv.vector_size == 50 and vectors_are_lowercase(kv)
    tokenizer = hftl.build_word_tokenizer(
        ["A gripping, beautifully acted film.", "The plot was dull and the acting wooden."]
    )
    _, report = hftl.embedding_matrix(kv, tokenizer)
    assert (report.vocab_size, report.found) == (14, 13)  # 'gripping' is rarer than the 20,000th word
    assert report.top_missing == (("gripping", 1),)
    neighbours = [w for w, _ in kv.most_similar("film", topn=10)]
    assert "movie" in neighbours


def test_the_advisor_parses_the_vectors_once_and_a_changed_file_again(
    glove_file, text_folder, tmp_path, monkeypatch
):
    """Parsing a text file was most of each short --case auto trial: the trials and the run they choose share one
    parse; outside the advisor a run lets the vectors go, and a file that changed is parsed again."""
    import hftl.sources.vectors as vectors_module
    from tests.conftest import write_word_vectors

    parsed = []
    real = vectors_module.load_vectors
    monkeypatch.setattr(vectors_module, "load_vectors", lambda *a, **k: parsed.append(a) or real(*a, **k))
    vectors_module._vectors.cache_clear()
    hftl.train(
        task="text", case="auto", model=f"vectors:{glove_file}", dataset=str(text_folder),
        output_dir=str(tmp_path / "auto"), epochs=1, batch_size=8,
    )  # fmt: skip
    assert len(parsed) == 1  # three trials and the chosen run
    assert vectors_module._vectors.cache_info().currsize == 0  # let go after the run

    copy = write_word_vectors(tmp_path / "vectors.txt")
    config = hftl.RunConfig(task="text", case="small_similar", model=f"vectors:{copy}")
    with vectors_module.vectors_held():
        first = vectors_module.vectors_for(config)
        assert vectors_module.vectors_for(config) is first
        write_word_vectors(copy, seed=1)  # same size, new numbers, a later modification time
        os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 10**9))
        assert vectors_module.vectors_for(config) is not first
    vectors_module._vectors.cache_clear()
