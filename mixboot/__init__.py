"""mixboot: simulation-based inference for linear mixed models.

Fit from lme4 formulas, simulate responses, refit thousands of times
(parametric bootstrap), and turn the replicates into intervals, power and tests.
"""
from . import datasets, design
from .bootstrap import BootResult, bootMer, concat
from .formula import FormulaError
from .model import LinearMixedModel, fit
from .optimize import ConvergenceWarning
from .result import LMMResult
from .simulate import simulate
from .spec import RankDeficiencyWarning

__version__ = "0.1.0"

__all__ = ["BootResult", "ConvergenceWarning", "FormulaError", "LMMResult", "LinearMixedModel",
           "RankDeficiencyWarning", "bootMer", "concat", "datasets", "design", "fit", "simulate",
           "__version__"]
