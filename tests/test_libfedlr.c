/* Tests for libfedlr's public API (include/fedlr.h) that need no
 * coordinator: versions, error strings, schedules (equal to fl_sched, the
 * code of the coordinator and the built-in trainer, for every kind), tensor
 * lists and layout checks, safetensors export, metrics, and what
 * fedlr_client_new() refuses. Linked with libfedlr.so (the public API) and
 * common/ (fl_sched, fl_safetensors) to hold the two side by side; the
 * library's own copy of common/ is hidden inside it. The session itself is
 * tested with real processes: tests/it_lib.sh. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fedlr.h"
#include "fl_clock.h"
#include "fl_safetensors.h"
#include "fl_sched.h"
#include "fl_test.h"

TEST(version_macros_match_the_library) {
  ASSERT_EQ(fedlr_version(), FEDLR_VERSION_HEX);
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", FEDLR_VERSION_MAJOR, FEDLR_VERSION_MINOR,
           FEDLR_VERSION_PATCH);
  ASSERT_STR_EQ(fedlr_version_string(), want);
  ASSERT_EQ(FEDLR_PROTOCOL_VERSION, 4);
  ASSERT_EQ(FEDLR_MIN_PROTOCOL_VERSION, 2);
}

TEST(error_strings) {
  ASSERT_STR_EQ(fedlr_strerror(FEDLR_OK), "success");
  ASSERT_CONTAINS(fedlr_strerror(FEDLR_EINVAL), "invalid");
  ASSERT_CONTAINS(fedlr_strerror(FEDLR_ESHAPE), "shape");
  ASSERT_STR_EQ(fedlr_strerror(FEDLR_REFUSED), "refused");
  ASSERT_CONTAINS(fedlr_strerror(FEDLR_GAVE_UP), "gave up");
  ASSERT_TRUE(fedlr_strerror(-999) != NULL);
  ASSERT_EQ(fedlr_set_error(FEDLR_ERANGE, "value %d out of range", 7), FEDLR_ERANGE);
  ASSERT_STR_EQ(fedlr_last_error(), "value 7 out of range");
}

/* Every kind, with warmup, staircase, restarts: the library's value is
 * fl_sched_lr's to the bit, at every t. */
static const char *const SPECS[] = {
    "",
    "const",
    "linear:T=50",
    "linear:T=50,end=0.001",
    "exp:gamma=0.95",
    "exp:gamma=0.5,every=7,staircase",
    "inv:T=10",
    "inv:T=10,p=0.5,staircase",
    "poly:T=80,power=2,end=0.01",
    "step:gamma=0.3,every=13",
    "piecewise:10=0.5,40=0.1,90=0.01",
    "cos:T=60",
    "cos:T=20,min=0.001,restart,mult=2",
    "warmup:5+cos:T=100",
    "warmup:8,start=0.2+step:gamma=0.5,every=20",
};

TEST(schedules_equal_fl_sched_for_every_kind) {
  const double lr0s[] = {0.1, 0.05, 1.0, (double)0.3f};
  for (size_t i = 0; i < sizeof SPECS / sizeof SPECS[0]; i++) {
    int err = 1;
    fedlr_schedule *s = fedlr_schedule_new(SPECS[i], &err);
    if (!s) FL__FAIL("'%s': %s", SPECS[i], fedlr_last_error());
    ASSERT_EQ(err, 0);
    fl_sched_t ref;
    ASSERT_EQ(fl_sched_parse_local(SPECS[i], &ref), 0);
    for (size_t k = 0; k < sizeof lr0s / sizeof lr0s[0]; k++)
      for (uint64_t t = 0; t < 300; t++) {
        double a = fedlr_schedule_lr(s, lr0s[k], t), b = fl_sched_lr(&ref, lr0s[k], t, NULL);
        if (memcmp(&a, &b, sizeof a) != 0)
          FL__FAIL("'%s' lr0 %g t %llu: %.17g vs fl_sched %.17g", SPECS[i], lr0s[k],
                   (unsigned long long)t, a, b);
      }
    fedlr_schedule_destroy(&s);
    ASSERT_TRUE(s == NULL);
  }
}

TEST(local_lr_is_the_round_schedule_at_the_round_rate) {
  fedlr_schedule *s = fedlr_schedule_new("exp:gamma=0.9", NULL);
  ASSERT_TRUE(s != NULL);
  fedlr_round r = {.round = 3, .lr = 0.07f, .local = s};
  fl_sched_t ref;
  ASSERT_EQ(fl_sched_parse_local("exp:gamma=0.9", &ref), 0);
  for (uint64_t t = 0; t < 50; t++)
    ASSERT_DBL_OP(fedlr_local_lr(&r, t), ==, fl_sched_lr(&ref, (double)0.07f, t, NULL));
  ASSERT_DBL_OP(fedlr_local_lr(&r, 0), ==, (double)0.07f); /* t = 0: the round's rate */
  ASSERT_FALSE(fedlr_round_cancelled(&r)); /* not a library round: never cancelled */
  fedlr_schedule_destroy(&s);
}

TEST(bad_schedules_are_refused_with_the_spec_named) {
  int err = 0;
  ASSERT_TRUE(fedlr_schedule_new("exp:gama=0.9", &err) == NULL);
  ASSERT_EQ(err, FEDLR_EINVAL);
  ASSERT_CONTAINS(fedlr_last_error(), "gama");
  ASSERT_TRUE(fedlr_schedule_new("plateau", &err) == NULL); /* a round schedule only */
  ASSERT_EQ(err, FEDLR_EINVAL);
  ASSERT_CONTAINS(fedlr_last_error(), "plateau");
  ASSERT_TRUE(fedlr_schedule_new("cos:T=0", &err) == NULL);
}

static fedlr_tensors *two_tensors(uint32_t out_dim) {
  fedlr_tensors *ts = fedlr_tensors_new();
  uint32_t w[2] = {out_dim, 3}, b[1] = {out_dim};
  if (!ts || fedlr_tensors_add(ts, "fc.weight", 2, w) || fedlr_tensors_add(ts, "fc.bias", 1, b))
    fedlr_tensors_destroy(&ts);
  return ts;
}

TEST(tensor_lists) {
  fedlr_tensors *ts = two_tensors(4);
  ASSERT_TRUE(ts != NULL);
  ASSERT_EQ(fedlr_tensors_count(ts), 2);
  ASSERT_EQ(fedlr_tensors_num_values(ts), 16);
  ASSERT_STR_EQ(fedlr_tensor_name(ts, 1), "fc.bias");
  ASSERT_EQ(fedlr_tensor_ndim(ts, 0), 2);
  ASSERT_EQ(fedlr_tensor_dim(ts, 0, 0), 4);
  ASSERT_EQ(fedlr_tensor_dim(ts, 0, 1), 3);
  ASSERT_EQ(fedlr_tensor_dim(ts, 0, 2), 0);
  ASSERT_EQ(fedlr_tensor_size(ts, 0), 12);
  ASSERT_EQ(fedlr_tensors_find(ts, "fc.bias"), 1);
  ASSERT_EQ(fedlr_tensors_find(ts, "nope"), FEDLR_ENOENT);
  ASSERT_TRUE(fedlr_tensor_name(ts, 2) == NULL);
  ASSERT_TRUE(fedlr_tensor_data(ts, 2) == NULL);
  /* Back to back in one buffer, zero-filled. */
  ASSERT_TRUE(fedlr_tensor_data(ts, 1) == fedlr_tensors_values(ts) + 12);
  for (size_t i = 0; i < 16; i++)
    ASSERT_DBL_OP(fedlr_tensors_values(ts)[i], ==, 0.0);
  fedlr_tensor_data_mut(ts, 1)[3] = 2.5f;
  ASSERT_DBL_OP(fedlr_tensors_values(ts)[15], ==, 2.5);
  /* A scalar: 0 dimensions, 1 value. */
  ASSERT_EQ(fedlr_tensors_add(ts, "scale", 0, NULL), 0);
  ASSERT_EQ(fedlr_tensor_size(ts, 2), 1);
  ASSERT_DBL_OP(fedlr_tensors_values(ts)[15], ==, 2.5); /* kept across the growth */
  fedlr_tensors_destroy(&ts);
  ASSERT_TRUE(ts == NULL);
  fedlr_tensors_destroy(&ts); /* NULL-safe */
}

TEST(bad_tensors_are_refused_and_leave_the_list_as_it_was) {
  fedlr_tensors *ts = two_tensors(2);
  uint32_t ok[1] = {2}, zero[1] = {0}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  ASSERT_EQ(fedlr_tensors_add(ts, "fc.bias", 1, ok), FEDLR_EINVAL); /* repeated */
  ASSERT_CONTAINS(fedlr_last_error(), "fc.bias");
  ASSERT_EQ(fedlr_tensors_add(ts, "has space", 1, ok), FEDLR_EINVAL);
  ASSERT_EQ(fedlr_tensors_add(ts, "", 1, ok), FEDLR_EINVAL);
  ASSERT_EQ(fedlr_tensors_add(ts, "z", 1, zero), FEDLR_EINVAL);
  ASSERT_EQ(fedlr_tensors_add(ts, "nine", 9, nine), FEDLR_EINVAL);
  ASSERT_EQ(fedlr_tensors_add(ts, "null", 1, NULL), FEDLR_EINVAL);
  ASSERT_EQ(fedlr_tensors_count(ts), 2);
  ASSERT_EQ(fedlr_tensors_num_values(ts), 8);
  fedlr_tensors_destroy(&ts);
}

TEST(layout_check_names_the_first_difference) {
  fedlr_tensors *a = two_tensors(4), *b = two_tensors(4), *c = two_tensors(5);
  ASSERT_EQ(fedlr_tensors_check_layout(a, b), 0);
  ASSERT_EQ(fedlr_tensors_check_layout(a, c), FEDLR_ESHAPE);
  ASSERT_CONTAINS(fedlr_last_error(),
                  "tensor 0: expected 'fc.weight' [4,3], got 'fc.weight' [5,3]");
  uint32_t one[1] = {1};
  ASSERT_EQ(fedlr_tensors_add(b, "extra", 1, one), 0);
  ASSERT_EQ(fedlr_tensors_check_layout(a, b), FEDLR_ESHAPE);
  ASSERT_CONTAINS(fedlr_last_error(), "tensor 2: expected none, got 'extra'");
  ASSERT_EQ(fedlr_tensors_check_layout(b, a), FEDLR_ESHAPE);
  ASSERT_CONTAINS(fedlr_last_error(), "tensor 2: expected 'extra', got none");
  fedlr_tensors_destroy(&a);
  fedlr_tensors_destroy(&b);
  fedlr_tensors_destroy(&c);
}

TEST(save_writes_a_safetensors_file_fedlr_reads_back) {
  fedlr_tensors *ts = two_tensors(4);
  float *v = fedlr_tensors_values_mut(ts);
  for (size_t i = 0; i < 16; i++)
    v[i] = 0.25f * (float)i - 1.0f;
  char path[600];
  snprintf(path, sizeof path, "%s/init.safetensors", fl_test_tmpdir());
  ASSERT_EQ(fedlr_tensors_save(ts, path), 0);
  /* Read back by fedlr's own reader, as a model of exactly these tensors. */
  fl_layout_t *l = fl_layout_new();
  uint32_t w[2] = {4, 3}, b[1] = {4};
  ASSERT_EQ(fl_layout_add(l, "fc.weight", 2, w), 0);
  ASSERT_EQ(fl_layout_add(l, "fc.bias", 1, b), 0);
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_custom(l, &m), 0);
  float back[16];
  ASSERT_EQ(fl_safetensors_load_all(path, &m, back, FL_SAFETENSORS_NEED_CHECKSUM, NULL), 0);
  ASSERT_EQ(memcmp(back, v, sizeof back), 0);
  fl_layout_destroy(&l);
  fedlr_tensors *empty = fedlr_tensors_new();
  ASSERT_EQ(fedlr_tensors_save(empty, path), FEDLR_EINVAL);
  fedlr_tensors_destroy(&empty);
  fedlr_tensors_destroy(&ts);
  unlink(path);
}

TEST(metrics) {
  fedlr_eval_result r;
  memset(&r, 0, sizeof r);
  ASSERT_EQ(fedlr_eval_add_metric(&r, "accuracy", 0.5), 0);
  ASSERT_EQ(fedlr_eval_add_metric(&r, "accuracy", 0.6), FEDLR_EINVAL); /* unique */
  ASSERT_EQ(fedlr_eval_add_metric(&r, "top 5", 0.6), FEDLR_EFORMAT);
  ASSERT_EQ(fedlr_eval_add_metric(&r, "f1", NAN), FEDLR_ENONFINITE);
  ASSERT_EQ(fedlr_eval_add_metric(&r, "x123456789012345678901234567890123", 1), FEDLR_ETOOBIG);
  for (int i = 1; i < FEDLR_MAX_METRICS; i++) {
    char name[16];
    snprintf(name, sizeof name, "m%d", i);
    ASSERT_EQ(fedlr_eval_add_metric(&r, name, i), 0);
  }
  ASSERT_EQ(fedlr_eval_add_metric(&r, "one_too_many", 1), FEDLR_ETOOBIG);
  ASSERT_EQ(r.num_metrics, FEDLR_MAX_METRICS);
  ASSERT_STR_EQ(r.metrics[0].name, "accuracy");
}

static int no_train(void *u, const fedlr_round *r, const fedlr_tensors *g, fedlr_tensors *o,
                    fedlr_train_result *res) {
  return 0;
}

static int no_eval(void *u, uint32_t round, const fedlr_tensors *w, fedlr_eval_result *res) {
  return 0;
}

/* fedlr_client_new() with one field of a good config changed. */
#define REFUSED(field_change, code, text)                                                          \
  do {                                                                                             \
    fedlr_config c = good;                                                                         \
    field_change;                                                                                  \
    int err = 0;                                                                                   \
    fedlr_client *cl = fedlr_client_new(&c, &err);                                                 \
    if (cl) FL__FAIL("%s: accepted", #field_change);                                               \
    ASSERT_EQ(err, code);                                                                          \
    ASSERT_CONTAINS(fedlr_last_error(), text);                                                     \
  } while (0)

TEST(client_new_refuses_bad_configs) {
  fedlr_config good;
  fedlr_config_init(&good);
  ASSERT_DBL_OP(good.give_up, ==, 300);
  ASSERT_EQ(good.log_level, FEDLR_LOG_ROUND);
  good.endpoint = "tcp://127.0.0.1:1";
  good.name = "unit";
  good.num_examples = 10;
  good.train = no_train;
  REFUSED(c.train = NULL, FEDLR_EINVAL, "no train callback");
  REFUSED(c.name = NULL, FEDLR_EINVAL, "name");
  REFUSED(c.name = "bad\x01name", FEDLR_EINVAL, "name");
  REFUSED(c.num_examples = 0, FEDLR_EINVAL, "num_examples 0");
  REFUSED(c.num_examples = (1ULL << 32) + 1, FEDLR_EINVAL, "num_examples");
  REFUSED(c.num_eval_examples = 5, FEDLR_EINVAL, "without an evaluate callback");
  REFUSED(c.give_up = -1, FEDLR_EINVAL, "give_up");
  REFUSED(c.give_up = INFINITY, FEDLR_EINVAL, "give_up");
  REFUSED(c.curve_public = "short", FEDLR_EINVAL, "key pair");
  REFUSED((c.curve_public = "short", c.curve_secret = "short"), FEDLR_EINVAL, "Z85");
  REFUSED(c.curve_secret_file = "/nonexistent/k.key_secret", FEDLR_ENOENT, "/nonexistent");
  REFUSED(c.endpoint = "nonsense://x", FEDLR_EINVAL, "nonsense://x");
  fedlr_tensors *empty = fedlr_tensors_new();
  REFUSED(c.layout = empty, FEDLR_EINVAL, "layout");
  fedlr_tensors_destroy(&empty);
  /* And a good one, with evaluation. */
  fedlr_config c = good;
  c.num_eval_examples = 5;
  c.evaluate = no_eval;
  int err = 1;
  fedlr_client *cl = fedlr_client_new(&c, &err);
  ASSERT_TRUE(cl != NULL);
  ASSERT_EQ(err, 0);
  fedlr_client_destroy(&cl);
  ASSERT_TRUE(cl == NULL);
}

/* A client of nothing (no coordinator listens on port 1): it would rejoin
 * until it gives up after give_up s (0: never). */
static fedlr_client *lonely_client(double give_up) {
  fedlr_config c;
  fedlr_config_init(&c);
  c.endpoint = "tcp://127.0.0.1:1";
  c.name = "unit";
  c.num_examples = 10;
  c.train = no_train;
  c.give_up = give_up;
  c.log_level = -1;
  return fedlr_client_new(&c, NULL);
}

TEST(a_stop_before_run_ends_it_at_once_and_a_client_runs_once) {
  fedlr_client *cl = lonely_client(0);
  ASSERT_TRUE(cl != NULL);
  fedlr_client_stop(cl);
  ASSERT_EQ(fedlr_client_run(cl), FEDLR_STOPPED);
  ASSERT_EQ(fedlr_client_run(cl), FEDLR_ESTATE);
  ASSERT_CONTAINS(fedlr_last_error(), "once");
  ASSERT_EQ(fedlr_client_id(cl), 0);
  fedlr_client_destroy(&cl);
}

static void *stop_later(void *cl) {
  usleep(300 * 1000);
  fedlr_client_stop(cl);
  return NULL;
}

TEST(a_stop_from_another_thread_ends_a_running_session) {
  fedlr_client *cl = lonely_client(0);
  ASSERT_TRUE(cl != NULL);
  pthread_t t;
  ASSERT_EQ(pthread_create(&t, NULL, stop_later, cl), 0);
  double t0 = fl_clock_now();
  int rc = fedlr_client_run(cl);
  double dt = fl_clock_now() - t0;
  pthread_join(t, NULL);
  ASSERT_EQ(rc, FEDLR_STOPPED);
  ASSERT_DBL_OP(dt, >=, 0.25);
  ASSERT_DBL_OP(dt, <, 2.0);
  fedlr_client_destroy(&cl);
}

TEST(give_up_without_a_coordinator) {
  fedlr_client *cl = lonely_client(0.5);
  ASSERT_TRUE(cl != NULL);
  ASSERT_EQ(fedlr_client_run(cl), FEDLR_GAVE_UP);
  ASSERT_CONTAINS(fedlr_last_error(), "no message from the coordinator at tcp://127.0.0.1:1");
  fedlr_client_destroy(&cl);
}

FL_TEST_MAIN()
