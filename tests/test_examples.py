"""Run every script in examples/ and check what it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))
TIMEOUT_S = 120

pytest.importorskip("matplotlib")
pytest.importorskip("scipy")


def _run(name: str, out_dir: Path) -> str:
    env = dict(os.environ, MIXBOOT_EXAMPLES_OUT=str(out_dir), MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, (
        f"{name} exited with {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    assert "Done:" in proc.stdout.strip().splitlines()[-1], proc.stdout
    return proc.stdout


@pytest.fixture(scope="module")
def run_example(tmp_path_factory):
    """Run a script once per test module (its output folder is a pytest tmp path)."""
    cache: dict[str, tuple[str, Path]] = {}

    def run(name: str) -> tuple[str, Path]:
        if name not in cache:
            out_dir = tmp_path_factory.mktemp(Path(name).stem)
            cache[name] = (_run(name, out_dir), out_dir)
        return cache[name]

    return run


def number_after(label: str, text: str) -> float:
    m = re.search(re.escape(label) + r"\s*(-?[0-9.]+(?:e[-+]?\d+)?)", text)
    assert m, f"{label!r} not found in output:\n{text}"
    return float(m.group(1))


def shape_after(label: str, text: str) -> tuple[int, ...]:
    m = re.search(re.escape(label) + r"\s*\(([0-9, ]+)\)", text)
    assert m, f"{label!r} not found in output:\n{text}"
    return tuple(int(v) for v in m.group(1).split(",") if v.strip())


def test_every_example_is_covered():
    names = {p.name for p in SCRIPTS}
    assert names == {
        "bootstrap_se_ci.py",
        "custom_statistic.py",
        "wald_vs_bootstrap.py",
        "power_loop.py",
        "power_analysis.py",
        "ppc_group_means.py",
        "ppc_kurtosis.py",
    }
    assert (EXAMPLES / "README.md").is_file()
    readme = (EXAMPLES / "README.md").read_text()
    for name in names:
        assert name in readme


@pytest.mark.parametrize("script", [p.name for p in SCRIPTS])
def test_example_runs(script, run_example):
    run_example(script)


def test_bootstrap_se_ci(run_example):
    out, _ = run_example("bootstrap_se_ci.py")
    # default statistic: 3 fixed effects + sigma + 1 theta
    assert shape_after("estimates shape:", out) == (500, 5)
    assert shape_after("ci shape:", out) == (5, 2)
    ses = re.search(r"bootstrap SEs: \[([^\]]*)\]", out).group(1).split()
    assert len(ses) == 5 and all(float(s) > 0 for s in ses)


def test_custom_statistic(run_example):
    out, _ = run_example("custom_statistic.py")
    B, p = shape_after("estimates shape:", out)
    assert p == 3 and B > 0
    assert shape_after("ci shape:", out) == (3, 2)


def test_wald_vs_bootstrap(run_example):
    out, _ = run_example("wald_vs_bootstrap.py")
    for coef in ("(Intercept)", "time", "treatment"):
        row = next(line for line in out.splitlines() if line.startswith(coef))
        est, wlo, whi, blo, bhi = map(float, row.split()[1:])
        assert wlo < est < whi and blo < est < bhi
    icc = number_after("ICC estimate:", out)
    m = re.search(r"ICC 95% bootstrap CI: \[(-?[0-9.]+), (-?[0-9.]+)\]", out)
    lo, hi = float(m.group(1)), float(m.group(2))
    assert 0 <= lo < icc < hi <= 1


def test_power_loop(run_example):
    out, _ = run_example("power_loop.py")
    assert 0.0 <= number_after("Estimated power:", out) <= 1.0
    for n in (20, 40, 80):
        assert 0.0 <= number_after(f"n={n}: power=", out) <= 1.0


def test_power_analysis(run_example):
    out, out_dir = run_example("power_analysis.py")
    power = number_after("Estimated power:", out)
    # 40 subjects x 5: the z-test formula gives 0.30, MC SE 0.02 for nsim = 500.
    assert 0.2 < power < 0.42
    grid = [number_after(f"n={n}: power=", out) for n in (20, 30, 40, 60, 80)]
    assert grid == sorted(grid) and grid[0] < grid[-1]
    assert "Clopper-Pearson" in out
    plot = out_dir / "power_curve.png"
    assert plot.is_file() and plot.stat().st_size > 0


def test_ppc_group_means(run_example):
    out, out_dir = run_example("ppc_group_means.py")
    assert shape_after("y_sim shape:", out) == (180, 200)
    assert shape_after("sim_group_means shape:", out) == (200, 18)
    assert 0.0 <= number_after("Fraction of groups outside 95% PI:", out) <= 1.0
    plot = out_dir / "ppc_density.png"
    assert plot.is_file() and plot.stat().st_size > 0
    assert str(plot) in out


def test_ppc_kurtosis(run_example):
    out, _ = run_example("ppc_kurtosis.py")
    assert 0.0 <= number_after("PPC p-value (kurtosis):", out) <= 1.0
