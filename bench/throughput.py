"""Throughput and MFU of train_gpt.py, measured by running it for a fixed number of steps.

    python bench/throughput.py --preset=speedrun124m --steps=50 --warmup_steps=10 [--nproc=N] [--out=FILE] \\
        [-- --key=value ...]                     # trainer overrides, e.g. --dataset=shakespeare

The trainer runs as a subprocess (under torchrun with --nproc) with --num_iterations=steps,
--val_every=0 (only the final validation), --stop_at_target=false and its logs in a temporary
folder (or --log_dir). From its step lines `step:k/N train_loss:X train_time:T_k ms`:
- compile + first step = T_1 (on CUDA this includes torch.compile);
- ms per step over steps w+1..N (w = warmup_steps): the median of T_k − T_{k−1} and the mean
  (T_N − T_w)/(N − w). The log rounds T_k to whole ms, so the median is good to ±1 ms;
- tokens/s = global_batch_tokens / mean ms per step.
Model FLOPs per token, forward + backward (PaLM-style, causal attention halved):
  6·N_matmul + 6·L·d·s
  N_matmul: weights of every nn.Linear (q, k, v, attention out, MLP in/out, and the head, tied or
  not; no embeddings, norms or biases); attention scores and weighted values cost 2·2·s·d per
  token per layer forward, ×3 with backward = 12·L·d·s, halved because causal attention only needs
  the lower triangle. MFU = FLOPs/token · tokens/s ÷ (world size · peak), peak being this device's
  measured dense matmul rate: median over repeats of 2n³/time of an n×n torch.mm, bf16 n = 8192 on
  CUDA, fp32 n = 2048 on CPU (the trainer's dtypes there), with the thread count the trainer gets.
Prints a Markdown table for docs/benchmarks.md, then the same figures as one JSON line.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import torch
import torch.nn as nn

from data.atomic import atomic_write
from records.logs import STEP_LINE
from train_gpt import GPT, Config, ConfigError, parse_args

SET_HERE = ("num_iterations", "val_every", "stop_at_target", "log_dir", "checkpoint_dir", "run_id")
RULE = "=" * 100 + "\n"
RUN_ID = "throughput"


def matmul_params(cfg: Config) -> int:
    """N_matmul: the weights of every nn.Linear of the model (the head counted even when tied)."""
    with torch.device("meta"):
        model = GPT(cfg)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def flops_per_token(cfg: Config) -> int:
    """Training FLOPs per token: 6·N_matmul + 6·L·d·s (attention, causal half of 12·L·d·s)."""
    return 6 * matmul_params(cfg) + 6 * cfg.n_layer * cfg.model_dim * cfg.seq_len


def train_times(text: str) -> list[float]:
    """[T_1, T_2, ...]: train_time (ms) of each train_loss step line after the log's header."""
    body = text.rsplit(RULE, 1)[-1]
    times = {int(m.group(1)): float(m.group(5)) for m in STEP_LINE.finditer(body) if m.group(3) == "train_loss"}
    if sorted(times) != list(range(1, len(times) + 1)):
        raise ValueError(f"step lines cover steps {sorted(times)[:5]}...; expected 1, 2, 3, ... (a resumed run?)")
    return [times[k] for k in range(1, len(times) + 1)]


def step_stats(times: list[float], warmup: int) -> dict:
    """compile + first step, and median / mean ms per step after `warmup` steps (see the docstring)."""
    if len(times) <= warmup:
        raise ValueError(f"{len(times)} steps logged; need more than --warmup_steps={warmup}")
    cumulative = [0.0, *times]
    diffs = [cumulative[k] - cumulative[k - 1] for k in range(warmup + 1, len(cumulative))]
    return {"first_step_ms": times[0], "median_step_ms": statistics.median(diffs),
            "mean_step_ms": (times[-1] - cumulative[warmup]) / len(diffs)}


def matmul_peak(device: torch.device, repeats: int = 5) -> tuple[float, str]:
    """Measured dense matmul rate in FLOP/s: median of 2n³/time over `repeats` timed torch.mm calls."""
    cuda = device.type == "cuda"
    n, dtype, calls = (8192, torch.bfloat16, 10) if cuda else (2048, torch.float32, 1)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    rates = []
    for i in range(repeats + 1):  # the first round warms up
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b)
        if cuda:
            torch.cuda.synchronize(device)
        rates.append(calls * 2 * n ** 3 / (time.perf_counter() - t0))
    label = f"{str(dtype).removeprefix('torch.')} {n}³ torch.mm"
    return statistics.median(rates[1:]), label if cuda else f"{label}, {torch.get_num_threads()} thread(s)"


def run_trainer(args, overrides: list[str], log_dir: Path) -> tuple[str, dict, list[str]]:
    """Run train_gpt.py; return its log text, its summary and the command it ran."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}"]
                if args.nproc else [sys.executable])
    command = [*launcher, "train_gpt.py", f"--preset={args.preset}", *overrides, f"--num_iterations={args.steps}",
               "--val_every=0", "--stop_at_target=false", f"--log_dir={log_dir}",
               f"--checkpoint_dir={log_dir / 'checkpoints'}", f"--run_id={RUN_ID}"]
    done = subprocess.run(command, cwd=ROOT, stdout=sys.stderr)  # the trainer's progress goes to stderr
    txt, summary = log_dir / f"{RUN_ID}.txt", log_dir / f"{RUN_ID}.json"
    if done.returncode != 0 or not summary.exists():
        sys.exit(f"error: the trainer exited with status {done.returncode} (command: {shlex.join(command)}); "
                 "see its output above")
    return txt.read_text(), json.loads(summary.read_text()), command


def measure(args, overrides: list[str], cfg: Config, log_dir: Path) -> dict:
    text, summary, command = run_trainer(args, overrides, log_dir)
    stats = step_stats(train_times(text), args.warmup_steps)
    hardware = summary["hardware"]
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    peak, peak_label = matmul_peak(torch.device("cuda" if cuda else "cpu"))
    tokens_per_s = cfg.global_batch_tokens / (stats["mean_step_ms"] / 1000)
    per_token = flops_per_token(cfg)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": hardware["device"], "world_size": hardware["world_size"],
        "git_commit": hardware["git_commit"], "git_dirty": hardware["git_dirty"], "torch": hardware["torch"],
        "command": shlex.join(["python", "bench/throughput.py", *sys.argv[1:]]),
        "trainer_command": shlex.join(command[command.index("train_gpt.py"):]),
        "preset": args.preset, "steps": args.steps, "warmup_steps": args.warmup_steps,
        "global_batch_tokens": cfg.global_batch_tokens, "n_params": summary["n_params"],
        "matmul_params": matmul_params(cfg), **stats, "tokens_per_s": tokens_per_s,
        "flops_per_token": per_token, "achieved_tflops": per_token * tokens_per_s / 1e12,
        "peak_tflops": peak / 1e12, "peak_measured_with": peak_label,
        "mfu": per_token * tokens_per_s / (hardware["world_size"] * peak),
        "peak_memory": summary["peak_memory"], "final_val_loss": summary["final_val_loss"],
    }


def table(r: dict) -> str:
    rows = [
        ("date", r["date"]), ("device", f"{r['device']} × {r['world_size']}"),
        ("git commit", f"{r['git_commit']}{' (uncommitted changes)' if r['git_dirty'] else ''}"),
        ("command", f"`{r['command']}`"), ("trainer command", f"`{r['trainer_command']}`"),
        ("torch", r["torch"]),
        ("steps (warmup excluded from ms/step)", f"{r['steps']} ({r['warmup_steps']})"),
        ("tokens per step", f"{r['global_batch_tokens']:,}"),
        ("parameters (matmul)", f"{r['n_params']:,} ({r['matmul_params']:,})"),
        ("compile + first step", f"{r['first_step_ms']:.0f} ms"),
        ("ms per step, median / mean", f"{r['median_step_ms']:.1f} / {r['mean_step_ms']:.2f}"),
        ("tokens/s", f"{r['tokens_per_s']:,.0f}"),
        ("model FLOPs per token", f"{r['flops_per_token']:.4g}"),
        ("achieved TFLOP/s", f"{r['achieved_tflops']:.4g}"),
        ("peak TFLOP/s (measured)", f"{r['peak_tflops']:.4g} ({r['peak_measured_with']})"),
        ("MFU", f"{100 * r['mfu']:.1f}%"),
        ("peak memory", r["peak_memory"]),
        ("final val loss", f"{r['final_val_loss']:.4f}"),
    ]
    return "\n".join(["| quantity | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="arguments after -- go to train_gpt.py as --key=value overrides")
    parser.add_argument("--preset", default="speedrun124m", help="train_gpt.py preset")
    parser.add_argument("--steps", type=int, default=50, help="training steps")
    parser.add_argument("--warmup_steps", type=int, default=10, help="first steps left out of ms per step")
    parser.add_argument("--nproc", type=int, default=0, help="run under torchrun with this many processes (0: plain python)")
    parser.add_argument("--log_dir", help="keep the run's logs here (default: a temporary folder, deleted)")
    parser.add_argument("--out", help="also write the JSON figures to this file")
    args = parser.parse_args(argv[:split])
    overrides = argv[split + 1:]
    taken = [a for a in overrides if a.lstrip("-").partition("=")[0] in SET_HERE]
    if taken:
        parser.error(f"{' '.join(taken)}: set by this script (use --steps for num_iterations, --log_dir for logs)")
    if not 0 <= args.warmup_steps < args.steps:
        parser.error(f"need 0 <= --warmup_steps < --steps, got {args.warmup_steps} and {args.steps}")
    try:
        cfg, _, _ = parse_args([f"--preset={args.preset}", *overrides], torch.cuda.is_available())
    except ConfigError as e:
        parser.error(str(e))
    if args.log_dir:
        if (Path(args.log_dir) / f"{RUN_ID}.txt").exists():
            parser.error(f"{args.log_dir} holds an earlier {RUN_ID} run already; give an empty folder")
        result = measure(args, overrides, cfg, Path(args.log_dir).resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="throughput-") as folder:
            result = measure(args, overrides, cfg, Path(folder))
    print(table(result))
    print(json.dumps(result))
    if args.out:
        atomic_write(args.out, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
