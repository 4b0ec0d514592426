"""Bootstrap of a large (sparse-workspace) model: mixboot.bootMer vs lme4::bootMer on InstEval.

Run from the repository root:

    python benchmarks/large_bootstrap.py              # B=10 (mixboot), nsim=3 (lme4)
    python benchmarks/large_bootstrap.py --B 20 --nsim 5
    python benchmarks/large_bootstrap.py --no-r       # mixboot only

Model (ML): y ~ 1 + service + (1|s) + (1|d) + (1|dept:service), 73,421 rows; its
workspace is too large for the batched kernels, so each replicate is refitted on
its own (warm-started quasi-Newton from the fit's theta and Hessian).

mixboot runs bootMer(B) with n_jobs=1 and with n_jobs=2 (same seed: the two
must give the same bits, which is checked); lme4 runs
``bootMer(m, function(x) c(fixef(x), getME(x, "theta")), nsim)`` in the same
invocation, after mixboot.  The fits themselves are not in the per-replicate
times (they are printed).  The ratio is lme4's seconds per replicate over
mixboot's.  Timings on a busy machine are noisy: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _lme4  # noqa: E402

if str(_lme4.REPO_ROOT) not in sys.path:
    sys.path.insert(1, str(_lme4.REPO_ROOT))

import pandas as pd  # noqa: E402

FORMULA = "y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)"
FACTORS = ("s", "d", "dept", "service")

R_CODE = r"""
suppressPackageStartupMessages(library(lme4))
ie <- read.csv(%DATA%)
for (v in c("s", "d", "dept", "service")) ie[[v]] <- factor(ie[[v]])
t_fit <- system.time(m <- lmer(%FORMULA%, data = ie, REML = FALSE))[["elapsed"]]
t_boot <- system.time(
  b <- bootMer(m, function(x) c(fixef(x), getME(x, "theta")), nsim = %NSIM%, seed = 1)
)[["elapsed"]]
emit_json(list(version = as.character(packageVersion("lme4")), R = R.version.string,
               fit = t_fit, boot = t_boot, nsim = %NSIM%,
               theta = unname(getME(m, "theta")), deviance = deviance(m),
               failed = sum(!complete.cases(b$t))))
"""


def load_data() -> pd.DataFrame:
    df = pd.read_csv(_lme4.data_path("insteval"))
    for col in FACTORS:
        df[col] = df[col].astype(str)
    return df


def run_mixboot(B: int) -> dict:
    import mixboot as mb
    from mixboot import refit

    df = load_data()
    t0 = time.perf_counter()
    fit = mb.fit(FORMULA, df, REML=False)
    t_fit = time.perf_counter() - t0
    out: dict = {"fit": t_fit, "dense": fit.model.workspace.dense, "theta": fit.theta}
    boots = {}
    for n_jobs in (1, 2):
        # each run computes the fit's Hessian afresh (it is kept per workspace)
        refit._HESSIANS.clear()
        t0 = time.perf_counter()
        boots[n_jobs] = mb.bootMer(fit, B=B, seed=1, n_jobs=n_jobs)
        out[n_jobs] = (time.perf_counter() - t0) / B
    one, two = boots[1], boots[2]
    out["same_bits"] = one.estimates.tobytes() == two.estimates.tobytes()
    out["evaluations"] = one.diagnostics["evaluations"].to_numpy()
    out["converged"] = bool(one.diagnostics["converged"].all())
    return out


def run_lme4(nsim: int) -> dict | None:
    code = (
        R_CODE.replace("%DATA%", _lme4.r_str(_lme4.data_path("insteval")))
        .replace("%FORMULA%", FORMULA)
        .replace("%NSIM%", str(int(nsim)))
    )
    try:
        return _lme4.run_r(code, timeout=3 * 3600)
    except _lme4.RError as e:
        print(f"lme4: failed:\n{e}", file=sys.stderr)
        return None


def _fmt(t) -> str:
    return "n/a" if t is None else f"{t:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--B", type=int, default=10, help="mixboot replicates (default 10)")
    ap.add_argument("--nsim", type=int, default=3, help="lme4 replicates (default 3)")
    ap.add_argument("--no-r", action="store_true", help="skip lme4")
    args = ap.parse_args(argv)
    if args.B < 1 or args.nsim < 1:
        ap.error("--B and --nsim must be >= 1")

    print(f"InstEval ML: {FORMULA}")
    print(_lme4.load_note("start"))
    print(f"running mixboot (B={args.B}, n_jobs=1 and 2) ...", flush=True)
    mbx = run_mixboot(args.B)
    ev = mbx["evaluations"]
    print(
        f"mixboot fit {mbx['fit']:.1f} s (sparse workspace: {not mbx['dense']}); "
        f"evaluations per replicate: mean {ev.mean():.1f}, max {ev.max()}; "
        f"all converged: {mbx['converged']}; n_jobs=2 same bits as n_jobs=1: {mbx['same_bits']}"
    )
    r = _lme4.r_side(
        "lme4",
        args.no_r,
        lambda: run_lme4(args.nsim),
        f"lme4 bootMer (nsim={args.nsim}; its fit takes ~40 s)",
    )
    lme4_rep = None
    if r is not None:
        lme4_rep = r["boot"] / r["nsim"]
        print(f"lme4 fit {r['fit']:.1f} s; failed replicates: {r['failed']}")
    print(_lme4.load_note("end"))
    print()
    header = "task | mixboot n_jobs=1 s/rep | n_jobs=2 s/rep | lme4 s/rep | ratio"
    print(header)
    print("-" * len(header))
    ratio = "n/a" if lme4_rep is None else f"{lme4_rep / mbx[1]:.1f}"
    print(f"InstEval bootMer | {_fmt(mbx[1])} | {_fmt(mbx[2])} | {_fmt(lme4_rep)} | {ratio}")
    if lme4_rep is not None:
        print(
            f"(ratio: lme4 s/rep over mixboot n_jobs=1 s/rep; with n_jobs=2: "
            f"{lme4_rep / mbx[2]:.1f})"
        )
    return 0 if mbx["same_bits"] and mbx["converged"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
