"""Crash-safe file writes for everything a node keeps on disk.

``atomic_write`` = write a temp file in the same directory, fsync it, move it into
place (``os.replace``, or ``os.link`` when overwriting must be refused, which is
just as atomic and fails if the name exists), then fsync the directory so the
new name survives a power cut. A reader sees the old content or the new content,
never a mix; a process killed half way leaves at most a ``.tmp-*`` file, which
``clean_temp_files`` removes at the next start.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    """fsync a directory (makes renames and unlinks in it durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, overwrite: bool = True, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically and durably.

    With ``overwrite=False`` an existing ``path`` raises ``FileExistsError`` and is
    left untouched."""
    directory = path.parent
    tmp = directory / f"{TMP_PREFIX}{path.name}.{os.getpid()}.{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic, and refuses an existing name
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def remove_durably(path: Path) -> bool:
    """Unlink ``path`` (if present) and fsync its directory. True if it existed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


def clean_temp_files(directory: Path) -> list[Path]:
    """Remove leftovers of interrupted ``atomic_write`` calls in ``directory``."""
    removed = []
    for p in directory.glob(f"{TMP_PREFIX}*"):
        p.unlink(missing_ok=True)
        removed.append(p)
    if removed:
        fsync_dir(directory)
    return removed


def make_private_dir(path: Path) -> None:
    """Create a 0700 directory (and parents) if missing."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
