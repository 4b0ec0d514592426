"""Parametric bootstrap of linear mixed models: results and their merging."""

from .result import BootResult, concat

__all__ = ["BootResult", "concat"]
