"""gensim .kv files are pickles: hftl refuses one that would run code, before gensim unpickles it."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from hftl.sources.safety import UnsafePickle, check_pickle
from hftl.sources.vector_files import load_vectors


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_genuine_gensim_files_pass(tmp_path):
    from gensim.models import KeyedVectors, Word2Vec

    kv = KeyedVectors(vector_size=4)
    kv.add_vectors(["a", "b", "c"], np.arange(12, dtype=np.float32).reshape(3, 4))
    kv.save(str(tmp_path / "small.kv"))
    Word2Vec([["a", "b"], ["b", "c"]], vector_size=4, min_count=1, seed=0).save(str(tmp_path / "w2v.model"))
    check_pickle(tmp_path / "small.kv")
    check_pickle(tmp_path / "w2v.model")
    assert load_vectors(str(tmp_path / "small.kv"))["b"].tolist() == [4.0, 5.0, 6.0, 7.0]


def test_a_kv_file_that_would_run_code_is_refused_without_running(tmp_path, monkeypatch):
    evil = tmp_path / "evil.kv"
    evil.write_bytes(pickle.dumps({"vectors": _RunsCode()}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        UnsafePickle, match=r"evil.kv: refusing to load: the pickle asks for (posix|os)\.system"
    ):
        load_vectors(str(evil))
    assert not (tmp_path / "PWNED").exists()


class _CallsAModel:
    """A pickle that calls an allow-listed gensim class: ``Word2Vec(sentences, corpus_file, ...)`` reads and trains
    on any file it names, so the class may be rebuilt but never called."""

    def __init__(self, secret):
        self.secret = secret

    def __reduce__(self):
        from gensim.models.word2vec import Word2Vec

        return (Word2Vec, (None, str(self.secret), 4, 0.025, 5, 1, None, 1, 1))


class _ReconstructsOnAModel:
    """copyreg._reconstructor(cls, base, state) calls ``base.__init__(obj, state)``: a gensim base runs its code."""

    def __reduce__(self):
        import copyreg

        from gensim.models.word2vec import Word2Vec

        return (copyreg._reconstructor, (Word2Vec, Word2Vec, [["a", "b"]]))


def _calls_by_opcode(opcode: str, secret: Path) -> bytes:
    """Protocol 0's OBJ (``o``) and INST (``i``) call a class as REDUCE does: ``Word2Vec(None, corpus_file)``."""
    args = f"NS'{secret}'\n".encode()
    if opcode == "obj":
        return b"(cgensim.models.word2vec\nWord2Vec\n" + args + b"o."
    return b"(" + args + b"igensim.models.word2vec\nWord2Vec\n."


@pytest.mark.parametrize("payload", ["call", "reconstruct", "obj", "inst"])
def test_an_allow_listed_gensim_class_is_rebuilt_but_never_called(payload, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("AWS_SECRET_KEY=hunter2 token\n" * 3)
    evil = tmp_path / "evil.kv"
    if payload in ("obj", "inst"):
        evil.write_bytes(_calls_by_opcode(payload, secret))
    else:
        evil.write_bytes(
            pickle.dumps(_CallsAModel(secret) if payload == "call" else _ReconstructsOnAModel(), 4)
        )
    with pytest.raises(
        UnsafePickle, match=r"evil.kv: refusing to load: the pickle (calls|rebuilds).*Word2Vec"
    ):
        load_vectors(str(evil))


@pytest.mark.parametrize("where", ["main file", "sidecar"])
def test_the_cli_reports_an_unsafe_vectors_file_in_one_line(where, tmp_path, text_folder, capsys):
    from hftl.train import main

    if where == "main file":
        evil = tmp_path / "evil.kv"
        evil.write_bytes(pickle.dumps(_RunsCode()))
    else:
        evil = _kv_with_a_pickled_sidecar(tmp_path)
    flags = ["--task", "text", "--case", "small_similar", "--model", f"vectors:{evil}"]
    code = main([*flags, "--dataset", str(text_folder), "--output-dir", str(tmp_path / "out")])
    stderr = capsys.readouterr().err
    assert code == 2 and "refusing to load" in stderr and "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if "refusing to load" in line] == [stderr.splitlines()[-1]]
    assert not (tmp_path / "PWNED").exists()


def _kv_with_a_pickled_sidecar(tmp_path) -> str:
    """A genuine KeyedVectors file whose ``__scipys`` list makes gensim unpickle ``evil.kv.vectors_extra.npy``."""
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=4)
    kv.add_vectors(["a", "b"], np.ones((2, 4), dtype=np.float32))
    kv.__dict__["__scipys"] = ["vectors_extra"]
    evil = tmp_path / "evil.kv"
    with open(evil, "wb") as handle:
        pickle.dump(kv, handle)
    (tmp_path / "evil.kv.vectors_extra.npy").write_bytes(pickle.dumps(_RunsCode()))
    for part in ("data", "indptr", "indices"):  # what gensim reads next, so that loading would complete
        np.save(tmp_path / f"evil.kv.vectors_extra.{part}.npy", np.zeros(1))
    return str(evil)


def test_a_pickled_sidecar_beside_a_genuine_kv_file_is_refused_without_running(tmp_path, monkeypatch):
    evil = _kv_with_a_pickled_sidecar(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsafePickle, match=r"evil.kv: refusing to load: it lists pickled sidecar files"):
        load_vectors(evil)
    assert not (tmp_path / "PWNED").exists()


def test_sidecar_names_cannot_lead_out_of_the_folder(tmp_path):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=4)
    kv.add_vectors(["a"], np.ones((1, 4), dtype=np.float32))
    kv.__dict__["__numpys"] = ["../../outside"]
    with open(tmp_path / "odd.kv", "wb") as handle:
        pickle.dump(kv, handle)
    with pytest.raises(UnsafePickle, match=r"__numpys names \['../../outside'\]"):
        load_vectors(str(tmp_path / "odd.kv"))


def test_separately_stored_arrays_still_load_and_memory_map(tmp_path):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=4)
    kv.add_vectors([f"w{i}" for i in range(50)], np.arange(200, dtype=np.float32).reshape(50, 4))
    kv.save(str(tmp_path / "big.kv"), sep_limit=0)  # vectors stored beside it as big.kv.vectors.npy
    assert (tmp_path / "big.kv.vectors.npy").is_file()
    loaded = load_vectors(str(tmp_path / "big.kv"))
    assert isinstance(loaded.vectors, np.memmap) and loaded["w3"].tolist() == [12.0, 13.0, 14.0, 15.0]


def test_a_config_asking_for_more_weights_than_memory_is_one_error_naming_it(bert_dir, text_folder, tmp_path):
    """config.json is untrusted: an intermediate_size of 10^15 asks torch for 128 PB, refused at once; hftl names the
    model and what to check instead of torch's allocator message."""
    import hftl
    from tests.helpers import copy_with_json, quick_train

    model = copy_with_json(bert_dir, tmp_path / "model", "config.json", intermediate_size=10**15)
    with pytest.raises(hftl.ModelError, match=r"building .*model ran out of memory .*check its sizes"):
        quick_train("text", "small_similar", model, text_folder, tmp_path / "o")
