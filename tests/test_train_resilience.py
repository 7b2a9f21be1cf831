"""Training that survives: exact resume after SIGKILL, kills mid-checkpoint, SIGTERM, torchrun
restarts, the NaN guard, and one clear error per bad input."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train_gpt
from data.atomic import atomic_write
from data.shards import write_shard
from runtime.checkpoint import latest_checkpoint, load_resume
from runtime.distributed import Dist
from tests.trainer import ROOT, SMALL, logs, losses, read_until, run, start

RUN = [*SMALL, "--num_iterations=9", "--val_every=3", "--checkpoint_every=3"]


def dirs(tmp_path):
    return [f"--log_dir={tmp_path / 'logs'}", f"--checkpoint_dir={tmp_path / 'ckpt'}"]


def trajectory(tmp_path, run_id):
    text, summary = logs(tmp_path / "logs", run_id)
    return losses(text, "train_loss"), losses(text, "val_loss"), summary


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("reference")
    result = run([*RUN, *dirs(tmp_path), "--run_id=ref"])
    assert result.returncode == 0, result.stderr
    return trajectory(tmp_path, "ref")


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, uninterrupted):
    process = start([*RUN, *dirs(tmp_path), "--run_id=k"])
    read_until(process, "# checkpoint step 6")
    process.kill()
    process.wait()
    assert trajectory(tmp_path, "k")[2]["status"] == "running"
    result = run([*RUN, *dirs(tmp_path), "--run_id=k", "--resume=auto"])
    assert result.returncode == 0, result.stderr
    assert "# resumed from" in result.stdout and "at step 6" in result.stdout
    train, val, summary = trajectory(tmp_path, "k")
    assert (train, val) == uninterrupted[:2]  # every printed digit
    assert summary["final_val_loss"] == uninterrupted[2]["final_val_loss"] and summary["status"] == "complete"
    assert summary["resumed"][0]["step"] == 6


DIE_MID_SAVE = """
import os, signal, sys, torch
sys.path.insert(0, os.getcwd())
import train_gpt
real_save = torch.save
def save_then_die(state, f, *args, **kwargs):
    if state["step"] == 6:
        f.write(b"half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(state, f, *args, **kwargs)
torch.save = save_then_die
sys.exit(train_gpt.main(sys.argv[1:]))
"""


def test_kill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path, uninterrupted):
    result = subprocess.run([sys.executable, "-c", DIE_MID_SAVE, *RUN, *dirs(tmp_path), "--run_id=w"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL
    run_dir = tmp_path / "ckpt" / "w"
    assert (run_dir / ".tmp-step_000006").is_dir()
    assert latest_checkpoint(run_dir) == run_dir / "step_000003"
    state = torch.load(run_dir / "step_000003" / "rank0.pt", weights_only=False)
    assert state["step"] == 3
    resumed = run([*RUN, *dirs(tmp_path), "--run_id=w", "--resume=auto"])
    assert resumed.returncode == 0 and "at step 3" in resumed.stdout, resumed.stderr
    assert trajectory(tmp_path, "w")[:2] == uninterrupted[:2]


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path, uninterrupted):
    process = start([*RUN, *dirs(tmp_path), "--run_id=t", "--checkpoint_every=0"])
    read_until(process, "step:2/9 train_loss")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM and "Traceback" not in err
    assert "# stopped by SIGTERM at step" in out and "--resume=auto" in out
    summary = trajectory(tmp_path, "t")[2]
    assert summary["status"] == "preempted"
    assert latest_checkpoint(tmp_path / "ckpt" / "t").name == f"step_{summary['steps']:06d}"
    result = run([*RUN, *dirs(tmp_path), "--run_id=t", "--resume=auto", "--checkpoint_every=0"])
    assert result.returncode == 0, result.stderr
    assert trajectory(tmp_path, "t")[:2] == uninterrupted[:2]


def worker_pids(parent: int) -> list[int]:
    """Processes whose parent is `parent` (Linux /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def test_torchrun_restart_resumes_automatically(tmp_path, uninterrupted):
    args = [*RUN, *dirs(tmp_path), "--run_id=r", "--micro_batch_tokens=512"]
    process = start(args, nproc=2)
    read_until(process, "# checkpoint step 3")
    workers = worker_pids(process.pid)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, out + err
    assert "# resumed from" in out
    train, val, summary = trajectory(tmp_path, "r")
    assert summary["status"] == "complete" and summary["hardware"]["world_size"] == 2
    for (s, a), (s_ref, b) in zip(train + val, uninterrupted[0] + uninterrupted[1], strict=True):
        assert s == s_ref and abs(a - b) <= 2e-4  # 2 ranks vs 1: summation order only


def test_nan_stops_with_last_good_checkpoint_intact(tmp_path):
    result = run([*RUN, *dirs(tmp_path), "--run_id=n", "--inject_nan_step=5"])
    assert result.returncode == 3
    assert "step:5 non-finite train loss nan" in result.stdout
    assert f"last good checkpoint: {tmp_path / 'ckpt' / 'n' / 'step_000003'}" in result.stdout
    assert latest_checkpoint(tmp_path / "ckpt" / "n").name == "step_000003"
    assert trajectory(tmp_path, "n")[2]["status"] == "diverged"


def test_nan_skip_policy_drops_the_update_and_continues(tmp_path):
    result = run([*RUN, *dirs(tmp_path), "--run_id=s", "--inject_nan_step=5", "--nan_policy=skip"])
    assert result.returncode == 0, result.stderr
    assert "update skipped" in result.stdout
    train, val, summary = trajectory(tmp_path, "s")
    assert summary["status"] == "complete" and np.isfinite(val[-1][1]) and len(train) == 9


def error_of(args):
    result = run(args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    return result.stderr.strip()


def test_missing_shards_say_how_to_download(tmp_path):
    message = error_of(["--preset=speedrun124m", "--device=cpu", "--train_files=/nonexistent/fineweb_train_*.bin",
                        *dirs(tmp_path)])
    assert "no training shards match /nonexistent/fineweb_train_*.bin" in message
    assert "python data/cached_fineweb10B.py 25" in message


def test_malformed_shard(tmp_path):
    bad = tmp_path / "bad_000000.bin"
    bad.write_bytes(np.zeros(300, dtype="<i4").tobytes())
    message = error_of([*SMALL, f"--train_files={bad}", *dirs(tmp_path)])
    assert str(bad) in message and "wrong magic number 0" in message


def test_vocab_smaller_than_data(tmp_path):
    shard = write_shard(tmp_path / "v_000000.bin", np.arange(1000) % 300)
    message = error_of([*SMALL, f"--train_files={shard}", "--vocab_size=256", *dirs(tmp_path)])
    assert "token id 299 is >= vocab size 256" in message


@pytest.mark.parametrize("which", ["log", "checkpoint"])
def test_unwritable_directories(tmp_path, which):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    message = error_of([*SMALL, *dirs(tmp_path), f"--{which}_dir={blocker / 'sub'}"])
    assert f"cannot write the {which} directory {blocker / 'sub'}" in message


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("finished")
    assert run([*RUN, *dirs(tmp_path), "--run_id=f", "--num_iterations=3"]).returncode == 0
    return tmp_path


def test_checkpoint_from_another_model_shape(finished):
    message = error_of([*RUN, *dirs(finished), "--run_id=f", "--num_iterations=3", "--resume=auto", "--n_layer=3"])
    assert "holds another model shape (n_layer: 2 in checkpoint, 3 now)" in message


def test_changed_config_refused_unless_forced(finished):
    args = [*RUN, *dirs(finished), "--run_id=f", "--num_iterations=3", "--lr_hidden=0.04"]
    message = error_of([*args, f"--resume={finished / 'ckpt' / 'f' / 'step_000003'}"])
    assert "refusing to resume" in message and "lr_hidden: 0.05 → 0.04" in message and "--force_resume" in message


def test_changed_code_is_named(finished):
    checkpoint = finished / "ckpt" / "f" / "step_000003"
    state = torch.load(checkpoint / "rank0.pt", weights_only=False)
    cfg = train_gpt.Config(**state["config"])
    solo = Dist(0, 0, 1, torch.device("cpu"))
    edited = {**state["file_hashes"], "train_gpt.py": "0" * 64}
    with pytest.raises(train_gpt.ConfigError, match=r"code changed in train_gpt.py\. Pass --force_resume"):
        load_resume(checkpoint, cfg, edited, solo)
    cfg.force_resume = True
    assert load_resume(checkpoint, cfg, edited, solo)["step"] == 3


def test_atomic_write_never_truncates(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text(json.dumps({"final_val_loss": 3.27}))
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, "{}")
    assert json.loads(target.read_text()) == {"final_val_loss": 3.27}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_run_needing_more_tokens_than_the_shards_hold_stops_first(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards / "x_train_000001.bin", np.arange(3000, dtype=np.uint16) % 256)
    write_shard(shards / "x_val_000000.bin", np.arange(3000, dtype=np.uint16) % 256)
    data = [f"--train_files={shards}/x_train_*.bin", f"--val_files={shards}/x_val_*.bin", "--val_tokens=1024",
            f"--log_dir={tmp_path}", "--reuse_data=false"]
    message = error_of([*SMALL, *data, "--num_iterations=3"])
    assert message == ("error: the run needs 3,073 training tokens but the 1 shard(s) hold 3,000: get 1 more shard(s) "
                       "of 3,000 tokens, or pass --reuse_data to read them again")
    assert not any(tmp_path.glob("*.txt")), "nothing is started before the data check"
    assert run([*SMALL, *data, "--num_iterations=3", "--reuse_data=true", "--run_id=again"]).returncode == 0
