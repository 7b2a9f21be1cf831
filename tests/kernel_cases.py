"""Shared cases of the kernel tests: dtypes and tolerances of the Triton paths under TRITON_INTERPRET=1,
and outputs poisoned with NaN inside GUARD-filled memory, so a missed write or a write past the end fails.

Small odd sizes (not multiples of the 128-row tiles or the 64-wide K steps), batches, tall and wide
matrices, fp32 and fp16 (the interpreter has no usable bf16).
"""
import importlib.util

import pytest
import torch

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton cannot be imported: Triton-path tests skipped")

ADAMW = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)


DTYPES = [torch.float32, torch.float16]


PRODUCT_TOL = {torch.float32: 1e-5, torch.float16: 3e-3}  # one matrix product, output rounded once


NEWTON_SCHULZ_TOL = {torch.float32: 2e-5, torch.float16: 1e-2}  # five steps amplify rounding


ADAMW_TOL = {torch.float32: 5e-6, torch.float16: 1e-3}


GUARD = 1024.0  # exact in every dtype; an update would change it


def poisoned(batch, rows, cols, dtype):
    """A NaN-filled output: a strided view into a larger GUARD-filled buffer (returned too)."""
    buffer = torch.full((batch, rows + 3, cols + 5), GUARD, dtype=dtype)
    return buffer[:, :rows, :cols].fill_(float("nan")), buffer


def untouched_around(out, buffer):
    return bool((buffer[:, out.size(1):] == GUARD).all() and (buffer[:, :, out.size(2):] == GUARD).all())


def guarded(t, guards):
    """A copy of t at the start of a GUARD-filled buffer 16 bytes longer; the tail goes to `guards`."""
    buffer = torch.full((t.numel() + 16 // t.element_size(),), GUARD, dtype=t.dtype)
    guards.append(buffer[t.numel():])
    return buffer[:t.numel()].view_as(t).copy_(t)


def symmetric(batch, m, dtype):
    S = torch.randn(batch, m, m, dtype=torch.float64)
    return (S + S.mT).to(dtype)

