"""Memory needed to train a GPT, per GPU: parameters, gradients, optimizer states, activations.

    python -m analysis.footprint --preset=speedrun124m
    python -m analysis.footprint --preset=gpt2-xl --optimizer=adam --precision=mixed --micro_batch=32 \
        --activation_model=zero [--checkpointing] [--zero=1 --dp=8]

The formulas (model states after ZeRO, activations after Korthikanti et al. or the ZeRO paper, the
logits) are in runtime/footprint.py, where the trainer also uses them; here the model is built on the
meta device and each parameter's optimizer state is sized by its optimizer class
(`state_numel(shape, **hyperparameters)`) with the hyperparameters of the group the trainer gives it
(or the class's defaults with --optimizer). Figures and limits: docs/analysis.md.
"""
from __future__ import annotations

import argparse
import math
import sys

import torch

import optimizers
import train_gpt
from runtime import footprint as formulas
from runtime.footprint import POLICIES, Footprint

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
        return formulas.optimizer_state(train_gpt.build_optimizers(cfg, model))
    cls = optimizers.get(optimizer)
    chosen, state = {}, 0
    for group, shapes in parameter_shapes(cfg).items():
        group_cls = optimizers.Adam if cls.matrices_only and group != "hidden" else cls
        chosen[group] = group_cls.name
        state += sum(group_cls.state_numel(s) for s in shapes)
    return chosen, state


def footprint(cfg: train_gpt.Config, optimizer: str | None = None, policy: str = "autocast", zero: int = 0,
              dp: int = 1, micro_batch: int | None = None, checkpointing: bool = False,
              activation_model: str = "korthikanti", flash: bool = True) -> Footprint:
    """Per-GPU bytes of training cfg's GPT; micro_batch in sequences (default: the config's micro batch)."""
    n_params = sum(count(s) for group in parameter_shapes(cfg).values() for s in group)
    chosen, state = optimizer_state(cfg, optimizer)
    return formulas.estimate(cfg, n_params, chosen, state, policy, zero, dp, micro_batch, checkpointing,
                             activation_model, flash)


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
