"""The replicate runner's executors and checkpoints, timed side by side (mixboot only).

Run from the repository root:

    python benchmarks/runner.py                      # all three sections, B=20000
    python benchmarks/runner.py --B 5000 --checkpoint-B 5000 --repeats 2   # quicker
    python benchmarks/runner.py --no-dask --no-checkpoint                   # first call only

Sections (every ratio compares timings taken in this one run, alternating the order):

  dask       bootMer on a LocalCluster(2 workers, 1 thread each) vs n_jobs=2, for
             sleepstudy ML (Reaction ~ 1 + Days + (1 + Days|Subject)) and penicillin
             REML (diameter ~ 1 + (1|plate) + (1|sample)).  Cluster start-up is not
             timed; one small call (--warmup-B) on each backend comes first.  Min of
             --repeats.  Target: dask / n_jobs=2 <= 1.3.
  checkpoint bootMer(sleepstudy, n_jobs=1) with checkpoint=<a fresh temporary
             directory> vs without.  Min of --repeats.  Target: with / without <= 1.05.
  first call n_jobs=2 vs n_jobs=1 as the first bootMer call of a new Python process
             (sleepstudy, --first-call-B): each run is a fresh `python -c` child that
             imports mixboot and fits the model untimed, then times bootMer alone.
             --first-call-reps runs of each, alternating; medians.  Target:
             n_jobs=2 / n_jobs=1 <= 1.

Each line says whether the compared runs gave bit-identical estimates.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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
    # key: (label, data set, formula, REML)
    "sleepstudy": (
        "sleepstudy ML",
        "sleepstudy",
        "Reaction ~ 1 + Days + (1 + Days|Subject)",
        False,
    ),
    "penicillin": ("penicillin REML", "penicillin", "diameter ~ 1 + (1|plate) + (1|sample)", True),
}
SEED = 1

CHILD = r"""
import json, sys, time, warnings
sys.path.insert(0, {root!r})
import pandas as pd
import mixboot as mb
fit = mb.fit({formula!r}, data=pd.read_csv({data!r}), REML={reml!r})
t0 = time.perf_counter()
boot = mb.bootMer(fit, B={B}, seed={seed}, n_jobs={n_jobs})
t = time.perf_counter() - t0
import hashlib
print(json.dumps({{"time": t, "digest": hashlib.sha256(boot.estimates.tobytes()).hexdigest(),
                  "mixboot": mb.__file__}}))
"""


def _fmt_s(t) -> str:
    if t is None:
        return "n/a"
    return f"{t:.3f}" if t < 10 else f"{t:.2f}"


def _same(a, b) -> str:
    return "yes" if a.estimates.tobytes() == b.estimates.tobytes() else "NO"


def _verdict(ratio: float, target: float) -> str:
    return "ok" if ratio <= target else "MISSED"


def fit_models(mb) -> dict:
    return {
        key: mb.fit(formula, data=pd.read_csv(_lme4.data_path(ds)), REML=reml)
        for key, (_, ds, formula, reml) in MODELS.items()
    }


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def min_alternating(calls: dict, repeats: int) -> tuple[dict, dict, dict]:
    """Each call ``repeats`` times, the order rotating every round.

    Returns the min time of each, its last result, and all its times.
    """
    names = list(calls)
    times = {k: [] for k in names}
    results = {}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            t, results[k] = _timed(calls[k])
            times[k].append(t)
    return {k: min(v) for k, v in times.items()}, results, times


# --------------------------------------------------------------------------- sections
def dask_section(mb, fits: dict, B: int, repeats: int, warmup_B: int) -> None:
    from distributed import Client, LocalCluster

    print()
    print(
        f"Dask LocalCluster(2 workers x 1 thread) vs n_jobs=2, B={B}, min of {repeats} "
        "(cluster start-up not timed)"
    )
    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    print(f"  cluster start-up: {time.perf_counter() - t0:.2f} s (not in the table)")
    try:
        for fit in fits.values():  # warm-up: worker imports, the first scatter, forks
            mb.bootMer(fit, B=warmup_B, seed=2, client=client)
            mb.bootMer(fit, B=warmup_B, seed=2, n_jobs=2)
        w = max(len(m[0]) for m in MODELS.values())
        print(
            f"  {'model':<{w}} | {'B':>6} | {'dask s':>8} | {'n_jobs=2 s':>10} | "
            f"{'ratio (dask/n_jobs=2)':>21} | target <= 1.3 | identical"
        )
        for key, (label, *_r) in MODELS.items():
            fit = fits[key]
            best, res, _ = min_alternating(
                {
                    "dask": lambda: mb.bootMer(fit, B=B, seed=SEED, client=client),
                    "jobs2": lambda: mb.bootMer(fit, B=B, seed=SEED, n_jobs=2),
                },
                repeats,
            )
            ratio = best["dask"] / best["jobs2"]
            print(
                f"  {label:<{w}} | {B:>6} | {_fmt_s(best['dask']):>8} | "
                f"{_fmt_s(best['jobs2']):>10} | {ratio:>21.3f} | "
                f"{_verdict(ratio, 1.3):>13} | {_same(res['dask'], res['jobs2'])}",
                flush=True,
            )
    finally:
        client.close()
        cluster.close()


def checkpoint_section(mb, fit, B: int, repeats: int) -> None:
    print()
    print(
        f"checkpoint overhead: bootMer(sleepstudy ML, B={B}, n_jobs=1) with a fresh "
        f"checkpoint directory vs without, min of {repeats}"
    )
    base = tempfile.gettempdir()
    dirs = []

    def with_checkpoint():
        where = tempfile.mkdtemp(prefix="mixboot-bench-", dir=base)
        dirs.append(where)
        return mb.bootMer(fit, B=B, seed=SEED, checkpoint=os.path.join(where, "ckpt"))

    try:
        best, res, times = min_alternating(
            {"without": lambda: mb.bootMer(fit, B=B, seed=SEED), "with": with_checkpoint}, repeats
        )
        files = len(
            [f for f in os.listdir(os.path.join(dirs[-1], "ckpt")) if f.startswith("chunk-")]
        )
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    ratio = best["with"] / best["without"]
    print(
        f"  {'without s':>9} | {'with s':>8} | {'ratio (with/without)':>20} | "
        "target <= 1.05 | identical"
    )
    print(
        f"  {_fmt_s(best['without']):>9} | {_fmt_s(best['with']):>8} | {ratio:>20.3f} | "
        f"{_verdict(ratio, 1.05):>14} | {_same(res['with'], res['without'])}"
    )
    print(
        f"  all runs: without {[round(t, 2) for t in times['without']]}, "
        f"with {[round(t, 2) for t in times['with']]}; "
        f"{files} chunk files per run, in {base}"
    )


def _child(B: int, n_jobs: int) -> dict:
    _, ds, formula, reml = MODELS["sleepstudy"]
    code = CHILD.format(
        root=str(_lme4.REPO_ROOT),
        formula=formula,
        data=str(_lme4.data_path(ds)),
        reml=reml,
        B=int(B),
        seed=SEED,
        n_jobs=int(n_jobs),
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=str(_lme4.REPO_ROOT),
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child (n_jobs={n_jobs}) failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def first_call_section(B: int, reps: int) -> None:
    print()
    print(
        f"first bootMer call in a new process: sleepstudy ML, B={B}, n_jobs=2 vs n_jobs=1, "
        f"median of {reps} fresh processes each (alternating; import and fit not timed)"
    )
    times = {1: [], 2: []}
    digests = set()
    for r in range(reps):
        for n_jobs in (1, 2) if r % 2 == 0 else (2, 1):
            out = _child(B, n_jobs)
            times[n_jobs].append(out["time"])
            digests.add(out["digest"])
    m1, m2 = statistics.median(times[1]), statistics.median(times[2])
    ratio = m2 / m1
    print(
        f"  {'n_jobs=1 s':>10} | {'n_jobs=2 s':>10} | {'ratio (2/1)':>11} | target <= 1.0 | "
        "identical"
    )
    print(
        f"  {_fmt_s(m1):>10} | {_fmt_s(m2):>10} | {ratio:>11.3f} | {_verdict(ratio, 1.0):>13} | "
        f"{'yes' if len(digests) == 1 else 'NO'}"
    )
    print(
        f"  all runs: n_jobs=1 {[round(t, 3) for t in times[1]]}, "
        f"n_jobs=2 {[round(t, 3) for t in times[2]]}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--B",
        type=int,
        default=20000,
        help="replicates of the Dask vs n_jobs=2 section (default 20000)",
    )
    ap.add_argument(
        "--checkpoint-B",
        type=int,
        default=20000,
        help="replicates of the checkpoint section (default 20000)",
    )
    ap.add_argument(
        "--first-call-B",
        type=int,
        default=1000,
        help="replicates of the first-call section (default 1000)",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="repeats (min) in the dask and checkpoint sections (default 3)",
    )
    ap.add_argument(
        "--first-call-reps",
        type=int,
        default=5,
        help="fresh processes per n_jobs in the first-call section (default 5)",
    )
    ap.add_argument(
        "--warmup-B", type=int, default=200, help="replicates of the warm-up calls (default 200)"
    )
    ap.add_argument("--no-dask", action="store_true", help="skip the Dask section")
    ap.add_argument("--no-checkpoint", action="store_true", help="skip the checkpoint section")
    ap.add_argument("--no-first-call", action="store_true", help="skip the first-call section")
    args = ap.parse_args(argv)

    import mixboot as mb

    extra = ""
    if not args.no_dask:
        try:
            import distributed

            extra = f", distributed {distributed.__version__}"
        except ImportError:
            print(
                "dask.distributed is not installed: skipping the Dask section "
                "(pip install 'mixboot[dask]')"
            )
            args.no_dask = True
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, mixboot {mb.__version__}"
        f"{extra}, cpus {os.cpu_count()}"
    )
    print(_lme4.load_note("start"))
    fits = fit_models(mb)
    for fit in fits.values():  # warm-up of this process (n_jobs=1)
        mb.bootMer(fit, B=args.warmup_B, seed=2)
    if not args.no_dask:
        dask_section(mb, fits, args.B, args.repeats, args.warmup_B)
        print(_lme4.load_note("the end of the Dask section"))
    if not args.no_checkpoint:
        checkpoint_section(mb, fits["sleepstudy"], args.checkpoint_B, args.repeats)
        print(_lme4.load_note("the end of the checkpoint section"))
    if not args.no_first_call:
        first_call_section(args.first_call_B, args.first_call_reps)
    print()
    print(_lme4.load_note("end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
