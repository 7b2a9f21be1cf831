"""The training loader: global batches read in order from token shards, each rank taking its slice.

Batch b is cut into world·accum chunks of `micro_tokens`; rank r at accumulation step k reads chunk
r·accum + k, so any (world, accum) with the same product sees the same data per step.

With `bos` (a document separator token id) the rows are aligned to documents (public record #26):
each row of `seq_len` (+1) tokens starts at a separator and concatenates whole documents, each cut
to its first `max_doc_len` tokens (#29; 0: no cap), the last one cut where the row ends; the next
row starts at the next document, so the cut-off tails are never read. Rows are laid out in order
and sliced across ranks exactly as the chunks above. The order is fixed by the shards: the same
shards give the same batches on every run, whatever the seed.
"""
from __future__ import annotations

import glob
import math
from pathlib import Path

import numpy as np
import torch

from . import embedded
from .shards import ShardError, read_header, read_shard

FINEWEB_DIR = Path(__file__).resolve().parent / "fineweb10B"


def find_shards(dataset: str, train_pattern: str, val_pattern: str, tokenizer: str = "byte", first: bool = True,
                wait=lambda: None) -> tuple[list[str], list[str]]:
    """Sorted train and val shard paths: explicit globs win; else the dataset's default location. For
    dataset=shakespeare the embedded corpus, tokenized by `tokenizer`, is built on first use: by the caller
    with `first` (rank 0) before `wait()` (a barrier) returns on every caller."""
    if not (train_pattern and val_pattern):
        if dataset == "fineweb10B":
            defaults = str(FINEWEB_DIR / "fineweb_train_*.bin"), str(FINEWEB_DIR / "fineweb_val_*.bin")
        elif dataset == "shakespeare":
            if first:
                embedded.prepare(tokenizer)
            wait()
            defaults = embedded.prepare(tokenizer)
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
                 rank: int, world: int, device: torch.device, bos: int | None = None, max_doc_len: int = 0):
        self.files, self.global_tokens, self.micro_tokens, self.seq_len = files, global_tokens, micro_tokens, seq_len
        self.accum = global_tokens // (world * micro_tokens)
        self.rank, self.world, self.device, self.bos, self.max_doc_len = rank, world, device, bos, max_doc_len
        self.reset()

    def reset(self):
        self.shard, self.pos = 0, 0
        self.load(0)

    def load(self, shard: int):
        self.tokens = read_shard(self.files[shard])
        self.starts = None if self.bos is None else np.flatnonzero(self.tokens == self.bos)

    def state_dict(self) -> dict:
        return {"shard": self.shard, "pos": self.pos}

    def load_state_dict(self, state: dict):
        self.shard, self.pos = state["shard"], state["pos"]
        self.load(self.shard)

    def next_shard(self, attempt):
        """Move on to the next shard (looping) until `attempt()` returns a batch's layout (not None);
        a first shard too small for one batch is an error."""
        while True:
            self.shard, self.pos = (self.shard + 1) % len(self.files), 0
            self.load(self.shard)
            layout = attempt()
            if layout is not None:
                return layout
            if self.shard == 0 and self.bos is None:
                raise ShardError(f"{self.files[0]} holds {len(self.tokens)} tokens, fewer than one batch "
                                 f"({self.global_tokens}); lower global_batch_tokens")
            if self.shard == 0:
                raise ShardError(f"{self.files[0]} holds {len(self.starts)} documents, too few for one batch of "
                                 f"{self.global_tokens // self.seq_len} rows aligned to documents (a row starts at a "
                                 f"document and packs whole ones); lower global_batch_tokens or raise max_doc_len")

    def aligned_rows(self, n: int) -> list[list[tuple[int, int]]] | None:
        """(start, end) pieces of the next n document-aligned rows from self.pos; None if the shard runs out."""
        doc, rows = int(np.searchsorted(self.starts, self.pos)), []
        for _ in range(n):
            pieces, need = [], self.seq_len + 1
            while need:
                if doc >= len(self.starts):
                    return None
                start = int(self.starts[doc])
                end = int(self.starts[doc + 1]) if doc + 1 < len(self.starts) else len(self.tokens)
                if self.max_doc_len:
                    end = min(end, start + self.max_doc_len)
                take = min(end - start, need)
                pieces.append((start, start + take))
                need, doc = need - take, doc + 1
            rows.append(pieces)
        self.pos = int(self.starts[doc]) if doc < len(self.starts) else len(self.tokens)
        return rows

    def next_batch(self, global_tokens: int | None = None, max_doc_len: int | None = None):
        """Yield this rank's accum (inputs, targets) micro-batches of the next global batch.

        global_tokens and max_doc_len, when given, replace the loader's own from this batch on (their schedules).
        """
        if global_tokens is not None:
            self.global_tokens, self.accum = global_tokens, global_tokens // (self.world * self.micro_tokens)
        if max_doc_len is not None:
            self.max_doc_len = max_doc_len
        if self.bos is None:
            if self.pos + self.global_tokens + 1 > len(self.tokens):
                self.next_shard(lambda: 0 if self.global_tokens + 1 <= len(self.tokens) else None)
            start = self.pos
            self.pos += self.global_tokens
            chunks = [self.tokens[a:a + self.micro_tokens + 1] for a in
                      (start + (self.rank * self.accum + k) * self.micro_tokens for k in range(self.accum))]
        else:
            rows = self.aligned_rows(self.global_tokens // self.seq_len)
            if rows is None:
                rows = self.next_shard(lambda: self.aligned_rows(self.global_tokens // self.seq_len))
            per_micro = self.micro_tokens // self.seq_len
            first = self.rank * self.accum * per_micro
            mine = [rows[first + k * per_micro:first + (k + 1) * per_micro] for k in range(self.accum)]
            chunks = [np.stack([np.concatenate([self.tokens[a:b] for a, b in row]) for row in micro]) for micro in mine]
        for chunk in chunks:
            chunk = torch.from_numpy(np.asarray(chunk, dtype=np.int64))
            if self.device.type == "cuda":
                chunk = chunk.pin_memory().to(self.device, non_blocking=True)
            if self.bos is None:
                yield chunk[:-1].view(-1, self.seq_len), chunk[1:].view(-1, self.seq_len)
            else:
                yield chunk[:, :-1], chunk[:, 1:]
