"""bench/gpu_check.py without a GPU: its --dry-run takes the same path on CPU at a tiny shape."""
import json
import subprocess
import sys

from tests.trainer import ROOT


def test_dry_run_writes_the_report_as_markdown_and_json(tmp_path):
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run", f"--out={tmp_path}", "--steps=4"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    trainer = report["trainer"]
    assert trainer["status"] == "ok" and trainer["steps"] == 4 and trainer["mean_step_ms"] > 0
    assert trainer["tokens_per_s"] > 0 and 0 < trainer["mfu"] < 1 and trainer["warmup_s"] is not None
    assert "parameters" in trainer["footprint_estimate"] and "peak memory" in trainer["peak_memory"]
    assert report["kernels"]["status"].startswith("skipped") and report["public"]["status"] == "skipped"
    assert report["synthetic_data"] and report["device"]["device"].startswith("cpu")
    text = (tmp_path / "gpu_check.md").read_text()
    assert text.startswith("# GPU check — cpu") and "mean_step_ms" in text and "random tokens" in text


def test_without_a_gpu_it_says_so(tmp_path):
    done = subprocess.run([sys.executable, "bench/gpu_check.py", f"--out={tmp_path}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "no CUDA device" in done.stderr and not list(tmp_path.iterdir())
