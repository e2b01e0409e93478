"""Getting an hftl output from the Hub: a snapshot of a repository, for loading (``hftl.load``) or re-publishing
(``hftl push`` of a Hub id), without the formats hftl never reads. Errors are one line, with the token masked."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import get_token, snapshot_download

from hftl.errors import HftlError, ModelError
from hftl.sources.registry import check_source

# formats hftl.load never reads: not worth downloading from a model repository
SKIP_DOWNLOAD = [
    "*.h5",
    "*.msgpack",
    "*.onnx",
    "*.ot",
    "*.tflite",
    "*.gguf",
    "onnx/*",
    "coreml/*",
    "checkpoints/*",
]


def describe(error: BaseException) -> str:
    """One line about ``error`` that can be shown and logged: the token, should it appear, is masked."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    if isinstance(error, HftlError):
        text = lines[0] if lines else type(error).__name__
    try:
        token = get_token()
    except Exception:  # a broken login must not hide the original error
        token = None
    return text.replace(token, "***") if token else text


@contextmanager
def local_folder(source: str | Path) -> Iterator[Path]:
    """A local folder for ``push``: ``source`` itself, or a Hub repo downloaded into a temporary folder."""
    local = check_source(str(source))
    if Path(local).exists():
        yield Path(local)
        return
    with tempfile.TemporaryDirectory(prefix="hftl-push-") as tmp:
        try:
            downloaded = snapshot_download(local, local_dir=tmp, ignore_patterns=SKIP_DOWNLOAD)
        except Exception as error:
            raise ModelError(
                f"{source!r} is no local folder and could not be downloaded: {describe(error)}"
            ) from error
        yield Path(downloaded)


def resolve_folder(source: str | Path, revision: str | None = None) -> str:
    """A local folder for ``hftl.load``: ``source`` if it exists, else a snapshot of the Hub repo ``source``
    (downloaded once into the Hugging Face cache, offline afterwards with ``HF_HUB_OFFLINE=1``)."""
    local = check_source(str(source))
    if Path(local).exists():
        return local
    try:
        return snapshot_download(local, revision=revision, ignore_patterns=SKIP_DOWNLOAD)
    except Exception as error:
        raise ModelError(
            f"{source!r} is no local folder, and the Hub could not provide it: {describe(error)}"
        ) from error
