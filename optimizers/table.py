"""The optimizer table: one row per parameter group, {optimizer: name, lr: ..., its hyperparameters}, as the
public speedrun keeps one row of optimizer settings per parameter kind.

`complete` checks each row against its optimizer and fills in the shared hyperparameters it takes; `build`
turns the rows and the groups' parameters into one optimizer per distinct name, each group keeping its own
hyperparameters and the keys the schedules read (`initial_lr`, `initial_momentum`); `step` steps one such
optimizer, with cautious weight decay for the groups that ask for it; `evaluation_weights` puts the weights
to evaluate in place (Schedule-Free's averaged point) while a block runs. The table knows nothing of models: the
trainer splits its model into the groups.
"""
from __future__ import annotations

import contextlib

import torch

from .base import get
from .cautious import cautious_decay_


class TableError(ValueError):
    """A row that cannot be built: a hyperparameter its optimizer does not take, or a shared one nothing takes."""


BUILT_KEYS = ("initial_lr", "initial_momentum", "cautious_wd", "split_rows")  # group keys `build` adds to a row's


def configured_keys(rows: dict[str, dict]) -> set[str]:
    """Every group key the table sets: the rows' hyperparameters and BUILT_KEYS. On a forced resume these keep
    the config's values over a checkpoint's; the rest of a group (an optimizer's own state, such as
    Schedule-Free's train_mode) comes from the checkpoint."""
    return {k for row in rows.values() for k in row if k != "optimizer"} | set(BUILT_KEYS)


def complete(rows: dict[str, dict], shared: dict, moved: dict[str, str]) -> dict[str, dict]:
    """The rows with each shared hyperparameter (e.g. betas, eps, momentum) filled in where the row's optimizer
    takes it and the row does not set it. A row key its optimizer does not take is a TableError naming both;
    so is a shared hyperparameter that an option in `moved` (option → hyperparameter) set away from its default
    when no row's optimizer takes it."""
    rows, taken = {group: dict(row) for group, row in rows.items()}, set()
    for group, row in rows.items():
        takes = get(row["optimizer"]).hyperparameters()
        for name in row.keys() - {"optimizer"}:
            if name not in takes:
                raise TableError(f"group {group}: optimizer {row['optimizer']} takes no {name!r} "
                                 f"(it takes {', '.join(sorted(takes))}); change --opt_{group} or --hp_{group}")
        for name, value in shared.items():
            if name in takes:
                row.setdefault(name, value)
                taken.add(name)
    for option, name in moved.items():
        if name not in taken:
            wiring = ", ".join(f"{g}: {r['optimizer']}" for g, r in rows.items())
            raise TableError(f"--{option} is set but no group's optimizer takes {name} ({wiring})")
    return rows


def build(rows: dict[str, dict], params: dict[str, list], lr_scale: float = 1.0, cautious: bool = False,
          split: dict[str, list] | None = None) -> list[torch.optim.Optimizer]:
    """One optimizer per distinct name in `rows`, holding the groups it serves (groups without parameters are
    left out). Every lr is multiplied by `lr_scale`. With `cautious`, a group's weight decay moves to the key
    `cautious_wd` (applied by `step`). `split[group]` lists that group's parameters to be orthogonalised as
    three stacked matrices (`split_rows=3`, a fused QKV weight); their optimizer must take split_rows."""
    by_name: dict[str, list[dict]] = {}
    for group, row in rows.items():
        if not params.get(group):
            continue
        row = dict(row)
        name = row.pop("optimizer")
        row["lr"] = row["lr"] * lr_scale
        if "momentum" in row:
            row["initial_momentum"] = row["momentum"]
        if cautious and row.get("weight_decay"):
            row["cautious_wd"], row["weight_decay"] = row["weight_decay"], 0.0
        parts = [(params[group], {})]
        if split and group in split:
            if "split_rows" not in get(name).hyperparameters():
                raise TableError(f"--split_qkv needs a {group} optimizer that takes split_rows (muon, normuon), "
                                 f"not {name}")
            fused = {id(p) for p in split[group]}
            parts = [([p for p in params[group] if id(p) in fused], {"split_rows": 3}),
                     ([p for p in params[group] if id(p) not in fused], {})]
        for part, extra in parts:
            by_name.setdefault(name, []).append(dict(params=part, initial_lr=row["lr"], name=group, **row, **extra))
    built = []
    for name, groups in by_name.items():
        try:
            built.append(get(name)(groups))
        except ValueError as e:
            raise TableError(f"optimizer {name!r}: {e}") from None
    return built


def step(opt: torch.optim.Optimizer) -> None:
    """opt.step(), then cautious weight decay (optimizers/cautious.py) at c = lr·cautious_wd for each group that
    carries it, then the gradients cleared."""
    cautious = [g for g in opt.param_groups if g.get("cautious_wd")]
    before = [[p.detach().clone() for p in g["params"]] for g in cautious]
    opt.step()
    for group, saved in zip(cautious, before):
        cautious_decay_(group["params"], saved, group["lr"] * group["cautious_wd"])
    opt.zero_grad(set_to_none=True)


@contextlib.contextmanager
def evaluation_weights(opts: list):
    """Within the block, optimizers with an eval mode (Schedule-Free) hold their evaluation weights in the model."""
    switching = [o for o in opts if hasattr(o, "eval")]
    for opt in switching:
        opt.eval()
    try:
        yield
    finally:
        for opt in switching:
            opt.train()
