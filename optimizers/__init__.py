"""The lecture's optimizer family as torch.optim optimizers, and `get(name)` for configs.

Every class subclasses torch.optim.Optimizer; where torch.optim has the method, names and defaults
of hyperparameters follow it. Each class carries its registered name (`cls.name`), its
hyperparameters and defaults (`cls.hyperparameters()`) and the state it keeps per parameter
(`cls.state_numel(shape, **hyperparameters)`); defining the class registers it, so adding an
optimizer is its module, its reference test and one import line below. See optimizers/README.md.
"""
from __future__ import annotations

from .base import REGISTRY, Optimizer, get
# each import below defines, and so registers, its optimizers (re-exported through __all__)
from .sgd import SGD  # noqa: F401
from .adagrad import Adagrad  # noqa: F401
from .rmsprop import RMSprop  # noqa: F401
from .adadelta import Adadelta  # noqa: F401
from .adam import Adam, AdamW  # noqa: F401
from .naggs import NAGGS  # noqa: F401
from .shampoo import Shampoo  # noqa: F401
from .muon import POLAR_EXPRESS, Muon, NorMuon, split_muon_params  # noqa: F401
from .schedule_free import ScheduleFreeAdamW  # noqa: F401

NAMES: dict[str, type[Optimizer]] = REGISTRY  # registered name → class, in import order
__all__ = [cls.__name__ for cls in NAMES.values()] + ["Optimizer", "split_muon_params", "POLAR_EXPRESS", "get",
                                                      "NAMES"]

