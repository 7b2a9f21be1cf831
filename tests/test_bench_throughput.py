"""bench/throughput.py: the FLOP count, the step-line reader, and one real (tiny) run on the CPU."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import train_gpt
from bench.throughput import flops_per_token, matmul_params, step_stats, train_times
from tests.trainer import SMALL

ROOT = Path(__file__).resolve().parents[1]
RULE = "=" * 100 + "\n"
# SMALL without the keys the benchmark sets itself
TINY = [a for a in SMALL if not a.startswith(("--preset", "--num_iterations", "--val_every"))]


def config(**overrides):
    return train_gpt.Config(**{**train_gpt.PRESETS["tiny"], **overrides})


def test_flops_match_a_hand_count():
    cfg = config(n_layer=2, model_dim=64, n_head=2, seq_len=64, vocab_size=320)
    per_layer = 64 * 192 + 64 * 64 + 64 * 256 + 256 * 64  # qkv, attention out, MLP in, MLP out
    n_matmul = 2 * per_layer + 320 * 64  # and the head
    assert matmul_params(cfg) == n_matmul == 118_784
    assert flops_per_token(cfg) == 6 * n_matmul + 6 * 2 * 64 * 64  # causal attention: 6·L·d·s
    # a tied head is still a matmul; biases, norms and learned positions are not counted
    classic = dict(untied_head=False, bias=True, rmsnorm=False, rotary=False)
    assert matmul_params(config(n_layer=2, model_dim=64, n_head=2, seq_len=64, vocab_size=320, **classic)) == n_matmul
    speedrun = train_gpt.Config()
    assert matmul_params(speedrun) == 12 * 12 * 768 ** 2 + 50304 * 768 == 123_568_128
    assert flops_per_token(speedrun) == 6 * 123_568_128 + 6 * 12 * 768 * 1024


def synthetic_log(times, fake_header_line=True):
    header = f"{RULE}# train_gpt.py\n{RULE}"
    if fake_header_line:  # a step line inside the embedded sources must not be read
        header += "step:1/9 train_loss:1.0 train_time:99999ms step_avg:1.00ms\n"
    lines = [f"step:0/{len(times)} val_loss:5.0000 train_time:0ms step_avg:0.00ms"]
    lines += [f"step:{k}/{len(times)} train_loss:3.0000 train_time:{t}ms step_avg:{t / k:.2f}ms"
              for k, t in enumerate(times, 1)]
    lines.append(f"step:{len(times)}/{len(times)} val_loss:2.5000 train_time:{times[-1]}ms step_avg:1.00ms")
    return f"{header}{RULE}# environment\n{{}}\n{RULE}" + "\n".join(lines) + "\npeak memory (max RSS): 1 MiB\n"


def test_step_lines_and_stats():
    times = [900, 1000, 1110, 1210, 1330, 1430]  # steps 2..6 take 100, 110, 100, 120, 100 ms
    assert train_times(synthetic_log(times)) == times
    stats = step_stats(times, warmup=1)
    assert stats == {"first_step_ms": 900, "median_step_ms": 100, "mean_step_ms": (1430 - 900) / 5}
    assert step_stats(times, warmup=0)["mean_step_ms"] == 1430 / 6
    assert step_stats(times, warmup=2)["median_step_ms"] == 105  # steps 3..6: 110, 100, 120, 100
    with pytest.raises(ValueError, match="warmup_steps"):
        step_stats(times, warmup=6)
    gap = synthetic_log(times, fake_header_line=False).replace("step:3/6 train_loss", "step:33/6 train_loss")
    with pytest.raises(ValueError, match="expected 1, 2, 3"):
        train_times(gap)


def bench(tmp_path, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "bench/throughput.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=120)


def test_refuses_keys_it_sets(tmp_path):
    done = bench(tmp_path, "--preset=tiny", "--", "--num_iterations=3")
    assert done.returncode == 2 and "--steps" in done.stderr and done.stdout == ""


def test_tiny_cpu_run_reports_what_the_log_says(tmp_path):
    steps, warmup = 8, 2
    done = bench(tmp_path, "--preset=tiny", f"--steps={steps}", f"--warmup_steps={warmup}",
                 f"--log_dir={tmp_path / 'logs'}", f"--out={tmp_path / 'out.json'}", "--", *TINY)
    assert done.returncode == 0, done.stderr
    table, json_line = done.stdout.rstrip("\n").rsplit("\n", 1)
    result = json.loads(json_line)
    assert json.loads((tmp_path / "out.json").read_text()) == result
    rows = dict(re.findall(r"^\| (.+?) \| (.+?) \|$", table, re.M))

    # recompute tokens/s from the run's own log
    log = (tmp_path / "logs" / "throughput.txt").read_text()
    summary = json.loads((tmp_path / "logs" / "throughput.json").read_text())
    train = {int(k): int(t) for k, t in re.findall(r"^step:(\d+)/\d+ train_loss:\S+ train_time:(\d+)ms", log, re.M)}
    assert sorted(train) == list(range(1, steps + 1))
    tokens_per_s = 1024 * (steps - warmup) / ((train[steps] - train[warmup]) / 1000)
    assert float(rows["tokens/s"].replace(",", "")) == pytest.approx(tokens_per_s, abs=0.5)
    assert rows["compile + first step"] == f"{train[1]} ms"
    assert rows["final val loss"] == f"{summary['final_val_loss']:.4f}"
    assert rows["device"].startswith(summary["hardware"]["device"])
    assert rows["peak memory"] == summary["peak_memory"]
    assert "float32 2048³ torch.mm, 1 thread(s)" in rows["peak TFLOP/s (measured)"]
    assert result["flops_per_token"] == flops_per_token(train_gpt.parse_args(["--preset=tiny", *TINY], False)[0])
    assert 0 < result["mfu"] == pytest.approx(result["achieved_tflops"] / result["peak_tflops"])
