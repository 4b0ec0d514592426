"""The Dask backend (``client=``): same bits as the serial run, checkpoints, lost workers.

One local cluster (two worker processes, one thread each) serves the module.  Every
workflow on the replicate runner (bootMer, power, pb_lrt) must give, on the cluster,
exactly the numbers of ``n_jobs=1``: replicate i draws from child i of the seed
wherever it runs.  A worker killed mid-run must not lose or change a replicate.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("distributed")
from distributed import Client, LocalCluster, get_task_stream  # noqa: E402

import mixboot as mb  # noqa: E402
from conftest import load_data  # noqa: E402

SLEEP = "Reaction ~ 1 + Days + (1 + Days|Subject)"
PENICILLIN = "diameter ~ 1 + (1|plate) + (1|sample)"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "port in use" from a previous cluster
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture(scope="module")
def sleep_ml():
    return mb.fit(SLEEP, data=load_data("sleepstudy"), REML=False)


@pytest.fixture(scope="module")
def penicillin_reml():
    return mb.fit(PENICILLIN, data=load_data("penicillin"), REML=True)


@pytest.fixture(scope="module")
def two_arm():
    d = mb.design.nested(groups=40, per_group=5, between={"treatment": [0.0, 1.0]}, group="subject")
    return mb.model(
        "y ~ treatment + (1 | subject)",
        d,
        beta={"(Intercept)": 1.0, "treatment": 0.5},
        sigma=1.0,
        re={"subject": 1.0},
    )


def assert_same_boot(a, b):
    """Two BootResults hold the same bits (estimates, parameter table, diagnostics)."""
    assert a.names == b.names
    assert a.estimates.shape == b.estimates.shape
    assert a.estimates.tobytes() == b.estimates.tobytes()
    assert a.tbl.equals(b.tbl)
    assert a.diagnostics.equals(b.diagnostics)
    assert len(a.failures) == len(b.failures)


class on_cluster:
    """Records the chunk tasks the cluster ran inside the block (``.tasks``): a test
    whose ``client=`` were ignored (run here instead) must fail, not pass vacuously."""

    def __init__(self, client):
        self.stream = get_task_stream(client)
        self.tasks: list = []

    def __enter__(self):
        self.stream.__enter__()
        return self

    def __exit__(self, *exc):
        self.stream.__exit__(*exc)
        self.tasks = [
            t for t in self.stream.data if "_dask_task" in str(t["key"]) and t.get("status") == "OK"
        ]
        if exc[0] is None:
            assert len(self.tasks) >= 2, f"{len(self.tasks)} chunk tasks ran on the cluster"
        return False


def _check_workers(client, n=2):
    """The cluster has ``n`` workers again (the nanny restarts a killed one)."""
    client.wait_for_workers(n, timeout=60)
    return client.run(os.getpid)


# --------------------------------------------------------------------------- bootMer
@pytest.mark.parametrize("which, B", [("sleep_ml", 300), ("penicillin_reml", 400)])
def test_bootmer_client_equals_serial(client, request, which, B):
    fit = request.getfixturevalue(which)
    serial = mb.bootMer(fit, B=B, seed=31)
    with on_cluster(client):
        dask = mb.bootMer(fit, B=B, seed=31, client=client)
    assert_same_boot(dask, serial)
    assert np.isfinite(dask.estimates).all()


def test_bootmer_client_lambda_statistic(client, sleep_ml):
    """A lambda (not importable by name) goes to the workers with the payload."""
    stat = lambda r: {"slope": float(r.beta[1]), "sigma": float(r.sigma)}  # noqa: E731
    serial = mb.bootMer(sleep_ml, stat, B=200, seed=5)
    with on_cluster(client):
        dask = mb.bootMer(sleep_ml, stat, B=200, seed=5, client=client)
    assert dask.names == ("slope", "sigma")
    assert_same_boot(dask, serial)
    assert np.isfinite(dask.estimates).all()
    # the columns are the statistic's (not the default statistic): its sigma is the refit's
    np.testing.assert_array_equal(dask.estimates[:, 1], dask.tbl["sigma"].to_numpy())


# --------------------------------------------------------------------------- power, pb_lrt
@pytest.mark.parametrize("method", ["wald", "lrt"])
def test_power_client_equals_serial(client, two_arm, method):
    serial = mb.power(two_arm, "treatment", nsim=300, seed=8, method=method)
    with on_cluster(client):
        dask = mb.power(two_arm, "treatment", nsim=300, seed=8, method=method, client=client)
    assert dask.pvalues.tobytes() == serial.pvalues.tobytes()
    assert dask.converged.tobytes() == serial.converged.tobytes()
    assert (dask.power, dask.n_valid, dask.n_significant) == (
        serial.power,
        serial.n_valid,
        serial.n_significant,
    )
    assert dask.n_valid > 250


def test_pb_lrt_client_equals_serial(client, sleep_ml):
    small = mb.fit(
        "Reaction ~ 1 + Days + (1 + Days||Subject)", data=load_data("sleepstudy"), REML=False
    )
    serial = mb.pb_lrt(sleep_ml, small, B=200, seed=3)
    with on_cluster(client):
        dask = mb.pb_lrt(sleep_ml, small, B=200, seed=3, client=client)
    assert dask.lrt_boot.tobytes() == serial.lrt_boot.tobytes()
    assert dask.p_boot == serial.p_boot
    assert dask.n_valid == serial.n_valid > 190


# --------------------------------------------------------------------------- checkpoint
def test_client_checkpoint_resumes_everything(client, penicillin_reml, tmp_path):
    where = tmp_path / "ckpt"
    with on_cluster(client):
        first = mb.bootMer(penicillin_reml, B=300, seed=12, client=client, checkpoint=where)
    assert first.meta["checkpoint"] == {"loaded": 0, "computed": 300}
    assert list(where.glob("chunk-*.pkl"))
    with get_task_stream(client) as stream:
        again = mb.bootMer(penicillin_reml, B=300, seed=12, client=client, checkpoint=where)
    assert not [t for t in stream.data if "_dask_task" in str(t["key"])]  # nothing to do
    assert again.meta["checkpoint"] == {"loaded": 300, "computed": 0}
    assert_same_boot(again, first)
    assert_same_boot(first, mb.bootMer(penicillin_reml, B=300, seed=12))


# --------------------------------------------------------------------------- options
def test_client_with_n_jobs_is_a_value_error(client, sleep_ml, two_arm):
    with pytest.raises(ValueError, match="client.*n_jobs"):
        mb.bootMer(sleep_ml, B=10, seed=1, client=client, n_jobs=2)
    with pytest.raises(ValueError, match="client.*n_jobs"):
        mb.power(two_arm, "treatment", nsim=10, seed=1, client=client, n_jobs=2)


@pytest.mark.parametrize("bad", [object(), "tcp://127.0.0.1:8786", 2])
def test_non_client_is_a_type_error(sleep_ml, bad):
    with pytest.raises(TypeError, match="dask.distributed.Client"):
        mb.bootMer(sleep_ml, B=10, seed=1, client=bad)


# --------------------------------------------------------------------------- lost worker
def _finished_tasks(dask_scheduler) -> int:
    """Chunk tasks held in memory on the scheduler (finished, results not yet released)."""
    return sum(
        1
        for key, ts in dask_scheduler.tasks.items()
        if ts.state == "memory" and "_dask_task" in str(key)
    )


def test_killed_worker_loses_no_replicate(client, penicillin_reml):
    """SIGKILL a worker that is running chunks: the scheduler reruns its chunks
    elsewhere, the run completes, and its bits are those of the serial run."""
    B = 5000
    before = _check_workers(client)
    box: dict = {}

    def work():
        try:
            box["result"] = mb.bootMer(penicillin_reml, B=B, seed=77, client=client)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    # Wait until chunks are finished and both workers are running more.
    deadline = time.monotonic() + 60
    victim = None
    while time.monotonic() < deadline and thread.is_alive():
        busy = {w: keys for w, keys in client.processing().items() if keys}
        if client.run_on_scheduler(_finished_tasks) >= 2 and len(busy) == 2:
            victim = next(iter(busy))
            break
        time.sleep(0.02)
    assert victim is not None, "the run finished (or never started) before a worker was killed"
    pid = before[victim]
    os.kill(pid, signal.SIGKILL)
    assert thread.is_alive(), "the run was over when the worker died: nothing was tested"

    serial = mb.bootMer(penicillin_reml, B=B, seed=77)
    thread.join(timeout=120)
    assert not thread.is_alive(), "bootMer did not finish after a worker was killed"
    if "error" in box:
        raise box["error"]
    dask = box["result"]
    assert_same_boot(dask, serial)
    assert np.isfinite(dask.estimates).all()
    # the worker really died, and the nanny brought a new one: the fixture stays usable
    after = _check_workers(client)
    assert pid not in after.values()
