"""train_gpt.py: train a GPT to a target validation loss as fast as possible.

This file holds what a record changes: the config and its presets, the model, the optimizer table and
the training loop. The run machinery (log, checkpoints, signals, distributed setup) is in runtime/; the
run log embeds the source of every repo module a run imported, so a log reproduces its run.

    python train_gpt.py                                    # tiny preset on the embedded corpus (CPU)
    python train_gpt.py --preset=speedrun124m              # the 124M speedrun on FineWeb shards
    torchrun --standalone --nproc_per_node=8 train_gpt.py --preset=speedrun124m
    python train_gpt.py --help                             # every config key (--help=json: the schema)
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import optimizers
from data import embedded
from data.loader import FINEWEB_DIR, ShardLoader, find_shards
from data.shards import ShardError, read_header, read_shard
from data.tokenizer import EOT_GPT2, ByteTokenizer
from kernels.attention import document_ids, document_positions, masked_attention
from optimizers import schedule
from runtime import checkpoint as ckpt
from runtime import config as schema
from runtime import spectral
from runtime.config import ConfigError, at_least, between, knob, one_of
from runtime.distributed import Dist, barrier, broadcast_object, peak_memory, setup_distributed, shutdown, synchronize
from runtime.env import check_writable, default_run_id, repo_sources, source_hashes
from runtime.runlog import RunLog
from runtime.signals import StopSignals

# ----------------------------------------------------------------------------------------------
# 1. Config: every knob with its help, role (runtime/config.py: ROLES) and valid range; the presets.

POSITIVE, NONNEGATIVE, FRACTION = at_least(1), at_least(0), between(0, 1)


@dataclass
class Config:
    # data
    dataset: str = knob("fineweb10B", "fineweb10B | shakespeare (embedded corpus, tokenized by `tokenizer`)", "data",
                        one_of("fineweb10B", "shakespeare"))
    tokenizer: str = knob("gpt2", "tokenizer of the embedded corpus: gpt2 | byte", "data", one_of("gpt2", "byte"))
    train_files: str = knob("", "glob of training shards (overrides `dataset`)", "data")
    val_files: str = knob("", "glob of validation shards (overrides `dataset`)", "data")
    bos_align: bool = knob(False, "each training row starts at a document's separator and packs whole documents "
                                  "(#26); validation still reads its shards in order", "data")
    max_doc_len: int = knob(0, "with bos_align: tokens kept of each document, separator included; 0: all (#29: 2048)",
                            "data", NONNEGATIVE)
    doc_len_schedule: str = knob("", "max_doc_len over training as 'fraction:tokens ...' stages (#72: 896 for the "
                                     "first third, then 2048); '' keeps max_doc_len", "data")
    reuse_data: bool = knob(False, "allow a run to need more training tokens than the shards hold (the loader "
                                   "then wraps to the first shard); off: stop before training", "data")
    # model shape
    vocab_size: int = knob(50304, "embedding rows: the tokenizer's vocabulary padded to a multiple of 64", "shape",
                           POSITIVE)
    n_layer: int = knob(12, "transformer blocks", "shape", POSITIVE)
    model_dim: int = knob(768, "residual stream width", "shape", POSITIVE)
    n_head: int = knob(6, "attention heads (head dim = model_dim / n_head)", "shape", POSITIVE)
    mlp_ratio: int = knob(4, "MLP hidden width / model_dim", "shape", POSITIVE)
    seq_len: int = knob(1024, "training sequence length in tokens (the learned position table's rows)", "shape", POSITIVE)
    # architecture tricks: each one a switch; all off gives the classic GPT-2
    rotary: bool = knob(True, "rotary position embeddings (off: learned absolute positions)", "shape")
    rope_base: float = knob(10000.0, "rotary base frequency", "recipe", between(1, 1e9))
    rmsnorm: bool = knob(True, "parameter-free RMSNorm (off: LayerNorm with gain and bias)", "shape")
    qk_norm: bool = knob(True, "normalise queries and keys before attention", "recipe")
    relu2: bool = knob(True, "ReLU² MLP activation (off: GELU)", "recipe")
    untied_head: bool = knob(True, "separate output head (off: head tied to the token embedding)", "shape")
    zero_init_proj: bool = knob(True, "zero-initialise output projections (and the untied head)", "recipe")
    logit_softcap: float = knob(30.0, "tanh soft-cap on the logits: cap·tanh(z/cap); 0 turns it off", "recipe",
                                NONNEGATIVE)
    bias: bool = knob(False, "biases in linear layers (GPT-2 had them)", "shape")
    # attention over packed documents (kernels/attention.py); documents are opened by `separator`
    separator: int = knob(-1, "the token that opens every document: -1 is the tokenizer's end-of-text (50256 for "
                              "gpt2 and FineWeb, 256 for byte)", "data", at_least(-1))
    doc_mask: bool = knob(False, "attention stays inside a document: no query sees a key before its document's "
                                 "separator (record #12)", "recipe")
    attn_window: int = knob(0, "sliding window of the long layers in tokens: a query sees its last W keys, itself "
                               "included; 0: no window (#12: 1024)", "recipe", NONNEGATIVE)
    window_pattern: str = knob("", "one letter per layer, repeated over the layers: L long window, S short (half the "
                                   "long one) (#20: LSSSLSSLSSSL); '' all long", "recipe")
    window_schedule: str = knob("", "the long window over training as 'fraction:tokens ...' stages (#13 grew it from "
                                    "64 to 1792; #46: '0:384 0.33:896 0.66:1408'); '' keeps attn_window", "recipe")
    val_window: int = knob(0, "the long layers' window at validation; 0: the training window of that step "
                              "(#35: 2560; #33 extended only the last layer's)", "eval", NONNEGATIVE)
    rope_doc_reset: bool = knob(False, "rotary positions restart at 0 at each document's separator (off: positions "
                                       "count from the start of the packed row)", "recipe")
    # batch
    global_batch_tokens: int = knob(8 * 64 * 1024, "tokens per optimizer step, summed over ranks", "recipe", POSITIVE)
    micro_batch_tokens: int = knob(64 * 1024, "tokens per forward/backward on one device (accumulation fills the rest)",
                                   "system", POSITIVE)
    batch_schedule: str = knob("", "global_batch_tokens over training as 'fraction:tokens ...' stages; each a multiple "
                                   "of world × micro_batch_tokens, the micro-batch shape never changes, lr_scaling "
                                   "follows the batch (#46: '0:131072 0.33:262144 0.66:393216'); '' constant", "recipe")
    # the optimizer table (optimizer_table below): one optimizer, lr and own hyperparameters per parameter group
    opt_hidden: str = knob("muon", "optimizer of the hidden 2-D matrices", "optimizer", one_of(*optimizers.NAMES))
    opt_embed: str = knob("adam", "optimizer of the token (and position) embeddings", "optimizer",
                          one_of(*optimizers.NAMES))
    opt_head: str = knob("adam", "optimizer of the output head", "optimizer", one_of(*optimizers.NAMES))
    opt_scalar: str = knob("adam", "optimizer of gains, biases and other vectors", "optimizer", one_of(*optimizers.NAMES))
    lr_hidden: float = knob(0.05, "learning rate of the hidden matrices", "optimizer", NONNEGATIVE)
    lr_embed: float = knob(0.3, "learning rate of the embeddings", "optimizer", NONNEGATIVE)
    lr_head: float = knob(0.008, "learning rate of the head", "optimizer", NONNEGATIVE)
    lr_scalar: float = knob(0.04, "learning rate of the scalars", "optimizer", NONNEGATIVE)
    hp_hidden: str = knob("", "the hidden group's own hyperparameters, 'name=value ...' (e.g. 'nesterov=false')",
                          "optimizer")
    hp_embed: str = knob("", "the embeddings' own hyperparameters, e.g. 'betas=0.9,0.99 eps=1e-8'", "optimizer")
    hp_head: str = knob("", "the head's own hyperparameters, e.g. 'betas=0.9,0.99'", "optimizer")
    hp_scalar: str = knob("", "the scalars' own hyperparameters, e.g. 'weight_decay=0.01'", "optimizer")
    weight_decay: float = knob(0.0, "weight decay of the hidden matrices (other groups: none unless hp_* sets it)",
                               "optimizer", NONNEGATIVE)
    beta1: float = knob(0.8, "β₁ of every group whose optimizer takes betas", "optimizer", between(0, 1))
    beta2: float = knob(0.95, "β₂ of every group whose optimizer takes betas", "optimizer", between(0, 1))
    eps: float = knob(1e-10, "ε of every group whose optimizer takes eps", "optimizer", between(0, 1))
    momentum: float = knob(0.95, "momentum of every group whose optimizer takes momentum (Muon, SGD)", "optimizer",
                           between(0, 1))
    # schedule: linear warmup, constant, linear cooldown (warmup–stable–decay); validation cadence
    num_iterations: int = knob(1750, "training steps", "schedule", POSITIVE)
    warmup_frac: float = knob(0.0, "fraction of steps of linear warmup from 0", "schedule", FRACTION)
    cooldown_frac: float = knob(0.4, "fraction of steps of decay to 0 at the end", "schedule", FRACTION)
    cooldown_shape: str = knob("linear", "shape of the decay: linear | cosine | sqrt", "schedule",
                               one_of(*schedule.COOLDOWN_SHAPES))
    lr_scaling: str = knob("none", "scale every lr with global_batch_tokens / lr_base_batch_tokens: none | linear | sqrt",
                           "schedule", one_of(*schedule.LR_RULES))
    lr_base_batch_tokens: int = knob(8 * 64 * 1024, "the batch size the learning rates were tuned at (for lr_scaling)",
                                     "schedule", POSITIVE)
    val_every: int = knob(125, "validate every N steps (and at the end); 0: only at the end", "schedule", NONNEGATIVE)
    stop_at_target: bool = knob(True, "stop at the first validation <= target (off: run every step, as record runs "
                                      "do, so the t-test on final losses means something)", "schedule")
    # evaluation
    val_tokens: int = knob(10485760, "validation tokens per evaluation", "eval", POSITIVE)
    target_val_loss: float = knob(3.28, "the validation loss to reach", "eval", at_least(0))
    # system
    device: str = knob("auto", "auto | cuda | cpu", "system", one_of("auto", "cuda", "cpu"))
    compile: str = knob("auto", "torch.compile the model: auto (on CUDA only) | true | false", "system",
                        one_of("auto", "true", "false"))
    autocast: str = knob("auto", "autocast dtype of the forward pass: auto (bf16 on CUDA, fp32 elsewhere) | bf16 | fp32",
                         "system", one_of("auto", "bf16", "fp32"))
    seed: int = knob(0, "random seed (model init)", "seed", between(0, 2**63 - 1))
    # run: names, folders, resume, logging destinations
    run_id: str = knob("", "name of this run's log files (default: time and a random suffix)", "run")
    log_dir: str = knob("logs", "where <run_id>.txt and <run_id>.json go", "run")
    checkpoint_dir: str = knob("checkpoints", "checkpoints go to <checkpoint_dir>/<run_id>/step_NNNNNN/", "run")
    resume: str = knob("", "a checkpoint folder to resume from, or 'auto': the newest of --run_id, if any", "run")
    force_resume: bool = knob(False, "resume even if the config or code differ from the checkpoint's", "run")
    wandb: bool = knob(False, "also log to Weights & Biases (offline with WANDB_MODE=offline)", "run")
    wandb_group: str = knob("", "wandb group (ablation studies set it)", "run")
    wandb_project: str = knob("nanogpt-speedrun", "wandb project", "operational")
    checkpoint_every: int = knob(0, "save a checkpoint every N steps (step 0 included) and at the end; 0: only when "
                                    "stopped by a signal", "operational", NONNEGATIVE)
    keep_checkpoints: int = knob(3, "keep the newest K checkpoints (and always the step-0 one)", "operational", POSITIVE)
    nan_policy: str = knob("stop", "on a non-finite loss or gradient norm: stop | skip (drop that update)",
                           "operational", one_of("stop", "skip"))
    # diagnostics
    spectral_every: int = knob(0, "every N steps log singular-value statistics of each hidden matrix and its update "
                                  "(0: off)", "diagnostic", NONNEGATIVE)
    inject_nan_step: int = knob(-1, "testing aid: make the loss NaN at this step", "diagnostic", at_least(-1))


PRESETS: dict[str, dict] = {
    # The speedrun's 124M shape on FineWeb; 8 GPUs × 64 × 1024 tokens per step.
    "speedrun124m": {},
    # CPU-sized: bytes of the embedded Shakespeare corpus, a few minutes on 2 cores.
    "tiny": dict(dataset="shakespeare", tokenizer="byte", vocab_size=320, n_layer=4, model_dim=128,
                 n_head=4, seq_len=256, global_batch_tokens=8192, micro_batch_tokens=8192,
                 lr_hidden=0.05, lr_embed=0.03, lr_head=0.01, lr_scalar=0.02, num_iterations=600,
                 warmup_frac=0.02, cooldown_frac=0.4, val_every=100, val_tokens=65536,
                 target_val_loss=1.8, reuse_data=True),  # 600 × 8192 tokens: about 1.06 passes over the plays
    # The classic GPT-2: every trick off, AdamW everywhere.
    "gpt2classic": dict(rotary=False, rmsnorm=False, qk_norm=False, relu2=False, untied_head=False,
                        zero_init_proj=False, logit_softcap=0.0, bias=True, opt_hidden="adamw",
                        opt_embed="adamw", opt_head="adamw", opt_scalar="adamw", lr_hidden=6e-4,
                        lr_embed=6e-4, lr_head=6e-4, lr_scalar=6e-4, weight_decay=0.1, beta1=0.9,
                        beta2=0.95, eps=1e-8, warmup_frac=0.05),
}
FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def parse_args(argv: list[str], cuda: bool) -> tuple[Config, str, str]:
    """Return (config, preset name, why that preset) from --preset=NAME and --key=value arguments."""
    preset, overrides = schema.parse_overrides(Config, argv, PRESETS)
    if preset is not None:
        why = "--preset given"
    elif not cuda:
        preset, why = "tiny", "no CUDA device, so the tiny CPU preset on the embedded corpus"
    elif not any(FINEWEB_DIR.glob("fineweb_train_*.bin")):
        preset, why = "tiny", "no FineWeb shards in data/fineweb10B (python data/cached_fineweb10B.py 8)"
    else:
        preset, why = "speedrun124m", "CUDA and FineWeb shards present"
    cfg = Config(**{**PRESETS[preset], **overrides})
    schema.check_ranges(cfg)
    return cfg, preset, why


def check_config(cfg: Config, world: int) -> None:
    """Reject shapes and batch sizes that cannot work, before any data or model is touched."""
    if cfg.model_dim % cfg.n_head or (cfg.model_dim // cfg.n_head) % 2:
        raise ConfigError(f"model_dim {cfg.model_dim} must split into {cfg.n_head} heads of even size")
    per_rank = cfg.global_batch_tokens // world
    if cfg.global_batch_tokens % (world * cfg.seq_len):
        raise ConfigError(f"global_batch_tokens {cfg.global_batch_tokens} is not divisible by world size {world} "
                          f"× seq_len {cfg.seq_len}")
    micro = min(cfg.micro_batch_tokens, per_rank)
    if micro % cfg.seq_len or per_rank % micro:
        raise ConfigError(f"micro_batch_tokens {micro} must be a multiple of seq_len {cfg.seq_len} and divide "
                          f"the per-rank batch {per_rank}")
    if cfg.val_tokens % (world * micro):
        raise ConfigError(f"val_tokens {cfg.val_tokens} is not divisible by world size {world} × micro batch {micro}")
    if cfg.warmup_frac + cfg.cooldown_frac > 1:
        raise ConfigError(f"warmup_frac {cfg.warmup_frac} + cooldown_frac {cfg.cooldown_frac} exceeds 1")
    for key in ("window_schedule", "batch_schedule", "doc_len_schedule"):
        try:
            stages(getattr(cfg, key), 0)
        except ValueError as e:
            raise ConfigError(f"--{key}: {e}") from None
    for batch in {v for _, v in stages(cfg.batch_schedule, cfg.global_batch_tokens)}:
        if batch % (world * micro):
            raise ConfigError(f"batch_schedule: {batch} tokens is not divisible by world size {world} × micro batch "
                              f"{micro}")
    if set(cfg.window_pattern) - set("LS"):
        raise ConfigError(f"window_pattern {cfg.window_pattern!r}: one letter per layer, L (long) or S (short)")
    if "S" in cfg.window_pattern and not (cfg.attn_window or cfg.window_schedule):
        raise ConfigError("window_pattern has short (S) layers but there is no window: set attn_window or window_schedule")
    if not 0 <= separator(cfg) < cfg.vocab_size and (cfg.doc_mask or cfg.rope_doc_reset or cfg.bos_align):
        raise ConfigError(f"separator {separator(cfg)} is not a token id below vocab_size {cfg.vocab_size}")
    if cfg.rope_doc_reset and not cfg.rotary:
        raise ConfigError("rope_doc_reset needs rotary=true")
    if (cfg.max_doc_len or cfg.doc_len_schedule) and not cfg.bos_align:
        raise ConfigError("max_doc_len and doc_len_schedule cut documents in rows aligned to them: set bos_align=true")
    cfg.micro_batch_tokens = micro


def separator(cfg: Config) -> int:
    """The token that opens each document: --separator, else the end-of-text of the tokenizer (256 byte, 50256 GPT-2)."""
    if cfg.separator >= 0:
        return cfg.separator
    return ByteTokenizer.eot_token if cfg.tokenizer == "byte" else EOT_GPT2


def stages(text: str, constant: int) -> list[tuple[float, int]]:
    """A 'fraction:value ...' schedule (optimizers/schedule.py), or the constant when it is empty."""
    return schedule.parse_stages(text) if text else [(0.0, constant)]


def batch_at(cfg: Config, step: int) -> int:
    """Global batch tokens of `step` (batch_schedule, record #46)."""
    return schedule.stage_value(stages(cfg.batch_schedule, cfg.global_batch_tokens), step, cfg.num_iterations)


def doc_len_at(cfg: Config, step: int) -> int:
    """Document cap of `step` with bos_align (doc_len_schedule, record #72); 0: none."""
    return schedule.stage_value(stages(cfg.doc_len_schedule, cfg.max_doc_len), step, cfg.num_iterations)


def layer_windows(cfg: Config, step: int, validating: bool = False) -> tuple[int, ...]:
    """Each layer's attention window at `step`: L layers the long window (window_schedule, else attn_window;
    val_window at validation when set), S layers half the training long window (#20); 0 means none."""
    long = schedule.stage_value(stages(cfg.window_schedule, cfg.attn_window), step, cfg.num_iterations)
    short = max(1, long // 2) if long else 0
    long = cfg.val_window if validating and cfg.val_window else long
    pattern = cfg.window_pattern or "L"
    return tuple(long if pattern[i % len(pattern)] == "L" else short for i in range(cfg.n_layer))


# ----------------------------------------------------------------------------------------------
# 2. Model: norm, rotary, attention, MLP, block, GPT. Each trick reads its switch from the config.

class Norm(nn.Module):
    """Parameter-free RMSNorm x/√(mean x² + ε), or the classic LayerNorm with gain and bias."""

    def __init__(self, dim: int, rms: bool):
        super().__init__()
        self.layer_norm = None if rms else nn.LayerNorm(dim)

    def forward(self, x):
        return F.rms_norm(x, (x.size(-1),)) if self.layer_norm is None else self.layer_norm(x)


class Rotary(nn.Module):
    """Rotate each (x₁, x₂) half-pair of a head by angle position·base^(−2i/d)."""

    def __init__(self, head_dim: int, max_len: int, base: float):
        super().__init__()
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
    def __init__(self, cfg: Config):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.model_dim // cfg.n_head
        self.qkv = nn.Linear(cfg.model_dim, 3 * cfg.model_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.model_dim, cfg.model_dim, bias=cfg.bias)
        self.qk_norm = cfg.qk_norm

    def forward(self, x, rotary: Rotary | None, docs=None, window: int = 0):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).unbind(dim=2)
        if self.qk_norm:
            q, k = F.rms_norm(q, (self.head_dim,)), F.rms_norm(k, (self.head_dim,))
        if rotary is not None:
            q, k = rotary(q), rotary(k)
        # causal; with document ids and a window, within the document and the last `window` keys
        y = masked_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), docs, window)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.fc = nn.Linear(cfg.model_dim, cfg.mlp_ratio * cfg.model_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.model_dim, cfg.model_dim, bias=cfg.bias)
        self.relu2 = cfg.relu2

    def forward(self, x):
        h = self.fc(x)
        return self.proj(F.relu(h).square() if self.relu2 else F.gelu(h, approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.norm1, self.attn = Norm(cfg.model_dim, cfg.rmsnorm), Attention(cfg)
        self.norm2, self.mlp = Norm(cfg.model_dim, cfg.rmsnorm), MLP(cfg)

    def forward(self, x, rotary: Rotary | None, docs=None, window: int = 0):
        x = x + self.attn(self.norm1(x), rotary, docs, window)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.pos_embed = None if cfg.rotary else nn.Embedding(cfg.seq_len, cfg.model_dim)
        # one rotary table shared by every layer (a non-persistent buffer: DDP need not broadcast it)
        self.rotary = Rotary(cfg.model_dim // cfg.n_head, cfg.seq_len, cfg.rope_base) if cfg.rotary else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.separator, self.windows = separator(cfg), layer_windows(cfg, 0)  # the loop sets windows each step
        self.norm = Norm(cfg.model_dim, cfg.rmsnorm)
        self.head = nn.Linear(cfg.model_dim, cfg.vocab_size, bias=False)
        if not cfg.untied_head:
            self.head.weight = self.embed.weight
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """GPT-2 init: N(0, 0.02), output projections scaled by 1/√(2·layers); or zero with zero_init_proj."""
        for name, p in self.named_parameters():
            if p.ndim < 2:
                nn.init.ones_(p) if name.endswith("layer_norm.weight") else nn.init.zeros_(p)
            elif name.endswith("proj.weight"):
                nn.init.zeros_(p) if self.cfg.zero_init_proj else nn.init.normal_(p, std=0.02 / math.sqrt(2 * self.cfg.n_layer))
            elif name == "head.weight" and self.cfg.zero_init_proj:
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets=None):
        """Logits (B, T, vocab) of idx (B, T); with targets, their mean next-token cross-entropy."""
        x = self.embed(idx)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(idx.size(1), device=idx.device))
        docs = document_ids(idx, self.separator) if self.cfg.doc_mask else None
        rotary = self.rotary
        if rotary is not None and self.cfg.rope_doc_reset:
            rotary = functools.partial(self.rotary, positions=document_positions(idx, self.separator))
        for block, window in zip(self.blocks, self.windows):
            x = block(x, rotary, docs, window)
        logits = self.head(self.norm(x)).float()
        if self.cfg.logit_softcap > 0:
            logits = self.cfg.logit_softcap * torch.tanh(logits / self.cfg.logit_softcap)
        if targets is None:
            return logits
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


# ----------------------------------------------------------------------------------------------
# 3. The optimizer table: one row per parameter group, as the speedrun keeps one per parameter kind.

GROUPS = ("hidden", "embed", "head", "scalar")


def parameter_groups(model: GPT) -> dict[str, list[nn.Parameter]]:
    """Split the model for the optimizers: hidden 2-D matrices, embeddings, head, and the rest."""
    groups = {name: [] for name in GROUPS}
    for name, p in model.named_parameters():  # a tied head is the embedding and is listed once
        if name.startswith(("embed.", "pos_embed.")):
            groups["embed"].append(p)
        elif name.startswith("head."):
            groups["head"].append(p)
        elif p.ndim >= 2:
            groups["hidden"].append(p)
        else:
            groups["scalar"].append(p)
    return groups


def parse_hyperparameters(key: str, text: str) -> dict:
    """'betas=0.9,0.99 eps=1e-8 nesterov=false' → {"betas": (0.9, 0.99), "eps": 1e-8, "nesterov": False}."""
    def value(v: str):
        if "," in v:
            return tuple(value(x) for x in v.split(","))
        if v.lower() in ("true", "false"):
            return v.lower() == "true"
        for kind in (int, float):
            with contextlib.suppress(ValueError):
                return kind(v)
        return v
    pairs = [item.partition("=") for item in text.split()]
    bad = [name for name, eq, v in pairs if not (name and eq and v)]
    if bad:
        raise ConfigError(f"--{key}={text!r}: write hyperparameters as 'name=value name=value' ({bad[0]!r} is not)")
    return {name: value(v) for name, _, v in pairs}


def optimizer_table(cfg: Config) -> dict[str, dict]:
    """Each group's row: its optimizer name, lr, and the hyperparameters handed to that optimizer.

    The shared keys (betas, eps, momentum) go to each group whose optimizer takes them; hp_<group>
    adds or overrides any hyperparameter for that group alone. A hyperparameter the group's optimizer
    does not take is an error naming both; so is a shared key set away from its default that no
    group's optimizer takes.
    """
    shared = {"betas": (cfg.beta1, cfg.beta2), "eps": cfg.eps, "momentum": cfg.momentum}
    rows = {
        "hidden": dict(optimizer=cfg.opt_hidden, lr=cfg.lr_hidden, weight_decay=cfg.weight_decay,
                       **parse_hyperparameters("hp_hidden", cfg.hp_hidden)),
        "embed": dict(optimizer=cfg.opt_embed, lr=cfg.lr_embed, **parse_hyperparameters("hp_embed", cfg.hp_embed)),
        "head": dict(optimizer=cfg.opt_head, lr=cfg.lr_head, **parse_hyperparameters("hp_head", cfg.hp_head)),
        "scalar": dict(optimizer=cfg.opt_scalar, lr=cfg.lr_scalar, **parse_hyperparameters("hp_scalar", cfg.hp_scalar)),
    }
    taken = set()
    for group, row in rows.items():
        takes = optimizers.get(row["optimizer"]).bounds
        for name in row.keys() - {"optimizer"}:
            if name not in takes:
                raise ConfigError(f"group {group}: optimizer {row['optimizer']} takes no {name!r} "
                                  f"(it takes {', '.join(sorted(takes))}); change --opt_{group} or --hp_{group}")
        for name, v in shared.items():
            if name in takes:
                row.setdefault(name, v)
                taken.add(name)
    changed = {"betas": ("beta1", "beta2"), "eps": ("eps",), "momentum": ("momentum",)}
    for name, keys in changed.items():
        moved = [k for k in keys if getattr(cfg, k) != FIELDS[k].default]
        if moved and name not in taken:
            wiring = ", ".join(f"{g}: {r['optimizer']}" for g, r in rows.items())
            raise ConfigError(f"--{moved[0]} is set but no group's optimizer takes {name} ({wiring})")
    return rows


def build_optimizers(cfg: Config, model: GPT) -> list[torch.optim.Optimizer]:
    """One optimizer per distinct name in the table, holding its groups (each with its own hyperparameters)."""
    params, by_name = parameter_groups(model), {}
    for group, row in optimizer_table(cfg).items():
        if params[group]:
            row = dict(row)
            name = row.pop("optimizer")
            row["lr"] = schedule.scale_lr(row["lr"], cfg.global_batch_tokens, cfg.lr_base_batch_tokens, cfg.lr_scaling)
            by_name.setdefault(name, []).append(dict(params=params[group], initial_lr=row["lr"], name=group, **row))
    built = []
    for name, groups in by_name.items():
        try:
            built.append(optimizers.get(name)(groups))
        except ValueError as e:
            raise ConfigError(f"optimizer {name!r}: {e}") from None
    return built


def window_graphs(cfg: Config) -> tuple[int, int]:
    """(training, validation) count of distinct per-layer window sets over the run: torch.compile builds one
    graph for each (the windows are Python ints; batch and document-cap schedules keep the micro-batch shape)."""
    val_steps = {cfg.num_iterations, *(range(0, cfg.num_iterations, cfg.val_every) if cfg.val_every else ())}
    return (len({layer_windows(cfg, s) for s in range(cfg.num_iterations)}),
            len({layer_windows(cfg, s, validating=True) for s in val_steps}))


def lr_factor(cfg: Config, step: int) -> float:
    """Warmup–stable–decay multiplier of every group's learning rate (optimizers/schedule.py), times the
    lr_scaling rule's factor for this step's batch over global_batch_tokens (1 without a batch_schedule)."""
    wsd = schedule.wsd_factor(step, cfg.num_iterations, cfg.warmup_frac, cfg.cooldown_frac, cfg.cooldown_shape)
    return wsd * schedule.scale_lr(1.0, batch_at(cfg, step), cfg.global_batch_tokens, cfg.lr_scaling)


# ----------------------------------------------------------------------------------------------
# 4. Data, evaluation and one training step.

def data_files(cfg: Config, master: bool = True) -> tuple[list[str], list[str]]:
    """The run's train and val shards (rank 0 builds the embedded corpus on first use); token ids must fit."""
    patterns = None
    if cfg.dataset == "shakespeare" and not (cfg.train_files and cfg.val_files):
        if master:
            embedded.prepare(cfg.tokenizer)
        barrier()
        patterns = embedded.prepare(cfg.tokenizer)
    train, val = find_shards(cfg.dataset, cfg.train_files, cfg.val_files, patterns)
    sizes = [read_header(path) for path in train]
    wanted, held = sum(batch_at(cfg, s) for s in range(cfg.num_iterations)) + 1, sum(sizes)
    if wanted > held and not cfg.reuse_data:
        more = math.ceil((wanted - held) / max(sizes))
        fetch = (f"python data/cached_fineweb10B.py {len(train) + more}" if cfg.dataset == "fineweb10B"
                 and not cfg.train_files else f"{more} more shard(s) of {max(sizes):,} tokens")
        raise ConfigError(f"the run needs {wanted:,} training tokens but the {len(train)} shard(s) hold {held:,}: "
                          f"get {fetch}, or pass --reuse_data to read them again")
    needed = math.ceil(cfg.num_iterations * cfg.global_batch_tokens / sizes[0]) + 1
    for i, path in enumerate(train + val):
        read_header(path)
        if i < needed or i >= len(train):
            read_shard(path, vocab_size=cfg.vocab_size)
    return train, val


@torch.no_grad()
def evaluate(model: nn.Module, opts: list, loader: ShardLoader, steps: int, d: Dist, autocast) -> float:
    """Mean loss over `steps` global validation batches, from the start of the validation shards.

    Optimizers with an eval mode (Schedule-Free) switch to their evaluation weights meanwhile.
    """
    switching = [o for o in opts if hasattr(o, "eval")]
    for opt in switching:
        opt.eval()
    model.eval()
    loader.reset()
    total = torch.zeros((), device=d.device)
    for _ in range(steps):
        for x, y in loader.next_batch():
            with autocast():
                total += model(x, y).detach()
    model.train()
    for opt in switching:
        opt.train()
    if d.world > 1:
        dist.all_reduce(total)
    return total.item() / (steps * loader.accum * d.world)


@dataclass
class Trainer:
    """What one step needs: the model (raw, and as called: compiled, then DDP-wrapped), its optimizers, the loader."""

    cfg: Config
    d: Dist
    model: GPT
    ddp: nn.Module
    opts: list
    loader: ShardLoader
    autocast: object

    def train_step(self, step: int, stop_requested: bool) -> tuple[float, float, bool]:
        """Forward/backward over the micro-batches, then one optimizer step at the scheduled lr.

        Returns (mean train loss, gradient norm, whether any rank asked to stop); a non-finite loss or
        gradient norm skips the update.
        """
        cfg, d = self.cfg, self.d
        self.model.windows = layer_windows(cfg, step)
        micro_batches = list(self.loader.next_batch(batch_at(cfg, step), doc_len_at(cfg, step)))
        loss_sum = torch.zeros((), device=d.device)
        for k, (x, y) in enumerate(micro_batches):
            syncing = d.world == 1 or k == len(micro_batches) - 1
            with (contextlib.nullcontext() if syncing else self.ddp.no_sync()), self.autocast():
                loss = self.ddp(x, y)
            if step + 1 == cfg.inject_nan_step:
                loss = loss * float("nan")
            (loss / len(micro_batches)).backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        shared = torch.stack([loss_sum / len(micro_batches), grad_norm.to(loss_sum.dtype),
                              torch.tensor(float(stop_requested), device=d.device)])
        if d.world > 1:
            dist.all_reduce(shared)
        train_loss, grad_norm, stop_votes = (shared / d.world).tolist()
        finite = math.isfinite(train_loss) and math.isfinite(grad_norm)
        if finite:
            for opt in self.opts:
                for group in opt.param_groups:
                    group["lr"] = group["initial_lr"] * lr_factor(cfg, step)
                opt.step()
        self.model.zero_grad(set_to_none=True)
        return train_loss, grad_norm, stop_votes > 0


# ----------------------------------------------------------------------------------------------
# 5. The run: set up, resume, then validate / step / checkpoint until done, stopped or diverged.

def train(cfg: Config, preset: str, why: str, d: Dist) -> int:
    """Run training; return the exit status (0 done, 3 stopped on a non-finite value, 128+N on signal N)."""
    if d.master:
        print(f"preset {preset}: {why}", flush=True)
    check_config(cfg, d.world)
    train_files, val_files = data_files(cfg, d.master)
    run_id = broadcast_object(cfg.run_id or default_run_id(), d)
    run_dir = Path(cfg.checkpoint_dir) / run_id
    check_writable(run_dir, "checkpoint")

    torch.manual_seed(cfg.seed)
    model = GPT(cfg).to(d.device)
    n_params = sum(p.numel() for p in model.parameters())
    hidden = spectral.named(model, parameter_groups(model)["hidden"])
    opts = build_optimizers(cfg, model)
    cuda = d.device.type == "cuda"
    compiled = cfg.compile == "true" or (cfg.compile == "auto" and cuda)
    graphs = window_graphs(cfg)
    if compiled:  # one graph per window set must not hit the recompile limit (eager fallback)
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, sum(graphs) + 2)
    net = torch.compile(model) if compiled else model  # compiled inside DDP: DDP's own hooks stay out of the graph
    ddp = net if d.world == 1 else nn.parallel.DistributedDataParallel(
        net, device_ids=[d.local_rank] if cuda else None, broadcast_buffers=False)  # the only buffers: rotary
    bf16 = cfg.autocast == "bf16" or (cfg.autocast == "auto" and cuda)
    autocast = (lambda: torch.autocast(d.device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    loader = ShardLoader(train_files, batch_at(cfg, 0), cfg.micro_batch_tokens, cfg.seq_len, d.rank, d.world, d.device,
                         bos=separator(cfg) if cfg.bos_align else None, max_doc_len=doc_len_at(cfg, 0))
    val_loader = ShardLoader(val_files, d.world * cfg.micro_batch_tokens, cfg.micro_batch_tokens, cfg.seq_len, d.rank, d.world, d.device)
    val_steps = cfg.val_tokens // (d.world * cfg.micro_batch_tokens)
    trainer = Trainer(cfg, d, model, ddp, opts, loader, autocast)

    sources = repo_sources(__file__)
    resume_from = ckpt.find_resume(cfg.resume, run_dir)
    resumed = None if resume_from is None else ckpt.load_resume(resume_from, cfg, source_hashes(sources), d)
    if resumed is not None:
        ckpt.check_tensor_shapes(resume_from, resumed["model"], model.state_dict())
    log = RunLog(cfg, preset, d, run_id, sources, resumed)
    step, train_ms = 0, 0.0
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        for opt, opt_state in zip(opts, resumed["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        loader.load_state_dict(resumed["loader"])
        ckpt.set_rng_states(resumed["rng"], d)
        step, train_ms = resumed["step"], resumed["train_time_ms"]
        log.summary["resumed"].append({"from": str(resume_from), "step": step})
        log.print(f"# resumed from {resume_from} at step {step}")
    wiring = ", ".join(f"{type(o).__name__}({'+'.join(g['name'] for g in o.param_groups)})" for o in opts)
    log.print(f"run {run_id}: {n_params:,} parameters, {d.world} × {d.device.type}, "
              f"{loader.accum} accumulation step(s) of {cfg.micro_batch_tokens} tokens, optimizers: {wiring}")
    log.print(f"attention: windows {layer_windows(cfg, 0)} at step 0, {layer_windows(cfg, cfg.num_iterations, True)} "
              f"at the last validation; documents {'masked' if cfg.doc_mask else 'not masked'}; {graphs[0]} training "
              f"+ {graphs[1]} validation window set(s){' (compiled graphs)' if compiled else ''}")

    def checkpoint() -> Path:
        state = {"model": model.state_dict(), "optimizers": [o.state_dict() for o in opts],
                 "loader": loader.state_dict(), "rng": ckpt.rng_states(d), "step": step, "train_time_ms": train_ms,
                 "config": dataclasses.asdict(cfg), "code_hash": log.code_hash, "file_hashes": log.file_hashes,
                 "world": d.world, "log_offset": log.offset(), "summary": log.summary}
        path = ckpt.save_checkpoint(run_dir, step, state, d, cfg.keep_checkpoints)
        log.print(f"# checkpoint step {step}: {path}")
        return path

    signals = StopSignals()
    val_loss, reached, status, exit_code = float("nan"), False, "complete", 0
    resumed_step = step if resumed is not None else None
    while True:
        last = step == cfg.num_iterations
        if cfg.checkpoint_every and step != resumed_step and (step % cfg.checkpoint_every == 0 or last):
            checkpoint()
        if last or (cfg.val_every and step % cfg.val_every == 0):
            model.windows = layer_windows(cfg, step, validating=True)
            val_loss = evaluate(ddp, opts, val_loader, val_steps, d, autocast)
            log.step(step, "val_loss", val_loss, train_ms)
            log.save_summary(final_val_loss=val_loss, train_time_ms=train_ms, steps=step)
            reached = val_loss <= cfg.target_val_loss
            if (reached and cfg.stop_at_target) or last:
                break
        spectral_due = d.master and cfg.spectral_every and (step + 1) % cfg.spectral_every == 0
        before = {name: p.detach().clone() for name, p in hidden.items()} if spectral_due else None
        synchronize(d)
        t0 = time.perf_counter()
        train_loss, grad_norm, stop = trainer.train_step(step, signals.received is not None)
        synchronize(d)
        train_ms += 1000 * (time.perf_counter() - t0)
        step += 1
        log.step(step, "train_loss", train_loss, train_ms)
        if before is not None:
            log.spectral(step, spectral.report(before, hidden))
        if not (math.isfinite(train_loss) and math.isfinite(grad_norm)):
            message = f"step:{step} non-finite train loss {train_loss} or gradient norm {grad_norm}"
            if cfg.nan_policy == "skip":
                log.print(f"# {message}: update skipped (--nan_policy=skip)")
                continue
            good = ckpt.latest_checkpoint(run_dir)
            log.print(f"# {message}: stopping (--nan_policy=stop); last good checkpoint: {good or 'none'}")
            status, exit_code = "diverged", 3
            break
        if stop:
            path = checkpoint()
            name = signals.received or "a signal on another rank"
            log.print(f"# stopped by {name} at step {step}; resume with --run_id={run_id} --resume=auto (checkpoint {path})")
            status, exit_code = "preempted", signals.exit_code()
            break

    log.print(peak_memory(d))
    tokens = sum(batch_at(cfg, s) for s in range(step))
    if status == "complete":
        log.print(f"final val_loss:{val_loss:.4f} after {step} steps ({tokens:,} tokens) in {train_ms / 1000:.1f}s; "
                  f"target {cfg.target_val_loss} {'reached' if reached else 'not reached'}")
    log.save_summary(status=status, final_val_loss=val_loss, train_time_ms=train_ms, steps=step, tokens=tokens,
                     reached_target=reached, target_val_loss=cfg.target_val_loss, n_params=n_params,
                     peak_memory=peak_memory(d))
    log.close()
    return exit_code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--help=json" in argv:
        print(schema.help_json(Config, PRESETS))
        return 0
    if any(a in ("-h", "--help") for a in argv):
        print(schema.help_text(Config, __doc__, PRESETS))
        return 0
    d = None
    try:
        cfg, preset, why = parse_args(argv, torch.cuda.is_available())
        d = setup_distributed(cfg.device)
        return train(cfg, preset, why, d)
    except (ConfigError, ShardError) as e:
        if d is None or d.master:
            print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        shutdown()


if __name__ == "__main__":
    sys.exit(main())
