"""Adadelta (Zeiler, 2012), torch.optim.Adadelta's rule (the deck's, with lr = 1).

    g ← ∇f(x) + λ·x
    v ← ρ·v + (1 − ρ)·g²
    d ← √(u + ε) / √(v + ε) · g
    u ← ρ·u + (1 − ρ)·d²
    x ← x − η·d
"""
from __future__ import annotations

from .base import NONNEGATIVE, UNIT, Optimizer, numel, with_l2, zeros_state


class Adadelta(Optimizer):
    name = "adadelta"
    bounds = dict(lr=NONNEGATIVE, rho=UNIT, eps=NONNEGATIVE, weight_decay=NONNEGATIVE)

    def __init__(self, params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
                 foreach: bool | None = None, maximize: bool = False):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, foreach=foreach,
                                      maximize=maximize))

    @classmethod
    def count_state(cls, shape, hyperparameters):
        return 2 * numel(shape)

    def init_state(self, state, p, group):
        state["step"] = 0
        state["square_avg"] = zeros_state(p)
        state["acc_delta"] = zeros_state(p)

    def update_param(self, x, grad, state, group):
        state["step"] += 1
        rho, eps = group["rho"], group["eps"]
        g = with_l2(grad, x, group["weight_decay"])
        square_avg = state["square_avg"].mul_(rho).addcmul_(g, g, value=1 - rho)
        delta = (state["acc_delta"] + eps).sqrt_().div_((square_avg + eps).sqrt_()).mul_(g)
        state["acc_delta"].mul_(rho).addcmul_(delta, delta, value=1 - rho)
        x.add_(delta, alpha=-group["lr"])
