"""Cautious weight decay (Chen et al., 2025, arXiv:2510.12402; the speedrun's records #43 on Muon and #50 on
Adam): decoupled decay only where the optimizer's update u (x ← x − u) has the parameter's sign,

    x ← x − u − c·[u ⊙ x ≥ 0] ⊙ x,        x and the mask taken before the update.

Any optimizer run without its own decay becomes cautious by calling `cautious_decay_` after its step,
with the parameters as they were before it: u = before − after. The trainer passes c = lr_t·λ, so the
decay follows the learning-rate schedule (record #43 keeps weight decay on the lr schedule).
"""
from __future__ import annotations

import torch


@torch.no_grad()
def cautious_decay_(params: list[torch.Tensor], before: list[torch.Tensor], decay: float) -> None:
    """In place: x ← x − decay·[(x₀ − x)·x₀ ≥ 0]·x₀ for each parameter x and its value x₀ before the step."""
    for x, x0 in zip(params, before, strict=True):
        mask = (x0 - x).mul_(x0) >= 0
        x.sub_(torch.where(mask, x0, 0.0), alpha=decay)
