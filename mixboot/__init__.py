"""mixboot: simulation-based inference for linear mixed models.

Fit from lme4 formulas, simulate responses, refit thousands of times
(parametric bootstrap), and turn the replicates into intervals, power and tests.
"""
from . import checks, datasets, design
from .bootstrap import BootResult, bootMer, concat
from .compare import lrt, pb_lrt
from .formula import FormulaError
from .model import LinearMixedModel, fit
from .optimize import ConvergenceWarning
from .parameters import model
from .power import PowerCurve, PowerResult, power, power_curve
from .predict import predict, predict_interval
from .result import LMMResult, SingularFitWarning
from .simulate import simulate
from ._version import __version__
from .spec import RankDeficiencyWarning

__all__ = ["BootResult", "ConvergenceWarning", "FormulaError", "LMMResult", "LinearMixedModel",
           "PowerCurve", "PowerResult",
           "RankDeficiencyWarning", "SingularFitWarning", "bootMer", "checks", "concat", "datasets", "design", "fit", "lrt",
           "model", "pb_lrt", "power", "power_curve", "predict", "predict_interval", "simulate",
           "__version__"]
