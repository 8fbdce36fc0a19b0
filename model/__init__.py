"""Pure-numpy fully-connected nets in the cs231n assignment-2 style.

Imports nothing but numpy. Public surface: :class:`FullyConnectedNet`,
:class:`Solver`, :class:`TrainingDiverged` and the modules ``layers``,
``optim``, ``gradcheck``, ``net``, ``solver``, ``augment``.
"""

from model import augment, gradcheck, layers, net, optim, solver
from model.net import FullyConnectedNet
from model.solver import Solver, TrainingDiverged

__all__ = [
    "FullyConnectedNet",
    "Solver",
    "TrainingDiverged",
    "augment",
    "gradcheck",
    "layers",
    "net",
    "optim",
    "solver",
]
