"""Power analysis by simulation: mb.power against the interlace guide's own loop with interlace-lme.

Run from the repository root:

    python benchmarks/power.py --interlace-python /tmp/ilvenv/bin/python
    python benchmarks/power.py --B 200               # interlace part prints n/a
    python benchmarks/power.py --no-loop             # skip the mb.fit loop row

The interlace guide's ``power_lmm`` example: 40 subjects x 5 observations, half of the
subjects treated (alternating), y = 0.5 * treatment + u_subject + e with
sd(u) = sd(e) = 1, the model ``y ~ treatment`` with a random intercept per
subject, the Wald p-value of ``treatment`` compared with alpha = 0.05, B = 500
simulated data sets.

Rows
  mb.power          mb.power(mb.model(...), "treatment", nsim=B): simulates and
                    refits all data sets in batches (the model building, a few ms,
                    is timed too).
  loop, interlace   the seed's loop verbatim (numpy simulation, one
                    ``interlace.fit`` per data set), run by the interpreter given
                    with --interlace-python (a virtualenv with ``pip install
                    interlace-lme``); timed inside that process, imports excluded.
  loop, mb.fit      the same loop with ``mb.fit`` in place of ``interlace.fit``.

The ratio column is (row seconds) / (mb.power seconds): above 1, mb.power is
faster.  The power estimates use different random streams, so they agree only
up to Monte Carlo error, sqrt(P (1 - P) / B) (about 0.02 for B = 500).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _lme4  # noqa: E402

if str(_lme4.REPO_ROOT) not in sys.path:
    sys.path.insert(1, str(_lme4.REPO_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

N_SUBJECTS, N_OBS, EFFECT, ALPHA = 40, 5, 0.5, 0.05

# The interlace guide's loop; FIT is replaced by the fitting call of the tool being timed.
SEED_LOOP = """
import json, sys, time
import numpy as np
import pandas as pd
%IMPORT%
rng = np.random.default_rng(2024)
def power_lmm(n_subjects, n_obs, beta_treatment, sigma_subject=1.0, sigma_resid=1.0,
              B=500, alpha=0.05):
    n = n_subjects * n_obs
    significant = 0
    for _ in range(B):
        subject = np.repeat(np.arange(n_subjects), n_obs)
        treatment = (subject % 2).astype(float)
        u = rng.normal(0, sigma_subject, n_subjects)
        eps = rng.normal(0, sigma_resid, n)
        y = beta_treatment * treatment + u[subject] + eps
        df = pd.DataFrame({"y": y, "treatment": treatment, "subject": subject})
        result = %FIT%("y ~ treatment", data=df, groups="subject")
        pval = result.pvalues["treatment"]
        if pval < alpha:
            significant += 1
    return significant / B
power_lmm(%NSUB%, %NOBS%, %EFFECT%, B=3)          # warm-up
start = time.perf_counter()
power = power_lmm(%NSUB%, %NOBS%, %EFFECT%, B=%B%, alpha=%ALPHA%)
print(json.dumps({"time": time.perf_counter() - start, "power": power}))
"""


def seed_loop(python: str, B: int, tool: str, timeout: float) -> dict | None:
    imports = {
        "interlace": ("import interlace", "interlace.fit"),
        "mixboot": ("import mixboot as mb", "mb.fit"),
    }[tool]
    code = (
        SEED_LOOP.replace("%IMPORT%", imports[0])
        .replace("%FIT%", imports[1])
        .replace("%NSUB%", str(N_SUBJECTS))
        .replace("%NOBS%", str(N_OBS))
        .replace("%EFFECT%", repr(EFFECT))
        .replace("%B%", str(int(B)))
        .replace("%ALPHA%", repr(ALPHA))
    )
    try:
        proc = subprocess.run(
            [python, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=_lme4.REPO_ROOT,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"{tool} loop: failed ({type(e).__name__}: {e})", file=sys.stderr)
        return None
    if proc.returncode != 0:
        print(f"{tool} loop: failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_mb_power(B: int, seed: int, n_jobs: int) -> dict:
    import mixboot as mb

    def once(nsim, s):
        design = mb.design.nested(
            groups=N_SUBJECTS, per_group=N_OBS, between={"treatment": [0.0, 1.0]}, group="subject"
        )
        model = mb.model(
            "y ~ treatment",
            design,
            groups="subject",
            beta={"(Intercept)": 0.0, "treatment": EFFECT},
            sigma=1.0,
            re={"subject": 1.0},
        )
        return mb.power(model, "treatment", nsim=nsim, alpha=ALPHA, seed=s, n_jobs=n_jobs)

    once(20, seed + 1)  # warm-up: imports, caches
    start = time.perf_counter()
    res = once(B, seed)
    return {
        "time": time.perf_counter() - start,
        "power": res.power,
        "lower": res.lower,
        "upper": res.upper,
        "n_valid": res.n_valid,
    }


def _fmt_s(t) -> str:
    return "n/a" if t is None else (f"{t:.4f}" if t < 1 else f"{t:.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--B", type=int, default=500, help="simulated data sets (default 500)")
    ap.add_argument("--seed", type=int, default=2024, help="mb.power seed (default 2024)")
    ap.add_argument("--n-jobs", type=int, default=1, help="mb.power workers (default 1)")
    ap.add_argument(
        "--interlace-python",
        default=None,
        help="Python interpreter with interlace-lme installed (default: skip)",
    )
    ap.add_argument(
        "--loop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the seed's loop with mb.fit (default on)",
    )
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per loop run")
    args = ap.parse_args(argv)

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, pandas {pd.__version__}")
    print(_lme4.load_note("start"))
    print(
        f"design: {N_SUBJECTS} subjects x {N_OBS} observations, effect {EFFECT}, "
        f"sd(subject) = sigma = 1, alpha {ALPHA}, B = {args.B}"
    )
    rows = []
    print("running mb.power ...", flush=True)
    mx = run_mb_power(args.B, args.seed, args.n_jobs)
    rows.append(("mb.power", mx))
    if args.interlace_python:
        print("running the seed's loop with interlace.fit ...", flush=True)
        rows.append(
            ("loop, interlace", seed_loop(args.interlace_python, args.B, "interlace", args.timeout))
        )
    else:
        rows.append(("loop, interlace", None))
        print("interlace: not run (give --interlace-python)")
    if args.loop:
        print("running the seed's loop with mb.fit ...", flush=True)
        rows.append(("loop, mb.fit", seed_loop(sys.executable, args.B, "mixboot", args.timeout)))

    print()
    print(f"{'method':<16} | {'B':>5} | {'seconds':>8} | {'ratio to mb.power':>17} | power")
    print("-" * 66)
    for label, d in rows:
        t = None if d is None else d["time"]
        ratio = "n/a" if t is None else f"{t / mx['time']:.1f}"
        est = "n/a" if d is None else f"{d['power']:.3f}"
        if d is mx:
            est += f" [{mx['lower']:.3f}, {mx['upper']:.3f}]"
        print(f"{label:<16} | {args.B:>5} | {_fmt_s(t):>8} | {ratio:>17} | {est}")
    print()
    print(_lme4.load_note("end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
