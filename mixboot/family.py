"""GLM families and link functions for generalized linear mixed models.

The numbers follow R's ``stats`` package (``binomial()``, ``poisson()`` and
``make.link``), clamps included, so that fits, deviances and AICs agree with
``glmer`` to rounding:

* :class:`Link` maps the mean ``mu`` to the linear predictor ``eta``
  (``linkfun``), back (``linkinv``, clamped away from the edges of the mean's
  range exactly as R does) and gives ``d mu / d eta`` (``mu_eta``).
* :class:`Family` adds the variance function, the unit deviances
  (``dev_resids``), minus twice the conditional log-likelihood (``aic``), a
  random draw of a response (``simulate``) and R's validity checks.
* :func:`prepare_response` turns a response column (counts with failures,
  proportions with trial counts, 0/1, booleans or a two-level factor) into
  the proportion, prior weight and trial count vectors used internally.

Binomial responses are held as proportions ``y = successes / trials`` with
prior weights equal to the trials, as R's ``glm`` does.

>>> import numpy as np
>>> fam = get_family("binomial")
>>> fam.link.name, fam.link.linkinv(np.array([0.0, 40.0]))
('logit', array([0.5, 1. ]))
>>> y, w, n = prepare_response(fam, np.array([3, 0, 5]), failures=np.array([1, 4, 0]))
>>> y, w
(array([0.75, 0.  , 1.  ]), array([4., 4., 5.]))
>>> round(float(fam.dev_resids(y, np.full(3, 0.5), w).sum()), 4)
13.5231
>>> poisson().variance(np.array([2.0, 3.0]))
array([2., 3.])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from ._typing import ArrayLike

__all__ = ["Family", "Link", "binomial", "get_family", "poisson", "prepare_response"]

EPS = np.finfo(float).eps  # R's .Machine$double.eps (DBL_EPSILON)
_INVEPS = 1.0 / EPS
_LOGIT_THRESH = 30.0  # R's THRESH / MTHRESH in family.c
_PROBIT_THRESH = -stats.norm.ppf(EPS)  # -qnorm(.Machine$double.eps), about 8.12
_TOL_INTEGER = 1e-3  # R's binomial initialize: warns when |m - round(m)| > 0.001
_TOL_COUNTS = 1e-8  # counts given with failures= must be integers to this tolerance


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


# ---------------------------------------------------------------- links


def _logit_linkfun(mu):
    mu = _arr(mu)
    return np.log(mu / (1.0 - mu))


def _logit_linkinv(eta):
    # R's C code: tmp = eps if eta < -30, 1/eps if eta > 30, else exp(eta);
    # mu = tmp / (1 + tmp).
    eta = _arr(eta)
    with np.errstate(over="ignore"):
        tmp = np.exp(eta)
    if not (np.abs(eta) <= _LOGIT_THRESH).all():  # rare: only then the clamps
        tmp = np.where(eta < -_LOGIT_THRESH, EPS, np.where(eta > _LOGIT_THRESH, _INVEPS, tmp))
    return tmp / (1.0 + tmp)


def _logit_mu_eta(eta):
    # R's C code: eps when |eta| > 30, else exp(eta) / (1 + exp(eta))^2.
    eta = _arr(eta)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(eta)
        opexp = 1.0 + e
        inner = e / (opexp * opexp)
    return np.where(np.abs(eta) > _LOGIT_THRESH, EPS, inner)


def _probit_linkinv(eta):
    return stats.norm.cdf(np.clip(_arr(eta), -_PROBIT_THRESH, _PROBIT_THRESH))


def _probit_mu_eta(eta):
    return np.maximum(stats.norm.pdf(_arr(eta)), EPS)


def _cloglog_linkfun(mu):
    # eta = log(-log(1 - mu))
    return np.log(-np.log(1.0 - _arr(mu)))


def _cloglog_linkinv(eta):
    # mu = 1 - exp(-exp(eta)), kept inside [eps, 1 - eps]
    with np.errstate(over="ignore"):
        mu = -np.expm1(-np.exp(_arr(eta)))
    return np.maximum(np.minimum(mu, 1.0 - EPS), EPS)


def _cloglog_mu_eta(eta):
    # d mu / d eta = exp(eta) exp(-exp(eta)); eta capped at 700 as in R
    eta = np.minimum(_arr(eta), 700.0)
    return np.maximum(np.exp(eta) * np.exp(-np.exp(eta)), EPS)


def _log_linkinv(eta):
    with np.errstate(over="ignore"):
        return np.maximum(np.exp(_arr(eta)), EPS)


def _always_valid(eta) -> bool:
    return True


def _sqrt_valid_eta(eta) -> bool:
    eta = _arr(eta)
    return bool(np.all(np.isfinite(eta)) and np.all(eta > 0))


@dataclass(frozen=True)
class Link:
    """A link function ``eta = g(mu)`` with R's inverse, derivative and clamps."""

    name: str
    _linkfun: Callable = field(repr=False, compare=False)
    _linkinv: Callable = field(repr=False, compare=False)
    _mu_eta: Callable = field(repr=False, compare=False)
    _valid_eta: Callable = field(default=_always_valid, repr=False, compare=False)

    def linkfun(self, mu: ArrayLike) -> np.ndarray:
        """``eta = g(mu)``."""
        return self._linkfun(mu)

    def linkinv(self, eta: ArrayLike) -> np.ndarray:
        """``mu = g^{-1}(eta)``, clamped as R clamps it."""
        return self._linkinv(eta)

    def mu_eta(self, eta: ArrayLike) -> np.ndarray:
        """``d mu / d eta`` at ``eta`` (floored at machine epsilon where R floors it)."""
        return self._mu_eta(eta)

    def valid_eta(self, eta: ArrayLike) -> bool:
        """R's ``valideta``: whether ``eta`` lies in the link's domain."""
        return bool(self._valid_eta(eta))


LINKS = {
    "logit": Link("logit", _logit_linkfun, _logit_linkinv, _logit_mu_eta),
    "probit": Link("probit", lambda mu: stats.norm.ppf(_arr(mu)), _probit_linkinv, _probit_mu_eta),
    "cloglog": Link("cloglog", _cloglog_linkfun, _cloglog_linkinv, _cloglog_mu_eta),
    "log": Link("log", lambda mu: np.log(_arr(mu)), _log_linkinv, _log_linkinv),
    "identity": Link("identity", _arr, _arr, lambda eta: np.ones_like(_arr(eta))),
    "sqrt": Link(
        "sqrt",
        lambda mu: np.sqrt(_arr(mu)),
        lambda eta: _arr(eta) ** 2,
        lambda eta: 2.0 * _arr(eta),
        _sqrt_valid_eta,
    ),
}

# Supported links per family, canonical first.
FAMILY_LINKS = {
    "binomial": ("logit", "probit", "cloglog"),
    "poisson": ("log", "identity", "sqrt"),
}


# ---------------------------------------------------------------- families


def _ylogy(y, mu):
    # y * log(y / mu), taken as 0 where y == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(y != 0, y * np.log(np.where(y != 0, y, 1.0) / mu), 0.0)


@dataclass(frozen=True)
class Family:
    """A GLM family (``"binomial"`` or ``"poisson"``) with its link.

    ``bernoulli`` marks a binomial family asked for as ``"bernoulli"``: the
    response must then be 0/1 (it does not enter comparisons).
    """

    name: str
    link: Link
    bernoulli: bool = field(default=False, compare=False)

    def variance(self, mu: ArrayLike) -> np.ndarray:
        """Variance function: ``mu (1 - mu)`` (binomial) or ``mu`` (poisson)."""
        mu = _arr(mu)
        return mu * (1.0 - mu) if self.name == "binomial" else mu.copy()

    def dev_resids(self, y: ArrayLike, mu: ArrayLike, wt: ArrayLike) -> np.ndarray:
        """Unit deviances, R's ``family$dev.resids``; their sum is the deviance."""
        y, mu, wt = _arr(y), _arr(mu), _arr(wt)
        if self.name == "binomial":
            return 2.0 * wt * (_ylogy(y, mu) + _ylogy(1.0 - y, 1.0 - mu))
        # poisson: 2 wt (y log(y/mu) - (y - mu)), which is 2 wt mu at y = 0
        return 2.0 * wt * (_ylogy(y, mu) - (y - mu))

    def aic(self, y: ArrayLike, mu: ArrayLike, wt: ArrayLike, trials: ArrayLike) -> float:
        """Minus twice the conditional log-likelihood, R's ``family$aic``.

        Binomial: ``m`` is the trials when any exceeds 1, else the prior
        weights; the sum is of ``wt/m * log dbinom(round(m y), round(m), mu)``
        (0 where ``m == 0``). Poisson: the sum of ``wt * log dpois(y, mu)``.
        """
        y, mu, wt, trials = _arr(y), _arr(mu), _arr(wt), _arr(trials)
        if self.name == "binomial":
            m = trials if np.any(trials > 1) else wt
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(m > 0, wt / np.where(m > 0, m, 1.0), 0.0)
            logp = stats.binom.logpmf(np.round(m * y), np.round(m), mu)
            return float(-2.0 * np.sum(scale * logp))
        return float(-2.0 * np.sum(stats.poisson.logpmf(y, mu) * wt))

    def simulate(self, rng: np.random.Generator, mu: ArrayLike, trials: ArrayLike) -> np.ndarray:
        """One random response at means ``mu``, drawn in observation order.

        Binomial: successes out of ``trials`` divided by ``trials`` (a
        proportion, as responses are held internally); poisson: counts.
        """
        mu = _arr(mu)
        if self.name == "binomial":
            trials = _arr(trials)
            n = np.rint(trials)
            if np.any(np.abs(trials - n) > _TOL_COUNTS) or np.any(n < 1):
                raise ValueError(
                    "trials: cannot simulate a binomial response from "
                    "non-integer or zero trial counts (prior weights)"
                )
            return rng.binomial(n.astype(np.int64), mu) / n
        return rng.poisson(mu).astype(float)

    def valid_mu(self, mu: ArrayLike) -> bool:
        """R's ``validmu``: binomial means in (0, 1), poisson means > 0, all finite."""
        mu = _arr(mu)
        ok = np.all(np.isfinite(mu)) and np.all(mu > 0)
        if self.name == "binomial":
            ok = ok and np.all(mu < 1)
        return bool(ok)

    def valid_eta(self, eta: ArrayLike) -> bool:
        """R's ``valideta`` of the link."""
        return self.link.valid_eta(eta)

    def mustart(self, y: ArrayLike, wt: ArrayLike) -> np.ndarray:
        """R's starting means: ``(wt y + 0.5) / (wt + 1)`` (binomial), ``y + 0.1`` (poisson)."""
        y, wt = _arr(y), _arr(wt)
        if self.name == "binomial":
            return (wt * y + 0.5) / (wt + 1.0)
        return y + 0.1


def get_family(family: str | Family, link: str | None = None) -> Family:
    """The :class:`Family` for ``family`` (a name or a Family) and ``link``.

    ``link=None`` gives the canonical link (logit for binomial, log for
    poisson), or keeps the link of a given Family.
    """
    if isinstance(family, Family):
        if link is None or link == family.link.name:
            return family
        name, bernoulli = family.name, family.bernoulli
    elif isinstance(family, str) and family.lower() in ("binomial", "bernoulli", "poisson"):
        lowered = family.lower()
        name = "poisson" if lowered == "poisson" else "binomial"
        bernoulli = lowered == "bernoulli"
    else:
        raise ValueError(
            f"family: unknown family {family!r}; supported: "
            "'binomial', 'bernoulli', 'poisson' (or a Family)"
        )
    supported = FAMILY_LINKS[name]
    if link is None:
        link = supported[0]
    if isinstance(link, Link):
        link = link.name
    if not isinstance(link, str) or link not in supported:
        raise ValueError(
            f"link: {link!r} is not supported for the {name} family; "
            f"supported: {', '.join(supported)}"
        )
    return Family(name, LINKS[link], bernoulli=bernoulli)


def binomial(link: str = "logit") -> Family:
    """The binomial family (logit, probit or cloglog link)."""
    return get_family("binomial", link)


def poisson(link: str = "log") -> Family:
    """The poisson family (log, identity or sqrt link)."""
    return get_family("poisson", link)


# ---------------------------------------------------------------- responses


def _rows(mask, limit: int = 5) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in idx[:limit])
    return shown + (f", ... ({idx.size} in all)" if idx.size > limit else "")


def _numeric(values, what: str) -> np.ndarray:
    """A float vector from ``values``, refusing missing or infinite entries."""
    try:
        arr = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"{what}: expected numeric values") from None
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{what}: missing or infinite values in rows {_rows(bad)}")
    return arr


def _binary_levels(y, name: str) -> np.ndarray | None:
    """0/1 for a bool or two-level factor response (first level = failure), else None."""
    series = y if isinstance(y, pd.Series) else pd.Series(np.asarray(y).reshape(-1))
    if series.isna().any():
        raise ValueError(f"{name}: missing values in rows {_rows(series.isna().to_numpy())}")
    if pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=float)
    if isinstance(series.dtype, pd.CategoricalDtype):
        present = set(series.unique())
        levels = [c for c in series.cat.categories if c in present]  # lme4 drops unused levels
    elif pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series):
        if all(isinstance(v, (bool, np.bool_)) for v in series):
            return series.to_numpy(dtype=float)
        if not all(isinstance(v, str) for v in series):
            return None
        levels = sorted(series.unique())
    else:
        return None
    if len(levels) != 2:
        raise ValueError(
            f"{name}: a binomial response given as a factor needs exactly two "
            f"levels (first = failure, second = success); found {len(levels)}: "
            f"{', '.join(map(str, levels))}"
        )
    return (series != levels[0]).to_numpy(dtype=float)


def _warn_noninteger(m, what: str) -> None:
    if np.any(np.abs(m - np.round(m)) > _TOL_INTEGER):
        warnings.warn(
            f"{what}: non-integer #successes in a binomial glm!", UserWarning, stacklevel=3
        )


def _counts(values, what: str) -> np.ndarray:
    arr = _numeric(values, what)
    if np.any(arr < 0):
        raise ValueError(f"{what}: negative counts in rows {_rows(arr < 0)}")
    if np.any(np.abs(arr - np.round(arr)) > _TOL_COUNTS):
        raise ValueError(
            f"{what}: non-integer counts in rows {_rows(np.abs(arr - np.round(arr)) > _TOL_COUNTS)}"
        )
    return np.round(arr)


def prepare_response(
    family: Family,
    y: ArrayLike | pd.Series,
    *,
    weights: ArrayLike | None = None,
    failures: ArrayLike | None = None,
    name: str = "response",
    bernoulli: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Response proportions, prior weights and trial counts for ``family``.

    Binomial: ``failures`` given means ``y`` counts successes (lme4's
    ``cbind(successes, failures)``); otherwise ``y`` is a proportion with
    ``weights`` trials, or 0/1, bool or a two-level factor (first level =
    failure). Poisson: ``y`` holds non-negative counts and ``weights`` are
    prior weights. Returns float arrays ``(y, prior_weights, trials)``.
    """
    bernoulli = bernoulli or family.bernoulli
    if family.name == "poisson":
        yv = _numeric(y, name)
        if np.any(yv < 0):
            raise ValueError(
                f"{name}: negative values not allowed for the poisson family (rows {_rows(yv < 0)})"
            )
        if np.any(yv != np.round(yv)):
            warnings.warn(
                f"{name}: non-integer counts for the poisson family", UserWarning, stacklevel=2
            )
        wt = np.ones_like(yv) if weights is None else _weights(weights, yv.size, positive=False)
        return yv, wt, np.ones_like(yv)

    if failures is not None:
        s = _counts(y, f"{name} (successes)")
        f = _counts(failures, "failures")
        if f.size != s.size:
            raise ValueError(f"failures: length {f.size} differs from {name}'s {s.size}")
        n = s + f
        if np.any(n == 0):
            raise ValueError(
                f"{name}: rows {_rows(n == 0)} have zero trials (successes + failures)"
            )
        wt = n if weights is None else n * _weights(weights, n.size, positive=True)
        return s / n, wt, n

    binary = _binary_levels(y, name)
    yv = binary if binary is not None else _numeric(y, name)
    if np.any((yv < 0) | (yv > 1)):
        raise ValueError(
            f"{name}: binomial response values must be 0 <= y <= 1 (rows "
            f"{_rows((yv < 0) | (yv > 1))}); give counts of successes with failures="
        )
    if bernoulli and np.any((yv != 0) & (yv != 1)):
        raise ValueError(
            f"{name}: the bernoulli family needs a 0/1 response "
            f"(rows {_rows((yv != 0) & (yv != 1))})"
        )
    wt = np.ones_like(yv) if weights is None else _weights(weights, yv.size, positive=True)
    _warn_noninteger(wt * yv, name)
    return yv, wt, wt.copy()


def _weights(weights, size: int, *, positive: bool) -> np.ndarray:
    wt = _numeric(weights, "weights")
    if wt.size != size:
        raise ValueError(f"weights: length {wt.size} differs from the response's {size}")
    bad = wt <= 0 if positive else wt < 0
    if bad.any():
        need = "positive (numbers of trials)" if positive else "non-negative"
        raise ValueError(f"weights: must be {need}; rows {_rows(bad)}")
    return wt
