"""Checkpoints: <checkpoint_dir>/<run_id>/step_NNNNNN/rank<R>.pt, one torch.save dict per rank.

Each folder is written as .tmp-step_NNNNNN and renamed into place only once every rank has written, so a
crash mid-write leaves the previous one intact. The step-0 folder (the initialisation) is always kept.
"""
from __future__ import annotations

import dataclasses
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from .config import ROLES, ConfigError, role_of
from .distributed import Dist, barrier


def latest_checkpoint(run_dir: Path) -> Path | None:
    done = sorted(p for p in run_dir.glob("step_*") if (p / "rank0.pt").is_file()) if run_dir.is_dir() else []
    return done[-1] if done else None


def save_checkpoint(run_dir: Path, step: int, state: dict, d: Dist, keep: int) -> Path:
    final, tmp = run_dir / f"step_{step:06d}", run_dir / f".tmp-step_{step:06d}"
    if d.master:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    with open(tmp / f"rank{d.rank}.pt", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    barrier()
    if d.master:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        older = sorted(p for p in run_dir.glob("step_*") if p.name != "step_000000")[:-keep]
        for old in older:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def rng_states(d: Dist) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state(d.device) if d.device.type == "cuda" else None}


def set_rng_states(states: dict, d: Dist) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if states["cuda"] is not None and d.device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], d.device)


def find_resume(resume: str, run_dir: Path) -> Path | None:
    """The checkpoint folder to resume from: --resume=PATH, or with 'auto' the latest of this run (if any).

    A job restarted by `torchrun --max-restarts` resumes as with 'auto'.
    """
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if resume == "auto" or (restarted and not resume):
        return latest_checkpoint(run_dir)
    if not resume:
        return None
    path = Path(resume)
    if not (path / "rank0.pt").is_file():
        raise ConfigError(f"--resume={resume}: no checkpoint there (expected {path / 'rank0.pt'})")
    return path


def load_resume(path: Path, cfg, file_hashes: dict[str, str], d: Dist) -> dict:
    """This rank's checkpoint state, after refusing another model shape or world size (always) and a
    changed config or code (unless cfg.force_resume). Which keys may change is read off their roles."""
    file = path / f"rank{d.rank}.pt"
    if not file.is_file():
        raise ConfigError(f"{path} was written by fewer ranks than this run's {d.world}; resume with the same world size")
    state = torch.load(file, map_location=d.device, weights_only=False)
    old, new = state["config"], dataclasses.asdict(cfg)
    if state["world"] != d.world:
        raise ConfigError(f"{path} was written by {state['world']} rank(s), this run has {d.world}; use the same world size")
    rule = {f.name: ROLES[role_of(f)].on_resume for f in dataclasses.fields(cfg)}
    old = {**{f.name: f.default for f in dataclasses.fields(cfg)}, **old}  # keys newer than the checkpoint: defaults
    shape = [f"{k}: {old.get(k)} in checkpoint, {new[k]} now" for k in sorted(new)
             if rule[k] == "refuse" and old.get(k) != new[k]]
    if shape:
        raise ConfigError(f"{path} holds another model shape ({'; '.join(shape)}); match the config or start a new run")
    differs = [f"{k}: {old.get(k)!r} → {new[k]!r}" for k in sorted(new) if rule[k] == "force" and old.get(k) != new[k]]
    then, now = state["file_hashes"], file_hashes
    changed = sorted(f for f in then.keys() | now.keys() if then.get(f) != now.get(f))
    if changed:
        differs.append(f"code changed in {', '.join(changed)}")
    if differs and not cfg.force_resume:
        raise ConfigError(f"refusing to resume from {path}: {'; '.join(differs)}. Pass --force_resume to resume anyway")
    return state


def check_tensor_shapes(path: Path, saved: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> None:
    """Refuse a checkpoint whose tensors do not fit the model (another shape reached some other way)."""
    wrong = [f"{k}: {tuple(saved[k].shape) if k in saved else 'missing'} in checkpoint, {tuple(v.shape)} now"
             for k, v in current.items() if k not in saved or saved[k].shape != v.shape]
    wrong += [f"{k}: not in this model" for k in saved if k not in current]
    if wrong:
        raise ConfigError(f"{path} holds another model shape ({'; '.join(wrong[:4])}); match the config or start a new run")
