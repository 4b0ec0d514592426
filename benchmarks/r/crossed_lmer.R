# lme4 side of benchmarks/crossed.py: the simulated crossed model (ML).
# Usage: Rscript benchmarks/r/crossed_lmer.R PATH/crossed.csv
# Prints one evaluation of lme4's deviance function (timed), then the whole
# lmer fit with default controls: elapsed seconds, evaluations, deviance, theta.
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
d$g1 <- factor(d$g1); d$g2 <- factor(d$g2)
f <- y ~ 1 + x + (1 | g1) + (1 | g2)
t_setup <- system.time(dev <- lmer(f, d, REML = FALSE, devFunOnly = TRUE))["elapsed"]
t_one <- system.time(v <- dev(c(0.6, 0.4)))["elapsed"]
cat(sprintf("setup %.1f s; one deviance evaluation %.1f s (value %.6f)\n", t_setup, t_one, v))
flush(stdout())
t_fit <- system.time(m <- lmer(f, d, REML = FALSE))["elapsed"]
cat(sprintf("fit %.1f s; evaluations %d; deviance %.8f; theta %s; sessioninfo BLAS %s\n",
            t_fit, m@optinfo$feval, deviance(m), paste(format(getME(m, "theta"), digits = 10), collapse = " "),
            extSoftVersion()["BLAS"]))
gc_info <- gc()
cat(sprintf("R max memory used (MB, Ncells+Vcells): %.0f\n", sum(gc_info[, ncol(gc_info)])))
