"""Small simulated example data sets that ship with mixboot (no download).

``reaction``: 18 subjects x 10 days, reaction times with subject-specific
intercepts and slopes.  ``crossed``: 24 plates x 6 samples with crossed random
intercepts.  ``rt``: 40 subjects x 20 items, a two-condition within design.
They were simulated by ``scripts/make_datasets.py``.  ``scores`` is ``reaction``
in the column names of the user guide (score, time, subject) plus a between-
subject 0/1 ``treatment`` given to alternate subjects (it has no true effect).
``cbpp``: contagious bovine pleuropneumonia in 15 herds over 4 periods (Lesnoff
et al. 2004, as in lme4): ``incidence`` new cases of ``size`` animals, for
binomial GLMMs; herd, period and obs are read as text.

Examples
--------
>>> from mixboot import datasets
>>> datasets.load("reaction").shape
(180, 3)
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

__all__ = ["load", "names"]

_FILES = ("reaction", "crossed", "rt", "cbpp")
_TEXT = {"cbpp": {"herd": str, "period": str, "obs": str}}
_NAMES = _FILES + ("scores",)


def names() -> tuple[str, ...]:
    """The names of the built-in data sets, for :func:`load`.

    Examples
    --------
    >>> from mixboot import datasets
    >>> "reaction" in datasets.names()
    True
    """
    return _NAMES


def load(name: str) -> pd.DataFrame:
    """Return the built-in data set ``name`` as a new DataFrame.

    Examples
    --------
    >>> from mixboot import datasets
    >>> df = datasets.load("cbpp")
    >>> list(df.columns)
    ['herd', 'incidence', 'size', 'period', 'obs']
    """
    if name not in _NAMES:
        raise ValueError(f"unknown data set {name!r}; available: {list(_NAMES)}")
    if name == "scores":
        return _scores()
    with resources.files(__name__).joinpath(f"{name}.csv").open("r") as fh:
        return pd.read_csv(fh, dtype=_TEXT.get(name))


def _scores() -> pd.DataFrame:
    df = load("reaction").rename(
        columns={"Reaction": "score", "Days": "time", "Subject": "subject"}
    )
    order = {s: i for i, s in enumerate(sorted(df["subject"].unique()))}
    df["treatment"] = (df["subject"].map(order) % 2).astype(float)
    return df
