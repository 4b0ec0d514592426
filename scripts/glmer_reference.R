# Reference numbers for mixboot's GLMMs: lme4::glmer fits (Laplace, nAGQ = 0, adaptive GH).
#
# Run from the repository root (R with lme4 and jsonlite; under a minute):
#     Rscript scripts/glmer_reference.R [data_dir]
# data_dir defaults to ../shared/data.  Writes tests/data/glmer_reference.json.
#
# Output layout: a JSON OBJECT {"versions": {...}, "cases": [...]}.  Each case has the fields of
# ../shared/reference/lme4_glmer_fits.json (id, dataset, formula, family, link, weights, nAGQ,
# nobs, ngrps, fixef, se, theta, theta_names, logLik, objective, AIC, BIC, varcorr, singular,
# warnings, seconds, fevals; a length-1 vector is stored as a number, like that file) plus
#   se_rx            sqrt(diag(vcov(m, use.hessian = FALSE))): SEs from RX (the PIRLS
#                    Fisher-scoring weights at the optimum, sigma = 1).  `se` is lme4's DEFAULT
#                    vcov(m), which for nAGQ >= 1 uses the finite-difference Hessian of the
#                    deviance over (theta, beta) (see scripts/glmer_notes.md); for nAGQ = 0 no
#                    Hessian is computed, so se == se_rx.
#   se_hessian       the Hessian SEs when available (null for nAGQ = 0).
#   deviance_laplace m@devcomp$cmp[["dev"]], which mkMerMod sets to opt$fval, i.e. the value
#                    of the function the optimizer minimized, at the optimum.  For nAGQ = 0 and
#                    1 that is the Laplace criterion aic(mu) + ||u||^2 + log|L|^2; for nAGQ > 1
#                    it is the adaptive Gauss-Hermite criterion.  logLik.merMod returns
#                    -dev/2, so deviance_laplace == objective == -2 logLik (no constant offset:
#                    family$aic already holds the full log-density).
#   laplace_by_hand  family$aic(y, n, mu, wt) + sum(u^2) + ldL2, recomputed here from the fit's
#                    pieces (checks the statement above; equals deviance_laplace for nAGQ <= 1).
#   agq_by_hand      (nAGQ > 1 only) the AGQ criterion recomputed in R from GHrule(nAGQ) at the
#                    fit's conditional modes, in lme4's convention (see glmer_notes.md, (c)):
#                    equals deviance_laplace to ~1e-8 relative.  NOTE: for nAGQ > 1 lme4's
#                    criterion (hence its logLik/objective/AIC) OMITS the y-only constant
#                    c0 = family$aic(mu) - sum(devResid(mu)), so it is ~84 below the Laplace
#                    value on cbpp and not comparable with nAGQ = 1 fits.
#   agq_full_by_hand (nAGQ > 1 only) agq_by_hand + c0: the proper AGQ -2 log-likelihood, which
#                    is comparable with the Laplace objective (184.054 vs 184.053 on cbpp).
#   cmp              all of m@devcomp$cmp (ldL2, ldRX2, wrss, ussq, pwrss, drsum, dev, ...).
#   conditional_modes ranef(m) for the small models: {factor: {"levels": [...], term: [...]}}.
#   u                getME(m, "u") (spherical modes), small models only.
#   optimizer, conv  optimizer used in the last stage, its convergence code.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
data_dir <- if (length(args) >= 1) args[1] else file.path("..", "shared", "data")
out_file <- file.path("tests", "data", "glmer_reference.json")
read <- function(name) read.csv(file.path(data_dir, name))

cbpp <- read("cbpp.csv")
for (v in c("herd", "period", "obs")) cbpp[[v]] <- factor(cbpp[[v]])
gt <- read("grouseticks.csv")
for (v in c("INDEX", "BROOD", "YEAR", "LOCATION")) gt[[v]] <- factor(gt[[v]])
vb <- read("verbagg.csv")
for (v in c("item", "id", "Gender", "btype", "situ", "mode")) vb[[v]] <- factor(vb[[v]])
vb$r2f <- factor(ifelse(vb$r2 == 1, "Y", "N"), levels = c("N", "Y"))
datasets <- list(cbpp.csv = cbpp, grouseticks.csv = gt, verbagg.csv = vb)

one <- function(x) if (length(x) == 1) unname(x) else x
named <- function(x) as.list(x)

laplace_by_hand <- function(m) {
  fam <- family(m); r <- m@resp
  aic <- fam$aic(r$y, r$n, r$mu, r$weights, sum(r$devResid()))
  unname(aic + sum(getME(m, "u")^2) + m@devcomp$cmp[["ldL2"]])
}

# Adaptive Gauss-Hermite criterion for one scalar random effect, recomputed in R.
agq_by_hand <- function(m, nAGQ) {
  fam <- family(m); r <- m@resp
  fac <- getME(m, "flist")[[1]]
  th <- getME(m, "theta")[[1]]
  u0 <- getME(m, "u")
  Z <- getME(m, "Z")                       # n x q indicator matrix
  eta_fix <- as.vector(getME(m, "X") %*% fixef(m)) + r$offset
  devres <- function(u) {
    mu <- fam$linkinv(eta_fix + as.vector(Z %*% (th * u)))
    fam$dev.resids(r$y, mu, r$weights)
  }
  grp <- as.integer(fac)
  devc <- function(u) as.vector(tapply(devres(u), grp, sum)) + u^2
  W <- r$sqrtWrkWt()^2                      # PIRLS working weights at the optimum
  L2 <- 1 + th^2 * as.vector(tapply(W, grp, sum))   # diag(L)^2 (diagonal for one scalar term)
  sd <- 1 / sqrt(L2)
  g0 <- devc(u0)
  GH <- GHrule(nAGQ)                        # columns z, w (sum 1, N(0,1) weights), ldnorm
  mult <- 0
  for (k in seq_len(nrow(GH))) {
    z <- GH[k, "z"]; w <- GH[k, "w"]
    gk <- devc(u0 + z * sd)
    mult <- mult + w * exp(-(gk - g0) / 2 + z^2 / 2)
  }
  mu0 <- r$mu
  c0 <- fam$aic(r$y, r$n, mu0, r$weights, 0) - sum(fam$dev.resids(r$y, mu0, r$weights))
  agq <- sum(g0) + sum(log(L2)) - 2 * sum(log(mult))
  # lme4's value (what it minimizes and reports as -2 logLik) leaves out c0 = aic - sum(devres),
  # the y-only "saturated" part of -2 log p(y | u); the full AGQ -2 log-likelihood adds it back.
  c(lme4 = unname(agq), full = unname(agq + c0))
}

varcorr_rows <- function(m) {
  vc <- as.data.frame(VarCorr(m))
  lapply(seq_len(nrow(vc)), function(i)
    list(grp = vc$grp[i], var1 = vc$var1[i],
         var2 = if (is.na(vc$var2[i])) NULL else vc$var2[i],
         vcov = vc$vcov[i], sdcor = vc$sdcor[i]))
}

fit_case <- function(id, dataset, formula, family, nAGQ = 1L, weights = NULL,
                     small = TRUE, note = NULL) {
  dat <- datasets[[dataset]]
  fam <- eval(parse(text = family))
  ws <- character(0)
  t0 <- proc.time()[["elapsed"]]
  m <- withCallingHandlers(
    if (is.null(weights)) glmer(as.formula(formula), data = dat, family = fam, nAGQ = nAGQ)
    else glmer(as.formula(formula), data = dat, family = fam, nAGQ = nAGQ,
               weights = dat[[weights]]),
    warning = function(w) { ws <<- c(ws, conditionMessage(w)); invokeRestart("muffleWarning") },
    message = function(msg) { ws <<- c(ws, trimws(conditionMessage(msg)))
                              invokeRestart("muffleMessage") })
  secs <- proc.time()[["elapsed"]] - t0
  ws <- unique(c(ws, m@optinfo$conv$lme4$messages))
  se_def <- sqrt(diag(as.matrix(suppressWarnings(vcov(m)))))
  se_rx <- sqrt(diag(as.matrix(suppressWarnings(vcov(m, use.hessian = FALSE)))))
  has_h <- !is.null(m@optinfo$derivs$Hessian)
  se_h <- if (has_h) sqrt(diag(as.matrix(vcov(m, use.hessian = TRUE)))) else NULL
  ll <- logLik(m)
  agq <- if (nAGQ > 1) agq_by_hand(m, nAGQ) else NULL
  fm <- family(m)
  th <- getME(m, "theta")
  out <- list(
    id = id, dataset = dataset, formula = formula, family = fm$family, link = fm$link,
    weights = weights, nAGQ = as.integer(nAGQ), nobs = nobs(m),
    ngrps = as.list(ngrps(m)),
    fixef = named(fixef(m)), se = named(se_def), se_rx = named(se_rx),
    se_hessian = if (is.null(se_h)) NULL else named(se_h),
    theta = one(unname(th)), theta_names = one(names(th)),
    logLik = as.numeric(ll), objective = -2 * as.numeric(ll),
    AIC = AIC(m), BIC = BIC(m), varcorr = varcorr_rows(m),
    singular = isSingular(m), warnings = if (length(ws)) ws else NULL,
    seconds = secs, fevals = m@optinfo$feval,
    deviance_laplace = m@devcomp$cmp[["dev"]],
    laplace_by_hand = laplace_by_hand(m),
    agq_by_hand = if (nAGQ > 1) agq[["lme4"]] else NULL,
    agq_full_by_hand = if (nAGQ > 1) agq[["full"]] else NULL,
    cmp = as.list(m@devcomp$cmp),
    optimizer = m@optinfo$optimizer, conv = m@optinfo$conv$opt,
    note = note)
  if (small) {
    re <- ranef(m)
    out$conditional_modes <- lapply(re, function(d) c(list(levels = rownames(d)), as.list(d)))
    out$u <- unname(getME(m, "u"))
  }
  cat(sprintf("%-32s obj %.10f theta %s %s\n", id, out$objective,
              paste(format(th, digits = 8), collapse = ","),
              if (length(ws)) paste("[", paste(ws, collapse = " | "), "]") else ""))
  out
}

cb <- "cbind(incidence, size - incidence) ~ period + (1 | herd)"
cases <- list(
  fit_case("cbpp_binomial_agq0", "cbpp.csv", cb, "binomial()", 0L),
  fit_case("cbpp_binomial_laplace", "cbpp.csv", cb, "binomial()", 1L),
  fit_case("cbpp_binomial_agq9", "cbpp.csv", cb, "binomial()", 9L),
  fit_case("cbpp_binomial_agq25", "cbpp.csv", cb, "binomial()", 25L),
  fit_case("cbpp_binomial_prop_weights", "cbpp.csv", "incidence/size ~ period + (1 | herd)",
           "binomial()", 1L, weights = "size",
           note = "proportion response with weights = size; same fit as cbpp_binomial_laplace"),
  fit_case("cbpp_binomial_cloglog", "cbpp.csv", cb, "binomial(link = \"cloglog\")", 1L),
  fit_case("verbagg_bernoulli_agq0", "verbagg.csv",
           "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", "binomial()", 0L,
           small = FALSE),
  fit_case("verbagg_bernoulli_factor_agq0", "verbagg.csv",
           "r2f ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", "binomial()", 0L,
           small = FALSE, note = "r2f = factor(N/Y), N first: success = 'Y'; same numbers as r2"),
  fit_case("verbagg_bernoulli_laplace", "verbagg.csv",
           "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", "binomial()", 1L,
           small = FALSE),
  fit_case("grouseticks_poisson_agq0", "grouseticks.csv",
           "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "poisson()",
           0L, small = FALSE),
  fit_case("grouseticks_poisson_laplace", "grouseticks.csv",
           "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "poisson()",
           1L, small = FALSE),
  fit_case("cbpp_poisson_offset_laplace", "cbpp.csv",
           "incidence ~ period + offset(log(size)) + (1 | herd)", "poisson()", 1L),
  fit_case("cbpp_poisson_offset_agq5", "cbpp.csv",
           "incidence ~ period + offset(log(size)) + (1 | herd)", "poisson()", 5L),
  fit_case("cbpp_binomial_slope", "cbpp.csv",
           "cbind(incidence, size - incidence) ~ period + (1 + as.numeric(period) | herd)",
           "binomial()", 1L,
           note = "random intercept + slope on the numeric period (1..4) with correlation"),
  fit_case("cbpp_binomial_slope_numeric", "cbpp.csv",
           "cbind(incidence, size - incidence) ~ as.numeric(period) + (1 + as.numeric(period) | herd)",
           "binomial()", 1L,
           note = "numeric period as fixed and random slope, correlated"),
  fit_case("cbpp_binomial_obs_laplace", "cbpp.csv",
           "cbind(incidence, size - incidence) ~ period + (1 | herd) + (1 | obs)",
           "binomial()", 1L, note = "observation-level random effect (two scalar terms)")
)

si <- sessionInfo()
versions <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                 Matrix = as.character(packageVersion("Matrix")),
                 jsonlite = as.character(packageVersion("jsonlite")),
                 minqa = as.character(packageVersion("minqa")),
                 platform = si$platform, blas = si$BLAS, lapack = si$LAPACK,
                 generated = format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z"))
dir.create(dirname(out_file), showWarnings = FALSE, recursive = TRUE)
writeLines(toJSON(list(versions = versions, cases = cases), auto_unbox = TRUE, digits = NA,
                  null = "null", na = "null", pretty = TRUE), out_file)
cat("wrote", out_file, "\n")
