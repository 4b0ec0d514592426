"""Refit a model to many responses at once: the loop at the heart of the bootstrap.

Only the response cross-products change between refits (see
:class:`mixboot.workspace.Responses`).  For models whose workspace fits in
dense arrays, all replicates are optimized together by a batched Newton method:

* Each replicate starts at the fitted theta, usually a few Newton steps from
  its optimum (:mod:`mixboot.newton`: finite-difference derivatives, every
  stencil point of every replicate evaluated in one batched call, so Python
  overhead is paid per Newton iteration, not per replicate).
* A replicate that does not converge is refitted on its own by BOBYQA, and is
  flagged if that fails too.

Large models (the sparse workspace) are refitted one replicate at a time by
BOBYQA, still reusing every cross-product that does not involve y.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .newton import newton_batch, zero_small_batch
from .optimize import OptSummary, minimize_theta
from .workspace import Responses, Workspace

__all__ = ["RefitBatch", "refit_responses"]

# Memory per batched evaluation call (bytes): bounds the stencil chunks.  Small
# enough that a call's temporaries stay in a core's cache (measured: 64 MiB calls
# made two worker processes memory-bound on this 2-core machine).
_EVAL_BUDGET = 2 * 2 ** 20


@dataclass(frozen=True)
class RefitBatch:
    theta: np.ndarray        # (B, k), canonical (inside lme4's bounds)
    objective: np.ndarray    # (B,)
    beta: np.ndarray         # (B, p)
    sigma: np.ndarray        # (B,)
    converged: np.ndarray    # (B,) bool
    evaluations: np.ndarray  # (B,) int
    vcov_unscaled: np.ndarray  # (B, p, p): vcov(beta) / sigma^2 per replicate


def _evaluator(ws: Workspace, resp: Responses):
    per_point = 8 * (ws.m * ws.m * 3 + ws.m * ws.q1 * 2 + ws.q1 * ws.p1 * ws.p1 * 3)
    chunk = max(1, _EVAL_BUDGET // per_point)

    def evaluate(theta: np.ndarray, which: np.ndarray) -> np.ndarray:
        out = np.empty(theta.shape[0])
        for start in range(0, theta.shape[0], chunk):
            sl = slice(start, start + chunk)
            out[sl] = ws.factorize(theta[sl], resp.take(which[sl])).objective
        return out

    return evaluate


def refit_responses(result, Y: np.ndarray, *, tol: float | None = None,
                    start: np.ndarray | None = None) -> RefitBatch:
    """Refit ``result``'s model to each column of Y (n x B)."""
    model = result.model
    ws: Workspace = model.workspace
    spec = model.spec
    resp = ws.responses(Y)
    B = resp.B
    theta0 = np.broadcast_to(result.theta if start is None else start, (B, spec.n_theta))
    ftol = 1e-12 if tol is None else float(tol)
    evaluate = _evaluator(ws, resp)
    if ws.dense:
        theta, f, conv, evals = newton_batch(evaluate, theta0, ftol_rel=ftol)
    else:
        theta = np.array(theta0, dtype=float)
        f = np.full(B, np.inf)
        conv = np.zeros(B, dtype=bool)
        evals = np.zeros(B, dtype=np.int64)
    redo = np.flatnonzero(~conv)
    settings = OptSummary(ftol_rel=ftol)
    for b in redo:
        one = resp.take(np.array([b]))
        opt = minimize_theta(lambda th: float(ws.factorize(th[None], one).objective[0]),
                             theta0[b], spec.lower_bounds, settings, warn=False)
        theta[b], f[b], conv[b] = opt.theta, opt.fmin, opt.converged
        evals[b] += opt.evaluations
    theta = zero_small_batch(evaluate, spec.canonical_theta(theta), spec.lower_bounds,
                              OptSummary().xtol_zero_abs)
    fac = ws.factorize(theta, resp)
    beta, sigma = ws.fixef_sigma(fac)
    return RefitBatch(theta=theta, objective=fac.objective, beta=beta, sigma=sigma,
                      converged=conv & np.isfinite(fac.objective), evaluations=evals,
                      vcov_unscaled=ws.vcov_unscaled_batch(fac))
