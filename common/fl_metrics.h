/* fl_metrics: per-round metrics: progress lines, JSON Lines, SVG chart. */
#ifndef FL_METRICS_H
#define FL_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* One round's record. Fields not measured this round are NAN (test_*) or 0. */
typedef struct {
  uint32_t round; /* 1-based */
  uint32_t rounds_total;
  double lr;
  uint32_t clients_sampled;
  uint32_t clients_reported;
  double train_loss;       /* example-weighted mean of the clients' losses */
  double test_loss;        /* NAN if not evaluated this round */
  double test_accuracy;    /* NAN if not evaluated this round */
  double seconds;          /* wall time of this round */
  double elapsed;          /* wall time since the run started */
  uint64_t bytes_sent;     /* networked only */
  uint64_t bytes_received; /* networked only */
  uint32_t rejected;       /* updates of sampled clients rejected for their content (values,
                            * shapes, example count) */
  uint32_t clipped;        /* updates scaled down to --clip-norm */
  uint32_t capped;         /* updates whose example count was capped at --max-examples
                            * (these three end the progress line, "  rejected N", when not 0) */
} fl_round_metrics_t;

typedef struct fl_metrics fl_metrics_t;

/* jsonl_path may be NULL or "" (keep in memory only). The file is truncated,
 * unless append != 0 (resume). */
int fl_metrics_new(const char *jsonl_path, int append, fl_metrics_t **out);
void fl_metrics_destroy(fl_metrics_t **m);

/* Records a round: appends to memory and writes one JSON object line
 * (flushed) with keys round, lr, clients_sampled, clients_reported,
 * train_loss, test_loss, test_accuracy, seconds, elapsed, bytes_sent,
 * bytes_received, rejected, clipped, capped; NAN is written as null.
 * `extra_json` is NULL or extra members to append inside the object (e.g.
 * "\"participants\":[1,5]"). */
int fl_metrics_add(fl_metrics_t *m, const fl_round_metrics_t *r, const char *extra_json);

size_t fl_metrics_count(const fl_metrics_t *m);
const fl_round_metrics_t *fl_metrics_get(const fl_metrics_t *m, size_t i);

/* Prints a progress line, e.g.
 * "round  12/100  lr 0.0500  clients 10/10  train 0.4123  test acc 0.8412 loss 0.4421  0.62s  ETA
 * 54s" */
void fl_metrics_print_progress(FILE *f, const fl_round_metrics_t *r);

/* Writes an SVG chart (test accuracy, test/train loss, learning rate per
 * round; three stacked panels with axes and labels) that a browser shows. */
int fl_metrics_write_svg(const fl_metrics_t *m, const char *path, const char *title);

#endif
