"""Atomic file writes: a temporary file in the same folder, fsynced, then renamed over the target.

A crash or error part-way leaves the previous file untouched (never a truncated one). Shards,
run logs, checkpoints metadata and record entries all go through `atomic_write`. A full disk raises
`DiskFullError`, whose message names the file and the bytes it needed.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space left on the device for a file: the message names it, the bytes needed and the bytes free."""

    def __init__(self, path: str | os.PathLike, needed: int, at_least: bool = False):
        folder = next(p for p in Path(path).absolute().parents if p.exists())
        self.message = (f"no space left on the device for {path}: it needs {'at least ' if at_least else ''}"
                        f"{needed:,} bytes and {shutil.disk_usage(folder).free:,} are free; free some space "
                        f"(earlier files are intact)")
        super().__init__(errno.ENOSPC, self.message, str(path))

    def __str__(self) -> str:
        return self.message


def atomic_write(path: str | os.PathLike, data: str | bytes | Iterable[bytes]) -> Path:
    """Write `data` (text, bytes, or an iterable of byte chunks) to `path` atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = [data.encode()] if isinstance(data, str) else [data] if isinstance(data, bytes) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    size = 0
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make shards and logs private
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                size += len(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in NO_SPACE and not isinstance(e, DiskFullError):
            raise DiskFullError(path, size, at_least=not isinstance(data, (str, bytes))) from None
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
