"""The shard format (SPEC.md): round trip, exact layout, and one clear error per bad input."""
import os

import numpy as np
import pytest

from data.shards import HEADER_BYTES, MAGIC, ShardError, read_header, read_shard, write_shard


def test_round_trip_and_exact_layout(tmp_path):
    rng = np.random.default_rng()
    tokens = rng.integers(0, 50257, size=int(rng.integers(1, 5000)))
    path = write_shard(tmp_path / "a.bin", tokens)
    raw = path.read_bytes()
    assert len(raw) == HEADER_BYTES + 2 * len(tokens)
    header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
    assert list(header[:3]) == [MAGIC, 1, len(tokens)] and not header[3:].any()
    assert np.array_equal(np.frombuffer(raw[HEADER_BYTES:], dtype="<u2"), tokens)
    loaded = read_shard(path)
    assert loaded.dtype == np.uint16 and np.array_equal(loaded, tokens)
    assert not list(tmp_path.glob(".*tmp")), "the temporary file must be renamed away"


def corrupt(tmp_path, edit):
    path = write_shard(tmp_path / "bad.bin", np.arange(100))
    raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(edit(raw)))
    return path


def set_int(raw, index, value):
    raw[4 * index:4 * index + 4] = np.int32(value).tobytes()
    return raw


@pytest.mark.parametrize("edit, message", [
    (lambda raw: set_int(raw, 0, 12345), "wrong magic"),
    (lambda raw: set_int(raw, 1, 7), "unsupported shard version 7"),
    (lambda raw: raw[:-10], "truncated"),
    (lambda raw: raw[:500], "truncated header"),
    (lambda raw: set_int(raw, 2, 90), "trailing bytes"),
    (lambda raw: set_int(raw, 2, 0)[:HEADER_BYTES], "empty shard"),
])
def test_bad_shards_raise_naming_the_file(tmp_path, edit, message):
    path = corrupt(tmp_path, edit)
    with pytest.raises(ShardError, match=message) as info:
        read_shard(path)
    assert str(path) in str(info.value)


def test_token_id_beyond_vocab(tmp_path):
    path = write_shard(tmp_path / "v.bin", [1, 2, 300])
    read_shard(path, vocab_size=301)
    with pytest.raises(ShardError, match=r"token id 300 is >= vocab size 257"):
        read_shard(path, vocab_size=257)


def test_missing_file_and_bad_writes(tmp_path):
    with pytest.raises(ShardError, match="no such shard"):
        read_header(tmp_path / "missing.bin")
    with pytest.raises(ShardError, match="non-empty"):
        write_shard(tmp_path / "e.bin", [])
    with pytest.raises(ShardError, match=r"\[0, 65535\]"):
        write_shard(tmp_path / "big.bin", [70000])
    assert not list(tmp_path.iterdir())


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    from data.atomic import atomic_write
    mask = os.umask(0o022)
    try:
        written = atomic_write(tmp_path / "sub" / "a.txt", [b"x", b"y"])
    finally:
        os.umask(mask)
    assert written.read_bytes() == b"xy" and (written.stat().st_mode & 0o777) == 0o644
