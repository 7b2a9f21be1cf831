"""SGD with momentum, Nesterov momentum, dampening and L2 weight decay (torch.optim.SGD's rule).

    g ← ∇f(x) + λ·x
    b ← g on the first step, then b ← μ·b + (1 − τ)·g        (μ momentum, τ dampening)
    d ← g + μ·b with Nesterov, b with plain momentum, g without momentum
    x ← x − η·d
"""
from __future__ import annotations

from .base import BOOL, NONNEGATIVE, UNIT, UNIT_OPEN, Optimizer, numel, with_l2


class SGD(Optimizer):
    name = "sgd"
    bounds = dict(lr=NONNEGATIVE, momentum=UNIT_OPEN, dampening=UNIT, weight_decay=NONNEGATIVE, nesterov=BOOL)

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False,
                 foreach: bool | None = None, fused: bool | None = None):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize, foreach=foreach, fused=fused))

    @classmethod
    def count_state(cls, shape, hyperparameters):
        return numel(shape) if hyperparameters["momentum"] > 0 else 0

    def check_group(self, group):
        super().check_group(group)
        if group["nesterov"] and (group["momentum"] == 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: nesterov=True needs momentum > 0 and dampening = 0, got "
                             f"momentum={group['momentum']!r}, dampening={group['dampening']!r}")

    def update_param(self, x, grad, state, group):
        g = with_l2(grad, x, group["weight_decay"])
        momentum = group["momentum"]
        if momentum > 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.clone()
            else:
                buf.mul_(momentum).add_(g, alpha=1 - group["dampening"])
            g = g.add(buf, alpha=momentum) if group["nesterov"] else buf
        x.add_(g, alpha=-group["lr"])
