"""Where torch.optim has the same method, our optimizer must follow it to 1e-6 relative (fp64, 50 steps)."""
import pytest
import torch

import optimizers
from optimizer_problems import clone_params, random_problem, relative_error, run_steps

CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.03, momentum=0.8, dampening=0.3, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.05, initial_accumulator_value=0.2, eps=1e-6)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.005, centered=True, momentum=0.9, eps=1e-6)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.02)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.05)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.02, betas=(0.5, 0.9), weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.3)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_matches_torch_optim(name, kwargs, seed):
    params, loss_fn = random_problem(seed=100 * seed + len(kwargs))
    ours_params, torch_params = clone_params(params), clone_params(params)
    ours = run_steps(getattr(optimizers, name)(ours_params, **kwargs), ours_params, loss_fn, 50)
    reference = run_steps(getattr(torch.optim, name)(torch_params, **kwargs), torch_params, loss_fn, 50)
    moved = max(relative_error(p, q.detach()) for p, q in zip(reference[-1], params))
    assert moved > 1e-3, "the problem must move the parameters for the comparison to mean anything"
    for step, (a, b) in enumerate(zip(ours, reference)):
        for p, q in zip(a, b):
            assert relative_error(p, q) < 1e-6, f"{name} {kwargs}: diverged from torch.optim at step {step + 1}"


def test_groups_keep_their_own_hyperparameters():
    params, loss_fn = random_problem(seed=7)
    ours_params, torch_params = clone_params(params), clone_params(params)

    def groups(ps):
        return [dict(params=ps[:2], lr=0.05, momentum=0.9), dict(params=ps[2:], lr=0.01, nesterov=True, momentum=0.5)]

    ours = run_steps(optimizers.SGD(groups(ours_params)), ours_params, loss_fn, 20)
    reference = run_steps(torch.optim.SGD(groups(torch_params)), torch_params, loss_fn, 20)
    for p, q in zip(ours[-1], reference[-1]):
        assert relative_error(p, q) < 1e-6


def test_params_without_gradient_are_left_alone():
    params, loss_fn = random_problem(seed=3)
    frozen = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    before = frozen.detach().clone()
    opt = optimizers.Adam(params + [frozen], lr=0.1)
    run_steps(opt, params, loss_fn, 3)
    assert torch.equal(frozen.detach(), before) and frozen not in opt.state


def test_step_returns_the_closure_loss_at_the_old_point():
    params, loss_fn = random_problem(seed=4)
    opt = optimizers.RMSprop(params, lr=0.1)
    before = loss_fn(params).item()

    def closure():
        opt.zero_grad()
        loss = loss_fn(params)
        loss.backward()
        return loss

    assert opt.step(closure).item() == before
    assert loss_fn(params).item() < before


DROP_IN = [  # torch.optim's calling conventions: maximize, foreach, fused, a tensor lr
    ("SGD", dict(lr=torch.tensor(0.05), momentum=0.9, maximize=True, foreach=True)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, foreach=False, fused=True)),
    ("Adagrad", dict(lr=torch.tensor(0.1), maximize=True, foreach=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True, maximize=True, foreach=True)),
    ("Adadelta", dict(lr=torch.tensor(0.5), weight_decay=0.02, maximize=True, foreach=False)),
    ("Adam", dict(lr=torch.tensor(0.01), weight_decay=0.05, maximize=True, foreach=False)),
    ("Adam", dict(lr=0.01, amsgrad=True, maximize=True, fused=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamW", dict(lr=torch.tensor(0.02), weight_decay=0.3, maximize=True, fused=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True, foreach=False)),
]


@pytest.mark.parametrize("name,kwargs", DROP_IN, ids=[f"{n}-{i}" for i, (n, _) in enumerate(DROP_IN)])
def test_torch_calling_conventions_follow_torch_optim(name, kwargs):
    params, loss_fn = random_problem(seed=11)
    ours_params, torch_params = clone_params(params), clone_params(params)
    if name in ("Adam", "AdamW") and kwargs.get("fused"):
        torch_kwargs = {**kwargs, "fused": None}  # torch's fused Adam takes no float64; the result is the same
    else:
        torch_kwargs = kwargs
    ours = run_steps(getattr(optimizers, name)(ours_params, **kwargs), ours_params, loss_fn, 20)
    reference = run_steps(getattr(torch.optim, name)(torch_params, **torch_kwargs), torch_params, loss_fn, 20)
    moved = max(relative_error(p, q.detach()) for p, q in zip(reference[-1], params))
    assert moved > 1e-3
    for step, (a, b) in enumerate(zip(ours, reference)):
        for p, q in zip(a, b):
            assert relative_error(p, q) < 1e-6, f"{name} {kwargs}: diverged from torch.optim at step {step + 1}"


def test_a_tensor_lr_changed_in_place_takes_effect():
    """Schedulers may write a tensor lr in place; each step reads its current value."""
    params, loss_fn = random_problem(seed=12)
    ours_params, torch_params = clone_params(params), clone_params(params)
    ours_lr, torch_lr = torch.tensor(0.01, dtype=torch.float64), torch.tensor(0.01, dtype=torch.float64)
    ours_opt, torch_opt = optimizers.Adam(ours_params, lr=ours_lr), torch.optim.Adam(torch_params, lr=torch_lr)
    for lr in (0.01, 0.003, 0.0):
        ours_lr.fill_(lr)
        torch_lr.fill_(lr)
        ours, reference = run_steps(ours_opt, ours_params, loss_fn, 2), run_steps(torch_opt, torch_params, loss_fn, 2)
    assert all(relative_error(p, q) < 1e-6 for p, q in zip(ours[-1], reference[-1]))
    assert all(torch.equal(p, q) for p, q in zip(ours[-1], ours[-2]))  # lr 0: no move


def test_maximize_ascends_in_the_methods_torch_optim_lacks():
    for name in ("naggs", "shampoo", "muon", "normuon", "schedulefree_adamw"):
        params, loss_fn = random_problem(seed=13, shapes=((6, 4), (4, 3)))
        up, down = clone_params(params), clone_params(params)
        cls = optimizers.get(name)
        ascended = run_steps(cls(up, lr=0.01, maximize=True), up, lambda ps: -loss_fn(ps), 3)
        descended = run_steps(cls(down, lr=0.01), down, loss_fn, 3)
        assert all(torch.equal(p, q) for p, q in zip(ascended[-1], descended[-1])), name


@pytest.mark.parametrize("flag", ["capturable", "differentiable"])
def test_unsupported_torch_flags_are_a_clear_error(flag):
    with pytest.raises(TypeError, match=flag):
        optimizers.Adam([torch.zeros(2, requires_grad=True)], **{flag: True})
