"""Write the simulated crossed-design data set used by ``benchmarks/crossed.py``.

400,000 rows; grouping factors ``g1`` (20,000 levels) and ``g2`` (10,000 levels)
drawn independently and uniformly, so every level of one factor meets many
levels of the other (a fully crossed, unbalanced design); one numeric
covariate ``x``; the response from ``y ~ 1 + x + (1|g1) + (1|g2)`` with
beta = (2, 0.5), sd(g1) = 1, sd(g2) = 0.7, sigma = 1.5.

    python benchmarks/crossed_data.py [--out PATH] [--rows N] [--g1 L1] [--g2 L2] [--seed S]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_OUT = Path(__file__).resolve().parent / "_data" / "crossed.csv"


def make_crossed(rows: int = 400_000, g1: int = 20_000, g2: int = 10_000, seed: int = 2026):
    """The data frame: columns y, x, g1, g2 (grouping columns as integer codes)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, g1, size=rows)
    b = rng.integers(0, g2, size=rows)
    x = rng.normal(size=rows)
    u1 = rng.normal(scale=1.0, size=g1)
    u2 = rng.normal(scale=0.7, size=g2)
    y = 2.0 + 0.5 * x + u1[a] + u2[b] + rng.normal(scale=1.5, size=rows)
    return pd.DataFrame({"y": y, "x": x, "g1": a, "g2": b})


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--g1", type=int, default=20_000)
    ap.add_argument("--g2", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    make_crossed(args.rows, args.g1, args.g2, args.seed).to_csv(args.out, index=False)
    print(args.out)
    return args.out


if __name__ == "__main__":
    main()
