"""Lint and type checks as tests: ruff (rules in pyproject's [tool.ruff]) and mypy.

Each check is skipped when its tool is not installed (both are in the ``test`` extra).
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Everything the project writes in Python is kept in the formatter's style.
FORMATTED = ["mixboot", "tests", "benchmarks", "scripts", "examples", "docs/gallery"]


def run(tool: str, *args: str) -> None:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed (pip install -e '.[test]')")
    proc = subprocess.run(
        [sys.executable, "-m", tool, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{tool} {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"


def test_ruff_check():
    run("ruff", "check", "mixboot", "tests")


def test_ruff_format():
    run("ruff", "format", "--check", *FORMATTED)


def test_mypy():
    run("mypy", "mixboot")
