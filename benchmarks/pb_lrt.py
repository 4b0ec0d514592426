"""Side-by-side timing of mixboot.compare.pb_lrt vs pbkrtest::PBmodcomp (parametric-bootstrap LRT).

Run from the repository root:

    python benchmarks/pb_lrt.py              # B=1000, pbkrtest too
    python benchmarks/pb_lrt.py --B 200 --no-r

Cases (the ones of scripts/compare_reference.R; both models refitted by ML):
  cake_recipe      fixed effect, 2 df: angle ~ recipe + temp vs angle ~ temp, (1|recipe:replicate)
  pastes_batch     a variance: strength ~ (1|batch) + (1|batch:cask) vs (1|batch:cask)
  sleepstudy_corr  a correlation: Reaction ~ Days + (1 + Days|Subject) vs (1 + Days||Subject)

Each tool runs B simulations from the small model and refits both models to each; only
that is timed (not the initial fits).  pbkrtest runs serially (cl = 1) after set.seed(1);
mixboot with seed=1 and n_jobs=1.  Both tools run in the same invocation, one after the
other, so the ratio (pbkrtest s / mixboot s) is measured under the same load.

p-values: mixboot's p_boot = (1 + #{LRT* >= LRT}) / (1 + n_valid); for pbkrtest both its
PBtest p-value (which counts only positive LRT*) and the same all-replicates p-value
computed from its reference distribution.  They agree only up to Monte Carlo error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _lme4  # noqa: E402

if str(_lme4.REPO_ROOT) not in sys.path:
    sys.path.insert(1, str(_lme4.REPO_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# key: (data set, large formula, small formula, REML of the given fits)
CASES = {
    "cake_recipe": (
        "cake",
        "angle ~ recipe + temp + (1|recipe:replicate)",
        "angle ~ temp + (1|recipe:replicate)",
        False,
    ),
    "pastes_batch": (
        "pastes",
        "strength ~ 1 + (1|batch) + (1|batch:cask)",
        "strength ~ 1 + (1|batch:cask)",
        True,
    ),
    "sleepstudy_corr": (
        "sleepstudy",
        "Reaction ~ 1 + Days + (1 + Days|Subject)",
        "Reaction ~ 1 + Days + (1 + Days||Subject)",
        True,
    ),
}
# Columns R must read as factors (mixboot treats any grouping column as a factor).
R_FACTORS = {"cake": ["replicate"], "sleepstudy": ["Subject"]}

R_CODE = r"""
suppressPackageStartupMessages({library(lme4); library(pbkrtest)})
cases <- %CASES%
out <- list(version = as.character(packageVersion("pbkrtest")), R = R.version.string)
for (k in names(cases)) {
  cs <- cases[[k]]
  d <- read.csv(cs$path)
  for (f in cs$factors) d[[f]] <- factor(d[[f]])
  lg <- lmer(as.formula(cs$large), data = d, REML = cs$REML)
  sm <- lmer(as.formula(cs$small), data = d, REML = cs$REML)
  if (k == names(cases)[1]) invisible(PBmodcomp(lg, sm, nsim = 5, cl = 1))   # warm-up
  set.seed(1)
  t <- system.time(pb <- PBmodcomp(lg, sm, nsim = %B%, cl = 1))[["elapsed"]]
  ref <- as.numeric(pb$ref); ok <- is.finite(ref); tobs <- unname(pb$LRTstat["tobs"])
  out[[k]] <- list(time = t, lrt = tobs, p_pbkrtest = pb$test["PBtest", "p.value"],
                   p_all = (1 + sum(ref[ok] >= tobs)) / (1 + sum(ok)), n_valid = sum(ok))
}
emit_json(out)
"""


def _r_list(d: dict) -> str:
    items = []
    for k, v in d.items():
        if isinstance(v, dict):
            items.append(f"{k} = {_r_list(v)}")
        elif isinstance(v, bool):
            items.append(f"{k} = {'TRUE' if v else 'FALSE'}")
        elif isinstance(v, (list, tuple)):
            items.append(f"{k} = c({', '.join(_lme4.r_str(x) for x in v)})")
        else:
            items.append(f"{k} = {_lme4.r_str(v)}")
    return f"list({', '.join(items)})"


def run_pbkrtest(B: int) -> dict | None:
    cases = {
        k: {
            "path": str(_lme4.data_path(ds)),
            "large": lg,
            "small": sm,
            "REML": reml,
            "factors": R_FACTORS.get(ds, []),
        }
        for k, (ds, lg, sm, reml) in CASES.items()
    }
    code = R_CODE.replace("%CASES%", _r_list(cases)).replace("%B%", str(int(B)))
    try:
        return _lme4.run_r(code, timeout=6 * 3600)
    except _lme4.RError as e:
        print(f"pbkrtest: failed:\n{e}", file=sys.stderr)
        return None


def run_mixboot(B: int) -> dict | None:
    try:
        import mixboot as mb
        from mixboot.compare import pb_lrt
    except Exception as e:  # pragma: no cover - depends on the package state
        print(f"mixboot: not available ({type(e).__name__}: {e})")
        return None
    fits = {}
    for key, (ds, lg, sm, reml) in CASES.items():
        df = pd.read_csv(_lme4.data_path(ds))
        fits[key] = (mb.fit(lg, df, REML=reml), mb.fit(sm, df, REML=reml))
    first = next(iter(fits.values()))
    pb_lrt(*first, B=5, seed=2)  # warm-up
    out = {}
    for key, (large, small) in fits.items():
        t0 = time.perf_counter()
        res = pb_lrt(large, small, B=B, seed=1)
        out[key] = {
            "time": time.perf_counter() - t0,
            "lrt": res.lrt,
            "p_boot": res.p_boot,
            "n_valid": res.n_valid,
        }
    return out


def _fmt_s(t) -> str:
    if t is None:
        return "n/a"
    return f"{t:.4f}" if t < 1 else f"{t:.2f}"


def _fmt_p(p) -> str:
    return "n/a" if p is None else f"{p:.4f}"


def report(mx: dict | None, r: dict | None, B: int) -> None:
    w = max(len(k) for k in CASES)
    print()
    print(
        f"{'case':<{w}} | {'B':>5} | {'mixboot s':>9} | {'pbkrtest s':>10} | "
        f"{'ratio':>6} | {'p mixboot':>9} | {'p pbkrtest (all / PBtest)':>25}"
    )
    print("-" * (w + 84))
    for key in CASES:
        m = (mx or {}).get(key, {})
        rr = (r or {}).get(key, {})
        tm, tr = m.get("time"), rr.get("time")
        ratio = f"{tr / tm:.2f}" if tm and tr else "n/a"
        pr = f"{_fmt_p(rr.get('p_all'))} / {_fmt_p(rr.get('p_pbkrtest'))}" if rr else "n/a"
        print(
            f"{key:<{w}} | {B:>5} | {_fmt_s(tm):>9} | {_fmt_s(tr):>10} | {ratio:>6} | "
            f"{_fmt_p(m.get('p_boot')):>9} | {pr:>25}"
        )
    print()
    print("observed LRT (mixboot / pbkrtest) and valid replicates:")
    for key in CASES:
        m = (mx or {}).get(key, {})
        rr = (r or {}).get(key, {})
        lm, lr = m.get("lrt"), rr.get("lrt")
        print(
            f"  {key:<{w}} LRT {'n/a' if lm is None else f'{lm:.6f}'} / "
            f"{'n/a' if lr is None else f'{lr:.6f}'}   valid {m.get('n_valid', 'n/a')} / "
            f"{rr.get('n_valid', 'n/a')}"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--B", type=int, default=1000, help="bootstrap replicates (default 1000)")
    ap.add_argument("--no-r", action="store_true", help="skip pbkrtest (R)")
    args = ap.parse_args(argv)
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, cpus {os.cpu_count()}")
    print(_lme4.load_note("start"))
    r = _lme4.r_side(
        "pbkrtest",
        args.no_r,
        lambda: run_pbkrtest(args.B),
        f"pbkrtest PBmodcomp (nsim={args.B})",
        packages=("lme4", "pbkrtest"),
    )
    print(f"running mixboot pb_lrt (B={args.B}) ...", flush=True)
    mx = run_mixboot(args.B)
    report(mx, r, args.B)
    print()
    print(_lme4.load_note("end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
