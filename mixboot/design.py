"""Builders of experimental designs for simulation and power analysis.

A design is a plain :class:`pandas.DataFrame` with one row per observation
and no response column: :func:`crossed` builds subjects-by-items designs,
:func:`nested` builds observations nested in groups, and :func:`extend`
resizes one grouping factor of an existing design, which is what a power
curve over the number of subjects (or items, or groups) needs.

Factor columns are categoricals whose category order is the order the
levels were given in, so treatment contrasts take the first level as the
reference.  Factors whose levels are all numbers stay numeric columns.

Examples
--------
>>> from mixboot import design
>>> d = design.crossed(subjects=2, items=2, within={"cond": ["a", "b"]})
>>> len(d), list(d.columns)
(8, ['subject', 'item', 'cond'])
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

__all__ = ["crossed", "nested", "extend"]

if TYPE_CHECKING:
    from ._typing import ArrayLike

# Factors and their levels, e.g. {"cond": ["a", "b"]}.
Levels = Mapping[str, Sequence[Hashable]]


def crossed(
    *,
    subjects: int,
    items: int,
    within: Levels | None = None,
    between: Levels | None = None,
    item_between: Levels | None = None,
    replicates: int = 1,
    subject: str = "subject",
    item: str = "item",
) -> pd.DataFrame:
    """Fully crossed design: every subject responds to every item.

    Parameters
    ----------
    subjects, items : int
        Numbers of subjects and items (at least 1).  Labels are ``s1``,
        ``s2``, ... and ``i1``, ``i2``, ..., zero-padded to the width of the
        count (``s01`` .. ``s40`` for 40 subjects).
    within : dict of name -> list of levels, optional
        Factors varied within subject and within item: every subject-by-item
        pair is repeated for each combination of their levels.
    between : dict of name -> list of levels, optional
        Between-subject factors.  Subject ``k`` (counting from 0) gets level
        ``k mod L``; with several factors their combinations are dealt out
        the same way, the first factor changing fastest, so the factors are
        crossed rather than confounded.  Groups are equal in size when the
        number of subjects is a multiple of the number of combinations.
    item_between : dict of name -> list of levels, optional
        Between-item factors, assigned to items like ``between``.
    replicates : int
        Observations per subject-by-item-by-within cell.
    subject, item : str
        Names of the two grouping columns.

    Returns
    -------
    pandas.DataFrame
        Columns ``subject, item, *within, *between, *item_between``; one row
        per observation, ordered by subject, then item, then within cell.

    Examples
    --------
    >>> d = crossed(subjects=4, items=2, within={"cond": ["a", "b"]},
    ...             between={"group": ["ctl", "trt"]})
    >>> d.shape
    (16, 4)
    >>> d.head(4)
      subject item cond group
    0      s1   i1    a   ctl
    1      s1   i1    b   ctl
    2      s1   i2    a   ctl
    3      s1   i2    b   ctl
    >>> d.groupby("group", observed=True)["subject"].nunique().tolist()
    [2, 2]
    """
    n_subjects = _check_count(subjects, "subjects")
    n_items = _check_count(items, "items")
    n_replicates = _check_count(replicates, "replicates")
    _check_name(subject, "subject")
    _check_name(item, "item")
    if subject == item:
        raise ValueError(f"subject and item must be different column names, both are {subject!r}")
    taken = {subject: "subject", item: "item"}
    within_checked = _check_factors(within, "within", taken)
    between_checked = _check_factors(between, "between", taken)
    item_between_checked = _check_factors(item_between, "item_between", taken)

    shape = (n_subjects, n_items, *(len(levels) for _, levels in within_checked), n_replicates)
    index = np.unravel_index(np.arange(math.prod(shape)), shape)
    subject_code, item_code = index[0], index[1]

    columns = {
        subject: _factor(_labels("s", n_subjects), subject_code),
        item: _factor(_labels("i", n_items), item_code),
    }
    for (name, levels), code in zip(within_checked, index[2:-1]):
        columns[name] = _factor(levels, code)
    for (name, levels), code in zip(between_checked, _deal(n_subjects, between_checked)):
        columns[name] = _factor(levels, code[subject_code])
    for (name, levels), code in zip(item_between_checked, _deal(n_items, item_between_checked)):
        columns[name] = _factor(levels, code[item_code])
    return pd.DataFrame(columns)


def nested(
    *,
    groups: int,
    per_group: int,
    x: Mapping[str, ArrayLike] | None = None,
    within: Levels | None = None,
    between: Levels | None = None,
    group: str = "group",
) -> pd.DataFrame:
    """Observations nested in groups, optionally with a covariate per position.

    Parameters
    ----------
    groups : int
        Number of groups, labelled ``g1``, ``g2``, ... (zero-padded to the
        width of the count).
    per_group : int
        Observations per group, or per group-by-within cell when ``within``
        is given.
    x : dict of name -> array-like, optional
        Numeric covariates of length ``per_group``; the same values are
        repeated in every group (and every within cell).
    within : dict of name -> list of levels, optional
        Factors varied within group: the ``per_group`` observations are
        repeated for each combination of their levels.
    between : dict of name -> list of levels, optional
        Between-group factors; group ``k`` (counting from 0) gets level
        ``k mod L``, as in :func:`crossed`.
    group : str
        Name of the grouping column.

    Returns
    -------
    pandas.DataFrame
        Columns ``group, *x, *within, *between``, ordered by group, then
        within cell, then position.

    Examples
    --------
    Three groups of ten observations with ``x = 1..10`` in each:

    >>> d = nested(groups=3, per_group=10, x={"x": range(1, 11)})
    >>> d.shape
    (30, 2)
    >>> d.iloc[[0, 1, 9, 10]]
       group   x
    0     g1   1
    1     g1   2
    9     g1  10
    10    g2   1
    """
    n_groups = _check_count(groups, "groups")
    n_obs = _check_count(per_group, "per_group")
    _check_name(group, "group")
    taken = {group: "group"}
    covariates = _check_covariates(x, n_obs, taken)
    within_checked = _check_factors(within, "within", taken)
    between_checked = _check_factors(between, "between", taken)

    shape = (n_groups, *(len(levels) for _, levels in within_checked), n_obs)
    index = np.unravel_index(np.arange(math.prod(shape)), shape)
    group_code, position = index[0], index[-1]

    columns = {group: _factor(_labels("g", n_groups), group_code)}
    for name, values in covariates:
        columns[name] = values[position]
    for (name, levels), code in zip(within_checked, index[1:-1]):
        columns[name] = _factor(levels, code)
    for (name, levels), code in zip(between_checked, _deal(n_groups, between_checked)):
        columns[name] = _factor(levels, code[group_code])
    return pd.DataFrame(columns)


def extend(data: pd.DataFrame, *, along: str, size: int) -> pd.DataFrame:
    """Resize a design to exactly ``size`` levels of the grouping column ``along``.

    Growing appends new levels: new level ``k`` (counting all levels from
    0) is a copy of the rows of old level ``k mod L``, where ``L`` is the
    current number of levels, so every other column -- items, within
    factors and the between factors constant within a level -- is carried
    over, and alternating between-level assignments stay balanced.
    Labels of the form prefix + number continue the numbering (``s41``,
    ``s42``, ...; zero padding widens when the numbers need more digits),
    integer labels continue from the largest, and any other labels get
    ``<along>_new1``, ``<along>_new2``, ...  Shrinking keeps the first
    ``size`` levels (category order for a categorical, order of first
    appearance otherwise).

    Parameters
    ----------
    data : pandas.DataFrame
        A design, e.g. from :func:`crossed` or :func:`nested`.
    along : str
        The grouping column to resize.
    size : int
        Number of levels of ``along`` in the result (at least 1).

    Returns
    -------
    pandas.DataFrame
        A new frame with a fresh ``RangeIndex``; a categorical ``along``
        column stays categorical, with exactly the levels present.

    Examples
    --------
    >>> d = crossed(subjects=4, items=2, between={"group": ["ctl", "trt"]})
    >>> big = extend(d, along="subject", size=6)
    >>> list(big["subject"].cat.categories)
    ['s1', 's2', 's3', 's4', 's5', 's6']
    >>> big.groupby("group", observed=True)["subject"].nunique().tolist()
    [3, 3]
    >>> extend(d, along="subject", size=2)["subject"].nunique()
    2
    """
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    if not isinstance(along, str):
        raise TypeError(f"along must be a column name (str), got {type(along).__name__}")
    if along not in data.columns:
        raise ValueError(
            f"along={along!r} is not a column of data; columns are {list(data.columns)}"
        )
    n_levels = _check_count(size, "size")
    column = data[along]
    if column.isna().any():
        raise ValueError(f"along={along!r}: column has missing values")

    if isinstance(column.dtype, pd.CategoricalDtype):
        old_levels = list(column.cat.categories[np.unique(column.cat.codes)])
    else:
        old_levels = list(pd.unique(column.to_numpy()))
    if not old_levels:
        raise ValueError(f"along={along!r}: data has no rows to extend")
    code = pd.Index(old_levels).get_indexer(column.to_numpy())

    if n_levels <= len(old_levels):
        rows = np.flatnonzero(code < n_levels)
        new_code = code[rows]
        levels = old_levels[:n_levels]
    else:
        added = np.arange(len(old_levels), n_levels)
        # Copying level k mod L keeps any assignment that cycles with a
        # period dividing L (as crossed/nested deal between factors) cycling.
        copied = _rows_of(code, added % len(old_levels))
        rows = np.concatenate([np.arange(len(data)), copied])
        sizes = np.bincount(code, minlength=len(old_levels))[added % len(old_levels)]
        new_code = np.concatenate([code, np.repeat(added, sizes)])
        levels = old_levels + _new_labels(old_levels, len(added), along)

    out = data.iloc[rows].reset_index(drop=True)
    if isinstance(column.dtype, pd.CategoricalDtype):
        out[along] = pd.Categorical.from_codes(
            new_code, categories=levels, ordered=column.cat.ordered
        )
    else:
        out[along] = pd.Series(np.asarray(levels, dtype=object)[new_code].tolist())
    return out


def _rows_of(code, wanted):
    """Row numbers of each level in ``wanted`` in turn, each in data order."""
    order = np.argsort(code, kind="stable")
    sizes = np.bincount(code)
    starts = np.cumsum(sizes) - sizes
    lengths = sizes[wanted]
    # Ragged concatenation of order[starts[w] : starts[w] + sizes[w]] for w in wanted.
    offset = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return order[np.repeat(starts[wanted], lengths) + offset]


def _check_count(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


def _check_name(value, name):
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty str column name, got {value!r}")


def _claim(column, argument, taken):
    """Reserve a column name, refusing one that another argument already uses."""
    _check_name(column, f"{argument} key")
    if column in taken:
        raise ValueError(f"{argument}: column name {column!r} is already used by {taken[column]}")
    taken[column] = argument


def _check_factors(factors, argument, taken) -> list[tuple[str, list[Hashable]]]:
    """Validate a ``{name: levels}`` mapping into a list of (name, levels)."""
    if factors is None:
        return []
    if not isinstance(factors, Mapping):
        raise TypeError(
            f"{argument} must be a dict of name -> levels, got {type(factors).__name__}"
        )
    checked = []
    for name, levels in factors.items():
        _claim(name, argument, taken)
        where = f"{argument}[{name!r}]"
        # A bare string is iterable, but "ab" meaning levels "a", "b" is
        # almost always a mistake for ["ab"] or ["a", "b"].
        if isinstance(levels, (str, bytes, Mapping)) or not isinstance(levels, Iterable):
            raise TypeError(f"{where} must be a list of levels, got {type(levels).__name__}")
        levels = list(levels)
        if not levels:
            raise ValueError(f"{where} must have at least one level")
        if not all(isinstance(level, Hashable) for level in levels):
            raise TypeError(f"{where} levels must be hashable scalars")
        if any(pd.isna(level) for level in levels):
            raise ValueError(f"{where} has a missing level")
        if len(set(levels)) != len(levels):
            raise ValueError(f"{where} has duplicate levels: {levels}")
        checked.append((name, levels))
    return checked


def _check_covariates(x, n_obs, taken):
    if x is None:
        return []
    if not isinstance(x, Mapping):
        raise TypeError(f"x must be a dict of name -> values, got {type(x).__name__}")
    checked = []
    for name, values in x.items():
        _claim(name, "x", taken)
        values = np.asarray(values)
        if values.ndim != 1 or values.dtype.kind not in "iuf":
            raise TypeError(f"x[{name!r}] must be a 1-d array of numbers")
        if len(values) != n_obs:
            raise ValueError(f"x[{name!r}] has {len(values)} values, per_group is {n_obs}")
        checked.append((name, values))
    return checked


def _labels(prefix, count):
    width = len(str(count))
    return [f"{prefix}{k:0{width}d}" for k in range(1, count + 1)]


def _is_number(level):
    return isinstance(level, numbers.Real) and not isinstance(level, (bool, np.bool_))


def _factor(levels, code):
    """Column holding ``levels[code]``: numeric if every level is a number."""
    if all(_is_number(level) for level in levels):
        return np.asarray(levels)[code]
    return pd.Categorical.from_codes(code, categories=levels)


def _deal(n_units, factors):
    """Per-unit level codes for between factors, dealt out in turn.

    The factors' combinations are numbered with the first factor changing
    fastest, and unit k gets combination k mod (number of combinations).
    """
    unit = np.arange(n_units)
    codes, stride = [], 1
    for _, levels in factors:
        codes.append(unit // stride % len(levels))
        stride *= len(levels)
    return codes


_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def _new_labels(old, count, along):
    """Labels for ``count`` new levels that continue the pattern of ``old``."""
    if all(
        isinstance(label, numbers.Integral) and not isinstance(label, (bool, np.bool_))
        for label in old
    ):
        start = max(old) + 1
        return [start + k for k in range(count)]
    matches = [_NUMBERED.match(label) if isinstance(label, str) else None for label in old]
    if all(matches) and len({m.group(1) for m in matches}) == 1:
        prefix = matches[0].group(1)
        width = max(len(m.group(2)) for m in matches)
        start = max(int(m.group(2)) for m in matches) + 1
        return [f"{prefix}{n:0{width}d}" for n in range(start, start + count)]
    labels, existing, k = [], {str(label) for label in old}, 0
    while len(labels) < count:
        k += 1
        label = f"{along}_new{k}"
        if label not in existing:
            labels.append(label)
    return labels
