"""data/build_shards.py: text/JSONL/Parquet and hub datasets to shards, the split, determinism, bad inputs."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.shards import read_shard
from data.build_shards import main, tokenize_to_shards
from data.tokenizer import get_tokenizer
from fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["Hello world", "Café, naïve, ünïcödé —\nsecond line\n", "  spaces at both ends  ",
             "emoji 🚀 and 漢字", "a literal <|endoftext|> stays text", "long " * 700]


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list) -> Path:
    return write_text(path, "".join(json.dumps(record) + "\n" for record in records))


def write_parquet(path: Path, columns: dict) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def write_documents(kind: str, folder: Path, texts: list[str]) -> list[Path]:
    """texts as input files of one kind: a .txt per document, or one .jsonl / .parquet file."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "txt":
        return [write_text(folder / f"doc_{i:03d}.txt", text) for i, text in enumerate(texts)]
    if kind == "jsonl":
        return [write_jsonl(folder / "docs.jsonl", [{"id": i, "text": text} for i, text in enumerate(texts)])]
    return [write_parquet(folder / "docs.parquet", {"id": list(range(len(texts))), "text": texts})]


def shard_paths(out_dir: Path, prefix: str) -> list[Path]:
    """The validation shard, then the training shards in order."""
    return sorted(out_dir.glob(f"{prefix}_val_*.bin")) + sorted(out_dir.glob(f"{prefix}_train_*.bin"))


def all_tokens(out_dir: Path, prefix: str) -> np.ndarray:
    return np.concatenate([read_shard(path) for path in shard_paths(out_dir, prefix)])


def decoded_documents(tokens: np.ndarray, tokenizer: str) -> list[str]:
    """Split tokens at the end-of-text token (which starts every document) and decode each piece."""
    encoder = get_tokenizer(tokenizer)
    assert tokens[0] == encoder.eot_token
    starts = np.flatnonzero(tokens == encoder.eot_token)
    return [encoder.decode(piece[1:].tolist()) for piece in np.split(tokens, starts[1:])]


def byte_stream(texts: list[str]) -> list[int]:
    """The byte tokenizer's expected output: 256 (end of text), then the UTF-8 bytes, per document."""
    return [token for text in texts for token in (256, *text.encode())]


def hub_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    return {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf_home"),
            "HF_HUB_DISABLE_TELEMETRY": "1"}


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet"])
def test_round_trip_with_gpt2(kind, tmp_path):
    inputs = write_documents(kind, tmp_path / "in", DOCUMENTS)
    main([*map(str, inputs), "--out_dir", str(tmp_path / "out"), "--prefix", "rt",
          "--val_tokens", "30", "--shard_tokens", "400", "--workers", "1"])
    tokens = all_tokens(tmp_path / "out", "rt")
    assert decoded_documents(tokens, "gpt2") == DOCUMENTS
    assert np.count_nonzero(tokens == 50256) == len(DOCUMENTS)


def test_directory_input_reads_its_files_in_sorted_order(tmp_path):
    write_documents("txt", tmp_path / "in", DOCUMENTS)
    write_text(tmp_path / "in" / "notes.md", "not read")
    main([str(tmp_path / "in"), "--out_dir", str(tmp_path / "out"), "--tokenizer", "byte", "--val_tokens", "10",
          "--workers", "1"])
    assert decoded_documents(all_tokens(tmp_path / "out", "tokens"), "byte") == DOCUMENTS


def test_val_then_fixed_size_train_shards(tmp_path):
    texts = [f"document {i:03d} ".ljust(99, "x") for i in range(50)]  # 100 byte tokens each, with end of text
    paths = tokenize_to_shards(texts, tmp_path, prefix="s", tokenizer="byte", val_tokens=700, shard_tokens=1000,
                               workers=1)
    assert [p.name for p in paths] == ["s_val_000000.bin"] + [f"s_train_{i:06d}.bin" for i in range(1, 6)]
    assert [len(read_shard(p)) for p in paths] == [700, 1000, 1000, 1000, 1000, 300]
    assert all_tokens(tmp_path, "s").tolist() == byte_stream(texts)


def test_max_tokens_stops_early_and_a_rerun_replaces_old_shards(tmp_path):
    texts = [f"document {i:03d} ".ljust(99, "x") for i in range(50)]
    tokenize_to_shards(texts, tmp_path, prefix="s", tokenizer="byte", val_tokens=700, shard_tokens=1000, workers=1)
    other = write_text(tmp_path / "other_train_000001.bin", "another prefix: left alone")
    paths = tokenize_to_shards(texts, tmp_path, prefix="s", tokenizer="byte", val_tokens=700, shard_tokens=1000,
                               max_tokens=2500, workers=1)
    assert [len(read_shard(p)) for p in paths] == [700, 1000, 800]
    assert sorted(tmp_path.iterdir()) == sorted([*paths, other])
    assert all_tokens(tmp_path, "s").tolist() == byte_stream(texts)[:2500]


def test_failed_run_keeps_earlier_shards_and_leaves_no_temporary_files(tmp_path):
    good = write_documents("jsonl", tmp_path / "in", DOCUMENTS)[0]
    bad = write_jsonl(tmp_path / "in" / "z_bad.jsonl", [{"body": "no text field"}])
    out = tmp_path / "out"
    main([str(good), "--out_dir", str(out), "--tokenizer", "byte", "--val_tokens", "10", "--workers", "1"])
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(SystemExit):
        main([str(good), str(bad), "--out_dir", str(out), "--tokenizer", "byte", "--val_tokens", "5"])
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_output_is_the_same_with_one_or_two_workers(tmp_path):
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(list("abcdefgh ij\nklmnop"), size=rng.integers(1, 400))) for _ in range(300)]
    for workers in (1, 2):
        tokenize_to_shards(texts, tmp_path / f"w{workers}", tokenizer="gpt2", val_tokens=500, shard_tokens=3000,
                           workers=workers, batch_chars=1000)
    one, two = shard_paths(tmp_path / "w1", "tokens"), shard_paths(tmp_path / "w2", "tokens")
    assert len(one) > 3 and [p.name for p in one] == [p.name for p in two]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two))
    assert decoded_documents(all_tokens(tmp_path / "w2", "tokens"), "gpt2") == texts


@pytest.mark.parametrize("make_inputs, options, message", [
    (lambda d: [], [], "no inputs"),
    (lambda d: [write_text(d / "a.csv", "x,y")], [], "unknown file type: .*a.csv"),
    (lambda d: [d / "missing.txt"], [], "no such file or directory: .*missing.txt"),
    (lambda d: [write_jsonl(d / "a.jsonl", [{"text": "ok"}, {"body": "x"}])], [],
     r"a.jsonl:2: no field 'text' \(found \['body'\]\); name the text field with --text_field"),
    (lambda d: [write_text(d / "a.jsonl", "{not json\n")], [], r"a.jsonl:1: not valid JSON"),
    (lambda d: [write_jsonl(d / "a.jsonl", [{"text": None}, {"text": 7}])], [], r"a.jsonl:2: field 'text' holds int"),
    (lambda d: [write_parquet(d / "a.parquet", {"body": ["x"]})], ["--text_field", "content"],
     r"a.parquet: no column 'content' \(found \['body'\]\)"),
    (lambda d: [write_text(d / "a.txt", ""), write_jsonl(d / "b.jsonl", [{"text": ""}])], [], "empty input"),
    (lambda d: [write_text(d / "a.txt", "short")], ["--val_tokens", "100"], "lower --val_tokens"),
], ids=["no-inputs", "unknown-type", "missing-file", "missing-field", "bad-json", "not-text", "missing-column", "empty",
        "all-val"])
def test_bad_input_is_named_in_a_clear_error(make_inputs, options, message, tmp_path):
    inputs = [str(path) for path in make_inputs(tmp_path)]
    with pytest.raises(SystemExit) as failure:
        main([*inputs, *options, "--out_dir", str(tmp_path / "out"), "--tokenizer", "byte", "--workers", "1"])
    assert str(failure.value.code).startswith("error: ")
    assert re.search(message, str(failure.value.code))
    assert not list((tmp_path / "out").glob("*.bin"))


@pytest.fixture
def fineweb_hub(tmp_path):
    """A fake hub with a FineWeb-like dataset: two parquet files in sample/10BT (the first with 1.8 MB of
    text), one in sample/100BT, and a dataset card."""
    folder = tmp_path / "parquet"
    folder.mkdir()
    texts = {"sample/10BT/000_00000.parquet": [f"long row {i} " + "x" * 600_000 for i in range(3)],
             "sample/10BT/001_00000.parquet": [f"short row {i}" for i in range(3)],
             "sample/100BT/000_00000.parquet": ["another sample"]}
    files = {name: write_parquet(folder / name.replace("/", "_"), {"text": rows}).read_bytes()
             for name, rows in texts.items()}
    with FakeHub({"HuggingFaceFW/fineweb": {**files, "README.md": b"# FineWeb"}}) as hub:
        yield hub, texts


def run_tokenize_cli(tmp_path: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "data/build_shards.py", "--hf_dataset", "HuggingFaceFW/fineweb", *args,
               "--out_dir", str(tmp_path / "out"), "--prefix", "fw", "--tokenizer", "byte", "--val_tokens", "40"]
    return subprocess.run(command, cwd=ROOT, env=hub_env(tmp_path, endpoint), capture_output=True, text=True,
                          timeout=120)


def test_hub_dataset_files_matching_the_pattern_are_tokenized_in_order(fineweb_hub, tmp_path):
    hub, texts = fineweb_hub
    result = run_tokenize_cli(tmp_path, hub.url, "--hf_files", "sample/10BT/*.parquet")
    assert result.returncode == 0, result.stderr
    expected = texts["sample/10BT/000_00000.parquet"] + texts["sample/10BT/001_00000.parquet"]
    assert decoded_documents(all_tokens(tmp_path / "out", "fw"), "byte") == expected
    assert hub.gets("sample/100BT/000_00000.parquet") == [] and hub.gets("README.md") == []


def test_hub_files_are_fetched_only_while_max_tokens_is_not_reached(fineweb_hub, tmp_path):
    hub, texts = fineweb_hub
    # Reading runs ahead of encoding by one batch of text (~1 MB) per queued task: one worker, a 1.8 MB first file.
    result = run_tokenize_cli(tmp_path, hub.url, "--hf_files", "sample/10BT/*", "--max_tokens", "60",
                              "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert len(all_tokens(tmp_path / "out", "fw")) == 60
    assert hub.gets("sample/10BT/000_00000.parquet") == [None]
    assert hub.gets("sample/10BT/001_00000.parquet") == []


def test_hub_pattern_matching_nothing_is_a_clear_error(fineweb_hub, tmp_path):
    hub, _ = fineweb_hub
    result = run_tokenize_cli(tmp_path, hub.url, "--hf_files", "sample/1BT/*.parquet")
    assert result.returncode == 1
    assert "error: no file of dataset HuggingFaceFW/fineweb matches --hf_files sample/1BT/*.parquet" in result.stderr
    assert "Traceback" not in result.stderr


def test_script_help_works_although_its_name_is_a_stdlib_module():
    result = subprocess.run([sys.executable, "data/build_shards.py", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "--hf_dataset" in result.stdout
