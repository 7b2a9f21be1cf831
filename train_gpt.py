"""train_gpt.py: train a GPT to a target validation loss as fast as possible.

One file holds everything a record needs: config, model, data loader, optimizer wiring, the
training loop and the run log (which embeds this file, so a log reproduces its run).

    python train_gpt.py                                    # tiny preset on the embedded corpus (CPU)
    python train_gpt.py --preset=speedrun124m              # the 124M speedrun on FineWeb shards
    torchrun --standalone --nproc_per_node=8 train_gpt.py --preset=speedrun124m
    python train_gpt.py --help                             # every config key
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import glob
import hashlib
import inspect
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))
import optimizers  # noqa: E402  (repo package; imported after the path is set)
from analysis import scaling, spectral  # noqa: E402
from data import embedded  # noqa: E402
from data.atomic import atomic_write  # noqa: E402
from data.shards import ShardError, read_header, read_shard  # noqa: E402


class ConfigError(ValueError):
    """A bad command line or config value; main() prints it as one line and exits with status 2."""


# ----------------------------------------------------------------------------------------------
# 1. Config: one dataclass with every knob, presets, and --key=value parsing.

def knob(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # data
    dataset: str = knob("fineweb10B", "fineweb10B | shakespeare (embedded corpus, tokenized by `tokenizer`)")
    tokenizer: str = knob("gpt2", "tokenizer of the embedded corpus: gpt2 | byte")
    train_files: str = knob("", "glob of training shards (overrides `dataset`)")
    val_files: str = knob("", "glob of validation shards (overrides `dataset`)")
    # model shape
    vocab_size: int = knob(50304, "embedding rows: the tokenizer's vocabulary padded to a multiple of 64")
    n_layer: int = knob(12, "transformer blocks")
    model_dim: int = knob(768, "residual stream width")
    n_head: int = knob(6, "attention heads (head dim = model_dim / n_head)")
    mlp_ratio: int = knob(4, "MLP hidden width / model_dim")
    seq_len: int = knob(1024, "training sequence length in tokens")
    # architecture tricks: each one a switch; all off gives the classic GPT-2
    rotary: bool = knob(True, "rotary position embeddings (off: learned absolute positions)")
    rope_base: float = knob(10000.0, "rotary base frequency")
    rmsnorm: bool = knob(True, "parameter-free RMSNorm (off: LayerNorm with gain and bias)")
    qk_norm: bool = knob(True, "normalise queries and keys before attention")
    relu2: bool = knob(True, "ReLU² MLP activation (off: GELU)")
    untied_head: bool = knob(True, "separate output head (off: head tied to the token embedding)")
    zero_init_proj: bool = knob(True, "zero-initialise output projections (and the untied head)")
    logit_softcap: float = knob(30.0, "tanh soft-cap on the logits: cap·tanh(z/cap); 0 turns it off")
    bias: bool = knob(False, "biases in linear layers (GPT-2 had them)")
    # batch
    global_batch_tokens: int = knob(8 * 64 * 1024, "tokens per optimizer step, summed over ranks")
    micro_batch_tokens: int = knob(64 * 1024, "tokens per forward/backward on one device (accumulation fills the rest)")
    # optimizers, per parameter group (names from optimizers.get)
    opt_hidden: str = knob("muon", "optimizer of the hidden 2-D matrices")
    opt_embed: str = knob("adam", "optimizer of the token (and position) embeddings")
    opt_head: str = knob("adam", "optimizer of the output head")
    opt_scalar: str = knob("adam", "optimizer of gains, biases and other vectors")
    lr_hidden: float = knob(0.05, "learning rate of the hidden matrices")
    lr_embed: float = knob(0.3, "learning rate of the embeddings")
    lr_head: float = knob(0.008, "learning rate of the head")
    lr_scalar: float = knob(0.04, "learning rate of the scalars")
    weight_decay: float = knob(0.0, "weight decay of the hidden matrices (other groups: none)")
    beta1: float = knob(0.8, "Adam-family β₁")
    beta2: float = knob(0.95, "Adam-family β₂")
    eps: float = knob(1e-10, "Adam-family ε")
    momentum: float = knob(0.95, "momentum of Muon/SGD-family optimizers")
    # schedule: linear warmup, constant, linear cooldown (warmup–stable–decay)
    num_iterations: int = knob(1750, "training steps")
    warmup_frac: float = knob(0.0, "fraction of steps of linear warmup from 0")
    cooldown_frac: float = knob(0.4, "fraction of steps of decay to 0 at the end")
    cooldown_shape: str = knob("linear", "shape of the decay: linear | cosine | sqrt")
    lr_scaling: str = knob("none", "scale every lr with global_batch_tokens / lr_base_batch_tokens: none | linear | sqrt")
    lr_base_batch_tokens: int = knob(8 * 64 * 1024, "the batch size the learning rates were tuned at (for lr_scaling)")
    # evaluation
    val_every: int = knob(125, "validate every N steps (and at the end); 0: only at the end")
    val_tokens: int = knob(10485760, "validation tokens per evaluation")
    target_val_loss: float = knob(3.28, "the validation loss to reach")
    stop_at_target: bool = knob(True, "stop at the first validation <= target (off: run every step, as record runs do, "
                                      "so the t-test on final losses means something)")
    # system
    seed: int = knob(0, "random seed (model init)")
    device: str = knob("auto", "auto | cuda | cpu")
    compile: bool = knob(True, "torch.compile the model (CUDA only)")
    log_dir: str = knob("logs", "where <run_id>.txt and <run_id>.json go")
    checkpoint_every: int = knob(0, "save a checkpoint every N steps (step 0 included) and at the end; 0: only when stopped by a signal")
    checkpoint_dir: str = knob("checkpoints", "checkpoints go to <checkpoint_dir>/<run_id>/step_NNNNNN/")
    keep_checkpoints: int = knob(3, "keep the newest K checkpoints (and always the step-0 one)")
    resume: str = knob("", "a checkpoint folder to resume from, or 'auto': the newest of --run_id, if any")
    force_resume: bool = knob(False, "resume even if the config or code differ from the checkpoint's")
    nan_policy: str = knob("stop", "on a non-finite loss or gradient norm: stop | skip (drop that update)")
    inject_nan_step: int = knob(-1, "testing aid: make the loss NaN at this step")
    run_id: str = knob("", "name of this run's log files (default: time and a random suffix)")
    spectral_every: int = knob(0, "every N steps log singular-value statistics of each hidden matrix and its update (0: off)")
    wandb: bool = knob(False, "also log to Weights & Biases (needs `pip install wandb`)")
    wandb_project: str = knob("nanogpt-speedrun", "wandb project")
    wandb_group: str = knob("", "wandb group (ablation studies set it)")


PRESETS: dict[str, dict] = {
    # The speedrun's 124M shape on FineWeb; 8 GPUs × 64 × 1024 tokens per step. The recipe of the public
    # record #8 (modded-nanogpt 2024-11-03, "untied embedding and head", 3.2762 at step 4578): its lrs, Adam
    # betas and eps, no logit softcap, 4578 steps with a linear warmdown over the last 1308.
    "speedrun124m": dict(lr_hidden=0.02, lr_embed=0.3, lr_head=0.002, beta1=0.9, beta2=0.95, eps=1e-8,
                         momentum=0.95, weight_decay=0.0, logit_softcap=0.0, num_iterations=4578,
                         warmup_frac=0.0, cooldown_frac=1308 / 4578, val_every=125, val_tokens=10485760),
    # CPU-sized: bytes of the embedded Shakespeare corpus, a few minutes on 2 cores.
    "tiny": dict(dataset="shakespeare", tokenizer="byte", vocab_size=320, n_layer=4, model_dim=128,
                 n_head=4, seq_len=256, global_batch_tokens=8192, micro_batch_tokens=8192,
                 lr_hidden=0.05, lr_embed=0.03, lr_head=0.01, lr_scalar=0.02, num_iterations=600,
                 warmup_frac=0.02, cooldown_frac=0.4, val_every=100, val_tokens=65536,
                 target_val_loss=1.8, compile=False),
    # The classic GPT-2: every trick off, AdamW everywhere.
    "gpt2classic": dict(rotary=False, rmsnorm=False, qk_norm=False, relu2=False, untied_head=False,
                        zero_init_proj=False, logit_softcap=0.0, bias=True, opt_hidden="adamw",
                        opt_embed="adamw", opt_head="adamw", opt_scalar="adamw", lr_hidden=6e-4,
                        lr_embed=6e-4, lr_head=6e-4, lr_scalar=6e-4, weight_decay=0.1, beta1=0.9,
                        beta2=0.95, eps=1e-8, warmup_frac=0.05),
}
FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def parse_value(key: str, text: str):
    kind = FIELDS[key].type
    if kind == "bool":
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--{key} expects a bool (true/false), got {text!r}")
    try:
        return {"int": int, "float": float, "str": str}[kind](text)
    except ValueError:
        raise ConfigError(f"--{key} expects {'an' if kind == 'int' else 'a'} {kind}, got {text!r}") from None


def closest(name: str, choices) -> str:
    match = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def config_help() -> str:
    lines = [__doc__.strip(), "", f"presets: {', '.join(PRESETS)}", "", "keys (--key=value):"]
    for f in dataclasses.fields(Config):
        lines.append(f"  --{f.name:<22} {f.type:<5} default {f.default!r:<14} {f.metadata['help']}")
    return "\n".join(lines)


def parse_args(argv: list[str], cuda: bool) -> tuple[Config, str, str]:
    """Return (config, preset name, why that preset) from --preset=NAME and --key=value arguments."""
    preset, overrides = None, {}
    for arg in argv:
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: use --key=value (see --help)")
        key, has_value, text = arg[2:].partition("=")
        if key == "preset":
            if text not in PRESETS:
                raise ConfigError(f"unknown preset {text!r}{closest(text, PRESETS)} (presets: {', '.join(PRESETS)})")
            preset = text
            continue
        if key not in FIELDS:
            raise ConfigError(f"unknown config key --{key}{closest(key, FIELDS)} (see --help)")
        if not has_value and FIELDS[key].type != "bool":
            raise ConfigError(f"--{key} needs a value: --{key}=VALUE")
        overrides[key] = parse_value(key, text) if has_value else True
    if preset is not None:
        why = "--preset given"
    elif not cuda:
        preset, why = "tiny", "no CUDA device, so the tiny CPU preset on the embedded corpus"
    elif not glob.glob(str(REPO / "data/fineweb10B/fineweb_train_*.bin")):
        preset, why = "tiny", "no FineWeb shards in data/fineweb10B (python data/cached_fineweb10B.py 8)"
    else:
        preset, why = "speedrun124m", "CUDA and FineWeb shards present"
    return Config(**{**PRESETS[preset], **overrides}), preset, why


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

    def forward(self, x):  # x: (B, T, H, D)
        T = x.size(1)
        cos, sin = self.cos[:, :T].to(x.dtype), self.sin[:, :T].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.model_dim // cfg.n_head
        self.qkv = nn.Linear(cfg.model_dim, 3 * cfg.model_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.model_dim, cfg.model_dim, bias=cfg.bias)
        self.rotary = Rotary(self.head_dim, cfg.seq_len, cfg.rope_base) if cfg.rotary else None
        self.qk_norm = cfg.qk_norm

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).unbind(dim=2)
        if self.qk_norm:
            q, k = F.rms_norm(q, (self.head_dim,)), F.rms_norm(k, (self.head_dim,))
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
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

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.pos_embed = None if cfg.rotary else nn.Embedding(cfg.seq_len, cfg.model_dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
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
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x)).float()
        if self.cfg.logit_softcap > 0:
            logits = self.cfg.logit_softcap * torch.tanh(logits / self.cfg.logit_softcap)
        if targets is None:
            return logits
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def parameter_groups(model: GPT) -> dict[str, list[nn.Parameter]]:
    """Split the model for the optimizers: hidden 2-D matrices, embeddings, head, and the rest."""
    groups = {"hidden": [], "embed": [], "head": [], "scalar": []}
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


# ----------------------------------------------------------------------------------------------
# 3. Data: shards through numpy.memmap; every rank takes its own slice of each global batch.

def resolve_data(cfg: Config, rank: int) -> tuple[list[str], list[str]]:
    """The sorted train and val shard paths; builds the embedded corpus on first use."""
    train, val = cfg.train_files, cfg.val_files
    if not (train and val):
        if cfg.dataset == "fineweb10B":
            default = REPO / "data/fineweb10B"
            train, val = train or str(default / "fineweb_train_*.bin"), val or str(default / "fineweb_val_*.bin")
        elif cfg.dataset == "shakespeare":
            if rank == 0:
                embedded.prepare(cfg.tokenizer)
            if dist.is_initialized():
                dist.barrier()
            patterns = embedded.prepare(cfg.tokenizer)
            train, val = train or patterns[0], val or patterns[1]
        else:
            raise ConfigError(f"unknown dataset {cfg.dataset!r}: use fineweb10B, shakespeare, or --train_files/--val_files")
    files = sorted(glob.glob(train)), sorted(glob.glob(val))
    for kind, pattern, found in (("training", train, files[0]), ("validation", val, files[1])):
        if not found:
            hint = " Download them: python data/cached_fineweb10B.py 8" if "fineweb" in pattern else ""
            raise ConfigError(f"no {kind} shards match {pattern}.{hint}")
    return files


class ShardLoader:
    """Global batches of `global_tokens` (+1 for targets) read in order from the shards, looping.

    Batch b is cut into world·accum chunks of `micro_tokens`; rank r at accumulation step k reads
    chunk r·accum + k, so any (world, accum) with the same product sees the same data per step.
    """

    def __init__(self, files: list[str], global_tokens: int, micro_tokens: int, seq_len: int,
                 rank: int, world: int, device: torch.device):
        self.files, self.global_tokens, self.micro_tokens, self.seq_len = files, global_tokens, micro_tokens, seq_len
        self.accum = global_tokens // (world * micro_tokens)
        self.rank, self.device = rank, device
        self.reset()

    def reset(self):
        self.shard, self.pos = 0, 0
        self.tokens = read_shard(self.files[0])

    def state_dict(self) -> dict:
        return {"shard": self.shard, "pos": self.pos}

    def load_state_dict(self, state: dict):
        self.shard, self.pos = state["shard"], state["pos"]
        self.tokens = read_shard(self.files[self.shard])

    def next_batch(self):
        """Yield this rank's accum (inputs, targets) micro-batches of the next global batch."""
        while self.pos + self.global_tokens + 1 > len(self.tokens):
            self.shard = (self.shard + 1) % len(self.files)
            self.pos, self.tokens = 0, read_shard(self.files[self.shard])
            if self.shard == 0 and self.global_tokens + 1 > len(self.tokens):
                raise ConfigError(f"{self.files[0]} holds {len(self.tokens)} tokens, fewer than one batch "
                                  f"({self.global_tokens}); lower global_batch_tokens")
        start = self.pos
        self.pos += self.global_tokens
        for k in range(self.accum):
            a = start + (self.rank * self.accum + k) * self.micro_tokens
            chunk = torch.from_numpy(self.tokens[a:a + self.micro_tokens + 1].astype(np.int64))
            if self.device.type == "cuda":
                chunk = chunk.pin_memory().to(self.device, non_blocking=True)
            yield chunk[:-1].view(-1, self.seq_len), chunk[1:].view(-1, self.seq_len)


# ----------------------------------------------------------------------------------------------
# 4. Optimizers and the learning-rate schedule.

def build_optimizers(cfg: Config, model: GPT) -> list[torch.optim.Optimizer]:
    """One optimizer per distinct name in opt_*, each holding its parameter groups with their lrs."""
    by_name: dict[str, list[dict]] = {}
    for group, params in parameter_groups(model).items():
        if params:
            lr = scaling.scale_lr(getattr(cfg, f"lr_{group}"), cfg.global_batch_tokens, cfg.lr_base_batch_tokens,
                                  cfg.lr_scaling)
            wd = cfg.weight_decay if group == "hidden" else 0.0
            by_name.setdefault(getattr(cfg, f"opt_{group}"), []).append(
                dict(params=params, lr=lr, initial_lr=lr, weight_decay=wd, name=group))
    built = []
    for name, groups in by_name.items():
        try:
            cls = optimizers.get(name)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        accepted = inspect.signature(cls).parameters
        extra = {"betas": (cfg.beta1, cfg.beta2), "eps": cfg.eps, "momentum": cfg.momentum}
        try:
            built.append(cls(groups, **{k: v for k, v in extra.items() if k in accepted}))
        except ValueError as e:
            raise ConfigError(f"optimizer {name!r}: {e}") from None
    return built


def lr_factor(cfg: Config, step: int) -> float:
    """Warmup–stable–decay multiplier of every group's learning rate (analysis/scaling.py)."""
    return scaling.wsd_factor(step, cfg.num_iterations, cfg.warmup_frac, cfg.cooldown_frac, cfg.cooldown_shape)


# ----------------------------------------------------------------------------------------------
# 5. Distributed setup and config checks.

@dataclass
class Dist:
    rank: int
    local_rank: int
    world: int
    device: torch.device

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_distributed(cfg: Config) -> Dist:
    """torchrun's environment → NCCL on CUDA or gloo on CPU; plain `python` is world size 1."""
    if cfg.device not in ("auto", "cuda", "cpu"):
        raise ConfigError(f"--device must be auto, cuda or cpu, got {cfg.device!r}")
    use_cuda = torch.cuda.is_available() if cfg.device == "auto" else cfg.device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("--device=cuda but no CUDA device is visible")
    rank, local_rank, world = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1:
        options = {"device_id": device} if use_cuda else {}
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # torchrun keeps one key-value store across restarts: a per-attempt prefix stops a restarted
            # group from reading the addresses of the workers that died.
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False)
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            options.update(store=dist.PrefixStore(f"attempt{attempt}", store), rank=rank, world_size=world)
        dist.init_process_group("nccl" if use_cuda else "gloo", **options)
    return Dist(rank, local_rank, world, device)


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
    if cfg.num_iterations < 1 or cfg.val_every < 0 or cfg.spectral_every < 0:
        raise ConfigError("num_iterations must be >= 1, val_every >= 0 and spectral_every >= 0")
    if cfg.nan_policy not in ("stop", "skip"):
        raise ConfigError(f"--nan_policy must be stop or skip, got {cfg.nan_policy!r}")
    if cfg.lr_scaling not in scaling.LR_RULES or cfg.cooldown_shape not in scaling.COOLDOWN_SHAPES:
        raise ConfigError(f"--lr_scaling must be one of {scaling.LR_RULES} (got {cfg.lr_scaling!r}) and "
                          f"--cooldown_shape one of {scaling.COOLDOWN_SHAPES} (got {cfg.cooldown_shape!r})")
    if cfg.lr_base_batch_tokens < 1:
        raise ConfigError(f"--lr_base_batch_tokens must be positive, got {cfg.lr_base_batch_tokens}")
    if cfg.warmup_frac + cfg.cooldown_frac > 1:
        raise ConfigError(f"warmup_frac {cfg.warmup_frac} + cooldown_frac {cfg.cooldown_frac} exceeds 1")
    cfg.micro_batch_tokens = micro


def check_vocab(cfg: Config, files: list[str], shards_needed: int) -> None:
    """Every shard's header, and the token ids of those this run will read, must fit the model."""
    for i, path in enumerate(files):
        read_header(path)
        if i < shards_needed:
            read_shard(path, vocab_size=cfg.vocab_size)


# ----------------------------------------------------------------------------------------------
# 6. The run log: embedded sources, config, environment, step lines, and the JSON summary.

def check_writable(folder: Path, what: str) -> None:
    """Fail before training if `folder` cannot be created or written (probing its nearest existing ancestor)."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is not a directory")
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as e:
        raise ConfigError(f"cannot write the {what} directory {folder}: {e}; pick a writable --{what}_dir") from None


def repo_sources() -> dict[str, str]:
    """Source text of train_gpt.py and of every repo module loaded so far, by relative path."""
    paths = {Path(__file__).resolve()}
    for module in list(sys.modules.values()):
        file = Path(getattr(module, "__file__", None) or "/")
        if file.is_absolute() and file.suffix == ".py" and file.resolve().is_relative_to(REPO):
            file = file.resolve()
            parts = file.relative_to(REPO).parts
            if not any(p.startswith(".") or p in ("site-packages", "tests") for p in parts):
                paths.add(file)
    ordered = sorted(paths, key=lambda p: (p != Path(__file__).resolve(), p))  # train_gpt.py first
    return {str(p.relative_to(REPO)): p.read_text() for p in ordered}


def source_hashes(sources: dict[str, str]) -> dict[str, str]:
    return {path: hashlib.sha256(text.encode()).hexdigest() for path, text in sources.items()}


def cpu_name() -> str:
    """The CPU model and core count, e.g. "AMD EPYC 7B13 (2 cores)"; "cpu" where unknown."""
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    name = names[0] if names else platform.processor() or "cpu"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name} ({cores} cores)"


def environment(d: Dist) -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    cuda = d.device.type == "cuda"
    return {
        "python": platform.python_version(), "torch": torch.__version__, "triton": triton_version,
        "cuda": torch.version.cuda, "platform": platform.platform(), "world_size": d.world,
        "device": torch.cuda.get_device_name(d.device) if cuda else cpu_name(),
        "device_count": torch.cuda.device_count() if cuda else 1,
        "git_commit": git("rev-parse", "HEAD") or None, "git_dirty": bool(git("status", "--porcelain")),
    }


class RunLog:
    """logs/<run_id>.txt (human, embeds the code) and logs/<run_id>.json (machine summary); rank 0 only.

    On resume the .txt is cut back to where the checkpoint was taken (via a rewritten copy, renamed
    over the original), so the finished log reads like one uninterrupted run.
    """

    RULE = "=" * 100

    def __init__(self, cfg: Config, preset: str, d: Dist, run_id: str, sources: dict[str, str], resume: dict | None):
        self.enabled, self.cfg = d.master, cfg
        self.file_hashes = source_hashes(sources)
        self.code_hash = hashlib.sha256(json.dumps(self.file_hashes, sort_keys=True).encode()).hexdigest()
        self.summary = {"run_id": run_id, "status": "running", "preset": preset, "config": dataclasses.asdict(cfg),
                        "code_hash": self.code_hash, "hardware": environment(d), "val_history": [], "resumed": [],
                        "spectral": []}
        self.wandb = None
        if not self.enabled:
            return
        if cfg.wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError("--wandb needs the wandb package: pip install wandb") from None
        folder = Path(cfg.log_dir)
        check_writable(folder, "log")
        folder.mkdir(parents=True, exist_ok=True)
        self.txt, self.json = folder / f"{run_id}.txt", folder / f"{run_id}.json"
        if resume is not None and self.txt.exists():
            kept = self.txt.read_bytes()[:resume["log_offset"]]
            atomic_write(self.txt, kept)
            self.summary.update({k: resume["summary"].get(k, []) for k in ("val_history", "resumed", "spectral")})
        elif self.txt.exists():
            raise ConfigError(f"{self.txt} exists already; pick another --run_id (or --resume=auto to continue it)")
        else:
            header = [f"{self.RULE}\n# {path}\n{self.RULE}\n{text}\n" for path, text in sources.items()]
            header.append(f"{self.RULE}\n# config (preset {preset})\n{json.dumps(self.summary['config'], indent=1)}\n")
            header.append(f"{self.RULE}\n# environment\n{json.dumps(self.summary['hardware'], indent=1)}\n{self.RULE}\n")
            self.txt.write_text("".join(header))
        self.file = open(self.txt, "a")
        self.save_summary()
        if cfg.wandb:
            self.wandb = wandb.init(project=cfg.wandb_project, group=cfg.wandb_group or None, name=run_id,
                                    config=self.summary["config"], resume="allow", id=run_id)

    def offset(self) -> int:
        return self.file.tell() if self.enabled else 0

    def print(self, line: str) -> None:
        if self.enabled:
            print(line, flush=True)
            self.file.write(line + "\n")
            self.file.flush()

    def step(self, step: int, metric: str, value: float, train_ms: float) -> None:
        """One speedrun log line: step:N/M metric:X train_time:Tms step_avg:Sms."""
        self.print(f"step:{step}/{self.cfg.num_iterations} {metric}:{value:.4f} "
                   f"train_time:{train_ms:.0f}ms step_avg:{train_ms / max(step, 1):.2f}ms")
        if metric == "val_loss":
            self.summary["val_history"].append([step, value, train_ms])
        if self.wandb is not None:
            self.wandb.log({metric: value, "train_time_ms": train_ms}, step=step)

    def spectral(self, step: int, rows: list[dict]) -> None:
        """Singular-value statistics of the hidden matrices and their updates (analysis/spectral.py)."""
        for row in rows:
            self.print(spectral.log_line(step, row))
            self.summary["spectral"].append({"step": step, **row})
            if self.wandb is not None:
                self.wandb.log({f"spectral/{row['name']}/{k}": v for k, v in row.items() if k != "name"}, step=step)

    def save_summary(self, **fields) -> None:
        self.summary.update(fields)
        if self.enabled:
            atomic_write(self.json, json.dumps(self.summary, indent=1) + "\n")

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.wandb is not None:
                self.wandb.finish()


# ----------------------------------------------------------------------------------------------
# 7. Checkpoints: <checkpoint_dir>/<run_id>/step_NNNNNN/rank<R>.pt, each folder renamed into place
#    only once every rank has written, so a crash mid-write leaves the previous one intact.

OPERATIONAL_KEYS = {"resume", "force_resume", "run_id", "log_dir", "checkpoint_dir", "checkpoint_every",
                    "keep_checkpoints", "wandb", "wandb_project", "wandb_group", "inject_nan_step", "spectral_every"}
SHAPE_KEYS = {"vocab_size", "n_layer", "model_dim", "n_head", "mlp_ratio", "rotary", "rmsnorm", "untied_head", "bias"}


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def latest_checkpoint(run_dir: Path) -> Path | None:
    done = sorted(p for p in run_dir.glob("step_*") if (p / "rank0.pt").is_file()) if run_dir.is_dir() else []
    return done[-1] if done else None


def save_checkpoint(run_dir: Path, step: int, state: dict, d: Dist, keep: int) -> Path:
    final, tmp = run_dir / f"step_{step:06d}", run_dir / f".tmp-step_{step:06d}"
    if d.master:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    with open(tmp / f"rank{d.rank}.pt", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    barrier()
    if d.master:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        older = sorted(p for p in run_dir.glob("step_*") if p.name != "step_000000")[:-keep]
        for old in older:  # the step-0 weights (the initialisation) are always kept
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def rng_states(d: Dist) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state(d.device) if d.device.type == "cuda" else None}


def set_rng_states(states: dict, d: Dist) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if states["cuda"] is not None and d.device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], d.device)


def find_resume(cfg: Config, run_id: str) -> Path | None:
    """The checkpoint folder to resume from: --resume=PATH, or with 'auto' the latest of this run (if any).

    A job restarted by `torchrun --max-restarts` resumes as with 'auto'.
    """
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if cfg.resume == "auto" or (restarted and not cfg.resume):
        return latest_checkpoint(Path(cfg.checkpoint_dir) / run_id)
    if not cfg.resume:
        return None
    path = Path(cfg.resume)
    if not (path / "rank0.pt").is_file():
        raise ConfigError(f"--resume={cfg.resume}: no checkpoint there (expected {path / 'rank0.pt'})")
    return path


def load_resume(path: Path, cfg: Config, file_hashes: dict[str, str], d: Dist) -> dict:
    """This rank's checkpoint state, after refusing a mismatched model, world size, config or code."""
    file = path / f"rank{d.rank}.pt"
    if not file.is_file():
        raise ConfigError(f"{path} was written by fewer ranks than this run's {d.world}; resume with the same world size")
    state = torch.load(file, map_location=d.device, weights_only=False)
    old, new = state["config"], dataclasses.asdict(cfg)
    if state["world"] != d.world:
        raise ConfigError(f"{path} was written by {state['world']} rank(s), this run has {d.world}; use the same world size")
    shape = [f"{k}: {old.get(k)} in checkpoint, {new[k]} now" for k in sorted(SHAPE_KEYS) if old.get(k) != new[k]]
    if shape:
        raise ConfigError(f"{path} holds another model shape ({'; '.join(shape)}); match the config or start a new run")
    differs = [f"{k}: {old.get(k)!r} → {new[k]!r}" for k in sorted(new) if k not in OPERATIONAL_KEYS and old.get(k) != new[k]]
    then, now = state["file_hashes"], file_hashes
    changed = sorted(f for f in then.keys() | now.keys() if then.get(f) != now.get(f))
    if changed:
        differs.append(f"code changed in {', '.join(changed)}")
    if differs and not cfg.force_resume:
        raise ConfigError(f"refusing to resume from {path}: {'; '.join(differs)}. Pass --force_resume to resume anyway")
    return state


# ----------------------------------------------------------------------------------------------
# 8. main(): the loop, validation, stop at target, checkpoints, preemption, final summary.

class StopSignals:
    """SIGTERM/SIGINT set a flag that the loop checks between steps (the first one only: a second one kills)."""

    def __init__(self):
        self.received = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.handle)

    def handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        signal.signal(signum, signal.SIG_DFL)


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


def synchronize(d: Dist) -> None:
    if d.device.type == "cuda":
        torch.cuda.synchronize(d.device)


def peak_memory(d: Dist) -> str:
    if d.device.type == "cuda":
        return (f"peak memory allocated: {torch.cuda.max_memory_allocated(d.device) // 2**20} MiB "
                f"reserved: {torch.cuda.max_memory_reserved(d.device) // 2**20} MiB")
    import resource
    return f"peak memory (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB"


def default_run_id() -> str:
    """Time and a random suffix; under torchrun, derived from its run id so restarts find their checkpoints."""
    elastic = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if elastic not in ("", "none"):
        return f"elastic-{hashlib.sha256(elastic.encode()).hexdigest()[:10]}"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def train(cfg: Config, preset: str, why: str, d: Dist) -> int:
    """Run training; return the exit status (0 done, 3 stopped on a non-finite value, 128+N on signal N)."""
    if d.master:
        print(f"preset {preset}: {why}", flush=True)
    check_config(cfg, d.world)
    train_files, val_files = resolve_data(cfg, d.rank)
    shards_needed = math.ceil(cfg.num_iterations * cfg.global_batch_tokens / read_header(train_files[0])) + 1
    check_vocab(cfg, train_files, shards_needed)
    check_vocab(cfg, val_files, len(val_files))
    run_id = cfg.run_id or default_run_id()
    if d.world > 1:
        shared = [run_id]
        dist.broadcast_object_list(shared, src=0)
        run_id = shared[0]
    run_dir = Path(cfg.checkpoint_dir) / run_id
    check_writable(run_dir, "checkpoint")

    torch.manual_seed(cfg.seed)
    model = GPT(cfg).to(d.device)
    n_params = sum(p.numel() for p in model.parameters())
    hidden = spectral.named(model, parameter_groups(model)["hidden"])
    opts = build_optimizers(cfg, model)
    cuda = d.device.type == "cuda"
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[d.local_rank] if cuda else None) if d.world > 1 else model
    runner = torch.compile(ddp) if cfg.compile and cuda else ddp
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    train_loader = ShardLoader(train_files, cfg.global_batch_tokens, cfg.micro_batch_tokens, cfg.seq_len, d.rank, d.world, d.device)
    val_loader = ShardLoader(val_files, d.world * cfg.micro_batch_tokens, cfg.micro_batch_tokens, cfg.seq_len, d.rank, d.world, d.device)
    val_steps = cfg.val_tokens // (d.world * cfg.micro_batch_tokens)

    sources = repo_sources()
    resume_from = find_resume(cfg, run_id)
    resumed = None
    if resume_from is not None:
        resumed = load_resume(resume_from, cfg, source_hashes(sources), d)
    log = RunLog(cfg, preset, d, run_id, sources, resumed)
    step, train_ms = 0, 0.0
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        for opt, opt_state in zip(opts, resumed["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        train_loader.load_state_dict(resumed["loader"])
        set_rng_states(resumed["rng"], d)
        step, train_ms = resumed["step"], resumed["train_time_ms"]
        log.summary["resumed"].append({"from": str(resume_from), "step": step})
        log.print(f"# resumed from {resume_from} at step {step}")
    wiring = ", ".join(f"{type(o).__name__}({'+'.join(g['name'] for g in o.param_groups)})" for o in opts)
    log.print(f"run {run_id}: {n_params:,} parameters, {d.world} × {d.device.type}, "
              f"{train_loader.accum} accumulation step(s) of {cfg.micro_batch_tokens} tokens, optimizers: {wiring}")

    def checkpoint() -> Path:
        state = {"model": model.state_dict(), "optimizers": [o.state_dict() for o in opts],
                 "loader": train_loader.state_dict(), "rng": rng_states(d), "step": step, "train_time_ms": train_ms,
                 "config": dataclasses.asdict(cfg), "code_hash": log.code_hash, "file_hashes": log.file_hashes,
                 "world": d.world, "log_offset": log.offset(), "summary": log.summary}
        path = save_checkpoint(run_dir, step, state, d, max(cfg.keep_checkpoints, 1))
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
            val_loss = evaluate(runner, opts, val_loader, val_steps, d, autocast)
            log.step(step, "val_loss", val_loss, train_ms)
            log.save_summary(final_val_loss=val_loss, train_time_ms=train_ms, steps=step)
            reached = val_loss <= cfg.target_val_loss
            if (reached and cfg.stop_at_target) or last:
                break
        synchronize(d)
        t0 = time.perf_counter()
        micro_batches = list(train_loader.next_batch())
        loss_sum = torch.zeros((), device=d.device)
        for k, (x, y) in enumerate(micro_batches):
            context = ddp.no_sync() if d.world > 1 and k < len(micro_batches) - 1 else contextlib.nullcontext()
            with context, autocast():
                loss = runner(x, y)
            if step + 1 == cfg.inject_nan_step:
                loss = loss * float("nan")
            (loss / len(micro_batches)).backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        stop_flag = torch.tensor(float(signals.received is not None), device=d.device)
        shared = torch.stack([loss_sum / len(micro_batches), grad_norm.to(loss_sum.dtype), stop_flag])
        if d.world > 1:
            dist.all_reduce(shared)
        train_loss, grad_norm, stop_votes = (shared / d.world).tolist()
        finite = math.isfinite(train_loss) and math.isfinite(grad_norm)
        spectral_due = d.master and cfg.spectral_every and (step + 1) % cfg.spectral_every == 0
        before = {name: p.detach().clone() for name, p in hidden.items()} if spectral_due else None
        if finite:
            for opt in opts:
                for group in opt.param_groups:
                    group["lr"] = group["initial_lr"] * lr_factor(cfg, step)
                opt.step()
        model.zero_grad(set_to_none=True)
        synchronize(d)
        train_ms += 1000 * (time.perf_counter() - t0)
        step += 1
        log.step(step, "train_loss", train_loss, train_ms)
        if before is not None:
            log.spectral(step, spectral.report(before, hidden))
        if not finite:
            message = f"step:{step} non-finite train loss {train_loss} or gradient norm {grad_norm}"
            if cfg.nan_policy == "skip":
                log.print(f"# {message}: update skipped (--nan_policy=skip)")
                continue
            good = latest_checkpoint(run_dir)
            log.print(f"# {message}: stopping (--nan_policy=stop); last good checkpoint: {good or 'none'}")
            status, exit_code = "diverged", 3
            break
        if stop_votes > 0:
            path = checkpoint()
            name = signals.received or "a signal on another rank"
            log.print(f"# stopped by {name} at step {step}; resume with --run_id={run_id} --resume=auto (checkpoint {path})")
            status, exit_code = "preempted", 128 + (signal.Signals[signals.received].value if signals.received else 15)
            break

    log.print(peak_memory(d))
    tokens = step * cfg.global_batch_tokens
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
    if any(a in ("-h", "--help") for a in argv):
        print(config_help())
        return 0
    d = None
    try:
        cfg, preset, why = parse_args(argv, torch.cuda.is_available())
        d = setup_distributed(cfg)
        return train(cfg, preset, why, d)
    except (ConfigError, ShardError) as e:
        if d is None or d.master:
            print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
