"""Which files of a dataset folder are data, and which split each one is: the rules of datasets' own folder loading
(hidden files are not data; a split is named by a whole word of a file's or its folders' names)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

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


def data_files_in(folder: Path) -> list[Path]:
    """The data files of a dataset folder, its subfolders included; hidden files and folders (a stale Jupyter
    ``.ipynb_checkpoints/train-checkpoint.csv``, say) and ``__``-named ones are not data, as datasets skips them."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in FILE_BUILDERS
        and not any(part.startswith((".", "__")) for part in path.relative_to(folder).parts)
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
