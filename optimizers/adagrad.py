"""Adagrad (Duchi, Hazan and Singer, 2011), torch.optim.Adagrad's rule with the deck's ε as an option.

    g ← ∇f(x) + λ·x,   ηₜ ← η / (1 + (t − 1)·lr_decay)
    v ← v + g²                                 (v₀ = initial_accumulator_value)
    x ← x − ηₜ·g / (√v + ε)                    torch.optim.Adagrad (default)
    x ← x − ηₜ·g / √(v + ε)                    the lecture deck (eps_inside_sqrt=True)
"""
from __future__ import annotations

import torch

from .base import BOOL, NONNEGATIVE, Optimizer, numel, with_l2, zeros_state


def scale_by_rms(grad: torch.Tensor, mean_square: torch.Tensor, eps: float, eps_inside_sqrt: bool) -> torch.Tensor:
    """g / (√v + ε), or g / √(v + ε) in the deck's convention."""
    denom = (mean_square + eps).sqrt() if eps_inside_sqrt else mean_square.sqrt().add_(eps)
    return grad / denom


class Adagrad(Optimizer):
    name = "adagrad"
    bounds = dict(lr=NONNEGATIVE, lr_decay=NONNEGATIVE, weight_decay=NONNEGATIVE,
                  initial_accumulator_value=NONNEGATIVE, eps=NONNEGATIVE, eps_inside_sqrt=BOOL)

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, eps_inside_sqrt: bool = False,
                 foreach: bool | None = None, maximize: bool = False, fused: bool | None = None):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      eps_inside_sqrt=eps_inside_sqrt, foreach=foreach, maximize=maximize, fused=fused))

    @classmethod
    def count_state(cls, shape, hyperparameters):
        return numel(shape)

    def init_state(self, state, p, group):
        state["step"] = 0
        state["sum"] = zeros_state(p).add_(group["initial_accumulator_value"])

    def update_param(self, x, grad, state, group):
        state["step"] += 1
        g = with_l2(grad, x, group["weight_decay"])
        lr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        state["sum"].addcmul_(g, g)
        x.sub_(lr * scale_by_rms(g, state["sum"], group["eps"], group["eps_inside_sqrt"]))
