"""The token-shard format shared with llm.c and the public speedrun.

A shard is a 1024-byte header of 256 little-endian int32 — [20240520 (magic), 1 (version),
n (token count), 0, ...] — followed by n little-endian uint16 token ids: exactly 1024 + 2n bytes.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from data.atomic import atomic_write

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")


class ShardError(ValueError):
    """A shard file that does not follow the format; the message names the file and the problem."""


def write_shard(path: str | os.PathLike, tokens) -> Path:
    """Write tokens (any integer array-like, values in [0, 65535]) as a shard, atomically."""
    path = Path(path)
    array = np.asarray(tokens)
    if array.ndim != 1 or array.size == 0:
        raise ShardError(f"{path}: need a non-empty 1-D token array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ShardError(f"{path}: tokens must be integers, got dtype {array.dtype}")
    if array.min() < 0 or array.max() > np.iinfo(TOKEN_DTYPE).max:
        raise ShardError(f"{path}: token ids must lie in [0, 65535], got [{array.min()}, {array.max()}]")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, array.size)
    atomic_write(path, (header.tobytes(), array.astype(TOKEN_DTYPE, copy=False).tobytes()))
    return path


def read_header(path: str | os.PathLike) -> int:
    """Validate a shard's header and size; return its token count."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: no such shard file")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(f"{path}: truncated header ({size} bytes, need at least {HEADER_BYTES})")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != MAGIC:
        raise ShardError(f"{path}: wrong magic number {header[0]} (expected {MAGIC}); not a token shard")
    if header[1] != VERSION:
        raise ShardError(f"{path}: unsupported shard version {header[1]} (expected {VERSION})")
    n = int(header[2])
    if n <= 0:
        raise ShardError(f"{path}: empty shard (header says {n} tokens)")
    expected = HEADER_BYTES + 2 * n
    if size != expected:
        problem = "truncated" if size < expected else "has trailing bytes"
        raise ShardError(f"{path}: file {problem}: header says {n} tokens = {expected} bytes, file has {size}")
    return n


def read_shard(path: str | os.PathLike, vocab_size: int | None = None) -> np.ndarray:
    """Memory-map a shard's tokens (uint16). With vocab_size, also check every id is < vocab_size."""
    n = read_header(path)
    tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(n,))
    if vocab_size is not None:
        largest = int(tokens.max())
        if largest >= vocab_size:
            raise ShardError(f"{path}: token id {largest} is >= vocab size {vocab_size}; "
                             f"raise --vocab_size or re-tokenize the data")
    return tokens
