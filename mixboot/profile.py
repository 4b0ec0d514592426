"""Profile-likelihood confidence intervals, as lme4's ``confint(method = "profile")``.

Each parameter on the reported scale -- a random-effect term's standard deviations
and correlations, ``sigma``, then the fixed effects -- is fixed in turn and the ML
deviance minimized over all the others.  The signed root

    zeta(x) = sign(x - x_hat) * sqrt(D_profile(x) - D_min)

is then solved for -/+ the normal quantile (root-finding on zeta itself, Brent's
method).  Profiles always use the ML deviance: a REML fit is refitted by ML first
(as lme4 does), so REML and ML fits of one model give the same intervals.

The ML deviance at (theta, sigma, beta) is

    log|L_Z|^2 + n log(2 pi sigma^2)
        + [pwrss(theta) + (beta - beta_hat)' L_X L_X' (beta - beta_hat)] / sigma^2,

all from one factorization of the workspace, so every profile is an optimization
over theta alone (or an equivalent parametrization of it):

* ``sigma`` fixed: minimize over theta with that sigma;
* an SD fixed at s: sigma = s / |row of T|, minimize over theta (s = 0: that row of
  T is zero and sigma is profiled out);
* a correlation fixed: theta from (relative SDs, correlations), sigma profiled out;
* a fixed effect beta_j = b: minimizing over the other betas leaves
  pwrss + (b - beta_hat_j)^2 / V_jj (V = (L_X L_X')^-1), sigma profiled out.

>>> import mixboot as mb
>>> r = mb.fit("Reaction ~ 1 + Days + (1 + Days | Subject)", data=mb.datasets.load("reaction"))
>>> ci = profile_intervals(r)
>>> list(ci.index)
['sd_(Intercept)|Subject', 'cor_Days.(Intercept)|Subject', 'sd_Days|Subject', 'sigma', '(Intercept)', 'Days']
>>> ci.loc["sigma"].round(2).tolist()
[23.84, 30.04]
"""

from __future__ import annotations

from dataclasses import dataclass

import nlopt
import numpy as np
import pandas as pd
from scipy import optimize, special

from .newton import newton_batch

__all__ = ["reported_parameters", "profile_intervals", "ProfileParameter"]

_LOG2PI = np.log(2.0 * np.pi)
_COR_EDGE = 1e-9


@dataclass(frozen=True)
class ProfileParameter:
    """One reported parameter: its lme4 name, kind and where it lives.

    kind: "sd" (term, i), "cor" (term, i, j with i > j), "sigma", or "beta" (index j).
    """

    name: str
    kind: str
    term: int = -1
    i: int = -1
    j: int = -1


def reported_parameters(spec) -> list[ProfileParameter]:
    """lme4's ``confint(oldNames = FALSE)`` rows for a model specification.

    Per random term (columns of its covariance, lower triangle column by column):
    ``sd_<col>|<group>`` on the diagonal, ``cor_<row>.<col>|<group>`` below it; a
    grouping factor's second term is ``<group>.1`` and so on; then ``sigma`` and the
    fixed effects.
    """
    out: list[ProfileParameter] = []
    seen: dict[str, int] = {}
    for t, term in enumerate(spec.terms):
        k = seen.get(term.label, 0)
        seen[term.label] = k + 1
        grp = term.label if k == 0 else f"{term.label}.{k}"
        cols = term.colnames
        for j in range(term.p):
            for i in range(j, term.p):
                if i == j:
                    out.append(ProfileParameter(f"sd_{cols[i]}|{grp}", "sd", t, i, i))
                else:
                    out.append(ProfileParameter(f"cor_{cols[i]}.{cols[j]}|{grp}", "cor", t, i, j))
    out.append(ProfileParameter("sigma", "sigma"))
    out += [ProfileParameter(name, "beta", j=j) for j, name in enumerate(spec.fe_names)]
    return out


# --------------------------------------------------------------------------- the deviance
class _Deviance:
    """ML deviance pieces at a batch of theta for one model's own response."""

    def __init__(self, ws):
        self.ws = ws
        self.n = ws.n

    def pieces(self, thetas: np.ndarray, need_beta: bool = False):
        """log|L_Z|^2, pwrss, and (need_beta) beta_hat, vcov_unscaled for each theta row."""
        ws = self.ws
        thetas = np.atleast_2d(np.asarray(thetas, dtype=float))
        facs = [ws.factorize(thetas)] if ws.dense else [ws.factorize(th[None]) for th in thetas]
        logdet, pwrss, beta, vc = [], [], [], []
        for fac in facs:
            ok = fac.ok
            with np.errstate(divide="ignore", invalid="ignore"):
                d = fac.diagonal()
                C = fac.C
                if C.shape[-1] == 1:
                    logc = np.log(C[..., 0, 0]).sum(axis=1)
                else:
                    logc = np.linalg.slogdet(C)[1].sum(axis=1)
                ld = logc + 2.0 * np.log(d[:, : ws.qr]).sum(axis=1)
            ok = ok & np.isfinite(ld) & np.isfinite(d[:, -1])
            logdet.append(np.where(ok, ld, np.inf))
            pwrss.append(np.where(ok, d[:, -1] ** 2, np.inf))
            if need_beta:
                b, _ = ws.fixef_sigma(fac)
                beta.append(b)
                vc.append(ws.vcov_unscaled_batch(fac))
        out = (np.concatenate(logdet), np.concatenate(pwrss))
        if need_beta:
            out += (np.concatenate(beta), np.concatenate(vc))
        return out

    def profiled(self, logdet, r2):
        """The deviance with sigma at its optimum r2 / n."""
        with np.errstate(divide="ignore", invalid="ignore"):
            val = logdet + self.n * (1.0 + _LOG2PI + np.log(r2 / self.n))
        return np.where(np.isfinite(val), val, np.inf)


def _inner_minimize(F, x0, lower, upper, newton):
    """Minimize the vectorized F (b, k) -> (b,) from x0: batched Newton where allowed
    (F even in each bounded element, see :mod:`mixboot.newton`), BOBYQA within the
    bounds where Newton is not allowed or does not converge."""
    x0 = np.asarray(x0, dtype=float)
    if newton and x0.size:
        th, f, conv, _ = newton_batch(
            lambda t, which: F(t), x0[None], ftol_rel=1e-13, max_evals=4000
        )
        if conv[0] and np.isfinite(f[0]):
            x = th[0]
            bounded = np.isfinite(lower) & (lower == 0)
            x = np.where(bounded, np.abs(x), x)
            return x, float(f[0])
        if np.isfinite(f[0]):
            x0 = np.where(np.isfinite(lower) & (lower == 0), np.abs(th[0]), th[0])
    return _minimize(
        lambda v: float(F(v[None])[0]), x0, lower, upper, np.maximum(0.2 * np.abs(x0), 0.05)
    )


def _minimize(f, x0, lower, upper, step):
    """BOBYQA from x0 within [lower, upper]; returns (x, f(x)) of the best point seen."""
    x0 = np.clip(np.asarray(x0, dtype=float), lower, upper)
    k = x0.size
    if k == 0:
        return x0, float(f(x0))
    best = [np.inf, x0.copy()]

    def obj(x, grad):
        x = np.asarray(x)
        v = float(f(x))
        if v < best[0]:
            best[0], best[1] = v, x.copy()
        return v if np.isfinite(v) else 1e300

    opt = nlopt.opt(nlopt.LN_BOBYQA, k)
    opt.set_min_objective(obj)
    opt.set_lower_bounds(np.where(np.isfinite(lower), lower, -1e300).tolist())
    opt.set_upper_bounds(np.where(np.isfinite(upper), upper, 1e300).tolist())
    opt.set_ftol_rel(1e-13)
    opt.set_ftol_abs(1e-10)
    opt.set_xtol_abs(1e-9)
    opt.set_maxeval(20_000)
    # the initial step must keep the start's trust region inside the bounds
    room = np.minimum(x0 - lower, upper - x0)
    st = np.asarray(step, dtype=float)
    st = np.where(room > 1e-12, np.minimum(st, np.maximum(room, 1e-12)), st)
    opt.set_initial_step(np.maximum(st, 1e-8).tolist())
    try:
        opt.optimize(x0.tolist())
    except (nlopt.RoundoffLimited, ValueError, RuntimeError):
        pass
    if not np.isfinite(best[0]):
        return x0, float(f(x0))
    return best[1], best[0]


# --------------------------------------------------------------------------- one parameter
class _Profiler:
    """zeta(x) for one parameter; warm starts from the nearest point done."""

    def __init__(self, ctx, par: ProfileParameter):
        self.ctx, self.par = ctx, par
        self.done: list[tuple[float, np.ndarray]] = []  # (x, free vector at its optimum)
        c = ctx
        spec = c.spec
        k = par.kind
        if k == "beta":
            self.estimate = float(c.beta[par.j])
            self.scale = float(c.sigma * np.sqrt(c.vcov[par.j, par.j]))
            self.domain = (-np.inf, np.inf)
        elif k == "sigma":
            self.estimate = c.sigma
            self.scale = c.sigma / np.sqrt(2.0 * c.n)
            self.domain = (0.0, np.inf)
        elif k == "sd":
            T = spec.terms[par.term].factor(c.theta[spec.theta_slices[par.term]])
            self.rows = (
                np.flatnonzero(spec.terms[par.term].tril[0] == par.i)
                + spec.theta_slices[par.term].start
            )
            self.estimate = float(c.sigma * np.linalg.norm(T[par.i]))
            self.scale = max(0.25 * self.estimate, 0.05 * c.sigma)
            self.domain = (0.0, np.inf)
        else:
            sds, R = _sd_cor(spec.terms[par.term].factor(c.theta[spec.theta_slices[par.term]]))
            self.estimate = float(np.clip(R[par.i, par.j], -1, 1)) if np.all(sds > 0) else 0.0
            self.scale = 0.25 * (1 - self.estimate**2) + 0.02
            self.domain = (-1.0, 1.0)

    # the start of each kind's free vector at the ML fit
    def _start0(self):
        c, par = self.ctx, self.par
        if par.kind == "cor":
            return c.cor_free0(par)
        return c.theta.copy()

    def _warm(self, x):
        if not self.done:
            return self._start0(), None
        xs = np.array([d[0] for d in self.done])
        dist = np.abs(xs - x)
        if self.par.kind == "sd" and x > 0:
            dist[xs == 0] = np.inf  # that row of T is zero there: no scale to keep
            if not np.isfinite(dist).any():
                return self._start0(), None
        i = int(np.argmin(dist))
        return self.done[i][1].copy(), self.done[i][0]

    def deviance(self, x: float) -> float:
        """The profiled ML deviance with this parameter fixed at ``x``."""
        c, par = self.ctx, self.par
        start, x_prev = self._warm(x)
        dev = c.dev
        lower, upper = c.lower.copy(), np.full(c.lower.size, np.inf)
        embed = None
        newton = c.ws.dense
        if par.kind == "sigma":
            s2 = x * x

            def F(th):
                ld, r2 = dev.pieces(th)
                return ld + c.n * (_LOG2PI + np.log(s2)) + r2 / s2
        elif par.kind == "beta":
            j = par.j

            def F(th):
                ld, r2, b, vc = dev.pieces(th, need_beta=True)
                with np.errstate(divide="ignore", invalid="ignore"):
                    r2 = r2 + (x - b[:, j]) ** 2 / vc[:, j, j]
                return dev.profiled(ld, r2)
        elif par.kind == "sd" and x > 0:
            rows, s2 = self.rows, x * x
            if x_prev is not None and x_prev > 0:
                start[rows] *= x / x_prev
            if not np.any(start[rows] != 0):  # a zero SD at the fit: start on the diagonal
                start[rows[-1]] = x / c.sigma

            def F(th):
                rn2 = np.sum(th[:, rows] ** 2, axis=1)
                ld, r2 = dev.pieces(th)
                with np.errstate(divide="ignore", invalid="ignore"):
                    val = ld + c.n * (_LOG2PI + np.log(s2 / rn2)) + r2 * rn2 / s2
                return np.where((rn2 > 0) & np.isfinite(val), val, np.inf)
        elif par.kind == "sd":  # x == 0: that row of T is zero, sigma profiled out
            rows = self.rows
            keep = np.setdiff1d(np.arange(c.lower.size), rows)
            full = start.copy()
            full[rows] = 0.0

            def _embed(v):
                th = np.repeat(full[None], v.shape[0], axis=0)
                th[:, keep] = v
                return th

            embed = _embed

            def F(v):
                ld, r2 = dev.pieces(embed(v))
                return dev.profiled(ld, r2)

            start, lower, upper = start[keep], lower[keep], upper[keep]
        else:  # a correlation
            rho = float(np.clip(x, -1 + _COR_EDGE, 1 - _COR_EDGE))
            to_theta = c.cor_to_theta(par, rho)
            lower, upper = c.cor_bounds(par)
            # with no other correlation in the term the map is even in each SD: Newton
            # may run unbounded (|SD| is used)
            newton = newton and np.all(np.isinf(upper[np.isfinite(lower) & (lower < 0)]))

            def F(v):
                out = np.full(v.shape[0], np.inf)
                ths = [to_theta(row) for row in v]
                good = [i for i, th in enumerate(ths) if th is not None]
                if good:
                    ld, r2 = dev.pieces(np.array([ths[i] for i in good]))
                    out[good] = dev.profiled(ld, r2)
                return out

        v, val = _inner_minimize(F, start, lower, upper, newton)
        if embed is not None:
            v = embed(v[None])[0]
        self.done.append((x, v))
        return val

    def zeta(self, x: float) -> float:
        d = self.deviance(x) - self.ctx.dmin
        return float(np.sign(x - self.estimate) * np.sqrt(max(d, 0.0)))

    def bound(self, direction: int, q: float) -> float:
        """Where zeta = direction * q; the domain's edge where it never gets there.

        Secant steps outward from the estimate (zeta is close to linear) until the
        target is bracketed, then Illinois regula falsi inside the bracket; |zeta -
        target| below 1e-7 ends it (Brent's method if that takes long).
        """
        x0, (lo, hi) = self.estimate, self.domain
        edge = hi if direction > 0 else lo
        step = self.scale if self.scale > 0 else 0.1
        tol = 1e-7

        def g(x):  # < 0 short of the target, > 0 beyond it
            return direction * self.zeta(x) - q

        def past_edge(x):
            return (direction > 0 and x >= edge) or (direction < 0 and x <= edge)

        inside = [(x0, -q)]
        beyond = None
        side = 0
        x = x0 + direction * step
        for _ in range(60):
            if beyond is None and past_edge(x):
                # sigma -> 0 always gets there: halve the gap instead of reaching 0
                x = 0.5 * inside[-1][0] if self.par.kind == "sigma" else edge
            gx = g(x)
            if abs(gx) < tol:
                return float(x)
            if gx < 0:
                if x == edge:
                    return float(edge)
                inside.append((x, gx))
                side = side - 1 if side < 0 else -1
            else:
                beyond = (x, gx)
                side = side + 1 if side > 0 else 1
            xa, ga = inside[-1]
            if beyond is None:
                xp, gp = inside[-2]
                slope = (ga - gp) / (xa - xp)
                far = 4.0 * abs(xa - x0) + step
                if direction * slope > 0:
                    move = min(abs(-ga / slope) * 1.02, far)
                else:
                    move = far
                x = xa + direction * max(move, 1e-3 * step)
                continue
            xb, gb = beyond
            if abs(xb - xa) <= 1e-12 * max(1.0, abs(x0)):
                return float(0.5 * (xa + xb))
            # Illinois: halve the retained end's value when one side repeats
            wa = ga / 2.0 if side >= 2 else ga
            wb = gb / 2.0 if side <= -2 else gb
            x = xa - wa * (xb - xa) / (wb - wa)
            if not (min(xa, xb) < x < max(xa, xb)):
                x = 0.5 * (xa + xb)
            if abs(side) > 6:
                return float(
                    optimize.brentq(g, min(xa, xb), max(xa, xb), xtol=1e-9 * max(1.0, abs(x0)))
                )
        return float("nan")


class _Context:
    """The ML fit and the parametrizations the profiles share."""

    def __init__(self, ml):
        self.ml = ml
        self.spec = spec = ml.spec
        self.ws = ml.model.workspace
        self.dev = _Deviance(self.ws)
        self.n = self.ws.n
        self.theta = np.asarray(ml.theta, dtype=float)
        self.sigma = float(ml.sigma)
        self.beta = np.asarray(ml.beta, dtype=float)
        self.vcov = np.asarray(ml.vcov_unscaled, dtype=float)
        self.lower = np.asarray(spec.lower_bounds, dtype=float)
        ld, r2 = self.dev.pieces(self.theta[None])
        self.dmin = float(self.dev.profiled(ld, r2)[0])

    # correlation profiles: the term's theta from (relative SDs, correlations)
    def _cor_layout(self, par):
        term = self.spec.terms[par.term]
        p = term.p
        pairs = [(i, j) for j in range(p) for i in range(j + 1, p)]
        other = [k for k, pr in enumerate(pairs) if pr != (par.i, par.j)]
        return term, p, pairs, other

    def cor_free0(self, par):
        term, p, pairs, other = self._cor_layout(par)
        sl = self.spec.theta_slices[par.term]
        sds, R = _sd_cor(term.factor(self.theta[sl]))
        rest = np.delete(self.theta, np.arange(sl.start, sl.stop))
        cors = np.array([R[i, j] for (i, j) in pairs])[other]
        return np.concatenate([np.maximum(sds, 1e-4), np.clip(cors, -0.99, 0.99), rest])

    def cor_bounds(self, par):
        term, p, pairs, other = self._cor_layout(par)
        sl = self.spec.theta_slices[par.term]
        rest_lower = np.delete(self.lower, np.arange(sl.start, sl.stop))
        lower = np.concatenate([np.zeros(p), -np.ones(len(other)), rest_lower])
        upper = np.concatenate(
            [np.full(p, np.inf), np.ones(len(other)), np.full(rest_lower.size, np.inf)]
        )
        return lower, upper

    def cor_to_theta(self, par, rho):
        term, p, pairs, other = self._cor_layout(par)
        sl = self.spec.theta_slices[par.term]
        k_other = len(other)
        fixed_index = pairs.index((par.i, par.j))

        def to_theta(v):
            sds, cors, rest = v[:p], v[p : p + k_other], v[p + k_other :]
            R = np.eye(p)
            allc = np.empty(len(pairs))
            allc[other] = cors
            allc[fixed_index] = rho
            for (i, j), r in zip(pairs, allc):
                R[i, j] = R[j, i] = r
            try:
                LR = np.linalg.cholesky(R)
            except np.linalg.LinAlgError:
                return None
            th_term = term.theta_from_factor(np.abs(sds)[:, None] * LR)
            return np.concatenate([rest[: sl.start], th_term, rest[sl.start :]])

        return to_theta


def _sd_cor(T):
    """Relative SDs and the correlation matrix of T T' (zero SDs give zero correlations)."""
    cov = T @ T.T
    sds = np.sqrt(np.diag(cov))
    with np.errstate(invalid="ignore", divide="ignore"):
        R = cov / np.outer(sds, sds)
    R = np.where(np.isfinite(R), R, 0.0)
    np.fill_diagonal(R, 1.0)
    return sds, R


def ml_fit(result):
    """The ML fit of ``result``'s model (``result`` itself when it is one)."""
    if not result.REML:
        return result
    # the model's own class: importing mixboot.model here would close an import circle
    return type(result.model)(result.spec, REML=False).fit(warn=False)


def profile_intervals(result, level: float = 0.95, *, which=None) -> pd.DataFrame:
    """lme4's ``confint(m, method = "profile", oldNames = FALSE)``: columns lower, upper.

    Rows are lme4's names (see :func:`reported_parameters`); ``which`` picks some of
    them by name.  REML fits are refitted by ML first.  A standard deviation whose
    profile never reaches the quantile below its estimate gets 0 as its lower bound; a
    correlation's bounds are -1 / 1 where its profile stays below the quantile.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    q = float(special.ndtri(0.5 + level / 2))
    ml = ml_fit(result)
    ctx = _Context(ml)
    pars = reported_parameters(ml.spec)
    if which is not None:
        wanted = [which] if isinstance(which, str) else list(which)
        unknown = [w for w in wanted if w not in {p.name for p in pars}]
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {unknown}; choose from {[p.name for p in pars]}"
            )
        pars = [p for p in pars if p.name in wanted]
    rows = []
    for par in pars:
        prof = _Profiler(ctx, par)
        lower = prof.bound(-1, q)
        upper = prof.bound(+1, q)
        rows.append((lower, upper))
    return pd.DataFrame(
        rows, columns=["lower", "upper"], index=pd.Index([p.name for p in pars], name="parameter")
    )


def zeta(result, name: str, x: float) -> float:
    """The signed root deviance of parameter ``name`` at value ``x`` (ML profile)."""
    ml = ml_fit(result)
    ctx = _Context(ml)
    pars = {p.name: p for p in reported_parameters(ml.spec)}
    if name not in pars:
        raise ValueError(f"unknown parameter {name!r}; choose from {list(pars)}")
    return _Profiler(ctx, pars[name]).zeta(float(x))
