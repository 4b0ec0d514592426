"""Bootstrap standard errors and 95% percentile CIs with bootMer().

Data: mixboot's built-in ``scores`` data set: the simulated ``reaction`` data (18 subjects x 10
days), renamed to the guide's columns: score = Reaction, time = Days,
subject = Subject, and treatment = a between-subject 0/1 indicator
(alternate subjects, in sorted order, are "treated").  The indicator is made
up for illustration; the data carry no real treatment effect.

Run:  python examples/bootstrap_se_ci.py
"""

import numpy as np
import pandas as pd

import mixboot as mb

df = mb.datasets.load("scores")  # score, time, treatment, subject

result = mb.fit("score ~ time + treatment", data=df, groups="subject")
print(result)

# The guide passes show_progress=True to get a tqdm progress bar; it is off
# here so that the script's output stays clean when run from tests or CI.
boot = mb.bootMer(result, B=500, seed=42, show_progress=False)

# The default statistic is [fixed effects..., sigma, theta...]
print("statistics:", list(boot.names))
print("estimates shape:", boot.estimates.shape)  # (B, p)

# Bootstrap SEs for each parameter
se = boot.estimates.std(axis=0)
print("bootstrap SEs:", np.round(se, 4))

# 95% percentile CIs (shape: p x 2, columns are [lower, upper])
ci = boot.ci(level=0.95)
print("ci shape:", ci.shape)
print(ci)

# The same, labelled
table = pd.DataFrame(
    {"estimate": boot.estimate, "boot_se": se, "lower": ci[:, 0], "upper": ci[:, 1]},
    index=list(boot.names),
)
print(table.round(4).to_string())

print("Done: bootstrap SEs and 95% percentile CIs computed.")
