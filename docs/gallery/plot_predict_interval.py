"""
Predictions with bootstrap bands
================================

Population-level predictions of reaction time over the days of the study, with a
bootstrap confidence band for the mean and a wider prediction band for a new
subject's observation.
"""

import matplotlib.pyplot as plt
import pandas as pd

import mixboot as mb

df = mb.datasets.load("reaction")
fit = mb.fit("Reaction ~ 1 + Days + (1 + Days | Subject)", data=df)
new = pd.DataFrame({"Days": range(10)})
conf = mb.predict_interval(fit, new, B=200, seed=1, re_form="~0")
pred = mb.predict_interval(fit, new, B=200, seed=1, re_form="~0", kind="prediction")

fig, ax = plt.subplots()
ax.scatter(df["Days"], df["Reaction"], s=8, color="grey", alpha=0.5, label="data")
ax.fill_between(new["Days"], pred["lower"], pred["upper"], alpha=0.2, label="95 % prediction band")
ax.fill_between(new["Days"], conf["lower"], conf["upper"], alpha=0.4, label="95 % confidence band")
ax.plot(new["Days"], conf["fit"], color="black", label="population mean")
ax.set_xlabel("Days")
ax.set_ylabel("Reaction (ms)")
ax.legend(loc="upper left")
