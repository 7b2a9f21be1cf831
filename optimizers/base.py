"""Shared machinery of every optimizer in this package.

- Hyperparameters are checked per parameter group against declared bounds, so a bad value in
  `__init__` or in a later `add_param_group` fails with its name, its value and the valid range.
- State is kept in at least fp32 (fp32 for fp32/bf16/fp16 parameters, fp64 for fp64 ones), and
  low-precision parameters are updated in that precision and rounded once.
- `state_dict()`/`load_state_dict()` round-trip without torch's cast of state to the parameter's
  dtype (which would round fp32 state of bf16 parameters to bf16); a saved group lacking a newer
  hyperparameter gets its default.
- torch.optim's calling conventions: `maximize=True` ascends (every optimizer here); `lr` may be a
  one-element float tensor (read once per step: free for a CPU tensor, a host-device sync for a
  CUDA one); `foreach` and `fused`, where torch.optim has them, are accepted and change nothing
  (each optimizer here has one implementation: fused kernels where they exist, else per tensor).
  Not accepted (TypeError): `capturable` and `differentiable`.
"""
from __future__ import annotations

import difflib
import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from numbers import Integral, Real
from typing import Any, Iterator

import torch


@dataclass(frozen=True)
class Interval:
    """A closed, open or half-open range of numbers (integers only with `integer=True`)."""
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def __contains__(self, value: Any) -> bool:
        kind = Integral if self.integer else Real
        if not isinstance(value, kind) or isinstance(value, bool):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        left = "(" if self.low_open or self.low == -math.inf else "["
        right = ")" if self.high_open or self.high == math.inf else "]"
        kind = "an integer" if self.integer else "a number"
        return f"{kind} in {left}{self.low:g}, {self.high:g}{right}"


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of values (compared with ==)."""
    values: tuple

    def __contains__(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)

    def __str__(self) -> str:
        return "one of " + ", ".join(map(repr, self.values))


NONNEGATIVE = Interval(0.0)
POSITIVE = Interval(0.0, low_open=True)
UNIT = Interval(0.0, 1.0)                    # [0, 1]
UNIT_OPEN = Interval(0.0, 1.0, high_open=True)  # [0, 1)
BOOL = OneOf((False, True))
Bound = Interval | OneOf | tuple


def check_hyperparameter(owner: str, name: str, value: Any, bound: Bound) -> None:
    """Raise ValueError naming the hyperparameter, its value and the valid range."""
    if isinstance(bound, tuple):  # a tuple-valued hyperparameter such as betas
        if not isinstance(value, (tuple, list)) or len(value) != len(bound):
            raise ValueError(f"{owner}: {name} must be a sequence of {len(bound)} numbers, got {value!r}")
        for i, (item, item_bound) in enumerate(zip(value, bound)):
            check_hyperparameter(owner, f"{name}[{i}]", item, item_bound)
    elif value not in bound:
        raise ValueError(f"{owner}: {name} must be {bound}, got {value!r}")


def check_lr(owner: str, value: Any, bound: Bound) -> None:
    """lr: a number, or a one-element floating-point tensor (torch.optim accepts both)."""
    if torch.is_tensor(value):
        if value.numel() != 1 or not value.is_floating_point():
            raise ValueError(f"{owner}: a tensor lr must hold one floating-point number, got shape "
                             f"{tuple(value.shape)} and dtype {value.dtype}")
        value = value.item()
    check_hyperparameter(owner, "lr", value, bound)


def state_dtype(p: torch.Tensor) -> torch.dtype:
    """Precision of optimizer state and update math: at least fp32."""
    return torch.promote_types(p.dtype, torch.float32)


def zeros_state(p: torch.Tensor) -> torch.Tensor:
    """Zeros shaped like p in state precision, contiguous (so matrix views of it share its memory)."""
    return torch.zeros(p.shape, dtype=state_dtype(p), device=p.device)


def with_l2(grad: torch.Tensor, x: torch.Tensor, weight_decay: float) -> torch.Tensor:
    """g + λ·x: L2 weight decay folded into the gradient (a new tensor; grad is left alone)."""
    return grad + weight_decay * x if weight_decay else grad


@contextmanager
def in_state_precision(p: torch.Tensor) -> Iterator[torch.Tensor]:
    """Yield the parameter in state precision (itself when it already is); write back once."""
    x = p.to(state_dtype(p))
    yield x
    if x is not p:
        p.copy_(x)


def _to_state_precision(value: Any, p: torch.Tensor) -> Any:
    """Copy saved state onto p's device, floating tensors in state precision (recursing into containers)."""
    if torch.is_tensor(value):
        dtype = state_dtype(p) if value.is_floating_point() else value.dtype
        return value.to(device=p.device, dtype=dtype, copy=True)
    if isinstance(value, dict):
        return {k: _to_state_precision(v, p) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_state_precision(v, p) for v in value)
    return value


REGISTRY: dict[str, type[Optimizer]] = {}


def get(name: str) -> type[Optimizer]:
    """The optimizer class registered under a lowercase name (ValueError with a suggestion otherwise)."""
    if name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(str(name).lower(), REGISTRY, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown optimizer {name!r}.{hint} Valid names: {', '.join(REGISTRY)}")


TORCH_FLAGS = dict(maximize=BOOL, foreach=OneOf((None, False, True)), fused=OneOf((None, False, True)))


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


class Optimizer(torch.optim.Optimizer):
    """Base class: validated groups, the step loop, fp32 state, a lossless state_dict round trip.

    Subclasses set `name` (their registered name: defining the class registers it for
    optimizers.get), declare `bounds` (hyperparameter name → Interval/OneOf, or a tuple of them for
    a tuple such as betas), say how much state they keep in `count_state(shape, hyperparameters)`,
    and implement either `update_group(group, params)` or the per-parameter pair
    `init_state(state, p, group)` / `update_param(x, grad, state, group)`, where x is the parameter
    in state precision, updated in place, and grad its gradient in the same precision (possibly
    p.grad itself: read it, never write it; `gradient(p, group)` applies `maximize`).
    Every constructor keyword is a hyperparameter stored in each group.
    """
    name: str = ""
    bounds: dict[str, Bound] = {}
    matrices_only = False  # True: every parameter needs >= 2 dimensions (Muon); others go to an Adam group

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in vars(cls):
            if cls.name in REGISTRY:
                raise ValueError(f"two optimizers registered as {cls.name!r}: {REGISTRY[cls.name].__name__} "
                                 f"and {cls.__name__}")
            REGISTRY[cls.name] = cls

    @classmethod
    def hyperparameters(cls, **overrides: Any) -> dict[str, Any]:
        """The constructor's hyperparameters and their defaults, updated with `overrides`; a name the
        constructor does not take is a ValueError naming the optimizer and the names it takes."""
        defaults: dict[str, Any] = {}
        for klass in cls.__mro__:  # a constructor taking **options passes them to its parent's
            if "__init__" not in vars(klass) or not issubclass(klass, Optimizer):
                continue
            parameters = inspect.signature(klass.__init__).parameters.values()
            for p in parameters:
                if p.name not in ("self", "params") and p.kind is not p.VAR_KEYWORD:
                    defaults.setdefault(p.name, p.default)
            if not any(p.kind is p.VAR_KEYWORD for p in parameters):
                break
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise ValueError(f"{cls.__name__} ({cls.name!r}) does not take {', '.join(unknown)}; "
                             f"its hyperparameters: {', '.join(defaults)}")
        return {**defaults, **overrides}

    @classmethod
    def state_numel(cls, shape: tuple[int, ...], **hyperparameters: Any) -> int:
        """How many numbers of optimizer state (in state precision) one parameter of this shape gets,
        with these hyperparameters (the rest at their defaults)."""
        return cls.count_state(tuple(shape), cls.hyperparameters(**hyperparameters))

    @classmethod
    def count_state(cls, shape: tuple[int, ...], hyperparameters: dict[str, Any]) -> int:
        raise NotImplementedError(f"{cls.__name__} does not say how much state it keeps")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            self.check_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()  # a rejected group must not be stepped
            raise

    def check_group(self, group: dict[str, Any]) -> None:
        owner = type(self).__name__
        for name, bound in {**TORCH_FLAGS, **self.bounds}.items():
            if name == "lr":
                check_lr(owner, group[name], bound)
            elif name in group or name not in TORCH_FLAGS:
                check_hyperparameter(owner, name, group[name], bound)

    @staticmethod
    def gradient(p: torch.Tensor, group: dict[str, Any], dtype: torch.dtype | None = None) -> torch.Tensor:
        """p's gradient in dtype (default its own), negated with maximize=True."""
        g = p.grad if dtype is None else p.grad.to(dtype)
        return -g if group.get("maximize") else g

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if params:
                work.append((self._with_number_lr(group), params))
        self.update_groups(work)
        return loss

    def update_groups(self, work: list[tuple[dict[str, Any], list[torch.Tensor]]]) -> None:
        """Update every (group, parameters with a gradient) pair; one group at a time by default."""
        for group, params in work:
            self.update_group(group, params)

    @staticmethod
    def _with_number_lr(group: dict[str, Any]) -> dict[str, Any]:
        """The group itself, or for a tensor lr a shallow copy holding its current value as a number."""
        return {**group, "lr": float(group["lr"])} if torch.is_tensor(group["lr"]) else group

    def update_group(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        for p in params:
            state = self.state[p]
            if not state:
                self.init_state(state, p, group)
            with in_state_precision(p) as x:
                self.update_param(x, self.gradient(p, group, x.dtype), state, group)

    def init_state(self, state: dict, p: torch.Tensor, group: dict[str, Any]) -> None:
        """Fill the empty state of p before its first update (nothing by default)."""

    def update_param(self, x: torch.Tensor, grad: torch.Tensor, state: dict, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict({**state_dict, "state": {}})  # the groups; the state follows
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)  # saved before the hyperparameter existed
            self.check_group(group)
        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        for saved_id, p in zip(saved_ids, params):
            if saved_id in state_dict["state"]:
                self.state[p] = _to_state_precision(state_dict["state"][saved_id], p)
