/* fl_engine_eval.c: the engine's evaluation of the global model (see
 * fl_engine.h): on the coordinator's test set, with threads, and by
 * clients on their held-out data (federated evaluation, fl_fedeval). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_engine_int.h"
#include "fl_error.h"
#include "fl_parallel.h"
#include "fl_rng.h"

/* ---- on the test set ---- */

int fl_engine__eval_setup(fl_engine_t *e) {
  const fl_engine_config_t *cfg = &e->cfg;
  if (!cfg->test) return 0;
  size_t chunks = (cfg->test->n + FL_EVAL_BATCH - 1) / FL_EVAL_BATCH;
  size_t th = cfg->eval_threads ? cfg->eval_threads : fl_parallel_ncpu();
  if (th > chunks) th = chunks;
  if (th < 1) th = 1;
  e->eval_ws = calloc(th, sizeof *e->eval_ws);
  e->chunk_loss = calloc(chunks, sizeof *e->chunk_loss);
  e->chunk_correct = calloc(chunks, sizeof *e->chunk_correct);
  if (!e->eval_ws || !e->chunk_loss || !e->chunk_correct) return FL_ENOMEM;
  e->eval_threads = th;
  for (size_t i = 0; i < th; i++)
    if (!(e->eval_ws[i] =
              fl_model_ws_new(&cfg->model, fl_model_eval_batch(&cfg->model, FL_EVAL_BATCH))))
      return FL_ENOMEM;
  return 0;
}

void fl_engine__eval_free(fl_engine_t *e) {
  for (size_t i = 0; e->eval_ws && i < e->eval_threads; i++)
    fl_model_ws_destroy(&e->eval_ws[i]);
  free(e->eval_ws);
  free(e->chunk_loss);
  free(e->chunk_correct);
}

/* Evaluation in fixed chunks of FL_EVAL_BATCH test examples: thread t takes
 * chunks t, t+T, t+2T, ... and the per-chunk sums are added in chunk order,
 * so the result is the same bits whatever the number of threads T. */
static void eval_task(void *arg, size_t t) {
  fl_engine_t *e = arg;
  const fl_dataset_t *d = e->cfg.test;
  size_t chunks = (d->n + FL_EVAL_BATCH - 1) / FL_EVAL_BATCH;
  for (size_t c = t; c < chunks; c += e->eval_threads) {
    size_t at = c * FL_EVAL_BATCH, n = d->n - at < FL_EVAL_BATCH ? d->n - at : FL_EVAL_BATCH;
    e->chunk_loss[c] = 0;
    e->chunk_correct[c] = 0;
    fl_model_evaluate(&e->cfg.model, e->eval_ws[t], e->weights, d->x + at * d->dim, d->y + at, n,
                      &e->chunk_loss[c], &e->chunk_correct[c]);
  }
}

static void evaluate(fl_engine_t *e, double *loss, double *acc) {
  const fl_dataset_t *t = e->cfg.test;
  fl_parallel_for(e->eval_threads, eval_task, e);
  double loss_sum = 0;
  size_t correct = 0, chunks = (t->n + FL_EVAL_BATCH - 1) / FL_EVAL_BATCH;
  for (size_t c = 0; c < chunks; c++) {
    loss_sum += e->chunk_loss[c];
    correct += e->chunk_correct[c];
  }
  *loss = loss_sum / (double)t->n;
  *acc = (double)correct / (double)t->n;
}

static int begin_eval(fl_engine_t *e);
static void observe(fl_engine_t *e, double loss, double acc);

int fl_engine__after_round(fl_engine_t *e, fl_round_metrics_t *m) {
  m->test_loss = NAN;
  m->test_accuracy = NAN;
  m->fed_eval_loss = NAN;
  m->fed_eval_accuracy = NAN;
  int last = e->rounds_done >= e->cfg.rounds;
  int due = e->round % e->cfg.eval_every == 0 || last;
  if (e->cfg.test && due) {
    evaluate(e, &m->test_loss, &m->test_accuracy);
    observe(e, m->test_loss, m->test_accuracy);
  }
  if (due && e->cfg.eval_fraction > 0) return begin_eval(e);
  return 0;
}

/* ---- by clients ---- */

/* The evaluation metrics of a round: the plateau schedule follows the loss,
 * the target the accuracy (NAN: not measured, nothing happens). */
static void observe(fl_engine_t *e, double loss, double acc) {
  if (isfinite(loss)) {
    fl_plateau_observe(&e->cfg.sched, &e->plateau, loss);
    fl_plateau_observe(&e->cfg.server_sched, &e->server_plateau, loss);
  }
  if (isfinite(acc) && acc > e->best_accuracy) e->best_accuracy = acc;
  if (isfinite(acc) && e->cfg.target_accuracy > 0 && acc >= e->cfg.target_accuracy)
    e->target_reached = 1;
}

/* Samples the round's evaluators and opens the evaluation, if any client
 * can evaluate: available, with evaluation examples, not kept from it. */
static int begin_eval(fl_engine_t *e) {
  size_t k = 0;
  for (size_t i = 0; i < e->cap_clients; i++) {
    const fl_client_rec_t *c = &e->clients[i];
    if (c->name && c->available && c->eval_examples && c->eval_kept_through < e->round)
      e->pool[k++] = (uint32_t)i;
  }
  if (k == 0) return 0;
  size_t m = (size_t)ceil(e->cfg.eval_fraction * (double)k - 1e-9);
  if (m < 1) m = 1;
  if (m > k) m = k;
  fl_rng_t rng;
  fl_rng_seed(&rng, fl_rng_derive(e->cfg.seed, FL_RNG_EVAL, e->round, 0));
  for (size_t i = 0; i < m; i++) {
    size_t j = i + (size_t)fl_rng_below(&rng, k - i);
    uint32_t t = e->pool[i];
    e->pool[i] = e->pool[j];
    e->pool[j] = t;
  }
  qsort(e->pool, m, sizeof *e->pool, fl_engine__cmp_u32);
  for (size_t i = 0; i < m; i++)
    e->eval_max[i] = e->clients[e->pool[i]].eval_examples;
  int rc = fl_fedeval_begin(e->fedeval, e->round, e->pool, e->eval_max, m);
  if (rc) return rc;
  e->state = EVAL_OPEN;
  return 0;
}

int fl_engine_eval_open(const fl_engine_t *e) {
  return e->state == EVAL_OPEN;
}

size_t fl_engine_eval_sampled(const fl_engine_t *e, const uint32_t **ids) {
  if (e->state != EVAL_OPEN) {
    if (ids) *ids = NULL;
    return 0;
  }
  return fl_fedeval_sampled(e->fedeval, ids);
}

int fl_engine_encode_evaluate(const fl_engine_t *e, uint32_t id, uint8_t **buf, size_t *len) {
  if (e->state != EVAL_OPEN) return fl_err_set(FL_ESTATE, "no evaluation is open");
  Fedlr__Evaluate ev = FEDLR__EVALUATE__INIT;
  ev.round = e->round;
  ev.model = (char *)e->cfg.model.spec;
  ev.n_weights = e->tv.n;
  ev.weights = e->tv.ptrs;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_EVALUATE;
  env.evaluate = &ev;
  (void)id;
  return fl_wire_encode(&env, buf, len);
}

int fl_engine_submit_eval(fl_engine_t *e, uint32_t sender, const Fedlr__EvalResult *r,
                          int *content) {
  *content = 0;
  if (e->state != EVAL_OPEN)
    return fl_err_set(FL_ESTALE,
                      "evaluation result from client %u for round %u: no evaluation "
                      "is open",
                      sender, r->round);
  return fl_fedeval_submit(e->fedeval, sender, r, content);
}

int fl_engine_eval_answered(const fl_engine_t *e, uint32_t id) {
  return e->state == EVAL_OPEN && fl_fedeval_has_answered(e->fedeval, id);
}

void fl_engine_quarantine_eval(fl_engine_t *e, uint32_t id) {
  if (id >= e->cap_clients || !e->clients[id].name) return;
  uint32_t through = e->round + e->cfg.quarantine_rounds;
  if (e->clients[id].eval_kept_through < through) e->clients[id].eval_kept_through = through;
}

int fl_engine_end_eval(fl_engine_t *e, fl_round_metrics_t *m, char *extra, size_t cap) {
  if (e->state != EVAL_OPEN) return fl_err_set(FL_ESTATE, "no evaluation is open");
  fl_fedeval_end(e->fedeval, m, extra, cap);
  if (!e->cfg.test) observe(e, m->fed_eval_loss, m->fed_eval_accuracy);
  e->state = ROUND_IDLE;
  return 0;
}

size_t fl_engine_eval_named(const fl_engine_t *e, const char **names, double *values, size_t cap) {
  return fl_fedeval_named(e->fedeval, names, values, cap);
}
