/* Client trainer: a RoundStart from a real engine in, an Update out;
 * determinism, learning, local schedules, and rejection of bad messages. */
#include "fl_test.h"

#include "fl_engine.h"
#include "fl_error.h"
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

FL_TEST_MAIN()
