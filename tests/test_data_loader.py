"""The shard loader: deterministic, rank slices that tile the global batch, shard rollover."""
import numpy as np
import pytest
import torch

from data.shards import write_shard
from data.loader import ShardLoader
from data.shards import read_shard


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


BOS = 65000


@pytest.fixture
def documents(tmp_path):
    """Two shards of documents of random lengths 1..40, each opened by BOS; shard 0 starts mid-document."""
    rng = np.random.default_rng(0)
    paths = []
    for i, n_docs in enumerate((60, 45)):
        tokens = [int(t) for t in rng.integers(0, 1000, 3)] if i == 0 else []
        for _ in range(n_docs):
            tokens += [BOS] + [int(t) for t in rng.integers(0, 1000, rng.integers(0, 40))]
        paths.append(str(write_shard(tmp_path / f"d_{i}.bin", np.array(tokens))))
    return paths


def reference_rows(files, seq_len, rows_per_batch, steps, max_doc_len):
    """The aligned rows by the plain rule: per shard, split at BOS, cut each document to max_doc_len, fill
    rows of seq_len + 1 from successive documents (dropping the rest of the one that ends a row); a batch
    that the shard cannot finish starts again in the next shard."""
    batches, shard, doc = [], 0, 0
    while len(batches) < steps:
        tokens = read_shard(files[shard]).tolist()
        docs, current = [], None
        for t in tokens:
            if t == BOS:
                current = [t]
                docs.append(current)
            elif current is not None:
                current.append(t)
        docs = [d[:max_doc_len] if max_doc_len else d for d in docs]
        while len(batches) < steps:
            rows, d = [], doc
            for _ in range(rows_per_batch):
                row = []
                while len(row) < seq_len + 1 and d < len(docs):
                    row += docs[d][:seq_len + 1 - len(row)]
                    d += 1
                rows.append(row)
            if len(rows[-1]) < seq_len + 1:
                shard, doc = (shard + 1) % len(files), 0
                break
            batches.append(rows)
            doc = d
    return batches


@pytest.mark.parametrize("max_doc_len", [0, 9])
def test_document_aligned_rows_match_the_plain_rule(documents, max_doc_len):
    seq_len, steps = 24, 14
    expected = reference_rows(documents, seq_len, 8, steps, max_doc_len)
    assert {len(b) for b in expected} == {8} and all(row[0] == BOS for b in expected for row in b)
    for world in (1, 2):  # 2 ranks × 2 micro-batches of 2 rows, or 1 rank × 4 micro-batches
        loaders = [ShardLoader(documents, 8 * seq_len, 2 * seq_len, seq_len, r, world, torch.device("cpu"),
                               bos=BOS, max_doc_len=max_doc_len) for r in range(world)]
        for step in range(steps):
            got = [torch.cat([torch.cat([x, y[:, -1:]], dim=1) for x, y in loader.next_batch()]) for loader in loaders]
            assert torch.cat(got).tolist() == expected[step], step


def test_document_aligned_loader_resumes_and_follows_a_batch_schedule(documents):
    def loader():
        return ShardLoader(documents, 64, 16, 16, 0, 1, torch.device("cpu"), bos=BOS, max_doc_len=12)
    a = loader()
    for _ in range(5):
        list(a.next_batch())
    b = loader()
    b.load_state_dict(a.state_dict())
    for size in (32, 128, 64):
        xa = [x for x, _ in a.next_batch(global_tokens=size)]
        xb = [x for x, _ in b.next_batch(global_tokens=size)]
        assert len(xa) == size // 16 and all(torch.equal(p, q) for p, q in zip(xa, xb))
        assert all(row[0] == BOS for x in xa for row in x.tolist())
