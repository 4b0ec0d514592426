"""Likelihood-ratio tests of nested mixed models (LMMs and GLMMs): chi-square and
parametric bootstrap.

* :func:`reduced_model` builds the model without one fixed-effect coefficient or term.
* :func:`lrt` is lme4's ``anova(m1, m2, ...)``: a table of nested fits compared by
  the chi-square approximation to the likelihood-ratio statistic.
* :func:`pb_lrt` is pbkrtest's ``PBmodcomp``: the reference distribution of the
  statistic comes from responses simulated under the smaller model, each refitted
  by both models (batched, as the bootstrap refits them).

Likelihood ratios compare maximum likelihoods, so REML fits are refitted by ML
first (as lme4 and pbkrtest do) and the results say which were.  GLMMs are ML
fits already: their statistic is the difference of the fits' ``objective``
(-2 log-likelihood by the Laplace approximation or quadrature), as lme4's
``anova()`` of two ``glmer`` fits; models of one comparison must share family and link.

>>> import mixboot as mb
>>> df = mb.datasets.load("reaction")
>>> large = mb.fit("Reaction ~ 1 + Days + (1 + Days | Subject)", data=df, REML=False)
>>> small, dropped = reduced_model(large, "Days")
>>> small.spec.fe_names, dropped
(('(Intercept)',), 1)
>>> table = lrt(large, small.fit())
>>> table.table["Df"].tolist()
[<NA>, 1]
>>> round(float(table.table["Chisq"].iloc[1]), 3)
16.629
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import special

from . import _html, runner
from ._version import __version__
from .glmm import GeneralizedLinearMixedModel
from .model import LinearMixedModel
from .refit import RefitBatch, refit_isolated
from .simulate import simulate_block, simulate_glmm_block

if TYPE_CHECKING:
    from ._typing import Client, PathLike
    from .glmm_result import GLMMResult
    from .result import LMMResult

__all__ = ["LRTTable", "PBTest", "lrt", "pb_lrt", "reduced_model"]

REFIT_NOTE = "refitting model(s) with ML (instead of REML)"
# Bootstrap statistics within this of the observed one count as at least as large:
# refits leave ~1e-9 of optimizer noise on a deviance, and a statistic at the
# boundary (0) must not lose half its ties to that noise.
TIE_TOL = 1e-6
# GLMM refits per chunk: a batched refit costs the same per replicate from about
# 32 replicates up (measured: 58 ms per Bernoulli refit of 600 observations at
# 32, 64 and 128), and smaller chunks move progress and checkpoints often.


# --------------------------------------------------------------------------- LMM or GLMM
def is_glmm(model_or_result) -> bool:
    """True for a GLMM (its model or a result of it)."""
    return isinstance(
        getattr(model_or_result, "model", model_or_result), GeneralizedLinearMixedModel
    )


def refit_start(result) -> np.ndarray:
    """Where refits of ``result``'s model start: theta (LMM) or (theta, beta) (GLMM, as
    lme4's ``refit``)."""
    theta = np.asarray(result.theta, dtype=float)
    return (
        np.concatenate([theta, np.asarray(result.beta, dtype=float)]) if is_glmm(result) else theta
    )


def simulate_responses(model, children, *, beta, sigma, theta) -> np.ndarray:
    """Responses (n, len(children)) of ``model`` as its refits take them (a GLMM's
    on the fitted scale with its trials and offset; an LMM's without its offset)."""
    spec = model.spec
    if is_glmm(model):
        return simulate_glmm_block(
            spec,
            model.family,
            children,
            beta=beta,
            theta=theta,
            trials=spec.trials,
            offset=spec.offset,
        )
    return simulate_block(spec, children, beta=beta, sigma=sigma, theta=theta)


def refit_columns(
    model, Y: np.ndarray, *, start: np.ndarray, tol: float | None, fail, vcov=None
) -> list[tuple[np.ndarray, RefitBatch]]:
    """Refit every column of Y (n, B) by :func:`mixboot.refit.refit_isolated`, as
    :class:`RefitBatch` es: a GLMM's ``sigma`` is 1 and its ``vcov_unscaled`` is
    ``vcov(model, refits)`` (NaN without ``vcov``)."""
    batches = refit_isolated(model, Y, start=start, tol=tol, fail=fail)
    if not is_glmm(model):
        return batches
    p = model.spec.p
    out = []
    for idx, r in batches:
        B = len(idx)
        vc = np.full((B, p, p), np.nan) if vcov is None else vcov(model, r)
        out.append(
            (
                idx,
                RefitBatch(
                    theta=r.theta,
                    objective=r.objective,
                    beta=r.beta,
                    sigma=np.ones(B),
                    converged=r.converged,
                    evaluations=r.evaluations,
                    vcov_unscaled=vc,
                ),
            )
        )
    return out


# --------------------------------------------------------------------------- reduced model
def _factor_key(name: str) -> str:
    """``C(cond, contr.sum)`` -> ``cond``; other factors as written, without spaces."""
    name = name.strip().strip("`")
    m = re.fullmatch(r"C\(\s*([^,\s)]+)\s*(?:,.*)?\)", name)
    return m.group(1) if m else re.sub(r"\s+", "", name)


def _term_key(label: str) -> frozenset | str:
    label = label.strip()
    if label in ("1", "(Intercept)", "Intercept"):
        return "(Intercept)"
    return frozenset(_factor_key(f) for f in label.split(":"))


def _fixed_terms(spec) -> list[tuple[str, np.ndarray]]:
    """(term label, indices into the kept columns of X) for each term of the fixed part."""
    position = {int(c): i for i, c in enumerate(spec.kept_columns)}
    out = []
    for term, columns in spec.fixed_spec.term_indices.items():
        label = str(term)
        cols = [position[c] for c in columns if c in position]
        out.append(("(Intercept)" if label == "1" else label, np.array(cols, dtype=int)))
    return out


def columns_to_drop(spec, test: str) -> tuple[np.ndarray, str]:
    """Indices of X's columns named by ``test`` (a coefficient, else a term) and a label."""
    formulaic_names = [spec.fixed_spec.column_names[int(c)] for c in spec.kept_columns]
    # An interaction's coefficient may be named with its factors in any order.
    unordered = frozenset(test.split(":"))
    for names in (spec.fe_names, formulaic_names):
        for i, name in enumerate(names):
            if name == test or frozenset(name.split(":")) == unordered:
                return np.array([i]), spec.fe_names[i]
    key = _term_key(test)
    terms = _fixed_terms(spec)
    for label, cols in terms:
        if _term_key(label) == key:
            if cols.size == 0:
                raise ValueError(
                    f"term {label!r} of {spec.formula!r} has no columns left in the "
                    "fixed-effects matrix (all were aliased)"
                )
            return cols, label
    raise ValueError(
        f"test {test!r} names no fixed-effect coefficient or term of {spec.formula!r}; "
        f"coefficients: {list(spec.fe_names)}; terms: {[label for label, _ in terms]}"
    )


def reduced_model(result, test: str):
    """The model of ``result`` without one fixed-effect coefficient or term, unfitted, for ML.

    Parameters
    ----------
    result : a fitted :class:`~mixboot.LMMResult` (REML or ML; only its specification is
        used) or a :class:`~mixboot.glmm_result.GLMMResult`.
    test : what to remove from the fixed effects, either
        - a coefficient, by its lme4 name as in ``result.spec.fe_names``
          (``"Days"``, ``"condb"``, ``"(Intercept)"``) or its formulaic column name
          (``"cond[T.b]"``): that one column of X is removed;
        - a term of the fixed part (``"cond"`` for a factor with several columns,
          ``"a:b"`` in either order): all of its columns are removed.
        Coefficient names are tried first.

    Returns
    -------
    (model, n_dropped) : an unfitted ``LinearMixedModel(spec, REML=False)`` on the same
        observations, random-effect terms, contrasts and coding, whose X is the full
        model's X without the dropped columns; and the number of columns dropped (the
        degrees of freedom of the test).  Fit it with ``model.fit()``.  For a GLMM: a
        ``GeneralizedLinearMixedModel`` with the same family, link, trials, offset and nAGQ.

    The reduced X is taken from the full model's columns rather than rebuilt from a
    formula, so the remaining columns keep their coding (dropping a main effect does
    not recode an interaction that contains it).  ``model.spec.formula`` is the full
    formula with ``" - <test>"`` appended: a label for tables, not necessarily a formula
    that rebuilds the same X.  ``simulate(..., newdata=...)`` works on the reduced model.

    Raises ``ValueError`` naming ``test`` and listing the valid coefficient and term
    names when nothing matches.

    >>> import mixboot as mb
    >>> r = mb.fit("rt ~ cond + (1 | subject) + (1 | item)", data=mb.datasets.load("rt"))
    >>> model, k = reduced_model(r, "cond[T.b]")
    >>> model, k
    (LinearMixedModel('rt ~ cond + (1 | subject) + (1 | item) - condb', REML=False), 1)
    """
    spec = getattr(result, "spec", None)
    if spec is None or not hasattr(spec, "fixed_spec"):
        raise TypeError(f"result must be a fitted LMMResult, got {type(result).__name__}")
    if not isinstance(test, str) or not test.strip():
        raise TypeError(f"test must be a coefficient or term name (a non-empty str), got {test!r}")
    drop, label = columns_to_drop(spec, test.strip())
    keep = np.setdiff1d(np.arange(spec.p), drop)
    formula = f"{spec.formula} - {label}"
    reduced = dataclasses.replace(
        spec,
        formula=formula,
        parts=dataclasses.replace(spec.parts, fixed=f"{spec.parts.fixed} - {label}", text=formula),
        X=np.ascontiguousarray(spec.X[:, keep]),
        fe_names=tuple(spec.fe_names[i] for i in keep),
        kept_columns=spec.kept_columns[keep],
    )
    if is_glmm(result):
        return GeneralizedLinearMixedModel(reduced, result.family, nAGQ=result.nAGQ), int(drop.size)
    return LinearMixedModel(reduced, REML=False), int(drop.size)


# --------------------------------------------------------------------------- shared checks
def _check_fit(result, what: str):
    if not (hasattr(result, "model") and hasattr(result, "objective") and hasattr(result, "spec")):
        raise TypeError(f"{what} must be a fitted LMMResult, got {type(result).__name__}")


def _check_same_data(fits, names) -> None:
    first, name0 = fits[0], names[0]
    for r, name in zip(fits[1:], names[1:]):
        if r.nobs != first.nobs:
            raise ValueError(
                f"models were not all fitted to the same observations: {name0!r} "
                f"has {first.nobs}, {name!r} has {r.nobs}"
            )
        if not np.array_equal(np.asarray(r.y), np.asarray(first.y)):
            raise ValueError(
                f"models were not all fitted to the same response values: "
                f"{name0!r} and {name!r} differ"
            )


def _check_same_kind(fits, names) -> None:
    """All LMMs, or all GLMMs of one family and link."""
    kinds = [(r.family.name, r.family.link.name) if is_glmm(r) else None for r in fits]
    for kind, name in zip(kinds[1:], names[1:]):
        if kind != kinds[0]:

            def say(k):
                return "a linear mixed model" if k is None else f"a {k[0]}({k[1]}) GLMM"

            raise ValueError(
                f"models of different kinds cannot be compared: {names[0]!r} is "
                f"{say(kinds[0])}, {name!r} is {say(kind)}"
            )


def _ml_fit(result):
    """The ML fit of ``result``'s model: itself for an ML fit (every GLMM), else a fresh ML fit."""
    if is_glmm(result) or not result.REML:
        return result, False
    return LinearMixedModel(result.spec, REML=False).fit(), True


# --------------------------------------------------------------------------- lrt
@dataclass(frozen=True)
class LRTTable:
    """The result of :func:`lrt`: lme4's ``anova()`` table of nested models.

    ``table`` has one row per model, fewest parameters first, indexed by name, with
    columns ``npar, AIC, BIC, logLik, deviance, Chisq, Df, Pr(>Chisq)``; row i is
    compared with row i-1.  ``fits`` are the ML fits in that order, ``refitted`` the
    names of the models that were fitted by REML and refitted by ML.

    Examples
    --------
    >>> import mixboot as mb
    >>> df = mb.datasets.load("reaction")
    >>> m0 = mb.fit("Reaction ~ 1 + (1 | Subject)", data=df, REML=False)
    >>> m1 = mb.fit("Reaction ~ Days + (1 | Subject)", data=df, REML=False)
    >>> out = mb.lrt(m0, m1)
    >>> list(out.table.columns)
    ['npar', 'AIC', 'BIC', 'logLik', 'deviance', 'Chisq', 'Df', 'Pr(>Chisq)']
    >>> int(out.table["Df"].iloc[1])
    1
    """

    table: pd.DataFrame = field(repr=False)
    fits: tuple = field(repr=False)
    refitted: tuple[str, ...]

    @property
    def note(self) -> str:
        """lme4's message when models were refitted by ML, else an empty string."""
        return f"{REFIT_NOTE}: {', '.join(self.refitted)}" if self.refitted else ""

    def __repr__(self) -> str:
        head = "Likelihood-ratio tests (chi-square reference)"
        note = f"\n{self.note}" if self.note else ""
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            body = self.table.to_string(float_format=lambda v: f"{v:.6g}", na_rep="")
        return f"{head}{note}\n{body}"

    def _repr_html_(self) -> str:
        return _html.lrt(self)


def lrt(*fits: LMMResult | GLMMResult, names: Sequence[str] | None = None) -> LRTTable:
    """Likelihood-ratio table of nested fits, as lme4's ``anova(m1, m2, ...)``.

    Parameters
    ----------
    *fits : two or more fitted models (LMMResult, or GLMMResult of one family and
        link: ``npar`` = fixed effects + theta, as lme4's) of the same observations, in any
        order; they are sorted by number of parameters (``n_params``; ties keep
        their order) and each compared with the one before.  REML fits are
        refitted by ML first; ``refitted`` and the repr say which.
    names : optional row labels, one per fit in the order given; default the
        formulas, or ``m1, m2, ...`` when two formulas are equal.

    Returns an :class:`LRTTable`; its ``table`` has ``Chisq`` = the drop in deviance
    (clamped at 0, as lme4 does), ``Df`` = the difference in parameters and
    ``Pr(>Chisq)`` from the chi-square distribution with ``Df`` degrees of freedom.

    Examples
    --------
    >>> import mixboot as mb
    >>> df = mb.datasets.load("reaction")
    >>> m1 = mb.fit("Reaction ~ Days + (1 | Subject)", data=df)
    >>> m2 = mb.fit("Reaction ~ Days + (Days | Subject)", data=df)
    >>> out = lrt(m2, m1)
    >>> out.refitted
    ('Reaction ~ Days + (Days | Subject)', 'Reaction ~ Days + (1 | Subject)')
    >>> out.note
    'refitting model(s) with ML (instead of REML): Reaction ~ Days + (Days | Subject), ...'
    >>> out.table["npar"].tolist()
    [4, 6]
    """
    if len(fits) < 2:
        raise ValueError(f"lrt needs at least two fits to compare, got {len(fits)}")
    for i, r in enumerate(fits):
        _check_fit(r, f"fit {i + 1}")
    if names is None:
        names = [r.formula for r in fits]
        if len(set(names)) < len(names):
            names = [f"m{i + 1}" for i in range(len(fits))]
    else:
        names = [str(n) for n in names]
        if len(names) != len(fits) or len(set(names)) < len(names):
            raise ValueError(f"names must be {len(fits)} distinct labels, one per fit, got {names}")
    _check_same_kind(fits, names)
    _check_same_data(fits, names)
    ml, refitted = [], []
    for r, name in zip(fits, names):
        m, was_reml = _ml_fit(r)
        ml.append(m)
        if was_reml:
            refitted.append(name)
    order = sorted(range(len(ml)), key=lambda i: ml[i].n_params)
    ml = [ml[i] for i in order]
    npar = np.array([r.n_params for r in ml])
    loglik = np.array([r.loglik for r in ml])
    deviance = -2 * loglik
    nobs = ml[0].nobs
    chisq = np.concatenate([[np.nan], np.maximum(0.0, 2 * np.diff(loglik))])
    df = np.diff(npar)
    # Equal numbers of parameters (Df 0) give no test, as in lme4.
    p = np.concatenate(
        [[np.nan], np.where(df > 0, special.chdtrc(np.maximum(df, 1), chisq[1:]), np.nan)]
    )
    table = pd.DataFrame(
        {
            "npar": npar,
            "AIC": deviance + 2 * npar,
            "BIC": deviance + npar * np.log(nobs),
            "logLik": loglik,
            "deviance": deviance,
            "Chisq": chisq,
            "Df": pd.array([pd.NA, *df.tolist()], dtype="Int64"),
            "Pr(>Chisq)": p,
        },
        index=pd.Index([names[i] for i in order], name="model"),
    )
    return LRTTable(table=table, fits=tuple(ml), refitted=tuple(refitted))


# --------------------------------------------------------------------------- pb_lrt
@dataclass(frozen=True)
class PBTest:
    """The result of :func:`pb_lrt`: a parametric-bootstrap likelihood-ratio test.

    ``lrt``: the observed statistic, deviance(small) - deviance(large), both by ML;
    ``df``: the difference in number of parameters; ``p_chisq``: its chi-square
    p-value; ``p_boot`` = (1 + #{LRT* >= lrt}) / (1 + n_valid) over the valid
    bootstrap statistics ``lrt_boot`` (NaN where a replicate failed); ``n_failed``
    replicates (a refit raised, did not converge or gave a non-finite deviance) are
    excluded from ``p_boot`` and listed in ``failures``.  ``seed`` is the entropy of
    the root SeedSequence: passing it again reproduces the run.

    Examples
    --------
    >>> import mixboot as mb
    >>> df = mb.datasets.load("reaction")
    >>> m0 = mb.fit("Reaction ~ 1 + (1 | Subject)", data=df, REML=False)
    >>> m1 = mb.fit("Reaction ~ Days + (1 | Subject)", data=df, REML=False)
    >>> test = mb.pb_lrt(m1, m0, B=50, seed=1)
    >>> test.df, bool(test.p_boot >= 1 / 51)
    (1, True)
    """

    lrt: float
    df: int
    p_chisq: float
    p_boot: float
    n_valid: int
    n_failed: int
    B: int
    lrt_boot: np.ndarray = field(repr=False)
    seed: int = field(repr=False)
    formula_large: str = field(repr=False)
    formula_small: str = field(repr=False)
    refitted: tuple[str, ...] = field(repr=False)
    failures: pd.DataFrame = field(repr=False)

    @property
    def note(self) -> str:
        """lme4's message when models were refitted by ML, else an empty string."""
        return f"{REFIT_NOTE}: {', '.join(self.refitted)}" if self.refitted else ""

    @property
    def table(self) -> pd.DataFrame:
        """PBmodcomp's layout: rows LRT (chi-square) and PBtest (bootstrap)."""
        return pd.DataFrame(
            {
                "stat": [self.lrt, self.lrt],
                "df": [self.df, pd.NA],
                "p.value": [self.p_chisq, self.p_boot],
            },
            index=pd.Index(["LRT", "PBtest"]),
        )

    def __repr__(self) -> str:
        lines = [
            "Parametric bootstrap likelihood-ratio test",
            f"large: {self.formula_large}",
            f"small: {self.formula_small}",
        ]
        if self.note:
            lines.append(self.note)
        lines.append(
            f"bootstrap: {self.n_valid} valid of B = {self.B} replicates"
            + (f" ({self.n_failed} failed, excluded)" if self.n_failed else "")
        )
        lines.append(f"  {'':6} {'stat':>10} {'df':>4} {'p.value':>10}")
        lines.append(f"  {'LRT':6} {self.lrt:>10.4f} {self.df:>4d} {self.p_chisq:>10.4g}")
        lines.append(f"  {'PBtest':6} {self.lrt:>10.4f} {'':>4} {self.p_boot:>10.4g}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return _html.pbtest(self)


@dataclass(frozen=True, eq=False)
class _PBContext:
    """What a worker needs for pb_lrt replicates: the two ML models and where to start."""

    small: object  # LinearMixedModel (ML) or GeneralizedLinearMixedModel
    large: object
    beta: np.ndarray  # the small fit's estimates: responses are simulated under them
    sigma: float  # 1 for a GLMM
    theta_small: np.ndarray
    start_small: np.ndarray  # refits start at the fits' estimates (refit_start)
    start_large: np.ndarray
    tol: float | None


def _pb_chunk(ctx: _PBContext, reps, children):
    """Simulate from the small fit, refit both models; LRT* and failure reasons per replicate."""
    B = len(reps)
    out = {"lrt": np.full(B, np.nan), "failures": []}
    failed = np.zeros(B, dtype=bool)

    def fail(i, stage, exc):
        failed[i] = True
        out["failures"].append((int(reps[i]), stage, f"{type(exc).__name__}: {exc}"))

    try:
        Y = simulate_responses(
            ctx.small, children, beta=ctx.beta, sigma=ctx.sigma, theta=ctx.theta_small
        )
    except Exception as exc:  # noqa: BLE001 - recorded per replicate, run goes on
        for i in range(B):
            fail(i, "simulate", exc)
        return out
    deviance = {}
    for which, model, start in (
        ("small", ctx.small, ctx.start_small),
        ("large", ctx.large, ctx.start_large),
    ):
        dev, conv = np.full(B, np.nan), np.zeros(B, dtype=bool)
        for idx, rb in refit_columns(
            model,
            Y,
            start=start,
            tol=ctx.tol,
            fail=lambda i, exc, w=which: fail(i, f"refit {w}", exc),
        ):
            dev[idx], conv[idx] = rb.objective, rb.converged
        for i in np.flatnonzero(~failed & ~(conv & np.isfinite(dev))):
            failed[i] = True
            out["failures"].append(
                (int(reps[i]), f"refit {which}", "did not converge or gave a non-finite deviance")
            )
        deviance[which] = dev
    stat = deviance["small"] - deviance["large"]
    out["lrt"] = np.where(failed, np.nan, stat)
    return out


def _check_nested_fixed(small, large) -> None:
    """The small model's mean space must lie in the large one's, or the models are not nested."""
    Xs, Xl = small.spec.X, large.spec.X
    resid = Xs
    if Xl.shape[1]:
        coef = np.linalg.lstsq(Xl, Xs, rcond=None)[0]
        resid = Xs - Xl @ coef
    bad = np.linalg.norm(resid, axis=0) > 1e-7 * np.maximum(np.linalg.norm(Xs, axis=0), 1.0)
    if bad.any():
        cols = [small.spec.fe_names[i] for i in np.flatnonzero(bad)]
        raise ValueError(
            f"the models are not nested: fixed-effect column(s) {cols} of small "
            f"({small.formula!r}) are not in the column space of large's X "
            f"({large.formula!r})"
        )


def pb_lrt(
    large: LMMResult | GLMMResult,
    small: LMMResult | GLMMResult,
    B: int = 1000,
    seed: runner.Seed = None,
    *,
    n_jobs: int = 1,
    show_progress: bool = False,
    tol: float | None = None,
    client: Client | None = None,
    checkpoint: PathLike | None = None,
) -> PBTest:
    """Parametric-bootstrap likelihood-ratio test of nested models, as pbkrtest's PBmodcomp.

    B responses are simulated from ``small`` at its ML estimates; both models are
    refitted by ML to each, and LRT* = deviance(small*) - deviance(large*) forms the
    reference distribution of the observed LRT.  Works for fixed-effect and for
    random-effect comparisons (a variance or a correlation set to zero), where the
    chi-square reference is conservative.

    Parameters
    ----------
    large, small : fitted models (LMMResult, or GLMMResult of one family and link) of
        the same observations, ``small`` nested in ``large`` with fewer parameters.
        REML fits are refitted by ML (``refitted`` and the repr say which).  GLMM
        responses are simulated on the fitted scale (with the data's trials) and
        refitted as lme4's ``refit`` does, from each fit's (theta, beta).
    B : number of bootstrap replicates (positive int).
    seed : int, numpy Generator or None; replicate i draws from child i of
        ``SeedSequence(seed)``.  The run is reproducible to the last bit for a given
        seed whatever ``n_jobs``.
    n_jobs : local worker processes, -1 for all cores.
    show_progress : a tqdm progress bar.
    tol : relative tolerance of the refits (default 1e-12, as bootMer).
    client : a ``dask.distributed.Client``: run on its cluster.
    checkpoint : a directory that keeps finished replicates (resume, extend).

    Returns a :class:`PBTest`.  Failed replicates are excluded from ``p_boot``,
    counted in ``n_failed`` and listed in ``failures``, with a RuntimeWarning.

    Unlike PBmodcomp, whose PBtest p-value counts only strictly positive LRT*
    (``(1 + #{LRT* > LRT}) / (1 + #{LRT* > 0})``), ``p_boot`` keeps every valid
    replicate: for a variance tested on the boundary many LRT* are 0 and the two
    definitions differ.  LRT* within 1e-6 of the observed LRT count as ties (>=).

    Examples
    --------
    >>> import mixboot as mb
    >>> df = mb.datasets.load("reaction")
    >>> large = mb.fit("Reaction ~ Days + (Days | Subject)", data=df, REML=False)
    >>> small = mb.fit("Reaction ~ Days + (Days || Subject)", data=df, REML=False)
    >>> test = pb_lrt(large, small, B=200, seed=1)
    >>> test.df, test.n_valid + test.n_failed
    (1, 200)
    """
    _check_fit(large, "large")
    _check_fit(small, "small")
    runner.check_run_options(
        B=B,
        n_jobs=n_jobs,
        tol=tol,
        show_progress=show_progress,
        client=client,
        checkpoint=checkpoint,
    )
    _check_same_kind([large, small], ["large", "small"])
    _check_same_data([large, small], ["large", "small"])
    large_ml, large_refit = _ml_fit(large)
    small_ml, small_refit = _ml_fit(small)
    df = large_ml.n_params - small_ml.n_params
    if df <= 0:
        raise ValueError(
            f"small must have fewer parameters than large: small "
            f"({small.formula!r}) has {small_ml.n_params}, large "
            f"({large.formula!r}) has {large_ml.n_params}"
        )
    _check_nested_fixed(small_ml, large_ml)
    observed = small_ml.objective - large_ml.objective
    B = int(B)
    glmm = is_glmm(small_ml)
    ctx = _PBContext(
        small=small_ml.model,
        large=large_ml.model,
        beta=np.asarray(small_ml.beta, dtype=float),
        sigma=1.0 if glmm else float(small_ml.sigma),
        theta_small=np.asarray(small_ml.theta, dtype=float),
        start_small=refit_start(small_ml),
        start_large=refit_start(large_ml),
        tol=tol,
    )
    identity = {
        "workflow": "pb_lrt",
        "small": small_ml.spec.fingerprint,
        "small_formula": small_ml.formula,
        "large": large_ml.spec.fingerprint,
        "large_formula": large_ml.formula,
        "tol": tol,
        "version": __version__,
    }
    if glmm:
        identity.update(
            family=f"{small_ml.family.name}({small_ml.family.link.name})",
            nAGQ=[small_ml.nAGQ, large_ml.nAGQ],
        )
    job = runner.Job(
        task=_pb_chunk,
        payload=ctx,
        B=B,
        chunk=runner.chunk_size(small_ml.model, large_ml.model),
        desc="pb_lrt",
        identity=identity,
    )
    outcome = runner.run(
        job, seed, n_jobs=n_jobs, client=client, checkpoint=checkpoint, show_progress=show_progress
    )
    root = outcome.seed
    boot = outcome.values["lrt"]
    boot.setflags(write=False)
    valid = np.isfinite(boot)
    n_valid = int(valid.sum())
    n_failed = B - n_valid
    if n_failed:
        warnings.warn(
            f"{n_failed} of {B} bootstrap replicates failed and are excluded from "
            "p_boot; see .failures",
            RuntimeWarning,
            stacklevel=2,
        )
    p_boot = (1 + int(np.sum(boot[valid] >= observed - TIE_TOL))) / (1 + n_valid)
    refitted = tuple(name for name, was in (("large", large_refit), ("small", small_refit)) if was)
    p_chisq = float(special.chdtrc(df, max(observed, 0.0)))
    return PBTest(
        lrt=float(observed),
        df=int(df),
        p_chisq=p_chisq,
        p_boot=float(p_boot),
        n_valid=n_valid,
        n_failed=n_failed,
        B=B,
        lrt_boot=boot,
        seed=int(root.entropy),
        formula_large=large.formula,
        formula_small=small.formula,
        refitted=refitted,
        failures=outcome.failures,
    )
