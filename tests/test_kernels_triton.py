"""Triton paths of kernels/ on CPU tensors under TRITON_INTERPRET=1, against float64 or the references.

Small odd sizes (not multiples of the 128-row tiles or the 64-wide K steps), batches, tall and wide
matrices, fp32 and fp16 (the interpreter has no usable bf16); outputs are NaN-filled before each
call, so any element a kernel fails to write fails the bound, and sit inside GUARD-filled memory
that must come back unchanged, so any write past them fails too.
"""
import pytest
import torch

triton = pytest.importorskip("triton", reason="triton cannot be imported: Triton-path tests skipped")

import kernels  # noqa: E402
from kernels.adamw import fused_adamw_reference_  # noqa: E402
from kernels.gram import gram_update_reference_  # noqa: E402
from kernels.newton_schulz import QUINTIC, ax_plus_bx, newton_schulz_reference  # noqa: E402
from kernels.symmetric import syrk  # noqa: E402
from kernels.testing import rel_err  # noqa: E402

pytestmark = pytest.mark.usefixtures("fresh_seed")
DTYPES = [torch.float32, torch.float16]
PRODUCT_TOL = {torch.float32: 1e-5, torch.float16: 3e-3}  # one matrix product, output rounded once
NEWTON_SCHULZ_TOL = {torch.float32: 2e-5, torch.float16: 1e-2}  # five steps amplify rounding
ADAMW_TOL = {torch.float32: 5e-6, torch.float16: 1e-3}
GUARD = 1024.0  # exact in every dtype; an update would change it
ADAMW = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)


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


@pytest.mark.parametrize("batch,m,k", [(1, 100, 70), (2, 130, 193), (2, 256, 40)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_d", [False, True])
@pytest.mark.parametrize("transposed", [False, True])
def test_syrk(batch, m, k, dtype, with_d, transposed):
    X = torch.randn(batch, k, m).to(dtype).mT if transposed else torch.randn(batch, m, k).to(dtype)
    D = symmetric(batch, m, dtype) if with_d else None
    out, buffer = poisoned(batch, m, m, dtype)
    assert syrk(X, alpha=0.7, beta=-0.3, D=D, out=out) is out
    X64 = X.double()
    expected = 0.7 * X64 @ X64.mT + (-0.3 * D.double() if with_d else 0)
    assert rel_err(out, expected) < PRODUCT_TOL[dtype]
    assert torch.equal(out, out.mT) and untouched_around(out, buffer)


@pytest.mark.parametrize("batch,m,n", [(1, 100, 150), (2, 130, 300), (1, 64, 64)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_ax_plus_bx(batch, m, n, dtype):
    X, B = torch.randn(batch, m, n).to(dtype), symmetric(batch, m, dtype)
    out, buffer = poisoned(batch, m, n, dtype)
    assert ax_plus_bx(X, B, a=1.5, out=out) is out
    assert rel_err(out, 1.5 * X.double() + B.double() @ X.double()) < PRODUCT_TOL[dtype]
    assert untouched_around(out, buffer)


@pytest.mark.parametrize("shape", [(100, 150), (150, 100), (96, 96), (3, 40, 72), (2, 2, 72, 40)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_newton_schulz(shape, dtype):
    G = torch.randn(shape)
    X = kernels.newton_schulz(G, dtype=dtype, backend="triton")
    assert X.shape == G.shape and X.dtype == G.dtype
    assert rel_err(X, newton_schulz_reference(G.double())) < NEWTON_SCHULZ_TOL[dtype]


def test_newton_schulz_per_step_coefficients():
    G = torch.randn(2, 90, 60)
    table = [QUINTIC, (3.0, -3.2, 1.2), (1.5, -0.5, 0.0)]
    X = kernels.newton_schulz(G, steps=4, coefficients=table, backend="triton")
    expected = newton_schulz_reference(G.double(), steps=4, coefficients=table)
    assert rel_err(X, expected) < NEWTON_SCHULZ_TOL[torch.float32]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("g_dtype", DTYPES)
@pytest.mark.parametrize("batch", [(), (2,)])
def test_gram_update(side, g_dtype, batch):
    G = torch.randn(*batch, 90, 170).to(g_dtype)
    m = 90 if side == "left" else 170
    S = symmetric(1, m, torch.float32)[0].expand(*batch, m, m).contiguous()
    expected = gram_update_reference_(S.double(), G.double(), beta=0.95, alpha=0.05, side=side)
    S.masked_fill_(torch.ones(m, m, dtype=torch.bool).triu(1), float("nan"))  # only the lower triangle is read
    assert kernels.gram_update_(S, G, beta=0.95, alpha=0.05, side=side, backend="triton") is S
    assert rel_err(S, expected) < PRODUCT_TOL[torch.float32]
    assert torch.equal(S, S.mT)


@pytest.mark.parametrize("param_dtypes,master", [([torch.float32], False), ([torch.float16], False),
                                                 ([torch.float16], True), ([torch.float32, torch.float16], False)])
@pytest.mark.parametrize("tensor_step", [False, True])
def test_fused_adamw(param_dtypes, master, tensor_step):
    shapes = [(1,), (7,), (4097,), (3, 1000), (64, 65), (2, 4096)]
    dtypes = [param_dtypes[i % len(param_dtypes)] for i in range(len(shapes))]
    start, m0, v0 = ([torch.rand(s) for s in shapes] for _ in range(3))
    guards = []

    def state(copy):
        return ([copy(p.to(d)) for p, d in zip(start, dtypes)], [copy(p) for p in start] if master else None,
                [copy(x) for x in m0], [copy(x) for x in v0])

    params, masters, m, v = state(lambda t: guarded(t, guards))
    ref_params, ref_masters, ref_m, ref_v = state(torch.clone)
    for step in range(1, 4):
        grads = [torch.randn(s).to(d) for s, d in zip(shapes, dtypes)]
        if master:
            for p in params:
                p.fill_(float("nan"))
        kernels.fused_adamw_(params, grads, m, v, step=torch.tensor(step) if tensor_step else step,
                             master_params=masters, backend="triton", **ADAMW)
        fused_adamw_reference_(ref_params, grads, ref_m, ref_v, step=step, master_params=ref_masters, **ADAMW)
    # Elementwise bounds with an absolute floor: a one-element moment can land near zero, where a
    # relative error of a few rounding steps of its O(1) terms is meaningless.
    for p, q, d in zip(params, ref_params, dtypes):
        assert p.dtype == d
        torch.testing.assert_close(p, q, rtol=ADAMW_TOL[d], atol=ADAMW_TOL[d])
    for x, y in zip(m + v + (masters or []), ref_m + ref_v + (ref_masters or [])):
        torch.testing.assert_close(x, y, rtol=ADAMW_TOL[torch.float32], atol=ADAMW_TOL[torch.float32])
    assert all((g == GUARD).all() for g in guards), "a write past the end of a tensor"


@pytest.mark.parametrize("beta2", [0.9999, 0.99999])
@pytest.mark.parametrize("tensor_step", [False, True])
def test_fused_adamw_bias_corrections_in_float64(beta2, tensor_step):
    from test_kernels_reference import assert_bias_corrections_exact

    def run(w, g, steps, hyper):
        m, v = torch.zeros_like(w), torch.zeros_like(w)
        for t in range(1, steps + 1):
            kernels.fused_adamw_([w], [g], [m], [v], step=torch.tensor(t) if tensor_step else t, backend="triton",
                                 **hyper)
        return w

    assert_bias_corrections_exact(run, beta2)
