"""The public speedrun's history: log formats, README tables, rows, and the import-history command."""
import json

import pytest
from scipy import stats as scipy_stats

from records.__main__ import main
from records.logs import parse_log
from records.public import HistoryError, import_history, load_history, record_seconds
from tests.records_logs import write_llmc, write_modded, write_ours, write_public_checkout


def test_llmc_log_has_losses_but_no_times(tmp_path):
    log = parse_log(write_llmc(tmp_path / "main.log", final=3.2722, steps=40, every=10))
    assert [v[0] for v in log["val_history"]] == [0, 10, 20, 30, 40]
    assert (log["steps"], log["final_val_loss"], log["train_time_ms"]) == (40, 3.2722, None)
    assert log["complete"]
    above = parse_log(write_llmc(tmp_path / "high.log", final=3.31))
    assert not above["complete"] and "above the target" in above["problems"][0]


def test_step_count_track_logs_seconds_and_extra_fields(tmp_path):
    log = parse_log(write_modded(tmp_path / "t3.txt", final=3.2770, time_ms=30000.0, steps=30, num_iterations=30,
                                 seconds=True, extra_field=True))
    assert log["val_history"][-1] == [30, 3.2770, 30000.0]  # 30.000s read as 30000 ms, val_ema_loss skipped
    assert log["complete"]


def test_import_history_rows_from_a_stand_in_checkout(tmp_path):
    history = import_history(write_public_checkout(tmp_path))
    t1 = {(r["number"], r["retiming"]): r for r in history["track1"]["rows"]}
    assert len(history["track1"]["rows"]) == 7
    llmc = t1[(1, False)]
    assert (llmc["record_time_s"], llmc["steps"], llmc["ms_per_step"], llmc["logs"]) == (2700.0, 40, None, 1)
    early = t1[(2, False)]  # train_loss on every step; batch 8*64 sequences of 1024 in its code
    assert early["logs"] == 1  # the baseline beside it embeds other code
    assert early["date"] == "2024-11-19" and early["record_time_s"] == 210.0
    assert (early["steps"], early["train_time_s"], early["ms_per_step"]) == (20, 210.0, 10500.0)
    assert early["tokens"] == 20 * 8 * 64 * 1024
    folder = t1[(3, False)]  # a folder of the three runs of one code
    assert folder["logs"] == 3
    losses = [3.2770, 3.2790, 3.2750]
    assert folder["val_loss_mean"] == pytest.approx(sum(losses) / 3, abs=1e-5)
    expected_p = scipy_stats.ttest_1samp(losses, 3.28, alternative="less").pvalue
    assert folder["p_value"] == pytest.approx(expected_p)
    assert folder["train_time_s_mean"] == pytest.approx(181.0)
    retimed = t1[(3, True)]  # the linked file and its siblings of the same code
    assert retimed["logs"] == 3 and retimed["pr_url"] == "https://example.org/pr/1"
    assert t1[(4, False)]["logs"] == 0 and t1[(4, False)]["problems"] == ["the README links no log"]
    broken = t1[(5, False)]
    assert broken["logs"] == 0 and "bad.txt" in broken["problems"][0] and "not a speedrun log" in broken["problems"][0]
    mixed = t1[(6, False)]
    assert mixed["logs"] == 0 and "2 different codes (in baseline, this)" in mixed["problems"][0]
    t3 = {r["number"]: r for r in history["track3_steps"]["rows"]}
    one = t3[1]
    assert (one["steps_to_target"], one["new_best"], one["readme_val_loss"], one["readme_n"]) == (30, True, 3.277, 1)
    assert (one["steps"], one["train_time_s"], one["tokens"]) == (30, 30.0, 30 * 8 * 64 * 1024)
    assert t3[2]["logs"] == 2 and t3[2]["readme_mark"] == "✓"  # a README link: its folder's runs


def test_import_history_command_writes_both_tracks(tmp_path, capsys):
    checkout = write_public_checkout(tmp_path / "checkout")
    assert main(["import-history", str(checkout), "--out", str(tmp_path / "out")]) == 0
    assert "no readable log for #4, #5, #6" in capsys.readouterr().out
    data = load_history("track1", tmp_path / "out")
    assert data["target_val_loss"] == 3.28 and len(data["rows"]) == 7
    assert json.loads((tmp_path / "out" / "track3_steps.json").read_text())["rows"][0]["number"] == 1
    assert main(["import-history", str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(HistoryError, match="no README.md"):
        import_history(tmp_path)


def test_record_seconds():
    assert record_seconds("3.142 minutes") == pytest.approx(188.52)
    assert record_seconds("45 minutes") == 2700 and record_seconds("none") is None


def test_plot_overlays_gpu_entries_only(tmp_path, capsys):
    from records.plots import gpu_entries, is_gpu_entry
    assert is_gpu_entry({"hardware": "NVIDIA H100 80GB HBM3 x8"})
    assert not is_gpu_entry({"hardware": "AMD EPYC 7B13 (2 cores) x1"}) and not is_gpu_entry({"hardware": "cpu x2"})
    root = tmp_path / "records"
    for name, hardware in (("2026-01-02_gpu-run", "NVIDIA H100 80GB HBM3 x8"), ("2026-01-03_cpu-run", "cpu x1")):
        (root / name).mkdir(parents=True)
        entry = {"date": name[:10], "hardware": hardware, "track": {"name": "time"},
                 "train_time_ms": {"mean": 90000.0}, "steps": {"mean": 1500.0}}
        (root / name / "record.json").write_text(json.dumps(entry))
    assert [name for name, _ in gpu_entries(root, "time")] == ["2026-01-02_gpu-run"]
    history = tmp_path / "history"
    assert main(["import-history", str(write_public_checkout(tmp_path / "checkout")), "--out", str(history)]) == 0
    assert main(["plot", "--root", str(root), "--history", str(history), "--out", str(tmp_path / "png")]) == 0
    for name in ("track1_time.png", "track3_steps.png"):
        assert (tmp_path / "png" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_with_a_public_record(tmp_path, capsys):
    history = tmp_path / "history"
    assert main(["import-history", str(write_public_checkout(tmp_path / "checkout")), "--out", str(history)]) == 0
    ours = tmp_path / "ours"
    for seed, (loss, ms) in enumerate(((3.2700, 170000.0), (3.2720, 172000.0))):
        write_ours(ours, f"r{seed}", final=loss, time_ms=ms, seed=seed, config={"target_val_loss": 3.28})
    capsys.readouterr()
    assert main(["compare", "public:3", str(ours), "--history", str(history)]) == 0
    out = capsys.readouterr().out
    assert "A: public:3: 3 runs, time 181.00 s" in out and "B: " in out and "note:" not in out
    ratio = 181000.0 / 171000.0
    assert f"time ratio A/B {ratio:.3f} (95% CI " in out
    assert "      0  5.0000  5.0000  +0.0000" in out  # both curves start at 5.0 at step 0 (the stand-ins' shape)
    assert main(["compare", "public:steps:1", "public:steps:2", "--history", str(history)]) == 0
    assert "no CI: need 2+ runs a side" in capsys.readouterr().out
    assert main(["compare", "public:4", str(ours), "--history", str(history)]) == 2
    assert "no readable log" in capsys.readouterr().err
