"""Refit a model to many responses at once: the loop at the heart of the bootstrap.

Only the response cross-products change between refits (see
:class:`mixboot.workspace.Responses`).  For models whose workspace fits in
dense arrays, all replicates are optimized together by a batched Newton method:

* Each replicate starts at the fitted theta, usually a few Newton steps from
  its optimum (:mod:`mixboot.newton`: finite-difference derivatives, every
  stencil point of every replicate evaluated in one batched call, so Python
  overhead is paid per Newton iteration, not per replicate).
* A replicate that does not converge is handed to BOBYQA from Newton's best
  point, and is flagged if that fails too: the fit's own optimizer policy.

Every operation is per replicate (elementwise, per-row reductions, one small
LAPACK/BLAS call per replicate of a fixed shape), so a replicate's numbers are
the same whichever replicates share its batch: finished replicates may leave the
batch without changing the bits of those that remain.

Large models (the sparse workspace) are refitted one replicate at a time, once
each, still reusing every cross-product that does not involve y.  The fit's
finite-difference Hessian, computed once per (workspace, start) and kept
(:func:`start_hessian`), lets each refit take Newton steps from a gradient
alone (:func:`mixboot.optimize.newton_single`): some 20 evaluations a refit
instead of BOBYQA's 50-130.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from .grouped import grouped_evaluator
from .newton import fd_derivatives
from .optimize import OptSummary, minimize_batch
from .threads import one_blas_thread
from .workspace import Responses, Workspace

__all__ = ["RefitBatch", "refit_isolated", "refit_responses", "start_hessian"]

# Memory per batched evaluation call (bytes): bounds the stencil chunks.  Small
# enough that a call's temporaries stay in a core's cache (measured: 64 MiB calls
# made two worker processes memory-bound on this 2-core machine).
_EVAL_BUDGET = 2 * 2**20


@dataclass(frozen=True)
class RefitBatch:
    theta: np.ndarray  # (B, k), canonical (inside lme4's bounds)
    objective: np.ndarray  # (B,)
    beta: np.ndarray  # (B, p)
    sigma: np.ndarray  # (B,)
    converged: np.ndarray  # (B,) bool
    evaluations: np.ndarray  # (B,) int
    vcov_unscaled: np.ndarray  # (B, p, p): vcov(beta) / sigma^2 per replicate

    @classmethod
    def stack(cls, parts: list[RefitBatch]) -> RefitBatch:
        return cls(
            **{f: np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__}
        )


def _evaluator(ws: Workspace, resp: Responses):
    """``evaluate(theta, which)``: by level groups where that applies, else the workspace."""
    grouped = grouped_evaluator(ws, resp)
    if grouped is not None:
        return grouped
    per_point = 8 * (ws.m * ws.m * 3 + ws.m * ws.q1 * 2 + ws.q1 * ws.p1 * ws.p1 * 3)
    # the sparse path evaluates one theta per call
    chunk = max(1, _EVAL_BUDGET // per_point) if ws.dense else 1

    def evaluate(theta: np.ndarray, which: np.ndarray) -> np.ndarray:
        out = np.empty(theta.shape[0])
        for start in range(0, theta.shape[0], chunk):
            sl = slice(start, start + chunk)
            out[sl] = ws.factorize(theta[sl], resp.take(which[sl])).objective
        return out

    return evaluate


# Workspace -> {start theta's bytes: Hessian}; a few starts per workspace.
_HESSIANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_HESSIANS_PER_WORKSPACE = 8


def start_hessian(ws: Workspace, start: np.ndarray) -> np.ndarray:
    """The finite-difference Hessian (k, k) of the model's own criterion at ``start``.

    Computed once per workspace and start (BLAS on one thread, so that its bits
    are the same in every process) and kept: a bootstrap of a large model pays
    for it once, and forked worker processes inherit it.
    """
    start = np.asarray(start, dtype=float).reshape(-1)
    key = start.tobytes()
    cache = _HESSIANS.setdefault(ws, {})
    if key not in cache:
        with one_blas_thread():
            _, _, H = fd_derivatives(_evaluator(ws, ws.response), start[None])
        if len(cache) >= _HESSIANS_PER_WORKSPACE:
            cache.pop(next(iter(cache)))
        cache[key] = H[0]
    return cache[key]


def refit_responses(
    model, Y: np.ndarray, *, start: np.ndarray, tol: float | None = None
) -> RefitBatch:
    """Refit ``model`` to each column of Y (n x B), every replicate starting at ``start``.

    ``start`` is the theta to start from (the fit's estimate); ``tol`` the
    relative objective tolerance (default 1e-12).  The optimizer policy is the
    fit's own (:func:`mixboot.optimize.minimize_batch`).  Large models (the
    sparse workspace) are refitted one response at a time, with the Hessian of
    :func:`start_hessian`.
    """
    ws: Workspace = model.workspace
    Y = np.asarray(Y, dtype=float)
    if Y.ndim == 1:
        Y = Y[:, None]
    if not ws.dense and Y.shape[1] > 1:
        return RefitBatch.stack(
            [
                refit_responses(model, Y[:, j : j + 1], start=start, tol=tol)
                for j in range(Y.shape[1])
            ]
        )
    spec = model.spec
    resp = ws.responses(Y)
    B = resp.B
    theta0 = np.broadcast_to(np.asarray(start, dtype=float), (B, spec.n_theta))
    settings = OptSummary(ftol_rel=1e-12 if tol is None else float(tol))
    evaluate = _evaluator(ws, resp)
    opt = minimize_batch(
        evaluate,
        theta0,
        spec.lower_bounds,
        settings,
        canonical=spec.canonical_theta,
        newton=ws.dense,
        hessian=None if ws.dense else start_hessian(ws, theta0[0]),
    )
    fac = ws.factorize(opt.theta, resp)
    beta, sigma = ws.fixef_sigma(fac)
    return RefitBatch(
        theta=opt.theta,
        objective=fac.objective,
        beta=beta,
        sigma=sigma,
        converged=opt.converged & np.isfinite(fac.objective),
        evaluations=opt.evaluations,
        vcov_unscaled=ws.vcov_unscaled_batch(fac),
    )


def refit_isolated(
    model, Y: np.ndarray, *, start: np.ndarray, tol: float | None, fail, raise_errors: bool = False
):
    """Refit all columns of Y (n, B) at once; if that raises, column by column.

    A large LMM (the sparse workspace) is refitted column by column from the
    start: its refits are one column at a time anyway, and a failing column then
    does not make the others refit a second time.

    An LMM's refits are :func:`refit_responses` from ``start`` = theta; a GLMM's are
    its model's ``refit`` from ``start`` = (theta, beta), as lme4's ``refit``.
    Returns ``[(indices, batch), ...]`` (:class:`RefitBatch`, or the GLMM's
    ``Refits``); a column whose own refit raises is reported as ``fail(i, exc)`` (or
    re-raised when ``raise_errors``).
    """
    if hasattr(model, "family"):  # a GLMM
        settings = OptSummary(ftol_rel=1e-12 if tol is None else float(tol))

        def refit(Yc):
            return model.refit(Yc.T, start=start, settings=settings)
    else:

        def refit(Yc):
            return refit_responses(model, Yc, start=start, tol=tol)

    one_by_one = not hasattr(model, "family") and not model.workspace.dense
    if not one_by_one:
        try:
            return [(np.arange(Y.shape[1]), refit(Y))]
        except Exception:  # noqa: BLE001 - isolate the failing replicate(s) one by one
            if raise_errors:
                raise
    batches = []
    for i in range(Y.shape[1]):
        try:
            batches.append((np.array([i]), refit(Y[:, i : i + 1])))
        except Exception as exc:  # noqa: BLE001
            if raise_errors:
                raise
            fail(i, exc)
    return batches
