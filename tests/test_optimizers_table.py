"""optimizers/table.py on plain tensors (no model): rows checked and completed, optimizers built per name,
the cautious step against the formula written out, the evaluation-weights switch."""
import pytest
import torch

import optimizers
from optimizers import table

SHARED = {"betas": (0.9, 0.99), "eps": 1e-8, "momentum": 0.9}


def test_complete_fills_each_shared_key_only_where_the_optimizer_takes_it():
    rows = table.complete({"a": dict(optimizer="adam", lr=0.1, betas=(0.5, 0.6)), "b": dict(optimizer="muon", lr=0.2)},
                          SHARED, moved={})
    assert rows["a"] == dict(optimizer="adam", lr=0.1, betas=(0.5, 0.6), eps=1e-8)  # its own betas win
    assert rows["b"]["momentum"] == 0.9 and "betas" not in rows["b"]
    with pytest.raises(table.TableError, match="group a: optimizer adam takes no 'momentum'"):
        table.complete({"a": dict(optimizer="adam", lr=0.1, momentum=0.9)}, SHARED, moved={})
    with pytest.raises(table.TableError, match="--beta2 is set but no group's optimizer takes betas"):
        table.complete({"a": dict(optimizer="sgd", lr=0.1)}, SHARED, moved={"beta2": "betas"})


def test_build_groups_by_optimizer_scales_lr_and_splits_the_listed_matrices():
    w = [torch.randn(6, 4, requires_grad=True) for _ in range(3)]
    v = torch.randn(4, requires_grad=True)
    rows = table.complete({"hidden": dict(optimizer="muon", lr=0.02, weight_decay=0.1),
                           "scalar": dict(optimizer="adam", lr=0.01), "head": dict(optimizer="adam", lr=0.5)},
                          SHARED, moved={})
    muon, adam = table.build(rows, {"hidden": w, "scalar": [v], "head": []}, lr_scale=2.0, cautious=True,
                             split={"hidden": [w[1]]})
    assert isinstance(muon, optimizers.Muon) and isinstance(adam, optimizers.Adam)
    split, rest = muon.param_groups
    assert split["params"] == [w[1]] and split["split_rows"] == 3 and rest["params"] == [w[0], w[2]]
    assert "split_rows" not in rest or rest["split_rows"] != 3
    assert split["lr"] == split["initial_lr"] == pytest.approx(0.04) and split["initial_momentum"] == 0.9
    assert split["weight_decay"] == 0.0 and split["cautious_wd"] == 0.1  # the decay moves to the cautious step
    assert [g["name"] for g in adam.param_groups] == ["scalar"]  # the empty head group is left out
    set_by_table = table.configured_keys(rows)
    assert all(k in set_by_table for g in muon.param_groups + adam.param_groups for k in g
               if k not in ("params", "name") and g[k] != muon.defaults.get(k, adam.defaults.get(k)))
    with pytest.raises(table.TableError, match="needs a hidden optimizer that takes split_rows"):
        table.build({"hidden": dict(optimizer="adamw", lr=0.1)}, {"hidden": w}, split={"hidden": [w[0]]})


def test_step_applies_cautious_decay_where_the_update_has_the_parameter_sign():
    torch.manual_seed(0)
    x = torch.randn(50, dtype=torch.float64, requires_grad=True)
    x.grad = torch.randn(50, dtype=torch.float64)
    x0, g = x.detach().clone(), x.grad.clone()
    [sgd] = table.build({"p": dict(optimizer="sgd", lr=0.1, weight_decay=0.5)}, {"p": [x]}, cautious=True)
    table.step(sgd)
    u = 0.1 * g  # SGD's update, x ← x − u
    mask = (u * x0 >= 0).double()
    assert torch.allclose(x.detach(), x0 - u - 0.1 * 0.5 * mask * x0, atol=1e-15)
    assert 0 < mask.sum() < 50 and x.grad is None


def test_evaluation_weights_switches_eval_mode_optimizers_and_back():
    p = torch.nn.Parameter(torch.randn(3))
    sf = optimizers.ScheduleFreeAdamW([p], lr=0.1)
    for _ in range(3):  # after one step x = z = y; later the averaged point x differs from y
        p.grad = torch.randn(3)
        sf.step()
    training = p.detach().clone()
    with table.evaluation_weights([sf, torch.optim.SGD([torch.zeros(1, requires_grad=True)])]):
        assert not torch.equal(p.detach(), training)
    assert torch.equal(p.detach(), training)
