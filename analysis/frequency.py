"""Validation loss split by token frequency: how well does each checkpoint predict rare vs common tokens?

    python -m analysis.frequency CHECKPOINT... [--buckets=5] [--val_tokens=N] [--train_tokens=N]
                                 [--labels=a,b,...] [--out=DIR]

The question of Kunstner et al., "Heavy-tailed class imbalance and why Adam outperforms gradient
descent on language models" (2024): a language model's classes (tokens) are heavy-tailed, and
optimizers differ most on the rare ones.

Buckets: the training tokens' counts c_v (from the run's training shards, up to --train_tokens) sort
the vocabulary from most to least frequent; bucket k of K holds the tokens whose cumulative share of
the training tokens lies in [k/K, (k+1)/K) (a token whose count straddles a boundary goes where its
share starts), so every bucket covers about 1/K of the training text: bucket 1 a few very common
tokens, bucket K the long tail of rare ones. Tokens never seen in training form a last bucket
("unseen") when the validation text has any. For a byte-level run the "tokens" are the 256 byte
values (and the padded rows above them are never seen).

Per bucket and checkpoint: the mean cross-entropy −log p(y_t) of the validation targets y_t that fall in
the bucket, over the first --val_tokens validation tokens (default: as many as the run validated
on), with the model's logits as in training (soft-capped). The buckets come from the first
checkpoint's training data; every checkpoint must share its dataset and tokenizer.
Writes <out>/frequency.md (the table), frequency.json and frequency.png.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import train_gpt
from analysis.checkpoint import find_checkpoint, load_model
from analysis.figures import plt, save_png
from data.atomic import atomic_write
from data.loader import ShardLoader
from data.shards import read_shard


def train_counts(cfg: train_gpt.Config, limit: int) -> np.ndarray:
    """Occurrences of each token id in the first `limit` training tokens (all shards in order)."""
    train_files, _ = train_gpt.data_files(cfg, check=False)
    counts, seen = np.zeros(cfg.vocab_size, dtype=np.int64), 0
    for path in train_files:
        tokens = read_shard(path)[:limit - seen]
        counts += np.bincount(tokens, minlength=cfg.vocab_size)[:cfg.vocab_size]
        seen += len(tokens)
        if seen >= limit:
            break
    return counts


def buckets(counts: np.ndarray, k: int) -> np.ndarray:
    """Bucket index per token id (module docstring): 0..k-1 by cumulative share of the training
    tokens, most frequent first; k for tokens with count 0."""
    order = np.argsort(-counts, kind="stable")
    share_before = np.concatenate(([0.0], np.cumsum(counts[order])[:-1])) / counts.sum()
    index = np.full(len(counts), k, dtype=np.int64)
    index[order] = np.minimum((share_before * k).astype(np.int64), k - 1)
    index[counts == 0] = k
    return index


@torch.no_grad()
def token_losses(model: train_gpt.GPT, val_tokens: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    """(targets, per-target cross-entropy) over the first val_tokens validation tokens, micro-batch by micro-batch."""
    cfg = model.cfg
    _, val_files = train_gpt.data_files(cfg, check=False)
    loader = ShardLoader(val_files, cfg.micro_batch_tokens, cfg.micro_batch_tokens, cfg.seq_len, 0, 1,
                                   torch.device(device))
    targets, losses = [], []
    for _ in range(max(val_tokens // cfg.micro_batch_tokens, 1)):
        for x, y in loader.next_batch():
            logits = model(x)
            losses.append(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").cpu().numpy())
            targets.append(y.flatten().cpu().numpy())
    return np.concatenate(targets), np.concatenate(losses)


def bucket_names(k: int, with_unseen: bool) -> list[str]:
    names = [f"{100 * i // k}–{100 * (i + 1) // k}%" for i in range(k)]
    return names + (["unseen"] if with_unseen else [])


def analyse(checkpoints: list[str], k: int = 5, val_tokens: int | None = None, train_tokens: int = 10 ** 8,
            labels: list[str] | None = None, device: str = "cpu") -> dict:
    """{"buckets": [...], "types": [...], "val_share": [...], "runs": {label: {"loss": [...], "overall": L}}}."""
    if k < 1:
        raise ValueError(f"--buckets must be at least 1, got {k}")
    folders = [find_checkpoint(c) for c in checkpoints]
    labels = labels or [f.parent.name for f in folders]
    if len(labels) != len(folders) or len(set(labels)) != len(labels):
        raise ValueError(f"--labels needs {len(folders)} distinct names, one per checkpoint; got {labels}")
    result, index, reference = {"runs": {}}, None, None
    for label, folder in zip(labels, folders):
        model, _ = load_model(folder, device)
        data = (model.cfg.dataset, model.cfg.tokenizer, model.cfg.vocab_size, model.cfg.train_files,
                model.cfg.val_files)
        if reference is None:
            reference = data
            counts = train_counts(model.cfg, train_tokens)
            index = buckets(counts, k)
        elif data != reference:
            raise ValueError(f"{folder}: dataset/tokenizer/vocabulary {data[:3]} differ from the first checkpoint's "
                             f"{reference[:3]}; compare checkpoints of the same data")
        targets, losses = token_losses(model, val_tokens or model.cfg.val_tokens, device)
        which = index[targets]
        if "buckets" not in result:
            unseen = bool((which == k).any())
            n = k + unseen
            result.update(buckets=bucket_names(k, unseen), train_tokens=int(counts.sum()),
                          types=[int(((index == b) & (counts > 0)).sum()) if b < k else int((counts == 0).sum())
                                 for b in range(n)],
                          train_share=[float(counts[index == b].sum() / counts.sum()) for b in range(n)],
                          val_share=[float((which == b).mean()) for b in range(n)], val_tokens=int(len(targets)))
        result["runs"][label] = {
            "checkpoint": str(folder), "overall": float(losses.mean()),
            "loss": [float(losses[which == b].mean()) if (which == b).any() else None
                     for b in range(len(result["buckets"]))]}
    return result


def markdown(result: dict) -> str:
    labels = list(result["runs"])
    lines = [f"Validation loss by training-frequency bucket ({result['val_tokens']:,} validation tokens; "
             f"buckets from {result['train_tokens']:,} training tokens).", "",
             "| bucket (share of training text, most frequent first) | token types | val share | "
             + " | ".join(f"`{label}`" for label in labels) + " |",
             "|" + "---|" * (3 + len(labels))]
    for b, name in enumerate(result["buckets"]):
        cells = [name, str(result["types"][b]), f"{100 * result['val_share'][b]:.1f}%"]
        cells += ["–" if result["runs"][label]["loss"][b] is None else f"{result['runs'][label]['loss'][b]:.4f}"
                  for label in labels]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| all | " + f"{sum(result['types'])} | 100% | "
                 + " | ".join(f"{result['runs'][label]['overall']:.4f}" for label in labels) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.arange(len(result["buckets"]))
    for color, (label, run) in enumerate(result["runs"].items()):
        y = [np.nan if v is None else v for v in run["loss"]]
        ax.plot(x, y, marker="o", color=f"C{color}", label=f"{label} (all: {run['overall']:.3f})")
    ax.set_xticks(x, [f"{name}\n{t} types" for name, t in zip(result["buckets"], result["types"])], fontsize=8)
    ax.set_xlabel("training-frequency bucket (share of the training text; most frequent tokens first)")
    ax.set_ylabel("mean validation loss of the bucket's targets")
    ax.set_title("Validation loss by token frequency", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, path, dpi=110, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="step folders (…/step_NNNNNN) or run folders (newest step)")
    parser.add_argument("--buckets", type=int, default=5, help="K frequency buckets of ~1/K of the training text each")
    parser.add_argument("--val_tokens", type=int, help="validation tokens to score (default: the run's val_tokens)")
    parser.add_argument("--train_tokens", type=int, default=10 ** 8, help="training tokens to count frequencies over")
    parser.add_argument("--labels", help="comma-separated names, one per checkpoint (default: the run ids)")
    parser.add_argument("--out", help="write frequency.md, frequency.json and frequency.png here")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        result = analyse(args.checkpoints, args.buckets, args.val_tokens, args.train_tokens,
                         args.labels.split(",") if args.labels else None, args.device)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    text = markdown(result)
    print(text, end="")
    if args.out:
        out = Path(args.out)
        atomic_write(out / "frequency.md", text)
        atomic_write(out / "frequency.json", json.dumps(result, indent=1) + "\n")
        print(f"wrote {out / 'frequency.md'}, {out / 'frequency.json'} and {plot(result, out / 'frequency.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
