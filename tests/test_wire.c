/* Tests for fl_wire: round trips of every message kind, and rejection (with
 * code and detail) of every kind of malformed or hostile input. */
#include "fl_test.h"

#include "fl_error.h"
#include "fl_model.h"
#include "fl_rng.h"
#include "fl_wire.h"

/* The test model: "mlp:20,10" on 30 inputs, 5 classes (885 parameters). */
static int make_model(fl_model_spec_t *m) {
  return fl_model_parse("mlp:20,10", 30, 5, m);
}

static float *make_params(const fl_model_spec_t *m, uint64_t seed) {
  float *p = malloc(m->num_params * sizeof(float));
  fl_rng_t r;
  fl_rng_seed(&r, seed);
  for (size_t i = 0; i < m->num_params; i++)
    p[i] = (float)(fl_rng_uniform(&r) - 0.5);
  return p;
}

/* Encodes `e` and decodes it again under `lim`; returns the decode result. */
static int reencode(const Fedlr__Envelope *e, const fl_wire_limits_t *lim, Fedlr__Envelope **out) {
  uint8_t *buf = NULL;
  size_t len = 0;
  *out = NULL;
  int rc = fl_wire_encode(e, &buf, &len);
  if (rc < 0) return rc;
  rc = fl_wire_decode(buf, len, lim, out);
  free(buf);
  return rc;
}

/* A valid Update over `tv`; the caller may break fields before encoding. */
static void make_update(Fedlr__Envelope *e, Fedlr__Update *u, fl_wire_tensors_t *tv) {
  fedlr__envelope__init(e);
  fedlr__update__init(u);
  u->round = 3;
  u->client_id = 7;
  u->num_examples = 600;
  u->is_delta = 1;
  u->train_loss = 0.75;
  u->steps = 60;
  u->n_weights = tv->n;
  u->weights = tv->ptrs;
  e->body_case = FEDLR__ENVELOPE__BODY_UPDATE;
  e->update = u;
}

static void make_round_start(Fedlr__Envelope *e, Fedlr__RoundStart *r, Fedlr__Optimizer *o,
                             fl_wire_tensors_t *tv) {
  fedlr__envelope__init(e);
  fedlr__round_start__init(r);
  fedlr__optimizer__init(o);
  o->kind = FEDLR__OPTIMIZER__KIND__ADAM;
  o->beta1 = 0.9f;
  o->beta2 = 0.999f;
  o->eps = 1e-8f;
  o->weight_decay = 1e-4f;
  r->round = 12;
  r->lr = 0.05f;
  r->local_schedule = "cosine";
  r->local_unit = FEDLR__ROUND_START__LOCAL_UNIT__STEP;
  r->optimizer = o;
  r->local_epochs = 5;
  r->batch_size = 10;
  r->seed = 0x123456789abcdef0ull;
  r->model = "mlp:20,10";
  r->n_weights = tv->n;
  r->weights = tv->ptrs;
  e->body_case = FEDLR__ENVELOPE__BODY_ROUND_START;
  e->round_start = r;
}

TEST(roundtrip_join) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  Fedlr__Envelope e = FEDLR__ENVELOPE__INIT, *d = NULL;
  Fedlr__Join j = FEDLR__JOIN__INIT;
  j.protocol_version = FL_WIRE_PROTOCOL_VERSION;
  j.name = "client-03 (Zürich)";
  j.num_examples = 6000;
  e.body_case = FEDLR__ENVELOPE__BODY_JOIN;
  e.join = &j;
  ASSERT_EQ(reencode(&e, &lim, &d), 0);
  ASSERT_EQ(d->body_case, FEDLR__ENVELOPE__BODY_JOIN);
  ASSERT_EQ(d->join->protocol_version, FL_WIRE_PROTOCOL_VERSION);
  ASSERT_STR_EQ(d->join->name, j.name);
  ASSERT_EQ(d->join->num_examples, 6000);
  fl_wire_free(&d);
  ASSERT_TRUE(d == NULL);
  fl_wire_free(&d); /* NULL-safe */
}

TEST(roundtrip_welcome) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  Fedlr__Envelope e = FEDLR__ENVELOPE__INIT, *d = NULL;
  Fedlr__Welcome w = FEDLR__WELCOME__INIT;
  w.client_id = 4;
  w.run_id = "run-2024-01";
  w.model = "mlp:20,10";
  w.input_dim = 30;
  w.num_classes = 5;
  e.body_case = FEDLR__ENVELOPE__BODY_WELCOME;
  e.welcome = &w;
  ASSERT_EQ(reencode(&e, &lim, &d), 0);
  ASSERT_EQ(d->body_case, FEDLR__ENVELOPE__BODY_WELCOME);
  ASSERT_EQ(d->welcome->client_id, 4);
  ASSERT_STR_EQ(d->welcome->run_id, "run-2024-01");
  ASSERT_STR_EQ(d->welcome->model, "mlp:20,10");
  ASSERT_EQ(d->welcome->input_dim, 30);
  ASSERT_EQ(d->welcome->num_classes, 5);
  fl_shape_t none = fl_wire_welcome_shape(d->welcome);
  ASSERT_FALSE(fl_shape_is_set(&none));
  fl_wire_free(&d);
}

/* Version 4: a CNN's input image in the Welcome, checked against
 * input_dim. */
TEST(welcome_input_shape) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  Fedlr__Envelope e = FEDLR__ENVELOPE__INIT, *d = NULL;
  Fedlr__Welcome w = FEDLR__WELCOME__INIT;
  uint32_t shape[4] = {3, 8, 8, 1};
  w.run_id = "r";
  w.model = "cnn:conv3x3x8,pool2,fc16";
  w.input_dim = 192;
  w.num_classes = 4;
  w.protocol_version = 4;
  w.n_input_shape = 3;
  w.input_shape = shape;
  e.body_case = FEDLR__ENVELOPE__BODY_WELCOME;
  e.welcome = &w;
  ASSERT_EQ(reencode(&e, &lim, &d), 0);
  fl_shape_t s = fl_wire_welcome_shape(d->welcome);
  ASSERT_EQ(s.c, 3);
  ASSERT_EQ(s.h, 8);
  ASSERT_EQ(s.w, 8);
  fl_wire_free(&d);
  const struct {
    size_t n;
    uint32_t dim, s0;
  } bad[] = {{3, 191, 3}, {2, 192, 3}, {4, 192, 3}, {3, 0, 3}, {3, 192, 0}, {3, 192, 65537}};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    w.n_input_shape = bad[i].n;
    w.input_dim = bad[i].dim;
    shape[0] = bad[i].s0;
    ASSERT_EQ(reencode(&e, &lim, &d), FL_EFORMAT);
    ASSERT_CONTAINS(fl_err_msg(), "welcome: input_shape has");
    ASSERT_TRUE(d == NULL);
  }
}

TEST(roundtrip_round_start) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  ASSERT_EQ(m.num_params, 885);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  ASSERT_EQ(lim.max_values, 885);
  ASSERT_EQ(lim.max_tensors, 6);
  float *p = make_params(&m, 1);
  float *q = calloc(m.num_params, sizeof(float));
  fl_wire_tensors_t tv;
  fl_wire_tensors_init(&tv, &m, p);
  ASSERT_EQ(tv.n, 6);
  ASSERT_STR_EQ(tv.ptrs[2]->name, "layers.1.weight");
  Fedlr__Envelope e, *d = NULL;
  Fedlr__RoundStart r;
  Fedlr__Optimizer o;
  make_round_start(&e, &r, &o, &tv);
  int rc = reencode(&e, &lim, &d);
  if (rc) fprintf(stderr, "  %s\n", fl_err_msg());
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(d->body_case, FEDLR__ENVELOPE__BODY_ROUND_START);
  Fedlr__RoundStart *g = d->round_start;
  ASSERT_EQ(g->round, 12);
  ASSERT_DBL_OP(g->lr, ==, 0.05f);
  ASSERT_STR_EQ(g->local_schedule, "cosine");
  ASSERT_EQ(g->local_unit, FEDLR__ROUND_START__LOCAL_UNIT__STEP);
  ASSERT_EQ(g->optimizer->kind, FEDLR__OPTIMIZER__KIND__ADAM);
  ASSERT_DBL_OP(g->optimizer->beta2, ==, 0.999f);
  ASSERT_EQ(g->local_epochs, 5);
  ASSERT_EQ(g->batch_size, 10);
  ASSERT_TRUE(g->seed == 0x123456789abcdef0ull);
  ASSERT_STR_EQ(g->model, "mlp:20,10");
  ASSERT_DBL_OP(g->prox_mu, ==, 0.0f); /* not set: absent, plain local training */
  ASSERT_EQ(fl_wire_check_tensors(g->weights, g->n_weights, &m), 0);
  fl_wire_tensors_copy(g->weights, g->n_weights, &m, q);
  ASSERT_EQ(memcmp(p, q, m.num_params * sizeof(float)), 0);
  fl_wire_free(&d);
  /* Version 3: FedProx's mu travels as the float it is, up to the limit. */
  const float mus[] = {0.01f, 1e-30f, 1.0f, (float)FL_WIRE_MAX_PROX_MU};
  for (size_t i = 0; i < sizeof mus / sizeof mus[0]; i++) {
    r.prox_mu = mus[i];
    ASSERT_EQ(reencode(&e, &lim, &d), 0);
    ASSERT_EQ(memcmp(&d->round_start->prox_mu, &mus[i], sizeof mus[i]), 0);
    fl_wire_free(&d);
  }
  fl_wire_tensors_free(&tv);
  free(p);
  free(q);
}

TEST(roundtrip_update) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  float *p = make_params(&m, 2);
  float *q = calloc(m.num_params, sizeof(float));
  fl_wire_tensors_t tv;
  fl_wire_tensors_init(&tv, &m, p);
  Fedlr__Envelope e, *d = NULL;
  Fedlr__Update u;
  make_update(&e, &u, &tv);
  ASSERT_EQ(reencode(&e, &lim, &d), 0);
  ASSERT_EQ(d->body_case, FEDLR__ENVELOPE__BODY_UPDATE);
  ASSERT_EQ(d->update->round, 3);
  ASSERT_EQ(d->update->client_id, 7);
  ASSERT_EQ(d->update->num_examples, 600);
  ASSERT_TRUE(d->update->is_delta);
  ASSERT_DBL_OP(d->update->train_loss, ==, 0.75);
  ASSERT_EQ(d->update->steps, 60);
  ASSERT_EQ(fl_wire_check_tensors(d->update->weights, d->update->n_weights, &m), 0);
  fl_wire_tensors_copy(d->update->weights, d->update->n_weights, &m, q);
  ASSERT_EQ(memcmp(p, q, m.num_params * sizeof(float)), 0);
  fl_wire_free(&d);
  fl_wire_tensors_free(&tv);
  free(p);
  free(q);
}

TEST(roundtrip_heartbeat_stop) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  Fedlr__Envelope e = FEDLR__ENVELOPE__INIT, *d = NULL;
  Fedlr__Heartbeat h = FEDLR__HEARTBEAT__INIT;
  h.client_id = 9;
  h.round = 44;
  e.body_case = FEDLR__ENVELOPE__BODY_HEARTBEAT;
  e.heartbeat = &h;
  ASSERT_EQ(reencode(&e, &lim, &d), 0);
  ASSERT_EQ(d->body_case, FEDLR__ENVELOPE__BODY_HEARTBEAT);
  ASSERT_EQ(d->heartbeat->client_id, 9);
  ASSERT_EQ(d->heartbeat->round, 44);
  fl_wire_free(&d);

  Fedlr__Stop s = FEDLR__STOP__INIT;
  s.reason = "run finished after 100 rounds";
  s.error = 1;
  e.body_case = FEDLR__ENVELOPE__BODY_STOP;
  e.stop = &s;
  ASSERT_EQ(reencode(&e, &lim, &d), 0);
  ASSERT_EQ(d->body_case, FEDLR__ENVELOPE__BODY_STOP);
  ASSERT_STR_EQ(d->stop->reason, s.reason);
  ASSERT_TRUE(d->stop->error);
  fl_wire_free(&d);

  /* A heartbeat with all-default fields encodes to a few bytes and is valid. */
  Fedlr__Heartbeat h0 = FEDLR__HEARTBEAT__INIT;
  e.body_case = FEDLR__ENVELOPE__BODY_HEARTBEAT;
  e.heartbeat = &h0;
  ASSERT_EQ(reencode(&e, &lim, &d), 0);
  ASSERT_EQ(d->body_case, FEDLR__ENVELOPE__BODY_HEARTBEAT);
  fl_wire_free(&d);
}

/* The decoder's contract on arbitrary input: an error with NULL output and a
 * detail message, or a valid envelope with a body. */
static int check_decode_contract(const uint8_t *buf, size_t len, const fl_wire_limits_t *lim,
                                 int *accepted) {
  Fedlr__Envelope *d = (Fedlr__Envelope *)1;
  fl_err_clear();
  int rc = fl_wire_decode(buf, len, lim, &d);
  if (rc < 0) {
    if (d != NULL || !fl_err_msg()[0]) return 0;
  } else {
    if (rc != 0 || !d || d->body_case == FEDLR__ENVELOPE__BODY__NOT_SET) return 0;
    (*accepted)++;
  }
  fl_wire_free(&d);
  return 1;
}

TEST(random_bytes_never_crash) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  fl_rng_t r;
  fl_rng_seed(&r, 20240601);
  uint8_t buf[1024];
  int accepted = 0;
  for (int it = 0; it < 2000; it++) {
    size_t len = (size_t)fl_rng_below(&r, sizeof buf + 1);
    for (size_t i = 0; i < len; i++)
      buf[i] = (uint8_t)fl_rng_u64(&r);
    /* Half the buffers start with a valid body tag so the fuzzing gets past
     * the envelope into the submessages. */
    if (len > 0 && (it & 1)) buf[0] = (uint8_t)((1 + fl_rng_below(&r, 6)) << 3 | 2);
    if (!check_decode_contract(buf, len, &lim, &accepted))
      FL__FAIL("iteration %d (len %zu): decode broke its contract: %s", it, len, fl_err_msg());
  }
  fprintf(stderr, "  %d of 2000 random buffers decoded as valid envelopes\n", accepted);
}

TEST(mutated_messages_never_crash) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  float *p = make_params(&m, 3);
  fl_wire_tensors_t tv;
  fl_wire_tensors_init(&tv, &m, p);
  Fedlr__Envelope e;
  Fedlr__RoundStart rs;
  Fedlr__Optimizer o;
  make_round_start(&e, &rs, &o, &tv);
  uint8_t *enc = NULL;
  size_t len = 0;
  ASSERT_EQ(fl_wire_encode(&e, &enc, &len), 0);
  uint8_t *buf = malloc(len);
  fl_rng_t r;
  fl_rng_seed(&r, 77);
  int accepted = 0;
  for (int it = 0; it < 2000; it++) {
    memcpy(buf, enc, len);
    /* Mutations cluster in the header, where the lengths and tags are. */
    int nflip = 1 + (int)fl_rng_below(&r, 4);
    for (int k = 0; k < nflip; k++) {
      size_t at = it % 2 ? fl_rng_below(&r, 64 < len ? 64 : len) : fl_rng_below(&r, len);
      buf[at] ^= (uint8_t)(1u << fl_rng_below(&r, 8));
    }
    if (!check_decode_contract(buf, len, &lim, &accepted))
      FL__FAIL("iteration %d: decode broke its contract: %s", it, fl_err_msg());
  }
  fprintf(stderr, "  %d of 2000 mutated messages still valid\n", accepted);
  free(buf);
  free(enc);
  fl_wire_tensors_free(&tv);
  free(p);
}

TEST(truncated_update_rejected) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  float *p = make_params(&m, 4);
  fl_wire_tensors_t tv;
  fl_wire_tensors_init(&tv, &m, p);
  Fedlr__Envelope e, *d = NULL;
  Fedlr__Update u;
  make_update(&e, &u, &tv);
  uint8_t *enc = NULL;
  size_t len = 0;
  ASSERT_EQ(fl_wire_encode(&e, &enc, &len), 0);
  for (size_t n = 0; n < len; n++) {
    /* A copy of exactly n bytes, so ASan catches any read past the prefix. */
    uint8_t *cut = malloc(n ? n : 1);
    memcpy(cut, enc, n);
    int rc = fl_wire_decode(cut, n, &lim, &d);
    free(cut);
    if (rc == 0) FL__FAIL("prefix of %zu/%zu bytes accepted", n, len);
    ASSERT_TRUE(d == NULL);
    ASSERT_EQ(rc, FL_EFORMAT);
    ASSERT_TRUE(strstr(fl_err_msg(), "undecodable") || strstr(fl_err_msg(), "no message body"));
  }
  ASSERT_EQ(fl_wire_decode(enc, len, &lim, &d), 0);
  fl_wire_free(&d);
  free(enc);
  fl_wire_tensors_free(&tv);
  free(p);
}

TEST(oversize_rejected_before_decoding) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  float *p = make_params(&m, 5);
  fl_wire_tensors_t tv;
  fl_wire_tensors_init(&tv, &m, p);
  Fedlr__Envelope e, *d = NULL;
  Fedlr__Update u;
  make_update(&e, &u, &tv);
  uint8_t *enc = NULL;
  size_t len = 0;
  ASSERT_EQ(fl_wire_encode(&e, &enc, &len), 0);
  fl_wire_limits_t small = lim;
  small.max_message = len - 1;
  ASSERT_EQ(fl_wire_decode(enc, len, &small, &d), FL_ETOOBIG);
  ASSERT_TRUE(d == NULL);
  ASSERT_CONTAINS(fl_err_msg(), "exceeds the limit");
  small.max_message = len;
  ASSERT_EQ(fl_wire_decode(enc, len, &small, &d), 0);
  fl_wire_free(&d);
  free(enc);
  fl_wire_tensors_free(&tv);
  free(p);
}

TEST(no_body_rejected) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  Fedlr__Envelope e = FEDLR__ENVELOPE__INIT, *d = NULL;
  ASSERT_EQ(reencode(&e, &lim, &d), FL_EFORMAT);
  ASSERT_CONTAINS(fl_err_msg(), "no message body");
  /* An unknown field only (field 15, varint): skipped, still no body. */
  const uint8_t unk[] = {0x78, 0x01};
  ASSERT_EQ(fl_wire_decode(unk, sizeof unk, &lim, &d), FL_EFORMAT);
  ASSERT_CONTAINS(fl_err_msg(), "no message body");
  ASSERT_TRUE(d == NULL);
}

/* Encodes the Update over `p` (after `tweak`) and expects `code` + `needle`. */
#define EXPECT_UPDATE_REJECT(tweak, code, needle)                                                  \
  do {                                                                                             \
    Fedlr__Envelope e_;                                                                            \
    Fedlr__Update u_;                                                                              \
    fl_wire_tensors_t tv_;                                                                         \
    fl_wire_tensors_init(&tv_, &m, p);                                                             \
    make_update(&e_, &u_, &tv_);                                                                   \
    tweak;                                                                                         \
    Fedlr__Envelope *d_ = NULL;                                                                    \
    int rc_ = reencode(&e_, &lim, &d_);                                                            \
    fl_wire_free(&d_);                                                                             \
    fl_wire_tensors_free(&tv_);                                                                    \
    if (rc_ != (code)) FL__FAIL("%s: rc %d (%s), expected %d", #tweak, rc_, fl_err_msg(), code);   \
    ASSERT_CONTAINS(fl_err_msg(), needle);                                                         \
  } while (0)

TEST(update_field_rejections) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  float *p = make_params(&m, 6);

  p[600 + 3] = NAN; /* layers.0.bias[3] */
  EXPECT_UPDATE_REJECT((void)0, FL_ENONFINITE, "update: tensor 1 'layers.0.bias' value 3 is NaN");
  p[600 + 3] = 0;
  p[700] = -INFINITY; /* layers.1.weight[80] */
  EXPECT_UPDATE_REJECT((void)0, FL_ENONFINITE, "tensor 2 'layers.1.weight' value 80 is infinite");
  p[700] = 0;

  EXPECT_UPDATE_REJECT(u_.round = 0, FL_ERANGE, "update: round 0");
  EXPECT_UPDATE_REJECT(u_.num_examples = 0, FL_ERANGE, "update: num_examples");
  EXPECT_UPDATE_REJECT(u_.train_loss = NAN, FL_ENONFINITE, "update: train_loss");
  EXPECT_UPDATE_REJECT(u_.n_weights = 0, FL_EFORMAT, "update: no weights");

  /* Shape product != data count. */
  EXPECT_UPDATE_REJECT(tv_.t[2].n_data -= 1, FL_ESHAPE,
                       "update: tensor 2 'layers.1.weight' has 199 values, "
                       "shape [10,20] needs 200");
  EXPECT_UPDATE_REJECT(tv_.info[0].shape[1] = 0, FL_ESHAPE,
                       "update: tensor 0 'layers.0.weight' has a zero dimension [20,0]");
  /* No dimensions is a scalar: one value. */
  EXPECT_UPDATE_REJECT(tv_.t[1].n_shape = 0, FL_ESHAPE,
                       "tensor 1 'layers.0.bias' has 20 values, shape [] needs 1");
  uint32_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 5};
  EXPECT_UPDATE_REJECT((tv_.t[5].shape = nine, tv_.t[5].n_shape = 9), FL_ESHAPE,
                       "9 dimensions, at most 8");
  /* Shape product that overflows 64 bits must not wrap around to n_data. */
  uint32_t huge[4] = {65536, 65536, 65536, 65536};
  EXPECT_UPDATE_REJECT((tv_.t[5].shape = huge, tv_.t[5].n_shape = 4), FL_ESHAPE, "overflows");
  /* Overlong tensor name. */
  char longname[FL_WIRE_MAX_STRING + 2];
  memset(longname, 'x', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  EXPECT_UPDATE_REJECT(tv_.t[0].name = longname, FL_ETOOBIG, "name is longer than 256");
  free(p);
}

TEST(tensor_count_and_value_limits) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  float *p = make_params(&m, 7);

  /* Seven tensors (one repeated) for a six-tensor model. */
  Fedlr__Tensor *seven[7];
  {
    fl_wire_tensors_t tv0;
    fl_wire_tensors_init(&tv0, &m, p);
    for (int i = 0; i < 7; i++)
      seven[i] = tv0.ptrs[i % 6];
    EXPECT_UPDATE_REJECT((u_.weights = seven, u_.n_weights = 7), FL_ETOOBIG,
                         "update: 7 tensors, limit is 6");
    fl_wire_tensors_free(&tv0);
  }
  /* Within the tensor count but over the value budget. */
  lim.max_values = m.num_params - 1;
  EXPECT_UPDATE_REJECT((void)0, FL_ETOOBIG, "more than 884 values");
  lim.max_values = m.num_params;
  EXPECT_UPDATE_REJECT(u_.round = 0, FL_ERANGE, "round 0"); /* sanity: lim restored */
  free(p);
}

TEST(round_start_rejections) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  float *p = make_params(&m, 8);
  fl_wire_tensors_t tv;
  fl_wire_tensors_init(&tv, &m, p);
  Fedlr__Envelope e, *d = NULL;
  Fedlr__RoundStart r;
  Fedlr__Optimizer o;
  char longs[FL_WIRE_MAX_STRING + 2];
  memset(longs, 's', sizeof longs - 1);
  longs[sizeof longs - 1] = '\0';
  const struct {
    const char *what;
    int code;
    const char *needle;
  } cases[] = {
      {"round0", FL_ERANGE, "round_start: round 0"},
      {"lrneg", FL_ERANGE, "learning rate -0.1 is negative"},
      {"lrnan", FL_ENONFINITE, "learning rate not finite"},
      {"epochs0", FL_ERANGE, "local_epochs 0 outside [1, 1000]"},
      {"epochsbig", FL_ERANGE, "local_epochs 1001 outside"},
      {"batch0", FL_ERANGE, "batch_size 0 outside [1, 65536]"},
      {"batchbig", FL_ERANGE, "batch_size 65537"},
      {"noopt", FL_EFORMAT, "round_start: no optimizer"},
      {"optinf", FL_ENONFINITE, "optimizer eps is not finite"},
      {"optkind", FL_ERANGE, "unknown optimizer kind 9"},
      {"unit", FL_ERANGE, "unknown local_unit 2"},
      {"longsched", FL_ETOOBIG, "round_start: local_schedule is longer than 256 bytes"},
      {"noweights", FL_EFORMAT, "round_start: no weights"},
      {"weightnan", FL_ENONFINITE, "round_start: tensor 0 'layers.0.weight' value 3 is NaN"},
      {"weightinf", FL_ENONFINITE, "tensor 3 'layers.1.bias' value 0 is infinite"},
      {"proxnan", FL_ENONFINITE,
       "round_start: prox_mu (FedProx's mu) is NaN, not a number in [0, 10000]"},
      {"proxinf", FL_ENONFINITE, "round_start: prox_mu (FedProx's mu) is infinite"},
      {"proxneg", FL_ERANGE, "round_start: prox_mu (FedProx's mu) -0.5 outside [0, 10000]"},
      {"proxbig", FL_ERANGE, "round_start: prox_mu (FedProx's mu) 10000.5 outside [0, 10000]"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    make_round_start(&e, &r, &o, &tv);
    const char *w = cases[i].what;
    if (!strcmp(w, "round0")) r.round = 0;
    if (!strcmp(w, "lrneg")) r.lr = -0.1f;
    if (!strcmp(w, "lrnan")) r.lr = NAN;
    if (!strcmp(w, "epochs0")) r.local_epochs = 0;
    if (!strcmp(w, "epochsbig")) r.local_epochs = FL_WIRE_MAX_EPOCHS + 1;
    if (!strcmp(w, "batch0")) r.batch_size = 0;
    if (!strcmp(w, "batchbig")) r.batch_size = FL_WIRE_MAX_BATCH + 1;
    if (!strcmp(w, "noopt")) r.optimizer = NULL;
    if (!strcmp(w, "optinf")) o.eps = INFINITY;
    if (!strcmp(w, "optkind")) o.kind = (Fedlr__Optimizer__Kind)9;
    if (!strcmp(w, "unit")) r.local_unit = (Fedlr__RoundStart__LocalUnit)2;
    if (!strcmp(w, "longsched")) r.local_schedule = longs;
    if (!strcmp(w, "noweights")) r.n_weights = 0;
    if (!strcmp(w, "proxnan")) r.prox_mu = NAN;
    if (!strcmp(w, "proxinf")) r.prox_mu = INFINITY;
    if (!strcmp(w, "proxneg")) r.prox_mu = -0.5f;
    if (!strcmp(w, "proxbig")) r.prox_mu = 10000.5f;
    float keep[2] = {p[3], p[20 * 30 + 20 + 10 * 20]};
    if (!strcmp(w, "weightnan")) p[3] = NAN;
    if (!strcmp(w, "weightinf")) p[20 * 30 + 20 + 10 * 20] = -INFINITY;
    int rc = reencode(&e, &lim, &d);
    if (rc != cases[i].code)
      FL__FAIL("case %s: rc %d (%s), expected %d", w, rc, fl_err_msg(), cases[i].code);
    ASSERT_TRUE(d == NULL);
    ASSERT_CONTAINS(fl_err_msg(), cases[i].needle);
    /* The sender's check is the receiver's: same code, same detail. */
    ASSERT_EQ(fl_wire_check_round_start(&r, &lim), cases[i].code);
    ASSERT_CONTAINS(fl_err_msg(), cases[i].needle);
    p[3] = keep[0];
    p[20 * 30 + 20 + 10 * 20] = keep[1];
  }
  /* A zero rate is valid: schedules reach end=0 / min=0 after T rounds. */
  make_round_start(&e, &r, &o, &tv);
  r.lr = 0;
  ASSERT_EQ(reencode(&e, &lim, &d), 0);
  ASSERT_DBL_OP(d->round_start->lr, ==, 0.0f);
  fl_wire_free(&d);
  ASSERT_EQ(fl_wire_check_round_start(&r, &lim), 0);
  fl_wire_tensors_free(&tv);
  free(p);
}

TEST(join_rejections) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  Fedlr__Envelope e = FEDLR__ENVELOPE__INIT, *d = NULL;
  Fedlr__Join j = FEDLR__JOIN__INIT;
  e.body_case = FEDLR__ENVELOPE__BODY_JOIN;
  e.join = &j;
  j.name = "alice";
  j.num_examples = 10;
  /* Versions are the coordinator's to negotiate (it answers with a Stop
   * that lists its own): any decodes. */
  j.protocol_version = 99;
  ASSERT_EQ(reencode(&e, &lim, &d), 0);
  fl_wire_free(&d);
  j.protocol_version = FL_WIRE_PROTOCOL_VERSION;
  j.num_eval_examples = FL_WIRE_MAX_EXAMPLES + 1;
  ASSERT_EQ(reencode(&e, &lim, &d), FL_ERANGE);
  ASSERT_CONTAINS(fl_err_msg(), "evaluation examples");
  j.num_eval_examples = 0;

  char name[FL_WIRE_MAX_STRING + 2];
  memset(name, 'n', sizeof name - 1);
  name[sizeof name - 1] = '\0';
  j.name = name;
  ASSERT_EQ(reencode(&e, &lim, &d), FL_ETOOBIG);
  ASSERT_CONTAINS(fl_err_msg(), "join: name is longer than 256 bytes");
  name[FL_WIRE_MAX_NAME + 1] = '\0';
  ASSERT_EQ(reencode(&e, &lim, &d), FL_ETOOBIG);
  ASSERT_CONTAINS(fl_err_msg(), "longer than 64 bytes");
  name[FL_WIRE_MAX_NAME] = '\0'; /* exactly at the limit: fine */
  ASSERT_EQ(reencode(&e, &lim, &d), 0);
  fl_wire_free(&d);

  j.name = "";
  ASSERT_EQ(reencode(&e, &lim, &d), FL_EFORMAT);
  ASSERT_CONTAINS(fl_err_msg(), "the client name is empty");
  j.name = "evil\n[INFO] forged";
  ASSERT_EQ(reencode(&e, &lim, &d), FL_EFORMAT);
  ASSERT_CONTAINS(fl_err_msg(), "has a control character at byte 4");
  /* The name in the message is escaped: no raw newline reaches a log. */
  ASSERT_CONTAINS(fl_err_msg(), "evil\\x0a[INFO] forged");
  ASSERT_TRUE(strchr(fl_err_msg(), '\n') == NULL);
  ASSERT_TRUE(d == NULL);
  /* The declared example count: 1 .. FL_WIRE_MAX_EXAMPLES. */
  j.name = "alice";
  j.num_examples = 0;
  ASSERT_EQ(reencode(&e, &lim, &d), FL_ERANGE);
  j.num_examples = FL_WIRE_MAX_EXAMPLES + 1;
  ASSERT_EQ(reencode(&e, &lim, &d), FL_ERANGE);
  ASSERT_CONTAINS(fl_err_msg(), "a client declares 1 to 4294967296");
  j.num_examples = FL_WIRE_MAX_EXAMPLES;
  ASSERT_EQ(reencode(&e, &lim, &d), 0);
  fl_wire_free(&d);
  j.num_examples = 10;
  /* UTF-8: text is fine, broken or control sequences are not. */
  const char *good[] = {"caf\xc3\xa9", "\xe6\x9d\xb1\xe4\xba\xac-7", "\xf0\x9f\x8d\x95 lab",
                        "a b.c_d-e"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    j.name = (char *)good[i];
    ASSERT_EQ(reencode(&e, &lim, &d), 0);
    fl_wire_free(&d);
  }
  const struct {
    const char *name, *why;
  } bad[] = {{"caf\xe9", "not valid UTF-8"},                /* Latin-1 */
             {"\xc0\xaf", "not valid UTF-8"},               /* overlong '/' */
             {"\xed\xa0\x80", "not valid UTF-8"},           /* a surrogate */
             {"\xf4\x90\x80\x80", "not valid UTF-8"},       /* beyond U+10FFFF */
             {"ab\xe2\x82", "not valid UTF-8"},             /* truncated */
             {"x\xc2\x85y", "control character at byte 1"}, /* C1: NEL */
             {"x\x7f", "control character"},                /* DEL */
             {"a\xe2\x80\xa8"
              "b",
              "line separator"}, /* U+2028 */
             {"\xe2\x80\xae"
              "evil",
              "bidirectional override"}}; /* U+202E */
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    j.name = (char *)bad[i].name;
    ASSERT_EQ(reencode(&e, &lim, &d), FL_EFORMAT);
    ASSERT_CONTAINS(fl_err_msg(), bad[i].why);
    for (const char *q = fl_err_msg(); *q; q++)
      ASSERT_TRUE((unsigned char)*q >= 0x20 && (unsigned char)*q < 0x7f);
  }
}

/* The first tag tells what an undecodable message meant to be. */
TEST(peek_kind) {
  Fedlr__Envelope e = FEDLR__ENVELOPE__INIT;
  Fedlr__Join j = FEDLR__JOIN__INIT;
  j.name = "x";
  j.protocol_version = 99;
  e.body_case = FEDLR__ENVELOPE__BODY_JOIN;
  e.join = &j;
  uint8_t *buf;
  size_t len;
  ASSERT_EQ(fl_wire_encode(&e, &buf, &len), 0);
  ASSERT_EQ(fl_wire_peek_kind(buf, len), FEDLR__ENVELOPE__BODY_JOIN);
  ASSERT_EQ(fl_wire_peek_kind(buf, 1), FEDLR__ENVELOPE__BODY_JOIN);
  free(buf);
  Fedlr__Heartbeat hb = FEDLR__HEARTBEAT__INIT;
  e.body_case = FEDLR__ENVELOPE__BODY_HEARTBEAT;
  e.heartbeat = &hb;
  ASSERT_EQ(fl_wire_encode(&e, &buf, &len), 0);
  ASSERT_EQ(fl_wire_peek_kind(buf, len), FEDLR__ENVELOPE__BODY_HEARTBEAT);
  free(buf);
  const uint8_t junk[][3] = {{0x08, 0x01, 0}, {0x4a, 0x00, 0}, {0xff, 0xff, 0xff}};
  for (size_t i = 0; i < 3; i++)
    ASSERT_EQ(fl_wire_peek_kind(junk[i], 3), FEDLR__ENVELOPE__BODY__NOT_SET);
  ASSERT_EQ(fl_wire_peek_kind(junk[0], 0), FEDLR__ENVELOPE__BODY__NOT_SET);
  char esc[32];
  ASSERT_STR_EQ(fl_wire_escape("a\\b\x01\xff", 5, 5, esc, sizeof esc), "a\\\\b\\x01\\xff");
  ASSERT_STR_EQ(fl_wire_escape("abcdef", 6, 3, esc, sizeof esc), "abc...");
}

/* Appends a protobuf varint. */
static size_t put_varint(uint8_t *b, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    b[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  b[n++] = (uint8_t)v;
  return n;
}

TEST(hostile_lengths_rejected_cheaply) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  Fedlr__Envelope *d = NULL;
  uint8_t b[64];
  size_t n;

  /* Envelope.update (field 4, LEN) claiming 2^62 bytes. */
  n = 0;
  b[n++] = 0x22;
  n += put_varint(b + n, (uint64_t)1 << 62);
  b[n++] = 0x08;
  b[n++] = 0x01;
  ASSERT_EQ(fl_wire_decode(b, n, &lim, &d), FL_EFORMAT);
  ASSERT_CONTAINS(fl_err_msg(), "undecodable message");

  /* A ten-byte varint with the overflow bit set (invalid varint). */
  n = 0;
  b[n++] = 0x22;
  for (int i = 0; i < 10; i++)
    b[n++] = 0xff;
  b[n++] = 0x01;
  ASSERT_EQ(fl_wire_decode(b, n, &lim, &d), FL_EFORMAT);

  /* Update > weights > data (packed float) claiming 2^31 - 4 bytes inside a
   * correctly sized outer frame: the inner length must be checked against
   * what is left, not trusted for the allocation. */
  uint8_t t[32], u[48];
  size_t tn = 0, un = 0;
  t[tn++] = 0x0a; /* name */
  t[tn++] = 1;
  t[tn++] = 'w';
  t[tn++] = 0x1a; /* data, LEN */
  tn += put_varint(t + tn, 0x7ffffffcu);
  t[tn++] = 0;
  t[tn++] = 0;
  t[tn++] = 0;
  t[tn++] = 0;
  u[un++] = 0x08; /* round 1 */
  u[un++] = 1;
  u[un++] = 0x2a; /* weights */
  u[un++] = (uint8_t)tn;
  memcpy(u + un, t, tn);
  un += tn;
  n = 0;
  b[n++] = 0x22;
  b[n++] = (uint8_t)un;
  memcpy(b + n, u, un);
  n += un;
  ASSERT_EQ(fl_wire_decode(b, n, &lim, &d), FL_EFORMAT);
  ASSERT_TRUE(d == NULL);
}

/* Amplification: 2-byte empty Tensor entries each make protobuf-c allocate a
 * whole Fedlr__Tensor (~70 bytes). Without the capped allocator this message
 * would decode (into ~35x its size) and only then fail the tensor count; with
 * it, unpacking stops at the cap. */
TEST(allocation_cap_stops_amplification) {
  fl_wire_limits_t lim = {.max_message = 400000, .max_tensors = 6, .max_values = 1000};
  size_t count = 190000, inner = 2 * count + 4;
  uint8_t *b = malloc(inner + 16);
  size_t n = 0;
  b[n++] = 0x22;
  n += put_varint(b + n, inner);
  b[n++] = 0x08; /* round 1 */
  b[n++] = 1;
  b[n++] = 0x18; /* num_examples 1 */
  b[n++] = 1;
  for (size_t i = 0; i < count; i++) {
    b[n++] = 0x2a;
    b[n++] = 0;
  }
  ASSERT_LE(n, lim.max_message);
  Fedlr__Envelope *d = NULL;
  ASSERT_EQ(fl_wire_decode(b, n, &lim, &d), FL_EFORMAT);
  ASSERT_CONTAINS(fl_err_msg(), "undecodable message");
  ASSERT_TRUE(d == NULL);

  /* The same shape with few entries decodes, then fails validation. */
  count = 10;
  inner = 2 * count + 4;
  n = 0;
  b[n++] = 0x22;
  n += put_varint(b + n, inner);
  b[n++] = 0x08;
  b[n++] = 1;
  b[n++] = 0x18;
  b[n++] = 1;
  for (size_t i = 0; i < count; i++) {
    b[n++] = 0x2a;
    b[n++] = 0;
  }
  ASSERT_EQ(fl_wire_decode(b, n, &lim, &d), FL_ETOOBIG);
  ASSERT_CONTAINS(fl_err_msg(), "update: 10 tensors, limit is 6");
  free(b);
}

TEST(check_tensors_against_model) {
  fl_model_spec_t m, other;
  ASSERT_EQ(make_model(&m), 0);
  float *p = make_params(&m, 9);
  fl_wire_tensors_t tv;
  fl_wire_tensors_init(&tv, &m, p);
  ASSERT_EQ(fl_wire_check_tensors(tv.ptrs, tv.n, &m), 0);

  ASSERT_EQ(fl_wire_check_tensors(tv.ptrs, tv.n - 1, &m), FL_ESHAPE);
  ASSERT_CONTAINS(fl_err_msg(), "expected 6 tensors for model 'mlp:20,10', got 5");

  tv.t[3].name = "layers.1.bais";
  ASSERT_EQ(fl_wire_check_tensors(tv.ptrs, tv.n, &m), FL_ESHAPE);
  ASSERT_CONTAINS(fl_err_msg(), "tensor 3: expected 'layers.1.bias', got 'layers.1.bais'");
  tv.t[3].name = tv.info[3].name;

  /* Swapped order. */
  Fedlr__Tensor *sw[6];
  memcpy(sw, tv.ptrs, sizeof sw);
  sw[0] = tv.ptrs[1];
  sw[1] = tv.ptrs[0];
  ASSERT_EQ(fl_wire_check_tensors(sw, 6, &m), FL_ESHAPE);
  ASSERT_CONTAINS(fl_err_msg(), "tensor 0: expected 'layers.0.weight', got 'layers.0.bias'");

  /* Same count, transposed shape. */
  tv.info[2].shape[0] = 20;
  tv.info[2].shape[1] = 10;
  ASSERT_EQ(fl_wire_check_tensors(tv.ptrs, tv.n, &m), FL_ESHAPE);
  ASSERT_CONTAINS(fl_err_msg(), "expected 'layers.1.weight' [10,20], got [20,10]");

  /* A different model with the same tensor names. */
  ASSERT_EQ(fl_model_parse("mlp:20,11", 30, 5, &other), 0);
  fl_wire_tensors_free(&tv);
  fl_wire_tensors_init(&tv, &m, p);
  ASSERT_EQ(fl_wire_check_tensors(tv.ptrs, tv.n, &other), FL_ESHAPE);
  ASSERT_CONTAINS(fl_err_msg(), "expected 'layers.1.weight' [11,20], got [10,20]");
  fl_wire_tensors_free(&tv);
  free(p);
}

TEST(weights_are_packed_floats) {
  /* Large enough that framing is noise: the 2NN of the FedAvg paper. */
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("mlp:200,200", 784, 10, &m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  float *p = make_params(&m, 10);
  fl_wire_tensors_t tv;
  fl_wire_tensors_init(&tv, &m, p);
  Fedlr__Envelope e, *d = NULL;
  Fedlr__Update u;
  make_update(&e, &u, &tv);
  uint8_t *enc = NULL;
  size_t len = 0;
  ASSERT_EQ(fl_wire_encode(&e, &enc, &len), 0);
  double want = 4.0 * (double)m.num_params;
  ASSERT_LE(fabs((double)len - want), 0.01 * want + 200);
  ASSERT_LE(len, lim.max_message);
  ASSERT_EQ(fl_wire_decode(enc, len, &lim, &d), 0);
  ASSERT_EQ(fl_wire_check_tensors(d->update->weights, d->update->n_weights, &m), 0);
  fl_wire_free(&d);
  free(enc);
  fl_wire_tensors_free(&tv);
  free(p);
}

/* Found by fuzz_wire: field number 0 written as an over-long tag (0x85 0x00)
 * is kept by protobuf-c as an unknown field; it is not valid protobuf and
 * would re-encode to bytes protobuf-c rejects, so the codec refuses it. */
TEST(field_number_zero_rejected) {
  const uint8_t bytes[] = {0x2a, 0x00, 0x85, 0x00, 0x2a, 0x00, 0x2a, 0x00, 0x2a, 0x00};
  fl_wire_limits_t lim = {1 << 16, 16, 1024, 0};
  Fedlr__Envelope *d = NULL;
  ASSERT_EQ(fl_wire_decode(bytes, sizeof bytes, &lim, &d), FL_EFORMAT);
  ASSERT_CONTAINS(fl_err_msg(), "field number 0");
  ASSERT_TRUE(d == NULL);
}

FL_TEST_MAIN()

/* Version negotiation: the highest version both sides speak. */
TEST(negotiate_versions) {
  uint32_t v = 0;
  ASSERT_EQ(fl_wire_negotiate(1, 0, &v), 0); /* a version-1 client (no min field) */
  ASSERT_EQ(v, 1);
  ASSERT_EQ(fl_wire_negotiate(2, 0, &v), 0);
  ASSERT_EQ(v, 2);
  ASSERT_EQ(fl_wire_negotiate(5, 1, &v), 0); /* a newer client that still speaks 1..5 */
  ASSERT_EQ(v, FL_WIRE_PROTOCOL_VERSION);
  ASSERT_EQ(fl_wire_negotiate(2, 1, &v), 0);
  ASSERT_EQ(v, 2);
  ASSERT_EQ(fl_wire_negotiate(3, 0, &v), 0); /* version 3: RoundStart.prox_mu */
  ASSERT_EQ(v, 3);
  ASSERT_EQ(fl_wire_negotiate(9, 3, &v), 0);
  ASSERT_EQ(v, 4);
  ASSERT_EQ(fl_wire_negotiate(4, 0, &v), 0); /* version 4: Welcome.input_shape */
  ASSERT_EQ(v, 4);
  v = 77;
  ASSERT_EQ(fl_wire_negotiate(7, 0, &v), FL_EUNSUPPORTED);
  ASSERT_CONTAINS(fl_err_msg(), "protocol version 7 is not supported: this coordinator speaks "
                                "versions 1 to 4");
  ASSERT_EQ(v, 77);
  ASSERT_EQ(fl_wire_negotiate(9, 5, &v), FL_EUNSUPPORTED);
  ASSERT_CONTAINS(fl_err_msg(), "protocol versions 5 to 9 are not supported");
  ASSERT_EQ(fl_wire_negotiate(0, 0, &v), FL_EUNSUPPORTED); /* no version at all */
  /* A FedProx run admits version 3 and later only; any other run, all. */
  ASSERT_EQ(fl_wire_min_run_version(0.0f, NULL), FL_WIRE_MIN_PROTOCOL_VERSION);
  ASSERT_EQ(fl_wire_min_run_version(0.01f, NULL), 3);
  ASSERT_EQ(fl_wire_min_run_version((float)1e-50, NULL),
            FL_WIRE_MIN_PROTOCOL_VERSION); /* sent as 0 */
  ASSERT_EQ(fl_wire_check_run_version(1, 1, 0, NULL), 0);
  ASSERT_EQ(fl_wire_check_run_version(3, 3, 0.01, NULL), 0);
  ASSERT_EQ(fl_wire_check_run_version(2, 2, 0.01, NULL), FL_EUNSUPPORTED);
  ASSERT_CONTAINS(fl_err_msg(), "this run uses FedProx (--prox-mu 0.01): clients must speak "
                                "protocol version 3 or later; this client speaks up to 2");
  /* A CNN on an image an older client would not infer: version 4 on; on
   * the square one-channel image it would infer, any version. */
  fl_model_spec_t rgb, sq, mlp;
  const fl_shape_t s3 = {3, 8, 8}, s1 = {1, 8, 8};
  ASSERT_EQ(fl_model_parse_shape("cnn:conv3x3x2,fc4", 192, &s3, 4, &rgb), 0);
  ASSERT_EQ(fl_model_parse_shape("cnn:conv3x3x2,fc4", 64, &s1, 4, &sq), 0);
  ASSERT_EQ(fl_model_parse_shape("mlp:4", 192, &s3, 4, &mlp), 0);
  ASSERT_EQ(fl_wire_min_run_version(0.0f, &rgb), FL_WIRE_SHAPE_VERSION);
  ASSERT_EQ(fl_wire_min_run_version(0.01f, &rgb), FL_WIRE_SHAPE_VERSION);
  ASSERT_EQ(fl_wire_min_run_version(0.0f, &sq), FL_WIRE_MIN_PROTOCOL_VERSION);
  ASSERT_EQ(fl_wire_min_run_version(0.01f, &mlp), 3);
  ASSERT_EQ(fl_wire_check_run_version(4, 4, 0, &rgb), 0);
  ASSERT_EQ(fl_wire_check_run_version(1, 1, 0, &sq), 0);
  ASSERT_EQ(fl_wire_check_run_version(3, 3, 0.01, &rgb), FL_EUNSUPPORTED);
  ASSERT_CONTAINS(fl_err_msg(), "this run's CNN takes 3x8x8 images");
  ASSERT_CONTAINS(fl_err_msg(), "clients must speak protocol version 4 or later; this client "
                                "speaks up to 3");
  ASSERT_EQ(fl_wire_check_run_version(1, 1, 5, NULL), FL_EUNSUPPORTED);
  ASSERT_CONTAINS(fl_err_msg(), "(--prox-mu 5)");
  ASSERT_CONTAINS(fl_err_msg(), "speaks up to 1");
  ASSERT_EQ(fl_wire_negotiate(1, 2, &v), FL_EFORMAT); /* min above max */
  ASSERT_CONTAINS(fl_err_msg(), "min_protocol_version 2 is above protocol_version 1");
}

/* Protocol version 2's messages round-trip, and each field is checked. */
TEST(evaluation_messages) {
  fl_model_spec_t m;
  ASSERT_EQ(make_model(&m), 0);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  float *p = make_params(&m, 3);
  fl_wire_tensors_t tv;
  ASSERT_EQ(fl_wire_tensors_init(&tv, &m, p), 0);
  Fedlr__Envelope e = FEDLR__ENVELOPE__INIT, *d = NULL;

  Fedlr__Evaluate ev = FEDLR__EVALUATE__INIT;
  ev.round = 3;
  ev.model = m.spec;
  ev.n_weights = tv.n;
  ev.weights = tv.ptrs;
  e.body_case = FEDLR__ENVELOPE__BODY_EVALUATE;
  e.evaluate = &ev;
  ASSERT_EQ(reencode(&e, &lim, &d), 0);
  ASSERT_EQ(d->evaluate->round, 3);
  ASSERT_EQ(fl_wire_check_tensors(d->evaluate->weights, d->evaluate->n_weights, &m), 0);
  ASSERT_EQ(memcmp(d->evaluate->weights[5]->data, p + tv.info[5].offset, 5 * sizeof(float)), 0);
  fl_wire_free(&d);
  ev.round = 0;
  ASSERT_EQ(reencode(&e, &lim, &d), FL_ERANGE);
  ev.round = 3;
  p[2] = NAN;
  ASSERT_EQ(reencode(&e, &lim, &d), FL_ENONFINITE);
  p[2] = 0;

  Fedlr__Metric acc = FEDLR__METRIC__INIT, other = FEDLR__METRIC__INIT;
  acc.name = "accuracy";
  acc.value = 0.5;
  other.name = "top-5.acc_x";
  other.value = -2;
  Fedlr__Metric *mets[FL_WIRE_MAX_METRICS + 1];
  mets[0] = &acc;
  mets[1] = &other;
  Fedlr__EvalResult r = FEDLR__EVAL_RESULT__INIT;
  r.round = 3;
  r.client_id = 1;
  r.num_examples = 40;
  r.loss = 0.25;
  r.n_metrics = 2;
  r.metrics = mets;
  e.body_case = FEDLR__ENVELOPE__BODY_EVAL_RESULT;
  e.eval_result = &r;
  ASSERT_EQ(reencode(&e, &lim, &d), 0);
  ASSERT_EQ(d->eval_result->n_metrics, 2);
  ASSERT_STR_EQ(d->eval_result->metrics[1]->name, "top-5.acc_x");
  ASSERT_NEAR(d->eval_result->loss, 0.25, 0);
  fl_wire_free(&d);
  r.num_examples = 0;
  ASSERT_EQ(reencode(&e, &lim, &d), FL_ERANGE);
  r.num_examples = 40;
  r.loss = INFINITY;
  ASSERT_EQ(reencode(&e, &lim, &d), FL_ENONFINITE);
  r.loss = 0.25;
  other.value = NAN;
  ASSERT_EQ(reencode(&e, &lim, &d), FL_ENONFINITE);
  ASSERT_CONTAINS(fl_err_msg(), "metric 'top-5.acc_x' is not finite");
  other.value = 1;
  other.name = "accuracy";
  ASSERT_EQ(reencode(&e, &lim, &d), FL_EFORMAT);
  ASSERT_CONTAINS(fl_err_msg(), "metric 'accuracy' appears twice");
  other.name = "bad name";
  ASSERT_EQ(reencode(&e, &lim, &d), FL_EFORMAT);
  ASSERT_CONTAINS(fl_err_msg(), "metric name 'bad name' has ' ' at byte 3");
  other.name = "";
  ASSERT_EQ(reencode(&e, &lim, &d), FL_EFORMAT);
  other.name = "a23456789012345678901234567890123"; /* 33 bytes */
  ASSERT_EQ(reencode(&e, &lim, &d), FL_ETOOBIG);
  other.name = "ok";
  for (size_t i = 0; i <= FL_WIRE_MAX_METRICS; i++)
    mets[i] = i ? &other : &acc;
  r.n_metrics = FL_WIRE_MAX_METRICS + 1;
  ASSERT_EQ(reencode(&e, &lim, &d), FL_ETOOBIG);

  /* A Welcome's layout: names and shapes, no values. */
  Fedlr__Welcome w = FEDLR__WELCOME__INIT;
  w.run_id = "r";
  w.model = m.spec;
  w.protocol_version = 2;
  fl_wire_tensors_point(&tv, NULL);
  w.n_layout = tv.n;
  w.layout = tv.ptrs;
  e.body_case = FEDLR__ENVELOPE__BODY_WELCOME;
  e.welcome = &w;
  ASSERT_EQ(reencode(&e, &lim, &d), 0);
  ASSERT_EQ(d->welcome->n_layout, 6);
  ASSERT_EQ(d->welcome->protocol_version, 2);
  ASSERT_EQ(d->welcome->layout[2]->n_shape, 2);
  ASSERT_EQ(d->welcome->layout[2]->shape[1], 20);
  fl_wire_free(&d);
  fl_wire_tensors_point(&tv, p);
  ASSERT_EQ(reencode(&e, &lim, &d), FL_EFORMAT); /* values in a layout */
  ASSERT_CONTAINS(fl_err_msg(), "carries 600 values");

  /* A Stop that lists versions. */
  uint32_t vs[FL_WIRE_MAX_VERSIONS + 1] = {1, 2};
  Fedlr__Stop st = FEDLR__STOP__INIT;
  st.reason = "no";
  st.error = 1;
  st.n_supported_versions = 2;
  st.supported_versions = vs;
  e.body_case = FEDLR__ENVELOPE__BODY_STOP;
  e.stop = &st;
  ASSERT_EQ(reencode(&e, &lim, &d), 0);
  ASSERT_EQ(d->stop->n_supported_versions, 2);
  ASSERT_EQ(d->stop->supported_versions[1], 2);
  fl_wire_free(&d);
  st.n_supported_versions = FL_WIRE_MAX_VERSIONS + 1;
  ASSERT_EQ(reencode(&e, &lim, &d), FL_ETOOBIG);
  fl_wire_tensors_free(&tv);
  free(p);
}
