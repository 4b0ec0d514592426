"""Draw responses from a fitted (or specified) linear mixed model.

y* = X beta + Z b* + e*,  b* = sigma Lambda z,  z ~ N(0, I_q),  e* ~ N(0, sigma^2 I_n).

Column j of a simulation draws from its own random stream: child j of
``numpy.random.SeedSequence(seed)``; the bootstrap uses the same streams, so
replicate j of ``bootMer(result, seed=s)`` refits column j of
``simulate(result, nsim, seed=s)``.

>>> import mixboot as mb
>>> r = mb.fit("Reaction ~ Days + (Days | Subject)", data=mb.datasets.load("reaction"))
>>> mb.simulate(r, nsim=5, seed=42).shape
(180, 5)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .runner import Seed, seed_streams
from .spec import z_columns
from .terms import ReTerm

if TYPE_CHECKING:
    from ._typing import ArrayLike, Values
    from .glmm_result import GLMMResult
    from .result import LMMResult

__all__ = ["simulate", "simulate_block", "simulate_glmm_block", "check_parameters"]


def check_parameters(result, beta=None, sigma=None, theta=None):
    """Validated (beta, sigma, theta) arrays, defaulting to the fit's estimates."""
    spec = result.spec
    if beta is None:
        beta = np.asarray(result.beta, dtype=float)
    else:
        if isinstance(beta, (dict, pd.Series)):
            beta = pd.Series(beta)
            unknown = set(beta.index) - set(spec.fe_names)
            missing = set(spec.fe_names) - set(beta.index)
            if unknown or missing:
                raise ValueError(
                    f"beta names {sorted(unknown)} are not coefficients / "
                    f"{sorted(missing)} are missing; coefficients: {list(spec.fe_names)}"
                )
            beta = beta[list(spec.fe_names)].to_numpy(dtype=float)
        beta = np.asarray(beta, dtype=float).ravel()
        if beta.shape != (spec.p,):
            raise ValueError(
                f"beta must have {spec.p} values {list(spec.fe_names)}, got {beta.size}"
            )
    if getattr(result, "family", None) is not None:
        if sigma is not None:
            raise ValueError("sigma does not apply to a GLMM (its scale is fixed at 1)")
        sigma = 1.0
    sigma = float(result.sigma if sigma is None else sigma)
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    theta = np.asarray(result.theta if theta is None else theta, dtype=float).ravel()
    if theta.shape != (spec.n_theta,):
        raise ValueError(
            f"theta must have {spec.n_theta} values {list(spec.theta_names)}, got {theta.size}"
        )
    if not np.all(np.isfinite(theta)):
        raise ValueError("theta must be finite")
    return beta, sigma, theta


def _draw(children, q: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Standard normals for each stream: z (q,) first, then e (n,).

    z is drawn even when ``use_u`` will replace it, so that a stream's e is the
    same whatever the options.
    """
    # One draw of q + n per stream, into its own row: the Generator's normals carry
    # no state between calls, so this is the same as q normals and then n.
    draws = np.empty((len(children), q + n))
    states = _pcg64_states(children)
    if states is None:
        for j, child in enumerate(children):
            np.random.Generator(np.random.PCG64(child)).standard_normal(out=draws[j])
    else:
        bitgen = np.random.PCG64()
        rng = np.random.Generator(bitgen)
        for j, (state, inc) in enumerate(states):
            bitgen.state = {
                "bit_generator": "PCG64",
                "state": {"state": state, "inc": inc},
                "has_uint32": 0,
                "uinteger": 0,
            }
            rng.standard_normal(out=draws[j])
    return draws[:, :q].T, draws[:, q:].T


_M32, _M128 = 0xFFFFFFFF, (1 << 128) - 1
_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645


def _pcg64_states(children) -> list[tuple[int, int]] | None:
    """``PCG64(child)``'s initial (state, inc) for each SeedSequence, computed together.

    Constructing a PCG64 per stream spends most of its time in
    ``SeedSequence.generate_state``'s per-object overhead; here its output hash
    runs over all streams at once and PCG64's seeding follows in Python integers.
    The streams are unchanged: the first child's result is checked against
    numpy's own, and None (use numpy per stream) is returned where it differs or
    where a child is not a default SeedSequence.
    """
    if not children or not all(
        isinstance(c, np.random.SeedSequence) and c.pool_size == 4 for c in children
    ):
        return None
    pool = np.array([c.pool for c in children], dtype=np.uint64)  # (B, 4) 32-bit words
    words = np.empty((len(children), 8), dtype=np.uint64)
    hash_const = 0x8B51F9DD
    for i in range(8):  # SeedSequence.generate_state(4, np.uint64): 8 32-bit words
        value = pool[:, i % 4] ^ np.uint64(hash_const)
        hash_const = (hash_const * 0x58F38DED) & _M32
        value = (value * np.uint64(hash_const)) & np.uint64(_M32)
        words[:, i] = value ^ (value >> np.uint64(16))
    u64 = words[:, 0::2] | (words[:, 1::2] << np.uint64(32))  # little-endian pairs
    states = []
    for seed_hi, seed_lo, inc_hi, inc_lo in u64.tolist():
        inc = ((((inc_hi << 64) | inc_lo) << 1) | 1) & _M128
        state = (inc + ((seed_hi << 64) | seed_lo)) & _M128  # step from 0, add the seed
        states.append(((state * _PCG_MULT + inc) & _M128, inc))
    check = np.random.PCG64(children[0]).state["state"]
    if (check["state"], check["inc"]) != states[0]:
        return None
    return states


def _spherical_to_b(terms, theta_slices, theta, Zu):
    """b = Lambda z for a (q, B) block of spherical effects."""
    out, off = [], 0
    for term, sl in zip(terms, theta_slices):
        T = term.factor(theta[sl])
        z = Zu[off : off + term.q].T.reshape(-1, term.nlevels, term.p)
        out.append((z @ T.T).reshape(-1, term.q).T)
        off += term.q
    return np.concatenate(out, axis=0)


def simulate_block(spec, children, *, beta, sigma, theta, u=None, design=None):
    """Responses (n, len(children)) of model ``spec`` for the given streams.

    ``u``: spherical modes to condition on (lme4's use.u), one array per term;
    ``design``: (X, terms) for new data.
    """
    X, terms = (spec.X, spec.terms) if design is None else design
    n = X.shape[0]
    q = sum(t.q for t in terms)
    Zu, E = _draw(children, q, n)
    if u is not None:
        # Condition on the fitted spherical modes u (b = Lambda u): with the
        # fitted theta this reproduces the fitted b; levels not in the fit keep their draws.
        off = 0
        for term, u_term in zip(terms, u):
            Zu[off : off + u_term.size] = u_term.reshape(-1)[:, None] / sigma
            off += term.q
    B = _spherical_to_b(terms, spec.theta_slices, theta, Zu) * sigma
    # Z b element by element: a response's bits must not depend on how many
    # columns are simulated together.
    return (X @ beta)[:, None] + z_columns(terms, B, n) + sigma * E


def simulate_glmm_block(
    spec, family, children, *, beta, theta, u=None, design=None, trials=None, offset=None
):
    """GLMM responses (n, len(children)) for the given streams, on the fitted scale.

    eta* = offset + X beta + Z Lambda z with z ~ N(0, I) (or z = u, lme4's use.u),
    then y* from the family at mu = linkinv(eta*): proportions of ``trials`` for
    binomial, counts for Poisson.  A stream draws z (q values) first, then the
    response in observation order.
    """
    X, terms = (spec.X, spec.terms) if design is None else design
    n = X.shape[0]
    q = sum(t.q for t in terms)
    trials = np.ones(n) if trials is None else np.asarray(trials, dtype=float)
    fixed = X @ beta + (0.0 if offset is None else np.asarray(offset, dtype=float))
    Y = np.empty((n, len(children)))
    for j, child in enumerate(children):
        rng = np.random.Generator(np.random.PCG64(child))
        z = rng.standard_normal(q)
        if u is not None:
            off = 0
            for term, u_term in zip(terms, u):
                z[off : off + u_term.size] = u_term.reshape(-1)
                off += term.q
        b = _spherical_to_b(terms, spec.theta_slices, theta, z[:, None])
        eta = fixed + z_columns(terms, b, n)[:, 0]
        Y[:, j] = family.simulate(rng, family.link.linkinv(eta), trials)
    return Y


def fixed_matrix(spec, newdata: pd.DataFrame) -> np.ndarray:
    """X of ``newdata`` under the fitted coding (no grouping columns needed)."""
    try:
        Xall = np.asarray(spec.fixed_spec.get_model_matrix(newdata, na_action="raise"), dtype=float)
    except Exception as exc:  # noqa: BLE001 - formulaic's errors name the column
        raise ValueError(f"cannot build the fixed-effects matrix for newdata: {exc}") from exc
    return Xall[:, spec.kept_columns]


def _design_for(result, newdata: pd.DataFrame):
    """X and random terms of ``newdata`` under the fitted coding; new levels appended."""
    spec = result.spec
    if not isinstance(newdata, pd.DataFrame):
        raise TypeError("newdata must be a pandas DataFrame")
    X = fixed_matrix(spec, newdata)
    terms = []
    for term, tspec in zip(spec.terms, spec.term_specs):
        missing = [g for g in term.group_vars if g not in newdata.columns]
        if missing:
            raise KeyError(
                f"newdata lacks grouping column(s) {missing} of term ({term.expr} | {term.label})"
            )
        zraw = np.asarray(tspec.get_model_matrix(newdata, na_action="raise"), dtype=float)
        labels = (
            newdata[term.label.split(":")].astype(str).agg(":".join, axis=1)
            if len(term.group_vars) > 1
            else newdata[term.group_vars[0]]
        )
        index = {lev: i for i, lev in enumerate(term.levels)}
        index_str = {str(lev): i for i, lev in enumerate(term.levels)}
        levels = list(term.levels)
        codes = np.empty(len(newdata), dtype=np.int64)
        for i, lab in enumerate(labels):
            code = index.get(lab, index_str.get(str(lab)))
            if code is None:
                code = len(levels)
                levels.append(lab)
                index[lab] = code
            codes[i] = code
        terms.append(
            ReTerm(
                label=term.label,
                group_vars=term.group_vars,
                expr=term.expr,
                colnames=term.colnames,
                levels=tuple(levels),
                codes=codes,
                zraw=zraw,
            )
        )
    return X, tuple(terms)


def simulate(
    result: LMMResult | GLMMResult,
    nsim: int = 1,
    seed: Seed = None,
    *,
    beta: Values | None = None,
    sigma: float | None = None,
    theta: ArrayLike | None = None,
    use_u: bool = False,
    newdata: pd.DataFrame | None = None,
    trials: ArrayLike | None = None,
) -> np.ndarray:
    """Simulate ``nsim`` responses from a fitted model; returns an (n, nsim) array.

    For a GLMM the responses are on the fitted scale: proportions of the trials
    for binomial models (0/1 for Bernoulli), counts for Poisson; ``trials``
    gives the binomial trials of ``newdata`` rows (1 by default).

    ``beta``, ``sigma``, ``theta`` replace the estimates (beta may be a dict by
    coefficient name).  ``use_u=True`` conditions on the fitted random effects
    (lme4's use.u).  ``newdata`` simulates for another data frame under the same
    formula; grouping levels not seen in the fit draw fresh effects.

    Examples
    --------
    >>> import mixboot as mb
    >>> r = mb.fit("Reaction ~ Days + (Days | Subject)", data=mb.datasets.load("reaction"))
    >>> y = mb.simulate(r, nsim=3, seed=1)
    >>> y.shape
    (180, 3)
    >>> y_slope0 = mb.simulate(r, nsim=3, seed=1, beta={"(Intercept)": 250.0, "Days": 0.0})
    """
    if isinstance(nsim, bool) or not isinstance(nsim, (int, np.integer)) or nsim < 1:
        raise ValueError(f"nsim must be a positive integer, got {nsim!r}")
    beta, sigma, theta = check_parameters(result, beta, sigma, theta)
    _, children = seed_streams(seed, int(nsim))
    design = None if newdata is None else _design_for(result, newdata)
    family = getattr(result, "family", None)
    if family is not None:
        if newdata is None:
            trials, offset = result.spec.trials, result.spec.offset
        else:
            trials = None if trials is None else np.asarray(trials, dtype=float)
            offset = result.spec.offset_of(newdata)
        return simulate_glmm_block(
            result.spec,
            family,
            children,
            beta=beta,
            theta=theta,
            u=result.u if use_u else None,
            design=design,
            trials=trials,
            offset=offset,
        )
    Y = simulate_block(
        result.spec,
        children,
        beta=beta,
        sigma=sigma,
        theta=theta,
        u=result.u if use_u else None,
        design=design,
    )
    # Responses on the data's scale: the model's offset(...) terms go back in.
    offset = result.spec.offset if newdata is None else result.spec.offset_of(newdata)
    return Y if offset is None else Y + np.asarray(offset, dtype=float)[:, None]
