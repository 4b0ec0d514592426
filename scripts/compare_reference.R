# Reference numbers for mixboot.compare: lme4's anova() and pbkrtest's PBmodcomp().
#
# Run from the repository root (R with lme4, pbkrtest and jsonlite; a few minutes):
#     Rscript scripts/compare_reference.R
# Writes tests/data/compare_reference.json.  Data: ../shared/data/*.csv.
#
# "anova" cases: every column of lme4's anova table, rows in the table's order.
# "pbmodcomp" cases: PBmodcomp(large, small, nsim) with set.seed(seed) just before
# (pbkrtest 0.5.2 does not pass its own `seed` argument on to the simulation, so the
# RNG is seeded here; cl = 1 keeps the run serial and reproducible).  Stored: the
# observed LRT and df, PBmodcomp's PBtest p-value (which counts only positive
# reference values: (1 + #{ref > LRT}) / (1 + #{ref > 0})), and, computed here from
# its reference distribution, the p-value over all finite values
# (1 + #{ref >= LRT}) / (1 + n_valid), which is mixboot's definition.

suppressPackageStartupMessages({
  library(lme4)
  library(pbkrtest)
})

data_dir <- file.path("..", "shared", "data")
out_file <- file.path("tests", "data", "compare_reference.json")
read <- function(name) read.csv(file.path(data_dir, paste0(name, ".csv")))

ss <- read("sleepstudy"); ss$Subject <- factor(ss$Subject)
ck <- read("cake"); ck$replicate <- factor(ck$replicate)
pn <- read("penicillin")
ps <- read("pastes")

fmt <- function(m) paste(deparse(formula(m), width.cutoff = 500L), collapse = "")

anova_case <- function(id, dataset, REML, models) {
  fits <- lapply(models, function(f) lmer(as.formula(f), data = get(dataset), REML = REML))
  labels <- paste0("m", seq_along(fits))
  tab <- suppressMessages(do.call(anova, c(unname(fits), list(model.names = labels))))
  rows <- match(rownames(tab), labels)
  list(id = id, dataset = dataset, REML = REML, formulas = unname(models[rows]),
       npar = tab$npar, AIC = tab$AIC, BIC = tab$BIC, logLik = tab$logLik,
       deviance = tab$deviance, Chisq = tab$Chisq, Df = tab$Df,
       p = tab[["Pr(>Chisq)"]])
}

pb_case <- function(id, dataset, large, small, REML, nsim, seed) {
  d <- get(dataset)
  lg <- lmer(as.formula(large), data = d, REML = REML)
  sm <- lmer(as.formula(small), data = d, REML = REML)
  set.seed(seed)
  secs <- system.time(pb <- PBmodcomp(lg, sm, nsim = nsim, seed = seed, cl = 1))[["elapsed"]]
  ref <- as.numeric(pb$ref)
  ok <- is.finite(ref)
  tobs <- unname(pb$LRTstat["tobs"])
  list(id = id, dataset = dataset, large = large, small = small, REML = REML,
       nsim = nsim, seed = seed, seconds = secs,
       lrt = tobs, df = unname(pb$LRTstat["df"]),
       p_chisq = pb$test["LRT", "p.value"], p_pbkrtest = pb$test["PBtest", "p.value"],
       n_valid = sum(ok), n_positive = sum(ref[ok] > 0),
       n_zero = sum(ref[ok] == 0), n_negative = sum(ref[ok] < 0),
       p_all = (1 + sum(ref[ok] >= tobs)) / (1 + sum(ok)),
       ref_quantiles = unname(quantile(ref[ok], c(0.5, 0.9, 0.95, 0.99))))
}

anova_cases <- list(
  anova_case("sleepstudy_reml4", "ss", TRUE,
             c("Reaction ~ 1 + Days + (1 + Days|Subject)", "Reaction ~ 1 + (1|Subject)",
               "Reaction ~ 1 + Days + (1 + Days||Subject)", "Reaction ~ 1 + Days + (1|Subject)")),
  anova_case("cake_ml", "ck", FALSE,
             c("angle ~ recipe * temp + (1|recipe:replicate)",
               "angle ~ recipe + temp + (1|recipe:replicate)",
               "angle ~ temp + (1|recipe:replicate)")),
  anova_case("penicillin_ml", "pn", FALSE,
             c("diameter ~ 1 + (1|plate) + (1|sample)", "diameter ~ 1 + (1|plate)")),
  anova_case("pastes_reml", "ps", TRUE,
             c("strength ~ 1 + (1|batch) + (1|batch:cask)", "strength ~ 1 + (1|batch:cask)"))
)

nsim <- as.integer(Sys.getenv("COMPARE_NSIM", "2000"))
pb_cases <- list(
  pb_case("cake_recipe", "ck", "angle ~ recipe + temp + (1|recipe:replicate)",
          "angle ~ temp + (1|recipe:replicate)", FALSE, nsim, 20261121L),
  pb_case("pastes_batch", "ps", "strength ~ 1 + (1|batch) + (1|batch:cask)",
          "strength ~ 1 + (1|batch:cask)", TRUE, nsim, 20261122L),
  pb_case("sleepstudy_corr", "ss", "Reaction ~ 1 + Days + (1 + Days|Subject)",
          "Reaction ~ 1 + Days + (1 + Days||Subject)", TRUE, nsim, 20261123L)
)

out <- list(
  note = paste("lme4 anova() and pbkrtest PBmodcomp() on ../shared/data;",
               "made by scripts/compare_reference.R"),
  R = R.version.string,
  lme4 = as.character(packageVersion("lme4")),
  pbkrtest = as.character(packageVersion("pbkrtest")),
  anova = anova_cases,
  pbmodcomp = pb_cases)
dir.create(dirname(out_file), showWarnings = FALSE, recursive = TRUE)
jsonlite::write_json(out, out_file, auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null")
cat("wrote", out_file, "\n")
