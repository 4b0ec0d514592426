"""Command line: ``mixboot fit | boot | demo`` — a thin layer over the public API."""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

__all__ = ["main"]


def _read(path: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise SystemExit(f"mixboot: data file {path!r} not found")


def _interval_table(boot, level: float) -> str:
    perc = boot.confint(method="perc", level=level)
    short = boot.confint(method="shortest", level=level)
    frame = pd.DataFrame({"estimate": boot.estimate, "boot se": boot.se().to_numpy(),
                          "perc lower": perc["lower"].to_numpy(), "perc upper": perc["upper"].to_numpy(),
                          "shortest lower": short["lower"].to_numpy(),
                          "shortest upper": short["upper"].to_numpy()}, index=list(boot.names))
    return frame.to_string(float_format=lambda x: f"{x:.5g}")


def _cmd_fit(args) -> int:
    import mixboot as mb
    result = mb.fit(args.formula, _read(args.data), REML=not args.ml)
    print(result.summary())
    return 0


def _run_boot(result, args) -> int:
    import mixboot as mb
    boot = mb.bootMer(result, B=args.B, seed=args.seed, n_jobs=args.jobs,
                      show_progress=args.progress, tol=args.tol)
    print(f"Parametric bootstrap: {boot.B} replicates, seed {args.seed}, "
          f"{int(round(100 * args.level))}% intervals")
    print(_interval_table(boot, args.level))
    print(f"failed: {boot.n_failed}, singular: {boot.n_singular}, "
          f"non-converged: {boot.n_nonconverged}")
    if args.out:
        boot.save(args.out)
        print(f"saved to {args.out}")
    return 0


def _cmd_boot(args) -> int:
    import mixboot as mb
    result = mb.fit(args.formula, _read(args.data), REML=not args.ml)
    print(result.summary())
    print()
    return _run_boot(result, args)


def _cmd_demo(args) -> int:
    import time

    import mixboot as mb
    df = mb.datasets.load("reaction")
    formula = "Reaction ~ 1 + Days + (1 + Days | Subject)"
    print(f"Built-in example 'reaction' (simulated, {len(df)} rows); fitting {formula} by ML\n")
    result = mb.fit(formula, df, REML=False)
    print(result.summary())
    print()
    start = time.perf_counter()
    code = _run_boot(result, args)
    print(f"bootstrap time: {time.perf_counter() - start:.2f} s")
    return code


def _add_boot_options(p):
    p.add_argument("-B", type=int, default=1000, help="number of replicates (default 1000)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--tol", type=float, default=None, help="relative refit tolerance (e.g. 1e-8)")
    p.add_argument("--out", default=None, help="save replicates to this Parquet file")
    p.add_argument("--progress", action="store_true", help="show a progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixboot", description="Linear mixed models: fit, "
                                     "parametric bootstrap, simulation.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="fit a model and print its summary")
    p.add_argument("data", help="CSV file")
    p.add_argument("formula", help='lme4 formula, e.g. "y ~ x + (1 | g)"')
    p.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    p.set_defaults(func=_cmd_fit)
    p = sub.add_parser("boot", help="fit, bootstrap and print intervals")
    p.add_argument("data", help="CSV file")
    p.add_argument("formula", help="lme4 formula")
    p.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    _add_boot_options(p)
    p.set_defaults(func=_cmd_boot)
    p = sub.add_parser("demo", help="fit and bootstrap a built-in example (no download)")
    _add_boot_options(p)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, TypeError) as exc:
        print(f"mixboot: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
