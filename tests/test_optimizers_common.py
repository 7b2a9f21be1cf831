"""What every optimizer owes its users: the registry, the trainer's calling convention, lossless
state_dict round trips, fp32 state for bf16 parameters, and hyperparameter checks."""
import inspect
import io

import pytest
import torch

import optimizers
from optimizer_problems import clone_params, random_problem, run_steps

MATRICES_ONLY = ((6, 4), (4, 3), (3, 2, 2))
SETTINGS = {  # per registered name: constructor keywords that exercise most of the state
    "sgd": dict(lr=0.05, momentum=0.9, nesterov=True),
    "adagrad": dict(lr=0.1, lr_decay=0.01),
    "rmsprop": dict(lr=0.01, momentum=0.5, centered=True),
    "adadelta": dict(lr=1.0),
    "adam": dict(lr=0.01, amsgrad=True),
    "adamw": dict(lr=0.01, weight_decay=0.1),
    "naggs": dict(lr=0.05),
    "shampoo": dict(lr=0.01, start_preconditioning_step=2, precondition_frequency=2, max_preconditioner_dim=3),
    "muon": dict(lr=0.02, ns_coefficients="polar_express"),
    "normuon": dict(lr=0.02),
    "schedulefree_adamw": dict(lr=0.01, warmup_steps=3),
}


def problem_for(name, dtype=torch.float32, seed=0):
    shapes = MATRICES_ONLY if "muon" in name else ((6, 4), (4,), (4, 3), (3, 2, 2), ())
    return random_problem(seed=seed, dtype=dtype, shapes=shapes)


def test_registry_covers_every_name_with_an_optimizer_class():
    assert set(SETTINGS) == set(optimizers.NAMES)
    for name in optimizers.NAMES:
        cls = optimizers.get(name)
        assert issubclass(cls, torch.optim.Optimizer)
        accepted = inspect.signature(cls).parameters
        assert "lr" in accepted and "weight_decay" in accepted, name
    assert optimizers.get("normuon") is optimizers.NorMuon


def test_unknown_name_lists_the_valid_ones_and_suggests_the_closest():
    with pytest.raises(ValueError, match=r"'shampo'.*Did you mean 'shampoo'\?.*sgd, adagrad"):
        optimizers.get("shampo")
    with pytest.raises(ValueError, match="Valid names") as error:
        optimizers.get("lion")
    assert "Did you mean" not in str(error.value)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_trainer_style_construction(name):
    """Groups carrying lr, weight_decay and extra keys; betas/momentum/eps only where the signature has them."""
    params, loss_fn = problem_for(name)
    cls = optimizers.get(name)
    accepted = inspect.signature(cls).parameters
    extra = {"betas": (0.8, 0.95), "eps": 1e-10, "momentum": 0.9}
    groups = [dict(params=params[:1], lr=0.01, initial_lr=0.01, weight_decay=0.01, name="a"),
              dict(params=params[1:], lr=0.02, initial_lr=0.02, weight_decay=0.0, name="b")]
    opt = cls(groups, **{k: v for k, v in extra.items() if k in accepted})
    before = [p.detach().clone() for p in params]
    run_steps(opt, params, loss_fn, 2)
    assert all(not torch.equal(p, q) for p, q in zip(params, before))


def _round_trip(name, dtype, steps_before=3, steps_after=4):
    params, loss_fn = problem_for(name, dtype=dtype, seed=1)
    opt = optimizers.get(name)(params, **SETTINGS[name])
    run_steps(opt, params, loss_fn, steps_before)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    fresh_params = clone_params(params)
    fresh = optimizers.get(name)(fresh_params, **SETTINGS[name])
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=False))
    continued = run_steps(opt, params, loss_fn, steps_after)
    resumed = run_steps(fresh, fresh_params, loss_fn, steps_after)
    return opt, fresh, continued, resumed


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_state_dict_round_trip_continues_identically(name, dtype):
    opt, fresh, continued, resumed = _round_trip(name, dtype)
    for step, (a, b) in enumerate(zip(continued, resumed)):
        assert all(torch.equal(p, q) for p, q in zip(a, b)), f"{name}: resumed run differs at step {step + 1}"
    for state in list(opt.state.values()) + list(fresh.state.values()):
        for value in state.values():
            for tensor in value if isinstance(value, list) else [value]:
                if torch.is_tensor(tensor) and tensor.is_floating_point():
                    assert tensor.dtype == torch.float32, f"{name}: {dtype} parameters need fp32 state"


def test_schedule_free_round_trip_from_eval_mode():
    params, loss_fn = problem_for("schedulefree_adamw")
    opt = optimizers.ScheduleFreeAdamW(params, lr=0.01)
    run_steps(opt, params, loss_fn, 3)
    opt.eval()  # a checkpoint taken at evaluation time holds x
    state = opt.state_dict()
    fresh_params = clone_params(params)
    fresh = optimizers.ScheduleFreeAdamW(fresh_params, lr=0.01)
    fresh.load_state_dict(state)
    opt.train()
    fresh.train()
    a, b = run_steps(opt, params, loss_fn, 2), run_steps(fresh, fresh_params, loss_fn, 2)
    assert all(torch.equal(p, q) for p, q in zip(a[-1], b[-1]))


INVALID = [
    (optimizers.SGD, dict(lr=-0.1), r"SGD: lr must be a number in \[0, inf\), got -0.1"),
    (optimizers.SGD, dict(momentum=1.0), r"momentum must be a number in \[0, 1\), got 1.0"),
    (optimizers.SGD, dict(nesterov=True), r"nesterov=True needs momentum > 0"),
    (optimizers.SGD, dict(nesterov="yes"), r"nesterov must be one of False, True, got 'yes'"),
    (optimizers.Adagrad, dict(eps=-1e-10), r"Adagrad: eps must be a number in \[0, inf\)"),
    (optimizers.Adagrad, dict(lr_decay=float("nan")), r"lr_decay must be a number in \[0, inf\), got nan"),
    (optimizers.RMSprop, dict(alpha=1.5), r"RMSprop: alpha must be a number in \[0, 1\], got 1.5"),
    (optimizers.Adadelta, dict(rho=-0.1), r"Adadelta: rho must be a number in \[0, 1\]"),
    (optimizers.Adam, dict(betas=(1.0, 0.999)), r"Adam: betas\[0\] must be a number in \[0, 1\), got 1.0"),
    (optimizers.Adam, dict(betas=(0.9,)), r"betas must be a sequence of 2 numbers, got \(0.9,\)"),
    (optimizers.AdamW, dict(weight_decay=-0.01), r"AdamW: weight_decay must be a number in \[0, inf\)"),
    (optimizers.AdamW, dict(lr="0.001"), r"AdamW: lr must be a number in \[0, inf\), got '0.001'"),
    (optimizers.NAGGS, dict(mu=0.0), r"NAGGS: mu must be a number in \(0, inf\), got 0.0"),
    (optimizers.Shampoo, dict(grafting="sgd"), r"grafting must be one of 'adam', 'adagrad', 'none', got 'sgd'"),
    (optimizers.Shampoo, dict(precondition_frequency=0), r"precondition_frequency must be an integer in \[1, inf\)"),
    (optimizers.Shampoo, dict(max_preconditioner_dim=2.5), r"max_preconditioner_dim must be an integer"),
    (optimizers.Shampoo, dict(betas=(0.9, 1.5)), r"betas\[1\] must be a number in \[0, 1\], got 1.5"),
    (optimizers.Muon, dict(ns_steps=0), r"Muon: ns_steps must be an integer in \[1, 100\), got 0"),
    (optimizers.Muon, dict(ns_coefficients=(1.0, 2.0)), r"ns_coefficients must be \"quintic\""),
    (optimizers.Muon, dict(adjust_lr_fn="spectral"), r"adjust_lr_fn must be one of None, 'original'"),
    (optimizers.NorMuon, dict(normuon_beta2=1.0), r"normuon_beta2 must be a number in \[0, 1\), got 1.0"),
    (optimizers.ScheduleFreeAdamW, dict(betas=(0.0, 0.999)), r"betas\[0\] must be a number in \(0, 1\], got 0.0"),
    (optimizers.ScheduleFreeAdamW, dict(warmup_steps=-1), r"warmup_steps must be an integer in \[0, inf\)"),
]


@pytest.mark.parametrize("cls,kwargs,message", INVALID, ids=[f"{c.__name__}-{next(iter(k))}" for c, k, _ in INVALID])
def test_invalid_hyperparameters_are_rejected_with_name_value_and_range(cls, kwargs, message):
    weight = torch.zeros(3, 3, requires_grad=True)
    with pytest.raises(ValueError, match=message):
        cls([weight], **kwargs)
    with pytest.raises(ValueError, match=message):  # per-group values are checked too
        cls([dict(params=[weight], **kwargs)])


def test_muon_rejects_vectors_and_points_to_the_split():
    with pytest.raises(ValueError, match=r"at least 2 dimensions, got shape \(3,\).*split_muon_params"):
        optimizers.Muon([torch.zeros(3, 3, requires_grad=True), torch.zeros(3, requires_grad=True)])


def test_defaults_follow_torch_optim():
    pairs = [(optimizers.SGD, torch.optim.SGD), (optimizers.Adagrad, torch.optim.Adagrad),
             (optimizers.RMSprop, torch.optim.RMSprop), (optimizers.Adadelta, torch.optim.Adadelta),
             (optimizers.Adam, torch.optim.Adam), (optimizers.AdamW, torch.optim.AdamW)]
    if hasattr(torch.optim, "Muon"):  # torch >= 2.9
        pairs.append((optimizers.Muon, torch.optim.Muon))
    for ours, theirs in pairs:
        their_params = inspect.signature(theirs).parameters
        for name, parameter in inspect.signature(ours).parameters.items():
            if name in their_params and name != "params":
                assert parameter.default == their_params[name].default, f"{ours.__name__}.{name}"


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_rejected_param_group_is_not_kept(name):
    params, loss_fn = problem_for(name)
    opt = optimizers.get(name)(params[:1], **SETTINGS[name])
    with pytest.raises(ValueError, match="lr must be"):
        opt.add_param_group(dict(params=params[1:], lr=-1.0))
    assert len(opt.param_groups) == 1
    before = [p.detach().clone() for p in params[1:]]
    run_steps(opt, params, loss_fn, 2)  # steps only the valid group
    assert all(torch.equal(p, q) for p, q in zip(params[1:], before))


STATE_VARIANTS = {  # further settings whose state differs from SETTINGS'
    "sgd": [dict(momentum=0.0)], "rmsprop": [dict()], "adam": [dict()], "adamw": [dict(amsgrad=True)],
    "shampoo": [dict(grafting="none", max_preconditioner_dim=2)],
    "muon": [dict(normuon=True, normuon_axis="by_shape"), dict(normuon=True, normuon_axis="columns", flatten=True)],
    "normuon": [dict(normuon_axis="by_shape", split_rows=2)],
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_registered_name_and_state_numel_match_what_the_optimizer_keeps(name):
    cls = optimizers.get(name)
    assert cls.name == name and optimizers.NAMES[name] is cls
    for settings in [SETTINGS[name], *STATE_VARIANTS.get(name, [])]:
        params, loss_fn = problem_for(name, seed=2)
        opt = cls(params, **settings)
        assert set(cls.hyperparameters()) <= set(opt.param_groups[0]), "every hyperparameter is in each group"
        run_steps(opt, params, loss_fn, 3)
        for p in params:
            held = sum(t.numel() for t in torch.utils._pytree.tree_leaves(dict(opt.state[p])) if torch.is_tensor(t))
            assert held == cls.state_numel(p.shape, **settings), (name, settings, tuple(p.shape))


def test_shampoo_state_per_block():
    """A 1500 × 3 matrix in blocks of 1024 rows: momentum, and L, R and their roots for each block."""
    assert optimizers.Shampoo.state_numel((1500, 3), grafting="none") == 4500 + 2 * (1024**2 + 9 + 476**2 + 9)
    assert optimizers.Shampoo.state_numel((7,)) == 2 * 7 + 2 * (1 + 49)


def test_hyperparameters_name_the_optimizer_and_reject_what_it_does_not_take():
    assert optimizers.AdamW.hyperparameters(lr=0.1)["lr"] == 0.1
    assert optimizers.NorMuon.hyperparameters()["normuon"] is True
    assert optimizers.NorMuon.hyperparameters()["ns_steps"] == 5  # Muon's options pass through
    with pytest.raises(ValueError, match=r"AdamW \('adamw'\) does not take momentum; its hyperparameters: lr, betas"):
        optimizers.AdamW.state_numel((3, 3), momentum=0.9)


def test_defining_a_named_optimizer_registers_it():
    from optimizers.base import NONNEGATIVE, Optimizer

    try:
        class SignSGD(Optimizer):
            name = "signsgd_for_this_test"
            bounds = dict(lr=NONNEGATIVE)

            def __init__(self, params, lr: float = 1e-3):
                super().__init__(params, dict(lr=lr))

            @classmethod
            def count_state(cls, shape, hyperparameters):
                return 0

            def update_param(self, x, grad, state, group):
                x.add_(grad.sign(), alpha=-group["lr"])

        assert optimizers.get("signsgd_for_this_test") is SignSGD and SignSGD.state_numel((3, 4)) == 0
        with pytest.raises(ValueError, match="two optimizers registered as 'adam'"):
            type("Other", (Optimizer,), {"name": "adam"})
    finally:
        optimizers.NAMES.pop("signsgd_for_this_test", None)


@pytest.mark.parametrize("name", ["adam", "muon", "shampoo"])
def test_a_state_dict_saved_before_a_hyperparameter_existed_loads_with_its_default(name):
    params, loss_fn = problem_for(name)
    opt = optimizers.get(name)(params, **SETTINGS[name])
    run_steps(opt, params, loss_fn, 2)
    saved = opt.state_dict()
    for group in saved["param_groups"]:
        del group["maximize"]
    fresh = optimizers.get(name)(clone_params(params), **SETTINGS[name])
    fresh.load_state_dict(saved)
    assert all(group["maximize"] is False for group in fresh.param_groups)
