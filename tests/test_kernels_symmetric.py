"""kernels/symmetric.py: the Triton symmetric rank-k product (syrk) against float64."""

import pytest
import torch

from kernels.symmetric import syrk
from kernels.testing import rel_err
from tests.kernel_cases import (
    DTYPES,
    PRODUCT_TOL,
    needs_triton,
    poisoned,
    symmetric,
    untouched_around,
)

pytestmark = pytest.mark.usefixtures("fresh_seed")


@needs_triton
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

