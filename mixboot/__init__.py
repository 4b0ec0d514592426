"""mixboot: simulation-based inference for linear mixed models."""
from . import datasets, design
from .formula import FormulaError
from .model import LinearMixedModel, fit
from .optimize import ConvergenceWarning
from .result import LMMResult
from .spec import RankDeficiencyWarning

__version__ = "0.1.0"
