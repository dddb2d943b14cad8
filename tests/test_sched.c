/* Tests for fl_sched. Expected rates come from the PyTorch / Keras
 * definitions: either written out here as formulas, or hard-coded values
 * computed once with python3 from those definitions (quoted beside them). */
#include "fl_error.h"
#include "fl_sched.h"
#include "fl_test.h"

static const double PI = 3.14159265358979323846;
#define TOL 1e-12

/* Parses a spec the test expects to be valid, failing the test otherwise. */
#define PARSE_OK(spec, s)                                                        \
  do {                                                                           \
    int rc_ = fl_sched_parse((spec), (s));                                       \
    if (rc_ != 0) FL__FAIL("parse '%s' failed: %s", (spec), fl_err_msg());       \
  } while (0)

static double lr_at(const fl_sched_t *s, double lr0, uint64_t t) { return fl_sched_lr(s, lr0, t, NULL); }

static int sched_equal(const fl_sched_t *a, const fl_sched_t *b) {
  if (a->kind != b->kind || a->gamma != b->gamma || a->every != b->every || a->T != b->T ||
      a->p != b->p || a->end != b->end || a->min != b->min || a->mult != b->mult ||
      a->staircase != b->staircase || a->restart != b->restart || a->factor != b->factor ||
      a->threshold != b->threshold || a->patience != b->patience || a->cooldown != b->cooldown ||
      a->num_pieces != b->num_pieces || a->warmup != b->warmup || a->warmup_start != b->warmup_start)
    return 0;
  for (size_t i = 0; i < a->num_pieces; i++)
    if (a->piece_at[i] != b->piece_at[i] || a->piece_factor[i] != b->piece_factor[i]) return 0;
  return 1;
}

static int all_zero(const fl_sched_t *s) {
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0; i < sizeof *s; i++)
    if (p[i]) return 0;
  return 1;
}

TEST(null_and_empty_are_const) {
  fl_sched_t s;
  ASSERT_EQ(fl_sched_parse(NULL, &s), 0);
  ASSERT_EQ(s.kind, FL_SCHED_CONST);
  ASSERT_EQ(fl_sched_parse("", &s), 0);
  ASSERT_EQ(s.kind, FL_SCHED_CONST);
  ASSERT_EQ(fl_sched_parse("   ", &s), 0);
  ASSERT_EQ(s.kind, FL_SCHED_CONST);
  ASSERT_NEAR(fl_sched_lr(NULL, 0.3, 7, NULL), 0.3, 0);
}

TEST(const_rate) {
  fl_sched_t s;
  PARSE_OK("const", &s);
  for (uint64_t t = 0; t < 100; t += 7) ASSERT_NEAR(lr_at(&s, 0.1, t), 0.1, 0);
  ASSERT_NEAR(lr_at(&s, 0.1, UINT64_MAX), 0.1, 0);
}

TEST(linear) {
  fl_sched_t s;
  PARSE_OK("linear:T=10,end=0.01", &s);
  ASSERT_NEAR(lr_at(&s, 0.5, 0), 0.5, TOL);
  for (uint64_t t = 0; t <= 10; t++) ASSERT_NEAR(lr_at(&s, 0.5, t), 0.5 + (0.01 - 0.5) * t / 10.0, TOL);
  ASSERT_NEAR(lr_at(&s, 0.5, 5), 0.255, TOL);
  ASSERT_NEAR(lr_at(&s, 0.5, 10), 0.01, TOL);
  ASSERT_NEAR(lr_at(&s, 0.5, 1000), 0.01, TOL);
  PARSE_OK("linear:T=4", &s);
  ASSERT_NEAR(lr_at(&s, 1.0, 1), 0.75, TOL);
  ASSERT_NEAR(lr_at(&s, 1.0, 4), 0.0, TOL);
  ASSERT_NEAR(lr_at(&s, 1.0, 9), 0.0, TOL);
}

/* Keras ExponentialDecay(0.5, decay_steps=4, decay_rate=0.9, staircase). */
TEST(exp_smooth_and_staircase) {
  fl_sched_t s;
  PARSE_OK("exp:gamma=0.9,every=4", &s);
  const uint64_t ts[] = {0, 1, 3, 4, 7, 10};
  const double smooth[] = {0.5, 0.4870018732126484, 0.4620105432361534, 0.45, 0.4158094889125381,
                           0.3842167357104581};
  for (size_t i = 0; i < 6; i++) ASSERT_NEAR(lr_at(&s, 0.5, ts[i]), smooth[i], TOL);
  for (uint64_t t = 0; t < 50; t++) ASSERT_NEAR(lr_at(&s, 0.5, t), 0.5 * pow(0.9, t / 4.0), TOL);

  PARSE_OK("exp:gamma=0.9,every=4,staircase", &s);
  const uint64_t ts2[] = {0, 1, 3, 4, 7, 8, 10};
  const double stair[] = {0.5, 0.5, 0.5, 0.45, 0.45, 0.405, 0.405};
  for (size_t i = 0; i < 7; i++) ASSERT_NEAR(lr_at(&s, 0.5, ts2[i]), stair[i], TOL);

  PARSE_OK("exp:gamma=0.5", &s); /* every defaults to 1 */
  ASSERT_NEAR(lr_at(&s, 1.0, 3), 0.125, TOL);
}

/* Keras InverseTimeDecay(0.5, decay_steps=10, decay_rate=1, staircase);
 * ours is lr0 / (1 + t/T)^p, which is that for p = 1. */
TEST(inv_smooth_and_staircase) {
  fl_sched_t s;
  PARSE_OK("inv:T=10", &s);
  const uint64_t ts[] = {0, 1, 5, 10, 25};
  const double smooth[] = {0.5, 0.45454545454545453, 0.3333333333333333, 0.25, 0.14285714285714285};
  for (size_t i = 0; i < 5; i++) ASSERT_NEAR(lr_at(&s, 0.5, ts[i]), smooth[i], TOL);

  PARSE_OK("inv:T=10,staircase", &s);
  const uint64_t ts2[] = {0, 9, 10, 19, 20, 25};
  const double stair[] = {0.5, 0.5, 0.25, 0.25, 0.16666666666666666, 0.16666666666666666};
  for (size_t i = 0; i < 6; i++) ASSERT_NEAR(lr_at(&s, 0.5, ts2[i]), stair[i], TOL);

  PARSE_OK("inv:T=10,p=0.5", &s);
  for (uint64_t t = 0; t < 40; t += 3) ASSERT_NEAR(lr_at(&s, 0.5, t), 0.5 / sqrt(1 + t / 10.0), TOL);
}

/* Keras PolynomialDecay(0.5, decay_steps=10, end_learning_rate=0.01, power=2), cycle=False. */
TEST(poly) {
  fl_sched_t s;
  PARSE_OK("poly:T=10,power=2,end=0.01", &s);
  const uint64_t ts[] = {0, 1, 5, 9, 10, 11, 100};
  const double want[] = {0.5, 0.40690000000000004, 0.1325, 0.014899999999999997, 0.01, 0.01, 0.01};
  for (size_t i = 0; i < 7; i++) ASSERT_NEAR(lr_at(&s, 0.5, ts[i]), want[i], TOL);
  PARSE_OK("poly:T=8", &s); /* power 1, end 0: linear to zero */
  ASSERT_NEAR(lr_at(&s, 1.0, 2), 0.75, TOL);
  ASSERT_NEAR(lr_at(&s, 1.0, 8), 0.0, TOL);
  ASSERT_NEAR(lr_at(&s, 1.0, 80), 0.0, TOL);
}

/* torch StepLR(step_size=30, gamma=0.1), base lr 0.5. */
TEST(step) {
  fl_sched_t s;
  PARSE_OK("step:gamma=0.1,every=30", &s);
  const uint64_t ts[] = {0, 29, 30, 59, 60, 90};
  const double want[] = {0.5, 0.5, 0.05, 0.05, 0.005000000000000001, 0.0005000000000000001};
  for (size_t i = 0; i < 6; i++) ASSERT_NEAR(lr_at(&s, 0.5, ts[i]), want[i], TOL);
}

TEST(piecewise) {
  fl_sched_t s;
  PARSE_OK("piecewise:5=0.5,10=0.1,20=0.01", &s);
  ASSERT_EQ(s.num_pieces, 3);
  ASSERT_NEAR(lr_at(&s, 2.0, 0), 2.0, TOL);
  ASSERT_NEAR(lr_at(&s, 2.0, 4), 2.0, TOL);
  ASSERT_NEAR(lr_at(&s, 2.0, 5), 1.0, TOL);
  ASSERT_NEAR(lr_at(&s, 2.0, 9), 1.0, TOL);
  ASSERT_NEAR(lr_at(&s, 2.0, 10), 0.2, TOL);
  ASSERT_NEAR(lr_at(&s, 2.0, 19), 0.2, TOL);
  ASSERT_NEAR(lr_at(&s, 2.0, 20), 0.02, TOL);
  ASSERT_NEAR(lr_at(&s, 2.0, UINT64_MAX), 0.02, TOL);
  PARSE_OK("piecewise:0=0.5", &s); /* a boundary at 0 applies from the start */
  ASSERT_NEAR(lr_at(&s, 2.0, 0), 1.0, TOL);
}

TEST(piecewise_max_pieces) {
  char spec[FL_SCHED_SPEC_MAX];
  size_t pos = (size_t)snprintf(spec, sizeof spec, "piecewise:");
  for (int i = 0; i < FL_SCHED_MAX_PIECES; i++)
    pos += (size_t)snprintf(spec + pos, sizeof spec - pos, "%s%d=0", i ? "," : "", i + 1);
  fl_sched_t s;
  PARSE_OK(spec, &s);
  ASSERT_EQ(s.num_pieces, FL_SCHED_MAX_PIECES);
  snprintf(spec + pos, sizeof spec - pos, ",99=0");
  ASSERT_EQ(fl_sched_parse(spec, &s), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "more than 32 pieces");
}

/* torch CosineAnnealingLR(T_max=10, eta_min=0.01) closed form for t <= T; min after. */
TEST(cos) {
  fl_sched_t s;
  PARSE_OK("cos:T=10,min=0.01", &s);
  const uint64_t ts[] = {0, 1, 5, 9, 10};
  const double want[] = {0.5, 0.48800884649231263, 0.255, 0.021991153507687385, 0.01};
  for (size_t i = 0; i < 5; i++) ASSERT_NEAR(lr_at(&s, 0.5, ts[i]), want[i], TOL);
  for (uint64_t t = 0; t <= 10; t++)
    ASSERT_NEAR(lr_at(&s, 0.5, t), 0.01 + (0.5 - 0.01) * (1 + cos(PI * t / 10)) / 2, TOL);
  ASSERT_NEAR(lr_at(&s, 0.5, 11), 0.01, TOL);
  ASSERT_NEAR(lr_at(&s, 0.5, 15), 0.01, TOL);
  ASSERT_NEAR(lr_at(&s, 0.5, 1000000), 0.01, TOL);
}

/* torch CosineAnnealingWarmRestarts(T_0=10, T_mult=1, eta_min=0.1), base lr 1. */
TEST(cos_restart_mult1) {
  fl_sched_t s;
  PARSE_OK("cos:T=10,min=0.1,restart", &s);
  const uint64_t ts[] = {0, 1, 5, 9, 10, 11, 15, 19, 20, 25};
  const double want[] = {1.0, 0.9779754323328191, 0.55, 0.12202456766718092, 1.0,
                         0.9779754323328191, 0.55, 0.12202456766718092, 1.0, 0.55};
  for (size_t i = 0; i < 10; i++) ASSERT_NEAR(lr_at(&s, 1.0, ts[i]), want[i], TOL);
  ASSERT_NEAR(lr_at(&s, 1.0, 10000000000ULL), 1.0, TOL);
}

/* Reference by walking the cycles one by one (O(cycles), fine in a test). */
static double sgdr_ref(double T, double mult, double lr0, double min, uint64_t t) {
  double start = 0, period = T;
  while ((double)t >= start + period) {
    start += period;
    period *= mult;
  }
  return min + (lr0 - min) * (1 + cos(PI * ((double)t - start) / period)) / 2;
}

/* torch CosineAnnealingWarmRestarts(T_0=10, T_mult=2, eta_min=0): cycles
 * start at 0, 10, 30, 70, 150, ... */
TEST(cos_restart_mult2) {
  fl_sched_t s;
  PARSE_OK("cos:T=10,restart,mult=2", &s);
  const uint64_t ts[] = {0, 5, 9, 10, 20, 29, 30, 50, 69, 70, 150, 151};
  const double want[] = {1.0, 0.5, 0.024471741852423234, 1.0, 0.5, 0.00615582970243117,
                         1.0, 0.5, 0.001541333133436018, 1.0, 1.0, 0.9999036202410324};
  for (size_t i = 0; i < 12; i++) ASSERT_NEAR(lr_at(&s, 1.0, ts[i]), want[i], TOL);
  /* Every cycle boundary up to ~10^13 must land exactly on a restart. */
  uint64_t start = 0, period = 10;
  for (int n = 0; n < 40; n++) {
    ASSERT_NEAR(lr_at(&s, 1.0, start), 1.0, TOL);
    ASSERT_NEAR(lr_at(&s, 1.0, start + period - 1), sgdr_ref(10, 2, 1.0, 0, start + period - 1), 1e-9);
    start += period;
    period *= 2;
  }
  for (uint64_t t = 0; t < 2000; t += 7) ASSERT_NEAR(lr_at(&s, 1.0, t), sgdr_ref(10, 2, 1.0, 0, t), 1e-12);

  PARSE_OK("cos:T=3,min=0.05,restart,mult=1.5", &s);
  for (uint64_t t = 0; t < 3000; t += 1) ASSERT_NEAR(lr_at(&s, 0.7, t), sgdr_ref(3, 1.5, 0.7, 0.05, t), 1e-9);
}

/* warmup:4,start=0.25 over each kind: t < 4 ramps inner(0) by 0.25 + 0.75*t/4,
 * t >= 4 is the inner schedule shifted by 4. */
TEST(warmup_each_kind) {
  static const char *inner[] = {
    "const", "linear:T=10,end=0.01", "exp:gamma=0.9,every=4", "exp:gamma=0.9,every=4,staircase",
    "inv:T=10", "poly:T=10,power=2,end=0.01", "step:gamma=0.1,every=3", "piecewise:2=0.5,6=0.1",
    "cos:T=10,min=0.01", "cos:T=5,restart,mult=2", "plateau:min=0.2",
  };
  for (size_t k = 0; k < sizeof inner / sizeof inner[0]; k++) {
    char spec[FL_SCHED_SPEC_MAX];
    snprintf(spec, sizeof spec, "warmup:4,start=0.25+%s", inner[k]);
    fl_sched_t w, s;
    PARSE_OK(spec, &w);
    PARSE_OK(inner[k], &s);
    ASSERT_EQ(w.warmup, 4);
    double base = lr_at(&s, 0.5, 0);
    for (uint64_t t = 0; t < 4; t++) ASSERT_NEAR(lr_at(&w, 0.5, t), base * (0.25 + 0.75 * t / 4.0), TOL);
    for (uint64_t t = 4; t < 60; t++) ASSERT_NEAR(lr_at(&w, 0.5, t), lr_at(&s, 0.5, t - 4), TOL);
  }
}

TEST(warmup_values) {
  fl_sched_t s;
  PARSE_OK("warmup:5+cos:T=10", &s); /* start defaults to 1/W */
  ASSERT_NEAR(s.warmup_start, 0.2, 0);
  ASSERT_NEAR(lr_at(&s, 1.0, 0), 0.2, TOL);
  ASSERT_NEAR(lr_at(&s, 1.0, 1), 0.36, TOL);
  ASSERT_NEAR(lr_at(&s, 1.0, 4), 0.84, TOL);
  ASSERT_NEAR(lr_at(&s, 1.0, 5), 1.0, TOL);
  ASSERT_NEAR(lr_at(&s, 1.0, 10), 0.5, TOL);
  ASSERT_NEAR(lr_at(&s, 1.0, 15), 0.0, TOL);
  PARSE_OK("warmup:2,start=0+step:gamma=0.5,every=1", &s);
  ASSERT_NEAR(lr_at(&s, 1.0, 0), 0.0, TOL);
  ASSERT_NEAR(lr_at(&s, 1.0, 1), 0.5, TOL);
  ASSERT_NEAR(lr_at(&s, 1.0, 2), 1.0, TOL);
  ASSERT_NEAR(lr_at(&s, 1.0, 3), 0.5, TOL);
}

/* A torch ReduceLROnPlateau(lr=1, factor=0.5, patience=2, cooldown=1,
 * min_lr=0.1, threshold=0.1, mode='min', threshold_mode='rel') trace,
 * produced by the PyTorch step() logic in python3:
 * metric, reduced?, lr, num_bad_epochs, cooldown_counter, best. */
TEST(plateau_pytorch_trace) {
  static const struct {
    double metric;
    int reduced;
    double lr;
    unsigned num_bad, cooldown;
    double best;
  } trace[] = {
    {10, 0, 1.0, 0, 0, 10.0},   {9.5, 0, 1.0, 1, 0, 10.0},   {9.2, 0, 1.0, 2, 0, 10.0},
    {9.1, 1, 0.5, 0, 1, 10.0},  {9.0, 0, 0.5, 0, 0, 10.0},   {8.9, 0, 0.5, 0, 0, 8.9},
    {8.9, 0, 0.5, 1, 0, 8.9},   {8.9, 0, 0.5, 2, 0, 8.9},    {8.9, 1, 0.25, 0, 1, 8.9},
    {8.9, 0, 0.25, 0, 0, 8.9},  {8.9, 0, 0.25, 1, 0, 8.9},   {8.9, 0, 0.25, 2, 0, 8.9},
    {8.9, 1, 0.125, 0, 1, 8.9}, {NAN, 0, 0.125, 0, 0, 8.9},  {8.5, 0, 0.125, 1, 0, 8.9},
    {8.5, 0, 0.125, 2, 0, 8.9}, {8.5, 1, 0.1, 0, 1, 8.9},    {8.5, 0, 0.1, 0, 0, 8.9},
    {8.5, 0, 0.1, 1, 0, 8.9},   {8.5, 0, 0.1, 2, 0, 8.9},    {8.5, 1, 0.1, 0, 1, 8.9},
    {7.0, 0, 0.1, 0, 0, 7.0},
  };
  fl_sched_t s;
  PARSE_OK("plateau:factor=0.5,patience=2,cooldown=1,min=0.1,threshold=0.1", &s);
  fl_plateau_t pl;
  fl_plateau_init(&pl);
  ASSERT_NEAR(fl_sched_lr(&s, 1.0, 0, &pl), 1.0, 0);
  for (size_t i = 0; i < sizeof trace / sizeof trace[0]; i++) {
    int reduced = fl_plateau_observe(&s, &pl, trace[i].metric);
    if (reduced != trace[i].reduced)
      FL__FAIL("step %zu: reduced %d, want %d", i, reduced, trace[i].reduced);
    ASSERT_NEAR(fl_sched_lr(&s, 1.0, i + 1, &pl), trace[i].lr, TOL);
    ASSERT_EQ(pl.num_bad, trace[i].num_bad);
    ASSERT_EQ(pl.cooldown_left, trace[i].cooldown);
    ASSERT_NEAR(pl.best, trace[i].best, 0);
  }
}

TEST(plateau_defaults_and_edges) {
  fl_sched_t s;
  PARSE_OK("plateau", &s);
  ASSERT_NEAR(s.factor, 0.1, 0);
  ASSERT_EQ(s.patience, 10);
  ASSERT_EQ(s.cooldown, 0);
  ASSERT_NEAR(s.min, 0, 0);
  ASSERT_NEAR(s.threshold, 1e-4, 0);
  fl_plateau_t pl;
  fl_plateau_init(&pl);
  ASSERT_NEAR(fl_sched_lr(&s, 0.3, 5, NULL), 0.3, 0);
  /* Patience 10 means the 11th evaluation without improvement reduces. */
  ASSERT_EQ(fl_plateau_observe(&s, &pl, 1.0), 0);
  for (int i = 0; i < 10; i++) ASSERT_EQ(fl_plateau_observe(&s, &pl, 1.0), 0);
  ASSERT_EQ(fl_plateau_observe(&s, &pl, 1.0), 1);
  ASSERT_NEAR(fl_sched_lr(&s, 0.3, 0, &pl), 0.03, TOL);
  /* -inf is not an improvement (it would freeze best forever). */
  fl_plateau_init(&pl);
  ASSERT_EQ(fl_plateau_observe(&s, &pl, -INFINITY), 0);
  ASSERT_EQ(pl.num_bad, 1);
  ASSERT_DBL_OP(pl.best, ==, INFINITY);
  /* patience=0: every non-improving evaluation reduces. */
  PARSE_OK("plateau:patience=0,factor=0.5", &s);
  fl_plateau_init(&pl);
  ASSERT_EQ(fl_plateau_observe(&s, &pl, 2.0), 0);
  ASSERT_EQ(fl_plateau_observe(&s, &pl, 2.0), 1);
  ASSERT_EQ(fl_plateau_observe(&s, &pl, 2.0), 1);
  ASSERT_NEAR(fl_sched_lr(&s, 1.0, 0, &pl), 0.25, TOL);
  /* Other kinds ignore observations. */
  PARSE_OK("cos:T=10", &s);
  fl_plateau_init(&pl);
  for (int i = 0; i < 50; i++) ASSERT_EQ(fl_plateau_observe(&s, &pl, 5.0), 0);
  ASSERT_EQ(pl.num_bad, 0);
}

TEST(aliases_spaces_and_defaults) {
  static const struct {
    const char *alias, *canonical;
  } pairs[] = {
    {"constant", "const"},
    {"exponential:gamma=0.9", "exp:gamma=0.9"},
    {"inverse-time:T=5", "inv:T=5"},
    {"invtime:T=5", "inv:T=5"},
    {"polynomial:T=5", "poly:T=5"},
    {"cosine:T=5", "cos:T=5"},
    {"  warmup : 3 , start = 0.5 +  cos : T = 10 , restart , mult = 2 ",
     "warmup:3,start=0.5+cos:T=10,restart,mult=2"},
    {"exp:gamma=9e-1", "exp:gamma=0.9"},
    {"exp:gamma=+0.9", "exp:gamma=0.9"},
    {"warmup:2,start=5e-1+exp:gamma=1e+0", "warmup:2,start=0.5+exp:gamma=1"},
  };
  for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
    fl_sched_t a, b;
    PARSE_OK(pairs[i].alias, &a);
    PARSE_OK(pairs[i].canonical, &b);
    if (!sched_equal(&a, &b)) FL__FAIL("'%s' != '%s'", pairs[i].alias, pairs[i].canonical);
  }
  fl_sched_t s;
  PARSE_OK("cos:T=10", &s);
  ASSERT_NEAR(s.mult, 1, 0);
  ASSERT_NEAR(s.min, 0, 0);
  ASSERT_EQ(s.restart, 0);
  PARSE_OK("inv:T=2", &s);
  ASSERT_NEAR(s.p, 1, 0);
  ASSERT_EQ(s.staircase, 0);
}

TEST(parse_errors) {
  static const struct {
    const char *spec, *msg;
  } cases[] = {
    {"exp:gama=0.9", "schedule 'exp:gama=0.9': unknown key 'gama' for exp (keys: gamma, every, staircase)"},
    {"expo:gamma=0.9", "unknown kind 'expo' (kinds: const, linear, exp, inv, poly, step, piecewise, cos, plateau)"},
    {"cosine", "missing required key 'T' for cos"},
    {"step:gamma=0.1", "missing required key 'every' for step"},
    {"step:every=30", "missing required key 'gamma' for step"},
    {"linear", "missing required key 'T' for linear"},
    {"poly:power=2", "missing required key 'T' for poly"},
    {"inv:p=2", "missing required key 'T' for inv"},
    {"exp", "missing required key 'gamma' for exp"},
    {"exp:gamma=abc", "value 'abc' for gamma is not a number"},
    {"exp:gamma=0.9x", "value '0.9x' for gamma is not a number"},
    {"exp:gamma=inf", "value 'inf' for gamma is not finite"},
    {"exp:gamma=nan", "value 'nan' for gamma is not finite"},
    {"exp:gamma=1e999", "value '1e999' for gamma is not finite"},
    {"exp:gamma=0", "gamma=0 is out of range (must be > 0)"},
    {"exp:gamma=0.9,gamma=0.8", "duplicate key 'gamma'"},
    {"exp:gamma=0.9,", "empty option for exp"},
    {"exp:gamma=0.9,,every=2", "empty option for exp"},
    {"exp:gamma=0.9,staircase=1", "'staircase' is a flag and takes no value"},
    {"exp:gamma", "key 'gamma' needs a value (gamma=...)"},
    {"exp:gamma=", "empty value for 'gamma'"},
    {"cos:T=0", "T=0 is out of range (must be > 0)"},
    {"cos:T=-5", "T=-5 is out of range (must be > 0)"},
    {"cos:T=10,mult=0.5,restart", "mult=0.5 is out of range (must be >= 1)"},
    {"cos:T=10,mult=2", "'mult' needs 'restart'"},
    {"cos:T=10,staircase", "unknown key 'staircase' for cos (keys: T, min, restart, mult)"},
    {"cos:T=10,min=-0.1", "min=-0.1 is out of range (must be >= 0)"},
    {"step:gamma=0.1,every=0", "every=0 is out of range (must be > 0)"},
    {"plateau:factor=1", "factor=1 is out of range (must be in (0, 1))"},
    {"plateau:factor=0", "factor=0 is out of range (must be in (0, 1))"},
    {"plateau:patience=-1", "patience '-1' must be a whole number"},
    {"plateau:patience=2.5", "patience '2.5' must be a whole number"},
    {"plateau:cooldown=99999999999", "cooldown '99999999999' must be a whole number"},
    {"plateau:threshold=1", "threshold=1 is out of range (must be in [0, 1))"},
    {"plateau:lr=0.1", "unknown key 'lr' for plateau (keys: factor, patience, cooldown, min, threshold)"},
    {"plateau:", "empty option for plateau"},
    {"const:T=5", "unknown key 'T' for const (const takes no keys)"},
    {"piecewise", "piecewise needs at least one boundary"},
    {"piecewise:", "empty piece for piecewise"},
    {"piecewise:10=0.1,5=0.01", "boundary 5 is not after 10 (boundaries must be strictly ascending)"},
    {"piecewise:10=0.1,10=0.01", "duplicate boundary 10"},
    {"piecewise:1.5=0.1", "boundary '1.5' is not a whole number"},
    {"piecewise:-3=0.1", "boundary '-3' is not a whole number"},
    {"piecewise:10", "piece '10' needs a factor (10=F)"},
    {"piecewise:10=x", "factor 'x' at boundary 10 is not a number"},
    {"piecewise:10=-1", "factor -1 at boundary 10 is out of range"},
    {"warmup:5", "warmup needs a schedule after '+'"},
    {"warmup:5+", "missing schedule after '+'"},
    {"warmup+cos:T=5", "warmup needs a length"},
    {"warmup:0+const", "warmup length '0' must be a whole number >= 1"},
    {"warmup:2.5+const", "warmup length '2.5' must be a whole number >= 1"},
    {"warmup:start=0.1+const", "warmup needs its length first"},
    {"warmup:5,start=2+const", "start=2 is out of range (must be in [0, 1])"},
    {"warmup:5,begin=0.1+const", "unknown key 'begin' for warmup (keys: start)"},
    {"warmup:5,start=0.1,start=0.2+const", "duplicate key 'start'"},
    {"warmup:2+warmup:3+cos:T=5", "warmup cannot be nested"},
    {"cos:T=10+plateau", "only warmup:W[,start=F] may come before '+', not 'cos:T=10'"},
    {"plateau+cos:T=10", "only warmup:W[,start=F] may come before '+', not 'plateau'"},
    {"warmup:2+cos:T=5+plateau", "more than one '+'"},
    {"+cos:T=5", "nothing before '+'"},
    {"cos:T=10 garbage", "value '10 garbage' for T is not a number"},
    {":T=10", "missing schedule kind"},
    {"cos:=10", "missing key before '=10'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fl_sched_t s;
    memset(&s, 0xab, sizeof s);
    fl_err_clear();
    int rc = fl_sched_parse(cases[i].spec, &s);
    if (rc != FL_EINVAL) FL__FAIL("'%s': rc %d, want FL_EINVAL", cases[i].spec, rc);
    if (!strstr(fl_err_msg(), cases[i].msg))
      FL__FAIL("'%s': message \"%s\" lacks \"%s\"", cases[i].spec, fl_err_msg(), cases[i].msg);
    /* Every message quotes the whole spec. */
    char quoted[FL_SCHED_SPEC_MAX + 16];
    snprintf(quoted, sizeof quoted, "schedule '%s': ", cases[i].spec);
    ASSERT_CONTAINS(fl_err_msg(), quoted);
    if (!all_zero(&s)) FL__FAIL("'%s': *out not zeroed on error", cases[i].spec);
  }
}

TEST(parse_too_long) {
  char spec[FL_SCHED_SPEC_MAX + 10];
  memset(spec, ' ', sizeof spec - 1);
  memcpy(spec, "const", 5);
  spec[sizeof spec - 1] = '\0';
  fl_sched_t s;
  ASSERT_EQ(fl_sched_parse(spec, &s), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "longer than 255 characters");
  spec[FL_SCHED_SPEC_MAX - 1] = '\0'; /* exactly the limit is fine */
  ASSERT_EQ(fl_sched_parse(spec, &s), 0);
  ASSERT_EQ(fl_sched_parse("const", NULL), FL_EINVAL);
}

TEST(format_round_trip) {
  static const struct {
    const char *spec, *canonical;
  } cases[] = {
    {"const", "const"},
    {"linear:T=10", "linear:T=10,end=0"},
    {"linear:end=0.001,T=1e3", "linear:T=1000,end=0.001"},
    {"exp:gamma=0.9", "exp:gamma=0.9,every=1"},
    {"exp:staircase,every=3,gamma=0.95", "exp:gamma=0.95,every=3,staircase"},
    {"inv:T=10", "inv:T=10,p=1"},
    {"inv:T=10,p=0.5,staircase", "inv:T=10,p=0.5,staircase"},
    {"poly:T=100", "poly:T=100,power=1,end=0"},
    {"poly:T=100,power=2,end=1e-5", "poly:T=100,power=2,end=1e-05"},
    {"step:every=30,gamma=0.1", "step:gamma=0.1,every=30"},
    {"piecewise:30=0.1,60=0.01", "piecewise:30=0.1,60=0.01"},
    {"cos:T=50", "cos:T=50,min=0"},
    {"cos:T=50,min=0.001,restart", "cos:T=50,min=0.001,restart,mult=1"},
    {"cos:T=50,restart,mult=2", "cos:T=50,min=0,restart,mult=2"},
    {"plateau", "plateau:factor=0.1,patience=10,cooldown=0,min=0,threshold=0.0001"},
    {"plateau:patience=3,factor=0.5,min=1e-4,cooldown=2,threshold=0",
     "plateau:factor=0.5,patience=3,cooldown=2,min=0.0001,threshold=0"},
    {"warmup:3+const", "warmup:3,start=0.33333333333333331+const"},
    {"warmup:4,start=0.1+cos:T=20", "warmup:4,start=0.1+cos:T=20,min=0"},
    {"warmup:10+plateau:patience=5",
     "warmup:10,start=0.1+plateau:factor=0.1,patience=5,cooldown=0,min=0,threshold=0.0001"},
    {"exp:gamma=0.1234567890123456789", "exp:gamma=0.12345678901234568,every=1"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fl_sched_t a, b;
    char buf[FL_SCHED_SPEC_MAX];
    PARSE_OK(cases[i].spec, &a);
    int n = fl_sched_format(&a, buf, sizeof buf);
    ASSERT_EQ(n, strlen(buf));
    ASSERT_STR_EQ(buf, cases[i].canonical);
    PARSE_OK(buf, &b);
    if (!sched_equal(&a, &b)) FL__FAIL("'%s' -> '%s' does not parse back equal", cases[i].spec, buf);
  }
}

TEST(format_truncates_like_snprintf) {
  fl_sched_t s;
  PARSE_OK("step:gamma=0.1,every=30", &s);
  char full[64], small[8];
  int n = fl_sched_format(&s, full, sizeof full);
  ASSERT_STR_EQ(full, "step:gamma=0.1,every=30");
  ASSERT_EQ(fl_sched_format(&s, small, sizeof small), n);
  ASSERT_STR_EQ(small, "step:ga");
  ASSERT_EQ(fl_sched_format(&s, NULL, 0), n);
}

TEST(heuristic) {
  ASSERT_NEAR(fl_sched_lr_heuristic(100, 1.0), 0.1, TOL);
  ASSERT_NEAR(fl_sched_lr_heuristic(10000, 0.5), 0.005, TOL);
  ASSERT_NEAR(fl_sched_lr_heuristic(1, 0.3), 0.3, TOL);
  ASSERT_NEAR(fl_sched_lr_heuristic(0, 0.3), 0.3, TOL);
}

/* --lr: a number, auto or auto:SCALE; auto resolved for a parameter count. */
TEST(parse_lr0) {
  double lr = -1;
  ASSERT_EQ(fl_sched_parse_lr0("0.1", 7850, &lr), 0);
  ASSERT_NEAR(lr, 0.1, 0);
  ASSERT_EQ(fl_sched_parse_lr0("auto", 100, &lr), 0);
  ASSERT_NEAR(lr, fl_sched_lr_heuristic(100, 1.0), 0);
  ASSERT_EQ(fl_sched_parse_lr0("auto:2", 100, &lr), 0);
  ASSERT_NEAR(lr, fl_sched_lr_heuristic(100, 2.0), 0);
  ASSERT_NEAR(lr, 0.2, TOL);
  /* Without lr0, the text alone is checked, auto included. */
  ASSERT_EQ(fl_sched_parse_lr0("auto:2", 0, NULL), 0);
  ASSERT_EQ(fl_sched_parse_lr0("5e-2", 0, NULL), 0);
  lr = -1;
  ASSERT_EQ(fl_sched_parse_lr0("auto", 0, &lr), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'auto' needs the model's parameter count");
  ASSERT_NEAR(lr, -1, 0); /* unchanged on error */
  const char *bad[] = {"",    "fast", "0",     "-0.1",   "1e400",   "1e-320", " 0.1",  "0.1 ",
                       "nan", "inf",  "auto:", "auto:0", "auto:-1", "auto:x", "auto2", "AUTO"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (fl_sched_parse_lr0(bad[i], 100, &lr) != FL_EINVAL)
      FL__FAIL("'%s' was accepted (%g)", bad[i], lr);
    ASSERT_EQ(fl_sched_parse_lr0(bad[i], 0, NULL), FL_EINVAL);
    char want[64];
    snprintf(want, sizeof want, "'%s' is not a positive number, auto or auto:SCALE", bad[i]);
    ASSERT_CONTAINS(fl_err_msg(), want);
  }
  ASSERT_NEAR(lr, -1, 0);
}

/* A local schedule is any schedule but plateau, which needs an evaluation
 * loss: one function says so, for the command line and for a client. */
TEST(parse_local) {
  fl_sched_t s, r;
  ASSERT_EQ(fl_sched_parse_local("warmup:2+exp:gamma=0.5", &s), 0);
  PARSE_OK("warmup:2+exp:gamma=0.5", &r);
  ASSERT_TRUE(sched_equal(&s, &r));
  ASSERT_EQ(fl_sched_parse_local(NULL, &s), 0);
  ASSERT_EQ(s.kind, FL_SCHED_CONST);
  const char *bad[] = {"plateau", "plateau:factor=0.5", "warmup:3+plateau"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ASSERT_EQ(fl_sched_parse_local(bad[i], &s), FL_EINVAL);
    ASSERT_CONTAINS(fl_err_msg(), "plateau follows the evaluation loss");
    ASSERT_CONTAINS(fl_err_msg(), bad[i]);
    ASSERT_EQ(s.kind, FL_SCHED_CONST); /* zeroed */
  }
  /* Other errors are fl_sched_parse()'s. */
  ASSERT_EQ(fl_sched_parse_local("exp:gama=0.9", &s), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "unknown key 'gama'");
}

FL_TEST_MAIN()
