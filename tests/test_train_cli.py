"""train_gpt.py end to end: logs with embedded sources, the CLI's checks, and ranks vs accumulation."""
import contextlib
import os
import re

import pytest
import torch

import train_gpt
from runtime.distributed import Dist
from tests.trainer import SMALL, logs, losses, run


def test_tiny_trains_end_to_end_and_writes_both_logs(tmp_path):
    result = run([*SMALL, f"--log_dir={tmp_path}", "--run_id=e2e", "--num_iterations=12", "--val_every=6"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("preset tiny: --preset given")
    assert "parameters" in result.stdout.splitlines()[1]
    text, summary = logs(tmp_path, "e2e")
    assert text.startswith("=" * 100 + "\n# train_gpt.py\n")
    for source in ("train_gpt.py", "data/shards.py", "data/embedded.py", "optimizers/__init__.py"):
        assert f"\n# {source}\n" in text
    assert open(train_gpt.__file__).read() in text
    train, val = losses(text, "train_loss"), losses(text, "val_loss")
    assert [s for s, _ in train] == list(range(1, 13)) and [s for s, _ in val] == [0, 6, 12]
    assert val[-1][1] < val[0][1] - 0.5, "a dozen steps must move the loss well below its start"
    assert summary["status"] == "complete" and summary["steps"] == 12 and summary["tokens"] == 12 * 1024
    assert summary["final_val_loss"] == pytest.approx(val[-1][1], abs=1e-4)
    assert summary["config"]["n_layer"] == 2 and len(summary["code_hash"]) == 64
    assert {"torch", "python", "device", "git_commit", "git_dirty"} <= set(summary["hardware"])
    assert "peak memory" in text


def test_stops_at_target(tmp_path):
    result = run([*SMALL, f"--log_dir={tmp_path}", "--run_id=t", "--target_val_loss=99", "--num_iterations=50"])
    assert result.returncode == 0, result.stderr
    text, summary = logs(tmp_path, "t")
    assert summary["steps"] == 0 and summary["reached_target"] and not losses(text, "train_loss")


def test_record_runs_go_past_the_target(tmp_path):
    result = run([*SMALL, f"--log_dir={tmp_path}", "--run_id=t", "--target_val_loss=99", "--stop_at_target=false"])
    assert result.returncode == 0, result.stderr
    text, summary = logs(tmp_path, "t")
    assert summary["steps"] == 6 and summary["reached_target"] and len(losses(text, "train_loss")) == 6
    assert summary["hardware"]["device"].endswith(f"({len(os.sched_getaffinity(0))} cores)")


@pytest.mark.parametrize("args, message", [
    (["--n_layers=3"], "unknown config key --n_layers; did you mean 'n_layer'?"),
    (["--n_layer=three"], "--n_layer expects an int, got 'three'"),
    (["--compile=maybe"], "--compile='maybe' is out of range: it must be one of auto, true, false"),
    (["--preset=tinyy"], "unknown preset 'tinyy'; did you mean 'tiny'?"),
    (["--lr_hidden"], "--lr_hidden needs a value"),
    (["n_layer=3"], "unexpected argument 'n_layer=3'"),
])
def test_bad_command_lines_are_rejected(args, message):
    with pytest.raises(train_gpt.ConfigError) as info:
        train_gpt.parse_args(args, cuda=False)
    assert message in str(info.value)


def test_bad_values_exit_with_one_line(tmp_path):
    result = run(["--n_layer=x", f"--log_dir={tmp_path}"])
    assert result.returncode == 2 and result.stderr.strip() == "error: --n_layer expects an int, got 'x'"
    result = run([*SMALL, "--global_batch_tokens=1000", f"--log_dir={tmp_path}"])
    assert result.returncode == 2 and "not divisible by world size 1 × seq_len 64" in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


def test_help_lists_every_key():
    result = run(["--help"])
    assert result.returncode == 0
    assert all(f"--{name}" in result.stdout for name in train_gpt.FIELDS)


def test_two_ranks_match_one_rank_with_accumulation(tmp_path):
    """gloo, 2 processes × 1 micro-batch vs 1 process × 2 micro-batches: same data, same averaged gradient."""
    args = [*SMALL, "--micro_batch_tokens=512", "--num_iterations=5", "--val_every=5", f"--log_dir={tmp_path}"]
    two = run([*args, "--run_id=two"], nproc=2)
    one = run([*args, "--run_id=one"])
    assert two.returncode == 0 and one.returncode == 0, two.stderr + one.stderr
    (text2, summary2), (text1, _summary1) = logs(tmp_path, "two"), logs(tmp_path, "one")
    assert summary2["hardware"]["world_size"] == 2 and "1 accumulation step(s)" in text2
    assert "2 accumulation step(s)" in text1
    sequence2, sequence1 = losses(text2, "train_loss") + losses(text2, "val_loss"), \
        losses(text1, "train_loss") + losses(text1, "val_loss")
    assert len(sequence1) == 7
    # Printed to 4 decimals; float sums in another order may flip the last digit.
    for (s2, l2), (s1, l1) in zip(sequence2, sequence1, strict=True):
        assert s2 == s1 and abs(l2 - l1) <= 2e-4


@pytest.mark.parametrize("name", ["adamw", "shampoo", "schedulefree_adamw", "normuon"])
def test_one_flag_swaps_the_hidden_optimizer(tmp_path, name):
    lr = {"adamw": "0.003", "shampoo": "0.003", "schedulefree_adamw": "0.003", "normuon": "0.05"}[name]
    result = run([*SMALL, f"--opt_hidden={name}", f"--lr_hidden={lr}", f"--log_dir={tmp_path}", "--run_id=o"])
    assert result.returncode == 0, result.stderr
    text, summary = logs(tmp_path, "o")
    expected = {"adamw": "AdamW", "shampoo": "Shampoo", "schedulefree_adamw": "ScheduleFreeAdamW", "normuon": "NorMuon"}
    assert f"optimizers: {expected[name]}(hidden)" in text
    val = losses(text, "val_loss")
    assert val[-1][1] < val[0][1] - 0.5


def test_evaluation_uses_schedule_free_eval_weights():
    """evaluate() must put optimizers with an eval mode into it, and back into train mode after."""
    calls = []

    class Recorder:
        def eval(self):
            calls.append("eval")

        def train(self):
            calls.append("train")

    class Model(torch.nn.Module):
        def forward(self, x, y):
            calls.append("forward")
            return torch.zeros(())

    class Loader:
        accum = 1

        def reset(self):
            pass

        def next_batch(self):
            yield None, None

    solo = Dist(0, 0, 1, torch.device("cpu"))
    train_gpt.evaluate(Model(), [Recorder(), torch.optim.SGD([torch.zeros(1, requires_grad=True)])], Loader(), 2,
                       solo, contextlib.nullcontext)
    assert calls == ["eval", "forward", "forward", "train"]


def test_wandb_logging_when_asked(tmp_path):
    """--wandb with the real package in offline mode: its run folder holds the run's output and config."""
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = run([*SMALL, "--wandb", "--wandb_group=study", f"--log_dir={tmp_path}", "--run_id=w"], env=env)
    assert result.returncode == 0, result.stderr
    runs = list((tmp_path / "wandb").glob("offline-run-*-w"))
    assert len(runs) == 1, list((tmp_path / "wandb").iterdir())
    text, _ = logs(tmp_path, "w")
    step_lines = [line for line in text.splitlines() if line.startswith("step:")]
    captured = (runs[0] / "files" / "output.log").read_text().splitlines()
    assert [line for line in captured if line.startswith("step:")] == step_lines and len(step_lines) == 9
    records = (runs[0] / "run-w.wandb").read_bytes()  # protobuf records: config items are (key, JSON value) pairs
    assert re.search(rb"\x07n_layer\x82\x01\x012", records), "the config (n_layer = 2) was not logged"
    assert b"study" in records and b"nanogpt-speedrun" in records
    assert records.count(b"val_loss") >= 3 and records.count(b"train_loss") >= 6


def test_wandb_missing_is_a_clear_error(tmp_path):
    hidden = tmp_path / "no_wandb" / "wandb"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('wandb is not installed')\n")
    logs_dir = tmp_path / "logs"
    result = run([*SMALL, "--wandb", f"--log_dir={logs_dir}"], env={"PYTHONPATH": str(hidden.parent)})
    assert result.returncode == 2 and "--wandb needs the wandb package: pip install wandb" in result.stderr
    assert not logs_dir.exists(), "no log is started for a run that cannot log"


def test_compile_and_bf16_autocast_are_honoured_on_cpu(tmp_path):
    """--compile=true and --autocast=bf16 take effect on CPU too: the run trains, and differs from fp32 eager."""
    tiny = [*SMALL, "--n_layer=1", "--model_dim=32", "--num_iterations=3", "--val_every=0", f"--log_dir={tmp_path}"]
    eager = run([*tiny, "--run_id=eager"])
    compiled = run([*tiny, "--run_id=compiled", "--compile=true", "--autocast=bf16"], env={"TORCH_LOGS": "graph_breaks"})
    assert eager.returncode == 0 and compiled.returncode == 0, compiled.stderr
    assert "Graph break" not in compiled.stderr, compiled.stderr
    (e, _), (c, summary) = logs(tmp_path, "eager"), logs(tmp_path, "compiled")
    assert summary["config"]["compile"] == "true" and summary["config"]["autocast"] == "bf16"
    eager_losses, bf16_losses = losses(e, "train_loss"), losses(c, "train_loss")
    assert [s for s, _ in bf16_losses] == [1, 2, 3] and eager_losses != bf16_losses
    assert all(abs(a - b) < 0.1 for (_, a), (_, b) in zip(eager_losses, bf16_losses)), (eager_losses, bf16_losses)


def test_ddp_compiled_forward_has_no_graph_break(tmp_path):
    """Two gloo ranks, compiled: one shared rotary table and no buffer broadcast, so dynamo sees one graph."""
    result = run([*SMALL, "--n_layer=1", "--model_dim=32", "--num_iterations=2", "--val_every=0", "--compile=true",
                  f"--log_dir={tmp_path}", "--run_id=ddp"], nproc=2, env={"TORCH_LOGS": "graph_breaks"})
    assert result.returncode == 0, result.stderr
    assert "Graph break" not in result.stderr, result.stderr[-3000:]


def test_untimed_warmup_leaves_the_run_unchanged(tmp_path):
    """--warmup_steps runs steps before the clock, then restores everything: the same losses digit for digit."""
    args = [*SMALL, f"--log_dir={tmp_path}", "--num_iterations=4", "--val_every=2"]
    plain, warmed = run([*args, "--run_id=plain"]), run([*args, "--run_id=warm", "--warmup_steps=3"])
    assert plain.returncode == 0 and warmed.returncode == 0, warmed.stderr
    assert "# warmup: 3 untimed step(s)" in warmed.stdout
    (a, _), (b, _) = logs(tmp_path, "plain"), logs(tmp_path, "warm")
    assert losses(a, "train_loss") == losses(b, "train_loss") and losses(a, "val_loss") == losses(b, "val_loss")
    assert len(losses(b, "train_loss")) == 4
