"""Files in a run folder are untrusted input: never read or write through a link that leaves the folder; and a
write that fails for want of space leaves nothing half-written and says so in one line.

A run folder can be shared, copied from elsewhere or prepared by someone else. A symlink inside it
(``vocab.txt -> ~/.ssh/id_rsa``, ``README.md -> /etc/motd``) must not make hftl upload an outside file or overwrite
one. Reads check that every link stays inside; writes replace the name atomically instead of writing through it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hftl.errors import HftlError, ModelError, OutputError

NO_SPACE = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded"}


def links_leaving(folder: Path) -> list[tuple[Path, Path]]:
    """Every symlink below ``folder`` (not followed) whose target lies outside it, with that target (a Hugging Face
    cache snapshot's links into its own repo's blobs stay inside: ``link_root``)."""
    root = link_root(folder)
    leaving = []
    for current, dirs, files in os.walk(folder, followlinks=False):
        for name in (*dirs, *files):
            path = Path(current) / name
            if path.is_symlink():
                try:
                    target = path.resolve()
                except (OSError, RuntimeError):  # a loop of links, or one into a folder that cannot be read
                    leaving.append((path, Path(os.readlink(path))))
                    continue
                if not target.is_relative_to(root):
                    leaving.append((path, target))
    return leaving


def link_root(folder: Path) -> Path:
    """Where links in ``folder`` may lead: the folder, or for a Hugging Face cache snapshot
    (``models--org--name/snapshots/REVISION``, whose files link to ``../../blobs``) its repo folder."""
    resolved = folder.resolve()
    for snapshot in (resolved, *resolved.parents):  # the folder, or one of its subfolders, in a snapshot
        if snapshot.parent.name == "snapshots" and snapshot.parent.parent.name.startswith(HUB_CACHE_REPOS):
            return snapshot.parent.parent
    return resolved


HUB_CACHE_REPOS = ("models--", "datasets--", "spaces--")


def check_no_link_leaves(folder: Path, error: type[HftlError] = ModelError) -> None:
    """Raise ``error``, naming the link and where it leads, when any link in ``folder`` leads outside it."""
    leaving = links_leaving(folder)
    if leaving:
        listed = "; ".join(f"{path.relative_to(folder)} -> {target}" for path, target in leaving[:5])
        raise error(
            f"{folder} holds links that lead out of it ({listed}); hftl never reads, writes or uploads through "
            "them. Replace each link with a copy of the file it should hold, or remove it."
        )


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a new file replaces the name, so a link there is replaced, never
    written through, and a reader sees the old file or the new one, never half of one."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """``write_text`` for bytes (the same atomic replace: a link at ``path`` is replaced, not written through)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_digest(path: Path, chunk: int = 1 << 23) -> str:
    """BLAKE2b of a file's bytes: what the feature cache and checkpoints record to notice corruption."""
    hasher = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            hasher.update(block)
    return hasher.hexdigest()


def no_space_reason(error: BaseException | None) -> str | None:
    """Why ``error`` happened when it is a full disk or an exceeded quota (None otherwise), wherever the errno is:
    on an ``OSError`` (Python, pyarrow), on one it was raised from (``torch.save`` to a file object), or only in the
    text (safetensors: "... (os error 28)")."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in NO_SPACE:
            return NO_SPACE[error.errno]
        match = re.search(r"\(os error (\d+)\)", str(error))
        if match and int(match.group(1)) in NO_SPACE:
            return NO_SPACE[int(match.group(1))]
        error = error.__cause__ or error.__context__
    return None


def failed_file(error: BaseException | None) -> str | None:
    """The file named by an ``OSError`` in ``error``'s chain (None when none names one)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.filename:
            return str(error.filename)
        error = error.__cause__ or error.__context__
    return None


@contextmanager
def any_write_space_checked(folder: Path) -> Iterator[None]:
    """The last net for a run: a full disk anywhere (a log line, the datasets cache) is one ``OutputError`` naming
    the file when the error does, else ``folder``; the writes that can leave something half-written
    (checkpoints, the model, the feature cache) are checked where they happen."""
    try:
        yield
    except OutputError:
        raise
    except Exception as error:
        reason = no_space_reason(error)
        if reason is None:
            raise
        raise OutputError(
            f"cannot write {failed_file(error) or folder}: {reason}. Free space on that disk, or choose another "
            "--output-dir (or --feature-cache-dir, HF_DATASETS_CACHE for the caches)."
        ) from error


@contextmanager
def space_checked(path: Path, what: str, remedy: str, partial: Sequence[Path] = ()) -> Iterator[None]:
    """Writes inside this block that fail for want of space remove ``partial`` (the half-written files or folders)
    and become one ``OutputError`` naming ``what``, ``path``, the reason and ``remedy``; other errors pass as they
    are."""
    try:
        yield
    except Exception as error:
        reason = no_space_reason(error)
        if reason is None:
            raise
        for leftover in partial:
            remove_path(leftover)
        raise OutputError(f"cannot write {what} to {path}: {reason}. {remedy}") from error


def remove_path(path: Path) -> None:
    """Remove a file, link or folder if it exists (a link itself, never what it points to)."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def move_into(staging: Path, folder: Path) -> None:
    """Move everything in ``staging`` into ``folder`` by renaming (no space needed), replacing what has the same
    name there: a link is replaced, never followed."""
    for entry in staging.iterdir():
        target = folder / entry.name
        if target.is_symlink() or (target.exists() and (entry.is_dir() or target.is_dir())):
            remove_path(target)
        os.replace(entry, target)
