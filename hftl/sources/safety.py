"""Refusing pickles that would run code.

hftl itself stores weights as safetensors and reads state with ``torch.load(weights_only=True)``. The one pickle
format users bring is gensim's ``.kv``/``.model``. hftl never lets gensim unpickle anything: it unpickles the main
file itself with an allow-list that admits only the classes gensim and numpy store, then lets gensim attach the
arrays stored beside it (``FILE.kv.vectors.npy``, read by ``numpy.load`` without pickle). Sidecars that gensim would
unpickle (``__scipys``: sparse matrices, which KeyedVectors never need) are refused, so a file that would call
``os.system`` (or any other function), in the main file or beside it, is refused without running anything.

gensim's classes are on the list only to be rebuilt (``cls.__new__`` and their saved ``__dict__``), never called:
``Word2Vec(corpus_file=...)`` would read and train on any file it names. The unpickler's calls (REDUCE, OBJ, INST)
refuse them, and ``copyreg._reconstructor`` may rebuild an object only on a plain base (whose ``__init__`` it would
call).
"""

from __future__ import annotations

import bz2
import copyreg
import gzip
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from hftl.errors import ModelError, first_line

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


# rebuilt, never called: a class whose constructor does work (gensim's models train on what they are given)
NEVER_CALLED_MODULES = ("gensim.models.",)
# the bases copyreg._reconstructor may call __init__ of (with the pickle's state): plain containers only
PLAIN_BASES = (object, dict, list, set, frozenset, tuple, str, bytes, int, float)


class _AllowListUnpickler(pickle._Unpickler):  # the Python unpickler: its REDUCE can be checked
    allowed: dict[str, set[str]] = ALLOWED

    def find_class(self, module: str, name: str) -> Any:
        if name in self.allowed.get(module, ()):
            return super().find_class(module, name)
        raise UnsafePickle(f"refusing to load: the pickle asks for {module}.{name}, which could run code")

    def load_reduce(self) -> None:
        """REDUCE calls the object below its arguments: refused for classes that must only be rebuilt."""
        args = self.stack[-1]
        _check_call(self.stack[-2], args)
        super().load_reduce()

    dispatch = {**pickle._Unpickler.dispatch, pickle.REDUCE[0]: load_reduce}

    def _instantiate(self, klass: Any, args: list[Any]) -> None:
        """OBJ and INST call a class too (protocols 0 and 1): the same check."""
        _check_call(klass, tuple(args))
        super()._instantiate(klass, args)


def _check_call(func: Any, args: Any) -> None:
    name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', func)}"
    if isinstance(func, type) and func.__module__.startswith(NEVER_CALLED_MODULES):
        raise UnsafePickle(f"refusing to load: the pickle calls {name}, which would run its training code")
    if func is copyreg._reconstructor:
        base = args[1] if isinstance(args, tuple) and len(args) > 1 else None
        if base not in PLAIN_BASES:
            raise UnsafePickle(f"refusing to load: the pickle rebuilds an object by calling {base!r}")


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".bz2":
        return bz2.open(path, "rb")
    return open(path, "rb")


def safe_unpickle(path: str | Path) -> Any:
    """Unpickle ``path`` admitting only allow-listed classes and functions; else raise ``UnsafePickle``."""
    path = Path(path)
    try:
        with _open(path) as handle:
            return _AllowListUnpickler(handle).load()
    except UnsafePickle as error:
        raise UnsafePickle(f"{path}: {error}. Only gensim/numpy objects are accepted in .kv files.") from None


def check_pickle(path: str | Path, allowed: dict[str, set[str]] | None = None) -> None:
    """Raise ``UnsafePickle`` unless ``path`` unpickles with only allow-listed classes and functions (default:
    the gensim list; torch's distributed-checkpoint metadata brings its own, ``hftl.training.sharded_state``)."""
    if allowed is None:
        safe_unpickle(path)
        return
    unpickler = type("_Screen", (_AllowListUnpickler,), {"allowed": allowed})
    with open(path, "rb") as handle:
        try:
            unpickler(handle).load()
        except UnsafePickle as error:
            raise UnsafePickle(f"{path}: {error}") from None


def _check_sidecars(obj: Any, path: Path, seen: set[int] | None = None) -> None:
    """Refuse a gensim object whose ``_load_specials`` would unpickle a file beside ``path`` or leave the folder.

    gensim lists the attributes it stored separately in ``__numpys`` (``numpy.load``, no pickle), ``__scipys``
    (unpickled: refused here) and ``__recursive_saveloads`` (sub-objects with lists of their own, checked in turn).
    Attribute names become file names (``FILE.NAME.npy``), so only plain identifiers are accepted.
    """
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    state = getattr(obj, "__dict__", {})
    if state.get("__scipys"):
        raise UnsafePickle(
            f"{path}: refusing to load: it lists pickled sidecar files ({', '.join(map(str, state['__scipys']))}) "
            "that gensim would unpickle without a check; word vectors never need them. Re-save the vectors with "
            "KeyedVectors.save (or as word2vec/GloVe text) and pass that file."
        )
    for key in ("__numpys", "__recursive_saveloads", "__ignoreds"):
        names = state.get(key, [])
        bad = [name for name in names if not (isinstance(name, str) and name.isidentifier())]
        if not isinstance(names, list) or bad:
            raise UnsafePickle(f"{path}: refusing to load: {key} names {bad or names!r}, not attribute names")
    for name in state.get("__recursive_saveloads", []):
        _check_sidecars(getattr(obj, name, None), path, seen)


def load_gensim(path: str | Path, mmap: str | None = None) -> Any:
    """What ``gensim``'s ``SaveLoad.load(path, mmap)`` returns, with every pickle screened by the allow-list.

    The main file is unpickled once, by hftl's allow-list unpickler (checking and then letting gensim unpickle the
    same path would open it twice); the separately stored arrays are then attached by gensim's own
    ``_load_specials`` (``numpy.load`` with pickles disallowed), after ``_check_sidecars`` refused anything else.
    """
    from gensim.utils import SaveLoad

    path = Path(path)
    obj = safe_unpickle(path)
    if not isinstance(obj, SaveLoad):
        raise UnsafePickle(f"{path}: holds a {type(obj).__name__}, not a gensim object")
    _check_sidecars(obj, path)
    compress, subname = SaveLoad._adapt_by_suffix(str(path))
    obj._load_specials(str(path), mmap, compress, subname)
    return obj


PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


@contextmanager
def pickled_weights_refused(source: str | Path) -> Iterator[None]:
    """Loading a model: a pickled checkpoint (``pytorch_model.bin``, ...) that asks for more than tensors is refused by
    ``torch.load(weights_only=True)``, as it should be; this turns torch's refusal (which suggests the unsafe retry)
    into one error that names the file and what to do."""
    try:
        yield
    except pickle.UnpicklingError as error:
        folder = Path(source)
        files = (
            sorted(p.name for pattern in PICKLED_WEIGHTS for p in folder.glob(pattern))
            if folder.is_dir()
            else []
        )
        named = f" ({', '.join(files)})" if files else ""
        raise ModelError(
            f"{source}: the weights{named} are a pickle that asks for more than tensors ({first_line(error)}); "
            "hftl never lets a pickle run code. Use the model's safetensors weights (model.safetensors), or load "
            "the file yourself only if you trust it and save it with save_pretrained(safe_serialization=True)"
        ) from error
