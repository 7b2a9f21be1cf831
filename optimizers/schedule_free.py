"""Schedule-Free AdamW (Defazio, Yang, Mehta, Mishchenko, Khaled and Cutkosky, 2024).

No learning-rate schedule: z takes AdamW-normalised steps, x averages the z's, and gradients are
taken at the interpolation y of the two:

    y_t = (1 − β₁)·z_t + β₁·x_t
    v ← β₂·v + (1 − β₂)·g²,   g = ∇f(y_t)
    d = g / (√(v / (1 − β₂ᵗ)) + ε) + λ·y_t
    z_{t+1} = z_t − γ_t·d,      γ_t = η·min(1, t / warmup_steps)
    x_{t+1} = (1 − c)·x_t + c·z_{t+1},   c = w_t / Σ_{i≤t} w_i,   w_t = tʳ·(max_{i≤t} γ_i)^weight_lr_power

The parameter holds y in train mode and x in eval mode; the state is z and v (x is not stored:
x = (y − (1 − β₁)·z)/β₁). Substituting x gives the update applied to the parameter:

    y_{t+1} = (1 − c)·y_t + c·z_t + γ_t·(β₁·(1 − c) − 1)·d

How a trainer must use it: the optimizer starts in train mode. Call `opt.eval()` wherever
`model.eval()` is called (before validation, before saving weights for inference) and
`opt.train()` wherever `model.train()` is (before the next training step); `step()` raises in eval
mode. The mode is part of `state_dict()`. Any learning-rate schedule on top should be constant
(warmup is built in).
"""
from __future__ import annotations

import torch

from .base import NONNEGATIVE, UNIT_OPEN, Interval, Optimizer, in_state_precision, numel, state_dtype, zeros_state

UNIT_CLOSED_ABOVE = Interval(0.0, 1.0, low_open=True)  # (0, 1]


class ScheduleFreeAdamW(Optimizer):
    name = "schedulefree_adamw"
    bounds = dict(lr=NONNEGATIVE, betas=(UNIT_CLOSED_ABOVE, UNIT_OPEN), eps=NONNEGATIVE,
                  weight_decay=NONNEGATIVE, warmup_steps=Interval(0, integer=True), r=NONNEGATIVE,
                  weight_lr_power=NONNEGATIVE)

    def __init__(self, params, lr: float = 0.0025, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0,
                 maximize: bool = False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power,
                                      maximize=maximize, train_mode=True))

    @classmethod
    def count_state(cls, shape, hyperparameters):
        return 2 * numel(shape)  # z and v

    @torch.no_grad()
    def train(self) -> None:
        """Parameters x → y = x + (1 − β₁)·(z − x), ready for training steps."""
        self._switch(train_mode=True)

    @torch.no_grad()
    def eval(self) -> None:
        """Parameters y → x = y + (1 − 1/β₁)·(z − y), the point to evaluate or save."""
        self._switch(train_mode=False)

    def _switch(self, train_mode: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == train_mode:
                continue
            beta1 = group["betas"][0]
            weight = 1 - beta1 if train_mode else 1 - 1 / beta1
            for p in group["params"]:
                if "z" in self.state[p]:
                    with in_state_precision(p) as x:
                        x.lerp_(self.state[p]["z"], weight)
            group["train_mode"] = train_mode

    def update_group(self, group, params):
        if not group["train_mode"]:
            raise RuntimeError("ScheduleFreeAdamW.step() in eval mode: call opt.train() before training steps "
                               "(and opt.eval() before evaluating)")
        super().update_group(group, params)

    def init_state(self, state, p, group):
        state["step"] = 0
        state["lr_max"] = 0.0
        state["weight_sum"] = 0.0
        state["z"] = p.detach().to(state_dtype(p), copy=True)
        state["exp_avg_sq"] = zeros_state(p)

    def update_param(self, y, grad, state, group):
        state["step"] += 1
        t = state["step"]
        beta1, beta2 = group["betas"]
        lr = group["lr"] * min(1.0, t / group["warmup_steps"]) if group["warmup_steps"] else group["lr"]
        state["lr_max"] = max(state["lr_max"], lr)
        weight = t ** group["r"] * state["lr_max"] ** group["weight_lr_power"]
        state["weight_sum"] += weight
        c = weight / state["weight_sum"] if state["weight_sum"] > 0 else 0.0
        v = state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        d = grad / (v / (1 - beta2 ** t)).sqrt_().add_(group["eps"])
        if group["weight_decay"]:
            d.add_(y, alpha=group["weight_decay"])
        z = state["z"]
        y.lerp_(z, c).add_(d, alpha=lr * (beta1 * (1 - c) - 1))
        z.sub_(d, alpha=lr)
