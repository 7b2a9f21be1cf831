"""evals/hellaswag.py offline: a model whose answers are known, a real SMALL checkpoint, the fake hub."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import trainer
from data.tokenizer import ByteTokenizer
from evals import hellaswag
from fake_hub import FakeHub

STAND_IN = Path(__file__).parent / "stand_ins" / "hellaswag_val.jsonl"


class Unigram(torch.nn.Module):
    """Logits independent of the context: 0 for 'e' and ' ', −4 for 'q', −30 for every other byte.

    −log p: e and ' ' cost log Z ≈ 0.702, q costs 4.702 (Z = 2 + e⁻⁴ + 254·e⁻³⁰).
    """

    def forward(self, idx):
        logits = torch.full((257,), -30.0)
        logits[[ord("e"), ord(" ")]] = 0.0
        logits[ord("q")] = -4.0
        return logits.expand(*idx.shape, 257)


def test_acc_norm_takes_the_lowest_mean_and_acc_the_lowest_sum():
    # " eq": sum 6.11, mean 2.04;  " eeeeeeeeee": sum 7.73, mean 0.70;  " qqqq": sum 19.5, mean 3.90
    examples = [{"ctx": "x", "endings": ["eq", "eeeeeeeeee"], "label": 1},
                {"ctx": "x", "endings": ["eq", "qqqq"], "label": 0}]
    result = hellaswag.evaluate(Unigram(), examples, ByteTokenizer().encode_ordinary, max_len=64)
    assert result["n"] == 2 and result["acc"] == 0.5 and result["acc_norm"] == 1.0
    assert result["acc_stderr"] == pytest.approx((0.5 * 0.5 / 2) ** 0.5) and result["acc_norm_stderr"] == 0


def test_render_masks_ending_tokens_and_truncates_from_the_left():
    example = {"ctx": "abcdef", "endings": ["gh", "ijklmnop"]}
    tokens, mask = hellaswag.render(example, ByteTokenizer().encode_ordinary, 10)
    assert tokens[0].tolist() == list(b"abcdef gh") + [0] and mask[0].tolist() == [0] * 6 + [1] * 3 + [0]
    assert tokens[1].tolist() == list(b"f ijklmnop") and mask[1].tolist() == [0] + [1] * 9


def test_loads_jsonl_and_rejects_bad_labels(tmp_path):
    examples = hellaswag.load_examples(STAND_IN)
    assert len(examples) == 5 and [e["label"] for e in examples] == [0, 1, 2, 3, 0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"ctx": "a", "endings": ["b", "c"], "label": 2}) + "\n")
    with pytest.raises(ValueError, match="label 2 but 2 endings"):
        hellaswag.load_examples(bad)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return trainer.checkpointed_run(tmp_path_factory.mktemp("hellaswag"), "h", "--checkpoint_every=6")[0]


def test_batched_scores_equal_one_ending_at_a_time(checkpoint):
    """Padding and batching change nothing: each ending scored alone, unpadded, gives the same losses."""
    from analysis.checkpoint import find_checkpoint, load_model
    model, _ = load_model(find_checkpoint(checkpoint))
    encode, example = ByteTokenizer().encode_ordinary, hellaswag.load_examples(STAND_IN)[1]
    tokens, mask = hellaswag.render(example, encode, model.cfg.seq_len)
    total, mean = hellaswag.ending_losses(model, tokens, mask)
    for i, ending in enumerate(example["endings"]):
        row = (encode(example["ctx"]) + encode(" " + ending))[-model.cfg.seq_len:]
        n = min(len(encode(" " + ending)), len(row) - 1)
        x = torch.tensor([row])
        with torch.no_grad():
            losses = torch.nn.functional.cross_entropy(model(x)[0, :-1], x[0, 1:], reduction="none")[-n:]
        assert total[i].item() == pytest.approx(losses.sum().item(), rel=1e-5)
        assert mean[i].item() == pytest.approx(losses.mean().item(), rel=1e-5)


def test_cli_on_a_local_file(checkpoint, capsys):
    assert hellaswag.main([str(checkpoint), f"--data={STAND_IN}", "--limit=3"]) == 0
    out = capsys.readouterr().out
    assert "3 examples: acc_norm " in out and " ± " in out and "(step 6)" in out


def test_download_through_the_hub(checkpoint, tmp_path):
    rows = [{**e, "label": str(e["label"])} for e in map(json.loads, STAND_IN.read_text().splitlines())]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)  # the hub's form: parquet, labels as strings
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}
    with FakeHub({hellaswag.REPO: {hellaswag.VALIDATION_FILE: buffer.getvalue()}}) as hub:
        done = subprocess.run([sys.executable, "-m", "evals.hellaswag", str(checkpoint)], cwd=trainer.ROOT,
                              env={**env, "HF_ENDPOINT": hub.url}, capture_output=True, text=True, timeout=120)
        assert hub.gets("validation-00000-of-00001.parquet")
    assert done.returncode == 0, done.stderr
    assert "5 examples: acc_norm" in done.stdout


def test_unreachable_hub_names_the_fix(checkpoint, tmp_path):
    with FakeHub({}) as hub:
        url = hub.url  # closed again: nothing listens there
    done = subprocess.run([sys.executable, "-m", "evals.hellaswag", str(checkpoint)], cwd=trainer.ROOT,
                          env={**os.environ, "HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "hf")},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"could not download {hellaswag.VALIDATION_FILE} from dataset {hellaswag.REPO}" in done.stderr
    assert "HF_ENDPOINT" in done.stderr and "--data" in done.stderr
