"""The edges of resuming and failing: a restart before any finished checkpoint, resuming from an older
checkpoint (a new branch), corrupt checkpoints, another optimizer under --force_resume, run ids that
would escape their folders, non-finite weights at a checkpoint, and a full disk."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

import train_gpt
from data.atomic import DiskFullError, atomic_write
from runtime import checkpoint as ckpt
from runtime.config import ConfigError
from runtime.distributed import Dist
from tests.trainer import ROOT, SMALL, logs, losses, run

RUN = [*SMALL, "--num_iterations=6", "--val_every=3", "--checkpoint_every=3"]
SOLO = Dist(0, 0, 1, torch.device("cpu"))
PATCHED = """
import os, signal, sys
import torch
import train_gpt
{patch}
sys.exit(train_gpt.main(sys.argv[1:]))
"""


def dirs(tmp_path):
    return [f"--log_dir={tmp_path / 'logs'}", f"--checkpoint_dir={tmp_path / 'ckpt'}"]


def run_patched(patch: str, args: list[str]) -> subprocess.CompletedProcess:
    """The trainer with `patch` (Python) applied first: a fault injected at a chosen point."""
    return subprocess.run([sys.executable, "-c", PATCHED.format(patch=patch), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})


def one_line_error(result) -> str:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


DIE_IN_FIRST_SAVE = """
def die(state, f, *args, **kwargs):
    f.write(b"half a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = die
"""


def test_auto_restart_before_any_finished_checkpoint_starts_fresh(tmp_path):
    killed = run_patched(DIE_IN_FIRST_SAVE, [*RUN, *dirs(tmp_path), "--run_id=early"])
    assert killed.returncode == -9
    assert (tmp_path / "logs" / "early.txt").exists() and ckpt.latest_checkpoint(tmp_path / "ckpt" / "early") is None
    result = run([*RUN, *dirs(tmp_path), "--run_id=early", "--resume=auto"])
    assert result.returncode == 0, result.stderr
    assert "# no checkpoint of run early to resume: its earlier log moved to" in result.stdout
    text, summary = logs(tmp_path / "logs", "early")
    assert [s for s, _ in losses(text, "train_loss")] == [1, 2, 3, 4, 5, 6] and summary["status"] == "complete"
    aside = list((tmp_path / "logs").glob("superseded-*/early.txt"))
    assert len(aside) == 1 and "step:1/6" not in aside[0].read_text()


KILL_BEFORE_STEP_17 = """
real_step = train_gpt.Trainer.train_step
def killed(self, step, *args, **kwargs):
    if step + 1 == 17:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_step(self, step, *args, **kwargs)
train_gpt.Trainer.train_step = killed
"""


def test_resuming_an_older_checkpoint_starts_a_branch_that_auto_then_follows(tmp_path):
    args = [*SMALL, "--num_iterations=40", "--val_every=10", "--checkpoint_every=5", "--keep_checkpoints=3",
            *dirs(tmp_path), "--run_id=b"]
    first = run(args)
    assert first.returncode == 0, first.stderr
    run_dir = tmp_path / "ckpt" / "b"
    assert [p.name for p in ckpt.checkpoints(run_dir)] == ["step_000000", "step_000030", "step_000035", "step_000040"]
    reference = losses(logs(tmp_path / "logs", "b")[0], "train_loss")

    killed = run_patched(KILL_BEFORE_STEP_17, [*args, f"--resume={run_dir / 'step_000000'}"])
    assert killed.returncode == -9
    assert "starts a new branch: the later checkpoint(s) step_000030, step_000035, step_000040 moved to" \
        in killed.stdout
    assert [p.name for p in ckpt.checkpoints(run_dir)] == ["step_000000", "step_000005", "step_000010", "step_000015"]
    assert sorted(p.name for p in run_dir.glob("superseded-*/step_*")) == ["step_000030", "step_000035", "step_000040"]

    resumed = run([*args, "--resume=auto"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"# resumed from {run_dir / 'step_000015'} at step 15" in resumed.stdout
    text, summary = logs(tmp_path / "logs", "b")
    assert losses(text, "train_loss") == reference  # all 40 step lines, the same losses digit for digit
    assert summary["status"] == "complete" and summary["steps"] == 40


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A SMALL run with checkpoints at steps 0, 3 and 6; tests copy it before changing anything."""
    root = tmp_path_factory.mktemp("finished")
    result = run([*RUN, *dirs(root), "--run_id=f"])
    assert result.returncode == 0, result.stderr
    return root


def copy_of(finished, tmp_path):
    shutil.copytree(finished, tmp_path, dirs_exist_ok=True)
    return tmp_path / "ckpt" / "f"


CORRUPTIONS = {
    "truncated": lambda data: data[: len(data) // 2],
    "zero bytes": lambda data: b"",
    "random bytes": lambda data: os.urandom(len(data)),
    "not a torch file": lambda data: b"step:1/6 train_loss:1.0 train_time:1ms step_avg:1.00ms\n",
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_a_corrupt_checkpoint_is_named_with_an_older_intact_one(finished, tmp_path, kind):
    run_dir = copy_of(finished, tmp_path)
    bad = run_dir / "step_000006" / "rank0.pt"
    bad.write_bytes(CORRUPTIONS[kind](bad.read_bytes()))
    state = torch.load(run_dir / "step_000003" / "rank0.pt", weights_only=False)
    cfg = train_gpt.Config(**state["config"])
    with pytest.raises(ConfigError) as refused:
        ckpt.load_resume(run_dir / "step_000006", cfg, state["file_hashes"], SOLO)
    message = str(refused.value)
    assert message.startswith(f"{bad} cannot be read as a checkpoint (")
    assert f"the newest older checkpoint that looks intact is {run_dir / 'step_000003'}" in message
    assert "\n" not in message


def test_a_corrupt_newest_checkpoint_under_auto_stops_with_one_line(finished, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    bad = run_dir / "step_000006" / "rank0.pt"
    bad.write_bytes(bad.read_bytes()[:1000])
    line = one_line_error(run([*RUN, *dirs(tmp_path), "--run_id=f", "--resume=auto"]))
    assert f"{bad} cannot be read as a checkpoint" in line and f"--resume={run_dir / 'step_000003'}" in line


def test_force_resume_with_another_hidden_optimizer_starts_its_state_fresh(finished, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    result = run([*RUN, *dirs(tmp_path), "--run_id=f", f"--resume={run_dir / 'step_000003'}", "--force_resume",
                  "--opt_hidden=adamw"])
    assert result.returncode == 0, result.stderr
    assert "# the checkpoint holds no state of AdamW(hidden) (another optimizer): started fresh" in result.stdout
    text, summary = logs(tmp_path / "logs", "f")
    assert [s for s, _ in losses(text, "train_loss")] == [1, 2, 3, 4, 5, 6] and summary["status"] == "complete"


@pytest.mark.parametrize("run_id", ["a/b", "../../escape", ".hidden", "a b", "x" * 129])
def test_run_ids_that_are_not_plain_names_are_refused(run_id):
    with pytest.raises(ConfigError, match=r"--run_id=.* is out of range: it must be empty \(a generated id\) or"):
        train_gpt.parse_args(["--preset=tiny", f"--run_id={run_id}"], cuda=False)


def test_an_escaping_run_id_stops_before_anything_is_written(tmp_path):
    logs_dir, ckpt_dir = tmp_path / "a" / "logs", tmp_path / "a" / "ckpt"
    line = one_line_error(run([*RUN, f"--log_dir={logs_dir}", f"--checkpoint_dir={ckpt_dir}",
                               "--run_id=../../escape"]))
    assert line.startswith("error: --run_id='../../escape' is out of range")
    assert list(tmp_path.rglob("*")) == []


POISON_AFTER_STEP_1 = """
real_step = train_gpt.Trainer.train_step
def poisoned(self, step, *args, **kwargs):
    result = real_step(self, step, *args, **kwargs)
    if step == 0:  # the loss of step 1 was finite; its update is not
        with torch.no_grad():
            next(self.model.parameters()).fill_(float("nan"))
    return result
train_gpt.Trainer.train_step = poisoned
"""


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    result = run_patched(POISON_AFTER_STEP_1, [*RUN, *dirs(tmp_path), "--run_id=w", "--checkpoint_every=1"])
    assert result.returncode == 3, result.stderr
    run_dir = tmp_path / "ckpt" / "w"
    assert "# step:1 non-finite weights: no checkpoint written" in result.stdout
    assert f"# stopping; last good checkpoint: {run_dir / 'step_000000'}" in result.stdout
    assert [p.name for p in ckpt.checkpoints(run_dir)] == ["step_000000"]
    assert logs(tmp_path / "logs", "w")[1]["status"] == "diverged"


def test_a_checkpoint_that_does_not_fit_names_the_file_and_keeps_the_previous_one(finished, tmp_path, monkeypatch):
    run_dir = copy_of(finished, tmp_path)
    state = torch.load(run_dir / "step_000006" / "rank0.pt", weights_only=False)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(DiskFullError) as full:
        ckpt.save_checkpoint(run_dir, 9, state, SOLO, keep=3)
    needed = ckpt.state_bytes(state)
    assert str(full.value) == (f"no space left on the device for {run_dir / '.tmp-step_000009' / 'rank0.pt'}: it "
                               f"needs at least {needed:,} bytes and 1,000 are free; free some space (earlier files "
                               f"are intact)")
    assert [p.name for p in ckpt.checkpoints(run_dir)] == ["step_000000", "step_000003", "step_000006"]
    assert torch.load(run_dir / "step_000006" / "rank0.pt", weights_only=False)["step"] == 6


def test_a_full_disk_under_atomic_write_names_the_file_and_the_bytes(tmp_path, monkeypatch):
    target = tmp_path / "run.txt"
    target.write_text("the previous log\n")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(DiskFullError, match=rf"for {target}: it needs 5,000 bytes and [\d,]+ are free"):
        atomic_write(target, "x" * 5000)
    assert target.read_text() == "the previous log\n" and [p.name for p in tmp_path.iterdir()] == ["run.txt"]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (root only; skipped elsewhere)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_stops_the_trainer_with_one_line(small_tmpfs, tmp_path):
    # the step-0 checkpoint (weights only) is about 0.6 MB; the next one, with optimizer state, 1.3 MB
    result = run([*RUN, f"--log_dir={tmp_path / 'logs'}", f"--checkpoint_dir={small_tmpfs}",
                  "--run_id=full"])
    line = one_line_error(result)
    assert line.startswith(f"error: no space left on the device for {small_tmpfs / 'full' / '.tmp-step_000003'}")
    assert "bytes and" in line and "are free" in line
    assert torch.load(small_tmpfs / "full" / "step_000000" / "rank0.pt", weights_only=False)["step"] == 0
    text, summary = logs(tmp_path / "logs", "full")
    assert summary["status"] == "running" and [s for s, _ in losses(text, "train_loss")] == [1, 2, 3]
