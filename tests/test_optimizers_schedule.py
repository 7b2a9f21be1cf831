"""optimizers/schedule.py against its formulas, and the trainer's use of it."""
import math
import random

import pytest

import train_gpt
from optimizers import schedule as scaling
from train_gpt import GPT, Config


def test_batch_scaling_rules():
    lr, base = random.uniform(1e-4, 1e-1), random.choice([256, 4096, 65536])
    batch = base * random.choice([2, 4, 8, 16])
    assert scaling.scale_lr(lr, batch, base, "linear") == pytest.approx(lr * batch / base)
    assert scaling.scale_lr(lr, batch, base, "sqrt") == pytest.approx(lr * math.sqrt(batch / base))
    assert scaling.scale_lr(lr, batch, base, "none") == lr
    # Halving the batch: linear halves, square root divides by √2.
    assert scaling.scale_lr(1.0, 50, 100, "sqrt") == pytest.approx(1 / math.sqrt(2))
    with pytest.raises(ValueError, match="unknown lr scaling rule 'cubic'"):
        scaling.scale_lr(lr, batch, base, "cubic")
    with pytest.raises(ValueError, match="positive"):
        scaling.scale_lr(lr, 0, base, "linear")


def test_warmup_is_linear_to_the_peak():
    warmup = random.randint(5, 50)
    assert [scaling.warmup_factor(t, warmup) for t in range(1, warmup + 1)] == pytest.approx(
        [t / warmup for t in range(1, warmup + 1)])
    assert scaling.warmup_factor(warmup + 7, warmup) == 1.0 and scaling.warmup_factor(3, 0) == 1.0


@pytest.mark.parametrize("shape,expected", [("linear", lambda x: 1 - x),
                                            ("cosine", lambda x: (1 + math.cos(math.pi * x)) / 2),
                                            ("sqrt", lambda x: 1 - math.sqrt(x))])
def test_cooldown_shapes_go_from_one_to_zero(shape, expected):
    xs = [random.random() for _ in range(20)]
    assert [scaling.cooldown_factor(x, shape) for x in xs] == pytest.approx([expected(x) for x in xs])
    assert scaling.cooldown_factor(0.0, shape) == 1.0 and scaling.cooldown_factor(1.0, shape) == pytest.approx(0.0)


def test_trainer_schedule_uses_the_cooldown_shape():
    cfg = Config(num_iterations=100, warmup_frac=0.0, cooldown_frac=0.5, cooldown_shape="cosine")
    assert scaling.lr_factor(cfg, 75) == pytest.approx((1 + math.cos(math.pi * 0.5)) / 2)
    assert scaling.lr_factor(cfg, 40) == 1.0


def test_trainer_scales_every_group_lr_with_the_batch():
    shape = dict(vocab_size=64, n_layer=1, model_dim=32, n_head=2, seq_len=16)
    cfg = Config(**shape, global_batch_tokens=4096, lr_base_batch_tokens=1024, lr_scaling="sqrt")
    lrs = {g["name"]: g["lr"] for opt in train_gpt.build_optimizers(cfg, GPT(cfg)) for g in opt.param_groups}
    assert lrs["hidden"] == pytest.approx(2 * cfg.lr_hidden) and lrs["head"] == pytest.approx(2 * cfg.lr_head)


def test_stages_parse_and_hold_piecewise_constant():
    stages = scaling.parse_stages("0:128 0.5:256 0.75:512")
    assert stages == [(0.0, 128), (0.5, 256), (0.75, 512)]
    values = [scaling.stage_value(stages, step, 8) for step in range(9)]
    assert values == [128, 128, 128, 128, 256, 256, 512, 512, 512]


@pytest.mark.parametrize("text", ["", "0.1:5", "0:5 0:6", "0:5 1:6", "0:-1", "0:1.5", "0-5", "a:b"])
def test_bad_stages_are_refused(text):
    with pytest.raises(ValueError, match="stage"):
        scaling.parse_stages(text)
