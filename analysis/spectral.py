"""Singular-value spectra of a checkpoint's hidden weight matrices: a table and a plot
(the statistics are runtime/spectral.py's, the same the run log records with --spectral_every).

    python -m analysis.spectral checkpoints/RUN_ID[/step_NNNNNN] [--out=spectra]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import train_gpt
from analysis.checkpoint import find_checkpoint, load_model
from analysis.figures import plt, save_png
from runtime.spectral import STATS, named, singular_values, spectral_stats


def plot_spectra(path: Path, matrices: dict[str, torch.Tensor], title: str) -> None:
    """σᵢ/σ₁ against i/k for every matrix, one panel per kind of matrix (qkv, proj, fc, ...), colour by layer."""
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
