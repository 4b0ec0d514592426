# lme4 timings for GLMMs, to set beside mixboot's.
#
# benchmarks/*.py embed their R code and run it through benchmarks/_lme4.py (run_r with
# Rscript --vanilla, result printed as one JSON line); this standalone script follows the same
# output convention: it prints ONE line "@@MIXBOOT_JSON@@{...}" (the _lme4._MARK prefix) so a
# Python driver can parse it the same way, plus human-readable lines before it.
#
#     Rscript --vanilla benchmarks/r/glmer_timings.R [data_dir] [N] [skip_power]
#       data_dir   default ../shared/data (relative to the repository root)
#       N          bootstrap / power replicates, default 100
#       skip_power 1 to skip (c)
#
# (a) cbpp `cbind(incidence, size - incidence) ~ period + (1 | herd)` binomial (Laplace):
#     bootMer(m, function(x) c(fixef(x), getME(x, "theta")), nsim = N, seed = 1), one run;
#     reports seconds and seconds per 1000 replicates (linear extrapolation).
# (b) VerbAgg `r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)` binomial (Laplace,
#     default glmerControl): min of 3 glmer() calls.
# (c) power-analysis-like loop: 30 subjects x 20 items crossed Bernoulli design,
#     y ~ x + (1 | subj) + (1 | item) with x = +-0.5 an item-level condition; data generated
#     with beta = (0, 0.8), theta = (1, 0.5);
#     simulate(m0, nsim = N, seed = 1) from a fitted model, refit each with glmer() (a fresh
#     fit, as a power loop does), time per refit.  Also times refit() (what bootMer uses).
# All times are wall clock, system.time(...)[["elapsed"]], single-threaded lme4.

suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
data_dir <- if (length(args) >= 1 && nzchar(args[1])) args[1] else file.path("..", "shared", "data")
N <- if (length(args) >= 2) as.integer(args[2]) else 100L
skip_power <- length(args) >= 3 && args[3] == "1"

emit <- function(x) {
  s <- if (requireNamespace("jsonlite", quietly = TRUE))
    as.character(jsonlite::toJSON(x, auto_unbox = TRUE, digits = NA, null = "null"))
  else stop("jsonlite needed")
  cat("@@MIXBOOT_JSON@@", s, "\n", sep = "")
}
el <- function(expr) system.time(expr)[["elapsed"]]

cbpp <- read.csv(file.path(data_dir, "cbpp.csv"))
for (v in c("herd", "period", "obs")) cbpp[[v]] <- factor(cbpp[[v]])
vb <- read.csv(file.path(data_dir, "verbagg.csv"))
for (v in c("item", "id", "Gender", "btype", "situ", "mode")) vb[[v]] <- factor(vb[[v]])

# (a) cbpp bootMer
m_cb <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbpp,
              family = binomial)
stat <- function(x) c(fixef(x), getME(x, "theta"))
invisible(bootMer(m_cb, stat, nsim = 2, seed = 2))           # warm-up
bt <- NULL
t_boot <- el(bt <- suppressWarnings(bootMer(m_cb, stat, nsim = N, seed = 1)))
n_fail <- sum(!stats::complete.cases(bt$t))
cat(sprintf("cbpp bootMer nsim=%d: %.2f s (%.1f s per 1000), failed %d\n",
            N, t_boot, 1000 * t_boot / N, n_fail))

# (b) VerbAgg fit
fv <- r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)
t_vb <- vapply(1:3, function(i) el(glmer(fv, data = vb, family = binomial)), 0)
cat(sprintf("verbagg glmer: min %.2f s (runs %s)\n", min(t_vb),
            paste(sprintf("%.2f", t_vb), collapse = ", ")))

# (c) crossed Bernoulli power loop
pw <- NULL
if (!skip_power && N > 0) {
  set.seed(1)
  d <- expand.grid(subj = factor(1:30), item = factor(1:20))
  d$x <- ifelse(as.integer(d$item) %% 2 == 0, 0.5, -0.5)
  d$y <- rbinom(nrow(d), 1, 0.5)        # placeholder response, only to build the model
  m0 <- suppressMessages(suppressWarnings(glmer(y ~ x + (1 | subj) + (1 | item), data = d,
                                                family = binomial)))
  # set the generating parameters: beta = (0, 0.8), sd(subj) = 1, sd(item) = 0.5
  ys <- simulate(m0, nsim = N, seed = 1,
                 newparams = list(beta = c("(Intercept)" = 0, x = 0.8),
                                  theta = c("subj.(Intercept)" = 1, "item.(Intercept)" = 0.5)))
  nwarn <- 0L; pvals <- numeric(N)
  t_pow <- el(for (i in seq_len(N)) {
    d$y <- ys[[i]]
    mi <- withCallingHandlers(glmer(y ~ x + (1 | subj) + (1 | item), data = d, family = binomial),
                              warning = function(w) { nwarn <<- nwarn + 1L
                                                      invokeRestart("muffleWarning") },
                              message = function(m) invokeRestart("muffleMessage"))
    pvals[i] <- coef(summary(mi))["x", 4]
  })
  d$y <- ys[[1]]
  m1 <- suppressMessages(glmer(y ~ x + (1 | subj) + (1 | item), data = d, family = binomial))
  t_ref <- el(for (i in seq_len(N)) suppressMessages(suppressWarnings(refit(m1, ys[[i]]))))
  pw <- list(nsim = N, seconds = t_pow, seconds_per_fit = t_pow / N,
             refit_seconds = t_ref, refit_seconds_per_fit = t_ref / N,
             power = mean(pvals < 0.05), n_warnings = nwarn)
  cat(sprintf("power loop 30x20: %d glmer fits %.2f s (%.3f s/fit), refit %.3f s/fit, power %.2f\n",
              N, t_pow, t_pow / N, t_ref / N, mean(pvals < 0.05)))
}

emit(list(version = as.character(packageVersion("lme4")), R = R.version.string, N = N,
          cbpp_bootmer_seconds = t_boot, cbpp_bootmer_per_1000 = 1000 * t_boot / N,
          cbpp_bootmer_failed = n_fail,
          verbagg_fit_seconds = min(t_vb), verbagg_fit_runs = t_vb,
          power = pw, load = unname(tryCatch(as.numeric(strsplit(readLines("/proc/loadavg"),
                                                                    " ")[[1]][1:3]),
                                             error = function(e) NULL))))
