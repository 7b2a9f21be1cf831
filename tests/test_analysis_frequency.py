"""analysis/frequency.py: frequency buckets by hand, and per-bucket losses that add up to the logged val loss."""
import json

import numpy as np
import pytest

import trainer
from analysis import frequency


def test_buckets_split_the_training_text_by_cumulative_share():
    counts = np.array([5, 30, 0, 10, 50, 5])  # most frequent first: ids 4, 1, 3, 0, 5 (shares 0, .5, .8, .9, .95)
    assert frequency.buckets(counts, 2).tolist() == [1, 1, 2, 1, 0, 1]
    assert frequency.buckets(counts, 4).tolist() == [3, 2, 4, 3, 0, 3]
    assert frequency.bucket_names(4, True) == ["0–25%", "25–50%", "50–75%", "75–100%", "unseen"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir, _, summary = trainer.checkpointed_run(tmp_path_factory.mktemp("frequency"), "f", "--checkpoint_every=3")
    return run_dir, summary


def test_bucket_losses_average_to_the_logged_val_loss(run, tmp_path, capsys):
    run_dir, summary = run
    result = frequency.analyse([str(run_dir), str(run_dir / "step_000000")], k=3, labels=["end", "init"])
    assert result["val_tokens"] == 2048 and sum(result["val_share"]) == pytest.approx(1.0)
    for label, logged in (("end", summary["final_val_loss"]), ("init", summary["val_history"][0][1])):
        run_result = result["runs"][label]
        assert run_result["overall"] == pytest.approx(logged, abs=1e-4)
        weighted = sum(s * loss for s, loss in zip(result["val_share"], run_result["loss"]) if loss is not None)
        assert weighted == pytest.approx(run_result["overall"], rel=1e-5)
    assert sum(result["train_share"][:3]) == pytest.approx(1.0)
    out = tmp_path / "out"
    assert frequency.main([str(run_dir), "--buckets=3", "--labels=end", f"--out={out}"]) == 0
    assert "| all |" in capsys.readouterr().out
    assert json.loads((out / "frequency.json").read_text())["buckets"][:3] == ["0–33%", "33–66%", "66–100%"]
    assert (out / "frequency.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):
        frequency.main([str(run_dir), "--labels=a,b"])
