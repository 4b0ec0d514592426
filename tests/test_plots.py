"""mixboot.plots: what the bootstrap and power plots draw, where, and into which Axes."""

import subprocess
import sys

import numpy as np
import pytest

import mixboot as mb
from mixboot.power import model_at_size

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402

REPORTED = [
    "sd_(Intercept)|Subject",
    "cor_Days.(Intercept)|Subject",
    "sd_Days|Subject",
    "sigma",
    "(Intercept)",
    "Days",
]
SD, COR = "sd_(Intercept)|Subject", "cor_Days.(Intercept)|Subject"


@pytest.fixture(scope="module")
def boot():
    fit = mb.fit(
        "Reaction ~ 1 + Days + (1 + Days | Subject)", data=mb.datasets.load("reaction"), REML=False
    )
    return mb.bootMer(fit, B=100, seed=1)


@pytest.fixture(scope="module")
def crossed():
    d = mb.design.crossed(subjects=10, items=6, within={"cond": ["a", "b"]})
    return mb.model(
        "y ~ cond + (1 | subject) + (1 | item)",
        d,
        beta=[0.0, 0.4],
        sigma=1.0,
        re={"subject": 0.5, "item": 0.3},
    )


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def by_gid(artists, gid):
    return [a for a in artists if a.get_gid() == gid]


def vline_x(ax, gid):
    (line,) = by_gid(ax.get_lines(), gid)
    xs = np.asarray(line.get_xdata(), dtype=float)
    assert xs[0] == xs[1]  # vertical
    return xs[0]


def test_import_mixboot_does_not_import_matplotlib():
    code = "import sys, mixboot; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kind", ["hist", "density"])
@pytest.mark.parametrize("method", ["perc", "shortest"])
def test_panels_mark_estimate_and_interval(boot, kind, method):
    fig = boot.plot(kind=kind, level=0.9, method=method)
    axes = fig.axes
    assert [a.get_xlabel() for a in axes] == REPORTED
    ci = boot.confint(method=method, level=0.9)
    estimate = boot.reported_estimate()
    for a, name in zip(axes, REPORTED):
        assert vline_x(a, "estimate") == pytest.approx(estimate[name], rel=1e-12)
        assert vline_x(a, "lower") == pytest.approx(ci.loc[name, "lower"], rel=1e-12)
        assert vline_x(a, "upper") == pytest.approx(ci.loc[name, "upper"], rel=1e-12)
        if kind == "hist":
            bars = by_gid(a.patches, f"hist:{name}")
            assert sum(b.get_height() for b in bars) == np.isfinite(boot.reported()[name]).sum()
            assert a.get_ylabel() == "replicates"
        else:
            (curve,) = by_gid(a.get_lines(), f"density:{name}")
            x = curve.get_xdata()
            assert x.min() == pytest.approx(boot.reported()[name].min())
            assert a.get_ylabel() == "density"
    assert "90% " + method in " ".join(t.get_text() for t in axes[0].get_legend().get_texts())


def test_one_panel_is_drawn_into_the_given_axes(boot):
    fig, ax = plt.subplots()
    assert boot.plot(params="Days", ax=ax) is ax
    assert len(fig.axes) == 1 and ax.get_xlabel() == "Days"
    fig, axes = plt.subplots(1, 2)
    assert boot.plot(kind="density", params=["sigma", SD], ax=axes) is fig
    assert [a.get_xlabel() for a in axes] == ["sigma", SD]
    with pytest.raises(ValueError, match="2 parameter"):
        boot.plot(params=["sigma", SD], ax=axes[0])


def test_bad_plot_arguments(boot):
    with pytest.raises(ValueError, match="kind must be one of"):
        boot.plot(kind="violin")
    with pytest.raises(ValueError, match="unknown parameter.*'sd_x'"):
        boot.plot(params=["sd_x"])
    with pytest.raises(ValueError, match="method must be one of"):
        boot.plot(method="bca-ish")


def test_ridgeplot_one_density_per_fixed_effect(boot):
    ax = boot.ridgeplot()
    densities = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert [c.get_gid() for c in densities] == ["density:(Intercept)", "density:Days"]
    ticks = {t.get_text(): y for t, y in zip(ax.get_yticklabels(), ax.get_yticks())}
    assert ticks == {"(Intercept)": 1, "Days": 0}  # the first parameter on top
    ci = boot.confint(method="shortest")
    for name in ("(Intercept)", "Days"):
        (interval,) = by_gid(ax.get_lines(), f"interval:{name}")
        np.testing.assert_allclose(interval.get_xdata(), ci.loc[name], rtol=1e-12)
        (dot,) = by_gid(ax.get_lines(), f"estimate:{name}")
        assert dot.get_xdata()[0] == pytest.approx(boot.reported_estimate()[name])

    fig, given = plt.subplots()
    ax = boot.ridgeplot(include_intercept=False, ax=given)
    assert ax is given
    densities = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert [c.get_gid() for c in densities] == ["density:Days"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Days"]


def test_plot_kind_ridge_is_the_ridgeplot(boot):
    ax = boot.plot(kind="ridge", params=["sigma", SD, "Days"], level=0.8)
    densities = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(densities) == 3
    (interval,) = by_gid(ax.get_lines(), "interval:sigma")
    np.testing.assert_allclose(
        interval.get_xdata(), boot.confint(method="perc", level=0.8).loc["sigma"], rtol=1e-12
    )


def test_pairplot_marks_exactly_the_singular_replicates(boot):
    assert 0 < boot.n_singular < boot.B
    fig, given = plt.subplots()
    ax = boot.pairplot(SD, COR, ax=given)
    assert ax is given
    assert ax.get_xlabel() == SD and ax.get_ylabel() == COR
    rep = boot.reported()[[SD, COR]].to_numpy()
    singular = boot.issingular()
    (marked,) = by_gid(ax.collections, "singular")
    (others,) = by_gid(ax.collections, "non-singular")
    assert isinstance(marked, PathCollection)
    np.testing.assert_array_equal(marked.get_offsets(), rep[singular])
    np.testing.assert_array_equal(others.get_offsets(), rep[~singular])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"singular ({boot.n_singular})" in labels
    # the singular fits here are correlations at the boundary
    assert np.all(np.abs(rep[singular, 1]) > 0.999)


def test_power_result_plot(crossed):
    res = mb.power(crossed, "cond", nsim=40, seed=1, method="wald")
    fig, given = plt.subplots()
    ax = res.plot(ax=given, target=0.8)
    assert ax is given and ax.get_ylabel() == "power"
    (point,) = by_gid(ax.get_lines(), "power")
    assert point.get_ydata()[0] == res.power
    (bar,) = by_gid(ax.collections, "interval")
    np.testing.assert_allclose(bar.get_segments()[0][:, 1], [res.lower, res.upper])
    assert by_gid(ax.get_lines(), "target")[0].get_ydata()[0] == 0.8
    assert by_gid(res.plot().get_lines(), "target") == []


def test_power_curve_band_and_target(crossed):
    curve = mb.power_curve(
        crossed, "cond", along="subject", sizes=[10, 20, 30], nsim=40, seed=1, method="wald"
    )
    fig, given = plt.subplots()
    ax = curve.plot(ax=given)
    assert ax is given
    assert ax.get_ylabel() == "power" and "subject" in ax.get_xlabel()
    (line,) = by_gid(ax.get_lines(), "power")
    np.testing.assert_array_equal(line.get_xdata(), curve["size"])
    np.testing.assert_array_equal(line.get_ydata(), curve["power"])
    (band,) = by_gid(ax.collections, "band")
    vertices = band.get_paths()[0].vertices
    for size, lower, upper in curve[["size", "lower", "upper"]].itertuples(index=False):
        ys = vertices[vertices[:, 0] == size, 1]
        assert ys.min() == pytest.approx(lower) and ys.max() == pytest.approx(upper)
    (target,) = by_gid(ax.get_lines(), "target")
    assert target.get_linestyle() == "--" and set(target.get_ydata()) == {0.8}
    assert by_gid(curve.plot(target=None).get_lines(), "target") == []


def test_power_grid_table_and_heat_map(crossed):
    grid = mb.power_grid(
        crossed,
        "cond",
        sizes={"subject": [10, 20, 30], "item": [6, 12]},
        nsim=30,
        seed=1,
        method="wald",
    )
    t = grid.table
    assert list(t.columns) == ["size1", "size2", "power", "lower", "upper", "n_valid"]
    assert grid.along == ("subject", "item") and len(t) == len(grid.results) == 6
    # each cell is power() on the model resized along subject, then item, same seed
    m = model_at_size(model_at_size(crossed, "subject", 20), "item", 12)
    cell = mb.power(m, "cond", nsim=30, seed=1, method="wald")
    row = t[(t.size1 == 20) & (t.size2 == 12)].iloc[0]
    assert row.power == cell.power and grid.results[3].ngroups == {"subject": 20, "item": 12}

    fig, given = plt.subplots()
    ax = grid.plot(ax=given)
    assert ax is given
    (image,) = ax.images
    assert image.get_array().size == 6 and image.get_array().shape == (2, 3)
    texts = by_gid(ax.texts, "annotation")
    assert sorted(float(x.get_text()) for x in texts) == pytest.approx(
        sorted(np.round(t["power"], 2)), abs=1e-9
    )
    for x in texts:  # the cell under each annotation holds its power
        col, row_ = int(round(x.get_position()[0])), int(round(x.get_position()[1]))
        assert float(x.get_text()) == pytest.approx(image.get_array()[row_, col], abs=0.005)
    assert len(fig.axes) == 2  # the colorbar
    assert "subject" in ax.get_xlabel() and "item" in ax.get_ylabel()
    assert "Power grid over 'subject'" in grid.summary()


def test_bad_grid_sizes(crossed):
    with pytest.raises(TypeError, match="dict of two grouping factors"):
        mb.power_grid(crossed, "cond", sizes={"subject": [10]}, nsim=10, seed=1)
    with pytest.raises(TypeError, match="dict of two"):
        mb.power_grid(crossed, "cond", sizes=[10, 20], nsim=10, seed=1)


def test_missing_matplotlib_is_a_clear_import_error(boot, crossed, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    for draw in (boot.plot, boot.ridgeplot, lambda: boot.pairplot(SD, COR)):
        with pytest.raises(ImportError, match=r"needs matplotlib: pip install 'mixboot\[plot\]'"):
            draw()
    res = mb.power(crossed, "cond", nsim=10, seed=1, method="wald")
    with pytest.raises(ImportError, match="PowerResult.plot needs matplotlib"):
        res.plot()


def test_power_grid_html_lists_every_cell(crossed):
    grid = mb.power_grid(
        crossed, "cond", sizes={"subject": [10, 20], "item": [6]}, nsim=10, seed=1, method="wald"
    )
    markup = grid._repr_html_()
    assert markup.count("<tr") == 1 + len(grid.table)
    assert grid.summary().splitlines()[0] in markup.replace("&#x27;", "'")
