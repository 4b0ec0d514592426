"""The frozen model specification: response, fixed-effects matrix and random terms.

``build_spec`` turns a formula and a data frame into a :class:`ModelSpec`; it
validates the input at the door (missing columns, non-numeric, infinite or constant
response, missing values, degenerate grouping factors, aliased fixed-effect columns)
and keeps the formulaic specs needed to rebuild the same coding on new data.
"""

from __future__ import annotations

import functools
import hashlib
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp

from .family import prepare_response
from .formula import FormulaError, FormulaParts, Translated, parse_formula, translate
from .terms import ReTerm

__all__ = ["ModelSpec", "build_spec", "groups_formula", "z_columns", "zt_columns"]

_CONTRASTS = {
    "sum": "contr.sum",
    "treatment": "contr.treatment",
    "helmert": "contr.helmert",
    "poly": "contr.poly",
}


class RankDeficiencyWarning(UserWarning):
    """Aliased fixed-effect columns were dropped, as lme4 does.

    Examples
    --------
    >>> import warnings
    >>> import mixboot as mb
    >>> df = mb.datasets.load("reaction")
    >>> df["Hours"] = 24 * df["Days"]
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     r = mb.fit("Reaction ~ Days + Hours + (1 | Subject)", data=df)
    >>> any(issubclass(w.category, mb.RankDeficiencyWarning) for w in caught)
    True
    >>> list(r.fe_params.index)
    ['(Intercept)', 'Days']
    """


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """Everything about a model that does not depend on parameter values."""

    formula: str
    parts: FormulaParts
    response: str
    y: np.ndarray = field(repr=False)
    X: np.ndarray = field(repr=False)
    fe_names: tuple[str, ...]
    dropped: tuple[str, ...]
    terms: tuple[ReTerm, ...]
    contrasts: dict
    fixed_formula: str = field(repr=False)
    kept_columns: np.ndarray = field(repr=False)
    frame: _Columns = field(repr=False)
    _specs: dict = field(default_factory=dict, repr=False)
    #: the offset of the linear predictor (``offset(x)`` terms), already taken out of ``y``;
    #: None without one.  Fitted values and simulations on the response scale add it back.
    offset: np.ndarray | None = field(default=None, repr=False)
    #: GLMMs: prior weights (binomial: trials times any case weights) and trial
    #: counts; ``y`` then holds proportions (binomial) or counts (Poisson).  None for an LMM.
    prior_weights: np.ndarray | None = field(default=None, repr=False)
    trials: np.ndarray | None = field(default=None, repr=False)

    @property
    def data(self) -> pd.DataFrame:
        """The rows and columns the model uses (rows with missing values dropped)."""
        return self.frame.data

    # formulaic's specs rebuild the same coding on new data; made on first use
    # (simple numeric designs are built without formulaic, see _simple_matrix).
    @property
    def fixed_spec(self):
        """formulaic ModelSpec of the fixed-effects matrix (all columns, before aliasing)."""
        if "fixed" not in self._specs:
            self._specs["fixed"] = _formulaic(self.fixed_formula, self.data).model_spec
        return self._specs["fixed"]

    @property
    def term_specs(self) -> tuple:
        """formulaic ModelSpecs of the random terms' model matrices, in term order."""
        if "terms" not in self._specs:
            self._specs["terms"] = tuple(
                _formulaic(translate(t.expr).python, self.data).model_spec for t in self.terms
            )
        return self._specs["terms"]

    def offset_of(self, newdata: pd.DataFrame) -> np.ndarray | None:
        """The model's ``offset(...)`` terms evaluated on ``newdata`` (None without any):
        what predictions and simulations for new data add to ``X beta + Z b``."""
        offsets = translate(self.parts.fixed, allow_offset=True).offsets
        total = None
        for rname, code in offsets:
            off = _evaluate(Translated(python=code, names={}, variables=()), newdata, rname)
            total = off if total is None else total + off
        return total

    @property
    def n(self) -> int:
        return self.y.shape[0]

    @property
    def p(self) -> int:
        return self.X.shape[1]

    @property
    def q(self) -> int:
        return sum(t.q for t in self.terms)

    @property
    def n_theta(self) -> int:
        return sum(t.n_theta for t in self.terms)

    @property
    def theta_names(self) -> tuple[str, ...]:
        return tuple(name for t in self.terms for name in t.theta_names)

    @property
    def theta_slices(self) -> tuple[slice, ...]:
        out, start = [], 0
        for t in self.terms:
            out.append(slice(start, start + t.n_theta))
            start += t.n_theta
        return tuple(out)

    @property
    def lower_bounds(self) -> np.ndarray:
        return np.concatenate([t.lower_bounds for t in self.terms])

    @property
    def theta_start(self) -> np.ndarray:
        return np.concatenate([t.theta_start for t in self.terms])

    def canonical_theta(self, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        return np.concatenate(
            [t.canonical(theta[..., s]) for t, s in zip(self.terms, self.theta_slices)], axis=-1
        )

    def z_matrix(self) -> sp.csr_matrix:
        """Sparse Z (n x q), terms in order, columns level-major within a term."""
        return z_from_terms(self.terms, self.n)

    @property
    def ngroups(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.terms:
            out.setdefault(t.label, t.nlevels)
        return out

    @property
    def fingerprint(self) -> str:
        """A hash of the formula and the numbers the fit sees; parts of a bootstrap must share it."""
        h = hashlib.sha256(self.formula.encode())
        for arr in (self.y, self.X, self.prior_weights, self.offset):
            if arr is None:
                continue
            h.update(np.ascontiguousarray(arr).tobytes())
        for t in self.terms:
            h.update(t.label.encode())
            h.update(np.ascontiguousarray(t.codes).tobytes())
            h.update(np.ascontiguousarray(t.zraw).tobytes())
        return h.hexdigest()[:16]


def check_theta_start(start, spec: ModelSpec) -> np.ndarray:
    """A user's starting theta, validated against the model (lme4's order and bounds)."""
    start = np.asarray(start, dtype=float).ravel()
    if start.shape != (spec.n_theta,):
        raise ValueError(
            f"start must have {spec.n_theta} theta values {spec.theta_names}, got {start.size}"
        )
    if np.any(start < spec.lower_bounds):
        raise ValueError(
            "start has negative values on the diagonal of a relative covariance factor"
        )
    return start


def z_from_terms(terms, n: int) -> sp.csr_matrix:
    """Sparse Z (n x q): every row has the same number of nonzeros, so CSR is built directly."""
    cols, vals, off = [], [], 0
    for t in terms:
        cols.append(off + t.codes[:, None] * t.p + np.arange(t.p)[None, :])
        vals.append(t.zraw)
        off += t.q
    per_row = sum(t.p for t in terms)
    indices = np.concatenate(cols, axis=1).ravel().astype(np.int32 if off < 2**31 else np.int64)
    indptr = np.arange(0, n * per_row + 1, per_row, dtype=indices.dtype)
    data = np.concatenate(vals, axis=1).ravel().astype(float)
    return sp.csr_matrix((data, indices, indptr), shape=(n, off))


def zt_columns(terms, Y: np.ndarray) -> np.ndarray:
    """Z'Y for the columns of Y (n, B), as a (B, q) array.

    ``np.add.at`` adds the rows one at a time, in order, so a column's sums do
    not depend on how many columns come with it (a sparse product over all the
    columns at once would give other bits for other widths).
    """
    B = Y.shape[1]
    parts = []
    for t in terms:
        acc = np.zeros((t.nlevels, t.p, B))
        for a in range(t.p):
            np.add.at(acc[:, a, :], t.codes, t.zraw[:, a, None] * Y)
        parts.append(acc.reshape(t.q, B))
    return np.concatenate(parts, axis=0).T


def z_columns(terms, b: np.ndarray, n: int) -> np.ndarray:
    """Z b for the columns of b (q, B), as an (n, B) array, element by element.

    Each entry is a fixed sequence of products and sums over the terms' columns,
    the same whatever the number of columns.
    """
    out = np.zeros((n, b.shape[1]))
    off = 0
    for t in terms:
        bt = b[off : off + t.q].reshape(t.nlevels, t.p, -1)
        for a in range(t.p):
            out += t.zraw[:, a, None] * bt[t.codes, a, :]
        off += t.q
    return out


def groups_formula(formula: str, groups) -> str:
    """The interlace guide's shorthand: ``groups="subject"`` adds ``(1|subject)``; a list adds one per name."""
    if isinstance(groups, str):
        groups = [groups]
    if (
        not isinstance(groups, (list, tuple))
        or not groups
        or not all(isinstance(g, str) and g for g in groups)
    ):
        raise TypeError(f"groups must be a column name or a list of column names, got {groups!r}")
    if "|" in formula:
        raise FormulaError("give random effects either in the formula or with groups=, not both")
    return formula + "".join(f" + (1 | {g})" for g in groups)


def _lme4_name(name: str, sum_levels: dict, rnames: dict | None = None) -> str:
    """formulaic column names -> lme4's: Intercept -> (Intercept), f[T.b] -> fb.

    ``rnames`` maps a factor's Python text (spaces removed) to its R spelling
    (``I(Days ** 2)`` -> ``I(Days^2)``, ``C(g)`` from ``factor(g)`` -> ``factor(g)``).
    """
    if name == "Intercept":
        return "(Intercept)"
    rnames = rnames or {}
    parts = []
    for piece in name.split(":"):
        m = re.fullmatch(r"(.*)\[(?:T\.)?(.*)\]", piece)
        if m is None:
            rname = rnames.get(re.sub(r"\s+", "", piece), piece)
            if rname.startswith("I(") and re.search(r"[<>!=]=?|&|\|", rname):
                rname += "TRUE"  # a logical I(): R codes it as a factor
            parts.append(rname)
            continue
        var, level = m.groups()
        rname = rnames.get(re.sub(r"\s+", "", var))
        if rname is not None:
            if re.fullmatch(r"-?\d+\.0", level) and not rname.startswith("poly("):
                level = level[:-2]  # R prints the level 2, not 2.0
            level = {"True": "TRUE", "False": "FALSE"}.get(level, level)
            parts.append(f"{rname}{level}")
            continue
        cm = re.fullmatch(r"C\(\s*([^,\s]+)\s*(?:,.*)?\)", var)
        base = cm.group(1) if cm else var
        if level.startswith("S.") and base in sum_levels:
            level = str(sum_levels[base].index(level[2:]) + 1)
        elif level == "True":
            level = "TRUE"
        elif level == "False":
            level = "FALSE"
        parts.append(f"{base}{level}")
    return ":".join(parts)


def _apply_contrasts(fixed: str, contrasts: dict, data: pd.DataFrame) -> tuple[str, dict]:
    sum_levels = {}
    for col, kind in contrasts.items():
        if col not in data.columns:
            raise ValueError(f"contrasts names column {col!r}, which is not in the data")
        if kind not in _CONTRASTS:
            raise ValueError(
                f"contrasts[{col!r}] must be one of {sorted(_CONTRASTS)}, got {kind!r}"
            )
        pattern = rf"(?<![\w.])(?<!C\()(?<!Q\(['\"]){re.escape(col)}(?![\w.(])"
        if not re.search(pattern, fixed):
            continue
        fixed = re.sub(pattern, f"C({col}, {_CONTRASTS[kind]})", fixed)
    # Sum coding asked for in the formula itself is named as lme4 names it too (recipe1).
    for col in re.findall(r"C\(\s*([A-Za-z_.][\w.]*)\s*,\s*contr\.sum\b", fixed):
        if col in data.columns and col not in sum_levels:
            values = data[col]
            levels = (
                list(values.cat.categories)
                if isinstance(values.dtype, pd.CategoricalDtype)
                else sorted(pd.unique(values.dropna()))
            )
            sum_levels[col] = [str(v) for v in levels]
    return fixed, sum_levels


def _grouping(data: pd.DataFrame, names: tuple[str, ...], label: str):
    """Integer codes and sorted level labels of the interaction of ``names``."""
    codes_each, levels_each = [], []
    for name in names:
        col = data[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            col = col.cat.remove_unused_categories()
            codes, uniques = col.cat.codes.to_numpy(), list(col.cat.categories)
        else:
            codes, uniques = pd.factorize(col, sort=True)
            uniques = list(uniques)
        codes_each.append(np.asarray(codes, dtype=np.int64))
        levels_each.append(uniques)
    if len(names) == 1:
        return codes_each[0], tuple(levels_each[0])
    key = np.zeros(len(data), dtype=np.int64)
    for codes, uniques in zip(codes_each, levels_each):
        key = key * len(uniques) + codes
    used, codes = np.unique(key, return_inverse=True)
    levels = []
    for k in used:
        idx = []
        for uniques in reversed(levels_each):
            idx.append(int(k % len(uniques)))
            k //= len(uniques)
        parts = [str(u[i]) for u, i in zip(levels_each, reversed(idx))]
        # lme4's label orders the factors as the label does (cask:batch).
        order = label.split(":")
        by_name = dict(zip(names, parts))
        levels.append(
            ":".join(by_name.get(o, "") for o in order)
            if set(order) == set(names)
            else ":".join(parts)
        )
    return codes.astype(np.int64), tuple(levels)


def _numeric_matrix(mm, what: str) -> np.ndarray:
    arr = np.asarray(mm, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} has non-finite values (inf) after coding")
    return arr


def _check_response(name: str, y: np.ndarray, *, constant_ok: bool = False) -> None:
    """Refuse a response no fit can use (inf would only surface as NaN estimates)."""
    bad = ~np.isfinite(y)
    if bad.any():
        raise ValueError(
            f"response {name!r} has non-finite values (inf) in {int(bad.sum())} row(s)"
        )
    if not constant_ok and y.size and np.all(y == y[0]):
        raise ValueError(
            f"response {name!r} is constant (every value is {float(y[0])!r}): "
            "a mixed model cannot be fitted"
        )


def _drop_aliased(X: np.ndarray, names: list[str]) -> np.ndarray:
    """Indices of a maximal set of linearly independent columns, earlier columns first.

    As R's ``qr(X, tol = 1e-7)`` that lme4 uses: a column is aliased when what is
    left of it after projecting out the columns before it is below 1e-7 of its
    norm, so of ``x`` and ``x2 = 2 * x`` the later ``x2`` is dropped.  (Pivoting by
    norm would instead keep whichever column is longest.)  The first aliased
    column is removed and the QR redone, so that the direction of its rounding
    residue cannot eat into the columns after it: one QR per dropped column.
    """
    norms = np.linalg.norm(X, axis=0)
    keep = np.arange(X.shape[1])
    while keep.size:
        R = scipy.linalg.qr(X[:, keep], mode="r")[0]
        d = np.zeros(keep.size)
        k = min(R.shape)
        d[:k] = np.abs(np.diag(R[:k, :k]))
        bad = np.flatnonzero(~(d > 1e-7 * norms[keep]))
        if bad.size == 0:
            break
        keep = np.delete(keep, bad[0])
    return keep


def build_spec(
    formula: str,
    data,
    *,
    contrasts=None,
    fit_response: bool = True,
    family=None,
    weights=None,
    offset=None,
) -> ModelSpec:
    """The frozen specification of ``formula`` on ``data``.

    ``fit_response=False`` for a model that only simulates (``mb.model``): its
    response column is a placeholder, so a constant one is not an error.

    ``family`` (a :class:`mixboot.family.Family`) makes a GLMM's specification:
    the response may be lme4's ``cbind(successes, failures)``, a two-level
    factor or bool; ``weights`` (a column name or array) are prior weights
    (binomial: trials); an offset stays in the linear predictor; a grouping
    factor may have a level per observation (as glmer allows).  ``offset`` (a
    column name or array) adds to any ``offset(...)`` term of the formula.
    """
    if not isinstance(data, pd.DataFrame):
        try:
            data = pd.DataFrame(data)
        except Exception as exc:  # noqa: BLE001 - any failure means "not tabular"
            raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}") from exc
    if len(data) == 0:
        raise ValueError("data is empty: no rows to fit")
    contrasts = dict(contrasts or {})
    parts = parse_formula(formula)
    # R expressions -> formulaic's Python (I(Days^2) -> I(Days ** 2), factor(g) -> C(g)).
    fixed_t = translate(parts.fixed, allow_offset=True)
    term_t = [translate(t.expr) for t in parts.random]
    cbind = _cbind_parts(parts.response) if family is not None else None
    if family is None and fit_response and _cbind_parts(parts.response) is not None:
        raise ValueError(
            f"a cbind(successes, failures) response ({parts.response!r}) needs "
            "family='binomial' (a GLMM); a linear mixed model needs one numeric "
            "response column"
        )
    plain_response = cbind is None and parts.response in data.columns
    if cbind is not None:
        resp_t = [None if e in data.columns else translate(f"I({e})") for e in cbind]
    else:
        resp_t = None if plain_response else translate(parts.response)
    fixed, sum_levels = _apply_contrasts(fixed_t.python, contrasts, data)
    rnames = dict(fixed_t.names)
    for tt in term_t:
        rnames.update(tt.names)
    try:
        fixed_vars = _required_variables(fixed) | set(fixed_t.variables)
        term_vars = [_required_variables(tt.python) for tt in term_t]
        for expr in (fixed, *(tt.python for tt in term_t)):
            _parsed(expr)
    except Exception as exc:  # noqa: BLE001 - formulaic's parser errors vary
        raise FormulaError(f"cannot parse formula {formula!r}: {exc}") from exc
    if cbind is not None:
        resp_vars = [v for e, t in zip(cbind, resp_t) for v in ([e] if t is None else t.variables)]
    else:
        resp_vars = [parts.response] if plain_response else list(resp_t.variables)
    for arg, value in (("weights", weights), ("offset", offset)):
        if isinstance(value, str) and value not in data.columns:
            raise KeyError(
                f"{arg}={value!r} is not a column of the data (columns: {list(data.columns)})"
            )
    extra = [a for a in (weights, offset) if isinstance(a, str)]
    used = [*resp_vars, *sorted(fixed_vars), *extra]
    for t, tv in zip(parts.random, term_vars):
        used += sorted(tv) + list(t.group)
    used = list(dict.fromkeys(used))
    missing = [c for c in used if c not in data.columns]
    if missing:
        raise KeyError(
            f"column(s) {missing} named in formula {formula!r} are not in the data "
            f"(columns: {list(data.columns)})"
        )
    # CoW (pandas >= 3): a shallow copy does not see later edits of the caller's frame.
    source = data.copy(deep=False)
    series = {c: source[c] for c in used}
    if plain_response and family is None:
        resp = series[parts.response]
        if not (pd.api.types.is_numeric_dtype(resp) or pd.api.types.is_bool_dtype(resp)):
            raise TypeError(f"response {parts.response!r} must be numeric, got dtype {resp.dtype}")
    missing_by_col = {
        c: m
        for c, m in ((c, _missing(sr)) for c, sr in series.items())
        if m is not None and m.any()
    }
    keep_rows = None
    if missing_by_col:
        na = np.logical_or.reduce(list(missing_by_col.values()))
        warnings.warn(
            f"dropped {int(na.sum())} of {len(source)} rows with missing values "
            f"in column(s) {list(missing_by_col)}",
            UserWarning,
            stacklevel=3,
        )
        if na.all():
            raise ValueError("every row has a missing value in a column the formula uses")
        keep_rows = ~na
        series = {c: sr[keep_rows].reset_index(drop=True) for c, sr in series.items()}
    frame = _Columns(series, source, keep_rows, used)
    prior_weights = trials = None
    if family is not None:
        y, prior_weights, trials = _glmm_response(
            parts.response,
            cbind,
            resp_t,
            frame,
            family,
            _by_row(weights, series, keep_rows, "weights"),
        )
    elif plain_response:
        y = series[parts.response].to_numpy(dtype=float)
    else:
        y = _evaluate(resp_t, frame, f"response {parts.response!r}")
    off_arg = _by_row(offset, series, keep_rows, "offset")
    offset = None if off_arg is None else np.asarray(off_arg, dtype=float)
    for rname, code in fixed_t.offsets:
        off = _evaluate(Translated(python=code, names={}, variables=()), frame, rname)
        offset = off if offset is None else offset + off
    n = len(y)
    if family is None:
        _check_response(parts.response, y, constant_ok=not fit_response)
    if offset is not None:
        if offset.shape != (n,) or not np.all(np.isfinite(offset)):
            raise ValueError(f"the offset must be {n} finite values, one per row")
        if family is None:
            # An LMM with an offset is the LMM of y - offset; fitted values add it back.
            y = y - offset

    specs = {}
    try:
        mmx = _model_matrix(fixed, frame)
    except Exception as exc:  # noqa: BLE001
        raise FormulaError(f"cannot build the fixed-effects matrix for {fixed!r}: {exc}") from exc
    X_all = _numeric_matrix(mmx, "fixed-effects matrix")
    names_all = [_lme4_name(c, sum_levels, rnames) for c in mmx.columns]
    keep = _drop_aliased(X_all, names_all)
    dropped = tuple(nm for i, nm in enumerate(names_all) if i not in set(keep.tolist()))
    if dropped:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column(s): {list(dropped)}",
            RankDeficiencyWarning,
            stacklevel=3,
        )
    X = X_all[:, keep]

    terms, term_specs = [], []
    # Terms often repeat an expression ("1", or the fixed part): build each once.
    built = {fixed: mmx}
    for t, tt in zip(parts.random, term_t):
        try:
            mmz = built.get(tt.python)
            if mmz is None:
                mmz = built[tt.python] = _model_matrix(tt.python, frame)
        except Exception as exc:  # noqa: BLE001
            raise FormulaError(
                f"cannot build the model matrix of term {t.source!r}: {exc}"
            ) from exc
        zraw = _numeric_matrix(mmz, f"model matrix of term {t.source!r}")
        if zraw.shape[1] == 0:
            raise FormulaError(f"random-effect term {t.source!r} has no columns")
        codes, levels = _grouping(frame, t.group, t.label)
        if len(levels) < 2:
            raise ValueError(
                f"grouping factor {t.label!r} of term {t.source!r} has {len(levels)} "
                "level; it needs at least 2"
            )
        if len(levels) >= n and family is None:
            raise ValueError(
                f"grouping factor {t.label!r} of term {t.source!r} has {len(levels)} "
                f"levels for {n} observations: the number of levels must be less "
                "than the number of observations"
            )
        if len(levels) * zraw.shape[1] >= n and family is None:
            raise ValueError(
                f"term {t.source!r} has {len(levels) * zraw.shape[1]} random effects for "
                f"{n} observations: its variances and the residual variance are "
                "unidentifiable"
            )
        terms.append(
            ReTerm(
                label=t.label,
                group_vars=t.group,
                expr=t.expr,
                colnames=tuple(_lme4_name(c, {}, rnames) for c in mmz.columns),
                levels=levels,
                codes=codes,
                zraw=zraw,
            )
        )
        term_specs.append(getattr(mmz, "model_spec", None))
    order = _lme4_term_order([t.nlevels for t in terms])
    terms = [terms[i] for i in order]
    term_specs = [term_specs[i] for i in order]
    if getattr(mmx, "model_spec", None) is not None:
        specs["fixed"] = mmx.model_spec
    if all(ts is not None for ts in term_specs):
        specs["terms"] = tuple(term_specs)
    return ModelSpec(
        formula=parts.text,
        parts=parts,
        response=parts.response,
        y=y,
        X=X,
        fe_names=tuple(names_all[i] for i in keep),
        dropped=dropped,
        terms=tuple(terms),
        contrasts=contrasts,
        fixed_formula=fixed,
        kept_columns=keep,
        frame=frame,
        _specs=specs,
        offset=offset,
        prior_weights=prior_weights,
        trials=trials,
    )


def _cbind_parts(response: str) -> tuple[str, str] | None:
    """The two arguments of lme4's ``cbind(successes, failures)`` response, or None."""
    text = response.strip()
    if not (text.startswith("cbind(") and text.endswith(")")):
        return None
    inner, depth, cut = text[len("cbind(") : -1], 0, None
    for i, ch in enumerate(inner):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            if cut is not None:
                cut = -1
                break
            cut = i
    if cut is None or cut < 0:
        raise FormulaError(
            f"cbind() in the response {response!r} needs exactly two arguments: "
            "cbind(successes, failures)"
        )
    return inner[:cut].strip(), inner[cut + 1 :].strip()


def _by_row(value, series: dict, keep_rows, what: str):
    """A per-row argument (column name or array) on the rows the model keeps."""
    if value is None:
        return None
    if isinstance(value, str):
        return series[value].to_numpy()
    arr = np.asarray(value)
    n_all = len(keep_rows) if keep_rows is not None else None
    if keep_rows is not None and arr.shape == (n_all,):
        arr = arr[keep_rows]
    return arr


def _glmm_response(name: str, cbind, resp_t, frame, family, weights):
    """Proportions (binomial) or counts, prior weights and trials of a GLMM's response."""
    if cbind is not None:
        cols = [
            frame[e].to_numpy(dtype=float)
            if t is None
            else _evaluate(t, frame, f"response {name!r}")
            for e, t in zip(cbind, resp_t)
        ]
        if family.name != "binomial":
            raise ValueError(
                f"a cbind(successes, failures) response needs family='binomial', "
                f"not {family.name!r}"
            )
        return prepare_response(family, cols[0], failures=cols[1], weights=weights, name=name)
    raw = frame[name] if resp_t is None else _evaluate(resp_t, frame, f"response {name!r}")
    return prepare_response(family, raw, weights=weights, name=name)


@functools.lru_cache(maxsize=256)
def _parsed(expr: str) -> None:
    """Let formulaic's parser refuse a malformed formula part (``Days **``) up front."""
    if _plain_names(expr) is None:
        from formulaic import Formula  # imported when first needed: it is slow to import

        Formula(expr)


@functools.lru_cache(maxsize=256)
def _required_variables(expr: str) -> frozenset:
    """The data columns an expression reads, in R's spelling or formulaic's.

    Read from the expression's tokens: formulaic's own ``required_variables``
    misses the columns of stateful transforms (``scale(x)``, ``poly(x, 2)``) and
    takes ``a.b`` for a column ``a``.
    """
    plain = _plain_names(expr)
    if plain is not None:
        return frozenset(plain[1])
    return frozenset(translate(expr, allow_offset=True).variables)


def _lme4_term_order(nlevels: list[int]) -> list[int]:
    """The order lme4 (mkReTrms) gives random terms, from their numbers of levels.

    Terms already in non-increasing order of levels keep the formula's order;
    otherwise lme4 takes the reverse of a stable increasing sort, so terms with
    equal levels come out in reverse formula order (``(1 + x || g2) + (1 | g1)``
    with g1 the larger gives g1, g2.x, g2.(Intercept)).  theta follows this order.
    """
    n = len(nlevels)
    if all(nlevels[i + 1] <= nlevels[i] for i in range(n - 1)):
        return list(range(n))
    return sorted(range(n), key=lambda i: nlevels[i])[::-1]


def _evaluate(expr: Translated, frame, what: str) -> np.ndarray:
    """One numeric column from an R expression of the data (a response, an offset)."""
    try:
        mm = _formulaic(f"0 + I({expr.python})", frame)
    except Exception as exc:  # noqa: BLE001 - formulaic's errors name the column
        raise FormulaError(f"cannot evaluate {what}: {exc}") from exc
    arr = np.asarray(mm, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != 1:
        raise FormulaError(f"{what} must be one numeric column, got {arr.shape[1]} columns")
    return arr[:, 0]


def _formulaic(expr: str, frame):
    from formulaic import model_matrix

    if isinstance(frame, _Columns):
        frame = frame.data
    return model_matrix(expr, frame, ensure_full_rank=True, na_action="raise")


def _missing(column: pd.Series):
    """Boolean mask of missing values, or None for a dtype that cannot hold them."""
    kind = column.dtype.kind if isinstance(column.dtype, np.dtype) else None
    if kind in ("i", "u", "b"):
        return None
    if kind == "f":
        return np.isnan(column.to_numpy())
    return column.isna().to_numpy()


class _Columns:
    """The used columns, rows with missing values dropped; the DataFrame is made on demand.

    Building a DataFrame costs more than a small fit's arithmetic, and most
    fits never need one (formulaic and ``spec.data`` do).
    """

    def __init__(self, series: dict, source: pd.DataFrame, keep_rows, used):
        self._series, self._source, self._keep, self._used = series, source, keep_rows, used
        self._data = None

    def __getitem__(self, name) -> pd.Series:
        return self._series[name]

    def __len__(self) -> int:
        return len(next(iter(self._series.values())))

    @property
    def columns(self):
        return list(self._used)

    def __getstate__(self):
        # Ship only the used rows and columns (e.g. to bootstrap workers).
        data = self.data
        return {
            "_series": self._series,
            "_source": data,
            "_keep": None,
            "_used": self._used,
            "_data": data,
        }

    @property
    def data(self) -> pd.DataFrame:
        if self._data is None:
            data = self._source[list(self._used)]
            if self._keep is not None:
                data = data.loc[self._keep]
            self._data = data.reset_index(drop=True)
        return self._data


class _SimpleMatrix:
    """A model matrix of an intercept and numeric columns, built without formulaic."""

    def __init__(self, array: np.ndarray, columns: list[str]):
        self.array, self.columns = array, columns

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype, copy=False)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_LITERALS = frozenset({"True", "False", "None"})


def _plain_names(expr: str):
    """(intercept, [names]) when ``expr`` is only 1/0/-1 and plain names joined by +."""
    intercept, names = True, []
    for token in (
        tok.strip() for tok in expr.replace("- 1", "+ 0").replace("-1", "+ 0").split("+")
    ):
        if token == "1":
            continue
        if token == "0":
            intercept = False
            continue
        if not _NAME.fullmatch(token) or token in names or token in _LITERALS:
            return None
        names.append(token)
    return intercept, names


def _simple_terms(expr: str, frame: pd.DataFrame):
    """(intercept, [numeric column names]) when ``expr`` is only those, else None.

    Such designs are common ("1", "1 + Days") and need none of formulaic's
    coding; building them directly saves most of a small fit's set-up time.
    formulaic puts the intercept first and keeps first-order terms in order.
    """
    plain = _plain_names(expr)
    if plain is None:
        return None
    intercept, names = plain
    for token in names:
        if token not in frame.columns:
            return None
        dtype = frame[token].dtype
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            return None
    return intercept, names


_STATEFUL = re.compile(r"(?<![\w.])(?:scale|center|poly|standardize)\s*\(")


def _stateful_variables(expr: str) -> set:
    """Columns that scale(), center() or poly() in ``expr`` read."""
    out: set = set()
    for m in _STATEFUL.finditer(expr):
        depth, i = 0, m.end() - 1
        for j in range(i, len(expr)):
            depth += {"(": 1, ")": -1}.get(expr[j], 0)
            if depth == 0:
                out |= set(_required_variables(expr[m.start() : j + 1]))
                break
    return out


def _before_dropping(expr: str, frame: _Columns):
    """The model matrix as R makes it when rows were dropped for missing values.

    R evaluates ``scale(x)`` and ``poly(x, 2)`` on the rows of the data before
    it drops the rows with a missing value elsewhere (``scale`` over the values of
    ``x`` that are present), and takes the levels of factors from the rows kept.
    Returns None where nothing of that applies (or formulaic cannot do it), and
    the caller builds the matrix on the rows kept.
    """
    if frame._keep is None or not _STATEFUL.search(expr):
        return None
    source = frame._source[list(frame.columns)]
    rows = np.ones(len(source), dtype=bool)
    for c in _stateful_variables(expr):
        m = _missing(source[c])
        if m is not None:
            rows &= ~m
    data = source.loc[rows].reset_index(drop=True)
    kept = frame._keep[rows]
    for c in data.columns:
        col = data[c]
        if isinstance(col.dtype, pd.CategoricalDtype):
            used = col[kept].cat.remove_unused_categories().cat.categories
            data[c] = col.cat.set_categories(used)
        elif not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            data[c] = pd.Categorical(col, categories=pd.Categorical(col[kept].dropna()).categories)
    try:
        from formulaic import model_matrix

        mm = model_matrix(expr, data, ensure_full_rank=True, na_action="ignore")
    except Exception:  # noqa: BLE001 - left to the usual path, which reports it
        return None
    arr = np.asarray(mm, dtype=float)[kept]
    if arr.shape[0] != int(frame._keep.sum()) or not np.all(np.isfinite(arr)):
        return None
    out = _SimpleMatrix(arr, list(mm.columns))
    out.model_spec = mm.model_spec
    return out


def _model_matrix(expr: str, frame: pd.DataFrame):
    if isinstance(frame, _Columns):
        early = _before_dropping(expr, frame)
        if early is not None:
            return early
    simple = _simple_terms(expr, frame)
    if simple is None:
        return _formulaic(expr, frame)
    intercept, names = simple
    cols = ([np.ones(len(frame))] if intercept else []) + [
        frame[c].to_numpy(dtype=float) for c in names
    ]
    array = np.column_stack(cols) if cols else np.empty((len(frame), 0))
    return _SimpleMatrix(array, (["Intercept"] if intercept else []) + names)
