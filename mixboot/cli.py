"""Command line: ``mixboot fit | boot | demo | power`` — a thin layer over the public API."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["main"]


def _read(path: str) -> pd.DataFrame:
    """A CSV file as R's ``read.csv`` reads it.

    Only ``NA`` is a missing value, and an empty cell in a column that is otherwise
    numeric; in a text column ``None``, ``NaN``, ``null`` and ``""`` are ordinary
    levels (pandas' own defaults would make them missing).
    """
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=["NA"])
    except FileNotFoundError:
        raise SystemExit(f"mixboot: data file {path!r} not found") from None
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            continue
        present = col[col.notna() & (col.astype(str) != "")]
        try:
            numbers = pd.to_numeric(present)
        except (TypeError, ValueError):
            continue  # text: "" stays a level
        out = pd.Series(np.nan, index=col.index, dtype=float)
        out[present.index] = numbers.astype(float)
        frame[name] = out
    return frame


def _interval_table(boot, level: float) -> str:
    perc = boot.confint(method="perc", level=level)
    short = boot.confint(method="shortest", level=level)
    frame = pd.DataFrame(
        {
            "estimate": boot.reported_estimate().to_numpy(),
            "boot se": boot.reported().std(ddof=1).to_numpy(),
            "perc lower": perc["lower"].to_numpy(),
            "perc upper": perc["upper"].to_numpy(),
            "shortest lower": short["lower"].to_numpy(),
            "shortest upper": short["upper"].to_numpy(),
        },
        index=list(perc.index),
    )
    return frame.to_string(float_format=lambda x: f"{x:.5g}")


def _cmd_fit(args) -> int:
    import mixboot as mb

    result = mb.fit(args.formula, _read(args.data), REML=not args.ml)
    print(result.summary())
    return 0


# --------------------------------------------------------------------------- options
class _OptionError(Exception):
    """A bad command-line option, reported as argparse reports its own (exit status 2)."""


def _check_boot_args(args) -> None:
    """Options of ``boot`` and ``demo``, refused before any data is read or fitted."""
    if args.B < 1:
        raise _OptionError(f"-B must be a positive integer, got {args.B}")
    if not 0 < args.level < 1:
        raise _OptionError(f"--level must be strictly between 0 and 1, got {args.level}")
    if args.tol is not None and not 0 < args.tol < 1:
        raise _OptionError(f"--tol must be strictly between 0 and 1, got {args.tol}")
    if args.out is not None:
        _check_output_file("--out", args.out)
    _check_run_args(args)


def _check_power_args(args) -> None:
    """Options of ``power``, refused before the design is read or anything simulated.

    Settings that come from the design file are checked by mb.power itself.
    """
    if args.nsim is not None and args.nsim < 1:
        raise _OptionError(f"--nsim must be a positive integer, got {args.nsim}")
    if args.alpha is not None and not 0 < args.alpha < 1:
        raise _OptionError(f"--alpha must be strictly between 0 and 1, got {args.alpha}")
    if args.pb_B is not None and args.pb_B < 1:
        raise _OptionError(f"--pb-B must be a positive integer, got {args.pb_B}")
    if args.sizes is not None and (not args.sizes or min(args.sizes) < 1):
        raise _OptionError(f"--sizes must be positive integers, got {args.sizes}")
    _check_run_args(args)


def _check_run_args(args) -> None:
    """--seed, --jobs, --checkpoint and --scheduler, shared by boot, demo and power."""
    if args.seed is not None and args.seed < 0:
        raise _OptionError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.jobs != -1 and args.jobs < 1:
        raise _OptionError(f"--jobs must be a positive integer or -1 (all cores), got {args.jobs}")
    if args.checkpoint is not None:
        _check_checkpoint(args.checkpoint)
    if args.scheduler is not None:
        if not _ADDRESS.fullmatch(args.scheduler):
            raise _OptionError(
                f"--scheduler must be a scheduler address such as "
                f"tcp://host:8786 or host:8786, got {args.scheduler!r}"
            )
        if args.jobs != 1:
            raise _OptionError(
                f"--scheduler runs the work on the cluster's workers: leave "
                f"--jobs at 1 (got --jobs {args.jobs})"
            )
        try:
            import dask.distributed  # noqa: F401 - only to fail before any work
        except ImportError:
            raise _OptionError("--scheduler needs dask: pip install 'mixboot[dask]'") from None


# "scheme://anything" (tcp, tls, inproc, ucx, ...) or "host:port".
_ADDRESS = re.compile(r"[A-Za-z][\w+.-]*://\S+|[\w.-]+:\d{1,5}|\[[0-9A-Fa-f:.]+\]:\d{1,5}")


def _check_output_file(option: str, path: str) -> None:
    """``path`` can be written: its directory exists and is writable, and it is no directory."""
    if not path:
        raise _OptionError(f"{option} needs a file name")
    if os.path.isdir(path):
        raise _OptionError(f"{option} {path!r} is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise _OptionError(f"{option} {path!r}: directory {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise _OptionError(f"{option} {path!r}: directory {folder!r} is not writable")


def _check_checkpoint(path: str) -> None:
    """The checkpoint directory exists and is writable, or can be made in its parent."""
    if not path:
        raise _OptionError("--checkpoint needs a directory name")
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise _OptionError(f"--checkpoint {path!r} is a file; it must be a directory")
        if not os.access(path, os.W_OK):
            raise _OptionError(f"--checkpoint directory {path!r} is not writable")
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise _OptionError(f"--checkpoint {path!r}: directory {parent!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise _OptionError(f"--checkpoint {path!r}: directory {parent!r} is not writable")


@contextlib.contextmanager
def _client(address):
    """A Dask client on ``address`` (None: no cluster), closed when the command ends."""
    if address is None:
        yield None
        return
    from dask.distributed import Client

    try:
        client = Client(address)
    except OSError as exc:
        raise ValueError(f"--scheduler {address!r}: cannot connect ({exc})") from None
    try:
        yield client
    finally:
        client.close()


# --------------------------------------------------------------------------- boot
def _run_boot(result, args, client=None) -> int:
    import mixboot as mb

    boot = mb.bootMer(
        result,
        B=args.B,
        seed=args.seed,
        n_jobs=args.jobs,
        show_progress=args.progress,
        tol=args.tol,
        checkpoint=args.checkpoint,
        client=client,
    )
    if args.checkpoint is not None:
        done = boot.meta["checkpoint"]
        print(
            f"checkpoint {args.checkpoint}: {done['loaded']} replicates read back, "
            f"{done['computed']} computed"
        )
    print(
        f"Parametric bootstrap: {boot.B} replicates, seed {boot.meta['seed_entropy']}, "
        f"{int(round(100 * args.level))}% intervals"
    )
    print(_interval_table(boot, args.level))
    print(
        f"failed: {boot.n_failed}, singular: {boot.n_singular}, "
        f"non-converged: {boot.n_nonconverged}"
    )
    if args.out:
        boot.save(args.out)
        print(f"saved to {args.out}")
    return 0


def _cmd_boot(args) -> int:
    import mixboot as mb

    with _client(args.scheduler) as client:
        result = mb.fit(args.formula, _read(args.data), REML=not args.ml)
        print(result.summary())
        print()
        return _run_boot(result, args, client)


def _cmd_demo(args) -> int:
    import time

    import mixboot as mb

    df = mb.datasets.load("reaction")
    formula = "Reaction ~ 1 + Days + (1 + Days | Subject)"
    print(f"Built-in example 'reaction' (simulated, {len(df)} rows); fitting {formula} by ML\n")
    with _client(args.scheduler) as client:
        result = mb.fit(formula, df, REML=False)
        print(result.summary())
        print()
        start = time.perf_counter()
        code = _run_boot(result, args, client)
        print(f"bootstrap time: {time.perf_counter() - start:.2f} s")
    return code


# --------------------------------------------------------------------------- power
_DESIGNS = ("nested", "crossed", "csv")
_RUN_KEYS = ("formula", "test", "nsim", "seed", "alpha", "method", "pb_B", "sizes", "along")


def _load_config(path: str) -> dict:
    """A power-analysis file: JSON, or TOML (Python 3.11's tomllib, else the tomli package)."""
    file = Path(path)
    try:
        text = file.read_bytes()
    except FileNotFoundError:
        raise SystemExit(f"mixboot: design file {path!r} not found") from None
    if file.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ImportError:
                raise SystemExit(
                    "mixboot: reading TOML needs Python 3.11+ or the tomli "
                    "package; or write the file as JSON"
                ) from None
        try:
            config = tomllib.loads(text.decode())
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from None
    else:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path}: not valid JSON ({exc}); TOML files must end in .toml"
            ) from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a table/object of settings at the top level")
    return config


def _design_from(config: dict, base: Path):
    """The data frame a ``nested``, ``crossed`` or ``csv`` entry describes."""
    import mixboot as mb

    spec = config.get("design", config)
    given = [k for k in _DESIGNS if k in spec]
    if len(given) != 1:
        raise ValueError(
            f"the design file must give exactly one design among {list(_DESIGNS)} "
            f"(at the top level or under 'design'), got {given or 'none'}"
        )
    kind = given[0]
    args = spec[kind]
    if kind == "csv":
        return _read(str(base / args))
    if not isinstance(args, dict):
        raise ValueError(f"design {kind!r} must be a table of arguments of mb.design.{kind}()")
    return getattr(mb.design, kind)(**args)


def _cmd_power(args) -> int:
    import mixboot as mb

    config = _load_config(args.design)
    settings = {k: config.get(k) for k in _RUN_KEYS}
    for key in _RUN_KEYS:
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    missing = [k for k in ("formula", "test") if not settings[k]]
    missing += [k for k in ("beta", "sigma") if k not in config]
    if "re" not in config and "theta" not in config:
        missing.append("re (or theta)")
    if missing:
        raise ValueError(
            f"power analysis needs {missing}: give them in {args.design} "
            "(or --formula / --test on the command line)"
        )
    unknown = set(config) - {
        *_RUN_KEYS,
        *_DESIGNS,
        "design",
        "beta",
        "sigma",
        "re",
        "theta",
        "REML",
        "contrasts",
    }
    if unknown:
        raise ValueError(f"{args.design}: unknown setting(s) {sorted(unknown)}")
    data = _design_from(config, Path(args.design).resolve().parent)
    model = mb.model(
        settings["formula"],
        data,
        beta=config["beta"],
        sigma=config["sigma"],
        re=config.get("re"),
        theta=config.get("theta"),
        REML=config.get("REML", True),
        contrasts=config.get("contrasts"),
    )
    defaults = {"nsim": 1000, "alpha": 0.05, "method": None, "pb_B": 199}
    common = {k: d if settings[k] is None else settings[k] for k, d in defaults.items()}
    common.update(seed=settings["seed"], n_jobs=args.jobs, show_progress=args.progress)
    with _client(args.scheduler) as client:
        # A curve passes its one checkpoint directory on: power_curve keeps sizes apart in it.
        common.update(checkpoint=args.checkpoint, client=client)
        if settings["sizes"]:
            sizes = settings["sizes"]
            if isinstance(sizes, str):
                sizes = _sizes(sizes)
            curve = mb.power_curve(
                model, settings["test"], sizes=sizes, along=settings["along"], **common
            )
            print(curve.summary())
        else:
            print(mb.power(model, settings["test"], **common).summary())
    return 0


def _sizes(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes takes integers separated by commas, got {text!r}"
        ) from None


def _add_power_options(p):
    p.add_argument(
        "--design",
        required=True,
        help="JSON or TOML file: the design (nested / crossed / csv) and the "
        "parameters beta, sigma, re (or theta); may also hold the settings below",
    )
    p.add_argument("--formula", help='lme4 formula, e.g. "y ~ treatment + (1|subject)"')
    p.add_argument("--test", help="coefficient or fixed term to test, e.g. treatment")
    p.add_argument("--nsim", type=int, help="simulated data sets (default 1000)")
    p.add_argument("--seed", type=int, help="random seed (default: random)")
    p.add_argument("--alpha", type=float, help="significance level (default 0.05)")
    p.add_argument(
        "--method",
        choices=["satterthwaite", "kr", "wald", "lrt", "pb"],
        help="test (default satterthwaite: t with Satterthwaite's df, as the fit's p-values)",
    )
    p.add_argument(
        "--pb-B",
        dest="pb_B",
        type=int,
        help="bootstrap responses per data set for --method pb (default 199)",
    )
    p.add_argument("--sizes", type=_sizes, help="power curve: sizes, e.g. 20,30,40")
    p.add_argument("--along", help="power curve: grouping column to resize (e.g. subject)")
    _add_run_options(p, "--nsim")


def _add_run_options(p, size_option: str):
    """Options every simulating command shares."""
    p.add_argument(
        "--jobs", type=int, default=1, help="worker processes, -1 for all cores (default 1)"
    )
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="directory that keeps finished replicates; re-running the same command "
        f"resumes, a larger {size_option} extends",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on a Dask cluster at this scheduler address, e.g. "
        "tcp://host:8786; needs pip install 'mixboot[dask]'",
    )
    p.add_argument("--progress", action="store_true", help="show a progress bar")


def _add_boot_options(p):
    p.add_argument("-B", type=int, default=1000, help="number of replicates (default 1000)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--tol", type=float, default=None, help="relative refit tolerance (e.g. 1e-8)")
    p.add_argument("--out", default=None, help="save replicates to this Parquet file")
    _add_run_options(p, "-B")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixboot", description="Linear mixed models: fit, parametric bootstrap, simulation."
    )
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
    p.set_defaults(func=_cmd_boot, check=_check_boot_args)
    p = sub.add_parser("demo", help="fit and bootstrap a built-in example (no download)")
    _add_boot_options(p)
    p.set_defaults(func=_cmd_demo, check=_check_boot_args)
    p = sub.add_parser(
        "power", help="power of a fixed-effect test by simulation (or a curve over sizes)"
    )
    _add_power_options(p)
    p.set_defaults(func=_cmd_power, check=_check_power_args)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Every option is checked before any work: a bootstrap can run for minutes before
    # a bad --level or --out would otherwise be noticed.
    check = getattr(args, "check", None)
    if check is not None:
        try:
            check(args)
        except _OptionError as exc:
            parser.error(str(exc))
    try:
        return args.func(args)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        print(f"mixboot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = getattr(args, "checkpoint", None)
        print(
            "mixboot: interrupted"
            + (
                f"; finished replicates are kept in {kept}: run the same command again to resume"
                if kept
                else ""
            ),
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
