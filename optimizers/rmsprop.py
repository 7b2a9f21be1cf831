"""RMSProp (Tieleman and Hinton, 2012), torch.optim.RMSprop's rule with the deck's ε as an option.

    g ← ∇f(x) + λ·x
    v ← α·v + (1 − α)·g²
    centered: m ← α·m + (1 − α)·g and v̄ = v − m², otherwise v̄ = v
    d ← g / (√v̄ + ε)              torch.optim.RMSprop (default)
    d ← g / √(v̄ + ε)              the lecture deck (eps_inside_sqrt=True), where α is called γ
    with momentum μ > 0: b ← μ·b + d and x ← x − η·b;  otherwise x ← x − η·d
"""
from __future__ import annotations

from .adagrad import scale_by_rms
from .base import BOOL, NONNEGATIVE, UNIT, UNIT_OPEN, Optimizer, numel, with_l2, zeros_state


class RMSprop(Optimizer):
    name = "rmsprop"
    bounds = dict(lr=NONNEGATIVE, alpha=UNIT, eps=NONNEGATIVE, weight_decay=NONNEGATIVE,
                  momentum=UNIT_OPEN, centered=BOOL, eps_inside_sqrt=BOOL)

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 eps_inside_sqrt: bool = False, foreach: bool | None = None, maximize: bool = False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, eps_inside_sqrt=eps_inside_sqrt, foreach=foreach,
                                      maximize=maximize))

    @classmethod
    def count_state(cls, shape, hyperparameters):
        return numel(shape) * (1 + (hyperparameters["momentum"] > 0) + hyperparameters["centered"])

    def init_state(self, state, p, group):
        state["step"] = 0
        state["square_avg"] = zeros_state(p)
        if group["momentum"] > 0:
            state["momentum_buffer"] = zeros_state(p)
        if group["centered"]:
            state["grad_avg"] = zeros_state(p)

    def update_param(self, x, grad, state, group):
        state["step"] += 1
        alpha = group["alpha"]
        g = with_l2(grad, x, group["weight_decay"])
        mean_square = state["square_avg"].mul_(alpha).addcmul_(g, g, value=1 - alpha)
        if group["centered"]:
            mean = state["grad_avg"].lerp_(g, 1 - alpha)
            mean_square = mean_square.addcmul(mean, mean, value=-1)
        direction = scale_by_rms(g, mean_square, group["eps"], group["eps_inside_sqrt"])
        if group["momentum"] > 0:
            direction = state["momentum_buffer"].mul_(group["momentum"]).add_(direction)
        x.add_(direction, alpha=-group["lr"])
