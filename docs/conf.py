"""Sphinx configuration of mixboot's documentation.

Build: ``python -m sphinx -W -b html docs docs/_build/html`` from the repository root
(``pip install -e ".[docs]"`` first).  The gallery scripts in ``gallery/`` run at build
time, so every figure is drawn by the installed mixboot.
"""
import warnings

import matplotlib

matplotlib.use("Agg")

import mixboot  # noqa: E402  (the installed package: the docs describe what is installed)

project = "mixboot"
author = "the mixboot developers"
copyright = "mixboot developers"
version = release = mixboot.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "gallery/README.rst"]
root_doc = "index"
default_role = "literal"

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks = set()
numpydoc_xref_param_type = False

warnings.filterwarnings("ignore", category=UserWarning, message="Matplotlib is currently using agg")

sphinx_gallery_conf = {
    "examples_dirs": "gallery",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    "show_memory": False,
    "min_reported_time": 1,
}

html_theme = "pydata_sphinx_theme"
html_title = f"mixboot {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_show_sourcelink = False
