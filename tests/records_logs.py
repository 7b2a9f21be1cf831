"""Small synthetic run logs for the records tests, in this repo's format and in modded-nanogpt's.

`python -m tests.records_logs` rewrites the committed samples under tests/fixtures/modded_nanogpt/.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

RULE = "=" * 100
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "modded_nanogpt"
CONFIG = {"dataset": "shakespeare", "tokenizer": "byte", "n_layer": 2, "model_dim": 64, "global_batch_tokens": 1024,
          "num_iterations": 6, "val_every": 3, "target_val_loss": 1.6, "seed": 0, "log_dir": "logs", "run_id": "x",
          "lr_hidden": 0.05}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def val_curve(final: float, steps: int, every: int) -> list[tuple[int, float]]:
    """Validation points at 0, every, 2·every, ... steps, falling linearly from 5.0 to `final`."""
    points = sorted({*range(0, steps, every), steps})
    return [(s, 5.0 + (final - 5.0) * s / steps) for s in points]


def write_ours(folder: Path, run_id: str, *, final: float, time_ms: float, seed: int = 0, steps: int = 6,
               code: str = "print('train')\n", config: dict | None = None, device: str = "cpu", world: int = 1,
               status: str = "complete", json_summary: bool = True) -> Path:
    """<run_id>.txt (+ .json) as train_gpt.py writes them; validation every 3 steps, the last at `steps`."""
    cfg = {**CONFIG, **(config or {}), "seed": seed, "run_id": run_id}
    env = {"python": "3.11.7", "torch": "2.13.0+cpu", "cuda": None, "world_size": world, "device": device,
           "device_count": world, "git_commit": "0" * 40, "git_dirty": False}
    sources = {"train_gpt.py": code, "data/atomic.py": "def atomic_write(): ...\n"}
    header = [f"{RULE}\n# {p}\n{RULE}\n{t}\n" for p, t in sources.items()]
    header += [f"{RULE}\n# config (preset tiny)\n{json.dumps(cfg, indent=1)}\n",
               f"{RULE}\n# environment\n{json.dumps(env, indent=1)}\n{RULE}\n"]
    lines, history = [f"run {run_id}: 1,000 parameters, {world} × {device}, optimizers: Muon(hidden)"], []
    for step, loss in val_curve(final, steps, cfg["val_every"]):
        ms = time_ms * step / steps
        if step:
            lines.append(f"step:{step}/{cfg['num_iterations']} train_loss:{loss + 0.1:.4f} train_time:{ms:.0f}ms "
                         f"step_avg:{ms / step:.2f}ms")
        lines.append(f"step:{step}/{cfg['num_iterations']} val_loss:{loss:.4f} train_time:{ms:.0f}ms "
                     f"step_avg:{ms / max(step, 1):.2f}ms")
        history.append([step, loss, ms])
    folder.mkdir(parents=True, exist_ok=True)
    txt = folder / f"{run_id}.txt"
    txt.write_text("".join(header) + "\n".join(lines) + "\n")
    if json_summary:
        code_hash = sha(json.dumps({p: sha(t) for p, t in sources.items()}, sort_keys=True))
        summary = {"run_id": run_id, "status": status, "preset": "tiny", "config": cfg, "code_hash": code_hash,
                   "hardware": env, "val_history": history, "final_val_loss": history[-1][1],
                   "train_time_ms": history[-1][2], "steps": steps, "tokens": steps * cfg["global_batch_tokens"]}
        txt.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    return txt


NVIDIA_SMI = """Mon Jan 13 09:00:00 2025
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.00.00              Driver Version: 550.00.00      CUDA Version: 12.6     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|=========================================+========================+======================|
"""
GPU_ROW = ("|   {i}  NVIDIA H100 80GB HBM3          On  |   00000000:{i:02d}:00.0 Off |                    0 |\n"
           "| N/A   30C    P0            120W /  700W |    3456MiB /  81559MiB |      0%      Default |\n"
           "+-----------------------------------------+------------------------+----------------------+\n")


def write_modded(path: Path, *, final: float, time_ms: float, steps: int = 20, num_iterations: int = 20,
                 every: int = 5, extra_source: bool = True, train_loss: bool = False, gpus: int = 8,
                 seconds: bool = False, extra_field: bool = False, code_line: str = "") -> Path:
    """A public-speedrun log: code (train_gpt.py, optionally a second embedded file), a rule, versions and
    nvidia-smi, a rule, then `step:` lines (train lines without train_loss unless `train_loss`), peak memory.
    The step-count track's form: `seconds` (train_time:12.345s) and `extra_field` (val_ema_loss:X before
    train_time). `code_line` is added to the code (e.g. a batch size, or to make runs' codes differ)."""
    code = "import os\nimport sys\nwith open(sys.argv[0]) as f:\n    code = f.read()\nprint0(code)\n" + code_line
    if extra_source:
        code += f"{RULE}\n# triton_kernels.py\ndef kernel():\n    pass\n"
    env = "Running Python 3.12.7\nRunning PyTorch 2.7.0+cu126 compiled for CUDA 12.6\n" + NVIDIA_SMI
    env += "".join(GPU_ROW.format(i=i) for i in range(gpus))
    lines = []
    vals = dict(val_curve(final, steps, every))
    for step in range(steps + 1):
        ms = time_ms * step / steps
        clock = f"train_time:{ms / 1000:.3f}s" if seconds else f"train_time:{ms:.0f}ms"
        if step:
            loss = f"train_loss:{vals.get(step, final) + 0.2:.4f} " if train_loss else ""
            lines.append(f"step:{step}/{num_iterations} {loss}{clock} step_avg:{ms / step:.2f}ms")
        if step in vals:
            extra = f"val_ema_loss:{vals[step] + 0.01:.4f} " if extra_field else ""
            lines.append(f"step:{step}/{num_iterations} val_loss:{vals[step]:.4f} {extra}{clock} "
                         f"step_avg:{ms / max(step, 1):.2f}ms")
    lines.append("peak memory allocated: 34361 MiB reserved: 49576 MiB")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{code}{RULE}\n{env}\n{RULE}\n" + "\n".join(lines) + "\n")
    return path


def write_llmc(path: Path, *, final: float, steps: int = 40, every: int = 10) -> Path:
    """An llm.c log (the public speedrun's records 1 and 2): `s:N tel:L` validation and `s:N trl:L` train lines."""
    vals = dict(val_curve(final, steps, every))
    lines = []
    for step in range(steps + 1):
        if step in vals:
            lines.append(f"s:{step} tel:{vals[step]:.4f}")
        if step < steps:
            lines.append(f"s:{step} trl:{vals.get(step, final) + 0.3:.4f} lr:0.000600 norm:1.23")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


TRACK1_README = """# A stand-in of the public speedrun's README

## World record history

| # | Record time | Description | Date | Log | Contributors |
| - | - | - | - | - | - |
1 | 45 minutes | [stand-in one](https://example.org) | 05/28/24 | [log](records/track_1_short/a/main.log) | @x
2 | 3.5 minutes | stand-in two | 11/19/24 | [log](records/track_1_short/b/run0.txt) | @y
3 | 3.0 minutes | stand-in three | 12/04/24 | [log](records/track_1_short/c) | @z
3 | 3.1 minutes | re-timed three | 02/01/25 | [log](records/track_1_short/c/run0.txt),[PR](https://example.org/pr/1) | -
4 | 2.5 minutes | no log | 05/27/25 | [PR](https://example.org/pr/2) | @w
5 | 2.4 minutes | broken log | 06/01/25 | [log](records/track_1_short/e/bad.txt) | @v
6 | 2.3 minutes | mixed folder | 07/01/25 | [log](records/track_1_short/f) | @u

## Rules
"""
TRACK3_README = """# Stand-in step-count benchmark

## Notable results history

| # | Steps to 3.28 | Evidence | Description | Date | Log | Contributors |
| - | - | - | - | - | - | - |
| 1 | 30(!) | 3.2770 (n=1)Ⓧ | stand-in | 2026/04/26 | [log](results/one.txt) | @x |
| 2 | 25(!) | 3.2760 (n=2)✓ | stand-in | 2026/04/30 | [log](results/two/README.md) | @y |
"""


def write_public_checkout(root: Path) -> Path:
    """A small stand-in of a modded-nanogpt checkout: both README tables and logs in every public form."""
    t1 = root / "records" / "track_1_short"
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text(TRACK1_README)
    write_llmc(t1 / "a" / "main.log", final=3.2722)
    batch = "class Hyperparameters:\n    batch_size : int = 8*64 # sequences\n    sequence_length : int = 1024\n"
    write_modded(t1 / "b" / "run0.txt", final=3.2790, time_ms=210000.0, train_loss=True, extra_source=False,
                 code_line=batch)
    write_modded(t1 / "b" / "baseline.txt", final=3.2850, time_ms=200000.0, code_line="# the baseline\n")
    for i, final in enumerate((3.2770, 3.2790, 3.2750)):  # a folder of runs of one code
        write_modded(t1 / "c" / f"run{i}.txt", final=final, time_ms=180000.0 + 1000 * i)
    for name in ("this", "baseline"):  # a folder of run folders of two codes
        write_modded(t1 / "f" / name / "run.txt", final=3.2780, time_ms=150000.0, code_line=f"# {name}\n")
    (t1 / "e").mkdir(parents=True)
    (t1 / "e" / "bad.txt").write_text("this run crashed before its first step\n")
    t3 = root / "records" / "track_3_optimization"
    t3.mkdir(parents=True)
    (t3 / "README.md").write_text(TRACK3_README)
    write_modded(t3 / "results" / "one.txt", final=3.2770, time_ms=30000.0, steps=30, num_iterations=30,
                 seconds=True, extra_field=True, code_line="batch_size = 8 * 64 * 1024\n")
    for i, final in enumerate((3.2750, 3.2770)):
        write_modded(t3 / "results" / "two" / f"s{i}.txt", final=final, time_ms=26000.0, steps=25,
                     num_iterations=25, seconds=True)
    (t3 / "results" / "two" / "README.md").write_text("notes\n")
    return root


SAMPLES = {  # name: keyword arguments of write_modded
    "new_format_a.txt": dict(final=3.2790, time_ms=178752.0),
    "new_format_b.txt": dict(final=3.2760, time_ms=179310.0),
    "new_format_c.txt": dict(final=3.2801, time_ms=178100.0),
    "old_format_train_loss.txt": dict(final=3.2770, time_ms=466000.0, extra_source=False, train_loss=True),
}


def write_samples(folder: Path = FIXTURES) -> list[Path]:
    return [write_modded(folder / name, **kwargs) for name, kwargs in SAMPLES.items()]


if __name__ == "__main__":
    for written in write_samples():
        print(written)
