"""The BLAS thread policy (mixboot/threads.py): one thread for batched work and workers,
the library's own setting for a large model's single-theta fit."""

import pytest

import mixboot as mb
import mixboot.workspace as wsmod
from mixboot.threads import blas_threads_for, one_blas_thread

threadpoolctl = pytest.importorskip("threadpoolctl")

FORMULA = "Reaction ~ Days + (Days | Subject)"


def blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


@pytest.fixture(scope="module")
def data():
    return mb.datasets.load("reaction")


def test_one_blas_thread_inside_and_restored_after():
    before = blas_threads()
    assert before, "numpy's BLAS is not visible to threadpoolctl"
    with one_blas_thread():
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before


def test_batched_models_run_on_one_thread(data):
    model = mb.fit(FORMULA, data, REML=False).model
    assert model.workspace.dense
    before = blas_threads()
    with blas_threads_for(model.workspace):
        assert blas_threads() == [1] * len(before)
    with blas_threads_for(model.workspace, in_worker=True):
        assert blas_threads() == [1] * len(before)


def test_single_path_fit_keeps_the_library_setting(data, monkeypatch):
    monkeypatch.setattr(wsmod, "_DENSE_LIMIT", 0)
    model = mb.fit(FORMULA, data, REML=False).model
    assert not model.workspace.dense
    before = blas_threads()
    with blas_threads_for(model.workspace):
        assert blas_threads() == before
    with blas_threads_for(model.workspace, in_worker=True):
        assert blas_threads() == [1] * len(before)


@pytest.mark.parametrize("single", [False, True])
def test_what_a_fit_evaluates_under(data, monkeypatch, single):
    """Every evaluation of a small fit sees one BLAS thread; a single-path fit the default."""
    if single:
        monkeypatch.setattr(wsmod, "_DENSE_LIMIT", 0)
    seen = []
    factorize = wsmod.Workspace.factorize

    def spy(self, *args, **kwargs):
        seen.append(tuple(blas_threads()))
        return factorize(self, *args, **kwargs)

    monkeypatch.setattr(wsmod.Workspace, "factorize", spy)
    default = tuple(blas_threads())
    mb.fit(FORMULA, data, REML=False)
    assert seen
    expected = default if single else (1,) * len(default)
    assert set(seen) == {expected}
