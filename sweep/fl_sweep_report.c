/* fl_sweep_report: see fl_sweep_report.h.
 *
 * The three files are rendered in memory (fl_sbuf, bounded) and written
 * atomically. Everything a person reads is derived from one ranking, made
 * once: the runs that ran to their end or were stopped by halving count;
 * failed runs and runs not run are listed, not scored. */
#include "fl_sweep_report.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"
#include "fl_file.h"
#include "fl_sbuf.h"
#include "fl_svg.h"

/* ---- scores ---- */

typedef double (*metric_fn)(const fl_round_metrics_t *r);

/* A round's accuracy and loss: on the test set, or when there is none, by
 * federated evaluation; NAN if neither was measured that round. */
static double round_accuracy(const fl_round_metrics_t *r) {
  if (!isnan(r->test_accuracy)) return r->test_accuracy;
  return r->fed_eval_clients ? r->fed_eval_accuracy : NAN;
}
static double round_loss(const fl_round_metrics_t *r) {
  if (!isnan(r->test_loss)) return r->test_loss;
  return r->fed_eval_clients ? r->fed_eval_loss : NAN;
}
static double round_lr(const fl_round_metrics_t *r) {
  return r->lr;
}

double fl_sweep_score(const fl_sweep_run_t *run, fl_rank_by_t by, uint32_t upto, double target) {
  if (!run || !run->rounds) return NAN;
  /* A run that ended before `upto` (target reached, failed) has what it has. */
  size_t n = upto && upto < run->num_rounds ? upto : run->num_rounds;
  if (n == 0 || (by == FL_RANK_TARGET && !(target > 0))) return NAN;
  double last = NAN, best = NAN;
  for (size_t i = 0; i < n; i++) {
    double a = round_accuracy(&run->rounds[i]);
    if (!isfinite(a)) continue;
    /* >=, as the engine decides that the target is reached. */
    if (by == FL_RANK_TARGET && a >= target) return run->rounds[i].round;
    last = a;
    best = fmax(best, a);
  }
  switch (by) {
  case FL_RANK_FINAL: return last;
  case FL_RANK_BEST: return best;
  case FL_RANK_TARGET: return INFINITY;
  }
  return NAN;
}

/* A configuration's entry with its sort keys: smaller first, NAN last,
 * then the configuration index. */
typedef struct {
  double key, key2;
  fl_sweep_rank_t r;
} ranked_t;

static int cmp_nan_last(double a, double b) {
  int na = isnan(a) != 0, nb = isnan(b) != 0;
  if (na || nb) return na - nb;
  return (a > b) - (a < b);
}

static int cmp_ranked(const void *pa, const void *pb) {
  const ranked_t *a = pa, *b = pb;
  int c = cmp_nan_last(a->key, b->key);
  if (!c) c = cmp_nan_last(a->key2, b->key2);
  return c ? c : (a->r.config > b->r.config) - (a->r.config < b->r.config);
}

/* The mean of the values seen so far, updated in place: it cannot overflow
 * where a sum would. */
static void mean_add(double *mean, size_t *n, double v) {
  *mean += (v - *mean) / (double)++*n;
}

static int cmp_double(const void *pa, const void *pb) {
  double a = *(const double *)pa, b = *(const double *)pb;
  return (a > b) - (a < b);
}

/* The mean and sample standard deviation of v[0..n), n > 0. v is sorted
 * first, so that they do not depend on the order the runs came in: equal
 * scores in another order stay an exact tie. */
static void mean_std(double *v, size_t n, double *mean, double *std) {
  qsort(v, n, sizeof *v, cmp_double);
  double m = 0, q = 0;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    mean_add(&m, &k, v[i]); /* n equal values: exactly that value */
  for (size_t i = 0; i < n; i++)
    q += (v[i] - m) * (v[i] - m);
  *mean = m;
  *std = n > 1 ? sqrt(q / (double)(n - 1)) : 0;
}

/* One configuration's counted runs: their finite scores and final
 * accuracies are at [at, at + n) and [at, at + num_final) of the scratch
 * arrays. */
typedef struct {
  size_t included; /* counted runs */
  size_t at, n, inf, num_final;
} gather_t;

size_t fl_sweep_rank(const fl_sweep_run_t *runs, size_t num_runs, const uint8_t *include,
                     size_t num_configs, fl_rank_by_t by, uint32_t upto, double target,
                     fl_sweep_rank_t *out) {
  if ((num_runs && !runs) || (num_configs && !out)) {
    fl_err_set(FL_EINVAL, "fl_sweep_rank: NULL array");
    return (size_t)-1;
  }
  for (size_t i = 0; i < num_runs; i++) {
    if (runs[i].config >= num_configs) {
      fl_err_set(FL_EINVAL, "fl_sweep_rank: run %zu is of configuration %zu of %zu", i,
                 runs[i].config, num_configs);
      return (size_t)-1;
    }
  }
  size_t k = (size_t)-1, nr = num_runs ? num_runs : 1, nc = num_configs ? num_configs : 1;
  gather_t *g = calloc(nc, sizeof *g);
  ranked_t *ranked = calloc(nc, sizeof *ranked);
  double *scores = malloc(nr * sizeof *scores), *finals = malloc(nr * sizeof *finals);
  if (!g || !ranked || !scores || !finals) {
    fl_err_set(FL_ENOMEM, "out of memory to rank %zu configurations", num_configs);
    goto out;
  }
  for (size_t i = 0; i < num_runs; i++)
    if (!include || include[i]) g[runs[i].config].included++;
  for (size_t c = 1; c < num_configs; c++)
    g[c].at = g[c - 1].at + g[c - 1].included;
  for (size_t i = 0; i < num_runs; i++) {
    if (include && !include[i]) continue;
    gather_t *x = &g[runs[i].config];
    double s = fl_sweep_score(&runs[i], by, upto, target);
    if (isnan(s)) continue;
    if (isinf(s))
      x->inf++;
    else
      scores[x->at + x->n++] = s;
    double f = fl_sweep_score(&runs[i], FL_RANK_FINAL, upto, target);
    if (!isnan(f)) finals[x->at + x->num_final++] = f;
  }
  k = 0;
  for (size_t c = 0; c < num_configs; c++) {
    const gather_t *x = &g[c];
    if (!x->included) continue;
    fl_sweep_rank_t r = {.config = c, .mean = NAN, .std = NAN, .final_mean = NAN};
    r.runs = x->n + x->inf;
    if (x->n) mean_std(scores + x->at, x->n, &r.mean, &r.std);
    if (x->inf) r.mean = INFINITY, r.std = NAN;
    double unused;
    if (x->num_final) mean_std(finals + x->at, x->num_final, &r.final_mean, &unused);
    /* Lower is better for rounds to the target, higher for accuracies; ties
     * at the target (all +inf: none reached it) go to the better final
     * accuracy. */
    if (by == FL_RANK_TARGET)
      ranked[k++] = (ranked_t){r.mean, -r.final_mean, r};
    else
      ranked[k++] = (ranked_t){-r.mean, 0, r};
  }
  qsort(ranked, k, sizeof *ranked, cmp_ranked);
  for (size_t i = 0; i < k; i++)
    out[i] = ranked[i].r;
out:
  free(g);
  free(ranked);
  free(scores);
  free(finals);
  return k;
}

/* ---- the report's common facts ---- */

int fl_sweep_counted(const fl_sweep_run_t *run) {
  return run && (run->status == FL_SWEEP_DONE || run->status == FL_SWEEP_HALVED);
}

/* A ranked configuration with the stage it reached and its place in the
 * score order, for a stable sort by stage. */
typedef struct {
  size_t reached, place;
  fl_sweep_rank_t r;
} staged_t;

static int cmp_staged(const void *pa, const void *pb) {
  const staged_t *a = pa, *b = pb;
  if (a->reached != b->reached) return a->reached < b->reached ? 1 : -1;
  return (a->place > b->place) - (a->place < b->place);
}

size_t fl_sweep_rank_final(const fl_sweep_run_t *runs, size_t num_runs, size_t num_configs,
                           fl_rank_by_t by, double target, int halving, fl_sweep_rank_t *out) {
  uint8_t *counted = calloc(num_runs ? num_runs : 1, 1);
  if (!counted) {
    fl_err_set(FL_ENOMEM, "out of memory to rank %zu runs", num_runs);
    return (size_t)-1;
  }
  for (size_t i = 0; i < num_runs; i++)
    counted[i] = (uint8_t)fl_sweep_counted(&runs[i]);
  size_t k = fl_sweep_rank(runs, num_runs, counted, num_configs, by, 0, target, out);
  staged_t *st = halving && k != (size_t)-1 && k ? calloc(k, sizeof *st) : NULL;
  if (st) {
    for (size_t j = 0; j < k; j++) {
      st[j] = (staged_t){0, j, out[j]};
      for (size_t i = 0; i < num_runs; i++)
        if (counted[i] && runs[i].config == out[j].config && runs[i].num_rounds > st[j].reached)
          st[j].reached = runs[i].num_rounds;
    }
    qsort(st, k, sizeof *st, cmp_staged);
    for (size_t j = 0; j < k; j++)
      out[j] = st[j].r;
  } else if (halving && k && k != (size_t)-1) {
    k = (size_t)-1;
    fl_err_set(FL_ENOMEM, "out of memory to rank %zu configurations", num_configs);
  }
  free(st);
  free(counted);
  return k;
}

/* What every file of the report is drawn from. */
typedef struct {
  const fl_sweep_report_opts_t *o;
  const fl_sweep_config_t *configs;
  size_t num_configs;
  const fl_sweep_run_t *runs;
  size_t num_runs;
  uint8_t *counted;      /* (num_runs) ran to its end or was halved: in the ranking */
  fl_sweep_rank_t *rank; /* (num_ranked) by o->rank_by over the counted runs, all rounds */
  size_t num_ranked;
  const char **names; /* (num_names) the grid's names, in order of first appearance */
  size_t num_names;
  size_t *num_status; /* (num_configs, 4) runs of each configuration by status */
} report_t;

static const char *status_name(fl_sweep_status_t s) {
  switch (s) {
  case FL_SWEEP_PENDING: return "pending";
  case FL_SWEEP_DONE: return "done";
  case FL_SWEEP_HALVED: return "halved";
  case FL_SWEEP_FAILED: return "failed";
  }
  return "unknown";
}

/* The value of grid name `name` in configuration c, or NULL. */
static const char *config_value(const fl_sweep_config_t *c, const char *name) {
  for (size_t i = 0; i < c->num_params; i++)
    if (!strcmp(c->names[i], name)) return c->values[i];
  return NULL;
}

/* The last value of a run's rounds that was measured (not NAN), or NAN. */
static double last_measured(const fl_sweep_run_t *run, metric_fn get) {
  for (size_t i = run->num_rounds; i-- > 0;) {
    double v = get(&run->rounds[i]);
    if (!isnan(v)) return v;
  }
  return NAN;
}

/* How many of configuration c's counted runs never reached the target. */
static size_t not_reached(const report_t *rp, size_t c) {
  size_t n = 0;
  for (size_t i = 0; i < rp->num_runs; i++)
    if (rp->counted[i] && rp->runs[i].config == c &&
        isinf(fl_sweep_score(&rp->runs[i], FL_RANK_TARGET, 0, rp->o->target)))
      n++;
  return n;
}

/* A configuration's score as a person reads it: "0.8412 ± 0.0031",
 * "23.5 ± 2.1" rounds, "not reached (2 of 3)", or "-" without one. */
static const char *fmt_score(char *buf, size_t len, const report_t *rp, const fl_sweep_rank_t *r) {
  if (isnan(r->mean))
    snprintf(buf, len, "-");
  else if (isinf(r->mean))
    snprintf(buf, len, "not reached (%zu of %zu)", not_reached(rp, r->config), r->runs);
  else if (rp->o->rank_by == FL_RANK_TARGET)
    snprintf(buf, len, "%.1f ± %.1f", r->mean, r->std);
  else
    snprintf(buf, len, "%.4f ± %.4f", r->mean, r->std);
  return buf;
}

/* "final accuracy", "best accuracy", "rounds to 0.85". */
static const char *score_name(char *buf, size_t len, const fl_sweep_report_opts_t *o) {
  switch (o->rank_by) {
  case FL_RANK_FINAL: snprintf(buf, len, "final accuracy"); break;
  case FL_RANK_BEST: snprintf(buf, len, "best accuracy"); break;
  case FL_RANK_TARGET: snprintf(buf, len, "rounds to %g", o->target); break;
  }
  return buf;
}

/* A configuration's name for a person: its label, or a word for the
 * configuration of a sweep without a grid. */
static const char *config_label(const report_t *rp, size_t c) {
  const char *l = rp->configs[c].label;
  return l && l[0] ? l : "(base configuration)";
}

/* ---- results.csv ---- */

/* Cells end in ','; csv_end_row() turns the last one into the line's end.
 * Text is always quoted (RFC 4180: quotes doubled; commas, quotes and line
 * breaks inside are then safe), numbers never; NULL or NAN is an empty
 * cell. */
static void csv_text(fl_sbuf_t *b, const char *s) {
  if (!s || !s[0]) {
    fl_sbuf_printf(b, ",");
    return;
  }
  fl_sbuf_printf(b, "\"");
  for (const char *q; (q = strchr(s, '"')); s = q + 1)
    fl_sbuf_printf(b, "%.*s\"\"", (int)(q - s), s);
  fl_sbuf_printf(b, "%s\",", s);
}

static void csv_number(fl_sbuf_t *b, const char *fmt, double v) {
  if (!isnan(v)) fl_sbuf_printf(b, fmt, v);
  fl_sbuf_printf(b, ",");
}

static void csv_end_row(fl_sbuf_t *b) {
  if (!b->err && b->len) b->p[b->len - 1] = '\n';
}

static void render_csv(fl_sbuf_t *b, const report_t *rp) {
  static const char *const head1[] = {"id", "config"};
  static const char *const head2[] = {"seed",
                                      "status",
                                      "stop_round",
                                      "rounds",
                                      "final_accuracy",
                                      "best_accuracy",
                                      "final_loss",
                                      "final_train_loss",
                                      "rounds_to_target",
                                      "seconds",
                                      "why"};
  for (size_t i = 0; i < sizeof head1 / sizeof *head1; i++)
    csv_text(b, head1[i]);
  for (size_t i = 0; i < rp->num_names; i++)
    csv_text(b, rp->names[i]);
  for (size_t i = 0; i < sizeof head2 / sizeof *head2; i++)
    csv_text(b, head2[i]);
  csv_end_row(b);

  for (size_t i = 0; i < rp->num_runs; i++) {
    const fl_sweep_run_t *run = &rp->runs[i];
    csv_text(b, run->id);
    fl_sbuf_printf(b, "%zu,", run->config);
    for (size_t k = 0; k < rp->num_names; k++)
      csv_text(b, config_value(&rp->configs[run->config], rp->names[k]));
    fl_sbuf_printf(b, "%" PRIu64 ",", run->seed);
    csv_text(b, status_name(run->status));
    csv_number(b, "%.0f", run->status == FL_SWEEP_HALVED ? (double)run->stop_round : NAN);
    fl_sbuf_printf(b, "%zu,", run->num_rounds);
    csv_number(b, "%.6g", fl_sweep_score(run, FL_RANK_FINAL, 0, 0));
    csv_number(b, "%.6g", fl_sweep_score(run, FL_RANK_BEST, 0, 0));
    csv_number(b, "%.6g", last_measured(run, round_loss));
    csv_number(b, "%.6g", run->num_rounds ? run->rounds[run->num_rounds - 1].train_loss : NAN);
    double t = fl_sweep_score(run, FL_RANK_TARGET, 0, rp->o->target);
    csv_number(b, "%.0f", isfinite(t) ? t : NAN);
    csv_number(b, "%.3f", run->seconds);
    csv_text(b, run->why);
    csv_end_row(b);
  }
}

/* ---- summary.md ---- */

/* The longest run of backticks in s: a code span or block around s needs
 * a longer fence. */
static size_t longest_backticks(const char *s) {
  size_t best = 0, run = 0;
  for (; *s; s++) {
    run = *s == '`' ? run + 1 : 0;
    if (run > best) best = run;
  }
  return best;
}

static void md_fence(fl_sbuf_t *b, size_t n) {
  while (n--)
    fl_sbuf_printf(b, "`");
}

/* s as a code span, safe inside a table cell: line breaks become spaces
 * and '|' is escaped (GitHub's tables split cells on it even there). */
static void md_code(fl_sbuf_t *b, const char *s) {
  if (!s || !s[0]) return;
  size_t fence = longest_backticks(s) + 1;
  /* A span that starts or ends with a backtick needs a space inside the
   * fence, which Markdown strips. */
  const char *pad = s[0] == '`' || s[strlen(s) - 1] == '`' ? " " : "";
  md_fence(b, fence);
  fl_sbuf_printf(b, "%s", pad);
  for (; *s; s++) {
    if (*s == '\n' || *s == '\r' || *s == '\t')
      fl_sbuf_printf(b, " ");
    else if (*s == '|')
      fl_sbuf_printf(b, "\\|");
    else
      fl_sbuf_printf(b, "%c", *s);
  }
  fl_sbuf_printf(b, "%s", pad);
  md_fence(b, fence);
}

/* s as plain text in a table cell or a line: one line, with the characters
 * that Markdown would take as markup escaped. */
static void md_text(fl_sbuf_t *b, const char *s) {
  for (; s && *s; s++) {
    if (*s == '\n' || *s == '\r' || *s == '\t')
      fl_sbuf_printf(b, " ");
    else if (strchr("\\`*_[]<|", *s))
      fl_sbuf_printf(b, "\\%c", *s);
    else
      fl_sbuf_printf(b, "%c", *s);
  }
}

/* The configuration's cells of a table row: one per grid name, or its
 * label when the grid has none. */
static void md_config_cells(fl_sbuf_t *b, const report_t *rp, size_t c) {
  if (!rp->num_names) {
    fl_sbuf_printf(b, " ");
    md_code(b, config_label(rp, c));
    fl_sbuf_printf(b, " |");
    return;
  }
  for (size_t k = 0; k < rp->num_names; k++) {
    fl_sbuf_printf(b, " ");
    md_code(b, config_value(&rp->configs[c], rp->names[k]));
    fl_sbuf_printf(b, " |");
  }
}

static void md_config_head(fl_sbuf_t *b, const report_t *rp, const char *before,
                           const char *after) {
  fl_sbuf_printf(b, "| %s |", before);
  if (!rp->num_names) fl_sbuf_printf(b, " configuration |");
  for (size_t k = 0; k < rp->num_names; k++) {
    fl_sbuf_printf(b, " ");
    md_text(b, rp->names[k]);
    fl_sbuf_printf(b, " |");
  }
  fl_sbuf_printf(b, " %s |\n", after);
}

static void md_counts(fl_sbuf_t *b, const report_t *rp) {
  size_t n[4] = {0};
  for (size_t i = 0; i < rp->num_runs; i++)
    n[rp->runs[i].status]++;
  fl_sbuf_printf(b, "%zu configuration%s, %zu run%s: %zu ran to the end", rp->num_configs,
                 rp->num_configs == 1 ? "" : "s", rp->num_runs, rp->num_runs == 1 ? "" : "s",
                 n[FL_SWEEP_DONE]);
  if (n[FL_SWEEP_HALVED])
    fl_sbuf_printf(b, ", %zu stopped by successive halving", n[FL_SWEEP_HALVED]);
  if (n[FL_SWEEP_FAILED]) fl_sbuf_printf(b, ", %zu failed", n[FL_SWEEP_FAILED]);
  if (n[FL_SWEEP_PENDING]) fl_sbuf_printf(b, ", %zu not run", n[FL_SWEEP_PENDING]);
  fl_sbuf_printf(b, ".\n\n");
}

static void md_how(fl_sbuf_t *b, const report_t *rp) {
  char name[64];
  fl_sbuf_printf(b, "Ranked by **%s**: ", score_name(name, sizeof name, rp->o));
  switch (rp->o->rank_by) {
  case FL_RANK_FINAL:
    fl_sbuf_printf(b, "the accuracy of a run's last evaluated round; higher is better");
    break;
  case FL_RANK_BEST:
    fl_sbuf_printf(b, "the best accuracy of any round of a run; higher is better");
    break;
  case FL_RANK_TARGET:
    fl_sbuf_printf(b,
                   "the first round whose accuracy reached %g; fewer is better, a seed that "
                   "never reached it makes the configuration \"not reached\", and those are "
                   "ordered by their mean final accuracy",
                   rp->o->target);
    break;
  }
  fl_sbuf_printf(b, ". A configuration's score is the mean over its seeds ± their sample standard "
                    "deviation. Accuracy is on the test set, or by federated evaluation where "
                    "there is none. Runs that failed or were not run are not counted.");
  if (rp->o->halving)
    fl_sbuf_printf(b, " After successive halving, configurations that went further rank first "
                      "(a stage is the rounds its runs ran), each stage in score order.");
  fl_sbuf_printf(b, "\n\n");
}

/* The ranking table and the winner. */
static void md_ranking(fl_sbuf_t *b, const report_t *rp) {
  char name[64], score[96];
  fl_sbuf_printf(b, "## Ranking\n\n");
  if (!rp->num_ranked) {
    fl_sbuf_printf(b, "No run has results yet.\n\n");
    return;
  }
  char after[160];
  snprintf(after, sizeof after, "%s (mean ± std) | seeds | final accuracy (mean) | rounds (mean)",
           score_name(name, sizeof name, rp->o));
  md_config_head(b, rp, "rank", after);
  fl_sbuf_printf(b, "|---:|");
  for (size_t k = 0; k < (rp->num_names ? rp->num_names : 1); k++)
    fl_sbuf_printf(b, "---|");
  fl_sbuf_printf(b, "---|---:|---:|---:|\n");
  for (size_t i = 0; i < rp->num_ranked; i++) {
    const fl_sweep_rank_t *r = &rp->rank[i];
    double rounds = 0;
    size_t n = 0;
    for (size_t j = 0; j < rp->num_runs; j++)
      if (rp->counted[j] && rp->runs[j].config == r->config)
        mean_add(&rounds, &n, (double)rp->runs[j].num_rounds);
    fl_sbuf_printf(b, "| %zu |", i + 1);
    md_config_cells(b, rp, r->config);
    fl_sbuf_printf(b, " %s | %zu |", fmt_score(score, sizeof score, rp, r), r->runs);
    if (isnan(r->final_mean))
      fl_sbuf_printf(b, " - |");
    else
      fl_sbuf_printf(b, " %.4f |", r->final_mean);
    fl_sbuf_printf(b, " %.1f |\n", rounds);
  }
  fl_sbuf_printf(b, "\n");

  const fl_sweep_rank_t *w = &rp->rank[0];
  if (isnan(w->mean)) {
    fl_sbuf_printf(b, "**No winner:** no run measured an accuracy.\n\n");
    return;
  }
  if (isinf(w->mean))
    fl_sbuf_printf(b,
                   "**No winner:** no configuration reached %g on every seed; the first of "
                   "them by mean final accuracy is ",
                   rp->o->target);
  else
    fl_sbuf_printf(b, "**Winner:** ");
  md_code(b, config_label(rp, w->config));
  fl_sbuf_printf(b, ", %s %s over %zu seed%s.\n\n", score_name(name, sizeof name, rp->o),
                 fmt_score(score, sizeof score, rp, w), w->runs, w->runs == 1 ? "" : "s");

  /* Its first counted run reproduces it; the others differ by the seed. */
  size_t first = rp->num_runs, others = 0;
  for (size_t j = 0; j < rp->num_runs; j++) {
    if (!rp->counted[j] || rp->runs[j].config != w->config) continue;
    if (first == rp->num_runs)
      first = j;
    else
      others++;
  }
  fl_sbuf_printf(b, "To run it again (seed %" PRIu64 "), from this folder:\n\n",
                 rp->runs[first].seed);
  fl_sbuf_printf(b, "    fedlr-sim --config runs/%s/config.ini\n\n", rp->runs[first].id);
  if (others) {
    fl_sbuf_printf(b, "Its other seeds' runs:");
    for (size_t j = first + 1, k = 0; j < rp->num_runs; j++) {
      if (!rp->counted[j] || rp->runs[j].config != w->config) continue;
      fl_sbuf_printf(b, "%s ", k++ ? "," : "");
      md_code(b, rp->runs[j].id);
    }
    fl_sbuf_printf(b, ".\n\n");
  }
  fl_sbuf_printf(b, "Every run's folder `runs/<id>/` holds the config.ini that reproduces it.\n\n");
}

/* A configuration that successive halving stopped: its halved runs. */
typedef struct {
  size_t config, first, runs; /* first: the run whose why is shown */
  uint32_t stop_lo, stop_hi;
} stopped_t;

static int cmp_stopped(const void *pa, const void *pb) {
  const stopped_t *a = pa, *b = pb;
  if (a->stop_lo != b->stop_lo) return a->stop_lo < b->stop_lo ? -1 : 1;
  return (a->config > b->config) - (a->config < b->config);
}

/* When and why each stopped configuration was stopped, earliest first. */
static void md_halving(fl_sbuf_t *b, const report_t *rp) {
  size_t num_halved = 0;
  for (size_t c = 0; c < rp->num_configs; c++)
    num_halved += rp->num_status[c * 4 + FL_SWEEP_HALVED] != 0;
  if (!rp->o->halving && !num_halved) return;
  fl_sbuf_printf(b, "## Stopped by successive halving\n\n");
  if (rp->o->halving) {
    fl_sbuf_printf(b, "Successive halving ");
    md_code(b, rp->o->halving);
    fl_sbuf_printf(b, " stopped %zu of %zu configurations.", num_halved, rp->num_configs);
  }
  if (!num_halved) {
    fl_sbuf_printf(b, "\n\n");
    return;
  }
  fl_sbuf_printf(b, " A stopped configuration's score is from the rounds it ran; each run's "
                    "reason is in results.csv.\n\n");
  stopped_t *st = calloc(num_halved, sizeof *st);
  size_t *slot = malloc(rp->num_configs * sizeof *slot);
  if (!st || !slot) {
    b->err = FL_ENOMEM;
    goto out;
  }
  size_t n = 0;
  for (size_t c = 0; c < rp->num_configs; c++)
    slot[c] = rp->num_status[c * 4 + FL_SWEEP_HALVED] ? n++ : SIZE_MAX;
  for (size_t i = 0; i < rp->num_runs; i++) {
    const fl_sweep_run_t *run = &rp->runs[i];
    if (run->status != FL_SWEEP_HALVED) continue;
    stopped_t *s = &st[slot[run->config]];
    if (!s->runs++) {
      *s = (stopped_t){run->config, i, 1, run->stop_round, run->stop_round};
    } else {
      if (run->stop_round < s->stop_lo) s->stop_lo = run->stop_round;
      if (run->stop_round > s->stop_hi) s->stop_hi = run->stop_round;
    }
  }
  qsort(st, n, sizeof *st, cmp_stopped);
  md_config_head(b, rp, "stopped after round", "seeds | why");
  fl_sbuf_printf(b, "|---:|");
  for (size_t k = 0; k < (rp->num_names ? rp->num_names : 1); k++)
    fl_sbuf_printf(b, "---|");
  fl_sbuf_printf(b, "---:|---|\n");
  for (size_t i = 0; i < n; i++) {
    fl_sbuf_printf(b, "| %" PRIu32, st[i].stop_lo);
    if (st[i].stop_hi != st[i].stop_lo) fl_sbuf_printf(b, "-%" PRIu32, st[i].stop_hi);
    fl_sbuf_printf(b, " |");
    md_config_cells(b, rp, st[i].config);
    fl_sbuf_printf(b, " %zu | ", st[i].runs);
    md_text(b, rp->runs[st[i].first].why);
    fl_sbuf_printf(b, " |\n");
  }
  fl_sbuf_printf(b, "\n");
out:
  free(st);
  free(slot);
}

static void md_failed(fl_sbuf_t *b, const report_t *rp) {
  size_t n = 0;
  for (size_t i = 0; i < rp->num_runs; i++)
    n += rp->runs[i].status == FL_SWEEP_FAILED;
  if (!n) return;
  fl_sbuf_printf(b, "## Failed runs\n\n%zu run%s failed; %s not counted in the ranking.\n\n", n,
                 n == 1 ? "" : "s", n == 1 ? "it is" : "they are");
  fl_sbuf_printf(b, "| run | configuration | seed | rounds | why |\n|---|---|---:|---:|---|\n");
  for (size_t i = 0; i < rp->num_runs; i++) {
    const fl_sweep_run_t *run = &rp->runs[i];
    if (run->status != FL_SWEEP_FAILED) continue;
    fl_sbuf_printf(b, "| ");
    md_code(b, run->id);
    fl_sbuf_printf(b, " | ");
    md_code(b, config_label(rp, run->config));
    fl_sbuf_printf(b, " | %" PRIu64 " | %zu | ", run->seed, run->num_rounds);
    md_text(b, run->why);
    fl_sbuf_printf(b, " |\n");
  }
  fl_sbuf_printf(b, "\n");
}

/* Configurations without a run that counts: every one failed or was not
 * run. */
static void md_unranked(fl_sbuf_t *b, const report_t *rp) {
  size_t n = 0;
  for (size_t c = 0; c < rp->num_configs; c++) {
    const size_t *k = &rp->num_status[c * 4];
    if (k[FL_SWEEP_DONE] || k[FL_SWEEP_HALVED]) continue;
    if (!n++) fl_sbuf_printf(b, "## Not ranked\n\n");
    fl_sbuf_printf(b, "- ");
    md_code(b, config_label(rp, c));
    fl_sbuf_printf(b, ": %zu failed, %zu not run\n", k[FL_SWEEP_FAILED], k[FL_SWEEP_PENDING]);
  }
  if (n) fl_sbuf_printf(b, "\n");
}

static void render_summary(fl_sbuf_t *b, const report_t *rp) {
  fl_sbuf_printf(b, "# ");
  md_text(b, rp->o->title ? rp->o->title : "fedlr-sweep");
  fl_sbuf_printf(b, "\n\n");
  md_counts(b, rp);
  md_how(b, rp);
  if (rp->o->command && rp->o->command[0]) {
    /* A fenced block shows the command as it was typed. */
    size_t fence = longest_backticks(rp->o->command) + 1;
    fence = fence < 3 ? 3 : fence;
    fl_sbuf_printf(b, "The sweep:\n\n");
    md_fence(b, fence);
    fl_sbuf_printf(b, "\n%s\n", rp->o->command);
    md_fence(b, fence);
    fl_sbuf_printf(b, "\n\n");
  }
  md_ranking(b, rp);
  md_halving(b, rp);
  md_failed(b, rp);
  md_unranked(b, rp);
  fl_sbuf_printf(b, "## Files\n\n- `results.csv`: one row per run (configuration, seed, status, "
                    "scores, seconds)\n- `curves.svg`: accuracy, loss and learning rate per round "
                    "of the best configurations, the mean over seeds with their min-max band\n"
                    "- `runs/<id>/`: each run's own outputs and config.ini\n");
}

/* ---- curves.svg ---- */

/* Configurations curves.svg can tell apart: one colour each. */
#define CURVES_MAX FL_SVG_NUM_COLORS

/* One configuration's metric per round over its counted runs. */
typedef struct {
  const fl_sweep_run_t *runs;
  const size_t *idx; /* (n) indices of its runs */
  size_t n;
  metric_fn get;
} curve_t;

/* The mean over the runs that have round i + 1 with a value there (NAN
 * if none does), with their least and greatest in *lo, *hi. A run
 * that diverged there (an infinite value) makes all three infinite: the
 * line and the band break. */
static double curve_at(const curve_t *c, size_t i, double *lo, double *hi) {
  double mean = 0;
  size_t k = 0;
  *lo = INFINITY, *hi = -INFINITY;
  for (size_t j = 0; j < c->n; j++) {
    const fl_sweep_run_t *run = &c->runs[c->idx[j]];
    if (i >= run->num_rounds) continue; /* stopped earlier */
    double v = c->get(&run->rounds[i]);
    if (isnan(v)) continue;
    if (isinf(v)) return *lo = *hi = INFINITY;
    mean_add(&mean, &k, v);
    *lo = fmin(*lo, v), *hi = fmax(*hi, v);
  }
  if (!k) return *lo = *hi = NAN;
  return mean;
}

static double curve_mean(const void *ctx, size_t i, double *x) {
  double lo, hi;
  *x = (double)(i + 1);
  return curve_at(ctx, i, &lo, &hi);
}

/* A band's corner points: x with the band's top and bottom. */
typedef struct {
  double x, top, bottom;
} band_pt_t;

/* Points thinned to one per half pixel within the plot's width, plus the
 * last one held back: a bound on a band's stretch. */
#define BAND_MAX_POINTS (2 * (FL_SVG_PLOT_R - FL_SVG_PLOT_L) + 4)

static void band_close(fl_sbuf_t *b, const char *color, band_pt_t *pts, size_t *n, int *held,
                       const band_pt_t *h) {
  if (*held && *n < BAND_MAX_POINTS) pts[(*n)++] = *h;
  if (*n > 1) {
    fl_sbuf_printf(b, "<polygon fill=\"%s\" fill-opacity=\"0.15\" stroke=\"none\" points=\"",
                   color);
    for (size_t i = 0; i < *n; i++)
      fl_sbuf_printf(b, "%s%.1f,%.1f", i ? " " : "", pts[i].x, pts[i].top);
    for (size_t i = *n; i-- > 0;)
      fl_sbuf_printf(b, " %.1f,%.1f", pts[i].x, pts[i].bottom);
    fl_sbuf_printf(b, "\"/>\n");
  }
  *n = 0, *held = 0;
}

/* The min-max band of a curve over rounds 1..rounds: a translucent polygon
 * for each stretch of rounds that can be drawn. Like the line, it skips
 * rounds without a value and breaks at those it cannot draw; it is thinned
 * the same way. pts: BAND_MAX_POINTS of scratch. */
static void svg_band(fl_sbuf_t *b, const curve_t *c, size_t rounds, const char *color,
                     const fl_svg_axis_t *xa, const fl_svg_axis_t *ya, double top, band_pt_t *pts) {
  const double w = FL_SVG_PLOT_R - FL_SVG_PLOT_L;
  size_t n = 0;
  int held = 0;
  band_pt_t h = {0};
  for (size_t i = 0; i < rounds; i++) {
    double lo, hi;
    if (isnan(curve_at(c, i, &lo, &hi))) continue;
    if (!fl_svg_plottable(lo, ya) || !fl_svg_plottable(hi, ya)) {
      band_close(b, color, pts, &n, &held, &h);
      continue;
    }
    band_pt_t p = {FL_SVG_PLOT_L + fl_svg_axis_frac(xa, (double)(i + 1)) * w,
                   top + FL_SVG_PANEL_H - fl_svg_axis_frac(ya, hi) * FL_SVG_PANEL_H,
                   top + FL_SVG_PANEL_H - fl_svg_axis_frac(ya, lo) * FL_SVG_PANEL_H};
    if ((n > 0 && p.x - pts[n - 1].x < 0.5) || n == BAND_MAX_POINTS) {
      held = 1, h = p;
      continue;
    }
    held = 0;
    pts[n++] = p;
  }
  band_close(b, color, pts, &n, &held, &h);
}

typedef struct {
  const char *title;
  int yk; /* FL_SVG_Y_* */
  metric_fn get;
} curve_panel_t;

/* Accuracy and loss as the ranking sees them (test set, else federated);
 * a loss that diverges gets a log axis, like a decaying rate. */
static const curve_panel_t curve_panels[] = {
    {"accuracy", FL_SVG_Y_UNIT, round_accuracy},
    {"loss", FL_SVG_Y_RATE, round_loss},
    {"learning rate", FL_SVG_Y_RATE, round_lr},
};
#define NUM_CURVE_PANELS (sizeof curve_panels / sizeof *curve_panels)

/* One panel: every shown configuration's band, then its mean line on top. */
static void svg_curve_panel(fl_sbuf_t *b, const curve_panel_t *p, curve_t *curves, size_t num,
                            size_t rounds, const fl_svg_axis_t *xa, double top, int x_labels,
                            band_pt_t *pts) {
  fl_svg_range_t range = FL_SVG_RANGE_INIT;
  size_t points = 0;
  for (size_t k = 0; k < num; k++) {
    curves[k].get = p->get;
    for (size_t i = 0; i < rounds; i++) {
      double lo, hi, mean = curve_at(&curves[k], i, &lo, &hi);
      points += isfinite(mean);
      fl_svg_range_add(&range, lo);
      fl_svg_range_add(&range, hi);
    }
  }
  fl_svg_axis_t ya;
  if (fl_svg_panel_begin(b, p->title, p->yk, &range, xa, top, x_labels, &ya)) {
    fl_sbuf_printf(b, "<g class=\"bands\">\n");
    for (size_t k = 0; k < num; k++)
      if (curves[k].n > 1) svg_band(b, &curves[k], rounds, fl_svg_color(k), xa, &ya, top, pts);
    fl_sbuf_printf(b, "</g>\n");
    /* Dots help when there are few points, e.g. sparse evaluations. */
    int markers = points / num <= 60;
    for (size_t k = 0; k < num; k++)
      fl_svg_series(b, fl_svg_color(k), rounds, curve_mean, &curves[k], xa, &ya, top, markers);
  }
  fl_sbuf_printf(b, "</g>\n");
}

enum { LEGEND_TOP = 700, LEGEND_STEP = 18 };

static void svg_legend(fl_sbuf_t *b, const report_t *rp, size_t num) {
  char name[64], score[96];
  fl_sbuf_printf(b, "<g class=\"legend\" font-size=\"11\">\n");
  fl_sbuf_printf(b, "<text x=\"%d\" y=\"%d\" fill=\"#333\">", FL_SVG_PLOT_L, LEGEND_TOP);
  if (num < rp->num_ranked)
    fl_sbuf_printf(b, "Top %zu of %zu configurations", num, rp->num_ranked);
  else
    fl_sbuf_printf(b, "%s %zu configuration%s", num == 1 ? "The" : "All", num, num == 1 ? "" : "s");
  fl_sbuf_printf(b, " by %s. Line: the mean over seeds; band: their min-max.</text>\n",
                 score_name(name, sizeof name, rp->o));
  for (size_t k = 0; k < num; k++) {
    const fl_sweep_rank_t *r = &rp->rank[k];
    double y = LEGEND_TOP + LEGEND_STEP * (k + 1.0);
    fl_sbuf_printf(b,
                   "<rect x=\"%d\" y=\"%.0f\" width=\"20\" height=\"10\" fill=\"%s\" "
                   "fill-opacity=\"0.15\"/>\n",
                   FL_SVG_PLOT_L, y - 9, fl_svg_color(k));
    fl_sbuf_t text = {0};
    fl_sbuf_printf(&text, "%zu. %s (%s, %zu seed%s)", k + 1, config_label(rp, r->config),
                   fmt_score(score, sizeof score, rp, r), r->runs, r->runs == 1 ? "" : "s");
    if (text.err)
      b->err = text.err;
    else
      fl_svg_legend_entry(b, FL_SVG_PLOT_L, y, fl_svg_color(k), text.p);
    free(text.p);
  }
  fl_sbuf_printf(b, "</g>\n");
}

static void render_curves(fl_sbuf_t *b, const report_t *rp) {
  const char *title = rp->o->title ? rp->o->title : "fedlr-sweep";
  size_t num = rp->o->top ? rp->o->top : 5;
  if (num > CURVES_MAX) num = CURVES_MAX;
  if (num > rp->num_ranked) num = rp->num_ranked;

  /* The shown configurations' counted runs, grouped by configuration. */
  curve_t curves[CURVES_MAX];
  size_t *idx = malloc((rp->num_runs ? rp->num_runs : 1) * sizeof *idx);
  band_pt_t *pts = malloc(BAND_MAX_POINTS * sizeof *pts);
  if (!idx || !pts) {
    b->err = FL_ENOMEM;
    goto out;
  }
  size_t at = 0, rounds = 0;
  for (size_t k = 0; k < num; k++) {
    curves[k] = (curve_t){.runs = rp->runs, .idx = idx + at};
    for (size_t i = 0; i < rp->num_runs; i++) {
      if (!rp->counted[i] || rp->runs[i].config != rp->rank[k].config) continue;
      idx[at++] = i;
      curves[k].n++;
      if (rp->runs[i].num_rounds > rounds) rounds = rp->runs[i].num_rounds;
    }
  }

  if (num == 0 || rounds == 0) {
    const int h = 200;
    fl_svg_begin(b, h, title);
    fl_sbuf_printf(b,
                   "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"16\" "
                   "fill=\"#888\">%s</text>\n</svg>\n",
                   FL_SVG_W / 2, h / 2 + 10,
                   num == 0 ? "no configuration has results yet" : "no rounds to show");
    goto out;
  }
  const int height = LEGEND_TOP + LEGEND_STEP * (int)num + 14;
  fl_svg_begin(b, height, title);
  fl_svg_axis_t xa;
  fl_svg_round_axis(&xa, 1, (double)rounds);
  for (size_t i = 0; i < NUM_CURVE_PANELS; i++)
    svg_curve_panel(b, &curve_panels[i], curves, num, rounds, &xa,
                    FL_SVG_PANEL_TOP + (double)i * FL_SVG_PANEL_STEP, i == NUM_CURVE_PANELS - 1,
                    pts);
  fl_svg_round_title(b, (int)NUM_CURVE_PANELS);
  svg_legend(b, rp, num);
  fl_sbuf_printf(b, "</svg>\n");
out:
  free(idx);
  free(pts);
}

/* ---- writing the report ---- */

/* The grid's names over all configurations, in order of first appearance
 * (every configuration of a grid has them all; one without a name gets an
 * empty cell). */
static int collect_names(report_t *rp) {
  size_t total = 0;
  for (size_t c = 0; c < rp->num_configs; c++)
    total += rp->configs[c].num_params;
  if (!(rp->names = malloc((total ? total : 1) * sizeof *rp->names))) return FL_ENOMEM;
  for (size_t c = 0; c < rp->num_configs; c++) {
    for (size_t i = 0; i < rp->configs[c].num_params; i++) {
      const char *name = rp->configs[c].names[i];
      size_t k = 0;
      while (k < rp->num_names && strcmp(rp->names[k], name) != 0)
        k++;
      if (k == rp->num_names) rp->names[rp->num_names++] = name;
    }
  }
  return 0;
}

/* Everything the files are drawn from; FL_ENOMEM. */
static int report_init(report_t *rp) {
  size_t nc = rp->num_configs ? rp->num_configs : 1, nr = rp->num_runs ? rp->num_runs : 1;
  rp->counted = calloc(nr, 1);
  rp->num_status = calloc(nc * 4, sizeof *rp->num_status);
  rp->rank = calloc(nc, sizeof *rp->rank);
  if (!rp->counted || !rp->num_status || !rp->rank || collect_names(rp) != 0)
    return fl_err_set(FL_ENOMEM, "out of memory for the report of %zu runs", rp->num_runs);
  for (size_t i = 0; i < rp->num_runs; i++) {
    const fl_sweep_run_t *run = &rp->runs[i];
    rp->counted[i] = (uint8_t)fl_sweep_counted(run);
    rp->num_status[run->config * 4 + run->status]++;
  }
  rp->num_ranked = fl_sweep_rank_final(rp->runs, rp->num_runs, rp->num_configs, rp->o->rank_by,
                                       rp->o->target, rp->o->halving != NULL, rp->rank);
  return rp->num_ranked == (size_t)-1 ? FL_ENOMEM : 0;
}

static void report_free(report_t *rp) {
  free(rp->counted);
  free(rp->num_status);
  free(rp->rank);
  free(rp->names);
}

/* Refuses what the report cannot be drawn from: its caller's bugs. */
static int check_args(const fl_sweep_report_opts_t *o, const fl_sweep_config_t *configs,
                      size_t num_configs, const fl_sweep_run_t *runs, size_t num_runs) {
  if (!o || !o->dir || !o->dir[0] || (num_configs && !configs) || (num_runs && !runs) ||
      (unsigned)o->rank_by > FL_RANK_TARGET)
    return fl_err_set(FL_EINVAL, "fl_sweep_report_write: bad arguments");
  for (size_t c = 0; c < num_configs; c++)
    if (configs[c].num_params && (!configs[c].names || !configs[c].values))
      return fl_err_set(FL_EINVAL, "fl_sweep_report_write: configuration %zu has no names", c);
  for (size_t i = 0; i < num_runs; i++) {
    const fl_sweep_run_t *r = &runs[i];
    if (r->config >= num_configs || (unsigned)r->status > FL_SWEEP_FAILED || !r->id ||
        (r->num_rounds && !r->rounds))
      return fl_err_set(FL_EINVAL, "fl_sweep_report_write: run %zu is not valid", i);
  }
  return 0;
}

int fl_sweep_report_write(const fl_sweep_report_opts_t *o, const fl_sweep_config_t *configs,
                          size_t num_configs, const fl_sweep_run_t *runs, size_t num_runs) {
  static const struct {
    const char *name;
    void (*render)(fl_sbuf_t *b, const report_t *rp);
  } files[] = {
      {"results.csv", render_csv}, {"summary.md", render_summary}, {"curves.svg", render_curves}};
  int rc = check_args(o, configs, num_configs, runs, num_runs);
  if (rc) return rc;
  if ((rc = fl_file_mkdirs(o->dir)) != 0) return rc;
  report_t rp = {
      .o = o, .configs = configs, .num_configs = num_configs, .runs = runs, .num_runs = num_runs};
  char *path = NULL, first_msg[512] = "";
  if ((rc = report_init(&rp)) != 0) goto out;
  size_t path_len = strlen(o->dir) + sizeof "/results.csv" + 1;
  if (!(path = malloc(path_len))) {
    rc = fl_err_set(FL_ENOMEM, "out of memory");
    goto out;
  }
  /* Every file is tried even after one failed: on a full disk, a smaller
   * one may still fit. The first failure is reported. */
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    snprintf(path, path_len, "%s/%s", o->dir, files[i].name);
    fl_sbuf_t b = {0};
    files[i].render(&b, &rp);
    int r = b.err ? fl_err_set(b.err, "'%s': larger than %zu bytes or out of memory", path,
                               FL_SBUF_MAX_BYTES)
                  : fl_file_write_atomic(path, b.p, b.len);
    free(b.p);
    if (r && !rc) {
      rc = r;
      snprintf(first_msg, sizeof first_msg, "%s", fl_err_msg());
    }
  }
  if (rc) fl_err_set(rc, "%s", first_msg);
out:
  free(path);
  report_free(&rp);
  return rc;
}
