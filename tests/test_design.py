import doctest

import numpy as np
import pandas as pd
import pytest

import mixboot.design
from mixboot import design


def test_docstring_examples_run():
    result = doctest.testmod(mixboot.design)
    assert result.attempted > 0
    assert result.failed == 0


# crossed ---------------------------------------------------------------------


def test_crossed_each_subject_item_cond_once():
    d = design.crossed(subjects=40, items=20, within={"cond": ["a", "b"]})
    assert d.shape == (1600, 3)
    assert list(d.columns) == ["subject", "item", "cond"]
    counts = d.groupby(["subject", "item", "cond"], observed=True).size()
    assert len(counts) == 1600
    assert (counts == 1).all()


def test_crossed_labels_are_padded_categoricals_in_order():
    d = design.crossed(subjects=40, items=20)
    assert isinstance(d["subject"].dtype, pd.CategoricalDtype)
    assert list(d["subject"].cat.categories) == [f"s{k:02d}" for k in range(1, 41)]
    assert list(d["item"].cat.categories) == [f"i{k:02d}" for k in range(1, 21)]
    assert list(design.crossed(subjects=9, items=1)["subject"].cat.categories)[-1] == "s9"
    assert list(design.crossed(subjects=100, items=1)["subject"].cat.categories)[0] == "s001"


def test_crossed_within_is_full_factorial_and_keeps_level_order():
    d = design.crossed(
        subjects=3, items=4, within={"cond": ["b", "a"], "load": ["lo", "hi", "mid"]}, replicates=2
    )
    assert len(d) == 3 * 4 * 2 * 3 * 2
    assert list(d["cond"].cat.categories) == ["b", "a"]
    assert list(d["load"].cat.categories) == ["lo", "hi", "mid"]
    cells = d.groupby(["subject", "item", "cond", "load"], observed=True).size()
    assert len(cells) == 3 * 4 * 2 * 3
    assert (cells == 2).all()


def test_crossed_column_order():
    d = design.crossed(
        subjects=4,
        items=4,
        within={"w": ["x", "y"]},
        between={"b": ["p", "q"]},
        item_between={"ib": ["u", "v"]},
        subject="participant",
        item="word",
    )
    assert list(d.columns) == ["participant", "word", "w", "b", "ib"]


def test_crossed_between_is_balanced_and_alternating():
    d = design.crossed(subjects=40, items=20, between={"group": ["ctl", "trt"]})
    per_subject = d.groupby("subject", observed=True)["group"].agg(lambda g: g.unique().tolist())
    assert all(len(levels) == 1 for levels in per_subject)
    assigned = [levels[0] for levels in per_subject]
    assert assigned[:4] == ["ctl", "trt", "ctl", "trt"]
    assert assigned.count("ctl") == assigned.count("trt") == 20
    # Each subject still sees every item.
    assert d.groupby("subject", observed=True)["item"].nunique().eq(20).all()


def test_crossed_several_between_factors_are_crossed_not_confounded():
    d = design.crossed(subjects=12, items=2, between={"a": ["a1", "a2"], "b": ["b1", "b2", "b3"]})
    subjects = d.drop_duplicates("subject")
    combos = subjects.groupby(["a", "b"], observed=True).size()
    assert len(combos) == 6
    assert (combos == 2).all()
    # The first factor alternates subject by subject.
    assert subjects["a"].tolist()[:4] == ["a1", "a2", "a1", "a2"]


def test_crossed_item_between_is_balanced():
    d = design.crossed(subjects=5, items=6, item_between={"list": ["A", "B", "C"]})
    items = d.drop_duplicates("item")
    assert items["list"].tolist() == ["A", "B", "C", "A", "B", "C"]
    assert d.groupby("item", observed=True)["list"].nunique().eq(1).all()


def test_crossed_numeric_levels_stay_numeric():
    d = design.crossed(subjects=2, items=2, within={"dose": [0, 10, 20]}, between={"w": [0.5, 1.5]})
    assert d["dose"].dtype.kind == "i"
    assert d["w"].dtype.kind == "f"
    assert sorted(d["dose"].unique()) == [0, 10, 20]


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(subjects=0, items=2), ValueError, "subjects"),
        (dict(subjects=2, items=-1), ValueError, "items"),
        (dict(subjects=2.0, items=2), TypeError, "subjects"),
        (dict(subjects=True, items=2), TypeError, "subjects"),
        (dict(subjects=2, items=2, replicates=0), ValueError, "replicates"),
        (dict(subjects=2, items=2, within=["a", "b"]), TypeError, "within"),
        (dict(subjects=2, items=2, within={"cond": "ab"}), TypeError, "within"),
        (dict(subjects=2, items=2, within={"cond": []}), ValueError, "within"),
        (dict(subjects=2, items=2, between={"g": ["a", "a"]}), ValueError, "between"),
        (dict(subjects=2, items=2, item_between={"g": ["a", None]}), ValueError, "item_between"),
        (
            dict(subjects=2, items=2, within={"g": ["a"]}, between={"g": ["b"]}),
            ValueError,
            "between",
        ),
        (dict(subjects=2, items=2, within={"subject": ["a"]}), ValueError, "within"),
        (dict(subjects=2, items=2, subject="unit", item="unit"), ValueError, "subject and item"),
        (dict(subjects=2, items=2, item=3), TypeError, "item"),
    ],
)
def test_crossed_rejects_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        design.crossed(**kwargs)


def test_crossed_options_are_keyword_only():
    with pytest.raises(TypeError):
        design.crossed(40, 20)


# nested ----------------------------------------------------------------------


def test_nested_seed_004_one_liner():
    d = design.nested(groups=3, per_group=10, x={"x": range(1, 11)})
    assert d.shape == (30, 2)
    assert list(d.columns) == ["group", "x"]
    assert list(d["group"].cat.categories) == ["g1", "g2", "g3"]
    assert d["group"].tolist() == ["g1"] * 10 + ["g2"] * 10 + ["g3"] * 10
    assert d["x"].tolist() == list(range(1, 11)) * 3
    assert d["x"].dtype.kind == "i"


def test_nested_within_and_between():
    d = design.nested(
        groups=4,
        per_group=5,
        x={"t": np.linspace(0, 1, 5)},
        within={"cond": ["a", "b"]},
        between={"arm": ["ctl", "trt"]},
    )
    assert list(d.columns) == ["group", "t", "cond", "arm"]
    assert len(d) == 4 * 2 * 5
    cells = d.groupby(["group", "cond"], observed=True)["t"].apply(list)
    assert all(np.allclose(v, np.linspace(0, 1, 5)) for v in cells)
    assert d.drop_duplicates("group")["arm"].tolist() == ["ctl", "trt", "ctl", "trt"]


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(groups=0, per_group=10), ValueError, "groups"),
        (dict(groups=3, per_group=0), ValueError, "per_group"),
        (dict(groups=3, per_group=10, x={"x": range(1, 10)}), ValueError, "x"),
        (dict(groups=3, per_group=2, x={"x": ["a", "b"]}), TypeError, "x"),
        (dict(groups=3, per_group=2, x=[1, 2]), TypeError, "x"),
        (dict(groups=3, per_group=2, x={"group": [1, 2]}), ValueError, "x"),
        (dict(groups=3, per_group=2, x={"u": [1, 2]}, within={"u": ["a"]}), ValueError, "within"),
    ],
)
def test_nested_rejects_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        design.nested(**kwargs)


# extend ----------------------------------------------------------------------


@pytest.fixture
def base():
    return design.crossed(
        subjects=40, items=20, within={"cond": ["a", "b"]}, between={"group": ["ctl", "trt"]}
    )


def _assert_same_rows(a, b):
    """Equal values, ignoring the subject categories (extend() changes them)."""
    a = a.assign(subject=a["subject"].astype(str)).reset_index(drop=True)
    b = b.assign(subject=b["subject"].astype(str)).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def _subject_groups(d):
    return d.drop_duplicates("subject").set_index("subject")["group"]


def test_extend_larger_keeps_balance_and_unique_labels(base):
    d = design.extend(base, along="subject", size=60)
    labels = list(d["subject"].cat.categories)
    assert labels[:40] == list(base["subject"].cat.categories)
    assert labels[40:] == [f"s{k}" for k in range(41, 61)]
    assert len(set(labels)) == 60
    assert d["subject"].nunique() == 60
    assert len(d) == 60 * 20 * 2
    assert _subject_groups(d).value_counts().tolist() == [30, 30]
    # New subject k copies old subject k mod 40, items and within cells included.
    new = d[d["subject"] == "s41"].drop(columns="subject").reset_index(drop=True)
    old = base[base["subject"] == "s01"].drop(columns="subject").reset_index(drop=True)
    pd.testing.assert_frame_equal(new, old)
    # The original rows come first, unchanged.
    _assert_same_rows(d.iloc[: len(base)], base)


def test_extend_widens_padding_when_needed(base):
    d = design.extend(base, along="subject", size=120)
    labels = list(d["subject"].cat.categories)
    assert labels[98:101] == ["s99", "s100", "s101"]
    assert len(set(labels)) == 120
    assert _subject_groups(d).value_counts().tolist() == [60, 60]


def test_extend_smaller_keeps_first_levels(base):
    d = design.extend(base, along="subject", size=10)
    assert list(d["subject"].cat.categories) == [f"s{k:02d}" for k in range(1, 11)]
    assert len(d) == 10 * 20 * 2
    assert _subject_groups(d).value_counts().tolist() == [5, 5]
    _assert_same_rows(d, base.iloc[: len(d)])


def test_extend_same_size_is_a_copy(base):
    d = design.extend(base, along="subject", size=40)
    pd.testing.assert_frame_equal(d, base)
    assert d is not base


def test_extend_items_keeps_item_between_balance():
    d0 = design.crossed(subjects=4, items=6, item_between={"list": ["A", "B", "C"]})
    d = design.extend(d0, along="item", size=9)
    assert list(d["item"].cat.categories)[6:] == ["i7", "i8", "i9"]
    assert d.drop_duplicates("item")["list"].value_counts().tolist() == [3, 3, 3]
    assert d.groupby("item", observed=True)["subject"].nunique().eq(4).all()


def test_extend_nested_groups_copies_covariate():
    d = design.extend(
        design.nested(groups=3, per_group=10, x={"x": range(1, 11)}), along="group", size=5
    )
    assert list(d["group"].cat.categories) == ["g1", "g2", "g3", "g4", "g5"]
    assert d["x"].tolist() == list(range(1, 11)) * 5


def test_extend_other_label_styles():
    ints = pd.DataFrame({"id": [3, 3, 7], "y": [1.0, 2.0, 3.0]})
    d = design.extend(ints, along="id", size=4)
    assert d["id"].tolist() == [3, 3, 7, 8, 8, 9]
    assert d["id"].dtype.kind == "i"

    names = pd.DataFrame({"who": ["ann", "bob", "ann"]})
    d = design.extend(names, along="who", size=4)
    assert d["who"].tolist() == ["ann", "bob", "ann", "who_new1", "who_new1", "who_new2"]

    clash = pd.DataFrame({"who": ["who_new1", "x"]})
    assert design.extend(clash, along="who", size=3)["who"].tolist() == [
        "who_new1",
        "x",
        "who_new2",
    ]


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(along="participant", size=10), ValueError, "along"),
        (dict(along="subject", size=0), ValueError, "size"),
        (dict(along="subject", size=2.5), TypeError, "size"),
        (dict(along=["subject"], size=2), TypeError, "along"),
    ],
)
def test_extend_rejects_bad_arguments(base, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        design.extend(base, **kwargs)


def test_extend_rejects_non_dataframe():
    with pytest.raises(TypeError, match="data"):
        design.extend({"subject": [1]}, along="subject", size=2)
