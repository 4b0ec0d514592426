"""Type aliases shared by the public signatures (annotations only; no behaviour).

``Seed`` lives in :mod:`mixboot.runner`, next to the code that reads it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy.typing as npt

# Array-like input: a NumPy array, a list or tuple of numbers, a pandas Series.
ArrayLike = npt.ArrayLike
# Values given by name or in order, e.g. beta={"(Intercept)": 250.0, "Days": 10.0}
# or beta=[250.0, 10.0].
Values = Mapping[str, float] | npt.ArrayLike
# A column of the data given by name or as values (weights=, offset=, trials=).
Column = str | npt.ArrayLike
# A file system path.
PathLike = str | os.PathLike[str]
# A dask.distributed.Client (dask is optional, so it is not imported for typing).
Client = Any
# A statistic of a fit: called with an LMMResult or GLMMResult, returns a number,
# sequence, array, Series or dict of numbers.
Statistic = Callable[[Any], Any]
