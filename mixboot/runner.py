"""The replicate runner: the one loop behind bootMer, power and pb_lrt.

A :class:`Job` says what a chunk of replicates computes (``task``) and what
that depends on (``identity``); :func:`run` decides where and when chunks run
and puts their outputs together.  The runner owns, for every workflow:

* **replicate numbers and streams** -- replicate i draws from child i of the
  root :class:`numpy.random.SeedSequence`, whoever runs it;
* **chunks** -- a fixed grid of ``chunk`` replicates; a chunk's numbers do not
  depend on its mates (every kernel works per replicate), so the grid may be
  cut anywhere, e.g. at the end of a checkpoint being extended;
* **executors** -- this process, local worker processes (``n_jobs``), or a
  Dask cluster (``client``); BLAS is pinned to one thread wherever replicates
  are refitted;
* **progress, failures and checkpoints** -- a tqdm bar, the failure table, and
  finished chunks kept on disk so that a killed run resumes and a larger B
  extends it.

A task is ``task(payload, reps, children) -> dict``: per-replicate arrays
(first axis ``len(reps)``) plus ``"failures"``, a list of
``(replicate, stage, message)``.  The payload is sent to each worker once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .checkpoint import Checkpoint
from .threads import blas_controller, one_blas_thread, pin_one_blas_thread

__all__ = [
    "Job",
    "Outcome",
    "run",
    "seed_streams",
    "child_streams",
    "chunk_size",
    "check_run_options",
    "CHUNK_BYTES",
]

# Memory a chunk of replicates may use (bytes): large enough that per-chunk
# overhead is small, small enough that a chunk stays well inside a core's cache
# hierarchy and that progress and checkpoints advance often.
CHUNK_BYTES = 32 * 2**20
# What a `seed=` argument accepts (see seed_streams).
Seed = int | np.integer | np.random.SeedSequence | np.random.Generator | None
MAX_CHUNK = 256
# Chunks per worker process when several share a run: enough to even out the load.
TASKS_PER_WORKER = 8
# ... but not below this many replicates: a batched refit of fewer pays more per
# replicate for its Python overhead than a second process gains.
MIN_SHARED_CHUNK = 64
# Worker processes are started only for work that would take this long (seconds)
# in one process: below it, starting them costs more than they save.
PARALLEL_MIN_SECONDS = 0.25
# How often a worker process checks that the process that started it is alive.
WATCHDOG_INTERVAL = 0.5
FAILURE_COLUMNS = ["replicate", "stage", "message"]


# --------------------------------------------------------------------------- streams
def seed_streams(seed, n: int) -> tuple[np.random.SeedSequence, list[np.random.SeedSequence]]:
    """The root SeedSequence for ``seed`` and its first ``n`` children."""
    if isinstance(seed, np.random.Generator):
        root = np.random.SeedSequence(int(seed.integers(0, 2**63)))
    elif isinstance(seed, np.random.SeedSequence):
        root = seed
    elif seed is None or (
        isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0
    ):
        root = np.random.SeedSequence(None if seed is None else int(seed))
    else:
        raise TypeError(f"seed must be a non-negative int, a numpy Generator or None, got {seed!r}")
    return root, child_streams(root.entropy, root.spawn_key, range(n))


def child_streams(entropy, spawn_key, replicates) -> list[np.random.SeedSequence]:
    """Child i of the root (entropy, spawn_key) for each replicate number i."""
    return [
        np.random.SeedSequence(entropy, spawn_key=tuple(spawn_key) + (int(i),)) for i in replicates
    ]


def chunk_size(*models) -> int:
    """Replicates per chunk for refits of these models: bounded by :data:`CHUNK_BYTES`.

    Large (sparse-workspace) models refit one replicate at a time: a chunk of
    one keeps progress and checkpoints moving.
    """
    sizes = []
    for model in models:
        per_rep = model.workspace.bytes_per_replicate
        sizes.append(1 if per_rep is None else int(np.clip(CHUNK_BYTES // per_rep, 1, MAX_CHUNK)))
    return min(sizes)


# --------------------------------------------------------------------------- options
def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_run_options(
    *, B, B_name: str = "B", n_jobs=1, tol=None, show_progress=False, client=None, checkpoint=None
) -> None:
    """The one validator of the options every replicate workflow shares."""
    if not _is_int(B) or B < 1:
        raise ValueError(f"{B_name} must be an integer >= 1, got {B!r}")
    if not _is_int(n_jobs) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be a positive integer or -1 (all cores), got {n_jobs!r}")
    if tol is not None and (
        isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1
    ):
        raise ValueError(f"tol must be a relative tolerance between 0 and 1, got {tol!r}")
    if not isinstance(show_progress, (bool, np.bool_)):
        raise TypeError(f"show_progress must be True or False, got {show_progress!r}")
    if client is not None:
        if not (hasattr(client, "submit") and hasattr(client, "scatter")):
            raise TypeError(
                f"client must be a dask.distributed.Client, got {type(client).__name__}"
            )
        if n_jobs != 1:
            raise ValueError("give either client (a Dask cluster) or n_jobs, not both")
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a directory path, got {checkpoint!r}")
        path = os.path.abspath(os.fspath(checkpoint))
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"checkpoint {path!r} exists and is not a directory")
        parent = path if os.path.isdir(path) else os.path.dirname(path)
        if not os.path.isdir(parent):
            raise ValueError(f"checkpoint: directory {parent!r} does not exist")
        if not os.access(parent, os.W_OK):
            raise ValueError(f"checkpoint: directory {parent!r} is not writable")


# --------------------------------------------------------------------------- jobs
@dataclass(frozen=True, eq=False)
class Job:
    """Replicates 0..B-1 of one workflow.

    ``identity`` is JSON-able and names everything a replicate's numbers depend
    on besides the seed (model, data, options, statistic, package version): a
    checkpoint made under another identity is refused.
    """

    task: Callable
    payload: Any
    B: int
    chunk: int
    desc: str
    identity: dict = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Outcome:
    """What :func:`run` returns: per-replicate arrays in replicate order, and failures."""

    values: dict
    failures: pd.DataFrame
    seed: np.random.SeedSequence
    loaded: int  # replicates read from the checkpoint
    computed: int  # replicates computed by this call
    processes: int  # distinct processes that computed chunks


def run(
    job: Job, seed, *, n_jobs: int = 1, client=None, checkpoint=None, show_progress: bool = False
) -> Outcome:
    """Run ``job``'s replicates (those not already in ``checkpoint``) and collect them.

    ``seed``: int, Generator, SeedSequence or None.  With ``checkpoint`` (a
    directory) finished chunks are kept there as they come in; a run with the
    same job and seed computes only what is missing, and ``seed=None`` takes the
    checkpoint's seed.  A KeyboardInterrupt stops every worker, keeps what was
    finished, removes temporary files and is raised again.
    """
    if checkpoint is None:
        root, _ = seed_streams(seed, 0)
        return _compute(job, root, None, n_jobs, client, show_progress)
    store = Checkpoint(checkpoint, job.identity)
    root = store.open(
        None if seed is None else seed_streams(seed, 0)[0],
        from_generator=isinstance(seed, np.random.Generator),
    )
    try:
        return _compute(job, root, store, n_jobs, client, show_progress)
    finally:
        store.close()


def _compute(job: Job, root, store, n_jobs, client, show_progress) -> Outcome:
    """Load what ``store`` holds, compute the rest, put the chunks in replicate order."""
    parts: dict[int, tuple[np.ndarray, dict]] = {}
    if store is not None:
        parts = {int(reps[0]): (reps, out) for reps, out in store.load(job.B)}
    loaded = sum(len(r) for r, _ in parts.values())
    if client is not None:
        workers = _cluster_workers(client)
    else:
        workers = (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)
    chunk = job.chunk
    if client is not None or workers > 1:
        # Several processes: smaller chunks balance the load (the grid does not
        # change any replicate's numbers).
        share = -(-(job.B - loaded) // (TASKS_PER_WORKER * max(workers, 2)))
        chunk = max(1, min(chunk, max(share, MIN_SHARED_CHUNK)))
    todo = _missing_chunks(parts, job.B, chunk)
    bar = _progress(job.B, loaded, show_progress, job.desc)
    pids: set[int] = set()

    def finished(reps, out, pid):
        pids.add(pid)
        parts[int(reps[0])] = (reps, out)
        if store is not None:
            store.add(reps, out)
        if bar is not None:
            bar.update(len(reps))

    try:
        if todo and client is not None:
            _run_dask(client, job, todo, root, finished)
        elif todo and min(workers, len(todo)) > 1:
            # The first chunk here, timed: workers are started only when the rest
            # would take long enough in this process to pay for them.
            start = time.perf_counter()
            _run_here(job, todo[:1], root, finished)
            rest = todo[1:]
            per_replicate = (time.perf_counter() - start) / len(todo[0])
            if per_replicate * sum(len(r) for r in rest) > PARALLEL_MIN_SECONDS:
                _run_processes(job, rest, min(workers, len(rest)), root, finished)
            else:
                _run_here(job, rest, root, finished)
        elif todo:
            _run_here(job, todo, root, finished)
    finally:
        if bar is not None:
            bar.close()
    ordered = [parts[k] for k in sorted(parts)]
    values = _concatenate([out for _, out in ordered])
    failures = pd.DataFrame(
        sorted(f for _, out in ordered for f in out["failures"]), columns=FAILURE_COLUMNS
    )
    return Outcome(
        values=values,
        failures=failures,
        seed=root,
        loaded=loaded,
        computed=job.B - loaded,
        processes=len(pids),
    )


def _missing_chunks(parts: dict, B: int, chunk: int) -> list[np.ndarray]:
    """Replicates 0..B-1 not in ``parts``, cut on the grid of multiples of ``chunk``."""
    have = np.zeros(B, dtype=bool)
    for reps, _ in parts.values():
        have[reps] = True
    out = []
    for start in range(0, B, chunk):
        reps = np.flatnonzero(~have[start : start + chunk]) + start
        # split where a checkpointed range interrupts the chunk: keep runs contiguous
        if reps.size:
            for run_ in np.split(reps, np.flatnonzero(np.diff(reps) != 1) + 1):
                out.append(run_)
    return out


def _concatenate(outs: list[dict]) -> dict:
    keys = [k for k in outs[0] if k != "failures"] if outs else []
    return {k: np.concatenate([o[k] for o in outs], axis=0) for k in keys}


def _progress(total: int, initial: int, show: bool, desc: str):
    if not show:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn("show_progress=True needs tqdm (pip install tqdm)", stacklevel=4)
        return None
    return tqdm(total=total, initial=initial, unit="rep", desc=desc)


# --------------------------------------------------------------------------- executors
def _call(task, payload, reps, entropy, spawn_key):
    return task(payload, reps, child_streams(entropy, spawn_key, reps))


def _run_here(job: Job, todo, root, finished) -> None:
    with one_blas_thread():
        for reps in todo:
            finished(
                reps, _call(job.task, job.payload, reps, root.entropy, root.spawn_key), os.getpid()
            )


# -- local processes ---------------------------------------------------------------
_POOL_JOB: list = []
_WATCHDOG: list[threading.Thread] = []


def _watch_parent(parent: int) -> None:
    """Exit this worker soon after the process that started it dies (kill -9 included)."""
    while True:
        time.sleep(WATCHDOG_INTERVAL)
        if os.getppid() != parent:
            os._exit(1)


def _pool_init(job, parent: int) -> None:
    """Worker start: the job, one BLAS thread, Ctrl-C left to the parent, a parent watchdog."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if isinstance(job, bytes):  # spawned (not forked) workers receive the job pickled
        import cloudpickle

        job = cloudpickle.loads(job)
    _POOL_JOB[:] = [job]
    pin_one_blas_thread()
    if not _WATCHDOG:
        thread = threading.Thread(target=_watch_parent, args=(parent,), daemon=True)
        thread.start()
        _WATCHDOG.append(thread)


def _pool_task(reps, entropy, spawn_key):
    job = _POOL_JOB[0]
    return reps, _call(job.task, job.payload, reps, entropy, spawn_key), os.getpid()


def _pool_context():
    """Fork where the platform has it: workers start in milliseconds and share the
    model's memory, with nothing to import or send; spawn elsewhere."""
    import multiprocessing

    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork"), False
    return multiprocessing.get_context("spawn"), True


def _run_processes(job: Job, todo, n_workers: int, root, finished) -> None:
    """Chunks on ``n_workers`` forked worker processes, BLAS pinned to one thread each.

    Workers are fed two chunks at a time each, and results stream back as they
    finish.  Which process runs a chunk does not change its numbers.  On Ctrl-C
    or an error the workers are killed at once; a worker whose parent dies
    (kill -9) exits within a second (:data:`WATCHDOG_INTERVAL`).
    """
    import collections

    context, pickled = _pool_context()
    blas_controller()  # made once here, so that forked workers need not scan libraries
    initial = job
    if pickled:
        import cloudpickle

        initial = cloudpickle.dumps(job)
    executor = concurrent.futures.ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=context,
        initializer=_pool_init,
        initargs=(initial, os.getpid()),
    )
    pending = collections.deque(todo)
    in_flight: set = set()

    def feed() -> None:
        with warnings.catch_warnings():
            # Python 3.12+ warns when a process with threads forks; the only other
            # threads here are BLAS's, which OpenBLAS parks around fork.
            warnings.filterwarnings(
                "ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning
            )
            while pending and len(in_flight) < 2 * n_workers:
                in_flight.add(
                    executor.submit(
                        _pool_task, pending.popleft(), root.entropy, tuple(root.spawn_key)
                    )
                )

    completed = False
    try:
        feed()
        while in_flight:
            done, _ = concurrent.futures.wait(
                in_flight, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                in_flight.discard(future)
                finished(*future.result())
            feed()
        completed = True
    finally:
        if not completed:
            # Interrupted or failed: stop the workers now rather than let them
            # finish work nobody will collect.
            for process in list(getattr(executor, "_processes", {}).values()):
                with contextlib.suppress(Exception):
                    process.kill()
        executor.shutdown(wait=completed, cancel_futures=not completed)


# -- Dask ---------------------------------------------------------------------------
# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_DEFAULT_MMAP_THRESHOLD = 128 * 2**10
# Allocations up to this size stay on the heap while a chunk runs on a Dask worker.
_CHUNK_MMAP_THRESHOLD = 64 * 2**20


@contextlib.contextmanager
def _heap_for_chunk():
    """Undo, while a chunk runs, the malloc settings Dask gives its workers.

    Dask starts workers with MALLOC_TRIM_THRESHOLD_ set (memory goes back to the
    system at once), which also freezes glibc's mmap threshold at 128 KiB: every
    temporary array above that is then mapped and unmapped afresh, and a refit
    runs 70% slower.  The settings are restored, and free memory trimmed, after
    the chunk.
    """
    setting = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    libc = None
    if setting is not None and sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            libc = ctypes.CDLL(None)
            libc.mallopt(_M_MMAP_THRESHOLD, _CHUNK_MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, 2 * _CHUNK_MMAP_THRESHOLD)
    try:
        yield
    finally:
        if libc is not None:
            with contextlib.suppress(Exception):
                libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP_THRESHOLD)
                libc.mallopt(_M_TRIM_THRESHOLD, int(setting))
                libc.malloc_trim(0)


def _dask_task(task, payload, group, entropy, spawn_key):
    """Chunks ``group`` on a Dask worker: [(reps, output, pid), ...]."""
    with one_blas_thread(), _heap_for_chunk():
        return [
            (reps, _call(task, payload, reps, entropy, spawn_key), os.getpid()) for reps in group
        ]


def _cluster_workers(client) -> int:
    """How many workers the cluster has now (at least 1: workers may still be joining)."""
    try:
        return max(1, len(client.scheduler_info()["workers"]))
    except Exception:  # noqa: BLE001 - only sizes the chunks
        return 1


def _run_dask(client, job: Job, todo, root, finished) -> None:
    """Chunks on a Dask cluster: the payload is scattered once, results stream back.

    A worker that dies mid-task loses nothing: the scheduler runs its tasks again
    elsewhere, and a replicate's numbers do not depend on where it ran.
    """
    try:
        from distributed import as_completed
    except ImportError:  # pragma: no cover - a client cannot exist without it
        raise ImportError("client= needs dask.distributed: pip install 'mixboot[dask]'") from None
    # A task is a run of consecutive chunks: tasks of a few hundred milliseconds
    # or more keep the scheduler's per-task cost small; TASKS_PER_WORKER of them
    # per worker even out the load.
    n_tasks = min(len(todo), TASKS_PER_WORKER * _cluster_workers(client))
    groups = [list(g) for g in np.array_split(np.arange(len(todo)), n_tasks)]
    [payload] = client.scatter([job.payload], broadcast=True, hash=False)
    futures = [
        client.submit(
            _dask_task,
            job.task,
            payload,
            [todo[i] for i in g],
            root.entropy,
            tuple(root.spawn_key),
            pure=False,
        )
        for g in groups
    ]
    completed = False
    try:
        for future in as_completed(futures):
            for done in future.result():
                finished(*done)
        completed = True
    finally:
        if not completed:
            client.cancel(futures)
        client.cancel([payload])
