"""Find a checkpoint written by train_gpt.py and rebuild its model: the entry point of analysis/ and evals/."""
from __future__ import annotations

from pathlib import Path

import torch

import train_gpt
from runtime.checkpoint import latest_checkpoint


def find_checkpoint(path: str | Path) -> Path:
    """A step folder holding rank0.pt: the path itself, or the newest step of a run folder."""
    path = Path(path)
    found = path if (path / "rank0.pt").is_file() else latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"no checkpoint at {path}: expected a step folder with rank0.pt or a run folder "
                                "holding step_NNNNNN/ folders (train with --checkpoint_every=N)")
    return found


def load_model(step_dir: Path, device: torch.device | str = "cpu") -> tuple[train_gpt.GPT, dict]:
    """The model of a checkpoint in eval mode, rebuilt from its config (keys this train_gpt.py lacks are
    dropped), and the checkpoint's whole state dict."""
    state = torch.load(Path(step_dir) / "rank0.pt", map_location=device, weights_only=False)
    cfg = train_gpt.Config(**{k: v for k, v in state["config"].items() if k in train_gpt.FIELDS})
    model = train_gpt.GPT(cfg).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), state
