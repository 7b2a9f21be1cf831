"""NAG-GS (Leplat, Merkulov, Katrutsa, Bershatsky, Tsymboi and Oseledets, 2022): a semi-implicit
Gauss–Seidel discretisation of the accelerated (Nesterov) gradient flow. It keeps one state vector
v (v₀ = x₀, half of Adam's state) and one scalar γ per parameter:

    g ← ∇f(x) + λ·x
    b ← α·μ / (α·μ + γ)
    v ← (1 − b)·v + b·x − (b/μ)·g
    γ ← (α·μ + γ) / (1 + α)
    x ← (x + α·v) / (1 + α)

α is the learning rate, μ > 0 the assumed strong-convexity constant and γ₀ = gamma > 0.
"""
from __future__ import annotations

from .base import NONNEGATIVE, POSITIVE, Optimizer, numel, state_dtype, with_l2


class NAGGS(Optimizer):
    name = "naggs"
    bounds = dict(lr=NONNEGATIVE, mu=POSITIVE, gamma=POSITIVE, weight_decay=NONNEGATIVE)

    def __init__(self, params, lr: float = 1e-2, mu: float = 1.0, gamma: float = 1.0, weight_decay: float = 0.0,
                 maximize: bool = False):
        super().__init__(params, dict(lr=lr, mu=mu, gamma=gamma, weight_decay=weight_decay, maximize=maximize))

    @classmethod
    def count_state(cls, shape, hyperparameters):
        return numel(shape)  # v (γ is a Python number)

    def init_state(self, state, p, group):
        state["v"] = p.detach().to(state_dtype(p), copy=True)
        state["gamma"] = float(group["gamma"])

    def update_param(self, x, grad, state, group):
        alpha, mu, gamma = group["lr"], group["mu"], state["gamma"]
        g = with_l2(grad, x, group["weight_decay"])
        b = alpha * mu / (alpha * mu + gamma)
        v = state["v"].mul_(1 - b).add_(x, alpha=b).add_(g, alpha=-b / mu)
        state["gamma"] = (alpha * mu + gamma) / (1 + alpha)
        x.add_(v, alpha=alpha).div_(1 + alpha)
