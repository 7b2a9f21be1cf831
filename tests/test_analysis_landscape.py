"""analysis/landscape.py on a SMALL trainer run with checkpoints: centre, shapes, files, direction norms."""
import numpy as np
import pytest
import torch

import trainer
from analysis import landscape as ls


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 6-step run checkpointed at steps 0, 3 and 6; returns (checkpoint run folder, summary)."""
    run_dir, _, summary = trainer.checkpointed_run(tmp_path_factory.mktemp("landscape"), "r", "--checkpoint_every=3")
    return run_dir, summary


def test_plane_centre_is_the_checkpoints_logged_loss(run, tmp_path):
    run_dir, summary = run
    npz, png = ls.landscape(run_dir, "plane", span=0.5, points=3, out=tmp_path)
    data = np.load(npz)
    assert data["loss"].shape == (3, 3) and list(data["axis1"]) == [-0.5, 0.0, 0.5]
    assert data["loss"][1, 1] == pytest.approx(summary["final_val_loss"], abs=1e-6)
    assert data["loss"].min() == data["loss"][1, 1]  # the trained weights sit in a valley of this plane
    assert png.read_bytes().startswith(b"\x89PNG") and npz.name == "r_step000006_plane.npz"


def test_interpolation_passes_through_both_checkpoints(run, tmp_path):
    run_dir, summary = run
    logged = dict((step, loss) for step, loss, _ in summary["val_history"])
    npz, png = ls.landscape(run_dir, "interpolate", points=5, out=tmp_path)
    data = np.load(npz)
    assert list(data["axis0"]) == [-0.5, 0.0, 0.5, 1.0, 1.5] and png.is_file()
    assert data["loss"][1] == pytest.approx(logged[0], abs=1e-4)  # logs keep 4 decimals
    assert data["loss"][3] == pytest.approx(logged[6], abs=1e-4)


def test_filtered_line_from_a_step_folder_through_the_cli(run, tmp_path, capsys):
    run_dir, _ = run
    assert ls.main([str(run_dir / "step_000003"), "--mode=line", "--points=3", "--filter_norm", "--batches=1",
                    f"--out={tmp_path}"]) == 0
    assert "r_step000003_line_filter.png" in capsys.readouterr().out
    assert np.load(tmp_path / "r_step000003_line_filter.npz")["loss"].shape == (3,)


def test_direction_norms(fresh_seed):
    weights = [torch.randn(5, 7) * 3, torch.randn(4) + 1, torch.randn(3, 2, 2)]
    generator = torch.Generator().manual_seed(fresh_seed)
    d = ls.random_direction(weights, generator, filter_norm=False)
    total = lambda ts: torch.sqrt(sum((t**2).sum() for t in ts))  # noqa: E731
    assert total(d) == pytest.approx(total(weights).item(), rel=1e-5)
    assert [di.shape for di in d] == [w.shape for w in weights]
    f = ls.random_direction(weights, generator, filter_norm=True)
    for w, di in zip(weights, f):
        if w.ndim == 1:
            assert not di.any()
        else:
            torch.testing.assert_close(di.flatten(1).norm(dim=1), w.flatten(1).norm(dim=1))


def test_missing_checkpoint_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ls.main([str(tmp_path)])
    assert "--checkpoint_every" in capsys.readouterr().err
