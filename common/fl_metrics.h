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
  double server_lr; /* the server rate (--server-lr, --server-schedule); 1 for plain FedAvg */
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
  /* Federated evaluation of this round's model by clients on their own
   * held-out examples (protocol version 2): example-weighted means over
   * the fed_eval_clients whose results were accepted. In the metrics line
   * (fed_eval_loss, fed_eval_accuracy, fed_eval_examples, fed_eval_clients)
   * and the progress line only in rounds that had one. */
  double fed_eval_loss;      /* NAN if no client evaluated */
  double fed_eval_accuracy;  /* NAN if no client reported "accuracy" */
  uint32_t fed_eval_clients; /* 0: no federated evaluation this round */
  uint64_t fed_eval_examples;
} fl_round_metrics_t;

typedef struct fl_metrics fl_metrics_t;

/* The most rounds a run records (fl_metrics_add) or a reader accepts: more
 * is a bug. */
#define FL_METRICS_MAX_ROUNDS ((size_t)10 * 1000 * 1000)

/* The largest metrics file fl_metrics_trim() reads (it holds it twice in
 * memory): over a million rounds of 100 sampled clients. */
#define FL_METRICS_MAX_FILE_BYTES ((size_t)1 << 30)

/* jsonl_path may be NULL or "" (keep in memory only). The file is truncated,
 * unless append != 0 (resume). FL_EIO naming the file if it cannot be
 * opened. */
int fl_metrics_new(const char *jsonl_path, int append, fl_metrics_t **out);

/* Lines still queued (see fl_metrics_add) are dropped: call
 * fl_metrics_flush() first. NULL-safe; clears *m. */
void fl_metrics_destroy(fl_metrics_t **m);

/* Records a round in memory and writes it to the file as one JSON object
 * line with keys round, lr, clients_sampled, clients_reported, train_loss,
 * test_loss, test_accuracy, seconds, elapsed, bytes_sent, bytes_received,
 * rejected, clipped, capped; NAN is written as null. `extra_json` is NULL
 * or extra members to append inside the object (e.g.
 * "\"participants\":[1,5]"); FL_EINVAL if it holds a newline.
 *
 * The file never holds a partial line: a line goes out in one write(), and
 * if that fails or comes up short (a full disk), the file is cut back to
 * its last complete line and the line is queued in memory (up to 64 MiB),
 * with every later one, to be written in order at the next call or at
 * fl_metrics_flush(). So if room comes back, no line is missing.
 *
 * Returns 0 when the record is kept: its line written, or queued while an
 * earlier failure is still going on. Returns FL_EIO, with a message
 * naming the file and the OS error, when a failure begins (the first line
 * that could not be written since the file last held every line): a
 * program logs that and carries on, and hears again only of a new failure
 * after a recovery, not at every retry. FL_ENOMEM past 10 million rounds. */
int fl_metrics_add(fl_metrics_t *m, const fl_round_metrics_t *r, const char *extra_json);

/* Writes the lines still queued. 0 if the file now holds every line
 * (always, without a file); else FL_EIO with a message naming the file, how
 * many lines are missing from which round, and the OS error. The lines stay
 * queued, so a later call may still succeed. */
int fl_metrics_flush(fl_metrics_t *m);

/* Lines not in the file yet (queued, or lost to a full queue). */
size_t fl_metrics_pending(const fl_metrics_t *m);

/* Rewrites the JSON Lines file `path` (atomically) keeping only the
 * complete lines of rounds 1..rounds_done, for a resumed run, which redoes
 * the round that was in flight. A missing file is fine (0); a file that is
 * not regular or is larger than FL_METRICS_MAX_FILE_BYTES is refused. */
int fl_metrics_trim(const char *path, uint32_t rounds_done);

/* Reads a metrics.jsonl back (as fl_metrics_add writes it: one JSON object per
 * line, null for NAN) into *out (malloc'd array, rounds 1..n in order; NULL
 * when n is 0, an empty file) (fedlr-sweep --resume). Every member of
 * fl_round_metrics_t is read; one a line lacks is NAN (a double) or 0;
 * members of other names (extra_json) are skipped. A missing file is
 * FL_ENOENT; a line that is not such an object, a key given twice, a
 * number out of its member's range, or a round out of order (not 1, 2, 3,
 * ...) is FL_EINVAL naming the file, line and column; a last line without
 * its newline is read if it is whole. At most FL_METRICS_MAX_FILE_BYTES
 * are read (FL_ETOOBIG) and FL_METRICS_MAX_ROUNDS rounds. On error *out is
 * NULL and *n 0. */
int fl_metrics_read(const char *path, fl_round_metrics_t **out, size_t *n);

size_t fl_metrics_count(const fl_metrics_t *m);
const fl_round_metrics_t *fl_metrics_get(const fl_metrics_t *m, size_t i);

/* Prints a progress line, e.g.
 * "round  12/100  lr 0.0500  clients 10/10  train 0.4123  test acc 0.8412 loss 0.4421  0.62s  ETA
 * 54s" */
void fl_metrics_print_progress(FILE *f, const fl_round_metrics_t *r);

/* Writes an SVG chart (test accuracy, test/train loss, learning rate per
 * round; three stacked panels with axes and labels) that a browser shows,
 * atomically (fl_file_write_atomic): the old chart or the new one, never a
 * torn file. */
int fl_metrics_write_svg(const fl_metrics_t *m, const char *path, const char *title);

#endif
