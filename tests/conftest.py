"""Shared test helpers: the reference data and lme4 results in ``<root>/../shared``.

Test modules import the helpers directly (``from conftest import load_data``);
the fixtures below wrap the same functions for tests that prefer injection.
Everything skips, with the path in the reason, where ``../shared`` is absent.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared"


def shared_dir() -> Path:
    """The ``shared`` folder beside the project's root; skips the test when it is missing."""
    if not (SHARED / "data").is_dir():
        pytest.skip(
            f"reference data not found: {SHARED.resolve()} (expected <root>/../shared/data)"
        )
    return SHARED.resolve()


def has_shared() -> bool:
    return (SHARED / "data").is_dir() and (SHARED / "reference").is_dir()


@cache
def _read_csv(path: str) -> pd.DataFrame:
    return pd.read_csv(path)


def load_data(name: str) -> pd.DataFrame:
    """A fresh copy of ``shared/data/<name>.csv`` (read once per session)."""
    path = shared_dir() / "data" / f"{name}.csv"
    if not path.is_file():
        pytest.skip(f"data set {name!r} not found at {path}")
    return _read_csv(str(path)).copy()


def load_reference_fits() -> list[dict]:
    """The cases of ``shared/reference/lme4_fits.json``."""
    path = shared_dir() / "reference" / "lme4_fits.json"
    if not path.is_file():
        pytest.skip(f"lme4 reference results not found at {path}")
    with open(path) as fh:
        return json.load(fh)


@pytest.fixture
def shared() -> Path:
    return shared_dir()


@pytest.fixture
def shared_data():
    """``shared_data("sleepstudy")`` -> a fresh DataFrame."""
    return load_data
