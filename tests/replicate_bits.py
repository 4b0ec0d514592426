"""Run in a subprocess by tests/test_runner.py: does a replicate's bits depend on the split?

For every dense model of lme4's reference fits: bootMer(B=50), the first 50 replicates
of B=200 and of B=333, and B=50 over two worker processes (n_jobs=2, with chunks
small enough that both workers take part) must agree bit for bit.  Prints one JSON
object: per model the four comparisons, how many processes computed the parallel
run, and the B=200 estimates (to compare across BLAS kernels). Worker processes are started however short the run.

Usage: python replicate_bits.py OUT.json   (OPENBLAS_CORETYPE may be set by the caller)
"""

import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mixboot as mb  # noqa: E402
from conftest import load_data, load_reference_fits  # noqa: E402
from mixboot import runner  # noqa: E402


def main(out_path: str) -> None:
    warnings.simplefilter("ignore")
    outcomes = []
    real_run = runner.run

    def recording_run(*args, **kwargs):
        outcomes.append(real_run(*args, **kwargs))
        return outcomes[-1]

    runner.run = recording_run
    report = {}
    for case in load_reference_fits():
        if case["dataset"] == "insteval":
            continue  # the sparse-workspace model: a replicate takes seconds, refits one at a time
        fit = mb.fit(case["formula"], load_data(case["dataset"]), REML=case["REML"])
        b50 = mb.bootMer(fit, B=50, seed=11)
        b200 = mb.bootMer(fit, B=200, seed=11)
        b333 = mb.bootMer(fit, B=333, seed=11)
        # chunks of 3, and workers however short the run: every worker gets several
        saved = runner.TASKS_PER_WORKER, runner.MIN_SHARED_CHUNK, runner.PARALLEL_MIN_SECONDS
        runner.TASKS_PER_WORKER, runner.MIN_SHARED_CHUNK, runner.PARALLEL_MIN_SECONDS = 10, 1, 0.0
        try:
            par = mb.bootMer(fit, B=50, seed=11, n_jobs=2)
        finally:
            runner.TASKS_PER_WORKER, runner.MIN_SHARED_CHUNK, runner.PARALLEL_MIN_SECONDS = saved
        first = b50.estimates.tobytes()
        report[case["id"]] = {
            "B200": b200.estimates[:50].tobytes() == first,
            "B333": b333.estimates[:50].tobytes() == first,
            "tbl": b333.tbl.iloc[:50].reset_index(drop=True).equals(b50.tbl),
            "n_jobs2": par.estimates.tobytes() == first,
            "processes": outcomes[-1].processes,
            "estimates": np.nan_to_num(b200.estimates, nan=-1e300).tolist(),
        }
    Path(out_path).write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
