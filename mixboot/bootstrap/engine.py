"""bootMer: parametric bootstrap by batched simulate -> refit.

Replicates are processed in chunks of a fixed size that depends only on the
model, never on ``n_jobs``; replicate i always draws from child i of
``SeedSequence(seed)``.  Together these make a run reproducible to the last bit
for any number of workers.  With ``n_jobs > 1`` the model is written once to a
temporary file that each joblib worker loads once (cached per process), so only
replicate numbers travel with each task.
"""
from __future__ import annotations

import concurrent.futures
import functools
import os
import tempfile
import warnings

import joblib
import numpy as np
import pandas as pd

from ..refit import refit_responses
from ..result import SINGULAR_TOL, build_result
from ..simulate import check_parameters, child_streams, seed_streams, simulate_block
from .result import BootResult

__all__ = ["bootMer", "chunk_size", "parameter_table", "refit_isolated", "run_replicates",
           "validate_options"]

_CHUNK_BYTES = 32 * 2 ** 20
_WORKER_MODELS: dict[str, object] = {}


def chunk_size(result) -> int:
    ws = result.model.workspace
    per_rep = 8 * (ws.n * 3 + ws.m * ws.m * 12 + ws.m * ws.q1 * 10)
    return int(np.clip(_CHUNK_BYTES // per_rep, 1, 256)) if ws.dense else 8


def parameter_table(result, theta: np.ndarray, sigma: np.ndarray, beta: np.ndarray,
                    objective: np.ndarray) -> pd.DataFrame:
    """MixedModels.jl-style table: objective, beta, sigma, sd and correlation per term, theta."""
    spec = result.spec
    cols = {"objective": objective}
    for j, name in enumerate(spec.fe_names):
        cols[name] = beta[:, j]
    cols["sigma"] = sigma
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
                    cols[f"cor_{grp}_{term.colnames[j]}_{term.colnames[i]}"] = \
                        cov[:, i, j] / (sd_rel[:, i] * sd_rel[:, j])
    for j, name in enumerate(spec.theta_names):
        cols[f"theta_{name}"] = theta[:, j]
    return pd.DataFrame(cols)


def _default_statistic_names(result) -> tuple[str, ...]:
    spec = result.spec
    return tuple(spec.fe_names) + ("sigma",) + tuple(spec.theta_names)


def refit_isolated(result, Y, tol, on_error, fail):
    """Refit all columns of Y at once; if that raises, column by column.

    Returns ``[(indices, RefitBatch), ...]``; a column whose own refit raises is
    reported as ``fail(i, exc)`` (or re-raised when ``on_error == "raise"``).
    """
    try:
        return [(np.arange(Y.shape[1]), refit_responses(result, Y, tol=tol))]
    except Exception:  # noqa: BLE001 - isolate the failing replicate(s) one by one
        if on_error == "raise":
            raise
    batches = []
    for i in range(Y.shape[1]):
        try:
            batches.append((np.array([i]), refit_responses(result, Y[:, i:i + 1], tol=tol)))
        except Exception as exc:  # noqa: BLE001
            fail(i, exc)
    return batches


def _run_chunk(result, reps: np.ndarray, children, params, statistic, tol, on_error):
    """Simulate and refit replicates ``reps``; returns per-replicate arrays and failures."""
    beta0, sigma0, theta0, use_u = params
    B = len(reps)
    spec = result.spec
    k, p = spec.n_theta, spec.p
    out = {"theta": np.full((B, k), np.nan), "beta": np.full((B, p), np.nan),
           "sigma": np.full(B, np.nan), "objective": np.full(B, np.nan),
           "converged": np.zeros(B, dtype=bool), "evaluations": np.zeros(B, dtype=np.int64),
           "stat": None, "failures": []}

    def fail(i, stage, exc):
        if on_error == "raise":
            raise exc
        out["failures"].append((int(reps[i]), stage, f"{type(exc).__name__}: {exc}"))

    try:
        Y = simulate_block(result, children, beta=beta0, sigma=sigma0, theta=theta0, use_u=use_u)
    except Exception as exc:  # noqa: BLE001 - recorded per replicate, run goes on
        for i in range(B):
            fail(i, "simulate", exc)
        return out
    for idx, rb in refit_isolated(result, Y, tol, on_error, lambda i, exc: fail(i, "refit", exc)):
        out["theta"][idx], out["beta"][idx] = rb.theta, rb.beta
        out["sigma"][idx], out["objective"][idx] = rb.sigma, rb.objective
        out["converged"][idx], out["evaluations"][idx] = rb.converged, rb.evaluations
    if statistic is not None:
        stats = [None] * B
        for i in range(B):
            if not np.isfinite(out["objective"][i]):
                continue
            try:
                r = build_result(result.model, out["theta"][i], result.optsum, y=Y[:, i])
                stats[i] = np.atleast_1d(np.asarray(statistic(r), dtype=float))
            except Exception as exc:  # noqa: BLE001
                fail(i, "statistic", exc)
        out["stat"] = stats
    return out


def _worker_chunks(path: str, task, chunks, entropy, spawn_key):
    payload = _WORKER_MODELS.get(path)
    if payload is None:
        payload = joblib.load(path)
        _WORKER_MODELS.clear()
        _WORKER_MODELS[path] = payload
    return [(reps, task(payload, reps, child_streams(entropy, spawn_key, reps))) for reps in chunks]


def validate_options(B, n_jobs, tol, on_error, statistic, show_progress):
    if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or B < 1:
        raise ValueError(f"B must be a positive integer, got {B!r}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 \
            or n_jobs < -1:
        raise ValueError(f"n_jobs must be a positive integer or -1 (all cores), got {n_jobs!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise ValueError(f"tol must be a relative tolerance between 0 and 1, got {tol!r}")
    if on_error not in ("record", "raise"):
        raise ValueError(f"on_error must be 'record' or 'raise', got {on_error!r}")
    if statistic is not None and not callable(statistic):
        raise TypeError(f"statistic must be callable (result -> 1-D array), got {statistic!r}")
    if not isinstance(show_progress, bool):
        raise TypeError(f"show_progress must be True or False, got {show_progress!r}")


def _progress(total, show, desc="bootMer"):
    if not show:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn("show_progress=True needs tqdm (pip install tqdm)", stacklevel=3)
        return None
    return tqdm(total=total, unit="rep", desc=desc)


def bootMer(result, statistic=None, B: int = 500, seed=None, show_progress: bool = False, *,
            n_jobs: int = 1, use_u: bool = False, beta=None, sigma=None, theta=None,
            tol: float | None = None, on_error: str = "record") -> BootResult:
    """Parametric bootstrap: simulate y*, refit on the same X and Z, collect a statistic.

    Parameters
    ----------
    result : a fitted LMMResult.
    statistic : callable (LMMResult) -> 1-D array; default ``[fe_params..., sigma, theta...]``.
    B : number of replicates.
    seed : int, numpy Generator or None; replicate i uses child i of SeedSequence(seed).
    show_progress : a tqdm progress bar with rate and ETA.
    n_jobs : worker processes (joblib); -1 for all cores.  Results do not depend on it.
    use_u : simulate conditionally on the fitted random effects (lme4's use.u).
    beta, sigma, theta : simulate under these parameter values instead of the estimates.
    tol : relative objective tolerance of the refits (MixedModels.jl's ftol_rel);
        e.g. 1e-8 for faster, slightly less precise refits.  Default 1e-12.
    on_error : "record" (default): a replicate whose simulation, refit or statistic
        raises is recorded in ``failures`` and the run goes on; "raise": stop.

    >>> import mixboot as mb
    >>> r = mb.fit("Reaction ~ Days + (Days | Subject)", data=mb.datasets.load("reaction"), REML=False)
    >>> boot = mb.bootMer(r, B=100, seed=42)
    >>> boot.estimates.shape
    (100, 6)
    """
    validate_options(B, n_jobs, tol, on_error, statistic, show_progress)
    params = (*check_parameters(result, beta, sigma, theta), bool(use_u))
    # The statistic on the original fit, first: a broken statistic fails here, at once.
    original = None if statistic is None else statistic(result)
    B = int(B)
    root, _ = seed_streams(seed, 0)
    task = functools.partial(_run_chunk, params=params, statistic=statistic, tol=tol,
                             on_error=on_error)
    parts = run_replicates(result, task, B, chunk_size(result), n_jobs, root, show_progress,
                           "bootMer")
    return _assemble(result, B, parts, statistic, original, root, tol, bool(use_u))


def run_replicates(payload, task, B: int, chunk: int, n_jobs: int, root, show_progress: bool,
                   desc: str) -> list:
    """Run ``task(payload, reps, children)`` over replicates 0..B-1 in chunks of ``chunk``.

    ``children`` are the SeedSequence children of ``root`` for ``reps``.  The chunks
    depend only on ``B`` and ``chunk``, never on ``n_jobs``, so the output is the
    same to the last bit for any number of workers.  With several workers the
    payload is written once to a temporary file that each worker loads once.
    Returns ``[(reps, task output), ...]`` in replicate order.
    """
    chunks = [np.arange(s, min(s + chunk, B)) for s in range(0, B, chunk)]
    n_workers = (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)
    n_workers = max(1, min(n_workers, len(chunks)))
    bar = _progress(B, show_progress, desc)
    parts = []
    try:
        if n_workers == 1:
            for reps in chunks:
                parts.append((reps, task(payload, reps,
                                         child_streams(root.entropy, root.spawn_key, reps))))
                if bar is not None:
                    bar.update(len(reps))
        else:
            parts = _run_parallel(payload, task, chunks, n_workers, root, bar)
    finally:
        if bar is not None:
            bar.close()
    return parts


_ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                       "MKL_NUM_THREADS", "BLIS_NUM_THREADS")}


def _run_parallel(payload, task, chunks, n_workers, root, bar):
    """Chunks on ``n_workers`` worker processes (loky), BLAS pinned to one thread each.

    Starting workers takes a second or two (a fresh interpreter imports numpy,
    pandas and mixboot).  Meanwhile this process works too: it takes tasks from
    the back of the queue, cancelling them there, until the first worker result
    arrives.  Which process runs a chunk does not change its numbers.
    """
    from joblib.externals.loky import get_reusable_executor
    # Many small tasks: workers that start late or run slow even out.
    n_tasks = min(len(chunks), n_workers * 16)
    groups = [chunks[i::n_tasks] for i in range(n_tasks)]
    fd, path = tempfile.mkstemp(prefix="mixboot-model-", suffix=".joblib")
    os.close(fd)
    parts = []
    try:
        joblib.dump(payload, path)
        executor = get_reusable_executor(max_workers=n_workers, env=_ONE_THREAD)
        futures = [executor.submit(_worker_chunks, path, task, g, root.entropy, root.spawn_key)
                   for g in groups]
        for i in range(len(futures) - 1, 0, -1):
            if any(f.done() for f in futures) or not futures[i].cancel():
                break
            res = [(reps, task(payload, reps, child_streams(root.entropy, root.spawn_key, reps)))
                   for reps in groups[i]]
            parts.extend(res)
            if bar is not None:
                bar.update(sum(len(r) for r, _ in res))
        for f in concurrent.futures.as_completed([f for f in futures if not f.cancelled()]):
            res = f.result()
            parts.extend(res)
            if bar is not None:
                bar.update(sum(len(r) for r, _ in res))
    finally:
        os.unlink(path)
    parts.sort(key=lambda item: int(item[0][0]))
    return parts


def _assemble(result, B, parts, statistic, original, root, tol, use_u) -> BootResult:
    spec = result.spec
    theta = np.concatenate([o["theta"] for _, o in parts])
    beta = np.concatenate([o["beta"] for _, o in parts])
    sigma = np.concatenate([o["sigma"] for _, o in parts])
    objective = np.concatenate([o["objective"] for _, o in parts])
    converged = np.concatenate([o["converged"] for _, o in parts])
    evaluations = np.concatenate([o["evaluations"] for _, o in parts])
    failures = [f for _, o in parts for f in o["failures"]]
    failed = np.zeros(B, dtype=bool)
    failed[[f[0] for f in failures]] = True
    if statistic is None:
        names = _default_statistic_names(result)
        estimates = np.column_stack([beta, sigma, theta])
        estimate = np.concatenate([result.beta, [result.sigma], result.theta])
    else:
        stats = [s for _, o in parts for s in o["stat"]]
        estimate = np.atleast_1d(np.asarray(original, dtype=float))
        width = estimate.size
        estimates = np.full((B, width), np.nan)
        for i, s in enumerate(stats):
            if s is None:
                continue
            if s.size != width:
                failures.append((i, "statistic", f"ValueError: statistic returned {s.size} values, "
                                 f"expected {width}"))
                failed[i] = True
                continue
            estimates[i] = s
        names = _statistic_names(original, width)
    estimates[failed] = np.nan
    singular = np.any(theta[:, spec.lower_bounds == 0] < SINGULAR_TOL, axis=1)
    errors = {f[0]: f"{f[1]}: {f[2]}" for f in failures}
    diagnostics = pd.DataFrame({
        "replicate": np.arange(B), "converged": converged & ~failed, "singular": singular & ~failed,
        "evaluations": evaluations, "objective": objective,
        "error": pd.Series([errors.get(i) for i in range(B)], dtype=object)})
    fail_df = pd.DataFrame(sorted(failures), columns=["replicate", "stage", "message"])
    tbl = parameter_table(result, theta, sigma, beta, objective)
    from .. import __version__
    meta = {"fingerprint": spec.fingerprint, "seed_entropy": int(root.entropy),
            "spawn_keys": [list(root.spawn_key) + [i] for i in range(B)],
            "version": __version__, "formula": spec.formula, "REML": result.REML,
            "tol": tol, "use_u": use_u, "nobs": spec.n}
    boot = BootResult(estimates=estimates, names=tuple(names), estimate=estimate, tbl=tbl,
                      diagnostics=diagnostics, failures=fail_df, meta=meta)
    n_nc = int((~converged & ~failed).sum())
    if failures:
        warnings.warn(f"{len(set(f[0] for f in failures))} of {B} bootstrap replicates failed; "
                      "see .failures (their rows of .estimates are NaN)", RuntimeWarning, stacklevel=3)
    if n_nc:
        warnings.warn(f"{n_nc} of {B} bootstrap refits did not converge; see .diagnostics",
                      RuntimeWarning, stacklevel=3)
    return boot


def _statistic_names(value, width: int) -> tuple[str, ...]:
    """A pandas Series statistic names its columns by its index; otherwise stat0, stat1, ..."""
    if isinstance(value, pd.Series) and len(value) == width:
        return tuple(str(n) for n in value.index)
    return tuple(f"stat{i}" for i in range(width))
