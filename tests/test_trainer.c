/* Client trainer: a RoundStart from a real engine in, an Update out;
 * determinism, learning, local schedules, rejection of bad messages, and
 * FedProx (the proximal gradient against finite differences, the loop
 * against a reference written out here, prox_mu 0 as plain training). */
#include "fl_test.h"

#include "fl_engine.h"
#include "fl_error.h"
#include "fl_optim.h"
#include "fl_rng.h"
#include "fl_trainer.h"
#include "fl_wire.h"

#define IN 8
#define CLASSES 4
#define N 400

/* A separable synthetic problem: class c has mean +2 on feature c. */
static fl_dataset_t *synthetic(uint64_t seed) {
  fl_dataset_t *d = calloc(1, sizeof *d);
  d->n = N;
  d->dim = IN;
  d->num_classes = CLASSES;
  d->x = malloc(N * IN * sizeof *d->x);
  d->y = malloc(N * sizeof *d->y);
  fl_rng_t r;
  fl_rng_seed(&r, seed);
  for (size_t i = 0; i < N; i++) {
    d->y[i] = (int32_t)(i % CLASSES);
    for (size_t j = 0; j < IN; j++)
      d->x[i * IN + j] = (float)(0.5 * fl_rng_normal(&r) + (j == (size_t)d->y[i] ? 2.0 : 0.0));
  }
  return d;
}

static fl_engine_config_t config(const fl_dataset_t *test, const char *local) {
  fl_engine_config_t c;
  memset(&c, 0, sizeof c);
  fl_model_parse("mlp:16", IN, CLASSES, &c.model);
  c.test = test;
  c.lr0 = 0.1;
  c.server_lr = 1;
  fl_sched_parse("const", &c.sched);
  fl_optim_parse("momentum:0.9", &c.optim);
  snprintf(c.local_schedule, sizeof c.local_schedule, "%s", local);
  c.local_epochs = 2;
  c.batch_size = 10;
  c.fraction = 1.0;
  c.min_clients = 1;
  c.rounds = 10;
  c.seed = 5;
  c.eval_every = 1;
  c.quorum = 1.0;
  return c;
}

/* An engine for `c` with one client "a" of N examples, its first round
 * open, and that client's RoundStart in *msg (malloc'd). NULL on failure. */
static fl_engine_t *first_round(const fl_engine_config_t *c, uint8_t **msg, size_t *mlen) {
  int err;
  fl_engine_t *e = fl_engine_new(c, &err);
  if (e && (fl_engine_add_client(e, "a", N, NULL) || fl_engine_begin_round(e) ||
            fl_engine_encode_round_start(e, 0, msg, mlen)))
    fl_engine_destroy(&e);
  return e;
}

TEST(update_is_deterministic_and_valid) {
  fl_dataset_t *d = synthetic(1);
  fl_engine_config_t c = config(d, "const");
  int err;
  fl_engine_t *e = fl_engine_new(&c, &err);
  ASSERT_EQ(fl_engine_add_client(e, "a", N, NULL), 0);
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  uint8_t *msg, *u1, *u2;
  size_t mlen, l1, l2;
  ASSERT_EQ(fl_engine_encode_round_start(e, 0, &msg, &mlen), 0);
  fl_trainer_t *t1 = fl_trainer_new(&c.model), *t2 = fl_trainer_new(&c.model);
  fl_shard_t shard = {d, NULL, N, NULL};
  ASSERT_EQ(fl_trainer_run(t1, &shard, 0, msg, mlen, &u1, &l1), 0);
  ASSERT_EQ(fl_trainer_run(t2, &shard, 0, msg, mlen, &u2, &l2), 0);
  ASSERT_EQ(l1, l2);
  ASSERT_EQ(memcmp(u1, u2, l1), 0);
  /* Reusing a trainer (state reset per round) gives the same bytes again. */
  uint8_t *u3;
  size_t l3;
  ASSERT_EQ(fl_trainer_run(t1, &shard, 0, msg, mlen, &u3, &l3), 0);
  ASSERT_EQ(memcmp(u1, u3, l1), 0);
  Fedlr__Envelope *env;
  ASSERT_EQ(fl_wire_decode(u1, l1, fl_engine_limits(e), &env), 0);
  ASSERT_EQ(env->update->round, 1);
  ASSERT_EQ(env->update->num_examples, N);
  ASSERT_EQ(env->update->steps, 2 * (N / 10));
  ASSERT_TRUE(env->update->is_delta);
  fl_wire_free(&env);
  ASSERT_EQ(fl_engine_submit(e, 0, u1, l1), 0);
  free(msg);
  free(u1);
  free(u2);
  free(u3);
  fl_trainer_destroy(&t1);
  fl_trainer_destroy(&t2);
  fl_engine_destroy(&e);
  fl_dataset_destroy(&d);
}

/* Four clients, each holding one class (extreme label skew), learn the
 * problem together through the engine. */
TEST(federated_training_learns) {
  fl_dataset_t *d = synthetic(2), *test = synthetic(3);
  fl_engine_config_t c = config(test, "exp:gamma=0.5");
  int err;
  fl_engine_t *e = fl_engine_new(&c, &err);
  uint32_t idx[CLASSES][N / CLASSES];
  for (size_t i = 0; i < N; i++)
    idx[i % CLASSES][i / CLASSES] = (uint32_t)i;
  for (int k = 0; k < CLASSES; k++) {
    char name[8];
    snprintf(name, sizeof name, "k%d", k);
    ASSERT_EQ(fl_engine_add_client(e, name, N / CLASSES, NULL), 0);
  }
  fl_trainer_t *t = fl_trainer_new(&c.model);
  fl_round_metrics_t m = {0};
  double first_loss = 0;
  while (!fl_engine_finished(e)) {
    ASSERT_EQ(fl_engine_begin_round(e), 0);
    for (uint32_t k = 0; k < CLASSES; k++) {
      uint8_t *msg, *up;
      size_t mlen, ulen;
      ASSERT_EQ(fl_engine_encode_round_start(e, k, &msg, &mlen), 0);
      fl_shard_t shard = {d, idx[k], N / CLASSES, NULL};
      ASSERT_EQ(fl_trainer_run(t, &shard, k, msg, mlen, &up, &ulen), 0);
      ASSERT_EQ(fl_engine_submit(e, k, up, ulen), 0);
      free(msg);
      free(up);
    }
    ASSERT_EQ(fl_engine_end_round(e, &m), 0);
    if (m.round == 1) first_loss = m.test_loss;
  }
  ASSERT_DBL_OP(m.test_accuracy, >=, 0.95);
  ASSERT_DBL_OP(m.test_loss, <, first_loss);
  fl_trainer_destroy(&t);
  fl_engine_destroy(&e);
  fl_dataset_destroy(&d);
  fl_dataset_destroy(&test);
}

/* A local schedule changes the update; step and epoch units differ. */
TEST(local_schedule_is_applied) {
  fl_dataset_t *d = synthetic(4);
  const char *specs[3] = {"const", "step:gamma=0.1,every=1", "step:gamma=0.1,every=1"};
  int units[3] = {0, 0, 1};
  uint8_t *ups[3];
  size_t lens[3];
  for (int s = 0; s < 3; s++) {
    fl_engine_config_t c = config(NULL, specs[s]);
    c.local_unit = units[s];
    uint8_t *msg;
    size_t mlen;
    fl_engine_t *e = first_round(&c, &msg, &mlen);
    ASSERT_TRUE(e != NULL);
    fl_trainer_t *t = fl_trainer_new(&c.model);
    fl_shard_t shard = {d, NULL, N, NULL};
    ASSERT_EQ(fl_trainer_run(t, &shard, 0, msg, mlen, &ups[s], &lens[s]), 0);
    free(msg);
    fl_trainer_destroy(&t);
    fl_engine_destroy(&e);
  }
  ASSERT_TRUE(lens[0] != lens[1] || memcmp(ups[0], ups[1], lens[0]) != 0);
  ASSERT_TRUE(lens[1] != lens[2] || memcmp(ups[1], ups[2], lens[1]) != 0);
  for (int s = 0; s < 3; s++)
    free(ups[s]);
  fl_dataset_destroy(&d);
}

TEST(bad_round_start_rejected) {
  fl_dataset_t *d = synthetic(5);
  fl_engine_config_t c = config(NULL, "const");
  int err;
  fl_engine_t *e = fl_engine_new(&c, &err);
  ASSERT_EQ(fl_engine_add_client(e, "a", N, NULL), 0);
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  uint8_t *msg, *up = NULL;
  size_t mlen, ulen;
  ASSERT_EQ(fl_engine_encode_round_start(e, 0, &msg, &mlen), 0);
  fl_model_spec_t other;
  ASSERT_EQ(fl_model_parse("mlp:17", IN, CLASSES, &other), 0);
  fl_trainer_t *t = fl_trainer_new(&other);
  fl_shard_t shard = {d, NULL, N, NULL};
  ASSERT_EQ(fl_trainer_run(t, &shard, 0, msg, mlen, &up, &ulen), FL_ESHAPE);
  ASSERT_CONTAINS(fl_err_msg(), "mlp:16");
  ASSERT_TRUE(up == NULL);
  fl_trainer_destroy(&t);
  t = fl_trainer_new(&c.model);
  ASSERT_NE(fl_trainer_run(t, &shard, 0, msg, mlen / 2, &up, &ulen), 0);
  ASSERT_TRUE(up == NULL);
  free(msg);
  fl_trainer_destroy(&t);
  fl_engine_destroy(&e);
  fl_dataset_destroy(&d);
}

/* Decodes an encoded Update; returns the delta (num_params floats, malloc'd)
 * and the claimed example count. */
static float *update_delta(const fl_engine_t *e, const uint8_t *buf, size_t len, uint64_t *n) {
  Fedlr__Envelope *env = NULL;
  if (fl_wire_decode(buf, len, fl_engine_limits(e), &env)) return NULL;
  const fl_model_spec_t *m = fl_engine_model(e);
  float *d = malloc(m->num_params * sizeof *d);
  fl_wire_tensors_copy(env->update->weights, env->update->n_weights, m, d);
  *n = env->update->num_examples;
  fl_wire_free(&env);
  return d;
}

/* Each attack turns the honest update into exactly what fl_attack.h says,
 * and specs parse (or fail) as documented. */
TEST(attacks_change_the_update_as_documented) {
  fl_attack_t a;
  ASSERT_EQ(fl_attack_parse("none", &a), 0);
  ASSERT_FALSE(fl_attack_active(&a));
  ASSERT_EQ(fl_attack_parse("sign-flip,scale:-2.5,examples:1000000000,nan", &a), 0);
  ASSERT_TRUE(a.sign_flip && a.nan);
  ASSERT_NEAR(a.scale, -2.5, 0);
  ASSERT_EQ(a.examples, 1000000000ULL);
  const char *bad[] = {"",          "sign-flip,", "flip",        "scale:0", "scale:x",
                       "scale:inf", "examples:0", "examples:-3", "nan,nan", "none,nan"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ASSERT_EQ(fl_attack_parse(bad[i], &a), FL_EINVAL);
    ASSERT_FALSE(fl_attack_active(&a));
  }
  ASSERT_EQ(fl_attack_parse("nan,nan", &a), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "twice");

  fl_dataset_t *d = synthetic(3);
  fl_engine_config_t c = config(d, "const");
  uint8_t *msg;
  size_t mlen;
  fl_engine_t *e = first_round(&c, &msg, &mlen);
  ASSERT_TRUE(e != NULL);
  Fedlr__Envelope *rs = NULL;
  ASSERT_EQ(fl_wire_decode(msg, mlen, fl_engine_limits(e), &rs), 0);
  const size_t P = c.model.num_params, nan_at = (size_t)(rs->round_start->seed % P);
  fl_wire_free(&rs);
  fl_trainer_t *t = fl_trainer_new(&c.model);
  const char *specs[] = {"none", "sign-flip",         "scale:3", "sign-flip,scale:3",
                         "nan",  "examples:123456789"};
  float *honest = NULL;
  for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
    ASSERT_EQ(fl_attack_parse(specs[k], &a), 0);
    fl_shard_t shard = {d, NULL, N, &a};
    ASSERT_EQ(fl_trainer_claimed_examples(&shard), a.examples ? a.examples : N);
    uint8_t *u;
    size_t ul;
    ASSERT_EQ(fl_trainer_run(t, &shard, 0, msg, mlen, &u, &ul), 0);
    uint64_t n;
    float *dl = update_delta(e, u, ul, &n);
    ASSERT_TRUE(dl != NULL);
    ASSERT_EQ(n, a.examples ? a.examples : N);
    if (k == 0) {
      honest = dl;
      free(u);
      continue;
    }
    double f = (a.sign_flip ? -1.0 : 1.0) * a.scale;
    size_t nans = 0;
    for (size_t i = 0; i < P; i++) {
      if (isnan(dl[i])) {
        nans++;
        ASSERT_EQ(i, nan_at);
        continue;
      }
      float want = (float)((double)honest[i] * f);
      ASSERT_EQ(memcmp(&dl[i], &want, sizeof want), 0);
    }
    ASSERT_EQ(nans, a.nan ? 1 : 0);
    free(dl);
    free(u);
  }
  free(honest);
  free(msg);
  fl_trainer_destroy(&t);
  fl_engine_destroy(&e);
  fl_dataset_destroy(&d);
}

/* ---- FedProx ---- */

static double const_lr(const void *arg, uint64_t t) {
  (void)t;
  return *(const double *)arg;
}

/* A plan of E epochs of batches of B at the constant rate *lr with the
 * optimizer `optim` and FedProx's mu. */
static fl_train_plan_t prox_plan(const double *lr, const char *optim, uint32_t E, uint32_t B,
                                 float mu) {
  fl_train_plan_t p = {.round = 1, .lr = const_lr, .lr_arg = lr, .lr0 = (float)*lr};
  fl_optim_parse(optim, &p.optim);
  p.local_epochs = E;
  p.batch_size = B;
  p.seed = 99;
  p.prox_mu = mu;
  return p;
}

/* The trainer's loop written out plainly for p on all of d: the epoch
 * shuffles of fl_rng from p->seed, one fl_model_loss_grad per batch, the
 * proximal term as a loop of its own, then the optimizer. Writes
 * w_local - wg to delta, the parameters after the first step to w1 (if not
 * NULL), and returns the example-weighted mean data loss. */
static double ref_train(const fl_model_spec_t *m, const fl_dataset_t *d, const fl_train_plan_t *p,
                        const float *wg, float *delta, float *w1) {
  const size_t P = m->num_params, n = d->n, B = p->batch_size < n ? p->batch_size : n;
  float *w = malloc(P * sizeof *w), *g = malloc(P * sizeof *g);
  float *x = malloc(B * IN * sizeof *x);
  int32_t *y = malloc(B * sizeof *y);
  uint32_t *order = malloc(n * sizeof *order);
  fl_model_ws_t *ws = fl_model_ws_new(m, B);
  fl_optim_t *o = fl_optim_new(&p->optim, P);
  memcpy(w, wg, P * sizeof *w);
  fl_rng_t rng;
  fl_rng_seed(&rng, p->seed);
  double loss_sum = 0;
  size_t seen = 0, step = 0;
  for (uint32_t ep = 0; ep < p->local_epochs; ep++) {
    for (size_t i = 0; i < n; i++)
      order[i] = (uint32_t)i;
    fl_rng_shuffle_u32(&rng, order, n);
    for (size_t b0 = 0; b0 < n; b0 += B) {
      size_t bs = n - b0 < B ? n - b0 : B;
      for (size_t j = 0; j < bs; j++) {
        memcpy(x + j * IN, d->x + (size_t)order[b0 + j] * IN, IN * sizeof *x);
        y[j] = d->y[order[b0 + j]];
      }
      float loss = fl_model_loss_grad(m, ws, w, x, y, bs, g);
      if (p->prox_mu != 0) /* 0: plain training, the term left out */
        for (size_t i = 0; i < P; i++)
          g[i] = g[i] + p->prox_mu * (w[i] - wg[i]);
      fl_optim_step(o, w, g, (float)p->lr(p->lr_arg, ep));
      if (++step == 1 && w1) memcpy(w1, w, P * sizeof *w);
      loss_sum += (double)loss * (double)bs;
      seen += bs;
    }
  }
  for (size_t i = 0; i < P; i++)
    delta[i] = w[i] - wg[i];
  fl_optim_destroy(&o);
  fl_model_ws_destroy(&ws);
  free(w);
  free(g);
  free(x);
  free(y);
  free(order);
  return loss_sum / (double)seen;
}

/* The FedProx objective of a batch, in double: the model's mean loss over
 * it (fl_model_evaluate sums the rows in double) + mu/2 ||w - wg||^2. */
static double prox_objective(const fl_model_spec_t *m, fl_model_ws_t *ws, const float *w,
                             const float *wg, const float *x, const int32_t *y, size_t B,
                             double mu) {
  double loss = 0, sq = 0;
  size_t correct = 0;
  fl_model_evaluate(m, ws, w, x, y, B, &loss, &correct);
  for (size_t i = 0; i < m->num_params; i++)
    sq += ((double)w[i] - wg[i]) * ((double)w[i] - wg[i]);
  return loss / (double)B + 0.5 * mu * sq;
}

/* fl_model_loss_grad + fl_trainer_prox_grad is the gradient of
 * loss(w) + mu/2 ||w - w_g||^2: central differences of that objective,
 * every parameter, relative error below 1e-2; without the proximal term
 * the same check fails (the term is material at this w). */
TEST(prox_gradient_matches_finite_differences_of_the_objective) {
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("mlp:5", IN, CLASSES, &m), 0);
  const size_t P = m.num_params, B = 12;
  const float mu = 0.5f;
  fl_dataset_t *d = synthetic(6);
  float *w = malloc(P * sizeof *w), *wg = malloc(P * sizeof *wg), *g = malloc(P * sizeof *g),
        *plain = malloc(P * sizeof *plain);
  fl_model_init(&m, w, 7);
  fl_rng_t r;
  fl_rng_seed(&r, 8);
  for (size_t i = 0; i < P; i++) {
    w[i] *= 3.0f; /* every layer matters */
    wg[i] = w[i] + (float)(0.3 * fl_rng_normal(&r));
  }
  fl_model_ws_t *ws = fl_model_ws_new(&m, B);
  ASSERT_TRUE(ws != NULL);
  fl_model_loss_grad(&m, ws, w, d->x, d->y, B, g);
  memcpy(plain, g, P * sizeof *g);
  fl_trainer_prox_grad(g, w, wg, P, mu);
  double worst = 0, worst_plain = 0;
  for (size_t i = 0; i < P; i++) {
    float orig = w[i], h = 1e-2f * fmaxf(1.0f, fabsf(orig));
    float hp = w[i] = orig + h;
    double lp = prox_objective(&m, ws, w, wg, d->x, d->y, B, mu);
    float hm = w[i] = orig - h;
    double lm = prox_objective(&m, ws, w, wg, d->x, d->y, B, mu);
    w[i] = orig;
    double fd = (lp - lm) / ((double)hp - (double)hm);
    double scale = fmax(fmax(fabs(fd), fabs(g[i])), 1e-3);
    double e = fabs(fd - g[i]) / scale;
    worst = fmax(worst, e);
    worst_plain =
        fmax(worst_plain, fabs(fd - plain[i]) / fmax(fmax(fabs(fd), fabs(plain[i])), 1e-3));
    if (e >= 1e-2)
      FL__FAIL("param %zu: finite difference %.8g, data + proximal gradient %.8g (data %.8g)", i,
               fd, g[i], plain[i]);
  }
  fprintf(stderr, "  FedProx mu %g: worst relative gradient error %.2e (%.2e without the term)\n",
          (double)mu, worst, worst_plain);
  ASSERT_DBL_OP(worst_plain, >, 0.1);
  fl_model_ws_destroy(&ws);
  free(w);
  free(wg);
  free(g);
  free(plain);
  fl_dataset_destroy(&d);
}

/* The trainer with prox_mu > 0 is the reference loop above, bit for bit,
 * for SGD and for momentum with weight decay (which acts on the whole
 * gradient), over 80 steps; so is prox_mu 0 with the term left out; the
 * reported train_loss is the data loss. A prox_mu out of range is
 * refused. */
TEST(prox_training_is_the_reference_loop) {
  fl_dataset_t *d = synthetic(7);
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("mlp:16", IN, CLASSES, &m), 0);
  const size_t P = m.num_params;
  float *wg = malloc(P * sizeof *wg), *got = malloc(P * sizeof *got),
        *want = malloc(P * sizeof *want);
  fl_model_init(&m, wg, 3);
  fl_trainer_t *t = fl_trainer_new(&m);
  fl_shard_t shard = {d, NULL, N, NULL};
  const double lr = 0.05;
  const char *optims[] = {"sgd", "momentum:0.9,wd=0.01"};
  const float mus[] = {0.5f, 0.0f};
  for (size_t k = 0; k < 2; k++)
    for (size_t j = 0; j < 2; j++) {
      fl_train_plan_t p = prox_plan(&lr, optims[k], 2, 10, mus[j]);
      fl_train_stats_t st;
      ASSERT_EQ(fl_trainer_train(t, &shard, &p, wg, got, &st), 0);
      ASSERT_EQ(st.steps, 2 * N / 10);
      double loss = ref_train(&m, d, &p, wg, want, NULL);
      for (size_t i = 0; i < P; i++)
        if (memcmp(&got[i], &want[i], sizeof got[i]) != 0)
          FL__FAIL("%s, mu %g: parameter %zu: trainer %.9g, reference %.9g", optims[k],
                   (double)mus[j], i, got[i], want[i]);
      ASSERT_EQ(memcmp(&st.train_loss, &loss, sizeof loss), 0);
    }
  const float bad[] = {-0.5f, NAN, 2e4f};
  for (size_t k = 0; k < 3; k++) {
    fl_train_plan_t p = prox_plan(&lr, "sgd", 1, 10, bad[k]);
    fl_train_stats_t st;
    ASSERT_EQ(fl_trainer_train(t, &shard, &p, wg, got, &st), FL_ERANGE);
    ASSERT_CONTAINS(fl_err_msg(), "prox_mu");
  }
  fl_trainer_destroy(&t);
  free(wg);
  free(got);
  free(want);
  fl_dataset_destroy(&d);
}

/* With SGD and one epoch of two batches, the first step starts at w_g
 * (no proximal term), and the second differs from plain training by
 * exactly the term: delta_prox = delta_plain - lr mu (w1 - w_g), w1 the
 * weights after step 1. */
TEST(prox_second_sgd_step_by_hand) {
  fl_dataset_t *d = synthetic(8);
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("mlp:16", IN, CLASSES, &m), 0);
  const size_t P = m.num_params;
  const double lr = 0.1;
  const float mu = 0.5f;
  float *wg = malloc(P * sizeof *wg), *plain = malloc(P * sizeof *plain),
        *prox = malloc(P * sizeof *prox), *w1 = malloc(P * sizeof *w1),
        *scratch = malloc(P * sizeof *scratch);
  fl_model_init(&m, wg, 4);
  fl_trainer_t *t = fl_trainer_new(&m);
  fl_shard_t shard = {d, NULL, N, NULL};
  fl_train_plan_t p0 = prox_plan(&lr, "sgd", 1, N / 2, 0), p1 = prox_plan(&lr, "sgd", 1, N / 2, mu);
  fl_train_stats_t st0, st1;
  ASSERT_EQ(fl_trainer_train(t, &shard, &p0, wg, plain, &st0), 0);
  ASSERT_EQ(fl_trainer_train(t, &shard, &p1, wg, prox, &st1), 0);
  ASSERT_EQ(st1.steps, 2);
  ref_train(&m, d, &p0, wg, scratch, w1);
  /* The data loss of both steps is the same: w1 is. */
  ASSERT_EQ(memcmp(&st0.train_loss, &st1.train_loss, sizeof st0.train_loss), 0);
  double biggest = 0;
  for (size_t i = 0; i < P; i++) {
    double term = lr * mu * ((double)w1[i] - wg[i]);
    biggest = fmax(biggest, fabs(term));
    ASSERT_NEAR((double)prox[i] - plain[i], -term, 1e-6);
  }
  ASSERT_DBL_OP(biggest, >, 1e-4); /* the check is not vacuous */
  fl_trainer_destroy(&t);
  free(wg);
  free(plain);
  free(prox);
  free(w1);
  free(scratch);
  fl_dataset_destroy(&d);
}

/* envelope{round_start = rs + extra}: a RoundStart with bytes appended to
 * its own (an explicit field protobuf-c would not write), malloc'd. */
static uint8_t *round_start_with(const Fedlr__RoundStart *rs, const uint8_t *extra, size_t n_extra,
                                 size_t *len) {
  size_t inner = fedlr__round_start__get_packed_size(rs), body = inner + n_extra, at = 1;
  uint8_t *buf = malloc(body + 16);
  buf[0] = 0x1a; /* Envelope.round_start: field 3, length-delimited */
  size_t v = body;
  for (; v >= 0x80; v >>= 7)
    buf[at++] = (uint8_t)(v | 0x80);
  buf[at++] = (uint8_t)v;
  fedlr__round_start__pack(rs, buf + at);
  memcpy(buf + at + inner, extra, n_extra);
  *len = at + body;
  return buf;
}

/* On the wire: a coordinator's RoundStart without FedProx carries no
 * prox_mu field (5 bytes fewer than one with it), and a RoundStart that
 * states prox_mu = 0 (or -0) explicitly trains to the same bytes as one
 * without the field. A RoundStart with prox_mu trains the reference loop
 * with that mu, bit for bit: the field reaches the trainer. */
TEST(prox_mu_on_the_wire) {
  fl_dataset_t *d = synthetic(9);
  fl_engine_config_t c0 = config(NULL, "const"), c1 = c0;
  c1.prox_mu = 0.01;
  uint8_t *m0, *m1;
  size_t l0, l1;
  fl_engine_t *e0 = first_round(&c0, &m0, &l0), *e1 = first_round(&c1, &m1, &l1);
  ASSERT_TRUE(e0 && e1);
  ASSERT_EQ(l1, l0 + 5); /* field 12, fixed32: one tag byte and the float */
  Fedlr__Envelope *env0, *env1;
  ASSERT_EQ(fl_wire_decode(m0, l0, fl_engine_limits(e0), &env0), 0);
  ASSERT_EQ(fl_wire_decode(m1, l1, fl_engine_limits(e1), &env1), 0);
  ASSERT_TRUE(env0->round_start->prox_mu == 0.0f);
  ASSERT_TRUE(env1->round_start->prox_mu == 0.01f);

  fl_trainer_t *t = fl_trainer_new(&c0.model);
  fl_shard_t shard = {d, NULL, N, NULL};
  uint8_t *u0, *u;
  size_t ul0, ul;
  ASSERT_EQ(fl_trainer_run(t, &shard, 0, m0, l0, &u0, &ul0), 0);
  const uint8_t zeros[2][5] = {{0x65, 0, 0, 0, 0}, {0x65, 0, 0, 0, 0x80}};
  for (int k = 0; k < 2; k++) {
    size_t el;
    uint8_t *explicit0 = round_start_with(env0->round_start, zeros[k], 5, &el);
    ASSERT_EQ(el, l0 + 5);
    Fedlr__Envelope *chk;
    ASSERT_EQ(fl_wire_decode(explicit0, el, fl_engine_limits(e0), &chk), 0);
    fl_wire_free(&chk);
    ASSERT_EQ(fl_trainer_run(t, &shard, 0, explicit0, el, &u, &ul), 0);
    ASSERT_EQ(ul, ul0);
    ASSERT_EQ(memcmp(u, u0, ul), 0);
    free(u);
    free(explicit0);
  }

  ASSERT_EQ(fl_trainer_run(t, &shard, 0, m1, l1, &u, &ul), 0);
  uint64_t n;
  float *got = update_delta(e1, u, ul, &n);
  ASSERT_TRUE(got != NULL);
  const Fedlr__RoundStart *rs = env1->round_start;
  const fl_model_spec_t *m = fl_engine_model(e1);
  float *wg = malloc(m->num_params * sizeof *wg), *want = malloc(m->num_params * sizeof *want);
  fl_wire_tensors_copy(rs->weights, rs->n_weights, m, wg);
  double lr = rs->lr;
  fl_train_plan_t p = prox_plan(&lr, "sgd", rs->local_epochs, rs->batch_size, rs->prox_mu);
  fl_wire_optim_from(rs->optimizer, &p.optim);
  p.seed = rs->seed;
  ref_train(m, d, &p, wg, want, NULL);
  ASSERT_EQ(memcmp(got, want, m->num_params * sizeof *got), 0);
  float *plain = update_delta(e0, u0, ul0, &n);
  ASSERT_TRUE(memcmp(got, plain, m->num_params * sizeof *got) != 0);

  free(plain);
  free(got);
  free(wg);
  free(want);
  free(u);
  free(u0);
  free(m0);
  free(m1);
  fl_wire_free(&env0);
  fl_wire_free(&env1);
  fl_trainer_destroy(&t);
  fl_engine_destroy(&e0);
  fl_engine_destroy(&e1);
  fl_dataset_destroy(&d);
}

FL_TEST_MAIN()
