"""Files in a run folder are untrusted input: never read or write through a link that leaves the folder.

A run folder can be shared, copied from elsewhere or prepared by someone else. A symlink inside it
(``vocab.txt -> ~/.ssh/id_rsa``, ``README.md -> /etc/motd``) must not make hftl upload an outside file or overwrite
one. Reads check that every link stays inside; writes replace the name atomically instead of writing through it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from hftl.errors import ModelError


def links_leaving(folder: Path) -> list[tuple[Path, Path]]:
    """Every symlink below ``folder`` (not followed) whose target lies outside it, with that target."""
    root = folder.resolve()
    leaving = []
    for current, dirs, files in os.walk(folder, followlinks=False):
        for name in (*dirs, *files):
            path = Path(current) / name
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root):
                    leaving.append((path, target))
    return leaving


def check_no_link_leaves(folder: Path) -> None:
    """Raise, naming the link and where it leads, when any link in ``folder`` leads outside it."""
    leaving = links_leaving(folder)
    if leaving:
        listed = "; ".join(f"{path.relative_to(folder)} -> {target}" for path, target in leaving[:5])
        raise ModelError(
            f"{folder} holds links that lead out of it ({listed}); hftl never reads, writes or uploads through "
            "them. Replace each link with a copy of the file it should hold, or remove it."
        )


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a new file replaces the name, so a link there is replaced, never
    written through, and a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
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
