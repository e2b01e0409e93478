"""Refusing pickles that would run code.

hftl itself stores weights as safetensors and reads state with ``torch.load(weights_only=True)``. The one pickle
format users bring is gensim's ``.kv``/``.model``: before gensim unpickles one, hftl unpickles it with an
allow-list that admits only the classes gensim and numpy store, so a file that would call ``os.system`` (or any
other function) is refused without running anything.
"""

from __future__ import annotations

import bz2
import gzip
import pickle
from pathlib import Path
from typing import IO, Any

from hftl.errors import ModelError

ALLOWED: dict[str, set[str]] = {
    "gensim.models.keyedvectors": {"KeyedVectors", "Vocab", "CompatVocab"},
    "gensim.models.word2vec": {"Word2Vec", "Word2VecVocab", "Word2VecTrainables"},
    "gensim.models.fasttext": {"FastText", "FastTextKeyedVectors", "FastTextVocab", "FastTextTrainables"},
    "gensim.utils": {"call_on_class_only"},
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.random._pickle": {"__randomstate_ctor", "__bit_generator_ctor", "__generator_ctor"},
    "numpy.random._mt19937": {"MT19937"},
    "numpy.random._pcg64": {"PCG64"},
    "collections": {"defaultdict", "OrderedDict", "Counter"},
    "copyreg": {"_reconstructor"},
    "builtins": {
        "int",
        "float",
        "complex",
        "str",
        "bytes",
        "bytearray",
        "set",
        "frozenset",
        "slice",
        "object",
        "hash",
        "dict",
        "list",
        "tuple",
    },
}


class UnsafePickle(ModelError):
    """A pickle references something outside the allow-list."""


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name in ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise UnsafePickle(f"refusing to load: the pickle asks for {module}.{name}, which could run code")


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".bz2":
        return bz2.open(path, "rb")
    return open(path, "rb")


def check_pickle(path: str | Path) -> None:
    """Raise ``UnsafePickle`` unless ``path`` unpickles with only allow-listed classes and functions."""
    path = Path(path)
    try:
        with _open(path) as handle:
            _AllowListUnpickler(handle).load()
    except UnsafePickle as error:
        raise UnsafePickle(f"{path}: {error}. Only gensim/numpy objects are accepted in .kv files.") from None
