"""Causal attention restricted to one document and a sliding window: FlexAttention on CUDA, SDPA elsewhere.

A query at position i of a packed sequence sees key j when

    j <= i  and  doc[j] == doc[i]  and  i - j < W        (W = 0: no window)

where doc[t] counts the separators at or before t: every document starts with the separator
(the tokenizer's end-of-text token: 50256 for GPT-2, 256 for the byte tokenizer), so a separator
opens the document it precedes. Record #12 of the public speedrun replaced dense 1,024-token
attention by this mask on 64K-token packed sequences (W = 1024); #13 grew W during training;
#20 alternated long and short (W/2) windows over the layers.

Two paths compute the same function:
    "flex"   torch.nn.attention.flex_attention with a BlockMask. The block sparsity of the causal
             window depends only on (W, T) and is built once per pair and cached; the document
             condition is applied inside the visited blocks by the mask function, so a block that
             lies across two documents is still visited (the cost is that of the window).
             Needs CUDA to train: its backward is not implemented on CPU (forward only there).
    "sdpa"   the reference: F.scaled_dot_product_attention with the dense boolean mask, in chunks of
             W queries over only the keys the window can reach (cost T·2W, not T²), so it trains on a
             CPU at the tiny scale.
`masked_attention` picks flex for CUDA tensors and sdpa otherwise (`backend=` or KERNELS_BACKEND:
"auto" | "flex" | "sdpa"). With no document ids and no window both run plain causal SDPA.
Nothing here has been run on a GPU by this repo's tests: the flex path is checked on CPU, forward only.
"""
from __future__ import annotations

import os
from functools import lru_cache

import torch
import torch.nn.functional as F

try:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
except ImportError:  # torch < 2.5: the sdpa path only
    BlockMask = flex_attention = None

BACKENDS = ("auto", "flex", "sdpa")
FLEX_BLOCK = 128


def document_ids(tokens: torch.Tensor, separator: int) -> torch.Tensor:
    """doc[..., t] = number of separators in tokens[..., :t+1] (int32): equal ids ⇔ same document."""
    return (tokens == separator).cumsum(-1, dtype=torch.int32)


def document_positions(tokens: torch.Tensor, separator: int) -> torch.Tensor:
    """Position of each token within its document (0 at its separator): t − (index of the last separator ≤ t).

    Tokens before the first separator count from the start of the sequence.
    """
    index = torch.arange(tokens.size(-1), device=tokens.device).expand_as(tokens)
    starts = torch.where(tokens == separator, index, torch.zeros_like(index))
    return index - starts.cummax(-1).values


def allowed(docs: torch.Tensor | None, window: int, q_index: torch.Tensor, k_index: torch.Tensor) -> torch.Tensor:
    """Boolean mask (B or 1, 1, len(q_index), len(k_index)): causal, same document, within the window."""
    ok = k_index[None, :] <= q_index[:, None]
    if window:
        ok = ok & (q_index[:, None] - k_index[None, :] < window)
    ok = ok[None, None]
    if docs is not None:
        ok = ok & (docs[:, None, q_index, None] == docs[:, None, None, k_index])
    return ok


def sdpa_attention(q, k, v, docs: torch.Tensor | None, window: int, scale: float | None = None):
    """The reference path: SDPA with the boolean mask of `allowed`. q, k, v: (B, H, T, D); docs: (B, T) or None.

    With a window W < T the sequence is cut into chunks of W queries, each attending to its own chunk and
    the one before (all the keys the window can reach): one SDPA call over (B·chunks) rows of W × 2W,
    cost T·2W instead of T². Padding up to a whole chunk is a document of its own, dropped at the end.
    """
    B, H, T, D = q.shape
    index = torch.arange(T, device=q.device)
    if window == 0 or window >= T:
        if docs is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed(docs, 0, index, index), scale=scale)
    n = -(-T // window)
    pad = n * window - T
    q, k, v = (F.pad(x, (0, 0, 0, pad)).view(B, H, n, window, D) for x in (q, k, v))
    k, v = (torch.cat((F.pad(x, (0, 0, 0, 0, 1, 0))[:, :, :-1], x), dim=3) for x in (k, v))  # (B, H, n, 2W, D)
    qpos = torch.arange(n * window, device=q.device).view(n, window)
    kpos = torch.cat((qpos - window, qpos), dim=1)
    ok = (kpos[:, None, :] <= qpos[:, :, None]) & (qpos[:, :, None] - kpos[:, None, :] < window) & (kpos[:, None, :] >= 0)
    ids = torch.zeros(B, T, dtype=torch.int32, device=q.device) if docs is None else docs.to(torch.int32)
    ids = F.pad(ids, (0, pad), value=-1).view(B, n, window)
    kids = torch.cat((F.pad(ids, (0, 0, 1, 0), value=-2)[:, :-1], ids), dim=2)
    ok = ok[None] & (ids[:, :, :, None] == kids[:, :, None, :])  # (B, n, W, 2W)
    y = F.scaled_dot_product_attention(*(x.transpose(1, 2).reshape(B * n, H, -1, D) for x in (q, k, v)),
                                       attn_mask=ok.view(B * n, 1, window, 2 * window), scale=scale)
    return y.view(B, n, H, window, D).transpose(1, 2).reshape(B, H, n * window, D)[:, :, :T]


@lru_cache(maxsize=64)
def window_blocks(window: int, length: int, device: torch.device, block: int = FLEX_BLOCK):
    """(kv_num_blocks, kv_indices) of the causal window at block granularity, cached per (W, T, device).

    Key block j is visited by query block i when some query in i sees some key in j without the
    document condition: j <= i and (i − j − 1)·block + 1 < W (W = 0: every j <= i). Every visited
    block is "partial", so the mask function (with the document ids) decides inside each one.
    """
    n = -(-length // block)
    i, j = torch.arange(n, device=device)[:, None], torch.arange(n, device=device)[None, :]
    visit = j <= i
    if window:
        visit = visit & ((i - j - 1) * block + 1 < window)
    num = visit.sum(-1, dtype=torch.int32)
    indices = torch.argsort(visit.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    return num[None, None], indices[None, None]


def flex_block_mask(docs: torch.Tensor | None, window: int, length: int, device: torch.device,
                    block: int = FLEX_BLOCK) -> BlockMask:
    """The BlockMask of `allowed`: cached window blocks, document ids read by the mask function."""
    def mask_mod(b, h, q_idx, kv_idx):
        ok = kv_idx <= q_idx
        if window:
            ok = ok & (q_idx - kv_idx < window)
        if docs is not None:
            ok = ok & (docs[b, q_idx] == docs[b, kv_idx])
        return ok

    num, indices = window_blocks(window, length, device, block)
    return BlockMask.from_kv_blocks(num, indices, BLOCK_SIZE=block, mask_mod=mask_mod, seq_lengths=(length, length))


def flex_masked_attention(q, k, v, docs: torch.Tensor | None, window: int, scale: float | None = None,
                          block: int = FLEX_BLOCK):
    """FlexAttention with `flex_block_mask`; q, k, v: (B, H, T, D). CPU: forward only (no grad)."""
    if flex_attention is None:
        raise RuntimeError("kernels.attention: torch.nn.attention.flex_attention needs torch >= 2.5")
    mask = flex_block_mask(docs, window, q.size(-2), q.device, block)
    return flex_attention(q, k, v, block_mask=mask, scale=scale)


def use_flex(backend: str | None, q: torch.Tensor) -> bool:
    """Flex for CUDA tensors under "auto"; KERNELS_BACKEND=torch / triton (kernels.backend) mean sdpa / flex."""
    choice = backend or {"torch": "sdpa", "triton": "flex"}.get(os.environ.get("KERNELS_BACKEND", ""), "auto")
    if choice not in BACKENDS:
        raise ValueError(f"kernels.attention: backend must be one of {BACKENDS}, got {choice!r}")
    return choice == "flex" or (choice == "auto" and q.is_cuda and flex_attention is not None)


def masked_attention(q, k, v, docs: torch.Tensor | None = None, window: int = 0, scale: float | None = None,
                     backend: str | None = None):
    """Causal attention within documents and a window of W tokens; q, k, v: (B, H, T, D) → (B, H, T, D).

    docs: (B, T) ids from `document_ids`, or None (one document); window: 0 for none.
    """
    if docs is None and (window == 0 or window >= q.size(-2)):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    if use_flex(backend, q):
        return flex_masked_attention(q, k, v, docs, window, scale)
    return sdpa_attention(q, k, v, docs, window, scale)
