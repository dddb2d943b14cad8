/* Server optimizers (common/fl_server_optim): each kind's step against
 * values worked out by hand from Reddi et al. 2021, Algorithm 2 (and
 * Hsu et al. 2019 for FedAvgM), the specs and their errors, the state's
 * initial values and checks, and FedAvg at rate 1 being x += d bit for bit.
 * tests/it_server_optim_torch.sh compares the steps with torch.optim. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"
#include "fl_server_optim.h"
#include "fl_test.h"

/* Two coordinates, two rounds: x0 = (1, -2); d1 = (0.4, -0.4), d2 = (1.2,
 * 0); eta 0.1; tau 0.3 so that v0 = tau^2 = 0.09 and 0.09 + 0.4^2 = 0.25,
 * 0.25 + 1.2^2 = 1.69 are squares (Adagrad's numbers come out round). */
static const float X0[2] = {1.0f, -2.0f};
static const float D[2][2] = {{0.4f, -0.4f}, {1.2f, 0.0f}};

/* Runs two steps of spec at eta 0.1; x after each step into xs[2][2], the
 * final state into m and v. */
static int two_steps(const char *spec, float xs[2][2], float m[2], float v[2]) {
  fl_sopt_config_t c;
  int rc = fl_sopt_parse(spec, &c);
  if (rc) return rc;
  float x[2] = {X0[0], X0[1]};
  float *st[FL_SOPT_MAX_STATE] = {m, v};
  fl_sopt_init(&c, st, 2);
  for (int t = 0; t < 2; t++) {
    fl_sopt_step(&c, 0.1, x, D[t], st, 2);
    xs[t][0] = x[0];
    xs[t][1] = x[1];
  }
  return 0;
}

#define TOL 2e-7 /* float rounding of values near 1 */

TEST(fedavg_is_x_plus_eta_d) {
  float xs[2][2], m[2] = {0}, v[2] = {0};
  ASSERT_EQ(two_steps("fedavg", xs, m, v), 0);
  /* x1 = x0 + 0.1 d1 = (1.04, -2.04); x2 = x1 + 0.1 d2 = (1.16, -2.04). */
  ASSERT_NEAR(xs[0][0], 1.04, TOL);
  ASSERT_NEAR(xs[0][1], -2.04, TOL);
  ASSERT_NEAR(xs[1][0], 1.16, TOL);
  ASSERT_NEAR(xs[1][1], -2.04, TOL);
}

TEST(fedavgm_is_heavy_ball_momentum) {
  float xs[2][2], m[2], v[2] = {0};
  ASSERT_EQ(two_steps("fedavgm:0.9", xs, m, v), 0);
  /* m1 = d1 = (0.4, -0.4), x1 = (1.04, -2.04); m2 = 0.9 m1 + d2 = (1.56,
   * -0.36), x2 = x1 + 0.1 m2 = (1.196, -2.076). */
  ASSERT_NEAR(xs[0][0], 1.04, TOL);
  ASSERT_NEAR(xs[0][1], -2.04, TOL);
  ASSERT_NEAR(m[0], 1.56, TOL);
  ASSERT_NEAR(m[1], -0.36, TOL);
  ASSERT_NEAR(xs[1][0], 1.196, TOL);
  ASSERT_NEAR(xs[1][1], -2.076, TOL);
  /* momentum=0 is FedAvg. */
  float ys[2][2];
  ASSERT_EQ(two_steps("fedavgm:momentum=0", ys, m, v), 0);
  ASSERT_NEAR(ys[1][0], 1.16, TOL);
}

TEST(fedadagrad_round_numbers) {
  float xs[2][2], m[2], v[2];
  ASSERT_EQ(two_steps("fedadagrad:tau=0.3", xs, m, v), 0); /* beta1 0: plain Adagrad */
  /* v1 = 0.09 + 0.16 = 0.25, sqrt 0.5: x1 = x0 +- 0.1 * 0.4 / (0.5 + 0.3)
   * = (1.05, -2.05). v2 = (0.25 + 1.44, 0.25) = (1.69, 0.25): x2 = (1.05 +
   * 0.1 * 1.2 / (1.3 + 0.3), -2.05 + 0) = (1.125, -2.05). */
  ASSERT_NEAR(xs[0][0], 1.05, TOL);
  ASSERT_NEAR(xs[0][1], -2.05, TOL);
  ASSERT_NEAR(xs[1][0], 1.125, TOL);
  ASSERT_NEAR(xs[1][1], -2.05, TOL);
  ASSERT_NEAR(v[0], 1.69, TOL * 2);
  ASSERT_NEAR(v[1], 0.25, TOL);
  ASSERT_NEAR(m[0], 1.2, TOL);
}

TEST(fedadam_no_bias_correction) {
  float xs[2][2], m[2], v[2];
  ASSERT_EQ(two_steps("fedadam:tau=0.3", xs, m, v), 0); /* beta1 0.9, beta2 0.99 */
  /* m1 = 0.1 * 0.4 = 0.04; v1 = 0.99 * 0.09 + 0.01 * 0.16 = 0.0907;
   * x1 = 1 + 0.1 * 0.04 / (sqrt(0.0907) + 0.3) = 1 + 0.004 / 0.6011644
   * = 1.0066538. m2 = 0.9 * 0.04 + 0.1 * 1.2 = 0.156; v2 = 0.99 * 0.0907
   * + 0.01 * 1.44 = 0.104193; x2 = x1 + 0.0156 / (0.3227894 + 0.3) =
   * 1.0317023. Second coordinate: m2 = -0.036, v2 = 0.089793, x2 =
   * -2.0066538 - 0.0036 / (0.2996548 + 0.3) = -2.0126572. */
  ASSERT_NEAR(xs[0][0], 1.0066538, 1e-6);
  ASSERT_NEAR(xs[0][1], -2.0066538, 1e-6);
  ASSERT_NEAR(xs[1][0], 1.0317023, 1e-6);
  ASSERT_NEAR(xs[1][1], -2.0126572, 1e-6);
  ASSERT_NEAR(m[0], 0.156, TOL);
  ASSERT_NEAR(v[0], 0.104193, TOL);
  ASSERT_NEAR(v[1], 0.089793, TOL);
}

TEST(fedyogi_sign_rule) {
  float xs[2][2], m[2], v[2];
  ASSERT_EQ(two_steps("fedyogi:beta1=0.9,beta2=0.99,tau=0.3", xs, m, v), 0);
  /* v0 = 0.09 < d1^2 = 0.16: v grows, v1 = 0.09 + 0.01 * 0.16 = 0.0916;
   * x1 = 1 + 0.004 / (0.3026549 + 0.3) = 1.0066373. Then v1 < 1.44:
   * v2 = 0.0916 + 0.0144 = 0.106, x2 = 1.0066373 + 0.0156 / (0.3255764 +
   * 0.3) = 1.0315743. Second coordinate, d2 = 0 < v1: v2 = v1 - 0 =
   * 0.0916 (sign +1 times 0), x2 = -2.0066373 - 0.0036 / 0.6026549 =
   * -2.0126109. */
  ASSERT_NEAR(xs[0][0], 1.0066373, 1e-6);
  ASSERT_NEAR(xs[1][0], 1.0315743, 1e-6);
  ASSERT_NEAR(xs[1][1], -2.0126109, 1e-6);
  ASSERT_NEAR(v[0], 0.106, TOL);
  ASSERT_NEAR(v[1], 0.0916, TOL);
  /* Where v exceeds d^2, Yogi lowers v by (1 - beta2) d^2 (Adam would
   * move it by (1 - beta2)(d^2 - v)). */
  fl_sopt_config_t c;
  ASSERT_EQ(fl_sopt_parse("fedyogi:tau=1", &c), 0);
  float x = 0, d = 0.5f, mm = 0, vv = 0;
  float *st[2] = {&mm, &vv};
  fl_sopt_init(&c, st, 1);
  ASSERT_DBL_OP(vv, ==, 1.0f);
  fl_sopt_step(&c, 1.0, &x, &d, st, 1);
  ASSERT_NEAR(vv, 1 - 0.01 * 0.25, TOL);
}

/* Plain FedAvg at rate 1 is x += d, bit for bit, for any values. */
TEST(fedavg_rate_one_is_bitwise_x_plus_d) {
  fl_sopt_config_t c;
  ASSERT_EQ(fl_sopt_parse("fedavg", &c), 0);
  ASSERT_EQ(fl_sopt_num_state(&c), 0);
  enum { N = 4096 };
  float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y), *d = malloc(N * sizeof *d);
  ASSERT_TRUE(x && y && d);
  uint32_t s = 12345;
  for (int i = 0; i < N; i++) {
    s = s * 1664525u + 1013904223u;
    x[i] = y[i] = ldexpf((float)(s >> 8) / 16777216.0f - 0.5f, (int)(s % 40) - 20);
    s = s * 1664525u + 1013904223u;
    d[i] = ldexpf((float)(s >> 8) / 16777216.0f - 0.5f, (int)(s % 40) - 30);
  }
  fl_sopt_step(&c, 1.0, x, d, NULL, N);
  int same = 1;
  for (int i = 0; i < N; i++) {
    float want = y[i] + d[i];
    same &= memcmp(&want, &x[i], sizeof want) == 0;
  }
  free(x);
  free(y);
  free(d);
  ASSERT_TRUE(same);
}

TEST(specs_parse_format_and_defaults) {
  fl_sopt_config_t c;
  char buf[128];
  const struct {
    const char *spec, *canonical;
  } ok[] = {
      {"fedavg", "fedavg"},
      {"fedavgm", "fedavgm:momentum=0.9"},
      {"fedavgm:0.5", "fedavgm:momentum=0.5"},
      {"fedavgm:momentum=0", "fedavgm:momentum=0"},
      {"fedadagrad", "fedadagrad:beta1=0,tau=0.001"},
      {"fedadam", "fedadam:beta1=0.9,beta2=0.99,tau=0.001"},
      {"fedyogi:tau=1e-2", "fedyogi:beta1=0.9,beta2=0.99,tau=0.01"},
      {"fedyogi:beta2=0.999,beta1=0.8", "fedyogi:beta1=0.8,beta2=0.999,tau=0.001"},
      {"fedadam:beta1=0", "fedadam:beta1=0,beta2=0.99,tau=0.001"},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    ASSERT_EQ(fl_sopt_parse(ok[i].spec, &c), 0);
    ASSERT_EQ(fl_sopt_format(&c, buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, ok[i].canonical);
    fl_sopt_config_t back;
    ASSERT_EQ(fl_sopt_parse(buf, &back), 0);
    ASSERT_TRUE(memcmp(&back, &c, sizeof c) == 0);
  }
  ASSERT_EQ(fl_sopt_parse("fedadam", &c), 0);
  ASSERT_EQ(fl_sopt_num_state(&c), 2);
  ASSERT_STR_EQ(fl_sopt_state_name(0), "m");
  ASSERT_STR_EQ(fl_sopt_state_name(1), "v");
  ASSERT_EQ(fl_sopt_format(&c, buf, 10), FL_ETOOBIG);
}

TEST(bad_specs_get_clear_errors) {
  fl_sopt_config_t c, before;
  ASSERT_EQ(fl_sopt_parse("fedadam", &c), 0);
  before = c;
  const struct {
    const char *spec;
    int rc;
    const char *msg;
  } bad[] = {
      {"fedsgd", FL_EINVAL, "unknown kind 'fedsgd' (fedavg, fedavgm[:momentum=M], fedadagrad"},
      {"", FL_EINVAL, "unknown kind ''"},
      {"FedAdam", FL_EINVAL, "unknown kind 'FedAdam'"},
      {"fedyogi:tau=0", FL_ERANGE, "tau=0 must be > 0"},
      {"fedyogi:tau=-1e-3", FL_ERANGE, "tau=-0.001 must be > 0"},
      {"fedadam:beta1=1", FL_ERANGE, "beta1=1 must be in [0, 1)"},
      {"fedadam:beta2=-0.1", FL_ERANGE, "beta2=-0.1 must be in [0, 1)"},
      {"fedavgm:1.5", FL_ERANGE, "momentum=1.5 must be in [0, 1)"},
      {"fedavgm:momentum=nan", FL_EINVAL, "momentum='nan' is not a finite number"},
      {"fedadam:tau=inf", FL_EINVAL, "tau='inf' is not a finite number"},
      {"fedadam:beta3=0.5", FL_EINVAL, "unknown key 'beta3' for fedadam (keys: beta1, beta2, tau)"},
      {"fedadagrad:beta2=0.9", FL_EINVAL, "unknown key 'beta2' for fedadagrad (keys: beta1, tau)"},
      {"fedavg:tau=1", FL_EINVAL, "unknown key 'tau' for fedavg (keys: none)"},
      {"fedadam:0.9", FL_EINVAL, "'0.9' is not key=value"},
      {"fedadam:", FL_EINVAL, "nothing after ':'"},
      {"fedadam:tau=", FL_EINVAL, "tau='' is not a finite number"},
      {"fedadam:tau= 1", FL_EINVAL, "is not a finite number"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ASSERT_EQ(fl_sopt_parse(bad[i].spec, &c), bad[i].rc);
    ASSERT_CONTAINS(fl_err_msg(), bad[i].msg);
    ASSERT_TRUE(memcmp(&before, &c, sizeof c) == 0); /* unchanged */
  }
}

TEST(state_init_and_check) {
  fl_sopt_config_t c;
  ASSERT_EQ(fl_sopt_parse("fedadam:tau=0.01", &c), 0);
  float m[3] = {7, 7, 7}, v[3] = {7, 7, 7};
  float *st[2] = {m, v};
  fl_sopt_init(&c, st, 3);
  for (int i = 0; i < 3; i++) {
    ASSERT_DBL_OP(m[i], ==, 0.0f);
    ASSERT_DBL_OP(v[i], ==, (float)(0.01 * 0.01));
  }
  size_t bv = 9, bi = 9;
  ASSERT_EQ(fl_sopt_check_state(&c, st, 3, &bv, &bi), 1);
  m[1] = -5; /* m may be negative */
  ASSERT_EQ(fl_sopt_check_state(&c, st, 3, &bv, &bi), 1);
  v[2] = -1e-9f;
  ASSERT_EQ(fl_sopt_check_state(&c, st, 3, &bv, &bi), 0);
  ASSERT_EQ(bv, 1);
  ASSERT_EQ(bi, 2);
  v[2] = 0;
  m[0] = NAN;
  ASSERT_EQ(fl_sopt_check_state(&c, st, 3, &bv, &bi), 0);
  ASSERT_EQ(bv, 0);
  ASSERT_EQ(bi, 0);
}

/* The same inputs give the same bits, step after step. */
TEST(steps_are_deterministic) {
  const char *specs[] = {"fedavgm", "fedadagrad", "fedadam", "fedyogi"};
  for (size_t k = 0; k < 4; k++) {
    fl_sopt_config_t c;
    ASSERT_EQ(fl_sopt_parse(specs[k], &c), 0);
    float x[2][64], m[2][64] = {{0}}, v[2][64] = {{0}}, d[64];
    for (int r = 0; r < 2; r++) {
      float *st[2] = {m[r], v[r]};
      fl_sopt_init(&c, st, 64);
      for (int i = 0; i < 64; i++)
        x[r][i] = (float)i / 64;
      for (int t = 0; t < 20; t++) {
        for (int i = 0; i < 64; i++)
          d[i] = sinf((float)(t * 64 + i)) * 0.01f;
        fl_sopt_step(&c, 0.05, x[r], d, st, 64);
      }
    }
    ASSERT_TRUE(memcmp(x[0], x[1], sizeof x[0]) == 0);
    ASSERT_TRUE(memcmp(v[0], v[1], sizeof v[0]) == 0);
  }
}

FL_TEST_MAIN()
