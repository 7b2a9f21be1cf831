"""Atomic file writes: a temporary file in the same folder, fsynced, then renamed over the target.

A crash or error part-way leaves the previous file untouched (never a truncated one). Shards,
run logs, checkpoints metadata and record entries all go through `atomic_write`.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable


def atomic_write(path: str | os.PathLike, data: str | bytes | Iterable[bytes]) -> Path:
    """Write `data` (text, bytes, or an iterable of byte chunks) to `path` atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = [data.encode()] if isinstance(data, str) else [data] if isinstance(data, bytes) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make shards and logs private
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
