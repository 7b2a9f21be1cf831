"""bench/parity.py: extraction from each public log format, the checked adaptation, and a run end to end
on a stand-in "public" trainer (tests/stand_ins/modded_nanogpt/trainer_2024.py)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench import parity
from data.shards import write_shard
from records import stats

STAND_INS = Path(__file__).parent / "stand_ins" / "modded_nanogpt"
TRAINER = (STAND_INS / "trainer_2024.py").read_text()
RULE = "=" * 100
SHAPE = dict(train_files="/data/train_*.bin", val_files="/data/val_*.bin", vocab_size=320, n_layer=2, model_dim=64,
             n_head=2, seq_len=64, batch_tokens=1024, steps=40, val_every=10, val_tokens=2048)


@pytest.mark.parametrize("name, files", [
    ("log_2024.txt", {"train_gpt.py": 'import os\nimport torch\nprint("2024 script")\n'}),
    ("log_2025.txt", {"train_gpt.py": 'import os\nimport sys\nimport torch\nprint("2025 script")\n\n'}),
    ("log_2026.txt", {"train_gpt.py": 'import os\nimport torch\nfrom triton_kernels import XXT\nprint("2026 script")\n\n\n',
                      "triton_kernels.py": "\nimport triton\ndef XXT(x):\n    return x @ x.T\n\n"}),
])
def test_extract_each_public_log_format(name, files):
    assert parity.extract((STAND_INS / name).read_text(), name) == files


def test_extract_rejects_a_log_without_the_environment_rule():
    with pytest.raises(parity.ParityError, match="not a public speedrun log"):
        parity.extract("import torch\nstep:1/2 val_loss:3.0 train_time:1ms step_avg:1ms\n")


def test_adapt_sets_the_shape_and_keeps_the_schedule_fractions():
    script, notes = parity.adapt(TRAINER, SHAPE)
    fields = {k: parity.number(node.value) if k not in ("input_bin", "input_val_bin") else node.value.value
              for k, (node, _) in parity.hyperparameters(script).items()}
    assert fields == dict(input_bin="/data/train_*.bin", input_val_bin="/data/val_*.bin", batch_size=16,
                          device_batch_size=16, sequence_length=64, num_iterations=40, warmup_iters=0,
                          warmdown_iters=12, val_loss_every=10, val_tokens=2048)  # 300/1000 of 40 steps
    assert "GPTConfig(vocab_size=num_vocab, n_layer=2, n_head=2, n_embd=64)" in script
    assert "num_vocab = 320\n" in script and "'cuda" not in script and "assert torch.cuda" not in script
    assert any(n.startswith("CUDA device strings: 4 x") for n in notes)


def test_adapt_keeps_a_bf16_model_in_fp32_on_cpu():
    """From record #10 on, the public scripts cast the whole model to bf16; the CPU parity runs it in fp32."""
    plain, plain_notes = parity.adapt(TRAINER, SHAPE)
    assert not any("bf16" in n for n in plain_notes)
    cast = TRAINER.replace("model = torch.compile(model.cuda())\n",
                           "model = model.cuda().bfloat16()\nmodel = torch.compile(model)\n", 1)
    script, notes = parity.adapt(cast, SHAPE)
    assert "model = model.cuda()\nmodel = torch.compile(model)\n" in script and ".bfloat16()" not in script
    assert any(n.startswith("the bf16 cast of the whole model") for n in notes)


@pytest.mark.parametrize("change, message", [
    (("n_layer=12, n_head=6, n_embd=768", "n_layer=12, n_embd=768"), "the model shape: found 0 match"),
    (("    warmdown_iters : int = 300\n", ""), "no field warmdown_iters"),
    (("import torch\n", "import torch\nimport triton_kernels\n"), "Triton kernels"),
    (("input_bin :", "train_files :"), "unknown Hyperparameters layout"),
])
def test_adapt_fails_with_one_line_on_a_script_it_does_not_handle(change, message):
    with pytest.raises(parity.ParityError, match=message) as error:
        parity.adapt(TRAINER.replace(*change, 1), SHAPE)
    assert "\n" not in str(error.value)


def test_compare_gives_each_side_its_mean_and_ci():
    public = [{"val": {0: 5.0, 10: 3.0}}, {"val": {0: 5.0, 10: 3.2}}, {"val": {0: 5.0, 10: 3.1}}]
    ours = [{"val": {0: 5.0, 10: 2.9, 20: 2.0}}, {"val": {0: 5.0, 10: 3.0}}]
    rows = parity.compare(public, ours)
    assert [r["step"] for r in rows] == [0, 10]  # step 20 is not in every run
    assert rows[1]["public"] == pytest.approx(3.1) and rows[1]["ours"] == pytest.approx(2.95)
    assert rows[1]["public_ci95"] == stats.ci95([3.0, 3.2, 3.1]) and rows[1]["diff"] == pytest.approx(-0.15)


def test_end_to_end_on_a_stand_in_public_trainer(tmp_path, capsys):
    rng = np.random.default_rng(0)
    text = "".join(chr(c) for c in rng.choice([97, 98, 99, 32], size=20000, p=[0.5, 0.3, 0.1, 0.1]))
    tokens = np.frombuffer(text.encode(), dtype=np.uint8).astype(np.uint16)
    write_shard(tmp_path / "train_000.bin", tokens[:16000])
    write_shard(tmp_path / "val_000.bin", tokens[16000:])
    log = tmp_path / "standin_record.txt"
    log.write_text(f"{RULE}\n{TRAINER}{RULE}\nRunning pytorch 2.5.1\nnvidia-smi:\n{RULE}\n"
                   "step:0/1000 val_loss:10.8 train_time:0ms step_avg:nanms\n")
    out = tmp_path / "report"
    args = [str(log), "--speedrun", str(tmp_path), "--steps=4", "--val_every=2", "--seeds", "0", "--n_layer=1",
            "--model_dim=32", "--n_head=2", "--seq_len=32", "--batch_tokens=256", "--val_tokens=512",
            f"--train_files={tmp_path}/train_*.bin", f"--val_files={tmp_path}/val_*.bin", f"--out={out}",
            f"--work={tmp_path / 'work'}"]
    code = parity.main(args)
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "parity.json").read_text())
    assert [r["step"] for r in result["rows"]] == [0, 2, 4]
    for side in ("public", "ours"):
        curve = [r[side] for r in result["rows"]]
        assert all(math.isfinite(v) for v in curve) and curve[-1] < curve[0]  # both trainers learned something
    stamps = {p: p.stat().st_mtime for p in (tmp_path / "work").rglob("*.txt")}
    assert parity.main([*args, "--reuse"]) == 0  # the finished runs are read again, not rerun
    assert json.loads((out / "parity.json").read_text())["rows"] == result["rows"]
    assert stamps and all(p.stat().st_mtime == t for p, t in stamps.items())
    report = (out / "README.md").read_text()
    assert "| 4 |" in report and "Hyperparameters.warmdown_iters: 300 -> 1" in report
    assert (out / "val_loss.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    assert parity.main(["8", "--speedrun", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --speedrun") and "\n" not in err
    assert parity.main(["8", "--speedrun", str(tmp_path), "--batch_tokens=100"]) == 2
    assert "multiple of --seq_len" in capsys.readouterr().err


SCRIPT_2025 = '''import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention

@dataclass
class Hyperparameters:
    train_files = "data/fineweb10B/fineweb_train_*.bin"
    val_files = "data/fineweb10B/fineweb_val_*.bin"
    val_tokens = 10485760
    num_iterations = 1770
    cooldown_frac = 0.4
    val_loss_every = 125
    seq_len = 48*1024
    val_seq_len = 4*64*1024
args = Hyperparameters()

assert torch.cuda.is_available()
docs = (input_seq == 50256).cumsum(0)
block_masks = [long_bm, short_bm, short_bm]
block_masks.reverse()
tokens = torch.empty(10, dtype=torch.uint16, pin_memory=True)
device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
model = GPT(vocab_size=50257, num_layers=12, num_heads=6, model_dim=768, max_seq_len=args.seq_len).cuda()
'''


def test_adapt_2025_flexattention_layout():
    shape = {**SHAPE, "n_layer": 6, "eot": 256, "batch_tokens": 1024, "val_tokens": 2048}
    script, notes = parity.adapt(SCRIPT_2025, shape)
    fields = {k: src for k, (_, src) in parity.hyperparameters(script).items()}
    assert fields == dict(train_files="'/data/train_*.bin'", val_files="'/data/val_*.bin'", val_tokens="2048",
                          num_iterations="40", cooldown_frac="0.4", val_loss_every="10", seq_len="1024", val_seq_len="1024")
    assert "GPT(vocab_size=320, num_layers=6, num_heads=2, model_dim=64, max_seq_len" in script
    assert "(input_seq == 256)" in script and "pin_memory=True" not in script and 'torch.device("cpu", ' in script
    with pytest.raises(parity.ParityError, match="3 block masks by hand, for 6 layers: use --n_layer=6"):
        parity.adapt(SCRIPT_2025, {**shape, "n_layer": 4})


def test_flex_attention_reference_matches_torch_flexattention_forward():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    import torch
    shim = pytest.importorskip("bench.parity_shim")
    docs = (torch.rand(384, generator=torch.Generator().manual_seed(0)) < 0.02).cumsum(0)

    def document_window(b, h, q, kv):
        return (q >= kv) & (docs[q] == docs[kv]) & (q - kv < 200)
    mask = create_block_mask(document_window, None, None, 384, 384, device="cpu")
    q, k, v = torch.randn(3, 1, 2, 384, 16, generator=torch.Generator().manual_seed(1)).unbind(0)
    expected = flex_attention(q, k, v, block_mask=mask, scale=0.12)  # torch's own eager path (forward only on CPU)
    assert torch.allclose(shim.flex_attention_reference(q, k, v, block_mask=mask, scale=0.12), expected, atol=1e-5)


def test_scaled_mm_reference_is_the_scaled_product_of_the_fp8_operands():
    import torch
    shim = pytest.importorskip("bench.parity_shim")
    x, w = torch.randn(12, 16, generator=torch.Generator().manual_seed(0)).split([8, 4])
    x8, w8 = (x * 2).to(torch.float8_e4m3fn), (w * 64).to(torch.float8_e4m3fn)
    out = shim.scaled_mm_reference(x8, w8.t(), scale_a=torch.tensor(0.5), scale_b=torch.tensor(1 / 64),
                                   out_dtype=torch.float32)
    assert torch.allclose(out, x8.float() @ w8.float().t() / 128)
    # e4m3 keeps 3 mantissa bits: each operand within 2⁻⁴ relative, so each product within (1 + 2⁻⁴)² − 1
    assert ((out - x @ w.t()).abs() <= ((1 + 2 ** -4) ** 2 - 1) * (x.abs() @ w.abs().t()) + 1e-6).all()
