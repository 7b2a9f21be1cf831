"""train_gpt.py: train a GPT to a target validation loss as fast as possible.

This file holds what a record changes: the config and its presets, the optimizer table and the training
loop; the model and the public records' tricks are in model.py, the optimizers and their schedules in
optimizers/, the run machinery (log, checkpoints, signals, distributed setup) in runtime/. The run log
embeds the source of every repo module a run imported, so a log reproduces its run.

    python train_gpt.py                                    # tiny preset on the embedded corpus (CPU)
    python train_gpt.py --preset=speedrun124m              # the 124M speedrun on FineWeb shards
    torchrun --standalone --nproc_per_node=8 train_gpt.py --preset=speedrun124m
    python train_gpt.py --help                             # every config key (--help=json: the schema)
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

import optimizers
from data.atomic import DiskFullError
from data.loader import FINEWEB_DIR, ShardLoader, check_shards, find_shards
from data.shards import ShardError
from model import (GPT, aux_loss_weights, check_model, layer_windows, parameter_groups, separator, untie_embedding,
                   untie_step, window_graphs)
from optimizers import schedule, table
from optimizers.schedule import batch_at, doc_len_at, lr_factor, momentum
from runtime import checkpoint as ckpt, config as schema, footprint, spectral
from runtime.config import RUN_ID, ConfigError, at_least, between, knob, one_of
from runtime.distributed import (Dist, barrier, broadcast_object, exit_process, peak_memory, setup_distributed, shutdown,
                                 synchronize, wrap_model)
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
    bos_align: bool = knob(False, "each training row starts at a document and packs whole documents (#26)", "data")
    max_doc_len: int = knob(0, "with bos_align: tokens kept per document; 0: all (#29: 2048)", "data", NONNEGATIVE)
    doc_len_schedule: str = knob("", "max_doc_len over training as 'fraction:tokens ...' stages (#72)", "data")
    reuse_data: bool = knob(False, "let the loader wrap to the first shard when the run needs more tokens", "data")
    # model shape
    vocab_size: int = knob(50304, "embedding rows: the vocabulary padded to a multiple of 64", "shape", POSITIVE)
    n_layer: int = knob(12, "transformer blocks", "shape", POSITIVE)
    model_dim: int = knob(768, "residual stream width", "shape", POSITIVE)
    n_head: int = knob(6, "attention heads (head dim = model_dim / n_head)", "shape", POSITIVE)
    mlp_ratio: int = knob(4, "MLP hidden width / model_dim", "shape", POSITIVE)
    seq_len: int = knob(1024, "training sequence length (the learned position table's rows)", "shape", POSITIVE)
    # architecture tricks (model.py): each a switch, all off gives the classic GPT-2; the docstrings say how
    rotary: bool = knob(True, "rotary position embeddings (off: learned absolute positions)", "shape")
    rope_base: float = knob(10000.0, "rotary base frequency", "recipe", between(1, 1e9))
    rmsnorm: bool = knob(True, "parameter-free RMSNorm (off: LayerNorm with gain and bias)", "shape")
    qk_norm: bool = knob(True, "normalise queries and keys before attention", "recipe")
    relu2: bool = knob(True, "ReLU² MLP activation (off: GELU)", "recipe")
    untied_head: bool = knob(True, "separate output head (off: head tied to the token embedding)", "shape")
    untie_head_frac: float = knob(0.0, "tie the embedding to the head for this fraction of the steps, then untie "
                                       "(2/3 in #53); 0: off", "recipe", FRACTION)
    zero_init_proj: bool = knob(True, "zero-initialise output projections (and the untied head)", "recipe")
    embed_norm: bool = knob(False, "RMSNorm of the token embedding before the first block (#4–#8)", "recipe")
    embed_init_std: float = knob(0.02, "σ of the token embedding's init (1.0 from #8)", "recipe", between(1e-4, 10.0))
    linear_init: str = knob("normal", "init of q, k, v, MLP-in: normal N(0, 0.02) | fan_in U(±1/√fan_in) (to #18) | "
                                      "half: std 0.5/√fan_in (#19 on)", "recipe", one_of("normal", "fan_in", "half"))
    logit_softcap: float = knob(30.0, "soft cap c of the logits (how: logit_cap); 0: off", "recipe", NONNEGATIVE)
    logit_cap: str = knob("tanh", "tanh: c·tanh(z/c) (#9, #18) | sigmoid: c·σ((z + offset)/scale) (#54)", "recipe",
                          one_of("tanh", "sigmoid"))
    logit_cap_offset: float = knob(5.0, "offset of the sigmoid logit cap", "recipe", between(-1e3, 1e3))
    logit_cap_scale: float = knob(7.5, "scale of the sigmoid logit cap", "recipe", between(1e-3, 1e3))
    bias: bool = knob(False, "biases in linear layers (GPT-2 had them)", "shape")
    loss_chunk_tokens: int = knob(0, "loss over this many tokens at a time, logits recomputed in the backward (0: "
                                     "one go)", "system", NONNEGATIVE)
    value_residual: bool = knob(False, "value residual: mix the first layer's values into later layers' (#9)", "shape")
    x0_mix: bool = knob(False, "embedding shortcut: each block reads a·x + b·x₀ (#9)", "shape")
    unet_skips: bool = knob(False, "U-net skips from the first half's blocks to the mirrored second half (#11)",
                            "shape")
    skip_gates: bool = knob(False, "gate each U-net skip per token from x₀ (#55)", "shape")
    value_embeds: int = knob(0, "value embeddings: K tables added to the first and last K layers' values (#15, "
                                "#17); 0: off", "shape", NONNEGATIVE)
    value_embeds_tied: bool = knob(True, "layers i and n_layer−1−i share one table (#15; off: #63)", "shape")
    value_embed_gates: bool = knob(False, "gate each value embedding per head (#55), not by a scalar", "shape")
    attn_scale: float = knob(0.0, "softmax scale of attention scores; 0: 1/√head_dim (0.12 in #20)", "recipe",
                             between(0, 100))
    rotary_half: bool = knob(False, "half-truncated rotary: the last half of the pairs do not rotate (#17)", "recipe")
    key_offset: bool = knob(False, "partial key offset: the stationary key dims take the previous position's (#49)",
                            "recipe")
    attn_gate: bool = knob(False, "sparse attention gate: each head's output times σ(W·x[:gate_dim]) (#28)", "shape")
    smear: bool = knob(False, "token smear: each embedding takes a gated share of the previous one (#34)", "shape")
    paired_heads: str = knob("", "paired-head attention in these layers, e.g. '0,2,5,9' (#58)", "recipe")
    drop_first_mlp: bool = knob(False, "the first block has no MLP (#30)", "shape")
    drop_first_attn: bool = knob(False, "the first block has no attention (#35)", "shape")
    backout: bool = knob(False, "backout: subtract λ·(the stream after block 2·n_layer//3) (#40)", "shape")
    bigram_vocab: int = knob(0, "bigram hash embedding with this many rows (#62: 5·50304); 0: off", "shape",
                             NONNEGATIVE)
    bigram_signs: int = knob(0, "bigram rows times one of R fixed ±1 vectors (#83: 8192); 0: off", "recipe",
                             NONNEGATIVE)
    gate_dim: int = knob(12, "leading channels of the residual stream that the gates read (#55)", "shape", POSITIVE)
    mtp: bool = knob(False, "multi-token prediction: also predict tokens t+2, t+3, fading out by 2/3 (#53); the "
                            "logged train loss is the weighted sum, validation the next token only", "recipe")
    prefix_loss: float = knob(0.0, "weight of the prefix-token auxiliary loss (#88: 0.25); 0: off", "recipe",
                              between(0, 10))
    # attention over packed documents (kernels/attention.py); documents are opened by `separator`
    separator: int = knob(-1, "the token opening every document; -1: the tokenizer's end-of-text", "data", at_least(-1))
    doc_mask: bool = knob(False, "attention stays inside a document (#12)", "recipe")
    attn_window: int = knob(0, "sliding window of the long layers in tokens; 0: none (#12: 1024)", "recipe",
                            NONNEGATIVE)
    window_pattern: str = knob("", "a letter per layer, repeated: L long window, S short (half) (#20); '' all L",
                               "recipe")
    window_schedule: str = knob("", "the long window over training as 'fraction:tokens ...' stages (#13, #46)",
                                "recipe")
    val_window: int = knob(0, "the long window at validation; 0: the training one (#35: 2560)", "eval", NONNEGATIVE)
    rope_doc_reset: bool = knob(False, "rotary positions restart at each document's separator", "recipe")
    # batch
    global_batch_tokens: int = knob(8 * 64 * 1024, "tokens per optimizer step, summed over ranks", "recipe", POSITIVE)
    micro_batch_tokens: int = knob(64 * 1024, "tokens per forward/backward on one device", "system", POSITIVE)
    batch_schedule: str = knob("", "global_batch_tokens over training as 'fraction:tokens ...' stages, each a "
                                   "multiple of world × micro_batch_tokens (#46)", "recipe")
    # the optimizer table (optimizer_table below): one optimizer, lr and own hyperparameters per parameter group
    opt_hidden: str = knob("muon", "optimizer of the hidden 2-D matrices", "optimizer", one_of(*optimizers.NAMES))
    opt_embed: str = knob("adam", "optimizer of the embeddings", "optimizer", one_of(*optimizers.NAMES))
    opt_head: str = knob("adam", "optimizer of the output head", "optimizer", one_of(*optimizers.NAMES))
    opt_scalar: str = knob("adam", "optimizer of gains, biases, other vectors", "optimizer", one_of(*optimizers.NAMES))
    lr_hidden: float = knob(0.05, "learning rate of the hidden matrices", "optimizer", NONNEGATIVE)
    lr_embed: float = knob(0.3, "learning rate of the embeddings", "optimizer", NONNEGATIVE)
    lr_head: float = knob(0.008, "learning rate of the head", "optimizer", NONNEGATIVE)
    lr_scalar: float = knob(0.04, "learning rate of the scalars", "optimizer", NONNEGATIVE)
    hp_hidden: str = knob("", "the hidden group's own hyperparameters, e.g. 'nesterov=false'", "optimizer")
    hp_embed: str = knob("", "the embeddings' own hyperparameters, e.g. 'betas=0.9,0.99 eps=1e-8'", "optimizer")
    hp_head: str = knob("", "the head's own hyperparameters, e.g. 'betas=0.9,0.99'", "optimizer")
    hp_scalar: str = knob("", "the scalars' own hyperparameters, e.g. 'weight_decay=0.01'", "optimizer")
    weight_decay: float = knob(0.0, "weight decay of the hidden matrices (others: via hp_*)", "optimizer", NONNEGATIVE)
    cautious_wd: bool = knob(False, "decay only where the update has the parameter's sign (#43, #50)", "optimizer")
    adam_step_every: int = knob(1, "Adam/AdamW groups step every N steps on their summed gradients (2 in #39); a "
                                   "checkpoint between two such steps drops the half-summed gradient", "optimizer",
                                POSITIVE)
    beta1: float = knob(0.8, "β₁ of every group whose optimizer takes betas", "optimizer", between(0, 1))
    beta2: float = knob(0.95, "β₂ of every group whose optimizer takes betas", "optimizer", between(0, 1))
    eps: float = knob(1e-10, "ε of every group whose optimizer takes eps", "optimizer", between(0, 1))
    momentum: float = knob(0.95, "momentum of every group whose optimizer takes it", "optimizer", between(0, 1))
    split_qkv: bool = knob(False, "the hidden optimizer treats the fused QKV weight as three matrices", "optimizer")
    # schedule: linear warmup, constant, linear cooldown (warmup–stable–decay); validation cadence
    num_iterations: int = knob(1750, "training steps", "schedule", POSITIVE)
    warmup_frac: float = knob(0.0, "fraction of steps of linear warmup from 0", "schedule", FRACTION)
    cooldown_frac: float = knob(0.4, "fraction of steps of decay to 0 at the end", "schedule", FRACTION)
    lr_floor: float = knob(0.0, "the cooldown ends at this fraction of the peak (0.1 in #19)", "schedule", FRACTION)
    momentum_warmup_steps: int = knob(0, "momentum rises from momentum_low over the first N steps (500 in #9)",
                                      "schedule", NONNEGATIVE)
    momentum_cooldown_steps: int = knob(0, "momentum falls back to momentum_low over the last N steps (50 in #39)",
                                        "schedule", NONNEGATIVE)
    momentum_low: float = knob(0.85, "start and end of the momentum warmup/cooldown", "schedule", between(0, 1))
    cooldown_shape: str = knob("linear", "shape of the decay: linear | cosine | sqrt", "schedule",
                               one_of(*schedule.COOLDOWN_SHAPES))
    lr_scaling: str = knob("none", "scale the lrs with global_batch / lr_base_batch_tokens: none | linear | sqrt",
                           "schedule", one_of(*schedule.LR_RULES))
    lr_base_batch_tokens: int = knob(8 * 64 * 1024, "the batch size the lrs were tuned at", "schedule", POSITIVE)
    val_every: int = knob(125, "validate every N steps (and at the end); 0: only at the end", "schedule", NONNEGATIVE)
    stop_at_target: bool = knob(True, "stop at the first validation <= target (off: run every step, as record "
                                      "entries do, so the t-test on final losses means something)", "schedule")
    # evaluation
    val_tokens: int = knob(10485760, "validation tokens per evaluation", "eval", POSITIVE)
    target_val_loss: float = knob(3.28, "the validation loss to reach", "eval", at_least(0))
    # system
    device: str = knob("auto", "auto | cuda | cpu", "system", one_of("auto", "cuda", "cpu"))
    compile: str = knob("auto", "torch.compile the model: auto (CUDA only) | true | false", "system",
                        one_of("auto", "true", "false"))
    autocast: str = knob("auto", "forward dtype: auto (bf16 on CUDA) | bf16 | fp32", "system",
                         one_of("auto", "bf16", "fp32"))
    warmup_steps: int = knob(0, "untimed steps (compilation) before the clock starts; then every state is "
                                "restored", "system", NONNEGATIVE)
    seed: int = knob(0, "random seed (model init)", "seed", between(0, 2**63 - 1))
    # run: names, folders, resume, logging destinations
    run_id: str = knob("", "name of this run's log files (default: time and a random suffix)", "run", RUN_ID)
    log_dir: str = knob("logs", "where <run_id>.txt and <run_id>.json go", "run")
    checkpoint_dir: str = knob("checkpoints", "checkpoints go to <checkpoint_dir>/<run_id>/step_NNNNNN/", "run")
    resume: str = knob("", "a checkpoint folder to resume from, or 'auto': the newest of --run_id, if any", "run")
    force_resume: bool = knob(False, "resume even if the config or code differ from the checkpoint's", "run")
    wandb: bool = knob(False, "also log to Weights & Biases (offline with WANDB_MODE=offline)", "run")
    wandb_group: str = knob("", "wandb group (ablation studies set it)", "run")
    wandb_project: str = knob("nanogpt-speedrun", "wandb project", "operational")
    checkpoint_every: int = knob(0, "checkpoint every N steps and at the end; 0: only when stopped by a signal",
                                 "operational", NONNEGATIVE)
    keep_checkpoints: int = knob(3, "keep the newest K checkpoints (and the step-0 one)", "operational", POSITIVE)
    nan_policy: str = knob("stop", "on a non-finite loss or gradient norm: stop | skip (that update)", "operational",
                           one_of("stop", "skip"))
    # diagnostics
    spectral_every: int = knob(0, "log singular-value statistics of the hidden matrices every N steps (0: off)",
                               "diagnostic", NONNEGATIVE)
    inject_nan_step: int = knob(-1, "testing aid: make the loss NaN at this step", "diagnostic", at_least(-1))

# CPU-sized: bytes of the embedded Shakespeare corpus, a few minutes on 2 cores.
TINY = dict(dataset="shakespeare", tokenizer="byte", vocab_size=320, n_layer=4, model_dim=128, n_head=4, seq_len=256,
            global_batch_tokens=8192, micro_batch_tokens=8192, lr_hidden=0.05, lr_embed=0.03, lr_head=0.01,
            lr_scalar=0.02, num_iterations=600, warmup_frac=0.02, cooldown_frac=0.4, val_every=100, val_tokens=65536,
            target_val_loss=1.8, reuse_data=True)  # 600 × 8192 tokens: about 1.06 passes over the plays
# The model tricks of public record #11: value residual and embedding shortcut (#9), U-net skips (#11).
RECORD_TRICKS = dict(value_residual=True, x0_mix=True, unet_skips=True)

PRESETS: dict[str, dict] = {
    # The speedrun's 124M shape on FineWeb; 8 GPUs × 64 × 1024 tokens per step. The recipe of the public
    # record #8 (modded-nanogpt 2024-11-03, "untied embedding and head", 3.2762 at step 4578): its lrs, Adam
    # betas and eps, no logit softcap, 4578 steps with a linear warmdown over the last 1308, Q, K and V
    # orthogonalised as separate matrices, the embedding N(0, 1) and RMS-normalised, q, k, v and MLP-in drawn as
    # nn.Linear does; 10 untimed warmup steps; the loss 16K tokens at a time.
    "speedrun124m": dict(lr_hidden=0.02, lr_embed=0.3, lr_head=0.002, beta1=0.9, beta2=0.95, eps=1e-8,
                         momentum=0.95, weight_decay=0.0, logit_softcap=0.0, num_iterations=4578,
                         warmup_frac=0.0, cooldown_frac=1308 / 4578, val_every=125, val_tokens=10485760,
                         split_qkv=True, embed_norm=True, embed_init_std=1.0, linear_init="fan_in",
                         warmup_steps=10, loss_chunk_tokens=16384),
    "tiny": TINY,
    # Public record #11 (2024-11-10_UNetDoubleLr, 7.23 min on 8×H100, val loss 3.2753 at step 3000 in its log):
    # the 124M shape, its tricks, the embedding N(0, 1) and RMS-normalised (as since #8), q, k, v and MLP-in drawn
    # as nn.Linear does, tanh logit cap 30, Muon momentum 0.85 → 0.95 over 500 steps (#9), the doubled learning
    # rates of #11 and Adam's β = (0.9, 0.95), ε = 1e-8; 3000 steps, the last 900 a linear decay to 0.
    "record": dict(**RECORD_TRICKS, embed_norm=True, embed_init_std=1.0, linear_init="fan_in", logit_softcap=30.0,
                   momentum_warmup_steps=500, momentum_low=0.85, momentum=0.95, lr_hidden=0.04, lr_embed=0.6,
                   lr_head=0.008, lr_scalar=0.04, beta1=0.9, beta2=0.95, eps=1e-8, num_iterations=3000,
                   warmup_frac=0.0, cooldown_frac=0.3, split_qkv=True, warmup_steps=10, loss_chunk_tokens=16384),
    # The tiny preset's data, shape, batch and lrs with the record's tricks, tuned on CPU (docs/tiny_record.md):
    # 250 steps, the last 60% a linear decay, the momentum warmup over 40 steps (as 500 of #11's 3000), val
    # every 25 steps (the resolution of "steps to target").
    "tiny_record": dict(TINY, num_iterations=250, cooldown_frac=0.6, val_every=25, **RECORD_TRICKS,
                        momentum_warmup_steps=40),
    # The classic GPT-2: every trick off, AdamW everywhere.
    "gpt2classic": dict(rotary=False, rmsnorm=False, qk_norm=False, relu2=False, untied_head=False,
                        zero_init_proj=False, logit_softcap=0.0, bias=True, opt_hidden="adamw", opt_embed="adamw",
                        opt_head="adamw", opt_scalar="adamw", lr_hidden=6e-4, lr_embed=6e-4, lr_head=6e-4,
                        lr_scalar=6e-4, weight_decay=0.1, beta1=0.9, beta2=0.95, eps=1e-8, warmup_frac=0.05),
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
        preset, why = "tiny", "no FineWeb shards in data/fineweb10B (python data/cached_fineweb10B.py 25)"
    else:
        preset, why = "speedrun124m", "CUDA and FineWeb shards present"
    cfg = Config(**{**PRESETS[preset], **overrides})
    schema.check_ranges(cfg)
    return cfg, preset, why


def check_config(cfg: Config, world: int) -> None:
    """Reject shapes, batch sizes and schedules that cannot work, before any data or model is touched."""
    check_model(cfg)
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
            schedule.stages(getattr(cfg, key), 0)
        except ValueError as e:
            raise ConfigError(f"--{key}: {e}") from None
    for batch in {v for _, v in schedule.stages(cfg.batch_schedule, cfg.global_batch_tokens)}:
        if batch % (world * micro):
            raise ConfigError(f"batch_schedule: {batch} tokens is not divisible by world size {world} × micro batch "
                              f"{micro}")
    if (cfg.max_doc_len or cfg.doc_len_schedule) and not cfg.bos_align:
        raise ConfigError("max_doc_len and doc_len_schedule cut documents in rows aligned to them: set bos_align=true")
    cfg.micro_batch_tokens = micro


# ----------------------------------------------------------------------------------------------
# 2. The optimizer table: one row per parameter group, as the speedrun keeps one per parameter kind (the
# mechanics in optimizers/table.py, the lr, momentum and batch schedules in optimizers/schedule.py).

def optimizer_table(cfg: Config) -> dict[str, dict]:
    """Each group's row (optimizers/table.py): its optimizer, lr and hyperparameters. betas, eps and momentum
    go to each group whose optimizer takes them; hp_<group> adds or overrides any hyperparameter for that
    group alone. A hyperparameter its optimizer does not take is an error naming both."""
    rows = {
        "hidden": dict(optimizer=cfg.opt_hidden, lr=cfg.lr_hidden, weight_decay=cfg.weight_decay)
        | schema.parse_assignments("hp_hidden", cfg.hp_hidden),
        "embed": dict(optimizer=cfg.opt_embed, lr=cfg.lr_embed) | schema.parse_assignments("hp_embed", cfg.hp_embed),
        "head": dict(optimizer=cfg.opt_head, lr=cfg.lr_head) | schema.parse_assignments("hp_head", cfg.hp_head),
        "scalar": dict(optimizer=cfg.opt_scalar, lr=cfg.lr_scalar) | schema.parse_assignments("hp_scalar", cfg.hp_scalar),
    }
    shared = {"betas": (cfg.beta1, cfg.beta2), "eps": cfg.eps, "momentum": cfg.momentum}
    moved = {key: name for key, name in dict(beta1="betas", beta2="betas", eps="eps", momentum="momentum").items()
             if getattr(cfg, key) != FIELDS[key].default}
    return table.complete(rows, shared, moved)


def build_optimizers(cfg: Config, model: GPT) -> list[torch.optim.Optimizer]:
    """The table's optimizers over the model's groups; with split_qkv the hidden group's fused QKV weights are
    orthogonalised as three matrices."""
    fused_qkv = [block.attn.qkv.weight for block in model.blocks if block.attn is not None]
    lr_scale = schedule.scale_lr(1.0, cfg.global_batch_tokens, cfg.lr_base_batch_tokens, cfg.lr_scaling)
    return table.build(optimizer_table(cfg), parameter_groups(model), lr_scale, cfg.cautious_wd,
                       split={"hidden": fused_qkv} if cfg.split_qkv else None)


# ----------------------------------------------------------------------------------------------
# 3. Data, evaluation and one training step.

def data_files(cfg: Config, master: bool = True, check: bool = True) -> tuple[list[str], list[str]]:
    """The run's train and val shards (rank 0 builds the embedded corpus on first use); with `check`, they must
    hold the tokens the run reads and their token ids must fit the vocabulary."""
    train, val = find_shards(cfg.dataset, cfg.train_files, cfg.val_files, cfg.tokenizer, first=master, wait=barrier)
    if check:
        tokens_needed = sum(batch_at(cfg, s) for s in range(cfg.num_iterations)) + 1
        check_shards(train, val, tokens_needed, cfg.vocab_size, cfg.reuse_data,
                     fineweb=cfg.dataset == "fineweb10B" and not cfg.train_files)
    return train, val


@torch.no_grad()
def evaluate(model: nn.Module, opts: list, loader: ShardLoader, steps: int, d: Dist, autocast) -> float:
    """Mean loss over `steps` global validation batches, from the start of the validation shards, at the
    optimizers' evaluation weights (Schedule-Free's averaged point; the weights themselves elsewhere)."""
    model.eval()
    loader.reset()
    total = torch.zeros((), device=d.device)
    with table.evaluation_weights(opts):
        for _ in range(steps):
            for x, y in loader.next_batch():
                with autocast():
                    total += model(x, y).detach()
    model.train()
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

    def train_step(self, step: int, stop_requested: bool) -> torch.Tensor:
        """Forward/backward over the micro-batches, then one optimizer step at the scheduled lr.

        Returns [mean train loss, gradient norm, share of ranks asking to stop] as a device tensor that the
        loop reads one step later, so the host never waits for the device here. With nan_policy=skip it is
        read at once (one host sync per step) and a non-finite step leaves the weights as they were.
        """
        cfg, d = self.cfg, self.d
        if cfg.untie_head_frac:
            if step == untie_step(cfg):
                untie_embedding(self.model, self.opts)
            self.model.tied_phase = step < untie_step(cfg)
        self.model.windows = layer_windows(cfg, step)
        micro_batches = list(self.loader.next_batch(batch_at(cfg, step), doc_len_at(cfg, step)))
        loss_sum = torch.zeros((), device=d.device)
        for k, (x, y) in enumerate(micro_batches):
            syncing = d.world == 1 or k == len(micro_batches) - 1
            with (contextlib.nullcontext() if syncing else self.ddp.no_sync()), self.autocast():
                loss = self.ddp(x, y, *aux_loss_weights(cfg, step, d.device))
            if step + 1 == cfg.inject_nan_step:
                loss = loss * float("nan")
            (loss / len(micro_batches)).backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        flags = torch.stack([loss_sum / len(micro_batches), grad_norm.to(loss_sum.dtype),
                             torch.full((), float(stop_requested), device=d.device)])
        if d.world > 1:
            dist.all_reduce(flags)
            flags /= d.world
        if cfg.nan_policy != "skip" or bool(flags[:2].isfinite().all()):
            for opt in self.opts:
                for group in opt.param_groups:
                    group["lr"] = group["initial_lr"] * lr_factor(cfg, step)
                    if "initial_momentum" in group:
                        group["momentum"] = momentum(cfg, step, group["initial_momentum"])
                if isinstance(opt, optimizers.Adam) and (step + 1) % cfg.adam_step_every:
                    continue  # --adam_step_every (record #39): this optimizer's gradients keep summing
                table.step(opt)  # with cautious weight decay where a group asks for it
        else:
            self.model.zero_grad(set_to_none=True)
        return flags


def warm_up(trainer: Trainer, step: int) -> None:
    """The speedrun's rule: only training is timed. Run `warmup_steps` steps (torch.compile, Triton autotuning),
    then put back the weights, optimizer states, loader position and RNG states, so the timed run is the
    same run as one without warmup."""
    cfg, d = trainer.cfg, trainer.d
    if not cfg.warmup_steps:
        return
    saved = copy.deepcopy(ckpt.training_state(trainer.model, trainer.opts, trainer.loader, d))
    t0 = time.perf_counter()
    for k in range(cfg.warmup_steps):
        trainer.train_step(step + k, stop_requested=False).tolist()
    ckpt.restore(saved, trainer.model, trainer.opts, trainer.loader, d)
    if d.master:
        print(f"# warmup: {cfg.warmup_steps} untimed step(s) in {time.perf_counter() - t0:.1f}s, state restored",
              flush=True)


# ----------------------------------------------------------------------------------------------
# 4. The run: set up, resume, then validate / step / checkpoint until done, stopped or diverged.

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
    graphs = window_graphs(cfg)  # while the head is tied (--untie_head_frac) the embedding is unused
    ddp = wrap_model(model, opts, d, compiled, sum(graphs), find_unused=cfg.untie_head_frac > 0)
    bf16 = cfg.autocast == "bf16" or (cfg.autocast == "auto" and cuda)
    autocast = (lambda: torch.autocast(d.device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    loader = ShardLoader(train_files, batch_at(cfg, 0), cfg.micro_batch_tokens, cfg.seq_len, d.rank, d.world, d.device,
                         bos=separator(cfg) if cfg.bos_align else None, max_doc_len=doc_len_at(cfg, 0))
    val_loader = ShardLoader(val_files, d.world * cfg.micro_batch_tokens, cfg.micro_batch_tokens, cfg.seq_len, d.rank, d.world, d.device)
    val_steps = cfg.val_tokens // (d.world * cfg.micro_batch_tokens)
    trainer = Trainer(cfg, d, model, ddp, opts, loader, autocast)

    sources = repo_sources(__file__)
    resume_from, resumed, branch = ckpt.open_resume(cfg, run_dir, source_hashes(sources), model.state_dict(), d)
    log = RunLog(cfg, preset, d, run_id, sources, resumed)
    step, train_ms = 0, 0.0
    if resumed is not None:  # the config's hyperparameters win over the checkpoint's
        fresh = ckpt.restore(resumed, model, opts, loader, d, keep=table.configured_keys(optimizer_table(cfg)))
        step, train_ms = resumed["step"], resumed["train_time_ms"]
        log.summary["resumed"].append({"from": str(resume_from), "step": step})
        model.tied_phase = cfg.untie_head_frac > 0 and step <= untie_step(cfg)
        log.print(f"# resumed from {resume_from} at step {step}")
        if branch:
            log.print(f"# {branch}")
        if fresh:
            log.print(f"# the checkpoint holds no state of {', '.join(fresh)} (another optimizer): started fresh")
    memory = footprint.estimate(cfg, n_params, *footprint.optimizer_state(opts), policy="autocast" if bf16 else "fp32")
    log.print(f"footprint estimate per device (runtime/footprint.py): {memory.total / 2**20:,.0f} MiB = " +
              ", ".join(f"{name} {value / 2**20:,.0f}" for name, value in memory.rows.items()))
    wiring = ", ".join(f"{type(o).__name__}({'+'.join(g['name'] for g in o.param_groups)})" for o in opts)
    log.print(f"run {run_id}: {n_params:,} parameters, {d.world} × {d.device.type}, "
              f"{loader.accum} accumulation step(s) of {cfg.micro_batch_tokens} tokens, optimizers: {wiring}")
    log.print(f"attention: windows {layer_windows(cfg, 0)} at step 0, {layer_windows(cfg, cfg.num_iterations, True)} "
              f"at the last validation; documents {'masked' if cfg.doc_mask else 'not masked'}; {graphs[0]} training "
              f"+ {graphs[1]} validation window set(s){' (compiled graphs)' if compiled else ''}")

    def checkpoint() -> Path | None:
        """Save one; None, writing nothing, when the weights are not finite (never a bad "last good" one)."""
        if not ckpt.finite(model.parameters()):
            log.print(f"# step:{step} non-finite weights: no checkpoint written")
            return None
        state = {**ckpt.training_state(model, opts, loader, d), "step": step, "train_time_ms": train_ms,
                 "config": dataclasses.asdict(cfg), "code_hash": log.code_hash, "file_hashes": log.file_hashes,
                 "world": d.world, "log_offset": log.offset(), "summary": log.summary}
        path = ckpt.save_checkpoint(run_dir, step, state, d, cfg.keep_checkpoints)
        log.print(f"# checkpoint step {step}: {path}")
        return path

    signals = StopSignals()
    val_loss, reached, status, exit_code = float("nan"), False, "complete", 0
    resumed_step = step if resumed is not None else None
    pending: list[tuple[int, torch.Tensor, float]] = []  # (step, flags, train ms): read one step later
    stop = ""  # why the run must end early: "diverged: ..." or "signal"

    def settle() -> None:
        """Read the pending step's flags: log its train loss, and note a non-finite value or a stop vote."""
        nonlocal stop
        if not pending:
            return
        at, flags, ms = pending.pop()
        loss, norm, votes = flags.tolist()
        log.step(at, "train_loss", loss, ms)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            message = f"step:{at} non-finite train loss {loss} or gradient norm {norm}"
            if cfg.nan_policy == "skip":
                log.print(f"# {message}: update skipped (--nan_policy=skip)")
            elif not stop.startswith("diverged"):
                stop = f"diverged: {message}"
        elif votes > 0 and not stop:
            stop = "signal"

    warm_up(trainer, step)
    synchronize(d)
    t0 = time.perf_counter()
    while True:
        last = step == cfg.num_iterations
        checkpoint_due = cfg.checkpoint_every and step != resumed_step and (step % cfg.checkpoint_every == 0 or last)
        validation_due = last or (cfg.val_every and step % cfg.val_every == 0)
        if checkpoint_due or validation_due or stop:
            settle()  # the last step's flags come first: nothing non-finite is saved or measured
            synchronize(d)  # the clock stops only here, as the speedrun's timer does
            train_ms += 1000 * (time.perf_counter() - t0)
            if stop:
                break
            if checkpoint_due and checkpoint() is None:
                stop = "diverged"
                break
            if validation_due:
                model.windows = layer_windows(cfg, step, validating=True)
                val_loss = evaluate(ddp, opts, val_loader, val_steps, d, autocast)
                log.step(step, "val_loss", val_loss, train_ms)
                log.save_summary(final_val_loss=val_loss, train_time_ms=train_ms, steps=step)
                reached = val_loss <= cfg.target_val_loss
                if (reached and cfg.stop_at_target) or last:
                    break
            t0 = time.perf_counter()
        spectral_due = d.master and cfg.spectral_every and (step + 1) % cfg.spectral_every == 0
        before = {name: p.detach().clone() for name, p in hidden.items()} if spectral_due else None
        flags = trainer.train_step(step, signals.received is not None)
        step += 1
        settle()
        pending.append((step, flags, train_ms + 1000 * (time.perf_counter() - t0)))
        if before is not None:
            settle()
            log.spectral(step, spectral.report(before, hidden))

    if stop.startswith("diverged"):
        good = ckpt.latest_checkpoint(run_dir) or "none"
        reason = stop.removeprefix("diverged").removeprefix(": ")
        log.print(f"# {reason}: stopping (--nan_policy=stop); last good checkpoint: {good}" if reason
                  else f"# stopping; last good checkpoint: {good}")
        status, exit_code = "diverged", 3
    elif stop:
        path = checkpoint()
        name = signals.received or "a signal on another rank"
        log.print(f"# stopped by {name} at step {step}; resume with --run_id={run_id} --resume=auto (checkpoint {path or 'none'})")
        status, exit_code = "preempted", signals.exit_code()
    log.print(f"{peak_memory(d)}; footprint estimate {memory.total / 2**20:,.0f} MiB")
    tokens = sum(batch_at(cfg, s) for s in range(step))
    if status == "complete":
        log.print(f"final val_loss:{val_loss:.4f} after {step} steps ({tokens:,} tokens) in {train_ms / 1000:.1f}s; "
                  f"target {cfg.target_val_loss} {'reached' if reached else 'not reached'}")
    log.save_summary(status=status, final_val_loss=val_loss, train_time_ms=train_ms, steps=step, tokens=tokens,
                     reached_target=reached, target_val_loss=cfg.target_val_loss, n_params=n_params,
                     peak_memory=peak_memory(d), footprint_estimate_mib=round(memory.total / 2**20))
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
    except (ConfigError, table.TableError, ShardError, DiskFullError) as e:  # every rank says why it stops: one may stop alone
        print(f"error: {e}" if d is None or d.master else f"error (rank {d.rank}): {e}", file=sys.stderr)
        return 2
    finally:
        shutdown()


if __name__ == "__main__":
    exit_process(main())
