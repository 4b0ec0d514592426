"""Small helper for running lme4 (R) side by side with mixboot in the benchmarks.

R is a benchmark / validation tool only: every function here degrades
gracefully when ``Rscript`` is not installed (``rscript()`` returns None and
callers print "lme4: not available").

The R code passed to :func:`run_r` must print exactly one JSON object by
calling ``emit_json(list(...))`` (defined in the prelude prepended to the code).
``emit_json`` uses the ``jsonlite`` package when it is installed and otherwise
formats the JSON by hand with ``sprintf``; it accepts a named list whose
elements are numeric / logical / character vectors (length 1 -> scalar,
otherwise an array) or nested named lists of the same.  Setting the environment
variable ``MIXBOOT_R_NO_JSONLITE=1`` forces the hand-written formatter (for testing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "DATA_DIR",
    "data_path",
    "rscript",
    "run_r",
    "r_available",
    "RNotAvailable",
    "RError",
    "r_str",
    "load_note",
    "vm_hwm_kib",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = (REPO_ROOT / ".." / "shared" / "data").resolve()

_MARK = "@@MIXBOOT_JSON@@"


class RNotAvailable(RuntimeError):
    """Raised by run_r when Rscript cannot be found."""


class RError(RuntimeError):
    """Raised by run_r when the R process fails or prints no JSON line."""


def data_path(name: str) -> Path:
    """Path of the shared data set ``../shared/data/<name>.csv`` (relative to the repo root)."""
    p = DATA_DIR / (name if name.endswith(".csv") else f"{name}.csv")
    if not p.exists():
        raise FileNotFoundError(f"data set {name!r} not found at {p}")
    return p


def rscript() -> str | None:
    """Path to the ``Rscript`` executable, or None if R is not installed.

    The environment variable ``MIXBOOT_RSCRIPT`` overrides the lookup
    (set it to an empty string to pretend R is absent).
    """
    env = os.environ.get("MIXBOOT_RSCRIPT")
    if env is not None:
        return env or None
    return shutil.which("Rscript")


def r_available(packages=("lme4",)) -> bool:
    """True if Rscript exists and all ``packages`` can be loaded."""
    if rscript() is None:
        return False
    pk = ", ".join(r_str(p) for p in packages)
    try:
        out = run_r(
            f"emit_json(list(ok = all(vapply(c({pk}), requireNamespace, "
            f"logical(1), quietly = TRUE))))",
            timeout=120,
        )
    except (RError, RNotAvailable, subprocess.TimeoutExpired):
        return False
    return bool(out.get("ok"))


def r_side(tool: str, skip: bool, run, what: str, packages=("lme4",)):
    """Run the R half of a benchmark, or print why not; returns its result or None.

    ``run()`` returns the parsed R output (a dict with 'version' and 'R') or None
    when the R run failed.
    """
    if skip:
        print(f"{tool}: skipped (--no-r)")
        return None
    if rscript() is None or (tuple(packages) != ("lme4",) and not r_available(packages)):
        print(f"{tool}: not available")
        return None
    print(f"running {what} ...", flush=True)
    r = run()
    if r is None:
        print(f"{tool}: not available (R run failed)")
    else:
        print(f"{tool} {r['version']} ({r['R']})")
    return r


def load_note(when: str) -> str:
    """One line with the 1/5/15-minute load averages (timings are noisy when
    the load is above the number of CPUs)."""
    try:
        la = os.getloadavg()
    except OSError:
        return f"load average at {when}: n/a"
    warn = "  (busy machine: timings are noisy)" if la[0] > (os.cpu_count() or 1) - 0.5 else ""
    return (
        f"load average at {when}: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} (cpus {os.cpu_count()}){warn}"
    )


def r_str(s) -> str:
    """Quote a Python string (e.g. a file path) as an R string literal."""
    s = str(s).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


_PRELUDE = r"""
.mb_mark <- "%MARK%"
.mb_json_hand <- function(x) {
  if (is.list(x)) {
    nm <- names(x)
    if (is.null(nm)) {
      return(paste0("[", paste(vapply(x, .mb_json_hand, ""), collapse = ","), "]"))
    }
    parts <- vapply(seq_along(x), function(i)
      sprintf("\"%s\":%s", nm[i], .mb_json_hand(x[[i]])), "")
    return(paste0("{", paste(parts, collapse = ","), "}"))
  }
  if (is.factor(x)) x <- as.character(x)
  if (is.character(x)) {
    v <- ifelse(is.na(x), "null",
                sprintf("\"%s\"", gsub("\"", "\\\\\"", gsub("\\\\", "\\\\\\\\", x))))
  } else if (is.logical(x)) {
    v <- ifelse(is.na(x), "null", ifelse(x, "true", "false"))
  } else {
    x <- as.numeric(x)
    v <- ifelse(is.finite(x), sprintf("%.17g", x), "null")
  }
  if (length(v) == 1L && is.null(dim(x))) v else paste0("[", paste(v, collapse = ","), "]")
}
emit_json <- function(x) {
  if (!nzchar(Sys.getenv("MIXBOOT_R_NO_JSONLITE")) &&
      requireNamespace("jsonlite", quietly = TRUE)) {
    s <- as.character(jsonlite::toJSON(x, auto_unbox = TRUE, digits = NA,
                                       na = "null", null = "null"))
  } else {
    s <- .mb_json_hand(x)
  }
  cat(.mb_mark, s, "\n", sep = "")
  invisible(NULL)
}
""".replace("%MARK%", _MARK)


def run_r(code: str, timeout: float | None = 1800) -> dict:
    """Run R ``code`` with Rscript and return the dict it printed via ``emit_json``.

    The code is written to a temporary file (prelude + code) and run with
    ``Rscript --vanilla``.  Raises :class:`RNotAvailable` when R is absent,
    :class:`RError` when R exits non-zero or prints no JSON line, and
    ``subprocess.TimeoutExpired`` after ``timeout`` seconds.
    """
    exe = rscript()
    if exe is None:
        raise RNotAvailable("Rscript not found")
    fd, path = tempfile.mkstemp(prefix="mixboot_bench_", suffix=".R")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(_PRELUDE)
            fh.write("\n")
            fh.write(code)
            fh.write("\n")
        proc = subprocess.run(
            [exe, "--vanilla", path], capture_output=True, text=True, timeout=timeout
        )
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    lines = [ln[len(_MARK) :] for ln in proc.stdout.splitlines() if ln.startswith(_MARK)]
    if proc.returncode != 0 or len(lines) != 1:
        raise RError(
            f"Rscript failed (exit {proc.returncode}, {len(lines)} JSON lines)\n"
            f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"
        )
    return json.loads(lines[0])


def vm_hwm_kib() -> int | None:
    """VmHWM (peak RSS of this address space, KiB) from /proc (Linux), else None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None
