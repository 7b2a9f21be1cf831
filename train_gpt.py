"""train_gpt.py: train a GPT to a target validation loss as fast as possible.

This file holds what a record changes: the config and its presets, the optimizer table and the training
loop; the model and the public records' tricks are in model.py, the run machinery (log, checkpoints,
signals, distributed setup) in runtime/. The run log embeds the source of every repo module a run
imported, so a log reproduces its run.

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
from data import embedded
from data.atomic import DiskFullError
from data.loader import FINEWEB_DIR, ShardLoader, check_shards, find_shards
from data.shards import ShardError
from model import (GPT, TRICK_WEIGHTS, aux_loss_weights, first_attention, layer_windows, paired_head_layers,
                   separator)
from optimizers import schedule
from optimizers.cautious import cautious_decay_
from runtime import checkpoint as ckpt
from runtime import config as schema
from runtime import footprint, spectral
from runtime.config import RUN_ID, ConfigError, at_least, between, knob, one_of
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
    untie_head_frac: float = knob(0.0, "the embedding reads the head's weights (tied) for this fraction of the steps, "
                                       "then starts from the head's weights and optimizer state and trains apart (2/3 "
                                       "in #53; #51 tied throughout); the head starts at N(0, 0.02); 0: off", "recipe",
                                  FRACTION)
    zero_init_proj: bool = knob(True, "zero-initialise output projections (and the untied head)", "recipe")
    embed_norm: bool = knob(False, "RMSNorm of the token embedding before the first block (public records #4–#8; "
                                   "later records normalise x₀ likewise)", "recipe")
    embed_init_std: float = knob(0.02, "σ of the token embedding's N(0, σ²) init (1.0: nn.Embedding's default, which "
                                       "the public records keep from #8 on)", "recipe", between(1e-4, 10.0))
    logit_softcap: float = knob(30.0, "soft cap c of the logits (logit_cap says how); 0 turns it off", "recipe",
                                NONNEGATIVE)
    logit_cap: str = knob("tanh", "tanh: c·tanh(z/c) (c = 30 in #9, 15 in #18) | sigmoid: c·σ((z + offset)/scale), "
                                  "the asymmetric rescale (c = 23, offset 5, scale 7.5 in #54)", "recipe",
                          one_of("tanh", "sigmoid"))
    logit_cap_offset: float = knob(5.0, "offset of the sigmoid logit cap", "recipe", between(-1e3, 1e3))
    logit_cap_scale: float = knob(7.5, "scale of the sigmoid logit cap", "recipe", between(1e-3, 1e3))
    bias: bool = knob(False, "biases in linear layers (GPT-2 had them)", "shape")
    loss_chunk_tokens: int = knob(0, "compute the loss this many tokens at a time, each chunk's logits recomputed in "
                                     "the backward, so no vocab × micro-batch fp32 logits exist at once (0: one go)",
                                  "system", NONNEGATIVE)
    # the public record's model tricks (model.py, section 2); off by default, each docstring names its record
    value_residual: bool = knob(False, "value residual: layers after the first use (1−λ)·v + λ·v₁, v₁ the first "
                                       "layer's values, λ learned from 0.5 (record #9)", "shape")
    x0_mix: bool = knob(False, "embedding shortcut: each block reads a·x + b·x₀, x₀ the token embedding, (a, b) "
                               "learned from (1, 0) (#9)", "shape")
    unet_skips: bool = knob(False, "U-net skips: the i-th of the first n_layer//2 blocks' outputs, times a learned "
                                   "weight (init 1), enters the mirrored block of the second half (#11)", "shape")
    skip_gates: bool = knob(False, "gate each U-net skip per token by 2σ(w·x₀[:gate_dim]), w learned from 0 (#55)",
                            "shape")
    value_embeds: int = knob(0, "value embeddings: K tables added to the values of the first K and the last K "
                                "layers in a U-net pattern (K = n_layer/2: #15; 3 of 12: #17); 0: off", "shape",
                             NONNEGATIVE)
    value_embeds_tied: bool = knob(True, "layer i and layer n_layer−1−i share a value-embedding table (#15); off: "
                                         "every layer its own (#63)", "shape")
    value_embed_gates: bool = knob(False, "add each value embedding times a per-head gate 2σ(W·x[:gate_dim]) "
                                          "(#55) instead of a learned scalar (init 0.5)", "shape")
    attn_scale: float = knob(0.0, "softmax scale of the attention scores; 0: 1/√head_dim (0.12 in #20)", "recipe",
                             between(0, 100))
    rotary_half: bool = knob(False, "half-truncated rotary (#17): frequencies (1/1024)^(j/(D/4−1)) for the first D/4 "
                                    "of the D/2 pairs of a head, 0 (no rotation) for the rest", "recipe")
    key_offset: bool = knob(False, "partial key offset (#49): after rotary, the key dims [D/4, D/2) and [3D/4, D) "
                                   "(the stationary pairs under rotary_half) take the previous position's values",
                            "recipe")
    attn_gate: bool = knob(False, "sparse attention gate (#28): each head's output times σ(W·x[:gate_dim]), W "
                                  "learned from 0", "shape")
    smear: bool = knob(False, "token smear (#34): embedding e_t += λ·σ(w·e_t[:gate_dim])·e_(t−1), λ and w learned "
                              "from 0", "shape")
    paired_heads: str = knob("", "paired-head attention (#58) in these layers, e.g. '0,2,5,9': heads 2j and 2j+1 "
                                 "attend as one sequence of 2T interleaved positions (rotary angles 2t and 2t+1), "
                                 "so a query sees two keys per position in one softmax", "recipe")
    drop_first_mlp: bool = knob(False, "the first block has no MLP (#30)", "shape")
    drop_first_attn: bool = knob(False, "the first block has no attention (#35)", "shape")
    backout: bool = knob(False, "backout (#40): the output stream minus λ·(the stream after block 2·n_layer//3), λ "
                                "learned from 0.5", "shape")
    bigram_vocab: int = knob(0, "bigram hash embedding (#62): rows M of a zero-initialised table read at "
                                "hash(previous, current token) mod (M−1) and added to every block's input with a "
                                "learned weight per layer (init 0.1); 5·50304 in #62; 0: off", "shape", NONNEGATIVE)
    bigram_signs: int = knob(0, "sign trick (#83): multiply each bigram row by a fixed random ±1 vector, one of R "
                                "picked by (previous XOR current token) mod R (8192 in #83); 0: off", "recipe",
                             NONNEGATIVE)
    gate_dim: int = knob(12, "leading channels of the residual stream that the gates read (12 in #55)", "shape",
                         POSITIVE)
    mtp: bool = knob(False, "multi-token prediction (#53): the training loss Σ_k w_k·CE(logits_t, token_(t+k)), w = "
                            "[1, 0.5, 0.25→0] over the first third of the steps, [1, 0.5→0] the second, [1] after; "
                            "the logged train loss is this sum, validation the next token only", "recipe")
    prefix_loss: float = knob(0.0, "weight of the prefix-token auxiliary loss (#88: 0.25): CE against the longest "
                                   "proper byte prefix of the next token that is a token, over the first third, "
                                   "then decaying to 0 by two thirds; 0: off", "recipe", between(0, 10))
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
    cautious_wd: bool = knob(False, "cautious weight decay: each group's weight_decay λ applied only where the update "
                                    "has the parameter's sign, x −= lr_t·λ·[u·x ≥ 0]·x (Muon: #43, Adam: #50; "
                                    "optimizers/cautious.py)", "optimizer")
    adam_step_every: int = knob(1, "groups on Adam/AdamW step every N steps on their gradients summed since their "
                                   "last step (2 in #39; a checkpoint between two such steps drops the half-summed "
                                   "gradient)", "optimizer", POSITIVE)
    beta1: float = knob(0.8, "β₁ of every group whose optimizer takes betas", "optimizer", between(0, 1))
    beta2: float = knob(0.95, "β₂ of every group whose optimizer takes betas", "optimizer", between(0, 1))
    eps: float = knob(1e-10, "ε of every group whose optimizer takes eps", "optimizer", between(0, 1))
    momentum: float = knob(0.95, "momentum of every group whose optimizer takes momentum (Muon, SGD)", "optimizer",
                           between(0, 1))
    split_qkv: bool = knob(False, "the hidden optimizer treats the fused QKV weight as three matrices (Muon: "
                                  "split_rows=3, each orthogonalised on its own, as the records' separate Q, K, V)",
                           "optimizer")
    # schedule: linear warmup, constant, linear cooldown (warmup–stable–decay); validation cadence
    num_iterations: int = knob(1750, "training steps", "schedule", POSITIVE)
    warmup_frac: float = knob(0.0, "fraction of steps of linear warmup from 0", "schedule", FRACTION)
    cooldown_frac: float = knob(0.4, "fraction of steps of decay to 0 at the end", "schedule", FRACTION)
    lr_floor: float = knob(0.0, "the cooldown ends at this fraction of the peak lr instead of 0 (0.1 in #19, "
                                "0.15 in #72)", "schedule", FRACTION)
    momentum_warmup_steps: int = knob(0, "momentum rises linearly from momentum_low to `momentum` over the first N "
                                         "steps (500 in #9, 300 in #39); 0: off", "schedule", NONNEGATIVE)
    momentum_cooldown_steps: int = knob(0, "momentum falls linearly back to momentum_low over the last N steps "
                                           "(50 in #39); 0: off", "schedule", NONNEGATIVE)
    momentum_low: float = knob(0.85, "start and end value of the momentum warmup/cooldown (0.85 in #9, #39)",
                               "schedule", between(0, 1))
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
    warmup_steps: int = knob(0, "untimed steps before the clock starts (compilation, autotuning); then the model, "
                                "optimizer states, loader position and RNG are restored exactly", "system", NONNEGATIVE)
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
    checkpoint_every: int = knob(0, "save a checkpoint every N steps (step 0 included) and at the end; 0: only when "
                                    "stopped by a signal", "operational", NONNEGATIVE)
    keep_checkpoints: int = knob(3, "keep the newest K checkpoints (and always the step-0 one)", "operational", POSITIVE)
    nan_policy: str = knob("stop", "on a non-finite loss or gradient norm: stop | skip (drop that update)",
                           "operational", one_of("stop", "skip"))
    # diagnostics
    spectral_every: int = knob(0, "every N steps log singular-value statistics of each hidden matrix and its update "
                                  "(0: off)", "diagnostic", NONNEGATIVE)
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
    # orthogonalised as separate matrices; 10 untimed warmup steps; the loss 16K tokens at a time.
    "speedrun124m": dict(lr_hidden=0.02, lr_embed=0.3, lr_head=0.002, beta1=0.9, beta2=0.95, eps=1e-8,
                         momentum=0.95, weight_decay=0.0, logit_softcap=0.0, num_iterations=4578,
                         warmup_frac=0.0, cooldown_frac=1308 / 4578, val_every=125, val_tokens=10485760,
                         split_qkv=True, embed_norm=True, warmup_steps=10, loss_chunk_tokens=16384),
    "tiny": TINY,
    # Public record #11 (2024-11-10_UNetDoubleLr, 7.23 min on 8×H100, val loss 3.2753 at step 3000 in its log):
    # the 124M shape, its tricks, the embedding N(0, 1) and RMS-normalised (as since #8), tanh logit cap 30,
    # Muon momentum 0.85 → 0.95 over 500 steps (#9), the doubled learning rates of #11 and Adam's β = (0.9, 0.95),
    # ε = 1e-8; 3000 steps, the last 900 a linear decay to 0.
    "record": dict(**RECORD_TRICKS, embed_norm=True, embed_init_std=1.0, logit_softcap=30.0, momentum_warmup_steps=500,
                   momentum_low=0.85, momentum=0.95,
                   lr_hidden=0.04, lr_embed=0.6, lr_head=0.008, lr_scalar=0.04, beta1=0.9, beta2=0.95, eps=1e-8,
                   num_iterations=3000, warmup_frac=0.0, cooldown_frac=0.3, split_qkv=True, warmup_steps=10,
                   loss_chunk_tokens=16384),
    # The tiny preset's data, shape, batch and lrs with the record's tricks, tuned on CPU (docs/tiny_record.md):
    # 250 steps, the last 60% a linear decay, the momentum warmup over 40 steps (as 500 of #11's 3000), val
    # every 25 steps (the resolution of "steps to target").
    "tiny_record": dict(TINY, num_iterations=250, cooldown_frac=0.6, val_every=25, **RECORD_TRICKS,
                        momentum_warmup_steps=40),
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
        preset, why = "tiny", "no FineWeb shards in data/fineweb10B (python data/cached_fineweb10B.py 25)"
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


def batch_at(cfg: Config, step: int) -> int:
    """Global batch tokens of `step` (batch_schedule, record #46)."""
    return schedule.stage_value(schedule.stages(cfg.batch_schedule, cfg.global_batch_tokens), step, cfg.num_iterations)


def doc_len_at(cfg: Config, step: int) -> int:
    """Document cap of `step` with bos_align (doc_len_schedule, record #72); 0: none."""
    return schedule.stage_value(schedule.stages(cfg.doc_len_schedule, cfg.max_doc_len), step, cfg.num_iterations)


# 2. The optimizer table: one row per parameter group, as the speedrun keeps one per parameter kind.

GROUPS = ("hidden", "embed", "head", "scalar")


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


def optimizer_table(cfg: Config) -> dict[str, dict]:
    """Each group's row: its optimizer name, lr, and the hyperparameters handed to that optimizer.

    The shared keys (betas, eps, momentum) go to each group whose optimizer takes them; hp_<group>
    adds or overrides any hyperparameter for that group alone. A hyperparameter the group's optimizer
    does not take is an error naming both; so is a shared key set away from its default that no
    group's optimizer takes.
    """
    shared = {"betas": (cfg.beta1, cfg.beta2), "eps": cfg.eps, "momentum": cfg.momentum}
    rows = {
        "hidden": dict(optimizer=cfg.opt_hidden, lr=cfg.lr_hidden, weight_decay=cfg.weight_decay)
        | schema.parse_assignments("hp_hidden", cfg.hp_hidden),
        "embed": dict(optimizer=cfg.opt_embed, lr=cfg.lr_embed) | schema.parse_assignments("hp_embed", cfg.hp_embed),
        "head": dict(optimizer=cfg.opt_head, lr=cfg.lr_head) | schema.parse_assignments("hp_head", cfg.hp_head),
        "scalar": dict(optimizer=cfg.opt_scalar, lr=cfg.lr_scalar) | schema.parse_assignments("hp_scalar", cfg.hp_scalar),
    }
    taken = set()
    for group, row in rows.items():
        takes = optimizers.get(row["optimizer"]).hyperparameters()
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
    fused_qkv = {id(block.attn.qkv.weight) for block in model.blocks if block.attn is not None}
    for group, row in optimizer_table(cfg).items():
        if params[group]:
            row = dict(row)
            name = row.pop("optimizer")
            row["lr"] = schedule.scale_lr(row["lr"], cfg.global_batch_tokens, cfg.lr_base_batch_tokens, cfg.lr_scaling)
            if "momentum" in row:
                row["initial_momentum"] = row["momentum"]
            if cfg.cautious_wd and row.get("weight_decay"):  # the trainer decays after the step (train_step)
                row["cautious_wd"], row["weight_decay"] = row["weight_decay"], 0.0
            parts = [params[group]]
            if group == "hidden" and cfg.split_qkv:
                if "split_rows" not in optimizers.get(name).hyperparameters():
                    raise ConfigError(f"--split_qkv needs a hidden optimizer that takes split_rows (muon, normuon), "
                                      f"not {name}")
                parts = [[p for p in params[group] if id(p) in fused_qkv], [p for p in params[group] if id(p) not in fused_qkv]]
            for k, part in enumerate(parts):
                split = {"split_rows": 3} if len(parts) == 2 and k == 0 else {}
                by_name.setdefault(name, []).append(dict(params=part, initial_lr=row["lr"], name=group, **row, **split))
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
    """Warmup–stable–decay multiplier of every group's learning rate (optimizers/schedule.py; decaying to lr_floor),
    times the lr_scaling rule's factor for this step's batch over global_batch_tokens (1 without a batch_schedule)."""
    wsd = schedule.wsd_factor(step, cfg.num_iterations, cfg.warmup_frac, cfg.cooldown_frac, cfg.cooldown_shape,
                              cfg.lr_floor)
    return wsd * schedule.scale_lr(1.0, batch_at(cfg, step), cfg.global_batch_tokens, cfg.lr_scaling)


def momentum(cfg: Config, step: int, high: float) -> float:
    """Momentum of a group whose optimizer has one (Muon, SGD): its table value `high`, warmed up from and
    cooled down to momentum_low (records #9, #39; optimizers/schedule.py)."""
    return schedule.momentum_at(step, cfg.num_iterations, high, cfg.momentum_low, cfg.momentum_warmup_steps,
                                cfg.momentum_cooldown_steps)


def untie_step(cfg: Config) -> int:
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


# ----------------------------------------------------------------------------------------------
# 3. Data, evaluation and one training step.

def data_files(cfg: Config, master: bool = True, check: bool = True) -> tuple[list[str], list[str]]:
    """The run's train and val shards (rank 0 builds the embedded corpus on first use); with `check`, they must
    hold the tokens the run reads and their token ids must fit the vocabulary."""
    patterns = None
    if cfg.dataset == "shakespeare" and not (cfg.train_files and cfg.val_files):
        if master:
            embedded.prepare(cfg.tokenizer)
        barrier()
        patterns = embedded.prepare(cfg.tokenizer)
    train, val = find_shards(cfg.dataset, cfg.train_files, cfg.val_files, patterns)
    if check:
        tokens_needed = sum(batch_at(cfg, s) for s in range(cfg.num_iterations)) + 1
        check_shards(train, val, tokens_needed, cfg.vocab_size, cfg.reuse_data,
                     fineweb=cfg.dataset == "fineweb10B" and not cfg.train_files)
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
                cautious = [g for g in opt.param_groups if g.get("cautious_wd")]
                before = [[p.detach().clone() for p in g["params"]] for g in cautious]
                opt.step()
                for group, saved in zip(cautious, before):
                    cautious_decay_(group["params"], saved, group["lr"] * group["cautious_wd"])
                opt.zero_grad(set_to_none=True)
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
    saved = copy.deepcopy({"model": trainer.model.state_dict(), "opts": [o.state_dict() for o in trainer.opts],
                           "loader": trainer.loader.state_dict(), "rng": ckpt.rng_states(d)})
    t0 = time.perf_counter()
    for k in range(cfg.warmup_steps):
        trainer.train_step(step + k, stop_requested=False).tolist()
    trainer.model.load_state_dict(saved["model"])
    for opt, state in zip(trainer.opts, saved["opts"], strict=True):
        opt.load_state_dict(state)
    trainer.loader.load_state_dict(saved["loader"])
    ckpt.set_rng_states(saved["rng"], d)
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
    graphs = window_graphs(cfg)
    if compiled:  # one graph per window set must not hit the recompile limit (eager fallback)
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, sum(graphs) + 2)
    net = torch.compile(model) if compiled else model  # compiled inside DDP: DDP's own hooks stay out of the graph
    if d.world > 1:  # parameters whose optimizer reduce-scatters their gradients itself stay out of DDP's all-reduce
        own = {id(p) for o in opts for g in o.param_groups if g.get("reduce_gradients") for p in g["params"]}
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            net, [name for name, p in net.named_parameters() if id(p) in own])
    # buffers are built alike on every rank; while the head is tied (--untie_head_frac) the embedding is unused
    ddp = net if d.world == 1 else nn.parallel.DistributedDataParallel(
        net, device_ids=[d.local_rank] if cuda else None, broadcast_buffers=False,
        find_unused_parameters=cfg.untie_head_frac > 0)
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
        branch = ckpt.start_branch(run_dir, resumed["step"], d)
    log = RunLog(cfg, preset, d, run_id, sources, resumed)
    step, train_ms = 0, 0.0
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        configured = {"initial_lr"} | {k for row in optimizer_table(cfg).values() for k in row} - {"optimizer"}
        settings = [[{k: g[k] for k in configured if k in g} for g in o.param_groups] for o in opts]
        fresh = ckpt.load_optimizers(opts, resumed["optimizers"])
        for opt, groups in zip(opts, settings):  # the config's hyperparameters win over the checkpoint's
            for group, setting in zip(opt.param_groups, groups):
                group.update(setting)
        loader.load_state_dict(resumed["loader"])
        ckpt.set_rng_states(resumed["rng"], d)
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
        state = {"model": model.state_dict(), "optimizers": ckpt.optimizer_states(opts),
                 "loader": loader.state_dict(), "rng": ckpt.rng_states(d), "step": step, "train_time_ms": train_ms,
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
    except (ConfigError, ShardError, DiskFullError) as e:  # every rank says why it stops: one may stop alone
        print(f"error: {e}" if d is None or d.master else f"error (rank {d.rank}): {e}", file=sys.stderr)
        return 2
    finally:
        shutdown()


if __name__ == "__main__":
    sys.exit(main())
