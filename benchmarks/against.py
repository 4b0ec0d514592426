"""bootMer of the working tree against an earlier revision, side by side in one process.

Run from the repository root:

    python benchmarks/against.py --rev af6f869          # B=1000, 12 alternating runs per model
    python benchmarks/against.py --rev HEAD~3 --B 2000 --runs 8

The revision's ``mixboot`` package is extracted with ``git archive`` into a
temporary directory under the name ``mixboot_before`` (its imports are relative,
so it runs as it was) and both versions are timed in this process, alternating,
on the models of ``bootstrap.py``: sleepstudy ML and penicillin REML, seed =
run number.  Prints min and median seconds and the ratios now / before.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = [
    ("sleepstudy ML", "sleepstudy", "Reaction ~ 1 + Days + (1 + Days|Subject)", False),
    ("penicillin REML", "penicillin", "diameter ~ 1 + (1|plate) + (1|sample)", True),
]


def _extract(rev: str, into: Path) -> None:
    raw = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "mixboot"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        tar.extractall(into, filter="data")
    (into / "mixboot").rename(into / "mixboot_before")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", required=True, help="git revision to compare with")
    ap.add_argument("--B", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=12, help="timed runs per version and model")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mixboot-against-"))
    try:
        _extract(args.rev, tmp)
        sys.path.insert(0, str(tmp))
        sys.path.insert(0, str(ROOT))
        import pandas as pd

        import mixboot as now
        import mixboot_before as before

        warnings.simplefilter("ignore")
        print(
            f"bootMer B={args.B}: working tree vs {args.rev}, {args.runs} runs each, "
            f"alternating; load average {os.getloadavg()[0]:.2f} (cpus {os.cpu_count()})"
        )
        for label, dataset, formula, reml in MODELS:
            data = pd.read_csv(ROOT / ".." / "shared" / "data" / f"{dataset}.csv")
            versions = {"before": before, "now": now}
            fits = {k: m.fit(formula, data, REML=reml) for k, m in versions.items()}
            times: dict[str, list[float]] = {"before": [], "now": []}
            for run in range(args.runs):
                order = ("before", "now") if run % 2 else ("now", "before")
                for key in order:
                    start = time.perf_counter()
                    versions[key].bootMer(fits[key], B=args.B, seed=run)
                    times[key].append(time.perf_counter() - start)
            b, n = times["before"], times["now"]
            print(
                f"  {label:16s} before: min {min(b):.4f} median {statistics.median(b):.4f} | "
                f"now: min {min(n):.4f} median {statistics.median(n):.4f} | now/before: "
                f"min {min(n) / min(b):.3f} median {statistics.median(n) / statistics.median(b):.3f}"
            )
        print(f"load average at end {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
