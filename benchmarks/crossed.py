"""The large crossed model: mixboot's fit time and peak memory next to lme4's.

Run from the repository root:

    python benchmarks/crossed.py                      # mixboot only (writes the data if missing)
    python benchmarks/crossed.py --r                  # and lme4 (Rscript; this can take hours)
    python benchmarks/crossed.py --lme4-seconds 5400  # lme4's fit time from an earlier run
    python benchmarks/crossed.py --lme4-log PATH      # ... or parsed from crossed_lmer.R's output

Model: ``y ~ 1 + x + (1|g1) + (1|g2)``, ML, on the simulated data of
``benchmarks/crossed_data.py`` (400,000 rows; g1 20,000 and g2 10,000 levels,
fully crossed).  mixboot's tail block is 10,003 wide: it is held densely (one
m x m buffer, factored in place) -- about 0.8 GB.

The mixboot fit runs in a fresh child process, which reports the fit's wall
time, its evaluations, and its peak resident memory (``ru_maxrss`` and
``VmHWM`` from /proc; the child's import and data loading are included).
lme4 runs ``benchmarks/r/crossed_lmer.R`` (one timed deviance evaluation, then
the whole fit with default controls).  R's run is long (reference BLAS), so its
numbers can instead come from a saved log (``--lme4-log``) or be given as
seconds (``--lme4-seconds``).  Objective, theta and beta of both are printed
so that correctness is visible next to the speed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import _lme4  # noqa: E402

DATA = HERE / "_data" / "crossed.csv"
FORMULA = "y ~ 1 + x + (1|g1) + (1|g2)"
R_SCRIPT = HERE / "r" / "crossed_lmer.R"
TAG = "@@CROSSED@@"


def _child(path: Path) -> None:
    """Child-process body: one timed mixboot fit (prints one tagged JSON line)."""
    import resource

    import numpy as np
    import pandas as pd

    sys.path.insert(0, str(ROOT))
    import mixboot as mb

    data = pd.read_csv(path)
    t0 = time.perf_counter()
    fit = mb.fit(FORMULA, data, REML=False)
    wall = time.perf_counter() - t0
    res = {
        "seconds": wall,
        "evaluations": int(fit.optsum.evaluations),
        "objective": float(fit.objective),
        "theta": np.asarray(fit.theta, dtype=float).tolist(),
        "beta": np.asarray(fit.beta, dtype=float).tolist(),
        "sigma": float(fit.sigma),
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "vmhwm_kib": _lme4.vm_hwm_kib(),
    }
    print(TAG + json.dumps(res), flush=True)


def run_mixboot(path: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--_child", str(path)],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        env=env,
    )
    lines = [ln[len(TAG) :] for ln in proc.stdout.splitlines() if ln.startswith(TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"the mixboot child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads(lines[0])


_FIT_LINE = re.compile(
    r"fit ([0-9.]+) s; evaluations (\d+); deviance ([-0-9.eE+]+); theta ([-0-9.eE+ ]+?);"
)
_ONE_LINE = re.compile(r"one deviance evaluation ([0-9.]+) s")


def parse_lme4(text: str) -> dict:
    """lme4's numbers from crossed_lmer.R's output (fit seconds, evaluations, deviance, theta)."""
    out: dict = {}
    one = _ONE_LINE.search(text)
    if one:
        out["one_evaluation_seconds"] = float(one.group(1))
    fit = _FIT_LINE.search(text)
    if fit:
        out["seconds"] = float(fit.group(1))
        out["evaluations"] = int(fit.group(2))
        out["objective"] = float(fit.group(3))
        out["theta"] = [float(v) for v in fit.group(4).split()]
    return out


def run_lme4(path: Path) -> dict:
    rscript = _lme4.rscript()
    if not rscript:
        print("lme4: not available (no Rscript)")
        return {}
    proc = subprocess.run([rscript, str(R_SCRIPT), str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"lme4 failed:\n{proc.stderr[-2000:]}")
    return parse_lme4(proc.stdout)


def _vec(v) -> str:
    return "n/a" if not v else "[" + ", ".join(f"{x:.8g}" for x in v) + "]"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="the crossed data (CSV)")
    ap.add_argument("--r", action="store_true", help="also run lme4 (Rscript; slow)")
    ap.add_argument("--lme4-seconds", type=float, default=None, help="lme4's fit time, seconds")
    ap.add_argument("--lme4-log", type=Path, default=None, help="crossed_lmer.R output to parse")
    ap.add_argument("--_child", dest="child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        _child(args.child)
        return
    if not args.data.exists():
        sys.path.insert(0, str(HERE))
        import crossed_data

        crossed_data.main(["--out", str(args.data)])
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    mix = run_mixboot(args.data)
    lme4: dict = {}
    if args.r:
        lme4 = run_lme4(args.data)
    elif args.lme4_log is not None:
        lme4 = parse_lme4(args.lme4_log.read_text())
    if args.lme4_seconds is not None:
        lme4["seconds"] = args.lme4_seconds
    print(f"load average at end:   {os.getloadavg()[0]:.2f}")
    print()
    print(f"crossed model {FORMULA} (ML), {args.data.name}")
    r_s = lme4.get("seconds")
    print(f"{'':26}| {'mixboot':>12} | {'lme4':>12}")
    print(
        f"{'fit wall time (s)':26}| {mix['seconds']:12.1f} | {r_s if r_s is not None else 'n/a':>12}"
    )
    print(f"{'evaluations':26}| {mix['evaluations']:12d} | {lme4.get('evaluations', 'n/a'):>12}")
    if "one_evaluation_seconds" in lme4:
        print(f"{'lme4 one evaluation (s)':26}| {'':12} | {lme4['one_evaluation_seconds']:12.1f}")
    if r_s:
        print(f"ratio (lme4 / mixboot): {r_s / mix['seconds']:.1f}x")
    print(
        f"mixboot peak RSS: {mix['maxrss_kib'] / 2**20:.2f} GiB (ru_maxrss), "
        f"{(mix['vmhwm_kib'] or 0) / 2**20:.2f} GiB (VmHWM); includes import and data"
    )
    print()
    print(f"objective (deviance)  mixboot {mix['objective']:.8f}", end="")
    if "objective" in lme4:
        d = mix["objective"] - lme4["objective"]
        print(f"   lme4 {lme4['objective']:.8f}   difference {d:.3g}")
    else:
        print()
    print(f"theta  mixboot {_vec(mix['theta'])}   lme4 {_vec(lme4.get('theta'))}")
    print(f"beta   mixboot {_vec(mix['beta'])}   sigma {mix['sigma']:.8g}")


if __name__ == "__main__":
    main()
