"""Singular-value statistics of the hidden weight matrices and of their updates, as the run log records them.

For W with singular values σ₁ ≥ … ≥ σ_k (k = min(rows, cols)):
    sigma_max = σ₁, sigma_min = σ_k
    stable_rank = ‖W‖_F² / ‖W‖₂² = Σσᵢ² / σ₁²                          (1 ≤ stable_rank ≤ k)
    effective_rank = exp(−Σ pᵢ log pᵢ), pᵢ = σᵢ / Σσⱼ  (Roy and Vetterli, 2007)
A zero matrix (e.g. a zero-initialised projection) has every statistic 0.

train_gpt.py --spectral_every=N logs them for every hidden matrix W and its last update
ΔW = W_after − W_before every N steps (lines `spectral:step:N name:... sigma_max:...`, the
summary's `spectral` list, wandb). `python -m analysis.spectral CHECKPOINT` plots them from a checkpoint.
"""
from __future__ import annotations

import torch

STATS = ("sigma_max", "sigma_min", "stable_rank", "effective_rank")


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """σ of the matrix (a tensor viewed as shape[0] × the rest), descending, in float32 on its device."""
    return torch.linalg.svdvals(matrix.detach().float().flatten(1))


def spectral_stats(matrix: torch.Tensor) -> dict[str, float]:
    """sigma_max, sigma_min, stable_rank and effective_rank of a matrix (see the module doc)."""
    s = singular_values(matrix).double()
    if s[0] <= 0:
        return dict.fromkeys(STATS, 0.0)
    p = s / s.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"sigma_max": s[0].item(), "sigma_min": s[-1].item(), "stable_rank": (s.square().sum() / s[0] ** 2).item(),
            "effective_rank": entropy.exp().item()}


def named(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> dict[str, torch.nn.Parameter]:
    """The given parameters of the model by name (e.g. train_gpt.parameter_groups(model)["hidden"])."""
    wanted = {id(p) for p in params}
    return {name: p for name, p in model.named_parameters() if id(p) in wanted}


def report(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[dict]:
    """For each matrix: the stats of W = after[name] and, prefixed update_, of ΔW = W − before[name]."""
    rows = []
    for name, w in before.items():
        update = {f"update_{k}": v for k, v in spectral_stats(after[name] - w).items()}
        rows.append({"name": name, **spectral_stats(after[name]), **update})
    return rows


def log_line(step: int, row: dict) -> str:
    """`spectral:step:N name:NAME key:value ...`: never starts with `step:`, so step-line parsers skip it."""
    return f"spectral:step:{step} name:{row['name']} " + " ".join(
        f"{k}:{v:.6g}" for k, v in row.items() if k != "name")
