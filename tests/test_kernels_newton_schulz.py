"""kernels/newton_schulz.py: the PyTorch reference against its polar-factor band and float64, and the Triton
path (TRITON_INTERPRET=1 on CPU) against the reference, side by side."""

import pytest
import torch

import kernels
from kernels.newton_schulz import (
    QUINTIC,
    ax_plus_bx,
    newton_schulz_reference,
    step_coefficients,
)
from kernels.testing import rel_err
from tests.kernel_cases import (
    DTYPES,
    NEWTON_SCHULZ_TOL,
    PRODUCT_TOL,
    needs_triton,
    poisoned,
    symmetric,
    untouched_around,
)

pytestmark = pytest.mark.usefixtures("fresh_seed")


QUINTIC_BAND = (0.680, 1.203)



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



@needs_triton
@pytest.mark.parametrize("batch,m,n", [(1, 100, 150), (2, 130, 300), (1, 64, 64)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_ax_plus_bx(batch, m, n, dtype):
    X, B = torch.randn(batch, m, n).to(dtype), symmetric(batch, m, dtype)
    out, buffer = poisoned(batch, m, n, dtype)
    assert ax_plus_bx(X, B, a=1.5, out=out) is out
    assert rel_err(out, 1.5 * X.double() + B.double() @ X.double()) < PRODUCT_TOL[dtype]
    assert untouched_around(out, buffer)



@needs_triton
@pytest.mark.parametrize("shape", [(100, 150), (150, 100), (96, 96), (3, 40, 72), (2, 2, 72, 40)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_newton_schulz(shape, dtype):
    G = torch.randn(shape)
    X = kernels.newton_schulz(G, dtype=dtype, backend="triton")
    assert X.shape == G.shape and X.dtype == G.dtype
    assert rel_err(X, newton_schulz_reference(G.double())) < NEWTON_SCHULZ_TOL[dtype]



@needs_triton
def test_newton_schulz_per_step_coefficients():
    G = torch.randn(2, 90, 60)
    table = [QUINTIC, (3.0, -3.2, 1.2), (1.5, -0.5, 0.0)]
    X = kernels.newton_schulz(G, steps=4, coefficients=table, backend="triton")
    expected = newton_schulz_reference(G.double(), steps=4, coefficients=table)
    assert rel_err(X, expected) < NEWTON_SCHULZ_TOL[torch.float32]

