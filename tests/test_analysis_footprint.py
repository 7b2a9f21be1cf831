"""analysis/footprint.py and the formulas of runtime/footprint.py against the decks' (ZeRO paper's) figures, the real model and the real optimizers."""
import math

import pytest
import torch

import optimizers
import train_gpt
from analysis import footprint as fp
from runtime import footprint as formulas

GPT2_XL = fp.build_config("gpt2-xl", {})


def within(value: float, expected: float, tolerance: float = 0.10) -> bool:
    return abs(value - expected) <= tolerance * expected


@pytest.mark.parametrize("preset", ["tiny", "speedrun124m", "gpt2classic", "gpt2-xl"])
def test_parameter_counts_by_hand(preset):
    """Per group, against the GPT's hand count: 12·L·h² in the blocks (MLP ratio 4), V·h embedding
    (+ s·h learned positions), V·h untied head, and 13·L·h + 2h of biases and LayerNorms when on."""
    cfg = fp.build_config(preset, {})
    L, h, V, s = cfg.n_layer, cfg.model_dim, cfg.vocab_size, cfg.seq_len
    counts = {g: sum(fp.count(shape) for shape in shapes) for g, shapes in fp.parameter_shapes(cfg).items()}
    assert counts["hidden"] == 12 * L * h * h
    assert counts["embed"] == V * h + (0 if cfg.rotary else s * h)
    assert counts["head"] == (V * h if cfg.untied_head else 0)
    assert counts["scalar"] == (13 * L * h + 2 * h if cfg.bias and not cfg.rmsnorm else 0)


def test_gpt2_xl_mixed_adam_model_states_are_16_psi_about_24_gb():
    result = fp.footprint(GPT2_XL, "adam", "mixed", micro_batch=32)
    states = result.rows["parameters"] + result.rows["gradients"] + result.rows["optimizer states"]
    assert result.n_params == 1_557_611_200  # GPT-2 XL, "1.5B"
    assert states == 16 * result.n_params
    assert within(states / formulas.GB, 24)


def test_gpt2_xl_activations_about_60_gb_and_8_gb_with_checkpointing():
    full = formulas.activation_bytes(GPT2_XL, 32, "mixed", checkpointing=False, model="zero")["activations (layers)"]
    saved = formulas.activation_bytes(GPT2_XL, 32, "mixed", checkpointing=True, model="zero")["activations (layers)"]
    assert within(full / formulas.GB, 60) and within(saved / formulas.GB, 8)


def test_zero_stages_reproduce_the_papers_figure_1():
    """Ψ = 7.5B, K = 12 (mixed Adam), N_d = 64: 120, 31.4, 16.6 and 1.88 GB per GPU."""
    psi = 7.5e9
    for stage, expected in enumerate([120, 31.4, 16.6, 1.88]):
        total = sum(formulas.model_state_bytes(psi, 2 * psi, "mixed", zero=stage, dp=64).values()) / formulas.GB
        assert within(total, expected, 0.02), (stage, total)


def test_korthikanti_layer_count():
    """34·sbh + 5·a·s²·b bytes per layer at MLP ratio 4; flash drops the scores; checkpointing keeps 2sbh."""
    cfg = train_gpt.Config(n_layer=3, model_dim=96, n_head=4, seq_len=128, vocab_size=100, logit_softcap=0)
    s, b, h, a = 128, 5, 96, 4
    rows = formulas.activation_bytes(cfg, b, "mixed", checkpointing=False, flash=False)
    assert rows["activations (layers)"] == pytest.approx(3 * (34 * s * b * h + 5 * a * s * s * b))
    assert rows["activations (logits)"] == 4 * s * b * 100
    flash = formulas.activation_bytes(cfg, b, "fp32", checkpointing=True)
    assert flash["activations (layers)"] == pytest.approx(2 * (3 * 2 * s * b * h + 34 * s * b * h))


@pytest.mark.parametrize("wiring", [
    {},  # the preset's: Muon for hidden matrices, Adam for the rest
    dict(opt_hidden="shampoo", opt_embed="shampoo", opt_head="shampoo", opt_scalar="shampoo"),
    dict(opt_hidden="sgd", opt_embed="adamw", opt_head="sgd", opt_scalar="rmsprop"),
])
def test_state_numbers_match_the_optimizers(wiring):
    cfg = train_gpt.Config(**{**train_gpt.PRESETS["gpt2classic"], **wiring, "n_layer": 2, "model_dim": 32,
                              "n_head": 2, "seq_len": 16, "vocab_size": 64, "device": "cpu"})
    torch.manual_seed(0)
    model = train_gpt.GPT(cfg)
    opts = train_gpt.build_optimizers(cfg, model)
    model(torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16))).backward()
    for opt in opts:
        opt.step()
    held = sum(t.numel() for opt in opts for state in opt.state.values()
               for t in torch.utils._pytree.tree_leaves(dict(state)) if torch.is_tensor(t) and t.ndim > 0)
    chosen, expected = fp.optimizer_state(cfg, None)
    assert held == expected
    assert chosen == {group["name"]: type(opt).name for opt in opts for group in opt.param_groups}


def test_muon_alone_gives_adam_to_non_matrices():
    cfg = fp.build_config("tiny", {})
    chosen, state = fp.optimizer_state(cfg, "muon")
    assert chosen == {"hidden": "muon", "embed": "adam", "head": "adam", "scalar": "adam"}
    shapes = fp.parameter_shapes(cfg)
    assert state == sum(fp.count(s) * (1 if group == "hidden" else 2) for group, ss in shapes.items() for s in ss)
    assert optimizers.SGD.state_numel((10, 10)) == 0 and optimizers.SGD.state_numel((10, 10), momentum=0.9) == 100


def test_cli_prints_the_table(capsys):
    assert fp.main(["--preset=gpt2-xl", "--optimizer=adam", "--precision=mixed", "--micro_batch=32",
                    "--activation_model=zero", "--zero=3", "--dp=8", "--checkpointing"]) == 0
    out = capsys.readouterr().out
    assert "1,557,611,200 parameters" in out and "ZeRO-3 over 8 rank(s)" in out
    row = next(line for line in out.splitlines() if line.startswith("parameters"))
    assert math.isclose(float(row.split()[-2]), 2 * 1_557_611_200 / 8 / 1e9, abs_tol=0.01)


def test_cli_rejects_unknown_preset(capsys):
    with pytest.raises(SystemExit):
        fp.main(["--preset=gpt5"])
    assert "unknown preset 'gpt5'" in capsys.readouterr().err
