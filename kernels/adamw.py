"""Fused AdamW: the whole torch.optim.AdamW update for a list of tensors.

    w ← w·(1 − lr·λ)
    m ← β₁·m + (1 − β₁)·g          v ← β₂·v + (1 − β₂)·g²
    w ← w − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)

w is the parameter itself, or its fp32 master copy when `master_params` is given (then the
parameter receives w rounded to its dtype). Moments are fp32 (fp64 for fp64 parameters in the
reference); parameters may be fp32 or bf16 (and fp16 or fp64), updated in at least fp32, rounded once.

The Triton path updates every tensor of a (parameter dtype, gradient dtype) group in one launch:
a table holds each tensor's pointers, size and first block, and every program updates one block
of one tensor. The table is built on the first call for a set of tensors (one host-to-device copy)
and cached by its contents, so later steps copy nothing; `step` may be a tensor on the parameters'
device, so a step needs no host-device sync.

The bias corrections 1 − βᵗ are computed in float64 as −expm1(t·ln β) (on the device when the
step is a tensor) and rounded once: in float32, 1 − 0.9999ᵗ at t = 1 loses four of its seven
digits (a first-step error of ~1e-4 at β₂ = 0.9999, ~1e-3 at 0.99999).
"""
from __future__ import annotations

import functools
import math

import torch

from .backend import TRITON_DTYPES, jit, tl, triton, use_triton

BLOCK = 4096
NUM_WARPS = 8


def bias_corrections(step, lr: float, beta1: float, beta2: float):
    """(lr/(1 − β₁ᵗ), 1/√(1 − β₂ᵗ)) in float64, with 1 − βᵗ = −expm1(t·ln β): Python floats for a
    number step, float64 tensors on the step's device for a tensor step (no host-device sync)."""
    log1, log2 = (math.log(b) if b > 0 else -math.inf for b in (beta1, beta2))
    if isinstance(step, torch.Tensor):
        t = step.to(torch.float64).reshape(())
        return lr / -torch.expm1(t * log1), torch.rsqrt(-torch.expm1(t * log2))
    return lr / -math.expm1(step * log1), 1 / math.sqrt(-math.expm1(step * log2))


def fused_adamw_reference_(params, grads, exp_avgs, exp_avg_sqs, *, step, lr, beta1, beta2, eps,
                           weight_decay, master_params=None) -> None:
    """Reference path: one tensor at a time, in at least fp32 (step may be an int or a 0-d tensor)."""
    masters = master_params or params
    step_size, inv_sqrt_bc2 = bias_corrections(step, lr, beta1, beta2)
    for p, w, g, m, v in zip(params, masters, grads, exp_avgs, exp_avg_sqs, strict=True):
        math_dtype = torch.promote_types(w.dtype, torch.float32)
        a, b = (torch.as_tensor(x, dtype=torch.float64, device=w.device).to(math_dtype)
                for x in (step_size, inv_sqrt_bc2))
        g_ = g.to(math_dtype)
        w_ = w.to(math_dtype) * (1 - lr * weight_decay)
        m.lerp_(g_, 1 - beta1)
        v.mul_(beta2).addcmul_(g_, g_, value=1 - beta2)
        denom = v.sqrt() * b + eps
        w.copy_(w_ - a * m / denom)
        if w is not p:
            p.copy_(w)


@jit
def _adamw_block(p_ptr, g_ptr, m_ptr, v_ptr, w_ptr, offs, mask, decay, beta2, one_minus_beta1, one_minus_beta2,
                 eps, step_size, inv_sqrt_bc2, HAS_MASTER: tl.constexpr):
    w = tl.load(w_ptr + offs, mask=mask).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
    m = tl.load(m_ptr + offs, mask=mask)
    v = tl.load(v_ptr + offs, mask=mask)
    m = m + one_minus_beta1 * (g - m)
    v = beta2 * v + one_minus_beta2 * g * g
    w = w * decay - step_size * m / (tl.sqrt(v) * inv_sqrt_bc2 + eps)
    tl.store(m_ptr + offs, m, mask=mask)
    tl.store(v_ptr + offs, v, mask=mask)
    if HAS_MASTER:
        tl.store(w_ptr + offs, w, mask=mask)
    tl.store(p_ptr + offs, w.to(p_ptr.dtype.element_ty), mask=mask)


@jit
def _adamw_kernel(table_ptr, block_tensor_ptr, scalars_ptr, decay, beta2, one_minus_beta1, one_minus_beta2, eps,
                  step_size, inv_sqrt_bc2,
                  P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, HAS_MASTER: tl.constexpr,
                  STEP_ON_DEVICE: tl.constexpr, BLOCK: tl.constexpr):
    """One BLOCK of one tensor; `table_ptr` rows are (param, grad, m, v, master, numel, first block)."""
    pid = tl.program_id(0)
    row = table_ptr + tl.load(block_tensor_ptr + pid).to(tl.int64) * 7
    p_ptr = tl.multiple_of(tl.load(row).to(tl.pointer_type(P_DTYPE)), 16)
    g_ptr = tl.multiple_of(tl.load(row + 1).to(tl.pointer_type(G_DTYPE)), 16)
    m_ptr = tl.multiple_of(tl.load(row + 2).to(tl.pointer_type(tl.float32)), 16)
    v_ptr = tl.multiple_of(tl.load(row + 3).to(tl.pointer_type(tl.float32)), 16)
    w_ptr = p_ptr
    if HAS_MASTER:
        w_ptr = tl.multiple_of(tl.load(row + 4).to(tl.pointer_type(tl.float32)), 16)
    numel = tl.load(row + 5)
    start = (pid - tl.load(row + 6)) * BLOCK
    if STEP_ON_DEVICE:  # the bias-corrected scalars, computed on the device from the step tensor
        step_size = tl.load(scalars_ptr)
        inv_sqrt_bc2 = tl.load(scalars_ptr + 1)
    offs = start + tl.arange(0, BLOCK)
    if start + BLOCK <= numel:  # whole blocks take the unmasked (vectorized) path
        _adamw_block(p_ptr, g_ptr, m_ptr, v_ptr, w_ptr, offs, None, decay, beta2, one_minus_beta1,
                     one_minus_beta2, eps, step_size, inv_sqrt_bc2, HAS_MASTER)
    else:
        _adamw_block(p_ptr, g_ptr, m_ptr, v_ptr, w_ptr, offs, offs < numel, decay, beta2, one_minus_beta1,
                     one_minus_beta2, eps, step_size, inv_sqrt_bc2, HAS_MASTER)


@functools.lru_cache(maxsize=256)
def _tables(rows: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Device tables for one group: rows of (pointers…, numel) → the kernel's table and block → tensor map."""
    blocks = [triton.cdiv(row[-1], BLOCK) for row in rows]
    first = [sum(blocks[:i]) for i in range(len(blocks))]
    table = torch.tensor([(*row, f) for row, f in zip(rows, first)], dtype=torch.int64)
    block_tensor = torch.repeat_interleave(torch.arange(len(rows), dtype=torch.int32), torch.tensor(blocks))
    return table.to(device), block_tensor.to(device)


def _unsupported(params, grads, exp_avgs, exp_avg_sqs, masters, step) -> str | None:
    """Why the Triton path cannot take these tensors, or None."""
    fp32 = [*exp_avgs, *exp_avg_sqs, *(masters or [])]
    if any(t.dtype != torch.float32 for t in fp32):
        return "moments and master copies must be float32"
    if any(t.dtype not in TRITON_DTYPES for t in [*params, *grads]):
        return "parameters and gradients must be float32, float16 or bfloat16"
    everything = [*params, *grads, *fp32]
    if any(not t.is_contiguous() or t.data_ptr() % 16 for t in everything):
        return "every tensor must be contiguous and 16-byte aligned"
    if len({t.device for t in everything}) > 1:
        return "all tensors must be on one device"
    if any(g.numel() != p.numel() for p, g in zip(params, grads)):
        return "gradients must match their parameters"
    if isinstance(step, torch.Tensor) and step.numel() != 1:
        return "step must be a number or a one-element tensor"
    return None


def fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, *, step, lr, beta1, beta2, eps, weight_decay,
                 master_params=None, backend: str | None = None) -> None:
    """In-place AdamW over lists of tensors (torch.optim.AdamW semantics); lr is a number.

    master_params: optional fp32 copies that carry the update; params then receive them rounded.
    step: an int, or a one-element tensor (on the parameters' device, no sync; on the CPU, read once).
    """
    lists = (params, grads, exp_avgs, exp_avg_sqs) + ((master_params,) if master_params is not None else ())
    if len({len(x) for x in lists}) != 1:
        raise ValueError("fused_adamw_: params, grads, exp_avgs, exp_avg_sqs (and master_params) differ in length")
    hyper = dict(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    reason = _unsupported(params, grads, exp_avgs, exp_avg_sqs, master_params, step)
    if not params or not use_triton(backend, params, reason):
        return fused_adamw_reference_(params, grads, exp_avgs, exp_avg_sqs, master_params=master_params, **hyper)
    device = params[0].device
    on_device = isinstance(step, torch.Tensor) and step.device == device
    # a CPU step tensor is read on the host; a device one stays there
    step_size, inv_sqrt_bc2 = bias_corrections(step if on_device else float(step), lr, beta1, beta2)
    scalars = torch.stack([step_size, inv_sqrt_bc2]).float() if on_device else None
    groups: dict[tuple, list] = {}
    for i, (p, g) in enumerate(zip(params, grads)):
        groups.setdefault((p.dtype, g.dtype), []).append(i)
    for (p_dtype, g_dtype), index in groups.items():
        rows = tuple((params[i].data_ptr(), grads[i].data_ptr(), exp_avgs[i].data_ptr(), exp_avg_sqs[i].data_ptr(),
                      master_params[i].data_ptr() if master_params is not None else 0, params[i].numel())
                     for i in index)
        table, block_tensor = _tables(rows, device)
        if block_tensor.numel() == 0:
            continue
        _adamw_kernel[(block_tensor.numel(),)](
            table, block_tensor, scalars if on_device else table, 1.0 - lr * weight_decay, beta2, 1.0 - beta1,
            1.0 - beta2, eps, 1.0 if on_device else step_size, 1.0 if on_device else inv_sqrt_bc2,
            P_DTYPE=TRITON_DTYPES[p_dtype], G_DTYPE=TRITON_DTYPES[g_dtype], HAS_MASTER=master_params is not None,
            STEP_ON_DEVICE=on_device, BLOCK=BLOCK, num_warps=NUM_WARPS)
