"""The BLAS thread policy: threads where one large factorization pays for them, one elsewhere.

Batched refits and small fits run many tiny products; BLAS threads there only
wait on each other (and swing with the machine's load), so they run on one
thread.  A large model's single-theta path spends its time in one big dense
Cholesky, which threads do speed up -- unless replicates already run side by
side in worker processes.  The policy is applied with ``threadpoolctl``; its
controller (a scan of the loaded libraries) is made once per process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["blas_controller", "blas_threads_for", "one_blas_thread", "pin_one_blas_thread"]

_CONTROLLER: list = []


def blas_controller():
    """The process's thread-pool controller (made on first use)."""
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS on one thread inside the block."""
    with blas_controller().limit(limits=1, user_api="blas"):
        yield


def pin_one_blas_thread() -> None:
    """BLAS on one thread for the rest of this process (a worker's setting)."""
    blas_controller().limit(limits=1, user_api="blas")


def blas_threads_for(workspace, *, in_worker: bool = False) -> contextlib.AbstractContextManager:
    """The thread setting for work on ``workspace``.

    One BLAS thread for batched (dense-workspace) models and inside worker
    processes; the library's default for a large model's single path.
    """
    if in_worker or getattr(workspace, "dense", True):
        return one_blas_thread()
    return contextlib.nullcontext()
