"""Run a public speedrun trainer (an 8-GPU CUDA script) as one CPU process: bench/parity.py's runtime half.

    python bench/parity_shim.py --seed=S SCRIPT.py

Before SCRIPT runs (as __main__, with sys.argv = [SCRIPT], so it can read and log its own source),
the CUDA-only and multi-process parts of torch that the 2024–2025 records call are replaced by
their one-process CPU equivalents:
  - torch.compile → the function or module itself (eager mode);
  - autocast (torch.autocast, torch.amp.autocast) → off, so the forward runs in fp32 as ours does on
    CPU; explicit .bfloat16() casts in the script stay;
  - torch.cuda.synchronize / set_device / empty_cache / reset_peak_memory_stats → nothing, the memory
    counters → 0; Tensor.cuda, Module.cuda and Tensor.pin_memory → the object itself;
  - torch.backends.cuda.enable_{cudnn,flash,mem_efficient,math}_sdp → nothing (CPU attention picks its own);
  - torch.distributed with one process: init/destroy/barrier do nothing, rank 0 of world size 1, and
    each collective leaves its input as the result (all_reduce of one rank, SUM or AVG, is the identity;
    all_gather / reduce_scatter / broadcast copy); DistributedDataParallel → the module with `.module`
    and `no_sync()`;
  - `nvidia-smi` run through subprocess → one line saying there is none;
  - FlexAttention (no CPU backward in torch) → `flex_attention_reference`: softmax attention over
    exactly the keys its BlockMask allows, by scaled_dot_product_attention with that boolean mask;
  - torch._scaled_mm (FP8 matmul, CUDA only) → `scaled_mm_reference`: the fp8 operands upcast to
    fp32, multiplied, times both scales (the script's own fp8 rounding of the operands stays).
torch, numpy and random are seeded with S first (the public scripts set no seed).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import runpy
import subprocess
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.attention.flex_attention as flex
import torch.nn.functional as F


class _Done:
    """What an async collective returns; with one process the work is already done."""

    def wait(self, *args, **kwargs):
        return True

    def is_completed(self) -> bool:
        return True


def _copy_into(out, inp):
    if out.data_ptr() != inp.data_ptr():
        out.copy_(inp.reshape(out.shape))


def _collective(result=None):
    def call(*args, async_op: bool = False, **kwargs):
        if result is not None:
            result(*args)
        return _Done() if async_op else None
    return call


class OneProcessDDP(nn.Module):
    """DistributedDataParallel of one process: the wrapped module, no gradient communication."""

    def __init__(self, module: nn.Module, *args, **kwargs):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def no_sync(self):
        return contextlib.nullcontext()


def _dense_blocks(num: torch.Tensor, indices: torch.Tensor, n_kv_blocks: int) -> torch.Tensor:
    """(..., q blocks, kv blocks) booleans: block (i, j) is listed among the first num[i] of indices[i]."""
    listed = torch.arange(indices.size(-1), device=indices.device) < num[..., None]
    dense = torch.zeros(*num.shape, n_kv_blocks + 1, dtype=torch.bool, device=num.device)
    dense.scatter_(-1, torch.where(listed, indices.long(), n_kv_blocks), True)  # unlisted slots go to a spare column
    return dense[..., :n_kv_blocks]


def block_mask_dense(block_mask, q_len: int, kv_len: int) -> torch.Tensor:
    """Token-level mask of a BlockMask: full blocks, plus partial blocks where mask_mod(b, h, q, kv) holds."""
    q_block, kv_block = block_mask.BLOCK_SIZE
    n_kv = -(-kv_len // kv_block)

    def expand(blocks):
        return blocks.repeat_interleave(q_block, -2).repeat_interleave(kv_block, -1)[..., :q_len, :kv_len]
    partial = expand(_dense_blocks(block_mask.kv_num_blocks, block_mask.kv_indices, n_kv))
    device = partial.device
    q, kv, zero = torch.arange(q_len, device=device)[:, None], torch.arange(kv_len, device=device)[None, :], torch.tensor(0)
    allowed = partial & block_mask.mask_mod(zero, zero, q, kv)
    if block_mask.full_kv_num_blocks is not None:
        allowed |= expand(_dense_blocks(block_mask.full_kv_num_blocks, block_mask.full_kv_indices, n_kv))
    return allowed


def flex_attention_reference(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                             return_lse=False, kernel_options=None, **options):
    """softmax(q·kᵀ·scale + (0 where the BlockMask allows, −∞ elsewhere))·v: FlexAttention's definition."""
    if score_mod is not None or enable_gqa or return_lse:
        raise NotImplementedError("bench/parity_shim.py: flex_attention with score_mod, GQA or return_lse has no reference here")
    mask = None if block_mask is None else block_mask_dense(block_mask, query.size(-2), key.size(-2))
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale)


def scaled_mm_reference(a, b, scale_a=None, scale_b=None, bias=None, scale_result=None, out_dtype=None,
                        use_fast_accum=False):
    """(a·scale_a)(b·scale_b) [+ bias] in fp32 from fp8 operands, cast to out_dtype: torch._scaled_mm's math."""
    out = a.float() @ b.float()
    if scale_a is not None:
        out = out * scale_a.float()
    if scale_b is not None:
        out = out * scale_b.float()
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype or a.dtype)


def patch_torch() -> None:
    torch.compile = lambda fn=None, *args, **kwargs: fn if fn is not None else (lambda f: f)
    torch.autocast = torch.amp.autocast = lambda *args, **kwargs: contextlib.nullcontext()
    for name in ("synchronize", "set_device", "empty_cache", "reset_peak_memory_stats"):
        setattr(torch.cuda, name, lambda *args, **kwargs: None)
    for name in ("max_memory_allocated", "max_memory_reserved", "memory_allocated"):
        setattr(torch.cuda, name, lambda *args, **kwargs: 0)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.Tensor.pin_memory = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self
    for name in ("enable_cudnn_sdp", "enable_flash_sdp", "enable_mem_efficient_sdp", "enable_math_sdp"):
        setattr(torch.backends.cuda, name, lambda *args, **kwargs: None)
    nn.parallel.DistributedDataParallel = OneProcessDDP
    dist.init_process_group = dist.destroy_process_group = lambda *args, **kwargs: None
    dist.is_initialized = dist.is_available = lambda: True
    dist.get_rank = lambda *args, **kwargs: 0
    dist.get_world_size = lambda *args, **kwargs: 1
    dist.barrier = _collective()
    dist.all_reduce = dist.broadcast = dist.reduce = _collective()
    dist.all_gather_into_tensor = dist._all_gather_base = _collective(lambda out, inp, *rest: _copy_into(out, inp))
    dist.reduce_scatter_tensor = dist._reduce_scatter_base = _collective(lambda out, inp, *rest: _copy_into(out, inp))
    dist.all_gather = _collective(lambda outs, inp, *rest: _copy_into(outs[0], inp))
    flex.flex_attention = flex_attention_reference
    torch._scaled_mm = scaled_mm_reference
    run = subprocess.run

    def run_without_nvidia_smi(cmd, *args, **kwargs):
        if isinstance(cmd, (list, tuple)) and cmd and cmd[0] == "nvidia-smi":
            return subprocess.CompletedProcess(cmd, 0, stdout="nvidia-smi: none (CPU parity run)\n", stderr="")
        return run(cmd, *args, **kwargs)
    subprocess.run = run_without_nvidia_smi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("script")
    args = parser.parse_args()
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    patch_torch()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    sys.argv = [args.script]
    runpy.run_path(args.script, run_name="__main__")


if __name__ == "__main__":
    main()
