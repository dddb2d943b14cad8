/* Protocol version 2 in the round engine: the attempt a RoundStart carries
 * and an Update echoes; federated evaluation (sampling of evaluators,
 * Evaluate messages, EvalResults checked and aggregated exactly and in
 * any order, the plateau schedule and the target following them without
 * a test set); custom models (any named tensors from --init, fl_init). All
 * messages are real encoded protobuf, as clients send them. */
#include "fl_test.h"

#include <math.h>

#include "fl_checkpoint.h"
#include "fl_engine.h"
#include "fl_error.h"
#include "fl_fedeval.h"
#include "fl_init.h"
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
  fl_sched_parse("const", &c.sched);
  fl_optim_parse("sgd", &c.optim);
  c.local_epochs = 1;
  c.batch_size = 4;
  c.fraction = 1.0;
  c.min_clients = 1;
  c.rounds = 5;
  c.seed = 42;
  c.eval_every = 1;
  c.quorum = 1.0;
  c.eval_fraction = 1.0;
  c.quarantine_rounds = 2;
  return c;
}

/* `clients` clients c0, c1, ...; client i holds 10 + i training examples
 * and eval[i] evaluation examples (eval may be NULL: none). */
static fl_engine_t *make_engine(const fl_engine_config_t *c, size_t clients, const uint64_t *eval) {
  int err = 0;
  fl_engine_t *e = fl_engine_new(c, &err);
  for (size_t i = 0; e && i < clients; i++) {
    char name[32];
    uint32_t id;
    snprintf(name, sizeof name, "c%zu", i);
    if (fl_engine_add_client(e, name, 10 + i, &id) ||
        (eval && fl_engine_set_eval_examples(e, id, eval[i])))
      fl_engine_destroy(&e);
  }
  return e;
}

/* An Update of a zero delta from `client` for (round, attempt). */
static int submit_update(fl_engine_t *e, uint32_t client, uint32_t round, uint32_t attempt) {
  const fl_model_spec_t *m = fl_engine_model(e);
  float *zero = calloc(m->num_params, sizeof *zero);
  fl_wire_tensors_t tv;
  fl_wire_tensors_init(&tv, m, zero);
  Fedlr__Update u = FEDLR__UPDATE__INIT;
  u.round = round;
  u.client_id = client;
  u.num_examples = 10;
  u.is_delta = 1;
  u.n_weights = tv.n;
  u.weights = tv.ptrs;
  u.train_loss = 0.5;
  u.attempt = attempt;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_UPDATE;
  env.update = &u;
  uint8_t *buf;
  size_t len;
  int rc = fl_wire_encode(&env, &buf, &len);
  if (!rc) rc = fl_engine_submit(e, client, buf, len);
  free(buf);
  fl_wire_tensors_free(&tv);
  free(zero);
  return rc;
}

/* Runs round `round` with every sampled client reporting a zero delta. */
static int run_round(fl_engine_t *e, uint32_t round, fl_round_metrics_t *m) {
  int rc = fl_engine_begin_round(e);
  const uint32_t *ids;
  size_t n = fl_engine_sampled(e, &ids);
  for (size_t i = 0; !rc && i < n; i++)
    rc = submit_update(e, ids[i], round, fl_engine_attempt(e) + 1);
  return rc ? rc : fl_engine_end_round(e, m);
}

/* An EvalResult from `client`, decoded as a transport decodes it. */
static int submit_eval(fl_engine_t *e, uint32_t client, uint32_t round, uint64_t n, double loss,
                       double acc, const char *other, double other_v, int *content) {
  Fedlr__Metric a = FEDLR__METRIC__INIT, o = FEDLR__METRIC__INIT;
  a.name = "accuracy";
  a.value = acc;
  o.name = (char *)other;
  o.value = other_v;
  Fedlr__Metric *ms[2] = {&a, &o};
  Fedlr__EvalResult r = FEDLR__EVAL_RESULT__INIT;
  r.round = round;
  r.client_id = client;
  r.num_examples = n;
  r.loss = loss;
  r.n_metrics = other ? 2 : 1;
  r.metrics = ms;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT, *d = NULL;
  env.body_case = FEDLR__ENVELOPE__BODY_EVAL_RESULT;
  env.eval_result = &r;
  uint8_t *buf;
  size_t len;
  int rc = fl_wire_encode(&env, &buf, &len);
  if (!rc) rc = fl_wire_decode(buf, len, fl_engine_limits(e), &d);
  if (!rc) rc = fl_engine_submit_eval(e, client, d->eval_result, content);
  fl_wire_free(&d);
  free(buf);
  return rc;
}

/* The RoundStart carries the attempt, 1-based; an Update of another
 * attempt is stale; 0 (not given, a version-1 client) is accepted. */
TEST(attempt_in_round_start_and_update) {
  fl_engine_config_t c = base_config();
  c.max_retries = 5;
  fl_engine_t *e = make_engine(&c, 3, NULL);
  ASSERT_TRUE(e != NULL);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&c.model, &lim);
  for (uint32_t attempt = 1; attempt <= 2; attempt++) {
    ASSERT_EQ(fl_engine_begin_round(e), 0);
    uint8_t *buf;
    size_t len;
    Fedlr__Envelope *d = NULL;
    ASSERT_EQ(fl_engine_encode_round_start(e, 1, &buf, &len), 0);
    ASSERT_EQ(fl_wire_decode(buf, len, &lim, &d), 0);
    ASSERT_EQ(d->round_start->attempt, attempt);
    ASSERT_EQ(d->round_start->round, 1);
    fl_wire_free(&d);
    free(buf);
    if (attempt == 1) ASSERT_EQ(fl_engine_abort_round(e), 0);
  }
  ASSERT_EQ(submit_update(e, 0, 1, 1), FL_ESTALE); /* the abandoned attempt's */
  ASSERT_CONTAINS(fl_err_msg(), "is for attempt 1 of round 1, the current attempt is 2");
  ASSERT_EQ(fl_engine_has_answered(e, 0), 0); /* not the client's fault */
  ASSERT_EQ(submit_update(e, 0, 1, 3), FL_ESTALE);
  ASSERT_EQ(submit_update(e, 0, 1, 2), 0);
  ASSERT_EQ(submit_update(e, 1, 1, 0), 0); /* attempt not given */
  fl_engine_destroy(&e);
}

/* The evaluators: a seeded sample of ceil(f * A) of the A available
 * clients that hold evaluation examples; one Evaluate for all, with the
 * round and the new weights; no round begins while it is open. */
TEST(evaluation_opens_after_a_round) {
  fl_engine_config_t c = base_config();
  c.eval_fraction = 0.5;
  uint64_t eval[6] = {5, 0, 7, 9, 11, 13}; /* client 1 does not evaluate */
  fl_engine_t *e = make_engine(&c, 6, eval);
  ASSERT_TRUE(e != NULL);
  fl_engine_set_available(e, 5, 0); /* nor does a client that is away */
  fl_round_metrics_t m;
  ASSERT_EQ(run_round(e, 1, &m), 0);
  ASSERT_TRUE(fl_engine_eval_open(e));
  ASSERT_EQ(m.fed_eval_clients, 0);
  ASSERT_TRUE(isnan(m.fed_eval_loss));
  const uint32_t *ids;
  size_t n = fl_engine_eval_sampled(e, &ids);
  ASSERT_EQ(n, 2); /* ceil(0.5 * 4) of clients 0, 2, 3, 4 */
  ASSERT_LT(ids[0], ids[1]);
  for (size_t i = 0; i < n; i++)
    ASSERT_TRUE(ids[i] != 1 && ids[i] != 5);
  ASSERT_EQ(fl_engine_begin_round(e), FL_ESTATE);
  ASSERT_CONTAINS(fl_err_msg(), "still being evaluated");
  ASSERT_FALSE(fl_engine_finished(e));
  char path[600];
  snprintf(path, sizeof path, "%s/eval-open.safetensors", fl_test_tmpdir());
  ASSERT_EQ(fl_checkpoint_save(e, path), FL_ESTATE);

  uint8_t *buf;
  size_t len;
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&c.model, &lim);
  Fedlr__Envelope *d = NULL;
  ASSERT_EQ(fl_engine_encode_evaluate(e, ids[0], &buf, &len), 0);
  ASSERT_EQ(fl_wire_decode(buf, len, &lim, &d), 0);
  ASSERT_EQ(d->body_case, FEDLR__ENVELOPE__BODY_EVALUATE);
  ASSERT_EQ(d->evaluate->round, 1);
  ASSERT_STR_EQ(d->evaluate->model, "mlp:4");
  ASSERT_EQ(fl_wire_check_tensors(d->evaluate->weights, d->evaluate->n_weights, &c.model), 0);
  float *w = malloc(c.model.num_params * sizeof *w);
  fl_wire_tensors_copy(d->evaluate->weights, d->evaluate->n_weights, &c.model, w);
  ASSERT_EQ(memcmp(w, fl_engine_weights(e), c.model.num_params * sizeof *w), 0);
  free(w);
  fl_wire_free(&d);
  free(buf);

  /* The same sample from the same seed. */
  uint32_t first[2] = {ids[0], ids[1]};
  fl_engine_t *e2 = make_engine(&c, 6, eval);
  fl_engine_set_available(e2, 5, 0);
  ASSERT_EQ(run_round(e2, 1, &m), 0);
  ASSERT_EQ(fl_engine_eval_sampled(e2, &ids), 2);
  ASSERT_TRUE(ids[0] == first[0] && ids[1] == first[1]);
  fl_engine_destroy(&e2);

  ASSERT_EQ(fl_engine_end_eval(e, &m, NULL, 0), 0); /* nobody answered */
  ASSERT_EQ(m.fed_eval_clients, 0);
  ASSERT_FALSE(fl_engine_eval_open(e));
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  fl_engine_destroy(&e);
}

/* Example-weighted means over the accepted results, the same bits in any
 * arrival order; every rejection is told apart (stale, not an evaluator,
 * the client's content). */
TEST(evaluation_results_aggregated_exactly) {
  fl_engine_config_t c = base_config();
  uint64_t eval[4] = {100, 300, 50, 1000};
  const double loss[4] = {0.1, 0.7, 0.3, 0.9}, acc[4] = {0.9, 0.2, 0.5, 1.0 / 3};
  fl_round_metrics_t m[2];
  char extra[2][FL_FEDEVAL_EXTRA_MAX];
  const char *names[FL_FEDEVAL_MAX_NAMES];
  double values[FL_FEDEVAL_MAX_NAMES];
  size_t n_named = 0;
  for (int order = 0; order < 2; order++) {
    fl_engine_t *e = make_engine(&c, 4, eval);
    fl_round_metrics_t rm;
    ASSERT_EQ(run_round(e, 1, &rm), 0);
    ASSERT_EQ(fl_engine_eval_sampled(e, NULL), 4);
    int content = -1;
    /* Not the clients' content: nothing counted. */
    ASSERT_EQ(submit_eval(e, 0, 2, 10, 0.1, 0.5, NULL, 0, &content), FL_ESTALE);
    ASSERT_EQ(content, 0);
    ASSERT_FALSE(fl_engine_eval_answered(e, 0));
    /* The client's content: an example count beyond its declaration. */
    ASSERT_EQ(submit_eval(e, 2, 1, 51, 0.1, 0.5, NULL, 0, &content), FL_ERANGE);
    ASSERT_EQ(content, 1);
    ASSERT_CONTAINS(fl_err_msg(), "claims 51 examples, it declared 50");
    ASSERT_TRUE(fl_engine_eval_answered(e, 2));
    ASSERT_EQ(submit_eval(e, 2, 1, 50, loss[2], acc[2], NULL, 0, &content), FL_ESTALE);
    for (int k = 0; k < 4; k++) {
      int i = order ? 3 - k : k;
      if (i == 2) continue;
      ASSERT_EQ(submit_eval(e, (uint32_t)i, 1, eval[i], loss[i], acc[i], i ? "f1" : "aux", i * 0.25,
                            &content),
                0);
    }
    ASSERT_EQ(submit_eval(e, 1, 1, 300, 0.7, 0.2, NULL, 0, &content), FL_ESTALE); /* twice */
    ASSERT_EQ(fl_engine_end_eval(e, &m[order], extra[order], sizeof extra[order]), 0);
    /* The same metrics as numbers (TensorBoard's fed_eval/<name>). */
    n_named = fl_engine_eval_named(e, names, values, FL_FEDEVAL_MAX_NAMES);
    ASSERT_EQ(n_named, 2);
    ASSERT_STR_EQ(names[0], "aux");
    ASSERT_STR_EQ(names[1], "f1");
    ASSERT_DBL_OP(values[0], ==, 0);
    ASSERT_DBL_OP(values[1], ==, (0.25 * 300 + 0.75 * 1000) / 1300.0);
    ASSERT_EQ(fl_engine_eval_named(e, names, values, 1), 1); /* at most cap */
    ASSERT_STR_EQ(names[0], "aux");
    fl_engine_destroy(&e);
  }
  /* Clients 0, 1, 3 (client 2's result was rejected). */
  double n = 100 + 300 + 1000;
  ASSERT_EQ(m[0].fed_eval_clients, 3);
  ASSERT_EQ(m[0].fed_eval_examples, 1400);
  ASSERT_NEAR(m[0].fed_eval_loss, (0.1 * 100 + 0.7 * 300 + 0.9 * 1000) / n, 1e-15);
  ASSERT_NEAR(m[0].fed_eval_accuracy, (0.9 * 100 + 0.2 * 300 + 1000.0 / 3) / n, 1e-15);
  ASSERT_EQ(memcmp(&m[0].fed_eval_loss, &m[1].fed_eval_loss, sizeof(double)), 0);
  ASSERT_EQ(memcmp(&m[0].fed_eval_accuracy, &m[1].fed_eval_accuracy, sizeof(double)), 0);
  /* Other metrics: each over the clients that reported it, names sorted. */
  char want[256];
  snprintf(want, sizeof want, "\"fed_eval_aux\":0,\"fed_eval_f1\":%.17g",
           (0.25 * 300 + 0.75 * 1000) / 1300.0);
  ASSERT_STR_EQ(extra[0], want);
  ASSERT_STR_EQ(extra[1], want);
}

/* Without a test set, the plateau schedule and the target accuracy follow
 * the federated evaluation. */
TEST(federated_metrics_drive_plateau_and_target) {
  fl_engine_config_t c = base_config();
  fl_sched_parse("plateau:factor=0.5,patience=0", &c.sched);
  c.target_accuracy = 0.95;
  c.rounds = 10;
  uint64_t eval[2] = {10, 10};
  fl_engine_t *e = make_engine(&c, 2, eval);
  const double losses[3] = {1.0, 2.0, 3.0}, accs[3] = {0.5, 0.6, 0.97};
  for (uint32_t r = 1; r <= 3; r++) {
    fl_round_metrics_t m;
    ASSERT_EQ(run_round(e, r, &m), 0);
    ASSERT_NEAR(m.lr, r <= 2 ? 0.1 : 0.05, 1e-12);
    int content;
    for (uint32_t i = 0; i < 2; i++)
      ASSERT_EQ(submit_eval(e, i, r, 10, losses[r - 1], accs[r - 1], NULL, 0, &content), 0);
    ASSERT_FALSE(fl_engine_finished(e)); /* not before the evaluation closes */
    ASSERT_EQ(fl_engine_end_eval(e, &m, NULL, 0), 0);
    ASSERT_EQ(fl_engine_finished(e), r == 3);
  }
  /* Round 2's loss did not improve on round 1's: the rate halved for round 3. */
  fl_engine_state_t st;
  fl_engine_get_state(e, &st);
  ASSERT_NEAR(st.plateau.scale, 0.25, 0); /* and round 3's neither */
  ASSERT_NEAR(st.best_accuracy, 0.97, 0);
  fl_engine_destroy(&e);
}

/* A client whose result was rejected, or that stayed silent, is not asked
 * to evaluate for quarantine_rounds; it still trains. */
TEST(evaluation_quarantine) {
  fl_engine_config_t c = base_config();
  uint64_t eval[3] = {10, 10, 10};
  fl_engine_t *e = make_engine(&c, 3, eval);
  fl_round_metrics_t m;
  ASSERT_EQ(run_round(e, 1, &m), 0);
  fl_engine_quarantine_eval(e, 1);
  ASSERT_EQ(fl_engine_end_eval(e, &m, NULL, 0), 0);
  for (uint32_t r = 2; r <= 4; r++) {
    ASSERT_EQ(run_round(e, r, &m), 0);
    ASSERT_EQ(m.clients_sampled, 3); /* it trains */
    const uint32_t *ids;
    size_t n = fl_engine_eval_sampled(e, &ids);
    int asked = 0;
    for (size_t i = 0; i < n; i++)
      asked |= ids[i] == 1;
    ASSERT_EQ(asked, r == 4); /* kept from rounds 2 and 3 (1 + quarantine_rounds) */
    ASSERT_EQ(fl_engine_end_eval(e, &m, NULL, 0), 0);
  }
  fl_engine_destroy(&e);
}

/* A custom model: any named tensors from a safetensors file (fl_init),
 * aggregated like a built-in one, starting from the file's values. */
TEST(custom_model_from_init) {
  fl_layout_t *l = fl_layout_new();
  uint32_t conv[4] = {2, 1, 3, 3}, b[1] = {2};
  ASSERT_EQ(fl_layout_add(l, "conv.weight", 4, conv), 0);
  ASSERT_EQ(fl_layout_add(l, "conv.bias", 1, b), 0);
  fl_model_spec_t cm;
  ASSERT_EQ(fl_model_custom(l, &cm), 0);
  float w0[20];
  for (int i = 0; i < 20; i++)
    w0[i] = (float)i / 8;
  char path[400];
  snprintf(path, sizeof path, "%.300s/custom-init.safetensors", fl_test_tmpdir());
  ASSERT_EQ(fl_safetensors_save(path, &cm, w0, NULL), 0);

  fl_config_t cfg;
  fl_config_defaults(&cfg);
  snprintf(cfg.init, sizeof cfg.init, "%s", path);
  fl_init_t init;
  ASSERT_EQ(fl_init_read(&cfg, &init), 0); /* "model": "custom" in the file */
  ASSERT_TRUE(init.custom);
  fl_engine_config_t c = base_config();
  ASSERT_EQ(fl_init_model(&init, 0, NULL, 0, &c.model), 0);
  ASSERT_STR_EQ(c.model.spec, "custom");
  c.init_weights = init.weights;
  int err;
  fl_engine_t *e = fl_engine_new(&c, &err);
  ASSERT_TRUE(e != NULL);
  ASSERT_EQ(memcmp(fl_engine_weights(e), w0, sizeof w0), 0);
  ASSERT_EQ(fl_engine_add_client(e, "a", 10, NULL), 0);
  fl_round_metrics_t m;
  ASSERT_EQ(run_round(e, 1, &m), 0);
  ASSERT_EQ(memcmp(fl_engine_weights(e), w0, sizeof w0), 0); /* zero deltas */
  fl_engine_destroy(&e);

  /* The same file under --model mlp:4 (other tensors) is refused. */
  snprintf(cfg.model, sizeof cfg.model, "mlp:4");
  fl_init_free(&init);
  ASSERT_EQ(fl_init_read(&cfg, &init), 0);
  ASSERT_FALSE(init.custom);
  ASSERT_EQ(fl_init_model(&init, IN, NULL, CLASSES, &c.model), FL_ESHAPE);
  ASSERT_CONTAINS(fl_err_msg(), "tensor 0 is 'conv.weight' [2,1,3,3], model 'mlp:4'");
  ASSERT_CONTAINS(fl_err_msg(), "use --model custom");
  fl_init_free(&init);

  /* A custom model needs its weights, and has no test set. */
  fl_engine_config_t bad = base_config();
  fl_model_custom(l, &bad.model);
  ASSERT_TRUE(fl_engine_new(&bad, &err) == NULL);
  ASSERT_EQ(err, FL_EINVAL);
  fl_layout_destroy(&l);

  /* A fedlr model.safetensors of a built-in model is that model. */
  fl_engine_config_t bc = base_config();
  float wb[64];
  ASSERT_EQ(bc.model.num_params, 4 * IN + 4 + CLASSES * 4 + CLASSES);
  for (size_t i = 0; i < bc.model.num_params; i++)
    wb[i] = (float)i;
  ASSERT_EQ(fl_safetensors_save(path, &bc.model, wb, NULL), 0);
  fl_config_defaults(&cfg);
  snprintf(cfg.init, sizeof cfg.init, "%s", path);
  ASSERT_EQ(fl_init_read(&cfg, &init), 0);
  ASSERT_FALSE(init.custom);
  ASSERT_STR_EQ(init.spec, "mlp:4");
  ASSERT_EQ(fl_init_model(&init, IN, NULL, CLASSES, &bc.model), 0);
  fl_init_free(&init);
}

/* A custom model under a robust rule with clipping: the coordinate-wise
 * median of the clipped deltas, whatever the tensors mean. */
TEST(custom_model_robust_rule) {
  fl_layout_t *l = fl_layout_new();
  uint32_t w[3] = {2, 1, 2}, s1[1] = {1};
  ASSERT_EQ(fl_layout_add(l, "block.w", 3, w), 0);
  ASSERT_EQ(fl_layout_add(l, "gain", 0, s1), 0);
  fl_engine_config_t c = base_config();
  ASSERT_EQ(fl_model_custom(l, &c.model), 0);
  float w0[5] = {1, 2, 3, 4, 5};
  c.init_weights = w0;
  c.aggregator = FL_AGG_MEDIAN;
  c.clip_norm = 1.0;
  int err;
  fl_engine_t *e = fl_engine_new(&c, &err);
  ASSERT_TRUE(e != NULL);
  const float deltas[3][5] = {
      {0.1f, 0.2f, 0.0f, 0.0f, 0.1f}, {0.3f, -0.1f, 0.0f, 0.0f, 0.2f}, {30, 0, 0, 0, 40}};
  for (int i = 0; i < 3; i++) {
    char name[8];
    snprintf(name, sizeof name, "c%d", i);
    ASSERT_EQ(fl_engine_add_client(e, name, 10, NULL), 0);
  }
  ASSERT_EQ(fl_engine_begin_round(e), 0);
  for (uint32_t i = 0; i < 3; i++) {
    fl_wire_tensors_t tv;
    ASSERT_EQ(fl_wire_tensors_init(&tv, &c.model, deltas[i]), 0);
    Fedlr__Update u = FEDLR__UPDATE__INIT;
    u.round = 1;
    u.client_id = i;
    u.num_examples = 10;
    u.is_delta = 1;
    u.n_weights = tv.n;
    u.weights = tv.ptrs;
    u.attempt = 1;
    Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
    env.body_case = FEDLR__ENVELOPE__BODY_UPDATE;
    env.update = &u;
    uint8_t *buf;
    size_t len;
    ASSERT_EQ(fl_wire_encode(&env, &buf, &len), 0);
    ASSERT_EQ(fl_engine_submit(e, i, buf, len), 0);
    free(buf);
    fl_wire_tensors_free(&tv);
  }
  fl_round_metrics_t m;
  ASSERT_EQ(fl_engine_end_round(e, &m), 0);
  ASSERT_EQ(m.clipped, 1); /* only the third (norm 50) exceeds 1 */
  /* Clipped to norm 1: (0.6, 0, 0, 0, 0.8); medians per coordinate. */
  const float want[5] = {1 + 0.3f, 2 + 0.0f, 3, 4, 5 + 0.2f};
  for (int i = 0; i < 5; i++)
    ASSERT_NEAR(fl_engine_weights(e)[i], want[i], 1e-6);
  fl_engine_destroy(&e);
  fl_layout_destroy(&l);
}

FL_TEST_MAIN()
