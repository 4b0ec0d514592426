"""Parameter recovery: 300 data sets simulated from a known Bernoulli and a known Poisson
GLMM, refitted by Laplace (mb.model + simulate + model.refit in batches).

Fixed effects: |mean(beta_hat) - beta| <= 3 sd(beta_hat) / sqrt(300).

theta (the random-effect SD, scale 1): maximum likelihood itself is biased low, so the
mean is compared with theta + b, b = -theta / (2 G) - var(theta_hat) / (2 theta) (G
groups: the first-order ML bias of the variance, p / G with one fixed effect that varies
within groups, gives -theta / (2G) on the SD scale; the second term is Jensen's bias of
sqrt), with the same 3 sd / sqrt(300) band plus an allowance for the Laplace
approximation's own bias:

* Bernoulli, 60 groups x 20 observations, SD 1: Laplace underestimates SDs of binary
  data with few observations per group (Breslow & Lin 1995; Joe 2008: a few percent at
  20 per group and SD 1, growing as clusters shrink).  Allowance 0.03 theta.  Measured
  (seed 1): mean theta_hat 0.9795, b = -0.0168, so Laplace's share -0.004 +- 0.0075.
* Poisson, 40 groups x 10 observations, mean counts ~1-4, SD 0.5: the Laplace
  approximation is close to exact; allowance 0.01 theta.  Measured (seed 2): mean
  theta_hat 0.4892, b = -0.0109.
The file runs in about 20 s.
"""

import numpy as np
import pytest

import mixboot as mb

R = 300
BATCH = 50


def recover(m, seed):
    """(theta_hat, beta_hat) of R refits of responses simulated from model ``m``."""
    Y = m.simulate(nsim=R, seed=seed)
    start = np.concatenate([m.theta, m.beta])
    fits = [m.model.refit(Y[:, s : s + BATCH].T, start=start) for s in range(0, R, BATCH)]
    assert all(f.converged.all() for f in fits)
    return (np.concatenate([f.theta for f in fits]), np.concatenate([f.beta for f in fits]))


CASES = {
    "bernoulli": dict(
        model=lambda: mb.model(
            "y ~ x + (1 | group)",
            mb.design.nested(groups=60, per_group=20, x={"x": np.linspace(-1, 1, 20)}),
            family="bernoulli",
            beta=[-0.5, 0.8],
            re={"group": 1.0},
        ),
        seed=1,
        groups=60,
        laplace=0.03,
    ),
    "poisson": dict(
        model=lambda: mb.model(
            "y ~ x + (1 | group)",
            mb.design.nested(groups=40, per_group=10, x={"x": np.linspace(-1, 1, 10)}),
            family="poisson",
            beta=[1.0, 0.3],
            re={"group": 0.5},
        ),
        seed=2,
        groups=40,
        laplace=0.01,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_mean_estimates_recover_the_truth(name):
    case = CASES[name]
    m = case["model"]()
    theta_hat, beta_hat = recover(m, case["seed"])
    se_beta = beta_hat.std(axis=0, ddof=1) / np.sqrt(R)
    assert np.all(np.abs(beta_hat.mean(axis=0) - m.beta) <= 3 * se_beta), (
        beta_hat.mean(axis=0),
        m.beta,
        se_beta,
    )
    theta = m.theta[0]
    t = theta_hat[:, 0]
    ml_bias = -theta / (2 * case["groups"]) - t.var(ddof=1) / (2 * theta)
    se_theta = t.std(ddof=1) / np.sqrt(R)
    assert abs(t.mean() - (theta + ml_bias)) <= 3 * se_theta + case["laplace"] * theta, (
        t.mean(),
        theta,
        ml_bias,
        se_theta,
    )
