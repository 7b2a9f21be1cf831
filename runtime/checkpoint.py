"""Checkpoints: <checkpoint_dir>/<run_id>/step_NNNNNN/rank<R>.pt, one torch.save dict per rank.

Each folder is written as .tmp-step_NNNNNN and renamed into place only once every rank has written, so a
crash mid-write leaves the previous one intact. The step-0 folder (the initialisation) is always kept.

Resuming from step S starts a new branch of the run: this run's checkpoints after S belong to the branch
left behind, so they are moved into <run_id>/superseded-<UTC time>/ where neither `--resume=auto` nor
pruning sees them. Weights that are not finite are never saved, and a file that cannot be read as a
checkpoint is named with the newest older one that looks intact.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import re
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from data.atomic import NO_SPACE, DiskFullError

from .config import ROLES, ConfigError, role_of
from .distributed import Dist, barrier, broadcast_object

STEP_DIR = re.compile(r"^step_(\d{6,})$")
STATE_KEYS = {"model", "optimizers", "loader", "rng", "step", "train_time_ms", "config", "file_hashes", "world",
              "log_offset", "summary"}


def step_number(path: Path) -> int:
    return int(path.name[5:])


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's finished checkpoint folders (rank0.pt written), oldest first."""
    found = [p for p in run_dir.glob("step_*") if STEP_DIR.match(p.name)] if run_dir.is_dir() else []
    return sorted((p for p in found if (p / "rank0.pt").is_file()), key=step_number)


def latest_checkpoint(run_dir: Path) -> Path | None:
    done = checkpoints(run_dir)
    return done[-1] if done else None


def finite(tensors) -> bool:
    """Whether every value is finite: one fused max-norm over the tensors, one host sync."""
    return math.isfinite(torch.nn.utils.get_total_norm(list(tensors), norm_type=math.inf))


def state_bytes(state) -> int:
    """The bytes of every tensor in a (nested) state: about the size torch.save writes."""
    if isinstance(state, torch.Tensor):
        return state.nbytes
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


def save_checkpoint(run_dir: Path, step: int, state: dict, d: Dist, keep: int) -> Path:
    final, tmp = run_dir / f"step_{step:06d}", run_dir / f".tmp-step_{step:06d}"
    if d.master:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    file, needed = tmp / f"rank{d.rank}.pt", state_bytes(state)
    if shutil.disk_usage(tmp).free < needed:
        raise DiskFullError(file, needed, at_least=True)
    try:
        with open(file, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a short write as a RuntimeError
        full = getattr(e, "errno", None) in NO_SPACE or shutil.disk_usage(tmp).free < needed - (
            file.stat().st_size if file.exists() else 0)
        file.unlink(missing_ok=True)
        if full:
            raise DiskFullError(file, needed, at_least=True) from None
        raise
    barrier()
    if d.master:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        older = [p for p in checkpoints(run_dir) if p.name != "step_000000"][:-keep]
        for old in older:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def optimizer_states(opts: list) -> list[dict]:
    """Each optimizer's state with its class and the names of its parameter groups."""
    return [{"class": type(o).__name__, "groups": [g["name"] for g in o.param_groups], "state": o.state_dict()}
            for o in opts]


def load_optimizers(opts: list, saved: list[dict]) -> list[str]:
    """Load each optimizer's state saved under the same class and groups. One with none (its group's optimizer
    changed, which only --force_resume lets through) starts fresh: its description is returned."""
    fresh = []
    for opt in opts:
        groups = [g["name"] for g in opt.param_groups]
        match = [s["state"] for s in saved if s.get("class") == type(opt).__name__ and s.get("groups") == groups]
        if match:
            opt.load_state_dict(match[0])
        else:
            fresh.append(f"{type(opt).__name__}({'+'.join(groups)})")
    return fresh


def rng_states(d: Dist) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state(d.device) if d.device.type == "cuda" else None}


def set_rng_states(states: dict, d: Dist) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if states["cuda"] is not None and d.device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], d.device)


def training_state(model, opts: list, loader, d: Dist) -> dict:
    """What a resumed (or warmed-up) run puts back: the weights, optimizer states, loader position, RNG states."""
    return {"model": model.state_dict(), "optimizers": optimizer_states(opts), "loader": loader.state_dict(),
            "rng": rng_states(d)}


def restore(state: dict, model, opts: list, loader, d: Dist, keep: set[str] = frozenset()) -> list[str]:
    """Load a `training_state` (or a checkpoint holding one) into the model, optimizers, loader and RNGs; the
    group keys in `keep` (the config's hyperparameters) keep their current values over the saved ones. Returns
    the optimizers that found no saved state (`load_optimizers`)."""
    model.load_state_dict(state["model"])
    settings = [[{k: g[k] for k in keep if k in g} for g in o.param_groups] for o in opts]
    fresh = load_optimizers(opts, state["optimizers"])
    for opt, groups in zip(opts, settings):
        for group, setting in zip(opt.param_groups, groups):
            group.update(setting)
    loader.load_state_dict(state["loader"])
    set_rng_states(state["rng"], d)
    return fresh


def auto_resume(resume: str) -> bool:
    """--resume=auto, or a job restarted by `torchrun --max-restarts` with no --resume (it resumes as with auto)."""
    return resume == "auto" or (not resume and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0)


def find_resume(resume: str, run_dir: Path) -> Path | None:
    """The checkpoint folder to resume from: --resume=PATH, or with 'auto' the latest of this run (if any)."""
    if auto_resume(resume):
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
    state = read_state(path, file, d)
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


def open_resume(cfg, run_dir: Path, file_hashes: dict[str, str], model_state: dict, d: Dist):
    """(folder, state, branch message) of the checkpoint this run resumes from (`find_resume`), after every
    refusal (`load_resume`, `check_tensor_shapes`) and with its later checkpoints moved aside (`start_branch`);
    (None, None, None) for a fresh start."""
    path = find_resume(cfg.resume, run_dir)
    if path is None:
        return None, None, None
    state = load_resume(path, cfg, file_hashes, d)
    check_tensor_shapes(path, state["model"], model_state)
    return path, state, start_branch(run_dir, state["step"], d)


def read_state(path: Path, file: Path, d: Dist) -> dict:
    """The state in a checkpoint file, or one line naming the file, why it cannot be read, and the newest
    older checkpoint of the same run that looks intact (its rank file is a whole zip archive)."""
    try:
        state = torch.load(file, map_location=d.device, weights_only=False)
        reason = None if isinstance(state, dict) and STATE_KEYS <= state.keys() else "not a checkpoint of this trainer"
    except Exception as e:  # truncated, empty, random bytes, another format: each fails in its own way
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
    if reason is None:
        return state
    older = [p for p in checkpoints(path.parent) if step_number(p) < step_number(path)
             and zipfile.is_zipfile(p / file.name)] if STEP_DIR.match(path.name) else []
    fix = (f"the newest older checkpoint that looks intact is {older[-1]}: resume with --resume={older[-1]} "
           f"(the later ones then move aside)" if older else "no older checkpoint of this run looks intact")
    raise ConfigError(f"{file} cannot be read as a checkpoint ({reason}); {fix}, or move {path} away")


def start_branch(run_dir: Path, step: int, d: Dist) -> str | None:
    """Move this run's checkpoints after `step` (another branch, now left) into <run_dir>/superseded-<UTC time>/;
    say so, or None when there were none. Rank 0 moves them; every rank gets its message."""
    message = None
    later = [p for p in checkpoints(run_dir) if step_number(p) > step] if d.master else []
    if later:
        stamp, n = time.strftime("%Y%m%d-%H%M%S", time.gmtime()), 1
        aside = run_dir / f"superseded-{stamp}"
        while aside.exists():
            n += 1
            aside = run_dir / f"superseded-{stamp}-{n}"
        aside.mkdir()
        for p in later:
            os.replace(p, aside / p.name)
        message = (f"resuming from step {step} starts a new branch: the later checkpoint(s) "
                   f"{', '.join(p.name for p in later)} moved to {aside}")
    return broadcast_object(message, d)


def check_tensor_shapes(path: Path, saved: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> None:
    """Refuse a checkpoint whose tensors do not fit the model (another shape reached some other way)."""
    wrong = [f"{k}: {tuple(saved[k].shape) if k in saved else 'missing'} in checkpoint, {tuple(v.shape)} now"
             for k, v in current.items() if k not in saved or saved[k].shape != v.shape]
    wrong += [f"{k}: not in this model" for k in saved if k not in current]
    if wrong:
        raise ConfigError(f"{path} holds another model shape ({'; '.join(wrong[:4])}); match the config or start a new run")
