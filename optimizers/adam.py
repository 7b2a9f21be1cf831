"""Adam (Kingma and Ba, 2015) with the AMSGrad option (Reddi, Kale and Kumar, 2018), and AdamW
(Loshchilov and Hutter, 2019): the rules of torch.optim.Adam and torch.optim.AdamW.

    Adam:  g ← ∇f(x) + λ·x                 AdamW:  x ← x·(1 − η·λ),  g ← ∇f(x)
    m ← β₁·m + (1 − β₁)·g                  v ← β₂·v + (1 − β₂)·g²
    AMSGrad: v_max ← max(v_max, v), used in place of v below
    x ← x − η/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)

AdamW's x − η·(m̂/(√v̂ + ε) + λ·x) in the deck is the same step, and Adam with
decoupled_weight_decay=True is AdamW (as in torch.optim.Adam). Without AMSGrad both run through
kernels.fused_adamw_ (Triton on CUDA): Adam hands it g + λ·x and no decay.
"""
from __future__ import annotations

import math
from collections import defaultdict

import torch

import kernels

from .base import BOOL, NONNEGATIVE, UNIT_OPEN, Optimizer, numel, state_dtype, with_l2, zeros_state


class Adam(Optimizer):
    name = "adam"
    bounds = dict(lr=NONNEGATIVE, betas=(UNIT_OPEN, UNIT_OPEN), eps=NONNEGATIVE, weight_decay=NONNEGATIVE,
                  amsgrad=BOOL, decoupled_weight_decay=BOOL)

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, foreach: bool | None = None,
                 maximize: bool = False, fused: bool | None = None, decoupled_weight_decay: bool = False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      foreach=foreach, maximize=maximize, fused=fused,
                                      decoupled_weight_decay=decoupled_weight_decay))

    @classmethod
    def count_state(cls, shape, hyperparameters):
        return numel(shape) * (3 if hyperparameters["amsgrad"] else 2)

    def init_state(self, state, p, group):
        state["step"] = 0
        state["exp_avg"] = zeros_state(p)
        state["exp_avg_sq"] = zeros_state(p)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = zeros_state(p)

    def update_group(self, group, params):
        if group["amsgrad"]:
            super().update_group(group, params)
            return
        batches = defaultdict(list)  # fused_adamw_ takes one step count: batch by (step, device)
        for p in params:
            state = self.state[p]
            if not state:
                self.init_state(state, p, group)
            state["step"] += 1
            batches[state["step"], p.device].append(p)
        beta1, beta2 = group["betas"]
        decay = group["weight_decay"]
        decoupled = group["decoupled_weight_decay"]
        for (step, device), batch in batches.items():
            if decoupled:
                grads = [self.gradient(p, group) for p in batch]
            else:
                grads = [with_l2(self.gradient(p, group, state_dtype(p)), p.to(state_dtype(p)), decay) for p in batch]
            kernels.fused_adamw_(
                batch, grads, [self.state[p]["exp_avg"] for p in batch], [self.state[p]["exp_avg_sq"] for p in batch],
                step=torch.full((), step, device=device),  # made on the device: no host-to-device copy
                lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                weight_decay=decay if decoupled else 0.0)

    def update_param(self, x, grad, state, group):
        """The AMSGrad step (the fused kernel has no running maximum)."""
        state["step"] += 1
        t = state["step"]
        beta1, beta2 = group["betas"]
        if group["decoupled_weight_decay"]:
            x.mul_(1 - group["lr"] * group["weight_decay"])
            g = grad
        else:
            g = with_l2(grad, x, group["weight_decay"])
        exp_avg = state["exp_avg"].lerp_(g, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        max_sq = torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
        denom = (max_sq.sqrt() / math.sqrt(1 - beta2 ** t)).add_(group["eps"])
        x.addcdiv_(exp_avg, denom, value=-group["lr"] / (1 - beta1 ** t))


class AdamW(Adam):
    name = "adamw"

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, maximize: bool = False,
                 foreach: bool | None = None, fused: bool | None = None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=foreach, maximize=maximize, fused=fused, decoupled_weight_decay=True)
