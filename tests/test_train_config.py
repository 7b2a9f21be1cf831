"""The config schema (roles, ranges, --help=json), the optimizer table, and the resume rules derived from roles."""
import dataclasses
import json
import subprocess
import sys

import pytest
import torch

import train_gpt
from optimizers.table import TableError
from runtime.config import ROLES, ConfigError, keys_where
from tests.trainer import ROOT, SMALL, logs, losses, run


def test_every_key_declares_a_role_and_a_range():
    for f in dataclasses.fields(train_gpt.Config):
        assert f.metadata["role"] in ROLES and f.metadata["help"], f.name
        assert f.metadata["valid"].problem(f.default) is None, f"{f.name}'s default is outside its own range"


def test_help_json_is_the_schema():
    printed = subprocess.run([sys.executable, "train_gpt.py", "--help=json"], cwd=ROOT, capture_output=True, text=True)
    schema = json.loads(printed.stdout)
    assert set(schema["keys"]) == {f.name for f in dataclasses.fields(train_gpt.Config)}
    assert schema["keys"]["seq_len"]["role"] == "shape" and schema["roles"]["shape"]["on_resume"] == "refuse"
    assert set(schema["presets"]) == set(train_gpt.PRESETS)


def test_role_questions_are_answered_from_roles():
    free_on_resume = keys_where(train_gpt.Config, lambda r: r.on_resume == "free")
    record_free = keys_where(train_gpt.Config, lambda r: r.record_runs_may_differ)
    unhashed = keys_where(train_gpt.Config, lambda r: not r.hashed)
    # the disagreements of the hand-kept lists are gone: a diagnostic is free everywhere, the same way
    assert {"spectral_every", "inject_nan_step"} <= free_on_resume & record_free & unhashed
    assert "seq_len" in keys_where(train_gpt.Config, lambda r: r.on_resume == "refuse")
    assert "lr_hidden" not in free_on_resume | record_free | unhashed


POSITIVE = "it must be finite, in [1, inf]"
HOSTILE = [  # each category of the hostile values once: zero and negative sizes, a huge seed, unknown names, NaN
    *[(f"--{key}={value}", f"--{key}={value} is out of range: {POSITIVE}")
      for key in ("seq_len", "n_head", "model_dim", "mlp_ratio", "global_batch_tokens", "micro_batch_tokens",
                  "val_tokens", "n_layer", "num_iterations", "vocab_size")
      for value in (0, -1)],
    ("--val_tokens=-1024", f"--val_tokens=-1024 is out of range: {POSITIVE}"),
    ("--micro_batch_tokens=-64", f"--micro_batch_tokens=-64 is out of range: {POSITIVE}"),
    ("--seed=99999999999999999999", "--seed=99999999999999999999 is out of range: it must be finite, in "
                                     "[0, 9223372036854775807]"),
    ("--tokenizer=sentencepiece", "--tokenizer='sentencepiece' is out of range: it must be one of gpt2, byte"),
    ("--checkpoint_every=-1", "--checkpoint_every=-1 is out of range: it must be finite, in [0, inf]"),
    ("--warmup_frac=-0.5", "--warmup_frac=-0.5 is out of range: it must be finite, in [0, 1]"),
    ("--cooldown_frac=nan", "--cooldown_frac=nan is out of range: it must be finite, in [0, 1]"),
    ("--logit_softcap=nan", "--logit_softcap=nan is out of range: it must be finite, in [0, inf]"),
    ("--lr_hidden=inf", "--lr_hidden=inf is out of range: it must be finite, in [0, inf]"),
    ("--opt_hidden=adamx", "--opt_hidden='adamx' is out of range: it must be one of sgd"),
]


@pytest.mark.parametrize("arg, message", HOSTILE, ids=[a for a, _ in HOSTILE])
def test_values_outside_their_range_are_refused(arg, message):
    with pytest.raises(ConfigError) as refused:
        train_gpt.parse_args(["--preset=tiny", arg], cuda=False)
    assert str(refused.value).startswith(message)


def test_a_value_out_of_range_stops_before_any_work(tmp_path):
    result = run([*SMALL, "--micro_batch_tokens=-64", f"--log_dir={tmp_path / 'logs'}",
                  f"--checkpoint_dir={tmp_path / 'ckpt'}"])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"error: --micro_batch_tokens=-64 is out of range: {POSITIVE}\n"
    assert list(tmp_path.iterdir()) == []


def table(*args):
    cfg, _, _ = train_gpt.parse_args(["--preset=tiny", *args], cuda=False)
    return train_gpt.optimizer_table(cfg)


def test_optimizer_table_rows():
    rows = table("--hp_embed=betas=0.9,0.99 eps=1e-8")
    assert rows["hidden"] == dict(optimizer="muon", lr=0.05, weight_decay=0.0, momentum=0.95, eps=1e-10)
    assert rows["embed"] == dict(optimizer="adam", lr=0.03, betas=(0.9, 0.99), eps=1e-8)
    assert rows["head"] == dict(optimizer="adam", lr=0.01, betas=(0.8, 0.95), eps=1e-10)
    model = train_gpt.GPT(train_gpt.Config(**train_gpt.PRESETS["tiny"]))
    cfg, _, _ = train_gpt.parse_args(["--preset=tiny", "--hp_embed=betas=0.9,0.99"], cuda=False)
    adam = [o for o in train_gpt.build_optimizers(cfg, model) if type(o).__name__ == "Adam"][0]
    betas = {g["name"]: g["betas"] for g in adam.param_groups}
    assert betas == {"embed": (0.9, 0.99), "head": (0.8, 0.95)}


@pytest.mark.parametrize("args, message", [
    (["--hp_embed=momentum=0.9"], "group embed: optimizer adam takes no 'momentum'"),
    (["--opt_hidden=adamw", "--momentum=0.9"], "--momentum is set but no group's optimizer takes momentum"),
    (["--hp_head=betas"], "write hyperparameters as 'name=value name=value'"),
    (["--hp_hidden=lr=inf"], "--hp_hidden sets lr: use --lr_hidden"),
    (["--hp_embed=optimizer=sgd"], "--hp_embed sets optimizer: use --opt_embed"),
    (["--hp_hidden=weight_decay=-1"], "Muon: weight_decay must be a number in"),
])
def test_optimizer_table_refuses_what_an_optimizer_does_not_take(args, message):
    with pytest.raises((ConfigError, TableError), match=message):
        cfg, _, _ = train_gpt.parse_args(["--preset=tiny", *args], cuda=False)
        train_gpt.build_optimizers(cfg, train_gpt.GPT(cfg))


def test_resume_refuses_a_seq_len_change_with_learned_positions_even_when_forced(tmp_path):
    common = [*SMALL, "--rotary=false", f"--log_dir={tmp_path}", f"--checkpoint_dir={tmp_path / 'ckpt'}",
              "--run_id=p", "--num_iterations=3", "--checkpoint_every=3"]
    assert run(common).returncode == 0
    result = run([*common, "--seq_len=32", "--resume=auto", "--force_resume"])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds another model shape (seq_len: 64 in checkpoint, 32 now)" in lines[0]
    assert torch.load(tmp_path / "ckpt" / "p" / "step_000003" / "rank0.pt", weights_only=False)["step"] == 3


def test_split_qkv_gives_the_fused_qkv_weights_their_own_muon_group():
    cfg, _, _ = train_gpt.parse_args(["--preset=tiny", "--split_qkv"], cuda=False)
    model = train_gpt.GPT(cfg)
    muon = train_gpt.build_optimizers(cfg, model)[0]
    qkv = [g for g in muon.param_groups if g.get("split_rows") == 3]
    assert len(qkv) == 1 and {id(p) for p in qkv[0]["params"]} == {id(b.attn.qkv.weight) for b in model.blocks}
    assert sum(len(g["params"]) for g in muon.param_groups) == len(train_gpt.parameter_groups(model)["hidden"])
    with pytest.raises(TableError, match="--split_qkv needs a hidden optimizer that takes split_rows"):
        train_gpt.build_optimizers(dataclasses.replace(cfg, opt_hidden="adamw"), model)


def test_muon_options_reach_the_optimizer_through_hp_hidden():
    cfg, _, _ = train_gpt.parse_args(
        ["--preset=tiny", "--hp_hidden=ns_coefficients=polar_express normuon=true normuon_axis=by_shape"], cuda=False)
    group = train_gpt.build_optimizers(cfg, train_gpt.GPT(cfg))[0].param_groups[0]
    assert (group["ns_coefficients"], group["normuon"], group["normuon_axis"]) == ("polar_express", True, "by_shape")


def test_muon_reduce_scatter_on_two_ranks_matches_one_rank(tmp_path):
    """--hp_hidden=reduce_gradients=true: DDP leaves the hidden matrices to Muon's own reduce-scatter."""
    args = [*SMALL, f"--log_dir={tmp_path}", "--num_iterations=4", "--val_every=2", "--micro_batch_tokens=512"]
    one = run([*args, "--run_id=one"])
    two = run([*args, "--run_id=two", "--hp_hidden=reduce_gradients=true"], nproc=2)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    (a, _), (b, _) = logs(tmp_path, "one"), logs(tmp_path, "two")
    for (s1, x), (s2, y) in zip(losses(a, "train_loss") + losses(a, "val_loss"),
                                losses(b, "train_loss") + losses(b, "val_loss"), strict=True):
        assert s1 == s2 and abs(x - y) <= 2e-4, (a, b)


def test_a_forced_resume_takes_the_new_learning_rate(tmp_path):
    common = [*SMALL, f"--log_dir={tmp_path}", f"--checkpoint_dir={tmp_path / 'ckpt'}", "--run_id=lr",
              "--checkpoint_every=3"]
    assert run([*common, "--num_iterations=3"]).returncode == 0
    result = run([*common, "--num_iterations=4", "--resume=auto", "--force_resume", "--lr_embed=0.5",
                  "--checkpoint_every=4"])
    assert result.returncode == 0, result.stderr
    state = torch.load(tmp_path / "ckpt" / "lr" / "step_000004" / "rank0.pt", weights_only=False)
    groups = [g for o in state["optimizers"] for g in o["state"]["param_groups"] if g.get("name") == "embed"]
    assert groups and all(g["initial_lr"] == 0.5 for g in groups), groups


def test_a_forced_resume_takes_the_new_momentum_and_cautious_decay(tmp_path):
    """The keys the table derives (initial_momentum for the momentum schedule, cautious_wd) follow the config too."""
    common = [*SMALL, f"--log_dir={tmp_path}", f"--checkpoint_dir={tmp_path / 'ckpt'}", "--run_id=mo",
              "--checkpoint_every=3", "--cautious_wd", "--weight_decay=0.1"]
    assert run([*common, "--num_iterations=3"]).returncode == 0
    result = run([*common, "--num_iterations=4", "--resume=auto", "--force_resume", "--momentum=0.9",
                  "--weight_decay=0.2", "--checkpoint_every=4"])
    assert result.returncode == 0, result.stderr
    state = torch.load(tmp_path / "ckpt" / "mo" / "step_000004" / "rank0.pt", weights_only=False)
    hidden = [g for o in state["optimizers"] for g in o["state"]["param_groups"] if g.get("name") == "hidden"]
    assert hidden and all(g["initial_momentum"] == 0.9 and g["cautious_wd"] == 0.2 for g in hidden), hidden
