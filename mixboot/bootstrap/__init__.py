"""Parametric bootstrap of linear mixed models: the engine, its results and their merging."""

from .engine import bootMer
from .result import BootResult, concat

__all__ = ["BootResult", "bootMer", "concat"]
