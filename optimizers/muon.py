"""Muon (Jordan et al., 2024): momentum, then the update orthogonalised by Newton–Schulz.

    B ← μ·B + (1 − μ)·G                        (torch.optim.Muon's momentum)
    U = (1 − μ)·G + μ·B with Nesterov, U = B without
    O = NS_k(U) ≈ U'V'ᵀ for U = U'SV'ᵀ           (kernels.newton_schulz: k steps, bf16 on CUDA)
    NorMuon (normuon=True; Li et al., 2025): a second moment of O per row or per column, then back
    to O's norm; for one value per row
        v ← β₂·v + (1 − β₂)·mean_cols(O²),   Ô = O / (√v + ε),   O ← Ô·‖O‖_F / ‖Ô‖_F
    x ← x·(1 − η·λ) − η·s·O
    s = √max(1, rows/cols)  (adjust_lr_fn "original", the default)  or  0.2·√max(rows, cols)
        ("match_rms_adamw": the update's RMS matches AdamW's, so AdamW learning rates carry over)

Which matrices (per group; each matrix gets its own orthogonalisation, lr scale s and NorMuon
statistics):
- a 2-D parameter is one matrix; one with ≥ 3 dimensions is a batch of matrices over its last two
  (as the public Muon does, and the speedrun records with their (3, d, d) QKV weight, e.g.
  2025-01-16_Sub3Min), or with `flatten=True` one shape[0] × rest matrix (as the Muon package
  treats convolution filters);
- `split_rows=k` then cuts each matrix into k equal blocks of rows: a fused 2304 × 768 QKV weight
  with split_rows=3 is orthogonalised as three 768 × 768 matrices, each with s = 1, as the records
  do (their Q, K and V are separate matrices), instead of one with s = √3.
- `ns_coefficients`: "quintic" (3.4445, −4.7750, 2.0315) or "polar_express" (Amsel et al., 2025;
  the speedrun records' since 2025-09-29_PolarExpress), one (a, b, c) triple, or a list of them.
- `normuon_axis`: "rows" (one statistic per row, Li et al.'s neuron-wise form), "columns", or
  "by_shape": per row when rows ≥ cols, else per column, i.e. along the longer side (the speedrun
  record 2025-10-24_NorMuon).

Vectors and scalars are rejected; `split_muon_params` sends embeddings, the head, vectors and
scalars to an Adam group instead.

Distributed (torch.distributed initialised with N > 1 ranks): the matrices of each group and
shape are stacked and split into N equal shares (zero-padded); rank r orthogonalises share r and
the results are all-gathered (in `gather_dtype`, e.g. torch.bfloat16 to halve the traffic; None:
the update's dtype). The collectives of the per-shape batches are asynchronous, so one batch's
communication overlaps the next one's Newton–Schulz.
- reduce_gradients=False (default): gradients arrive already averaged (DDP's all-reduce). Every
  rank keeps the whole state and applies every update; any rank's state_dict() is complete.
- reduce_gradients=True: each rank passes its own gradients (take Muon's parameters out of DDP's
  all-reduce) and Muon averages them with a reduce-scatter, so rank r receives only its share,
  applies momentum, Newton–Schulz and NorMuon to it and all-gathers the finished updates; every
  rank then applies every update, so parameters stay identical. The momentum and NorMuon state of
  a matrix lives on the rank that owns it (each rank's state_dict() holds its own share: save and
  load it per rank, with the same number of ranks). Every parameter of a group needs a gradient
  on every rank at every step. With DDP, before wrapping the model:
      DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, muon_parameter_names)
  so that DDP all-reduces only the other parameters (tests/test_optimizers_muon.py checks this
  wiring on 2 gloo processes against one process on the whole batch).

A trainer's groups, e.g. the speedrun's hidden matrices with a fused QKV weight:
    Muon([dict(params=qkv_weights, split_rows=3), dict(params=other_matrices)], lr=0.05,
         momentum=0.95, ns_coefficients="polar_express", normuon=True, normuon_axis="by_shape",
         reduce_gradients=True, gather_dtype=torch.bfloat16)
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn

import kernels

from .base import BOOL, NONNEGATIVE, POSITIVE, UNIT_OPEN, Interval, OneOf, Optimizer, in_state_precision, state_dtype, zeros_state

# Polar Express (Amsel, Persson, Musco and Gower, 2025): per-step minimax-optimal quintics, the
# five-step schedule with a 2% safety margin on the normalisation (folded into the first triple
# here: p(x/1.02) = a/1.02·x + b/1.02³·x³ + c/1.02⁵·x⁵). As the interval around 1 closes the
# optimal quintic tends to the classical Newton–Schulz one, used for any further steps.
_SAFETY = 1.02
_POLAR_EXPRESS_TABLE = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
POLAR_EXPRESS = ((_POLAR_EXPRESS_TABLE[0][0] / _SAFETY, _POLAR_EXPRESS_TABLE[0][1] / _SAFETY ** 3,
                  _POLAR_EXPRESS_TABLE[0][2] / _SAFETY ** 5),) + _POLAR_EXPRESS_TABLE[1:]
NEWTON_SCHULZ_LIMIT = (15 / 8, -10 / 8, 3 / 8)
NORMUON_AXES = ("rows", "columns", "by_shape")
DTYPES = (None, torch.bfloat16, torch.float16, torch.float32, torch.float64)
# the single-tensor collectives (renamed in newer torch releases)
_all_gather = getattr(dist, "all_gather_single", dist.all_gather_into_tensor)
_reduce_scatter = getattr(dist, "reduce_scatter_single", dist.reduce_scatter_tensor)


def coefficient_schedule(coefficients, steps: int):
    """The kernels.newton_schulz coefficients for a name ("quintic", "polar_express"), one triple or a list."""
    if coefficients == "quintic":
        return kernels.QUINTIC
    if coefficients == "polar_express":
        return list(POLAR_EXPRESS[:steps]) + [NEWTON_SCHULZ_LIMIT] * (steps - len(POLAR_EXPRESS))
    return coefficients


def _is_triple(c) -> bool:
    return isinstance(c, (tuple, list)) and len(c) == 3 and all(isinstance(v, (int, float)) for v in c)


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def matrix_shape(shape: Sequence[int], split_rows: int = 1, flatten: bool = False) -> tuple[int, int, int]:
    """(number of matrices, rows, cols) that Muon orthogonalises for a parameter of this shape."""
    if len(shape) == 2 or flatten:
        n, rows, cols = 1, shape[0], math.prod(shape[1:])
    else:
        n, rows, cols = math.prod(shape[:-2]), shape[-2], shape[-1]
    return n * split_rows, rows // split_rows, cols


def normuon_rows(axis: str, rows: int, cols: int) -> bool:
    """True when NorMuon keeps one statistic per row (False: per column)."""
    return axis == "rows" or (axis == "by_shape" and rows >= cols)


def normalize(O: torch.Tensor, second_moment: torch.Tensor, beta2: float, eps: float, per_row: bool) -> torch.Tensor:
    """NorMuon for a batch of matrices O (n, r, c): divide each row (or column) by its running RMS,
    then rescale each matrix to its Frobenius norm. second_moment: (n, r, 1) or (n, 1, c), updated."""
    second_moment.lerp_(O.square().mean(dim=-1 if per_row else -2, keepdim=True), 1 - beta2)
    normalized = O / second_moment.sqrt().add_(eps)
    scale = O.norm(dim=(-2, -1), keepdim=True) / normalized.norm(dim=(-2, -1), keepdim=True).clamp_min(
        torch.finfo(O.dtype).tiny)
    return normalized.mul_(scale)


def lr_scale(adjust_lr_fn: str | None, rows: int, cols: int) -> float:
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1.0, rows / cols))


@dataclass
class _Batch:
    """The matrices of one group and shape, in order: (parameter, index of the matrix in its view)."""
    group: dict
    shape: tuple[int, int, int]  # (n, rows, cols) of each member's view
    members: list[tuple[torch.Tensor, int]]
    share: int = 0
    pending: object = None  # the asynchronous collective in flight
    buffer: torch.Tensor | None = None


class Muon(Optimizer):
    name = "muon"
    matrices_only = True
    bounds = dict(lr=NONNEGATIVE, weight_decay=NONNEGATIVE, momentum=UNIT_OPEN, nesterov=BOOL, eps=POSITIVE,
                  ns_steps=Interval(1, 100, high_open=True, integer=True),
                  adjust_lr_fn=OneOf((None, "original", "match_rms_adamw")), normuon=BOOL,
                  normuon_beta2=UNIT_OPEN, normuon_eps=POSITIVE, normuon_axis=OneOf(NORMUON_AXES),
                  ns_dtype=OneOf(DTYPES), split_rows=Interval(1, integer=True), flatten=BOOL,
                  reduce_gradients=BOOL, gather_dtype=OneOf(DTYPES))

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_coefficients=kernels.QUINTIC, eps: float = 1e-7, ns_steps: int = 5,
                 adjust_lr_fn: str | None = None, normuon: bool = False, normuon_beta2: float = 0.95,
                 normuon_eps: float = 1e-10, normuon_axis: str = "rows", ns_dtype: torch.dtype | None = None,
                 split_rows: int = 1, flatten: bool = False, reduce_gradients: bool = False,
                 gather_dtype: torch.dtype | None = None, maximize: bool = False):
        """ns_coefficients: "quintic", "polar_express", one (a, b, c) triple or a list of them (one per
        step, the last repeating). ns_dtype: the Newton–Schulz dtype (None: bf16 on CUDA, else fp32);
        it and gather_dtype may be given by name ("bfloat16").
        split_rows, flatten, normuon_axis, reduce_gradients, gather_dtype: see the module doc."""
        super().__init__(params, dict(
            lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, ns_coefficients=ns_coefficients,
            eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn, normuon=normuon, normuon_beta2=normuon_beta2,
            normuon_eps=normuon_eps, normuon_axis=normuon_axis, ns_dtype=ns_dtype, split_rows=split_rows,
            flatten=flatten, reduce_gradients=reduce_gradients, gather_dtype=gather_dtype, maximize=maximize))

    @classmethod
    def count_state(cls, shape, hyperparameters):
        """The momentum buffer, and NorMuon's statistic per row or column of each matrix."""
        n, rows, cols = matrix_shape(shape, hyperparameters["split_rows"], hyperparameters["flatten"])
        statistics = 0
        if hyperparameters["normuon"]:
            statistics = n * (rows if normuon_rows(hyperparameters["normuon_axis"], rows, cols) else cols)
        return math.prod(shape) + statistics

    def check_group(self, group):
        for key in ("ns_dtype", "gather_dtype"):  # a dtype's name, as a config file writes it
            if isinstance(group.get(key), str) and isinstance(getattr(torch, group[key], None), torch.dtype):
                group[key] = getattr(torch, group[key])
        super().check_group(group)
        c = group["ns_coefficients"]
        valid = c in ("quintic", "polar_express") or _is_triple(c) or (
            isinstance(c, (tuple, list)) and len(c) > 0 and all(map(_is_triple, c)))
        if not valid:
            raise ValueError('Muon: ns_coefficients must be "quintic", "polar_express", an (a, b, c) triple '
                             f"or a list of triples, got {c!r}")
        for p in group["params"]:
            if p.ndim < 2:
                raise ValueError(f"Muon: parameters need at least 2 dimensions, got shape {tuple(p.shape)}; "
                                 "give vectors and scalars to an Adam group (see optimizers.split_muon_params)")
            rows = matrix_shape(p.shape, 1, group["flatten"])[1]
            if rows % group["split_rows"]:
                raise ValueError(f"Muon: split_rows={group['split_rows']} does not divide the {rows} rows of a "
                                 f"parameter of shape {tuple(p.shape)}; put it in a group with a divisor")

    def update_groups(self, work):
        rank, world = _rank_and_world()
        batches = []
        for group, params in work:
            if group["reduce_gradients"] and world > 1 and len(params) != len(group["params"]):
                raise RuntimeError("Muon(reduce_gradients=True): every parameter of a group needs a gradient on "
                                   "every rank (the reduce-scatter pairs them by position)")
            by_shape = defaultdict(list)
            for p in params:
                shape = matrix_shape(p.shape, group["split_rows"], group["flatten"])
                by_shape[shape[1:], p.dtype, p.device].extend((p, j) for j in range(shape[0]))
            for members in by_shape.values():
                shape = matrix_shape(members[0][0].shape, group["split_rows"], group["flatten"])
                batches.append(_Batch(group, shape, members, share=math.ceil(len(members) / world)))
        for batch in batches:  # launch every reduce-scatter (or do the replicated momentum) first
            self._start(batch, rank, world)
        for batch in batches:  # then orthogonalise each share and launch its all-gather
            self._orthogonalize_share(batch, rank, world)
        for batch in batches:
            self._apply(batch, world)

    def _state(self, p: torch.Tensor, group: dict, shape: tuple[int, int, int]) -> dict:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = zeros_state(p)
        if group["normuon"] and not ({"row_second_moment", "column_second_moment"} & state.keys()):
            n, rows, cols = shape
            if normuon_rows(group["normuon_axis"], rows, cols):
                state["row_second_moment"] = p.new_zeros(n * rows, 1, dtype=state_dtype(p))
            else:
                state["column_second_moment"] = p.new_zeros(n, cols, dtype=state_dtype(p))
        return state

    def _momentum(self, members, grads: torch.Tensor, group: dict, shape) -> torch.Tensor:
        """U for each (parameter, matrix) member from its gradient matrix; updates the momentum buffers."""
        momentum, updates = group["momentum"], []
        for (p, j), g in zip(members, grads):
            buf = self._state(p, group, shape)["momentum_buffer"].view(shape)[j].lerp_(g, 1 - momentum)
            updates.append(g.lerp(buf, momentum) if group["nesterov"] else buf)
        return torch.stack(updates)

    def _normalize(self, members, O: torch.Tensor, group: dict, shape) -> torch.Tensor:
        """NorMuon on the members' orthogonalised matrices O (none: O itself), updating their statistics."""
        if not group["normuon"] or not members:
            return O
        n, rows, cols = shape
        per_row = normuon_rows(group["normuon_axis"], rows, cols)
        views = []  # each member's statistic, a view into its parameter's state
        for p, j in members:
            state = self._state(p, group, shape)
            v = state["row_second_moment"].view(n, rows, 1) if per_row else state["column_second_moment"].view(n, 1, cols)
            views.append(v[j])
        second_moments = torch.stack(views)
        O = normalize(O, second_moments, group["normuon_beta2"], group["normuon_eps"], per_row)
        for view, updated in zip(views, second_moments):
            view.copy_(updated)
        return O

    def _start(self, batch: _Batch, rank: int, world: int) -> None:
        group, (n, rows, cols) = batch.group, batch.shape
        matrices = {}  # each parameter's gradient as (n, rows, cols), in state precision
        for p, _ in batch.members:
            if p not in matrices:
                matrices[p] = self.gradient(p, group, state_dtype(p)).reshape(n, rows, cols)
        grads = torch.stack([matrices[p][j] for p, j in batch.members])
        if not group["reduce_gradients"]:
            grads = self._momentum(batch.members, grads, group, batch.shape)
        padding = batch.share * world - len(batch.members)
        if padding:
            grads = torch.cat([grads, grads.new_zeros(padding, rows, cols)])
        if group["reduce_gradients"] and world > 1:
            batch.buffer = grads.new_empty(batch.share, rows, cols)
            batch.pending = _reduce_scatter(batch.buffer, grads, op=dist.ReduceOp.AVG, async_op=True)
        else:
            batch.buffer = grads if world == 1 else grads[rank * batch.share:(rank + 1) * batch.share]

    def _orthogonalize_share(self, batch: _Batch, rank: int, world: int) -> None:
        group = batch.group
        if batch.pending is not None:
            batch.pending.wait()
        mine = batch.members[rank * batch.share:(rank + 1) * batch.share] if world > 1 else batch.members
        share = batch.buffer
        if group["reduce_gradients"] and mine:
            share = torch.cat([self._momentum(mine, share[:len(mine)], group, batch.shape), share[len(mine):]])
        ns_dtype = group["ns_dtype"] or (torch.bfloat16 if share.is_cuda else None)
        O = kernels.newton_schulz(share, steps=group["ns_steps"],
                                  coefficients=coefficient_schedule(group["ns_coefficients"], group["ns_steps"]),
                                  eps=group["eps"], dtype=ns_dtype)
        if group["reduce_gradients"]:
            O[:len(mine)] = self._normalize(mine, O[:len(mine)], group, batch.shape)
        batch.pending, batch.buffer = None, O
        if world > 1:
            sent = O if group["gather_dtype"] is None else O.to(group["gather_dtype"])
            gathered = sent.new_empty(batch.share * world, *O.shape[1:])
            batch.pending = _all_gather(gathered, sent.contiguous(), async_op=True)
            batch.buffer = gathered

    def _apply(self, batch: _Batch, world: int) -> None:
        group, (n, rows, cols) = batch.group, batch.shape
        if batch.pending is not None:
            batch.pending.wait()
        O = batch.buffer[:len(batch.members)].to(state_dtype(batch.members[0][0]))
        if not group["reduce_gradients"]:
            O = self._normalize(batch.members, O, group, batch.shape)
        step = -group["lr"] * lr_scale(group["adjust_lr_fn"], rows, cols)
        per_param = defaultdict(list)  # every matrix of a parameter is in this batch: one rounding per parameter
        for (p, j), update in zip(batch.members, O):
            per_param[p].append((j, update))
        for p, updates in per_param.items():
            with in_state_precision(p) as x:
                x.mul_(1 - group["lr"] * group["weight_decay"])
                for j, update in updates:
                    x.view(n, rows, cols)[j].add_(update, alpha=step)


class NorMuon(Muon):
    """Muon with the NorMuon normalisation on (every Muon option applies)."""
    name = "normuon"

    @classmethod
    def hyperparameters(cls, **overrides):
        if not overrides.get("normuon", True):
            raise ValueError("NorMuon: normuon is always on (use Muon to choose)")
        return {**super().hyperparameters(**overrides), "normuon": True}

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, **options):
        super().__init__(params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                         normuon=True, **options)


def split_muon_params(module: nn.Module, adam_only: Iterable[nn.Module | nn.Parameter] = (),
                      adam_types: tuple[type[nn.Module], ...] = (nn.Embedding,)
                      ) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split a module's trainable parameters into (muon, adam).

    Muon gets every parameter with ≥ 2 dimensions except those of modules of `adam_types`
    (embeddings by default) and of `adam_only` (modules or parameters: the output head, say, or an
    input layer fed raw features). Adam gets those and every vector and scalar. A parameter shared
    by several modules (tied weights) appears once, on Adam if any of its owners sends it there.
    """
    to_adam = set()
    for item in adam_only:
        to_adam.update(map(id, item.parameters()) if isinstance(item, nn.Module) else [id(item)])
    for m in module.modules():
        if isinstance(m, adam_types):
            to_adam.update(map(id, m.parameters()))
    muon, adam = [], []
    for p in module.parameters():
        if p.requires_grad:
            (adam if p.ndim < 2 or id(p) in to_adam else muon).append(p)
    return muon, adam
