"""Methods torch.optim lacks (or the deck's variants of its methods): float64 references written
from the formulas in numpy, run on the same random problems."""
import numpy as np
import pytest
import scipy.linalg
import torch

import optimizers
from optimizer_problems import assert_same_trajectory, clone_params, random_problem, reference_run, run_steps


def test_adagrad_and_rmsprop_with_the_decks_epsilon_inside_the_root():
    lr, eps, gamma = 0.1, 1e-2, 0.9  # a large ε so that its place matters

    def adagrad(x, g, s, t):
        s["v"] = s.get("v", 0) + g * g
        return x - lr * g / np.sqrt(s["v"] + eps)

    def rmsprop(x, g, s, t):
        s["v"] = gamma * s.get("v", 0) + (1 - gamma) * g * g
        return x - lr * g / np.sqrt(s["v"] + eps)

    for cls, kwargs, update in [(optimizers.Adagrad, dict(lr=lr, eps=eps), adagrad),
                                (optimizers.RMSprop, dict(lr=lr, eps=eps, alpha=gamma), rmsprop)]:
        params, loss_fn = random_problem(seed=11)
        ours_params = clone_params(params)
        ours = run_steps(cls(ours_params, eps_inside_sqrt=True, **kwargs), ours_params, loss_fn, 30)
        reference = reference_run(update, params, loss_fn, 30)
        assert_same_trajectory(ours, reference)
        outside_params = clone_params(params)  # and the default (torch's) placement differs
        outside = run_steps(cls(outside_params, **kwargs), outside_params, loss_fn, 30)
        assert not np.allclose(outside[-1][0].numpy(), reference[-1][0], rtol=1e-4)


@pytest.mark.parametrize("lr,mu,gamma,weight_decay", [(0.05, 1.0, 1.0, 0.0), (0.2, 0.3, 2.0, 0.01)])
def test_naggs_matches_the_papers_update(lr, mu, gamma, weight_decay):
    def update(x, g, s, t):
        g = g + weight_decay * x
        b = lr * mu / (lr * mu + s["gamma"])
        s["v"] = (1 - b) * s["v"] + b * x - (b / mu) * g
        s["gamma"] = (lr * mu + s["gamma"]) / (1 + lr)
        return (x + lr * s["v"]) / (1 + lr)

    params, loss_fn = random_problem(seed=12)
    ours_params = clone_params(params)
    ours = run_steps(optimizers.NAGGS(ours_params, lr=lr, mu=mu, gamma=gamma, weight_decay=weight_decay),
                     ours_params, loss_fn, 50)
    reference = reference_run(update, params, loss_fn, 50, init=lambda x: dict(v=x.copy(), gamma=gamma))
    assert_same_trajectory(ours, reference)


@pytest.mark.parametrize("warmup_steps,weight_decay,r", [(0, 0.0, 0.0), (5, 0.05, 1.0)])
def test_schedule_free_adamw_matches_the_three_sequences(warmup_steps, weight_decay, r):
    """x, y, z kept explicitly: y = (1−β₁)z + β₁x, z-step at y, x the weighted average of z's."""
    lr, beta1, beta2, eps, power = 0.05, 0.9, 0.99, 1e-8, 2.0
    params, loss_fn = random_problem(seed=13)
    xs = [p.detach().numpy().copy() for p in params]
    zs = [x.copy() for x in xs]
    vs = [np.zeros_like(x) for x in xs]
    ours_params = clone_params(params)
    opt = optimizers.ScheduleFreeAdamW(ours_params, lr=lr, betas=(beta1, beta2), eps=eps,
                                       weight_decay=weight_decay, warmup_steps=warmup_steps, r=r)
    lr_max, weight_sum = 0.0, 0.0
    for t in range(1, 31):
        ys = [(1 - beta1) * z + beta1 * x for x, z in zip(xs, zs)]
        ts = [torch.tensor(y, requires_grad=True) for y in ys]
        loss_fn(ts).backward()
        gamma = lr * min(1.0, t / warmup_steps) if warmup_steps else lr
        lr_max = max(lr_max, gamma)
        weight = t ** r * lr_max ** power
        weight_sum += weight
        c = weight / weight_sum
        for i, (y, p) in enumerate(zip(ys, ts)):
            g = p.grad.numpy()
            vs[i] = beta2 * vs[i] + (1 - beta2) * g * g
            d = g / (np.sqrt(vs[i] / (1 - beta2 ** t)) + eps) + weight_decay * y
            zs[i] = zs[i] - gamma * d
            xs[i] = (1 - c) * xs[i] + c * zs[i]
        run_steps(opt, ours_params, loss_fn, 1)
        expected_y = [(1 - beta1) * z + beta1 * x for x, z in zip(xs, zs)]
        assert_same_trajectory([[p.detach() for p in ours_params]], [expected_y])
        if t % 10 == 0:  # evaluation mode shows x, and training resumes from y
            opt.eval()
            assert_same_trajectory([[p.detach() for p in ours_params]], [xs])
            with pytest.raises(RuntimeError, match="eval mode"):
                run_steps(opt, ours_params, loss_fn, 1)
            opt.train()
            assert_same_trajectory([[p.detach() for p in ours_params]], [expected_y])


def _inverse_fourth_root(S, eps):
    """(S + εI)^(−1/4) as the inverse of a square root of a square root (Schur method, no eigh)."""
    return np.linalg.inv(np.real(scipy.linalg.sqrtm(scipy.linalg.sqrtm(S + eps * np.eye(len(S))))))


def shampoo_reference(lr, betas, eps, weight_decay, start, frequency, block, grafting, graft_beta2, graft_eps):
    """Shampoo on the matrix view of x, block by block."""
    beta1, beta2 = betas

    def cut(n):
        return [slice(i, min(i + block, n)) for i in range(0, n, block)]

    def update(x, g, s, t):
        G = g.reshape(x.shape[0], -1) if x.ndim >= 2 else g.reshape(1, -1)
        tiles = [(r, c) for r in cut(G.shape[0]) for c in cut(G.shape[1])]
        if not s:
            s.update(M=np.zeros_like(G), a=np.zeros_like(G), L={}, R={}, PL={}, PR={})
        weight = 1.0 if beta2 == 1 else 1 - beta2
        s["M"] = beta1 * s["M"] + (1 - beta1) * G
        M = s["M"] / (1 - beta1 ** t)
        if grafting == "adam":
            s["a"] = graft_beta2 * s["a"] + (1 - graft_beta2) * G * G
            A = M / (np.sqrt(s["a"] / (1 - graft_beta2 ** t)) + graft_eps)
        elif grafting == "adagrad":
            s["a"] = s["a"] + G * G
            A = M / (np.sqrt(s["a"]) + graft_eps)
        else:
            A = M
        D = np.zeros_like(G)
        for k, tile in enumerate(tiles):
            Gb = G[tile]
            s["L"][k] = beta2 * s["L"].get(k, 0) + weight * Gb @ Gb.T
            s["R"][k] = beta2 * s["R"].get(k, 0) + weight * Gb.T @ Gb
            if t >= start and (t - start) % frequency == 0:
                s["PL"][k] = _inverse_fourth_root(s["L"][k], eps)
                s["PR"][k] = _inverse_fourth_root(s["R"][k], eps)
            if t < start:
                D[tile] = A[tile]
                continue
            Db = s["PL"][k] @ M[tile] @ s["PR"][k]
            if grafting != "none":
                Db = Db * np.linalg.norm(A[tile]) / np.linalg.norm(Db)
            D[tile] = Db
        return x * (1 - lr * weight_decay) - lr * D.reshape(x.shape)

    return update


SHAMPOO_CASES = [
    dict(lr=0.05, betas=(0.9, 0.99), eps=1e-3, weight_decay=0.01, start_preconditioning_step=3,
         precondition_frequency=2, max_preconditioner_dim=3, grafting="adam", grafting_beta2=0.999, grafting_eps=1e-8),
    dict(lr=0.1, betas=(0.0, 1.0), eps=1e-4, weight_decay=0.0, start_preconditioning_step=1,
         precondition_frequency=1, max_preconditioner_dim=1024, grafting="adagrad", grafting_beta2=0.999,
         grafting_eps=1e-6),
    dict(lr=0.02, betas=(0.5, 0.9), eps=1e-2, weight_decay=0.0, start_preconditioning_step=2,
         precondition_frequency=3, max_preconditioner_dim=2, grafting="none", grafting_beta2=0.999, grafting_eps=1e-8),
]


SHAMPOO_CASES.append(dict(SHAMPOO_CASES[0], root_method="newton"))


@pytest.mark.parametrize("kwargs", SHAMPOO_CASES, ids=["adam-graft-blocked", "adagrad-graft-sums", "no-graft", "newton"])
def test_shampoo_matches_blockwise_reference(kwargs):
    params, loss_fn = random_problem(seed=14, shapes=((6, 4), (4,), (4, 3), (3, 2, 2), ()))
    ours_params = clone_params(params)
    ours = run_steps(optimizers.Shampoo(ours_params, **kwargs), ours_params, loss_fn, 12)
    update = shampoo_reference(kwargs["lr"], kwargs["betas"], kwargs["eps"], kwargs["weight_decay"],
                               kwargs["start_preconditioning_step"], kwargs["precondition_frequency"],
                               kwargs["max_preconditioner_dim"], kwargs["grafting"], kwargs["grafting_beta2"],
                               kwargs["grafting_eps"])
    reference = reference_run(update, params, loss_fn, 12)
    assert_same_trajectory(ours, reference, rtol=1e-7)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4)])
def test_shampoo_one_step_is_minus_lr_times_polar_factor(shape):
    """The deck: β = 0 and ε → 0 give W − η (GGᵀ)^(−1/4) G (GᵀG)^(−1/4) = W − η UVᵀ."""
    G = np.random.default_rng(sum(shape)).standard_normal(shape)
    U, _, Vt = np.linalg.svd(G, full_matrices=False)
    W = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    opt = optimizers.Shampoo([W], lr=0.3, betas=(0.0, 0.0), eps=1e-12, grafting="none",
                             start_preconditioning_step=1, precondition_frequency=1)
    (W * torch.from_numpy(G)).sum().backward()
    opt.step()
    np.testing.assert_allclose(W.detach().numpy(), -0.3 * U @ Vt, atol=1e-8)


@pytest.mark.parametrize("shape,dtype,block", [
    ((256,), torch.float32, 1024), ((256,), torch.bfloat16, 1024), ((4, 256), torch.float32, 1024),
    ((4, 256), torch.bfloat16, 1024), ((16, 1024), torch.float32, 256)], ids=str)
def test_shampoo_newton_roots_of_rank_deficient_statistics(shape, dtype, block):
    """Preconditioning from step 2 of a vector or wide blocks: the fp32 statistics have rank 2 and rounding
    leaves eigenvalues just below 0, where an unguarded Newton iteration returns NaN. From x = 0 (so the
    bf16 rounding of x is relative to the update) against the float64 reference with exact roots."""
    g = torch.Generator().manual_seed(sum(shape))
    grads = [torch.randn(shape, generator=g).to(dtype) for _ in range(3)]
    kwargs = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-12, weight_decay=0.0, start_preconditioning_step=2,
                  precondition_frequency=1, max_preconditioner_dim=block, grafting="adam", grafting_beta2=0.999,
                  grafting_eps=1e-8)
    p = torch.zeros(shape, dtype=dtype, requires_grad=True)
    opt = optimizers.Shampoo([p], root_method="newton", **kwargs)
    update = shampoo_reference(*(kwargs[k] for k in ("lr", "betas", "eps", "weight_decay", "start_preconditioning_step",
                                                     "precondition_frequency", "max_preconditioner_dim", "grafting",
                                                     "grafting_beta2", "grafting_eps")))
    x, state = np.zeros(shape), {}
    for t, G in enumerate(grads, 1):
        p.grad = G
        opt.step()
        x = update(x, G.double().numpy(), state, t)
        ours = p.detach().double().numpy()
        assert np.isfinite(ours).all(), f"step {t}: non-finite parameters"
        error = np.linalg.norm(ours - x) / np.linalg.norm(x)
        assert error < (1e-2 if dtype == torch.bfloat16 else 1e-5), f"step {t}: relative error {error:.2e}"


def test_shampoo_newton_keeps_the_previous_root_when_a_new_one_is_not_finite():
    from optimizers.shampoo import inverse_fourth_root
    previous = 2 * torch.eye(3, dtype=torch.float64)
    indefinite = -torch.eye(3, dtype=torch.float64)  # no real inverse fourth root: the iteration overflows
    kept = inverse_fourth_root(indefinite, 1e-12, torch.float64, "newton", previous)
    assert torch.equal(kept, previous)
    S = torch.diag(torch.tensor([16.0, 1.0, 0.0625], dtype=torch.float64))
    root = inverse_fourth_root(S, 1e-12, torch.float64, "newton", previous)
    torch.testing.assert_close(root, torch.diag(torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)), rtol=1e-9, atol=1e-12)
