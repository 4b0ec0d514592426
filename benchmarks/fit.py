"""Side-by-side timing of mixboot.fit vs lme4::lmer (ML fits).

Run from the repository root:

    python benchmarks/fit.py            # mixboot and lme4 (if Rscript is installed)
    python benchmarks/fit.py --no-r     # mixboot only

Models
  (a) InstEval:   y ~ 1 + service + (1|s) + (1|d) + (1|dept:service), ML, the fastest of
                  --ie-runs (default 1) timed runs of each tool
  (a') InstEval with two uncorrelated terms on s: y ~ 1 + service + (1 + service || s) + (1 | d)
  (b) sleepstudy: Reaction ~ 1 + Days + (1 + Days | Subject), ML,
                  median over --reps (default 50) whole mb.fit calls / --r-reps (default 20) lmer calls

Both tools run in the same invocation, one after the other, so the ratios
(lme4 time / mixboot time) are measured on the same machine under the same load.
The peak memory of the mixboot InstEval fit is measured in fresh child processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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

INSTEVAL_FORMULA = "y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)"
# Two uncorrelated terms on the factor with the most levels (s): one block once amalgamated.
INSTEVAL_ZC_FORMULA = "y ~ 1 + service + (1 + service || s) + (1 | d)"
SLEEP_FORMULA = "Reaction ~ 1 + Days + (1 + Days | Subject)"
WARMUP_FORMULA = "Yield ~ 1 + (1|Batch)"


# --------------------------------------------------------------------------- data
def load_insteval() -> pd.DataFrame:
    # s, d, dept stay integer columns (mixboot treats grouping columns of any
    # dtype as factors); service stays numeric 0/1.
    return pd.read_csv(_lme4.data_path("insteval"))


def load_sleepstudy() -> pd.DataFrame:
    return pd.read_csv(_lme4.data_path("sleepstudy"))


def load_dyestuff() -> pd.DataFrame:
    return pd.read_csv(_lme4.data_path("dyestuff"))


# --------------------------------------------------------------------------- helpers
def _vec(x) -> list[float]:
    if x is None:
        return []
    return [float(v) for v in np.ravel(np.asarray(x, dtype=float))]


def _fmt_vec(v, digits=6) -> str:
    if not v:
        return "n/a"
    return "[" + ", ".join(f"{x:.{digits}g}" for x in v) + "]"


def _fmt_s(t) -> str:
    if t is None:
        return "n/a"
    return f"{t:.4f}" if t < 1 else f"{t:.2f}"


def _ratio(r, m) -> str:
    if r is None or m is None or m <= 0:
        return "n/a"
    return f"{r / m:.2f}"


def _summ(res) -> dict:
    return {
        "objective": float(res.objective),
        "theta": _vec(res.theta),
        "beta": _vec(res.fe_params),
    }


# --------------------------------------------------------------------------- lme4
R_CODE = r"""
suppressPackageStartupMessages(library(lme4))
ie <- read.csv(%IE%)
for (v in c("s", "d", "dept", "service")) ie[[v]] <- factor(ie[[v]])
ss <- read.csv(%SS%)
ss$Subject <- factor(ss$Subject)
summ <- function(m) list(objective = unname(deviance(m)),
                         theta = unname(getME(m, "theta")),
                         beta = unname(fixef(m)))
# warm-up (loads lme4's code paths)
m0 <- lmer(Reaction ~ 1 + Days + (1 + Days | Subject), data = ss, REML = FALSE)
out <- list(version = as.character(packageVersion("lme4")), R = R.version.string)
if (%DO_IE%) {
  best <- function(expr_fun) {
    ts <- lapply(seq_len(%IE_RUNS%), function(i) system.time(m <<- expr_fun()))
    ts[[which.min(vapply(ts, function(t) t[["elapsed"]], 0))]]
  }
  st <- best(function() lmer(y ~ 1 + service + (1|s) + (1|d) + (1|dept:service),
                             data = ie, REML = FALSE))
  m_ie <- m
  out$insteval <- c(list(time = st[["elapsed"]], cpu = st[["user.self"]] + st[["sys.self"]]),
                    summ(m_ie))
  # `||` expands a factor into correlated indicator columns in lme4, so the
  # zero-correlation model uses service as the numeric 0/1 that mixboot sees.
  ie$service_n <- as.numeric(as.character(ie$service))
  st <- best(function() lmer(y ~ 1 + service_n + (1 + service_n || s) + (1 | d),
                             data = ie, REML = FALSE))
  m_zc <- m
  out$insteval_zc <- c(list(time = st[["elapsed"]], cpu = st[["user.self"]] + st[["sys.self"]]),
                       summ(m_zc))
}
ts <- numeric(%REPS%)
for (i in seq_along(ts))
  ts[i] <- system.time(m_ss <- lmer(Reaction ~ 1 + Days + (1 + Days | Subject),
                                    data = ss, REML = FALSE))[["elapsed"]]
out$sleepstudy <- c(list(time = median(ts), times = ts), summ(m_ss))
emit_json(out)
"""


def run_lme4(reps: int, do_insteval: bool, ie_runs: int = 1) -> dict | None:
    if _lme4.rscript() is None:
        return None
    code = (
        R_CODE.replace("%IE%", _lme4.r_str(_lme4.data_path("insteval")))
        .replace("%SS%", _lme4.r_str(_lme4.data_path("sleepstudy")))
        .replace("%REPS%", str(int(reps)))
        .replace("%DO_IE%", "TRUE" if do_insteval else "FALSE")
        .replace("%IE_RUNS%", str(int(ie_runs)))
    )
    try:
        return _lme4.run_r(code, timeout=3600)
    except _lme4.RError as e:
        print(f"lme4: failed:\n{e}", file=sys.stderr)
        return None


# --------------------------------------------------------------------------- mixboot
def import_mixboot():
    try:
        import mixboot as mb

        mb.fit  # noqa: B018  (fail early if the API is not there yet)
        return mb
    except Exception as e:  # pragma: no cover - depends on the package state
        print(f"mixboot: not available ({type(e).__name__}: {e})")
        return None


def _best_fit(mb, formula: str, data, runs: int) -> dict:
    """The fastest of ``runs`` fits: wall and CPU seconds, and the estimates."""
    best = None
    for _ in range(max(1, runs)):
        c0, t0 = time.process_time(), time.perf_counter()
        r = mb.fit(formula, data=data, REML=False)
        t1, c1 = time.perf_counter(), time.process_time()
        if best is None or t1 - t0 < best["time"]:
            best = {"time": t1 - t0, "cpu": c1 - c0, **_summ(r)}
    return best


def run_mixboot(mb, reps: int, do_insteval: bool, ie_runs: int = 1) -> dict:
    ss = load_sleepstudy()
    # warm-up: imports, JIT / caches, on a small model, then once on sleepstudy
    mb.fit(WARMUP_FORMULA, data=load_dyestuff(), REML=False)
    mb.fit(SLEEP_FORMULA, data=ss, REML=False)
    out = {}
    if do_insteval:
        ie = load_insteval()
        out["insteval"] = _best_fit(mb, INSTEVAL_FORMULA, ie, ie_runs)
        out["insteval_zc"] = _best_fit(mb, INSTEVAL_ZC_FORMULA, ie, ie_runs)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        r = mb.fit(SLEEP_FORMULA, data=ss, REML=False)
        times.append(time.perf_counter() - t0)
    out["sleepstudy"] = {"time": statistics.median(times), "times": times, **_summ(r)}
    return out


def _memory_child(mode: str) -> None:
    """Child-process body: measure the mixboot InstEval fit (prints one JSON line)."""
    import resource
    import tracemalloc

    import mixboot as mb

    ie = load_insteval()
    mb.fit(WARMUP_FORMULA, data=load_dyestuff(), REML=False)  # import / JIT warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    res = {"mode": mode, "rss_before_kib": before, "hwm_before_kib": _lme4.vm_hwm_kib()}
    if mode == "tracemalloc":
        tracemalloc.start()
        mb.fit(INSTEVAL_FORMULA, data=ie, REML=False)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        res["tracemalloc_peak_bytes"] = peak
    else:
        mb.fit(INSTEVAL_FORMULA, data=ie, REML=False)
    res["rss_after_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res["hwm_after_kib"] = _lme4.vm_hwm_kib()
    print("@@MEM@@" + json.dumps(res), flush=True)


def measure_memory() -> dict:
    """Peak RSS (without tracemalloc) and tracemalloc peak (separate child) of the fit.

    Linux keeps ru_maxrss across fork+exec, so a child started from a parent
    whose peak RSS is already large would report the parent's peak.  main()
    therefore calls this before anything big is loaded in the parent, and
    the children also report VmHWM (/proc, per address space) as a cross-check.
    """
    out = {}
    env = dict(os.environ)
    root = str(_lme4.REPO_ROOT)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for mode in ("rss", "tracemalloc"):
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--_memory-child", mode],
            capture_output=True,
            text=True,
            cwd=root,
            env=env,
        )
        lines = [
            ln[len("@@MEM@@") :] for ln in proc.stdout.splitlines() if ln.startswith("@@MEM@@")
        ]
        if proc.returncode != 0 or not lines:
            print(f"memory child ({mode}) failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        out[mode] = json.loads(lines[0])
    return out


# --------------------------------------------------------------------------- report
def report(mx: dict | None, r: dict | None, reps: int, r_reps: int, ie_runs: int = 1) -> None:
    rows = [
        ("insteval", f"InstEval ML (best of {ie_runs})"),
        ("insteval_zc", f"InstEval ||, ML (best of {ie_runs})"),
        ("sleepstudy", f"sleepstudy ML (median {reps}/{r_reps})"),
    ]
    w = max(len(label) for _, label in rows)
    print()
    print(f"{'model':<{w}} | {'mixboot s':>10} | {'lme4 s':>10} | ratio (lme4/mixboot)")
    print("-" * (w + 48))
    for key, label in rows:
        tm = (mx or {}).get(key, {}).get("time")
        tr = (r or {}).get(key, {}).get("time")
        print(f"{label:<{w}} | {_fmt_s(tm):>10} | {_fmt_s(tr):>10} | {_ratio(tr, tm)}")
    cm = (mx or {}).get("insteval", {}).get("cpu")
    cr = (r or {}).get("insteval", {}).get("cpu")
    if cm is not None or cr is not None:
        print(
            f"InstEval CPU time (user+sys, all threads): mixboot {_fmt_s(cm)} s, "
            f"lme4 {_fmt_s(cr)} s  (wall-clock times above)"
        )
    print()
    print("objective (deviance, -2 log-likelihood at the ML optimum)")
    for key, label in rows:
        om = (mx or {}).get(key, {}).get("objective")
        orr = (r or {}).get(key, {}).get("objective")
        diff = f"{om - orr:+.3g}" if om is not None and orr is not None else "n/a"
        sm = f"{om:.6f}" if om is not None else "n/a"
        sr = f"{orr:.6f}" if orr is not None else "n/a"
        print(f"  {label:<{w}}  mixboot {sm:>16}  lme4 {sr:>16}  mixboot-lme4 {diff}")
    for key, label in rows:
        for what in ("theta", "beta"):
            vm = (mx or {}).get(key, {}).get(what)
            vr = (r or {}).get(key, {}).get(what)
            if vm is None and vr is None:
                continue
            print(f"  {label:<{w}}  {what:<5} mixboot {_fmt_vec(vm)}")
            print(f"  {'':<{w}}  {'':<5} lme4    {_fmt_vec(vr)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--no-r", action="store_true", help="skip lme4 (R)")
    ap.add_argument(
        "--reps",
        type=int,
        default=50,
        help="mixboot sleepstudy repetitions (median reported; default 50)",
    )
    ap.add_argument(
        "--r-reps",
        type=int,
        default=20,
        help="lme4 sleepstudy repetitions (median reported; default 20)",
    )
    ap.add_argument("--no-insteval", action="store_true", help="skip the InstEval fits")
    ap.add_argument(
        "--ie-runs", type=int, default=1, help="timed InstEval fits per tool (fastest reported)"
    )
    ap.add_argument(
        "--no-memory", action="store_true", help="skip the child-process memory measurement"
    )
    ap.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.memory_child:
        _memory_child(args.memory_child)
        return 0

    do_ie = not args.no_insteval
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, pandas {pd.__version__}, "
        f"cpus {os.cpu_count()}"
    )
    print(_lme4.load_note("start"))

    mb = import_mixboot()
    mem = None
    if mb is not None and do_ie and not args.no_memory:
        # first, while this parent process is still small (see measure_memory)
        print("measuring mixboot InstEval memory (child processes) ...", flush=True)
        mem = measure_memory()

    r = _lme4.r_side("lme4", args.no_r, lambda: run_lme4(args.r_reps, do_ie, args.ie_runs), "lme4")

    mx = None
    if mb is not None:
        print("running mixboot ...", flush=True)
        mx = run_mixboot(mb, args.reps, do_ie, args.ie_runs)

    report(mx, r, args.reps, args.r_reps, args.ie_runs)

    if mem is not None:
        print()
        print("mixboot InstEval ML fit, memory (fresh child processes, after import warm-up):")
        if "rss" in mem:
            m = mem["rss"]
            print(
                f"  peak RSS (ru_maxrss):        {m['rss_after_kib'] / 1024:9.1f} MiB "
                f"(before fit {m['rss_before_kib'] / 1024:.1f} MiB, "
                f"increase by fit {(m['rss_after_kib'] - m['rss_before_kib']) / 1024:.1f} MiB)"
            )
            if m.get("hwm_after_kib") is not None and m.get("hwm_before_kib") is not None:
                print(
                    f"  peak RSS (VmHWM, /proc):     {m['hwm_after_kib'] / 1024:9.1f} MiB "
                    f"(before fit {m['hwm_before_kib'] / 1024:.1f} MiB, "
                    f"increase by fit {(m['hwm_after_kib'] - m['hwm_before_kib']) / 1024:.1f} MiB)"
                )
        if "tracemalloc" in mem:
            print(
                f"  tracemalloc peak during fit: "
                f"{mem['tracemalloc']['tracemalloc_peak_bytes'] / 2**20:9.1f} MiB"
            )
    print()
    print(_lme4.load_note("end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
