"""The trainer's attention, packing and schedule switches: each changes what it should and nothing else."""
import dataclasses

import pytest
import torch

import train_gpt
from model import GPT, layer_windows, separator
from optimizers import schedule
from runtime.config import ConfigError
from tests.trainer import SMALL, logs, losses, run
from train_gpt import Config

SEP = 95


def small(**overrides) -> Config:
    base = dict(vocab_size=96, n_layer=4, model_dim=32, n_head=2, seq_len=48, opt_hidden="adamw", lr_hidden=3e-3,
                zero_init_proj=False, separator=SEP, num_iterations=12, global_batch_tokens=96,
                micro_batch_tokens=96, lr_base_batch_tokens=96, val_tokens=384)
    return Config(**{**base, **overrides})


def model(cfg: Config) -> GPT:
    torch.manual_seed(0)
    return GPT(cfg).eval()


def packed(first: int, second: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two documents (separator + ordinary tokens) packed in one row; also each alone."""
    g = torch.Generator().manual_seed(seed)
    a = torch.cat([torch.tensor([SEP]), torch.randint(0, SEP, (first - 1,), generator=g)])
    b = torch.cat([torch.tensor([SEP]), torch.randint(0, SEP, (second - 1,), generator=g)])
    return torch.cat([a, b])[None], a[None], b[None]


def test_document_mask_and_rotary_restart_make_each_document_see_only_itself():
    row, a, b = packed(20, 28)
    with torch.no_grad():
        reset = model(small(doc_mask=True, rope_doc_reset=True))
        assert torch.allclose(reset(row)[:, 20:], reset(b), atol=1e-5)  # as if the second document were alone
        assert torch.allclose(reset(row)[:, :20], reset(a), atol=1e-5)
        rotary_only = model(small(doc_mask=True))  # rotary is relative: inside one document positions cancel
        assert torch.allclose(rotary_only(row)[:, 20:], reset(b), atol=1e-4)
        dense = model(small())
        assert torch.allclose(dense(row)[:, :20], reset(a), atol=1e-5)  # the first document sees nothing else anyway
        assert not torch.allclose(dense(row)[:, 20:], reset(b), atol=1e-3)  # without the mask, it sees the first


def test_rotary_restart_alone_changes_only_the_later_documents():
    row, a, _ = packed(20, 28)
    with torch.no_grad():
        plain, reset = model(small()), model(small(rope_doc_reset=True))
        assert torch.allclose(plain(row)[:, :20], reset(row)[:, :20], atol=1e-5)
        assert not torch.allclose(plain(row)[:, 20:], reset(row)[:, 20:], atol=1e-3)


def test_window_limits_what_a_query_sees():
    row, _, _ = packed(2, 46)
    with torch.no_grad():
        windowed = model(small(attn_window=8))
        base = windowed(row)
        changed = row.clone()
        changed[0, 10] = (changed[0, 10] + 1) % SEP  # a token 8+ positions before the last ones...
        out = windowed(changed)
        # ...reaches position t only through 4 layers of windows of 8: t − 10 ≤ 4·7
        assert torch.allclose(out[:, 39:], base[:, 39:], atol=1e-6)
        assert not torch.allclose(out[:, 10:38], base[:, 10:38], atol=1e-4)
        wide = model(small(attn_window=48))  # a window covering the whole row is no window
        assert torch.allclose(wide(row), model(small())(row), atol=1e-6)


def test_layer_windows_pattern_schedule_and_validation():
    cfg = small(attn_window=64, window_pattern="LSS", window_schedule="0:8 0.5:16", val_window=40)
    assert layer_windows(cfg, 0) == (8, 4, 4, 8)
    assert layer_windows(cfg, 6) == (16, 8, 8, 16)
    assert layer_windows(cfg, 12, validating=True) == (40, 8, 8, 40)
    assert layer_windows(small(), 3) == (0, 0, 0, 0)
    assert train_gpt.window_graphs(dataclasses.replace(cfg, val_every=3)) == (2, 2)


def test_batch_schedule_scales_lr_with_the_rule_and_counts_tokens():
    cfg = small(batch_schedule="0:96 0.5:192", lr_scaling="sqrt", warmup_frac=0, cooldown_frac=0)
    assert [schedule.batch_at(cfg, s) for s in (0, 5, 6, 11)] == [96, 96, 192, 192]
    assert schedule.lr_factor(cfg, 0) == 1.0 and schedule.lr_factor(cfg, 6) == pytest.approx(2 ** 0.5)
    assert schedule.lr_factor(dataclasses.replace(cfg, lr_scaling="none"), 6) == 1.0


@pytest.mark.parametrize("overrides, message", [
    (dict(window_pattern="LX"), "window_pattern"),
    (dict(window_pattern="LS"), "no window"),
    (dict(window_schedule="0:8 0.5"), "window_schedule"),
    (dict(batch_schedule="0:96 0.5:144"), "batch_schedule"),
    (dict(rope_doc_reset=True, rotary=False), "rotary"),
    (dict(max_doc_len=16), "bos_align"),
    (dict(doc_mask=True, separator=-1), "separator"),
])
def test_bad_attention_settings_are_refused(overrides, message):
    train_gpt.check_config(small(doc_mask=True, attn_window=8, window_pattern="LS", bos_align=True, max_doc_len=16,
                                 batch_schedule="0:96 0.5:192", rope_doc_reset=True), world=1)
    with pytest.raises(ConfigError, match=message):
        train_gpt.check_config(small(**overrides), world=1)


def test_separator_follows_the_tokenizer():
    assert separator(Config(tokenizer="byte")) == 256
    assert separator(Config(tokenizer="gpt2")) == 50256
    assert separator(Config(tokenizer="byte", separator=10)) == 10


def test_a_run_with_every_switch_resumes_exactly(tmp_path):
    """Aligned rows, document cap and batch schedules, windows, validation window: resume at step 3 of 6."""
    switches = ["--doc_mask", "--rope_doc_reset", "--attn_window=32", "--window_pattern=LS", "--val_window=64",
                "--window_schedule=0:16 0.5:32", "--bos_align", "--max_doc_len=96", "--doc_len_schedule=0:96 0.5:80",
                "--micro_batch_tokens=512", "--batch_schedule=0:512 0.5:1024", "--lr_scaling=sqrt",
                "--checkpoint_every=3", f"--log_dir={tmp_path}", f"--checkpoint_dir={tmp_path / 'ckpt'}"]
    full = run([*SMALL, *switches, "--run_id=full"])
    assert full.returncode == 0, full.stderr
    assert "attention: windows (16, 8) at step 0, (64, 16) at the last validation; documents masked; " \
           "2 training + 2 validation window set(s)" in full.stdout
    text, summary = logs(tmp_path, "full")
    assert summary["tokens"] == 3 * 512 + 3 * 1024
    resumed = run([*SMALL, *switches, "--run_id=again", f"--resume={tmp_path / 'ckpt' / 'full' / 'step_000003'}"])
    assert resumed.returncode == 0, resumed.stderr
    again, _ = logs(tmp_path, "again")
    for kind in ("train_loss", "val_loss"):
        after = [(s, x) for s, x in losses(again, kind) if s > 3]
        assert after and after == [(s, x) for s, x in losses(text, kind) if s > 3]
