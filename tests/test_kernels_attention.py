"""Document-masked sliding-window attention: both paths against a float64 brute force."""
import math

import pytest
import torch

from kernels import attention

SEP = 7


def brute_mask(tokens, window):
    """allowed[b, i, j] by plain loops: causal, same document (a separator opens one), i − j < W."""
    B, T = tokens.shape
    mask = torch.zeros(B, T, T, dtype=torch.bool)
    for b in range(B):
        docs, doc = [], 0
        for t in range(T):
            doc += int(tokens[b, t] == SEP)
            docs.append(doc)
        for i in range(T):
            for j in range(i + 1):
                mask[b, i, j] = docs[j] == docs[i] and (window == 0 or i - j < window)
    return mask


def brute_force(q, k, v, tokens, window):
    """softmax(q·kᵀ/√D over the allowed keys)·v in float64."""
    q, k, v = q.double(), k.double(), v.double()
    scores = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(~brute_mask(tokens, window)[:, None], -math.inf)
    return torch.einsum("bhij,bhjd->bhid", scores.softmax(-1), v)


def random_case(T, seed, doc_starts=None):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, SEP, (2, T), generator=g)
    if doc_starts is None:
        tokens[torch.rand(2, T, generator=g) < 0.05] = SEP
    else:
        tokens[:, doc_starts] = SEP
    q, k, v = (torch.randn(2, 2, T, 8, generator=g) for _ in range(3))
    return tokens, q, k, v


CASES = [  # (T, window, separator positions or None for random): long documents, windows above T, none
    (96, 16, [0, 70]),        # the first document (70 tokens) is longer than the window
    (96, 200, None),          # a window larger than the sequence
    (150, 0, None),           # no window, random documents
    (150, 33, None),          # a window that is no multiple of anything, random documents
    (64, 1, [5]),             # W = 1: each token sees only itself
]


@pytest.mark.parametrize("T, window, starts", CASES)
def test_sdpa_path_forward_and_backward_match_float64_brute_force(T, window, starts):
    tokens, q, k, v = random_case(T, seed=T + window, doc_starts=starts)
    docs = attention.document_ids(tokens, SEP)
    q64, k64, v64 = (x.double().requires_grad_() for x in (q, k, v))
    out = attention.sdpa_attention(q64, k64, v64, docs, window)
    ref_inputs = [x.double().requires_grad_() for x in (q, k, v)]
    ref = brute_force(*ref_inputs, tokens, window)
    assert torch.allclose(out, ref, atol=1e-10)
    grad = torch.randn_like(ref)
    out.backward(grad)
    ref.backward(grad)
    for mine, theirs in zip((q64, k64, v64), ref_inputs):
        assert torch.allclose(mine.grad, theirs.grad, atol=1e-10)


@pytest.mark.parametrize("T, window, starts", CASES)
def test_flex_path_forward_matches_sdpa_path(T, window, starts):
    """FlexAttention's backward is not implemented on CPU, so its forward is what a CPU can check."""
    if attention.flex_attention is None:
        pytest.skip("torch without flex_attention")
    tokens, q, k, v = random_case(T, seed=T + window, doc_starts=starts)
    docs = attention.document_ids(tokens, SEP)
    with torch.no_grad():
        for block in (16, 128):
            flex = attention.flex_masked_attention(q, k, v, docs, window, block=block)
            assert torch.allclose(flex, attention.sdpa_attention(q, k, v, docs, window), atol=1e-5)


@pytest.mark.parametrize("T, window, block", [(96, 16, 16), (150, 33, 16), (150, 0, 32), (64, 200, 16), (256, 1, 32)])
def test_window_blocks_visit_exactly_the_blocks_with_an_allowed_pair(T, window, block):
    """The eager flex path reads only the mask function, so the cached block sparsity is checked here."""
    num, indices = attention.window_blocks(window, T, torch.device("cpu"), block)
    one_doc = torch.zeros(1, T, dtype=torch.long)
    mask = brute_mask(one_doc, window)[0]
    n = -(-T // block)
    for i in range(n):
        wanted = {j for j in range(n) if mask[i * block:(i + 1) * block, j * block:(j + 1) * block].any()}
        visited = set(indices[0, 0, i, :num[0, 0, i]].tolist())
        assert visited == wanted, (i, visited, wanted)


def test_window_blocks_are_cached():
    assert attention.window_blocks(256, 1024, torch.device("cpu")) is attention.window_blocks(256, 1024, torch.device("cpu"))


def test_no_documents_and_no_window_is_plain_causal_sdpa():
    tokens, q, k, v = random_case(40, seed=1)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.equal(attention.masked_attention(q, k, v), expected)
    one_doc = torch.zeros(2, 40, dtype=torch.int32)
    assert torch.allclose(attention.masked_attention(q, k, v, one_doc, 0, backend="sdpa"), expected, atol=1e-6)


def test_document_positions_restart_at_each_separator():
    tokens = torch.tensor([[3, SEP, 1, 2, SEP, SEP, 4]])
    assert attention.document_positions(tokens, SEP).tolist() == [[0, 0, 1, 2, 0, 0, 1]]
    assert attention.document_ids(tokens, SEP).tolist() == [[0, 1, 1, 1, 2, 3, 3]]


def test_backend_choice():
    q = torch.zeros(1, 1, 4, 2)
    assert not attention.use_flex(None, q) and attention.use_flex("flex", q)
    with pytest.raises(ValueError, match="backend"):
        attention.use_flex("cuda", q)
