"""bootMer() with a custom statistic: the fixed effects only.

Data: mixboot's built-in ``scores`` data set: the simulated ``reaction`` data renamed to the
guide's columns (score = Reaction, time = Days, subject = Subject) plus a
made-up between-subject 0/1 ``treatment`` indicator (alternate subjects).

Run:  python examples/custom_statistic.py
"""

import numpy as np

import mixboot as mb

df = mb.datasets.load("scores")  # score, time, treatment, subject

result = mb.fit("score ~ time + treatment", data=df, groups="subject")


def fixed_effects_only(r):
    """Statistic: the refitted fixed-effect coefficients, as a plain array."""
    return np.asarray(r.fe_params)


# The guide uses B=500.  A custom statistic is evaluated on a full result object
# per replicate, which costs more than the default statistic; B=200 keeps
# this example quick.
B = 200
boot = mb.bootMer(result, statistic=fixed_effects_only, B=B, seed=42)

# Columns: one per fixed-effect coefficient
p = len(result.fe_params)
print("coefficients:", list(result.fe_params.index))
print("estimates shape:", boot.estimates.shape)  # (B, p)
print("ci shape:", boot.ci().shape)  # (p, 2)
print(boot.ci())

# A plain array has no names, so the columns are called stat0, stat1, ...;
# returning the pandas Series itself (r.fe_params) would keep the coefficient names.
print("names:", list(boot.names))

assert boot.estimates.shape == (B, p)
assert boot.ci().shape == (p, 2)
print("Done: custom-statistic bootstrap of the fixed effects.")
