"""Atomic file writes: a file is written under a temporary name beside its target and renamed into place, so
a crash leaves the old file or the new one, never a half-written one.

Standard library only, so every package uses it (``results`` for its Parquet tables and PNGs too).
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


# the errors of a full or failing disk: the write, not its caller, is at fault
DISK_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EIO", "EROFS")
                        if hasattr(errno, name))


class WriteError(OSError):
    """A file could not be written because of the disk (full, over quota, read-only, failing). Its message is one
    line naming the file, e.g. "no space left on device writing run/checkpoint/checkpoint.pt"."""

    def __str__(self) -> str:
        return str(self.strerror)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path`` with the mode
    ``open()`` would have given it, on any exception it is removed and ``path`` is untouched.

    Raises:
        WriteError: naming ``path``, for a disk error (``DISK_ERRNOS``) while it is written or renamed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _disk_errors(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with _disk_errors(path):
            yield Path(tmp)
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def _disk_errors(path: Path) -> Iterator[None]:
    """Turn a disk error (``DISK_ERRNOS``) into a one-line WriteError naming ``path``; other errors pass."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        raise WriteError(exc.errno, f"{os.strerror(exc.errno).lower()} writing {path}") from None


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once at import: os.umask can only be read by setting it
