"""Reading local CSV/TSV/JSON/Parquet files with datasets' builders: one builder for all splits, text read as
written (no pandas missing-value words), and every failure one error naming the file, line or byte."""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
from datasets import DatasetDict, IterableDatasetDict

from hftl.data.folder_files import FILE_BUILDERS
from hftl.errors import DataError


def _check_has_rows(path: Path, split: str, builder: str, encoding: str) -> None:
    """An empty or header-only text file is one clear error naming it, not a builder's 'corresponds to no data'."""
    if builder not in ("csv", "json"):
        return
    try:
        with open(path, encoding=encoding, errors="replace") as handle:
            lines = [line for line, _ in zip(handle, range(3), strict=False) if line.strip()]
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from error
    header_rows = 1 if builder == "csv" else 0
    if len(lines) <= header_rows:
        what = "is empty" if not lines else "has a header and no rows"
        columns = (
            "a header (e.g. text,label) and one row per example"
            if builder == "csv"
            else "one JSON object per line"
        )
        raise DataError(f"{path} ({split} split) {what}; it needs {columns}")


def load_files(
    files: dict[str, list[Path]],
    encoding: str = "utf-8",
    streaming: bool = False,
    named: dict[str, str] | None = None,
) -> DatasetDict | IterableDatasetDict:
    """``files`` (split -> paths, one format) as datasets' builder reads them; ``named``: the build's config name
    (``files_stamp``'s), so datasets' cache of them follows their change times too."""
    suffixes = {p.suffix.lower() for paths in files.values() for p in paths}
    builders = {FILE_BUILDERS[s] for s in suffixes}
    if len(builders) > 1:
        raise DataError(f"mixed file types {sorted(suffixes)}; use one format for all splits")
    builder = builders.pop()
    kwargs: dict[str, Any] = {}
    if suffixes == {".tsv"}:
        kwargs.update(delimiter="\t", quoting=3)  # 3 = csv.QUOTE_NONE: TSV text keeps its quotes
    if builder in ("csv", "json"):
        kwargs["encoding"] = encoding
    if builder == "csv":
        # only an empty field is missing: pandas would also read the words None, NA, null and nan as missing,
        # dropping texts and refusing classes that are spelled so
        kwargs.update(keep_default_na=False, na_values=[""])
    data_files = {split: [str(p) for p in paths] for split, paths in files.items()}
    for split, paths in files.items():
        for path in paths:
            _check_has_rows(path, split, builder, encoding)
    try:
        return datasets.load_dataset(
            builder, data_files=data_files, streaming=streaming, **(named or {}), **kwargs
        )
    except Exception as error:
        undecodable = _first_undecodable([p for paths in files.values() for p in paths], encoding)
        if undecodable:
            raise DataError(
                f"{undecodable}; re-save the file as UTF-8 or pass its encoding with --data-encoding "
                "(e.g. latin-1)"
            ) from error
        # datasets wraps the reader's error (pandas names the bad line) in a generic one: say the reader's
        cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        detail = (
            f"{type(cause).__name__}: {cause}" if cause is not None else f"{type(error).__name__}: {error}"
        )
        raise DataError(f"cannot read {sorted(data_files.values())}: {detail}") from error


def _first_undecodable(paths: Sequence[Path], encoding: str, block: int = 1 << 20) -> str | None:
    """Name the first file, line and byte that ``encoding`` cannot decode (None if all decode), reading each file
    in ``block``-sized pieces: a file too large for memory is checked in constant memory."""
    for path in paths:
        if path.suffix.lower() == ".parquet":
            continue
        decoder = codecs.getincrementaldecoder(encoding)()
        offset = lines = 0  # bytes fed to the decoder so far, and the newlines among them
        with open(path, "rb") as handle:
            while True:
                piece = handle.read(block)
                held = decoder.getstate()[0]  # the start of a character cut by the last piece
                try:
                    decoder.decode(piece, final=not piece)
                except UnicodeDecodeError as error:  # its offsets count from the held bytes
                    data = held + piece
                    where = offset - len(held) + error.start
                    line = lines - held.count(b"\n") + data[: error.start].count(b"\n") + 1  # held: counted
                    return (
                        f"{path}: line {line} is not valid {encoding} (byte 0x{data[error.start]:02x} at offset "
                        f"{where})"
                    )
                if not piece:
                    break
                offset, lines = offset + len(piece), lines + piece.count(b"\n")
    return None
