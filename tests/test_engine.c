/* Round engine: sampling, validation of updates, exact order-independent
 * FedAvg, quorum, schedule and stopping. Updates are built as real encoded
 * protobuf messages, as a client would send them. */
#include "fl_test.h"

#include <sys/stat.h>

#include "fl_checkpoint.h"
#include "fl_engine.h"
#include "fl_error.h"
#include "fl_file.h"
#include "fl_rng.h"
#include "fl_safetensors.h"
#include "fl_wire.h"

#define IN 6
#define CLASSES 3

static fl_engine_config_t base_config(void) {
  fl_engine_config_t c;
  memset(&c, 0, sizeof c);
  fl_model_parse("mlp:4", IN, CLASSES, &c.model);
  c.lr0 = 0.1;
  c.server_lr = 1;
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
    char name[32];
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
  int rc = fl_wire_encode(&env, buf, len);
  fl_wire_tensors_free(&tv);
  return rc;
}

static float *random_delta(size_t n, uint64_t seed) {
  float *d = malloc(n * sizeof *d);
  fl_rng_t r;
  fl_rng_seed(&r, seed);
  for (size_t i = 0; i < n; i++)
    d[i] = (float)(fl_rng_uniform(&r) - 0.5) * 0.1f;
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
  for (size_t k = 0; k < K; k++)
    deltas[k] = random_delta(P, 100 + k);
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
  for (size_t k = 0; k < K; k++)
    total += 10 + k;
  for (size_t i = 0; i < P; i++) {
    double ref = 0;
    for (size_t k = 0; k < K; k++)
      ref += (10.0 + k) * deltas[k][i];
    ref = w0[i] + ref / total;
    ASSERT_NEAR(results[0][i], ref, 1e-6);
  }
  for (size_t k = 0; k < K; k++)
    free(deltas[k]);
  for (int o = 0; o < 3; o++)
    free(results[o]);
  free(w0);
}

TEST(full_weights_update_equals_delta_update) {
  fl_engine_config_t c = base_config();
  c.fraction = 1.0;
  const size_t P = c.model.num_params;
  float *d = random_delta(P, 7);
  fl_engine_t *a = make_engine(&c, 1, 10), *b = make_engine(&c, 1, 10);
  float *full = malloc(P * sizeof *full);
  for (size_t i = 0; i < P; i++)
    full[i] = fl_engine_weights(b)[i] + d[i];
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
  for (size_t i = 0; i < P; i++)
    ASSERT_NEAR(fl_engine_weights(a)[i], fl_engine_weights(b)[i], 1e-6);
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
  while (out == in || out == other)
    out++;
  float *d = random_delta(P, 3);
  uint8_t *buf;
  size_t len;

  /* random bytes */
  uint8_t junk[64];
  for (size_t i = 0; i < sizeof junk; i++)
    junk[i] = (uint8_t)(i * 37 + 11);
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
  /* a train loss beyond FL_ENGINE_MAX_LOSS (finite: the codec passes it) */
  d[3] = 0.01f;
  ASSERT_EQ(encode_update(&c.model, 1, in, 10, d, 1, 1e31, &buf, &len), 0);
  ASSERT_EQ(fl_engine_submit(e, in, buf, len), FL_ERANGE);
  ASSERT_CONTAINS(fl_err_msg(), "train loss 1e+31 is beyond");
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
  for (size_t i = 0; i < P; i++)
    ASSERT_NEAR(fl_engine_weights(e)[i], w0[i] + d[i], 1e-6);
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

/* The engine runs the clients' own RoundStart check before it opens a round:
 * a rate that becomes inf as the float sent is refused (a fatal error, the
 * engine unchanged); a rate that becomes 0 is sent, as clients take it. */
TEST(begin_round_refuses_what_clients_refuse) {
  fl_engine_config_t c = base_config();
  c.lr0 = 1e300; /* finite as a double, inf as the float on the wire */
  fl_engine_t *e = make_engine(&c, 3, 10);
  ASSERT_TRUE(e != NULL);
  for (int attempt = 0; attempt < 2; attempt++) {
    ASSERT_EQ(fl_engine_begin_round(e), FL_ENONFINITE);
    ASSERT_CONTAINS(fl_err_msg(), "round 1 cannot start: every client would refuse its "
                                  "RoundStart (round_start: learning rate not finite)");
    ASSERT_CONTAINS(fl_err_msg(), "retrying cannot help");
    ASSERT_EQ(fl_engine_round(e), 0);
    ASSERT_EQ(fl_engine_rounds_done(e), 0);
    ASSERT_EQ(fl_engine_sampled(e, NULL), 0);
    ASSERT_FALSE(fl_engine_finished(e));
  }
  uint8_t *msg = NULL;
  size_t len = 0;
  ASSERT_EQ(fl_engine_encode_round_start(e, 0, &msg, &len), FL_ESTATE);
  fl_engine_destroy(&e);

  c.lr0 = 1e-300; /* 0 as a float: allowed, like a schedule that ends at 0 */
  e = make_engine(&c, 3, 10);
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  const uint32_t *ids;
  ASSERT_GT(fl_engine_sampled(e, &ids), 0);
  ASSERT_EQ(fl_engine_encode_round_start(e, ids[0], &msg, &len), 0);
  fl_wire_limits_t client;
  fl_wire_limits_for_model(&c.model, &client);
  Fedlr__Envelope *env = NULL;
  ASSERT_EQ(fl_wire_decode(msg, len, &client, &env), 0);
  ASSERT_DBL_OP(env->round_start->lr, ==, 0.0);
  fl_wire_free(&env);
  free(msg);
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
  /* The message may go back to the joining peer: never the other's name. */
  ASSERT_CONTAINS(fl_err_msg(), "taken by another client");
  ASSERT_TRUE(strstr(fl_err_msg(), "five") == NULL);
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

/* Checkpoints `c` (5 rounds) after 2 rounds into `path`, restores it into a
 * fresh engine and runs the other 3: the weights must be bit-identical to 5
 * uninterrupted rounds. A helper of the tests below (fails the caller's
 * test through fl__failed). */
static void check_resume(int *fl__failed, const fl_engine_config_t *c, const char *path) {
  fl_engine_t *a = make_engine(c, 10, 10), *b = make_engine(c, 10, 10);
  run_rounds(a, &c->model, 5, 1);
  run_rounds(b, &c->model, 2, 1);
  ASSERT_EQ(fl_checkpoint_save(b, path), 0);
  fl_engine_destroy(&b);
  b = make_engine(c, 10, 10);
  ASSERT_EQ(fl_checkpoint_load(b, path, NULL, 0), 0);
  ASSERT_EQ(fl_engine_rounds_done(b), 2);
  run_rounds(b, &c->model, 3, 1);
  ASSERT_TRUE(fl_engine_finished(b));
  ASSERT_EQ(memcmp(fl_engine_weights(a), fl_engine_weights(b), c->model.num_params * sizeof(float)),
            0);
  fl_engine_destroy(&a);
  fl_engine_destroy(&b);
}

/* Checkpoint after 2 rounds, restore into a fresh engine, run 3 more: the
 * weights are bit-identical to 5 uninterrupted rounds. */
TEST(checkpoint_resume_is_bit_identical) {
  fl_engine_config_t c = base_config();
  c.rounds = 5;
  fl_sched_parse("plateau:factor=0.5,patience=0", &c.sched);
  char path[600];
  snprintf(path, sizeof path, "%s/ck.safetensors", fl_test_tmpdir());
  check_resume(fl__failed, &c, path);
  if (*fl__failed) return;
  /* A checkpoint of another model or seed is refused, the engine unchanged. */
  fl_engine_config_t c2 = base_config();
  c2.seed = 43;
  fl_engine_t *x = make_engine(&c2, 10, 10);
  ASSERT_EQ(fl_checkpoint_load(x, path, NULL, 0), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "was written with --seed 42; this run has --seed 43");
  ASSERT_EQ(fl_engine_rounds_done(x), 0);
  fl_engine_destroy(&x);
  fl_model_parse("mlp:5", IN, CLASSES, &c2.model);
  c2.seed = 42;
  x = make_engine(&c2, 10, 10);
  ASSERT_EQ(fl_checkpoint_load(x, path, NULL, 0), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "was written with --model mlp:4; this run has --model mlp:5");
  ASSERT_EQ(fl_engine_rounds_done(x), 0);
  fl_engine_destroy(&x);
}

/* ---- checkpoints are not trusted ---------------------------------------- */

/* A test set of random points and labels: the loss of an unchanged model
 * never improves, so a plateau schedule walks through its states. */
static fl_dataset_t random_test_set(void) {
  fl_dataset_t t = {300, IN, CLASSES, NULL, NULL, {0, 0, 0}};
  t.x = malloc(t.n * IN * sizeof *t.x);
  t.y = malloc(t.n * sizeof *t.y);
  fl_rng_t r;
  fl_rng_seed(&r, 5);
  for (size_t i = 0; i < t.n * IN; i++)
    t.x[i] = (float)fl_rng_normal(&r);
  for (size_t i = 0; i < t.n; i++)
    t.y[i] = (int32_t)fl_rng_below(&r, CLASSES);
  return t;
}

/* The checkpointed run of these tests: plateau (factor 0.5, patience 1,
 * cooldown 1), evaluated every round, a target accuracy it never reaches. */
static fl_engine_config_t ck_config(const fl_dataset_t *t) {
  fl_engine_config_t c = base_config();
  c.test = t;
  c.fraction = 1.0;
  c.rounds = 12;
  c.target_accuracy = 0.9;
  fl_sched_parse("plateau:factor=0.5,patience=1,cooldown=1", &c.sched);
  return c;
}

/* One round in which every sampled client sends a zero delta. */
static int zero_round(fl_engine_t *e, const fl_model_spec_t *m) {
  float *zero = calloc(m->num_params, sizeof *zero);
  int rc = fl_engine_begin_round(e);
  const uint32_t *ids;
  size_t k = fl_engine_sampled(e, &ids);
  for (size_t i = 0; rc == 0 && i < k; i++) {
    uint8_t *buf;
    size_t len;
    rc = encode_update(m, fl_engine_round(e), ids[i], 10, zero, 1, 1.0, &buf, &len);
    if (rc == 0) rc = fl_engine_submit(e, ids[i], buf, len);
    free(buf);
  }
  fl_round_metrics_t rm;
  if (rc == 0) rc = fl_engine_end_round(e, &rm);
  free(zero);
  return rc;
}

/* The engine's whole state as the bytes of a checkpoint of it. */
static uint8_t *engine_bytes(fl_engine_t *e, size_t *len) {
  char path[600];
  snprintf(path, sizeof path, "%s/state.safetensors", fl_test_tmpdir());
  uint8_t *b = NULL;
  if (fl_checkpoint_save(e, path) != 0 || fl_file_read_all(path, 1 << 20, 0, &b, len) != 0)
    return NULL;
  return b;
}

/* Copies checkpoint src to dst through fl_safetensors, so with a valid
 * checksum: the metadata with each (key, value) pair of `edits` applied (a
 * NULL value drops the key, a new key is added), and weight `widx` set to
 * `wval` if widx < num_params. */
static int ck_rewrite(const fl_model_spec_t *m, const char *src, const char *dst,
                      const char *const *edits, size_t widx, float wval) {
  float *w = malloc(m->num_params * sizeof *w);
  fl_safetensors_meta_t *l = malloc(sizeof *l);
  const char *meta[2 * FL_SAFETENSORS_META_MAX + 16];
  size_t n = 0;
  int rc = fl_safetensors_load_all(src, m, w, FL_SAFETENSORS_NEED_CHECKSUM, l);
  for (size_t i = 0; rc == 0 && i < l->n; i++) {
    const char *v = l->e[i].value;
    for (size_t j = 0; edits && edits[j]; j += 2)
      if (!strcmp(edits[j], l->e[i].key)) v = edits[j + 1];
    if (v && strcmp(l->e[i].key, "model") != 0) {
      meta[n++] = l->e[i].key;
      meta[n++] = v;
    }
  }
  for (size_t j = 0; rc == 0 && edits && edits[j]; j += 2) {
    int found = 0;
    for (size_t i = 0; i < l->n; i++)
      found |= !strcmp(edits[j], l->e[i].key);
    if (!found) {
      meta[n++] = edits[j];
      meta[n++] = edits[j + 1];
    }
  }
  meta[n] = NULL;
  if (widx < m->num_params) w[widx] = wval;
  if (rc == 0) rc = fl_safetensors_save(dst, m, w, meta);
  free(w);
  free(l);
  return rc;
}

/* A CNN's input image is part of the run's identity: 1x8x24 and 1x24x8
 * give "cnn:conv3x3x2,fc4" the same tensors, so only the identity tells
 * the runs apart. A checkpoint without the key (a fedlr before shapes)
 * stands for "none": a CNN on the inferred square image. */
TEST(checkpoint_input_shape_is_identity) {
  const fl_shape_t wide = {1, 8, 24}, tall = {1, 24, 8}, sq = {1, 12, 12};
  fl_engine_config_t c = base_config(), t = base_config(), s = base_config();
  ASSERT_EQ(fl_model_parse_shape("cnn:conv3x3x2,fc4", 192, &wide, CLASSES, &c.model), 0);
  ASSERT_EQ(fl_model_parse_shape("cnn:conv3x3x2,fc4", 192, &tall, CLASSES, &t.model), 0);
  ASSERT_EQ(c.model.num_params, t.model.num_params); /* the same tensors */
  char path[600], old[600];
  snprintf(path, sizeof path, "%s/ck-shape.safetensors", fl_test_tmpdir());
  snprintf(old, sizeof old, "%s/ck-shape-old.safetensors", fl_test_tmpdir());
  check_resume(fl__failed, &c, path);
  if (*fl__failed) return;
  fl_engine_t *x = make_engine(&t, 10, 10);
  ASSERT_EQ(fl_checkpoint_load(x, path, NULL, 0), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(),
                  "was written with --input-shape 1x8x24; this run has --input-shape 1x24x8");
  ASSERT_EQ(fl_engine_rounds_done(x), 0);
  fl_engine_destroy(&x);
  const char *drop[] = {"fedlr_input_shape", NULL, NULL};
  ASSERT_EQ(ck_rewrite(&c.model, path, old, drop, SIZE_MAX, 0), 0);
  x = make_engine(&c, 10, 10);
  ASSERT_EQ(fl_checkpoint_load(x, old, NULL, 0), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "was written with --input-shape none; this run has --input-shape "
                                "1x8x24");
  fl_engine_destroy(&x);
  /* the square one-channel image: "none", also given explicitly */
  ASSERT_EQ(fl_model_parse_shape("cnn:conv3x3x2,fc4", 144, &sq, CLASSES, &s.model), 0);
  check_resume(fl__failed, &s, path);
  if (*fl__failed) return;
  ASSERT_EQ(fl_safetensors_meta(path, "fedlr_input_shape", old, sizeof old), 0);
  ASSERT_STR_EQ(old, "none");
}

/* Every state a real plateau run passes through (improvement, num_bad > 0,
 * a reduction, a cooldown) is accepted on resume and comes back exactly. */
TEST(checkpoint_every_real_plateau_state_resumes) {
  fl_dataset_t t = random_test_set();
  fl_engine_config_t c = ck_config(&t);
  fl_engine_t *a = make_engine(&c, 3, 10);
  char path[600];
  snprintf(path, sizeof path, "%s/ck-states.safetensors", fl_test_tmpdir());
  double lr_prev = 1;
  int reduced = 0;
  for (uint32_t r = 1; r <= c.rounds; r++) {
    ASSERT_EQ(zero_round(a, &c.model), 0);
    reduced += fl_engine_round_lr(a) < lr_prev;
    lr_prev = fl_engine_round_lr(a);
    ASSERT_EQ(fl_checkpoint_save(a, path), 0);
    fl_engine_t *b = make_engine(&c, 3, 10);
    int rc = fl_checkpoint_load(b, path, NULL, 0);
    if (rc) FL__FAIL("round %u: %s", r, fl_err_msg());
    size_t la, lb;
    uint8_t *sa = engine_bytes(a, &la), *sb = engine_bytes(b, &lb);
    ASSERT_TRUE(sa && sb);
    ASSERT_EQ(la, lb);
    ASSERT_EQ(memcmp(sa, sb, la), 0);
    free(sa);
    free(sb);
    fl_engine_destroy(&b);
  }
  ASSERT_TRUE(fl_engine_finished(a));
  ASSERT_GE(reduced, 3); /* the schedule did reduce the rate, so k > 0 was seen */
  fl_engine_destroy(&a);
  free(t.x);
  free(t.y);
}

/* Every corrupted value is refused with a message naming the checkpoint,
 * the key, the value and the allowed range, and leaves the engine as it
 * was. The corrupted files carry a valid checksum (rewritten through
 * fl_safetensors), so it is the value check that refuses them. */
TEST(checkpoint_corrupt_values_refused) {
  fl_dataset_t t = random_test_set();
  fl_engine_config_t c = ck_config(&t);
  fl_engine_t *a = make_engine(&c, 3, 10);
  for (int r = 0; r < 4; r++)
    ASSERT_EQ(zero_round(a, &c.model), 0);
  char good[600], bad[600];
  snprintf(good, sizeof good, "%s/ck-good.safetensors", fl_test_tmpdir());
  snprintf(bad, sizeof bad, "%s/ck-bad.safetensors", fl_test_tmpdir());
  ASSERT_EQ(fl_checkpoint_save(a, good), 0);
  fl_engine_destroy(&a);
  /* After 4 rounds: one reduction (scale 0.5), no cooldown, num_bad 0. */
  char buf[64];
  ASSERT_EQ(fl_safetensors_meta(good, "fedlr_plateau_scale", buf, sizeof buf), 0);
  ASSERT_STR_EQ(buf, "0x1p-1");

  /* The victim: a fresh engine, whose state must survive every refusal. */
  fl_engine_t *e = make_engine(&c, 3, 10);
  size_t len0, len1;
  uint8_t *before = engine_bytes(e, &len0);
  ASSERT_TRUE(before != NULL);
  const char *fmt =
      "must be a whole number of rounds in [0, 12] (the round limit it was written with, "
      "fedlr_rounds)";
  const struct {
    const char *key, *value;
    int code;
    const char *needle;
  } cases[] = {
      {"fedlr_rounds_done", "4.5", FL_ERANGE, fmt},
      {"fedlr_rounds_done", "-1", FL_ERANGE, fmt},
      {"fedlr_rounds_done", "13", FL_ERANGE, fmt},
      {"fedlr_rounds_done", "", FL_ERANGE, fmt},
      {"fedlr_rounds_done", " 4", FL_ERANGE, fmt},
      {"fedlr_rounds_done", "1e1", FL_ERANGE, fmt},
      {"fedlr_rounds_done", "99999999999999999999999", FL_ERANGE, fmt},
      {"fedlr_seed", "43", FL_EINVAL, "was written with --seed 43; this run has --seed 42"},
      {"fedlr_seed", "x", FL_EFORMAT, "fedlr_seed = 'x': not a whole number"},
      {"fedlr_best_accuracy", "nan", FL_ERANGE, "must be an accuracy in [0, 1]"},
      {"fedlr_best_accuracy", "-0x1p-1", FL_ERANGE, "'-0x1p-1' (-0.5): must be an accuracy"},
      {"fedlr_best_accuracy", "0x1.8p+0", FL_ERANGE, "'0x1.8p+0' (1.5): must be an accuracy"},
      {"fedlr_best_accuracy", "inf", FL_ERANGE, "must be an accuracy in [0, 1]"},
      {"fedlr_target_reached", "1", FL_ERANGE, "is below this run's target 0.9"},
      {"fedlr_target_reached", "2", FL_ERANGE, "fedlr_target_reached = '2': must be 0 or 1"},
      {"fedlr_target_reached", "-1", FL_ERANGE, "must be 0 or 1"},
      {"fedlr_plateau_best", "nan", FL_ERANGE,
       "fedlr_plateau_best = 'nan': must be a finite loss, or inf before the first evaluation"},
      {"fedlr_plateau_best", "-inf", FL_ERANGE, "must be a finite loss, or inf"},
      {"fedlr_plateau_best", "1e999", FL_ERANGE, "must be a finite loss, or inf"},
      {"fedlr_plateau_scale", "nan", FL_ERANGE,
       "fedlr_plateau_scale = 'nan': must be in (0, 1], a power factor^k of the plateau factor "
       "0.5 with k <= 4 (at most one reduction per round done)"},
      {"fedlr_plateau_scale", "0x0p+0", FL_ERANGE, "'0x0p+0' (0): must be in (0, 1]"},
      {"fedlr_plateau_scale", "-0x1p+0", FL_ERANGE, "'-0x1p+0' (-1): must be in (0, 1]"},
      {"fedlr_plateau_scale", "inf", FL_ERANGE, "must be in (0, 1]"},
      {"fedlr_plateau_scale", "0x1.8p+0", FL_ERANGE, "must be in (0, 1]"}, /* 1.5 */
      {"fedlr_plateau_scale", "0x1.8p-1", FL_ERANGE, "a power factor^k"},  /* 0.75 */
      {"fedlr_plateau_scale", "0x1p-5", FL_ERANGE, "with k <= 4"},         /* 5 reductions */
      {"fedlr_plateau_bad", "2", FL_ERANGE,
       "fedlr_plateau_bad = '2': must be a whole number of evaluations in [0, 1] (the "
       "schedule's patience)"},
      {"fedlr_plateau_bad", "-1", FL_ERANGE, "(the schedule's patience)"},
      {"fedlr_plateau_bad", "nan", FL_ERANGE, "(the schedule's patience)"},
      {"fedlr_plateau_bad", "0.5", FL_ERANGE, "(the schedule's patience)"},
      {"fedlr_plateau_cool", "2", FL_ERANGE,
       "fedlr_plateau_cool = '2': must be a whole number of evaluations in [0, 1] (the "
       "schedule's cooldown)"},
      {"fedlr_plateau_cool", "inf", FL_ERANGE, "(the schedule's cooldown)"},
      {"fedlr_plateau_cool", NULL, FL_EFORMAT,
       "no fedlr_plateau_cool (written by an older fedlr, or not a fedlr checkpoint)"},
      {"fedlr_rounds_done", NULL, FL_EFORMAT, "no fedlr_rounds_done"},
      {"fedlr_future", "1", FL_EFORMAT, "unknown key 'fedlr_future' (written by a newer fedlr?)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *edit[] = {cases[i].key, cases[i].value, NULL};
    ASSERT_EQ(ck_rewrite(&c.model, good, bad, edit, SIZE_MAX, 0), 0);
    int rc = fl_checkpoint_load(e, bad, NULL, 0);
    if (rc != cases[i].code || !strstr(fl_err_msg(), cases[i].needle))
      FL__FAIL("%s = '%s': rc %d, \"%s\" lacks \"%s\"", cases[i].key,
               cases[i].value ? cases[i].value : "(dropped)", rc, fl_err_msg(), cases[i].needle);
    ASSERT_CONTAINS(fl_err_msg(), bad); /* names the file */
    uint8_t *after = engine_bytes(e, &len1);
    ASSERT_TRUE(after && len1 == len0 && !memcmp(before, after, len0));
    free(after);
  }
  /* Two values right, one wrong: a running cooldown with num_bad > 0. */
  const char *cool_and_bad[] = {"fedlr_plateau_cool", "1", "fedlr_plateau_bad", "1", NULL};
  ASSERT_EQ(ck_rewrite(&c.model, good, bad, cool_and_bad, SIZE_MAX, 0), 0);
  ASSERT_EQ(fl_checkpoint_load(e, bad, NULL, 0), FL_ERANGE);
  ASSERT_CONTAINS(fl_err_msg(), "fedlr_plateau_bad = '1': must be 0 while a cooldown runs "
                                "(fedlr_plateau_cool = 1)");

  /* Weights: NaN, infinities and magnitudes beyond FL_ENGINE_MAX_WEIGHT. */
  const struct {
    size_t at;
    float v;
    int code;
    const char *needle;
  } weights[] = {
      {3, NAN, FL_ENONFINITE,
       "weight 3 of tensor 'layers.0.weight' is nan: weights must be "
       "finite and within +-1048576 (FL_ENGINE_MAX_WEIGHT)"},
      {0, INFINITY, FL_ENONFINITE, "weight 0 of tensor 'layers.0.weight' is inf"},
      {IN * 4, -INFINITY, FL_ENONFINITE, "weight 0 of tensor 'layers.0.bias' is -inf"},
      {IN * 4 + 4 + 1, 1e30f, FL_ERANGE, "weight 1 of tensor 'layers.1.weight' is 1e+30"},
      {2, -1e30f, FL_ERANGE, "is -1e+30"},
      {5, nextafterf((float)FL_ENGINE_MAX_WEIGHT, INFINITY), FL_ERANGE, "is 1048576.1: weights"},
  };
  for (size_t i = 0; i < sizeof weights / sizeof weights[0]; i++) {
    ASSERT_EQ(ck_rewrite(&c.model, good, bad, NULL, weights[i].at, weights[i].v), 0);
    int rc = fl_checkpoint_load(e, bad, NULL, 0);
    if (rc != weights[i].code || !strstr(fl_err_msg(), weights[i].needle))
      FL__FAIL("weight %zu = %g: rc %d, \"%s\" lacks \"%s\"", weights[i].at, (double)weights[i].v,
               rc, fl_err_msg(), weights[i].needle);
    ASSERT_CONTAINS(fl_err_msg(), bad);
    uint8_t *after = engine_bytes(e, &len1);
    ASSERT_TRUE(after && len1 == len0 && !memcmp(before, after, len0));
    free(after);
  }

  /* A run without a target cannot have reached one; a schedule other than
   * plateau cannot have moved the plateau state. (The run's identity is
   * rewritten to match, so that it is the state check that refuses.) */
  fl_engine_config_t c2 = c;
  c2.target_accuracy = 0;
  fl_engine_t *x = make_engine(&c2, 3, 10);
  const char *reached[] = {"fedlr_target_reached", "1", "fedlr_target_accuracy", "0x0p+0", NULL};
  ASSERT_EQ(ck_rewrite(&c.model, good, bad, reached, SIZE_MAX, 0), 0);
  ASSERT_EQ(fl_checkpoint_load(x, bad, NULL, 0), FL_ERANGE);
  ASSERT_CONTAINS(fl_err_msg(), "this run has no target accuracy, so it cannot have reached one");
  ASSERT_EQ(fl_engine_rounds_done(x), 0);
  fl_engine_destroy(&x);
  c2 = c;
  fl_sched_parse("exp:gamma=0.5", &c2.sched);
  x = make_engine(&c2, 3, 10);
  const char *exp_sched[] = {"fedlr_schedule", "exp:gamma=0.5,every=1", NULL};
  ASSERT_EQ(ck_rewrite(&c.model, good, bad, exp_sched, SIZE_MAX, 0), 0);
  ASSERT_EQ(fl_checkpoint_load(x, bad, NULL, 0), FL_ERANGE);
  ASSERT_CONTAINS(fl_err_msg(), "must be inf: this run's schedule is not plateau");
  const char *fresh_best[] = {"fedlr_plateau_best", "inf", "fedlr_schedule",
                              "exp:gamma=0.5,every=1", NULL};
  ASSERT_EQ(ck_rewrite(&c.model, good, bad, fresh_best, SIZE_MAX, 0), 0);
  ASSERT_EQ(fl_checkpoint_load(x, bad, NULL, 0), FL_ERANGE);
  ASSERT_CONTAINS(fl_err_msg(), "fedlr_plateau_scale = '0x1p-1' (0.5): must be 1: this run's "
                                "schedule is not plateau");
  ASSERT_EQ(fl_engine_rounds_done(x), 0);
  fl_engine_destroy(&x);

  /* The edges that are legal load. */
  const char *legal[][5] = {
      {"fedlr_plateau_best", "inf", NULL},
      {"fedlr_plateau_scale", "0x1p-4", NULL}, /* 4 reductions in 4 rounds */
      {"fedlr_plateau_scale", "0x1p+0", NULL},
      {"fedlr_plateau_bad", "1", NULL},
      {"fedlr_plateau_cool", "1", NULL},
      {"fedlr_rounds_done", "12", NULL},
      {"fedlr_best_accuracy", "0x1p+0", NULL},
      {"fedlr_best_accuracy", "0x1.ccccccccccccdp-1", "fedlr_target_reached", "1", NULL},
      {"note", "not a fedlr key", NULL},
  };
  for (size_t i = 0; i < sizeof legal / sizeof legal[0]; i++) {
    ASSERT_EQ(ck_rewrite(&c.model, good, bad, legal[i], SIZE_MAX, 0), 0);
    fl_engine_t *y = make_engine(&c, 3, 10);
    int rc = fl_checkpoint_load(y, bad, NULL, 0);
    if (rc) FL__FAIL("%s = '%s': %s", legal[i][0], legal[i][1], fl_err_msg());
    fl_engine_destroy(&y);
  }
  for (int sign = -1; sign <= 1; sign += 2) {
    ASSERT_EQ(ck_rewrite(&c.model, good, bad, NULL, 7, (float)(sign * FL_ENGINE_MAX_WEIGHT)), 0);
    ASSERT_EQ(fl_checkpoint_load(e, bad, NULL, 0), 0);
  }
  free(before);
  fl_engine_destroy(&e);
  free(t.x);
  free(t.y);
}

/* The file's checksum: a flipped bit in the data or in a metadata value is
 * caught; a checkpoint without one (an older fedlr) is refused; so are a
 * FIFO (at once, never waited on) and a directory. */
TEST(checkpoint_checksum_and_file_type) {
  fl_engine_config_t c = base_config();
  c.rounds = 5;
  fl_engine_t *a = make_engine(&c, 3, 10);
  run_rounds(a, &c.model, 2, 1);
  char good[600], bad[600];
  snprintf(good, sizeof good, "%s/ck-crc.safetensors", fl_test_tmpdir());
  snprintf(bad, sizeof bad, "%s/ck-crc-bad.safetensors", fl_test_tmpdir());
  ASSERT_EQ(fl_checkpoint_save(a, good), 0);
  fl_engine_destroy(&a);
  uint8_t *raw = NULL;
  size_t len = 0;
  ASSERT_EQ(fl_file_read_all(good, 1 << 20, FL_FILE_REGULAR, &raw, &len), 0);
  size_t hl = 0;
  for (int k = 7; k >= 0; k--)
    hl = hl << 8 | raw[k];
  const char *rounds = strstr((const char *)raw + 8, "\"fedlr_rounds_done\":\"2\"");
  const char *crc = strstr((const char *)raw + 8, ",\"fedlr_crc32\":\"");
  ASSERT_TRUE(rounds && crc);

  fl_engine_t *e = make_engine(&c, 3, 10);
  size_t len0, len1;
  uint8_t *before = engine_bytes(e, &len0);
  uint8_t *b = malloc(len);
  const struct {
    const char *what;
    int code;
    const char *needle;
  } cases[] = {
      {"data bit", FL_EFORMAT, "checksum mismatch: the file is corrupt"},
      {"metadata bit", FL_EFORMAT, "checksum mismatch: the file is corrupt"},
      {"no checksum", FL_EFORMAT,
       "has no checksum (metadata 'fedlr_crc32'): it was written by an older fedlr"},
      {"fifo", FL_EINVAL, "is a FIFO (named pipe), expected a regular file"},
      {"directory", FL_EINVAL, "is a directory, expected a regular file"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *w = cases[i].what, *path = bad;
    memcpy(b, raw, len);
    unlink(bad);
    if (!strcmp(w, "data bit")) b[8 + hl + 17] ^= 0x04;
    if (!strcmp(w, "metadata bit")) /* "2" -> "3" */
      b[(size_t)(rounds - (const char *)raw) + strlen("\"fedlr_rounds_done\":\"")] ^= 0x01;
    if (!strcmp(w, "no checksum")) {
      /* An older fedlr's file: no entry, the header padded to the same length. */
      size_t at = (size_t)(crc - (const char *)raw), n = strlen(",\"fedlr_crc32\":\"12345678\"");
      memmove(b + at, b + at + n, 8 + hl - at - n);
      memset(b + 8 + hl - n, ' ', n);
    }
    if (!strcmp(w, "fifo")) ASSERT_EQ(mkfifo(bad, 0600), 0);
    if (!strcmp(w, "directory")) path = fl_test_tmpdir();
    if (strcmp(w, "fifo") != 0 && strcmp(w, "directory") != 0) {
      FILE *f = fopen(bad, "wb");
      ASSERT_TRUE(f && fwrite(b, 1, len, f) == len && fclose(f) == 0);
    }
    alarm(10); /* a blocked open() fails the test loudly */
    double t0 = fl_test_now();
    int rc = fl_checkpoint_load(e, path, NULL, 0);
    double took = fl_test_now() - t0;
    alarm(0);
    if (rc != cases[i].code || !strstr(fl_err_msg(), cases[i].needle))
      FL__FAIL("%s: rc %d, \"%s\" lacks \"%s\"", w, rc, fl_err_msg(), cases[i].needle);
    ASSERT_CONTAINS(fl_err_msg(), path);
    ASSERT_DBL_OP(took, <, 1.0);
    uint8_t *after = engine_bytes(e, &len1);
    ASSERT_TRUE(after && len1 == len0 && !memcmp(before, after, len0));
    free(after);
  }
  unlink(bad);
  /* The intact file still loads into the same engine. */
  ASSERT_EQ(fl_checkpoint_load(e, good, NULL, 0), 0);
  ASSERT_EQ(fl_engine_rounds_done(e), 2);
  free(b);
  free(raw);
  free(before);
  fl_engine_destroy(&e);
}

/* ---- a checkpoint carries the run's identity ---------------------------- */

/* A run whose every identity setting differs from the defaults. */
static fl_engine_config_t id_config(void) {
  fl_engine_config_t c = base_config();
  snprintf(c.lr_spec, sizeof c.lr_spec, "auto:2");
  c.lr0 = fl_sched_lr_heuristic(c.model.num_params, 2);
  c.rounds = 6;
  snprintf(c.local_schedule, sizeof c.local_schedule, "exp:gamma=0.9");
  c.local_unit = FEDLR__ROUND_START__LOCAL_UNIT__STEP;
  fl_optim_parse("momentum:0.5", &c.optim);
  c.local_epochs = 2;
  c.fraction = 0.5;
  c.min_clients = 2;
  c.clients = 10;
  c.aggregator = FL_AGG_TRIMMED_MEAN;
  c.trim_beta = 0.2;
  c.clip_norm = 1.5;
  c.max_examples = 100;
  c.quarantine_rounds = 3;
  c.eval_every = 2;
  c.target_accuracy = 0.95;
  return c;
}

/* Every setting of the identity, changed alone, is refused with its flag
 * and both values, and leaves the engine as it was; the checkpoint holds
 * them in the documented form. */
TEST(checkpoint_identity_refuses_each_change) {
  fl_engine_config_t c = id_config();
  fl_engine_t *a = make_engine(&c, 10, 10);
  run_rounds(a, &c.model, 2, 1);
  char good[600];
  snprintf(good, sizeof good, "%s/ck-id.safetensors", fl_test_tmpdir());
  ASSERT_EQ(fl_checkpoint_save(a, good), 0);
  fl_engine_destroy(&a);
  const char *stored[][2] = {{"fedlr_seed", "42"},
                             {"fedlr_lr", "auto:2"},
                             {"fedlr_schedule", "exp:gamma=0.5,every=1"},
                             {"fedlr_local_schedule", "exp:gamma=0.9"},
                             {"fedlr_local_unit", "step"},
                             {"fedlr_optimizer", "momentum:momentum=0.5,wd=0"},
                             {"fedlr_local_epochs", "2"},
                             {"fedlr_batch_size", "4"},
                             {"fedlr_fraction", "0x1p-1"},
                             {"fedlr_min_clients", "2"},
                             {"fedlr_clients", "10"},
                             {"fedlr_aggregator", "trimmed-mean:0.2"},
                             {"fedlr_clip_norm", "0x1.8p+0"},
                             {"fedlr_max_examples", "100"},
                             {"fedlr_quarantine_rounds", "3"},
                             {"fedlr_eval_every", "2"},
                             {"fedlr_target_accuracy", "0x1.e666666666666p-1"},
                             {"fedlr_rounds", "6"},
                             {"model", "mlp:4"}};
  for (size_t i = 0; i < sizeof stored / sizeof stored[0]; i++) {
    char v[128];
    ASSERT_EQ(fl_safetensors_meta(good, stored[i][0], v, sizeof v), 0);
    if (strcmp(v, stored[i][1]))
      FL__FAIL("%s = '%s', expected '%s'", stored[i][0], v, stored[i][1]);
  }

  const char *cases[] = {
      "--seed 42; this run has --seed 43",
      "--lr auto:2; this run has --lr auto:3",
      "--lr (the initial rate) 0.4; this run has --lr (the initial rate) 0.5",
      "--schedule exp:gamma=0.5,every=1; this run has --schedule exp:gamma=0.5,every=2",
      "--local-schedule exp:gamma=0.9; this run has --local-schedule const",
      "--local-unit step; this run has --local-unit epoch",
      "--optimizer momentum:momentum=0.5,wd=0; this run has --optimizer sgd:wd=0",
      "--local-epochs 2; this run has --local-epochs 3",
      "--batch-size 4; this run has --batch-size 5",
      "--fraction 0.5; this run has --fraction 0.3",
      "--fraction 0.5; this run has --fraction 0.50000000000000011",
      "--min-clients 2; this run has --min-clients 1",
      "--clients 10; this run has --clients 11",
      "--aggregator trimmed-mean:0.2; this run has --aggregator median",
      "--aggregator trimmed-mean:0.2; this run has --aggregator trimmed-mean:0.25",
      "--clip-norm 1.5; this run has --clip-norm 0",
      "--max-examples 100; this run has --max-examples 0",
      "--quarantine 3; this run has --quarantine 5",
      "--eval-every 2; this run has --eval-every 1",
      "--target-accuracy 0.95; this run has --target-accuracy 0",
      "--model mlp:4; this run has --model mlp:5",
      "--lr auto:2; this run has --lr 0.5", /* and the rate it gives: one change */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fl_engine_config_t x = c;
    switch (i) {
    case 0: x.seed = 43; break;
    case 1: snprintf(x.lr_spec, sizeof x.lr_spec, "auto:3"); break;
    case 2: x.lr0 = 0.5; break; /* the same --lr resolved otherwise (another fedlr) */
    case 3: fl_sched_parse("exp:gamma=0.5,every=2", &x.sched); break;
    case 4: snprintf(x.local_schedule, sizeof x.local_schedule, "const"); break;
    case 5: x.local_unit = FEDLR__ROUND_START__LOCAL_UNIT__EPOCH; break;
    case 6: fl_optim_parse("sgd", &x.optim); break;
    case 7: x.local_epochs = 3; break;
    case 8: x.batch_size = 5; break;
    case 9: x.fraction = 0.3; break;
    case 10: x.fraction = nextafter(0.5, 1); break; /* one bit: shown with every digit */
    case 11: x.min_clients = 1; break;
    case 12: x.clients = 11; break;
    case 13: x.aggregator = FL_AGG_MEDIAN, x.trim_beta = 0; break;
    case 14: x.trim_beta = 0.25; break;
    case 15: x.clip_norm = 0; break;
    case 16: x.max_examples = 0; break;
    case 17: x.quarantine_rounds = 5; break;
    case 18: x.eval_every = 1; break;
    case 19: x.target_accuracy = 0; break;
    case 20: fl_model_parse("mlp:5", IN, CLASSES, &x.model); break;
    case 21: snprintf(x.lr_spec, sizeof x.lr_spec, "0.5"), x.lr0 = 0.5; break;
    }
    if (i == 2) {
      /* 0.4 is what the test expects to see for lr0: make it so. */
      fl_engine_config_t y = c;
      y.lr0 = 0.4;
      fl_engine_t *w = make_engine(&y, 10, 10);
      run_rounds(w, &y.model, 2, 1);
      ASSERT_EQ(fl_checkpoint_save(w, good), 0);
      fl_engine_destroy(&w);
      x.lr0 = 0.5;
    }
    fl_engine_t *e = make_engine(&x, 10, 10);
    ASSERT_TRUE(e != NULL);
    size_t len0, len1;
    uint8_t *before = engine_bytes(e, &len0);
    fl_err_clear();
    int rc = fl_checkpoint_load(e, good, NULL, 0);
    char want[1000];
    snprintf(want, sizeof want,
             "checkpoint %s was written with %s: resume with the same flags "
             "(or start a new run)",
             good, cases[i]);
    if (rc != FL_EINVAL || !strstr(fl_err_msg(), want))
      FL__FAIL("case %zu: rc %d, \"%s\" lacks \"%s\"", i, rc, fl_err_msg(), want);
    uint8_t *after = engine_bytes(e, &len1);
    ASSERT_TRUE(before && after && len1 == len0 && !memcmp(before, after, len0));
    ASSERT_EQ(fl_engine_rounds_done(e), 0);
    free(before);
    free(after);
    fl_engine_destroy(&e);
    if (i == 2) { /* back to the checkpoint of c */
      fl_engine_t *w = make_engine(&c, 10, 10);
      run_rounds(w, &c.model, 2, 1);
      ASSERT_EQ(fl_checkpoint_save(w, good), 0);
      fl_engine_destroy(&w);
    }
  }

  /* Several changes: the first is named with its values, the others by flag. */
  fl_engine_config_t x = c;
  fl_sched_parse("const", &x.sched);
  x.aggregator = FL_AGG_FEDAVG, x.trim_beta = 0, x.clip_norm = 0;
  fl_engine_t *e = make_engine(&x, 10, 10);
  ASSERT_EQ(fl_checkpoint_load(e, good, NULL, 0), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "was written with --schedule exp:gamma=0.5,every=1; this run has "
                                "--schedule const (and a different --aggregator, --clip-norm): "
                                "resume with the same flags");
  fl_engine_destroy(&e);

  /* The unchanged run resumes, and says nothing changed. */
  e = make_engine(&c, 10, 10);
  char changes[64] = "x";
  ASSERT_EQ(fl_checkpoint_load(e, good, changes, sizeof changes), 0);
  ASSERT_STR_EQ(changes, "");
  ASSERT_EQ(fl_engine_rounds_done(e), 2);
  fl_engine_destroy(&e);
}

/* --rounds may change, down to the rounds done, and the change is
 * reported; a run extended so continues as an uninterrupted longer run. */
TEST(checkpoint_identity_allows_rounds) {
  fl_engine_config_t c = id_config();
  c.rounds = 2;
  fl_engine_t *a = make_engine(&c, 10, 10);
  run_rounds(a, &c.model, 2, 1);
  ASSERT_TRUE(fl_engine_finished(a));
  char path[600];
  snprintf(path, sizeof path, "%s/ck-rounds.safetensors", fl_test_tmpdir());
  ASSERT_EQ(fl_checkpoint_save(a, path), 0);
  fl_engine_destroy(&a);

  fl_engine_config_t longer = c;
  longer.rounds = 5;
  fl_engine_t *ref = make_engine(&longer, 10, 10), *b = make_engine(&longer, 10, 10);
  run_rounds(ref, &c.model, 5, 1);
  char changes[64];
  ASSERT_EQ(fl_checkpoint_load(b, path, changes, sizeof changes), 0);
  ASSERT_STR_EQ(changes, "--rounds 2 -> 5");
  ASSERT_EQ(fl_engine_rounds_done(b), 2);
  ASSERT_FALSE(fl_engine_finished(b));
  run_rounds(b, &c.model, 3, 1);
  ASSERT_TRUE(fl_engine_finished(b));
  ASSERT_EQ(
      memcmp(fl_engine_weights(ref), fl_engine_weights(b), c.model.num_params * sizeof(float)), 0);
  fl_engine_destroy(&ref);
  fl_engine_destroy(&b);

  /* A checkpoint of a longer run, resumed with its limit lowered to the
   * rounds done (the run is then over), or below them (refused). */
  fl_engine_config_t x = c;
  x.rounds = 9;
  a = make_engine(&x, 10, 10);
  run_rounds(a, &x.model, 2, 1);
  ASSERT_EQ(fl_checkpoint_save(a, path), 0);
  fl_engine_destroy(&a);
  b = make_engine(&c, 10, 10);
  ASSERT_EQ(fl_checkpoint_load(b, path, changes, sizeof changes), 0);
  ASSERT_STR_EQ(changes, "--rounds 9 -> 2");
  ASSERT_TRUE(fl_engine_finished(b));
  fl_engine_destroy(&b);
  x.rounds = 1;
  b = make_engine(&x, 10, 10);
  ASSERT_EQ(fl_checkpoint_load(b, path, changes, sizeof changes), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "was written after 2 rounds (of --rounds 9); this run has "
                                "--rounds 1: resume with --rounds 2 or more (or start a new run)");
  ASSERT_EQ(fl_engine_rounds_done(b), 0);
  fl_engine_destroy(&b);
}

/* A checkpoint without an identity key (an older fedlr's) cannot be checked
 * and is refused; so are identity values that are not of their kind. */
TEST(checkpoint_identity_missing_or_malformed) {
  fl_engine_config_t c = id_config();
  fl_engine_t *a = make_engine(&c, 10, 10);
  run_rounds(a, &c.model, 2, 1);
  char good[600], bad[600];
  snprintf(good, sizeof good, "%s/ck-idm.safetensors", fl_test_tmpdir());
  snprintf(bad, sizeof bad, "%s/ck-idm-bad.safetensors", fl_test_tmpdir());
  ASSERT_EQ(fl_checkpoint_save(a, good), 0);
  fl_engine_destroy(&a);
  const char *keys[] = {"fedlr_seed",
                        "fedlr_lr",
                        "fedlr_lr0",
                        "fedlr_schedule",
                        "fedlr_local_schedule",
                        "fedlr_local_unit",
                        "fedlr_optimizer",
                        "fedlr_local_epochs",
                        "fedlr_batch_size",
                        "fedlr_fraction",
                        "fedlr_min_clients",
                        "fedlr_clients",
                        "fedlr_aggregator",
                        "fedlr_clip_norm",
                        "fedlr_max_examples",
                        "fedlr_quarantine_rounds",
                        "fedlr_eval_every",
                        "fedlr_target_accuracy",
                        "fedlr_rounds"};
  fl_engine_t *e = make_engine(&c, 10, 10);
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    const char *drop[] = {keys[i], NULL, NULL};
    ASSERT_EQ(ck_rewrite(&c.model, good, bad, drop, SIZE_MAX, 0), 0);
    int rc = fl_checkpoint_load(e, bad, NULL, 0);
    char want[128];
    snprintf(want, sizeof want,
             "no %s: it was written by an older fedlr, which did not record "
             "the run's flags",
             keys[i]);
    if (rc != FL_EFORMAT || !strstr(fl_err_msg(), want))
      FL__FAIL("without %s: rc %d, \"%s\" lacks \"%s\"", keys[i], rc, fl_err_msg(), want);
    ASSERT_EQ(fl_engine_rounds_done(e), 0);
  }
  const struct {
    const char *key, *value;
    int code;
    const char *needle;
  } cases[] = {
      {"fedlr_local_epochs", "2x", FL_EFORMAT, "fedlr_local_epochs = '2x': not a whole number"},
      {"fedlr_seed", "-42", FL_EFORMAT, "fedlr_seed = '-42': not a whole number"},
      {"fedlr_fraction", "nan", FL_EFORMAT, "fedlr_fraction = 'nan': not a finite number"},
      {"fedlr_clip_norm", "1.5x", FL_EFORMAT, "fedlr_clip_norm = '1.5x': not a finite number"},
      {"fedlr_rounds", "0", FL_ERANGE, "fedlr_rounds = '0': must be a whole number of rounds"},
      {"fedlr_rounds", "1", FL_ERANGE,
       "fedlr_rounds_done = '2': must be a whole number of rounds in [0, 1] (the round limit it "
       "was written with, fedlr_rounds)"},
      /* The same value written otherwise is the same setting. */
      {"fedlr_fraction", "0.5", 0, NULL},
      {"fedlr_seed", "0042", 0, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *edit[] = {cases[i].key, cases[i].value, NULL};
    ASSERT_EQ(ck_rewrite(&c.model, good, bad, edit, SIZE_MAX, 0), 0);
    fl_engine_t *y = make_engine(&c, 10, 10);
    int rc = fl_checkpoint_load(y, bad, NULL, 0);
    if (rc != cases[i].code || (cases[i].needle && !strstr(fl_err_msg(), cases[i].needle)))
      FL__FAIL("%s = '%s': rc %d, \"%s\"", cases[i].key, cases[i].value, rc, fl_err_msg());
    fl_engine_destroy(&y);
  }
  fl_engine_destroy(&e);
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
  ASSERT_EQ(fl_engine_add_client_at(e, 1, "evil", 1000000000ULL), 0); /* rejoin */
  float *one = malloc(P * sizeof *one);
  for (size_t i = 0; i < P; i++)
    one[i] = 1.0f;
  uint8_t *buf;
  size_t len;
  ASSERT_EQ(encode_update(&c.model, 1, 1, 1000000000ULL, one, 1, 0.1, &buf, &len), 0);
  ASSERT_EQ(fl_engine_submit(e, 1, buf, len), FL_ERANGE);
  ASSERT_CONTAINS(fl_err_msg(), "when round 1 began");
  free(buf);
  free(one);
  ASSERT_EQ(fl_engine_reported(e), 0);
  fl_engine_destroy(&e);
}

/* Evaluation gives the same bits whatever the number of threads. */
TEST(evaluation_independent_of_threads) {
  fl_dataset_t t = {2500, IN, CLASSES, NULL, NULL, {0, 0, 0}};
  t.x = malloc(t.n * IN * sizeof *t.x);
  t.y = malloc(t.n * sizeof *t.y);
  fl_rng_t r;
  fl_rng_seed(&r, 77);
  for (size_t i = 0; i < t.n * IN; i++)
    t.x[i] = (float)fl_rng_normal(&r);
  for (size_t i = 0; i < t.n; i++)
    t.y[i] = (int32_t)(i % CLASSES);
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

/* ---- robust aggregation, clipping, example cap ---- */

/* Submits an update whose delta is `d` (or every coordinate = v if d is
 * NULL); returns fl_engine_submit's code. */
static int submit(fl_engine_t *e, uint32_t id, uint64_t n, const float *d, float v) {
  const fl_model_spec_t *m = fl_engine_model(e);
  float *tmp = NULL;
  if (!d) {
    tmp = malloc(m->num_params * sizeof *tmp);
    for (size_t i = 0; i < m->num_params; i++)
      tmp[i] = v;
    d = tmp;
  }
  uint8_t *buf;
  size_t len;
  int rc = encode_update(m, fl_engine_round(e), id, n, d, 1, 0.25, &buf, &len);
  if (!rc) rc = fl_engine_submit(e, id, buf, len);
  free(buf);
  free(tmp);
  return rc;
}

static fl_engine_config_t robust_config(fl_agg_kind_t kind, double beta) {
  fl_engine_config_t c = base_config();
  c.fraction = 1.0;
  c.aggregator = kind;
  c.trim_beta = beta;
  return c;
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* The naive reference of the engine's robust rules: per coordinate, qsort
 * the r values and average the middle ones, in the same arithmetic. */
static float ref_robust(float w0, const float *vals, size_t r, fl_agg_kind_t kind, double beta) {
  float v[128];
  memcpy(v, vals, r * sizeof *v);
  qsort(v, r, sizeof *v, cmp_float);
  size_t lo, hi;
  if (kind == FL_AGG_MEDIAN) {
    lo = (r - 1) / 2;
    hi = r / 2 + 1;
  } else {
    size_t b = (size_t)floor(beta * (double)r + 1e-9);
    lo = b;
    hi = r - b;
  }
  double sum = 0;
  for (size_t k = lo; k < hi; k++)
    sum += (double)v[k];
  return w0 + (float)(sum / (double)(hi - lo));
}

TEST(aggregator_and_robust_config) {
  fl_agg_config_t a = {FL_AGG_MEDIAN, 0.3, 1.5};
  ASSERT_EQ(fl_agg_parse("fedavg", &a), 0);
  ASSERT_EQ(a.kind, FL_AGG_FEDAVG);
  ASSERT_NEAR(a.trim_beta, 0, 0);
  ASSERT_NEAR(a.clip_norm, 1.5, 0); /* a setting of its own: left alone */
  ASSERT_EQ(fl_agg_parse("median", &a), 0);
  ASSERT_EQ(a.kind, FL_AGG_MEDIAN);
  ASSERT_EQ(fl_agg_parse("trimmed-mean:0.1", &a), 0);
  ASSERT_EQ(a.kind, FL_AGG_TRIMMED_MEAN);
  ASSERT_NEAR(a.trim_beta, 0.1, 0);
  const char *bad[] = {"",
                       "mean",
                       "median:1",
                       "trimmed-mean",
                       "trimmed-mean:",
                       "trimmed-mean: 0.1",
                       "trimmed-mean:0.5",
                       "trimmed-mean:-0.1",
                       "trimmed-mean:nan"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fl_agg_config_t before = a;
    ASSERT_EQ(fl_agg_parse(bad[i], &a), FL_EINVAL);
    ASSERT_EQ(memcmp(&a, &before, sizeof a), 0); /* unchanged on error */
  }
  ASSERT_CONTAINS(fl_err_msg(), "'trimmed-mean:nan': BETA must be a number in [0, 0.5)");
  ASSERT_EQ(fl_agg_parse("mean", &a), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'mean' is not fedavg, median or trimmed-mean:BETA");
  /* The canonical spec reads back to the same rule, BETA in the fewest digits. */
  const char *canon[] = {"fedavg", "median", "trimmed-mean:0.1", "trimmed-mean:0",
                         "trimmed-mean:0.49999999999999994"};
  for (size_t i = 0; i < sizeof canon / sizeof canon[0]; i++) {
    char buf[64];
    ASSERT_EQ(fl_agg_parse(canon[i], &a), 0);
    ASSERT_EQ(fl_agg_format(&a, buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, canon[i]);
  }
  ASSERT_EQ(fl_agg_parse("trimmed-mean:0.100", &a), 0);
  char small[8], buf[64];
  ASSERT_EQ(fl_agg_format(&a, buf, sizeof buf), 0);
  ASSERT_STR_EQ(buf, "trimmed-mean:0.1");
  ASSERT_EQ(fl_agg_format(&a, small, sizeof small), FL_ETOOBIG);
  /* The flags reach the engine config through fl_engine_agg_from() and
   * fl_engine_config_from(); fl_config stores the spec as given. */
  fl_config_t cfg;
  char *argv[] = {"fedlr-sim",
                  "--aggregator",
                  "trimmed-mean:0.25",
                  "--clip-norm",
                  "2.5",
                  "--max-examples",
                  "600",
                  NULL};
  int help;
  ASSERT_EQ(fl_config_parse(&cfg, FL_PROG_SIM, 7, argv, &help), 0);
  fl_agg_config_t agg;
  ASSERT_EQ(fl_engine_agg_from(&agg, &cfg), 0);
  fl_engine_config_t ec;
  ASSERT_EQ(fl_engine_config_from(&ec, &cfg, &agg, NULL, 784, NULL, 10, NULL), 0);
  ASSERT_EQ(ec.aggregator, FL_AGG_TRIMMED_MEAN);
  ASSERT_NEAR(ec.trim_beta, 0.25, 0);
  ASSERT_NEAR(ec.clip_norm, 2.5, 0);
  ASSERT_EQ(ec.max_examples, 600);
  char *bad_argv[] = {"fedlr-coordinator", "--aggregator", "trimmed-mean:0.5", NULL};
  ASSERT_EQ(fl_config_parse(&cfg, FL_PROG_COORD, 3, bad_argv, &help), 0);
  ASSERT_STR_EQ(cfg.aggregator, "trimmed-mean:0.5");
  agg = (fl_agg_config_t){FL_AGG_MEDIAN, 0, 0};
  ASSERT_EQ(fl_engine_agg_from(&agg, &cfg), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(),
                  "--aggregator: 'trimmed-mean:0.5': BETA must be a number in [0, 0.5)");
  ASSERT_EQ(agg.kind, FL_AGG_MEDIAN); /* unchanged */
  /* --attack and --attackers go together in fedlr-sim. */
  char *lone[] = {"fedlr-sim", "--attackers", "3", NULL};
  ASSERT_EQ(fl_config_parse(&cfg, FL_PROG_SIM, 3, lone, &help), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--attack SPEC");
  /* The engine checks what a program could set directly. */
  int err;
  fl_engine_config_t c = robust_config(FL_AGG_TRIMMED_MEAN, 0.5);
  ASSERT_TRUE(fl_engine_new(&c, &err) == NULL);
  ASSERT_CONTAINS(fl_err_msg(), "beta");
  c = robust_config(FL_AGG_MEDIAN, 0);
  c.clip_norm = -1;
  ASSERT_TRUE(fl_engine_new(&c, &err) == NULL);
  ASSERT_CONTAINS(fl_err_msg(), "clip norm");
}

/* Hand-computed medians and trimmed means: odd and even counts, ties, an
 * outlier; unweighted (the clients claim different example counts). */
TEST(median_and_trimmed_mean_by_hand) {
  struct {
    fl_agg_kind_t kind;
    double beta;
    size_t r;
    float v[5];
    double want;
  } cases[] = {
      {FL_AGG_MEDIAN, 0, 1, {0.5f}, 0.5},
      {FL_AGG_MEDIAN, 0, 3, {3, -1, 2}, 2},
      {FL_AGG_MEDIAN, 0, 4, {4, 1, 3, 2}, 2.5},
      {FL_AGG_MEDIAN, 0, 2, {2, 2}, 2},
      {FL_AGG_MEDIAN, 0, 5, {1, 1, 5, 1, 7}, 1},
      {FL_AGG_MEDIAN, 0, 4, {0.25f, 0.5f, 1000, 0.75f}, 0.625},
      {FL_AGG_TRIMMED_MEAN, 0, 3, {3, -1, 2}, 4.0 / 3.0},
      {FL_AGG_TRIMMED_MEAN, 0.34, 3, {3, -1, 2}, 2},
      {FL_AGG_TRIMMED_MEAN, 0.25, 4, {4, 1, 3, 2}, 2.5},
      {FL_AGG_TRIMMED_MEAN, 0.2, 5, {1, 1, 5, 1, 7}, 7.0 / 3.0},
      {FL_AGG_TRIMMED_MEAN, 0.49, 5, {1, 1, 5, 1, 7}, 1},
      {FL_AGG_TRIMMED_MEAN, 0.4, 5, {10, -10, 1, 2, 1000}, 2},
  };
  for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
    fl_engine_config_t c = robust_config(cases[t].kind, cases[t].beta);
    const size_t P = c.model.num_params;
    fl_engine_t *e = make_engine(&c, cases[t].r, 10);
    float *w0 = malloc(P * sizeof *w0);
    memcpy(w0, fl_engine_weights(e), P * sizeof *w0);
    ASSERT_EQ(fl_engine_begin_round(e), 0);
    for (uint32_t k = 0; k < cases[t].r; k++)
      ASSERT_EQ(submit(e, k, 10 + k, NULL, cases[t].v[k]), 0);
    fl_round_metrics_t m;
    ASSERT_EQ(fl_engine_end_round(e, &m), 0);
    for (size_t i = 0; i < P; i++) {
      float want = w0[i] + (float)cases[t].want;
      ASSERT_EQ(memcmp(&fl_engine_weights(e)[i], &want, sizeof want), 0);
    }
    free(w0);
    fl_engine_destroy(&e);
  }
}

/* Random deltas with ties, for many client counts (partial quorums too):
 * the engine equals the qsort reference bit for bit, and submitting in the
 * reverse order gives the same bits. */
TEST(robust_rules_match_reference_in_any_order) {
  const size_t counts[] = {1, 2, 3, 4, 5, 7, 8, 13, 16, 17, 33, 64, 100};
  struct {
    fl_agg_kind_t kind;
    double beta;
  } rules[] = {{FL_AGG_MEDIAN, 0}, {FL_AGG_TRIMMED_MEAN, 0.1}, {FL_AGG_TRIMMED_MEAN, 0.3}};
  for (size_t ri = 0; ri < 3; ri++) {
    for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++) {
      const size_t K = counts[ci];
      fl_engine_config_t c = robust_config(rules[ri].kind, rules[ri].beta);
      c.quorum = 0.5;
      const size_t P = c.model.num_params;
      float **d = malloc(K * sizeof *d);
      for (size_t k = 0; k < K; k++) {
        d[k] = random_delta(P, 1000 * ci + k);
        /* Ties: a coarse grid, and every third client repeats client 0. */
        for (size_t i = 0; i < P; i++)
          d[k][i] = roundf(d[k][i] * 200) / 200;
        if (k % 3 == 2) memcpy(d[k], d[0], P * sizeof *d[k]);
      }
      /* Every fifth client never reports (from 5 clients on). */
      int *skip = calloc(K, sizeof *skip);
      for (size_t k = 4; k < K; k += 5)
        skip[k] = 1;
      float *res[2];
      float *w0 = malloc(P * sizeof *w0);
      for (int o = 0; o < 2; o++) {
        fl_engine_t *e = make_engine(&c, K, 10);
        memcpy(w0, fl_engine_weights(e), P * sizeof *w0);
        ASSERT_EQ(fl_engine_begin_round(e), 0);
        for (size_t i = 0; i < K; i++) {
          size_t k = o ? K - 1 - i : i;
          if (!skip[k]) ASSERT_EQ(submit(e, (uint32_t)k, 10 + k, d[k], 0), 0);
        }
        fl_round_metrics_t m;
        ASSERT_EQ(fl_engine_end_round(e, &m), 0);
        res[o] = malloc(P * sizeof(float));
        memcpy(res[o], fl_engine_weights(e), P * sizeof(float));
        fl_engine_destroy(&e);
      }
      ASSERT_EQ(memcmp(res[0], res[1], P * sizeof(float)), 0);
      float vals[128];
      for (size_t i = 0; i < P; i++) {
        size_t r = 0;
        for (size_t k = 0; k < K; k++)
          if (!skip[k]) vals[r++] = d[k][i];
        float want = ref_robust(w0[i], vals, r, rules[ri].kind, rules[ri].beta);
        ASSERT_EQ(memcmp(&res[0][i], &want, sizeof want), 0);
      }
      for (size_t k = 0; k < K; k++)
        free(d[k]);
      free(d);
      free(skip);
      free(w0);
      free(res[0]);
      free(res[1]);
    }
  }
}

/* Clipping scales a delta by C/||delta|| exactly as documented, only when
 * the norm exceeds C, composes with FedAvg order-independently, and is
 * counted. */
TEST(clip_norm_is_exact) {
  fl_engine_config_t c = robust_config(FL_AGG_MEDIAN, 0);
  const size_t P = c.model.num_params;
  const double C = 0.5, f = C / sqrt((double)P); /* delta = all ones: norm sqrt(P) */
  c.clip_norm = C;
  fl_engine_t *e = make_engine(&c, 1, 10);
  float *w0 = malloc(P * sizeof *w0);
  memcpy(w0, fl_engine_weights(e), P * sizeof *w0);
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  ASSERT_EQ(submit(e, 0, 10, NULL, 1.0f), 0);
  fl_round_metrics_t m;
  ASSERT_EQ(fl_engine_end_round(e, &m), 0);
  ASSERT_EQ(m.clipped, 1);
  /* The median of one delta is that (clipped) delta, rounded once. */
  for (size_t i = 0; i < P; i++) {
    float want = w0[i] + (float)((double)1.0f * f);
    ASSERT_EQ(memcmp(&fl_engine_weights(e)[i], &want, sizeof want), 0);
  }
  fl_engine_destroy(&e);

  /* FedAvg: the clipped deltas' weighted mean, in any order; a delta under
   * the norm is untouched, bit for bit. */
  c = base_config();
  c.fraction = 1.0;
  const size_t K = 5;
  float *d[5];
  double norm[5];
  for (size_t k = 0; k < K; k++) {
    d[k] = random_delta(P, 50 + k);
    double ss = 0;
    for (size_t i = 0; i < P; i++) {
      if (k < 3) d[k][i] *= 100; /* clients 0-2 are clipped */
      ss += (double)d[k][i] * d[k][i];
    }
    norm[k] = sqrt(ss);
  }
  c.clip_norm = 1.0;
  ASSERT_TRUE(norm[0] > 1 && norm[3] < 1 && norm[4] < 1);
  float *res[2];
  for (int o = 0; o < 2; o++) {
    e = make_engine(&c, K, 10);
    ASSERT_EQ(fl_engine_begin_round(e), 0);
    for (size_t i = 0; i < K; i++) {
      size_t k = o ? K - 1 - i : i;
      ASSERT_EQ(submit(e, (uint32_t)k, 10 + k, d[k], 0), 0);
    }
    ASSERT_EQ(fl_engine_end_round(e, &m), 0);
    ASSERT_EQ(m.clipped, 3);
    res[o] = malloc(P * sizeof(float));
    memcpy(res[o], fl_engine_weights(e), P * sizeof(float));
    fl_engine_destroy(&e);
  }
  ASSERT_EQ(memcmp(res[0], res[1], P * sizeof(float)), 0);
  double total = 0;
  for (size_t k = 0; k < K; k++)
    total += 10.0 + k;
  for (size_t i = 0; i < P; i++) {
    double ref = 0;
    for (size_t k = 0; k < K; k++)
      ref += (10.0 + k) / total * d[k][i] * (norm[k] > 1 ? 1.0 / norm[k] : 1.0);
    ASSERT_NEAR(res[0][i], w0[i] + ref, 1e-6);
  }
  /* Unclipped deltas: the same bits as without --clip-norm. */
  for (int clip = 0; clip < 2; clip++) {
    c.clip_norm = clip ? 1.0 : 0;
    e = make_engine(&c, K, 10);
    ASSERT_EQ(fl_engine_begin_round(e), 0);
    for (uint32_t k = 3; k < K; k++)
      ASSERT_EQ(submit(e, k, 10 + k, d[k], 0), 0);
    for (uint32_t k = 0; k < 3; k++)
      ASSERT_EQ(submit(e, k, 10 + k, NULL, 0), 0);
    ASSERT_EQ(fl_engine_end_round(e, &m), 0);
    ASSERT_EQ(m.clipped, 0);
    if (clip)
      ASSERT_EQ(memcmp(res[0], fl_engine_weights(e), P * sizeof(float)), 0);
    else
      memcpy(res[0], fl_engine_weights(e), P * sizeof(float));
    fl_engine_destroy(&e);
  }
  for (size_t k = 0; k < K; k++)
    free(d[k]);
  free(res[0]);
  free(res[1]);
  free(w0);
}

/* --max-examples: a huge claim (at registration and in the update) weighs
 * no more than the cap, and is counted, not rejected; a claim beyond the
 * registered count still is. */
TEST(example_cap_limits_a_claims_weight) {
  fl_engine_config_t c = base_config();
  c.fraction = 1.0;
  const size_t P = c.model.num_params;
  float result[2];
  for (int cap = 0; cap < 2; cap++) {
    c.max_examples = cap ? 10 : 0;
    int err;
    fl_engine_t *e = fl_engine_new(&c, &err);
    ASSERT_EQ(fl_engine_add_client(e, "honest", 10, NULL), 0);
    ASSERT_EQ(fl_engine_add_client(e, "liar", 1000000000, NULL), 0);
    float *w0 = malloc(P * sizeof *w0);
    memcpy(w0, fl_engine_weights(e), P * sizeof *w0);
    ASSERT_EQ(fl_engine_begin_round(e), 0);
    ASSERT_EQ(submit(e, 0, 10, NULL, 1.0f), 0);
    ASSERT_EQ(submit(e, 1, 1000000000, NULL, -1.0f), 0);
    fl_round_metrics_t m;
    ASSERT_EQ(fl_engine_end_round(e, &m), 0);
    ASSERT_EQ(m.capped, cap ? 1 : 0);
    ASSERT_EQ(m.rejected, 0);
    result[cap] = fl_engine_weights(e)[0] - w0[0];
    if (cap) /* equal weights: +1 and -1 cancel exactly */
      ASSERT_EQ(memcmp(fl_engine_weights(e), w0, P * sizeof *w0), 0);
    free(w0);
    fl_engine_destroy(&e);
  }
  ASSERT_NEAR(result[0], -1.0, 1e-6); /* FedAvg without the cap: the liar's delta */
  ASSERT_NEAR(result[1], 0.0, 0);
  /* Cap above the registration: claiming more than registered is refused. */
  c.max_examples = 20;
  fl_engine_t *e = make_engine(&c, 1, 10);
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  ASSERT_EQ(submit(e, 0, 11, NULL, 0), FL_ERANGE);
  ASSERT_EQ(submit(e, 0, 25, NULL, 0), FL_ERANGE); /* capped to 20, still > 10 */
  ASSERT_EQ(submit(e, 0, 10, NULL, 0), 0);
  fl_round_metrics_t m;
  ASSERT_EQ(fl_engine_end_round(e, &m), 0);
  ASSERT_EQ(m.rejected, 2);
  ASSERT_EQ(m.capped, 0);
  fl_engine_destroy(&e);
}

/* A rejected update (NaN, out of range, wrong example count) leaves the
 * aggregate exactly as if it had never been sent, for every rule; the
 * client may still send a valid one. Only the rejected count changes. */
TEST(rejected_update_leaves_no_trace) {
  struct {
    fl_agg_kind_t kind;
    double beta, clip;
  } rules[] = {{FL_AGG_FEDAVG, 0, 0},
               {FL_AGG_FEDAVG, 0, 0.01},
               {FL_AGG_MEDIAN, 0, 0},
               {FL_AGG_TRIMMED_MEAN, 0.25, 0.01}};
  for (size_t ri = 0; ri < 4; ri++) {
    fl_engine_config_t c = robust_config(rules[ri].kind, rules[ri].beta);
    c.clip_norm = rules[ri].clip;
    c.quorum = 0.5;
    const size_t P = c.model.num_params;
    float *d[4], *res[3];
    for (size_t k = 0; k < 4; k++)
      d[k] = random_delta(P, 70 + k);
    float *bad = random_delta(P, 99);
    for (int variant = 0; variant < 3; variant++) {
      /* 0: client 1 silent; 1: client 1 sends three bad updates, then is
       * silent; 2: client 1 sends bad updates, then its good one. */
      fl_engine_t *e = make_engine(&c, 4, 10);
      ASSERT_EQ(fl_engine_begin_round(e), 0);
      if (variant) {
        bad[P - 1] = NAN; /* the last tensor: the others were folded first */
        ASSERT_EQ(submit(e, 1, 11, bad, 0), FL_ENONFINITE);
        bad[P - 1] = 1e30f;
        ASSERT_EQ(submit(e, 1, 11, bad, 0), FL_ERANGE);
        bad[P - 1] = 0;
        ASSERT_EQ(submit(e, 1, 1000, bad, 0), FL_ERANGE);
        ASSERT_EQ(fl_engine_reported(e), 0);
        /* Answered (the round need not wait), but not reported. */
        ASSERT_TRUE(fl_engine_has_answered(e, 1));
        ASSERT_FALSE(fl_engine_has_reported(e, 1));
      }
      ASSERT_FALSE(fl_engine_has_answered(e, 0));
      for (uint32_t k = 0; k < 4; k++)
        if (k != 1 || variant == 2) ASSERT_EQ(submit(e, k, 10 + k, d[k], 0), 0);
      fl_round_metrics_t m;
      ASSERT_EQ(fl_engine_end_round(e, &m), 0);
      ASSERT_EQ(m.rejected, variant ? 3 : 0);
      ASSERT_EQ(m.clients_reported, variant == 2 ? 4 : 3);
      res[variant] = malloc(P * sizeof(float));
      memcpy(res[variant], fl_engine_weights(e), P * sizeof(float));
      fl_engine_destroy(&e);
    }
    ASSERT_EQ(memcmp(res[0], res[1], P * sizeof(float)), 0);
    /* Variant 2 against a clean round where everyone reported. */
    fl_engine_t *e = make_engine(&c, 4, 10);
    ASSERT_EQ(fl_engine_begin_round(e), 0);
    for (uint32_t k = 0; k < 4; k++)
      ASSERT_EQ(submit(e, k, 10 + k, d[k], 0), 0);
    fl_round_metrics_t m;
    ASSERT_EQ(fl_engine_end_round(e, &m), 0);
    ASSERT_EQ(memcmp(res[2], fl_engine_weights(e), P * sizeof(float)), 0);
    fl_engine_destroy(&e);
    for (size_t k = 0; k < 4; k++)
      free(d[k]);
    for (int v = 0; v < 3; v++)
      free(res[v]);
    free(bad);
  }
}

/* A checkpoint between rounds resumes a robust run bit for bit (the
 * per-round store needs no saving). */
TEST(checkpoint_resume_with_robust_rules) {
  for (int rule = 0; rule < 2; rule++) {
    fl_engine_config_t c = base_config();
    c.rounds = 5;
    c.aggregator = rule ? FL_AGG_TRIMMED_MEAN : FL_AGG_MEDIAN;
    c.trim_beta = 0.2;
    c.clip_norm = 0.05;
    char path[600];
    snprintf(path, sizeof path, "%s/ck-robust.safetensors", fl_test_tmpdir());
    check_resume(fl__failed, &c, path);
    if (*fl__failed) return;
  }
}

FL_TEST_MAIN()

/* Issue 9, defect 2: a client that registers a huge example count, is
 * sampled and has its update rejected must leave the round exactly as if it
 * had stayed silent with any other count: the weights come from the
 * accepted updates alone. A count beyond FL_ENGINE_MAX_EXAMPLES is refused
 * at registration. */
TEST(rejected_liar_leaves_weights_to_the_accepted) {
  fl_engine_config_t c = base_config();
  c.fraction = 1.0;
  c.quorum = 0.5;
  const size_t P = c.model.num_params;
  float *d[3], *res[2];
  for (size_t k = 0; k < 3; k++)
    d[k] = random_delta(P, 300 + k);
  for (int variant = 0; variant < 2; variant++) {
    int err;
    fl_engine_t *e = fl_engine_new(&c, &err);
    ASSERT_EQ(fl_engine_add_client_at(e, 0, "a", 600), 0);
    ASSERT_EQ(fl_engine_add_client_at(e, 1, "b", 600), 0);
    ASSERT_EQ(fl_engine_add_client_at(e, 2, "c", 600), 0);
    /* The liar: the most a client may register, or a modest count. */
    ASSERT_EQ(fl_engine_add_client_at(e, 3, "liar", variant ? FL_ENGINE_MAX_EXAMPLES : 10), 0);
    ASSERT_EQ(fl_engine_begin_round(e), 0);
    ASSERT_TRUE(fl_engine_is_sampled(e, 3));
    if (variant) ASSERT_EQ(submit(e, 3, FL_ENGINE_MAX_EXAMPLES, NULL, NAN), FL_ENONFINITE);
    for (uint32_t k = 0; k < 3; k++)
      ASSERT_EQ(submit(e, k, 600, d[k], 0), 0);
    fl_round_metrics_t m;
    ASSERT_EQ(fl_engine_end_round(e, &m), 0);
    ASSERT_EQ(m.clients_reported, 3);
    ASSERT_NEAR(m.train_loss, 0.25, 1e-12);
    res[variant] = malloc(P * sizeof(float));
    memcpy(res[variant], fl_engine_weights(e), P * sizeof(float));
    fl_engine_destroy(&e);
  }
  ASSERT_EQ(memcmp(res[0], res[1], P * sizeof(float)), 0);
  /* And the round did move the model by the mean of the three deltas. */
  int err;
  fl_engine_t *e = fl_engine_new(&c, &err);
  const float *w0 = fl_engine_weights(e);
  for (size_t i = 0; i < P; i++)
    ASSERT_NEAR(res[0][i], w0[i] + (d[0][i] + d[1][i] + d[2][i]) / 3.0f, 1e-6);
  ASSERT_EQ(fl_engine_add_client_at(e, 0, "huge", FL_ENGINE_MAX_EXAMPLES + 1), FL_ERANGE);
  ASSERT_CONTAINS(fl_err_msg(), "more than the limit");
  ASSERT_EQ(fl_engine_add_client_at(e, 0, "huge", 1ULL << 63), FL_ERANGE);
  ASSERT_EQ(fl_engine_num_clients(e), 0);
  fl_engine_destroy(&e);
  for (size_t k = 0; k < 3; k++)
    free(d[k]);
  free(res[0]);
  free(res[1]);
}

/* The two-limb accumulator: more updates than AGG_CARRY_EVERY (carries
 * happen mid-round) give the same bits in any order, and the extremes
 * (|delta| at FL_ENGINE_MAX_DELTA, counts at FL_ENGINE_MAX_EXAMPLES) do not
 * overflow. */
TEST(accumulator_carries_are_exact) {
  fl_engine_config_t c = base_config();
  c.fraction = 1.0;
  const size_t P = c.model.num_params, K = 600;
  float *res[2];
  for (int order = 0; order < 2; order++) {
    fl_engine_t *e = make_engine(&c, K, 1000);
    ASSERT_EQ(fl_engine_begin_round(e), 0);
    for (size_t j = 0; j < K; j++) {
      uint32_t k = (uint32_t)(order ? K - 1 - j : (j * 7) % K); /* 7 is prime to 600 */
      float *d = random_delta(P, 5000 + k);
      ASSERT_EQ(submit(e, k, 1000 + k, d, 0), 0);
      free(d);
    }
    fl_round_metrics_t m;
    ASSERT_EQ(fl_engine_end_round(e, &m), 0);
    res[order] = malloc(P * sizeof(float));
    memcpy(res[order], fl_engine_weights(e), P * sizeof(float));
    fl_engine_destroy(&e);
  }
  ASSERT_EQ(memcmp(res[0], res[1], P * sizeof(float)), 0);
  free(res[0]);
  free(res[1]);

  /* 300 clients at the limits, deltas +-2^20 alternating by client: the
   * mean is exactly 0 for an even count of each sign. */
  fl_engine_t *e = make_engine(&c, 0, 0);
  for (uint32_t k = 0; k < 300; k++) {
    char name[16];
    snprintf(name, sizeof name, "x%u", k);
    ASSERT_EQ(fl_engine_add_client_at(e, k, name, FL_ENGINE_MAX_EXAMPLES), 0);
  }
  float *w0 = malloc(P * sizeof *w0);
  memcpy(w0, fl_engine_weights(e), P * sizeof *w0);
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  for (uint32_t k = 0; k < 300; k++)
    ASSERT_EQ(submit(e, k, FL_ENGINE_MAX_EXAMPLES, NULL, k % 2 ? -1048576.0f : 1048576.0f), 0);
  fl_round_metrics_t m;
  ASSERT_EQ(fl_engine_end_round(e, &m), 0);
  ASSERT_EQ(memcmp(w0, fl_engine_weights(e), P * sizeof *w0), 0);
  /* All positive: the mean is 2^20 (exact in float). */
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  for (uint32_t k = 0; k < 300; k++)
    ASSERT_EQ(submit(e, k, FL_ENGINE_MAX_EXAMPLES, NULL, 1048576.0f), 0);
  ASSERT_EQ(fl_engine_end_round(e, &m), 0);
  for (size_t i = 0; i < P; i++)
    ASSERT_EQ(fl_engine_weights(e)[i], w0[i] + 1048576.0f);
  free(w0);
  fl_engine_destroy(&e);
}

/* Issue 9, defect 1: with quorum 0.8 and 4 sampled clients, one of which
 * always sends NaN, the round closes with the 3 honest updates (the quorum
 * counts the updates that can still count); the bad client is quarantined:
 * not sampled in the next rounds, nor in its own round's retries. */
TEST(rejected_client_neither_blocks_quorum_nor_is_resampled) {
  fl_engine_config_t c = base_config();
  c.fraction = 1.0;
  c.quorum = 0.8;
  c.quarantine_rounds = 2;
  c.rounds = 10;
  fl_engine_t *e = make_engine(&c, 4, 10);
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  ASSERT_EQ(fl_engine_quorum_need(e), 4);
  ASSERT_EQ(submit(e, 3, 10, NULL, NAN), FL_ENONFINITE);
  ASSERT_CONTAINS(fl_err_msg(), "not sampled again before round 4");
  ASSERT_EQ(fl_engine_quorum_need(e), 3);
  for (uint32_t k = 0; k < 3; k++) {
    ASSERT_FALSE(fl_engine_has_quorum(e));
    ASSERT_EQ(submit(e, k, 10 + k, NULL, 0.01f), 0);
  }
  ASSERT_TRUE(fl_engine_has_quorum(e));
  fl_round_metrics_t m;
  ASSERT_EQ(fl_engine_end_round(e, &m), 0);
  ASSERT_EQ(m.rejected, 1);
  /* Rounds 2 and 3: client 3 is quarantined; round 4: back. */
  for (uint32_t r = 2; r <= 4; r++) {
    ASSERT_EQ(fl_engine_begin_round(e), 0);
    ASSERT_EQ(fl_engine_sampled(e, NULL), r <= 3 ? 3 : 4);
    ASSERT_EQ(fl_engine_is_sampled(e, 3), r == 4);
    const uint32_t *ids;
    size_t k = fl_engine_sampled(e, &ids);
    for (size_t i = 0; i < k; i++)
      ASSERT_EQ(submit(e, ids[i], 10, NULL, 0.01f), 0);
    ASSERT_EQ(fl_engine_end_round(e, &m), 0);
  }
  /* Quarantine 0: still excluded from the retries of its own round. */
  c.quarantine_rounds = 0;
  fl_engine_t *f = make_engine(&c, 4, 10);
  ASSERT_EQ(fl_engine_begin_round(f), 0);
  ASSERT_EQ(submit(f, 1, 10, NULL, NAN), FL_ENONFINITE);
  ASSERT_EQ(fl_engine_abort_round(f), 0);
  ASSERT_EQ(fl_engine_begin_round(f), 0);
  ASSERT_FALSE(fl_engine_is_sampled(f, 1));
  ASSERT_EQ(fl_engine_sampled(f, NULL), 3);
  const uint32_t *ids;
  size_t k = fl_engine_sampled(f, &ids);
  for (size_t i = 0; i < k; i++)
    ASSERT_EQ(submit(f, ids[i], 10, NULL, 0.01f), 0);
  ASSERT_EQ(fl_engine_end_round(f, &m), 0);
  ASSERT_EQ(fl_engine_begin_round(f), 0);
  ASSERT_TRUE(fl_engine_is_sampled(f, 1));
  /* Every available client quarantined: they are sampled after all, and
   * --max-retries ends a run that cannot progress. */
  c.quarantine_rounds = 5;
  c.max_retries = 2;
  fl_engine_t *g = make_engine(&c, 2, 10);
  for (int attempt = 0; attempt < 3; attempt++) {
    ASSERT_EQ(fl_engine_begin_round(g), 0);
    ASSERT_EQ(fl_engine_sampled(g, NULL), 2);
    ASSERT_EQ(submit(g, 0, 10, NULL, NAN), FL_ENONFINITE);
    ASSERT_EQ(submit(g, 1, 10, NULL, INFINITY), FL_ENONFINITE);
    ASSERT_FALSE(fl_engine_has_quorum(g));
    ASSERT_EQ(fl_engine_abort_round(g), attempt < 2 ? 0 : FL_ESTATE);
  }
  ASSERT_CONTAINS(fl_err_msg(), "abandoned 3 times in a row");
  ASSERT_CONTAINS(fl_err_msg(), "2 updates were rejected");
  fl_engine_destroy(&e);
  fl_engine_destroy(&f);
  fl_engine_destroy(&g);
}

/* A round abandoned max_retries times in a row ends the run with a clear
 * error; a closed round resets the count. */
TEST(retries_are_bounded) {
  fl_engine_config_t c = base_config();
  c.fraction = 0.5;
  c.max_retries = 3;
  fl_engine_t *e = make_engine(&c, 6, 10);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(fl_engine_begin_round(e), 0);
    ASSERT_EQ(fl_engine_abort_round(e), 0);
    ASSERT_EQ(fl_engine_attempt(e), (uint32_t)i + 1);
  }
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  ASSERT_EQ(fl_engine_abort_round(e), FL_ESTATE);
  ASSERT_CONTAINS(fl_err_msg(), "round 1 was abandoned 4 times in a row");
  fl_engine_destroy(&e);
  e = make_engine(&c, 6, 10);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(fl_engine_begin_round(e), 0);
    ASSERT_EQ(fl_engine_abort_round(e), 0);
  }
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  const uint32_t *ids;
  size_t k = fl_engine_sampled(e, &ids);
  for (size_t i = 0; i < k; i++)
    ASSERT_EQ(submit(e, ids[i], 10, NULL, 0.01f), 0);
  fl_round_metrics_t m;
  ASSERT_EQ(fl_engine_end_round(e, &m), 0);
  ASSERT_EQ(fl_engine_attempt(e), 0);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(fl_engine_begin_round(e), 0);
    ASSERT_EQ(fl_engine_abort_round(e), 0);
  }
  fl_engine_destroy(&e);
}

/* The quarantine is part of the checkpoint: a run resumed after a client
 * was quarantined samples exactly as the uninterrupted run, whether the
 * clients register before the checkpoint is loaded or after (they rejoin a
 * restarted coordinator one by one). A damaged quarantine entry is refused. */
TEST(quarantine_survives_a_checkpoint) {
  fl_engine_config_t c = base_config();
  c.fraction = 1.0;
  c.quorum = 0.5;
  c.quarantine_rounds = 3;
  c.rounds = 6;
  char path[600];
  snprintf(path, sizeof path, "%s/ck-quarantine.safetensors", fl_test_tmpdir());
  /* Client 2 sends NaN in round 1: quarantined through round 4. */
  fl_engine_t *a = make_engine(&c, 4, 10);
  ASSERT_EQ(fl_engine_begin_round(a), 0);
  for (uint32_t k = 0; k < 4; k++)
    ASSERT_EQ(submit(a, k, 10, NULL, k == 2 ? NAN : 0.01f * (float)(k + 1)),
              k == 2 ? FL_ENONFINITE : 0);
  fl_round_metrics_t m;
  ASSERT_EQ(fl_engine_end_round(a, &m), 0);
  ASSERT_EQ(fl_checkpoint_save(a, path), 0);
  for (int order = 0; order < 2; order++) {
    int err;
    fl_engine_t *b = fl_engine_new(&c, &err);
    if (order == 0) ASSERT_EQ(fl_checkpoint_load(b, path, NULL, 0), 0);
    for (uint32_t k = 0; k < 4; k++) {
      char name[8];
      snprintf(name, sizeof name, "c%u", k);
      ASSERT_EQ(fl_engine_add_client_at(b, k, name, 10 + k), 0);
    }
    if (order == 1) ASSERT_EQ(fl_checkpoint_load(b, path, NULL, 0), 0);
    for (uint32_t r = 2; r <= 5; r++) {
      ASSERT_EQ(fl_engine_begin_round(b), 0);
      ASSERT_EQ(fl_engine_is_sampled(b, 2), r == 5);
      const uint32_t *ids;
      size_t n = fl_engine_sampled(b, &ids);
      for (size_t i = 0; i < n; i++)
        ASSERT_EQ(submit(b, ids[i], 10, NULL, 0.01f), 0);
      ASSERT_EQ(fl_engine_end_round(b, &m), 0);
    }
    fl_engine_destroy(&b);
  }
  /* Tampered: a round beyond --quarantine, descending ids, junk. */
  char meta[64];
  ASSERT_EQ(fl_safetensors_meta(path, "fedlr_quarantine", meta, sizeof meta), 0);
  ASSERT_STR_EQ(meta, "2:4");
  char badpath[600];
  snprintf(badpath, sizeof badpath, "%s/ck-quarantine-bad.safetensors", fl_test_tmpdir());
  const char *bad[] = {"2:9", "3:4,2:4", "2:x", "2:1", "2:4,", "99999999:4"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *edits[] = {"fedlr_quarantine", bad[i], NULL};
    ASSERT_EQ(ck_rewrite(&c.model, path, badpath, edits, (size_t)-1, 0), 0);
    fl_engine_t *b = make_engine(&c, 4, 10);
    ASSERT_EQ(fl_checkpoint_load(b, badpath, NULL, 0), FL_EFORMAT);
    ASSERT_CONTAINS(fl_err_msg(), "fedlr_quarantine");
    ASSERT_EQ(fl_engine_rounds_done(b), 0);
    fl_engine_destroy(&b);
  }
  fl_engine_destroy(&a);
}

/* ---- server optimizers in checkpoints ------------------------------------ */

/* The model's layout, then each server state vector's tensors, as
 * fl_checkpoint writes them (fl_checkpoint.h), for rewriting a checkpoint
 * of a run with a server optimizer. */
static fl_layout_t *state_layout(const fl_model_spec_t *m, size_t ns, fl_model_spec_t *spec) {
  fl_layout_t *l = fl_layout_new();
  size_t nt = fl_model_num_tensors(m);
  for (size_t s = 0; s <= ns; s++)
    for (size_t t = 0; t < nt; t++) {
      fl_tensor_info_t ti;
      fl_model_tensor(m, t, &ti);
      char name[300];
      snprintf(name, sizeof name, "%s%s.%zu", FL_ENGINE_STATE_PREFIX, s == 1 ? "m" : "v", t);
      if (fl_layout_add(l, s ? name : ti.name, ti.ndim, ti.shape)) return NULL;
    }
  fl_model_custom(l, spec);
  snprintf(spec->spec, sizeof spec->spec, "%s", m->spec);
  return l;
}

/* FedAdam and FedAvgM resume bit-identically (their moments are in the
 * checkpoint), with a plateau server schedule that reduces mid-run (its
 * state is in the checkpoint too). */
TEST(checkpoint_server_optimizer_resumes) {
  fl_dataset_t t = random_test_set();
  const char *specs[] = {"fedadam:tau=0.01", "fedavgm:0.8", "fedyogi", "fedadagrad"};
  for (size_t k = 0; k < 4; k++) {
    fl_engine_config_t c = ck_config(&t);
    c.rounds = 5;
    c.target_accuracy = 0;
    ASSERT_EQ(fl_sopt_parse(specs[k], &c.server_optim), 0);
    c.server_lr = 0.05;
    /* threshold 0.9: only a 10-fold drop of the loss counts as better */
    ASSERT_EQ(fl_sched_parse("plateau:factor=0.5,patience=0,threshold=0.9", &c.server_sched), 0);
    char path[600];
    snprintf(path, sizeof path, "%s/ck-sopt%zu.safetensors", fl_test_tmpdir(), k);
    check_resume(fl__failed, &c, path);
    if (*fl__failed) break;
    /* The server rate was reduced by its plateau schedule before the
     * checkpoint (random labels: the loss never improves), and restored. */
    char v[64];
    ASSERT_EQ(fl_safetensors_meta(path, "fedlr_server_plateau_scale", v, sizeof v), 0);
    ASSERT_TRUE(strtod(v, NULL) < 1);
    ASSERT_EQ(fl_safetensors_meta(path, "fedlr_server_lr", v, sizeof v), 0);
    ASSERT_STR_EQ(v, "0x1.999999999999ap-5");
  }
  free(t.x);
  free(t.y);
}

/* The four settings are part of the identity (their stored forms, each
 * change refused naming the flag); damaged moments are refused; a
 * checkpoint of a fedlr before them resumes a run with their defaults. */
TEST(checkpoint_server_optimizer_identity_and_damage) {
  fl_engine_config_t c = base_config();
  c.rounds = 6;
  ASSERT_EQ(fl_sopt_parse("fedyogi:beta1=0.5", &c.server_optim), 0);
  c.server_lr = 0.25;
  fl_sched_parse("exp:gamma=0.5", &c.server_sched);
  c.prox_mu = 0.01;
  fl_engine_t *a = make_engine(&c, 10, 10);
  run_rounds(a, &c.model, 2, 1);
  char good[600], bad[600];
  snprintf(good, sizeof good, "%s/ck-sid.safetensors", fl_test_tmpdir());
  snprintf(bad, sizeof bad, "%s/ck-sid-bad.safetensors", fl_test_tmpdir());
  ASSERT_EQ(fl_checkpoint_save(a, good), 0);
  fl_engine_destroy(&a);
  const char *stored[][2] = {{"fedlr_server_optimizer", "fedyogi:beta1=0.5,beta2=0.99,tau=0.001"},
                             {"fedlr_server_lr", "0x1p-2"},
                             {"fedlr_server_schedule", "exp:gamma=0.5,every=1"},
                             {"fedlr_prox_mu", "0x1.47ae147ae147bp-7"},
                             {"fedlr_server_plateau_scale", "0x1p+0"}};
  for (size_t i = 0; i < sizeof stored / sizeof stored[0]; i++) {
    char v[128];
    ASSERT_EQ(fl_safetensors_meta(good, stored[i][0], v, sizeof v), 0);
    if (strcmp(v, stored[i][1]))
      FL__FAIL("%s = '%s', expected '%s'", stored[i][0], v, stored[i][1]);
  }
  const char *cases[] = {
      "--server-optimizer fedyogi:beta1=0.5,beta2=0.99,tau=0.001; this run has "
      "--server-optimizer fedyogi:beta1=0.5,beta2=0.99,tau=0.002",
      "--server-optimizer fedyogi:beta1=0.5,beta2=0.99,tau=0.001; this run has "
      "--server-optimizer fedavg",
      "--server-lr 0.25; this run has --server-lr 0.5",
      "--server-schedule exp:gamma=0.5,every=1; this run has --server-schedule const",
      "--prox-mu 0.01; this run has --prox-mu 0",
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fl_engine_config_t x = c;
    switch (i) {
    case 0: x.server_optim.tau = 0.002; break;
    case 1: fl_sopt_parse("fedavg", &x.server_optim); break;
    case 2: x.server_lr = 0.5; break;
    case 3: fl_sched_parse("const", &x.server_sched); break;
    case 4: x.prox_mu = 0; break;
    }
    fl_engine_t *e = make_engine(&x, 10, 10);
    ASSERT_TRUE(e != NULL);
    int rc = fl_checkpoint_load(e, good, NULL, 0);
    if (rc != FL_EINVAL || !strstr(fl_err_msg(), cases[i]))
      FL__FAIL("case %zu: rc %d, \"%s\" lacks \"%s\"", i, rc, fl_err_msg(), cases[i]);
    ASSERT_EQ(fl_engine_rounds_done(e), 0);
    fl_engine_destroy(&e);
  }

  /* Damaged moments: m not finite, v negative. Refused, engine unchanged. */
  fl_model_spec_t spec;
  fl_layout_t *l = state_layout(&c.model, 2, &spec);
  ASSERT_TRUE(l != NULL);
  const size_t P = c.model.num_params;
  fl_engine_t *e = make_engine(&c, 10, 10);
  for (int k = 0; k < 2; k++) {
    float *w = malloc(3 * P * sizeof *w);
    fl_safetensors_meta_t *meta = malloc(sizeof *meta);
    ASSERT_EQ(fl_safetensors_load_all(good, &spec, w, FL_SAFETENSORS_NEED_CHECKSUM, meta), 0);
    const char *kv[2 * FL_SAFETENSORS_META_MAX + 1];
    size_t n = 0;
    for (size_t i = 0; i < meta->n; i++)
      if (strcmp(meta->e[i].key, "model")) kv[n++] = meta->e[i].key, kv[n++] = meta->e[i].value;
    kv[n] = NULL;
    if (k == 0)
      w[P + 3] = NAN; /* m */
    else
      w[2 * P + 5] = -0.5f; /* v */
    ASSERT_EQ(fl_safetensors_save(bad, &spec, w, kv), 0);
    free(w);
    free(meta);
    ASSERT_EQ(fl_checkpoint_load(e, bad, NULL, 0), FL_ERANGE);
    ASSERT_CONTAINS(fl_err_msg(),
                    k == 0 ? "server optimizer state m, value 3, is nan: it must be finite"
                           : "server optimizer state v, value 5, is -0.5: it must be "
                             "finite and >= 0");
    ASSERT_EQ(fl_engine_rounds_done(e), 0);
  }
  fl_engine_destroy(&e);
  fl_layout_destroy(&l);

  /* A checkpoint of a plain FedAvg run as a fedlr before server optimizers
   * wrote it (none of the eight keys): it resumes a run with the defaults,
   * and is refused by one with a server optimizer, naming the flag. */
  fl_engine_config_t d = base_config();
  d.rounds = 6;
  a = make_engine(&d, 10, 10);
  run_rounds(a, &d.model, 2, 1);
  ASSERT_EQ(fl_checkpoint_save(a, good), 0);
  fl_engine_destroy(&a);
  const char *drop[] = {"fedlr_server_optimizer",
                        NULL,
                        "fedlr_server_lr",
                        NULL,
                        "fedlr_server_schedule",
                        NULL,
                        "fedlr_prox_mu",
                        NULL,
                        "fedlr_server_plateau_best",
                        NULL,
                        "fedlr_server_plateau_scale",
                        NULL,
                        "fedlr_server_plateau_bad",
                        NULL,
                        "fedlr_server_plateau_cool",
                        NULL,
                        NULL};
  ASSERT_EQ(ck_rewrite(&d.model, good, bad, drop, SIZE_MAX, 0), 0);
  char v[64];
  ASSERT_EQ(fl_safetensors_meta(bad, "fedlr_server_lr", v, sizeof v), FL_ENOENT);
  e = make_engine(&d, 10, 10);
  ASSERT_EQ(fl_checkpoint_load(e, bad, NULL, 0), 0);
  ASSERT_EQ(fl_engine_rounds_done(e), 2);
  fl_engine_destroy(&e);
  d.server_lr = 0.5;
  e = make_engine(&d, 10, 10);
  ASSERT_EQ(fl_checkpoint_load(e, bad, NULL, 0), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "was written with --server-lr 1; this run has --server-lr 0.5");
  fl_engine_destroy(&e);
  d.server_lr = 1;
  fl_sopt_parse("fedadam", &d.server_optim);
  e = make_engine(&d, 10, 10);
  ASSERT_EQ(fl_checkpoint_load(e, bad, NULL, 0), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "was written with --server-optimizer fedavg; this run has "
                                "--server-optimizer fedadam:beta1=0.9,beta2=0.99,tau=0.001");
  fl_engine_destroy(&e);
  /* Only some of the server plateau's keys: damaged, refused. */
  const char *drop1[] = {"fedlr_server_plateau_bad", NULL, NULL};
  ASSERT_EQ(ck_rewrite(&d.model, good, bad, drop1, SIZE_MAX, 0), 0);
  d = base_config();
  d.rounds = 6;
  e = make_engine(&d, 10, 10);
  ASSERT_EQ(fl_checkpoint_load(e, bad, NULL, 0), FL_EFORMAT);
  ASSERT_CONTAINS(fl_err_msg(), "no fedlr_server_plateau_bad");
  fl_engine_destroy(&e);
}

/* A custom model whose tensor names collide with the server state's in
 * checkpoints is refused when the server optimizer keeps a state. */
TEST(server_state_prefix_is_reserved) {
  fl_layout_t *l = fl_layout_new();
  uint32_t shape[1] = {4};
  ASSERT_EQ(fl_layout_add(l, "w", 1, shape), 0);
  ASSERT_EQ(fl_layout_add(l, "fedlr.server_opt.m.0", 1, shape), 0);
  fl_engine_config_t c = base_config();
  ASSERT_EQ(fl_model_custom(l, &c.model), 0);
  float w0[8] = {0};
  c.init_weights = w0;
  int err = 0;
  fl_engine_t *e = fl_engine_new(&c, &err); /* fedavg: no state, no conflict */
  ASSERT_TRUE(e != NULL);
  fl_engine_destroy(&e);
  fl_sopt_parse("fedavgm", &c.server_optim);
  e = fl_engine_new(&c, &err);
  ASSERT_TRUE(e == NULL);
  ASSERT_EQ(err, FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "model tensor 'fedlr.server_opt.m.0': names beginning with "
                                "'fedlr.server_opt.' are the server optimizer's");
  fl_layout_destroy(&l);
}
