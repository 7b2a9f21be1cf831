"""Memory needed to train a GPT, per device: parameters, gradients, optimizer states, activations.
The formulas (analysis/footprint.py is their command line; the trainer prints the estimate at start):
, Ψ parameters (ZeRO, Rajbhandari et al. 2020), bytes per parameter:
    weights w + gradients g + fp32 master copy m + 4·k for k fp32 state numbers per parameter;
    mixed-precision Adam: 2 + 2 + 4 + 4·2 = 16 bytes, i.e. 16Ψ. The state numbers of each
    parameter come from its optimizer class (`state_numel(shape, **hyperparameters)`), with the
    hyperparameters of the group the trainer gives it (or the class's defaults with --optimizer).
ZeRO-DP over N ranks divides optimizer states and master copy by N (stage 1), also the gradients
(stage 2), also the weights (stage 3).
Activations of one layer, s tokens per sequence, b sequences, width h, a heads, MLP ratio r:
    korthikanti: s·b·h·(18 + 4r + 5·a·s/h) bytes with 16-bit activations (34 + 5as/h at r = 4,
                 Korthikanti et al. 2022); flash attention keeps no a·s² scores: drop 5as/h.
                 Checkpointing keeps each layer's input (2sbh) and recomputes one layer at a time.
    zero:        12·s·b·h numbers (the ZeRO paper's count); checkpointing divides the total by √L.
The output logits add s·b·V fp32 numbers kept by log-softmax (and as many for the tanh soft-cap).
fp32 activations double these bytes. Formulas, figures and limits: docs/analysis.md.
"""
from __future__ import annotations

import dataclasses
import math

import torch

GB = 1e9
# bytes per parameter: weights, gradients, fp32 master copy; bytes per activation number
POLICIES = {
    "fp32": dict(weight=4, grad=4, master=0, activation=4),
    "autocast": dict(weight=4, grad=4, master=0, activation=2),  # torch.autocast: fp32 weights, 16-bit matmuls
    "mixed": dict(weight=2, grad=2, master=4, activation=2),  # 16-bit weights and grads, fp32 master (ZeRO's)
}

def optimizer_state(opts: list[torch.optim.Optimizer]) -> tuple[dict[str, str], int]:
    """(group name → optimizer name, state numbers of every parameter) of built optimizers, each parameter
    sized by its class's state_numel with its group's hyperparameters."""
    chosen, state = {}, 0
    for opt in opts:
        cls = type(opt)
        for group in opt.param_groups:
            chosen[group["name"]] = cls.name
            hyperparameters = {k: group[k] for k in cls.hyperparameters()}
            state += sum(cls.state_numel(p.shape, **hyperparameters) for p in group["params"])
    return chosen, state


def model_state_bytes(n_params: int, state: int, policy: str, zero: int = 0, dp: int = 1) -> dict[str, float]:
    """Per-GPU bytes of weights, gradients and optimizer states (master copy + `state` fp32 numbers),
    partitioned over dp ranks by ZeRO stage 1 (states), 2 (+ gradients), 3 (+ weights)."""
    if zero not in (0, 1, 2, 3) or dp < 1:
        raise ValueError(f"ZeRO stage must be 0..3 and dp >= 1, got zero={zero} dp={dp}")
    p = POLICIES[policy]
    share = lambda stage: dp if zero >= stage else 1  # noqa: E731
    return {"parameters": p["weight"] * n_params / share(3), "gradients": p["grad"] * n_params / share(2),
            "optimizer states": (p["master"] * n_params + 4 * state) / share(1)}


def activation_bytes(cfg, micro_batch: int, policy: str, checkpointing: bool,
                     model: str = "korthikanti", flash: bool = True) -> dict[str, float]:
    """Bytes kept for the backward pass: the transformer layers, and the output logits (see module doc)."""
    s, b, h, a, L = cfg.seq_len, micro_batch, cfg.model_dim, cfg.n_head, cfg.n_layer
    scale = POLICIES[policy]["activation"] / 2  # the per-layer coefficients count 16-bit activations
    sbh = s * b * h * scale
    if model == "korthikanti":
        layer = sbh * (18 + 4 * cfg.mlp_ratio + (0 if flash else 5 * a * s / h))
        layers = L * 2 * sbh + layer if checkpointing else L * layer
    elif model == "zero":
        layers = L * 24 * sbh / (math.sqrt(L) if checkpointing else 1)
    else:
        raise ValueError(f"unknown activation model {model!r}; choose korthikanti or zero")
    rows = min(cfg.loss_chunk_tokens or s * b, s * b)  # a chunked loss keeps one chunk's logits at a time
    logits = rows * cfg.vocab_size * 4 * (2 if cfg.logit_softcap > 0 else 1)
    return {"activations (layers)": layers, "activations (logits)": logits}


@dataclasses.dataclass
class Footprint:
    n_params: int
    optimizers: dict[str, str]
    rows: dict[str, float]  # bytes per GPU

    @property
    def total(self) -> float:
        return sum(self.rows.values())

    def table(self) -> str:
        lines = [f"{'per GPU':<24}{'MB':>12}{'GB':>10}{'GiB':>10}"]
        for name, value in [*self.rows.items(), ("total", self.total)]:
            lines.append(f"{name:<24}{value / 1e6:>12.1f}{value / GB:>10.2f}{value / 2**30:>10.2f}")
        return "\n".join(lines)



def estimate(cfg, n_params: int, chosen: dict[str, str], state: int, policy: str = "autocast", zero: int = 0,
             dp: int = 1, micro_batch: int | None = None, checkpointing: bool = False,
             activation_model: str = "korthikanti", flash: bool = True) -> Footprint:
    """Per-device bytes of training cfg's GPT; micro_batch in sequences (default: the config's micro batch)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown precision policy {policy!r}; choose one of {', '.join(POLICIES)}")
    micro_batch = micro_batch or max(cfg.micro_batch_tokens // cfg.seq_len, 1)
    rows = {**model_state_bytes(n_params, state, policy, zero, dp),
            **activation_bytes(cfg, micro_batch, policy, checkpointing, activation_model, flash)}
    return Footprint(n_params, chosen, rows)
