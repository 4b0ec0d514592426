"""lme4 formula syntax: split a formula into its fixed part and random-effect terms.

The fixed part and the expression left of each bar are handed to formulaic; this
module only finds the bar terms ``(expr | g)`` / ``(expr || g)`` and expands the
grouping side (``a/b`` -> ``a`` and ``b:a``; ``a:b`` an interaction of factors).

>>> parts = parse_formula("Reaction ~ 1 + Days + (1 + Days | Subject)")
>>> parts.response, parts.fixed, [(t.expr, t.group) for t in parts.random]
('Reaction', '1 + Days', [('1 + Days', ('Subject',))])
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FormulaError", "RandomTermSpec", "FormulaParts", "parse_formula"]

_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$|^`[^`]+`$")


class FormulaError(ValueError):
    """A formula that cannot be parsed; the message quotes the offending part."""


@dataclass(frozen=True)
class RandomTermSpec:
    """One ``(expr | group)`` term after expansion.

    ``group`` holds the names of the factors whose interaction defines the
    grouping (one name for ``(1|g)``, two for ``(1|a:b)``).  ``label`` is the
    grouping factor's name as lme4 prints it.
    """

    expr: str
    group: tuple[str, ...]
    label: str
    source: str


@dataclass(frozen=True)
class FormulaParts:
    response: str
    fixed: str
    random: tuple[RandomTermSpec, ...]
    text: str


def _split_top(text: str, seps: str) -> list[tuple[str, str]]:
    """Split on separators that are outside parentheses; returns (sep, piece) pairs."""
    out, depth, start, sep = [], 0, 0, "+"
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unbalanced ')' in formula part {text!r}")
        elif depth == 0 and ch in seps:
            out.append((sep, text[start:i]))
            sep, start = ch, i + 1
    if depth != 0:
        raise FormulaError(f"unbalanced '(' in formula part {text!r}")
    out.append((sep, text[start:]))
    return out


def _find_bar(inner: str) -> tuple[str, str, bool] | None:
    """Return (lhs, rhs, double) for a top-level '|' or '||' inside a parenthesis."""
    depth = 0
    for i, ch in enumerate(inner):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            double = i + 1 < len(inner) and inner[i + 1] == "|"
            rhs = inner[i + 2:] if double else inner[i + 1:]
            return inner[:i], rhs, double
    return None


def _clean_name(name: str, where: str) -> str:
    name = name.strip()
    if not name or not _NAME.match(name):
        raise FormulaError(f"grouping factor {name!r} in {where!r} is not a column name")
    return name.strip("`")


def _expand_group(rhs: str, where: str) -> list[tuple[tuple[str, ...], str]]:
    """``a/b/c`` -> a, b:a, c:b:a (lme4's labels); ``a:b`` -> one interaction."""
    rhs = rhs.strip()
    if not rhs:
        raise FormulaError(f"random-effect term {where!r} has no grouping factor")
    if "+" in rhs or "*" in rhs or "|" in rhs:
        raise FormulaError(f"grouping side of {where!r} must be a factor, a:b or a/b, got {rhs!r}")
    nest = [part for part in rhs.split("/")]
    groups = []
    outer: list[str] = []
    for part in nest:
        names = [_clean_name(p, where) for p in part.split(":")]
        full = outer + names
        # lme4 labels the nested factor innermost first: batch/cask -> cask:batch.
        label = ":".join(names[::-1] + outer[::-1]) if outer else ":".join(names)
        groups.append((tuple(full), label))
        outer = full
    return groups


def _expand_uncorrelated(lhs: str, where: str) -> list[str]:
    """``(1 + x || g)`` -> ``(1|g) + (0 + x|g)``: one block per term of the expression."""
    pieces = [(s, p.strip()) for s, p in _split_top(lhs, "+-")]
    intercept = True
    terms = []
    for sep, piece in pieces:
        if not piece:
            continue
        if piece in ("0", "-1") or (sep == "-" and piece == "1"):
            intercept = False
        elif piece == "1":
            intercept = sep != "-"
        elif sep == "-":
            raise FormulaError(f"cannot remove {piece!r} inside {where!r}")
        else:
            terms.append(piece)
    out = ["1"] if intercept else []
    out += [f"0 + {t}" for t in terms]
    if not out:
        raise FormulaError(f"random-effect term {where!r} has no columns")
    return out


def parse_formula(formula: str) -> FormulaParts:
    """Parse an lme4 formula into response, fixed part and expanded random terms."""
    if not isinstance(formula, str):
        raise TypeError(f"formula must be a string, got {type(formula).__name__}")
    if formula.count("~") != 1:
        raise FormulaError(f"formula {formula!r} must have exactly one '~' (response ~ terms)")
    lhs, rhs = (s.strip() for s in formula.split("~"))
    if not lhs:
        raise FormulaError(f"formula {formula!r} has no response left of '~'")
    if not rhs:
        raise FormulaError(f"formula {formula!r} has nothing right of '~'")
    fixed_pieces: list[str] = []
    random: list[RandomTermSpec] = []
    for sep, piece in _split_top(rhs, "+-"):
        stripped = piece.strip()
        if not stripped:
            if sep == "-" or fixed_pieces:
                raise FormulaError(f"empty term in formula {formula!r}")
            continue
        bar = None
        if stripped.startswith("(") and stripped.endswith(")"):
            bar = _find_bar(stripped[1:-1])
        if bar is None:
            if "|" in stripped:
                raise FormulaError(f"random-effect term {stripped!r} must be in parentheses: (expr | group)")
            fixed_pieces.append(f"{sep} {stripped}" if fixed_pieces or sep == "-" else stripped)
            continue
        if sep == "-":
            raise FormulaError(f"cannot subtract a random-effect term: {stripped!r}")
        expr, grp, double = bar
        if not expr.strip():
            raise FormulaError(f"random-effect term {stripped!r} has nothing left of the bar")
        exprs = _expand_uncorrelated(expr, stripped) if double else [expr.strip()]
        for group, label in _expand_group(grp, stripped):
            for e in exprs:
                random.append(RandomTermSpec(expr=e, group=group, label=label, source=stripped))
    fixed = " ".join(fixed_pieces).strip()
    if fixed.startswith("-"):
        fixed = "1 " + fixed
    if not fixed:
        fixed = "1"
    if not random:
        raise FormulaError(
            f"formula {formula!r} has no random-effect term such as (1 | group); "
            "mixboot fits mixed models only")
    return FormulaParts(response=lhs.strip("` "), fixed=fixed, random=tuple(random), text=formula.strip())
