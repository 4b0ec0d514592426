"""lme4 formula syntax: split a formula into its fixed part and random-effect terms.

The fixed part and the expression left of each bar are handed to formulaic; this
module finds the bar terms ``(expr | g)`` / ``(expr || g)`` and expands the
grouping side (``a/b`` -> ``a`` and ``b:a``; ``a:b`` an interaction of factors;
``factor(g)`` is ``g``).  :func:`translate` writes R's expressions as formulaic's
Python with R's meaning (``I(Days^2)`` a power, ``factor(g)`` / ``as.factor(g)``
categorical, ``sqrt``, ``abs``, ``as.numeric``, backticked names, ``offset(x)``
taken out) and keeps R's spelling of each factor for lme4's coefficient names.

>>> parts = parse_formula("Reaction ~ 1 + Days + (1 + Days | Subject)")
>>> parts.response, parts.fixed, [(t.expr, t.group) for t in parts.random]
('Reaction', '1 + Days', [('1 + Days', ('Subject',))])
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = [
    "FormulaError",
    "RandomTermSpec",
    "FormulaParts",
    "Translated",
    "parse_formula",
    "translate",
]

_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$|^`[^`]+`$")


class FormulaError(ValueError):
    """A formula that cannot be parsed; the message quotes the offending part.

    Examples
    --------
    >>> import mixboot as mb
    >>> try:
    ...     mb.fit("Reaction ~ Days + (Days | )", data=mb.datasets.load("reaction"))
    ... except mb.FormulaError as err:
    ...     print("FormulaError")
    FormulaError
    """


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
            rhs = inner[i + 2 :] if double else inner[i + 1 :]
            return inner[:i], rhs, double
    return None


def _clean_name(name: str, where: str) -> str:
    name = name.strip()
    # A grouping factor is a factor already: (1 | factor(g)) is (1 | g).
    m = re.fullmatch(r"(?:as\.)?factor\(\s*([^()]+?)\s*\)", name)
    if m:
        name = m.group(1)
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
                raise FormulaError(
                    f"random-effect term {stripped!r} must be in parentheses: (expr | group)"
                )
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
            "mixboot fits mixed models only"
        )
    return FormulaParts(
        response=lhs.strip("` "), fixed=fixed, random=tuple(random), text=formula.strip()
    )


# --------------------------------------------------------------------------- R expressions
# The fixed part, the left side of a bar and the response are R expressions.  They
# are tokenized here and written out twice: as Python code for formulaic (``^`` a
# power, ``factor(x)`` a ``C(x)``) and as R prints them (lme4's coefficient names).

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?L?)
  | (?P<name>[A-Za-z.][A-Za-z0-9._]*|_[A-Za-z0-9._]*)
  | (?P<bq>`[^`]+`)
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<py>\{[^{}]*\})
  | (?P<op>%[^%]*%|\*\*|==|!=|<=|>=|&&|\|\||[-+*/^:<>!&|=~(),\[\]])
""",
    re.VERBOSE,
)

# R function -> (Python spelling for formulaic, how it may be used)
_FUNCTIONS = {
    "I": "I",
    "scale": "scale",
    "center": "center",
    "poly": "poly",
    "log": "log",
    "log10": "log10",
    "log2": "log2",
    "exp": "exp",
    "sqrt": "np.sqrt",
    "abs": "np.abs",
    "factor": "C",
    "as.factor": "C",
    "C": "C",
    "as.numeric": "np.float64",
    "Q": "Q",
    "offset": "offset",
}
# formulaic's own spellings, passed on as they are: C(g, Treatment('b')) and the like.
_FORMULAIC = {
    "Treatment",
    "Sum",
    "Helmert",
    "Poly",
    "Diff",
    "contr.treatment",
    "contr.sum",
    "contr.helmert",
    "contr.poly",
    "standardize",
}
_KNOWN = (
    "I(), scale(), center(), poly(x, k), factor(), as.factor(), as.numeric(), log(), "
    "log10(), log2(), exp(), sqrt(), abs(), offset(), C(), Q('name') and `backticks`"
)
_CONSTANTS = {"TRUE": "True", "FALSE": "False", "pi": "np.pi", "Inf": "np.inf"}
_R_SPACED = {"+", "-", "*", "==", "!=", "<", ">", "<=", ">=", "&", "|", "&&", "||", "=", "~"}
_PY_OPS = {"^": "**", "%%": "%", "%/%": "//", "!": "~", "&&": "&", "||": "|"}


@dataclass(frozen=True)
class Translated:
    """An R expression as Python for formulaic, with the R names of its factors.

    ``names`` maps each factor's Python text (spaces removed) to its name as R
    prints it; ``variables`` are the data columns it reads; ``offsets`` the R text
    of ``offset(...)`` terms (only where they were allowed and taken out).
    """

    python: str
    names: dict
    variables: tuple
    offsets: tuple = ()


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FormulaError(f"cannot read {text[pos:]!r} in formula part {text!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def _closing(toks, i: int, text: str) -> int:
    """Index of the ')' matching the '(' at ``toks[i]``."""
    depth = 0
    for j in range(i, len(toks)):
        if toks[j] == ("op", "("):
            depth += 1
        elif toks[j] == ("op", ")"):
            depth -= 1
            if depth == 0:
                return j
    raise FormulaError(f"unbalanced '(' in formula part {text!r}")


def _r_text(toks) -> str:
    """The tokens as R's deparse prints them (spaces around + - * ==, none around ^ / :)."""
    out, prev = [], None
    for kind, tok in toks:
        unary = tok in ("-", "+", "!") and (
            prev is None or (prev[0] == "op" and prev[1] not in (")", "]"))
        )
        if kind == "op" and tok in _R_SPACED and not unary:
            out.append(f" {tok} ")
        elif kind == "op" and tok == ",":
            out.append(", ")
        elif kind == "op" and tok.startswith("%") and tok not in ("%%", "%/%"):
            out.append(f" {tok} ")
        else:
            out.append(tok)
        prev = (kind, tok)
    return "".join(out).strip()


def _py_code(toks, text: str, variables: list, where: str) -> str:
    """Tokens inside a call: R arithmetic as Python (``^`` -> ``**``), names checked."""
    out = []
    for k, (kind, tok) in enumerate(toks):
        nxt = toks[k + 1] if k + 1 < len(toks) else None
        if kind == "name" and nxt == ("op", "("):
            out.append(_function(tok, text))
        elif kind == "name" and nxt == ("op", "="):
            out.append(tok)  # a keyword argument: poly(x, degree = 2)
        elif kind == "name" and tok.startswith(("contr.", "np.")):
            out.append(tok)
        elif kind == "name" and tok in _CONSTANTS:
            out.append(_CONSTANTS[tok])
        elif kind == "name" and tok in ("True", "False", "None"):
            out.append(tok)  # Python's spelling, from a translated text
        elif kind == "name":
            variables.append(tok)
            out.append(f"Q({tok!r})" if "." in tok else tok)
        elif kind == "bq":
            variables.append(tok[1:-1])
            out.append(f"Q({tok[1:-1]!r})")
        elif kind == "py":
            out.append(tok)  # formulaic's {python} block, as it is
            variables.extend(_block_names(tok))
        elif kind == "num":
            out.append(tok.rstrip("L"))
        elif kind == "op":
            out.append(
                f" {_PY_OPS.get(tok, tok)} "
                if tok not in "(),[]"
                else tok + (" " if tok == "," else "")
            )
        else:
            out.append(tok)
    code = "".join(out)
    if "Q(" in code:
        for m in re.finditer(r"Q\((['\"])(.*?)\1\)", code):
            variables.append(m.group(2))
    return code


def _block_names(block: str) -> list[str]:
    """Column names read by a formulaic ``{python}`` block: names that are not called,
    not attributes and not Python's own."""
    import builtins
    import keyword

    names = re.findall(r"(?<![\w.'\"])([A-Za-z_]\w*)(?!\s*[\w(.])", block)
    return [n for n in names if not keyword.iskeyword(n) and not hasattr(builtins, n)]


def _function(name: str, text: str) -> str:
    if name.startswith("np.") or name in _FORMULAIC:
        return name
    if name not in _FUNCTIONS:
        raise FormulaError(
            f"unknown function {name!r} in the formula part {text!r}; mixboot understands "
            f"{_KNOWN}. Compute other transformations in Python as a new column "
            f"(e.g. data['z'] = np.some_function(data['x'])) and use that column"
        )
    return _FUNCTIONS[name]


@functools.lru_cache(maxsize=256)
def translate(text: str, *, allow_offset: bool = False) -> Translated:
    """An R formula part (``1 + I(Days^2) + factor(g)``) as formulaic's Python formula.

    Formula operators (``+ - * / : ^``) stay as they are; each call is one factor
    whose arguments are R arithmetic.

    >>> t = translate("1 + I(Days^2) + factor(g)")
    >>> t.python, sorted(t.names.values()), t.variables
    ('1 + I(Days ** 2) + C(g)', ['I(Days^2)', 'factor(g)'], ('Days', 'g'))
    """
    toks = _tokens(text)
    out: list[str] = []
    names: dict = {}
    variables: list = []
    offsets: list = []
    i = 0
    while i < len(toks):
        kind, tok = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if kind == "name" and nxt == ("op", "("):
            end = _closing(toks, i + 1, text)
            call = toks[i : end + 1]
            rname = _r_text(call)
            if tok == "offset":
                prev = out[-1].strip() if out else "+"
                after = toks[end + 1] if end + 1 < len(toks) else None
                if (
                    not allow_offset
                    or prev not in ("+", "")
                    or after not in (None, ("op", "+"), ("op", "-"))
                ):
                    raise FormulaError(
                        f"offset() must be a term of its own in the fixed part, got {text!r}"
                    )
                inner = _py_code(toks[i + 2 : end], text, variables, rname)
                offsets.append((rname, inner))
                if out:
                    out.pop()  # the '+' before the offset
                elif after == ("op", "+"):
                    end += 1  # offset first: drop the '+' after it
                i = end + 1
                continue
            fn = _function(tok, text)
            args = _py_code(toks[i + 2 : end], text, variables, rname)
            if tok == "Q":
                variables.extend(t[1:-1] for k, t in toks[i + 2 : end] if k == "str")
            py = f"{fn}({args})"
            if tok != "C":  # C(g, contr.sum) keeps its own naming
                names[re.sub(r"\s+", "", py)] = rname
            out.append(py)
            i = end + 1
            continue
        if kind == "py":
            variables.extend(_block_names(tok))
            out.append(tok)
        elif kind == "name":
            variables.append(tok)
            out.append(f"`{tok}`" if "." in tok else tok)
        elif kind == "bq":
            variables.append(tok[1:-1])
            out.append(tok)
            if not re.fullmatch(r"[A-Za-z.][A-Za-z0-9._]*", tok[1:-1]):
                names[re.sub(r"\s+", "", tok[1:-1])] = tok  # R prints `odd name`
        elif kind == "op" and tok in "+-*/:^~" or tok.startswith("%"):
            out.append(f" {tok} " if tok != ":" else ":")
        else:
            out.append(tok)
        i += 1
    python = re.sub(r"\s+", " ", "".join(out)).strip()
    if offsets and not python:
        python = "1"
    python = re.sub(r"^\+\s*", "", python)
    return Translated(
        python=python,
        names=names,
        variables=tuple(dict.fromkeys(variables)),
        offsets=tuple(offsets),
    )
