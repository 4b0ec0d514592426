"""bootMer: parametric bootstrap by batched simulate -> refit, on the replicate runner.

The runner (:mod:`mixboot.runner`) owns replicate numbers, random streams,
chunks, executors, progress, failures and checkpoints; this module says what a
chunk of bootstrap replicates computes and assembles the :class:`BootResult`.
Replicate i draws from child i of ``SeedSequence(seed)`` and its numbers do not
depend on its batch mates, so a seed gives the same bits for any B, ``n_jobs``,
backend or resume point.
"""

from __future__ import annotations

import hashlib
import numbers
import pickle
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import runner
from .._version import __version__
from ..glmm_result import GLMMResult, build_glmm_result
from ..profile import reported_parameters
from ..refit import refit_isolated
from ..result import SINGULAR_TOL, LMMResult, build_result
from ..simulate import check_parameters, simulate_block, simulate_glmm_block
from .result import BootResult

if TYPE_CHECKING:
    from .._typing import ArrayLike, Client, PathLike, Statistic, Values

__all__ = ["bootMer", "parameter_table", "statistic_vector"]

ON_ERROR = ("record", "raise")


def parameter_table(
    result, theta: np.ndarray, sigma: np.ndarray | None, beta: np.ndarray, objective: np.ndarray
) -> pd.DataFrame:
    """MixedModels.jl-style table: objective, beta, sigma, sd and correlation per term, theta.

    ``sigma=None`` for a GLMM: no sigma column, and the SDs are theta's (scale 1).
    """
    spec = result.spec
    cols = {"objective": objective}
    for j, name in enumerate(spec.fe_names):
        cols[name] = beta[:, j]
    if sigma is not None:
        cols["sigma"] = sigma
    else:
        sigma = 1.0
    seen: dict[str, int] = {}
    for term, sl in zip(spec.terms, spec.theta_slices):
        k = seen.get(term.label, 0)
        seen[term.label] = k + 1
        grp = term.label if k == 0 else f"{term.label}.{k}"
        T = term.factor(theta[:, sl])
        cov = T @ np.swapaxes(T, -1, -2)
        sd_rel = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
        for i, name in enumerate(term.colnames):
            cols[f"sd_{grp}_{name}"] = sigma * sd_rel[:, i]
        for j in range(term.p):
            for i in range(j + 1, term.p):
                with np.errstate(invalid="ignore", divide="ignore"):
                    cols[f"cor_{grp}_{term.colnames[j]}_{term.colnames[i]}"] = cov[:, i, j] / (
                        sd_rel[:, i] * sd_rel[:, j]
                    )
    for j, name in enumerate(spec.theta_names):
        cols[f"theta_{name}"] = theta[:, j]
    return pd.DataFrame(cols)


def _reported(result) -> dict:
    """lme4's ``confint(oldNames = FALSE)`` rows (:func:`mixboot.profile.reported_parameters`),
    the ``tbl`` column of each, and the fit's values."""
    spec = result.spec
    glmm = isinstance(result, GLMMResult)
    names, columns = [], []
    for par in reported_parameters(spec):
        if glmm and par.kind == "sigma":
            continue
        names.append(par.name)
        if par.kind in ("sd", "cor"):
            grp = par.name.rsplit("|", 1)[1]
            cols = spec.terms[par.term].colnames
            columns.append(
                f"sd_{grp}_{cols[par.i]}"
                if par.kind == "sd"
                else f"cor_{grp}_{cols[par.j]}_{cols[par.i]}"
            )
        else:
            columns.append(par.name)
    at_fit = parameter_table(
        result,
        np.asarray(result.theta, dtype=float)[None],
        None if glmm else np.array([result.sigma]),
        np.asarray(result.beta, dtype=float)[None],
        np.array([result.objective]),
    )
    return {
        "names": names,
        "columns": columns,
        "estimate": [float(at_fit[c].iloc[0]).hex() for c in columns],
        "theta": list(spec.theta_names),
    }


def _default_statistic_names(result) -> tuple[str, ...]:
    """lme4's ``c(fixef(x), sigma(x), getME(x, "theta"))``; a GLMM has no sigma."""
    spec = result.spec
    sigma = () if isinstance(result, GLMMResult) else ("sigma",)
    return tuple(spec.fe_names) + sigma + tuple(spec.theta_names)


# --------------------------------------------------------------------------- statistics
def statistic_vector(value, what: str = "statistic") -> tuple[np.ndarray, tuple | None]:
    """A statistic's return value as a 1-D float vector and its names (or None).

    Accepted: a number, a list or 1-D array of numbers, a pandas Series (its
    index names the values) or a dict of numbers (its keys name the values).
    Anything else raises a TypeError saying what came back.
    """
    names = None
    if value is None:
        raise TypeError(
            f"{what} returned None; it must return a 1-D numeric vector "
            "(a number, list, 1-D array, Series or dict of numbers)"
        )
    if isinstance(value, (str, bytes)):
        raise TypeError(
            f"{what} returned a {type(value).__name__} ({value!r:.40}); it must return numbers"
        )
    if isinstance(value, dict):
        bad = [
            k
            for k, v in value.items()
            if isinstance(v, bool) or not isinstance(v, (numbers.Real, np.number))
        ]
        if bad or not value:
            raise TypeError(
                f"{what} returned a dict whose values must be single numbers"
                + (f"; not {bad[:3]}" if bad else " (it is empty)")
            )
        names = tuple(str(k) for k in value)
        value = list(value.values())
    elif isinstance(value, pd.Series):
        names = tuple(str(k) for k in value.index)
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - ragged lists and the like
        raise TypeError(
            f"{what} returned {type(value).__name__} that is not a numeric vector: {exc}"
        ) from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{what} returned values of type {arr.dtype} ({type(value).__name__}); "
            "it must return numbers"
        )
    if arr.ndim > 1:
        raise TypeError(
            f"{what} returned an array of shape {arr.shape}; it must return a "
            "1-D vector (flatten it, or return a dict naming each value)"
        )
    arr = np.atleast_1d(arr.astype(float))
    if arr.size == 0:
        raise TypeError(f"{what} returned an empty vector")
    return arr, names


def _callable_identity(f) -> str:
    """A name and a hash of the code of a statistic: a checkpoint must not mix statistics."""
    name = f"{getattr(f, '__module__', '')}.{getattr(f, '__qualname__', type(f).__qualname__)}"
    code = getattr(f, "__code__", None)
    h = hashlib.sha256(name.encode())
    if code is not None:
        h.update(code.co_code)
        h.update(repr(code.co_consts).encode())
        h.update(repr(code.co_names).encode())
    else:
        try:
            h.update(pickle.dumps(f))
        except Exception:  # noqa: BLE001 - an unpicklable callable is known by its name
            pass
    return f"{name}:{h.hexdigest()[:16]}"


# --------------------------------------------------------------------------- one chunk
def _boot_chunk(payload, reps: np.ndarray, children) -> dict:
    """Simulate and refit replicates ``reps``; per-replicate arrays and failures."""
    result, params, statistic, width, tol, on_error = payload
    glmm = isinstance(result, GLMMResult)
    n = len(reps)
    spec = result.spec
    out = {
        "theta": np.full((n, spec.n_theta), np.nan),
        "beta": np.full((n, spec.p), np.nan),
        "objective": np.full(n, np.nan),
        "converged": np.zeros(n, dtype=bool),
        "evaluations": np.zeros(n, dtype=np.int64),
        "failed": np.zeros(n, dtype=bool),
        "failures": [],
    }
    if not glmm:
        out["sigma"] = np.full(n, np.nan)
    if statistic is not None:
        out["stat"] = np.full((n, width), np.nan)

    def fail(i, stage, exc):
        if on_error == "raise":
            raise exc
        out["failed"][i] = True
        out["failures"].append((int(reps[i]), stage, f"{type(exc).__name__}: {exc}"))

    try:
        Y = _simulate(result, params, children)
    except Exception as exc:  # noqa: BLE001 - recorded per replicate, run goes on
        for i in range(n):
            fail(i, "simulate", exc)
        return out
    u = np.full((n, result.model.workspace.q), np.nan) if glmm else None
    start = np.concatenate([result.theta, result.beta]) if glmm else result.theta
    for idx, rb in refit_isolated(
        result.model,
        Y,
        start=start,
        tol=tol,
        fail=lambda i, exc: fail(i, "refit", exc),
        raise_errors=on_error == "raise",
    ):
        out["theta"][idx], out["beta"][idx] = rb.theta, rb.beta
        out["objective"][idx] = rb.objective
        out["converged"][idx], out["evaluations"][idx] = rb.converged, rb.evaluations
        if glmm:
            u[idx] = rb.u
        else:
            out["sigma"][idx] = rb.sigma
    if statistic is not None:
        for i in range(n):
            if out["failed"][i] or not np.isfinite(out["objective"][i]):
                continue
            try:
                r = _replicate_result(result, out, u, i, Y[:, i])
                values, _ = statistic_vector(statistic(r))
                if values.size != width:
                    raise ValueError(f"statistic returned {values.size} values, expected {width}")
                out["stat"][i] = values
            except Exception as exc:  # noqa: BLE001
                fail(i, "statistic", exc)
    return out


def _simulate(result, params, children) -> np.ndarray:
    """Responses (n, len(children)) of the fitted model, one stream per replicate."""
    beta, sigma, theta, use_u = params
    u = result.u if use_u else None
    if isinstance(result, GLMMResult):
        return simulate_glmm_block(
            result.spec,
            result.family,
            children,
            beta=beta,
            theta=theta,
            u=u,
            trials=result.spec.trials,
            offset=result.spec.offset,
        )
    return simulate_block(result.spec, children, beta=beta, sigma=sigma, theta=theta, u=u)


def _replicate_result(result, out: dict, u, i: int, y: np.ndarray):
    """The fit of replicate i as the statistic sees it: the fit's own result type."""
    if not isinstance(result, GLMMResult):
        return build_result(result.model, out["theta"][i], result.optsum, y=y)
    with warnings.catch_warnings():
        # a replicate whose Hessian is not positive definite says so in vcov_method
        warnings.simplefilter("ignore", UserWarning)
        return build_glmm_result(
            result.model,
            np.concatenate([out["theta"][i], out["beta"][i]]),
            u[i],
            result.optsum,
            y=y,
            hessian=result.vcov_method == "hessian",
        )


# --------------------------------------------------------------------------- bootMer
def bootMer(
    result: LMMResult | GLMMResult,
    statistic: Statistic | None = None,
    B: int = 500,
    seed: runner.Seed = None,
    show_progress: bool = False,
    *,
    n_jobs: int = 1,
    client: Client | None = None,
    checkpoint: PathLike | None = None,
    use_u: bool = False,
    beta: Values | None = None,
    sigma: float | None = None,
    theta: ArrayLike | None = None,
    tol: float | None = None,
    on_error: str = "record",
) -> BootResult:
    """Parametric bootstrap: simulate y*, refit on the same X and Z, collect a statistic.

    Parameters
    ----------
    result : a fitted LMMResult or GLMMResult.
    statistic : callable (the fit's result type) -> a number, list, 1-D array, Series
        or dict of numbers; default ``[fe_params..., sigma, theta...]`` (a GLMM:
        ``[fe_params..., theta...]``, lme4's ``c(fixef(x), getME(x, "theta"))``).  It is tried on
        ``result`` first: a statistic that returns anything else fails at once.
        A Series' index or a dict's keys name the columns.
    B : number of replicates.
    seed : int, numpy Generator or None; replicate i uses child i of SeedSequence(seed).
    show_progress : a tqdm progress bar with rate and ETA.
    n_jobs : local worker processes; -1 for all cores.
    client : a ``dask.distributed.Client``: run the chunks on its cluster.
    checkpoint : a directory that keeps finished replicates.  Re-running the same
        call after an interruption computes only what is missing; a larger B
        extends the run; ``seed=None`` takes the checkpoint's seed.
    use_u : simulate conditionally on the fitted random effects (lme4's use.u).
    beta, sigma, theta : simulate under these parameter values instead of the estimates
        (a GLMM has no sigma).
    tol : relative objective tolerance of the refits (MixedModels.jl's ftol_rel);
        e.g. 1e-8 for faster, slightly less precise refits.  Default 1e-12.
    on_error : "record" (default): a replicate whose simulation, refit or statistic
        raises is recorded in ``failures`` and the run goes on; "raise": stop.

    The numbers of replicate i depend only on the model, the seed, i and these
    options: not on B, n_jobs, the backend or where a checkpointed run resumed.

    A GLMM replicate draws its response with :func:`mixboot.simulate.simulate_glmm_block`
    and is refitted as lme4's ``refit``: theta and beta together from the fit's
    estimates (theta alone for ``nAGQ=0``).

    Examples
    --------
    >>> import mixboot as mb
    >>> r = mb.fit("Reaction ~ Days + (Days | Subject)", data=mb.datasets.load("reaction"), REML=False)
    >>> boot = mb.bootMer(r, B=100, seed=42)
    >>> boot.estimates.shape
    (100, 6)
    """
    if not isinstance(result, (LMMResult, GLMMResult)):
        raise TypeError(
            f"result must be a fitted LMMResult or GLMMResult, got {type(result).__name__}"
        )
    runner.check_run_options(
        B=B,
        n_jobs=n_jobs,
        tol=tol,
        show_progress=show_progress,
        client=client,
        checkpoint=checkpoint,
    )
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {list(ON_ERROR)}, got {on_error!r}")
    if statistic is not None and not callable(statistic):
        raise TypeError(f"statistic must be callable (result -> 1-D vector), got {statistic!r}")
    params = (*check_parameters(result, beta, sigma, theta), bool(use_u))
    if statistic is None:
        names, estimate, width = None, None, 0
    else:
        # The statistic on the original fit, first: a broken statistic fails here, at once.
        estimate, names = statistic_vector(statistic(result), "statistic (on the original fit)")
        width = estimate.size
    payload = (result, params, statistic, width, tol, on_error)
    identity = {
        "workflow": "bootMer",
        "model": result.spec.fingerprint,
        **_model_kind(result),
        "statistic": None if statistic is None else _callable_identity(statistic),
        "width": width,
        "use_u": bool(use_u),
        "tol": tol,
        "parameters": [float(v).hex() for v in np.concatenate([params[0], [params[1]], params[2]])],
        "version": __version__,
    }
    job = runner.Job(
        task=_boot_chunk,
        payload=payload,
        B=int(B),
        chunk=runner.chunk_size(result.model),
        desc="bootMer",
        identity=identity,
    )
    outcome = runner.run(
        job, seed, n_jobs=n_jobs, client=client, checkpoint=checkpoint, show_progress=show_progress
    )
    return _assemble(result, outcome, names, estimate, tol, bool(use_u), checkpoint)


def _model_kind(result) -> dict:
    """What besides the specification makes the model: REML, or a GLMM's family and nAGQ."""
    if isinstance(result, GLMMResult):
        return {
            "REML": False,
            "family": result.family.name,
            "link": result.family.link.name,
            "nAGQ": result.nAGQ,
        }
    return {"REML": result.REML}


def _assemble(
    result, outcome: runner.Outcome, names, estimate, tol, use_u, checkpoint
) -> BootResult:
    spec = result.spec
    v = outcome.values
    B = len(v["objective"])
    theta, beta, sigma, objective = v["theta"], v["beta"], v.get("sigma"), v["objective"]
    failed = v["failed"]
    if "stat" in v:
        estimates = v["stat"].copy()
        names = names or tuple(f"stat{i}" for i in range(estimates.shape[1]))
    else:
        names = _default_statistic_names(result)
        if sigma is None:  # a GLMM: the scale is fixed at 1
            estimates = np.column_stack([beta, theta])
            estimate = np.concatenate([result.beta, result.theta])
        else:
            estimates = np.column_stack([beta, sigma, theta])
            estimate = np.concatenate([result.beta, [result.sigma], result.theta])
    estimates[failed] = np.nan
    stat_nan = np.where(failed, 0, np.isnan(estimates).sum(axis=1)).astype(np.int64)
    singular = np.any(theta[:, spec.lower_bounds == 0] < SINGULAR_TOL, axis=1)
    failures = outcome.failures
    errors = {}
    for row in failures.itertuples(index=False):
        errors.setdefault(int(row.replicate), f"{row.stage}: {row.message}")
    converged = v["converged"]
    diagnostics = pd.DataFrame(
        {
            "replicate": np.arange(B),
            "converged": converged & ~failed,
            "singular": singular & ~failed,
            "evaluations": v["evaluations"],
            "objective": objective,
            "error": pd.Series([errors.get(i) for i in range(B)], dtype=object),
            "stat_nan": stat_nan,
        }
    )
    tbl = parameter_table(result, theta, sigma, beta, objective)
    root = outcome.seed
    meta = {
        "fingerprint": spec.fingerprint,
        "seed_entropy": int(root.entropy),
        "spawn_keys": [list(root.spawn_key) + [i] for i in range(B)],
        "version": __version__,
        "formula": spec.formula,
        **_model_kind(result),
        "tol": tol,
        "use_u": use_u,
        "nobs": spec.n,
    }
    if "stat" not in v:
        meta["reported"] = _reported(result)
    if checkpoint is not None:
        meta["checkpoint"] = {"loaded": outcome.loaded, "computed": outcome.computed}
    boot = BootResult(
        estimates=estimates,
        names=tuple(names),
        estimate=estimate,
        tbl=tbl,
        diagnostics=diagnostics,
        failures=failures,
        meta=meta,
    )
    n_failed = int(failed.sum())
    n_nc = int((~converged & ~failed).sum())
    n_nan = int((stat_nan > 0).sum())
    if n_failed:
        warnings.warn(
            f"{n_failed} of {B} bootstrap replicates failed; see .failures (their "
            "rows of .estimates are NaN)",
            RuntimeWarning,
            stacklevel=3,
        )
    if n_nc:
        warnings.warn(
            f"{n_nc} of {B} bootstrap refits did not converge; see .diagnostics",
            RuntimeWarning,
            stacklevel=3,
        )
    if n_nan:
        warnings.warn(
            f"the statistic returned NaN in {n_nan} of {B} replicates; see "
            ".diagnostics['stat_nan']",
            RuntimeWarning,
            stacklevel=3,
        )
    return boot


# The fit's method is this function under another name (no second signature).
LMMResult.bootMer = bootMer
GLMMResult.bootMer = bootMer
