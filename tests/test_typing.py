"""Every public function and method is fully annotated (issue 11, part 6).

Walks the public API -- the names in ``mixboot.__all__``, the public modules
``mixboot.checks``, ``mixboot.design``, ``mixboot.datasets`` and ``mixboot.family``,
and the result and model classes that public functions return (``GLMMResult``,
``GeneralizedLinearMixedModel``, ``LRTTable``, ``PBTest``) -- and checks that every
parameter (other than ``self``/``cls``) and every return carries an annotation.  For
classes this covers the public methods, classmethods, staticmethods and properties
defined in mixboot, including those attached after the class definition (e.g.
``LMMResult.predict``).  ``mypy mixboot`` (tests/test_lint.py) checks that the
annotations agree with the code.
"""

from __future__ import annotations

import inspect
import types

import pytest

import mixboot
from mixboot import checks, datasets, design, family
from mixboot.compare import LRTTable, PBTest
from mixboot.glmm import GeneralizedLinearMixedModel
from mixboot.glmm_result import GLMMResult

# Things that cannot carry a complete annotation, each with its reason.  Keys are the
# qualified names reported by `_public_callables`.  Keep this list short.
ALLOWED: dict[str, str] = {}

EXTRA_CLASSES = (GLMMResult, GeneralizedLinearMixedModel, LRTTable, PBTest)


def _is_mixboot(obj: object) -> bool:
    return (getattr(obj, "__module__", None) or "").startswith("mixboot")


def _members(cls: type) -> list[tuple[str, object]]:
    """Public functions and properties of ``cls`` (own or inherited from mixboot bases)."""
    out = []
    for klass in cls.__mro__:
        if not _is_mixboot(klass):
            continue
        for name, attr in vars(klass).items():
            if name.startswith("_") or any(name == n for n, _ in out):
                continue
            if isinstance(attr, property):
                out.append((name, attr.fget))
            elif isinstance(attr, (staticmethod, classmethod)):
                out.append((name, attr.__func__))
            elif isinstance(attr, types.FunctionType) and _is_mixboot(attr):
                out.append((name, attr))
    return out


def _public_callables() -> dict[str, object]:
    found: dict[str, object] = {}
    classes: list[type] = list(EXTRA_CLASSES)
    for module in (mixboot, checks, design, datasets, family):
        for name in module.__all__:
            if name.startswith("_"):
                continue
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType):
                continue
            if inspect.isclass(obj):
                classes.append(obj)
            elif callable(obj):
                found[f"{module.__name__}.{name}"] = obj
    for cls in classes:
        for name, fn in _members(cls):
            found[f"{cls.__module__}.{cls.__qualname__}.{name}"] = fn
    return found


def _missing(fn: object) -> list[str]:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    params = list(sig.parameters.values())
    missing = []
    for i, p in enumerate(params):
        if i == 0 and p.name in ("self", "cls"):
            continue
        if p.annotation is inspect.Parameter.empty:
            missing.append(p.name)
    if sig.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


PUBLIC = _public_callables()


def test_walk_finds_the_api():
    # Guards the walker itself: a change that made it find nothing would pass vacuously.
    for name in (
        "mixboot.fit",
        "mixboot.bootMer",
        "mixboot.result.LMMResult.predict",
        "mixboot.result.LMMResult.coef_table",
        "mixboot.result.LMMResult.spec",
        "mixboot.bootstrap.result.BootResult.confint",
        "mixboot.glmm_result.GLMMResult.summary",
        "mixboot.family.Link.linkfun",
        "mixboot.checks.density",
        "mixboot.design.crossed",
        "mixboot.datasets.load",
    ):
        assert name in PUBLIC, name
    assert len(PUBLIC) > 100


def test_allow_list_is_current():
    stale = [name for name in ALLOWED if name not in PUBLIC or not _missing(PUBLIC[name])]
    assert not stale, f"entries of ALLOWED that are gone or now annotated: {stale}"


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_fully_annotated(name):
    if name in ALLOWED:
        pytest.skip(ALLOWED[name])
    missing = _missing(PUBLIC[name])
    assert not missing, f"{name}: no annotation for {', '.join(missing)}"
