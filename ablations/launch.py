"""Launching a plan: locally in sequence, as torchrun jobs, or as a Slurm array script.

Each run writes `<results>/<run_id>.txt` and `.json` (the trainer's own logs). A run whose summary
says `complete` or `diverged` is done and never launched again; any other run starts afresh, or
resumes from its checkpoint under `<results>/checkpoints/<run_id>/` (a preempted run leaves one).
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from data.atomic import atomic_write
from records.logs import STEP_LINE

from .study import REPO, Run

DONE = ("complete", "diverged")
PLAN_FILE = "plan.json"


class LaunchError(RuntimeError):
    """A run that failed in a way the next runs would repeat; the message says what to do."""


def summary(results: Path, run_id: str) -> dict | None:
    """The run's JSON summary, or None if it is missing or unreadable (a run never started or cut off)."""
    try:
        return json.loads((results / f"{run_id}.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_done(results: Path, run_id: str) -> bool:
    return (summary(results, run_id) or {}).get("status") in DONE


def launcher(nproc: int | None, python: str = sys.executable) -> list[str]:
    """The command prefix: plain python, or torchrun with nproc processes on this node."""
    if nproc:
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "train_gpt.py"]
    return [python, "train_gpt.py"]


def run_args(run: Run, results: Path, wandb_group: str | None) -> list[str]:
    """The trainer arguments of a run: its config, seed, id, log and checkpoint folders, resume, wandb."""
    args = [*run.trainer_args(), f"--seed={run.seed}", f"--run_id={run.run_id}", f"--log_dir={results}",
            f"--checkpoint_dir={results / 'checkpoints'}", "--resume=auto"]
    return args + (["--wandb=true", f"--wandb_group={wandb_group}"] if wandb_group else [])


def clear_stale(results: Path, run_id: str) -> None:
    """Remove the logs of an unfinished run that left no checkpoint, so it can start afresh."""
    checkpoints = results / "checkpoints" / run_id
    if not any(checkpoints.glob("step_*/rank0.pt")):
        for suffix in (".txt", ".json"):
            (results / f"{run_id}{suffix}").unlink(missing_ok=True)


def eta(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def outcome(results: Path, run_id: str) -> str:
    """`complete: val_loss X at step N, train time Ts` for a finished run, else its status and step."""
    info = summary(results, run_id) or {}
    status, loss, ms = info.get("status", "no summary"), info.get("final_val_loss"), info.get("train_time_ms")
    if status not in DONE or loss is None or ms is None:
        return f"{status} at step {info['steps']}" if "steps" in info else status
    return f"{status}: val_loss {loss:.4f} at step {info['steps']}, train time {ms / 1000:.1f}s"


class Progress:
    """A run's status line on stderr: rewritten in place on a terminal (at most every 0.5 s), otherwise
    printed as a new line at each validation, so batch logs stay readable."""

    def __init__(self, label: str):
        self.label, self.tty, self.shown = label, sys.stderr.isatty(), 0.0

    def update(self, text: str, milestone: bool = False, final: bool = False) -> None:
        line = f"{self.label} {text}"
        if self.tty and (final or time.monotonic() - self.shown >= 0.5):
            print(f"\r\x1b[K{line}", end="\n" if final else "", file=sys.stderr, flush=True)
            self.shown = time.monotonic()
        elif not self.tty and (milestone or final):
            print(line, file=sys.stderr, flush=True)


def execute(label: str, command: list[str], results: Path, run_id: str) -> None:
    """Run one trainer command, showing `label step N/M ETA ...` from its step lines (ETA = T/N·(M − N))."""
    clear_stale(results, run_id)
    progress = Progress(label)
    tail: deque[str] = deque(maxlen=25)
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               bufsize=1)
    try:
        for line in process.stdout:
            tail.append(line)
            step = STEP_LINE.match(line)
            if step:
                n, m, train_ms = int(step.group(1)), int(step.group(2)), float(step.group(5))
                progress.update(f"step {n}/{m} ETA {eta(train_ms / max(n, 1) * (m - n) / 1000)}",
                                milestone="val_loss" in line)
        code = process.wait()
    except KeyboardInterrupt:  # the trainer got the same Ctrl-C: let it checkpoint and exit
        process.wait()
        progress.update("interrupted", final=True)
        raise
    progress.update(outcome(results, run_id), final=True)
    if code == 2:  # the trainer refused its input in one line: show that line
        refused = [line.strip() for line in tail if line.startswith("error: ")][-1:] or ["(no error line)"]
        raise LaunchError(f"{label} ({run_id}) stopped with exit status 2; fix the study file: {refused[0]}")
    if code not in (0, 3):  # 3: diverged, recorded in its summary like a result
        raise LaunchError(f"{label} ({run_id}) stopped with exit status {code}; run the same command again: "
                          f"finished runs are skipped and this one resumes or restarts.\n"
                          f"$ {shlex.join(command)}\n{''.join(tail)}")


def launch(label: str, run_id: str, command: list[str], results: Path) -> bool:
    """Run the command unless the run is finished already; return whether it was launched."""
    if is_done(results, run_id):
        print(f"{label} cached ({run_id}) {outcome(results, run_id)}", file=sys.stderr)
        return False
    execute(label, command, results, run_id)
    return True


def run_all(runs: list[Run], results: Path, nproc: int | None, wandb_group: str | None) -> int:
    """Launch every unfinished run in plan order, one at a time; return how many were launched."""
    results.mkdir(parents=True, exist_ok=True)
    return sum(launch(f"[{run.label} | run {run.index + 1}/{len(runs)}]", run.run_id,
                      launcher(nproc) + run_args(run, results, wandb_group), results) for run in runs)


def write_slurm(name: str, runs: list[Run], results: Path, nproc: int | None, wandb_group: str | None,
                sbatch_options: list[str]) -> Path:
    """Write `<results>/plan.json` (each task's arguments) and `<results>/<name>.sbatch`, an array of one task per run.

    Each task runs `python -m ablations task plan.json $SLURM_ARRAY_TASK_ID`, which skips a finished
    run and resumes a preempted one; SIGTERM two minutes before the time limit lets it checkpoint.
    """
    plan = {"study": name, "results": str(results), "nproc": nproc,
            "runs": [{"index": r.index, "label": r.label, "run_id": r.run_id, "args": run_args(r, results, wandb_group)}
                     for r in runs]}
    atomic_write(results / PLAN_FILE, json.dumps(plan, indent=1) + "\n")
    lines = ["#!/bin/bash", f"#SBATCH --job-name=ablation-{name}", f"#SBATCH --array=0-{len(runs) - 1}",
             f"#SBATCH --output={results}/slurm-%A_%a.out", "#SBATCH --signal=TERM@120"]
    if nproc:
        lines += ["#SBATCH --nodes=1", "#SBATCH --ntasks=1", f"#SBATCH --gpus-per-task={nproc}"]
    lines += [f"#SBATCH {option}" for option in sbatch_options]
    task = f"-m ablations task {shlex.quote(str(results / PLAN_FILE))} $SLURM_ARRAY_TASK_ID"
    lines += ["", f"cd {shlex.quote(str(REPO))}", f"srun ${{PYTHON:-python}} {task}", ""]
    script = results / f"{name}.sbatch"
    atomic_write(script, "\n".join(lines))
    return script


def run_task(plan_file: Path, index: int) -> None:
    """One Slurm array task: the plan's run number `index`, unless it is finished already."""
    plan = json.loads(plan_file.read_text())
    if not 0 <= index < len(plan["runs"]):
        raise LaunchError(f"{plan_file} has runs 0..{len(plan['runs']) - 1}, not {index}")
    entry, results = plan["runs"][index], Path(plan["results"])
    launch(f"[{entry['label']} | run {index + 1}/{len(plan['runs'])}]", entry["run_id"],
           launcher(plan["nproc"]) + entry["args"], results)
