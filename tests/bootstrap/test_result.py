"""BootResult: validation, inference helpers, Parquet round trip and concat."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixboot.bootstrap.result import BootResult, concat
from mixboot.intervals import bootstrap_interval

NAMES = ("(Intercept)", "Days", "sigma")
ENTROPY = 2**100 + 12345  # SeedSequence entropies exceed 64 bits


def make_result(B=20, *, entropy=ENTROPY, first_key=0, fingerprint="fp-sleepstudy",
                names=NAMES, failed=(), singular=(), nonconverged=(), seed=0, meta_extra=None):
    rng = np.random.default_rng(seed)
    p = len(names)
    est = rng.normal(size=(B, p)) + np.arange(p)
    for r in failed:
        est[r] = np.nan
    tbl = pd.DataFrame({
        "objective": rng.normal(1700, 5, size=B),
        "(Intercept)": est[:, 0],
        "sigma": np.abs(est[:, -1]),
        "theta_1": rng.uniform(size=B),
    })
    diag = pd.DataFrame({
        "replicate": np.arange(B),
        "converged": [r not in nonconverged for r in range(B)],
        "singular": [r in singular for r in range(B)],
        "evaluations": rng.integers(20, 90, size=B),
        "objective": tbl["objective"].to_numpy(),
        "error": [f"refit failed in replicate {r}" if r in failed else None for r in range(B)],
    })
    failures = pd.DataFrame({
        "replicate": list(failed),
        "stage": ["refit"] * len(failed),
        "message": [f"refit failed in replicate {r}" for r in failed],
    })
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
    out = dict(estimates=res.estimates, names=res.names, estimate=res.estimate, tbl=res.tbl,
               diagnostics=res.diagnostics, failures=res.failures, meta=res.meta)
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
        (lambda r: {"failures": pd.DataFrame({"replicate": [0], "stage": ["fit"], "message": ["x"]})},
         "failures"),
        (lambda r: {"failures": pd.DataFrame({"replicate": [99], "stage": ["refit"], "message": ["x"]})},
         "failures"),
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
    assert text == ("BootResult(B=12, p=3, formula='Reaction ~ 1 + Days + (1 + Days | Subject)', "
                    "failed=2, singular=3, nonconverged=1)")


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
    res = make_result(25, failed=(4, 17), singular=(1,), nonconverged=(17,),
                      meta_extra={"statistic": "coef+sigma", "optimizer": {"name": "bobyqa"}})
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
        {f"stat:{n}" for n in NAMES} | {f"tbl:{c}" for c in res.tbl.columns}
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
