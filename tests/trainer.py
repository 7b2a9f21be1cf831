"""Run train_gpt.py as a user would (a subprocess), with a config small enough for a CPU test."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--preset=tiny", "--n_layer=2", "--model_dim=64", "--n_head=2", "--seq_len=64",
         "--global_batch_tokens=1024", "--micro_batch_tokens=1024", "--num_iterations=6",
         "--val_every=3", "--val_tokens=2048"]
STEP_LINE = re.compile(r"^step:(\d+)/(\d+) (train_loss|val_loss):([\d.]+|nan) train_time:(\d+)ms")


def run(args, nproc=None, timeout=240, env=None):
    """Run the trainer (under torchrun with nproc > 0) and return the CompletedProcess."""
    if nproc:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "train_gpt.py", *args]
    else:
        command = [sys.executable, "train_gpt.py", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)


def logs(log_dir: Path, run_id: str) -> tuple[str, dict]:
    return (log_dir / f"{run_id}.txt").read_text(), json.loads((log_dir / f"{run_id}.json").read_text())


def checkpointed_run(root: Path, run_id: str, *extra: str) -> tuple[Path, str, dict]:
    """A SMALL run with logs in root and checkpoints in root/ckpt; (its checkpoint folder, log text, summary)."""
    done = run([*SMALL, *extra, f"--log_dir={root}", f"--checkpoint_dir={root / 'ckpt'}", f"--run_id={run_id}"])
    assert done.returncode == 0, done.stderr
    return root / "ckpt" / run_id, *logs(root, run_id)


def losses(text: str, kind: str) -> list[tuple[int, float]]:
    """(step, loss) of every `step:N/M {kind}:X` line."""
    found = []
    for line in text.splitlines():
        m = STEP_LINE.match(line)
        if m and m.group(3) == kind:
            found.append((int(m.group(1)), float(m.group(4))))
    return found


def start(args, env=None, nproc=None):
    """Start the trainer in the background with stdout piped line by line (for kill/signal tests). Under
    torchrun, two restarts: gloo has been seen to abort a restarted worker while the group re-forms
    (SIGABRT, no Python error; seen once in CI), and a second restart resumes the same way."""
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
              "--max-restarts=2", "--monitor-interval=0.2"] if nproc else [sys.executable]
    return subprocess.Popen([*prefix, "train_gpt.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def read_until(process, marker: str) -> list[str]:
    """Read the process's stdout until a line contains marker; fail if it ends first."""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError(f"{marker!r} never printed; stderr: {process.stderr.read()}\nstdout: {''.join(seen)}")
