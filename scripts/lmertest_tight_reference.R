# lmerTest's inference at a tight optimum: the cases of ../shared/reference/lmertest_inference.json
# refitted with the optimizer run to convergence.
#
# The shipped reference was made with lme4's default optimizer settings, which stop slightly
# above the optimum (e.g. 2.6e-8 above it for the ML fit of sleepstudy); that moves tiny
# p-values by up to 2.4e-3 relative and some predictions by 1.4e-6.  This script refits every
# case with tight tolerances (nloptwrap, then bobyqa restarted from the best theta, keeping
# the lowest objective), so that mixboot can be held to 1e-4 (p) and 1e-6 (predictions).
#
# Run from the repository root (R with lme4, lmerTest and jsonlite; seconds):
#     Rscript scripts/lmertest_tight_reference.R
# Reads ../shared/reference/lmertest_inference.json (cases: id, dataset, formula, REML,
# predict_rows) and ../shared/data/*.csv.  Writes tests/data/lmertest_tight_reference.json.
#
# Each case: id, dataset, formula, REML, objective (-2 logLik: the REML criterion of a REML
# fit, the deviance of an ML fit), optimizer (the one that reached it), theta, terms,
# estimate, se, satterthwaite_df / _t / _p (summary(m, ddf = "Satterthwaite")), anova_terms,
# anova_F / _numdf / _dendf / _p (type III, ddf = "Satterthwaite"; empty for intercept-only
# models), predict_rows (0-based), predict_conditional (predict(m, newdata)) and
# predict_population (re.form = NA).

suppressPackageStartupMessages({
  library(lmerTest)
  library(jsonlite)
})

shared <- file.path("..", "shared")
in_file <- file.path(shared, "reference", "lmertest_inference.json")
out_file <- file.path("tests", "data", "lmertest_tight_reference.json")
cases <- fromJSON(in_file, simplifyVector = FALSE)

tight <- list(
  nloptwrap = lmerControl(optimizer = "nloptwrap",
                          optCtrl = list(ftol_abs = 1e-14, ftol_rel = 1e-14, xtol_abs = 1e-12,
                                         xtol_rel = 0, maxeval = 1e5)),
  bobyqa = lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 1e-3, rhoend = 1e-12,
                                                            maxfun = 1e5))
)

# The lowest objective over: nloptwrap from lme4's default start, then each optimizer
# restarted from the best theta so far, until a round improves it by less than 1e-13.
tight_fit <- function(formula, dat, REML) {
  best <- lmer(formula, data = dat, REML = REML, control = tight$nloptwrap)
  best_opt <- "nloptwrap"
  repeat {
    before <- deviance_of(best)
    for (opt in names(tight)) {
      m <- lmer(formula, data = dat, REML = REML, control = tight[[opt]],
                start = getME(best, "theta"))
      if (deviance_of(m) < deviance_of(best)) {
        best <- m
        best_opt <- opt
      }
    }
    if (before - deviance_of(best) < 1e-13) break
  }
  attr(best, "optimizer_used") <- best_opt
  best
}
deviance_of <- function(m) -2 * as.numeric(logLik(m))

fit_case <- function(cs) {
  dat <- read.csv(file.path(shared, "data", paste0(cs$dataset, ".csv")))
  m <- tight_fit(as.formula(cs$formula), dat, cs$REML)
  ct <- coef(summary(m, ddf = "Satterthwaite"))
  an <- anova(m, ddf = "Satterthwaite", type = 3)
  rows <- unlist(cs$predict_rows)
  new <- dat[rows + 1, , drop = FALSE]
  list(id = cs$id, dataset = cs$dataset, formula = cs$formula, REML = cs$REML,
       objective = deviance_of(m), optimizer = attr(m, "optimizer_used"),
       theta = unname(getME(m, "theta")),
       terms = rownames(ct), estimate = unname(ct[, "Estimate"]),
       se = unname(ct[, "Std. Error"]),
       satterthwaite_df = unname(ct[, "df"]), satterthwaite_t = unname(ct[, "t value"]),
       satterthwaite_p = unname(ct[, "Pr(>|t|)"]),
       anova_terms = I(rownames(an)), anova_F = I(unname(an[["F value"]])),
       anova_numdf = I(unname(an[["NumDF"]])), anova_dendf = I(unname(an[["DenDF"]])),
       anova_p = I(unname(an[["Pr(>F)"]])),
       predict_rows = I(rows),
       predict_conditional = unname(predict(m, newdata = new)),
       predict_population = unname(predict(m, newdata = new, re.form = NA)))
}

out <- lapply(cases, fit_case)
for (cs in out) cat(sprintf("%-20s %-9s objective %.12f\n", cs$id, cs$optimizer, cs$objective))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), out_file)
cat("wrote", out_file, "with", length(out), "cases\n")
