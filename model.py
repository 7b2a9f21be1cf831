"""model.py: the GPT of train_gpt.py and the public records' tricks, each switched on by a config key.

Every module takes the trainer's Config (`cfg`) and reads only its own switches; train_gpt.py builds
`GPT(cfg)`. Record numbers refer to the table in github.com/KellerJordan/modded-nanogpt's README.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from data.tokenizer import EOT_GPT2, ByteTokenizer, prefix_table
from kernels.attention import document_ids, document_positions, masked_attention
from optimizers import schedule
from runtime.config import ConfigError


def separator(cfg) -> int:
    """The token that opens each document: --separator, else the end-of-text of the tokenizer (256 byte, 50256 GPT-2)."""
    if cfg.separator >= 0:
        return cfg.separator
    return ByteTokenizer.eot_token if cfg.tokenizer == "byte" else EOT_GPT2


def layer_windows(cfg, step: int, validating: bool = False) -> tuple[int, ...]:
    """Each layer's attention window at `step`: L layers the long window (window_schedule, else attn_window;
    val_window at validation when set), S layers half the training long window (#20); 0 means none."""
    long = schedule.stage_value(schedule.stages(cfg.window_schedule, cfg.attn_window), step, cfg.num_iterations)
    short = max(1, long // 2) if long else 0
    long = cfg.val_window if validating and cfg.val_window else long
    pattern = cfg.window_pattern or "L"
    return tuple(long if pattern[i % len(pattern)] == "L" else short for i in range(cfg.n_layer))


# ----------------------------------------------------------------------------------------------
# 1. The model: norm, rotary, attention, MLP, block, GPT. Each trick reads its switch from the config.

class Norm(nn.Module):
    """Parameter-free RMSNorm x/√(mean x² + ε), or the classic LayerNorm with gain and bias."""

    def __init__(self, dim: int, rms: bool):
        super().__init__()
        self.layer_norm = None if rms else nn.LayerNorm(dim)

    def forward(self, x):
        return F.rms_norm(x, (x.size(-1),)) if self.layer_norm is None else self.layer_norm(x)


class Rotary(nn.Module):
    """Rotate each (x₁, x₂) half-pair of a head by angle position·base^(−2i/d); `half_truncated` (--rotary_half,
    record #17): frequencies (1/1024)^(j/(d/4 − 1)) for the first d/4 pairs and 0 for the other d/4."""

    def __init__(self, head_dim: int, max_len: int, base: float, half_truncated: bool = False):
        super().__init__()
        if half_truncated:
            quarter = head_dim // 4
            freqs = torch.cat(((1 / 1024) ** torch.linspace(0, 1, quarter), torch.zeros(head_dim // 2 - quarter)))
        else:
            freqs = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), freqs)
        self.register_buffer("cos", angles.cos()[None, :, None, :], persistent=False)
        self.register_buffer("sin", angles.sin()[None, :, None, :], persistent=False)

    def forward(self, x, positions=None):  # x: (B, T, H, D); positions: (B, T) or None for 0..T-1
        T = x.size(1)
        if positions is None:
            cos, sin = self.cos[:, :T].to(x.dtype), self.sin[:, :T].to(x.dtype)
        else:
            cos, sin = self.cos[0, positions].to(x.dtype), self.sin[0, positions].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class Attention(nn.Module):
    """Causal multi-head attention with QK-norm and rotary; the value tricks of section 2 act on v."""

    def __init__(self, cfg, layer: int):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.model_dim // cfg.n_head
        self.qkv = nn.Linear(cfg.model_dim, 3 * cfg.model_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.model_dim, cfg.model_dim, bias=cfg.bias)
        self.qk_norm = cfg.qk_norm
        self.scale = cfg.attn_scale or None  # None: SDPA's 1/√head_dim
        self.key_offset = cfg.key_offset
        self.paired = layer in paired_head_layers(cfg)
        self.value_residual = ValueResidual() if cfg.value_residual and layer > first_attention(cfg) else None
        self.value_embed = ValueEmbedMix(cfg) if layer in value_embed_layout(cfg) else None
        self.gate = AttentionGate(cfg) if cfg.attn_gate else None

    def forward(self, x, rotary: Rotary | None, v1=None, ve=None, docs=None, window: int = 0):
        """Attention output, and this layer's own values v (before any mixing: the first layer's is v₁); causal,
        and with document ids and a window within the document and the last `window` keys (kernels/attention.py)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).unbind(dim=2)
        own_v = v
        if self.value_residual is not None:
            v = self.value_residual(v, v1)
        if self.value_embed is not None:
            v = self.value_embed(v, ve, x)
        if self.qk_norm:
            q, k = F.rms_norm(q, (self.head_dim,)), F.rms_norm(k, (self.head_dim,))
        if self.paired:
            q, k, v = pair_heads(q), pair_heads(k), pair_heads(v)
        if rotary is not None:
            q, k = rotary(q), rotary(k)
        if self.key_offset:
            k = offset_keys(k)
        y = masked_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), docs, window,
                             scale=self.scale).transpose(1, 2)
        if self.paired:
            y = unpair_heads(y)
        if self.gate is not None:
            y = self.gate(y, x)
        return self.proj(y.reshape(B, T, C)), own_v


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.model_dim, cfg.mlp_ratio * cfg.model_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.model_dim, cfg.model_dim, bias=cfg.bias)
        self.relu2 = cfg.relu2

    def forward(self, x):
        h = self.fc(x)
        return self.proj(F.relu(h).square() if self.relu2 else F.gelu(h, approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg, layer: int):
        super().__init__()
        self.x0_mix = X0Mix() if cfg.x0_mix else None
        first = layer == 0  # --drop_first_attn (#35), --drop_first_mlp (#30)
        self.norm1, self.attn = (None, None) if first and cfg.drop_first_attn else (Norm(cfg.model_dim, cfg.rmsnorm),
                                                                                    Attention(cfg, layer))
        self.norm2, self.mlp = (None, None) if first and cfg.drop_first_mlp else (Norm(cfg.model_dim, cfg.rmsnorm),
                                                                                  MLP(cfg))

    def forward(self, x, x0, rotary: Rotary | None, v1=None, ve=None, docs=None, window: int = 0):
        """The block's output and its attention's own values (None without attention)."""
        if self.x0_mix is not None:
            x = self.x0_mix(x, x0)
        v = None
        if self.attn is not None:
            y, v = self.attn(self.norm1(x), rotary, v1, ve, docs, window)
            x = x + y
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x, v


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.pos_embed = None if cfg.rotary else nn.Embedding(cfg.seq_len, cfg.model_dim)
        self.value_embeds = ValueEmbeddings(cfg) if cfg.value_embeds else None
        # one rotary table shared by every layer (a non-persistent buffer: DDP need not broadcast it)
        rotary_len = cfg.seq_len * (2 if cfg.paired_heads else 1)  # paired heads: 2T interleaved positions
        self.rotary = Rotary(cfg.model_dim // cfg.n_head, rotary_len, cfg.rope_base, cfg.rotary_half) if cfg.rotary \
            else None
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.skips = UNetSkips(cfg) if cfg.unet_skips else None
        self.smear = Smear(cfg) if cfg.smear else None
        self.bigram = BigramHash(cfg) if cfg.bigram_vocab else None
        if cfg.prefix_loss:  # --prefix_loss (#88): each token's prefix token, -1 for none
            name = "gpt2" if cfg.dataset == "fineweb10B" else cfg.tokenizer
            self.register_buffer("prefix_ids", torch.tensor(prefix_table(name, cfg.vocab_size)), persistent=False)
        self.backout_lambda = nn.Parameter(torch.tensor(0.5)) if cfg.backout else None  # --backout (#40)
        self.separator, self.windows = separator(cfg), layer_windows(cfg, 0)  # the loop sets windows each step
        self.norm = Norm(cfg.model_dim, cfg.rmsnorm)
        self.head = nn.Linear(cfg.model_dim, cfg.vocab_size, bias=False)
        if not cfg.untied_head:
            self.head.weight = self.embed.weight
        self.tied_phase = cfg.untie_head_frac > 0  # --untie_head_frac: set each step by Trainer.train_step
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """GPT-2 init: N(0, 0.02) (the token embedding N(0, embed_init_std²)), output projections scaled by
        1/√(2·layers); or zero with zero_init_proj. --linear_init draws the q, k, v and MLP-in matrices
        uniformly instead: fan_in U(±1/√fan_in), nn.Linear's default, which the public records keep up to
        #18; half U(±√3·0.5/√fan_in), std 0.5/√fan_in, from #19 on.

        The tricks' mixing weights and gates (names ending in TRICK_WEIGHTS) keep the values their modules
        give them.
        """
        for name, p in self.named_parameters():
            if name.endswith(TRICK_WEIGHTS):
                continue
            if p.ndim < 2:
                nn.init.ones_(p) if name.endswith("layer_norm.weight") else nn.init.zeros_(p)
            elif name.endswith("proj.weight"):
                nn.init.zeros_(p) if self.cfg.zero_init_proj else nn.init.normal_(p, std=0.02 / math.sqrt(2 * self.cfg.n_layer))
            elif (name == "head.weight" and self.cfg.zero_init_proj and not self.tied_phase) or name.startswith("bigram."):
                nn.init.zeros_(p)
            elif name == "embed.weight":
                nn.init.normal_(p, std=self.cfg.embed_init_std)
            elif name.endswith(("qkv.weight", "fc.weight")) and self.cfg.linear_init != "normal":
                bound = (1.0 if self.cfg.linear_init == "fan_in" else 0.5 * math.sqrt(3)) / math.sqrt(p.size(1))
                nn.init.uniform_(p, -bound, bound)
            else:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets=None, mtp_weights=None, prefix_weight=None):
        """Logits (B, T, vocab) of idx (B, T); with targets, their mean next-token cross-entropy, or with the
        auxiliary weights of `aux_loss_weights` the training loss of `auxiliary_loss`."""
        x = F.embedding(idx, self.head.weight) if self.tied_phase else self.embed(idx)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(idx.size(1), device=idx.device))
        docs = document_ids(idx, self.separator) if self.cfg.doc_mask else None
        rotary = self.rotary
        if rotary is not None and self.cfg.rope_doc_reset:
            rotary = functools.partial(self.rotary, positions=document_positions(idx, self.separator))
        if self.cfg.embed_norm:  # record #8's: the blocks read x/√(mean x² + ε) of the embedding
            x = F.rms_norm(x, (x.size(-1),))
        x = x0 = x if self.smear is None else self.smear(x)
        ves = self.value_embeds(idx) if self.value_embeds is not None else [None] * len(self.blocks)
        bigram = self.bigram(idx) if self.bigram is not None else None
        v1, skips, backout = None, [], None
        for i, block in enumerate(self.blocks):
            if self.skips is not None and i >= len(self.blocks) - self.skips.n and skips:
                x = x + self.skips(len(skips) - 1, x0) * skips.pop()
            if bigram is not None:
                x = x + self.bigram.bigram_lambdas[i].to(x.dtype) * bigram
            x, v = block(x, x0, rotary, v1, ves[i], docs, self.windows[i])
            v1 = v if v1 is None else v1
            if self.skips is not None and i < self.skips.n:
                skips.append(x)
            if self.backout_lambda is not None and i == 2 * len(self.blocks) // 3:
                backout = x
        if backout is not None:
            x = x - self.backout_lambda.to(x.dtype) * backout
        if targets is None:
            return self.logits(x)
        if mtp_weights is not None:
            prefix_targets = self.prefix_ids[targets] if self.cfg.prefix_loss else None
            return auxiliary_loss(self.logits(x), targets, mtp_weights, prefix_targets, prefix_weight)
        chunk = self.cfg.loss_chunk_tokens or targets.numel()
        total = sum(checkpoint(self.loss_sum, xs, ts, use_reentrant=False) if chunk < targets.numel()
                    else self.loss_sum(xs, ts) for xs, ts in zip(x.flatten(0, 1).split(chunk), targets.flatten().split(chunk)))
        return total / targets.numel()

    def logits(self, x):
        """fp32 logits of the final hidden states, capped (cap_logits: tanh or the sigmoid rescale)."""
        return cap_logits(self.head(self.norm(x)).float(), self.cfg)

    def loss_sum(self, x, targets):
        """Summed next-token cross-entropy of hidden states x (rows) against targets."""
        return F.cross_entropy(self.logits(x), targets, reduction="sum")



# ----------------------------------------------------------------------------------------------
# 2. The public record's tricks (github.com/KellerJordan/modded-nanogpt, record numbers as in its README).
# Each is a small module or function switched on by the config key named in its docstring.

TRICK_WEIGHTS = ("_lambda", "_lambdas", "_weights", "_gate")  # learned mixing weights and gates: own init, scalar group


# values and the residual stream: value residual, x₀ mixing, U-net skips, value embeddings, bigrams

class ValueResidual(nn.Module):
    """--value_residual (record #9): v ← (1 − λ)·v + λ·v₁, v₁ the first layer's values, λ learned from 0.5."""

    def __init__(self):
        super().__init__()
        self.value_lambda = nn.Parameter(torch.tensor(0.5))

    def forward(self, v, v1):
        return torch.lerp(v, v1, self.value_lambda.to(v.dtype))


class X0Mix(nn.Module):
    """--x0_mix (record #9): the block's input a·x + b·x₀, x₀ the token embedding, (a, b) learned from (1, 0)."""

    def __init__(self):
        super().__init__()
        self.x0_lambdas = nn.Parameter(torch.tensor([1.0, 0.0]))

    def forward(self, x, x0):
        a, b = self.x0_lambdas.to(x.dtype)
        return a * x + b * x0


def sigmoid_gate(weight, x, gate_dim: int):
    """2σ(W·x[..., :gate_dim]): 1 at W = 0, in (0, 2) (the gates of record #55)."""
    return 2 * torch.sigmoid(F.linear(x[..., :gate_dim], weight.to(x.dtype)))


class UNetSkips(nn.Module):
    """--unet_skips (record #11): the outputs of the first n = n_layer//2 blocks are kept; the block that is the
    i-th from the end first adds w_i·(output of block i), w learned from 1. --skip_gates (#55): times the
    per-token gate 2σ(g_i·x₀[:gate_dim]), g learned from 0."""

    def __init__(self, cfg):
        super().__init__()
        self.n, self.gate_dim = cfg.n_layer // 2, cfg.gate_dim
        self.skip_weights = nn.Parameter(torch.ones(self.n))
        self.skip_gate = nn.Parameter(torch.zeros(self.n, cfg.gate_dim)) if cfg.skip_gates else None

    def forward(self, i: int, x0):
        """The factor (a scalar, or (B, T, 1) when gated) of the skip from block i."""
        w = self.skip_weights[i].to(x0.dtype)
        if self.skip_gate is None:
            return w
        return w * sigmoid_gate(self.skip_gate[i:i + 1], x0, self.gate_dim)


def value_embed_layout(cfg) -> dict[int, int]:
    """{layer: table} of --value_embeds K (records #15, #17, #63): the first K layers with attention read tables
    0..K−1 and the mirrored layers n−1..n−K the same tables (tied) or tables K..2K−1 (untied)."""
    K, n, first = cfg.value_embeds, cfg.n_layer, first_attention(cfg)
    layout = {first + i: i for i in range(K)}
    layout.update({n - 1 - i: i if cfg.value_embeds_tied else K + i for i in range(K)})
    return layout


class ValueEmbeddings(nn.Module):
    """--value_embeds (records #14–#17, #63, #65): token-indexed tables whose rows are added to the values of
    the layers of `value_embed_layout`; returns each layer's rows (None for a layer without)."""

    def __init__(self, cfg):
        super().__init__()
        self.layout = [value_embed_layout(cfg).get(i) for i in range(cfg.n_layer)]
        n_tables = cfg.value_embeds * (1 if cfg.value_embeds_tied else 2)
        self.tables = nn.ModuleList(nn.Embedding(cfg.vocab_size, cfg.model_dim) for _ in range(n_tables))

    def forward(self, idx):
        rows = [table(idx) for table in self.tables]
        return [None if t is None else rows[t] for t in self.layout]


class ValueEmbedMix(nn.Module):
    """How a layer adds its value embedding e: v + λ·e, λ learned from 0.5 (#15 mixed λ₀·v + λ₁·e from (0.5, 0.5);
    later records add e to v unscaled or gated), or with --value_embed_gates (#55) v + 2σ(W·x[:gate_dim])·e, one
    gate per head, W learned from 0."""

    def __init__(self, cfg):
        super().__init__()
        self.gate_dim = cfg.gate_dim
        self.ve_lambda = None if cfg.value_embed_gates else nn.Parameter(torch.tensor(0.5))
        self.ve_gate = nn.Parameter(torch.zeros(cfg.n_head, cfg.gate_dim)) if cfg.value_embed_gates else None

    def forward(self, v, ve, x):  # v: (B, T, H, D), ve: (B, T, H·D), x: the attention input
        if self.ve_gate is None:
            return v + self.ve_lambda.to(v.dtype) * ve.view_as(v)
        return v + sigmoid_gate(self.ve_gate, x, self.gate_dim)[..., None] * ve.view_as(v)


class BigramHash(nn.Module):
    """--bigram_vocab M (record #62): row h_t of a table (zero at init) for each position, h_t = ((36313·x_t) XOR
    (27191·x_(t−1))) mod (M − 1), and h_0 = M − 1; block i adds λ_i times it to its input, λ learned from 0.1.
    --bigram_signs R (#83): the row times a fixed random sign vector s[(x_(t−1) XOR x_t) mod R] (s[0] at t = 0),
    so bigrams that share a row pull it in different directions."""

    def __init__(self, cfg):
        super().__init__()
        self.rows = cfg.bigram_vocab
        self.table = nn.Embedding(cfg.bigram_vocab, cfg.model_dim)
        self.bigram_lambdas = nn.Parameter(torch.full((cfg.n_layer,), 0.1))
        signs = None
        if cfg.bigram_signs:  # drawn from a fixed seed: the same on every rank and run, no state to save
            draw = torch.randint(0, 2, (cfg.bigram_signs, cfg.model_dim), generator=torch.Generator().manual_seed(0),
                                 device="cpu")
            signs = 2.0 * draw - 1
        self.register_buffer("signs", signs, persistent=False)

    def forward(self, idx):  # idx: (B, T) token ids
        prev, cur = idx[:, :-1], idx[:, 1:]
        start = torch.full_like(idx[:, :1], self.rows - 1)
        rows = self.table(torch.cat((start, torch.bitwise_xor(36313 * cur, 27191 * prev) % (self.rows - 1)), dim=1))
        if self.signs is None:
            return rows
        which = torch.cat((torch.zeros_like(start), torch.bitwise_xor(prev, cur) % self.signs.size(0)), dim=1)
        return rows * self.signs[which].to(rows.dtype)


# attention: dropped first layer, paired heads, key offset, output gate; the token smear

def first_attention(cfg) -> int:
    """The first layer with attention (1 with --drop_first_attn): the layer whose values are v₁."""
    return 1 if cfg.drop_first_attn else 0


def paired_head_layers(cfg) -> set[int]:
    """The layers of --paired_heads ('0,2,5,9' → {0, 2, 5, 9})."""
    return {int(i) for i in cfg.paired_heads.replace(" ", "").split(",") if i}


def pair_heads(x):
    """--paired_heads (record #58): (B, T, H, D) → (B, 2T, H/2, D), position 2t + p holding head 2j + p at t."""
    B, T, H, D = x.shape
    return x.reshape(B, T, H // 2, 2, D).transpose(1, 2).reshape(B, H // 2, 2 * T, D).transpose(1, 2)


def unpair_heads(y):
    """The inverse of `pair_heads`: (B, 2T, H/2, D) → (B, T, H, D)."""
    B, T2, H2, D = y.shape
    return y.transpose(1, 2).reshape(B, H2, T2 // 2, 2, D).transpose(1, 2).reshape(B, T2 // 2, 2 * H2, D)


def offset_keys(k):
    """--key_offset (record #49): k[t] of the dims [D/4, D/2) and [3D/4, D) becomes k[t−1] (k[0] keeps its own);
    k: (B, T, H, D)."""
    D = k.size(-1)
    shifted = torch.cat((k[:, :1], k[:, :-1]), dim=1)
    stationary = (torch.arange(D, device=k.device) % (D // 2)) >= D // 4
    return torch.where(stationary, shifted, k)


class AttentionGate(nn.Module):
    """--attn_gate (record #28): head h's output times σ(W_h·x[:gate_dim]), x the attention's input, W from 0."""

    def __init__(self, cfg):
        super().__init__()
        self.gate_dim = cfg.gate_dim
        self.attn_gate = nn.Parameter(torch.zeros(cfg.n_head, cfg.gate_dim))

    def forward(self, y, x):  # y: (B, T, H, D)
        return y * torch.sigmoid(F.linear(x[..., :self.gate_dim], self.attn_gate.to(x.dtype)))[..., None]


class Smear(nn.Module):
    """--smear (record #34): e_t ← e_t + λ·σ(w·e_t[:gate_dim])·e_(t−1) for t ≥ 1, λ and w learned from 0."""

    def __init__(self, cfg):
        super().__init__()
        self.gate_dim = cfg.gate_dim
        self.smear_lambda = nn.Parameter(torch.zeros(()))
        self.smear_gate = nn.Parameter(torch.zeros(1, cfg.gate_dim))

    def forward(self, e):  # e: (B, T, C)
        g = self.smear_lambda.to(e.dtype) * torch.sigmoid(F.linear(e[:, 1:, :self.gate_dim], self.smear_gate.to(e.dtype)))
        return torch.cat((e[:, :1], e[:, 1:] + g * e[:, :-1]), dim=1)


# the loss: multi-token and prefix-token auxiliary terms, logit caps

def aux_loss_weights(cfg, step: int, device) -> tuple:
    """() when --mtp and --prefix_loss are off; else (w, p): the multi-token weights w (record #53: [1, 0.5,
    0.25→0] over the first third of training, [1, 0.5→0] the second, [1] after) and the prefix-token weight p
    (#88: constant over the first third, to 0 over the second)."""
    if not (cfg.mtp or cfg.prefix_loss):
        return ()
    x = step / cfg.num_iterations
    w = [1.0]
    if cfg.mtp:
        w = [1.0, 0.5, 0.25 * (1 - 3 * x)] if x < 1 / 3 else [1.0, 0.5 * (2 - 3 * x)] if x < 2 / 3 else [1.0]
    p = cfg.prefix_loss * (1.0 if x < 1 / 3 else max(0.0, 2 - 3 * x))
    return torch.tensor(w, device=device), torch.tensor(p, device=device)


def auxiliary_loss(logits, targets, mtp_weights, prefix_targets=None, prefix_weight=None):
    """(Σ_k w_k·Σ_t CE(logits_t, targets_(t+k)) + p·Σ_t CE(logits_t, prefix_t)) / (B·T): position t's logits
    also predict the token k further on (positions past the sequence's end contribute nothing), and the
    prefix token of its next token where there is one (prefix_t ≥ 0)."""
    B, T, _ = logits.shape
    lse = torch.logsumexp(logits, dim=-1)
    total = torch.zeros((), device=logits.device, dtype=logits.dtype)
    for k in range(mtp_weights.numel()):
        picked = logits[:, :T - k].gather(-1, targets[:, k:, None]).squeeze(-1)
        total = total + mtp_weights[k] * (lse[:, :T - k] - picked).sum()
    if prefix_targets is not None:
        valid = prefix_targets >= 0
        picked = logits.gather(-1, prefix_targets.clamp_min(0)[..., None]).squeeze(-1)
        total = total + prefix_weight * torch.where(valid, lse - picked, 0.0).sum()
    return total / (B * T)


def cap_logits(z, cfg):
    """--logit_softcap c with --logit_cap: tanh c·tanh(z/c) (c = 30 in record #9, 15 in #18), or sigmoid
    c·σ((z + offset)/scale), the asymmetric rescale of #54 (c = 23, offset 5, scale 7.5); c = 0: z."""
    c = cfg.logit_softcap
    if c == 0:
        return z
    if cfg.logit_cap == "sigmoid":
        return c * torch.sigmoid((z + cfg.logit_cap_offset) / cfg.logit_cap_scale)
    return c * torch.tanh(z / c)


# ----------------------------------------------------------------------------------------------
# 3. What the trainer asks of the model: config checks, the optimizer groups, the untying, compiled graphs.

def check_model(cfg) -> None:
    """Reject shapes and trick combinations the model cannot build, before any data or weights are touched."""
    if cfg.model_dim % cfg.n_head or (cfg.model_dim // cfg.n_head) % 2:
        raise ConfigError(f"model_dim {cfg.model_dim} must split into {cfg.n_head} heads of even size")
    if 2 * cfg.value_embeds > cfg.n_layer - first_attention(cfg):
        raise ConfigError(f"value_embeds {cfg.value_embeds} needs 2 × {cfg.value_embeds} layers with attention (first "
                          f"K and last K); n_layer is {cfg.n_layer}{' with the first attention dropped' * cfg.drop_first_attn}")
    if cfg.untie_head_frac and not cfg.untied_head:
        raise ConfigError("untie_head_frac needs untied_head (the head and the embedding are then two weights)")
    if cfg.bigram_vocab == 1 or (cfg.bigram_signs and not cfg.bigram_vocab):
        raise ConfigError(f"bigram_vocab must be 0 (off) or at least 2 (got {cfg.bigram_vocab}); bigram_signs needs it on")
    try:
        paired = paired_head_layers(cfg)
    except ValueError:
        raise ConfigError(f"paired_heads {cfg.paired_heads!r}: write layer numbers separated by commas") from None
    if paired and (cfg.n_head % 2 or not paired <= set(range(cfg.n_layer)) or cfg.key_offset):
        raise ConfigError(f"paired_heads {cfg.paired_heads!r} needs an even n_head ({cfg.n_head}), layers in "
                          f"[0, {cfg.n_layer}) and key_offset off")
    if cfg.paired_heads and (cfg.doc_mask or cfg.attn_window or cfg.window_schedule):
        raise ConfigError("paired_heads works with plain causal attention only: turn off doc_mask and the windows")
    if cfg.drop_first_attn and cfg.n_layer < 2:
        raise ConfigError("drop_first_attn needs n_layer >= 2")
    if (cfg.key_offset or cfg.rotary_half) and (cfg.model_dim // cfg.n_head) % 4:
        raise ConfigError(f"rotary_half and key_offset need a head dim divisible by 4, got {cfg.model_dim // cfg.n_head}")
    if (cfg.skip_gates or cfg.value_embed_gates or cfg.attn_gate or cfg.smear) and cfg.gate_dim > cfg.model_dim:
        raise ConfigError(f"gate_dim {cfg.gate_dim} exceeds model_dim {cfg.model_dim}")
    if set(cfg.window_pattern) - set("LS"):
        raise ConfigError(f"window_pattern {cfg.window_pattern!r}: one letter per layer, L (long) or S (short)")
    if "S" in cfg.window_pattern and not (cfg.attn_window or cfg.window_schedule):
        raise ConfigError("window_pattern has short (S) layers but there is no window: set attn_window or window_schedule")
    if not 0 <= separator(cfg) < cfg.vocab_size and (cfg.doc_mask or cfg.rope_doc_reset or cfg.bos_align):
        raise ConfigError(f"separator {separator(cfg)} is not a token id below vocab_size {cfg.vocab_size}")
    if cfg.rope_doc_reset and not cfg.rotary:
        raise ConfigError("rope_doc_reset needs rotary=true")


GROUPS = ("hidden", "embed", "head", "scalar")  # the optimizer table's rows


def parameter_groups(model: GPT) -> dict[str, list[nn.Parameter]]:
    """Split the model for the optimizers: hidden 2-D matrices, embeddings (value embeddings too), head, and the
    rest (vectors, the tricks' mixing weights and gates)."""
    groups = {name: [] for name in GROUPS}
    for name, p in model.named_parameters():  # a tied head is the embedding and is listed once
        if name.startswith(("embed.", "pos_embed.", "value_embeds.", "bigram.table.")):
            groups["embed"].append(p)
        elif name.startswith("head."):
            groups["head"].append(p)
        elif p.ndim >= 2 and not name.endswith(TRICK_WEIGHTS):  # gates go with the scalars, as in record #56
            groups["hidden"].append(p)
        else:
            groups["scalar"].append(p)
    return groups


def untie_step(cfg) -> int:
    """The step that unties the embedding from the head (--untie_head_frac); runs of up to that many steps stay tied."""
    return math.ceil(cfg.untie_head_frac * cfg.num_iterations)


@torch.no_grad()
def untie_embedding(model: GPT, opts: list) -> None:
    """--untie_head_frac (record #53): the embedding takes the head's weights, and its optimizer state where both
    are in the same optimizer; from here on the two train apart."""
    head, embed = model.head.weight, model.embed.weight
    embed.copy_(head)
    for opt in opts:
        if head in opt.state and any(embed is p for g in opt.param_groups for p in g["params"]):
            opt.state[embed] = {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[head].items()}


def window_graphs(cfg) -> tuple[int, int]:
    """(training, validation) count of distinct per-layer window sets over the run: torch.compile builds one
    graph for each (the windows are Python ints; batch and document-cap schedules keep the micro-batch shape)."""
    val_steps = {cfg.num_iterations, *(range(0, cfg.num_iterations, cfg.val_every) if cfg.val_every else ())}
    return (len({layer_windows(cfg, s) for s in range(cfg.num_iterations)}),
            len({layer_windows(cfg, s, validating=True) for s in val_steps}))
