"""Kernel benchmark on one CUDA GPU: our fused AdamW and Newton–Schulz against torch.

    python bench/kernel_speed.py [--quick]

Prints the device, date and command, then Markdown tables ready for docs/benchmarks.md:
- ceilings: measured copy bandwidth (a large device-to-device copy, bytes read + written) and
  measured bf16 matmul rate (an 8192³ torch.mm);
- AdamW over the speedrun GPT's 124M parameters (one step over every tensor): torch foreach,
  torch fused=True, ours; ms per step, bytes moved (each input read once, each output written
  once), GB/s, share of copy bandwidth, and the largest relative parameter difference from torch's
  foreach step after one step from the same state;
- Newton–Schulz, 5 quintic steps in bf16, on the hidden-matrix batches Muon orthogonalizes:
  torch (the reference), torch with baddbmm (fused scale-and-add), ours; ms, TFLOP/s counting the
  dense work 5·(4m²n + 2m³) per m×n matrix (m ≤ n) for every row, share of the measured bf16
  rate, and ‖X − X_fp32‖/‖X_fp32‖ against the float32 reference.
Timings are medians of triton.testing.do_bench (L2 flushed between runs). Exits with status 2
when no CUDA device or no triton is present, and 1 when our bf16 output is off by more than
twice the torch reference's error.
"""
from __future__ import annotations

import argparse
import datetime
import sys


import torch

import kernels
from kernels.newton_schulz import QUINTIC, newton_schulz_reference
from kernels.testing import rel_err

DEVICE = "cuda"
ADAMW = dict(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)
NS_STEPS = 5


def gpt_param_shapes(layers=12, dim=768, mlp=3072, vocab=50304) -> list[tuple[int, ...]]:
    """The 124M GPT's weights as train_gpt.py lays them out, head tied to the embedding:
    embedding, then per layer the fused qkv, attention output, MLP in and MLP out."""
    per_layer = [(3 * dim, dim), (dim, dim), (mlp, dim), (dim, mlp)]
    return [(vocab, dim)] + per_layer * layers


def muon_batches(layers=12, dim=768, mlp=3072) -> list[tuple[int, int, int]]:
    """The hidden matrices stacked by shape as Muon orthogonalizes them, (batch, rows, cols):
    q, k, v (the three blocks of qkv) and o of every layer, then MLP out, then MLP in."""
    return [(4 * layers, dim, dim), (layers, dim, mlp), (layers, mlp, dim)]


def ns_flops(batch: int, rows: int, cols: int, steps: int = NS_STEPS) -> int:
    """Dense work of `steps` Newton–Schulz steps: A = XXᵀ (2m²n), A·A (2m³), B·X (2m²n), m ≤ n."""
    m, n = sorted((rows, cols))
    return batch * steps * (4 * m * m * n + 2 * m ** 3)


def adamw_bytes(numel: int, param_bytes: int, grad_bytes: int, master: bool) -> int:
    """Fewest bytes one AdamW step moves: read g, m, v, w and write m, v, w (and the rounded param)."""
    weight = 8 + param_bytes if master else 2 * param_bytes
    return numel * (grad_bytes + 16 + weight)


def bench(fn, quick: bool) -> float:
    import triton.testing
    return triton.testing.do_bench(fn, warmup=5 if quick else 25, rep=20 if quick else 200, return_mode="median")


def ceilings(quick: bool) -> tuple[float, float]:
    """Measured copy bandwidth (GB/s, read + write) and bf16 matmul rate (TFLOP/s)."""
    src = torch.randn(1 << 28, device=DEVICE)
    dst = torch.empty_like(src)
    gbps = 2 * src.numel() * 4 / bench(lambda: dst.copy_(src), quick) / 1e6
    a, b = (torch.randn(8192, 8192, device=DEVICE, dtype=torch.bfloat16) for _ in range(2))
    tflops = 2 * 8192 ** 3 / bench(lambda: a @ b, quick) / 1e9
    return gbps, tflops


def adamw_rows(copy_gbps: float, quick: bool) -> list[str]:
    shapes = gpt_param_shapes()
    numel = sum(torch.Size(s).numel() for s in shapes)
    start = [torch.randn(s, device=DEVICE) * 0.02 for s in shapes]
    grads = [torch.randn(s, device=DEVICE) for s in shapes]

    def torch_step(**flags):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        for p, g in zip(params, grads):
            p.grad = g
        opt = torch.optim.AdamW(params, lr=ADAMW["lr"], betas=(ADAMW["beta1"], ADAMW["beta2"]), eps=ADAMW["eps"],
                                weight_decay=ADAMW["weight_decay"], **flags)
        return params, opt.step

    def ours(param_dtype):
        params = [p.to(param_dtype) for p in start]
        masters = [p.clone() for p in start] if param_dtype != torch.float32 else None
        g = [x.to(param_dtype) for x in grads]
        m, v = [torch.zeros_like(p) for p in start], [torch.zeros_like(p) for p in start]
        step = torch.ones((), device=DEVICE)
        return params, lambda: kernels.fused_adamw_(params, g, m, v, step=step, master_params=masters,
                                                    backend="triton", **ADAMW)

    variants = [("torch foreach", torch_step(foreach=True), 4, False),
                ("torch fused=True", torch_step(fused=True), 4, False),
                ("ours (fp32 params)", ours(torch.float32), 4, False),
                ("ours (bf16 params, bf16 grads, fp32 master)", ours(torch.bfloat16), 2, True)]
    for _, (params, step), _, _ in variants:  # one step from the same state, for the error column
        step()
    errors = [max(rel_err(p, t) for p, t in zip(params, variants[0][1][0])) for _, (params, _), _, _ in variants]
    rows = []
    for (name, (_, step), nbytes, master), err in zip(variants, errors):
        ms = bench(step, quick)
        moved = adamw_bytes(numel, nbytes, nbytes, master)
        gbps = moved / ms / 1e6
        rows.append(f"| {name} | {ms:.3f} | {moved / 1e9:.2f} GB | {gbps:.0f} | {100 * gbps / copy_gbps:.0f}% "
                    f"| {err:.1e} |")
    return [f"AdamW over {numel / 1e6:.1f}M parameters in {len(shapes)} tensors (fp32 moments):", "",
            "| version | ms/step | bytes moved | GB/s | of copy bandwidth | rel. diff. vs torch foreach |",
            "|---|---|---|---|---|---|", *rows]


def baddbmm_steps(G: torch.Tensor) -> torch.Tensor:
    """Newton–Schulz in plain torch with the scale-and-add fused into baddbmm (3D input)."""
    X = G.to(torch.bfloat16)
    tall = X.size(-2) > X.size(-1)
    X = X.mT if tall else X
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    a, b, c = QUINTIC
    for _ in range(NS_STEPS):
        A = X @ X.mT
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)
        X = torch.baddbmm(X, B, X, beta=a)
    return X.mT if tall else X


def newton_schulz_rows(peak_tflops: float, quick: bool) -> tuple[list[str], bool]:
    versions = [("torch", lambda G: newton_schulz_reference(G, NS_STEPS, dtype=torch.bfloat16)),
                ("torch baddbmm", baddbmm_steps),
                ("ours", lambda G: kernels.newton_schulz(G, NS_STEPS, dtype=torch.bfloat16, backend="triton"))]
    rows, ok = [], True
    for batch, r, c in muon_batches():
        G = torch.randn(batch, r, c, device=DEVICE)
        Gb = G.to(torch.bfloat16)
        truth = newton_schulz_reference(G, NS_STEPS)
        flops = ns_flops(batch, r, c)
        times, errors = {}, {}
        for name, fn in versions:
            errors[name] = rel_err(fn(G), truth)
            times[name] = bench(lambda: fn(Gb), quick)
            tflops = flops / times[name] / 1e9
            rows.append(f"| {batch}×{r}×{c} | {name} | {times[name]:.3f} | {tflops:.0f} "
                        f"| {100 * tflops / peak_tflops:.0f}% "
                        f"| {times['torch'] / times[name]:.2f}× | {errors[name]:.1e} |")
        ok &= errors["ours"] <= 2 * errors["torch"]
    header = [f"Newton–Schulz, {NS_STEPS} quintic steps in bf16 (batch×rows×cols):", "",
              "| matrices | version | ms | TFLOP/s (dense count) | of bf16 matmul rate | speedup vs torch "
              "| rel. error vs fp32 |", "|---|---|---|---|---|---|---|"]
    return header + rows, ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short timing runs (a smoke test, not for the record)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/kernel_speed.py: no CUDA device; this benchmark needs a GPU (nothing was measured)", file=sys.stderr)
        return 2
    try:
        import triton
    except ImportError as error:
        print(f"bench/kernel_speed.py: triton cannot be imported ({error}); nothing was measured", file=sys.stderr)
        return 2
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"device: {torch.cuda.get_device_name()} | date: {now} | torch {torch.__version__}, "
          f"triton {triton.__version__} | command: python bench/kernel_speed.py {' '.join(argv or sys.argv[1:])}\n")
    copy_gbps, peak_tflops = ceilings(args.quick)
    print(f"measured copy bandwidth: {copy_gbps:.0f} GB/s | measured bf16 matmul: {peak_tflops:.0f} TFLOP/s\n")
    print("\n".join(adamw_rows(copy_gbps, args.quick)) + "\n")
    ns_table, ok = newton_schulz_rows(peak_tflops, args.quick)
    print("\n".join(ns_table))
    if not ok:
        print("\nFAIL: our bf16 Newton–Schulz error exceeds twice the torch reference's", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
