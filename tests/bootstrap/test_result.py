"""BootResult: validation, inference helpers, Parquet round trip and concat."""

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixboot.bootstrap.result import BootResult, concat
from mixboot.intervals import bootstrap_interval

NAMES = ("(Intercept)", "Days", "sigma")
ENTROPY = 2**100 + 12345  # SeedSequence entropies exceed 64 bits


def make_result(
    B=20,
    *,
    entropy=ENTROPY,
    first_key=0,
    fingerprint="fp-sleepstudy",
    names=NAMES,
    failed=(),
    singular=(),
    nonconverged=(),
    seed=0,
    meta_extra=None,
):
    rng = np.random.default_rng(seed)
    p = len(names)
    est = rng.normal(size=(B, p)) + np.arange(p)
    for r in failed:
        est[r] = np.nan
    tbl = pd.DataFrame(
        {
            "objective": rng.normal(1700, 5, size=B),
            "(Intercept)": est[:, 0],
            "sigma": np.abs(est[:, -1]),
            "theta_1": rng.uniform(size=B),
        }
    )
    diag = pd.DataFrame(
        {
            "replicate": np.arange(B),
            "converged": [r not in nonconverged for r in range(B)],
            "singular": [r in singular for r in range(B)],
            "evaluations": rng.integers(20, 90, size=B),
            "objective": tbl["objective"].to_numpy(),
            "error": [f"refit failed in replicate {r}" if r in failed else None for r in range(B)],
        }
    )
    failures = pd.DataFrame(
        {
            "replicate": list(failed),
            "stage": ["refit"] * len(failed),
            "message": [f"refit failed in replicate {r}" for r in failed],
        }
    )
    meta = {
        "fingerprint": fingerprint,
        "seed_entropy": entropy,
        "spawn_keys": [[first_key + i] for i in range(B)],
        "version": "0.1.0",
        "formula": "Reaction ~ 1 + Days + (1 + Days | Subject)",
        "REML": False,
        "tol": 1e-8,
        "use_u": False,
    }
    meta.update(meta_extra or {})
    return BootResult(
        estimates=est,
        names=names,
        estimate=np.arange(float(p)) + 0.25,
        tbl=tbl,
        diagnostics=diag,
        failures=failures,
        meta=meta,
    )


def fields(res, **changes):
    out = dict(
        estimates=res.estimates,
        names=res.names,
        estimate=res.estimate,
        tbl=res.tbl,
        diagnostics=res.diagnostics,
        failures=res.failures,
        meta=res.meta,
    )
    out.update(changes)
    return out


# -- construction ---------------------------------------------------------------


def test_arrays_are_read_only_copies():
    raw = np.ones((3, 1))
    res = BootResult(**fields(make_result(3, names=("a",)), estimates=raw))
    raw[0, 0] = 5.0
    assert res.estimates[0, 0] == 1.0
    with pytest.raises(ValueError):
        res.estimates[0, 0] = 2.0
    with pytest.raises(ValueError):
        res.estimate[0] = 2.0
    with pytest.raises(AttributeError):
        res.names = ("b",)


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda r: {"estimates": r.estimates[:, 0]}, "estimates"),
        (lambda r: {"names": r.names[:2]}, "names"),
        (lambda r: {"names": ("a", "a", "b")}, "names"),
        (lambda r: {"estimate": r.estimate[:2]}, "estimate"),
        (lambda r: {"tbl": r.tbl.iloc[:-1]}, "tbl"),
        (lambda r: {"diagnostics": r.diagnostics.iloc[:-1]}, "diagnostics"),
        (lambda r: {"diagnostics": r.diagnostics.drop(columns="singular")}, "diagnostics"),
        (lambda r: {"diagnostics": r.diagnostics.assign(converged="yes")}, "diagnostics"),
        (
            lambda r: {
                "failures": pd.DataFrame({"replicate": [0], "stage": ["fit"], "message": ["x"]})
            },
            "failures",
        ),
        (
            lambda r: {
                "failures": pd.DataFrame({"replicate": [99], "stage": ["refit"], "message": ["x"]})
            },
            "failures",
        ),
        (lambda r: {"meta": {k: v for k, v in r.meta.items() if k != "fingerprint"}}, "meta"),
        (lambda r: {"meta": {**r.meta, "spawn_keys": r.meta["spawn_keys"][:-1]}}, "spawn_keys"),
        (lambda r: {"meta": {**r.meta, "REML": "no"}}, "REML"),
        (lambda r: {"meta": {**r.meta, "handle": object()}}, "meta"),
    ],
)
def test_inconsistent_fields_are_named(change, field):
    res = make_result(5)
    with pytest.raises((ValueError, TypeError), match=field):
        BootResult(**fields(res, **change(res)))


def test_numpy_scalars_in_meta_are_normalised():
    res = make_result(2)
    meta = {**res.meta, "seed_entropy": np.int64(7), "tol": np.float64(1e-6), "extra": np.arange(2)}
    out = BootResult(**fields(res, meta=meta))
    assert out.meta["seed_entropy"] == 7 and type(out.meta["seed_entropy"]) is int
    assert out.meta["extra"] == [0, 1]


# -- inference -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["perc", "shortest", "basic", "norm"])
def test_ci_and_confint_use_intervals(method):
    res = make_result(50, failed=(3, 7))
    want = bootstrap_interval(res.estimates, method=method, level=0.9, estimate=res.estimate)
    np.testing.assert_array_equal(res.ci(method, 0.9), want)
    ci = res.confint(method=method, level=0.9)
    assert list(ci.index) == list(NAMES) and list(ci.columns) == ["lower", "upper"]
    np.testing.assert_array_equal(ci.to_numpy(), want)
    assert np.all(np.isfinite(want))  # NaN rows of failed replicates were skipped


def test_ci_rejects_bad_method_and_level():
    res = make_result(5)
    with pytest.raises(ValueError, match="method"):
        res.ci("student")
    with pytest.raises(ValueError, match="level"):
        res.confint(level=1.0)


def test_se_and_bias_ignore_failed_replicates():
    res = make_result(40, failed=(0, 11))
    ok = np.delete(res.estimates, [0, 11], axis=0)
    np.testing.assert_allclose(res.se().to_numpy(), ok.std(axis=0, ddof=1))
    np.testing.assert_allclose(res.bias().to_numpy(), ok.mean(axis=0) - res.estimate)
    assert list(res.se().index) == list(NAMES)
    assert list(res.bias().index) == list(NAMES)


def test_counts():
    res = make_result(12, failed=(1, 2), singular=(2, 5, 9), nonconverged=(4,))
    assert res.B == 12
    assert res.n_failed == 2
    assert res.n_singular == 3
    assert res.n_nonconverged == 1
    np.testing.assert_array_equal(np.flatnonzero(res.issingular()), [2, 5, 9])


def test_repr_is_one_line_with_counts():
    res = make_result(12, failed=(1, 2), singular=(2, 5, 9), nonconverged=(4,))
    text = repr(res)
    assert "\n" not in text
    assert text == (
        "BootResult(B=12, p=3, formula='Reaction ~ 1 + Days + (1 + Days | Subject)', "
        "failed=2, singular=3, nonconverged=1)"
    )


def test_summary_reports_statistics_and_counts():
    res = make_result(30, failed=(6,), singular=(1, 2), nonconverged=(3, 4, 5))
    text = res.summary(level=0.9)
    for name in NAMES:
        assert name in text
    assert "failed: 1, singular: 2, non-converged: 3" in text
    assert "90%" in text
    lower = res.ci("perc", 0.9)[1, 0]
    assert f"{lower:.6g}" in text
    short_upper = res.ci("shortest", 0.9)[2, 1]
    assert f"{short_upper:.6g}" in text


# -- persistence -----------------------------------------------------------------


def test_save_load_roundtrip_is_exact(tmp_path):
    res = make_result(
        25,
        failed=(4, 17),
        singular=(1,),
        nonconverged=(17,),
        meta_extra={"statistic": "coef+sigma", "optimizer": {"name": "bobyqa"}},
    )
    # awkward values that a sloppy format would lose
    est = res.estimates.copy()
    est[0, 0] = -0.0
    est[1, 1] = 1e-310  # subnormal
    est[2, 2] = np.nextafter(1.0, 2.0)
    res = BootResult(**fields(res, estimates=est, estimate=np.array([0.1, -0.0, np.inf])))
    path = tmp_path / "boot.parquet"
    res.save(path)
    back = BootResult.load(path)
    assert back == res
    assert back.estimates.tobytes() == res.estimates.tobytes()
    assert back.estimate.tobytes() == res.estimate.tobytes()
    pd.testing.assert_frame_equal(back.tbl, res.tbl)
    pd.testing.assert_frame_equal(back.diagnostics, res.diagnostics)
    pd.testing.assert_frame_equal(back.failures, res.failures)
    assert back.meta == res.meta and back.meta["seed_entropy"] == ENTROPY
    assert back.diagnostics["error"].tolist()[4] == "refit failed in replicate 4"
    assert back.diagnostics["error"].tolist()[0] is None
    assert not back.estimates.flags.writeable


def test_file_layout(tmp_path):
    res = make_result(4)
    path = tmp_path / "boot.parquet"
    res.save(path)
    table = pq.read_table(path)
    assert set(table.column_names) == (
        {f"stat:{n}" for n in NAMES}
        | {f"tbl:{c}" for c in res.tbl.columns}
        | {f"diag:{c}" for c in res.diagnostics.columns}
    )
    assert b"mixboot" in table.schema.metadata
    assert table.num_rows == 4


def test_empty_result_roundtrips(tmp_path):
    res = make_result(0)
    res.save(tmp_path / "empty.parquet")
    back = BootResult.load(tmp_path / "empty.parquet")
    assert back == res and back.B == 0


def test_equality_detects_a_changed_value():
    res = make_result(5)
    est = res.estimates.copy()
    est[2, 1] = np.nextafter(est[2, 1], np.inf)
    assert BootResult(**fields(res, estimates=est)) != res
    assert BootResult(**fields(res, meta={**res.meta, "tol": 1e-6})) != res


def test_load_rejects_plain_parquet(tmp_path):
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0]}), path)
    with pytest.raises(ValueError, match="not a mixboot bootstrap file"):
        BootResult.load(path)


def test_load_rejects_non_parquet(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just some text\n")
    with pytest.raises(ValueError, match="not a mixboot bootstrap file"):
        BootResult.load(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        BootResult.load(tmp_path / "nope.parquet")


# -- concat ----------------------------------------------------------------------


def test_concat_disjoint_parts():
    a = make_result(8, first_key=0, failed=(2,), singular=(1,), seed=1)
    b = make_result(5, first_key=8, failed=(0, 4), nonconverged=(3,), seed=2)
    c = concat([a, b])
    assert c.B == 13
    np.testing.assert_array_equal(c.estimates, np.vstack([a.estimates, b.estimates]))
    np.testing.assert_array_equal(c.diagnostics["replicate"], np.arange(13))
    assert c.failures["replicate"].tolist() == [2, 8, 12]
    assert c.failures["message"].tolist()[1] == "refit failed in replicate 0"
    assert (c.n_failed, c.n_singular, c.n_nonconverged) == (3, 1, 1)
    assert c.meta["spawn_keys"] == [[i] for i in range(13)]
    assert c.meta["seed_entropies"] == [ENTROPY] * 13
    assert c.meta["parts"] == [
        {"seed_entropy": ENTROPY, "B": 8, "version": "0.1.0", "tol": 1e-8},
        {"seed_entropy": ENTROPY, "B": 5, "version": "0.1.0", "tol": 1e-8},
    ]
    for key in ("fingerprint", "version", "formula", "REML"):
        assert c.meta[key] == a.meta[key]
    pd.testing.assert_frame_equal(c.tbl, pd.concat([a.tbl, b.tbl], ignore_index=True))


def test_concat_accepts_same_spawn_keys_with_different_entropy():
    a = make_result(4, entropy=1)
    b = make_result(4, entropy=2)
    c = concat([a, b])
    assert c.B == 8
    assert c.meta["seed_entropy"] is None
    assert c.meta["seed_entropies"] == [1] * 4 + [2] * 4


def test_concat_refuses_different_models():
    with pytest.raises(ValueError, match="different models"):
        concat([make_result(3), make_result(3, first_key=3, fingerprint="other")])


def test_concat_refuses_different_names():
    with pytest.raises(ValueError, match="names"):
        concat([make_result(3), make_result(3, first_key=3, names=("a", "b", "c"))])


def test_concat_refuses_duplicate_replicates():
    a = make_result(6, first_key=0)
    b = make_result(6, first_key=5)  # spawn key [5] in both
    with pytest.raises(ValueError, match=r"share replicate.*spawn_key=\[5\]"):
        concat([a, b])


def test_concat_of_concat_still_detects_duplicates():
    a = make_result(3, entropy=1)
    b = make_result(3, entropy=2)
    ab = concat([a, b])
    with pytest.raises(ValueError, match="share replicate"):
        concat([ab, make_result(1, entropy=2, first_key=2)])
    # a fresh replicate of entropy 2 is fine, and parts stay flat
    abc = concat([ab, make_result(1, entropy=2, first_key=3)])
    assert abc.B == 7
    assert [p["seed_entropy"] for p in abc.meta["parts"]] == [1, 2, 2]


def test_concat_is_associative():
    a = make_result(3, entropy=1, seed=1, failed=(1,))
    b = make_result(4, entropy=2, seed=2, failed=(0,))
    c = make_result(2, entropy=3, seed=3)
    assert concat([concat([a, b]), c]) == concat([a, concat([b, c])]) == concat([a, b, c])


def test_concat_keeps_agreeing_extra_meta_and_roundtrips(tmp_path):
    a = make_result(3, entropy=1, meta_extra={"statistic": "coef", "host": "x"})
    b = make_result(3, entropy=2, meta_extra={"statistic": "coef", "host": "y"})
    c = concat([a, b])
    assert c.meta["statistic"] == "coef"
    assert "host" not in c.meta
    c.save(tmp_path / "c.parquet")
    assert BootResult.load(tmp_path / "c.parquet") == c


def test_concat_argument_errors():
    with pytest.raises(ValueError, match="results"):
        concat([])
    with pytest.raises(TypeError, match="results"):
        concat([make_result(2), "not a result"])


def test_extra_diagnostics_columns_roundtrip(tmp_path):
    res = make_result(4)
    diag = res.diagnostics.assign(seconds=[0.1, 0.2, 0.3, 0.4], warnings=[0, 2, 0, 1])
    res = BootResult(**fields(res, diagnostics=diag))
    res.save(tmp_path / "x.parquet")
    back = BootResult.load(tmp_path / "x.parquet")
    assert back == res
    assert back.diagnostics["warnings"].dtype == np.int64


# -- a result from bare replicates -------------------------------------------------


def test_bare_result_has_defaults():
    est = np.random.default_rng(3).normal(size=(40, 3))
    res = BootResult(est)
    assert res.names == ("p0", "p1", "p2")
    assert (res.B, res.p) == (40, 3)
    assert np.isnan(res.estimate).all() and res.estimate.shape == (3,)
    assert not res.has_estimate
    assert list(res.tbl.columns) == ["p0", "p1", "p2"]
    np.testing.assert_array_equal(res.tbl.to_numpy(), est)
    assert list(res.diagnostics.columns) == [
        "replicate",
        "converged",
        "singular",
        "evaluations",
        "objective",
        "error",
    ]
    np.testing.assert_array_equal(res.diagnostics["replicate"], np.arange(40))
    assert res.diagnostics["converged"].all() and not res.diagnostics["singular"].any()
    assert (res.diagnostics["evaluations"] == 0).all()
    assert res.diagnostics["objective"].isna().all()
    assert res.diagnostics["error"].tolist() == [None] * 40
    assert res.failures.empty and list(res.failures.columns) == ["replicate", "stage", "message"]
    assert (res.n_failed, res.n_singular, res.n_nonconverged, res.n_stat_nan) == (0, 0, 0, 0)
    import mixboot

    assert res.meta == {
        "fingerprint": "",
        "seed_entropy": None,
        "spawn_keys": [[i] for i in range(40)],
        "version": mixboot.__version__,
        "formula": "",
        "REML": False,
        "tol": None,
        "use_u": False,
    }


def test_bare_result_percentile_and_shortest_intervals():
    est = np.random.default_rng(4).normal(size=(200, 2)) * [1.0, 3.0]
    res = BootResult(est)
    np.testing.assert_array_equal(res.ci(), bootstrap_interval(est, method="perc", level=0.95))
    np.testing.assert_array_equal(
        res.ci("shortest", 0.8), bootstrap_interval(est, method="shortest", level=0.8)
    )
    assert res.ci("perc").shape == (2, 2)
    assert list(res.confint("shortest").index) == ["p0", "p1"]
    assert res.se().to_numpy() == pytest.approx(est.std(axis=0, ddof=1))


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.ci("basic"),
        lambda r: r.ci("norm", 0.9),
        lambda r: r.confint(method="basic"),
        lambda r: r.bias(),
    ],
)
def test_bare_result_refuses_what_needs_the_original_estimate(call):
    res = BootResult(np.arange(10.0).reshape(5, 2))
    with pytest.raises(ValueError, match="no original estimate"):
        call(res)


def test_partially_nan_estimate_still_counts_as_an_estimate():
    res = BootResult(np.arange(10.0).reshape(5, 2), estimate=[np.nan, 4.0])
    assert res.has_estimate
    basic = res.ci("basic", 0.5)
    assert np.isnan(basic[0]).all() and np.isfinite(basic[1]).all()


def test_bare_result_with_estimate_gives_basic_interval():
    est = np.random.default_rng(5).normal(size=(50, 2))
    res = BootResult(est, estimate=[0.5, -0.5])
    np.testing.assert_array_equal(
        res.ci("basic", 0.9),
        bootstrap_interval(est, method="basic", level=0.9, estimate=[0.5, -0.5]),
    )
    np.testing.assert_allclose(res.bias(), est.mean(axis=0) - [0.5, -0.5])


def test_one_dimensional_estimates_are_one_statistic():
    res = BootResult(np.arange(1.0, 101.0))
    assert res.estimates.shape == (100, 1) and res.names == ("p0",)
    np.testing.assert_allclose(res.ci("perc", 0.9), [[5.95, 95.05]])
    named = BootResult(np.arange(4.0), names=["slope"], estimate=2.0)
    assert named.names == ("slope",) and named.estimate.tolist() == [2.0]


@pytest.mark.parametrize("bad", [np.float64(1.0), np.zeros((2, 2, 2))])
def test_estimates_of_other_dimensions_are_rejected(bad):
    with pytest.raises(ValueError, match="estimates must be a 1-D"):
        BootResult(bad)


def test_defaults_are_validated_against_given_fields():
    with pytest.raises(ValueError, match="names"):
        BootResult(np.ones((3, 2)), names=("a",))
    with pytest.raises(ValueError, match="spawn_keys"):
        BootResult(np.ones((3, 1)), meta={**BootResult(np.ones((2, 1))).meta})


def test_positional_field_order_is_kept():
    res = make_result(4)
    positional = BootResult(
        res.estimates, res.names, res.estimate, res.tbl, res.diagnostics, res.failures, res.meta
    )
    assert positional == res


def test_bare_result_summary_leaves_out_estimate_and_bias():
    res = BootResult(np.random.default_rng(6).normal(size=(30, 2)), names=("a", "b"))
    text = res.summary()
    assert text.startswith("Parametric bootstrap: 30 replicates, 95% intervals")
    assert "estimate" not in text and "bias" not in text
    assert f"{res.ci('shortest')[1, 1]:.6g}" in text


def test_concat_of_bare_results():
    a = BootResult(np.arange(6.0).reshape(3, 2))
    b = BootResult(np.arange(6.0, 10.0).reshape(2, 2))
    c = concat([a, a, b])  # same spawn keys, but unknown entropy: never duplicates
    assert c.B == 8 and c.names == ("p0", "p1")
    np.testing.assert_array_equal(c.estimates, np.vstack([a.estimates, a.estimates, b.estimates]))
    np.testing.assert_array_equal(c.diagnostics["replicate"], np.arange(8))
    assert c.meta["seed_entropies"] == [None] * 8
    assert c.meta["seed_entropy"] is None
    np.testing.assert_array_equal(
        c.ci("perc", 0.5), bootstrap_interval(c.estimates, method="perc", level=0.5)
    )
    with pytest.raises(ValueError, match="no original estimate"):
        c.ci("basic")


def test_bare_result_roundtrips(tmp_path):
    res = BootResult(np.random.default_rng(7).normal(size=(9, 2)))
    res.save(tmp_path / "bare.parquet")
    back = BootResult.load(tmp_path / "bare.parquet")
    assert back == res and not back.has_estimate


# -- NaN statistics ------------------------------------------------------------------


def test_stat_nan_column_is_counted_summarised_and_saved(tmp_path):
    res = make_result(6)
    diag = res.diagnostics.assign(stat_nan=[0, 2, 0, 1, 0, 0])
    res = BootResult(**fields(res, diagnostics=diag))
    assert res.diagnostics["stat_nan"].dtype == np.int64
    assert res.n_stat_nan == 2
    assert "statistic NaN in 2 replicates" in res.summary()
    path = tmp_path / "nan.parquet"
    res.save(path)
    assert pq.read_table(path).column("diag:stat_nan").type == pa.int64()
    back = BootResult.load(path)
    assert back == res
    assert back.diagnostics["stat_nan"].tolist() == [0, 2, 0, 1, 0, 0]
    assert back.n_stat_nan == 2


def test_stat_nan_without_column_comes_from_non_failed_estimates():
    res = make_result(8, failed=(2,))
    est = res.estimates.copy()
    est[5, 1] = np.nan
    est[6, :] = np.nan
    res = BootResult(**fields(res, estimates=est))
    assert "stat_nan" not in res.diagnostics.columns
    assert res.n_failed == 1
    assert res.n_stat_nan == 2  # replicates 5 and 6, not the failed replicate 2
    assert "statistic NaN in 2 replicates" in res.summary()


def test_no_stat_nan_line_without_nan_statistics():
    res = make_result(8, failed=(2,))
    assert res.n_stat_nan == 0
    assert "statistic NaN" not in res.summary()


@pytest.mark.parametrize("values", [[0, -1, 0], [0, 1.5, 0], [True, False, False], ["a", "b", "c"]])
def test_stat_nan_is_validated(values):
    res = make_result(3)
    with pytest.raises(ValueError, match="stat_nan"):
        BootResult(**fields(res, diagnostics=res.diagnostics.assign(stat_nan=values)))


def test_stat_nan_accepts_integral_floats():
    res = make_result(3)
    out = BootResult(**fields(res, diagnostics=res.diagnostics.assign(stat_nan=[0.0, 1.0, 0.0])))
    assert out.diagnostics["stat_nan"].dtype == np.int64 and out.n_stat_nan == 1


def test_concat_fills_stat_nan_of_parts_without_it():
    a = make_result(3, entropy=1)
    a = BootResult(**fields(a, diagnostics=a.diagnostics.assign(stat_nan=[1, 0, 0])))
    b = make_result(4, entropy=2, failed=(0,))
    est = b.estimates.copy()
    est[2, 0] = np.nan
    b = BootResult(**fields(b, estimates=est))
    c = concat([b, a])
    assert list(c.diagnostics.columns)[-1] == "stat_nan"
    assert c.diagnostics["stat_nan"].tolist() == [0, 0, 1, 0, 1, 0, 0]
    assert c.n_stat_nan == 2


# -- atomic save -------------------------------------------------------------------


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch, exc):
    path = tmp_path / "boot.parquet"
    old = make_result(5, seed=1)
    old.save(path)
    before = path.read_bytes()
    seen = []

    def write_part_then_fail(table, where, **kwargs):
        where.write(before[: len(before) // 2])  # a half-written file
        where.flush()
        seen.extend(sorted(p.name for p in tmp_path.iterdir()))
        raise exc

    monkeypatch.setattr(pq, "write_table", write_part_then_fail)
    with pytest.raises(type(exc)):
        make_result(7, seed=2).save(path)
    # the temporary file existed next to the target while writing ...
    tmp_names = [n for n in seen if n != "boot.parquet"]
    assert len(tmp_names) == 1 and tmp_names[0].startswith("boot.parquet.tmp-")
    # ... and is gone now; the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["boot.parquet"]
    assert path.read_bytes() == before
    monkeypatch.undo()
    assert BootResult.load(path) == old


def test_failed_rename_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "boot.parquet"
    make_result(5, seed=1).save(path)
    before = path.read_bytes()

    def refuse(src, dst):
        raise PermissionError("rename refused")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError, match="rename refused"):
        make_result(7, seed=2).save(path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["boot.parquet"]
    assert path.read_bytes() == before


def test_save_syncs_before_replacing(tmp_path, monkeypatch):
    path = tmp_path / "boot.parquet"
    make_result(3, seed=1).save(path)
    new = make_result(4, seed=2)
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync")
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(src), os.path.basename(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    new.save(path)
    monkeypatch.undo()
    i = next(k for k, e in enumerate(events) if e != "fsync")
    assert i >= 1  # the data were synced first
    _, src, dst = events[i]
    assert src.startswith("boot.parquet.tmp-") and dst == "boot.parquet"
    assert [p.name for p in tmp_path.iterdir()] == ["boot.parquet"]
    assert BootResult.load(path) == new


def test_save_into_missing_directory_fails_first(tmp_path, monkeypatch):
    def must_not_run(self):
        raise AssertionError("the table was built although the directory is missing")

    monkeypatch.setattr(BootResult, "_to_arrow", must_not_run)
    target = tmp_path / "no" / "such" / "boot.parquet"
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        make_result(3).save(target)
    assert str(target) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_save_onto_a_directory_is_refused(tmp_path):
    (tmp_path / "boot.parquet").mkdir()
    with pytest.raises(IsADirectoryError, match="boot.parquet"):
        make_result(3).save(tmp_path / "boot.parquet")


# -- corruption and format versions -------------------------------------------------


def _flip_a_value(path, value):
    data = bytearray(path.read_bytes())
    needle = np.float64(value).tobytes()
    assert data.count(needle) == 1  # stored once, in a data (dictionary) page
    i = data.find(needle)
    data[i + 3] ^= 0x5A
    data[i + 6] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("page_checksums", [True, False])
def test_corrupted_data_is_detected(tmp_path, monkeypatch, page_checksums):
    import mixboot.bootstrap.result as result_module

    res = make_result(30, seed=8)
    path = tmp_path / "boot.parquet"
    res.save(path)
    days = res.estimates[:, 1]
    middle = np.sort(days)[15]  # neither min nor max, so not in column statistics
    _flip_a_value(path, middle)
    if not page_checksums:
        # as with a pyarrow without page checksums: only the digest can tell
        monkeypatch.setattr(result_module, "_supports", lambda func, option: False)
        damaged = pq.read_table(path).column("stat:Days").to_numpy()
        assert not np.array_equal(damaged, days)  # the damage does reach the numbers
    with pytest.raises(ValueError, match="corrupted") as info:
        BootResult.load(path)
    assert str(path) in str(info.value)


def test_modified_content_fails_the_digest(tmp_path):
    res = make_result(6)
    path = tmp_path / "boot.parquet"
    res.save(path)
    table = pq.read_table(path)
    values = table.column("tbl:theta_1").to_numpy().copy()
    values[3] += 1e-12
    i = table.column_names.index("tbl:theta_1")
    tampered = table.set_column(i, "tbl:theta_1", pa.array(values))
    pq.write_table(tampered.replace_schema_metadata(table.schema.metadata), path)
    with pytest.raises(ValueError, match="corrupted.*checksum"):
        BootResult.load(path)


def test_modified_header_fails_the_digest(tmp_path):
    import json

    res = make_result(4)
    path = tmp_path / "boot.parquet"
    res.save(path)
    table = pq.read_table(path)
    header = json.loads(table.schema.metadata[b"mixboot"])
    header["meta"]["REML"] = True
    meta = {**table.schema.metadata, b"mixboot": json.dumps(header).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(ValueError, match="corrupted"):
        BootResult.load(path)


def _rewrite_header(path, **changes):
    import json

    table = pq.read_table(path)
    header = json.loads(table.schema.metadata[b"mixboot"])
    header.update(changes)
    pq.write_table(table.replace_schema_metadata({b"mixboot": json.dumps(header).encode()}), path)


def test_version_1_files_still_load(tmp_path):
    res = make_result(10, failed=(3,), meta_extra={"statistic": "coef"})
    res = BootResult(
        **fields(res, diagnostics=res.diagnostics.assign(seconds=np.linspace(0, 1, 10)))
    )
    path = tmp_path / "v1.parquet"
    res.save(path)
    _rewrite_header(path, format_version=1)  # the old layout: no digest
    assert b"mixboot.sha256" not in pq.read_schema(path).metadata
    assert BootResult.load(path) == res


def test_version_2_without_digest_is_refused(tmp_path):
    path = tmp_path / "boot.parquet"
    make_result(3).save(path)
    _rewrite_header(path)  # drops the digest, keeps version 2
    with pytest.raises(ValueError, match="corrupted.*checksum is missing"):
        BootResult.load(path)


@pytest.mark.parametrize("version", [3, 0, True, "2"])
def test_unknown_format_versions_are_refused(tmp_path, version):
    path = tmp_path / "boot.parquet"
    make_result(3).save(path)
    _rewrite_header(path, format_version=version)
    with pytest.raises(ValueError, match="file format version"):
        BootResult.load(path)


def test_saved_file_records_version_and_digest(tmp_path):
    import json

    path = tmp_path / "boot.parquet"
    make_result(3).save(path)
    meta = pq.read_schema(path).metadata
    assert json.loads(meta[b"mixboot"])["format_version"] == 2
    assert len(meta[b"mixboot.sha256"]) == 64
    int(meta[b"mixboot.sha256"], 16)
