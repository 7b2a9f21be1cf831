"""Tokenizers work offline: GPT-2 BPE from the pinned package's files, and bytes."""
import glob

import numpy as np

from data import embedded
from data.shards import read_shard
from data.tokenizer import ByteTokenizer, get_tokenizer


def test_gpt2_offline_encoding():
    enc = get_tokenizer("gpt2")
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert enc.eot_token == 50256 and enc.n_vocab == 50257
    text = "To be, or not to be: that is the question."
    assert enc.decode(enc.encode_ordinary(text)) == text


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    text = "Wherefore art thou — Romeo?"
    ids = tok.encode_ordinary(text)
    assert max(ids) < 256 and tok.decode(ids + [tok.eot_token]) == text


def test_embedded_corpus_is_real_text_with_documents():
    train_pattern, val_pattern = embedded.prepare("byte")
    train = read_shard(sorted(glob.glob(train_pattern))[0])
    val = read_shard(sorted(glob.glob(val_pattern))[0])
    assert len(train) > 4_000_000 and len(val) > 300_000
    assert train[0] == 256 and (train == 256).sum() > 30  # one end-of-text before each play
    text = ByteTokenizer().decode(train[:20000])
    assert "ACT I" in text and "SCENE" in text
    # far below the 8 bits of uniform bytes, and above the entropy of any single token
    assert 2.5 < embedded.unigram_entropy(train) < np.log(256)
