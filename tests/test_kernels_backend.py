"""kernels/backend.py: which implementation the wrappers pick (Triton on CUDA, the reference elsewhere), and
that everything works without triton."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kernels
from kernels import backend
from kernels.newton_schulz import newton_schulz_reference
from tests.kernel_cases import ADAMW

pytestmark = pytest.mark.usefixtures("fresh_seed")


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

