"""The documentation builds with warnings as errors, gallery included.

Runs ``python -m sphinx -W -b html`` on a copy of ``docs/`` in a temporary directory, so
the build's generated pages (API stubs, gallery output) never land in the checkout.
Skipped when the docs requirements (``pip install -e ".[docs]"``) are not installed.
"""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
NEEDED = ("sphinx", "pydata_sphinx_theme", "numpydoc", "sphinx_gallery", "matplotlib")
MISSING = [name for name in NEEDED if importlib.util.find_spec(name) is None]


@pytest.mark.skipif(bool(MISSING), reason=f"docs requirements not installed: {MISSING}")
def test_docs_build_without_warnings(tmp_path):
    source = tmp_path / "docs"
    shutil.copytree(
        DOCS,
        source,
        ignore=shutil.ignore_patterns(
            "_build", "generated", "auto_examples", "sg_execution_times.rst", "__pycache__"
        ),
    )
    out = tmp_path / "html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(source),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    for page in ("index", "getting_started", "coming_from", "api", "auto_examples/index"):
        assert (out / f"{page}.html").is_file(), page
    gallery = sorted((out / "_images").glob("sphx_glr_plot_*_001.png"))
    assert len(gallery) >= 8, [p.name for p in gallery]
