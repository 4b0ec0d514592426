"""Predictions of a fitted model (lme4's predict.merMod) and their bootstrap intervals.

A prediction is ``X beta + sum_k Z_k b_k`` over the random terms ``k`` that
``re_form`` keeps, with ``b_k = Lambda_k u_k`` the conditional modes:

* ``re_form=None``: every random term (the conditional prediction; on the
  fitted data these are the fitted values);
* ``re_form="~0"`` (or ``"NA"``, ``"0"``, NaN): no random term, ``X beta``
  (the population-level prediction, lme4's ``re.form = NA``);
* ``re_form="~(1|Subject)"``: only the model's terms named there.

New data are coded as the fitted data were (:func:`mixboot.simulate._design_for`).
A grouping level not seen in the fit (or a missing one) is an error unless
``allow_new_levels=True``; its random effects are then 0, their mean.  A row
with a missing predictor is predicted as NaN (lme4's ``na.action = na.pass``).

:func:`predict_interval` refits the model to responses simulated from the fit,
on the replicate runner, and takes percentile intervals of the predictions
made with each replicate's parameters.

>>> import mixboot as mb
>>> r = mb.fit("Reaction ~ 1 + Days + (1 + Days | Subject)", data=mb.datasets.load("reaction"))
>>> new = pd.DataFrame({"Days": [0, 5]})
>>> predict(r, new, re_form="~0").round(2).tolist()
[256.35, 295.01]
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import runner
from ._version import __version__
from .formula import parse_formula
from .refit import refit_isolated
from .result import LMMResult
from .simulate import _design_for, fixed_matrix, simulate_block
from .spec import _required_variables

if TYPE_CHECKING:
    from .glmm_result import GLMMResult

__all__ = ["predict", "predict_interval"]

KINDS = ("confidence", "prediction")
_NO_RANDOM = ("~0", "~ 0", "0", "NA", "~-1", "~ -1")


# --------------------------------------------------------------------------- re_form
def _selected_terms(spec, re_form) -> tuple[int, ...]:
    """Indices (into ``spec.terms``) of the random terms ``re_form`` keeps."""
    if re_form is None:
        return tuple(range(len(spec.terms)))
    if re_form is pd.NA or (isinstance(re_form, float) and np.isnan(re_form)):
        return ()
    if not isinstance(re_form, str):
        raise TypeError(
            f"re_form must be None, '~0' / 'NA' or a formula string of random "
            f"terms such as '~(1|g)', got {re_form!r}"
        )
    text = re_form.strip()
    if text in _NO_RANDOM or text.replace(" ", "") in ("~0", "~-1"):
        return ()
    if not text.startswith("~"):
        raise ValueError(
            f"re_form {re_form!r} must be a one-sided formula such as '~(1|g)', "
            "or '~0' for no random effects"
        )
    # The model's own parser, given a placeholder response, expands a/b and || as in the fit.
    parts = parse_formula(f"{spec.response} {text}")
    available = {(t.label, t.expr.replace(" ", "")): i for i, t in enumerate(spec.terms)}
    chosen = []
    for t in parts.random:
        i = available.get((t.label, t.expr.replace(" ", "")))
        if i is None:
            model_terms = [f"({m.expr} | {m.label})" for m in spec.terms]
            raise ValueError(
                f"re_form term ({t.expr} | {t.label}) is not a random term of the "
                f"model; its terms are {model_terms}"
            )
        chosen.append(i)
    return tuple(sorted(set(chosen)))


# --------------------------------------------------------------------------- new data
def _complete_rows(spec, newdata: pd.DataFrame, keep: tuple[int, ...]) -> np.ndarray:
    """Rows with every predictor the prediction uses (grouping factors aside: a
    missing level is a new level, as in lme4)."""
    names = set(_required_variables(spec.fixed_formula))
    # _design_for codes every term, so with any term kept all their covariates are needed.
    for term in spec.terms if keep else ():
        names |= _required_variables(term.expr)
    missing = sorted(c for c in names if c not in newdata.columns)
    if missing:
        raise KeyError(f"newdata lacks column(s) {missing} used by the model's predictors")
    ok = np.ones(len(newdata), dtype=bool)
    for c in names:
        ok &= ~newdata[c].isna().to_numpy()
    return ok


def _new_level_check(spec, terms, keep, allow_new_levels: bool) -> None:
    for k in keep:
        old, new = spec.terms[k], terms[k]
        if new.nlevels > old.nlevels and not allow_new_levels:
            used = np.unique(new.codes[new.codes >= old.nlevels])
            unseen = [new.levels[c] for c in used]
            shown = ", ".join(repr(v) for v in unseen[:10]) + (" ..." if len(unseen) > 10 else "")
            raise ValueError(
                f"newdata has {len(unseen)} level(s) of grouping factor {old.label!r} "
                f"(column(s) {list(old.group_vars)}) not seen in the fit (or missing): {shown}; "
                "pass allow_new_levels=True to predict them at random effects 0"
            )


class _Design:
    """What a prediction for some rows needs: X and the kept terms' (codes, zraw, fitted levels)."""

    def __init__(self, X, terms, keep, n_fitted_levels, ok):
        self.X = X  # (m, p) rows with complete predictors
        self.terms = terms  # kept terms on those rows
        self.keep = keep  # their indices into spec.terms
        self.n_fitted = n_fitted_levels  # levels each kept term had in the fit
        self.ok = ok  # (rows,) bool: rows predicted (others NaN)


def _design(result, newdata, keep, allow_new_levels: bool) -> _Design:
    spec = result.spec
    if newdata is None:
        return _Design(
            spec.X,
            [spec.terms[k] for k in keep],
            keep,
            [spec.terms[k].nlevels for k in keep],
            np.ones(spec.n, dtype=bool),
        )
    if not isinstance(newdata, pd.DataFrame):
        raise TypeError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    ok = _complete_rows(spec, newdata, keep)
    rows = newdata.loc[ok] if not ok.all() else newdata
    if not keep:
        return _Design(fixed_matrix(spec, rows), [], keep, [], ok)
    X, terms = _design_for(result, rows)
    _new_level_check(spec, terms, keep, allow_new_levels)
    return _Design(X, [terms[k] for k in keep], keep, [spec.terms[k].nlevels for k in keep], ok)


def _zb(design: _Design, spec, theta: np.ndarray, u) -> np.ndarray:
    """sum_k Z_k b_k on the design's rows; b_k = u_k T_k', 0 for levels not in the fit.

    Element by element (no product across rows), so a replicate's numbers do
    not depend on anything but its own theta and u.
    """
    out = np.zeros(design.X.shape[0])
    for k, term, nfit in zip(design.keep, design.terms, design.n_fitted):
        T = spec.terms[k].factor(theta[spec.theta_slices[k]])
        b = np.zeros((term.nlevels, term.p))
        b[:nfit] = u[k] @ T.T
        for a in range(term.p):
            out += term.zraw[:, a] * b[term.codes, a]
    return out


def _xbeta(X: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """X beta for a batch of beta (B, p) -> (B, m), column by column in a fixed order."""
    out = np.zeros((beta.shape[0], X.shape[0]))
    for j in range(X.shape[1]):
        out += beta[:, j, None] * X[None, :, j]
    return out


def _shape_output(values: np.ndarray, design: _Design, newdata, name: str):
    if newdata is None:
        return values
    full = np.full(len(newdata), np.nan)
    full[design.ok] = values
    return pd.Series(full, index=newdata.index, name=name)


# --------------------------------------------------------------------------- predict
def predict(
    result: LMMResult | GLMMResult,
    newdata: pd.DataFrame | None = None,
    *,
    re_form: str | None = None,
    allow_new_levels: bool = False,
) -> np.ndarray | pd.Series:
    """Predictions of a fitted model (lme4's ``predict.merMod``).

    Parameters
    ----------
    result : a fitted LMMResult.
    newdata : DataFrame to predict for; None: the fitted data (an array, equal to
        ``result.fittedvalues`` for ``re_form=None``).  A DataFrame gives a Series
        with its index; rows with a missing predictor are NaN.
    re_form : None: condition on every random term; ``"~0"`` or ``"NA"`` (or
        NaN): population level, ``X beta``; a one-sided formula of some of the
        model's random terms, e.g. ``"~(1|Subject)"``: only those.
    allow_new_levels : grouping levels not in the fit (or missing) are an error
        unless True; their random effects are then 0.

    Examples
    --------
    >>> import mixboot as mb
    >>> r = mb.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", data=mb.datasets.load("crossed"))
    >>> bool(np.allclose(predict(r), r.fittedvalues))
    True
    """
    if not isinstance(allow_new_levels, (bool, np.bool_)):
        raise TypeError(f"allow_new_levels must be True or False, got {allow_new_levels!r}")
    spec = result.spec
    keep = _selected_terms(spec, re_form)
    if newdata is None and keep == tuple(range(len(spec.terms))):
        # the linear predictor: for a GLMM, not its fitted means
        return np.array(getattr(result, "eta", result.fittedvalues))
    design = _design(result, newdata, keep, bool(allow_new_levels))
    values = design.X @ result.beta + _zb(design, spec, result.theta, result.u)
    return _shape_output(values + _offset(spec, newdata, design), design, newdata, "fit")


def _offset(spec, newdata, design: _Design):
    """The model's offset(...) terms on the design's rows (0 without any), as lme4 adds them."""
    if spec.offset is None:
        return 0.0
    if newdata is None:
        return spec.offset
    return np.asarray(spec.offset_of(newdata), dtype=float)[design.ok]


# --------------------------------------------------------------------------- intervals
def _noise_generator(child: np.random.SeedSequence) -> np.random.Generator:
    """A replicate's stream for prediction noise: a grandchild of the replicate's
    own stream, so the simulated response (the child's draws) is bootMer's."""
    return np.random.Generator(
        np.random.PCG64(
            np.random.SeedSequence(child.entropy, spawn_key=tuple(child.spawn_key) + (1,))
        )
    )


def _interval_chunk(payload, reps: np.ndarray, children) -> dict:
    """Simulate, refit and predict replicates ``reps``: their predictions (len(reps), m)."""
    result, design, marginal, kind, use_u, tol = payload
    spec = result.spec
    model = result.model
    ws = model.workspace
    n, m = len(reps), design.X.shape[0]
    out = {"pred": np.full((n, m), np.nan), "failures": []}
    failed = np.zeros(n, dtype=bool)

    def fail(i, stage, exc):
        failed[i] = True
        out["failures"].append((int(reps[i]), stage, f"{type(exc).__name__}: {exc}"))

    try:
        Y = simulate_block(
            spec,
            children,
            beta=result.beta,
            sigma=result.sigma,
            theta=result.theta,
            u=result.u if use_u else None,
        )
    except Exception as exc:  # noqa: BLE001 - recorded per replicate, the run goes on
        for i in range(n):
            fail(i, "simulate", exc)
        return out
    theta = np.full((n, spec.n_theta), np.nan)
    beta = np.full((n, spec.p), np.nan)
    sigma = np.full(n, np.nan)
    for idx, rb in refit_isolated(
        model, Y, start=result.theta, tol=tol, fail=lambda i, exc: fail(i, "refit", exc)
    ):
        theta[idx], beta[idx], sigma[idx] = rb.theta, rb.beta, rb.sigma
    pred = _xbeta(design.X, np.where(failed[:, None], 0.0, beta))
    for i in range(n):
        if failed[i] or not np.isfinite(sigma[i]):
            pred[i] = np.nan
            continue
        try:
            if design.keep:
                # Conditional modes of replicate i at its refitted theta: one
                # factorization per replicate (the workspace solves for u one at a time).
                resp = ws.responses(Y[:, i : i + 1])
                fac = ws.factorize(theta[i : i + 1], resp)
                u = ws.conditional_modes(theta[i], fac, resp, beta[i])
                pred[i] += _zb(design, spec, theta[i], u)
            if kind == "prediction":
                rng = _noise_generator(children[i])
                for term_index, zraw in marginal:
                    T = spec.terms[term_index].factor(theta[i, spec.theta_slices[term_index]])
                    b = sigma[i] * (rng.standard_normal((m, T.shape[0])) @ T.T)
                    pred[i] += (zraw * b).sum(axis=1)
                pred[i] += sigma[i] * rng.standard_normal(m)
        except Exception as exc:  # noqa: BLE001
            pred[i] = np.nan
            fail(i, "predict", exc)
    out["pred"] = pred
    return out


def _marginal_terms(result, newdata, design: _Design) -> list:
    """(term index, zraw on the predicted rows) of each term a prediction interval
    draws afresh, each row as a new group: the terms re_form leaves out, and the
    kept terms on rows of levels not in the fit (zraw zero on the other rows)."""
    spec = result.spec
    out = []
    for k, term, nfit in zip(design.keep, design.terms, design.n_fitted):
        new_level = term.codes >= nfit
        if new_level.any():
            out.append((k, term.zraw * new_level[:, None]))
    ok = design.ok
    for k, (term, tspec) in enumerate(zip(spec.terms, spec.term_specs)):
        if k in design.keep:
            continue
        if newdata is None:
            zraw = term.zraw
        else:
            rows = newdata.loc[ok]
            missing = sorted(c for c in _required_variables(term.expr) if c not in rows.columns)
            if missing:
                raise KeyError(
                    f"newdata lacks column(s) {missing} of term ({term.expr} | "
                    f"{term.label}), needed for prediction intervals"
                )
            zraw = np.asarray(tspec.get_model_matrix(rows, na_action="raise"), dtype=float)
        out.append((k, zraw))
    return out


def predict_interval(
    result: LMMResult | GLMMResult,
    newdata: pd.DataFrame | None = None,
    *,
    B: int = 1000,
    seed: runner.Seed = None,
    level: float = 0.95,
    kind: str = "confidence",
    re_form: str | None = None,
    allow_new_levels: bool = False,
    n_jobs: int = 1,
    show_progress: bool = False,
    tol: float | None = None,
) -> pd.DataFrame:
    """Percentile intervals of predictions by parametric bootstrap.

    Each replicate simulates a response from the fit, refits the model, and
    predicts ``newdata`` with the refitted beta, theta (and, when ``re_form``
    keeps random terms, the refitted conditional modes).  When ``re_form``
    keeps random terms the responses are simulated conditionally on the fitted
    random effects (lme4's ``use.u = TRUE``), so that the replicates' modes
    vary around the fitted ones; population-level predictions simulate new
    random effects (``use.u = FALSE``).

    ``kind="confidence"``: the interval of the prediction itself.
    ``kind="prediction"``: of a new observation: each replicate adds residual
    noise N(0, sigma*^2) and new random effects (a new group per row) for the
    terms ``re_form`` leaves out and for grouping levels not in the fit.

    Percentile intervals of conditional predictions inherit the shrinkage of
    the replicates' modes towards 0: for a group far from the mean they lean
    towards the population-level prediction.

    Returns a DataFrame with ``fit`` (:func:`predict`), ``lower`` and
    ``upper``, indexed like ``newdata``; ``.attrs`` holds B, the number of
    failed replicates and their (replicate, stage, message).  A replicate's numbers depend only
    on the seed and its number, not on B or ``n_jobs``.

    Examples
    --------
    >>> import mixboot as mb
    >>> r = mb.fit("Reaction ~ 1 + Days + (1 + Days | Subject)", data=mb.datasets.load("reaction"))
    >>> ci = predict_interval(r, pd.DataFrame({"Days": [0, 9]}), B=50, seed=1, re_form="~0")
    >>> list(ci.columns), bool((ci["lower"] < ci["fit"]).all() and (ci["fit"] < ci["upper"]).all())
    (['fit', 'lower', 'upper'], True)
    """
    runner.check_run_options(B=B, n_jobs=n_jobs, tol=tol, show_progress=show_progress)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    spec = result.spec
    fit = predict(result, newdata, re_form=re_form, allow_new_levels=allow_new_levels)
    keep = _selected_terms(spec, re_form)
    design = _design(result, newdata, keep, bool(allow_new_levels))
    marginal = _marginal_terms(result, newdata, design) if kind == "prediction" else []
    use_u = bool(keep)
    job = runner.Job(
        task=_interval_chunk,
        payload=(result, design, marginal, kind, use_u, tol),
        B=int(B),
        chunk=runner.chunk_size(result.model),
        desc=f"predict_interval ({kind})",
        identity={
            "workflow": "predict_interval",
            "fingerprint": spec.fingerprint,
            "REML": result.REML,
            "kind": kind,
            "re_form": repr(re_form),
            "use_u": use_u,
            "tol": tol,
            "version": __version__,
        },
    )
    outcome = runner.run(job, seed, n_jobs=n_jobs, show_progress=show_progress)
    pred = outcome.values["pred"]
    good = np.isfinite(pred).all(axis=1)
    n_failed = int((~good).sum())
    if n_failed == B:
        first = outcome.failures.iloc[0].to_dict() if len(outcome.failures) else None
        raise RuntimeError(f"all {B} bootstrap replicates failed; first failure: {first}")
    if n_failed:
        warnings.warn(
            f"{n_failed} of {B} bootstrap replicates failed and were left out; see "
            ".attrs['failures']",
            RuntimeWarning,
            stacklevel=2,
        )
    alpha = (1 - level) / 2
    lo, hi = np.quantile(pred[good], [alpha, 1 - alpha], axis=0)
    fit_values = np.asarray(fit, dtype=float)
    lower = np.full(fit_values.shape, np.nan)
    upper = np.full(fit_values.shape, np.nan)
    offset = _offset(spec, newdata, design)
    lower[design.ok], upper[design.ok] = lo + offset, hi + offset
    index = newdata.index if newdata is not None else pd.RangeIndex(spec.n)
    frame = pd.DataFrame({"fit": fit_values, "lower": lower, "upper": upper}, index=index)
    frame.attrs.update(
        {
            "B": int(B),
            "level": float(level),
            "kind": kind,
            "failed": n_failed,
            "failures": [tuple(r) for r in outcome.failures.itertuples(index=False)],
            "seed_entropy": int(outcome.seed.entropy),
        }
    )
    return frame


# The fit's methods are these functions under other names (no second signature).
LMMResult.predict = predict
LMMResult.predict_interval = predict_interval
