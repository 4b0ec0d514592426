# lme4 reference and timing for models with several terms on one grouping factor
# (mixboot amalgamates them into one block, tests/test_amalgamate.py).
# Usage: Rscript scripts/amalgamate_reference.R [data dir] [output json]
suppressPackageStartupMessages({ library(lme4); library(jsonlite) })
args <- commandArgs(trailingOnly = TRUE)
data_dir <- if (length(args) >= 1) args[1] else "../shared/data"
out <- if (length(args) >= 2) args[2] else "tests/data/amalgamate_reference.json"

ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 2e-4, rhoend = 1e-12, maxfun = 1e5),
                    check.conv.grad = .makeCC("ignore", tol = 2e-3))
one <- function(formula, data, REML) {
  t0 <- proc.time()[["elapsed"]]
  m <- lmer(formula, data = data, REML = REML, control = ctrl)
  el <- proc.time()[["elapsed"]] - t0
  vc <- as.data.frame(VarCorr(m))
  list(
    formula = deparse(formula, width.cutoff = 500L), REML = REML,
    objective = unname(if (REML) REMLcrit(m) else deviance(m)),
    theta = unname(getME(m, "theta")), theta_names = names(getME(m, "theta")),
    beta = unname(fixef(m)), sigma = sigma(m),
    vcov_sd = vc$sdcor, vcov_grp = vc$grp, vcov_var1 = vc$var1,
    ranef = lapply(ranef(m), function(r) unname(as.list(as.data.frame(r)))),
    seconds = el
  )
}

sleep <- read.csv(file.path(data_dir, "sleepstudy.csv"))
sleep$Subject <- factor(sleep$Subject)
# penicillin with two made-up covariates (tests/test_amalgamate.py builds the same)
pen <- read.csv(file.path(data_dir, "penicillin.csv"))
pen$plate <- factor(pen$plate); pen$sample <- factor(pen$sample)
i <- seq_len(nrow(pen))
pen$x <- ((i * 7) %% 11) / 10 - 0.5
pen$z <- ((i * 5) %% 13) / 6 - 1

res <- list(
  sleep_ml = one(Reaction ~ Days + (Days || Subject), sleep, REML = FALSE),
  sleep_reml = one(Reaction ~ Days + (Days || Subject), sleep, REML = TRUE),
  # a diagonal 2-wide first block beside a scalar term
  pen_two = one(diameter ~ x + (1 | plate) + (0 + x | plate) + (1 | sample), pen, REML = FALSE),
  # a 3-wide first block: a correlated pair and a scalar term on plate
  pen_vec = one(diameter ~ x + (1 + x | plate) + (0 + z | plate) + (1 | sample), pen,
                REML = TRUE),
  # the block in the tail (sample has fewer levels than plate)
  pen_tail = one(diameter ~ x + (1 | plate) + (1 | sample) + (0 + x | sample), pen,
                 REML = FALSE)
)
write_json(res, out, digits = NA, auto_unbox = TRUE, pretty = TRUE)

if (length(args) >= 3 && args[3] == "insteval") {
  ie <- read.csv(file.path(data_dir, "insteval.csv"))
  ie$s <- factor(ie$s); ie$d <- factor(ie$d)  # service stays the 0/1 column mixboot sees
  f <- y ~ 1 + service + (1 + service || s) + (1 | d)
  t0 <- proc.time()[["elapsed"]]
  m <- lmer(f, data = ie, REML = FALSE)
  el <- proc.time()[["elapsed"]] - t0
  cat(sprintf("insteval lme4 seconds %.2f deviance %.8f theta %s\n", el, deviance(m),
              paste(format(getME(m, "theta"), digits = 10), collapse = " ")))
}
