/* fl_fedeval: federated evaluation, the clients' side of evaluating a
 * round's global model (protocol version 2, Evaluate / EvalResult).
 *
 * After a round closes, a sample of clients that hold evaluation examples
 * (fl_engine) evaluates the new global model on them and reports the mean
 * loss, the example count and named metrics ("accuracy", ...). This module
 * collects those results for one round and turns them into the round's
 * fed_eval_* metrics: example-weighted means over the clients that
 * reported each one. Results are kept per evaluator and summed in
 * ascending client id order when the evaluation closes, so the metrics are
 * the same bits whatever order the results arrived in (fedlr-sim and a
 * networked run agree). Memory: one slot per sampled evaluator.
 *
 * A result is checked against what its client declared: at most the
 * evaluation examples it registered, a loss and metrics within
 * FL_FEDEVAL_MAX_VALUE in magnitude (the codec already refused NaN,
 * infinities, bad names and duplicates). A rejected result is the client's
 * answer (it counts as answered, with nothing); the caller decides what
 * else happens to such a client. Not thread-safe. */
#ifndef FL_FEDEVAL_H
#define FL_FEDEVAL_H

#include <stddef.h>
#include <stdint.h>

#include "fedlr.pb-c.h"
#include "fl_metrics.h"

/* A loss or metric beyond this in magnitude is rejected. */
#define FL_FEDEVAL_MAX_VALUE 1e30
/* Distinct metric names one round reports (more are dropped, the rest
 * counted in the detail of fl_fedeval_end). */
#define FL_FEDEVAL_MAX_NAMES 16

/* Room for the extra JSON members of fl_fedeval_end. */
#define FL_FEDEVAL_EXTRA_MAX (FL_FEDEVAL_MAX_NAMES * 80)

typedef struct fl_fedeval fl_fedeval_t;

fl_fedeval_t *fl_fedeval_new(void);
void fl_fedeval_destroy(fl_fedeval_t **f);

/* Opens the evaluation of round `round` by clients ids[0..n) (ascending,
 * n >= 1); client ids[i] may claim at most max_examples[i] examples.
 * FL_ENOMEM. */
int fl_fedeval_begin(fl_fedeval_t *f, uint32_t round, const uint32_t *ids,
                     const uint64_t *max_examples, size_t n);

/* 1 while an evaluation is open; its round; its evaluators (ascending). */
int fl_fedeval_is_open(const fl_fedeval_t *f);
uint32_t fl_fedeval_round(const fl_fedeval_t *f);
size_t fl_fedeval_sampled(const fl_fedeval_t *f, const uint32_t **ids);

/* Takes client `sender`'s result. Not the client's content (nothing
 * changes, *content = 0): no evaluation open or another round (FL_ESTALE),
 * a sender that is not an evaluator or a client_id that is not the
 * sender's (FL_EPROTO), a second result (FL_ESTALE). The client's content
 * (*content = 1, the client has answered): more examples than it declared,
 * a loss or metric beyond FL_FEDEVAL_MAX_VALUE (FL_ERANGE). A detail in
 * fl_err_msg() that names only this client. */
int fl_fedeval_submit(fl_fedeval_t *f, uint32_t sender, const Fedlr__EvalResult *r, int *content);

/* 1 if evaluator `id` has answered (a result accepted or rejected). */
int fl_fedeval_has_answered(const fl_fedeval_t *f, uint32_t id);
/* Results accepted so far. */
size_t fl_fedeval_accepted(const fl_fedeval_t *f);

/* Closes the evaluation: m's fed_eval_* fields (loss and "accuracy"
 * example-weighted over the accepted results, NAN when none reported
 * them; clients and examples) and, in extra[0..cap), the other metrics as
 * JSON members ("\"fed_eval_f1\":0.81,...", names sorted; "" if none) for
 * the round's metrics line (metrics named loss, examples or clients are
 * left out: their keys are taken). cap >= FL_FEDEVAL_EXTRA_MAX holds every
 * member. */
void fl_fedeval_end(fl_fedeval_t *f, fl_round_metrics_t *m, char *extra, size_t cap);

/* The other metrics of the evaluation fl_fedeval_end closed, those of its
 * extra members: names (sorted) and example-weighted means, at most cap
 * of them (FL_FEDEVAL_MAX_NAMES holds every one). The names point into f,
 * valid until the next fl_fedeval_begin. 0 before any evaluation. */
size_t fl_fedeval_named(const fl_fedeval_t *f, const char **names, double *values, size_t cap);

#endif
