"""Loss landscape of a checkpoint: the loss along random directions, and between two checkpoints.

    python -m analysis.landscape checkpoints/RUN_ID [--mode=line|plane|interpolate] [--span=1.0]
                                 [--points=21] [--filter_norm] [--batches=N] [--seed=0] [--out=landscapes]

    line:        L(w₀ + α·d₁),          α ∈ [−span, span]
    plane:       L(w₀ + α·d₁ + β·d₂),   α, β ∈ [−span, span]
    interpolate: L(w_i + α·(w₀ − w_i)), α ∈ [−span, 1 + span] (span 0.5 unless given), w_i the run's
                 step-0 checkpoint: α = 0 is the initialisation, α = 1 the checkpoint

w₀ is the checkpoint (a step folder, or a run folder's newest step). d ~ N(0, I), scaled so that
‖d‖ = ‖w₀‖ over all parameters; with --filter_norm (Li et al., 2018) every row r of every matrix
gets ‖d_r‖ = ‖w₀_r‖ and vectors are not perturbed. L is train_gpt's validation loss on the first N
micro-batches of the run's validation data, N by default as many as the run validated on, so the
centre of a grid is the run's logged val_loss. Writes <out>/<run>_step<S>_<mode>.png and .npz
(the coordinates and the loss grid).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import train_gpt
from analysis.checkpoint import find_checkpoint, load_model
from analysis.figures import plt, save_png
from data.atomic import atomic_write
from data.loader import ShardLoader

MODES = ("line", "plane", "interpolate")


def validation_loss(model: train_gpt.GPT, batches: int | None, device: torch.device):
    """A function of no arguments: the model's mean loss on the first `batches` validation micro-batches."""
    cfg = model.cfg
    _, val_files = train_gpt.data_files(cfg, check=False)
    loader = ShardLoader(val_files, cfg.micro_batch_tokens, cfg.micro_batch_tokens, cfg.seq_len, 0, 1, device)
    batches = batches or max(cfg.val_tokens // cfg.micro_batch_tokens, 1)
    single = train_gpt.Dist(rank=0, local_rank=0, world=1, device=device)
    return lambda: train_gpt.evaluate(model, [], loader, batches, single, contextlib.nullcontext)


def random_direction(weights: list[torch.Tensor], generator: torch.Generator, filter_norm: bool) -> list[torch.Tensor]:
    """d ~ N(0, I) like the weights, scaled to ‖d‖ = ‖w‖, or per row of each matrix with filter_norm."""
    d = [torch.randn(w.shape, generator=generator, dtype=torch.float32).to(w) for w in weights]
    if filter_norm:
        row_norms = lambda t: t.flatten(1).norm(dim=1).view(-1, *[1] * (t.ndim - 1))  # noqa: E731
        return [di * (row_norms(w) / row_norms(di)) if w.ndim >= 2 else torch.zeros_like(w)
                for w, di in zip(weights, d)]
    scale = torch.stack([w.norm() for w in weights]).norm() / torch.stack([di.norm() for di in d]).norm()
    return [di * scale for di in d]


@torch.no_grad()
def scan(model: train_gpt.GPT, origin: list[torch.Tensor], directions: list[list[torch.Tensor]],
         axes: list[np.ndarray], loss) -> np.ndarray:
    """Loss at origin + Σ cᵢ·dᵢ for every c on the grid of axes (shape: the axes' lengths); restores origin."""
    params = list(model.parameters())
    grid = np.zeros([len(a) for a in axes])
    for index in tqdm(list(np.ndindex(grid.shape)), desc="landscape", unit="point"):
        for p, w, *ds in zip(params, origin, *directions):
            p.copy_(w)
            for axis, (a, d) in enumerate(zip(axes, ds)):
                p.add_(d, alpha=float(a[index[axis]]))
        grid[index] = loss()
    for p, w in zip(params, origin):
        p.copy_(w)
    return grid


def plot(path: Path, axes: list[np.ndarray], grid: np.ndarray, title: str, xlabel: str, marks=(0.0,)) -> None:
    """A 1-D curve, or a 2-D contour plot with logarithmic levels; saved as PNG."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if len(axes) == 1:
        ax.plot(axes[0], grid, marker=".")
        for m in marks:
            ax.axvline(m, color="grey", lw=0.8, ls="--")
        ax.set_ylabel("validation loss")
    else:
        levels = np.geomspace(grid.min(), grid.max(), 25) if grid.max() > grid.min() else None
        filled = ax.contourf(axes[0], axes[1], grid.T, levels=levels, norm="log", cmap="viridis")
        ax.contour(axes[0], axes[1], grid.T, levels=levels, colors="k", linewidths=0.4)
        fig.colorbar(filled, ax=ax, label="validation loss (log scale)", format="%.3g",
                     ticks=None if levels is None else levels[::4])
        ax.plot([0], [0], "r+", ms=12)
        ax.set_ylabel("β")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_png(fig, path)


def landscape(checkpoint: str | Path, mode: str = "line", span: float | None = None, points: int = 21,
              filter_norm: bool = False, batches: int | None = None, seed: int = 0, out: str | Path = "landscapes",
              device: str = "cpu") -> tuple[Path, Path]:
    """Evaluate and plot one landscape; return the paths of the .npz and the .png."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if points < 2:
        raise ValueError(f"--points must be at least 2, got {points}")
    device = torch.device(device)
    step_dir = find_checkpoint(checkpoint)
    model, state = load_model(step_dir, device)
    loss = validation_loss(model, batches, device)
    final = [p.detach().clone() for p in model.parameters()]
    run = step_dir.parent.name
    if mode == "interpolate":
        start = step_dir.parent / "step_000000"
        if not (start / "rank0.pt").is_file():
            raise FileNotFoundError(f"no step-0 checkpoint at {start}: train with --checkpoint_every=N to keep it")
        initial = [p.detach().clone() for p in load_model(start, device)[0].parameters()]
        span = 0.5 if span is None else span
        axes = [np.linspace(-span, 1 + span, points)]
        grid = scan(model, initial, [[f - i for f, i in zip(final, initial)]], axes, loss)
        xlabel, marks, title = "α  (0: step 0, 1: checkpoint)", (0.0, 1.0), "initial → final weights"
    else:
        span = 1.0 if span is None else span
        generator = torch.Generator().manual_seed(seed)
        dims = 1 if mode == "line" else 2
        dirs = [random_direction(final, generator, filter_norm) for _ in range(dims)]
        axes = [np.linspace(-span, span, points)] * dims
        grid = scan(model, final, dirs, axes, loss)
        xlabel, marks = "α", (0.0,)
        scaling = "filter-normalised" if filter_norm else "scaled to ‖w‖"
        title = f"{dims} random direction(s), {scaling}, seed {seed}"
    name = f"{run}_step{state['step']:06d}_{mode}{'_filter' if filter_norm and mode != 'interpolate' else ''}"
    out = Path(out)
    npz, png = out / f"{name}.npz", out / f"{name}.png"
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, loss=grid, **{f"axis{i}": a for i, a in enumerate(axes)}, mode=mode, span=span,
             filter_norm=filter_norm, seed=seed, step=state["step"], checkpoint=str(step_dir))
    atomic_write(npz, buffer.getvalue())
    plot(png, axes, grid, f"{run} step {state['step']}: {title}", xlabel, marks)
    return npz, png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a step folder (…/step_NNNNNN) or a run folder (its newest step)")
    parser.add_argument("--mode", default="line", choices=MODES)
    parser.add_argument("--span", type=float, help="b: coordinates in [−b, b] (interpolate: [−b, 1 + b]); "
                                                   "default 1 (interpolate 0.5)")
    parser.add_argument("--points", type=int, default=21, help="grid points per axis")
    parser.add_argument("--filter_norm", action="store_true", help="normalise directions row by row (Li et al.)")
    parser.add_argument("--batches", type=int, help="validation micro-batches per point (default: the run's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    parser.add_argument("--out", default="landscapes", help="output folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        npz, png = landscape(args.checkpoint, args.mode, args.span, args.points, args.filter_norm, args.batches,
                             args.seed, args.out, args.device)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    print(f"wrote {npz} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
