"""Side-by-side timing of mixboot.bootMer vs lme4::bootMer (parametric bootstrap).

Run from the repository root:

    python benchmarks/bootstrap.py                 # B=1000, lme4 too, then the parallel section
    python benchmarks/bootstrap.py --B 200 --no-r  # quick, mixboot only
    python benchmarks/bootstrap.py --no-parallel   # skip the n_jobs=1 vs 2 section
    python benchmarks/bootstrap.py --parallel-B 100000

Models (each bootstrapped B times with seed 1; the fit itself is not timed)
  sleepstudy: Reaction ~ 1 + Days + (1 + Days|Subject), ML
  penicillin: diameter ~ 1 + (1|plate) + (1|sample), REML
  dyestuff:   Yield ~ 1 + (1|Batch), ML
mixboot's time is the fastest of 5 identical runs; lme4's is one run.
lme4 statistic: function(m) c(fixef(m), sigma(m), getME(m, "theta")); mixboot: its default.

Both tools run in the same invocation, one after the other, so the ratios
(lme4 time / mixboot time) are measured on the same machine under the same load.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _lme4  # noqa: E402

# benchmark the working tree's mixboot (scripts are run as `python benchmarks/...`)
if str(_lme4.REPO_ROOT) not in sys.path:
    sys.path.insert(1, str(_lme4.REPO_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

MODELS = {
    # key: (label, data set, mixboot formula, lme4 call, REML)
    "sleepstudy": (
        "sleepstudy ML",
        "sleepstudy",
        "Reaction ~ 1 + Days + (1 + Days|Subject)",
        "lmer(Reaction ~ 1 + Days + (1 + Days|Subject), data = ss, REML = FALSE)",
        False,
    ),
    "penicillin": (
        "penicillin REML",
        "penicillin",
        "diameter ~ 1 + (1|plate) + (1|sample)",
        "lmer(diameter ~ 1 + (1|plate) + (1|sample), data = pn, REML = TRUE)",
        True,
    ),
    "dyestuff": (
        "dyestuff ML",
        "dyestuff",
        "Yield ~ 1 + (1|Batch)",
        "lmer(Yield ~ 1 + (1|Batch), data = dy, REML = FALSE)",
        False,
    ),
}


def _fmt_s(t) -> str:
    if t is None:
        return "n/a"
    return f"{t:.4f}" if t < 1 else f"{t:.2f}"


def _ratio(r, m) -> str:
    if r is None or m is None or m <= 0:
        return "n/a"
    return f"{r / m:.2f}"


def _fmt_vec(v, digits=5) -> str:
    if v is None or len(v) == 0:
        return "n/a"
    return "[" + ", ".join("nan" if v_ is None else f"{float(v_):.{digits}g}" for v_ in v) + "]"


# --------------------------------------------------------------------------- lme4
R_CODE = r"""
suppressPackageStartupMessages(library(lme4))
ss <- read.csv(%SS%)
ss$Subject <- factor(ss$Subject)
pn <- read.csv(%PN%)
pn$plate <- factor(pn$plate)
pn$sample <- factor(pn$sample)
dy <- read.csv(%DY%)
dy$Batch <- factor(dy$Batch)
stat <- function(m) c(fixef(m), sigma(m), getME(m, "theta"))
fits <- list(sleepstudy = %M1%, penicillin = %M2%, dyestuff = %M3%)
out <- list(version = as.character(packageVersion("lme4")), R = R.version.string)
invisible(bootMer(fits$sleepstudy, stat, nsim = 5, seed = 2))   # warm-up
for (k in names(fits)) {
  t <- system.time(b <- bootMer(fits[[k]], stat, nsim = %B%, seed = 1))[["elapsed"]]
  nm <- names(b$t0)
  nm[nm == ""] <- "sigma"
  out[[k]] <- list(time = t, names = nm,
                   mean = unname(colMeans(b$t, na.rm = TRUE)),
                   sd = unname(apply(b$t, 2, sd, na.rm = TRUE)),
                   failed = sum(!complete.cases(b$t)))
}
emit_json(out)
"""


def run_lme4(B: int) -> dict | None:
    code = (
        R_CODE.replace("%SS%", _lme4.r_str(_lme4.data_path("sleepstudy")))
        .replace("%PN%", _lme4.r_str(_lme4.data_path("penicillin")))
        .replace("%M1%", MODELS["sleepstudy"][3])
        .replace("%M2%", MODELS["penicillin"][3])
        .replace("%DY%", _lme4.r_str(_lme4.data_path("dyestuff")))
        .replace("%M3%", MODELS["dyestuff"][3])
        .replace("%B%", str(int(B)))
    )
    try:
        return _lme4.run_r(code, timeout=6 * 3600)
    except _lme4.RError as e:
        print(f"lme4: failed:\n{e}", file=sys.stderr)
        return None


# --------------------------------------------------------------------------- mixboot
def import_mixboot():
    try:
        import mixboot as mb

        mb.fit  # noqa: B018
        mb.bootMer  # noqa: B018
        return mb
    except Exception as e:  # pragma: no cover - depends on the package state
        print(f"mixboot: not available ({type(e).__name__}: {e})")
        return None


def fit_models(mb) -> dict:
    fits = {}
    for key, (_, ds, formula, _, reml) in MODELS.items():
        df = pd.read_csv(_lme4.data_path(ds))
        fits[key] = mb.fit(formula, data=df, REML=reml)
    return fits


def _timed_boot(mb, fit, B, seed=1, n_jobs=1):
    t0 = time.perf_counter()
    res = mb.bootMer(fit, B=B, seed=seed, n_jobs=n_jobs)
    return time.perf_counter() - t0, res


def _n_failed(res) -> int:
    f = getattr(res, "failures", None)
    if f is not None:
        try:
            return int(len(f))
        except TypeError:
            pass
    est = np.asarray(res.estimates, dtype=float)
    return int((~np.isfinite(est).all(axis=1)).sum())


def run_mixboot(mb, fits: dict, B: int, runs: int = 5) -> dict:
    for fit in fits.values():  # warm-up: imports / JIT / worker code paths
        mb.bootMer(fit, B=5, seed=2)
    out = {}
    for key, fit in fits.items():
        # the fastest of ``runs`` identical runs (a run of 0.1 s is at the mercy of the machine)
        t, res = min((_timed_boot(mb, fit, B) for _ in range(max(1, runs))), key=lambda r: r[0])
        est = np.asarray(res.estimates, dtype=float)
        names = getattr(res, "names", None)
        out[key] = {
            "time": t,
            "names": list(names) if names is not None else None,
            "mean": np.nanmean(est, axis=0).tolist(),
            "sd": np.nanstd(est, axis=0, ddof=1).tolist(),
            "failed": _n_failed(res),
        }
    return out


def _nice_ceil(x: float) -> int:
    """Round x up to 2 significant digits (e.g. 123456 -> 130000)."""
    if x <= 0:
        return 1
    mag = 10 ** max(int(math.floor(math.log10(x))) - 1, 0)
    return int(math.ceil(x / mag) * mag)


def parallel_section(
    mb,
    fit,
    per_rep: float | None,
    parallel_B: int | None,
    target_s: float,
    small_B: int,
    small_reps: int,
) -> None:
    print()
    print(
        "parallel bootstrap (mixboot, sleepstudy ML): n_jobs=1 vs n_jobs=2 "
        f"(cpus: {os.cpu_count()})"
    )
    if parallel_B is None:
        if per_rep is None:
            t, _ = _timed_boot(mb, fit, 1000)
            per_rep = t / 1000
        parallel_B = max(1000, _nice_ceil(target_s / per_rep))
        print(
            f"  large run: B={parallel_B} chosen so that one process takes about "
            f"{target_s:g} s (measured {per_rep * 1e3:.3f} ms/replicate; set with --parallel-B)"
        )
    else:
        print(f"  large run: B={parallel_B} (--parallel-B)")
    t1, r1 = _timed_boot(mb, fit, parallel_B, n_jobs=1)
    t2, r2 = _timed_boot(mb, fit, parallel_B, n_jobs=2)
    same = np.array_equal(np.asarray(r1.estimates), np.asarray(r2.estimates), equal_nan=True)
    print(f"  {'run':<26} | {'n_jobs=1 s':>10} | {'n_jobs=2 s':>10} | speed-up (1/2) | identical")
    print(
        f"  {f'large (B={parallel_B})':<26} | {_fmt_s(t1):>10} | {_fmt_s(t2):>10} | "
        f"{_ratio(t1, t2):>14} | {'yes' if same else 'NO'}"
    )

    t1s, t2s = [], []
    same = True
    for _ in range(small_reps):
        t, ra = _timed_boot(mb, fit, small_B, n_jobs=1)
        t1s.append(t)
        t, rb = _timed_boot(mb, fit, small_B, n_jobs=2)
        t2s.append(t)
        same &= np.array_equal(np.asarray(ra.estimates), np.asarray(rb.estimates), equal_nan=True)
    t1, t2 = statistics.median(t1s), statistics.median(t2s)
    label = f"small (B={small_B}, med of {small_reps})"
    print(
        f"  {label:<26} | {_fmt_s(t1):>10} | {_fmt_s(t2):>10} | "
        f"{_ratio(t1, t2):>14} | {'yes' if same else 'NO'}"
    )
    print(
        f"  small run: n_jobs=2 minus n_jobs=1 = {t2 - t1:+.3f} s "
        "(should be no more than the worker start-up cost)"
    )


# --------------------------------------------------------------------------- report
def report(mx: dict | None, r: dict | None, B: int) -> None:
    w = max(len(m[0]) for m in MODELS.values())
    print()
    print(f"{'model':<{w}} | {'B':>6} | {'mixboot s':>10} | {'lme4 s':>10} | ratio (lme4/mixboot)")
    print("-" * (w + 59))
    for key, (label, *_rest) in MODELS.items():
        tm = (mx or {}).get(key, {}).get("time")
        tr = (r or {}).get(key, {}).get("time")
        print(f"{label:<{w}} | {B:>6} | {_fmt_s(tm):>10} | {_fmt_s(tr):>10} | {_ratio(tr, tm)}")
    print()
    print(
        "bootstrap replicates: mean / sd per statistic (sanity check; "
        "different random streams, so they agree only up to Monte-Carlo error)"
    )
    for key, (label, *_rest) in MODELS.items():
        for who, d in (("mixboot", (mx or {}).get(key)), ("lme4", (r or {}).get(key))):
            if not d:
                continue
            names = d.get("names")
            print(f"  {label:<{w}} {who:<7} names  {names if names else 'n/a'}")
            print(f"  {'':<{w}} {'':<7} mean   {_fmt_vec(d['mean'])}")
            print(f"  {'':<{w}} {'':<7} sd     {_fmt_vec(d['sd'])}")
            print(f"  {'':<{w}} {'':<7} failed {d.get('failed')}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--B", type=int, default=1000, help="bootstrap replicates (default 1000)")
    ap.add_argument("--no-r", action="store_true", help="skip lme4 (R)")
    ap.add_argument(
        "--parallel",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time n_jobs=1 vs n_jobs=2 (default on; --no-parallel to skip)",
    )
    ap.add_argument(
        "--parallel-B",
        type=int,
        default=None,
        help="B of the large parallel run (default: chosen so that one "
        "process takes about --parallel-target seconds)",
    )
    ap.add_argument(
        "--parallel-target",
        type=float,
        default=15.0,
        help="target single-process seconds when choosing --parallel-B (default 15)",
    )
    ap.add_argument(
        "--small-B", type=int, default=200, help="B of the small parallel run (default 200)"
    )
    ap.add_argument(
        "--small-reps",
        type=int,
        default=3,
        help="repetitions of the small parallel run (median; default 3)",
    )
    args = ap.parse_args(argv)

    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, pandas {pd.__version__}, "
        f"cpus {os.cpu_count()}"
    )
    print(_lme4.load_note("start"))
    r = _lme4.r_side("lme4", args.no_r, lambda: run_lme4(args.B), f"lme4 bootMer (B={args.B})")

    mx = None
    mb = import_mixboot()
    fits = None
    if mb is not None:
        print(f"running mixboot bootMer (B={args.B}) ...", flush=True)
        fits = fit_models(mb)
        mx = run_mixboot(mb, fits, args.B)

    report(mx, r, args.B)

    if mb is not None and args.parallel:
        per_rep = mx["sleepstudy"]["time"] / args.B if args.B >= 200 else None
        parallel_section(
            mb,
            fits["sleepstudy"],
            per_rep,
            args.parallel_B,
            args.parallel_target,
            args.small_B,
            args.small_reps,
        )
    print()
    print(_lme4.load_note("end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
