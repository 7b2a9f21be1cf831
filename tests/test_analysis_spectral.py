"""analysis/spectral.py: statistics against numpy's SVD, and train_gpt.py --spectral_every on a SMALL run."""
import re

import numpy as np
import pytest
import torch

import trainer
from analysis import spectral

LINE = re.compile(r"^spectral:step:(\d+) name:(\S+) (.*)$")


@pytest.mark.parametrize("shape", [(8, 8), (20, 5), (5, 20), (64, 256)])
def test_stats_match_numpy_svd(shape, fresh_seed):
    w = torch.randn(shape, dtype=torch.float64) @ torch.diag(torch.linspace(0.1, 3, shape[1], dtype=torch.float64))
    s = np.linalg.svd(w.numpy(), compute_uv=False)
    p = s / s.sum()
    stats = spectral.spectral_stats(w)
    assert stats["sigma_max"] == pytest.approx(s[0], rel=1e-5)
    assert stats["sigma_min"] == pytest.approx(s[-1], rel=1e-4, abs=1e-6)
    assert stats["stable_rank"] == pytest.approx(np.linalg.norm(w.numpy()) ** 2 / np.linalg.norm(w.numpy(), 2) ** 2,
                                                 rel=1e-5)
    assert stats["effective_rank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-5)


def test_rank_one_and_zero_matrices():
    u, v = torch.randn(6, 1), torch.randn(1, 9)
    stats = spectral.spectral_stats(u @ v)
    assert stats["stable_rank"] == pytest.approx(1, rel=1e-5) and stats["sigma_min"] < 1e-5
    assert spectral.spectral_stats(torch.zeros(4, 3)) == dict.fromkeys(spectral.STATS, 0.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("spectral")
    _, text, summary = trainer.checkpointed_run(root, "s", "--spectral_every=2", "--checkpoint_every=1",
                                                "--keep_checkpoints=10")
    return root, text, summary


def test_run_logs_weight_and_update_stats_every_n_steps(run):
    root, text, summary = run
    lines = [LINE.match(line) for line in text.splitlines() if line.startswith("spectral:")]
    names = ["blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight", "blocks.0.mlp.fc.weight",
             "blocks.0.mlp.proj.weight", "blocks.1.attn.qkv.weight", "blocks.1.attn.proj.weight",
             "blocks.1.mlp.fc.weight", "blocks.1.mlp.proj.weight"]
    assert [(int(m[1]), m[2]) for m in lines] == [(step, name) for step in (2, 4, 6) for name in names]
    assert [s for s, _ in trainer.losses(text, "train_loss")] == [1, 2, 3, 4, 5, 6]  # step lines intact
    assert len(summary["spectral"]) == 24
    # step 4's entry against the checkpoints of steps 3 and 4
    w3, w4 = (torch.load(root / "ckpt" / "s" / f"step_00000{k}" / "rank0.pt", weights_only=False)["model"]
              for k in (3, 4))
    entry = next(e for e in summary["spectral"] if e["step"] == 4 and e["name"] == "blocks.1.mlp.fc.weight")
    weight, update = (spectral.spectral_stats(m) for m in (w4[entry["name"]], w4[entry["name"]] - w3[entry["name"]]))
    for key in spectral.STATS:
        assert entry[key] == pytest.approx(weight[key], rel=1e-4)
        assert entry[f"update_{key}"] == pytest.approx(update[key], rel=1e-3, abs=1e-7)
    assert entry["update_sigma_max"] > 0


def test_cli_plots_a_checkpoint(run, tmp_path, capsys):
    root, _, _ = run
    assert spectral.main([str(root / "ckpt" / "s"), f"--out={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "blocks.1.mlp.proj.weight" in out
    assert (tmp_path / "s_step000006_spectra.png").read_bytes().startswith(b"\x89PNG")


def test_negative_interval_is_rejected(tmp_path):
    done = trainer.run([*trainer.SMALL, "--spectral_every=-1", f"--log_dir={tmp_path}"])
    assert done.returncode == 2 and "--spectral_every=-1 is out of range" in done.stderr
