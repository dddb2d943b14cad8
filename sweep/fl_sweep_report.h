/* fl_sweep_report: what a sweep (fedlr-sweep) learned, for a person and a
 * program: the ranking of its configurations, results.csv, summary.md and
 * curves.svg. It knows nothing about how the runs were run: it reads the
 * per-round metrics of each run (fl_round_metrics_t, the lines of a run's
 * metrics.jsonl) and how each run ended.
 *
 * A configuration is one point of the grid (one value per --grid name); a
 * run is one configuration under one seed. Scores ("rank by") are computed
 * per run from its rounds up to a given round, then averaged over the
 * configuration's runs (mean, sample standard deviation, count). The
 * accuracy of a round is its test_accuracy, or when it has none (no test
 * set) its fed_eval_accuracy; rounds without either are skipped. */
#ifndef FL_SWEEP_REPORT_H
#define FL_SWEEP_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "fl_metrics.h"

/* How a run ended. */
typedef enum {
  FL_SWEEP_PENDING = 0, /* not run (yet) */
  FL_SWEEP_DONE,        /* ran to its end (--rounds or --target-accuracy) */
  FL_SWEEP_HALVED,      /* stopped by successive halving after stop_round rounds */
  FL_SWEEP_FAILED       /* the run failed (why says how); its rounds so far are kept */
} fl_sweep_status_t;

/* What configurations are ranked by. */
typedef enum {
  FL_RANK_FINAL = 0, /* accuracy of the last evaluated round (higher is better) */
  FL_RANK_BEST,      /* best accuracy of any round (higher is better) */
  FL_RANK_TARGET     /* rounds to reach --target-accuracy (lower is better; a run that
                      * never reached it scores +inf, and configurations tied there are
                      * ordered by their final accuracy) */
} fl_rank_by_t;

typedef struct {
  const char *label;   /* "lr=0.03 schedule=exp:gamma=0.97" ("" with no grid) */
  size_t num_params;   /* its grid values: names[i] = values[i] (num_params may be 0) */
  const char *const *names;
  const char *const *values;
} fl_sweep_config_t;

typedef struct {
  const char *id;   /* folder under runs/, e.g. "c03-s2" */
  size_t config;    /* index into the configurations */
  uint64_t seed;
  fl_sweep_status_t status;
  uint32_t stop_round;   /* FL_SWEEP_HALVED: rounds it ran before it was stopped */
  const char *why;       /* FL_SWEEP_HALVED / FL_SWEEP_FAILED: a sentence, else "" */
  double seconds;        /* wall time of the run (sum over its pieces when paused) */
  const fl_round_metrics_t *rounds; /* its rounds in order, rounds[i].round = i + 1 */
  size_t num_rounds;
} fl_sweep_run_t;

/* A run's score by `by` over its rounds 1..upto (0: all; a run that
 * ended before upto, at its target or failing, is scored on the rounds
 * it has). FL_RANK_FINAL/BEST: an accuracy, higher is better, NAN when it
 * has no accuracy in those rounds. FL_RANK_TARGET: the first round whose
 * accuracy is >= target (as the engine decides it), lower is better,
 * INFINITY when none is. NAN for a run without rounds in 1..upto, and for
 * FL_RANK_TARGET with a target that is not > 0. fl_sweep_rank() orders
 * the scores. */
double fl_sweep_score(const fl_sweep_run_t *run, fl_rank_by_t by, uint32_t upto, double target);

/* The per-configuration statistics of the runs' scores. */
typedef struct {
  size_t config;
  double mean, std; /* over its runs' scores; std: sample standard deviation (0 with one
                     * run). mean is NAN if no run of it has a score, INFINITY if one
                     * did not reach the target; std is then NAN */
  double final_mean; /* mean final accuracy of its counted runs (with the same upto;
                      * the FL_RANK_TARGET tie-break); NAN if none has one */
  size_t runs;       /* runs counted (with a score, INFINITY included) */
} fl_sweep_rank_t;

/* Ranks configurations: out[0] is the best, then in order of the mean
 * score (higher accuracy first; for FL_RANK_TARGET fewer rounds first and,
 * among equal means, notably all INFINITY, the higher final_mean first);
 * configurations with a NAN mean come last. Only runs with `include[i]`
 * nonzero (NULL: all) count; a configuration without counted runs is left
 * out (one whose counted runs have no score is ranked, last). Scores use
 * rounds 1..upto (0: all). Deterministic: ties are broken by the
 * configuration index, and equal scores tie whatever the order of the
 * runs (a configuration's scores are sorted before they are summed). out
 * has room for num_configs entries. Returns the number of entries
 * written, or (size_t)-1 without memory or for a NULL array or a run
 * whose config is not < num_configs (fl_err_msg() says which). */
size_t fl_sweep_rank(const fl_sweep_run_t *runs, size_t num_runs, const uint8_t *include,
                     size_t num_configs, fl_rank_by_t by, uint32_t upto, double target,
                     fl_sweep_rank_t *out);

/* The sweep's final ranking: fl_sweep_rank over the counted runs
 * (fl_sweep_counted), all their rounds; after successive halving
 * (`halving` nonzero) the configurations that went further come first (the
 * most rounds any of their counted runs ran), each stage in score order,
 * so that a configuration stopped at round 5 is never ranked on its round-5
 * score above one that earned its 50 rounds. Same return as fl_sweep_rank. */
size_t fl_sweep_rank_final(const fl_sweep_run_t *runs, size_t num_runs, size_t num_configs,
                           fl_rank_by_t by, double target, int halving, fl_sweep_rank_t *out);

/* 1 if the report ranks the run: it ran to its end or was stopped by
 * halving (FL_SWEEP_DONE, FL_SWEEP_HALVED); a failed run or one not run is
 * listed, not scored. A program that shows a ranking of its own counts the
 * same runs (include[i] = fl_sweep_counted(&runs[i])), so that it agrees
 * with summary.md. */
int fl_sweep_counted(const fl_sweep_run_t *run);

typedef struct {
  const char *dir;       /* the sweep's --out DIR */
  const char *title;     /* e.g. "fedlr-sweep: fashion-mnist, mlp:200,200" */
  const char *command;   /* the command line that ran the sweep, for summary.md */
  fl_rank_by_t rank_by;
  double target;         /* --target-accuracy (0: none) */
  uint32_t top;          /* curves.svg shows the top N configurations (0: 5; at most 10,
                          * one colour each) */
  const char *halving;   /* the --halving spec, or NULL; summary.md then has a section
                          * listing when each stopped configuration was stopped and why */
} fl_sweep_report_opts_t;

/* Writes, creating DIR if needed:
 *   DIR/results.csv  one row per run after a header row: id, config (the
 *                    index), each grid name as a column, seed, status
 *                    (pending, done, halved, failed), stop_round (halved),
 *                    rounds, final_accuracy, best_accuracy, final_loss (the
 *                    last measured; test set, else federated, like the
 *                    accuracy), final_train_loss (of the last round),
 *                    rounds_to_target, seconds, why. Text is quoted (RFC
 *                    4180), numbers are not (%.6g, seconds %.3f); an empty
 *                    cell is "none"; lines end in '\n'.
 *   DIR/summary.md   what was ranked and how; configurations ranked by the
 *                    mean over seeds of the chosen score, ± std, seeds
 *                    counted, mean final accuracy, mean rounds; the winner
 *                    and the command that reproduces it; when and why
 *                    halving stopped configurations; failed runs and why.
 *   DIR/curves.svg   accuracy, loss and learning rate per round of the top
 *                    configurations: the mean over seeds as a line, their
 *                    min-max as a translucent band, a legend.
 * The ranking counts the runs of fl_sweep_counted(), all their rounds;
 * failed runs and runs not run are listed, not scored.
 * Each file is written atomically (fl_file_write_atomic), each tried even
 * after one failed. 0, or FL_EIO/FL_ENOMEM with a message naming the
 * (first) file that failed; FL_EINVAL for NULL arrays, a run without an id,
 * or a run whose config is not < num_configs. */
int fl_sweep_report_write(const fl_sweep_report_opts_t *o, const fl_sweep_config_t *configs,
                          size_t num_configs, const fl_sweep_run_t *runs, size_t num_runs);

#endif
