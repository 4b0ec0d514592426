"""Small-sample inference for the fixed effects: Satterthwaite and Kenward-Roger df.

The approach is lmerTest's (Kuznetsova, Brockhoff & Christensen 2017):

* the variance parameters are ``varpar = (theta, sigma)``; their asymptotic
  covariance is ``A = 2 H^-1``, H the Hessian of the deviance -2 log L (REML or ML,
  with beta at its GLS value) as a function of varpar;
* for a contrast ``l``, ``Var(l'beta) = l' C(varpar) l`` with
  ``C = (X'V^-1X)^-1 = sigma^2 * vcov_unscaled(theta)``;
  with ``g`` its gradient in varpar, the Satterthwaite df is
  ``2 (l'Cl)^2 / (g'Ag)``;
* an F test of a multi-row ``L`` splits ``L C L'`` into its eigen-directions, finds
  ``nu_m`` for each 1-df contrast and combines them as Fai & Cornelius (1996):
  ``E = sum nu_m / (nu_m - 2)``, ``df = 2E / (E - q)`` (2 where some ``nu_m <= 2``).

The deviance is linear in ``log sigma^2`` and ``1 / sigma^2``, so every derivative
involving sigma is exact; those in theta are central differences with Richardson
extrapolation, all difference points evaluated in one batched factorization.
A model from parameters (``mb.model``) has no observed response, so its A comes
from the expected information instead (dense, for up to 6000 observations).

:class:`KenwardRoger` follows pbkrtest for REML fits: an adjusted covariance of
beta and the Kenward-Roger df (coefficient t tests; F tests of terms use the unscaled F
with the adjusted covariance on the Kenward-Roger df, as lmerTest's anova).

Type III hypotheses for :func:`anova_table` are built as lmerTest builds them: in
the treatment-coded design, each term's columns made orthogonal (over the
over-parametrized "all levels" design) to those of the terms containing it, then
mapped to the model's own coding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "DDF_METHODS",
    "KenwardRoger",
    "Satterthwaite",
    "check_ddf",
    "coef_table",
    "anova_table",
    "contrast_test",
]

DDF_METHODS = ("satterthwaite", "kenward-roger", "wald")
_ALIASES = {
    "satterthwaite": "satterthwaite",
    "wald": "wald",
    "z": "wald",
    "normal": "wald",
    "kenward-roger": "kenward-roger",
    "kr": "kenward-roger",
    "kenward": "kenward-roger",
    "kenwardroger": "kenward-roger",
}

# Central differences in theta: first step _STEP * |theta_i| (_STEP_ZERO where
# |theta_i| < _ZERO_TOL), halved _LEVELS - 1 times, Richardson-extrapolated
# (error O(h^(2 _LEVELS))).  Large first steps keep rounding noise small.
_STEP = 0.1
_STEP_ZERO = 1e-4
_ZERO_TOL = 1e-6
_LEVELS = 4
# Largest model from parameters whose expected information is computed (dense n x n).
_EXPECTED_MAX_N = 6000


def check_ddf(ddf) -> str:
    """The canonical name of a denominator-df method, or a ValueError listing the valid ones."""
    if isinstance(ddf, str):
        key = ddf.strip().lower().replace("_", "-").replace(" ", "-")
        if key in _ALIASES:
            return _ALIASES[key]
    raise ValueError(f"ddf must be one of {list(DDF_METHODS)}, got {ddf!r}")


def _divide(a: float, b: float) -> float:
    """a / b with IEEE semantics (+-inf or nan for b = 0), as R divides."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


# --------------------------------------------------------------------------- the deviance
def _factorize(ws, thetas: np.ndarray, resp=None):
    """Factorizations for response ``resp`` (default: the model's own) at each row of thetas
    (one batch when dense)."""
    if ws.dense:
        return [ws.factorize(thetas, resp)]
    return [ws.factorize(th[None, :], resp) for th in thetas]


def _pieces(ws, thetas: np.ndarray, resp=None):
    """For each theta: the sigma-free part of the deviance, the PWRSS, and vcov_unscaled."""
    d0, r2, vc = [], [], []
    for fac in _factorize(ws, thetas, resp):
        if not np.all(fac.ok):
            raise FloatingPointError(
                "the model could not be factorized near its estimates; "
                "Satterthwaite degrees of freedom are unavailable"
            )
        L = fac.L
        d = np.log(fac.diagonal())
        C = fac.C
        if C.shape[-1] == 1:
            logc = np.log(C[..., 0, 0]).sum(axis=1)
        else:
            logc = np.linalg.slogdet(C)[1].sum(axis=1)
        part = logc + 2.0 * d[:, : ws.qr].sum(axis=1)
        if ws.REML:
            part = part + 2.0 * d[:, ws.qr : ws.m0].sum(axis=1)
        d0.append(part)
        r2.append(L[:, -1, -1] ** 2)
        vc.append(ws.vcov_unscaled_batch(fac))
    return np.concatenate(d0), np.concatenate(r2), np.concatenate(vc)


def deviance(ws, theta, sigma) -> float:
    """-2 log L (REML: the REML criterion) at (theta, sigma), beta at its GLS value."""
    theta = np.asarray(theta, dtype=float)
    d0, r2, _ = _pieces(ws, theta[None, :])
    dof = ws.n - ws.p if ws.REML else ws.n
    s2 = float(sigma) ** 2
    return float(d0[0] + dof * np.log(2 * np.pi * s2) + r2[0] / s2)


@dataclass(frozen=True)
class Satterthwaite:
    """What every Satterthwaite df needs: C, its Jacobian in varpar, and A = 2 H^-1."""

    vcov: np.ndarray  # (p, p)  C = sigma^2 vcov_unscaled
    jac: np.ndarray  # (k + 1, p, p)  dC / d varpar, varpar = (theta, sigma)
    A: np.ndarray  # (k + 1, k + 1)
    hessian: np.ndarray  # (k + 1, k + 1)

    @classmethod
    def from_result(cls, result) -> Satterthwaite:
        """Observed information at a fit; expected information for a model from parameters
        (whose response is only a placeholder)."""
        if getattr(result, "from_parameters", False):
            return cls.expected(result)
        ws = result.model.workspace
        theta = np.asarray(result.theta, dtype=float)
        sigma = float(result.sigma)
        k = theta.size
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        # Steps: a fraction of each |theta_i| (an absolute step at zero), halved
        # _LEVELS - 1 times; points: centre, then per level +-h_i along each axis and
        # the four corners (+-h_i, +-h_j) of each pair.
        h0 = np.where(np.abs(theta) > _ZERO_TOL, _STEP * np.abs(theta), _STEP_ZERO)
        pts = [theta]
        for m in range(_LEVELS):
            h = h0 / 2**m
            for i in range(k):
                for s in (1, -1):
                    t = theta.copy()
                    t[i] += s * h[i]
                    pts.append(t)
            for i, j in pairs:
                for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                    t = theta.copy()
                    t[i] += si * h[i]
                    t[j] += sj * h[j]
                    pts.append(t)
        # the result's own response: a refit to a simulated y shares the model with the fit
        d0, r2, vc = _pieces(ws, np.array(pts), ws.responses(np.asarray(result.y, dtype=float)))
        dof = ws.n - ws.p if ws.REML else ws.n
        s2 = sigma**2
        f = d0 + r2 / s2  # the theta-dependent part of the deviance at this sigma
        per_level = 2 * k + 4 * len(pairs)

        def axis(values, m, i):
            base = 1 + m * per_level + 2 * i
            return values[base], values[base + 1]

        def corner(values, m, n):
            base = 1 + m * per_level + 2 * k + 4 * n
            return values[base : base + 4]

        H = np.empty((k + 1, k + 1))
        jac = np.empty((k + 1,) + vc.shape[1:])
        gr2 = np.empty(k)
        for i in range(k):
            est_h, est_j, est_g = [], [], []
            for m in range(_LEVELS):
                hs = h0[i] / 2**m
                fp, fm = axis(f, m, i)
                est_h.append((fp - 2.0 * f[0] + fm) / hs**2)
                vp, vm = axis(vc, m, i)
                est_j.append((vp - vm) / (2.0 * hs))
                rp, rm = axis(r2, m, i)
                est_g.append((rp - rm) / (2.0 * hs))
            H[i, i] = _richardson(est_h)
            jac[i] = s2 * _richardson(est_j)
            gr2[i] = _richardson(est_g)
        for n, (i, j) in enumerate(pairs):
            est = []
            for m in range(_LEVELS):
                c = corner(f, m, n)
                est.append((c[0] - c[1] - c[2] + c[3]) / (4.0 * h0[i] * h0[j] / 4**m))
            H[i, j] = H[j, i] = _richardson(est)
        # sigma: exact derivatives of dof log(2 pi s^2) + r2 / s^2.
        H[k, k] = -2.0 * dof / s2 + 6.0 * r2[0] / s2**2
        H[:k, k] = H[k, :k] = -2.0 * gr2 / sigma**3
        jac[k] = 2.0 * sigma * vc[0]
        A = 2.0 * np.linalg.pinv(H)
        return cls(vcov=s2 * vc[0], jac=jac, A=A, hessian=H)

    @classmethod
    def expected(cls, result) -> Satterthwaite:
        """A from the expected information of (theta, sigma), with dense n x n matrices.

        ML: I_ij = tr(V^-1 V_i V^-1 V_j) / 2; REML: the same with P = V^-1 - V^-1 X
        (X'V^-1X)^-1 X'V^-1 for V^-1.  The expected Hessian of -2 log L is 2 I, so A = I^-1.
        """
        spec, ws = result.spec, result.model.workspace
        n = spec.n
        if n > _EXPECTED_MAX_N:
            raise ValueError(
                f"Satterthwaite df for a model from parameters use dense {n} x {n} "
                f"matrices (at most {_EXPECTED_MAX_N} observations); use ddf='wald'"
            )
        theta = np.asarray(result.theta, dtype=float)
        sigma = float(result.sigma)
        s2 = sigma**2
        k = theta.size
        G = np.zeros((n, n))
        dG = np.zeros((k, n, n))
        for term, sl in zip(spec.terms, spec.theta_slices):
            same = term.codes[:, None] == term.codes[None, :]
            th = theta[sl]
            T = term.factor(th)
            G += same * (term.zraw @ (T @ T.T) @ term.zraw.T)
            for a in range(th.size):
                # T T' is quadratic in theta: a central difference is exact.
                e = np.zeros_like(th)
                e[a] = 0.5
                Tp, Tm = term.factor(th + e), term.factor(th - e)
                D = Tp @ Tp.T - Tm @ Tm.T
                dG[sl.start + a] = same * (term.zraw @ D @ term.zraw.T)
        V = s2 * (G + np.eye(n))
        Vi = np.linalg.inv(V)
        X = spec.X
        XtVi = X.T @ Vi
        cov_unscaled = np.linalg.inv(XtVi @ X)  # (X'V^-1X)^-1
        W = Vi - XtVi.T @ cov_unscaled @ XtVi if ws.REML else Vi
        derivs = [s2 * dG[i] for i in range(k)] + [2.0 * sigma * (G + np.eye(n))]
        WD = [W @ D for D in derivs]
        info = np.array([[0.5 * np.einsum("ij,ji->", a, b) for b in WD] for a in WD])
        # Jacobian of C = (X'V^-1X)^-1: dC = C X'V^-1 V_i V^-1 X C.
        jac = np.array([cov_unscaled @ XtVi @ D @ XtVi.T @ cov_unscaled for D in derivs])
        return cls(vcov=cov_unscaled, jac=jac, A=np.linalg.pinv(info), hessian=2.0 * info)

    # -- degrees of freedom ------------------------------------------------------------
    def df_contrast(self, l: np.ndarray) -> float:  # noqa: E741 (l: lmerTest's name)
        """Satterthwaite df of one contrast l'beta."""
        l = np.asarray(l, dtype=float)  # noqa: E741
        v = l @ self.vcov @ l
        g = np.einsum("i,kij,j->k", l, self.jac, l)
        denom = g @ self.A @ g
        return float(2.0 * v**2 / denom) if denom > 0 else np.inf

    def df_coefficients(self) -> np.ndarray:
        v = np.diag(self.vcov)
        g = np.einsum("kii->ki", self.jac)  # (k+1, p)
        denom = np.einsum("ki,kl,li->i", g, self.A, g)
        with np.errstate(divide="ignore"):
            return np.where(denom > 0, 2.0 * v**2 / denom, np.inf)


@dataclass(frozen=True)
class KenwardRoger:
    """Kenward & Roger (1997) as pbkrtest computes it, for REML fits.

    The covariance parameters are those in which V is linear: each random term's
    variances and covariances (sigma^2 T T') and the residual variance, with
    V = sum_i s_i G_i.  With Sigma = V, Phi = (X'Sigma^-1X)^-1,
    P_i = -X'Sigma^-1 G_i Sigma^-1 X, Q_ij = X'Sigma^-1 G_i Sigma^-1 G_j Sigma^-1 X and
    W = 2 [tr(Pr G_i Pr G_j)]^-1 (Pr the REML projection), the adjusted covariance is
    Phi_A = Phi + 2 Phi [sum_ij W_ij (Q_ij - P_i Phi P_j)] Phi (second derivatives of
    V vanish).  Dense n x n matrices: for up to 6000 observations.
    """

    vcov: np.ndarray  # Phi
    vcov_adj: np.ndarray  # Phi_A
    P: np.ndarray  # (g, p, p)
    W: np.ndarray  # (g, g)

    @classmethod
    def from_result(cls, result) -> KenwardRoger:
        if not result.REML:
            raise ValueError(
                "Kenward-Roger degrees of freedom need a REML fit; refit with "
                "REML=True or use ddf='satterthwaite'"
            )
        spec = result.spec
        n = spec.n
        if n > _EXPECTED_MAX_N:
            raise ValueError(
                f"Kenward-Roger uses dense {n} x {n} matrices (at most "
                f"{_EXPECTED_MAX_N} observations); use ddf='satterthwaite'"
            )
        s2 = float(result.sigma) ** 2
        theta = np.asarray(result.theta, dtype=float)
        G, values = [], []
        for term, sl in zip(spec.terms, spec.theta_slices):
            same = (term.codes[:, None] == term.codes[None, :]).astype(float)
            T = term.factor(theta[sl])
            cov = s2 * (T @ T.T)
            z = term.zraw
            for a in range(term.p):
                for b in range(a + 1):
                    outer = np.outer(z[:, a], z[:, b])
                    if a != b:
                        outer = outer + outer.T
                    G.append(same * outer)
                    values.append(cov[a, b])
        G.append(np.eye(n))
        values.append(s2)
        Sigma = sum(v * g for v, g in zip(values, G))
        Si = np.linalg.inv(Sigma)
        X = spec.X
        SiX = Si @ X
        Phi = np.linalg.inv(X.T @ SiX)
        Pr = Si - SiX @ Phi @ SiX.T
        SiG = [Si @ g for g in G]
        PrG = [Pr @ g for g in G]
        ng = len(G)
        P = np.array([-(SiX.T @ g @ SiX) for g in G])
        IE = np.empty((ng, ng))
        Q = np.empty((ng, ng) + Phi.shape)
        for i in range(ng):
            left = X.T @ SiG[i]  # X'Sigma^-1 G_i
            for j in range(i, ng):
                IE[i, j] = IE[j, i] = np.sum(PrG[i] * PrG[j].T)
                Q[i, j] = left @ SiG[j] @ SiX
                Q[j, i] = Q[i, j].T
        W = 2.0 * np.linalg.inv(IE)
        U = np.zeros_like(Phi)
        for i in range(ng):
            for j in range(ng):
                U += W[i, j] * (Q[i, j] - P[i] @ Phi @ P[j])
        adj = Phi + 2.0 * Phi @ U @ Phi
        return cls(vcov=Phi, vcov_adj=0.5 * (adj + adj.T), P=P, W=W)

    def df_contrast(self, L: np.ndarray) -> float:
        """The Kenward-Roger denominator df of the test of L beta = 0 (q = rows of L)."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        q = L.shape[0]
        V0 = self.vcov
        Theta = L.T @ np.linalg.solve(L @ V0 @ L.T, L)
        U = np.array([Theta @ V0 @ Pi @ V0 for Pi in self.P])  # (g, p, p)
        tr = np.einsum("gii->g", U)
        A1 = float(tr @ self.W @ tr)
        A2 = float(np.einsum("ij,iab,jba->", self.W, U, U))
        B = (A1 + 6.0 * A2) / (2.0 * q)
        g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
        den = 3.0 * q + 2.0 * (1.0 - g)
        c1, c2, c3 = g / den, (q - g) / den, (q + 2 - g) / den
        v0, v1, v2 = 1.0 + c1 * B, 1.0 - c2 * B, 1.0 - c3 * B
        if abs(v0) < 1e-10:
            v0 = 0.0
        # As pbkrtest: (1 - A2/q) / v1 is 1 when both are ~0 (one variance parameter and
        # a balanced design make them vanish together); other zero divisors give inf.
        num = 1.0 - A2 / q
        ratio = 1.0 if abs(num) < 1e-14 and abs(v1) < 1e-14 else _divide(num, v1)
        rho = (1.0 / q) * ratio**2 * _divide(v0, v2)
        return float(4.0 + _divide(q + 2.0, q * rho - 1.0))

    def df_coefficients(self) -> np.ndarray:
        return np.array(
            [self.df_contrast(np.eye(self.vcov.shape[0])[i]) for i in range(self.vcov.shape[0])]
        )


def _richardson(estimates: list) -> np.ndarray:
    """Extrapolate central-difference estimates at steps h, h/2, h/4, ... to step 0."""
    table = [np.asarray(e, dtype=float) for e in estimates]
    for j in range(1, len(table)):
        table = [(4.0**j * table[m + 1] - table[m]) / (4.0**j - 1.0) for m in range(len(table) - 1)]
    return table[0]


def contrast_test(sat: Satterthwaite, L: np.ndarray, beta: np.ndarray) -> dict:
    """lmerTest's multi-df test of L beta = 0: F, NumDF, DenDF, p."""
    L = np.atleast_2d(np.asarray(L, dtype=float))
    VL = L @ sat.vcov @ L.T
    d, P = np.linalg.eigh(VL)
    order = np.argsort(d)[::-1]
    d, P = d[order], P[:, order]
    tol = max(1e-8 * d[0], 0.0)
    q = int(np.sum(d > tol))
    PtL = (P.T @ L)[:q]
    t2 = (PtL @ beta) ** 2 / d[:q]
    F = float(t2.sum() / q)
    g = np.einsum("mi,kij,mj->mk", PtL, sat.jac, PtL)  # (q, k+1)
    denom = np.einsum("mk,kl,ml->m", g, sat.A, g)
    with np.errstate(divide="ignore"):
        nu = np.where(denom > 0, 2.0 * d[:q] ** 2 / denom, np.inf)
    ddf = _fstat_ddf(nu)
    return {"F": F, "NumDF": q, "DenDF": ddf, "p": float(stats.f.sf(F, q, ddf))}


def _fstat_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """Denominator df of an F built from q t-statistics with nu_m df (Fai & Cornelius)."""
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2.0)))
    return 2.0 * E / (E - nu.size)


# --------------------------------------------------------------------------- tables
def coef_table(result, ddf: str) -> pd.DataFrame:
    """Estimate, Std. Error, df, t value (z value), Pr(>|t|) (Pr(>|z|)) per coefficient."""
    ddf = check_ddf(ddf)
    names = list(result.spec.fe_names)
    est = np.asarray(result.beta, dtype=float)
    se = np.sqrt(np.diag(result.sigma**2 * np.asarray(result.vcov_unscaled)))
    t = est / se
    if ddf == "wald":
        return pd.DataFrame(
            {
                "Estimate": est,
                "Std. Error": se,
                "df": np.nan,
                "z value": t,
                "Pr(>|z|)": 2.0 * stats.norm.sf(np.abs(t)),
            },
            index=names,
        )
    if ddf == "kenward-roger":
        kr = result._kenward_roger
        se = np.sqrt(np.diag(kr.vcov_adj))
        t = est / se
        df = kr.df_coefficients()
    else:
        df = result._satterthwaite.df_coefficients()
    return pd.DataFrame(
        {
            "Estimate": est,
            "Std. Error": se,
            "df": df,
            "t value": t,
            "Pr(>|t|)": 2.0 * stats.t.sf(np.abs(t), df),
        },
        index=names,
    )


def anova_table(result, ddf: str) -> pd.DataFrame:
    """lmerTest's type III anova table of the fixed terms (not the intercept)."""
    ddf = check_ddf(ddf)
    kr = result._kenward_roger if ddf == "kenward-roger" else None
    columns = ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]
    contrasts = type3_contrasts(result.spec)
    beta = np.asarray(result.beta, dtype=float)
    rows, index = [], []
    for label, L in contrasts:
        if L.shape[0] == 0:
            continue
        if ddf == "wald":
            C = result.sigma**2 * np.asarray(result.vcov_unscaled)
            VL = L @ C @ L.T
            w, P = np.linalg.eigh(VL)
            keep = w > max(1e-8 * w.max(), 0.0)
            PtL = (P.T @ L)[keep]
            F = float(np.sum((PtL @ beta) ** 2 / w[keep]) / keep.sum())
            res = {
                "F": F,
                "NumDF": int(keep.sum()),
                "DenDF": np.inf,
                "p": float(stats.chi2.sf(F * keep.sum(), keep.sum())),
            }
        elif kr is not None:
            # as lmerTest: the unscaled F with Kenward-Roger's adjusted covariance, on the
            # Kenward-Roger denominator df
            Lb = L @ beta
            q = L.shape[0]
            F = float(Lb @ np.linalg.solve(L @ kr.vcov_adj @ L.T, Lb)) / q
            den = kr.df_contrast(L)
            res = {"F": F, "NumDF": q, "DenDF": den, "p": float(stats.f.sf(F, q, den))}
        else:
            res = contrast_test(result._satterthwaite, L, beta)
        ms = res["F"] * result.sigma**2
        rows.append([ms * res["NumDF"], ms, res["NumDF"], res["DenDF"], res["F"], res["p"]])
        index.append(label)
    out = pd.DataFrame(rows, index=index, columns=columns)
    out["NumDF"] = out["NumDF"].astype(int)
    return out


# --------------------------------------------------------------------------- type III
def _factor_name(piece: str) -> str:
    from .compare import _factor_key

    return _factor_key(piece)


def _term_factors(label: str) -> frozenset:
    return frozenset(_factor_name(f) for f in label.split(":"))


def _plain_factor(piece: str) -> str:
    """``C(x, contr.sum)`` -> ``C(x)``: the factor with its default (treatment) coding."""
    piece = piece.strip()
    m = re.fullmatch(r"C\(\s*([^,\s)]+)\s*(?:,.*)?\)", piece)
    return f"C({m.group(1)})" if m else piece


def type3_contrasts(spec) -> list[tuple[str, np.ndarray]]:
    """(term label, contrast matrix over spec.fe_names) for each fixed term but the intercept.

    As lmerTest: a model with a single term (or a single column) gets type I
    (sequential, Doolittle) hypotheses, which are then the same as type III.
    Terms are labelled as written in the formula (a column coded through
    ``contrasts=`` keeps its plain name).
    """
    return [(_user_label(spec, label), L) for label, L in _type3_contrasts(spec)]


def _user_label(spec, label: str) -> str:
    coded = set(getattr(spec, "contrasts", None) or {})
    return ":".join(
        _factor_name(piece) if _factor_name(piece) in coded else piece for piece in label.split(":")
    )


def _type3_contrasts(spec) -> list[tuple[str, np.ndarray]]:
    from .compare import _fixed_terms

    terms = [(label, cols) for label, cols in _fixed_terms(spec) if label != "(Intercept)"]
    X = spec.X
    p = X.shape[1]
    if not terms:
        return []
    if p <= 1 or len(terms) <= 1:
        # Doolittle's unit upper-triangular factor of X'X: rows of R scaled to a unit diagonal.
        R = np.linalg.cholesky(X.T @ X).T
        U = R / np.diag(R)[:, None]
        return [(label, U[cols]) for label, cols in terms]
    fixed_names = [str(t) for t in spec.fixed_spec.term_indices]
    coded = re.search(r"C\([^)]*,\s*contr\.(?!treatment)", spec.fixed_formula) is not None
    if coded:
        Xt = _treatment_matrix(spec)
    else:
        Xt = X
    data = spec.data
    # The over-parametrized design: every term with all its levels (no contrasts).
    blocks, block_terms = [], []
    has_intercept = any(name in ("1", "Intercept") for name in fixed_names)
    if has_intercept:
        blocks.append(np.ones((spec.n, 1)))
        block_terms.append("(Intercept)")
    for label, _ in terms:
        expr = ":".join(_plain_factor(f) for f in label.split(":"))
        full = _full_matrix(expr, data)
        blocks.append(full)
        block_terms += [label] * full.shape[1]
    rdX = np.column_stack(blocks)
    # Coefficients of each rdX column in Xt's columns (rdX lies in Xt's column space).
    M = np.linalg.lstsq(Xt, rdX, rcond=None)[0]  # (p, P)
    Lfull = M.T.copy()  # rows: rdX columns; cols: Xt columns
    Lfull[np.abs(Lfull) < 1e-10 * max(np.abs(Lfull).max(), 1.0)] = 0.0
    factors = {label: _term_factors(label) for label, _ in terms}
    cols_of = {label: cols for label, cols in terms}
    order = sorted(terms, key=lambda tc: -len(factors[tc[0]]))
    for label, cols in order:
        containing = [
            other for other, _ in terms if other != label and factors[label] < factors[other]
        ]
        if not containing:
            continue
        B = Lfull[:, np.concatenate([cols_of[o] for o in containing])]
        Y = Lfull[:, cols]
        coef = np.linalg.lstsq(B, Y, rcond=None)[0]
        resid = Y - B @ coef
        resid[np.abs(resid) < 1e-10 * max(np.abs(Y).max(), 1.0)] = 0.0
        Lfull[:, cols] = resid
    # Keep the rows of rdX's columns that are columns of Xt: the identity's positions.
    rows = _matching_rows(rdX, Xt)
    Lsq = Lfull[rows]  # (p, p)
    out = []
    for label, cols in terms:
        Lt = Lsq[:, cols].T  # (k_term, p)
        if coded:
            Lt = Lt @ np.linalg.lstsq(Xt, X, rcond=None)[0]
        Lt = Lt[np.abs(Lt).sum(axis=1) > 1e-8]
        out.append((label, Lt))
    return out


def _matching_rows(rdX: np.ndarray, Xt: np.ndarray) -> np.ndarray:
    """For each column of Xt, the index of an equal column of rdX."""
    rows = []
    for j in range(Xt.shape[1]):
        diff = np.abs(rdX - Xt[:, j : j + 1]).max(axis=0)
        hit = np.flatnonzero(diff < 1e-10 * max(np.abs(Xt[:, j]).max(), 1.0))
        if hit.size == 0:
            raise ValueError(
                "type III contrasts: a column of the fixed-effects matrix is not a "
                "column of the over-parametrized design"
            )
        rows.append(hit[0])
    return np.array(rows)


def _full_matrix(expr: str, data: pd.DataFrame) -> np.ndarray:
    from formulaic import model_matrix

    mm = model_matrix(f"0 + {expr}", data, ensure_full_rank=False, na_action="raise")
    return np.asarray(mm, dtype=float)


def _treatment_matrix(spec) -> np.ndarray:
    """The fixed-effects matrix rebuilt with treatment coding (kept columns only)."""
    from formulaic import model_matrix

    formula = re.sub(r"C\(\s*([^,\s)]+)\s*,[^)]*\)", r"C(\1)", spec.fixed_formula)
    mm = np.asarray(
        model_matrix(formula, spec.data, ensure_full_rank=True, na_action="raise"), dtype=float
    )
    if mm.shape[1] != spec.X.shape[1] + len(spec.dropped):
        raise ValueError("type III contrasts: the treatment-coded design does not match")
    return mm[:, spec.kept_columns]
