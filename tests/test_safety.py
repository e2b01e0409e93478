"""gensim .kv files are pickles: hftl refuses one that would run code, before gensim unpickles it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from hftl.safety import UnsafePickle, check_pickle
from hftl.vectors import load_vectors


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


def test_the_cli_reports_an_unsafe_vectors_file_in_one_line(tmp_path, text_folder):
    import subprocess
    import sys

    evil = tmp_path / "evil.kv"
    evil.write_bytes(pickle.dumps(_RunsCode()))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hftl.train",
            "--task",
            "text",
            "--case",
            "small_similar",
            "--model",
            f"vectors:{evil}",
            "--dataset",
            str(text_folder),
            "--output-dir",
            str(tmp_path / "out"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "refusing to load" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "PWNED").exists()
