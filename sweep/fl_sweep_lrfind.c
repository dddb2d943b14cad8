/* fl_sweep_lrfind: see fl_sweep_lrfind.h. */
#include "fl_sweep_lrfind.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"
#include "fl_file.h"
#include "fl_sbuf.h"
#include "fl_svg.h"

#define BETA 0.7            /* smoothing of the training loss */
#define DIVERGE_FACTOR 4.0  /* diverged: smoothed loss above this x its minimum */
#define MIN_ROUNDS 3        /* before the factor rule applies */

int fl_lrfind_parse(const char *spec, fl_lrfind_t *lf) {
  memset(lf, 0, sizeof *lf);
  lf->min = 1e-4;
  lf->max = 10;
  lf->rounds = 40;
  if (strcmp(spec, "on") != 0 && strcmp(spec, "true") != 0) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
      char *eq = strchr(kv, '='), *end;
      if (!eq)
        return fl_err_set(FL_EINVAL, "--lr-find %s: '%s' is not KEY=VALUE (keys: min, max, rounds)",
                          spec, kv);
      *eq = '\0';
      double v = strtod(eq + 1, &end);
      if (end == eq + 1 || *end || !isfinite(v))
        return fl_err_set(FL_EINVAL, "--lr-find %s: %s=%s is not a number", spec, kv, eq + 1);
      if (!strcmp(kv, "min"))
        lf->min = v;
      else if (!strcmp(kv, "max"))
        lf->max = v;
      else if (!strcmp(kv, "rounds") && v == floor(v) && v >= 3 && v <= 100000)
        lf->rounds = (uint32_t)v;
      else if (!strcmp(kv, "rounds"))
        return fl_err_set(FL_EINVAL, "--lr-find %s: rounds must be an integer in 3..100000", spec);
      else
        return fl_err_set(FL_EINVAL, "--lr-find %s: unknown key '%s' (keys: min, max, rounds)",
                          spec, kv);
    }
  }
  if (!(lf->min > 0) || !(lf->max > lf->min))
    return fl_err_set(FL_EINVAL, "--lr-find %s: needs 0 < min < max (got min=%g, max=%g)", spec,
                      lf->min, lf->max);
  lf->gamma = pow(lf->max / lf->min, 1.0 / (lf->rounds - 1));
  lf->on = 1;
  return 0;
}

void fl_lrfind_apply(const fl_lrfind_t *lf, fl_config_t *c) {
  snprintf(c->lr, sizeof c->lr, "%.17g", lf->min);
  snprintf(c->schedule, sizeof c->schedule, "exp:gamma=%.17g", lf->gamma);
  c->rounds = lf->rounds;
  c->target_accuracy = 0;
}

/* The smoothed training loss of rounds 0..n-1 into s (NAN where the loss
 * is not finite, and from there on). */
static void smooth(const fl_round_metrics_t *r, size_t n, double *s) {
  double avg = 0;
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    double x = r[i].train_loss;
    if (bad || !isfinite(x)) {
      bad = 1;
      s[i] = NAN;
      continue;
    }
    avg = BETA * avg + (1 - BETA) * x;
    s[i] = avg / (1 - pow(BETA, (double)(i + 1)));
  }
}

int fl_lrfind_diverged(const fl_lrfind_t *lf, const fl_round_metrics_t *r, size_t n, char *why,
                       size_t cap) {
  (void)lf;
  if (!n) return 0;
  double *s = malloc(n * sizeof *s);
  if (!s) {
    snprintf(why, cap, "out of memory");
    return 1;
  }
  smooth(r, n, s);
  double lo = INFINITY;
  for (size_t i = 0; i < n; i++)
    if (s[i] < lo) lo = s[i];
  double last = s[n - 1];
  int div = 0;
  if (!isfinite(last)) {
    snprintf(why, cap, "range test: the training loss is not finite at round %u (rate %.4g)",
             r[n - 1].round, r[n - 1].lr);
    div = 1;
  } else if (n >= MIN_ROUNDS && last > DIVERGE_FACTOR * lo) {
    snprintf(why, cap,
             "range test: the loss diverged at round %u (rate %.4g): smoothed %.4g > %g x its "
             "minimum %.4g",
             r[n - 1].round, r[n - 1].lr, last, DIVERGE_FACTOR, lo);
    div = 1;
  } else if (n >= MIN_ROUNDS && last > s[0] && lo < s[0]) {
    /* A network that died (ReLU units off, chance-level predictions) sits
     * at a loss below 4 x the minimum for good: once the loss is back above
     * where the test began, the rest of the range teaches nothing. */
    snprintf(why, cap,
             "range test: the loss diverged at round %u (rate %.4g): smoothed %.4g is back above "
             "its first value %.4g",
             r[n - 1].round, r[n - 1].lr, last, s[0]);
    div = 1;
  }
  free(s);
  return div;
}

fl_lrfind_result_t fl_lrfind_analyse(const fl_round_metrics_t *r, size_t n) {
  fl_lrfind_result_t res = {NAN, NAN, NAN, NAN};
  double *s = n ? malloc(n * sizeof *s) : NULL;
  if (!s) return res;
  smooth(r, n, s);
  size_t at = n;
  for (size_t i = 0; i < n; i++)
    if (isfinite(s[i]) && (at == n || s[i] < s[at])) at = i;
  if (at < n) {
    res.at_min = r[at].lr;
    res.suggested = r[at].lr / 10;
    res.min_loss = s[at];
  }
  /* steepest descent up to the minimum: the most negative slope against
   * log(rate), central differences */
  double best = 0;
  for (size_t i = 1; i + 1 < n && i <= at && at < n; i++) {
    if (!isfinite(s[i - 1]) || !isfinite(s[i + 1]) || !(r[i + 1].lr > r[i - 1].lr)) continue;
    double g = (s[i + 1] - s[i - 1]) / (log(r[i + 1].lr) - log(r[i - 1].lr));
    if (g < best) {
      best = g;
      res.steepest = r[i].lr;
    }
  }
  free(s);
  return res;
}

/* ---- the report ---- */

/* Writes b (rendered in memory) to DIR/NAME atomically and frees it. */
static int write_out(fl_sbuf_t *b, const char *dir, const char *name) {
  int rc = b->err;
  if (rc) {
    rc = fl_err_set(rc, "%s: out of memory", name);
  } else {
    char path[FL_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    rc = fl_file_write_atomic(path, b->p, b->len);
  }
  free(b->p);
  *b = (fl_sbuf_t){0};
  return rc;
}

static void render_csv(fl_sbuf_t *b, const fl_sweep_run_t *runs, size_t num_runs) {
  fl_sbuf_printf(b, "run,config,seed,round,lr,train_loss,smoothed_loss\n");
  for (size_t i = 0; i < num_runs; i++) {
    const fl_sweep_run_t *v = &runs[i];
    double *s = v->num_rounds ? malloc(v->num_rounds * sizeof *s) : NULL;
    if (v->num_rounds && !s) {
      b->err = FL_ENOMEM;
      return;
    }
    smooth(v->rounds, v->num_rounds, s);
    for (size_t j = 0; j < v->num_rounds; j++)
      fl_sbuf_printf(b, "%s,%zu,%" PRIu64 ",%u,%.6g,%.6g,%.6g\n", v->id, v->config, v->seed,
                     v->rounds[j].round, v->rounds[j].lr, v->rounds[j].train_loss, s[j]);
    free(s);
  }
}

static void render_md(fl_sbuf_t *f, const fl_lrfind_t *lf, const fl_sweep_run_t *runs,
                      size_t num_runs) {
  fl_sbuf_printf(f,
          "# Learning-rate range test\n\n"
          "Each run grew the rate from %g to %g by x%.4g per round (at most %u rounds: "
          "`--lr %g --schedule exp:gamma=%.6g`) and stopped when its training loss diverged "
          "(smoothed loss above %g x its minimum or back above its first value, or not "
          "finite). The suggested initial rate is "
          "the rate of the lowest smoothed loss divided by 10 (geometric mean over seeds); the "
          "steepest descent is where the smoothed loss fell fastest against log(rate).\n\n",
          lf->min, lf->max, lf->gamma, lf->rounds, lf->min, lf->gamma, DIVERGE_FACTOR);
  fl_sbuf_printf(f, "| configuration | suggested --lr | lowest loss at | steepest descent at | "
             "lowest smoothed loss |\n|---|---|---|---|---|\n");
  for (size_t k = 0; k < lf->num_configs; k++) {
    const fl_lrfind_result_t *r = &lf->per_config[k];
    fl_sbuf_printf(f, "| %s | %.3g | %.3g | %.3g | %.4g |\n", lf->labels[k], r->suggested, r->at_min,
            r->steepest, r->min_loss);
  }
  if (lf->auto_lr > 0)
    fl_sbuf_printf(f,
            "\nFor comparison, `--lr auto` (1/sqrt(number of parameters)) gives %.3g for this "
            "model.\n",
            lf->auto_lr);
  fl_sbuf_printf(f, "\n## Runs\n\n| run | seed | rounds | stopped because |\n|---|---|---|---|\n");
  for (size_t i = 0; i < num_runs; i++)
    fl_sbuf_printf(f, "| %s | %" PRIu64 " | %zu | %s |\n", runs[i].id, runs[i].seed, runs[i].num_rounds,
            runs[i].why && runs[i].why[0] ? runs[i].why : "reached the last rate");
  fl_sbuf_printf(f, "\nlr_find.svg draws the smoothed training loss against the rate; lr_find.csv "
             "holds every round.\n");
}

/* A run's smoothed loss against its rate, for fl_svg_series. */
typedef struct {
  const fl_sweep_run_t *run;
  const double *smoothed;
} svg_run_t;

static double svg_point(const void *ctx, size_t i, double *x) {
  const svg_run_t *c = ctx;
  *x = c->run->rounds[i].lr;
  return c->smoothed[i];
}

/* lr_find.svg: one panel, the smoothed training loss of every run against
 * the rate (log scale), a dashed mark at each configuration's suggestion,
 * a legend by configuration. */
static void render_svg(fl_sbuf_t *bp, const fl_lrfind_t *lf, const fl_sweep_run_t *runs,
                       size_t num_runs) {
  fl_sbuf_t b = *bp;
  double **sm = calloc(num_runs ? num_runs : 1, sizeof *sm);
  if (!sm) {
    bp->err = FL_ENOMEM;
    return;
  }
  fl_svg_range_t yr = FL_SVG_RANGE_INIT;
  for (size_t i = 0; i < num_runs; i++) {
    size_t n = runs[i].num_rounds;
    if (!n || !(sm[i] = malloc(n * sizeof *sm[i]))) continue;
    smooth(runs[i].rounds, n, sm[i]);
    /* the loss up to its divergence: beyond 4 x the minimum the axis would
     * flatten the part that matters */
    double lo = INFINITY;
    for (size_t j = 0; j < n; j++)
      if (sm[i][j] < lo) lo = sm[i][j];
    for (size_t j = 0; j < n; j++)
      if (sm[i][j] <= DIVERGE_FACTOR * lo) fl_svg_range_add(&yr, sm[i][j]);
  }
  const size_t legend_rows = lf->num_configs < 10 ? lf->num_configs : 10;
  const int height = FL_SVG_PANEL_TOP + FL_SVG_PANEL_H + 50 + 18 * (int)legend_rows;
  fl_svg_begin(&b, height, "Learning-rate range test: smoothed training loss against the rate");
  fl_svg_axis_t xa = {floor(log10(lf->min)), ceil(log10(lf->max)), 1, 1};
  fl_svg_axis_t ya;
  const double top = FL_SVG_PANEL_TOP;
  fl_svg_panel_begin(&b, "smoothed training loss vs rate (rate on a log scale)", FL_SVG_Y_AUTO,
                     &yr, &xa, top, 1, &ya);
  for (size_t i = 0; i < num_runs; i++) {
    if (!sm[i]) continue;
    svg_run_t c = {&runs[i], sm[i]};
    size_t n = runs[i].num_rounds;
    /* the line stops where the loss left the chart */
    double lo = INFINITY;
    for (size_t j = 0; j < n; j++)
      if (sm[i][j] < lo) lo = sm[i][j];
    size_t shown = 0;
    while (shown < n && sm[i][shown] <= DIVERGE_FACTOR * lo)
      shown++;
    fl_svg_series(&b, fl_svg_color(runs[i].config), shown, svg_point, &c, &xa, &ya, top, 0);
  }
  for (size_t k = 0; k < lf->num_configs; k++) {
    double v = lf->per_config[k].suggested;
    if (!fl_svg_plottable(v, &xa)) continue;
    double x = FL_SVG_PLOT_L + fl_svg_axis_frac(&xa, v) * (FL_SVG_PLOT_R - FL_SVG_PLOT_L);
    fl_sbuf_printf(&b,
                   "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"%s\" "
                   "stroke-dasharray=\"4,3\"/>\n",
                   x, top, x, top + FL_SVG_PANEL_H, fl_svg_color(k));
  }
  fl_sbuf_printf(&b, "</g>\n");
  for (size_t k = 0; k < legend_rows; k++) {
    char label[600];
    snprintf(label, sizeof label, "%s: suggested --lr %.3g (dashed)", lf->labels[k],
             lf->per_config[k].suggested);
    fl_svg_legend_entry(&b, FL_SVG_PLOT_L, top + FL_SVG_PANEL_H + 40 + 18 * (double)k,
                        fl_svg_color(k), label);
  }
  fl_sbuf_printf(&b, "</svg>\n");
  for (size_t i = 0; i < num_runs; i++)
    free(sm[i]);
  free(sm);
  *bp = b;
}

int fl_lrfind_report(fl_lrfind_t *lf, const char *dir, const fl_sweep_config_t *configs,
                     size_t num_configs, const fl_sweep_run_t *runs, size_t num_runs) {
  fl_lrfind_free(lf); /* an earlier report's results */
  lf->per_config = calloc(num_configs ? num_configs : 1, sizeof *lf->per_config);
  lf->labels = calloc(num_configs ? num_configs : 1, sizeof *lf->labels);
  if (!lf->per_config || !lf->labels) return fl_err_set(FL_ENOMEM, "out of memory");
  lf->num_configs = num_configs;
  for (size_t k = 0; k < num_configs; k++) {
    if (!(lf->labels[k] = strdup(configs[k].label))) return fl_err_set(FL_ENOMEM, "out of memory");
    double ls = 0, lm = 0, lst = 0, loss = 0;
    size_t n = 0, nst = 0;
    for (size_t i = 0; i < num_runs; i++) {
      if (runs[i].config != k) continue;
      fl_lrfind_result_t r = fl_lrfind_analyse(runs[i].rounds, runs[i].num_rounds);
      if (!isfinite(r.suggested)) continue;
      ls += log(r.suggested);
      lm += log(r.at_min);
      loss += r.min_loss;
      n++;
      if (isfinite(r.steepest)) lst += log(r.steepest), nst++;
    }
    fl_lrfind_result_t *pc = &lf->per_config[k];
    pc->suggested = n ? exp(ls / n) : NAN;
    pc->at_min = n ? exp(lm / n) : NAN;
    pc->min_loss = n ? loss / n : NAN;
    pc->steepest = nst ? exp(lst / nst) : NAN;
  }
  fl_sbuf_t b = {0};
  render_csv(&b, runs, num_runs);
  int rc = write_out(&b, dir, "lr_find.csv");
  render_md(&b, lf, runs, num_runs);
  if (!rc) rc = write_out(&b, dir, "lr_find.md");
  render_svg(&b, lf, runs, num_runs);
  if (!rc) rc = write_out(&b, dir, "lr_find.svg");
  free(b.p);
  return rc;
}

void fl_lrfind_print(const fl_lrfind_t *lf, FILE *f) {
  for (size_t k = 0; k < lf->num_configs; k++) {
    const fl_lrfind_result_t *r = &lf->per_config[k];
    fprintf(f, "suggested initial rate%s%s: --lr %.3g (lowest loss at %.3g, steepest descent at %.3g)",
            lf->num_configs > 1 ? " for " : "", lf->num_configs > 1 ? lf->labels[k] : "",
            r->suggested, r->at_min, r->steepest);
    if (lf->auto_lr > 0) fprintf(f, "; --lr auto gives %.3g", lf->auto_lr);
    fprintf(f, "\n");
  }
}

void fl_lrfind_free(fl_lrfind_t *lf) {
  for (size_t k = 0; lf->labels && k < lf->num_configs; k++)
    free(lf->labels[k]);
  free(lf->labels);
  free(lf->per_config);
  lf->labels = NULL;
  lf->per_config = NULL;
  lf->num_configs = 0;
}
