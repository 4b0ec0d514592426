"""Simulation-based model checking: group means and a density overlay.

Data: mixboot's built-in ``scores`` data set: the simulated ``reaction`` data renamed to the
guide's columns (score = Reaction, time = Days, subject = Subject) plus a
made-up between-subject 0/1 ``treatment`` indicator (alternate subjects).

The density overlay is written to a PNG file instead of ``plt.show()``: to
the folder named by the environment variable MIXBOOT_EXAMPLES_OUT, or to a
fresh temporary folder when it is unset.

Run:  python examples/ppc_group_means.py
"""
import os
import tempfile

import matplotlib

matplotlib.use("Agg")   # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import mixboot as mb  # noqa: E402

df = mb.datasets.load("scores")   # score, time, treatment, subject

result = mb.fit("score ~ time + treatment", data=df, groups="subject")

# Draw 200 simulated response vectors
y_sim = mb.simulate(result, nsim=200, seed=0)
print("y_sim shape:", y_sim.shape)                       # (n, 200)

# -- checking distributional assumptions: overlay observed and simulated densities
# (The guide calls ax.hist once per draw; drawing 200 bar histograms is slow,
# so each draw's density is computed with numpy and drawn as an outline on
# bins shared with the observed histogram.)
bins = np.histogram_bin_edges(np.concatenate([y_sim.ravel(), df["score"]]), bins=30)
fig, ax = plt.subplots()
for j in range(y_sim.shape[1]):
    density, _ = np.histogram(y_sim[:, j], bins=bins, density=True)
    ax.stairs(density, bins, alpha=0.05, color="steelblue")
ax.hist(df["score"], bins=bins, alpha=0.7, color="black", density=True, label="Observed")
ax.set_xlabel("score")
ax.legend()
out_dir = os.environ.get("MIXBOOT_EXAMPLES_OUT") or tempfile.mkdtemp(prefix="mixboot-examples-")
os.makedirs(out_dir, exist_ok=True)
plot_path = os.path.join(out_dir, "ppc_density.png")
fig.savefig(plot_path, dpi=80)
plt.close(fig)
print(f"Saved plot: {plot_path}")

# -- checking group-level summaries: observed vs simulated group means
observed_group_means = df.groupby("subject")["score"].mean().values
sim_group_means = np.array([
    df.assign(score=y_sim[:, j]).groupby("subject")["score"].mean().values
    for j in range(y_sim.shape[1])
])  # shape: (nsim, n_subjects)
print("sim_group_means shape:", sim_group_means.shape)

# 95% predictive interval for each group's mean
lo = np.percentile(sim_group_means, 2.5, axis=0)
hi = np.percentile(sim_group_means, 97.5, axis=0)

# How many observed group means fall outside the interval?
outside = np.mean((observed_group_means < lo) | (observed_group_means > hi))
print(f"Fraction of groups outside 95% PI: {outside:.2f}")
print("(about 0.05 is expected for a well-calibrated model; much more suggests "
      "the random-effect variance is underestimated)")

print("Done: posterior predictive check of group means.")
