"""GLMM speed, side by side with lme4 in one run.

    python benchmarks/glmm.py [--B 1000] [--r-nsim 1000] [--nsim 500] [--repeats 3]

1. cbpp ``cbind(incidence, size - incidence) ~ period + (1 | herd)``: ``bootMer`` with
   B replicates of c(fixef, theta) (mixboot n_jobs=1 and 2) against lme4's ``bootMer``
   (``--r-nsim`` replicates; seconds per 1000 scaled linearly when fewer).
2. VerbAgg ``r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)``: one fit
   (min of ``--repeats``) against ``glmer`` (min of 3).
3. A power analysis for a crossed Bernoulli design (30 subjects x 20 items, an
   item-level condition x = +-0.5, beta = (0, 0.8), SDs 1 and 0.5): mixboot's
   ``power`` (Wald z, nsim) against a loop of ``glmer`` fits in lme4 (same nsim).

lme4's numbers come from ``benchmarks/r/glmer_timings.R``; without R they are
reported as unavailable.  Ratios are lme4 time / mixboot time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import mixboot as mb  # noqa: E402

from _lme4 import DATA_DIR, REPO_ROOT, _MARK, rscript  # noqa: E402

VERBAGG = "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


def lme4_times(r_nsim: int) -> dict | None:
    exe = rscript()
    if exe is None:
        return None
    proc = subprocess.run(
        [
            exe,
            "--vanilla",
            str(REPO_ROOT / "benchmarks" / "r" / "glmer_timings.R"),
            str(DATA_DIR),
            str(r_nsim),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=7200,
    )
    lines = [ln[len(_MARK) :] for ln in proc.stdout.splitlines() if ln.startswith(_MARK)]
    if proc.returncode != 0 or len(lines) != 1:
        print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(lines[0])


def timed(f, repeats: int = 1) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


def crossed_design() -> pd.DataFrame:
    d = pd.DataFrame([(s, i) for i in range(1, 21) for s in range(1, 31)], columns=["subj", "item"])
    d["x"] = np.where(d["item"] % 2 == 0, 0.5, -0.5)
    d["subj"], d["item"] = d["subj"].astype(str), d["item"].astype(str)
    d["y"] = 0.0
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--B", type=int, default=1000)
    ap.add_argument("--r-nsim", type=int, default=1000)
    ap.add_argument("--nsim", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    cbpp = mb.datasets.load("cbpp")
    verbagg = pd.read_csv(DATA_DIR / "verbagg.csv")
    verbagg[["id", "item"]] = verbagg[["id", "item"]].astype(str)
    rows = []

    fit = mb.fit(CBPP, data=cbpp, family="binomial")
    mb.bootMer(fit, B=8, seed=2)  # warm up
    t1, boot = timed(lambda: mb.bootMer(fit, B=args.B, seed=1))
    t2, _ = timed(lambda: mb.bootMer(fit, B=args.B, seed=1, n_jobs=2))
    rows.append(("cbpp bootMer B=%d" % args.B, t1, t2, "failed %d" % boot.n_failed))

    tv, rv = timed(lambda: mb.fit(VERBAGG, data=verbagg, family="binomial"), args.repeats)
    rows.append(("VerbAgg fit", tv, None, f"objective {rv.objective:.4f}"))

    model = mb.model(
        "y ~ x + (1 | subj) + (1 | item)",
        crossed_design(),
        family="bernoulli",
        beta=[0.0, 0.8],
        re={"subj": 1.0, "item": 0.5},
    )
    tp1, pw = timed(lambda: mb.power(model, "x", nsim=args.nsim, seed=1))
    tp2, _ = timed(lambda: mb.power(model, "x", nsim=args.nsim, seed=1, n_jobs=2))
    rows.append((f"power 30x20 Bernoulli nsim={args.nsim}", tp1, tp2, f"power {pw.power:.3f}"))

    r = lme4_times(args.r_nsim)
    ref = {}
    if r is not None:
        ref["cbpp bootMer B=%d" % args.B] = r["cbpp_bootmer_per_1000"] * args.B / 1000
        ref["VerbAgg fit"] = r["verbagg_fit_seconds"]
        if r.get("power"):
            ref[f"power 30x20 Bernoulli nsim={args.nsim}"] = (
                r["power"]["seconds_per_fit"] * args.nsim
            )
    print(
        f"mixboot {mb.__version__}; lme4 {r['version'] if r else 'not available'}"
        + (f" (bootMer nsim {r['N']}, scaled)" if r and r["N"] != args.B else "")
    )
    print(
        f"{'task':34s} {'mixboot n_jobs=1':>17s} {'n_jobs=2':>9s} {'lme4':>9s} {'ratio':>7s}  note"
    )
    for name, a, b, note in rows:
        lm = ref.get(name)
        print(
            f"{name:34s} {a:16.2f}s {('%8.2fs' % b) if b else '        -'} "
            f"{('%8.1fs' % lm) if lm else '        -'} {('%6.1fx' % (lm / a)) if lm else '      -'}  "
            f"{note}"
        )
    if r is not None and r.get("power"):
        print(
            f"lme4 power loop: power {r['power']['power']:.3f}, {r['power']['n_warnings']} warnings"
        )


if __name__ == "__main__":
    main()
