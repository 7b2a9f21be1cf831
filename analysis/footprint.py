"""Memory needed to train a GPT, per GPU: parameters, gradients, optimizer states, activations.

    python -m analysis.footprint --preset=speedrun124m
    python -m analysis.footprint --preset=gpt2-xl --optimizer=adam --precision=mixed --micro_batch=32 \
        --activation_model=zero [--checkpointing] [--zero=1 --dp=8]

Model states, Ψ parameters (ZeRO, Rajbhandari et al. 2020), bytes per parameter:
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

import argparse
import dataclasses
import math
import sys

import torch

import optimizers
import train_gpt

GB = 1e9
# bytes per parameter: weights, gradients, fp32 master copy; bytes per activation number
POLICIES = {
    "fp32": dict(weight=4, grad=4, master=0, activation=4),
    "autocast": dict(weight=4, grad=4, master=0, activation=2),  # torch.autocast: fp32 weights, 16-bit matmuls
    "mixed": dict(weight=2, grad=2, master=4, activation=2),  # 16-bit weights and grads, fp32 master (ZeRO's)
}
REFERENCE_SHAPES = {  # shapes from the papers, as train_gpt configs
    "gpt2-xl": dict(train_gpt.PRESETS["gpt2classic"], n_layer=48, model_dim=1600, n_head=25, vocab_size=50257,
                    seq_len=1024),
}


def parameter_shapes(cfg: train_gpt.Config) -> dict[str, list[tuple[int, ...]]]:
    """Shapes of train_gpt.GPT(cfg)'s parameters by optimizer group, from the model built on the meta device."""
    with torch.device("meta"):
        model = train_gpt.GPT(cfg)
    return {group: [tuple(p.shape) for p in params] for group, params in train_gpt.parameter_groups(model).items()}


def count(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def optimizer_state(cfg: train_gpt.Config, optimizer: str | None) -> tuple[dict[str, str], int]:
    """(group → optimizer name, state numbers of all parameters). Without `optimizer`: the trainer's
    own optimizers (train_gpt.build_optimizers on the model built on the meta device), each parameter
    sized with its group's hyperparameters. With one: that optimizer at its defaults for every group,
    except that one taking matrices only (Muon) leaves the other groups to Adam."""
    if optimizer is None:
        with torch.device("meta"):
            model = train_gpt.GPT(cfg)
        chosen, state = {}, 0
        for opt in train_gpt.build_optimizers(cfg, model):
            cls = type(opt)
            for group in opt.param_groups:
                chosen[group["name"]] = cls.name
                hyperparameters = {k: group[k] for k in cls.hyperparameters()}
                state += sum(cls.state_numel(p.shape, **hyperparameters) for p in group["params"])
        return chosen, state
    cls = optimizers.get(optimizer)
    chosen, state = {}, 0
    for group, shapes in parameter_shapes(cfg).items():
        group_cls = optimizers.Adam if cls.matrices_only and group != "hidden" else cls
        chosen[group] = group_cls.name
        state += sum(group_cls.state_numel(s) for s in shapes)
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


def activation_bytes(cfg: train_gpt.Config, micro_batch: int, policy: str, checkpointing: bool,
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
    logits = s * b * cfg.vocab_size * 4 * (2 if cfg.logit_softcap > 0 else 1)
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


def footprint(cfg: train_gpt.Config, optimizer: str | None = None, policy: str = "autocast", zero: int = 0,
              dp: int = 1, micro_batch: int | None = None, checkpointing: bool = False,
              activation_model: str = "korthikanti", flash: bool = True) -> Footprint:
    """Per-GPU bytes of training cfg's GPT; micro_batch in sequences (default: the config's micro batch)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown precision policy {policy!r}; choose one of {', '.join(POLICIES)}")
    n_params = sum(count(s) for group in parameter_shapes(cfg).values() for s in group)
    chosen, state = optimizer_state(cfg, optimizer)
    micro_batch = micro_batch or max(cfg.micro_batch_tokens // cfg.seq_len, 1)
    rows = {**model_state_bytes(n_params, state, policy, zero, dp),
            **activation_bytes(cfg, micro_batch, policy, checkpointing, activation_model, flash)}
    return Footprint(n_params, chosen, rows)


def build_config(preset: str, overrides: dict) -> train_gpt.Config:
    shapes = {**train_gpt.PRESETS, **REFERENCE_SHAPES}
    if preset not in shapes:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(shapes)}")
    return train_gpt.Config(**{**shapes[preset], **{k: v for k, v in overrides.items() if v is not None}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="speedrun124m",
                        help=f"a train_gpt preset or {', '.join(REFERENCE_SHAPES)} (default speedrun124m)")
    for key in ("n_layer", "model_dim", "n_head", "vocab_size", "seq_len", "mlp_ratio"):
        parser.add_argument(f"--{key}", type=int, help="override the preset's value")
    parser.add_argument("--optimizer", choices=sorted(optimizers.NAMES),
                        help="one optimizer, at its defaults, for every group (default: the trainer's wiring)")
    parser.add_argument("--precision", default="autocast", choices=sorted(POLICIES),
                        help="fp32; autocast (fp32 weights, 16-bit activations: train_gpt on CUDA); "
                             "mixed (16-bit weights and gradients with fp32 master weights)")
    parser.add_argument("--zero", type=int, default=0, choices=range(4), help="ZeRO-DP stage")
    parser.add_argument("--dp", type=int, default=1, help="data-parallel ranks")
    parser.add_argument("--micro_batch", type=int, help="sequences per GPU per forward (default: the preset's)")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing")
    parser.add_argument("--activation_model", default="korthikanti", choices=("korthikanti", "zero"))
    parser.add_argument("--no_flash", action="store_true", help="attention keeps its a·s² scores (korthikanti)")
    args = parser.parse_args(argv)
    try:
        cfg = build_config(args.preset, {k: getattr(args, k) for k in
                                         ("n_layer", "model_dim", "n_head", "vocab_size", "seq_len", "mlp_ratio")})
        result = footprint(cfg, args.optimizer, args.precision, args.zero, args.dp, args.micro_batch,
                           args.checkpointing, args.activation_model, not args.no_flash)
    except ValueError as e:
        parser.error(str(e))
    micro = args.micro_batch or max(cfg.micro_batch_tokens // cfg.seq_len, 1)
    wiring = ", ".join(f"{g}: {o}" for g, o in result.optimizers.items())
    print(f"{args.preset}: {result.n_params:,} parameters; {args.precision}; {wiring}; ZeRO-{args.zero} over "
          f"{args.dp} rank(s); micro-batch {micro} × {cfg.seq_len} tokens; checkpointing "
          f"{'on' if args.checkpointing else 'off'}; activations: {args.activation_model}")
    print(result.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
