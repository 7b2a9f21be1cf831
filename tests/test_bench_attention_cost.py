"""bench/attention_cost.py: a quick run prints its table; bad sizes exit 2 before any timing."""
from bench import attention_cost


def test_quick_run_prints_every_path(capsys):
    assert attention_cost.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "path" not in line]
    assert len(rows) == 5 and rows[0].endswith("| 1.00× |")
    assert "512 tokens per forward+backward" in out


def test_bad_sizes_are_refused(capsys):
    assert attention_cost.main(["--tokens", "300"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: --tokens")
