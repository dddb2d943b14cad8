/* Round engine: sampling, validation of updates, exact order-independent
 * FedAvg, quorum, schedule and stopping. Updates are built as real encoded
 * protobuf messages, as a client would send them. */
#include "fl_test.h"

#include "fl_engine.h"
#include "fl_error.h"
#include "fl_rng.h"
#include "fl_wire.h"

#define IN 6
#define CLASSES 3

static fl_engine_config_t base_config(void) {
  fl_engine_config_t c;
  memset(&c, 0, sizeof c);
  fl_model_parse("mlp:4", IN, CLASSES, &c.model);
  c.lr0 = 0.1;
  fl_sched_parse("exp:gamma=0.5", &c.sched);
  fl_optim_parse("sgd", &c.optim);
  c.local_epochs = 1;
  c.batch_size = 4;
  c.fraction = 0.3;
  c.min_clients = 1;
  c.rounds = 5;
  c.seed = 42;
  c.eval_every = 1;
  c.quorum = 1.0;
  return c;
}

static fl_engine_t *make_engine(const fl_engine_config_t *c, size_t clients, uint64_t examples) {
  int err = 0;
  fl_engine_t *e = fl_engine_new(c, &err);
  if (!e) return NULL;
  for (size_t i = 0; i < clients; i++) {
    char name[16];
    snprintf(name, sizeof name, "c%zu", i);
    if (fl_engine_add_client(e, name, examples + i, NULL)) {
      fl_engine_destroy(&e);
      return NULL;
    }
  }
  return e;
}

/* Encodes an update whose delta is `delta` (num_params floats). */
static int encode_update(const fl_model_spec_t *m, uint32_t round, uint32_t client, uint64_t n,
                         const float *delta, int is_delta, double loss, uint8_t **buf,
                         size_t *len) {
  fl_wire_tensors_t tv;
  fl_wire_tensors_init(&tv, m, delta);
  Fedlr__Update u = FEDLR__UPDATE__INIT;
  u.round = round;
  u.client_id = client;
  u.num_examples = n;
  u.is_delta = is_delta;
  u.n_weights = tv.n;
  u.weights = tv.ptrs;
  u.train_loss = loss;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_UPDATE;
  env.update = &u;
  return fl_wire_encode(&env, buf, len);
}

static float *random_delta(size_t n, uint64_t seed) {
  float *d = malloc(n * sizeof *d);
  fl_rng_t r;
  fl_rng_seed(&r, seed);
  for (size_t i = 0; i < n; i++) d[i] = (float)(fl_rng_uniform(&r) - 0.5) * 0.1f;
  return d;
}

TEST(sampling_is_deterministic_and_sized) {
  fl_engine_config_t c = base_config();
  fl_engine_t *a = make_engine(&c, 20, 10), *b = make_engine(&c, 20, 10);
  ASSERT_TRUE(a && b);
  for (int r = 0; r < 3; r++) {
    ASSERT_EQ(fl_engine_begin_round(a), 0);
    ASSERT_EQ(fl_engine_begin_round(b), 0);
    const uint32_t *ia, *ib;
    size_t na = fl_engine_sampled(a, &ia), nb = fl_engine_sampled(b, &ib);
    ASSERT_EQ(na, 6); /* ceil(0.3 * 20) */
    ASSERT_EQ(nb, na);
    for (size_t i = 0; i < na; i++) {
      ASSERT_EQ(ia[i], ib[i]);
      if (i) ASSERT_LT(ia[i - 1], ia[i]);
      ASSERT_LT(ia[i], 20);
    }
    /* Close the round with zero deltas from everyone. */
    float *zero = calloc(c.model.num_params, sizeof *zero);
    for (size_t i = 0; i < na; i++) {
      uint8_t *buf;
      size_t len;
      ASSERT_EQ(encode_update(&c.model, fl_engine_round(a), ia[i], 5, zero, 1, 1.0, &buf, &len), 0);
      ASSERT_EQ(fl_engine_submit(a, ia[i], buf, len), 0);
      ASSERT_EQ(fl_engine_submit(b, ib[i], buf, len), 0);
      free(buf);
    }
    free(zero);
    fl_round_metrics_t m;
    ASSERT_EQ(fl_engine_end_round(a, &m), 0);
    ASSERT_EQ(fl_engine_end_round(b, &m), 0);
  }
  fl_engine_destroy(&a);
  fl_engine_destroy(&b);
}

TEST(min_clients_raises_sample) {
  fl_engine_config_t c = base_config();
  c.fraction = 0.01;
  c.min_clients = 4;
  fl_engine_t *e = make_engine(&c, 10, 10);
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  ASSERT_EQ(fl_engine_sampled(e, NULL), 4);
  fl_engine_destroy(&e);
}

/* FedAvg: global += sum(n_k d_k) / sum(n_k), exactly the same bits whatever
 * the arrival order, and within float rounding of a double reference. */
TEST(fedavg_exact_and_order_independent) {
  fl_engine_config_t c = base_config();
  c.fraction = 1.0;
  const size_t K = 7, P = c.model.num_params;
  float *deltas[7];
  for (size_t k = 0; k < K; k++) deltas[k] = random_delta(P, 100 + k);
  float *results[3];
  size_t orders[3][7] = {{0, 1, 2, 3, 4, 5, 6}, {6, 5, 4, 3, 2, 1, 0}, {3, 0, 6, 2, 5, 1, 4}};
  float *w0 = NULL;
  for (int o = 0; o < 3; o++) {
    fl_engine_t *e = make_engine(&c, K, 10);
    ASSERT_TRUE(e != NULL);
    if (!w0) {
      w0 = malloc(P * sizeof *w0);
      memcpy(w0, fl_engine_weights(e), P * sizeof *w0);
    }
    ASSERT_EQ(fl_engine_begin_round(e), 0);
    for (size_t i = 0; i < K; i++) {
      size_t k = orders[o][i];
      uint8_t *buf;
      size_t len;
      ASSERT_EQ(encode_update(&c.model, 1, (uint32_t)k, 10 + k, deltas[k], 1, 0.5, &buf, &len), 0);
      ASSERT_EQ(fl_engine_submit(e, (uint32_t)k, buf, len), 0);
      free(buf);
    }
    ASSERT_EQ(fl_engine_reported(e), K);
    fl_round_metrics_t m;
    ASSERT_EQ(fl_engine_end_round(e, &m), 0);
    ASSERT_NEAR(m.train_loss, 0.5, 1e-12);
    results[o] = malloc(P * sizeof(float));
    memcpy(results[o], fl_engine_weights(e), P * sizeof(float));
    fl_engine_destroy(&e);
  }
  ASSERT_EQ(memcmp(results[0], results[1], P * sizeof(float)), 0);
  ASSERT_EQ(memcmp(results[0], results[2], P * sizeof(float)), 0);
  double total = 0;
  for (size_t k = 0; k < K; k++) total += 10 + k;
  for (size_t i = 0; i < P; i++) {
    double ref = 0;
    for (size_t k = 0; k < K; k++) ref += (10.0 + k) * deltas[k][i];
    ref = w0[i] + ref / total;
    ASSERT_NEAR(results[0][i], ref, 1e-6);
  }
  for (size_t k = 0; k < K; k++) free(deltas[k]);
  for (int o = 0; o < 3; o++) free(results[o]);
  free(w0);
}

TEST(full_weights_update_equals_delta_update) {
  fl_engine_config_t c = base_config();
  c.fraction = 1.0;
  const size_t P = c.model.num_params;
  float *d = random_delta(P, 7);
  fl_engine_t *a = make_engine(&c, 1, 10), *b = make_engine(&c, 1, 10);
  float *full = malloc(P * sizeof *full);
  for (size_t i = 0; i < P; i++) full[i] = fl_engine_weights(b)[i] + d[i];
  uint8_t *buf;
  size_t len;
  ASSERT_EQ(fl_engine_begin_round(a), 0);
  ASSERT_EQ(fl_engine_begin_round(b), 0);
  ASSERT_EQ(encode_update(&c.model, 1, 0, 10, d, 1, 0.1, &buf, &len), 0);
  ASSERT_EQ(fl_engine_submit(a, 0, buf, len), 0);
  free(buf);
  ASSERT_EQ(encode_update(&c.model, 1, 0, 10, full, 0, 0.1, &buf, &len), 0);
  ASSERT_EQ(fl_engine_submit(b, 0, buf, len), 0);
  free(buf);
  fl_round_metrics_t m;
  ASSERT_EQ(fl_engine_end_round(a, &m), 0);
  ASSERT_EQ(fl_engine_end_round(b, &m), 0);
  for (size_t i = 0; i < P; i++) ASSERT_NEAR(fl_engine_weights(a)[i], fl_engine_weights(b)[i], 1e-6);
  free(d);
  free(full);
  fl_engine_destroy(&a);
  fl_engine_destroy(&b);
}

TEST(bad_updates_rejected_without_side_effects) {
  fl_engine_config_t c = base_config();
  c.fraction = 0.5;
  const size_t P = c.model.num_params;
  fl_engine_t *e = make_engine(&c, 4, 10);
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  const uint32_t *ids;
  size_t m = fl_engine_sampled(e, &ids);
  ASSERT_EQ(m, 2);
  uint32_t in = ids[0], other = ids[1], out = 0;
  while (out == in || out == other) out++;
  float *d = random_delta(P, 3);
  uint8_t *buf;
  size_t len;

  /* random bytes */
  uint8_t junk[64];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 37 + 11);
  ASSERT_NE(fl_engine_submit(e, in, junk, sizeof junk), 0);
  /* stale round */
  ASSERT_EQ(encode_update(&c.model, 7, in, 10, d, 1, 0.1, &buf, &len), 0);
  ASSERT_EQ(fl_engine_submit(e, in, buf, len), FL_ESTALE);
  ASSERT_CONTAINS(fl_err_msg(), "round 7");
  free(buf);
  /* not sampled */
  ASSERT_EQ(encode_update(&c.model, 1, out, 10, d, 1, 0.1, &buf, &len), 0);
  ASSERT_EQ(fl_engine_submit(e, out, buf, len), FL_EPROTO);
  ASSERT_CONTAINS(fl_err_msg(), "not sampled");
  free(buf);
  /* impersonation: message says `other`, sender is `in` */
  ASSERT_EQ(encode_update(&c.model, 1, other, 10, d, 1, 0.1, &buf, &len), 0);
  ASSERT_EQ(fl_engine_submit(e, in, buf, len), FL_EPROTO);
  free(buf);
  /* more examples than registered */
  ASSERT_EQ(encode_update(&c.model, 1, in, 1000000, d, 1, 0.1, &buf, &len), 0);
  ASSERT_EQ(fl_engine_submit(e, in, buf, len), FL_ERANGE);
  ASSERT_CONTAINS(fl_err_msg(), "claims");
  free(buf);
  /* NaN */
  d[3] = NAN;
  ASSERT_EQ(encode_update(&c.model, 1, in, 10, d, 1, 0.1, &buf, &len), 0);
  ASSERT_EQ(fl_engine_submit(e, in, buf, len), FL_ENONFINITE);
  free(buf);
  /* absurdly large delta */
  d[3] = 1e30f;
  ASSERT_EQ(encode_update(&c.model, 1, in, 10, d, 1, 0.1, &buf, &len), 0);
  ASSERT_EQ(fl_engine_submit(e, in, buf, len), FL_ERANGE);
  free(buf);
  d[3] = 0.01f;
  /* wrong shapes: a model with another hidden width */
  fl_model_spec_t wrong;
  ASSERT_EQ(fl_model_parse("mlp:5", IN, CLASSES, &wrong), 0);
  float *dw = random_delta(wrong.num_params, 9);
  ASSERT_EQ(encode_update(&wrong, 1, in, 10, dw, 1, 0.1, &buf, &len), 0);
  ASSERT_NE(fl_engine_submit(e, in, buf, len), 0);
  free(buf);
  free(dw);
  ASSERT_EQ(fl_engine_reported(e), 0);
  ASSERT_FALSE(fl_engine_has_quorum(e));
  fl_round_metrics_t rm;
  ASSERT_EQ(fl_engine_end_round(e, &rm), FL_ESTATE);

  /* the good ones still go through, once */
  ASSERT_EQ(encode_update(&c.model, 1, in, 10, d, 1, 0.1, &buf, &len), 0);
  ASSERT_EQ(fl_engine_submit(e, in, buf, len), 0);
  ASSERT_EQ(fl_engine_submit(e, in, buf, len), FL_ESTALE);
  ASSERT_CONTAINS(fl_err_msg(), "duplicate");
  free(buf);
  ASSERT_EQ(encode_update(&c.model, 1, other, 10, d, 1, 0.1, &buf, &len), 0);
  ASSERT_EQ(fl_engine_submit(e, other, buf, len), 0);
  free(buf);
  ASSERT_EQ(fl_engine_end_round(e, &rm), 0);
  ASSERT_EQ(rm.clients_reported, 2);
  free(d);
  fl_engine_destroy(&e);
}

TEST(quorum_and_partial_rounds) {
  fl_engine_config_t c = base_config();
  c.fraction = 1.0;
  c.quorum = 0.5;
  const size_t P = c.model.num_params;
  fl_engine_t *e = make_engine(&c, 4, 10);
  float *d = random_delta(P, 5);
  float *w0 = malloc(P * sizeof *w0);
  memcpy(w0, fl_engine_weights(e), P * sizeof *w0);
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  uint8_t *buf;
  size_t len;
  ASSERT_EQ(encode_update(&c.model, 1, 2, 12, d, 1, 0.1, &buf, &len), 0);
  ASSERT_EQ(fl_engine_submit(e, 2, buf, len), 0);
  free(buf);
  ASSERT_FALSE(fl_engine_has_quorum(e));
  ASSERT_EQ(encode_update(&c.model, 1, 3, 13, d, 1, 0.1, &buf, &len), 0);
  ASSERT_EQ(fl_engine_submit(e, 3, buf, len), 0);
  free(buf);
  ASSERT_TRUE(fl_engine_has_quorum(e));
  fl_round_metrics_t m;
  ASSERT_EQ(fl_engine_end_round(e, &m), 0);
  ASSERT_EQ(m.clients_sampled, 4);
  ASSERT_EQ(m.clients_reported, 2);
  /* Both reported the same delta: the mean over reporters is that delta. */
  for (size_t i = 0; i < P; i++) ASSERT_NEAR(fl_engine_weights(e)[i], w0[i] + d[i], 1e-6);
  /* An update for the closed round is stale. */
  ASSERT_EQ(encode_update(&c.model, 1, 1, 10, d, 1, 0.1, &buf, &len), 0);
  ASSERT_EQ(fl_engine_submit(e, 1, buf, len), FL_ESTALE);
  free(buf);
  free(d);
  free(w0);
  fl_engine_destroy(&e);
}

TEST(schedule_drives_round_lr_and_run_stops) {
  fl_engine_config_t c = base_config();
  c.fraction = 1.0;
  c.rounds = 3;
  fl_engine_t *e = make_engine(&c, 2, 10);
  float *zero = calloc(c.model.num_params, sizeof *zero);
  double expect[3] = {0.1, 0.05, 0.025};
  for (int r = 0; r < 3; r++) {
    ASSERT_FALSE(fl_engine_finished(e));
    ASSERT_EQ(fl_engine_begin_round(e), 0);
    ASSERT_NEAR(fl_engine_round_lr(e), expect[r], 1e-12);
    uint8_t *msg;
    size_t mlen;
    ASSERT_EQ(fl_engine_encode_round_start(e, 0, &msg, &mlen), 0);
    Fedlr__Envelope *env = NULL;
    ASSERT_EQ(fl_wire_decode(msg, mlen, fl_engine_limits(e), &env), 0);
    ASSERT_EQ(env->body_case, FEDLR__ENVELOPE__BODY_ROUND_START);
    ASSERT_EQ(env->round_start->round, (uint32_t)r + 1);
    ASSERT_NEAR(env->round_start->lr, expect[r], 1e-8);
    ASSERT_STR_EQ(env->round_start->model, "mlp:4");
    fl_wire_free(&env);
    free(msg);
    for (uint32_t k = 0; k < 2; k++) {
      uint8_t *buf;
      size_t len;
      ASSERT_EQ(encode_update(&c.model, (uint32_t)r + 1, k, 10, zero, 1, 1.0, &buf, &len), 0);
      ASSERT_EQ(fl_engine_submit(e, k, buf, len), 0);
      free(buf);
    }
    fl_round_metrics_t m;
    ASSERT_EQ(fl_engine_end_round(e, &m), 0);
    ASSERT_NEAR(m.lr, expect[r], 1e-12);
  }
  ASSERT_TRUE(fl_engine_finished(e));
  ASSERT_EQ(fl_engine_begin_round(e), FL_ESTATE);
  free(zero);
  fl_engine_destroy(&e);
}

TEST(config_errors) {
  fl_engine_config_t c = base_config();
  int err = 0;
  c.lr0 = -1;
  ASSERT_TRUE(fl_engine_new(&c, &err) == NULL);
  ASSERT_EQ(err, FL_EINVAL);
  c = base_config();
  c.fraction = 0;
  ASSERT_TRUE(fl_engine_new(&c, &err) == NULL);
  ASSERT_CONTAINS(fl_err_msg(), "fraction");
  c = base_config();
  fl_engine_t *e = fl_engine_new(&c, &err);
  ASSERT_EQ(fl_engine_begin_round(e), FL_EINVAL);
  ASSERT_EQ(fl_engine_add_client(e, "", 3, NULL), FL_EINVAL);
  ASSERT_EQ(fl_engine_add_client(e, "x", 0, NULL), FL_EINVAL);
  fl_engine_destroy(&e);
  fl_engine_destroy(&e);
}

TEST(slots_names_and_availability) {
  fl_engine_config_t c = base_config();
  c.fraction = 1.0;
  int err;
  fl_engine_t *e = fl_engine_new(&c, &err);
  ASSERT_EQ(fl_engine_add_client_at(e, 5, "five", 10), 0);
  ASSERT_EQ(fl_engine_add_client_at(e, 2, "two", 10), 0);
  ASSERT_EQ(fl_engine_add_client_at(e, 5, "five", 12), 0); /* rejoin */
  ASSERT_EQ(fl_engine_add_client_at(e, 5, "other", 10), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "taken by 'five'");
  ASSERT_EQ(fl_engine_add_client_at(e, 3, "five", 10), FL_EINVAL);
  uint32_t id = 99;
  ASSERT_EQ(fl_engine_add_client(e, "first-free", 10, &id), 0);
  ASSERT_EQ(id, 0);
  ASSERT_EQ(fl_engine_find_client(e, "two", &id), 0);
  ASSERT_EQ(id, 2);
  ASSERT_EQ(fl_engine_find_client(e, "nobody", &id), FL_ENOENT);
  ASSERT_STR_EQ(fl_engine_client_name(e, 5), "five");
  ASSERT_EQ(fl_engine_num_clients(e), 3);
  fl_engine_set_available(e, 2, 0);
  ASSERT_EQ(fl_engine_num_available(e), 2);
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  const uint32_t *ids;
  ASSERT_EQ(fl_engine_sampled(e, &ids), 2);
  ASSERT_EQ(ids[0], 0);
  ASSERT_EQ(ids[1], 5);
  ASSERT_TRUE(fl_engine_is_sampled(e, 5));
  ASSERT_FALSE(fl_engine_is_sampled(e, 2));
  /* No quorum: give up, the same round index runs again with a new sample. */
  ASSERT_EQ(fl_engine_abort_round(e), 0);
  fl_engine_set_available(e, 2, 1);
  fl_engine_set_available(e, 0, 0);
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  ASSERT_EQ(fl_engine_round(e), 1);
  ASSERT_EQ(fl_engine_sampled(e, &ids), 2);
  ASSERT_EQ(ids[0], 2);
  fl_engine_destroy(&e);
}

static void run_rounds(fl_engine_t *e, const fl_model_spec_t *m, int n, uint64_t salt) {
  for (int r = 0; r < n; r++) {
    fl_engine_begin_round(e);
    const uint32_t *ids;
    size_t k = fl_engine_sampled(e, &ids);
    for (size_t i = 0; i < k; i++) {
      float *d = random_delta(m->num_params, salt + fl_engine_round(e) * 1000 + ids[i]);
      uint8_t *buf;
      size_t len;
      encode_update(m, fl_engine_round(e), ids[i], 10, d, 1, 0.3, &buf, &len);
      fl_engine_submit(e, ids[i], buf, len);
      free(buf);
      free(d);
    }
    fl_round_metrics_t rm;
    fl_engine_end_round(e, &rm);
  }
}

/* Checkpoint after 2 rounds, restore into a fresh engine, run 3 more: the
 * weights are bit-identical to 5 uninterrupted rounds. */
TEST(checkpoint_resume_is_bit_identical) {
  fl_engine_config_t c = base_config();
  c.rounds = 5;
  fl_sched_parse("plateau:factor=0.5,patience=0", &c.sched);
  fl_engine_t *a = make_engine(&c, 10, 10), *b = make_engine(&c, 10, 10);
  run_rounds(a, &c.model, 5, 1);
  run_rounds(b, &c.model, 2, 1);
  char path[600];
  snprintf(path, sizeof path, "%s/ck.safetensors", fl_test_tmpdir());
  ASSERT_EQ(fl_engine_save(b, path), 0);
  fl_engine_destroy(&b);
  b = make_engine(&c, 10, 10);
  ASSERT_EQ(fl_engine_load(b, path), 0);
  ASSERT_EQ(fl_engine_rounds_done(b), 2);
  run_rounds(b, &c.model, 3, 1);
  ASSERT_TRUE(fl_engine_finished(b));
  ASSERT_EQ(memcmp(fl_engine_weights(a), fl_engine_weights(b), c.model.num_params * sizeof(float)), 0);
  /* A checkpoint of another model or seed is refused, the engine unchanged. */
  fl_engine_config_t c2 = base_config();
  c2.seed = 43;
  fl_engine_t *x = make_engine(&c2, 10, 10);
  ASSERT_EQ(fl_engine_load(x, path), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "seed");
  ASSERT_EQ(fl_engine_rounds_done(x), 0);
  fl_engine_destroy(&x);
  fl_model_parse("mlp:5", IN, CLASSES, &c2.model);
  c2.seed = 42;
  x = make_engine(&c2, 10, 10);
  ASSERT_EQ(fl_engine_load(x, path), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "model");
  fl_engine_destroy(&x);
  fl_engine_destroy(&a);
  fl_engine_destroy(&b);
}

/* A client that rejoins mid-round claiming more examples cannot raise its
 * weight in that round's average. */
TEST(rejoin_cannot_inflate_weight_mid_round) {
  fl_engine_config_t c = base_config();
  c.fraction = 1.0;
  const size_t P = c.model.num_params;
  int err;
  fl_engine_t *e = fl_engine_new(&c, &err);
  ASSERT_EQ(fl_engine_add_client_at(e, 0, "honest", 100), 0);
  ASSERT_EQ(fl_engine_add_client_at(e, 1, "evil", 100), 0);
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  ASSERT_EQ(fl_engine_add_client_at(e, 1, "evil", 1000000000000ULL), 0); /* rejoin */
  float *one = malloc(P * sizeof *one);
  for (size_t i = 0; i < P; i++) one[i] = 1.0f;
  uint8_t *buf;
  size_t len;
  ASSERT_EQ(encode_update(&c.model, 1, 1, 1000000000000ULL, one, 1, 0.1, &buf, &len), 0);
  ASSERT_EQ(fl_engine_submit(e, 1, buf, len), FL_ERANGE);
  ASSERT_CONTAINS(fl_err_msg(), "when round 1 began");
  free(buf);
  free(one);
  ASSERT_EQ(fl_engine_reported(e), 0);
  fl_engine_destroy(&e);
}

/* Evaluation gives the same bits whatever the number of threads. */
TEST(evaluation_independent_of_threads) {
  fl_dataset_t t = {2500, IN, CLASSES, NULL, NULL};
  t.x = malloc(t.n * IN * sizeof *t.x);
  t.y = malloc(t.n * sizeof *t.y);
  fl_rng_t r;
  fl_rng_seed(&r, 77);
  for (size_t i = 0; i < t.n * IN; i++) t.x[i] = (float)fl_rng_normal(&r);
  for (size_t i = 0; i < t.n; i++) t.y[i] = (int32_t)(i % CLASSES);
  double loss[3], acc[3];
  for (int th = 1; th <= 3; th++) {
    fl_engine_config_t c = base_config();
    c.test = &t;
    c.fraction = 1.0;
    c.eval_threads = (uint32_t)th;
    fl_engine_t *e = make_engine(&c, 2, 10);
    float *zero = calloc(c.model.num_params, sizeof *zero);
    ASSERT_EQ(fl_engine_begin_round(e), 0);
    for (uint32_t k = 0; k < 2; k++) {
      uint8_t *buf;
      size_t len;
      ASSERT_EQ(encode_update(&c.model, 1, k, 10, zero, 1, 1.0, &buf, &len), 0);
      ASSERT_EQ(fl_engine_submit(e, k, buf, len), 0);
      free(buf);
    }
    fl_round_metrics_t m;
    ASSERT_EQ(fl_engine_end_round(e, &m), 0);
    loss[th - 1] = m.test_loss;
    acc[th - 1] = m.test_accuracy;
    free(zero);
    fl_engine_destroy(&e);
  }
  ASSERT_TRUE(isfinite(loss[0]));
  ASSERT_EQ(memcmp(&loss[0], &loss[1], sizeof(double)), 0);
  ASSERT_EQ(memcmp(&loss[0], &loss[2], sizeof(double)), 0);
  ASSERT_EQ(memcmp(&acc[0], &acc[2], sizeof(double)), 0);
  free(t.x);
  free(t.y);
}

FL_TEST_MAIN()
