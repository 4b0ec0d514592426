"""The immutable result of a parametric bootstrap, its file format and merging.

A :class:`BootResult` holds the replicate statistics, the per-replicate
parameter table and fit diagnostics, the failures, and the metadata needed
to reproduce or extend the run (seed entropy and per-replicate spawn keys).
Only the replicates are required; every other field has a default, so
replicates from any source can use the interval and summary machinery:

>>> import numpy as np
>>> bare = BootResult(np.arange(1.0, 101.0))
>>> bare.names, bare.estimates.shape
(('p0',), (100, 1))
>>> bare.ci("perc", 0.9)
array([[ 5.95, 95.05]])

A full result, as :func:`~mixboot.bootstrap.bootMer` builds it:

>>> import numpy as np, pandas as pd
>>> B = 3
>>> res = BootResult(
...     estimates=np.array([[1.0], [2.0], [3.0]]),
...     names=("beta",),
...     estimate=np.array([2.0]),
...     tbl=pd.DataFrame({"beta": [1.0, 2.0, 3.0]}),
...     diagnostics=pd.DataFrame({
...         "replicate": range(B), "converged": [True] * B,
...         "singular": [False, True, False], "evaluations": [10] * B,
...         "objective": [5.0, 6.0, 7.0], "error": [None] * B}),
...     failures=pd.DataFrame(columns=["replicate", "stage", "message"]),
...     meta={"fingerprint": "abc", "seed_entropy": 42,
...           "spawn_keys": [[0], [1], [2]], "version": "0.1.0",
...           "formula": "y ~ 1 + (1|g)", "REML": False, "tol": None,
...           "use_u": False},
... )
>>> res
BootResult(B=3, p=1, formula='y ~ 1 + (1|g)', failed=0, singular=1, nonconverged=0)
>>> res.ci("perc", 0.5)
array([[1.5, 2.5]])
>>> concat([res, res])
Traceback (most recent call last):
...
ValueError: parts share replicate(s): seed_entropy=42, spawn_key=[0] occurs in part 0 and part 1
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import numbers
import os
import secrets
import stat
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import _html
from .._version import __version__
from ..intervals import bootstrap_interval

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .._typing import PathLike

__all__ = ["BootResult", "concat"]

DIAGNOSTIC_COLUMNS = ("replicate", "converged", "singular", "evaluations", "objective", "error")
#: Optional diagnostics columns with a fixed meaning (and dtype) when present.
#: ``stat_nan``: how many values of the replicate's statistic are NaN.
OPTIONAL_DIAGNOSTIC_COLUMNS = ("stat_nan",)
FAILURE_COLUMNS = ("replicate", "stage", "message")
FAILURE_STAGES = ("simulate", "refit", "statistic")
REQUIRED_META = (
    "fingerprint",
    "seed_entropy",
    "spawn_keys",
    "version",
    "formula",
    "REML",
    "tol",
    "use_u",
)

_FILE_KEY = b"mixboot"
_DIGEST_KEY = b"mixboot.sha256"
_FILE_FORMAT = "mixboot.BootResult"
# 2: SHA-256 content digest under _DIGEST_KEY, typed diag:stat_nan.
# 1: no digest; still readable.
_FILE_VERSION = 2
# dtypes of the diagnostics columns with a fixed meaning (file and memory)
_DIAG_DTYPES = {
    "replicate": np.int64,
    "converged": bool,
    "singular": bool,
    "evaluations": np.int64,
    "objective": np.float64,
    "stat_nan": np.int64,
}
# interval methods of mixboot.intervals.bootstrap_interval that use `estimate`
_NEEDS_ESTIMATE = ("basic", "norm")


# --------------------------------------------------------------------------
# normalisation helpers: every field is brought to one canonical form so that
# equality, saving and loading never depend on how the caller built it.
# --------------------------------------------------------------------------


def _json_default(obj):
    # numpy scalars and arrays sneak into metadata (SeedSequence attributes,
    # np.float64 tolerances); store them as their plain Python equivalents.
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (np.ndarray, tuple)):
        return obj.tolist() if isinstance(obj, np.ndarray) else list(obj)
    raise TypeError(f"value {obj!r} of type {type(obj).__name__} is not JSON-serialisable")


def _canonical_meta(meta) -> dict:
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    try:
        # A JSON round trip gives a deep copy in exactly the form load() sees.
        return json.loads(json.dumps(meta, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta must be JSON-serialisable: {exc}") from None


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_meta(meta: dict, B: int) -> None:
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"meta is missing required key(s) {missing}")
    if not isinstance(meta["fingerprint"], str):
        raise ValueError("meta['fingerprint'] must be a str")
    if meta["seed_entropy"] is not None and not _is_int(meta["seed_entropy"]):
        raise ValueError("meta['seed_entropy'] must be an int or None")
    keys = meta["spawn_keys"]
    if not isinstance(keys, list) or len(keys) != B:
        raise ValueError(
            f"meta['spawn_keys'] must be a list with one spawn key per replicate (B={B})"
        )
    for key in keys:
        if not isinstance(key, list) or not all(_is_int(i) for i in key):
            raise ValueError(f"meta['spawn_keys'] entries must be lists of int, got {key!r}")
    if not isinstance(meta["version"], str):
        raise ValueError("meta['version'] must be a str")
    if not isinstance(meta["formula"], str):
        raise ValueError("meta['formula'] must be a str")
    if not isinstance(meta["REML"], bool):
        raise ValueError("meta['REML'] must be a bool")
    tol = meta["tol"]
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, numbers.Real)):
        raise ValueError("meta['tol'] must be a float or None")
    if not isinstance(meta["use_u"], bool):
        raise ValueError("meta['use_u'] must be a bool")
    if "seed_entropies" in meta:
        ents = meta["seed_entropies"]
        if not isinstance(ents, list) or len(ents) != B:
            raise ValueError(
                f"meta['seed_entropies'] must be a list with one entry per replicate (B={B})"
            )
        if not all(e is None or _is_int(e) for e in ents):
            raise ValueError("meta['seed_entropies'] entries must be int or None")


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


def _frame(df, field: str, required=()) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{field} must be a pandas DataFrame, got {type(df).__name__}")
    cols = list(df.columns)
    if not all(isinstance(c, str) for c in cols):
        raise ValueError(f"{field} column names must be str, got {cols!r}")
    if len(set(cols)) != len(cols):
        raise ValueError(f"{field} has duplicate column names: {cols!r}")
    missing = [c for c in required if c not in cols]
    if missing:
        raise ValueError(f"{field} is missing column(s) {missing}")
    # Row labels carry no information here; a RangeIndex keeps equality and
    # the file format independent of how the caller built the frame.
    return df.reset_index(drop=True).copy()


def _coerce(df: pd.DataFrame, field: str, col: str, dtype) -> None:
    try:
        values = df[col].to_numpy()
        if dtype is bool and values.dtype != bool:
            # bool("False") is True: accept only genuine booleans or 0/1
            ok = all(
                isinstance(v, (bool, np.bool_)) or (_is_int(v) and v in (0, 1)) for v in values
            )
            if not ok:
                raise ValueError("values must be True/False")
            values = np.array([bool(v) for v in values], dtype=bool)
        if dtype is np.int64 and values.dtype.kind == "f":
            if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
                raise ValueError("non-integer values")
        df[col] = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{field}[{col!r}] cannot be stored as {np.dtype(dtype).name}: {exc}"
        ) from None


def _object_column(values, optional: bool) -> pd.Series:
    # pandas >= 3 would infer its "str" dtype; an explicit object dtype keeps
    # None for "no error" and behaves the same on every pandas version.
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        missing = v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))
        out[i] = None if (optional and missing) else str(v)
    return pd.Series(out, dtype=object)


# --------------------------------------------------------------------------
# defaults for a result built from bare replicates
# --------------------------------------------------------------------------


def _default_diagnostics(B: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "replicate": np.arange(B, dtype=np.int64),
            "converged": np.ones(B, dtype=bool),
            "singular": np.zeros(B, dtype=bool),
            "evaluations": np.zeros(B, dtype=np.int64),
            "objective": np.full(B, np.nan),
            "error": pd.Series([None] * B, dtype=object),
        }
    )


def _default_failures() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "replicate": np.array([], dtype=np.int64),
            "stage": pd.Series([], dtype=object),
            "message": pd.Series([], dtype=object),
        }
    )


def _default_meta(B: int) -> dict:
    # seed_entropy None: replicates of unknown origin are never reported as
    # duplicates by concat().
    return {
        "fingerprint": "",
        "seed_entropy": None,
        "spawn_keys": [[i] for i in range(B)],
        "version": __version__,
        "formula": "",
        "REML": False,
        "tol": None,
        "use_u": False,
    }


# --------------------------------------------------------------------------
# the result object
# --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BootResult:
    """Replicates of a parametric bootstrap plus everything needed to use them.

    Fields are validated and normalised on construction: arrays become
    read-only float64, DataFrames are copied onto a ``RangeIndex`` with
    canonical dtypes, and ``meta`` is deep-copied through JSON.  The
    DataFrames and ``meta`` are still Python-mutable objects; treat them as
    read-only.

    Equality (``==``) is exact: arrays bit for bit (NaNs in the same places),
    DataFrames by :meth:`pandas.DataFrame.equals`, ``meta`` by value.

    Only ``estimates`` is required; a 1-D array is ``B`` replicates of one
    statistic.  The defaults are: ``names`` ``("p0", "p1", ...)``;
    ``estimate`` all NaN, meaning "no original estimate" (then ``"basic"``
    and ``"norm"`` intervals and :meth:`bias` raise); ``tbl`` the estimates
    under their names; ``diagnostics`` converged, non-singular replicates
    ``0..B-1`` without evaluations, objective or error; no ``failures``;
    ``meta`` empty fingerprint and formula, ``seed_entropy=None``,
    ``spawn_keys`` ``[[0], [1], ...]`` and this mixboot's version.

    ``diagnostics`` may hold a ``"stat_nan"`` column: per replicate, how many
    values of its statistic are NaN (a non-negative int).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> r = BootResult(
    ...     estimates=np.array([[1.0, 0.1], [3.0, 0.3]]), names=("a", "b"),
    ...     estimate=np.array([2.0, 0.2]),
    ...     tbl=pd.DataFrame({"a": [1.0, 3.0]}),
    ...     diagnostics=pd.DataFrame({"replicate": [1, 2], "converged": True,
    ...         "singular": False, "evaluations": 7, "objective": 1.0,
    ...         "error": None}),
    ...     failures=pd.DataFrame(columns=["replicate", "stage", "message"]),
    ...     meta={"fingerprint": "f", "seed_entropy": 1, "spawn_keys": [[0], [1]],
    ...           "version": "0", "formula": "y ~ x", "REML": True, "tol": 1e-8,
    ...           "use_u": False})
    >>> r.B, r.se().round(3).tolist(), r.bias().round(12).tolist()
    (2, [1.414, 0.141], [0.0, 0.0])
    """

    estimates: np.ndarray
    names: tuple | None = None
    estimate: np.ndarray | None = None
    tbl: pd.DataFrame | None = None
    diagnostics: pd.DataFrame | None = None
    failures: pd.DataFrame | None = None
    meta: dict | None = None

    def __post_init__(self):
        set_ = object.__setattr__  # the dataclass is frozen; normalise once here

        est = np.array(self.estimates, dtype=np.float64, copy=True)
        if est.ndim == 1:
            est = est.reshape(-1, 1)  # B replicates of a single statistic
        if est.ndim != 2:
            raise ValueError(
                f"estimates must be a 1-D (B,) or 2-D (B, p) array, got shape {est.shape}"
            )
        B, p = est.shape
        set_(self, "estimates", _readonly(est))

        if self.names is None:
            set_(self, "names", tuple(f"p{j}" for j in range(p)))
        if isinstance(self.names, str):
            raise TypeError("names must be a sequence of str, not a single str")
        names = tuple(self.names)
        if not all(isinstance(n, str) for n in names):
            raise TypeError(f"names must contain only str, got {names!r}")
        if len(names) != p:
            raise ValueError(f"names has {len(names)} entries but estimates has p={p} columns")
        if len(set(names)) != len(names):
            raise ValueError(f"names must be unique, got {names!r}")
        set_(self, "names", names)

        # The defaults are built from the validated estimates and names, and
        # then pass through the same validation as caller-supplied fields.
        if self.estimate is None:
            set_(self, "estimate", np.full(p, np.nan))
        if self.tbl is None:
            set_(self, "tbl", pd.DataFrame(est, columns=list(names)))
        if self.diagnostics is None:
            set_(self, "diagnostics", _default_diagnostics(B))
        if self.failures is None:
            set_(self, "failures", _default_failures())
        if self.meta is None:
            set_(self, "meta", _default_meta(B))

        theta = np.array(self.estimate, dtype=np.float64, copy=True).reshape(-1)
        if theta.shape != (p,):
            raise ValueError(
                f"estimate must have length p={p}, got shape {np.shape(self.estimate)}"
            )
        set_(self, "estimate", _readonly(theta))

        tbl = _frame(self.tbl, "tbl")
        if len(tbl) != B:
            raise ValueError(f"tbl has {len(tbl)} rows but estimates has B={B} rows")
        for col in tbl.columns:
            _coerce(tbl, "tbl", col, np.float64)
        set_(self, "tbl", tbl)

        diag = _frame(self.diagnostics, "diagnostics", DIAGNOSTIC_COLUMNS)
        if len(diag) != B:
            raise ValueError(f"diagnostics has {len(diag)} rows but estimates has B={B} rows")
        _coerce(diag, "diagnostics", "replicate", np.int64)
        _coerce(diag, "diagnostics", "converged", bool)
        _coerce(diag, "diagnostics", "singular", bool)
        _coerce(diag, "diagnostics", "evaluations", np.int64)
        _coerce(diag, "diagnostics", "objective", np.float64)
        diag["error"] = _object_column(diag["error"].to_numpy(), optional=True)
        if "stat_nan" in diag.columns:
            if diag["stat_nan"].dtype == bool:
                raise ValueError("diagnostics['stat_nan'] must count NaN values (int), got bool")
            _coerce(diag, "diagnostics", "stat_nan", np.int64)
            if (diag["stat_nan"] < 0).any():
                raise ValueError("diagnostics['stat_nan'] must be non-negative")
        if diag["replicate"].duplicated().any():
            raise ValueError("diagnostics['replicate'] must be unique")
        set_(self, "diagnostics", diag)

        fail = _frame(self.failures, "failures", FAILURE_COLUMNS)
        _coerce(fail, "failures", "replicate", np.int64)
        fail["stage"] = _object_column(fail["stage"].to_numpy(), optional=False)
        fail["message"] = _object_column(fail["message"].to_numpy(), optional=False)
        bad = sorted(set(fail["stage"]) - set(FAILURE_STAGES))
        if bad:
            raise ValueError(f"failures['stage'] must be one of {FAILURE_STAGES}, got {bad}")
        unknown = sorted(set(fail["replicate"]) - set(diag["replicate"]))
        if unknown:
            raise ValueError(f"failures refers to replicate(s) {unknown} absent from diagnostics")
        set_(self, "failures", fail)

        meta = _canonical_meta(self.meta)
        _check_meta(meta, B)
        set_(self, "meta", meta)

    # -- equality ----------------------------------------------------------

    def __eq__(self, other):
        if not isinstance(other, BootResult):
            return NotImplemented
        return (
            self.names == other.names
            and _same_bits(self.estimates, other.estimates)
            and _same_bits(self.estimate, other.estimate)
            and self.tbl.equals(other.tbl)
            and list(self.tbl.columns) == list(other.tbl.columns)
            and self.diagnostics.equals(other.diagnostics)
            and list(self.diagnostics.columns) == list(other.diagnostics.columns)
            and self.failures.equals(other.failures)
            and self.meta == other.meta
        )

    __hash__ = None  # holds mutable DataFrames

    # -- counts ------------------------------------------------------------

    @property
    def B(self) -> int:
        """Number of replicates (including failed ones)."""
        return self.estimates.shape[0]

    @property
    def p(self) -> int:
        """Number of statistics per replicate."""
        return self.estimates.shape[1]

    def issingular(self) -> np.ndarray:
        """Boolean ``(B,)`` array: was the replicate's refit singular?"""
        return self.diagnostics["singular"].to_numpy(dtype=bool, copy=True)

    def _failed(self) -> np.ndarray:
        """Boolean ``(B,)``: a recorded failure or a diagnostics error."""
        listed = self.diagnostics["replicate"].isin(self.failures["replicate"]).to_numpy()
        return listed | self.diagnostics["error"].notna().to_numpy()

    def _stat_nan(self) -> np.ndarray:
        """Per replicate, the number of NaN statistic values (0 for failures
        when derived: their NaN rows mean "failed", not "NaN statistic")."""
        if "stat_nan" in self.diagnostics.columns:
            return self.diagnostics["stat_nan"].to_numpy(dtype=np.int64, copy=True)
        counts = np.isnan(self.estimates).sum(axis=1).astype(np.int64)
        counts[self._failed()] = 0
        return counts

    @property
    def n_failed(self) -> int:
        """Replicates with at least one recorded failure or a diagnostics error."""
        return int(self._failed().sum())

    @property
    def n_stat_nan(self) -> int:
        """Replicates whose statistic has a NaN value.

        Counted from ``diagnostics["stat_nan"]`` when present, otherwise from
        NaNs in :attr:`estimates` of the replicates that did not fail.
        """
        return int((self._stat_nan() > 0).sum())

    @property
    def has_estimate(self) -> bool:
        """Whether the original estimate is known (not all NaN)."""
        return self.p == 0 or not bool(np.isnan(self.estimate).all())

    def _require_estimate(self, what: str) -> None:
        if not self.has_estimate:
            raise ValueError(
                f"this BootResult has no original estimate (estimate is all NaN), which {what} "
                "needs; pass estimate= when constructing it"
            )

    @property
    def n_singular(self) -> int:
        """Replicates whose refit was singular."""
        return int(self.issingular().sum())

    @property
    def n_nonconverged(self) -> int:
        """Replicates whose optimiser did not report convergence."""
        return int((~self.diagnostics["converged"].to_numpy(dtype=bool)).sum())

    # -- inference ---------------------------------------------------------

    def ci(self, method: str = "perc", level: float = 0.95) -> np.ndarray:
        """``(p, 2)`` array of interval bounds over ``estimates``; see :mod:`mixboot.intervals`.

        ``"basic"`` and ``"norm"`` need the original estimate and raise
        ``ValueError`` when the result has none.
        """
        _refuse_bca(method)
        if isinstance(method, str) and method in _NEEDS_ESTIMATE:
            self._require_estimate(f"method={method!r}")
        return bootstrap_interval(
            self.estimates, method=method, level=level, estimate=self.estimate
        )

    def confint(
        self, method: str = "perc", level: float = 0.95, *, theta: bool = False
    ) -> pd.DataFrame:
        """Intervals as a DataFrame with ``lower``/``upper``, on the scale people report.

        For a bootstrap with the default statistic the rows are those of lme4's
        ``confint(oldNames = FALSE)``: each random-effect SD and correlation
        (``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``, ...), then
        ``sigma`` and the fixed effects; ``theta=True`` adds the relative
        covariance factors (``theta_...``).  Otherwise (a custom statistic, a
        result built from bare replicates) the rows are ``names``.
        """
        if "reported" not in self.meta:
            bounds = self.ci(method, level)
            return pd.DataFrame(
                {"lower": bounds[:, 0], "upper": bounds[:, 1]},
                index=pd.Index(self.names, name="statistic"),
            )
        _refuse_bca(method)
        samples = self.reported(theta=theta)
        estimate = self.reported_estimate(theta=theta)
        bounds = bootstrap_interval(
            samples.to_numpy(), method=method, level=level, estimate=estimate.to_numpy()
        )
        return pd.DataFrame(
            {"lower": bounds[:, 0], "upper": bounds[:, 1]},
            index=pd.Index(samples.columns, name="parameter"),
        )

    def reported(self, *, theta: bool = False) -> pd.DataFrame:
        """Replicates on the reported scale (the rows of :meth:`confint`), one column each.

        Failed replicates are NaN.  Without the default statistic: ``estimates``.
        """
        rep = self.meta.get("reported")
        if rep is None:
            return pd.DataFrame(self.estimates, columns=list(self.names))
        frame = pd.DataFrame(
            {n: self.tbl[c].to_numpy() for n, c in zip(rep["names"], rep["columns"])}
        )
        if theta:
            for j, n in enumerate(self.names):
                if n in rep["theta"]:
                    frame[f"theta_{n}"] = self.estimates[:, j]
        frame.loc[self.diagnostics["error"].notna().to_numpy()] = np.nan
        return frame

    def reported_estimate(self, *, theta: bool = False) -> pd.Series:
        """The original fit's values of :meth:`reported`'s columns."""
        rep = self.meta.get("reported")
        if rep is None:
            return pd.Series(self.estimate, index=list(self.names), name="estimate")
        values = {n: float.fromhex(x) for n, x in zip(rep["names"], rep["estimate"])}
        if theta:
            values.update(
                {
                    f"theta_{n}": self.estimate[j]
                    for j, n in enumerate(self.names)
                    if n in rep["theta"]
                }
            )
        return pd.Series(values, name="estimate")

    def se(self) -> pd.Series:
        """Bootstrap standard errors (``ddof=1``, NaN replicates ignored)."""
        with warnings.catch_warnings():
            # fewer than two usable replicates legitimately gives NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            values = np.nanstd(self.estimates, axis=0, ddof=1)
        return pd.Series(values, index=pd.Index(self.names, name="statistic"), name="se")

    def bias(self) -> pd.Series:
        """Bootstrap bias: replicate mean minus original estimate.

        Raises ``ValueError`` when the result has no original estimate.
        """
        self._require_estimate("bias()")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            values = np.nanmean(self.estimates, axis=0) - self.estimate
        return pd.Series(values, index=pd.Index(self.names, name="statistic"), name="bias")

    # -- plots (matplotlib, imported when called: pip install 'mixboot[plot]') ----

    def plot(
        self,
        kind: str = "hist",
        params: str | Sequence[str] | None = None,
        level: float = 0.95,
        method: str = "perc",
        ax: Axes | Sequence[Axes] | None = None,
    ) -> Axes | Figure:
        """Distribution of the replicates, one panel per parameter, with estimate and interval.

        Parameters
        ----------
        kind : {"hist", "density", "ridge"}
            ``"hist"``/``"density"``: a histogram or kernel density per parameter, the
            original estimate as a solid vertical line and the :meth:`confint` bounds
            as dashed lines over a shaded span.  ``"ridge"``: :meth:`ridgeplot` (its
            default parameters are the fixed effects).
        params : str or list of str, optional
            Names as :meth:`reported` gives them (``"sd_(Intercept)|Subject"``,
            ``"sigma"``, ``"Days"``; ``"theta_..."`` too).  Default: every reported
            parameter.
        level, method
            The interval, as :meth:`confint` computes it.
        ax : matplotlib Axes, or a sequence of one Axes per parameter, optional
            Where to draw; by default a new figure with a grid of panels.

        Returns
        -------
        matplotlib Axes when one panel is drawn, else the Figure holding the panels.

        Examples
        --------
        >>> import mixboot as mb
        >>> fit = mb.fit("Reaction ~ 1 + Days + (1 + Days | Subject)",
        ...              data=mb.datasets.load("reaction"), REML=False)
        >>> boot = mb.bootMer(fit, B=50, seed=1)
        >>> fig = boot.plot(kind="density")
        >>> len(fig.axes)
        6
        >>> boot.plot(params="sigma").get_xlabel()
        'sigma'
        """
        from ..plots import boot_panels

        return boot_panels(self, kind=kind, params=params, level=level, method=method, ax=ax)

    def ridgeplot(
        self,
        params: str | Sequence[str] | None = None,
        include_intercept: bool = True,
        level: float = 0.95,
        method: str = "shortest",
        ax: Axes | None = None,
    ) -> Axes:
        """Densities of several parameters stacked on one value axis, as MixedModelsMakie's
        ``ridgeplot``: each with its estimate (a dot) and interval (a thick line).

        Parameters
        ----------
        params : str or list of str, optional
            Names as :meth:`reported` gives them; default the fixed effects.
        include_intercept : bool
            ``False`` leaves ``(Intercept)`` out (its scale often dwarfs the slopes').
        level, method
            The interval, as :meth:`confint` computes it (default the shortest interval).
        ax : matplotlib Axes, optional

        Returns
        -------
        matplotlib Axes
            One density per parameter, the first on top.

        Examples
        --------
        >>> import numpy as np
        >>> draws = np.random.default_rng(1).normal([250.0, 10.0], [5.0, 1.5], size=(200, 2))
        >>> boot = BootResult(draws, names=("(Intercept)", "Days"), estimate=[250.0, 10.0])
        >>> ax = boot.ridgeplot(include_intercept=False)
        >>> [t.get_text() for t in ax.get_yticklabels()]
        ['Days']
        """
        from ..plots import ridge

        return ridge(
            self,
            params=params,
            include_intercept=include_intercept,
            level=level,
            method=method,
            ax=ax,
        )

    def pairplot(self, x: str, y: str, ax: Axes | None = None) -> Axes:
        """Scatter of two parameters' replicates, singular refits in another colour and marker.

        Shows boundary pile-ups: an SD at 0 or a correlation at +-1 against another
        parameter.  Failed replicates are left out; the estimate is a star.

        Parameters
        ----------
        x, y : str
            Names as :meth:`reported` gives them, e.g. ``"sd_Days|Subject"`` and
            ``"cor_Days.(Intercept)|Subject"``.
        ax : matplotlib Axes, optional

        Returns
        -------
        matplotlib Axes
            With a legend that counts the singular and non-singular replicates.

        Examples
        --------
        >>> import mixboot as mb
        >>> fit = mb.fit("Reaction ~ 1 + Days + (1 + Days | Subject)",
        ...              data=mb.datasets.load("reaction"), REML=False)
        >>> boot = mb.bootMer(fit, B=50, seed=1)
        >>> ax = boot.pairplot("sd_Days|Subject", "cor_Days.(Intercept)|Subject")
        >>> ax.get_xlabel()
        'sd_Days|Subject'
        """
        from ..plots import pairs

        return pairs(self, x, y, ax=ax)

    # -- display -----------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"BootResult(B={self.B}, p={self.p}, formula={self.meta['formula']!r}, "
            f"failed={self.n_failed}, singular={self.n_singular}, "
            f"nonconverged={self.n_nonconverged})"
        )

    def summary(self, level: float = 0.95) -> str:
        """Table of estimate, bias, std. error and percentile/shortest bounds.

        Estimate and bias are left out when the result has no original
        estimate.
        """
        perc = self.ci("perc", level)
        short = self.ci("shortest", level)
        columns = {}
        if self.has_estimate:
            columns["estimate"] = self.estimate
            columns["bias"] = self.bias().to_numpy()
        columns.update(
            {
                "std. error": self.se().to_numpy(),
                "perc lower": perc[:, 0],
                "perc upper": perc[:, 1],
                "shortest lower": short[:, 0],
                "shortest upper": short[:, 1],
            }
        )
        table = pd.DataFrame(columns, index=list(self.names))
        pct = f"{100 * level:g}%"
        formula = self.meta["formula"]
        what = f" of {formula} (REML={self.meta['REML']})" if formula else ""
        lines = [
            f"Parametric bootstrap: {self.B} replicates{what}, {pct} intervals",
            table.to_string(float_format=lambda x: f"{x:.6g}"),
            f"failed: {self.n_failed}, singular: {self.n_singular}, "
            f"non-converged: {self.n_nonconverged} (of {self.B} replicates)",
        ]
        n_nan = self.n_stat_nan
        if n_nan:
            lines.append(f"statistic NaN in {n_nan} replicates")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return _html.boot(self)

    # -- persistence -------------------------------------------------------

    def save(self, path: PathLike) -> None:
        """Write the result to one Parquet file (see :meth:`load`).

        Per-replicate columns are ``stat:<name>``, ``tbl:<col>`` and
        ``diag:<col>``; the rest lives as JSON under the schema metadata key
        ``b"mixboot"``, and a SHA-256 digest of the content under
        ``b"mixboot.sha256"``.

        The write is atomic: the file is written to ``<path>.tmp-<random>`` in
        the same directory, synced to disk and renamed onto ``path``.  If
        anything fails (or is interrupted) the temporary file is removed and
        an existing file at ``path`` is left as it was.
        """
        path = os.fspath(path)
        # Fail before building anything when the file cannot be created.
        directory = _writable_directory(path)
        import pyarrow.parquet as pq

        table = self._to_arrow()
        options = (
            {"write_page_checksum": True}
            if _supports(pq.write_table, "write_page_checksum")
            else {}
        )
        tmp, fh = _create_temp(path)
        try:
            with fh:
                try:
                    # a plain overwrite would keep the permissions; so do we
                    os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
                except OSError:
                    pass  # no file there yet (or not ours to inspect)
                pq.write_table(table, fh, **options)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_directory(directory)  # makes the rename itself durable

    def _to_arrow(self):
        """The Arrow table written by :meth:`save`, header and digest included."""
        import pyarrow as pa

        columns = {}
        for j, name in enumerate(self.names):
            columns[f"stat:{name}"] = pa.array(self.estimates[:, j], type=pa.float64())
        for col in self.tbl.columns:
            columns[f"tbl:{col}"] = pa.array(self.tbl[col].to_numpy(), type=pa.float64())
        for col in self.diagnostics.columns:
            values = self.diagnostics[col]
            if col == "error":
                arr = pa.array(list(values), type=pa.string())
            elif col in _DIAG_DTYPES:
                arr = pa.array(
                    values.to_numpy(), type=pa.from_numpy_dtype(np.dtype(_DIAG_DTYPES[col]))
                )
            else:
                arr = pa.Array.from_pandas(values)
            columns[f"diag:{col}"] = arr
        header = {
            "format": _FILE_FORMAT,
            "format_version": _FILE_VERSION,
            "names": list(self.names),
            # float.hex keeps the original estimate bit for bit (NaN/inf too)
            "estimate": [float(x).hex() for x in self.estimate],
            "tbl_columns": list(self.tbl.columns),
            "diag_columns": list(self.diagnostics.columns),
            "diag_dtypes": {
                c: str(self.diagnostics[c].dtype)
                for c in self.diagnostics.columns
                if c not in DIAGNOSTIC_COLUMNS and c not in _DIAG_DTYPES
            },
            "failures": {c: self.failures[c].tolist() for c in FAILURE_COLUMNS},
            "meta": self.meta,
        }
        raw = json.dumps(header, default=_json_default).encode("utf-8")
        table = pa.table(columns)
        digest = _content_digest(table, raw)
        return table.replace_schema_metadata({_FILE_KEY: raw, _DIGEST_KEY: digest.encode("ascii")})

    @classmethod
    def load(cls, path: PathLike) -> BootResult:
        """Read a file written by :meth:`save`; the result compares equal.

        Raises ``ValueError`` when the file is not a mixboot bootstrap file,
        or is corrupted: its content digest (or a Parquet page checksum) does
        not match.  Files of format version 1 (no digest) are still read.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = os.fspath(path)
        options = (
            {"page_checksum_verification": True}
            if _supports(pq.ParquetFile, "page_checksum_verification")
            else {}
        )
        try:
            pf = pq.ParquetFile(path, **options)
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ValueError(
                f"{path!r} is not a mixboot bootstrap file or is corrupted (not readable as Parquet: {exc})"
            ) from None
        with pf:
            metadata = pf.schema_arrow.metadata or {}
            raw = metadata.get(_FILE_KEY)
            if raw is None:
                raise ValueError(
                    f"{path!r} is not a mixboot bootstrap file (no 'mixboot' schema metadata)"
                )
            try:
                header = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise ValueError(
                    f"{path!r} is corrupted: its 'mixboot' metadata is not JSON"
                ) from None
            if not isinstance(header, dict) or header.get("format") != _FILE_FORMAT:
                raise ValueError(f"{path!r} is not a mixboot bootstrap file (unknown format)")
            version = header.get("format_version")
            if not (_is_int(version) and 1 <= version <= _FILE_VERSION):
                raise ValueError(
                    f"{path!r} uses mixboot file format version {version!r}; "
                    f"this version of mixboot reads versions 1 to {_FILE_VERSION}"
                )
            try:
                table = pf.read()
            except (pa.ArrowException, OSError, ValueError) as exc:
                # The footer was fine, so the data pages are damaged (a page
                # checksum failed, or they no longer decode).
                raise ValueError(
                    f"{path!r} is corrupted: its data cannot be read ({exc})"
                ) from None
        if version >= 2:
            stored = metadata.get(_DIGEST_KEY)
            if stored is None:
                raise ValueError(f"{path!r} is corrupted: its content checksum is missing")
            if stored.decode("ascii", "replace") != _content_digest(table, raw):
                raise ValueError(
                    f"{path!r} is corrupted: its content does not match the SHA-256 checksum "
                    "stored when it was saved"
                )

        B = table.num_rows

        def column(prefix, name):
            key = f"{prefix}:{name}"
            if key not in table.column_names:
                raise ValueError(
                    f"{path!r} is not a complete mixboot bootstrap file (no column {key!r})"
                )
            return table.column(key)

        def numbers(prefix, name, dtype):
            return np.asarray(column(prefix, name).to_numpy(zero_copy_only=False), dtype=dtype)

        names = header["names"]
        estimates = np.empty((B, len(names)), dtype=np.float64)
        for j, name in enumerate(names):
            estimates[:, j] = numbers("stat", name, np.float64)
        tbl = pd.DataFrame(
            {c: numbers("tbl", c, np.float64) for c in header["tbl_columns"]},
            index=pd.RangeIndex(B),
        )
        diag = {}
        for c in header["diag_columns"]:
            if c == "error":
                diag[c] = _object_column(column("diag", c).to_pylist(), optional=True)
            elif c in _DIAG_DTYPES:
                diag[c] = pd.Series(numbers("diag", c, _DIAG_DTYPES[c]))
            else:
                diag[c] = column("diag", c).to_pandas().astype(header["diag_dtypes"][c])
        diagnostics = pd.DataFrame(diag, index=pd.RangeIndex(B))
        failures = pd.DataFrame({c: header["failures"][c] for c in FAILURE_COLUMNS})
        return cls(
            estimates=estimates,
            names=tuple(names),
            estimate=np.array([float.fromhex(x) for x in header["estimate"]], dtype=np.float64),
            tbl=tbl,
            diagnostics=diagnostics,
            failures=failures,
            meta=header["meta"],
        )


def _refuse_bca(method) -> None:
    if method == "bca":
        raise ValueError(
            "method='bca' is not offered: its acceleration needs a jackknife over independent "
            "observations or the model's score for the statistic, and neither is sound for a "
            "parametric bootstrap of a mixed model with a custom statistic (observations within "
            "a group are not independent). Use 'perc', 'shortest', 'basic' or 'norm'."
        )


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------
# file helpers
# --------------------------------------------------------------------------


@cache
def _supports(func, option: str) -> bool:
    # Parquet page checksums need pyarrow >= 13; older ones lack the keywords.
    try:
        return option in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def _writable_directory(path: str) -> str:
    """The directory that will hold ``path``; raises if it cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            raise NotADirectoryError(f"cannot save to {path!r}: {directory!r} is not a directory")
        raise FileNotFoundError(f"cannot save to {path!r}: directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot save to {path!r}: it is a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot save to {path!r}: directory {directory!r} is not writable")
    return directory


def _create_temp(path: str):
    """A new ``<path>.tmp-<random>`` file opened for writing: (name, file)."""
    for _ in range(100):
        tmp = f"{path}.tmp-{secrets.token_hex(6)}"
        try:
            # "x": never reuse someone else's file; the umask applies as for
            # any new file (tempfile.mkstemp would force mode 0o600).
            return tmp, open(tmp, "xb")
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot save to {path!r}: could not create a unique temporary file")


def _fsync_directory(directory: str) -> None:
    # Best effort: not every platform or file system can sync a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _column_bytes(col) -> bytes:
    """Canonical bytes of an Arrow column: equal values give equal bytes,
    however the column is chunked or was read back."""
    import pyarrow as pa

    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        nulls = b""
        if col.null_count:
            nulls = np.asarray(
                col.is_null().to_numpy(zero_copy_only=False), dtype=np.uint8
            ).tobytes()
            col = col.fill_null(False if pa.types.is_boolean(t) else 0)
        values = np.asarray(col.to_numpy(zero_copy_only=False))
        # little-endian, so a file digests the same on every machine
        return nulls + np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
    # strings and anything else a diagnostics column may hold
    return json.dumps(col.to_pylist(), default=str, ensure_ascii=False).encode("utf-8")


def _content_digest(table, header: bytes) -> str:
    """SHA-256 over the header JSON and every column, in file order.

    Each piece is length-prefixed, so moving bytes between pieces changes the
    digest.
    """
    h = hashlib.sha256()

    def feed(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    feed(_FILE_FORMAT.encode("ascii"))
    feed(header)
    feed(str(table.num_rows).encode("ascii"))
    for name, col in zip(table.column_names, table.columns):
        feed(name.encode("utf-8"))
        feed(_column_bytes(col))
    return h.hexdigest()


# --------------------------------------------------------------------------
# merging
# --------------------------------------------------------------------------


def _replicate_entropies(res: BootResult) -> list:
    if "seed_entropies" in res.meta:
        return list(res.meta["seed_entropies"])
    return [res.meta["seed_entropy"]] * res.B


def _part_records(res: BootResult) -> list:
    if "parts" in res.meta:
        return list(res.meta["parts"])
    return [
        {
            "seed_entropy": res.meta["seed_entropy"],
            "B": res.B,
            "version": res.meta["version"],
            "tol": res.meta["tol"],
        }
    ]


def concat(results: Iterable[BootResult]) -> BootResult:
    """Combine bootstrap runs of the same model into one :class:`BootResult`.

    Parts must share ``meta["fingerprint"]``, ``names``, the original
    ``estimate``, ``formula``, ``REML`` and ``use_u``, and must not contain
    the same replicate twice (same seed entropy and same spawn key).
    Replicates whose seed entropy is ``None`` cannot be identified and are
    never reported as duplicates.  Replicate numbers are renumbered
    consecutively, starting from the first part's smallest number.

    The merged ``meta`` records per-replicate ``seed_entropies`` and
    ``spawn_keys`` (so merged results can be merged again safely) and a flat
    list of ``parts``.  ``seed_entropy`` and ``tol`` are kept when all parts
    agree, else ``None``; other extra keys are kept when all parts agree.

    Examples
    --------
    >>> concat([])
    Traceback (most recent call last):
    ...
    ValueError: results must contain at least one BootResult
    """
    parts = list(results)
    if not parts:
        raise ValueError("results must contain at least one BootResult")
    for i, r in enumerate(parts):
        if not isinstance(r, BootResult):
            raise TypeError(f"results[{i}] is a {type(r).__name__}, not a BootResult")
    first = parts[0]
    for i, r in enumerate(parts[1:], start=1):
        if r.meta["fingerprint"] != first.meta["fingerprint"]:
            raise ValueError(
                f"parts come from different models: meta['fingerprint'] of part 0 is "
                f"{first.meta['fingerprint']!r} but part {i} has {r.meta['fingerprint']!r}"
            )
        if r.names != first.names:
            raise ValueError(
                f"parts have different names: part 0 {first.names} vs part {i} {r.names}"
            )
        for key in ("formula", "REML", "use_u"):
            if r.meta[key] != first.meta[key]:
                raise ValueError(
                    f"parts differ in meta[{key!r}]: part 0 {first.meta[key]!r} vs part {i} {r.meta[key]!r}"
                )
        if not np.allclose(r.estimate, first.estimate, rtol=1e-9, atol=0.0, equal_nan=True):
            raise ValueError(f"parts have different original estimates: part 0 vs part {i}")
        if list(r.tbl.columns) != list(first.tbl.columns):
            raise ValueError(f"parts have different tbl columns: part 0 vs part {i}")
        if _diag_layout(r) != _diag_layout(first):
            raise ValueError(f"parts have different diagnostics columns: part 0 vs part {i}")

    seen = {}
    entropies, spawn_keys = [], []
    for i, r in enumerate(parts):
        ents = _replicate_entropies(r)
        for ent, key in zip(ents, r.meta["spawn_keys"]):
            if ent is not None:
                ident = (ent, tuple(key))
                if ident in seen:
                    raise ValueError(
                        f"parts share replicate(s): seed_entropy={ent}, spawn_key={key} "
                        f"occurs in part {seen[ident]} and part {i}"
                    )
                seen[ident] = i
        entropies.extend(ents)
        spawn_keys.extend(r.meta["spawn_keys"])

    # A part saved before "stat_nan" existed gets it derived from its
    # estimates, so it still merges with parts that record it.
    diag_columns = list(first.diagnostics.columns)
    if any("stat_nan" in r.diagnostics.columns for r in parts) and "stat_nan" not in diag_columns:
        diag_columns.append("stat_nan")

    base = next((int(r.diagnostics["replicate"].min()) for r in parts if r.B), 0)
    diags, fails, offset = [], [], base
    for r in parts:
        mapping = {int(old): offset + pos for pos, old in enumerate(r.diagnostics["replicate"])}
        d = r.diagnostics.copy()
        d["replicate"] = np.arange(offset, offset + r.B, dtype=np.int64)
        if "stat_nan" in diag_columns and "stat_nan" not in d.columns:
            d["stat_nan"] = r._stat_nan()
        d = d[diag_columns]
        f = r.failures.copy()
        f["replicate"] = np.array([mapping[int(x)] for x in f["replicate"]], dtype=np.int64)
        diags.append(d)
        fails.append(f)
        offset += r.B

    records = [rec for r in parts for rec in _part_records(r)]
    meta = {
        "fingerprint": first.meta["fingerprint"],
        "version": first.meta["version"],
        "formula": first.meta["formula"],
        "REML": first.meta["REML"],
        "use_u": first.meta["use_u"],
        "tol": _common([r.meta["tol"] for r in parts]),
        "seed_entropy": _common(entropies)
        if entropies
        else _common([r.meta["seed_entropy"] for r in parts]),
        "spawn_keys": spawn_keys,
        "seed_entropies": entropies,
        "parts": records,
    }
    skip = set(meta)
    for key in first.meta:
        if key not in skip and all(key in r.meta and r.meta[key] == first.meta[key] for r in parts):
            meta[key] = first.meta[key]

    return BootResult(
        estimates=np.concatenate([r.estimates for r in parts], axis=0),
        names=first.names,
        estimate=first.estimate,
        tbl=pd.concat([r.tbl for r in parts], ignore_index=True),
        diagnostics=pd.concat(diags, ignore_index=True),
        failures=pd.concat(fails, ignore_index=True),
        meta=meta,
    )


def _diag_layout(res: BootResult) -> list:
    # the optional stat_nan column may be missing from older parts
    return [c for c in res.diagnostics.columns if c != "stat_nan"]


def _common(values):
    """The shared value of ``values``, or None when they disagree."""
    return values[0] if all(v == values[0] for v in values) else None
