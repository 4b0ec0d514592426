# glmer fits run to a TIGHT optimum, for mixboot's GLMM tests (tests/test_glmm_tight.py).
#
# Run from the repository root (R with lme4, numDeriv, minqa, jsonlite; a few minutes):
#     Rscript scripts/glmer_tight_reference.R [data_dir]
# data_dir defaults to ../shared/data.  Writes tests/data/glmer_tight_reference.json.
#
# Why: lme4's glmer defaults stop early.  Stage 2 is Nelder-Mead with loose step tolerances
# (xt = 5e-4 * xst), PIRLS stops at tolPwrss = 1e-7, and the stored criterion uses the log-det
# from the weights of the previous PIRLS iterate (see scripts/glmer_notes.md).  The default
# fixef are then off by up to ~1e-3 relative and the deriv12 Hessian SEs by up to ~1% (its
# finite differences see the PIRLS noise).  Here each case is refitted with
#   glmerControl(optimizer = "bobyqa" (both stages), tolPwrss = 1e-13,
#                optCtrl = list(rhoend = 1e-10, maxfun = 1e5)),
# then polished: the stage-2 deviance function (update(m, devFunOnly = TRUE), same tight
# tolPwrss) is minimized again with minqa::bobyqa from the found optimum (small rhobeg,
# rhoend = 1e-12), keeping whichever point has the lower criterion.  At the final point the
# Hessian of that deviance function over (theta, beta) is taken with numDeriv::hessian
# (Richardson extrapolation), checked against lme4:::deriv12 with two step sizes, and
# se_hessian = sqrt(diag(2 * solve(H)))[beta]  (H is the Hessian of -2 logLik).
#
# Cases: the 5 cases of ../shared/reference/lme4_glmer_fits.json, plus the cases of
# tests/data/glmer_reference.json with nAGQ 0 or 9 or a Poisson offset.
#
# Fields per case:
#   id, source (which reference file), dataset, formula, family, link, weights, nAGQ,
#   objective       -2 logLik as lme4 reports it, at the tight optimum (= the tight deviance
#                   function's value there).  For nAGQ > 1 lme4 OMITS the y-only constant c0
#                   (glmer_notes.md (c)); objective_full = objective + c0 is the proper AGQ
#                   -2 logLik (c0 is 0 for nAGQ <= 1, where the criterion is complete).
#   c0, objective_full
#   fixef, theta, theta_names
#   se_hessian      Hessian SEs at the tight optimum (null for nAGQ = 0: lme4 has no Hessian
#                   there and its SEs come from RX)
#   se_hessian_d12  the same from lme4:::deriv12 with delta 1e-4 and 1e-3 (stability check)
#   se_rx           sqrt(diag(pp$unsc())) at the tight optimum = vcov(m, use.hessian = FALSE)
#   se              what lme4's vcov() default would be at the tight optimum (se_hessian for
#                   nAGQ >= 1, se_rx for nAGQ = 0)
#   default         lme4 glmer defaults: objective, fixef, theta, se (vcov default), fevals
#   devfun_at_default  the tight deviance function at the default estimates
#   devfun_at_tight    the tight deviance function at the tight estimates (== objective)
#                   (devfun_at_default - devfun_at_tight > 0 shows that the default stopped
#                   early; for nAGQ = 0 the deviance function is over theta only)
#   stages          criterion after the tight glmer fit and after the polish
#   seconds

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
  library(numDeriv)
  library(minqa)
})

args <- commandArgs(trailingOnly = TRUE)
data_dir <- if (length(args) >= 1) args[1] else file.path("..", "shared", "data")
shared_ref <- file.path(dirname(normalizePath(data_dir)), "reference", "lme4_glmer_fits.json")
local_ref <- file.path("tests", "data", "glmer_reference.json")
out_file <- file.path("tests", "data", "glmer_tight_reference.json")
read <- function(name) read.csv(file.path(data_dir, name))

cbpp <- read("cbpp.csv")
for (v in c("herd", "period", "obs")) cbpp[[v]] <- factor(cbpp[[v]])
gt <- read("grouseticks.csv")
for (v in c("INDEX", "BROOD", "YEAR", "LOCATION")) gt[[v]] <- factor(gt[[v]])
vb <- read("verbagg.csv")
for (v in c("item", "id", "Gender", "btype", "situ", "mode")) vb[[v]] <- factor(vb[[v]])
vb$r2f <- factor(ifelse(vb$r2 == 1, "Y", "N"), levels = c("N", "Y"))
datasets <- list(cbpp.csv = cbpp, grouseticks.csv = gt, verbagg.csv = vb)

TOL_PWRSS <- 1e-13
tight_ctrl <- glmerControl(optimizer = "bobyqa", tolPwrss = TOL_PWRSS,
                           optCtrl = list(rhoend = 1e-10, maxfun = 1e5))

one <- function(x) if (length(x) == 1) unname(x) else x
named <- function(x) as.list(x)

quiet <- function(expr) withCallingHandlers(expr,
  warning = function(w) invokeRestart("muffleWarning"),
  message = function(m) invokeRestart("muffleMessage"))

do_fit <- function(formula, dat, fam, nAGQ, weights, control = NULL, devFunOnly = FALSE) {
  f <- as.formula(formula)
  cl <- list(f, data = dat, family = fam, nAGQ = nAGQ, devFunOnly = devFunOnly)
  if (!is.null(weights)) cl$weights <- dat[[weights]]
  if (!is.null(control)) cl$control <- control
  quiet(do.call(glmer, cl))
}

c0_of <- function(m) {
  fam <- family(m); r <- m@resp
  unname(fam$aic(r$y, r$n, r$mu, r$weights, 0) - sum(fam$dev.resids(r$y, r$mu, r$weights)))
}

fit_case <- function(id, source, dataset, formula, family, link, nAGQ, weights) {
  t0 <- proc.time()[["elapsed"]]
  dat <- datasets[[dataset]]
  fam <- get(family)(link = link)
  nAGQ <- as.integer(nAGQ)

  # lme4 defaults
  m0 <- do_fit(formula, dat, fam, nAGQ, weights)
  th0 <- getME(m0, "theta"); be0 <- fixef(m0)
  se0 <- sqrt(diag(as.matrix(quiet(vcov(m0)))))

  # tight glmer fit
  m1 <- do_fit(formula, dat, fam, nAGQ, weights, control = tight_ctrl)
  th1 <- getME(m1, "theta"); be1 <- fixef(m1)
  nth <- length(th1); nbe <- length(be1)
  lower_th <- getME(m1, "lower")

  # tight deviance function (stage 2 for nAGQ >= 1: over c(theta, beta); nAGQ = 0: theta)
  devfun <- do_fit(formula, dat, fam, nAGQ, weights, control = tight_ctrl, devFunOnly = TRUE)
  rho <- environment(devfun)
  if (nAGQ == 0) {
    p1 <- unname(th1); lower <- lower_th
  } else {
    p1 <- unname(c(th1, be1)); lower <- c(lower_th, rep(-Inf, nbe))
  }
  # evaluate twice: the PIRLS state then starts from the point itself
  devfun(p1); f1 <- devfun(p1)
  # polish
  pol <- quiet(minqa::bobyqa(p1, devfun, lower = lower,
                             control = list(rhobeg = 1e-3, rhoend = 1e-12, maxfun = 1e5)))
  devfun(pol$par); f2 <- devfun(pol$par)
  pfin <- if (f2 < f1) pol$par else p1
  devfun(pfin); ffin <- devfun(pfin)

  if (nAGQ == 0) {
    theta <- pfin; beta <- rho$pp$beta(1)
    p_def <- unname(th0)
  } else {
    theta <- pfin[seq_len(nth)]; beta <- pfin[nth + seq_len(nbe)]
    p_def <- unname(c(th0, be0))
  }
  names(beta) <- names(be1)
  se_rx <- sqrt(diag(as.matrix(rho$pp$unsc())))
  names(se_rx) <- names(be1)
  # check against vcov(m1, use.hessian = FALSE) when the polish did not move
  rx_m1 <- sqrt(diag(as.matrix(quiet(vcov(m1, use.hessian = FALSE)))))

  devfun(p_def); f_def <- devfun(p_def)
  devfun(pfin); ffin2 <- devfun(pfin)

  se_h <- NULL; se_d12 <- NULL; hess_ok <- NULL
  if (nAGQ >= 1) {
    H <- numDeriv::hessian(devfun, pfin)
    H <- (H + t(H)) / 2
    V <- 2 * solve(H)
    se_h <- sqrt(diag(V))[nth + seq_len(nbe)]
    names(se_h) <- names(be1)
    se_d12 <- list()
    for (dl in c(1e-4, 1e-3)) {
      devfun(pfin)
      d <- lme4:::deriv12(devfun, pfin, delta = dl)
      Hd <- (d$Hessian + t(d$Hessian)) / 2
      s <- sqrt(diag(2 * solve(Hd)))[nth + seq_len(nbe)]
      names(s) <- names(be1)
      se_d12[[format(dl)]] <- named(s)
    }
    hess_ok <- all(eigen(H, symmetric = TRUE, only.values = TRUE)$values > 0)
    devfun(pfin); devfun(pfin)
  }

  c0 <- if (nAGQ > 1) c0_of(m1) else 0
  fm <- family(m1)
  secs <- proc.time()[["elapsed"]] - t0
  out <- list(
    id = id, source = source, dataset = dataset, formula = formula,
    family = fm$family, link = fm$link, weights = weights, nAGQ = nAGQ,
    objective = ffin, c0 = c0, objective_full = ffin + c0,
    fixef = named(beta), theta = one(unname(theta)), theta_names = one(names(th1)),
    se = named(if (nAGQ >= 1) se_h else se_rx),
    se_hessian = if (is.null(se_h)) NULL else named(se_h),
    se_hessian_d12 = se_d12, hessian_pd = hess_ok,
    se_rx = named(se_rx), se_rx_glmer_fit = named(rx_m1),
    default = list(objective = -2 * as.numeric(logLik(m0)), fixef = named(be0),
                   theta = one(unname(th0)), se = named(se0), fevals = m0@optinfo$feval,
                   optimizer = m0@optinfo$optimizer),
    devfun_at_default = f_def, devfun_at_tight = ffin2,
    stages = list(glmer_tight = f1, polished = f2,
                  glmer_tight_objective = -2 * as.numeric(logLik(m1)),
                  glmer_tight_fevals = m1@optinfo$feval, polish_fevals = pol$feval),
    tolPwrss = TOL_PWRSS, seconds = secs)
  cat(sprintf("%-30s obj %.10f  default-tight %.3e  glmerfit-tight %.3e  polish %.3e  max|dbeta| vs default %.2e  %.1fs\n",
              id, ffin, f_def - ffin, f1 - ffin, f1 - f2,
              max(abs(beta - be0) / abs(be0)), secs))
  if (!is.null(se_h)) cat(sprintf("    se_h %s | d12(1e-4) %s | d12(1e-3) %s\n",
      paste(signif(se_h, 8), collapse = " "),
      paste(signif(unlist(se_d12[[1]]), 8), collapse = " "),
      paste(signif(unlist(se_d12[[2]]), 8), collapse = " ")))
  out
}

shared_cases <- fromJSON(shared_ref, simplifyVector = FALSE)
local_cases <- fromJSON(local_ref, simplifyVector = FALSE)$cases
keep_local <- Filter(function(c) c$nAGQ %in% c(0L, 9L) || grepl("offset(", c$formula, fixed = TRUE),
                     local_cases)
todo <- c(lapply(shared_cases, function(c) c(c, source = "shared/reference/lme4_glmer_fits.json")),
          lapply(keep_local, function(c) c(c, source = "tests/data/glmer_reference.json")))
only <- if (length(args) >= 2) args[-1] else NULL
if (!is.null(only)) todo <- Filter(function(c) c$id %in% only, todo)

cases <- lapply(todo, function(c)
  fit_case(c$id, c$source, c$dataset, c$formula, c$family, c$link, c$nAGQ, c$weights))

si <- sessionInfo()
versions <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                 Matrix = as.character(packageVersion("Matrix")),
                 minqa = as.character(packageVersion("minqa")),
                 numDeriv = as.character(packageVersion("numDeriv")),
                 jsonlite = as.character(packageVersion("jsonlite")),
                 platform = si$platform,
                 generated = format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z"))
if (is.null(only)) {
  writeLines(toJSON(list(versions = versions, cases = cases), auto_unbox = TRUE, digits = NA,
                    null = "null", na = "null", pretty = TRUE), out_file)
  cat("wrote", out_file, "\n")
}
