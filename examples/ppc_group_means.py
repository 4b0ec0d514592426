"""Simulation-based model checking: a density overlay and group means.

Data: mixboot's built-in ``scores`` data set: the simulated ``reaction`` data renamed to the
guide's columns (score = Reaction, time = Days, subject = Subject) plus a
made-up between-subject 0/1 ``treatment`` indicator (alternate subjects).

The interlace guide writes these checks out by hand from ``simulate()``;
``mb.checks.density`` and ``mb.checks.group_summary`` do the same on the same
simulated draws (same seed, same numbers).

The density overlay is written to a PNG file instead of ``plt.show()``: to
the folder named by the environment variable MIXBOOT_EXAMPLES_OUT, or to a
fresh temporary folder when it is unset.

Run:  python examples/ppc_group_means.py
"""

import os
import tempfile

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402

import mixboot as mb  # noqa: E402

df = mb.datasets.load("scores")  # score, time, treatment, subject

result = mb.fit("score ~ time + treatment", data=df, groups="subject")

# -- checking distributional assumptions: observed density over 200 simulated ones
dens = mb.checks.density(result, nsim=200, seed=0)
print("y_sim shape:", dens.simulated.shape)  # (n, 200)
print(dens.quantiles.to_string(index=False))
print(f"Share of simulated SDs above the observed: {dens.share_sd_above:.2f}")

ax = dens.plot()
ax.set_xlabel("score")
out_dir = os.environ.get("MIXBOOT_EXAMPLES_OUT") or tempfile.mkdtemp(prefix="mixboot-examples-")
os.makedirs(out_dir, exist_ok=True)
plot_path = os.path.join(out_dir, "ppc_density.png")
ax.figure.savefig(plot_path, dpi=80)
plt.close(ax.figure)
print(f"Saved plot: {plot_path}")

# -- checking group-level summaries: each subject's mean against its 95% predictive interval
groups = mb.checks.group_summary(result, by="subject", stat="mean", nsim=200, level=0.95, seed=0)
print("sim_group_means shape:", groups.simulated.shape)  # (nsim, n_subjects)
print(groups.table.round(1).to_string())
print(f"Fraction of groups outside 95% PI: {groups.share_outside:.2f}")
print(
    f"(about {groups.expected_share:.2f} is expected for a well-calibrated model; much more "
    "suggests the random-effect variance is underestimated)"
)

print("Done: posterior predictive check of group means.")
