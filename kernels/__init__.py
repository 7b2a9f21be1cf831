"""Kernels used by the optimizers: Triton on CUDA, the plain PyTorch reference elsewhere; and the
model's masked attention (attention.py: FlexAttention on CUDA, SDPA elsewhere).

Each module holds a Triton kernel, the PyTorch reference of the same function and the public
wrapper that picks between them (kernels.backend: `backend=` argument or KERNELS_BACKEND).
"""
from .adamw import fused_adamw_
from .gram import gram_update_
from .newton_schulz import QUINTIC, newton_schulz

__all__ = ["fused_adamw_", "gram_update_", "newton_schulz", "QUINTIC"]
