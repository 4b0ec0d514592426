# Reference numbers for the R forms of formulas: lme4's fits of I(), scale(),
# factor(), poly(), log(), offset(), functions of the response, odd column names,
# functions in random terms, and read.csv's missing-value rules.
#
# Run from the repository root (R with lme4 and jsonlite; seconds):
#     Rscript scripts/formula_reference.R
# Writes tests/data/formula_reference.json and the small data sets it builds:
#     tests/data/formula_odd_names.csv  sleepstudy with columns "Reaction time", "Days elapsed"
#     tests/data/formula_na.csv         sleepstudy with NA / empty cells and a text column
#                                       whose levels are "None", "NaN", "null", "" and "x"
# Data: ../shared/data/*.csv.
#
# Each case: id, the formula as lme4 got it (formula_r), the formula mixboot is given
# (formula, the same unless R and Python spell a form differently), data (a shared data
# set name or a CSV under tests/data), REML, objective (-2 logLik: the REML criterion of a
# REML fit, the deviance of an ML fit), fixef by name, theta, nobs.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

data_dir <- file.path("..", "shared", "data")
test_data <- file.path("tests", "data")
out_file <- file.path(test_data, "formula_reference.json")
read <- function(name) read.csv(file.path(data_dir, paste0(name, ".csv")))

datasets <- list(
  sleepstudy = read("sleepstudy"),
  cake = read("cake"),
  penicillin = read("penicillin")
)

# --- built data sets ---------------------------------------------------------------
ss <- datasets$sleepstudy
odd <- data.frame(`Reaction time` = ss$Reaction, `Days elapsed` = ss$Days,
                  Subject = ss$Subject, check.names = FALSE)
write.csv(odd, file.path(test_data, "formula_odd_names.csv"), row.names = FALSE)

# Missing values as read.csv sees them: "NA" and empty cells in a numeric column are
# missing; in a text column "None", "NaN", "null" and "" are ordinary levels.
na_txt <- data.frame(Reaction = format(ss$Reaction, digits = 10, trim = TRUE),
                     Days = as.character(ss$Days), Subject = ss$Subject,
                     shift = rep(c("None", "NaN", "null", "", "x"), length.out = nrow(ss)),
                     Day = ss$Days, stringsAsFactors = FALSE)
na_txt$Reaction[c(3, 40, 77)] <- "NA"
na_txt$Reaction[c(5, 101)] <- ""
na_txt$Days[c(11, 150)] <- ""
na_txt$Days[c(60)] <- "NA"
lines <- c(paste(names(na_txt), collapse = ","),
           apply(na_txt, 1, function(r) paste(r, collapse = ",")))
writeLines(lines, file.path(test_data, "formula_na.csv"))
datasets[["tests/data/formula_odd_names.csv"]] <-
  read.csv(file.path(test_data, "formula_odd_names.csv"), check.names = FALSE)
datasets[["tests/data/formula_na.csv"]] <- read.csv(file.path(test_data, "formula_na.csv"))

# --- cases ---------------------------------------------------------------------------
case <- function(id, formula_r, data, REML = TRUE, formula = formula_r) {
  list(id = id, formula_r = formula_r, formula = formula, data = data, REML = REML)
}
cases <- list(
  case("I_power_reml", "Reaction ~ Days + I(Days^2) + (1 + Days | Subject)", "sleepstudy"),
  case("I_power_ml", "Reaction ~ Days + I(Days^2) + (1 + Days | Subject)", "sleepstudy",
       REML = FALSE),
  case("I_arith", "Reaction ~ I((Days - 4.5)/2) + I(Days^3/100) + I(-Days * 2 + 1 > 0) + (1 | Subject)",
       "sleepstudy"),
  case("scale", "Reaction ~ scale(Days) + (1 + scale(Days) | Subject)", "sleepstudy"),
  case("scale_noscale", "Reaction ~ scale(Days, scale = FALSE) + (1 | Subject)", "sleepstudy",
       REML = FALSE),
  case("center", "Reaction ~ scale(Days, scale = FALSE) + (1 | Subject)", "sleepstudy",
       formula = "Reaction ~ center(Days) + (1 | Subject)"),
  case("factor", "angle ~ recipe + factor(temp) + (1 | recipe:replicate)", "cake"),
  case("as_factor", "angle ~ recipe * as.factor(temp) + (1 | recipe:replicate)", "cake",
       REML = FALSE),
  case("factor_days", "Reaction ~ factor(Days) + (1 | Subject)", "sleepstudy"),
  case("as_numeric", "angle ~ recipe + as.numeric(temp) + (1 | replicate)", "cake"),
  case("log_sqrt", "Reaction ~ log(Days + 1) + sqrt(Days) + (1 | Subject)", "sleepstudy"),
  case("exp_abs", "Reaction ~ exp(Days/10) + abs(Days - 4.5) + (1 | Subject)", "sleepstudy",
       REML = FALSE),
  case("poly2", "Reaction ~ poly(Days, 2) + (1 + Days | Subject)", "sleepstudy"),
  case("poly3_ml", "Reaction ~ poly(Days, 3) + (1 | Subject)", "sleepstudy", REML = FALSE),
  case("offset", "Reaction ~ Days + offset(10 * Days) + (1 + Days | Subject)", "sleepstudy"),
  case("offset_fn", "Reaction ~ offset(log(Days + 1)) + Days + (1 | Subject)", "sleepstudy",
       REML = FALSE),
  case("log_response", "log(Reaction) ~ Days + (1 + Days | Subject)", "sleepstudy"),
  case("sqrt_response_ml", "sqrt(Reaction) ~ Days + (1 | Subject)", "sleepstudy", REML = FALSE),
  case("backticks", "`Reaction time` ~ `Days elapsed` + (1 + `Days elapsed` | Subject)",
       "tests/data/formula_odd_names.csv"),
  case("Q", "`Reaction time` ~ `Days elapsed` + (1 | Subject)",
       "tests/data/formula_odd_names.csv",
       formula = "Q('Reaction time') ~ Q('Days elapsed') + (1 | Subject)"),
  # lme4 cannot evaluate factor(g) on the grouping side ("couldn't evaluate grouping
  # factor ... within model frame"); mixboot reads (1 | factor(g)) as (1 | g).
  case("random_factor", "Reaction ~ Days + (1 | Subject)", "sleepstudy",
       formula = "Reaction ~ Days + (1 | factor(Subject))"),
  case("random_scale", "Reaction ~ Days + (1 | Subject) + (0 + scale(Days) | Subject)",
       "sleepstudy"),
  case("random_I", "Reaction ~ Days + I(Days^2) + (1 + I(Days^2) | Subject)", "sleepstudy",
       REML = FALSE),
  case("penicillin_factor", "diameter ~ 1 + (1 | plate) + (1 | sample)", "penicillin",
       formula = "diameter ~ 1 + (1 | factor(plate)) + (1 | as.factor(sample))"),
  case("csv_missing", "Reaction ~ Days + shift + (1 | Subject)", "tests/data/formula_na.csv"),
  # R evaluates scale() and poly() on the rows of the data before it drops the rows
  # with missing values (scale() over the non-missing values of its own argument).
  case("scale_missing", "Reaction ~ scale(Days) + (1 | Subject)", "tests/data/formula_na.csv"),
  case("poly_missing", "Reaction ~ poly(Day, 2) + shift + (1 + scale(Day) | Subject)",
       "tests/data/formula_na.csv", REML = FALSE)
)

fit_case <- function(cs) {
  dat <- datasets[[cs$data]]
  m <- lmer(as.formula(cs$formula_r), data = dat, REML = cs$REML)
  fe <- fixef(m)
  c(cs, list(objective = -2 * as.numeric(logLik(m)),   # the REML criterion of a REML fit
             loglik = as.numeric(logLik(m)),
             fixef = as.list(fe), theta = unname(getME(m, "theta")),
             nobs = nobs(m)))
}
out <- lapply(cases, fit_case)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), out_file)
cat("wrote", out_file, "with", length(out), "cases\n")
