"""Reference paths of kernels/ and the choice of path: these run with or without triton."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kernels
from kernels import backend
from kernels.adamw import fused_adamw_reference_
from kernels.gram import gram_update_reference_
from kernels.newton_schulz import newton_schulz_reference, step_coefficients
from kernels.testing import rel_err

pytestmark = pytest.mark.usefixtures("fresh_seed")
# p(x) = 3.4445x − 4.7750x³ + 2.0315x⁵ has a local max 1.2024 (x ≈ 0.554) and a local min
# 0.6818 (x ≈ 1.050), so it maps [0.6818, 1.2024] into itself.
QUINTIC_BAND = (0.680, 1.203)
ADAMW = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)


@pytest.mark.parametrize("shape", [(64, 128), (128, 64), (4, 48, 96)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_newton_schulz_quintic_lands_in_band(shape, dtype):
    X = newton_schulz_reference(torch.randn(shape, dtype=dtype))
    assert X.shape == shape and X.dtype == dtype
    sv = torch.linalg.svdvals(X.double())
    assert QUINTIC_BAND[0] <= sv.min() and sv.max() <= QUINTIC_BAND[1], (sv.min(), sv.max())


def test_newton_schulz_tall_is_wide_transposed_and_batch_is_loop():
    G = torch.randn(3, 40, 72, dtype=torch.float64)
    X = newton_schulz_reference(G)
    assert rel_err(newton_schulz_reference(G.mT), X.mT) < 1e-12
    assert rel_err(torch.stack([newton_schulz_reference(g) for g in G]), X) < 1e-12


def test_newton_schulz_coefficient_lists_converge_to_polar_factor():
    G = torch.randn(30, 50, dtype=torch.float64)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    X = newton_schulz_reference(G, steps=40, coefficients=[(3.4445, -4.7750, 2.0315)] * 8 + [(1.5, -0.5, 0.0)])
    assert rel_err(X, U @ Vh) < 1e-10


def test_step_coefficients():
    assert step_coefficients(2, (1.0, 2.0, 3.0)) == [(1.0, 2.0, 3.0)] * 2
    assert step_coefficients(3, [(1, 2, 3), (4, 5, 6)]) == [(1, 2, 3), (4, 5, 6), (4, 5, 6)]
    with pytest.raises(ValueError):
        step_coefficients(-1, kernels.QUINTIC)
    with pytest.raises(ValueError):
        step_coefficients(2, [(1, 2)])


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


@pytest.mark.parametrize("side", ["left", "right"])
def test_gram_update_reference_matches_float64(side):
    G = torch.randn(2, 12, 20)
    m = 12 if side == "left" else 20
    S = torch.randn(2, m, m)
    S = S + S.mT
    expected = 0.9 * S.double() + 0.1 * (G.double() @ G.double().mT if side == "left" else G.double().mT @ G.double())
    assert gram_update_reference_(S, G, beta=0.9, alpha=0.1, side=side) is S
    assert rel_err(S, expected) < 1e-6
    with pytest.raises(ValueError, match="side"):
        kernels.gram_update_(S, G, beta=0.9, alpha=0.1, side="up")


def test_backend_choice(monkeypatch):
    cpu = [torch.zeros(1)]
    assert not backend.use_triton("torch", cpu)
    assert not backend.use_triton("auto", cpu)
    with pytest.raises(ValueError, match="backend"):
        backend.use_triton("cuda", cpu)
    with pytest.raises(RuntimeError):  # float64 is not supported, or triton is missing
        kernels.newton_schulz(torch.randn(4, 4, dtype=torch.float64), backend="triton")
    monkeypatch.setenv("KERNELS_BACKEND", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        backend.use_triton(None, cpu)
    monkeypatch.setenv("KERNELS_BACKEND", "torch")
    assert not backend.use_triton(None, cpu)


def test_cpu_tensors_take_the_reference_in_auto(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the Triton path ran on CPU tensors in auto mode")
    for module, name in [("newton_schulz", "_triton_steps"), ("adamw", "_tables"), ("gram", "syrk")]:
        monkeypatch.setattr(sys.modules[f"kernels.{module}"], name, fail)
    G = torch.randn(6, 10)
    assert torch.equal(kernels.newton_schulz(G), newton_schulz_reference(G))
    kernels.gram_update_(torch.zeros(6, 6), G, beta=0.5, alpha=0.5)
    kernels.fused_adamw_([torch.randn(3)], [torch.randn(3)], [torch.zeros(3)], [torch.zeros(3)], step=1, **ADAMW)


def test_everything_works_without_triton():
    code = """
import sys
sys.modules["triton"] = None  # makes `import triton` fail
import pytest, torch, kernels
from kernels import backend
assert backend.triton is None and "triton cannot be imported" in backend.TRITON_MISSING
G = torch.randn(8, 12)
kernels.newton_schulz(G)
kernels.gram_update_(torch.zeros(8, 8), G, beta=0.5, alpha=0.5, side="left")
kernels.fused_adamw_([torch.randn(4)], [torch.randn(4)], [torch.zeros(4)], [torch.zeros(4)], step=1, lr=1e-3,
                     beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0)
with pytest.raises(RuntimeError, match="triton cannot be imported"):
    kernels.newton_schulz(G, backend="triton")
"""
    root = Path(kernels.__file__).parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr


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
