"""Compile the Triton kernels for a Hopper GPU without one, and report what the compiler made of them.

    python bench/compile_kernels.py [--arch 90] [--quick]

For each kernel (every autotune config of the bf16 matrix kernels, or the first with --quick, at
the speedrun's 768×3072 sizes) it prints registers, stack bytes (spills), shared memory and counts of the instructions
that matter: HGMMA (Hopper's warpgroup tensor-core instruction), 16-byte global loads and stores,
and local-memory traffic (LDL/STL). Needs only triton's bundled ptxas and cuobjdump: no GPU, no
driver. Exits with status 1 when a bf16 matrix kernel has no HGMMA or any kernel spills.
Arguments are typed as triton's launcher would: pointers and multiples of 16 marked 16-divisible,
ints equal to 1 made constants.
"""
from __future__ import annotations

import argparse
import collections
import importlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("bench/compile_kernels.py: unset TRITON_INTERPRET; the interpreter compiles nothing")

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

symmetric, newton_schulz, adamw = (importlib.import_module(f"kernels.{name}")
                                   for name in ("symmetric", "newton_schulz", "adamw"))
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
INSTRUCTIONS = r"\b((?:HGMMA|HMMA|LDL|STL)[A-Z0-9x.]*|(?:LDG|STG)\.E\.128)\b"


def compile_report(fn, args: dict, num_warps: int, num_stages: int, arch: int) -> tuple[str, bool, bool]:
    """Compile fn for sm_<arch>; returns its table cells, whether it is spill-free, whether it has HGMMA."""
    signature, constants, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        value = args[name]
        if isinstance(value, str) and value.startswith("*"):
            signature[name], attrs[(i,)] = value, [["tt.divisibility", 16]]
        elif name.isupper() or value == 1 and isinstance(value, int):
            signature[name], constants[name] = "constexpr", value
        elif isinstance(value, int):
            signature[name] = "i32"
            attrs.update({(i,): [["tt.divisibility", 16]]} if value % 16 == 0 else {})
        else:
            signature[name] = "fp32"
    kernel = triton.compile(ASTSource(fn, signature, constants, attrs), target=GPUTarget("cuda", arch, 128),
                            options=dict(num_warps=num_warps, num_stages=num_stages))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(kernel.asm["cubin"])
        cubin.flush()
        sass = subprocess.run([CUOBJDUMP, "-sass", cubin.name], capture_output=True, text=True, check=True).stdout
        usage = subprocess.run([CUOBJDUMP, "-res-usage", cubin.name], capture_output=True, text=True,
                               check=True).stdout
    registers = re.search(r"REG:(\d+)", usage).group(1)
    stack = int(re.search(r"STACK:(\d+)", usage).group(1))
    counts = collections.Counter(re.findall(INSTRUCTIONS, sass))
    found = ", ".join(f"{op} ×{n}" for op, n in sorted(counts.items()))
    has_hgmma = any(op.startswith("HGMMA") for op in counts)
    return f"| {registers} | {stack} | {kernel.metadata.shared} | {found} |", stack == 0, has_hgmma


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for H100/H200")
    parser.add_argument("--quick", action="store_true", help="only the first autotune config of each kernel")
    args = parser.parse_args(argv)
    arch = args.arch
    m, k = 768, 3072
    matrix = [("syrk A = XXᵀ", symmetric._syrk_kernel, symmetric.CONFIGS,
               dict(x_ptr="*bf16", d_ptr="*bf16", c_ptr="*bf16", M=m, K=k, sxb=m * k, sxm=k, sxk=1, sdb=m * m,
                    sdm=m, sdn=1, scb=m * m, scm=m, scn=1, alpha=1.0, beta=0.0, HAS_D=False, PRECISION=None)),
              ("syrk B = bA + cA²", symmetric._syrk_kernel, symmetric.CONFIGS,
               dict(x_ptr="*bf16", d_ptr="*bf16", c_ptr="*bf16", M=m, K=m, sxb=m * m, sxm=m, sxk=1, sdb=m * m,
                    sdm=m, sdn=1, scb=m * m, scm=m, scn=1, alpha=2.0, beta=-4.8, HAS_D=True, PRECISION=None)),
              ("Y = aX + BX", newton_schulz._ax_plus_bx_kernel, newton_schulz.CONFIGS,
               dict(b_ptr="*bf16", x_ptr="*bf16", y_ptr="*bf16", M=m, N=k, sbb=m * m, sbm=m, sbk=1, sxb=m * k,
                    sxm=k, sxn=1, syb=m * k, sym=k, syn=1, a=3.4, PRECISION=None))]
    rows, ok = [], True
    for name, tuned, configs, kernel_args in matrix:
        for meta, warps, stages in configs[:1] if args.quick else configs:
            row, no_spill, hgmma = compile_report(tuned.fn, {**kernel_args, **meta}, warps, stages, arch)
            rows.append(f"| {name} | {meta} warps={warps} stages={stages} {row}")
            ok &= no_spill and hgmma
    for p, master in [(tl.float32, False), (tl.bfloat16, True)]:
        kernel_args = dict(table_ptr="*i64", block_tensor_ptr="*i32", scalars_ptr="*fp32", decay=0.999, beta2=0.95,
                           one_minus_beta1=0.1, one_minus_beta2=0.05, eps=1e-8, step_size=1e-3, inv_sqrt_bc2=1.0,
                           P_DTYPE=p, G_DTYPE=p, HAS_MASTER=master, STEP_ON_DEVICE=True, BLOCK=adamw.BLOCK)
        row, no_spill, _ = compile_report(adamw._adamw_kernel, kernel_args, adamw.NUM_WARPS, 3, arch)
        rows.append(f"| AdamW | params {p}, master={master} {row}")
        ok &= no_spill
    print(f"sm_{arch}, triton {triton.__version__}\n\n| kernel | config | registers | stack bytes | shared bytes "
          "| instructions |\n|---|---|---|---|---|---|\n" + "\n".join(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
