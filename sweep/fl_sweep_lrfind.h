/* fl_sweep_lrfind: the learning-rate range test (fedlr-sweep --lr-find).
 *
 * Leslie Smith's test ("Cyclical Learning Rates", 2017), as fastai's
 * lr_find runs it, with federated rounds as its steps: a run starts at
 * rate `min` and multiplies it by the same factor every round so that it
 * would reach `max` at round `rounds` (--lr MIN --schedule
 * exp:gamma=(MAX/MIN)^(1/(ROUNDS-1)): a plain fedlr-sim run, reproducible
 * on its own), and is stopped once its training loss diverges. The
 * training loss of a round is the clients' example-weighted mean
 * minibatch loss while they trained at that round's rate; it is smoothed
 * by an exponential moving average (beta 0.7, bias-corrected: rounds are
 * few) and "diverged" means NaN/inf, or, after at least 3 rounds, above 4 x
 * the lowest smoothed loss so far (fastai's rule) or back above the first
 * round's (a network that died sits at chance level, below 4 x).
 *
 * The suggestion for a run is the rate of its lowest smoothed loss divided
 * by 10 (past the minimum the loss is already rising: a tenth of it is in
 * the falling part); the rate of the steepest descent (the most negative
 * slope of the smoothed loss against log rate) is reported beside it. A
 * configuration's suggestion is the geometric mean over its seeds. */
#ifndef FL_SWEEP_LRFIND_H
#define FL_SWEEP_LRFIND_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fl_config.h"
#include "fl_sweep_report.h"

typedef struct {
  double at_min;    /* rate of the lowest smoothed loss (NAN: no round) */
  double suggested; /* at_min / 10 */
  double steepest;  /* rate of the steepest descent (NAN: fewer than 3 rounds) */
  double min_loss;  /* the lowest smoothed loss */
} fl_lrfind_result_t;

typedef struct {
  int on;
  double min, max;
  uint32_t rounds;
  double gamma;     /* (max/min)^(1/(rounds-1)) */
  double auto_lr;   /* --lr auto's rate for the model (0: unknown), for the comparison */
  /* after fl_lrfind_report: per configuration */
  size_t num_configs;
  fl_lrfind_result_t *per_config;
  char **labels;
} fl_lrfind_t;

/* "on" (the defaults min=1e-4,max=10,rounds=40) or "min=A,max=B,rounds=N"
 * (any subset). 0 or FL_EINVAL naming the part. */
int fl_lrfind_parse(const char *spec, fl_lrfind_t *lf);

/* Sets the run's --lr, --schedule and --rounds (and clears
 * --target-accuracy). */
void fl_lrfind_apply(const fl_lrfind_t *lf, fl_config_t *c);

/* Whether the run's loss has diverged after its last round; if so a
 * sentence in why. */
int fl_lrfind_diverged(const fl_lrfind_t *lf, const fl_round_metrics_t *r, size_t n, char *why,
                       size_t cap);

/* One run's result from its rounds. */
fl_lrfind_result_t fl_lrfind_analyse(const fl_round_metrics_t *r, size_t n);

/* Writes DIR/lr_find.csv (run, config, seed, round, lr, train_loss,
 * smoothed), DIR/lr_find.md (per configuration: the suggestion, the
 * steepest descent, --lr auto's rate) and DIR/lr_find.svg (smoothed
 * training loss against the rate, log scale, one line per run), and
 * keeps the per-configuration results for fl_lrfind_print. */
int fl_lrfind_report(fl_lrfind_t *lf, const char *dir, const fl_sweep_config_t *configs,
                     size_t num_configs, const fl_sweep_run_t *runs, size_t num_runs);

/* "suggested initial rate: ..." lines, one per configuration. */
void fl_lrfind_print(const fl_lrfind_t *lf, FILE *f);

void fl_lrfind_free(fl_lrfind_t *lf);

#endif
