"""Reading word-vector files through gensim: every common format (word2vec binary and text, GloVe text, gensim
``KeyedVectors.save`` files, gensim-data names), each an untrusted input: a ``.kv`` pickle is read with an allow-list
(``hftl.sources.safety``), a word2vec header must fit its file, and every vector must be finite.

Loading is gensim's (``KeyedVectors.load_word2vec_format`` with ``limit=``, memory-mapped ``KeyedVectors.load``).
gensim is imported lazily: it is the ``vectors`` extra (``pip install 'hftl[vectors]'``).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from hftl.errors import ConfigError, ModelError, unknown_choice
from hftl.settings import VECTOR_FORMATS
from hftl.sources.safety import UnsafePickle, load_gensim

_SNIFF_BYTES = 1 << 16


def require_gensim() -> Any:
    """The gensim module, or an error that says how to install it."""
    try:
        import gensim
    except ImportError as error:  # pragma: no cover - gensim is in the dev extra
        raise ModelError(
            "word vectors need gensim, which is not installed: pip install 'hftl[vectors]'"
        ) from error
    return gensim


# --- formats -------------------------------------------------------------------------------------------------------
def load_vectors(
    source: str | os.PathLike[str],
    *,
    format: str = "auto",
    limit: int | None = None,
    mmap: str | None = "r",
) -> Any:
    """Load word vectors as gensim ``KeyedVectors``.

    ``source`` is a file (word2vec binary or text, GloVe text without a header, a gensim ``KeyedVectors.save``
    file; ``.gz``/``.bz2`` work too) or a gensim-data name such as ``glove-wiki-gigaword-100`` (taken from the
    gensim-data folder when already downloaded, else downloaded). ``format="auto"`` detects the format from the
    file's extension and first bytes. ``limit`` keeps the first N vectors (the most frequent words in the usual
    files); ``mmap="r"`` memory-maps the arrays of ``.kv`` files instead of reading them into memory.
    """
    if format not in VECTOR_FORMATS:
        raise unknown_choice("vectors format", format, VECTOR_FORMATS)
    if limit is not None and limit < 1:
        raise ConfigError(f"vectors limit must be a positive integer, got {limit}")
    path = Path(source).expanduser()
    if path.is_file():
        return _load_file(path, format, limit, mmap)
    name = str(source)
    if path.exists() or looks_like_vectors_path(name):
        raise ModelError(
            f"word vectors path does not exist or is not a file: {name}. Pass a word2vec (.bin/.txt), GloVe "
            "(.txt) or gensim KeyedVectors (.kv) file, or a gensim-data name such as glove-wiki-gigaword-100."
        )
    return _load_gensim_data(name, limit, mmap)


def looks_like_vectors_path(name: str) -> bool:
    """True for names that can only be files: gensim-data names have no folder and no extension."""
    return name.startswith((".", "/", "~")) or os.sep in name or "/" in name or bool(Path(name).suffix)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a vectors file, from its first bytes (and extension): one of ``VECTOR_FORMATS[1:]``.

    word2vec files start with a ``count dim`` header line; the binary variant then stores raw float32 bytes, the text
    one ``word v1 .. vdim`` lines. GloVe text has no header. gensim ``.kv`` files are pickles.
    """
    gensim = require_gensim()
    path = Path(path)
    with gensim.utils.open(str(path), "rb") as handle:  # smart_open: decompresses .gz/.bz2 transparently
        head = handle.read(_SNIFF_BYTES)
    if head[:1] == b"\x80" or path.suffix in (".kv", ".model"):
        return "kv"
    first, _, rest = head.partition(b"\n")
    tokens = first.split()
    if len(tokens) == 2 and all(t.isdigit() for t in tokens):
        dim = int(tokens[1])
        line = rest.partition(b"\n")[0]
        return "word2vec-txt" if _is_text_vector_line(line, dim) else "word2vec-bin"
    if len(tokens) >= 2 and _is_text_vector_line(first, len(tokens) - 1):
        return "glove"
    raise ModelError(
        f"cannot tell the format of the vectors file {path}: it is not a word2vec file (no 'count dim' header), "
        f"GloVe text ('word v1 v2 ...' lines) or a gensim .kv pickle; name it with --vectors-format "
        f"(one of {', '.join(VECTOR_FORMATS[1:])})"
    )


def _is_text_vector_line(line: bytes, dim: int) -> bool:
    try:
        tokens = line.decode("utf-8").rstrip().split(" ")
        [float(t) for t in tokens[1:]]
    except (UnicodeDecodeError, ValueError):
        return False
    return len(tokens) == dim + 1


def _first_ragged_line(path: Path, limit: int | None = None) -> str | None:
    """The first line of a text vectors file (within the first ``limit`` vectors, as gensim reads them) with another
    number of values than the first vector's (gensim's own error is numpy's "could not broadcast"), as "line N
    ('word') has X values, not Y"; None if every line agrees, or the file cannot be read again (a truncated .gz)."""
    import gensim.utils

    try:
        with gensim.utils.open(
            str(path), "rb"
        ) as handle:  # smart_open: decompresses .gz/.bz2 as detect_format does
            expected, vectors = None, 0
            for number, raw in enumerate(handle, start=1):
                tokens = raw.decode("utf-8", errors="replace").rstrip().split(" ")
                if number == 1 and len(tokens) == 2 and all(t.isdigit() for t in tokens):
                    expected = int(tokens[1])  # word2vec's "count dim" header
                    continue
                expected = expected if expected is not None else len(tokens) - 1
                if len(tokens) - 1 != expected:
                    return f"line {number} ({tokens[0]!r}) has {len(tokens) - 1} values, not {expected}"
                vectors += 1
                if limit is not None and vectors >= limit:
                    return None
    except (OSError, EOFError, ValueError):
        return None
    return None


def _load_file(path: Path, format: str, limit: int | None, mmap: str | None) -> Any:
    require_gensim()
    from gensim.models import KeyedVectors

    format = detect_format(path) if format == "auto" else format
    try:
        if format != "kv":
            if format != "glove":
                check_header(path, format == "word2vec-bin", limit)
            return check_finite(
                KeyedVectors.load_word2vec_format(
                    str(path), binary=format == "word2vec-bin", no_header=format == "glove", limit=limit
                ),
                path,
            )
        compressed = is_compressed(path)  # gensim cannot memory-map compressed files
        # a .kv is a pickle: hftl unpickles it with an allow-list, never gensim (see hftl.sources.safety)
        loaded = load_gensim(path, mmap=None if compressed else mmap)
    # hftl's own refusals (a pickle, a header, a NaN) say what is wrong already
    except (UnsafePickle, ModelError):
        raise
    except MemoryError as error:  # a header too large for this machine that check_header could not bound
        raise ModelError(
            f"{path}: not enough memory for its {format} vectors (the header's word count may be wrong); read the "
            "first words only with --vectors-limit N"
        ) from error
    except (ValueError, EOFError, UnicodeDecodeError, OSError, pickle.UnpicklingError) as error:
        ragged = _first_ragged_line(path, limit) if format in ("glove", "word2vec-txt") else None
        if ragged is not None:
            raise ModelError(
                f"{path}: {ragged}; every line must be a word and the same number of values"
            ) from error
        raise ModelError(
            f"cannot read {path} as {format} vectors ({type(error).__name__}: {error}); if the format is wrong, "
            f"name it with --vectors-format (one of {', '.join(VECTOR_FORMATS[1:])})"
        ) from error
    kv = getattr(loaded, "wv", loaded)  # a whole Word2Vec/FastText model: keep its vectors
    if not isinstance(kv, KeyedVectors):
        raise ModelError(f"{path} holds a {type(loaded).__name__}, not gensim KeyedVectors")
    return check_finite(_first(kv, limit) if limit is not None and limit < len(kv) else kv, path)


def check_header(path: Path, binary: bool, limit: int | None) -> None:
    """A word2vec header's ``count dim`` must fit the file: gensim allocates count x dim floats before reading a
    word, so a false count (3,000,000,000 words in a 1 kB file) would exhaust the memory. Each word takes at least
    2 bytes beside its numbers: 4 bytes each in binary files, 2 in text ("a 0 0 ..."). Compressed files are not
    bounded here (their size says little of what they hold); a MemoryError there is named instead."""
    if is_compressed(path):
        return
    with open(path, "rb") as handle:
        header = handle.readline()
    count, dim = (int(token) for token in header.split()[:2])
    words = count if limit is None else min(count, limit)
    room = path.stat().st_size - len(header)
    # a text file's last line may end without its newline; a binary one's entries need none
    most = (room + (0 if binary else 1)) // (2 + dim * (4 if binary else 2)) if dim > 0 else 0
    if dim < 1 or words > most:
        raise ModelError(
            f"{path}: its header says {count:,} words of {dim} numbers, but a file of {room + len(header):,} bytes "
            f"holds at most {most:,} of them; the header is wrong or the file was cut short: fix the header's count, "
            "or read the first words only with --vectors-limit N"
        )


def is_compressed(path: Path) -> bool:
    """A file that gensim (through smart_open) decompresses as it reads: .gz, .bz2, .xz, .zst, .lz4."""
    from smart_open.compression import get_supported_extensions

    return path.suffix.lower() in get_supported_extensions()


def check_finite(kv: Any, path: Path, rows: int = 65_536) -> Any:
    """Every vector must be finite: one NaN word would fill the unknown words' initial vectors (their mean and
    spread) and turn the training loss into NaN. Checked in blocks, so a memory-mapped file is read once, never
    copied whole."""
    vectors = kv.vectors
    for start in range(0, len(vectors), rows):
        finite = np.isfinite(np.asarray(vectors[start : start + rows])).all(axis=1)
        if not finite.all():
            bad = start + int(np.flatnonzero(~finite)[0])
            raise ModelError(
                f"{path}: the vector of {kv.index_to_key[bad]!r} (word {bad + 1}) holds NaN or infinite numbers; "
                "fix or remove that line of the file"
            )
    return kv


def _first(kv: Any, limit: int) -> Any:
    from gensim.models import KeyedVectors

    head = KeyedVectors(vector_size=kv.vector_size, dtype=kv.vectors.dtype)
    head.add_vectors(kv.index_to_key[:limit], np.asarray(kv.vectors[:limit]))
    return head


def _load_gensim_data(name: str, limit: int | None, mmap: str | None) -> Any:
    """A gensim-data model by name: from the local gensim-data folder if downloaded, else through the downloader."""
    require_gensim()
    import gensim.downloader as api

    folder = Path(api.BASE_DIR) / name
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(("__", ".")))
        data = [p for p in files if p.suffix not in (".py", ".pyc", ".json")]
        if data:
            return _load_file(data[0], "auto", limit, mmap)
    try:
        path = api.load(name, return_path=True)
    except Exception as error:  # offline: ValueError/OSError/URLError, depending on where it failed
        raise ModelError(
            f"could not get the gensim-data vectors {name!r} ({type(error).__name__}: {error}). Offline, download "
            "the vectors elsewhere and pass the local file instead, e.g. --model vectors:/data/glove.6B.100d.txt "
            "(word2vec .bin/.txt, GloVe .txt or gensim .kv), or put the gensim-data download in "
            f"{api.BASE_DIR}/{name}/ (set GENSIM_DATA_DIR to use another folder)."
        ) from error
    return _load_file(Path(path), "auto", limit, mmap)
