"""The public record's tricks (model.py): each switch against an independent forward pass,
off leaves the model as it was, and the schedules against their formulas."""
import contextlib
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import train_gpt
from model import (
    GPT,
    TRICK_WEIGHTS,
    Rotary,
    aux_loss_weights,
    auxiliary_loss,
    value_embed_layout,
)
from optimizers import schedule
from runtime.distributed import Dist
from train_gpt import Config, build_optimizers, parameter_groups


def small(**overrides) -> Config:
    base = dict(vocab_size=96, n_layer=4, model_dim=32, n_head=2, seq_len=16, gate_dim=6, zero_init_proj=False)
    return Config(**{**base, **overrides})


SWITCHES = {  # each trick alone, as a set of config changes
    "value_residual": dict(value_residual=True),
    "x0_mix": dict(x0_mix=True),
    "unet_skips": dict(unet_skips=True),
    "skip_gates": dict(unet_skips=True, skip_gates=True),
    "value_embeds": dict(value_embeds=1),
    "value_embeds_untied": dict(value_embeds=2, value_embeds_tied=False),
    "value_embed_gates": dict(value_embeds=2, value_embed_gates=True),
    "attn_scale": dict(attn_scale=0.12),
    "rotary_half": dict(rotary_half=True),
    "key_offset": dict(key_offset=True),
    "attn_gate": dict(attn_gate=True),
    "smear": dict(smear=True),
    "paired_heads": dict(paired_heads="0,2", n_head=4),  # 4 heads: two pairs
    "drop_first_mlp": dict(drop_first_mlp=True),
    "drop_first_attn": dict(drop_first_attn=True),
    "backout": dict(backout=True),
    "bigram": dict(bigram_vocab=50),
    "bigram_signs": dict(bigram_vocab=50, bigram_signs=16),
    "logit_cap_tanh15": dict(logit_softcap=15.0),
    "logit_cap_sigmoid": dict(logit_cap="sigmoid", logit_softcap=23.0),
}
EVERYTHING = {k: v for change in SWITCHES.values() for k, v in change.items()} | dict(value_embeds=1, n_layer=5,
                                                                                     key_offset=False)


def reference_logits(model: GPT, cfg: Config, idx):
    """The model's forward pass written out again from its parameters, every trick by its formula."""
    P = dict(model.named_parameters())
    n, K, gd, H = cfg.n_layer, cfg.value_embeds, cfg.gate_dim, cfg.n_head
    B, T = idx.shape
    first = 1 if cfg.drop_first_attn else 0
    table = {}
    for j in range(K):
        table[first + j], table[n - 1 - j] = j, (j if cfg.value_embeds_tied else K + j)
    x = P["embed.weight"][idx]
    if cfg.smear:
        g = P["smear.smear_lambda"] * torch.sigmoid(x[:, 1:, :gd] @ P["smear.smear_gate"][0])[..., None]
        x = torch.cat([x[:, :1], x[:, 1:] + g * x[:, :-1]], dim=1)
    x0 = x
    bigram = 0
    if cfg.bigram_vocab:
        M, rows, which = cfg.bigram_vocab, torch.empty_like(idx), torch.zeros_like(idx)
        for b in range(B):
            rows[b, 0] = M - 1
            for t in range(1, T):
                prev, cur = int(idx[b, t - 1]), int(idx[b, t])
                rows[b, t] = ((36313 * cur) ^ (27191 * prev)) % (M - 1)
                which[b, t] = (prev ^ cur) % max(cfg.bigram_signs, 1)
        bigram = P["bigram.table.weight"][rows]
        if cfg.bigram_signs:
            bigram = bigram * model.bigram.signs[which]
    v1, outputs = None, {}
    for i in range(n):
        pre = f"blocks.{i}."
        j = n - 1 - i  # U-net: the mirrored block of the first half
        if cfg.unet_skips and j < n // 2 and j < i:
            w = P["skips.skip_weights"][j]
            if cfg.skip_gates:
                w = w * 2 * torch.sigmoid(x0[..., :gd] @ P["skips.skip_gate"][j])[..., None]
            x = x + w * outputs[j]
        if cfg.bigram_vocab:
            x = x + P["bigram.bigram_lambdas"][i] * bigram
        if cfg.x0_mix:
            a, b = P[pre + "x0_mix.x0_lambdas"]
            x = a * x + b * x0
        if i == 0 and cfg.drop_first_attn:
            if not cfg.drop_first_mlp:
                x = x + model.blocks[i].mlp(F.rms_norm(x, (cfg.model_dim,)))
            outputs[i] = x
            continue
        h = F.rms_norm(x, (cfg.model_dim,))
        q, k, v = (h @ P[pre + "attn.qkv.weight"].T).view(B, T, 3, H, -1).unbind(2)
        own_v = v
        if cfg.value_residual and i > first:
            lam = P[pre + "attn.value_residual.value_lambda"]
            v = (1 - lam) * v + lam * v1
        if i in table:
            e = P[f"value_embeds.tables.{table[i]}.weight"][idx].view(B, T, H, -1)
            if cfg.value_embed_gates:
                g = 2 * torch.sigmoid(h[..., :gd] @ P[pre + "attn.value_embed.ve_gate"].T)  # (B, T, H)
                v = v + g[..., None] * e
            else:
                v = v + P[pre + "attn.value_embed.ve_lambda"] * e
        q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))
        scale = cfg.attn_scale or 1 / math.sqrt(q.size(-1))
        if i in {int(j) for j in cfg.paired_heads.split(",") if j}:
            y = torch.empty_like(v)
            for j in range(H // 2):  # heads 2j, 2j+1 as one sequence: position 2t + p is head 2j + p at t
                seq = [torch.stack([z[:, t, 2 * j + p] for t in range(T) for p in (0, 1)], dim=1) for z in (q, k, v)]
                qs, ks = model.rotary(seq[0][:, :, None])[:, :, 0], model.rotary(seq[1][:, :, None])[:, :, 0]
                att = (qs @ ks.transpose(1, 2) * scale).masked_fill(torch.ones(2 * T, 2 * T, dtype=torch.bool).triu(1),
                                                                    float("-inf")).softmax(-1) @ seq[2]
                for t in range(T):
                    for p in (0, 1):
                        y[:, t, 2 * j + p] = att[:, 2 * t + p]
        else:
            q, k = model.rotary(q), model.rotary(k)
            if cfg.key_offset:  # the record's in-place form
                D = k.size(-1)
                k = k.clone()
                k[:, 1:, :, D // 4:D // 2] = k[:, :-1, :, D // 4:D // 2].clone()
                k[:, 1:, :, 3 * D // 4:] = k[:, :-1, :, 3 * D // 4:].clone()
            scores = torch.einsum("bthd,bshd->bhts", q, k) * scale
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            y = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v)
        if cfg.attn_gate:
            y = y * torch.sigmoid(h[..., :gd] @ P[pre + "attn.gate.attn_gate"].T)[..., None]
        x = x + y.reshape(B, T, -1) @ P[pre + "attn.proj.weight"].T
        if not (i == 0 and cfg.drop_first_mlp):
            x = x + model.blocks[i].mlp(F.rms_norm(x, (cfg.model_dim,)))
        v1 = own_v if i == first else v1
        outputs[i] = x
    if cfg.backout:
        x = x - P["backout_lambda"] * outputs[2 * n // 3]
    z = F.rms_norm(x, (cfg.model_dim,)) @ P["head.weight"].T
    c = cfg.logit_softcap
    if cfg.logit_cap == "sigmoid":
        return c * torch.sigmoid((z + cfg.logit_cap_offset) / cfg.logit_cap_scale)
    return c * torch.tanh(z / c)


def model_with_random_trick_weights(cfg: Config, seed=0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(TRICK_WEIGHTS) or name.startswith("bigram.table."):  # the bigram table starts at 0
                p.uniform_(-1.5, 1.5)
    return model


@pytest.mark.parametrize("name", ["off", *SWITCHES, "everything"])
def test_each_trick_matches_its_formula(name):
    change = {} if name == "off" else EVERYTHING if name == "everything" else SWITCHES[name]
    cfg = small(**change)
    model = model_with_random_trick_weights(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    assert torch.allclose(model(idx), reference_logits(model, cfg, idx), atol=1e-4)


@pytest.mark.parametrize("name", SWITCHES)
def test_each_trick_changes_the_output(name):
    base, cfg = small(), small(**SWITCHES[name])
    if name in ("skip_gates", "value_embed_gates"):  # a gate against the same trick ungated
        base = dataclasses.replace(cfg, skip_gates=False, value_embed_gates=False)
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    assert not torch.allclose(model_with_random_trick_weights(base)(idx), model_with_random_trick_weights(cfg)(idx))


def test_off_adds_nothing_and_the_identity_inits_change_nothing():
    """Defaults: no trick parameters. x0 mixing at (1, 0) and gates at 0 (gate 1) start as the identity, and
    building the tricks' modules draws no random numbers, so the other weights are the same."""
    idx = torch.randint(0, 96, (2, 16))
    plain = GPT(small())
    assert not [n for n, _ in plain.named_parameters() if n.endswith(TRICK_WEIGHTS) or "value_embeds" in n]
    for before, after in [({}, dict(x0_mix=True)), (dict(unet_skips=True), dict(unet_skips=True, skip_gates=True)),
                          (dict(value_embeds=2), dict(value_embeds=2, value_embed_gates=True))]:
        torch.manual_seed(3)
        a = GPT(small(**before))
        torch.manual_seed(3)
        b = GPT(small(**after))
        if "value_embed_gates" in after:  # gate 2σ(0) = 1 vs λ = 0.5: set λ to 1 for the comparison
            with torch.no_grad():
                for block in a.blocks:
                    if block.attn.value_embed is not None:
                        block.attn.value_embed.ve_lambda.fill_(1.0)
        assert torch.allclose(a(idx), b(idx), atol=1e-6), (before, after)


def test_half_truncated_rotary_table():
    rotary = Rotary(16, 10, 10000.0, half_truncated=True)
    expected = torch.cat([(1 / 1024) ** torch.linspace(0, 1, 4), torch.zeros(4)])
    assert torch.allclose(rotary.cos[0, 3, 0], torch.cos(3 * expected))
    x = torch.randn(1, 10, 2, 16)
    stationary = [*range(4, 8), *range(12, 16)]  # the pairs with frequency 0 are not rotated
    assert torch.equal(rotary(x)[..., stationary], x[..., stationary])
    assert not torch.allclose(rotary(x)[..., :4], x[..., :4])


def test_bigram_table_starts_at_zero_and_signs_are_fixed():
    a, b = GPT(small(bigram_vocab=50, bigram_signs=16)), GPT(small(bigram_vocab=50, bigram_signs=16))
    assert a.bigram.table.weight.abs().sum() == 0
    assert torch.equal(a.bigram.signs, b.bigram.signs) and set(a.bigram.signs.unique().tolist()) == {-1.0, 1.0}
    assert "bigram.signs" not in a.state_dict()


def test_dropped_layers_have_no_weights():
    model = GPT(small(drop_first_mlp=True, drop_first_attn=True))
    assert model.blocks[0].mlp is None and model.blocks[0].attn is None and model.blocks[1].mlp is not None
    assert not any(n.startswith("blocks.0.") for n, _ in model.named_parameters())


def test_value_embed_layout_is_a_u_net():
    assert value_embed_layout(small(n_layer=12, value_embeds=3)) == {0: 0, 1: 1, 2: 2, 11: 0, 10: 1, 9: 2}
    assert value_embed_layout(small(n_layer=12, value_embeds=3, value_embeds_tied=False)) == \
        {0: 0, 1: 1, 2: 2, 11: 3, 10: 4, 9: 5}
    with pytest.raises(train_gpt.ConfigError, match="value_embeds 3 needs"):
        train_gpt.check_config(small(n_layer=5, value_embeds=3, seq_len=16, global_batch_tokens=64,
                                     micro_batch_tokens=64, val_tokens=64), 1)


def test_trick_weights_go_to_the_scalar_group_and_value_embeddings_to_embed():
    model = GPT(small(**EVERYTHING))
    groups = {g: {id(p) for p in ps} for g, ps in parameter_groups(model).items()}
    for name, p in model.named_parameters():
        if name.endswith(TRICK_WEIGHTS):
            assert id(p) in groups["scalar"], name
        if name.startswith("value_embeds."):
            assert id(p) in groups["embed"], name
    assert sum(map(len, groups.values())) == len(list(model.parameters()))


def test_lr_floor_decays_to_a_fraction():
    cfg = Config(num_iterations=100, warmup_frac=0.0, cooldown_frac=0.5, lr_floor=0.1)
    assert schedule.lr_factor(cfg, 50) == 1.0
    for step in (60, 75, 99):  # record #19: w·1 + (1 − w)·0.1, w = the linear cooldown's remaining fraction
        w = (100 - step) / 50
        assert schedule.lr_factor(cfg, step) == pytest.approx(w + (1 - w) * 0.1)
    assert schedule.lr_factor(dataclasses.replace(cfg, lr_floor=0.0), 75) == pytest.approx(0.5)


def test_momentum_warmup_and_cooldown():
    cfg = Config(num_iterations=1000, momentum_warmup_steps=300, momentum_cooldown_steps=50)
    m = [schedule.momentum(cfg, s, 0.95) for s in range(1000)]
    assert m[0] == pytest.approx(0.85) and m[150] == pytest.approx(0.90) and m[300:951] == [0.95] * 651
    assert m[975] == pytest.approx(0.90) and m[999] == pytest.approx(0.95 - 0.1 * 49 / 50)
    assert [schedule.momentum(Config(), s, 0.95) for s in (0, 900, 1749)] == [0.95] * 3
    assert schedule.momentum_at(5, 10, 0.9, 0.5, 10, 0) == pytest.approx(0.7)


def test_train_step_sets_the_scheduled_momentum_of_the_muon_group_only():
    cfg = small(opt_hidden="muon", momentum_warmup_steps=10, num_iterations=20)

    class Loader:
        def next_batch(self, global_tokens=None, max_doc_len=None):
            idx = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len + 1))
            yield idx[:, :-1], idx[:, 1:]

    model = GPT(cfg)
    opts = build_optimizers(cfg, model)
    trainer = train_gpt.Trainer(cfg, Dist(0, 0, 1, torch.device("cpu")), model, model, opts, Loader(),
                                contextlib.nullcontext)
    trainer.train_step(4, False)
    groups = {g["name"]: g for o in opts for g in o.param_groups}
    assert groups["hidden"]["momentum"] == pytest.approx(0.85 + 0.1 * 4 / 10)
    assert all("momentum" not in g for name, g in groups.items() if name != "hidden")


def test_record_presets():
    tiny, tiny_record = Config(**train_gpt.PRESETS["tiny"]), Config(**train_gpt.PRESETS["tiny_record"])
    changed = {f.name for f in dataclasses.fields(Config) if getattr(tiny, f.name) != getattr(tiny_record, f.name)}
    assert changed == {"value_residual", "x0_mix", "unet_skips", "momentum_warmup_steps", "num_iterations",
                       "cooldown_frac", "val_every"}  # the same data, shape, batch and learning rates
    assert (tiny_record.num_iterations, tiny_record.cooldown_frac, tiny_record.momentum_warmup_steps) == (250, 0.6, 40)
    record = Config(**train_gpt.PRESETS["record"])
    assert (record.n_layer, record.model_dim, record.num_iterations, record.global_batch_tokens) == \
        (12, 768, 3000, 8 * 64 * 1024)
    assert record.cooldown_frac * record.num_iterations == pytest.approx(900)  # #11: warmdown_iters = 900


def test_record_preset_runs_end_to_end_on_cpu(tmp_path):
    from tests.trainer import logs, losses, run
    reduced = ["--preset=record", "--dataset=shakespeare", "--tokenizer=byte", "--vocab_size=320", "--reuse_data",
               "--n_layer=4", "--model_dim=64", "--n_head=2", "--seq_len=64", "--global_batch_tokens=1024",
               "--micro_batch_tokens=512", "--num_iterations=8", "--momentum_warmup_steps=4", "--val_every=4",
               "--val_tokens=1024", "--device=cpu", f"--log_dir={tmp_path}", "--run_id=rec"]
    result = run(reduced)
    assert result.returncode == 0, result.stderr
    text, summary = logs(tmp_path, "rec")
    assert result.stdout.startswith("preset record")
    assert summary["status"] == "complete" and summary["steps"] == 8
    val = losses(text, "val_loss")
    assert val[-1][1] < val[0][1] - 0.3


def test_cautious_decay_formula():
    from optimizers.cautious import cautious_decay_
    x0 = torch.randn(50)
    x = x0 - 0.1 * torch.randn(50)
    u = x0 - x
    expected = torch.tensor([xi - 0.3 * a if (ui > 0) == (a > 0) else xi for xi, a, ui in zip(x, x0, u)])
    cautious_decay_([x], [x0], 0.3)
    assert torch.allclose(x, expected)


def one_step(cfg: Config, seed=0):
    """A model after one train_step on a fixed batch, and its parameters before it."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len + 1), generator=torch.Generator().manual_seed(1))

    class Loader:
        def next_batch(self, global_tokens=None, max_doc_len=None):
            yield batch[:, :-1], batch[:, 1:]

    opts = build_optimizers(cfg, model)
    train_gpt.Trainer(cfg, Dist(0, 0, 1, torch.device("cpu")), model, model, opts, Loader(),
                      contextlib.nullcontext).train_step(0, False)
    return model, start, opts


def test_cautious_weight_decay_on_muon_and_adam_groups():
    base = small(opt_hidden="muon", lr_hidden=0.02, lr_scalar=0.01, hp_embed="weight_decay=0.5", num_iterations=10)
    plain, start, _ = one_step(dataclasses.replace(base, hp_embed=""))
    cautious, _, opts = one_step(dataclasses.replace(base, cautious_wd=True, weight_decay=2.0))
    groups = {g["name"]: g for o in opts for g in o.param_groups}
    assert groups["hidden"]["weight_decay"] == 0 and groups["hidden"]["cautious_wd"] == 2.0
    assert groups["embed"]["cautious_wd"] == 0.5 and "cautious_wd" not in groups["head"]
    lam = {"hidden": 2.0 * 0.02, "embed": 0.5 * base.lr_embed}
    kind = {id(p): g for g, ps in parameter_groups(cautious).items() for p in ps}
    P = dict(plain.named_parameters())
    for name, p in cautious.named_parameters():
        x0, x = start[name], P[name].detach()
        decay = lam.get(kind[id(p)], 0.0)
        expected = x - decay * torch.where((x0 - x) * x0 >= 0, x0, torch.zeros_like(x0))
        assert torch.allclose(p.detach(), expected, atol=1e-6), name
    assert (P["blocks.0.attn.qkv.weight"] != cautious.blocks[0].attn.qkv.weight).any()


def test_adam_groups_step_every_other_step_on_summed_gradients():
    import copy
    cfg = small(opt_hidden="muon", lr_hidden=0.02, adam_step_every=2, num_iterations=10)
    torch.manual_seed(0)
    model = GPT(cfg)
    batches = [torch.randint(0, cfg.vocab_size, (2, cfg.seq_len + 1)) for _ in range(2)]

    class Loader:
        step = 0

        def next_batch(self, global_tokens=None, max_doc_len=None):
            yield batches[self.step][:, :-1], batches[self.step][:, 1:]
            self.step += 1

    opts = build_optimizers(cfg, model)
    adam = next(o for o in opts if isinstance(o, train_gpt.optimizers.Adam))
    seen = []
    original = adam.step
    adam.step = lambda: (seen.append(model.embed.weight.grad.clone()), original())
    trainer = train_gpt.Trainer(cfg, Dist(0, 0, 1, torch.device("cpu")), model, model, opts, Loader(),
                                contextlib.nullcontext)
    embed0, qkv0 = model.embed.weight.detach().clone(), model.blocks[0].attn.qkv.weight.detach().clone()
    trainer.train_step(0, False)
    assert torch.equal(model.embed.weight, embed0) and not seen  # Adam waits, its gradient kept
    assert not torch.equal(model.blocks[0].attn.qkv.weight, qkv0) and model.blocks[0].attn.qkv.weight.grad is None
    g0 = model.embed.weight.grad.clone()
    twin = copy.deepcopy(model)
    twin.zero_grad()
    twin(batches[1][:, :-1], batches[1][:, 1:]).backward()
    trainer.train_step(1, False)
    assert len(seen) == 1 and torch.allclose(seen[0], g0 + twin.embed.weight.grad, atol=1e-6)
    assert not torch.equal(model.embed.weight, embed0) and model.embed.weight.grad is None


def test_auxiliary_loss_against_per_position_cross_entropy():
    B, T, V = 2, 7, 11
    logits, targets = torch.randn(B, T, V), torch.randint(0, V, (B, T))
    prefix = torch.randint(-1, V, (B, T))
    w, p = torch.tensor([1.0, 0.5, 0.25]), torch.tensor(0.3)
    expected = 0.0
    for b in range(B):
        for t in range(T):
            for k in range(3):
                if t + k < T:
                    expected += w[k] * F.cross_entropy(logits[b, t], targets[b, t + k])
            if prefix[b, t] >= 0:
                expected += p * F.cross_entropy(logits[b, t], prefix[b, t])
    got = auxiliary_loss(logits, targets, w, prefix, p)
    assert torch.allclose(got, expected / (B * T), atol=1e-5)
    plain = auxiliary_loss(logits, targets, torch.tensor([1.0]))
    assert torch.allclose(plain, F.cross_entropy(logits.flatten(0, 1), targets.flatten()), atol=1e-6)


def test_aux_loss_schedule():
    cfg = Config(num_iterations=600, mtp=True, prefix_loss=0.25)
    weights = {s: [round(v, 6) for v in aux_loss_weights(cfg, s, "cpu")[0].tolist()] for s in (0, 100, 300, 500)}
    assert weights == {0: [1, 0.5, 0.25], 100: [1, 0.5, 0.125], 300: [1, 0.25], 500: [1]}
    prefix = [aux_loss_weights(cfg, s, "cpu")[1].item() for s in (0, 150, 300, 400, 500)]
    assert prefix == pytest.approx([0.25, 0.25, 0.125, 0.0, 0.0])
    assert aux_loss_weights(Config(), 0, "cpu") == ()


def test_prefix_ids():
    from data.tokenizer import get_tokenizer, longest_prefix_ids, prefix_table
    ranks = {b"a": 0, b"b": 1, b"ab": 2, b"abb": 3, b"ba": 4, b"abba": 5}
    assert longest_prefix_ids(ranks, 7) == [-1, -1, 0, 2, 1, 3, -1]
    assert prefix_table("byte", 320) == [-1] * 320
    enc = get_tokenizer("gpt2")
    table = prefix_table("gpt2", 50304)
    for token in enc.encode_ordinary(" hello everyone, extraordinary tokenization"):
        raw, prefix = enc.decode_single_token_bytes(token), table[token]
        assert prefix == -1 or raw.startswith(enc.decode_single_token_bytes(prefix)) and prefix != token
        longer = [raw[:k] for k in range(len(raw) - 1, 0, -1) if raw[:k] in enc._mergeable_ranks]
        assert (prefix == -1) == (not longer) and (not longer or enc._mergeable_ranks[longer[0]] == prefix)


def test_model_trains_on_the_auxiliary_loss_and_validates_on_next_token():
    cfg = small(mtp=True, prefix_loss=0.25, tokenizer="byte", dataset="shakespeare", num_iterations=9)
    torch.manual_seed(0)
    model = GPT(cfg)
    x, y = torch.randint(0, cfg.vocab_size, (2, 2, cfg.seq_len))
    w, p = aux_loss_weights(cfg, 0, "cpu")
    assert torch.allclose(model(x, y, w, p), auxiliary_loss(model(x), y, w, model.prefix_ids[y], p))
    assert torch.allclose(model(x, y), F.cross_entropy(model(x).flatten(0, 1), y.flatten()))


def test_head_tied_then_untied_with_its_optimizer_state():
    cfg = small(untie_head_frac=0.5, num_iterations=4, opt_hidden="muon", lr_hidden=0.02, lr_embed=0.01)
    torch.manual_seed(0)
    model = GPT(cfg)
    assert model.tied_phase and model.head.weight.abs().sum() > 0  # the head starts as an embedding would
    batch = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len + 1))

    class Loader:
        def next_batch(self, global_tokens=None, max_doc_len=None):
            yield batch[:, :-1], batch[:, 1:]

    idx = batch[:, :-1]
    tied = dataclasses.replace(cfg, untied_head=False, untie_head_frac=0.0)
    reference = GPT(tied)
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if k != "embed.weight"} |
                              {"embed.weight": model.head.weight.detach()}, strict=False)
    assert torch.allclose(model(idx), reference(idx), atol=1e-6)  # tied phase: the classic tied model
    opts = build_optimizers(cfg, model)
    trainer = train_gpt.Trainer(cfg, Dist(0, 0, 1, torch.device("cpu")), model, model, opts, Loader(),
                                contextlib.nullcontext)
    embed0 = model.embed.weight.detach().clone()
    for step in range(2):
        trainer.train_step(step, False)
        assert torch.equal(model.embed.weight, embed0) and model.tied_phase  # unused while tied
    adam = next(o for o in opts if model.head.weight in o.state)
    head_state = {k: v.clone() if torch.is_tensor(v) else v for k, v in adam.state[model.head.weight].items()}
    grads = []
    original = adam.step
    adam.step = lambda: (grads.append(model.embed.weight.grad.clone()),
                         grads.append(torch.equal(model.embed.weight, model.head.weight)), original())
    trainer.train_step(2, False)  # untie_step = 2: the embedding starts from the head, then both train apart
    assert not model.tied_phase and not torch.equal(model.embed.weight, embed0)
    state, beta1 = adam.state[model.embed.weight], cfg.beta1
    assert state["step"] == head_state["step"] + 1  # the head's state carried over, then one step on the embed's grad
    assert torch.allclose(state["exp_avg"], beta1 * head_state["exp_avg"] + (1 - beta1) * grads[0], atol=1e-7)
    assert grads[1] and not torch.equal(model.embed.weight, model.head.weight)  # equal until this step's updates


def test_untie_on_two_ranks(tmp_path):
    from tests.trainer import SMALL, logs, run
    result = run([*SMALL, "--untie_head_frac=0.5", f"--log_dir={tmp_path}", "--run_id=u"], nproc=2)
    assert result.returncode == 0, result.stderr
    assert logs(tmp_path, "u")[1]["status"] == "complete"
