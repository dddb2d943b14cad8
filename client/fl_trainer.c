#include "fl_trainer.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"
#include "fl_gemm.h"
#include "fl_optim.h"
#include "fl_rng.h"
#include "fl_sched.h"
#include "fl_wire.h"

struct fl_trainer {
  fl_model_spec_t model;
  fl_wire_limits_t limits;
  float *params;     /* (num_params) local model */
  float *global;     /* (num_params) the round's global model */
  float *grad;       /* (num_params) */
  fl_optim_t *optim; /* created on first use, kind may change per round */
  fl_optim_config_t optim_cfg;
  fl_model_ws_t *ws; /* activations for batch <= max_batch */
  size_t max_batch;
  float *bx;       /* (max_batch, dims[0]) gathered batch */
  int32_t *by;     /* (max_batch) */
  uint32_t *order; /* (cap_order) epoch permutation */
  size_t cap_order;
  fl_trainer_tick_fn tick;
  void *tick_arg;
  uint64_t tick_every;
  /* evaluation (fl_trainer_evaluate), allocated on first use */
  fl_model_ws_t *eval_ws; /* batch TRAINER_EVAL_BATCH */
  float *eval_x;          /* (TRAINER_EVAL_BATCH, dims[0]) gathered rows */
  int32_t *eval_y;
};

/* Rows evaluated per forward pass. The loss is summed row by row in shard
 * order whatever the batch, so this only affects speed. */
#define TRAINER_EVAL_BATCH 500

fl_trainer_t *fl_trainer_new(const fl_model_spec_t *m) {
  fl_trainer_t *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->model = *m;
  fl_wire_limits_for_model(m, &t->limits);
  size_t n = m->num_params;
  t->params = fl_gemm_alloc(n);
  t->global = fl_gemm_alloc(n);
  t->grad = fl_gemm_alloc(n);
  if (!t->params || !t->global || !t->grad) fl_trainer_destroy(&t);
  return t;
}

void fl_trainer_destroy(fl_trainer_t **pt) {
  fl_trainer_t *t = pt ? *pt : NULL;
  if (!t) return;
  free(t->params);
  free(t->global);
  free(t->grad);
  fl_optim_destroy(&t->optim);
  fl_model_ws_destroy(&t->ws);
  free(t->bx);
  free(t->by);
  free(t->order);
  fl_model_ws_destroy(&t->eval_ws);
  free(t->eval_x);
  free(t->eval_y);
  free(t);
  *pt = NULL;
}

void fl_trainer_set_tick(fl_trainer_t *t, fl_trainer_tick_fn fn, void *arg, uint64_t every) {
  t->tick = fn;
  t->tick_arg = arg;
  t->tick_every = every ? every : 1;
}

/* Sizes the batch workspace; keeps it across rounds when B is unchanged. */
static int ensure_batch(fl_trainer_t *t, size_t B) {
  if (t->ws && t->max_batch == B) return 0;
  fl_model_ws_destroy(&t->ws);
  free(t->bx);
  free(t->by);
  t->ws = fl_model_ws_new(&t->model, B);
  t->bx = fl_gemm_alloc(B * t->model.dims[0]);
  t->by = malloc(B * sizeof *t->by);
  t->max_batch = B;
  if (!t->ws || !t->bx || !t->by) {
    t->max_batch = 0;
    return fl_err_set(FL_ENOMEM, "trainer: out of memory for batch size %zu", B);
  }
  return 0;
}

static int ensure_optim(fl_trainer_t *t, const fl_optim_config_t *c) {
  if (!t->optim || t->optim_cfg.kind != c->kind) {
    fl_optim_destroy(&t->optim);
    t->optim = fl_optim_new(c, t->model.num_params);
    if (!t->optim) return fl_err_set(FL_ENOMEM, "trainer: out of memory for the optimizer");
  } else {
    fl_optim_configure(t->optim, c);
  }
  t->optim_cfg = *c;
  if (!c->keep_state) fl_optim_reset(t->optim);
  return 0;
}

static int check_shard(const fl_model_spec_t *m, const fl_shard_t *shard);

uint64_t fl_trainer_claimed_examples(const fl_shard_t *shard) {
  return shard->attack && shard->attack->examples ? shard->attack->examples : shard->n;
}

int fl_trainer_run(fl_trainer_t *t, const fl_shard_t *shard, uint32_t client_id, const uint8_t *msg,
                   size_t len, uint8_t **out, size_t *out_len) {
  Fedlr__Envelope *env = NULL;
  int rc = fl_wire_decode(msg, len, &t->limits, &env);
  if (rc) return rc;
  if (env->body_case != FEDLR__ENVELOPE__BODY_ROUND_START)
    rc = fl_err_set(FL_EPROTO, "expected a round start, got message kind %d", (int)env->body_case);
  else
    rc = fl_trainer_run_decoded(t, shard, client_id, env->round_start, out, out_len);
  fl_wire_free(&env);
  return rc;
}

/* The message path's local schedule: fl_sched_lr over the RoundStart's
 * schedule and rate. */
typedef struct {
  fl_sched_t sched;
  double lr0;
} msg_lr_t;

static double msg_lr(const void *arg, uint64_t t) {
  const msg_lr_t *a = arg;
  return fl_sched_lr(&a->sched, a->lr0, t, NULL);
}

int fl_trainer_run_decoded(fl_trainer_t *t, const fl_shard_t *shard, uint32_t client_id,
                           const Fedlr__RoundStart *rs, uint8_t **out, size_t *out_len) {
  int rc = 0;
  const fl_model_spec_t *m = &t->model;
  if (strcmp(rs->model, m->spec) != 0)
    return fl_err_set(FL_ESHAPE, "round %u is for model '%s', this client runs '%s'", rs->round,
                      rs->model, m->spec);
  if ((rc = fl_wire_check_tensors(rs->weights, rs->n_weights, m))) return rc;
  msg_lr_t lr = {.lr0 = rs->lr};
  if ((rc = fl_sched_parse_local(rs->local_schedule, &lr.sched))) return rc;
  fl_train_plan_t plan = {
      .round = rs->round,
      .lr = msg_lr,
      .lr_arg = &lr,
      .lr0 = rs->lr,
      .step_unit = rs->local_unit == FEDLR__ROUND_START__LOCAL_UNIT__STEP,
      .local_epochs = rs->local_epochs,
      .batch_size = rs->batch_size,
      .seed = rs->seed,
      .prox_mu = rs->prox_mu,
  };
  fl_wire_optim_from(rs->optimizer, &plan.optim);
  fl_wire_tensors_copy(rs->weights, rs->n_weights, m, t->global);
  fl_train_stats_t st;
  /* The delta goes to t->params itself (the core subtracts in place). */
  if ((rc = fl_trainer_train(t, shard, &plan, t->global, t->params, &st))) return rc;

  fl_wire_tensors_t tv;
  if ((rc = fl_wire_tensors_init(&tv, m, t->params))) return rc;
  Fedlr__Update up = FEDLR__UPDATE__INIT;
  up.round = rs->round;
  up.client_id = client_id;
  up.num_examples = st.num_examples;
  up.is_delta = 1;
  up.n_weights = tv.n;
  up.weights = tv.ptrs;
  up.train_loss = st.train_loss;
  up.steps = st.steps;
  up.attempt = rs->attempt;
  Fedlr__Envelope reply = FEDLR__ENVELOPE__INIT;
  reply.body_case = FEDLR__ENVELOPE__BODY_UPDATE;
  reply.update = &up;
  rc = fl_wire_encode(&reply, out, out_len);
  fl_wire_tensors_free(&tv);
  return rc;
}

/* Sizes the per-round buffers for n examples at batch B and the optimizer. */
static int prepare(fl_trainer_t *t, size_t n, size_t B, const fl_optim_config_t *oc) {
  int rc;
  if ((rc = ensure_batch(t, B)) || (rc = ensure_optim(t, oc))) return rc;
  if (n > t->cap_order) {
    uint32_t *o = realloc(t->order, n * sizeof *o);
    if (!o) return fl_err_set(FL_ENOMEM, "trainer: out of memory for %zu examples", n);
    t->order = o;
    t->cap_order = n;
  }
  return 0;
}

void fl_trainer_prox_grad(float *grad, const float *w, const float *w_global, size_t n, float mu) {
  for (size_t i = 0; i < n; i++)
    grad[i] += mu * (w[i] - w_global[i]);
}

/* E epochs of minibatch steps on t->params from `global`: the core of a
 * round. */
static int train_epochs(fl_trainer_t *t, const fl_shard_t *shard, const fl_train_plan_t *p,
                        const float *global, size_t B, fl_train_stats_t *st) {
  const fl_model_spec_t *m = &t->model;
  const fl_dataset_t *d = shard->data;
  const size_t n = shard->n, dim = m->dims[0];
  fl_rng_t rng;
  fl_rng_seed(&rng, p->seed);
  double loss_sum = 0;
  uint64_t step = 0, seen = 0;
  /* Plain SGD keeps no state (its step count is never read), so the fused
   * step can stand in for the optimizer's. */
  const int plain_sgd =
      p->optim.kind == FL_OPT_SGD && p->optim.weight_decay == 0.0f && !(p->prox_mu > 0);
  for (uint32_t ep = 0; ep < p->local_epochs; ep++) {
    for (size_t i = 0; i < n; i++)
      t->order[i] = shard->idx ? shard->idx[i] : (uint32_t)i;
    fl_rng_shuffle_u32(&rng, t->order, n);
    for (size_t b0 = 0; b0 < n; b0 += B) {
      size_t bs = n - b0 < B ? n - b0 : B;
      for (size_t j = 0; j < bs; j++) {
        uint32_t r = t->order[b0 + j];
        memcpy(t->bx + j * dim, d->x + (size_t)r * dim, dim * sizeof *t->bx);
        t->by[j] = d->y[r];
      }
      float lr = (float)p->lr(p->lr_arg, p->step_unit ? step : ep);
      float loss;
      if (plain_sgd) { /* the same bits, one pass over the weights (fl_model.h) */
        loss = fl_model_sgd_step(m, t->ws, t->params, t->bx, t->by, bs, lr, t->grad);
      } else {
        loss = fl_model_loss_grad(m, t->ws, t->params, t->bx, t->by, bs, t->grad);
        /* FedProx: the optimizer acts on the gradient of the data loss plus
         * mu/2 ||w - w_global||^2; the loss reported stays the data loss. */
        if (p->prox_mu > 0)
          fl_trainer_prox_grad(t->grad, t->params, global, m->num_params, p->prox_mu);
        fl_optim_step(t->optim, t->params, t->grad, lr);
      }
      loss_sum += (double)loss * (double)bs;
      seen += bs;
      step++;
      if (t->tick && step % t->tick_every == 0 && t->tick(t->tick_arg, step))
        return fl_err_set(FL_ESTATE, "round %u: training aborted", p->round);
    }
  }
  st->train_loss = seen ? loss_sum / (double)seen : 0;
  st->steps = step;
  return 0;
}

int fl_trainer_train(fl_trainer_t *t, const fl_shard_t *shard, const fl_train_plan_t *p,
                     const float *global, float *delta, fl_train_stats_t *st) {
  int rc;
  const fl_model_spec_t *m = &t->model;
  if ((rc = fl_optim_validate(&p->optim))) return rc;
  if ((rc = check_shard(m, shard))) return rc;
  if (!(p->prox_mu >= 0 && p->prox_mu <= FL_WIRE_MAX_PROX_MU))
    return fl_err_set(FL_ERANGE, "round %u: prox_mu %g outside [0, %g] (FedProx's coefficient)",
                      p->round, (double)p->prox_mu, FL_WIRE_MAX_PROX_MU);
  size_t B = p->batch_size < shard->n ? p->batch_size : shard->n;
  if (B == 0) return fl_err_set(FL_ERANGE, "round %u: batch size 0", p->round);
  if ((rc = prepare(t, shard->n, B, &p->optim))) return rc;
  /* t->params is the trainer's own: no caller can pass it as `global`,
   * which must stay as it is (FedProx's anchor, and the delta's base). */
  assert(global != t->params);
  memcpy(t->params, global, m->num_params * sizeof *t->params);
  if ((rc = train_epochs(t, shard, p, global, B, st))) return rc;
  for (size_t i = 0; i < m->num_params; i++) {
    delta[i] = t->params[i] - global[i];
    if (!isfinite(delta[i]))
      return fl_err_set(FL_ENONFINITE,
                        "round %u: local training diverged (lr %g): parameter %zu is "
                        "not finite; lower --lr",
                        p->round, (double)p->lr0, i);
  }
  if (shard->attack) fl_attack_apply(shard->attack, delta, m->num_params, p->seed);
  st->num_examples = fl_trainer_claimed_examples(shard);
  return 0;
}

/* Checks that a shard's data fits model m (features, labels). */
static int check_shard(const fl_model_spec_t *m, const fl_shard_t *shard) {
  const fl_dataset_t *d = shard->data;
  if (shard->n == 0 || d->dim != m->dims[0])
    return fl_err_set(FL_ESHAPE, "client data: %zu examples of %zu features, model needs %zu",
                      shard->n, d->dim, m->dims[0]);
  if (d->num_classes > m->dims[m->num_layers])
    return fl_err_set(FL_ESHAPE, "client data has labels up to %zu, the model has %zu classes",
                      d->num_classes - 1, m->dims[m->num_layers]);
  return 0;
}

int fl_trainer_evaluate(fl_trainer_t *t, const fl_shard_t *shard, const float *params, double *loss,
                        double *accuracy) {
  const fl_model_spec_t *m = &t->model;
  int rc = check_shard(m, shard);
  if (rc) return rc;
  if (!t->eval_ws) {
    t->eval_ws = fl_model_ws_new(m, fl_model_eval_batch(m, TRAINER_EVAL_BATCH));
    t->eval_x = fl_gemm_alloc(TRAINER_EVAL_BATCH * m->dims[0]);
    t->eval_y = malloc(TRAINER_EVAL_BATCH * sizeof *t->eval_y);
    if (!t->eval_ws || !t->eval_x || !t->eval_y) {
      fl_model_ws_destroy(&t->eval_ws);
      return fl_err_set(FL_ENOMEM, "trainer: out of memory for evaluation");
    }
  }
  const fl_dataset_t *d = shard->data;
  const size_t dim = m->dims[0];
  double loss_sum = 0;
  size_t correct = 0;
  for (size_t b0 = 0; b0 < shard->n; b0 += TRAINER_EVAL_BATCH) {
    size_t bs = shard->n - b0 < TRAINER_EVAL_BATCH ? shard->n - b0 : TRAINER_EVAL_BATCH;
    for (size_t j = 0; j < bs; j++) {
      size_t r = shard->idx ? shard->idx[b0 + j] : b0 + j;
      memcpy(t->eval_x + j * dim, d->x + r * dim, dim * sizeof *t->eval_x);
      t->eval_y[j] = d->y[r];
    }
    fl_model_evaluate(m, t->eval_ws, params, t->eval_x, t->eval_y, bs, &loss_sum, &correct);
  }
  *loss = loss_sum / (double)shard->n;
  *accuracy = (double)correct / (double)shard->n;
  return 0;
}

int fl_trainer_evaluate_decoded(fl_trainer_t *t, const fl_shard_t *shard, uint32_t client_id,
                                const Fedlr__Evaluate *ev, uint8_t **out, size_t *out_len) {
  const fl_model_spec_t *m = &t->model;
  int rc;
  if (strcmp(ev->model, m->spec) != 0)
    return fl_err_set(FL_ESHAPE, "evaluation of round %u is for model '%s', this client runs '%s'",
                      ev->round, ev->model, m->spec);
  if ((rc = fl_wire_check_tensors(ev->weights, ev->n_weights, m))) return rc;
  fl_wire_tensors_copy(ev->weights, ev->n_weights, m, t->params);
  double loss, acc;
  if ((rc = fl_trainer_evaluate(t, shard, t->params, &loss, &acc))) return rc;
  Fedlr__Metric accuracy = FEDLR__METRIC__INIT;
  accuracy.name = "accuracy";
  accuracy.value = acc;
  Fedlr__Metric *mets[1] = {&accuracy};
  Fedlr__EvalResult r = FEDLR__EVAL_RESULT__INIT;
  r.round = ev->round;
  r.client_id = client_id;
  r.num_examples = shard->n;
  r.loss = loss;
  r.n_metrics = 1;
  r.metrics = mets;
  Fedlr__Envelope reply = FEDLR__ENVELOPE__INIT;
  reply.body_case = FEDLR__ENVELOPE__BODY_EVAL_RESULT;
  reply.eval_result = &r;
  return fl_wire_encode(&reply, out, out_len);
}
