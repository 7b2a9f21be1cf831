"""One GPU check: everything a GPU can show about this repo, in one command of a few minutes.

    python bench/gpu_check.py [--speedrun PATH] [--out docs/gpu_check] [--steps 40]
    python bench/gpu_check.py --dry-run            # the same path on CPU at the tiny shape (the tests run it)

It prints, and writes as Markdown and JSON under --out:
1. the device (name, memory, capability) and the versions of torch, triton and CUDA;
2. the kernel benchmarks in quick mode (bench/kernel_speed.py --quick; CUDA only);
3. the 124M preset (speedrun124m) for --steps steps on one device through bench/throughput.py: ms per
   step, tokens/s, model FLOPs and MFU against a measured matmul peak, the untimed warmup (compilation
   and autotuning) as the trainer reports it, and the measured peak memory beside the footprint estimate
   of analysis/footprint.py. Without FineWeb shards in data/fineweb10B it generates random-token shards
   (timing does not depend on the tokens; the loss does, so it is not reported as a result);
4. with --speedrun PATH (a local checkout of the public speedrun) and --record N: that record's own
   trainer (bench/parity.py extracts it from the record's log) on the same shards, as it is, on one GPU
   (its own batch: it reaches the 8-GPU batch by accumulation, as ours does), its step_avg after
   --public_timeout seconds.
Each part that fails is reported as failed with its error; the others still run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench import parity
from data.atomic import atomic_write
from data.shards import write_shard

ROOT = Path(__file__).resolve().parents[1]
FINEWEB = ROOT / "data" / "fineweb10B"


def device_facts(cuda: bool) -> dict:
    facts = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
             "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    try:
        import triton  # optional: not built for every platform
        facts["triton"] = triton.__version__
    except ImportError:
        facts["triton"] = None
    if cuda:
        props = torch.cuda.get_device_properties(0)
        facts.update(device=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                     capability=f"{props.major}.{props.minor}", device_count=torch.cuda.device_count())
    else:
        facts.update(device=f"cpu ({platform.processor() or platform.machine()})", memory_gib=None, capability=None,
                     device_count=0)
    return facts


def run(command: list[str], timeout: float) -> tuple[int, str, float]:
    """(exit status, stdout + stderr, seconds) of a command run from the repository root."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout + done.stderr, time.perf_counter() - t0
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return 124, out + f"\n(timed out after {timeout:.0f} s)", time.perf_counter() - t0


def synthetic_shards(folder: Path, tokens: int, vocab: int, seed: int = 0) -> tuple[str, str]:
    """Random-token train/val shards (for timing only), returned as (train, val) globs."""
    rng = np.random.default_rng(seed)
    write_shard(folder / "synthetic_val_000000.bin", rng.integers(0, vocab, 1 << 20, dtype=np.uint16))
    write_shard(folder / "synthetic_train_000001.bin", rng.integers(0, vocab, tokens, dtype=np.uint16))
    return str(folder / "synthetic_train_*.bin"), str(folder / "synthetic_val_*.bin")


def kernel_part(args) -> dict:
    if args.dry_run:
        return {"status": "skipped", "why": "--dry-run (the kernel benchmarks need CUDA)"}
    code, out, seconds = run([sys.executable, "bench/kernel_speed.py", "--quick"], timeout=args.kernel_timeout)
    return {"status": "ok" if code == 0 else f"failed (exit {code})", "seconds": round(seconds, 1), "output": out}


def trainer_part(args, data: tuple[str, str], shape: list[str]) -> dict:
    json_out = Path(args.workdir) / "throughput.json"
    overrides = [f"--train_files={data[0]}", f"--val_files={data[1]}", f"--val_tokens={args.val_tokens}",
                 "--reuse_data=true", f"--warmup_steps={args.trainer_warmup}", *shape]
    command = [sys.executable, "bench/throughput.py", f"--preset={args.preset}", f"--steps={args.steps}",
               f"--warmup_steps={min(5, args.steps - 1)}", f"--out={json_out}", f"--log_dir={Path(args.workdir) / 'logs'}",
               "--", *overrides]
    code, out, seconds = run(command, timeout=args.trainer_timeout)
    result = {"status": "ok" if code == 0 and json_out.exists() else f"failed (exit {code})",
              "command": shlex.join(["python", *command[1:]]), "seconds": round(seconds, 1)}
    if json_out.exists():
        result.update(json.loads(json_out.read_text()))
    warmup = re.search(r"# warmup: (\d+) untimed step\(s\) in ([\d.]+)s", out)
    result["warmup_s"] = float(warmup.group(2)) if warmup else None
    if result["status"] != "ok":
        result["output_tail"] = out[-3000:]
    sizes = dict(a.lstrip("-").split("=") for a in shape)
    footprint = [f"--{k}={sizes[k]}" for k in ("n_layer", "model_dim", "n_head", "seq_len", "vocab_size") if k in sizes]
    if "micro_batch_tokens" in sizes:
        footprint.append(f"--micro_batch={int(sizes['micro_batch_tokens']) // int(sizes['seq_len'])}")
    code, out, _ = run([sys.executable, "-m", "analysis.footprint", f"--preset={args.preset}", *footprint,
                        f"--precision={'fp32' if args.dry_run else 'autocast'}"], timeout=120)
    result["footprint_estimate"] = out.strip() if code == 0 else f"failed (exit {code}): {out[-500:]}"
    return result


def public_part(args, data: tuple[str, str]) -> dict:
    """The record's own script (extracted from its log) on this GPU, as it is, for --public_timeout seconds: its
    data folder is linked to our shards, and its last printed step_avg is the figure."""
    if not args.speedrun:
        return {"status": "skipped", "why": "no --speedrun PATH given"}
    try:
        log = parity.find_log(str(args.record), Path(args.speedrun))
        files = parity.extract(log.read_text(errors="replace"), str(log))
    except (parity.ParityError, OSError) as e:
        return {"status": f"failed: {e}"}
    work = Path(args.workdir) / "public"
    (work / "data").mkdir(parents=True)
    folder = Path(data[0]).parent
    (work / "data" / "fineweb10B").symlink_to(folder.resolve(), target_is_directory=True)
    for name, text in files.items():
        (work / name).write_text(text)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "train_gpt.py"]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=args.public_timeout)
        out, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as e:  # the script trains to its own end; its step_avg is read so far
        out, code = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace"), 124
    averages = re.findall(r"step:(\d+)/\d+ train_loss:\S+ train_time:\S+ step_avg:([\d.]+)ms", out)
    result = {"status": "ok" if averages else f"failed (exit {code})", "log": str(log),
              "command": f"torchrun --standalone --nproc_per_node=1 train_gpt.py (extracted; data/fineweb10B -> {folder})",
              "seconds": round(time.perf_counter() - t0, 1)}
    if averages:
        result.update(steps_seen=int(averages[-1][0]), ms_per_step=float(averages[-1][1]))
    else:
        result["output_tail"] = out[-3000:]
    return result


def markdown(report: dict) -> str:
    d, t = report["device"], report["trainer"]
    lines = [f"# GPU check — {d['device']} ({d['date']})", "", f"command: `{report['command']}`", "",
             "| fact | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in d.items()]
    lines += ["", "## Trainer: " + report["preset"], "", f"status: {t['status']}", ""]
    keys = ("trainer_command", "steps", "mean_step_ms", "median_step_ms", "tokens_per_s", "flops_per_token",
            "achieved_tflops", "peak_tflops", "mfu", "warmup_s", "peak_memory")
    lines += ["| quantity | value |", "|---|---|"] + [f"| {k} | {t[k]} |" for k in keys if k in t]
    lines += ["", "Footprint estimate (analysis/footprint.py):", "", "```", str(t.get("footprint_estimate")), "```"]
    k = report["kernels"]
    lines += ["", "## Kernels (bench/kernel_speed.py --quick)", "", f"status: {k['status']}"]
    if "output" in k:
        lines += ["", "```", k["output"].strip(), "```"]
    p = report["public"]
    lines += ["", "## The public record's trainer", "", f"status: {p['status']}"]
    lines += [f"- {key}: {value}" for key, value in p.items() if key not in ("status", "output_tail")]
    if report["synthetic_data"]:
        lines += ["", "The shards were random tokens (no FineWeb shards here): timings only, the loss means nothing."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/gpu_check", help="folder for gpu_check.md and gpu_check.json")
    parser.add_argument("--steps", type=int, default=40, help="training steps of the throughput run")
    parser.add_argument("--speedrun", help="a local checkout of the public speedrun, to time its trainer too")
    parser.add_argument("--record", type=int, default=8, help="the public record whose trainer to time")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shape, no kernel benchmarks: the tests' path")
    parser.add_argument("--kernel_timeout", type=float, default=120)
    parser.add_argument("--trainer_timeout", type=float, default=210)
    parser.add_argument("--public_timeout", type=float, default=120,
                        help="seconds the public trainer runs (it compiles, then trains until stopped)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        parser.error("no CUDA device: run on a GPU, or pass --dry-run to check the script on CPU")
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    args.preset = "speedrun124m"
    shape = [] if cuda else ["--n_layer=2", "--model_dim=64", "--n_head=2", "--seq_len=64", "--vocab_size=512",
                             "--global_batch_tokens=1024", "--micro_batch_tokens=1024", "--device=cpu"]
    args.val_tokens = 65536 * 8 if cuda else 1024
    args.trainer_warmup = 10 if cuda else 1
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as workdir:
        args.workdir = workdir
        real = sorted(FINEWEB.glob("fineweb_train_*.bin")) and sorted(FINEWEB.glob("fineweb_val_*.bin"))
        if real and cuda:
            data = str(FINEWEB / "fineweb_train_*.bin"), str(FINEWEB / "fineweb_val_*.bin")
        else:
            tokens = (args.steps + 20) * (8 * 64 * 1024 if cuda else 1024) + 1
            data = synthetic_shards(Path(workdir), tokens, 50257 if cuda else 512)
        report = {"command": shlex.join(["python", "bench/gpu_check.py", *argv]), "preset": args.preset,
                  "device": device_facts(cuda), "synthetic_data": not (real and cuda)}
        print(f"gpu_check: {report['device']['device']}", flush=True)
        report["trainer"] = trainer_part(args, data, shape)
        print(f"gpu_check: trainer {report['trainer']['status']}", flush=True)
        report["kernels"] = kernel_part(args)
        print(f"gpu_check: kernels {report['kernels']['status']}", flush=True)
        report["public"] = public_part(args, data)
        print(f"gpu_check: public trainer {report['public']['status']}", flush=True)
    text = markdown(report)
    out = Path(args.out)
    atomic_write(out / "gpu_check.md", text)
    atomic_write(out / "gpu_check.json", json.dumps(report, indent=1) + "\n")
    print(text)
    print(f"wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'}")
    return 0 if report["trainer"]["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
