"""Which files of a dataset folder are data, and which split each one is: the rules of datasets' own folder loading
(hidden files are not data; a split is named by a whole word of a file's or its folders' names); and the files that
keep an image folder's layout from naming its classes."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hftl.errors import DataError

FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}

# a folder's files go to the split a word of their name (or else of their folders' names) says, as datasets' folder
# loading splits them: words are runs of letters, split where a lower-case letter meets an upper-case one, so
# "constraints.csv" is not train nor "latest.csv" test, while "test(1).csv", "TestData.csv" and "dev_clean.csv" say
# theirs; a word may carry "set" or "data" ("testset", "devset"). Files that say none are train. "eval" is validation
# here (the split that picks the best epoch), test only ever scored
SPLIT_WORDS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev", "eval", "evaluation"),
    "test": ("test", "testing"),
}
WORD_ENDINGS = ("", "set", "data")


def files_stamp(path: Path) -> str:
    """A digest of what a local dataset is on disk: every data file under ``path`` (or the file itself) by name, size,
    modification time and change time. ``datasets`` keys its cache of local files by path and modification time
    only, so an edit whose modification time was put back (``touch -d``, ``rsync -a``, ``tar x``) trained on the old
    rows; the change time (ctime) is set by the system on every write and every time change and cannot be put back.
    Stats, not content: a full read per run would cost as much as the first load (a stat is about 20 us: a million
    images, 20 s). Not stamped: what is not data (hidden files and folders such as ``.git``, ``__``-named ones, as
    ``data_files_in`` skips them) and the ``cache-*.arrow`` files ``datasets`` writes beside a ``save_to_disk``
    folder's own as it maps and filters it. A copy of the data, even with its times kept, or a ``chmod`` of it, is new
    data here (its cache is rebuilt; checkpoints made before do not resume on it)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if _stamped(p, path))
    stats = []
    try:
        for file in files:
            info = file.stat()
            name = file.name if file == path else str(file.relative_to(path))
            stats.append((name, info.st_size, info.st_mtime_ns, info.st_ctime_ns))
    except OSError as error:  # removed or unreadable while the folder was read
        raise DataError(f"cannot read {error.filename or path}: {error.strerror or error}") from error
    text = json.dumps([str(path.resolve()), stats])
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _stamped(file: Path, root: Path) -> bool:
    return (
        not _hidden(file, root)
        and file.is_file()
        and not (file.name.startswith("cache-") and file.suffix == ".arrow")
    )


def _hidden(path: Path, root: Path) -> bool:
    """Not data, as datasets' folder loading skips it: a hidden or ``__``-named file or folder on the way to it."""
    return any(part.startswith((".", "__")) for part in path.relative_to(root).parts)


def fingerprint_with(fingerprint: str, stamp: str) -> str:
    """A dataset fingerprint that also changes with ``stamp`` (``files_stamp``)."""
    return hashlib.blake2b(f"{fingerprint}:{stamp}".encode(), digest_size=8).hexdigest()


def data_files_in(folder: Path) -> list[Path]:
    """The data files of a dataset folder, its subfolders included; hidden files and folders (a stale Jupyter
    ``.ipynb_checkpoints/train-checkpoint.csv``, say) and ``__``-named ones are not data, as datasets skips them."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in FILE_BUILDERS and not _hidden(path, folder)
    )


def _split_of(path: Path, root: Path) -> str:
    names = [path.stem, *reversed(path.relative_to(root).parent.parts)]  # the file's own name first
    for name in names:
        words = set(re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", name).lower()))
        for split, keywords in SPLIT_WORDS.items():
            if words & {keyword + ending for keyword in keywords for ending in WORD_ENDINGS}:
                return split
    return "train"


def split_files(paths: Sequence[Path], root: Path) -> dict[str, list[Path]]:
    """Group a folder's files into splits (``SPLIT_WORDS``); files that name no split are train."""
    splits: dict[str, list[Path]] = {}
    for path in paths:
        splits.setdefault(_split_of(path, root), []).append(path)
    return splits


def check_folder_labels(loaded: Any, path: Path) -> None:
    """An image folder whose labels datasets could not read from its folder names (images at more than one depth:
    one stray image beside the class folders, a class folder inside another) is named with the files that break the
    ``SPLIT/LABEL/IMAGE`` layout, instead of failing later as "no label column"."""
    columns = [split.column_names for split in loaded.values()]
    if any(names is None for names in columns) or all("label" in names for names in columns):
        return  # a stream that does not say its columns yet is checked where its rows are read
    from PIL import Image

    image_suffixes = {suffix.lower() for suffix in Image.registered_extensions()}
    files = [
        p
        for p in path.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in image_suffixes
    ]
    split_words = {word for words in SPLIT_WORDS.values() for word in words}
    in_splits = any(
        p.relative_to(path).parts[0].lower() in split_words
        for p in files
        if len(p.relative_to(path).parts) > 1
    )
    depth = 3 if in_splits else 2  # train/label/image, or label/image
    off = sorted(str(p.relative_to(path)) for p in files if len(p.relative_to(path).parts) != depth)
    layout = "SPLIT/LABEL/IMAGE (e.g. train/cat/1.jpg)" if in_splits else "LABEL/IMAGE (e.g. cat/1.jpg)"
    found = (
        f"{len(off)} image(s) sit elsewhere: {', '.join(off[:5])}; move or remove them"
        if off
        else "no class could be read from the folder names (one class folder, or none?)"
    )
    raise DataError(
        f"{path}: the class of each image is the name of its folder ({layout}), but {found} (or give a CSV/metadata "
        "file with a label column)"
    )
