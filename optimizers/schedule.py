"""The learning-rate schedule beside the optimizers: batch-size scaling rules, gradual warmup, cooldown
shapes (the decks' rules), the momentum warmup/cooldown and the staged 'fraction:value ...' schedules.
Each step the trainer multiplies every group's lr by `lr_factor` and sets the momentum of every group
that has one to `momentum`; these last four functions read a trainer config (any object with its
schedule fields); ablation ladders use `LR_RULES` and `scale_lr`.
"""
from __future__ import annotations

import math

LR_RULES = ("none", "linear", "sqrt")
COOLDOWN_SHAPES = ("linear", "cosine", "sqrt")


def scale_lr(lr: float, batch: float, base_batch: float, rule: str) -> float:
    """Learning rate for batch B tuned at batch B₀: linear lr·B/B₀, square-root lr·√(B/B₀), or none: lr."""
    if rule not in LR_RULES:
        raise ValueError(f"unknown lr scaling rule {rule!r}; choose one of {', '.join(LR_RULES)}")
    if batch <= 0 or base_batch <= 0:
        raise ValueError(f"batch sizes must be positive, got batch={batch} base_batch={base_batch}")
    ratio = batch / base_batch
    return lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]


def warmup_factor(t: int, warmup_steps: float) -> float:
    """Gradual warmup α_t/α_max = min(1, t/T_w) for the t-th step (t = 1, 2, ...); 1 when T_w = 0."""
    return 1.0 if warmup_steps <= 0 else min(1.0, t / warmup_steps)


def cooldown_factor(x: float, shape: str = "linear") -> float:
    """Decay from 1 at x = 0 to 0 at x = 1: linear 1−x, cosine (1+cos πx)/2, sqrt 1−√x."""
    if shape not in COOLDOWN_SHAPES:
        raise ValueError(f"unknown cooldown shape {shape!r}; choose one of {', '.join(COOLDOWN_SHAPES)}")
    x = min(max(x, 0.0), 1.0)
    return {"linear": 1 - x, "cosine": 0.5 * (1 + math.cos(math.pi * x)), "sqrt": 1 - math.sqrt(x)}[shape]


def wsd_factor(step: int, total: int, warmup_frac: float, cooldown_frac: float, shape: str = "linear",
               floor: float = 0.0) -> float:
    """Warmup–stable–decay multiplier for 0-based `step` of `total`: warmup over warmup_frac·total
    steps, 1, then the cooldown shape over the last cooldown_frac of training, from 1 down to `floor`:
    floor + (1 − floor)·cooldown (the speedrun's decay to 0.1 instead of 0, record #19)."""
    progress = step / total
    if warmup_frac > 0 and progress < warmup_frac:
        return warmup_factor(step + 1, warmup_frac * total)
    if cooldown_frac > 0 and progress > 1 - cooldown_frac:
        return floor + (1 - floor) * cooldown_factor((progress - (1 - cooldown_frac)) / cooldown_frac, shape)
    return 1.0


def momentum_at(step: int, total: int, high: float, low: float, warmup_steps: int, cooldown_steps: int) -> float:
    """Momentum for 0-based `step` of `total`: linear from `low` to `high` over the first warmup_steps
    (0.85 → 0.95 over 500 steps in the speedrun's record #9), `high`, then linear back to `low` over the
    last cooldown_steps (50 in record #39)."""
    if warmup_steps > 0 and step < warmup_steps:
        return low + (high - low) * step / warmup_steps
    start = total - cooldown_steps
    if cooldown_steps > 0 and step > start:
        return high - (high - low) * min(1.0, (step - start) / cooldown_steps)
    return high


def parse_stages(text: str) -> list[tuple[float, int]]:
    """'0:128 0.33:384 0.67:640' → [(0.0, 128), (0.33, 384), (0.67, 640)]: from each fraction of training
    on, that value (a piecewise-constant schedule, as the public records stage their window, batch-size
    and sequence-length schedules). Fractions start at 0 and increase, all below 1; values are positive integers."""
    stages = []
    for item in text.split():
        start, colon, value = item.partition(":")
        try:
            stages.append((float(start), int(value)))
        except ValueError:
            raise ValueError(f"{text!r}: write stages as 'fraction:value ...' ({item!r} is not)") from None
        if not colon or stages[-1][1] <= 0:
            raise ValueError(f"{text!r}: write stages as 'fraction:value ...' with positive integer values ({item!r} is not)")
    starts = [s for s, _ in stages]
    if not stages or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= 1:
        raise ValueError(f"{text!r}: the first stage starts at 0 and each later one at a larger fraction below 1")
    return stages


def stages(text: str, constant: int) -> list[tuple[float, int]]:
    """The stages of a 'fraction:value ...' schedule, or one stage of `constant` when it is empty."""
    return parse_stages(text) if text else [(0.0, constant)]


def stage_value(stages: list[tuple[float, int]], step: int, total: int) -> int:
    """The value of the last stage whose start fraction is at most step / total."""
    return [v for start, v in stages if start <= step / total][-1]


# The run's schedules, read from the trainer's config (train_gpt.Config, or any object with these fields).

def batch_at(cfg, step: int) -> int:
    """Global batch tokens of `step` (batch_schedule, record #46)."""
    return stage_value(stages(cfg.batch_schedule, cfg.global_batch_tokens), step, cfg.num_iterations)


def doc_len_at(cfg, step: int) -> int:
    """Document cap of `step` with bos_align (doc_len_schedule, record #72); 0: none."""
    return stage_value(stages(cfg.doc_len_schedule, cfg.max_doc_len), step, cfg.num_iterations)


def lr_factor(cfg, step: int) -> float:
    """Warmup–stable–decay multiplier of every group's learning rate (decaying to lr_floor), times the lr_scaling
    rule's factor for this step's batch over global_batch_tokens (1 without a batch_schedule)."""
    wsd = wsd_factor(step, cfg.num_iterations, cfg.warmup_frac, cfg.cooldown_frac, cfg.cooldown_shape, cfg.lr_floor)
    return wsd * scale_lr(1.0, batch_at(cfg, step), cfg.global_batch_tokens, cfg.lr_scaling)


def momentum(cfg, step: int, high: float) -> float:
    """Momentum of a group whose optimizer has one (Muon, SGD): its table value `high`, warmed up from and
    cooled down to momentum_low (records #9, #39)."""
    return momentum_at(step, cfg.num_iterations, high, cfg.momentum_low, cfg.momentum_warmup_steps,
                       cfg.momentum_cooldown_steps)
