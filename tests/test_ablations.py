"""Ablation studies: plans from study files, cached reruns, launches, statistics and reports."""
import json
import math
import re
import sys
from pathlib import Path

import pytest

from ablations import __main__ as cli
from ablations import launch, report, stats, study
from tests.trainer import ROOT, SMALL

STUDIES = sorted((ROOT / "ablations/studies").glob("*.toml")) + sorted((ROOT / "ablations/studies").glob("*.py"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# SMALL (tests/trainer.py) as TOML overrides: 2 layers, width 64, 6 steps.
SMALL_TOML = "\n".join(f"{a[2:].split('=')[0]} = {a.split('=')[1]}" for a in SMALL if not a.startswith("--preset"))


def write_study(folder: Path, body: str, name: str = "micro") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\nbase = {{preset = "tiny"}}\n{body}')
    return path


TWO_ARMS = f"""seeds = [0, 1]
metric = {{kind = "val_loss_at_step"}}
[overrides]
{SMALL_TOML}
[arms.baseline]
[arms.no_rotary]
rotary = false
"""


def fake_summary(results: Path, run: study.Run, losses, ms_per_step=100.0, status="complete", n_params=1000):
    """A trainer-style JSON summary with validations every 3 steps (for report tests without training)."""
    history = [[3 * i, loss, 3 * i * ms_per_step] for i, loss in enumerate(losses)]
    info = {"run_id": run.run_id, "status": status, "val_history": history, "final_val_loss": history[-1][1],
            "train_time_ms": history[-1][2], "steps": history[-1][0], "n_params": n_params, "code_hash": "c0de",
            "hardware": {"device": "test-cpu"}}
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{run.run_id}.json").write_text(json.dumps(info))


# ----------------------------------------------------------------------------------------------
# Plans

def test_plan_interleaves_arms_within_each_seed(tmp_path):
    path = write_study(tmp_path, """seeds = [0, 1]
metric = {kind = "val_loss_at_step"}
overrides = {num_iterations = 20}
[arms.a]
[arms.b]
rotary = false
[arms.c]
opt_hidden = "adamw"
lr_hidden = 0.003
""")
    s = study.load(path)
    runs = s.plan()
    assert [(r.seed, r.arm) for r in runs] == [(0, "a"), (0, "b"), (0, "c"), (1, "a"), (1, "b"), (1, "c")]
    assert [r.index for r in runs] == list(range(6))
    assert s.baseline == "a"
    # the hash depends on the config, not the seed; the id adds the seed
    assert runs[0].config_hash == runs[3].config_hash != runs[1].config_hash
    assert runs[4].run_id == f"{runs[1].config_hash}-s1"
    assert runs[1].config == {"num_iterations": 20, "stop_at_target": False, "rotary": False}
    assert runs[1].trainer_args() == ["--preset=tiny", "--num_iterations=20", "--rotary=false", "--stop_at_target=false"]
    assert s.changes("c") == "opt_hidden=adamw, lr_hidden=0.003"


def test_hash_is_stable_across_spellings_and_ignores_operational_keys(tmp_path):
    spelled = [study.load(write_study(tmp_path, TWO_ARMS.replace("rotary = false", f"logit_softcap = {v}"),
                                      name=f"s{i}")).plan()[1] for i, v in enumerate(("0", "0.0"))]
    assert spelled[0].run_id == spelled[1].run_id
    assert spelled[1].config["logit_softcap"] == 0 and spelled[1].trainer_args()[2] == "--logit_softcap=0"
    one = study.Run(0, "a", 0, None, "tiny", {"n_layer": 2})
    two = study.Run(5, "b", 1, None, "tiny", {"n_layer": 2, "checkpoint_every": 50})
    assert one.config_hash == two.config_hash != study.Run(0, "a", 0, None, "gpt2classic", {"n_layer": 2}).config_hash
    assert one.config_hash != study.Run(0, "a", 0, None, "tiny", {"n_layer": 3}).config_hash


def test_ladder_plan_applies_lr_rule_and_schedule_lengths(tmp_path):
    path = write_study(tmp_path, """seeds = [0, 1]
metric = {kind = "val_loss_at_step"}
overrides = {num_iterations = 200}
[ladder]
lr_rule = "sqrt"
base_batch_tokens = 8192
warmup_steps = 10
cooldown_steps = 50
rungs = [{name = "small", n_layer = 2, global_batch_tokens = 4096},
         {name = "big", n_layer = 4, num_iterations = 400}]
[arms.baseline]
[arms.off]
qk_norm = false
""")
    s = study.load(path)
    runs = s.plan()
    assert s.is_ladder and len(runs) == 8
    assert [(r.rung, r.seed, r.arm) for r in runs[:4]] == [("small", 0, "baseline"), ("small", 0, "off"),
                                                           ("small", 1, "baseline"), ("small", 1, "off")]
    small, big = runs[0].config, runs[5].config
    assert small["lr_scaling"] == "sqrt" and small["lr_base_batch_tokens"] == 8192
    assert small["warmup_frac"] == pytest.approx(10 / 200) and small["cooldown_frac"] == pytest.approx(50 / 200)
    assert big["warmup_frac"] == pytest.approx(10 / 400) and big["cooldown_frac"] == pytest.approx(50 / 400)
    assert runs[5].label == "arm off rung big seed 0" and big["qk_norm"] is False


@pytest.mark.parametrize("body, message", [
    ("arms = {a = {}}\nmetric = {kind = \"val_loss_at_step\"}", "at least two named tables"),
    ("seed = [0]\narms = {a = {}, b = {rotary = false}}\nmetric = {kind = \"val_loss_at_step\"}",
     "unknown field 'seed' (did you mean 'seeds'?)"),
    ("arms = {a = {}, b = {seed = 3}}\nmetric = {kind = \"val_loss_at_step\"}", "set by the launcher"),
    ("arms = {a = {}, b = {rotary = true}}\nmetric = {kind = \"val_loss_at_time\"}", "needs `seconds`"),
    ("arms = {a = {}, b = {}}\nmetric = {kind = \"val_loss_at_step\"}", "give the same config"),
    ("baseline = \"base\"\narms = {a = {}, b = {rotary = false}}\nmetric = {kind = \"val_loss_at_step\"}",
     "baseline 'base' is not an arm"),
    ("arms = {a = {}, b = {target_val_loss = 2.0}}\nmetric = {kind = \"time_to_target\", target = 1.8}",
     "remove it from overrides/arms"),
    ("arms = {a = {}, b = {rotary = false}}\nmetric = {kind = \"val_loss_at_step\", step = 1.5}",
     "`step` must be a non-negative integer"),
    ("arms = {a = {}, b = {rotary = false}}\nmetric = {kind = \"val_loss_at_step\"}\nalso = {kind = \"steps_to_target\"}",
     "`also` is a list of metric tables"),
    ("arms = {a = {}, b = {rotary = false}}\nmetric = {kind = \"val_loss_at_step\"}\nalso = [{kind = \"steps_to_target\"}]",
     "also[0]: metric steps_to_target needs `target`"),
    ("arms = {a = {}, b = {rotary = false}}\nmetric = {kind = \"val_loss_at_step\"}\nladder = {rungs = [{n_layer = 2}],"
     " warmup_steps = 5}", "warmup_steps needs num_iterations"),
])
def test_bad_study_files_are_named_errors(tmp_path, body, message):
    with pytest.raises(study.StudyError, match=re.escape(message)):
        study.load(write_study(tmp_path, body)).plan()


def test_study_names_and_file_kinds(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'name = "a/b"\nbase = {{preset = "tiny"}}\n{TWO_ARMS}')
    with pytest.raises(study.StudyError, match="name 'a/b' names folders"):
        study.load(bad)
    (tmp_path / "s.yaml").write_text("")
    with pytest.raises(study.StudyError, match="a study file is .toml or .py"):
        study.load(tmp_path / "s.yaml")
    (tmp_path / "s.py").write_text("X = 1\n")
    with pytest.raises(study.StudyError, match="must define STUDY"):
        study.load(tmp_path / "s.py")


def test_plan_is_checked_against_the_trainers_keys(tmp_path):
    step = 'metric = {kind = "val_loss_at_step"}'
    s = study.load(write_study(tmp_path, f"arms = {{a = {{}}, b = {{rotory = false}}}}\n{step}"))
    with pytest.raises(study.StudyError, match=re.escape("unknown config key 'rotory' (did you mean 'rotary'?)")):
        study.check_against_trainer(s, s.plan())
    s = study.load(write_study(tmp_path, f"arms = {{a = {{}}, b = {{n_layer = 2.5}}}}\n{step}"))
    with pytest.raises(study.StudyError, match="n_layer = 2.5 should be of type int"):
        study.check_against_trainer(s, s.plan())



@pytest.mark.parametrize("case, body, message", [
    ("not UTF-8", b'name = "caf\xe9"\n', "not UTF-8 text (byte 0xe9 at offset 11); save the study file as UTF-8"),
    ("seq_len 0", f'name = "zero"\nbase = {{preset = "tiny"}}\n{TWO_ARMS}seq_len = 0\n'.encode(),
     "seq_len = 0 is out of range (in arm 'no_rotary'): it must be finite, in [1, inf]"),
])
def test_a_bad_study_stops_with_one_line_before_any_run(tmp_path, capsys, case, body, message):
    path = tmp_path / "bad.toml"
    path.write_bytes(body)
    status = cli.main(["run", str(path), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_every_shipped_study_plans_against_the_trainer(path):
    s = study.load(path)
    runs = s.plan()
    study.check_against_trainer(s, runs)
    assert len(runs) == len(s.arms) * len(s.seeds) * max(len(s.rungs), 1)
    assert s.name == path.stem and s.description


def test_shipped_studies_cover_the_issue():
    names = {p.stem for p in STUDIES}
    tricks = {"rotary", "rmsnorm", "qk_norm", "relu2", "untied_head", "zero_init_proj", "logit_softcap"}
    assert {f"{t}_off" for t in tricks} <= names
    assert {"optimizer_hidden", "lr_scaling", "warmup", "cooldown_frac", "ladder_cpu", "ladder_gpt2"} <= names
    arms = study.load(ROOT / "ablations/studies/optimizer_hidden.toml").arms
    assert [a.get("opt_hidden", "muon") for a in arms.values()] == ["muon", "adamw", "shampoo"]
    gpt2 = study.load(ROOT / "ablations/studies/ladder_gpt2.toml").rungs
    assert [(c["n_layer"], c["model_dim"]) for _, c in gpt2] == [(12, 768), (24, 1024), (36, 1280), (48, 1600)]


def test_record_entry_as_base(tmp_path):
    entry = tmp_path / "records/2026-01-01_base"
    entry.mkdir(parents=True)
    config = {"n_layer": 2, "seed": 7, "run_id": "x", "log_dir": "logs", "wandb": False, "target_val_loss": 1.8,
              "checkpoint_every": 0}
    (entry / "record.json").write_text(json.dumps({"preset": "tiny", "config": config,
                                                   "val_loss": {"mean": 1.75, "std": 0.01},
                                                   "train_time_ms": {"mean": 300000.0}}))
    path = write_study(tmp_path, 'arms = {a = {}, b = {rotary = false}}\nmetric = {kind = "val_loss_at_step"}')
    path.write_text(path.read_text().replace('base = {preset = "tiny"}', f'base = {{record = "{entry}"}}'))
    s = study.load(path)
    run = s.plan()[1]
    assert run.preset == "tiny"
    assert run.config == {"n_layer": 2, "target_val_loss": 1.8, "stop_at_target": False, "rotary": False}  # launcher keys dropped
    assert report.record_reference(s) == {"name": "2026-01-01_base", "val_loss": 1.75, "train_time_ms": 300000.0}
    (entry / "record.json").write_text(json.dumps({"config": config}))
    with pytest.raises(study.StudyError, match="lacks preset.*python -m records add"):
        study.load(path)


# ----------------------------------------------------------------------------------------------
# Statistics and metrics against hand-computed values

def test_statistics_against_hand_computed_values():
    s = stats.summarize([1.0, 2.0, 3.0])
    # mean 2, s = 1, t(0.975, df 2) = 4.302653 → half-width 4.302653/√3 = 2.484138
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0) and s.ci95 == pytest.approx(2.484138, abs=1e-6)
    assert stats.summarize([5.0]).mean == 5.0 and math.isnan(stats.summarize([5.0]).ci95)
    # Welch: a = [1,2,3], b = [2,4,6]: t = (2−4)/√(1/3 + 4/3) = −1.549193,
    # df = (5/3)² / ((1/3)²/2 + (4/3)²/2) = 2.941176
    from scipy.stats import t as student
    assert stats.welch_p([1, 2, 3], [2, 4, 6]) == pytest.approx(2 * student.sf(1.549193, 2.941176), rel=1e-5)
    assert math.isnan(stats.welch_p([1.0], [2.0, 3.0]))
    assert stats.ratio(3.0, 2.0) == 1.5 and math.isnan(stats.ratio(1.0, 0.0))


def test_metric_values_from_a_summary():
    info = {"status": "complete", "final_val_loss": 1.5,
            "val_history": [[0, 5.0, 0.0], [100, 2.0, 10000.0], [200, 1.7, 20000.0], [300, 1.5, 30000.0]]}
    value = lambda **m: report.metric_value(study.Metric(**m), info)  # noqa: E731
    assert value(kind="val_loss_at_step") == (1.5, "")
    assert value(kind="val_loss_at_step", step=200) == (1.7, "")
    assert value(kind="val_loss_at_step", step=150)[0] is None
    assert value(kind="val_loss_at_time", seconds=25) == (1.7, "")  # the last validation within 25 s
    assert value(kind="time_to_target", target=1.8) == (20.0, "")  # first val ≤ 1.8, at 20 s
    assert value(kind="time_to_target", target=1.0)[1].startswith("target not reached")
    assert value(kind="steps_to_target", target=1.8) == (200.0, "")  # first val ≤ 1.8, at step 200
    assert value(kind="steps_to_target", target=1.0)[1].startswith("target not reached")
    assert report.metric_value(study.Metric("val_loss_at_step"), {**info, "status": "diverged"}) == (None, "diverged")
    assert report.metric_value(study.Metric("val_loss_at_step"), None) == (None, "not run")


def test_also_metrics_get_their_own_table_from_the_same_runs(tmp_path):
    path = write_study(tmp_path, 'also = [{kind = "steps_to_target", target = 2.0}]\n' + TWO_ARMS)
    s, results = study.load(path), tmp_path / "results"
    results.mkdir()
    runs = s.plan()
    hits = {"baseline": [100, 200], "no_rotary": [300, None]}  # seed 1 of no_rotary never reaches 2.0
    for run in runs:
        hit = hits[run.arm][run.seed]
        history = [[0, 5.0, 0.0]] + [[k, 2.0 if k == hit else 2.5, 10.0 * k] for k in (100, 200, 300)]
        info = {"status": "complete", "final_val_loss": history[-1][1], "val_history": history}
        (results / f"{run.run_id}.json").write_text(json.dumps(info))
    assert s.metric_config() == {"stop_at_target": False}  # a secondary metric does not stop the runs
    text = report.markdown(s, report.collect(s, runs, results), report.arm_rows(s, report.collect(s, runs, results)),
                           None, [])
    base = stats.summarize([100.0, 200.0])
    assert "Also, from the same runs: steps to val loss ≤ 2" in text
    assert f"| `baseline` | none | 2/2 | 150.0 ± {base.ci95:.1f} | 1.0000 | – |" in text
    assert "| `no_rotary` | rotary=false | 1/2 | 300.0 | 2.0000 |" in text


# ----------------------------------------------------------------------------------------------
# Launching

def test_progress_line_and_a_failed_run(tmp_path, capsys):
    script = ("print('step:1/4 train_loss:3.0 train_time:30000ms step_avg:30000.00ms', flush=True);"
              "print('step:1/4 val_loss:3.1 train_time:30000ms step_avg:30000.00ms', flush=True);"
              "print('error: something the run cannot survive'); raise SystemExit(2)")
    with pytest.raises(launch.LaunchError, match="(?s)exit status 2; fix the study file.*cannot survive"):
        launch.execute("[arm b seed 1 | run 2/4]", [sys.executable, "-c", script], tmp_path, "r-s1")
    err = capsys.readouterr().err
    assert "[arm b seed 1 | run 2/4] step 1/4 ETA 1m30s" in err  # 30 s/step × 3 steps left


def test_wandb_flags_and_launcher():
    run = study.Run(0, "a", 3, None, "tiny", {"n_layer": 2})
    args = launch.run_args(run, Path("/r"), "my_study")
    assert args[:2] == ["--preset=tiny", "--n_layer=2"]
    assert {"--seed=3", f"--run_id={run.run_id}", "--log_dir=/r", "--resume=auto", "--wandb=true",
            "--wandb_group=my_study"} <= set(args)
    assert not any(a.startswith("--wandb") for a in launch.run_args(run, Path("/r"), None))
    assert launch.launcher(4)[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]


class FakeTrainer:
    """Stands in for subprocess.Popen: records each command and prints nothing."""

    def __init__(self, calls):
        self.calls = calls

    def __call__(self, command, **kwargs):
        self.calls.append(command)
        self.stdout = iter(())
        return self

    def wait(self):
        return 0


def test_micro_ablation_end_to_end_then_cached(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path, results, out = write_study(tmp_path, TWO_ARMS), tmp_path / "results", tmp_path / "report"
    assert cli.main(["run", str(path), "--results", str(results)]) == 0
    assert "4 run(s) launched, 0 cached" in capsys.readouterr().out
    runs = study.load(path).plan()
    infos = [launch.summary(results, r.run_id) for r in runs]
    assert all(i["status"] == "complete" and i["steps"] == 6 for i in infos)
    assert infos[1]["config"]["rotary"] is False and infos[1]["config"]["seed"] == 0

    assert cli.main(["report", str(path), "--results", str(results), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert text in capsys.readouterr().out
    base = stats.summarize([infos[0]["final_val_loss"], infos[2]["final_val_loss"]])
    variant = stats.summarize([infos[1]["final_val_loss"], infos[3]["final_val_loss"]])
    assert f"| `baseline` | none | 2/2 | {base.mean:.4f} ± {base.ci95:.4f} | 1.0000 | – |" in text
    ratio = variant.mean / base.mean
    assert f"| `no_rotary` | rotary=false | 2/2 | {variant.mean:.4f} ± {variant.ci95:.4f} | {ratio:.4f} |" in text
    for name in ("val_loss_vs_step.png", "val_loss_vs_time.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC) and f"]({name})" in text

    calls = []
    monkeypatch.setattr(launch.subprocess, "Popen", FakeTrainer(calls))
    assert cli.main(["run", str(path), "--results", str(results)]) == 0
    assert calls == [] and "0 run(s) launched, 4 cached" in capsys.readouterr().out

    # an interrupted run (summary still 'running', no checkpoint) starts afresh; the others stay cached
    cut = results / f"{runs[3].run_id}.json"
    cut.write_text(json.dumps({**infos[3], "status": "running"}))
    assert cli.main(["run", str(path), "--results", str(results)]) == 0
    assert len(calls) == 1 and f"--run_id={runs[3].run_id}" in calls[0]
    assert not cut.exists() and not (results / f"{runs[3].run_id}.txt").exists()


def test_a_preempted_run_keeps_its_logs_for_resuming(tmp_path):
    """A run cut off with a checkpoint resumes (--resume=auto); without one its logs are cleared for a fresh start."""
    for run_id in ("kept", "fresh"):
        (tmp_path / f"{run_id}.txt").write_text("partial log")
        (tmp_path / f"{run_id}.json").write_text(json.dumps({"status": "preempted", "steps": 133}))
    (tmp_path / "checkpoints/kept/step_000133").mkdir(parents=True)
    (tmp_path / "checkpoints/kept/step_000133/rank0.pt").write_bytes(b"")
    assert not launch.is_done(tmp_path, "kept") and launch.outcome(tmp_path, "kept") == "preempted at step 133"
    launch.clear_stale(tmp_path, "kept")
    launch.clear_stale(tmp_path, "fresh")
    assert (tmp_path / "kept.txt").exists() and (tmp_path / "kept.json").exists()
    assert not (tmp_path / "fresh.txt").exists() and not (tmp_path / "fresh.json").exists()


def test_slurm_array_script_and_its_tasks(tmp_path, monkeypatch, capsys):
    path, results = write_study(tmp_path, TWO_ARMS), tmp_path / "results"
    argv = ["run", str(path), "--results", str(results), "--backend=slurm", "--nproc=2", "--wandb",
            "--sbatch-option=--partition=gpu"]
    assert cli.main(argv) == 0
    assert f"sbatch {results / 'micro.sbatch'}" in capsys.readouterr().out
    script = (results / "micro.sbatch").read_text()
    for line in ("#SBATCH --array=0-3", "#SBATCH --gpus-per-task=2", "#SBATCH --partition=gpu",
                 "#SBATCH --signal=TERM@120", f"#SBATCH --output={results}/slurm-%A_%a.out", f"cd {ROOT}",
                 f"srun ${{PYTHON:-python}} -m ablations task {results / 'plan.json'} $SLURM_ARRAY_TASK_ID"):
        assert line in script.splitlines()
    runs = study.load(path).plan()
    plan = json.loads((results / "plan.json").read_text())
    assert [e["run_id"] for e in plan["runs"]] == [r.run_id for r in runs] and plan["nproc"] == 2
    assert "--wandb_group=micro" in plan["runs"][0]["args"]

    calls = []
    monkeypatch.setattr(launch.subprocess, "Popen", FakeTrainer(calls))
    fake_summary(results, runs[0], [3.0, 2.0])
    assert cli.main(["task", str(results / "plan.json"), "0"]) == 0  # done: not launched
    assert cli.main(["task", str(results / "plan.json"), "2"]) == 0
    assert len(calls) == 1 and "--nproc_per_node=2" in calls[0] and f"--run_id={runs[2].run_id}" in calls[0]
    assert cli.main(["task", str(results / "plan.json"), "4"]) == 1
    assert "has runs 0..3, not 4" in capsys.readouterr().err


def test_ladder_report_plots_metric_against_model_size(tmp_path):
    path = write_study(tmp_path, """seeds = [0, 1]
metric = {kind = "val_loss_at_step"}
[ladder]
rungs = [{name = "small", n_layer = 2}, {name = "big", n_layer = 4}]
[arms.baseline]
[arms.off]
rotary = false
""", name="ladder")
    s = study.load(path)
    runs, results, out = s.plan(), tmp_path / "results", tmp_path / "report"
    finals = {("small", "baseline"): [2.0, 2.2], ("small", "off"): [2.2, 2.4],
              ("big", "baseline"): [1.5, 1.7], ("big", "off"): [1.8, 2.0]}
    for run in runs[:-1]:  # the last run (big, off, seed 1) has not run yet
        fake_summary(results, run, [5.0, finals[(run.rung, run.arm)][run.seed]],
                     n_params=1000 if run.rung == "small" else 4000)
    text = report.build(s, runs, results, out)
    assert "7 of 8 done" in text and "- Rung big: n_layer=4" in text
    assert report.params_text(1.56e9) == "1.56B" and report.params_text(868352) == "868k"
    # small: baseline 2.1, off 2.3 → ratio 1.0952; p by Welch on [2.2, 2.4] vs [2.0, 2.2] (t = 1.4142, df = 2)
    from scipy.stats import t as student
    p = 2 * student.sf(0.2 / math.sqrt(0.02 / 2 + 0.02 / 2), 2)
    ci = stats.summarize([2.2, 2.4]).ci95
    assert f"| small | 1k | `off` | rotary=false | 2/2 | 2.3000 ± {ci:.4f} | 1.0952 | {p:.4f} |" in text
    assert "| big | 4k | `off` | rotary=false | 1/2 | 1.8000 | 1.1250 | – |" in text
    assert f"| `{runs[-1].run_id}` | big | off | 1 | not run | not run | – |" in text
    for name in ("val_loss_vs_step.png", "val_loss_vs_time.png", "metric_vs_params.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
