"""What a run records about where it ran: the repo's source files it imported, versions, devices, git state."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import torch

from .config import ConfigError
from .distributed import Dist

REPO = Path(__file__).resolve().parents[1]


def repo_sources(main_file: str | Path) -> dict[str, str]:
    """Source text of `main_file` (first) and of every repo module loaded so far, by path relative to the repo."""
    main = Path(main_file).resolve()
    paths = {main}
    for module in list(sys.modules.values()):
        file = Path(getattr(module, "__file__", None) or "/")
        if file.is_absolute() and file.suffix == ".py" and file.resolve().is_relative_to(REPO):
            file = file.resolve()
            parts = file.relative_to(REPO).parts
            if not any(p.startswith(".") or p in ("site-packages", "tests") for p in parts):
                paths.add(file)
    ordered = sorted(paths, key=lambda p: (p != main, p))
    return {str(p.relative_to(REPO)): p.read_text() for p in ordered}


def source_hashes(sources: dict[str, str]) -> dict[str, str]:
    return {path: hashlib.sha256(text.encode()).hexdigest() for path, text in sources.items()}


def code_hash(file_hashes: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(file_hashes, sort_keys=True).encode()).hexdigest()


def cpu_name() -> str:
    """The CPU model and core count, e.g. "AMD EPYC 7B13 (2 cores)"; "cpu" where unknown."""
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    name = names[0] if names else platform.processor() or "cpu"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name} ({cores} cores)"


def environment(d: Dist) -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:  # triton is optional (not built for every platform)
        triton_version = None
    cuda = d.device.type == "cuda"
    return {
        "python": platform.python_version(), "torch": torch.__version__, "triton": triton_version,
        "cuda": torch.version.cuda, "platform": platform.platform(), "world_size": d.world,
        "device": torch.cuda.get_device_name(d.device) if cuda else cpu_name(),
        "device_count": torch.cuda.device_count() if cuda else 1,
        "git_commit": git("rev-parse", "HEAD") or None, "git_dirty": bool(git("status", "--porcelain")),
    }


def default_run_id() -> str:
    """Time and a random suffix; under torchrun, derived from its run id so restarts find their checkpoints."""
    elastic = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if elastic not in ("", "none"):
        return f"elastic-{hashlib.sha256(elastic.encode()).hexdigest()[:10]}"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def check_writable(folder: Path, what: str) -> None:
    """Fail before training if `folder` cannot be created or written (probing its nearest existing ancestor)."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is not a directory")
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as e:
        raise ConfigError(f"cannot write the {what} directory {folder}: {e}; pick a writable --{what}_dir") from None
