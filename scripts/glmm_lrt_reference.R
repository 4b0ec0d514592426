# Reference numbers for mb.lrt on GLMMs: lme4's anova() of nested glmer fits on cbpp.
#
# Run from the repository root (R with lme4 and jsonlite; a few seconds):
#     Rscript scripts/glmm_lrt_reference.R [data_dir]
# data_dir defaults to ../shared/data.  Writes tests/data/glmm_lrt_reference.json.
#
# Fits use tight settings (bobyqa both stages, tolPwrss 1e-13, small final trust
# radius) so that the deviances are at the optimum to ~1e-7 and the comparison with
# mixboot's fits is not blurred by glmer's default stopping rules.  Each comparison
# stores anova()'s table: npar, AIC, BIC, logLik, deviance, Chisq, Df, Pr(>Chisq).
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
data_dir <- if (length(args) >= 1) args[1] else file.path("..", "shared", "data")
cbpp <- read.csv(file.path(data_dir, "cbpp.csv"))
for (v in c("herd", "period", "obs")) cbpp[[v]] <- factor(cbpp[[v]])

ctrl <- glmerControl(optimizer = "bobyqa", tolPwrss = 1e-13,
                     optCtrl = list(rhoend = 1e-10, maxfun = 1e5))
fit <- function(f) glmer(as.formula(f), data = cbpp, family = binomial, control = ctrl)

comparisons <- list(
  list(id = "cbpp_period",
       small = "cbind(incidence, size - incidence) ~ 1 + (1 | herd)",
       large = "cbind(incidence, size - incidence) ~ period + (1 | herd)"),
  list(id = "cbpp_obs",
       small = "cbind(incidence, size - incidence) ~ period + (1 | herd)",
       large = "cbind(incidence, size - incidence) ~ period + (1 | herd) + (1 | obs)"))

out <- lapply(comparisons, function(cmp) {
  m0 <- fit(cmp$small)
  m1 <- fit(cmp$large)
  a <- as.data.frame(anova(m0, m1))
  c(cmp, list(npar = a$npar, AIC = a$AIC, BIC = a$BIC, logLik = a$logLik,
              deviance = a$deviance, Chisq = a$Chisq[2], Df = a$Df[2],
              p = a[["Pr(>Chisq)"]][2]))
})
res <- list(versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4"))),
            comparisons = out)
writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE),
           file.path("tests", "data", "glmm_lrt_reference.json"))
for (o in out) cat(sprintf("%s: Chisq %.8f Df %d p %.6g\n", o$id, o$Chisq, o$Df, o$p))
