"""Shampoo (Gupta, Koren and Singer, 2018; Anil et al., 2020) with the blocking, grafting and
delayed start of Distributed Shampoo (Shi et al., 2023).

Each parameter is viewed as a matrix G (shape[0] × the rest; a vector is one row, a scalar 1×1)
and cut into blocks of at most max_preconditioner_dim per side. For every block:

    L ← β₂·L + (1 − β₂)·G Gᵀ,   R ← β₂·R + (1 − β₂)·GᵀG      (β₂ = 1: running sums L += G Gᵀ, R += GᵀG)
    M ← β₁·M + (1 − β₁)·G,      M̂ = M / (1 − β₁ᵗ)            (M̂ = G when β₁ = 0)
    from step start_preconditioning_step on, every precondition_frequency steps:
        P_L ← (L + εI)^(−1/4),   P_R ← (R + εI)^(−1/4)       (in root_dtype, see root_method)
    D = P_L M̂ P_R, rescaled to the Frobenius norm of the grafting step A on the same block:
        adam:    a ← β_g·a + (1 − β_g)·G²,   A = M̂ / (√(a / (1 − β_gᵗ)) + ε_g)
        adagrad: a ← a + G²,                 A = M̂ / (√a + ε_g)
        none:    no rescaling (the deck's Shampoo)
    before the start D = A (M̂ without grafting)
    x ← x·(1 − η·λ) − η·D                                    (decoupled weight decay)

With β₁ = β₂ = 0, no grafting and ε → 0, one step is −η·UVᵀ for G = USVᵀ: the deck's identity.

root_method: "eigh" (eigendecomposition, exact) or "newton" (the coupled Newton iteration of Guo
and Higham, matrix products only). None picks "newton" on CUDA, where torch.linalg.eigh waits for
the device to report errors (a host–device synchronisation on every root recomputation), and
"eigh" elsewhere. Newton runs a fixed NEWTON_ITERATIONS steps: accurate to ~1e-10 for condition
numbers of L + εI up to ~1e12.

A rank-deficient statistic (the first steps of a wide block, a vector's 1×n block) accumulated in
fp32 has eigenvalues that rounding leaves slightly below zero (−4e-9 at ‖S‖_F ≈ 0.5 after two
steps: about 0.4 units of rounding of ‖S‖_F), where Newton diverges. eigh clamps them to 0;
Newton adds the ridge max(ε, NEWTON_RIDGE·u·‖S‖_F)·I instead of εI (u: the unit roundoff of the
statistic's dtype, so fp64 statistics keep ε), a ridge relative to the statistic's size as in
Anil et al.'s coupled-Newton roots. Should a root still come out non-finite, the previous root of
that block is kept (chosen on the device: no synchronisation).
"""
from __future__ import annotations

import torch

import kernels

from .base import NONNEGATIVE, POSITIVE, UNIT, UNIT_OPEN, Interval, OneOf, Optimizer, numel, zeros_state

GRAFTINGS = ("adam", "adagrad", "none")
COUNT = Interval(1, integer=True)
NEWTON_ITERATIONS = 40
NEWTON_RIDGE = 16  # × u·‖S‖_F: 40× the largest rounding-negative eigenvalue measured (0.4 u·‖S‖_F)


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """shape[0] × the rest; a vector as one row, a scalar as 1×1 (a view where t is contiguous)."""
    return t.reshape(t.shape[0], -1) if t.ndim >= 2 else t.reshape(1, -1)


def blocks(matrix: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Views of the matrix cut into blocks of at most size × size, row-major."""
    return [block for rows in matrix.split(size, dim=0) for block in rows.split(size, dim=1)]


def inverse_fourth_root(S: torch.Tensor, eps: float, dtype: torch.dtype, method: str,
                        previous: torch.Tensor | None = None) -> torch.Tensor:
    """(S + εI)^(−1/4) of a symmetric PSD S, computed in dtype (Newton: see the module doc for its
    ridge, and `previous`, the root kept should this one come out non-finite)."""
    S_wide = S.to(dtype)
    identity = torch.eye(S.shape[-1], dtype=dtype, device=S.device)
    if method == "eigh":  # rounding noise below 0 clamped
        eigenvalues, eigenvectors = torch.linalg.eigh(S_wide)
        return ((eigenvectors * (eigenvalues.clamp_min(0) + eps).pow(-0.25)) @ eigenvectors.mT).to(S.dtype)
    # coupled Newton: X₀ = z^¼·I, M₀ = z·A; T = (5I − M)/4, X ← X·T, M ← T⁴·M; X → A^(−1/4)
    ridge = torch.clamp_min(NEWTON_RIDGE * torch.finfo(S.dtype).eps / 2 * S_wide.norm(), eps)
    A = S_wide + ridge * identity
    z = 2.5 / A.norm()  # (p + 1)/(2‖A‖_F): M₀'s eigenvalues in (0, (p + 1)/2]
    M, root = A * z, identity * z.pow(0.25)
    for _ in range(NEWTON_ITERATIONS):
        T = (5 * identity - M) / 4
        T2 = T @ T
        M, root = T2 @ T2 @ M, root @ T
    root = root.to(S.dtype)
    return root if previous is None else torch.where(torch.isfinite(root).all(), root, previous)


class Shampoo(Optimizer):
    name = "shampoo"
    bounds = dict(lr=NONNEGATIVE, betas=(UNIT_OPEN, UNIT), eps=POSITIVE, weight_decay=NONNEGATIVE,
                  precondition_frequency=COUNT, start_preconditioning_step=COUNT, max_preconditioner_dim=COUNT,
                  grafting=OneOf(GRAFTINGS), grafting_beta2=UNIT_OPEN, grafting_eps=POSITIVE,
                  root_dtype=OneOf((torch.float32, torch.float64)), root_method=OneOf((None, "eigh", "newton")))

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-12,
                 weight_decay: float = 0.0, precondition_frequency: int = 10, start_preconditioning_step: int = 10,
                 max_preconditioner_dim: int = 1024, grafting: str = "adam", grafting_beta2: float = 0.999,
                 grafting_eps: float = 1e-8, root_dtype: torch.dtype = torch.float64, root_method: str | None = None,
                 maximize: bool = False):
        super().__init__(params, dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, precondition_frequency=precondition_frequency,
            start_preconditioning_step=start_preconditioning_step, max_preconditioner_dim=max_preconditioner_dim,
            grafting=grafting, grafting_beta2=grafting_beta2, grafting_eps=grafting_eps, root_dtype=root_dtype,
            root_method=root_method, maximize=maximize))

    @classmethod
    def count_state(cls, shape, hyperparameters):
        """Momentum, the grafting accumulator, and per block of the matrix view its two statistics
        and their two roots: 2(r² + c²) for an r × c block."""
        rows, cols = (shape[0], numel(shape[1:])) if len(shape) >= 2 else (1, numel(shape))
        size = hyperparameters["max_preconditioner_dim"]
        sides = lambda n: [min(size, n - i) for i in range(0, n, size)]  # noqa: E731
        grafting = hyperparameters["grafting"] != "none"
        return numel(shape) * (1 + grafting) + sum(2 * (r * r + c * c) for r in sides(rows) for c in sides(cols))

    def init_state(self, state, p, group):
        state["step"] = 0
        state["momentum"] = zeros_state(p)
        if group["grafting"] != "none":
            state["graft"] = zeros_state(p)
        state["left"], state["right"], state["left_root"], state["right_root"] = [], [], [], []
        for block in blocks(as_matrix(state["momentum"]), group["max_preconditioner_dim"]):
            rows, cols = block.shape
            state["left"].append(block.new_zeros(rows, rows))
            state["right"].append(block.new_zeros(cols, cols))
            state["left_root"].append(torch.eye(rows, dtype=block.dtype, device=block.device))
            state["right_root"].append(torch.eye(cols, dtype=block.dtype, device=block.device))

    def update_param(self, x, grad, state, group):
        state["step"] += 1
        t, size = state["step"], group["max_preconditioner_dim"]
        beta1, beta2 = group["betas"]
        G = as_matrix(grad)
        stat_weight = 1.0 if beta2 == 1 else 1 - beta2
        for L, R, block in zip(state["left"], state["right"], blocks(G, size)):
            kernels.gram_update_(L, block, beta=beta2, alpha=stat_weight, side="left")
            kernels.gram_update_(R, block, beta=beta2, alpha=stat_weight, side="right")
        M = as_matrix(state["momentum"]).lerp_(G, 1 - beta1) / (1 - beta1 ** t)
        graft = self._grafting_step(M, G, state, group)

        start = group["start_preconditioning_step"]
        if t < start:
            direction = M if graft is None else graft
        else:
            if (t - start) % group["precondition_frequency"] == 0:
                method = group["root_method"] or ("newton" if x.is_cuda else "eigh")
                for roots, stats in ((state["left_root"], state["left"]), (state["right_root"], state["right"])):
                    roots[:] = [inverse_fourth_root(S, group["eps"], group["root_dtype"], method, previous)
                                for S, previous in zip(stats, roots)]
            direction = torch.empty_like(M)
            pieces = zip(state["left_root"], state["right_root"], blocks(M, size), blocks(direction, size),
                         blocks(M if graft is None else graft, size))
            for P_L, P_R, m, out, graft_block in pieces:
                d = P_L @ m @ P_R
                if graft is not None:
                    d *= graft_block.norm() / d.norm().clamp_min(torch.finfo(d.dtype).tiny)
                out.copy_(d)
        x.mul_(1 - group["lr"] * group["weight_decay"])
        x.add_(direction.view_as(x), alpha=-group["lr"])

    @staticmethod
    def _grafting_step(M, G, state, group):
        """The diagonal method's step A for the filtered gradient M (None without grafting)."""
        if group["grafting"] == "none":
            return None
        accumulator, t = as_matrix(state["graft"]), state["step"]
        if group["grafting"] == "adam":
            beta = group["grafting_beta2"]
            second_moment = accumulator.mul_(beta).addcmul_(G, G, value=1 - beta) / (1 - beta ** t)
        else:
            second_moment = accumulator.addcmul_(G, G)
        return M / second_moment.sqrt().add_(group["grafting_eps"])
