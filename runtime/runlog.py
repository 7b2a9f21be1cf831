"""The run log: logs/<run_id>.txt (human: the embedded sources, config, environment, then the speedrun's
step lines) and logs/<run_id>.json (the machine summary), written by rank 0 only; optionally wandb."""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

from data.atomic import NO_SPACE, DiskFullError, atomic_write

from . import spectral
from .checkpoint import auto_resume
from .config import ConfigError
from .distributed import Dist
from .env import check_writable, code_hash, environment, source_hashes


class RunLog:
    """On resume the .txt is cut back to where the checkpoint was taken (via a rewritten copy, renamed
    over the original), so the finished log reads like one uninterrupted run. Under --resume=auto with no
    checkpoint to resume, an earlier log of the run id (a run that never finished a checkpoint) is moved
    into <log_dir>/superseded-<UTC time>/ and the run starts fresh; without auto it is refused."""

    RULE = "=" * 100

    def __init__(self, cfg, preset: str, d: Dist, run_id: str, sources: dict[str, str], resume: dict | None):
        self.enabled, self.num_iterations = d.master, cfg.num_iterations
        self.file_hashes = source_hashes(sources)
        self.code_hash = code_hash(self.file_hashes)
        self.summary = {"run_id": run_id, "status": "running", "preset": preset, "config": dataclasses.asdict(cfg),
                        "code_hash": self.code_hash, "hardware": environment(d), "val_history": [], "resumed": [],
                        "spectral": []}
        self.wandb = None
        if not self.enabled:
            return
        if cfg.wandb:
            try:
                import wandb  # imported only when asked for: it is slow to import
            except ImportError:
                raise ConfigError("--wandb needs the wandb package: pip install wandb") from None
        folder = Path(cfg.log_dir)
        check_writable(folder, "log")
        folder.mkdir(parents=True, exist_ok=True)
        self.txt, self.json = folder / f"{run_id}.txt", folder / f"{run_id}.json"
        replaced = None
        if resume is None and self.txt.exists() and auto_resume(cfg.resume):
            replaced = folder / f"superseded-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
            replaced.mkdir(exist_ok=True)
            for path in (self.txt, self.json):
                if path.exists():
                    os.replace(path, replaced / path.name)
        if resume is not None and self.txt.exists():
            atomic_write(self.txt, self.txt.read_bytes()[:resume["log_offset"]])
            self.summary.update({k: resume["summary"].get(k, []) for k in ("val_history", "resumed", "spectral")})
        elif self.txt.exists():
            raise ConfigError(f"{self.txt} exists already; pick another --run_id (or --resume=auto to continue it)")
        else:
            header = [f"{self.RULE}\n# {path}\n{self.RULE}\n{text}\n" for path, text in sources.items()]
            header.append(f"{self.RULE}\n# config (preset {preset})\n{json.dumps(self.summary['config'], indent=1)}\n")
            header.append(f"{self.RULE}\n# environment\n{json.dumps(self.summary['hardware'], indent=1)}\n{self.RULE}\n")
            atomic_write(self.txt, "".join(header))
        self.file = open(self.txt, "a")
        if replaced is not None:
            self.print(f"# no checkpoint of run {run_id} to resume: its earlier log moved to {replaced}; starting fresh")
        self.save_summary()
        if cfg.wandb:
            self.wandb = wandb.init(project=cfg.wandb_project, group=cfg.wandb_group or None, name=run_id,
                                    config=self.summary["config"], resume="allow", id=run_id, dir=str(folder))

    def offset(self) -> int:
        return self.file.tell() if self.enabled else 0

    def print(self, line: str) -> None:
        if self.enabled:
            print(line, flush=True)
            try:
                self.file.write(line + "\n")
                self.file.flush()
            except OSError as e:
                if e.errno in NO_SPACE:
                    raise DiskFullError(self.txt, len(line) + 1, at_least=True) from None
                raise

    def step(self, step: int, metric: str, value: float, train_ms: float) -> None:
        """One speedrun log line: step:N/M metric:X train_time:Tms step_avg:Sms."""
        self.print(f"step:{step}/{self.num_iterations} {metric}:{value:.4f} "
                   f"train_time:{train_ms:.0f}ms step_avg:{train_ms / max(step, 1):.2f}ms")
        if metric == "val_loss":
            self.summary["val_history"].append([step, value, train_ms])
        if self.wandb is not None:
            self.wandb.log({metric: value, "train_time_ms": train_ms}, step=step)

    def spectral(self, step: int, rows: list[dict]) -> None:
        """Singular-value statistics of the hidden matrices and their updates (runtime/spectral.py)."""
        for row in rows:
            self.print(spectral.log_line(step, row))
            self.summary["spectral"].append({"step": step, **row})
            if self.wandb is not None:
                self.wandb.log({f"spectral/{row['name']}/{k}": v for k, v in row.items() if k != "name"}, step=step)

    def save_summary(self, **fields) -> None:
        self.summary.update(fields)
        if self.enabled:
            atomic_write(self.json, json.dumps(self.summary, indent=1) + "\n")

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.wandb is not None:
                self.wandb.finish()
