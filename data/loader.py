"""The training loader: global batches read in order from token shards, each rank taking its slice.

Batch b is cut into world·accum chunks of `micro_tokens`; rank r at accumulation step k reads chunk
r·accum + k, so any (world, accum) with the same product sees the same data per step.
"""
from __future__ import annotations

import glob
import math
from pathlib import Path

import numpy as np
import torch

from .shards import ShardError, read_header, read_shard

FINEWEB_DIR = Path(__file__).resolve().parent / "fineweb10B"


def find_shards(dataset: str, train_pattern: str, val_pattern: str, embedded_patterns=None) -> tuple[list[str], list[str]]:
    """Sorted train and val shard paths: explicit globs win; else the dataset's default location
    (`embedded_patterns`, the (train, val) globs of the embedded corpus, for dataset=shakespeare)."""
    if not (train_pattern and val_pattern):
        if dataset == "fineweb10B":
            defaults = str(FINEWEB_DIR / "fineweb_train_*.bin"), str(FINEWEB_DIR / "fineweb_val_*.bin")
        elif dataset == "shakespeare":
            defaults = embedded_patterns
        else:
            raise ShardError(f"unknown dataset {dataset!r}: use fineweb10B, shakespeare, or --train_files/--val_files")
        train_pattern, val_pattern = train_pattern or defaults[0], val_pattern or defaults[1]
    files = sorted(glob.glob(train_pattern)), sorted(glob.glob(val_pattern))
    for kind, pattern, found in (("training", train_pattern, files[0]), ("validation", val_pattern, files[1])):
        if not found:
            hint = " Download them (speedrun124m reads 25): python data/cached_fineweb10B.py 25" if "fineweb" in pattern else ""
            raise ShardError(f"no {kind} shards match {pattern}.{hint}")
    return files


def check_shards(train: list[str], val: list[str], tokens_needed: int, vocab_size: int, reuse: bool,
                 fineweb: bool) -> None:
    """Before training: the training shards must hold the tokens the run reads (unless `reuse`, which lets
    the loader wrap to the first shard), every header must be valid, and the token ids of the shards the
    run reads must fit the vocabulary. The error names what to download."""
    sizes = [read_header(path) for path in train]
    if tokens_needed > sum(sizes) and not reuse:
        more = math.ceil((tokens_needed - sum(sizes)) / max(sizes))
        fetch = (f"python data/cached_fineweb10B.py {len(train) + more}" if fineweb
                 else f"{more} more shard(s) of {max(sizes):,} tokens")
        raise ShardError(f"the run needs {tokens_needed:,} training tokens but the {len(train)} shard(s) hold "
                         f"{sum(sizes):,}: get {fetch}, or pass --reuse_data to read them again")
    read = math.ceil(tokens_needed / sizes[0]) + 1
    for i, path in enumerate(train + val):
        read_header(path)
        if i < read or i >= len(train):
            read_shard(path, vocab_size=vocab_size)


class ShardLoader:
    """Global batches of `global_tokens` (+1 for targets) read in order from the shards, looping."""

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
                raise ShardError(f"{self.files[0]} holds {len(self.tokens)} tokens, fewer than one batch "
                                 f"({self.global_tokens}); lower global_batch_tokens")
        start = self.pos
        self.pos += self.global_tokens
        for k in range(self.accum):
            a = start + (self.rank * self.accum + k) * self.micro_tokens
            chunk = torch.from_numpy(self.tokens[a:a + self.micro_tokens + 1].astype(np.int64))
            if self.device.type == "cuda":
                chunk = chunk.pin_memory().to(self.device, non_blocking=True)
            yield chunk[:-1].view(-1, self.seq_len), chunk[1:].view(-1, self.seq_len)
