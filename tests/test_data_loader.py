"""The shard loader: deterministic, rank slices that tile the global batch, shard rollover."""
import numpy as np
import pytest
import torch

from data.shards import write_shard
from data.loader import ShardLoader


@pytest.fixture
def shards(tmp_path):
    """Three shards whose tokens are their global positions (mod 2^16), so slices are checkable."""
    paths, start = [], 0
    for i, n in enumerate((1000, 700, 900)):
        paths.append(str(write_shard(tmp_path / f"s_{i}.bin", np.arange(start, start + n) % 65536)))
        start += n
    return paths


def batches(files, rank, world, steps, global_tokens=256, micro=64, seq_len=16):
    loader = ShardLoader(files, global_tokens, micro, seq_len, rank, world, torch.device("cpu"))
    return [[(x.clone(), y.clone()) for x, y in loader.next_batch()] for _ in range(steps)]


def test_targets_are_inputs_shifted_and_shaped(shards):
    (x, y), *_ = batches(shards, 0, 1, 1)[0]
    assert x.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x.flatten()[1:], y.flatten()[:-1]) and y.flatten()[-1] == x.flatten()[-1] + 1


def test_ranks_tile_the_global_batch_like_accumulation(shards):
    single = batches(shards, 0, 1, 6)  # world 1: 4 accumulation steps
    ranks = [batches(shards, r, 4, 6) for r in range(4)]  # world 4: 1 step each
    for step in range(6):
        for r in range(4):
            assert len(ranks[r][step]) == 1
            assert torch.equal(ranks[r][step][0][0], single[step][r][0])
        pieces = torch.cat([x.flatten() for x, _ in single[step]])
        assert torch.equal(pieces, torch.arange(pieces[0], pieces[0] + 256))  # contiguous, disjoint


def test_deterministic_and_rolls_over_and_loops(shards):
    first, second = batches(shards, 1, 2, 12), batches(shards, 1, 2, 12)
    assert all(torch.equal(a[0][0], b[0][0]) for a, b in zip(first, second))
    starts = [int(batches_of[0][0][0, 0]) for batches_of in batches(shards, 0, 1, 12)]
    # shard 0 fits 3 batches of 257 tokens, shard 1 two, shard 2 three; then back to shard 0
    assert starts == [0, 256, 512, 1000, 1256, 1700, 1956, 2212, 0, 256, 512, 1000]


def test_state_dict_resumes_exactly(shards):
    loader = ShardLoader(shards, 256, 64, 16, 0, 1, torch.device("cpu"))
    for _ in range(4):
        list(loader.next_batch())
    state = loader.state_dict()
    expected = [x for x, _ in loader.next_batch()]
    fresh = ShardLoader(shards, 256, 64, 16, 0, 1, torch.device("cpu"))
    fresh.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(expected, (x for x, _ in fresh.next_batch())))
