"""Performance profiles over studies: costs, ratios, the profile, the score and the command (no training)."""
import math

import numpy as np
import pytest

from ablations import __main__ as cli
from ablations import performance_profile as profile, study
from tests.test_ablations import PNG_MAGIC, SMALL_TOML, fake_summary, write_study

ARMS = f"""metric = {{kind = "time_to_target", target = 2.5}}
[overrides]
{SMALL_TOML}
[arms.a]
[arms.b]
rotary = false
"""


def workload(tmp_path, name: str, a: tuple, b: tuple) -> study.Study:
    """A one-seed study whose arms' runs validate every 3 steps with the given losses and ms per step."""
    s = study.load(write_study(tmp_path, ARMS, name))
    for run, (losses, ms) in zip(s.plan(), (a, b)):
        fake_summary(tmp_path / "results" / name, run, losses, ms_per_step=ms)
    return s


@pytest.fixture
def three(tmp_path):
    """w1: a 0.6 s, b 0.9 s; w2: a 1.2 s, b 0.3 s; w3: a 0.6 s, b never. Steps: w1 6/9, w2 6/3, w3 6/∞."""
    return [workload(tmp_path, "w1", ([5, 3, 2], 100.0), ([5, 3, 2.8, 2.4], 100.0)),
            workload(tmp_path, "w2", ([5, 3, 2], 200.0), ([5, 2], 100.0)),
            workload(tmp_path, "w3", ([5, 3, 2], 100.0), ([5, 3, 2.9], 100.0))]


def test_costs_ratios_profile_and_score_by_hand(tmp_path, three):
    loads = [w for s in three for w in profile.workloads(s, tmp_path / "results" / s.name, "time")]
    assert [w.costs for w in loads] == [{"a": 0.6, "b": pytest.approx(0.9)}, {"a": 1.2, "b": 0.3},
                                        {"a": 0.6, "b": math.inf}]
    r = profile.ratios(loads, ["a", "b"])
    assert r["a"] == pytest.approx([1.0, 4.0, 1.0])
    assert r["b"][:2] == pytest.approx([1.5, 1.0]) and r["b"][2] == math.inf
    taus = np.array([1.0, 1.5, 3.9, 4.0])
    assert profile.profile(r["a"], taus).tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 1.0])
    assert profile.profile(r["b"], taus).tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert profile.score(r["a"], 4.0) == pytest.approx((3 + 0 + 3) / 9)
    assert profile.score(r["b"], 4.0) == pytest.approx((2.5 + 3 + 0) / 9)
    # the closed form is the normalised area under the step function
    fine = np.linspace(1, 4, 300001)
    assert profile.score(r["b"], 4.0) == pytest.approx(np.trapezoid(profile.profile(r["b"], fine), fine) / 3, abs=1e-4)
    steps = [w.costs for s in three for w in profile.workloads(s, tmp_path / "results" / s.name, "steps")]
    assert steps == [{"a": 6, "b": 9}, {"a": 6, "b": 3}, {"a": 6, "b": math.inf}]


def test_profile_command_writes_report_and_plot(tmp_path, three, capsys):
    files = [str(s.path) for s in three]
    out = tmp_path / "out"
    assert cli.main(["profile", *files, "--results-root", str(tmp_path / "results"), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| `a` | 0.667 | 3/3 | 1.00 | 4.00 | 1.00 |" in text
    assert "| `b` | 0.611 | 2/3 | 1.50 | 1.00 | ∞ |" in text
    assert "| `w3` | 2.5 | 0.6 | missed |" in text and "python -m ablations profile" in text
    assert (out / profile.PLOT).read_bytes()[:8] == PNG_MAGIC


def test_profile_refuses_other_metrics_and_unsolved_workloads(tmp_path, capsys):
    loss = write_study(tmp_path, ARMS.replace('kind = "time_to_target", target = 2.5', 'kind = "val_loss_at_step"'),
                       "loss")
    assert cli.main(["profile", str(loss), "--results-root", str(tmp_path)]) == 2
    assert "needs metric" in capsys.readouterr().err
    unsolved = workload(tmp_path, "hard", ([5, 3], 100.0), ([5, 4], 100.0))
    assert cli.main(["profile", str(unsolved.path), "--results-root", str(tmp_path / "results"),
                     "--out", str(tmp_path / "o")]) == 2
    assert "no workload has a run that reached its target" in capsys.readouterr().err
