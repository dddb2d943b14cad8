/* Tests for common/fl_optim: each update rule against the torch.optim
 * formulas written out in double, reset, weight decay, configure, and the
 * spec parser, formatter and validator. */
#include "fl_optim.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "fl_error.h"
#include "fl_test.h"

enum { N = 5, STEPS = 3 };

static const float P0[N] = {0.5f, -1.25f, 2.0f, 0.0f, -0.3f};
/* Fixed gradients per step, mixed signs, one exact zero. */
static const float G[STEPS][N] = {
    {0.1f, -0.2f, 0.3f, 0.0f, 1.5f},
    {-0.05f, -0.4f, 0.25f, 0.7f, -1.0f},
    {0.2f, 0.1f, -0.6f, 0.3f, 0.5f},
};

/* The torch.optim update for one parameter, in double. State s1, s2; t is
 * the 1-based step. */
static double ref_step(const fl_optim_config_t *c, double p, double g, double *s1, double *s2,
                       int t, double lr) {
  g += (double)c->weight_decay * p;
  double mu = c->momentum;
  switch (c->kind) {
  case FL_OPT_SGD: return p - lr * g;
  case FL_OPT_MOMENTUM: *s1 = t == 1 ? g : mu * *s1 + g; return p - lr * *s1;
  case FL_OPT_NESTEROV: *s1 = t == 1 ? g : mu * *s1 + g; return p - lr * (g + mu * *s1);
  case FL_OPT_ADAGRAD: *s1 += g * g; return p - lr * g / (sqrt(*s1) + c->eps);
  case FL_OPT_RMSPROP:
    *s1 = c->alpha * *s1 + (1 - (double)c->alpha) * g * g;
    return p - lr * g / (sqrt(*s1) + c->eps);
  case FL_OPT_ADAM: {
    double b1 = c->beta1, b2 = c->beta2;
    *s1 = b1 * *s1 + (1 - b1) * g;
    *s2 = b2 * *s2 + (1 - b2) * g * g;
    double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
    double denom = sqrt(*s2) / sqrt(bc2) + c->eps;
    return p - (lr / bc1) * *s1 / denom;
  }
  }
  return NAN;
}

/* Runs STEPS steps of both and compares; returns the max relative error. */
static double run_against_ref(fl_optim_t *o, const fl_optim_config_t *c, float lr) {
  float p[N], g[N];
  double rp[N], s1[N] = {0}, s2[N] = {0}, worst = 0;
  memcpy(p, P0, sizeof p);
  for (int i = 0; i < N; i++)
    rp[i] = P0[i];
  for (int t = 1; t <= STEPS; t++) {
    memcpy(g, G[t - 1], sizeof g);
    fl_optim_step(o, p, g, lr);
    for (int i = 0; i < N; i++) {
      rp[i] = ref_step(c, rp[i], G[t - 1][i], &s1[i], &s2[i], t, lr);
      double err = fabs(p[i] - rp[i]) / fmax(fabs(rp[i]), 1e-3);
      worst = fmax(worst, err);
    }
  }
  return worst;
}

static void check_kind(int *fl__failed, const char *spec) {
  fl_optim_config_t c;
  ASSERT_EQ(fl_optim_parse(spec, &c), 0);
  fl_optim_t *o = fl_optim_new(&c, N);
  ASSERT_TRUE(o != NULL);
  double err = run_against_ref(o, &c, 0.1f);
  fprintf(stderr, "  %s: max relative error %.2e\n", spec, err);
  ASSERT_DBL_OP(err, <, 2e-6);
  /* After reset, the same three steps give the same values bitwise. */
  float p1[N], p2[N], g[N];
  fl_optim_reset(o);
  memcpy(p1, P0, sizeof p1);
  for (int t = 0; t < STEPS; t++) {
    memcpy(g, G[t], sizeof g);
    fl_optim_step(o, p1, g, 0.1f);
  }
  fl_optim_t *fresh = fl_optim_new(&c, N);
  memcpy(p2, P0, sizeof p2);
  for (int t = 0; t < STEPS; t++) {
    memcpy(g, G[t], sizeof g);
    fl_optim_step(fresh, p2, g, 0.1f);
  }
  ASSERT_EQ(memcmp(p1, p2, sizeof p1), 0);
  fl_optim_destroy(&o);
  fl_optim_destroy(&fresh);
  ASSERT_TRUE(o == NULL);
}

TEST(sgd_matches_torch) {
  check_kind(fl__failed, "sgd");
}
TEST(momentum_matches_torch) {
  check_kind(fl__failed, "momentum:0.9");
}
TEST(nesterov_matches_torch) {
  check_kind(fl__failed, "nesterov:0.8");
}
TEST(adagrad_matches_torch) {
  check_kind(fl__failed, "adagrad");
}
TEST(rmsprop_matches_torch) {
  check_kind(fl__failed, "rmsprop:alpha=0.9,eps=1e-6");
}
TEST(adam_matches_torch) {
  check_kind(fl__failed, "adam");
}
TEST(adam_custom_betas) {
  check_kind(fl__failed, "adam:beta1=0.5,beta2=0.9,eps=1e-3");
}
TEST(weight_decay_sgd) {
  check_kind(fl__failed, "sgd:wd=0.1");
}
TEST(weight_decay_momentum) {
  check_kind(fl__failed, "momentum:0.9,wd=1e-2");
}
TEST(weight_decay_adam) {
  check_kind(fl__failed, "adam:wd=0.05");
}

TEST(hand_computed_values) {
  /* Numbers worked out by hand, independent of ref_step. */
  fl_optim_config_t c;
  float p[1], g[1];
  /* momentum 0.9, lr 1: g = 1, 1 -> buf 1, 1.9 -> p = -1, -2.9 */
  ASSERT_EQ(fl_optim_parse("momentum", &c), 0);
  fl_optim_t *o = fl_optim_new(&c, 1);
  p[0] = 0;
  g[0] = 1;
  fl_optim_step(o, p, g, 1.0f);
  ASSERT_NEAR(p[0], -1.0, 1e-7);
  g[0] = 1;
  fl_optim_step(o, p, g, 1.0f);
  ASSERT_NEAR(p[0], -2.9, 1e-6);
  fl_optim_destroy(&o);
  /* Adam, first step: the update is lr * sign(g) (up to eps). */
  ASSERT_EQ(fl_optim_parse("adam", &c), 0);
  o = fl_optim_new(&c, 1);
  p[0] = 1;
  g[0] = -3;
  fl_optim_step(o, p, g, 0.01f);
  ASSERT_NEAR(p[0], 1.01, 1e-6);
  fl_optim_destroy(&o);
  /* Adagrad, first step: p -= lr * g/|g|. */
  ASSERT_EQ(fl_optim_parse("adagrad", &c), 0);
  o = fl_optim_new(&c, 1);
  p[0] = 0;
  g[0] = 4;
  fl_optim_step(o, p, g, 0.5f);
  ASSERT_NEAR(p[0], -0.5, 1e-7);
  fl_optim_destroy(&o);
  /* Weight decay: sgd, wd 0.5, p = 2, g = 0: g' = 1 and grad is modified. */
  ASSERT_EQ(fl_optim_parse("sgd:wd=0.5", &c), 0);
  o = fl_optim_new(&c, 1);
  p[0] = 2;
  g[0] = 0;
  fl_optim_step(o, p, g, 0.1f);
  ASSERT_NEAR(p[0], 1.9, 1e-7);
  ASSERT_NEAR(g[0], 1.0, 1e-7);
  fl_optim_destroy(&o);
}

TEST(reset_zeroes_state) {
  fl_optim_config_t c;
  ASSERT_EQ(fl_optim_parse("adam", &c), 0);
  fl_optim_t *o = fl_optim_new(&c, N);
  float p[N], g[N];
  memcpy(p, P0, sizeof p);
  for (int t = 0; t < STEPS; t++) {
    memcpy(g, G[t], sizeof g);
    fl_optim_step(o, p, g, 0.1f);
  }
  fl_optim_reset(o);
  /* A step after reset is a first step again: Adam moves by lr * sign(g). */
  float q[N] = {0}, gg[N] = {1, -1, 2, -2, 0.5f};
  fl_optim_step(o, q, gg, 0.1f);
  for (int i = 0; i < N; i++)
    ASSERT_NEAR(q[i], gg[i] > 0 ? -0.1 : 0.1, 1e-6);
  fl_optim_destroy(&o);
}

TEST(configure_keeps_or_clears_state) {
  fl_optim_config_t c;
  ASSERT_EQ(fl_optim_parse("momentum:0.9", &c), 0);
  fl_optim_t *o = fl_optim_new(&c, 1);
  float p[1] = {0}, g[1] = {1};
  fl_optim_step(o, p, g, 1.0f); /* buf = 1 */
  c.momentum = 0.5f;            /* same kind: state kept */
  fl_optim_configure(o, &c);
  g[0] = 1;
  fl_optim_step(o, p, g, 1.0f); /* buf = 0.5 + 1 */
  ASSERT_NEAR(p[0], -2.5, 1e-7);
  ASSERT_EQ(fl_optim_parse("adagrad", &c), 0); /* kind changed: fresh state */
  fl_optim_configure(o, &c);
  p[0] = 0;
  g[0] = 2;
  fl_optim_step(o, p, g, 1.0f);
  ASSERT_NEAR(p[0], -1.0, 1e-7);
  fl_optim_destroy(&o);
  fl_optim_destroy(&o); /* NULL-safe */
}

TEST(parse_defaults_and_keys) {
  fl_optim_config_t c;
  ASSERT_EQ(fl_optim_parse("sgd", &c), 0);
  ASSERT_EQ(c.kind, FL_OPT_SGD);
  ASSERT_EQ(c.weight_decay, 0);
  ASSERT_EQ(c.keep_state, 0);
  ASSERT_EQ(fl_optim_parse("momentum", &c), 0);
  ASSERT_EQ(c.kind, FL_OPT_MOMENTUM);
  ASSERT_NEAR(c.momentum, 0.9, 1e-7);
  ASSERT_EQ(fl_optim_parse("momentum:0.5,wd=1e-4", &c), 0);
  ASSERT_NEAR(c.momentum, 0.5, 0);
  ASSERT_NEAR(c.weight_decay, 1e-4, 1e-11);
  ASSERT_EQ(fl_optim_parse("nesterov:momentum=0.7,keep", &c), 0);
  ASSERT_EQ(c.kind, FL_OPT_NESTEROV);
  ASSERT_NEAR(c.momentum, 0.7, 1e-7);
  ASSERT_EQ(c.keep_state, 1);
  ASSERT_EQ(fl_optim_parse("adagrad", &c), 0);
  ASSERT_NEAR(c.eps, 1e-10, 1e-17);
  ASSERT_EQ(fl_optim_parse("rmsprop", &c), 0);
  ASSERT_NEAR(c.alpha, 0.99, 1e-7);
  ASSERT_NEAR(c.eps, 1e-8, 1e-15);
  ASSERT_EQ(fl_optim_parse("rmsprop:eps=1e-6,alpha=0.9", &c), 0);
  ASSERT_NEAR(c.alpha, 0.9, 1e-7);
  ASSERT_NEAR(c.eps, 1e-6, 1e-13);
  ASSERT_EQ(fl_optim_parse("adam", &c), 0);
  ASSERT_NEAR(c.beta1, 0.9, 1e-7);
  ASSERT_NEAR(c.beta2, 0.999, 1e-7);
  ASSERT_NEAR(c.eps, 1e-8, 1e-15);
  ASSERT_EQ(fl_optim_parse("adam:beta1=0.8,beta2=0.99,eps=1e-7,wd=0.01,keep=1", &c), 0);
  ASSERT_NEAR(c.beta1, 0.8, 1e-7);
  ASSERT_NEAR(c.beta2, 0.99, 1e-7);
  ASSERT_EQ(c.keep_state, 1);
  ASSERT_EQ(fl_optim_parse("sgd:keep=0", &c), 0);
  ASSERT_EQ(c.keep_state, 0);
}

/* Every form the README's "Client optimizers" section, fl_optim.h and
 * --help document, with the config each must give. */
typedef struct {
  const char *spec;
  fl_optim_kind_t kind;
  float momentum, beta1, beta2, eps, alpha, wd;
  int keep;
} doc_case_t;

TEST(parse_documented_forms) {
  /* kind, momentum, beta1, beta2, eps, alpha, wd, keep */
#define SGD(wd, keep) FL_OPT_SGD, 0.9f, 0.9f, 0.999f, 1e-8f, 0.99f, wd, keep
#define MOM(k, m, wd, keep) k, m, 0.9f, 0.999f, 1e-8f, 0.99f, wd, keep
#define ADAGRAD(eps, wd, keep) FL_OPT_ADAGRAD, 0.9f, 0.9f, 0.999f, eps, 0.99f, wd, keep
#define RMS(a, eps, wd, keep) FL_OPT_RMSPROP, 0.9f, 0.9f, 0.999f, eps, a, wd, keep
#define ADAM(b1, b2, eps, wd, keep) FL_OPT_ADAM, 0.9f, b1, b2, eps, 0.99f, wd, keep
  static const doc_case_t cases[] = {
      {"sgd", SGD(0, 0)},
      {"sgd,wd=0.1", SGD(0.1f, 0)}, /* the README's and --help's form, refused before */
      {"sgd:wd=0.1", SGD(0.1f, 0)},
      {"sgd,keep", SGD(0, 1)},
      {"sgd,wd=1e-4,keep", SGD(1e-4f, 1)},
      {"momentum", MOM(FL_OPT_MOMENTUM, 0.9f, 0, 0)},
      {"momentum:0.9", MOM(FL_OPT_MOMENTUM, 0.9f, 0, 0)},
      {"momentum:0.5", MOM(FL_OPT_MOMENTUM, 0.5f, 0, 0)},
      {"momentum,wd=0.1", MOM(FL_OPT_MOMENTUM, 0.9f, 0.1f, 0)},
      {"momentum:0.9,wd=0.1", MOM(FL_OPT_MOMENTUM, 0.9f, 0.1f, 0)},
      {"momentum:momentum=0.8,wd=0.1,keep", MOM(FL_OPT_MOMENTUM, 0.8f, 0.1f, 1)},
      {"nesterov", MOM(FL_OPT_NESTEROV, 0.9f, 0, 0)},
      {"nesterov:0.9", MOM(FL_OPT_NESTEROV, 0.9f, 0, 0)},
      {"nesterov,wd=0.01", MOM(FL_OPT_NESTEROV, 0.9f, 0.01f, 0)},
      {"nesterov:0.7,wd=0.01,keep", MOM(FL_OPT_NESTEROV, 0.7f, 0.01f, 1)},
      {"adagrad", ADAGRAD(1e-10f, 0, 0)},
      {"adagrad:eps=1e-10", ADAGRAD(1e-10f, 0, 0)},
      {"adagrad,wd=0.1", ADAGRAD(1e-10f, 0.1f, 0)},
      {"adagrad:eps=1e-6,wd=0.1,keep", ADAGRAD(1e-6f, 0.1f, 1)},
      {"rmsprop", RMS(0.99f, 1e-8f, 0, 0)},
      {"rmsprop:alpha=0.99,eps=1e-8", RMS(0.99f, 1e-8f, 0, 0)},
      {"rmsprop,wd=0.1", RMS(0.99f, 1e-8f, 0.1f, 0)},
      {"rmsprop:alpha=0.9,wd=0.1,keep", RMS(0.9f, 1e-8f, 0.1f, 1)},
      {"adam", ADAM(0.9f, 0.999f, 1e-8f, 0, 0)},
      {"adam:beta1=0.9,beta2=0.999,eps=1e-8", ADAM(0.9f, 0.999f, 1e-8f, 0, 0)},
      {"adam,wd=0.1", ADAM(0.9f, 0.999f, 1e-8f, 0.1f, 0)},
      {"adam,keep", ADAM(0.9f, 0.999f, 1e-8f, 0, 1)},
      {"adam:beta1=0.8,wd=0.01,keep", ADAM(0.8f, 0.999f, 1e-8f, 0.01f, 1)},
      {"adam:beta1=0.8,wd=1e-4", ADAM(0.8f, 0.999f, 1e-8f, 1e-4f, 0)},
  };
#undef SGD
#undef MOM
#undef ADAGRAD
#undef RMS
#undef ADAM
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const doc_case_t *k = &cases[i];
    fl_optim_config_t c;
    fl_err_clear();
    int rc = fl_optim_parse(k->spec, &c);
    if (rc != 0) fprintf(stderr, "  '%s': %s\n", k->spec, fl_err_msg());
    ASSERT_EQ(rc, 0);
    int same = c.kind == k->kind && c.momentum == k->momentum && c.beta1 == k->beta1 &&
               c.beta2 == k->beta2 && c.eps == k->eps && c.alpha == k->alpha &&
               c.weight_decay == k->wd && c.keep_state == k->keep;
    if (!same)
      fprintf(stderr,
              "  '%s': kind %d momentum %g beta1 %g beta2 %g eps %g alpha %g wd %g keep %d\n",
              k->spec, (int)c.kind, (double)c.momentum, (double)c.beta1, (double)c.beta2,
              (double)c.eps, (double)c.alpha, (double)c.weight_decay, c.keep_state);
    ASSERT_TRUE(same);
  }
}

TEST(parse_errors_name_the_bad_part) {
  fl_optim_config_t c;
  ASSERT_EQ(fl_optim_parse("sdg", &c), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'sdg'");
  ASSERT_CONTAINS(fl_err_msg(), "adam");
  ASSERT_EQ(fl_optim_parse("adam:beta3=0.1", &c), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'beta3'");
  ASSERT_CONTAINS(fl_err_msg(), "beta1, beta2, eps, wd, keep");
  ASSERT_EQ(fl_optim_parse("sgd:momentum=0.9", &c), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'momentum'");
  ASSERT_EQ(fl_optim_parse("sgd:0.9", &c), FL_EINVAL);
  ASSERT_EQ(fl_optim_parse("momentum:abc", &c), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'abc'");
  ASSERT_EQ(fl_optim_parse("momentum:0.9x", &c), FL_EINVAL);
  ASSERT_EQ(fl_optim_parse("adam:eps", &c), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "needs a value");
  ASSERT_EQ(fl_optim_parse("adam:eps=", &c), FL_EINVAL);
  ASSERT_EQ(fl_optim_parse("momentum:0.9,", &c), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "empty parameter");
  ASSERT_EQ(fl_optim_parse("sgd:", &c), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "empty parameter");
  ASSERT_EQ(fl_optim_parse("sgd,", &c), FL_EINVAL);
  ASSERT_EQ(fl_optim_parse("sgd,,wd=0.1", &c), FL_EINVAL);
  ASSERT_EQ(fl_optim_parse(",wd=0.1", &c), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "unknown optimizer ''");
  /* The kind ends at ',' as at ':': an unknown kind is named alone. */
  ASSERT_EQ(fl_optim_parse("sgdd,wd=0.1", &c), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "unknown optimizer 'sgdd'");
  /* A bare momentum only right after ':'. */
  ASSERT_EQ(fl_optim_parse("momentum,0.9", &c), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "unknown key '0.9'");
  ASSERT_EQ(fl_optim_parse("sgd,momentum=0.9", &c), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'momentum' for sgd");
  ASSERT_EQ(fl_optim_parse("adam,wd=-1", &c), FL_ERANGE);
  ASSERT_EQ(fl_optim_parse("adam:keep=2", &c), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "keep");
  /* Parsed but out of range: names the value. */
  ASSERT_EQ(fl_optim_parse("momentum:1.5", &c), FL_ERANGE);
  ASSERT_CONTAINS(fl_err_msg(), "momentum=1.5");
  ASSERT_EQ(fl_optim_parse("adam:beta2=1", &c), FL_ERANGE);
  ASSERT_CONTAINS(fl_err_msg(), "beta2");
  ASSERT_EQ(fl_optim_parse("adagrad:eps=0", &c), FL_ERANGE);
  ASSERT_EQ(fl_optim_parse("rmsprop:alpha=-0.1", &c), FL_ERANGE);
  ASSERT_EQ(fl_optim_parse("sgd:wd=-1", &c), FL_ERANGE);
  ASSERT_EQ(fl_optim_parse("sgd:wd=nan", &c), FL_ERANGE);
  ASSERT_EQ(fl_optim_parse("sgd:wd=inf", &c), FL_ERANGE);
  ASSERT_EQ(fl_optim_parse("sgd:wd=1e999", &c), FL_EINVAL);
  ASSERT_EQ(fl_optim_parse("nesterov:0", &c), FL_ERANGE);
}

TEST(validate_wire_configs) {
  fl_optim_config_t c;
  ASSERT_EQ(fl_optim_parse("adam", &c), 0);
  ASSERT_EQ(fl_optim_validate(&c), 0);
  c.kind = (fl_optim_kind_t)9;
  ASSERT_EQ(fl_optim_validate(&c), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "kind 9");
  ASSERT_EQ(fl_optim_parse("adam", &c), 0);
  c.beta1 = NAN;
  ASSERT_EQ(fl_optim_validate(&c), FL_ERANGE);
  c.beta1 = 0.9f;
  c.eps = INFINITY;
  ASSERT_EQ(fl_optim_validate(&c), FL_ERANGE);
  c.eps = -1e-8f;
  ASSERT_EQ(fl_optim_validate(&c), FL_ERANGE);
  c.eps = 1e-8f;
  c.weight_decay = NAN;
  ASSERT_EQ(fl_optim_validate(&c), FL_ERANGE);
  ASSERT_EQ(fl_optim_parse("momentum", &c), 0);
  c.momentum = 1.0f;
  ASSERT_EQ(fl_optim_validate(&c), FL_ERANGE);
  c.momentum = 0.0f;
  ASSERT_EQ(fl_optim_validate(&c), 0);
  c.keep_state = 7;
  ASSERT_EQ(fl_optim_validate(&c), FL_EINVAL);
  ASSERT_EQ(fl_optim_parse("rmsprop", &c), 0);
  c.alpha = 1.0f;
  ASSERT_EQ(fl_optim_validate(&c), FL_ERANGE);
  ASSERT_TRUE(fl_optim_new(&c, 4) == NULL);
}

TEST(format_round_trips) {
  const char *specs[] = {"sgd",
                         "sgd:wd=1e-4,keep",
                         "momentum:0.95",
                         "nesterov",
                         "adagrad:eps=1e-7",
                         "rmsprop:alpha=0.9",
                         "adam:beta1=0.85,beta2=0.995,eps=1e-6,wd=3e-5"};
  for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
    fl_optim_config_t a, b;
    char buf[256];
    ASSERT_EQ(fl_optim_parse(specs[i], &a), 0);
    ASSERT_EQ(fl_optim_format(&a, buf, sizeof buf), 0);
    ASSERT_EQ(fl_optim_parse(buf, &b), 0);
    ASSERT_EQ(memcmp(&a, &b, sizeof a), 0);
  }
  fl_optim_config_t a;
  char small[8];
  ASSERT_EQ(fl_optim_parse("adam", &a), 0);
  ASSERT_EQ(fl_optim_format(&a, small, sizeof small), FL_ETOOBIG);
}

TEST(zero_length_optimizer) {
  fl_optim_config_t c;
  ASSERT_EQ(fl_optim_parse("adam", &c), 0);
  fl_optim_t *o = fl_optim_new(&c, 0);
  ASSERT_TRUE(o != NULL);
  fl_optim_step(o, NULL, NULL, 0.1f);
  fl_optim_reset(o);
  fl_optim_destroy(&o);
}

FL_TEST_MAIN()
