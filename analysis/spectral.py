"""Singular-value spectra of the hidden weight matrices and of their updates.

For W with singular values σ₁ ≥ … ≥ σ_k (k = min(rows, cols)):
    sigma_max = σ₁, sigma_min = σ_k
    stable_rank = ‖W‖_F² / ‖W‖₂² = Σσᵢ² / σ₁²                          (1 ≤ stable_rank ≤ k)
    effective_rank = exp(−Σ pᵢ log pᵢ), pᵢ = σᵢ / Σσⱼ  (Roy and Vetterli, 2007)
A zero matrix (e.g. a zero-initialised projection) has every statistic 0.

train_gpt.py --spectral_every=N logs them for every hidden matrix W and its last update
ΔW = W_after − W_before every N steps (lines `spectral:step:N name:... sigma_max:...`, the
summary's `spectral` list, wandb). From a checkpoint:

    python -m analysis.spectral checkpoints/RUN_ID[/step_NNNNNN] [--out=spectra]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

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


def plot_spectra(path: Path, matrices: dict[str, torch.Tensor], title: str) -> None:
    """σᵢ/σ₁ against i/k for every matrix, one panel per kind of matrix (qkv, proj, fc, ...), colour by layer."""
    from analysis.figures import plt, save_png  # here: train_gpt.py imports this module, and needs no matplotlib

    kinds = sorted({name.split(".", 2)[-1] for name in matrices})
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.6), squeeze=False)
    layers = max(int(name.split(".")[1]) for name in matrices if name.startswith("blocks.")) + 1
    for name, w in matrices.items():
        s = singular_values(w).cpu()
        if s[0] <= 0:
            continue
        ax = axes[0][kinds.index(name.split(".", 2)[-1])]
        ax.semilogy(torch.linspace(0, 1, len(s)), s / s[0], color=plt.cm.viridis(int(name.split(".")[1]) / layers))
    for ax, kind in zip(axes[0], kinds):
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("i / k")
    axes[0][0].set_ylabel("σᵢ / σ₁ (colour: layer, dark = first)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a step folder (…/step_NNNNNN) or a run folder (its newest step)")
    parser.add_argument("--out", default="spectra", help="output folder")
    args = parser.parse_args(argv)
    import train_gpt  # here, not at the top: train_gpt.py imports this module
    from analysis.checkpoint import find_checkpoint, load_model

    try:
        step_dir = find_checkpoint(args.checkpoint)
    except FileNotFoundError as e:
        parser.error(str(e))
    model, state = load_model(step_dir)
    matrices = {name: p.detach() for name, p in named(model, train_gpt.parameter_groups(model)["hidden"]).items()}
    print(f"{'matrix':<28}" + "".join(f"{k:>16}" for k in STATS))
    for name, w in matrices.items():
        print(f"{name:<28}" + "".join(f"{v:>16.4g}" for v in spectral_stats(w).values()))
    path = Path(args.out) / f"{step_dir.parent.name}_step{state['step']:06d}_spectra.png"
    plot_spectra(path, matrices, f"{step_dir.parent.name} step {state['step']}: singular values of the hidden matrices")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
