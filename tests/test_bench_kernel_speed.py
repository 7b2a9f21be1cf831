"""The GPU benchmarks without a GPU: bench/kernel_speed.py refuses cleanly and counts right; the kernels compile."""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.kernel_speed import adamw_bytes, gpt_param_shapes, muon_batches, ns_flops

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the benchmark would run")
def test_refuses_without_cuda():
    done = subprocess.run([sys.executable, "bench/kernel_speed.py", "--quick"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "no CUDA device" in done.stderr and done.stdout == ""


def test_speedrun_sizes():
    assert sum(math.prod(s) for s in gpt_param_shapes()) == 123_568_128
    hidden = [s for s in gpt_param_shapes() if 50304 not in s]
    assert sum(math.prod(b) for b in muon_batches()) == sum(math.prod(s) for s in hidden)


def test_counts():
    assert ns_flops(2, 3, 5, steps=1) == 2 * (2 * 3 * 3 * 5 + 2 * 3 ** 3 + 2 * 3 * 3 * 5)
    assert ns_flops(1, 5, 3) == ns_flops(1, 3, 5)
    assert adamw_bytes(1, 4, 4, master=False) == 4 + 8 + 8 + 8  # g; m, v read and written; p read and written
    assert adamw_bytes(1, 2, 2, master=True) == 2 + 16 + 8 + 2  # master read and written, param written


def test_kernels_compile_for_hopper_without_a_gpu():
    """Every Triton kernel compiles for sm_90 with ptxas; matrix kernels use HGMMA, none spills."""
    triton = pytest.importorskip("triton", reason="triton cannot be imported: no compile check")
    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump").exists():
        pytest.skip("this triton build ships no NVIDIA tools")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "bench/compile_kernels.py", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("HGMMA") == 3 and done.stdout.count("| AdamW |") == 2
