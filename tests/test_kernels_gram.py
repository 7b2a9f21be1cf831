"""kernels/gram.py: the Gram-update reference against float64, and the Triton path against the reference."""

import pytest
import torch

import kernels
from kernels.gram import gram_update_reference_
from kernels.testing import rel_err
from tests.kernel_cases import DTYPES, PRODUCT_TOL, needs_triton, symmetric

pytestmark = pytest.mark.usefixtures("fresh_seed")


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



@needs_triton
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

