"""mixboot: simulation-based inference for linear mixed models.

Fit from lme4 formulas, simulate responses, refit thousands of times
(parametric bootstrap), and turn the replicates into intervals, power and tests.
"""

from . import checks, datasets, design
from ._version import __version__
from .bootstrap import BootResult, bootMer, concat
from .compare import lrt, pb_lrt
from .formula import FormulaError
from .model import LinearMixedModel, fit
from .optimize import ConvergenceWarning
from .parameters import model
from .power import PowerCurve, PowerGrid, PowerResult, power, power_curve, power_grid
from .predict import predict, predict_interval
from .result import LMMResult, SingularFitWarning
from .simulate import simulate
from .spec import RankDeficiencyWarning

__all__ = [
    "BootResult",
    "ConvergenceWarning",
    "FormulaError",
    "LMMResult",
    "LinearMixedModel",
    "PowerCurve",
    "PowerGrid",
    "PowerResult",
    "RankDeficiencyWarning",
    "SingularFitWarning",
    "bootMer",
    "checks",
    "concat",
    "datasets",
    "design",
    "fit",
    "lrt",
    "model",
    "pb_lrt",
    "power",
    "power_curve",
    "power_grid",
    "predict",
    "predict_interval",
    "simulate",
    "__version__",
]
