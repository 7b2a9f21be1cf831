"""kernels/adamw.py: the fused AdamW reference against torch.optim.AdamW and float64 formulas, and the Triton
path (TRITON_INTERPRET=1 on CPU) against the reference, side by side."""

import pytest
import torch

import kernels
from kernels.adamw import fused_adamw_reference_
from kernels.testing import rel_err
from tests.kernel_cases import ADAMW, ADAMW_TOL, GUARD, guarded, needs_triton

pytestmark = pytest.mark.usefixtures("fresh_seed")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tensor_step", [False, True])
def test_fused_adamw_reference_matches_torch(dtype, tensor_step):
    shapes = [(5,), (17, 3), (2, 3, 4)]
    ours = [torch.randn(s, dtype=dtype) for s in shapes]
    theirs = [torch.nn.Parameter(p.clone()) for p in ours]
    opt = torch.optim.AdamW(theirs, lr=ADAMW["lr"], betas=(ADAMW["beta1"], ADAMW["beta2"]), eps=ADAMW["eps"],
                            weight_decay=ADAMW["weight_decay"], foreach=False)
    m, v = [torch.zeros_like(p) for p in ours], [torch.zeros_like(p) for p in ours]
    for step in range(1, 6):
        grads = [torch.randn(s, dtype=dtype) for s in shapes]
        for p, g in zip(theirs, grads):
            p.grad = g
        opt.step()
        fused_adamw_reference_(ours, grads, m, v, step=torch.tensor(step) if tensor_step else step, **ADAMW)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    for p, q, mi, vi in zip(ours, theirs, m, v):
        state = opt.state[q]
        assert rel_err(p, q.detach()) < tol
        assert rel_err(mi, state["exp_avg"]) < tol and rel_err(vi, state["exp_avg_sq"]) < tol



def test_fused_adamw_reference_master_copy_carries_fp32_update():
    shapes = [(33,), (8, 9)]
    fp32 = [torch.randn(s) for s in shapes]
    masters = [p.clone() for p in fp32]
    params = [p.to(torch.bfloat16) for p in fp32]
    state = [[torch.zeros(s) for s in shapes] for _ in range(4)]
    for step in range(1, 4):
        grads = [torch.randn(s) for s in shapes]
        fused_adamw_reference_(fp32, grads, state[0], state[1], step=step, **ADAMW)
        fused_adamw_reference_(params, grads, state[2], state[3], step=step, master_params=masters, **ADAMW)
    for p, w, f in zip(params, masters, fp32):
        assert torch.equal(w, f) and torch.equal(p, f.to(torch.bfloat16))



def adamw_float64(w, g, steps, lr, beta1, beta2, eps, weight_decay):
    """`steps` AdamW steps with the same gradient, written out in float64 (bias corrections exact)."""
    w, g = w.double(), g.double()
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    for t in range(1, steps + 1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        w = w * (1 - lr * weight_decay) - lr / (1 - beta1 ** t) * m / ((v / (1 - beta2 ** t)).sqrt() + eps)
    return w



def assert_bias_corrections_exact(run, beta2):
    """The update of fp32 AdamW after 1 and 3 steps vs float64: 1 − β₂ᵗ computed in fp32 would be off by
    ~1e-4 (β₂ = 0.9999) to ~1e-3 (0.99999) relative; torch.optim's is ~1e-7. From w = 0, so that the
    rounding of w to fp32 is relative to the update itself."""
    hyper = dict(ADAMW, beta2=beta2)
    for steps in (1, 3):
        w, g = torch.zeros(300), torch.randn(300)
        ours = run(w.clone(), g, steps, hyper)
        assert rel_err(ours, adamw_float64(w, g, steps, **hyper)) < 1e-6, (steps, beta2)



@pytest.mark.parametrize("beta2", [0.9999, 0.99999])
@pytest.mark.parametrize("tensor_step", [False, True])
def test_fused_adamw_reference_bias_corrections_in_float64(beta2, tensor_step):
    def run(w, g, steps, hyper):
        m, v = torch.zeros_like(w), torch.zeros_like(w)
        for t in range(1, steps + 1):
            fused_adamw_reference_([w], [g], [m], [v], step=torch.tensor(t) if tensor_step else t, **hyper)
        return w

    assert_bias_corrections_exact(run, beta2)



@needs_triton
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



@needs_triton
@pytest.mark.parametrize("beta2", [0.9999, 0.99999])
@pytest.mark.parametrize("tensor_step", [False, True])
def test_fused_adamw_bias_corrections_in_float64(beta2, tensor_step):
    def run(w, g, steps, hyper):
        m, v = torch.zeros_like(w), torch.zeros_like(w)
        for t in range(1, steps + 1):
            kernels.fused_adamw_([w], [g], [m], [v], step=torch.tensor(t) if tensor_step else t, backend="triton",
                                 **hyper)
        return w

    assert_bias_corrections_exact(run, beta2)

