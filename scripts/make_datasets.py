"""Regenerate mixboot's built-in example data (simulated; no external source).

Run from the repository root: ``python scripts/make_datasets.py``.
"""

import numpy as np
import pandas as pd
from pathlib import Path

out = Path(__file__).resolve().parents[1] / "mixboot" / "datasets"
rng = np.random.default_rng(20261121)

# "reaction": 18 subjects x 10 days, random intercepts and slopes (a sleep-deprivation-like design).
subjects = [f"S{i:02d}" for i in range(1, 19)]
days = np.arange(10)
sd = np.array([24.0, 6.0])
rho = 0.1
cov = np.diag(sd) @ np.array([[1, rho], [rho, 1]]) @ np.diag(sd)
b = rng.multivariate_normal([0, 0], cov, size=len(subjects))
rows = []
for s, (b0, b1) in zip(subjects, b):
    for d in days:
        rows.append((round(250 + b0 + (10.5 + b1) * d + rng.normal(0, 25), 2), d, s))
pd.DataFrame(rows, columns=["Reaction", "Days", "Subject"]).to_csv(
    out / "reaction.csv", index=False
)

# "crossed": 24 plates x 6 samples, crossed random intercepts (an assay-like design).
plates = [f"p{i:02d}" for i in range(1, 25)]
samples = list("ABCDEF")
u_plate = rng.normal(0, 0.85, len(plates))
u_sample = rng.normal(0, 1.9, len(samples))
rows = [
    (round(23 + u_plate[i] + u_sample[j] + rng.normal(0, 0.55), 1), p, s)
    for i, p in enumerate(plates)
    for j, s in enumerate(samples)
]
pd.DataFrame(rows, columns=["diameter", "plate", "sample"]).to_csv(out / "crossed.csv", index=False)

# "rt": 40 subjects x 20 items, a two-condition within design, crossed random effects
# (for power-analysis examples).
subj = [f"s{i:02d}" for i in range(1, 41)]
items = [f"i{i:02d}" for i in range(1, 21)]
us = rng.multivariate_normal([0, 0], [[60.0**2, 0], [0, 20.0**2]], size=len(subj))
ui = rng.normal(0, 40, len(items))
rows = []
for a, s in enumerate(subj):
    for b_, it in enumerate(items):
        cond = "a" if (a + b_) % 2 == 0 else "b"
        x = 0.0 if cond == "a" else 1.0
        rows.append(
            (
                round(600 + us[a, 0] + ui[b_] + (25 + us[a, 1]) * x + rng.normal(0, 80), 1),
                cond,
                s,
                it,
            )
        )
pd.DataFrame(rows, columns=["rt", "cond", "subject", "item"]).to_csv(out / "rt.csv", index=False)
