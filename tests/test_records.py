"""records/: statistics against hand-computed values, log parsing (ours and modded-nanogpt's), refusals,
`check` on tampered entries, and the CLI end to end on real SMALL trainer runs."""
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from records import entries, stats
from records import __main__ as records_cli
from records.__main__ import main
from records.entries import check, load_entries
from records.logs import LogError, first_at_or_below, parse_log
from tests import trainer
from tests.records_logs import FIXTURES, SAMPLES, write_modded, write_ours, write_samples


def cli(capsys, *args):
    """Run `python -m records ARGS` in-process; (exit status, stdout, stderr)."""
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def ours_runs(folder, finals=(1.50, 1.51, 1.52), times=(1000.0, 1100.0, 1200.0), **kwargs):
    return [write_ours(folder, f"run{i}", final=f, time_ms=t, seed=i, **kwargs)
            for i, (f, t) in enumerate(zip(finals, times))]


# ---------------------------------------------------------------------------------------------- statistics

def test_target_p_value_matches_the_t_distribution_with_two_degrees_of_freedom():
    losses, target = [1.50, 1.52, 1.54], 1.6
    t = (1.52 - target) / (0.02 / math.sqrt(3))  # mean 1.52, s = 0.02
    p_hand = 0.5 - abs(t) / (2 * math.sqrt(t * t + 2))  # Student t, 2 dof: F(t) = 1/2 + t / (2 sqrt(t² + 2))
    assert stats.p_below(losses, target) == pytest.approx(p_hand, rel=1e-9)
    assert 0.01 < p_hand < 0.0102  # just misses the speedrun's bar
    assert stats.p_below([1.5], target) is None


def test_mean_std_and_time_confidence_interval():
    times = [100.0, 110.0, 120.0]
    assert stats.mean_std(times) == {"mean": 110.0, "std": pytest.approx(10.0)}
    alpha = 0.95  # 2 dof quantile: t² = 2α²/(1 − α²) where α = 2·0.975 − 1
    q = math.sqrt(2 * alpha ** 2 / (1 - alpha ** 2))
    lo, hi = stats.ci95(times)
    assert (lo, hi) == (pytest.approx(110 - q * 10 / math.sqrt(3)), pytest.approx(110 + q * 10 / math.sqrt(3)))
    assert stats.ci95([5.0]) is None and stats.mean_std([5.0])["std"] is None


def t4_cdf(t):
    """Student t with 4 degrees of freedom, closed form."""
    u = t * t / (1 + t * t / 4)
    return 0.5 + 3 / 8 * t / math.sqrt(1 + t * t / 4) * (1 - u / 12)


def test_welch_test_and_time_ratio_interval():
    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]  # s² = 1 each: Welch dof = (2/3)² / (2 (1/3)² / 2) = 4
    t = (2 - 5) / math.sqrt(1 / 3 + 1 / 3)
    assert stats.welch_p(a, b) == pytest.approx(2 * t4_cdf(t), rel=1e-9)
    fast, slow = [9.0, 10.0, 11.0], [18.0, 20.0, 22.0]  # equal relative spread: delta-method dof = 4
    se = math.sqrt(2 * 1 / (3 * 100))
    p = 0.975
    g = 4 * p * (1 - p)
    q = 2 * math.sqrt(math.cos(math.acos(math.sqrt(g)) / 3) / math.sqrt(g) - 1)  # t_{0.975, 4}, closed form
    got = stats.ratio_ci95(fast, slow)
    assert got["ratio"] == pytest.approx(0.5)
    assert got["ci95"] == [pytest.approx(0.5 * math.exp(-q * se)), pytest.approx(0.5 * math.exp(q * se))]
    assert stats.welch_p([1.0], b) is None and stats.ratio_ci95([1.0], b)["ci95"] is None


# ---------------------------------------------------------------------------------------------- parsing

def test_parse_ours_with_and_without_the_summary(tmp_path):
    txt = write_ours(tmp_path, "a", final=1.5, time_ms=1234.5, seed=7)
    with_json = parse_log(txt)
    summary = json.loads(txt.with_suffix(".json").read_text())
    assert with_json["complete"] and with_json["code_hash"] == summary["code_hash"]
    assert (with_json["final_val_loss"], with_json["train_time_ms"], with_json["steps"]) == (1.5, 1234.5, 6)
    assert (with_json["seed"], with_json["hardware"], with_json["tokens"]) == (7, "cpu x1", 6 * 1024)
    txt.with_suffix(".json").unlink()
    bare = parse_log(txt)  # from the step lines: 4-decimal losses, whole milliseconds
    assert bare["complete"] and bare["code_hash"] == summary["code_hash"]
    assert (bare["final_val_loss"], bare["train_time_ms"], bare["steps"], bare["tokens"]) == (1.5, 1234.0, 6, 6144)
    assert [v[0] for v in bare["val_history"]] == [0, 3, 6]


def test_parse_detects_truncation_and_mismatched_files(tmp_path):
    txt = write_ours(tmp_path, "a", final=1.5, time_ms=1000.0)
    lines = txt.read_text().splitlines(keepends=True)
    txt.write_text("".join(lines[:-3]))  # cut before the last validation; the .json says complete
    cut = parse_log(txt)
    assert not cut["complete"] and any("truncated" in p for p in cut["problems"])
    txt.with_suffix(".json").unlink()
    assert not parse_log(txt)["complete"]  # last validation at 3/6, above the target
    other = write_ours(tmp_path, "b", final=1.5, time_ms=1000.0)
    other.write_text(other.read_text().replace("print('train')", "print('changed')"))
    assert any("not of one run" in p for p in parse_log(other)["problems"])
    (tmp_path / "junk.txt").write_text("hello\n")
    with pytest.raises(LogError, match="junk.txt"):
        parse_log(tmp_path / "junk.txt")


def test_parse_modded_nanogpt_logs(tmp_path):
    log = parse_log(write_modded(tmp_path / "m.txt", final=3.2790, time_ms=178752.0))
    text = (tmp_path / "m.txt").read_text()
    code = text[:text.index("=" * 100 + "\nRunning Python")]
    assert code.count("=" * 100) == 1  # two embedded files in the code part
    assert log["format"] == "modded-nanogpt" and log["complete"]
    assert (log["final_val_loss"], log["train_time_ms"], log["steps"]) == (3.2790, 178752.0, 20)
    assert log["hardware"] == "NVIDIA H100 80GB HBM3 x8" and log["torch"] == "2.7.0+cu126"
    assert log["code_hash"] == hashlib.sha256(code.encode()).hexdigest()
    old = parse_log(write_modded(tmp_path / "old.txt", final=3.28, time_ms=1000.0, train_loss=True, gpus=4,
                                   extra_source=False))
    assert old["complete"] and old["hardware"] == "NVIDIA H100 80GB HBM3 x4" and old["code_hash"] != log["code_hash"]
    stopped = parse_log(write_modded(tmp_path / "s.txt", final=3.27, time_ms=1000.0, steps=15, num_iterations=20))
    assert not stopped["complete"] and stopped["steps"] == 15  # at the target before N: a cut log looks the same
    short = parse_log(write_modded(tmp_path / "t.txt", final=3.40, time_ms=1000.0, steps=15, num_iterations=20))
    assert not short["complete"] and "not finished" in short["problems"][0]


def test_committed_modded_fixtures_are_the_helpers_output(tmp_path):
    write_samples(tmp_path)
    for name in SAMPLES:
        assert (FIXTURES / name).read_text() == (tmp_path / name).read_text(), "run python -m tests.records_logs"


# ---------------------------------------------------------------------------------------------- entries

def test_add_writes_entry_and_table_and_check_passes(tmp_path, capsys):
    root, logs = tmp_path / "records", ours_runs(tmp_path / "logs")
    root.mkdir()
    status, out, err = cli(capsys, "add", "--root", root, *logs, "--description", "Faster thing", "--author", "me",
                           "--date", "2025-02-03")
    assert status == 0, err
    folder = root / "2025-02-03_faster-thing"
    entry = json.loads((folder / "record.json").read_text())
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["record.json"] + [f"run{i}{s}" for i in range(3) for s in (".txt", ".json")])
    assert entry["val_loss"]["mean"] == pytest.approx(1.51) and entry["val_loss"]["std"] == pytest.approx(0.01)
    assert entry["train_time_ms"]["mean"] == pytest.approx(1100.0)
    assert entry["p_value"] == pytest.approx(stats.p_below([1.50, 1.51, 1.52], 1.6))
    assert entry["track"] == {"name": "time", "preset": "tiny", "target_val_loss": 1.6, "p_threshold": 0.01}
    assert [r["seed"] for r in entry["runs"]] == [0, 1, 2] and entry["tokens_seen"] == 6144
    assert "seed" not in entry["config"] and "run_id" not in entry["config"] and entry["config"]["n_layer"] == 2
    assert "| 1 | 1.1 s" in (root / "README.md").read_text()
    assert check(root) == []
    status, _, err = cli(capsys, "add", "--root", root, *logs, "--description", "Faster thing", "--date", "2025-02-03")
    assert status == 1 and "never overwritten" in err


@pytest.mark.parametrize("case, message", [
    ("mixed code", "code hash"),
    ("target missed", "not below the target"),
    ("truncated", "truncated"),
    ("one run", "at least 2"),
    ("config differs", "config keys lr_hidden"),
])
def test_add_refuses_bad_entries(tmp_path, capsys, case, message):
    folder = tmp_path / "logs"
    if case == "target missed":
        logs = ours_runs(folder, finals=(1.50, 1.52, 1.54))  # p = 0.0101 against 1.6
    else:
        logs = ours_runs(folder)
    if case == "mixed code":
        logs.append(write_ours(folder, "other", final=1.5, time_ms=900.0, code="print('other')\n"))
    elif case == "truncated":
        logs[1].write_text("".join(logs[1].read_text().splitlines(keepends=True)[:-2]))
    elif case == "one run":
        logs = logs[:1]
    elif case == "config differs":
        logs.append(write_ours(folder, "lr", final=1.5, time_ms=900.0, config={"lr_hidden": 0.1}))
    root = tmp_path / "records"
    root.mkdir()
    status, _, err = cli(capsys, "add", "--root", root, *logs, "--description", "bad")
    assert status == 1 and message in err, err
    assert load_entries(root) == [] and not (root / "README.md").exists()


def make_entry(tmp_path, capsys):
    root = tmp_path / "records"
    root.mkdir()
    assert cli(capsys, "add", "--root", root, *ours_runs(tmp_path / "logs"), "--description", "base",
               "--date", "2025-01-01")[0] == 0
    return root, root / "2025-01-01_base"


def edit_table(folder, root):
    readme = root / "README.md"
    readme.write_text(readme.read_text().replace("| 1 | 1.1 s", "| 1 | 0.9 s"))


def edit_record(folder, root):
    entry = json.loads((folder / "record.json").read_text())
    entry["val_loss"]["mean"] = 1.40
    (folder / "record.json").write_text(json.dumps(entry, indent=1))


def edit_summary(folder, root):
    summary = json.loads((folder / "run1.json").read_text())
    summary["train_time_ms"] = 500.0
    (folder / "run1.json").write_text(json.dumps(summary, indent=1))


def break_record(folder, root):
    (folder / "record.json").write_text("{")


@pytest.mark.parametrize("tamper, message", [
    (edit_table, "README.md tables differ"),
    (edit_record, "record.json val_loss"),
    (edit_summary, "record.json train_time_ms"),
    (break_record, "record.json cannot be read"),
    (lambda folder, root: (folder / "run2.txt").unlink(), "the folder holds"),
    (lambda folder, root: shutil.copy(folder / "run0.txt", folder / "extra.txt"), "the folder holds"),
])
def test_check_catches_tampering(tmp_path, capsys, tamper, message):
    root, folder = make_entry(tmp_path, capsys)
    assert check(root) == []
    tamper(folder, root)
    problems = check(root)
    assert any(message in p for p in problems), problems
    status, out, _ = cli(capsys, "check", "--root", root)
    assert status == 1 and message in out


def test_check_catches_an_entry_below_a_tightened_bar(tmp_path, capsys):
    root, folder = make_entry(tmp_path, capsys)
    (root / "tracks.json").write_text(json.dumps({"time": {"p_threshold": 1e-9}, "steps": {"p_threshold": 0.01}}))
    assert any("not below the target" in p for p in check(root))


def test_steps_track_fixes_the_architecture(tmp_path, capsys):
    root = tmp_path / "records"
    root.mkdir()
    base = ours_runs(tmp_path / "a")
    assert cli(capsys, "add", "--root", root, *base, "--description", "steps base", "--track", "steps",
               "--date", "2025-01-01")[0] == 0
    tuned = ours_runs(tmp_path / "b", config={"lr_hidden": 0.07})
    assert cli(capsys, "add", "--root", root, *tuned, "--description", "lr", "--track", "steps")[0] == 0
    wider = ours_runs(tmp_path / "c", config={"model_dim": 128})
    status, _, err = cli(capsys, "add", "--root", root, *wider, "--description", "wider", "--track", "steps")
    assert status == 1 and "changes model_dim" in err
    assert check(root) == []


def test_table_ranks_best_first_and_newest_first_among_equals(tmp_path, capsys):
    root = tmp_path / "records"
    root.mkdir()
    for name, date, times in (("slow", "2025-01-01", (2000.0, 2100.0, 2200.0)),
                              ("fast", "2025-01-02", (1000.0, 1100.0, 1200.0)),
                              ("fast-again", "2025-01-05", (1000.0, 1100.0, 1200.0))):
        logs = ours_runs(tmp_path / name, times=times)
        assert cli(capsys, "add", "--root", root, *logs, "--description", name, "--date", date)[0] == 0
    rows = [line for line in (root / "README.md").read_text().splitlines() if line.startswith("| ") and "](" in line]
    assert [row.split(" | ")[-2] for row in rows] == ["fast-again", "fast", "slow"]
    assert [row.split(" | ")[0] for row in rows] == ["| 1", "| 2", "| 3"]


def test_import_public_logs_and_compare(tmp_path, capsys):
    root = tmp_path / "records"
    root.mkdir()
    runs = write_samples(tmp_path / "public")[:3]
    status, out, err = cli(capsys, "import", "--root", root, *runs, "--description", "Public record",
                           "--date", "2025-01-16")
    assert status == 0, err
    entry = json.loads((root / "2025-01-16_public-record" / "record.json").read_text())
    assert entry["imported"] and entry["format"] == "modded-nanogpt" and entry["track"]["target_val_loss"] == 3.28
    assert entry["hardware"] == "NVIDIA H100 80GB HBM3 x8" and entry["tokens_seen"] is None
    assert "(imported)" in (root / "README.md").read_text() and check(root) == []
    one = tmp_path / "public" / "new_format_a.txt"
    status, out, _ = cli(capsys, "compare", "--root", root, "2025-01-16_public-record", one)
    assert status == 0 and "time ratio A/B" in out and "n/a" in out
    mixed = [runs[0], tmp_path / "public" / "old_format_train_loss.txt"]
    status, _, err = cli(capsys, "import", "--root", root, *mixed, "--description", "mixed")
    assert status == 1 and "code hash" in err
    status, _, err = cli(capsys, "import", "--root", root, *ours_runs(tmp_path / "ours"), "--description", "x")
    assert status == 1 and "runs with add" in err


def test_compare_gives_steps_and_time_to_the_target():
    runs = [{"val_history": [[0, 5.0, 0.0], [100, 2.0, 50000.0], [200, 1.7, 90000.0]]},
            {"val_history": [[0, 5.0, 0.0], [100, 1.8, 40000.0], [200, 1.6, 80000.0]]},
            {"val_history": [[0, 5.0, 0.0], [100, 2.5, 60000.0]]}]
    assert first_at_or_below(runs[0], 1.8) == (200, 90000.0) and first_at_or_below(runs[2], 1.8) is None
    line = records_cli.to_target("A", runs, 1.8)
    h = 12.706205 * (50 * math.sqrt(2)) / math.sqrt(2)  # t_0.975,1 · s/√n, s of steps 200 and 100
    assert line.startswith(f"A to val loss ≤ 1.8 (its first validation there): 150 steps (95% CI {150 - h:.0f}–{150 + h:.0f})")
    assert "in 65.0 s (95% CI" in line and line.endswith("2 of 3 runs")
    assert records_cli.to_target("B", runs[2:], 1.8) == "B to val loss ≤ 1.8: no run gets there"


def test_a_log_cut_after_a_validation_below_the_target_is_not_finished(tmp_path):
    txt = write_ours(tmp_path, "cut", final=1.5, time_ms=1000.0, config={"target_val_loss": 3.5}, json_summary=False)
    assert parse_log(txt)["complete"]
    txt.write_text("".join(txt.read_text().splitlines(keepends=True)[:-2]))  # ends with step:3/6 val_loss:3.2500
    cut = parse_log(txt)
    assert cut["val_history"][-1][:2] == [3, 3.25] and not cut["complete"]
    assert "run not finished" in cut["problems"][0]
    txt.write_text(txt.read_text() + "final val_loss:3.2500 after 3 steps (3,072 tokens) in 0.5s; target 3.5 reached\n")
    assert parse_log(txt)["complete"]  # the trainer's closing line: it stopped at the target


def never_validated(txt):
    """The run's val losses as a run whose validation never ran printed them."""
    txt.write_text(re.sub(r"val_loss:\S+", "val_loss:-0.0000", txt.read_text()))
    summary = json.loads(txt.with_suffix(".json").read_text())
    summary["val_history"] = [[s, -0.0, t] for s, _, t in summary["val_history"]]
    summary["final_val_loss"] = -0.0
    txt.with_suffix(".json").write_text(json.dumps(summary))


def copy_run(txt, name):
    for suffix in (".txt", ".json"):
        shutil.copy(txt.with_suffix(suffix), txt.with_name(name + suffix))
    return txt.with_name(name + ".txt")


@pytest.mark.parametrize("case, message", [
    ("same run twice", "run0.txt, again.txt share the run id 'run0'"),
    ("same public log twice", "have identical validation curves"),
    ("validation never ran", "val_loss -0.0000 at step 0 cannot be a validation"),
])
def test_add_refuses_runs_that_are_not_separate_measurements(tmp_path, capsys, case, message):
    root = tmp_path / "records"
    command = "add"
    if case == "same run twice":
        logs = ours_runs(tmp_path / "logs")[:2]
        logs.append(copy_run(logs[0], "again"))
    elif case == "same public log twice":
        command, logs = "import", write_samples(tmp_path / "public")[:2]
        logs.append(logs[0].with_name("copy.txt"))
        shutil.copy(logs[0], logs[2])
    else:
        logs = ours_runs(tmp_path / "logs")
        for txt in logs:
            never_validated(txt)
    status, _, err = cli(capsys, command, "--root", root, *logs, "--description", "twice")
    assert status == 1 and message in err, err
    assert not root.exists() or load_entries(root) == []


def test_check_names_an_edited_final_val_line(tmp_path, capsys):
    root, folder = make_entry(tmp_path, capsys)
    txt = folder / "run1.txt"
    lines = txt.read_text().splitlines(keepends=True)
    assert lines[-1].startswith("step:6/6 val_loss:1.5100")
    txt.write_text("".join(lines[:-1]) + lines[-1].replace("val_loss:1.5100", "val_loss:1.4100"))
    problems = check(root)
    assert any("run1.txt: the .txt ends at step 6 val_loss 1.4100 but the .json says step 6 val_loss 1.5100: the "
               "final val lines differ (one of the files was edited)" in p for p in problems), problems
    assert not any("truncated" in p for p in problems)


def add_in_threads(root, first_logs, second_logs, slugs, started):
    """Two `records add` at once: the second starts once the first signals `started` (from inside its write)."""
    results = {}

    def add(name, logs, slug):
        try:
            results[name] = main(["add", "--root", str(root), *map(str, logs), "--description", name, "--slug", slug])
        except Exception as e:  # what the caller would see as a traceback
            results[name] = e

    first = threading.Thread(target=add, args=("first", first_logs, slugs[0]))
    first.start()
    assert started.wait(30)
    second = threading.Thread(target=add, args=("second", second_logs, slugs[1]))
    second.start()
    first.join(60)
    second.join(60)
    return results


def test_concurrent_adds_keep_every_table_row(tmp_path, capsys, monkeypatch):
    root = tmp_path / "records"
    root.mkdir()
    started, real_tables = threading.Event(), entries.tables

    def slow_tables(found):  # the first writer renders its table, then is slow to write it
        text = real_tables(found)
        if not started.is_set():
            started.set()
            time.sleep(1.0)
        return text
    monkeypatch.setattr(entries, "tables", slow_tables)
    results = add_in_threads(root, ours_runs(tmp_path / "a"), ours_runs(tmp_path / "b"), ("one", "two"), started)
    assert results == {"first": 0, "second": 0}
    readme = (root / "README.md").read_text()
    assert "[2" in readme and "_one](" in readme and "_two](" in readme
    assert check(root) == []


def test_concurrent_adds_of_one_slug_refuse_the_second(tmp_path, capsys, monkeypatch):
    root = tmp_path / "records"
    root.mkdir()
    started, real_write = threading.Event(), entries.atomic_write

    def slow_record(path, data):  # the first writer is slow to write its record.json
        if path.name == "record.json" and not started.is_set():
            started.set()
            time.sleep(1.0)
        return real_write(path, data)
    monkeypatch.setattr(entries, "atomic_write", slow_record)
    results = add_in_threads(root, ours_runs(tmp_path / "a"), ours_runs(tmp_path / "b"), ("same", "same"), started)
    assert results == {"first": 0, "second": 1}
    assert "exists already; entries are never overwritten" in capsys.readouterr().err
    assert check(root) == []


# ---------------------------------------------------------------------------------------------- real runs

@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Three SMALL trainer runs (seeds 1–3) that stop at a reachable target of 4.8 (a few seconds each)."""
    log_dir = tmp_path_factory.mktemp("runs")
    for seed in (1, 2, 3):
        done = trainer.run([*trainer.SMALL, f"--seed={seed}", f"--run_id=seed{seed}", "--target_val_loss=4.8",
                            f"--log_dir={log_dir}"])
        assert done.returncode == 0, done.stderr
    return sorted(log_dir.glob("*.txt"))


def test_cli_on_real_trainer_logs(real_runs, tmp_path):
    run = lambda *args: subprocess.run([sys.executable, "-m", "records", *map(str, args)], cwd=trainer.ROOT,
                                       capture_output=True, text=True, timeout=120)
    parsed = run("parse", *real_runs)
    assert parsed.returncode == 0, parsed.stderr
    lines = [json.loads(line) for line in parsed.stdout.splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert isinstance(line["final_val_loss"], float) and isinstance(line["steps"], int)
        assert isinstance(line["train_time_ms"], (int, float)) and line["complete"]
        assert line["final_val_loss"] <= 4.8 and line["steps"] == 3  # stopped at the target
    assert len({line["code_hash"] for line in lines}) == 1
    root = tmp_path / "records"
    root.mkdir()
    added = run("add", "--root", root, *real_runs, "--description", "Small baseline", "--author", "t")
    assert added.returncode == 0, added.stderr
    assert run("check", "--root", root).returncode == 0


def test_repository_records_are_consistent():
    done = subprocess.run([sys.executable, "-m", "records", "check"], cwd=trainer.ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
