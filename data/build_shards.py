"""Tokenize text files or a Hugging Face dataset into train/val token shards (format: SPEC.md).

Inputs: .txt files (one document per file), .jsonl files (one JSON object per line, the document in
--text_field), .parquet files (the document in column --text_field), directories (every such file
under them), or a dataset repo on the hub (--hf_dataset with --hf_files patterns; files are fetched
one at a time with huggingface_hub, so --max_tokens also limits the download). Documents are read
in order (files sorted), empty ones skipped, and each is preceded by the end-of-text token.

The first --val_tokens tokens go to {prefix}_val_000000.bin, the rest to {prefix}_train_000001.bin,
{prefix}_train_000002.bin, ... of --shard_tokens tokens each (the last one shorter). Encoding runs on
--workers processes; the output is the same for any number of workers. A finished run replaces earlier
{prefix} shards in --out_dir; a failed one leaves them as they were.

    python data/build_shards.py notes.txt books/ --val_tokens 100000 --prefix mine
    python data/build_shards.py --hf_dataset HuggingFaceFW/fineweb --hf_files 'sample/10BT/*.parquet' \\
        --prefix fineweb --out_dir data/fineweb_sample --max_tokens 1_000_000_000
    python data/build_shards.py --hf_dataset HuggingFaceFW/fineweb-edu --hf_files 'sample/10BT/*.parquet' ...
"""
import argparse
import os
import sys
import functools
import json
import multiprocessing
import shutil
import tempfile
from collections import deque
from contextlib import closing
from itertools import chain
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.utils import filter_repo_objects
from tqdm import tqdm

from data.hub import HubError, hub_request
from data.shards import read_header, write_shard
from data.tokenizer import get_tokenizer

SHARD_TOKENS = 100_000_000  # as in the speedrun's FineWeb10B shards
BATCH_CHARS = 1 << 20  # characters of text per encoding task


class TokenizeError(Exception):
    """Bad input or options; the message names the file or option and the problem."""


def read_txt(path: Path, text_field: str) -> Iterator[str]:
    """The whole file as one document."""
    yield path.read_text(encoding="utf-8")


def read_jsonl(path: Path, text_field: str) -> Iterator[str]:
    """One document per non-blank line: the line's JSON object's text_field (null for none)."""
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise TokenizeError(f"{path}:{number}: not valid JSON ({error})") from None
            if not isinstance(record, dict) or text_field not in record:
                fields = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise TokenizeError(f"{path}:{number}: no field {text_field!r} (found {fields}); "
                                    f"name the text field with --text_field")
            text = record[text_field]
            if not isinstance(text, (str, type(None))):
                raise TokenizeError(f"{path}:{number}: field {text_field!r} holds {type(text).__name__}, not text")
            yield text


def read_parquet(path: Path, text_field: str) -> Iterator[str]:
    """One document per row: the row's text_field column (nulls skipped)."""
    import pyarrow.parquet as pq  # here, so that text and JSONL work without pyarrow

    table = pq.ParquetFile(path)
    if text_field not in table.schema_arrow.names:
        raise TokenizeError(f"{path}: no column {text_field!r} (found {table.schema_arrow.names}); "
                            f"name the text column with --text_field")
    for batch in table.iter_batches(columns=[text_field]):
        yield from (text for text in batch.column(0).to_pylist() if text is not None)


READERS = {".txt": read_txt, ".jsonl": read_jsonl, ".parquet": read_parquet}


def check_file_type(path: str | Path) -> None:
    """Raise a TokenizeError unless path's suffix names a readable type."""
    if Path(path).suffix not in READERS:
        raise TokenizeError(f"unknown file type: {path} (readable: .txt, one document per file; "
                            f".jsonl, one per line; .parquet, one per row)")


def local_files(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """The files to read: each input file, and the readable files under each input directory (sorted)."""
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix in READERS)
        elif item.is_file():
            check_file_type(item)
            files.append(item)
        else:
            raise TokenizeError(f"no such file or directory: {item}")
    return files


def hub_files(repo: str, patterns: list[str], revision: str = "main") -> Iterator[Path]:
    """Local paths of the dataset repo's files that match patterns (sorted), each downloaded when reached."""
    api = HfApi()
    with hub_request(f"list the files of dataset {repo}"):
        commit = api.dataset_info(repo, revision=revision).sha  # one commit for all files
        names = sorted(filter_repo_objects(api.list_repo_files(repo, repo_type="dataset", revision=commit),
                                           allow_patterns=patterns))
    if not names:
        raise TokenizeError(f"no file of dataset {repo} matches --hf_files {' '.join(patterns)}")
    for name in names:
        check_file_type(name)
    for name in names:
        with hub_request(f"download {name} from dataset {repo}"):
            path = hf_hub_download(repo, name, repo_type="dataset", revision=commit)
        yield Path(path)


def documents(files: Iterable[Path], text_field: str) -> Iterator[str]:
    """Every document of every file, in order."""
    for path in files:
        yield from READERS[path.suffix](path, text_field)


def batches(texts: Iterable[str], batch_chars: int) -> Iterator[list[str]]:
    """Non-empty documents grouped into lists of about batch_chars characters."""
    batch, size = [], 0
    for text in texts:
        if text:
            batch.append(text)
            size += len(text)
        if size >= batch_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def encode_documents(tokenizer_name: str, texts: list[str]) -> np.ndarray:
    """The tokens of texts, each document preceded by the end-of-text token, as uint16."""
    encoder = get_tokenizer(tokenizer_name)
    tokens = []
    for text in texts:
        tokens.append(encoder.eot_token)
        tokens += encoder.encode_ordinary(text)
    return np.array(tokens, dtype=np.uint16)


def encoded(text_batches: Iterable[list[str]], tokenizer_name: str, workers: int) -> Iterator[np.ndarray]:
    """encode_documents of each batch, in order, on `workers` processes with a bounded queue of tasks."""
    encode = functools.partial(encode_documents, tokenizer_name)
    if workers == 1:
        yield from map(encode, text_batches)
        return
    with multiprocessing.Pool(workers) as pool:
        pending = deque()
        for batch in text_batches:
            pending.append(pool.apply_async(encode, (batch,)))
            if len(pending) > 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class ShardWriter:
    """Cuts a token stream into shards: the first val_tokens into {prefix}_val_000000.bin, the rest into
    {prefix}_train_000001.bin, ... of shard_tokens each."""

    def __init__(self, out_dir: Path, prefix: str, val_tokens: int, shard_tokens: int):
        self.out_dir, self.prefix = out_dir, prefix
        self.val_tokens, self.shard_tokens = val_tokens, shard_tokens
        self.buffer = np.empty(max(val_tokens, shard_tokens), dtype=np.uint16)
        self.index = 0 if val_tokens else 1  # shard number; 0 is the validation shard
        self.filled = 0
        self.total = 0
        self.paths: list[Path] = []

    def capacity(self) -> int:
        """Tokens the current shard takes in all."""
        return self.val_tokens if self.index == 0 else self.shard_tokens

    def add(self, tokens: np.ndarray) -> None:
        while len(tokens):
            take = min(len(tokens), self.capacity() - self.filled)
            self.buffer[self.filled:self.filled + take] = tokens[:take]
            self.filled += take
            self.total += take
            tokens = tokens[take:]
            if self.filled == self.capacity():
                self.flush()

    def flush(self) -> None:
        """Write the tokens collected so far as the next shard."""
        if self.filled:
            split = "val" if self.index == 0 else "train"
            path = self.out_dir / f"{self.prefix}_{split}_{self.index:06d}.bin"
            self.paths.append(write_shard(path, self.buffer[:self.filled]))
            self.index += 1
            self.filled = 0


def publish(staged: list[Path], out_dir: Path, prefix: str) -> list[Path]:
    """Replace out_dir's {prefix} shards with the staged ones; return their new paths."""
    for old in chain(out_dir.glob(f"{prefix}_val_*.bin"), out_dir.glob(f"{prefix}_train_*.bin")):
        old.unlink()
    return [Path(shutil.move(str(shard), out_dir / shard.name)) for shard in staged]


def tokenize_to_shards(texts: Iterable[str], out_dir: str | os.PathLike, prefix: str = "tokens",
                       tokenizer: str = "gpt2", val_tokens: int = SHARD_TOKENS, shard_tokens: int = SHARD_TOKENS,
                       max_tokens: int | None = None, workers: int | None = None,
                       batch_chars: int = BATCH_CHARS) -> list[Path]:
    """Encode texts (one document each) and write them as shards into out_dir; return the shard paths."""
    workers = workers or os.cpu_count() or 1
    if val_tokens < 0 or shard_tokens < 1 or workers < 1 or (max_tokens is not None and max_tokens < 1):
        raise TokenizeError("need --val_tokens >= 0, --shard_tokens >= 1, --workers >= 1 and --max_tokens >= 1")
    get_tokenizer(tokenizer)  # fetch its files once, here, before any worker starts
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{prefix}-", dir=out_dir))
    try:
        writer = ShardWriter(staging, prefix, val_tokens, shard_tokens)
        stream = encoded(batches(texts, batch_chars), tokenizer, workers)
        with tqdm(total=max_tokens, unit="tok", unit_scale=True, desc="tokenizing") as progress, closing(stream):
            for tokens in stream:
                if max_tokens is not None:
                    tokens = tokens[:max_tokens - writer.total]
                writer.add(tokens)
                progress.update(len(tokens))
                if writer.total == max_tokens:
                    break
        writer.flush()
        if writer.total == 0:
            raise TokenizeError("empty input: the inputs hold no documents, or only empty ones")
        if writer.index <= 1:
            raise TokenizeError(f"all {writer.total:,} tokens went to the validation shard, none to training; "
                                f"lower --val_tokens (now {val_tokens:,})")
        return publish(writer.paths, out_dir, prefix)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", help=".txt/.jsonl/.parquet files or directories")
    parser.add_argument("--hf_dataset", help="dataset repo on the Hugging Face hub, e.g. HuggingFaceFW/fineweb")
    parser.add_argument("--hf_files", nargs="+", default=["*.parquet"],
                        help="patterns of the dataset's files to read (default: *.parquet)")
    parser.add_argument("--hf_revision", default="main", help="branch, tag or commit of the dataset")
    parser.add_argument("--text_field", default="text", help="JSONL field / Parquet column with the text")
    parser.add_argument("--tokenizer", choices=["gpt2", "byte"], default="gpt2")
    parser.add_argument("--out_dir", default="data/tokenized", type=Path)
    parser.add_argument("--prefix", default="tokens", help="shard names: {prefix}_val_000000.bin, {prefix}_train_...")
    parser.add_argument("--val_tokens", type=int, default=SHARD_TOKENS, help="tokens in the validation shard")
    parser.add_argument("--shard_tokens", type=int, default=SHARD_TOKENS, help="tokens per training shard")
    parser.add_argument("--max_tokens", type=int, help="stop after this many tokens in all")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="encoding processes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        if not args.inputs and not args.hf_dataset:
            raise TokenizeError("no inputs: name .txt/.jsonl/.parquet files or directories, or --hf_dataset")
        files = local_files(args.inputs)
        if args.hf_dataset:
            files = chain(files, hub_files(args.hf_dataset, args.hf_files, args.hf_revision))
        paths = tokenize_to_shards(documents(files, args.text_field), args.out_dir, args.prefix, args.tokenizer,
                                   args.val_tokens, args.shard_tokens, args.max_tokens, args.workers)
    except (TokenizeError, HubError) as error:
        sys.exit(f"error: {error}")
    for path in paths:
        print(f"{path}: {read_header(path):,} tokens")


if __name__ == "__main__":
    main()
