"""The replicate runner: same bits however the work is split; checkpoints; streams; options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixboot as mb
from conftest import has_shared, load_data, load_reference_fits
from mixboot import checkpoint, runner
from mixboot.refit import refit_responses

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def reaction_fit():
    return mb.fit(
        "Reaction ~ 1 + Days + (1 + Days | Subject)", mb.datasets.load("reaction"), REML=False
    )


def _dense_reference_fits():
    if not has_shared():
        pytest.skip("../shared is not beside the project root")
    out = []
    for case in load_reference_fits():
        if case["dataset"] == "insteval":
            continue  # the sparse-workspace model: a replicate takes seconds, refits one at a time
        fit = mb.fit(case["formula"], load_data(case["dataset"]), REML=case["REML"])
        if fit.model.workspace.dense:
            out.append((case["id"], fit))
    return out


# --------------------------------------------------------------------------- same bits
@pytest.fixture(scope="module")
def kernel_reports(tmp_path_factory):
    """tests/replicate_bits.py under the machine's default OpenBLAS kernels and two others."""
    if not has_shared():
        pytest.skip("../shared is not beside the project root")
    reports = {}
    for coretype in ("default", "Haswell", "SandyBridge"):
        env = dict(os.environ)
        env.pop("OPENBLAS_CORETYPE", None)
        if coretype != "default":
            env["OPENBLAS_CORETYPE"] = coretype
        out = tmp_path_factory.mktemp("bits") / f"{coretype}.json"
        proc = subprocess.run(
            [sys.executable, str(HERE / "replicate_bits.py"), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        reports[coretype] = json.loads(out.read_text())
    return reports


@pytest.mark.parametrize("coretype", ["default", "Haswell", "SandyBridge"])
def test_bits_do_not_depend_on_B_or_workers(kernel_reports, coretype):
    """bootMer(B=50) == first 50 of B=200 and of B=333 == B=50 on two workers, every model."""
    report = kernel_reports[coretype]
    assert len(report) >= 10
    bad = {
        case: {k: v for k, v in r.items() if k in ("B200", "B333", "tbl", "n_jobs2") and not v}
        for case, r in report.items()
    }
    assert not any(bad.values()), bad
    assert all(r["processes"] >= 2 for r in report.values())  # worker processes took part


def test_kernels_agree_to_optimizer_tolerance(kernel_reports):
    """Other BLAS kernels give other bits, but the same estimates to the refits' tolerance."""
    base = kernel_reports["default"]
    for coretype in ("Haswell", "SandyBridge"):
        for case, r in kernel_reports[coretype].items():
            a, b = np.array(base[case]["estimates"]), np.array(r["estimates"])
            scale = np.abs(a).max(axis=0) + 1e-12
            assert np.max(np.abs(a - b) / scale) < 1e-4, (coretype, case)


def test_replicate_alone_equals_replicate_in_any_batch():
    for case, fit in _dense_reference_fits():
        Y = mb.simulate(fit, nsim=24, seed=5)
        assert mb.simulate(fit, nsim=1, seed=5).tobytes() == Y[:, :1].tobytes()
        batch = refit_responses(fit.model, Y, start=fit.theta)
        for j in (0, 9, 23):
            alone = refit_responses(fit.model, Y[:, j : j + 1], start=fit.theta)
            mates = refit_responses(fit.model, Y[:, [3, j, 17]], start=fit.theta)
            for field in ("theta", "beta", "sigma", "objective", "vcov_unscaled"):
                want = getattr(batch, field)[j].tobytes()
                assert getattr(alone, field)[0].tobytes() == want, (case, j, field)
                assert getattr(mates, field)[1].tobytes() == want, (case, j, field)


def test_power_and_pb_lrt_bits_do_not_depend_on_nsim(reaction_fit):
    d = mb.design.nested(groups=12, per_group=4, between={"treatment": [0.0, 1.0]}, group="subject")
    m = mb.model(
        "y ~ treatment + (1 | subject)",
        d,
        beta={"(Intercept)": 0, "treatment": 0.6},
        sigma=1.0,
        re={"subject": 0.7},
    )
    for method in ("wald", "lrt"):
        a = mb.power(m, "treatment", nsim=30, seed=4, method=method)
        b = mb.power(m, "treatment", nsim=75, seed=4, method=method)
        assert a.pvalues.tobytes() == b.pvalues[:30].tobytes()
    small = mb.fit(
        "Reaction ~ 1 + Days + (1 + Days || Subject)", mb.datasets.load("reaction"), REML=False
    )
    a = mb.pb_lrt(reaction_fit, small, B=20, seed=2)
    b = mb.pb_lrt(reaction_fit, small, B=45, seed=2)
    assert a.lrt_boot.tobytes() == b.lrt_boot[:20].tobytes()


# --------------------------------------------------------------------------- chunks
def test_missing_chunks_follow_the_grid_and_skip_what_is_there():
    parts = {0: (np.arange(0, 10), {}), 25: (np.arange(25, 30), {})}
    todo = runner._missing_chunks(parts, 47, 20)
    assert [(int(r[0]), int(r[-1])) for r in todo] == [(10, 19), (20, 24), (30, 39), (40, 46)]
    covered = np.sort(np.concatenate(todo + [p[0] for p in parts.values()]))
    assert np.array_equal(covered, np.arange(47))


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_resume_after_interrupt_equals_straight_run(reaction_fit, tmp_path, monkeypatch):
    straight = mb.bootMer(reaction_fit, B=120, seed=3)
    monkeypatch.setattr(checkpoint, "CHECKPOINT_INTERVAL", 0.0)  # write every chunk at once
    monkeypatch.setattr(runner, "chunk_size", lambda *models: 16)
    calls = {"n": 0}
    real = runner._call

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(runner, "_call", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mb.bootMer(reaction_fit, B=120, seed=3, checkpoint=tmp_path / "ck")
    assert len(list((tmp_path / "ck").glob("chunk-*.pkl"))) == 3
    monkeypatch.setattr(runner, "_call", real)
    resumed = mb.bootMer(reaction_fit, B=120, seed=None, checkpoint=tmp_path / "ck")
    assert resumed.meta["checkpoint"] == {"loaded": 48, "computed": 72}
    assert resumed.estimates.tobytes() == straight.estimates.tobytes()
    assert resumed.tbl.equals(straight.tbl) and resumed.diagnostics.equals(straight.diagnostics)
    again = mb.bootMer(reaction_fit, B=120, seed=3, checkpoint=tmp_path / "ck")
    assert again.meta["checkpoint"] == {"loaded": 120, "computed": 0}
    assert again.estimates.tobytes() == straight.estimates.tobytes()


def test_checkpoint_extends_and_shrinks(reaction_fit, tmp_path):
    ck = tmp_path / "ck"
    mb.bootMer(reaction_fit, B=100, seed=8, checkpoint=ck)
    more = mb.bootMer(reaction_fit, B=260, seed=8, checkpoint=ck)
    assert more.meta["checkpoint"] == {"loaded": 100, "computed": 160}
    assert more.estimates.tobytes() == mb.bootMer(reaction_fit, B=260, seed=8).estimates.tobytes()
    fewer = mb.bootMer(reaction_fit, B=70, seed=8, checkpoint=ck)
    assert fewer.meta["checkpoint"]["loaded"] == 70
    assert fewer.estimates.tobytes() == more.estimates[:70].tobytes()


def test_checkpoint_of_another_run_is_refused_with_the_difference(reaction_fit, tmp_path):
    ck = tmp_path / "ck"
    mb.bootMer(reaction_fit, B=20, seed=1, checkpoint=ck)
    with pytest.raises(ValueError, match="made with seed 1, not 2"):
        mb.bootMer(reaction_fit, B=20, seed=2, checkpoint=ck)
    with pytest.raises(ValueError, match="statistic: checkpoint has None"):
        mb.bootMer(reaction_fit, lambda r: r.fe_params, B=20, seed=1, checkpoint=ck)
    with pytest.raises(ValueError, match="tol: checkpoint has None, this call has 1e-08"):
        mb.bootMer(reaction_fit, B=20, seed=1, tol=1e-8, checkpoint=ck)
    reml = mb.fit("Reaction ~ 1 + Days + (1 + Days | Subject)", mb.datasets.load("reaction"))
    with pytest.raises(ValueError, match="REML: checkpoint has False, this call has True"):
        mb.bootMer(reml, B=20, seed=1, checkpoint=ck)
    with pytest.raises(ValueError, match="workflow: checkpoint has 'bootMer'"):
        mb.power(reaction_fit, "Days", nsim=20, seed=1, checkpoint=ck)


def test_statistics_are_told_apart(reaction_fit, tmp_path):
    ck = tmp_path / "ck"
    mb.bootMer(reaction_fit, lambda r: r.fe_params, B=10, seed=1, checkpoint=ck)
    with pytest.raises(ValueError, match="statistic"):
        mb.bootMer(reaction_fit, lambda r: r.fe_params * 2, B=10, seed=1, checkpoint=ck)


def test_damaged_chunk_file_is_recomputed_and_temp_files_removed(
    reaction_fit, tmp_path, monkeypatch
):
    ck = tmp_path / "ck"
    monkeypatch.setattr(checkpoint, "CHECKPOINT_INTERVAL", 0.0)
    monkeypatch.setattr(runner, "chunk_size", lambda *models: 25)
    first = mb.bootMer(reaction_fit, B=100, seed=6, checkpoint=ck)
    files = sorted(ck.glob("chunk-*.pkl"))
    assert len(files) == 4
    raw = bytearray(files[1].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    files[1].write_bytes(bytes(raw))
    (ck / ".tmp-left-by-a-killed-run").write_bytes(b"partial")
    with pytest.warns(RuntimeWarning, match="damaged"):
        again = mb.bootMer(reaction_fit, B=100, seed=6, checkpoint=ck)
    assert again.meta["checkpoint"] == {"loaded": 75, "computed": 25}
    assert again.estimates.tobytes() == first.estimates.tobytes()
    assert not list(ck.glob(".tmp-*"))


def test_power_curve_and_pb_lrt_checkpoints(tmp_path):
    d = mb.design.nested(groups=10, per_group=4, between={"treatment": [0.0, 1.0]}, group="subject")
    m = mb.model(
        "y ~ treatment + (1 | subject)",
        d,
        beta={"(Intercept)": 0, "treatment": 0.6},
        sigma=1.0,
        re={"subject": 0.7},
    )
    ck = tmp_path / "curve"
    a = mb.power_curve(m, "treatment", sizes=[10, 14], nsim=40, seed=None, checkpoint=ck)
    assert sorted(p.name for p in ck.iterdir()) == ["curve.json", "size-10", "size-14"]
    b = mb.power_curve(m, "treatment", sizes=[10, 14], nsim=40, checkpoint=ck)
    for ra, rb in zip(a.results, b.results):
        assert ra.seed == rb.seed and ra.pvalues.tobytes() == rb.pvalues.tobytes()
    df = mb.datasets.load("reaction")
    large = mb.fit("Reaction ~ Days + (Days | Subject)", df, REML=False)
    small = mb.fit("Reaction ~ Days + (Days || Subject)", df, REML=False)
    one = mb.pb_lrt(large, small, B=30, seed=5, checkpoint=tmp_path / "pb")
    two = mb.pb_lrt(large, small, B=30, checkpoint=tmp_path / "pb")
    assert one.lrt_boot.tobytes() == two.lrt_boot.tobytes() and two.seed == 5


# --------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(B=0), ValueError, "B must be an integer >= 1"),
        (dict(B=2.5), ValueError, "B must be an integer >= 1"),
        (dict(n_jobs=0), ValueError, "n_jobs must be a positive integer or -1"),
        (dict(tol=2.0), ValueError, "tol must be a relative tolerance"),
        (dict(show_progress="yes"), TypeError, "show_progress must be True or False"),
        (dict(client=object()), TypeError, "client must be a dask.distributed.Client"),
        (dict(checkpoint=3), TypeError, "checkpoint must be a directory path"),
        (dict(checkpoint="/no/such/dir/ck"), ValueError, "directory '/no/such/dir' does not exist"),
    ],
)
def test_options_are_checked_before_any_work(reaction_fit, kwargs, error, message, monkeypatch):
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("ran replicates"))
    with pytest.raises(error, match=message):
        mb.bootMer(reaction_fit, **({"B": 10} | kwargs))


def test_checkpoint_that_is_a_file_is_refused(reaction_fit, tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        mb.bootMer(reaction_fit, B=5, checkpoint=path)


def test_streams_are_children_of_the_seed():
    root, kids = runner.seed_streams(7, 3)
    assert root.entropy == 7 and [k.spawn_key for k in kids] == [(0,), (1,), (2,)]
    again = runner.child_streams(7, (), [2])[0]
    assert np.random.default_rng(again).random() == np.random.default_rng(kids[2]).random()
    with pytest.raises(TypeError, match="seed must be"):
        runner.seed_streams(-1, 1)


def test_outcome_counts_processes(reaction_fit, monkeypatch):
    seen = []
    real = runner.run
    monkeypatch.setattr(runner, "run", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    mb.bootMer(reaction_fit, B=40, seed=1)
    assert seen[-1].processes == 1 and seen[-1].loaded == 0 and seen[-1].computed == 40
    monkeypatch.setattr(runner, "TASKS_PER_WORKER", 5)
    monkeypatch.setattr(runner, "MIN_SHARED_CHUNK", 1)
    monkeypatch.setattr(runner, "PARALLEL_MIN_SECONDS", 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        par = mb.bootMer(reaction_fit, B=40, seed=1, n_jobs=2)
    assert seen[-1].processes >= 2  # the first chunk here, the rest on workers
    assert par.estimates.tobytes() == mb.bootMer(reaction_fit, B=40, seed=1).estimates.tobytes()
    assert isinstance(par.diagnostics, pd.DataFrame)


def test_short_runs_stay_in_this_process(reaction_fit, monkeypatch):
    """Workers are started only when the work left would take PARALLEL_MIN_SECONDS here."""
    seen = []
    real = runner.run
    monkeypatch.setattr(runner, "run", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    monkeypatch.setattr(runner, "PARALLEL_MIN_SECONDS", 1e9)
    mb.bootMer(reaction_fit, B=300, seed=1, n_jobs=2)
    assert seen[-1].processes == 1
    monkeypatch.setattr(runner, "PARALLEL_MIN_SECONDS", 0.0)
    mb.bootMer(reaction_fit, B=300, seed=1, n_jobs=2)
    assert seen[-1].processes >= 2


def test_a_checkpoint_in_use_is_refused(reaction_fit, tmp_path):
    ck = tmp_path / "ck"
    mb.bootMer(reaction_fit, B=10, seed=1, checkpoint=ck)
    holder = checkpoint.Checkpoint(ck, {})
    holder._lock()
    try:
        with pytest.raises(RuntimeError, match="in use by another run"):
            mb.bootMer(reaction_fit, B=10, seed=1, checkpoint=ck)
    finally:
        holder.lock.close()
    assert mb.bootMer(reaction_fit, B=10, seed=1, checkpoint=ck).meta["checkpoint"]["loaded"] == 10


def test_spawned_workers_give_the_same_bits(reaction_fit, monkeypatch):
    """Where fork is missing (macOS, Windows) workers are spawned and get the job by cloudpickle."""
    import multiprocessing

    monkeypatch.setattr(
        runner, "_pool_context", lambda: (multiprocessing.get_context("spawn"), True)
    )
    monkeypatch.setattr(runner, "MIN_SHARED_CHUNK", 1)
    monkeypatch.setattr(runner, "TASKS_PER_WORKER", 4)
    monkeypatch.setattr(runner, "PARALLEL_MIN_SECONDS", 0.0)
    stat = lambda r: {"slope": r.fe_params["Days"], "sigma": r.sigma}  # noqa: E731 - a lambda on purpose
    seen = []
    real = runner.run
    monkeypatch.setattr(runner, "run", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    par = mb.bootMer(reaction_fit, stat, B=60, seed=4, n_jobs=2)
    assert seen[-1].processes >= 2
    assert (
        par.estimates.tobytes() == mb.bootMer(reaction_fit, stat, B=60, seed=4).estimates.tobytes()
    )
