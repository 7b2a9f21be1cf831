"""The GPT: the 124M shape, each trick switch, and that the optimizer wiring learns."""
import dataclasses
import math

import pytest
import torch

import train_gpt
from train_gpt import GPT, Config, PRESETS, build_optimizers, parameter_groups


def small(**overrides) -> Config:
    base = dict(vocab_size=96, n_layer=2, model_dim=32, n_head=2, seq_len=16, opt_hidden="adamw",
                lr_hidden=3e-3)
    return Config(**{**base, **overrides})


def test_speedrun_preset_shape_and_parameter_count():
    cfg = Config(**PRESETS["speedrun124m"])
    assert (cfg.n_layer, cfg.model_dim, cfg.n_head, cfg.vocab_size, cfg.seq_len) == (12, 768, 6, 50304, 1024)
    assert cfg.model_dim // cfg.n_head == 128
    with torch.device("meta"):
        model = GPT(cfg)
        logits = model(torch.zeros(2, cfg.seq_len, dtype=torch.long))
    assert logits.shape == (2, cfg.seq_len, 50304)
    d, V = 768, 50304
    per_block = 3 * d * d + d * d + 2 * (4 * d * d)  # qkv, out proj, MLP in and out; no biases or norm gains
    assert sum(p.numel() for p in model.parameters()) == 2 * V * d + 12 * per_block


def test_all_switches_off_is_classic_gpt2():
    cfg = Config(**{**PRESETS["gpt2classic"], "vocab_size": 50257})
    with torch.device("meta"):
        model = GPT(cfg)
    assert sum(p.numel() for p in model.parameters()) == 124_439_808  # GPT-2 small, as published
    assert model.head.weight is model.embed.weight and model.pos_embed is not None
    assert isinstance(model.blocks[0].norm1.layer_norm, torch.nn.LayerNorm)


def test_forward_loss_matches_logits():
    torch.manual_seed(0)
    cfg = small(zero_init_proj=False)
    model = GPT(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, cfg.seq_len))
    logits = model(idx)
    loss = model(idx[:, :-1], idx[:, 1:])
    expected = torch.nn.functional.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
    assert logits.shape == (3, cfg.seq_len, cfg.vocab_size) and torch.allclose(loss, expected)


def logits_of(cfg, idx, seed=0):
    torch.manual_seed(seed)
    return GPT(cfg)(idx)


@pytest.mark.parametrize("switch", ["rotary", "rmsnorm", "qk_norm", "relu2", "untied_head", "zero_init_proj", "bias"])
def test_each_switch_changes_the_model(switch):
    base = small(zero_init_proj=False)
    idx = torch.randint(0, base.vocab_size, (2, base.seq_len))
    flipped = dataclasses.replace(base, **{switch: not getattr(base, switch)})
    assert not torch.allclose(logits_of(base, idx), logits_of(flipped, idx))


def test_switch_semantics():
    cfg = small()
    model = GPT(cfg)
    assert model.pos_embed is None and model.rotary is not None and not hasattr(model.blocks[0].attn, "rotary")  # one shared table
    assert all(p.abs().sum() == 0 for n, p in model.named_parameters() if n.endswith("proj.weight"))
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    assert torch.allclose(model(idx[:, :-1], idx[:, 1:]), torch.tensor(math.log(cfg.vocab_size)))  # zero head
    capped = GPT(small(logit_softcap=0.5, zero_init_proj=False))
    assert capped(idx).abs().max() <= 0.5
    assert not any(n.endswith("bias") for n, _ in model.named_parameters())
    mlp = model.blocks[0].mlp
    x = torch.randn(4, cfg.model_dim)
    assert torch.allclose(mlp(x), mlp.proj(torch.relu(mlp.fc(x)) ** 2))


def test_parameter_groups_cover_every_parameter_once():
    for cfg in (small(), small(untied_head=False, rotary=False, rmsnorm=False, bias=True)):
        model = GPT(cfg)
        groups = parameter_groups(model)
        listed = [id(p) for ps in groups.values() for p in ps]
        assert sorted(listed) == sorted(id(p) for p in model.parameters())
        assert all(p.ndim == 2 for p in groups["hidden"]) and all(p.ndim < 2 for p in groups["scalar"])
    assert groups["head"] == [] and len(groups["embed"]) == 2


@pytest.mark.parametrize("opt_hidden", ["muon", "adamw", "shampoo", "normuon"])
def test_one_optimizer_step_lowers_the_loss(opt_hidden):
    torch.manual_seed(1)
    cfg = small(opt_hidden=opt_hidden, lr_hidden=0.02 if "muon" in opt_hidden else 3e-3)
    model = GPT(cfg)
    opts = build_optimizers(cfg, model)
    idx = torch.randint(0, cfg.vocab_size, (8, cfg.seq_len + 1))
    before = model(idx[:, :-1], idx[:, 1:])
    before.backward()
    for opt in opts:
        opt.step()
    assert model(idx[:, :-1], idx[:, 1:]) < before - 1e-3


def test_lr_schedule_warmup_stable_decay():
    cfg = Config(num_iterations=100, warmup_frac=0.1, cooldown_frac=0.4)
    factors = [train_gpt.lr_factor(cfg, s) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10:60] == [1.0] * 50
    assert factors[80] == pytest.approx(0.5) and factors[99] == pytest.approx(0.025)


def test_chunked_loss_matches_the_one_shot_loss_and_gradients():
    """loss_chunk_tokens computes the same mean cross-entropy and the same gradients (logits recomputed per chunk)."""
    shape = dict(vocab_size=96, n_layer=2, model_dim=32, n_head=2, seq_len=16, zero_init_proj=False)
    idx, targets = torch.randint(0, 96, (3, 16)), torch.randint(0, 96, (3, 16))
    results = []
    for chunk in (0, 7):  # 7 does not divide 48 tokens: the last chunk is short
        torch.manual_seed(0)
        model = GPT(Config(**shape, loss_chunk_tokens=chunk))  # fp32: the logits are fp32 by design
        loss = model(idx, targets)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (one_shot, grads), (chunked, chunk_grads) = results
    with torch.no_grad():  # the plain formula on the full logits
        reference = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), targets.flatten())
    assert torch.allclose(one_shot, chunked, rtol=1e-6) and torch.allclose(chunked, reference, rtol=1e-6)
    for name, g in grads.items():
        assert torch.allclose(g, chunk_grads[name], rtol=1e-4, atol=1e-7), name


def test_embed_norm_feeds_the_blocks_a_unit_rms_embedding():
    cfg = small(embed_norm=True, zero_init_proj=False)
    model, seen = GPT(cfg), []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    model(idx)
    rms = seen[0].square().mean(-1).sqrt()
    assert torch.allclose(rms, torch.ones_like(rms), atol=1e-3)
    plain = GPT(dataclasses.replace(cfg, embed_norm=False))
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain(idx), model(idx))


@pytest.mark.parametrize("init, std_times_root_fan_in", [("fan_in", 1 / 3 ** 0.5), ("half", 0.5)])
def test_linear_init_draws_only_qkv_and_mlp_in_uniformly(init, std_times_root_fan_in):
    cfg = small(model_dim=256, n_head=4, n_layer=2)
    torch.manual_seed(0)
    plain = GPT(cfg)
    torch.manual_seed(0)
    drawn = GPT(dataclasses.replace(cfg, linear_init=init))
    reference = torch.nn.Linear(256, 768).weight  # torch's own default: U(±1/√fan_in)
    drawn_uniformly = [(n, p) for n, p in drawn.named_parameters() if n.endswith(("qkv.weight", "fc.weight"))]
    assert len(drawn_uniformly) == 4
    for name, p in drawn_uniformly:
        bound = (1.0 if init == "fan_in" else 0.5 * 3 ** 0.5) / p.size(1) ** 0.5
        assert p.abs().max().item() <= bound and p.abs().max().item() > 0.99 * bound, name
        assert p.std().item() == pytest.approx(std_times_root_fan_in / p.size(1) ** 0.5, rel=0.02), name
        assert dict(plain.named_parameters())[name].std().item() == pytest.approx(0.02, rel=0.02)  # default
    if init == "fan_in":
        qkv = drawn.blocks[0].attn.qkv.weight
        assert qkv.std().item() == pytest.approx(reference.std().item(), rel=0.02)
    assert torch.equal(drawn.blocks[0].attn.proj.weight, plain.blocks[0].attn.proj.weight)  # zero either way
    assert drawn.embed.weight.std().item() == pytest.approx(0.02, rel=0.03)


def test_embed_init_std_sets_only_the_token_embedding_init():
    cfg = small(vocab_size=4096, model_dim=128)
    torch.manual_seed(0)
    plain = GPT(cfg)
    torch.manual_seed(0)
    wide = GPT(dataclasses.replace(cfg, embed_init_std=1.0))
    assert plain.embed.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert wide.embed.weight.std().item() == pytest.approx(1.0, rel=0.02)
    assert wide.embed.weight.mean().abs().item() < 0.01
    same = {n: p for n, p in plain.named_parameters() if n != "embed.weight"}
    for name, p in wide.named_parameters():
        if name != "embed.weight":
            assert torch.equal(p, same[name]), name  # the rest: the same draws, in the same order
