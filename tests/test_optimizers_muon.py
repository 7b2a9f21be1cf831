"""Muon and NorMuon against a float64 numpy reference, the orthogonalisation's accuracy, the
parameter split, and the distributed version against one process."""
import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import kernels
import optimizers
from optimizers.muon import coefficient_schedule
from optimizer_problems import assert_same_trajectory, clone_params, random_problem, reference_run, run_steps

MATRIX_SHAPES = ((6, 4), (4, 8), (8, 2, 3), (6, 6))  # tall, wide, a batch of 8 (or flattened 8 × 6), square


def newton_schulz_reference(U, coefficients, eps):
    """X₀ = U/(‖U‖_F + ε) on the side with fewer rows, then X ← aX + b(XXᵀ)X + c(XXᵀ)²X."""
    wide = U.shape[0] <= U.shape[1]
    X = U if wide else U.T
    X = X / (np.linalg.norm(X) + eps)
    for a, b, c in coefficients:
        A = X @ X.T
        X = a * X + b * A @ X + c * A @ A @ X
    return X if wide else X.T


def muon_reference(lr, momentum, nesterov, weight_decay, coefficients, eps, adjust, normuon=None, split_rows=1,
                   flatten=False, axis="rows"):
    """Each matrix on its own: a 2-D x (or a flattened one) is one, ≥ 3-D a batch over the last two
    dimensions; each is cut into split_rows blocks of rows. NorMuon per row, per column, or by shape."""
    def update(x, g, s, t):
        s["B"] = momentum * s.get("B", 0) + (1 - momentum) * g
        U = (1 - momentum) * g + momentum * s["B"] if nesterov else s["B"]
        matrices = U.reshape(1, x.shape[0], -1) if x.ndim == 2 or flatten else U.reshape(-1, *x.shape[-2:])
        matrices = matrices.reshape(-1, matrices.shape[1] // split_rows, matrices.shape[2])
        updates = []
        for i, M in enumerate(matrices):
            O = newton_schulz_reference(M, coefficients, eps)
            rows, cols = O.shape
            if normuon:
                beta2, eps2 = normuon
                per_row = axis == "rows" or (axis == "by_shape" and rows >= cols)
                mean_square = (O ** 2).mean(axis=1 if per_row else 0, keepdims=True)
                s[i] = beta2 * s.get(i, 0) + (1 - beta2) * mean_square
                normalized = O / (np.sqrt(s[i]) + eps2)
                O = normalized * np.linalg.norm(O) / np.linalg.norm(normalized)
            scale = 0.2 * math.sqrt(max(rows, cols)) if adjust == "match_rms_adamw" else math.sqrt(max(1, rows / cols))
            updates.append(scale * O)
        return x * (1 - lr * weight_decay) - lr * np.stack(updates).reshape(x.shape)

    return update


MUON_CASES = [
    dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0, ns_coefficients="quintic"),
    dict(lr=0.05, momentum=0.9, nesterov=False, weight_decay=0.1, ns_coefficients="polar_express",
         adjust_lr_fn="match_rms_adamw"),
    dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.01, ns_coefficients="quintic", normuon=True,
         normuon_beta2=0.9),
    dict(lr=0.03, momentum=0.8, nesterov=True, weight_decay=0.0, ns_coefficients=[(3.0, -3.2, 1.2), (2.0, -1.5, 0.5)],
         ns_steps=3, normuon=True),
    dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.01, ns_coefficients="polar_express", normuon=True,
         normuon_axis="by_shape"),
    dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.0, ns_coefficients="quintic", normuon=True,
         normuon_axis="columns", flatten=True, split_rows=2),
]


@pytest.mark.parametrize("kwargs", MUON_CASES, ids=["quintic", "polar-express-adamw-rms", "normuon", "custom",
                                                    "normuon-by-shape", "normuon-columns-flatten-split"])
def test_muon_matches_float64_reference(kwargs):
    params, loss_fn = random_problem(seed=21, shapes=MATRIX_SHAPES)
    ours_params = clone_params(params)
    opt = optimizers.Muon(ours_params, **kwargs)
    ours = run_steps(opt, ours_params, loss_fn, 20)
    steps = kwargs.get("ns_steps", 5)
    coefficients = coefficient_schedule(kwargs["ns_coefficients"], steps)
    coefficients = [coefficients] * steps if len(coefficients) == 3 and np.isscalar(coefficients[0]) else \
        [coefficients[min(i, len(coefficients) - 1)] for i in range(steps)]
    normuon = (kwargs.get("normuon_beta2", 0.95), 1e-10) if kwargs.get("normuon") else None
    update = muon_reference(kwargs["lr"], kwargs["momentum"], kwargs["nesterov"], kwargs["weight_decay"],
                            coefficients, 1e-7, kwargs.get("adjust_lr_fn"), normuon, kwargs.get("split_rows", 1),
                            kwargs.get("flatten", False), kwargs.get("normuon_axis", "rows"))
    reference = reference_run(update, params, loss_fn, 20)
    assert_same_trajectory(ours, reference, rtol=1e-8)


def _blocks_apart(fused_kwargs, rows=8, cols=6, steps=4):
    """Train one fused (3·rows) × cols matrix with the given options and three rows × cols matrices
    separately on the same gradients; returns (fused parameter, the three stacked)."""
    g = torch.Generator().manual_seed(30)
    start = torch.randn(3 * rows, cols, generator=g)
    fused = start.clone().requires_grad_()
    apart = [block.clone().requires_grad_() for block in start.chunk(3)]
    fused_opt = optimizers.Muon([fused], lr=0.02, normuon=True, **fused_kwargs)
    apart_opt = optimizers.Muon(apart, lr=0.02, normuon=True)
    for _ in range(steps):
        grad = torch.randn(3 * rows, cols, generator=g)
        fused.grad = grad
        for p, block in zip(apart, grad.chunk(3)):
            p.grad = block.clone()
        fused_opt.step()
        apart_opt.step()
    return fused.detach(), torch.cat([p.detach() for p in apart])


def test_split_rows_orthogonalises_a_fused_qkv_as_three_matrices():
    """A fused QKV weight (3d × d) with split_rows=3 takes the steps of Q, K and V as separate d × d
    matrices: their own orthogonalisation, lr scale 1 (not √3) and NorMuon statistics."""
    fused, apart = _blocks_apart(dict(split_rows=3), rows=6, cols=6)
    torch.testing.assert_close(fused, apart, rtol=1e-6, atol=1e-7)
    unsplit, apart = _blocks_apart({}, rows=6, cols=6)
    assert (unsplit - apart).abs().max() > 1e-3  # one 18 × 6 matrix is a different update


def test_three_dimensional_weights_are_batches_of_matrices_as_in_the_public_muon():
    g = torch.Generator().manual_seed(31)
    stacked = torch.randn(3, 5, 4, generator=g).requires_grad_()
    apart = [m.clone().requires_grad_() for m in stacked.detach()]
    opts = optimizers.Muon([stacked], lr=0.05), optimizers.Muon(apart, lr=0.05)
    for _ in range(3):
        grad = torch.randn(3, 5, 4, generator=g)
        stacked.grad = grad
        for p, m in zip(apart, grad):
            p.grad = m.clone()
        for opt in opts:
            opt.step()
    torch.testing.assert_close(stacked.detach(), torch.stack([p.detach() for p in apart]), rtol=1e-6, atol=1e-7)


def test_split_rows_must_divide_the_rows():
    with pytest.raises(ValueError, match=r"split_rows=3 does not divide the 8 rows of a parameter of shape \(8, 4\)"):
        optimizers.Muon([torch.zeros(8, 4, requires_grad=True)], split_rows=3)


def test_newton_schulz_coefficients_by_name_per_group():
    g = torch.Generator().manual_seed(23)
    params = [torch.randn(s, generator=g) for s in MATRIX_SHAPES]
    both, quintic, express = clone_params(params), clone_params(params), clone_params(params)
    together = optimizers.Muon([dict(params=both[:2], ns_coefficients="quintic"),
                                dict(params=both[2:], ns_coefficients="polar_express")], lr=0.02)
    alone = [optimizers.Muon(quintic, lr=0.02, ns_coefficients="quintic"),
             optimizers.Muon(express, lr=0.02, ns_coefficients="polar_express")]
    for _ in range(3):
        grads = [torch.randn(s, generator=g) for s in MATRIX_SHAPES]
        for ps in (both, quintic, express):
            for p, grad in zip(ps, grads):
                p.grad = grad.clone()
        for opt in [together, *alone]:
            opt.step()
    assert all(torch.equal(p, q) for p, q in zip(both[:2], quintic[:2]))
    assert all(torch.equal(p, q) for p, q in zip(both[2:], express[2:]))
    assert not torch.allclose(quintic[2], express[2])


def test_normuon_is_muon_with_the_option_on():
    params, loss_fn = random_problem(seed=22, shapes=MATRIX_SHAPES)
    a, b = clone_params(params), clone_params(params)
    ours = run_steps(optimizers.NorMuon(a, lr=0.02, ns_steps=4), a, loss_fn, 5)
    theirs = run_steps(optimizers.Muon(b, lr=0.02, ns_steps=4, normuon=True), b, loss_fn, 5)
    assert all(torch.equal(p, q) for p, q in zip(ours[-1], theirs[-1]))


def orthogonalized_update(G: torch.Tensor, **kwargs) -> torch.Tensor:
    """One Muon step from W = 0 with plain (non-Nesterov) momentum 0 returns −scale·NS(G)."""
    W = torch.zeros_like(G, requires_grad=True)
    opt = optimizers.Muon([W], lr=1.0, momentum=0.0, nesterov=False, weight_decay=0.0, **kwargs)
    (W * G).sum().backward()
    opt.step()
    return -W.detach() / math.sqrt(max(1, G.shape[0] / G.shape[1]))


def well_conditioned_square(n: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """Random orthogonal factors around singular values spread over [0.1, 1]. The quintic band needs
    every singular value above ~1% of ‖G‖_F: a square Gaussian matrix has some near 0, which 5 steps
    leave small or still rising (up to the quintic's maximum 1.2025 on [0, 1])."""
    q1, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=dtype))
    q2, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=dtype))
    spectrum = 0.1 + 0.9 * torch.rand(n, generator=generator, dtype=dtype)
    return q1 @ torch.diag(spectrum) @ q2.T


def random_matrices(seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return {"tall": torch.randn(96, 24, generator=g, dtype=dtype), "wide": torch.randn(20, 80, generator=g, dtype=dtype),
            "square": well_conditioned_square(48, g, dtype)}


@pytest.mark.parametrize("seed", range(3))
def test_quintic_singular_values_stay_in_band(seed):
    for name, G in random_matrices(seed, torch.float32).items():
        s = torch.linalg.svdvals(orthogonalized_update(G))
        assert 0.68 <= s.min() and s.max() <= 1.14, f"{name}: singular values in [{s.min():.3f}, {s.max():.3f}]"
    g = torch.Generator().manual_seed(seed)
    s = torch.linalg.svdvals(kernels.newton_schulz(torch.randn(4, 40, 16, generator=g), steps=5))
    assert 0.68 <= s.min() and s.max() <= 1.14, f"batched: [{s.min():.3f}, {s.max():.3f}]"
    s = torch.linalg.svdvals(orthogonalized_update(torch.randn(48, 48, generator=g)))
    assert s.max() <= 1.2025, f"Gaussian square: largest singular value {s.max():.4f}"


@pytest.mark.parametrize("seed", range(2))
def test_polar_express_approaches_exact_polar_factor(seed):
    for name, G in random_matrices(seed).items():
        U, _, Vh = torch.linalg.svd(G, full_matrices=False)
        exact = U @ Vh

        def error(**kwargs):
            return ((orthogonalized_update(G, **kwargs) - exact).norm() / exact.norm()).item()

        quintic, express5, express8 = error(), error(ns_coefficients="polar_express"), \
            error(ns_coefficients="polar_express", ns_steps=8)
        assert express5 < 0.5 * quintic, f"{name}: Polar Express {express5:.3g} vs quintic {quintic:.3g}"
        assert express8 < 1e-10, f"{name}: 8 Polar Express steps leave a relative error of {express8:.3g}"


def test_split_muon_params_is_generic_over_modules():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.conv = nn.Conv1d(8, 8, 3)
            self.hidden = nn.Linear(8, 8)
            self.norm = nn.LayerNorm(8)
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.embed.weight  # tied
            self.frozen = nn.Linear(8, 8)
            self.frozen.requires_grad_(False)

    net = Net()
    muon, adam = optimizers.split_muon_params(net)
    assert {id(p) for p in muon} == {id(net.conv.weight), id(net.hidden.weight)}
    assert {id(p) for p in adam} == {id(p) for p in [net.embed.weight, net.conv.bias, net.hidden.bias,
                                                      net.norm.weight, net.norm.bias]}
    muon, adam = optimizers.split_muon_params(net, adam_only=[net.hidden.weight, net.conv])
    assert muon == [] and len(adam) == 7


# --- distributed: 2 and 3 gloo processes must give what 1 process gives ---------------------------

DIST_SHAPES = ((6, 4), (6, 4), (6, 4), (4, 6), (5, 5), (5, 5), (3, 2, 4), (6, 4))  # odd counts: padded shares
MODES = {  # name: (Muon options, whether each rank passes its own gradients)
    "all-reduced": (dict(), False),
    "reduce-scatter": (dict(reduce_gradients=True), True),
    "reduce-scatter-bf16": (dict(reduce_gradients=True, gather_dtype=torch.bfloat16), True),
}


def _gradients(step, rank, world):
    """This rank's gradients at a step, or (rank None) their mean over the ranks, as an all-reduce gives."""
    def of(r):
        g = torch.Generator().manual_seed(1000 * step + r)
        return [torch.randn(s, generator=g, dtype=torch.float64) for s in DIST_SHAPES]
    if rank is not None:
        return of(rank)
    per_rank = [of(r) for r in range(world)]
    return [sum(gs[1:], gs[0]) / world for gs in zip(*per_rank)]


def _muon_run(options, local, world, rank, steps=4):
    """Three groups (Muon; NorMuon by shape over a 3-D batch; a split_rows=3 matrix); returns the
    parameters, the number of matrices this process orthogonalised per step, and how many
    parameters it keeps state for."""
    g = torch.Generator().manual_seed(5)
    params = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for s in DIST_SHAPES]
    opt = optimizers.Muon([dict(params=params[:4]), dict(params=params[4:7], normuon=True, normuon_axis="by_shape"),
                           dict(params=params[7:], split_rows=3)], lr=0.02, weight_decay=0.01, **options)
    orthogonalized = []
    ns = kernels.newton_schulz

    def counting(G, *args, **kwargs):
        orthogonalized.append(G.shape[0])
        return ns(G, *args, **kwargs)

    kernels.newton_schulz = counting
    try:
        for step in range(steps):
            for p, grad in zip(params, _gradients(step, rank if local else None, world)):
                p.grad = grad
            opt.step()
    finally:
        kernels.newton_schulz = ns
    return [p.detach() for p in params], sum(orthogonalized) // steps, len(opt.state)


def _distributed_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {name: _muon_run(options, local, world, rank) for name, (options, local) in MODES.items()}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_muon_matches_one_process(tmp_path, world):
    """All-reduced gradients, or each rank's own reduce-scattered by Muon: the parameters of every rank
    equal one process's given the mean gradients (bf16 all-gathers: within bf16 rounding), and each
    rank orthogonalises only its share of every group and shape."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_distributed_worker, args=(world, port, str(tmp_path)), nprocs=world, join=True,
                       start_method="fork")  # forked: the children need not import torch again
    single, single_workload, _ = _muon_run({}, False, world, None)
    alone_reducing = _muon_run(dict(reduce_gradients=True), False, world, None)[0]  # one process: nothing to reduce
    assert all(torch.equal(p, q) for p, q in zip(alone_reducing, single))
    matrices = [1, 1, 1, 1, 1, 1, 3, 3]  # per parameter: the 3-D one is 3 matrices, the split one 3 blocks
    assert single_workload == sum(matrices)
    batches = [[0, 1, 2], [3], [4, 5], [6], [7]]  # (group, matrix shape) batches, as parameter indices
    share = sum(math.ceil(sum(matrices[i] for i in batch) / world) for batch in batches)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for name in MODES:
        tolerance = dict(rtol=1e-3, atol=1e-3) if name.endswith("bf16") else dict(rtol=1e-12, atol=1e-14)
        for rank, results in enumerate(ranks):
            params, workload, stateful = results[name]
            for p, q in zip(params, single):
                torch.testing.assert_close(p, q, **tolerance, msg=lambda m: f"{name}, rank {rank}: {m}")
            assert workload == share < single_workload, name
            if name.startswith("reduce"):  # the momentum of a matrix lives on the rank that orthogonalises it
                assert stateful < len(DIST_SHAPES), name


def _ddp_run(rank, world, steps=4):
    """A small net: Muon (reduce_gradients=True) for its hidden matrices, kept out of DDP's all-reduce,
    AdamW for the rest through DDP; each rank trains on its slice of every batch."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    hidden = {"0.weight", "2.weight"}
    if world > 1:
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(net, sorted(hidden))
        runner = nn.parallel.DistributedDataParallel(net)
    else:
        runner = net
    named = dict(net.named_parameters())
    muon = optimizers.Muon([named[n] for n in sorted(hidden)], lr=0.02, reduce_gradients=True)
    adam = optimizers.AdamW([p for n, p in named.items() if n not in hidden], lr=0.01)
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(12, 8, generator=g, dtype=torch.float64), torch.randn(12, 4, generator=g, dtype=torch.float64)
        ((runner(x.chunk(world)[rank]) - y.chunk(world)[rank]) ** 2).mean().backward()
        for opt in (muon, adam):
            opt.step()
            opt.zero_grad()
    return [p.detach() for p in net.parameters()]


def _ddp_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(_ddp_run(rank, world), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_muon_reducing_its_own_gradients_beside_ddp_matches_one_process(tmp_path):
    """The trainer's wiring: DDP ignores Muon's parameters, Muon reduce-scatters their gradients."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    single = _ddp_run(0, 1)
    for rank in range(2):
        for p, q in zip(torch.load(tmp_path / f"rank{rank}.pt"), single):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_dtypes_may_be_given_by_name():
    opt = optimizers.Muon([torch.zeros(4, 4, requires_grad=True)], ns_dtype="float32", gather_dtype="bfloat16")
    assert opt.param_groups[0]["ns_dtype"] is torch.float32 and opt.param_groups[0]["gather_dtype"] is torch.bfloat16
    with pytest.raises(ValueError, match="gather_dtype must be one of"):
        optimizers.Muon([torch.zeros(4, 4, requires_grad=True)], gather_dtype="bf16")
