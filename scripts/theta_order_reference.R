# lme4's order of theta when several random terms share a number of levels or `||` splits a term.
# Run from the repository root: Rscript scripts/theta_order_reference.R
# Writes tests/data/theta_order.csv and tests/data/theta_order_reference.json.
suppressMessages({library(lme4); library(jsonlite)})
set.seed(1)
n <- 600
d <- data.frame(g1 = factor(sample(1:40, n, TRUE)), g2 = factor(sample(1:12, n, TRUE)), x = rnorm(n))
d$y <- 1 + 0.5 * d$x + rnorm(40)[d$g1] + rnorm(12)[d$g2] + 0.4 * rnorm(12)[d$g2] * d$x + rnorm(n)
write.csv(d, "tests/data/theta_order.csv", row.names = FALSE)
forms <- c("y ~ x + (1 + x || g2) + (1 | g1)", "y ~ x + (1 | g1) + (1 + x || g2)",
           "y ~ x + (1 + x || g1) + (1 | g2)", "y ~ x + (1 | g2) + (0 + x | g1) + (1 | g1)",
           "y ~ x + (x || g2) + (x | g1)")
out <- lapply(forms, function(f) {
  m <- lmer(as.formula(f), data = d, REML = FALSE)
  th <- getME(m, "theta")
  list(formula = f, theta_names = names(th), theta = unname(th), deviance = deviance(m),
       lme4 = as.character(packageVersion("lme4")))
})
writeLines(toJSON(out, digits = 15, auto_unbox = TRUE, pretty = TRUE),
           "tests/data/theta_order_reference.json")
