/* The CNN layers (common/fl_layers): every fast kernel against its naive
 * reference on shapes of every kind (same and valid padding, 1x1 and 5x5
 * kernels, several channels, odd sizes), every gradient against finite
 * differences of its loss, max pooling against values worked out by hand,
 * and a small network (conv, ReLU, pool, flatten, dense, softmax
 * cross-entropy) checked end to end by finite differences. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fl_layers.h"
#include "fl_rng.h"
#include "fl_test.h"

static float *rnd(fl_rng_t *r, size_t n, double scale) {
  float *v = malloc((n ? n : 1) * sizeof *v);
  for (size_t i = 0; i < n; i++)
    v[i] = (float)((fl_rng_uniform(r) * 2 - 1) * scale);
  return v;
}

/* max |a - b| / max(1, max |b|) */
static double rel_err(const float *a, const float *b, size_t n) {
  double d = 0, m = 1;
  for (size_t i = 0; i < n; i++) {
    d = fmax(d, fabs((double)a[i] - (double)b[i]));
    m = fmax(m, fabs((double)b[i]));
  }
  return d / m;
}

static double dot(const float *a, const float *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++)
    s += (double)a[i] * (double)b[i];
  return s;
}

static const fl_conv2d_t shapes[] = {
    {2, 1, 6, 5, 3, 3, 3, 1},  /* 'same', 3x3, one channel, odd width */
    {3, 2, 7, 7, 4, 5, 5, 2},  /* 'same', 5x5 */
    {2, 3, 8, 9, 2, 5, 5, 0},  /* 'valid' */
    {1, 4, 5, 5, 3, 1, 1, 0},  /* 1x1 */
    {2, 2, 4, 6, 5, 3, 2, 1},  /* a rectangular kernel */
    {1, 1, 28, 28, 4, 5, 5, 2} /* the FedAvg CNN's first layer, narrower */
};
#define NSHAPES (sizeof shapes / sizeof shapes[0])

TEST(conv_fast_equals_reference) {
  fl_rng_t r;
  fl_rng_seed(&r, 1);
  for (size_t k = 0; k < NSHAPES; k++) {
    const fl_conv2d_t *s = &shapes[k];
    ASSERT_TRUE(fl_conv2d_valid(s));
    const size_t ni = s->B * s->C * s->H * s->W, nw = s->OC * s->C * s->KH * s->KW;
    const size_t no = s->B * s->OC * fl_conv2d_oh(s) * fl_conv2d_ow(s);
    float *x = rnd(&r, ni, 1), *w = rnd(&r, nw, 0.5), *b = rnd(&r, s->OC, 0.5);
    float *dout = rnd(&r, no, 1), *col = malloc(fl_conv2d_col_size(s) * sizeof *col);
    float *o1 = malloc(no * sizeof *o1), *o2 = malloc(no * sizeof *o2);
    float *dx1 = malloc(ni * sizeof *dx1), *dx2 = malloc(ni * sizeof *dx2);
    float *dw1 = malloc(nw * sizeof *dw1), *dw2 = malloc(nw * sizeof *dw2);
    float db1[8], db2[8];
    fl_conv2d_forward(s, o1, x, w, b, col);
    fl_conv2d_forward_ref(s, o2, x, w, b);
    fl_conv2d_backward(s, dx1, dw1, db1, dout, x, w, col);
    fl_conv2d_backward_ref(s, dx2, dw2, db2, dout, x, w);
    double ef = rel_err(o1, o2, no), ex = rel_err(dx1, dx2, ni), ew = rel_err(dw1, dw2, nw),
           eb = rel_err(db1, db2, s->OC);
    if (ef > 1e-5 || ex > 1e-5 || ew > 1e-5 || eb > 1e-5)
      FL__FAIL("shape %zu: relative errors forward %.2g, dinp %.2g, dweight %.2g, dbias %.2g", k,
               ef, ex, ew, eb);
    /* dinp NULL: the weight gradients alone, the same bits */
    float *dw3 = malloc(nw * sizeof *dw3), db3[8];
    fl_conv2d_backward(s, NULL, dw3, db3, dout, x, w, col);
    ASSERT_TRUE(memcmp(dw1, dw3, nw * sizeof *dw3) == 0);
    free(dw3);
    free(x), free(w), free(b), free(dout), free(col), free(o1), free(o2);
    free(dx1), free(dx2), free(dw1), free(dw2);
  }
  /* Shapes the layer cannot take. */
  const fl_conv2d_t bad[] = {
      {1, 1, 3, 3, 1, 5, 5, 0}, {0, 1, 3, 3, 1, 1, 1, 0}, {1, 1, 3, 3, 0, 1, 1, 0}};
  for (size_t k = 0; k < 3; k++)
    ASSERT_FALSE(fl_conv2d_valid(&bad[k]));
}

/* L = sum(out * R): dL/dout = R, and each parameter's derivative by central
 * differences (the convolution is linear in each argument, so they are
 * exact but for float rounding). */
TEST(conv_gradients_by_finite_differences) {
  fl_rng_t r;
  fl_rng_seed(&r, 2);
  for (size_t k = 0; k < NSHAPES - 1; k++) {
    const fl_conv2d_t *s = &shapes[k];
    const size_t ni = s->B * s->C * s->H * s->W, nw = s->OC * s->C * s->KH * s->KW;
    const size_t no = s->B * s->OC * fl_conv2d_oh(s) * fl_conv2d_ow(s);
    float *x = rnd(&r, ni, 1), *w = rnd(&r, nw, 0.5), *b = rnd(&r, s->OC, 0.5);
    float *R = rnd(&r, no, 1), *col = malloc(fl_conv2d_col_size(s) * sizeof *col);
    float *o = malloc(no * sizeof *o), *dx = malloc(ni * sizeof *dx), *dw = malloc(nw * sizeof *dw);
    float db[8];
    fl_conv2d_backward(s, dx, dw, db, R, x, w, col);
    const float h = 1e-2f;
    double worst = 0;
    float *params[3] = {x, w, b}, *grads[3] = {dx, dw, db};
    size_t counts[3] = {ni, nw, s->OC};
    for (int p = 0; p < 3; p++)
      for (size_t i = 0; i < counts[p]; i += 1 + counts[p] / 23) {
        float keep = params[p][i];
        params[p][i] = keep + h;
        fl_conv2d_forward(s, o, x, w, b, col);
        double lp = dot(o, R, no);
        params[p][i] = keep - h;
        fl_conv2d_forward(s, o, x, w, b, col);
        double lm = dot(o, R, no);
        params[p][i] = keep;
        double fd = (lp - lm) / (2 * (double)h);
        worst = fmax(worst, fabs(fd - grads[p][i]) / fmax(1, fabs(fd)));
      }
    if (worst > 1e-3) FL__FAIL("shape %zu: worst relative gradient error %.3g", k, worst);
    free(x), free(w), free(b), free(R), free(col), free(o), free(dx), free(dw);
  }
}

TEST(maxpool_by_hand) {
  /* one 4x5 plane: the odd last column is dropped; ties go to the first */
  const float x[20] = {1,       5,  2, 2, 9, /**/ 3,  4,  2, 2, 9,
                       /**/ -1, -2, 7, 0, 9, /**/ -3, -4, 1, 7, 9};
  fl_pool2_t s = {1, 1, 4, 5};
  float out[4], dx[20];
  int32_t am[4];
  fl_maxpool2_forward(&s, out, am, x);
  const float want[4] = {5, 2, -1, 7};
  const int32_t want_am[4] = {1, 2, 10, 12};
  for (int i = 0; i < 4; i++) {
    ASSERT_DBL_OP(out[i], ==, want[i]);
    ASSERT_EQ(am[i], want_am[i]);
  }
  const float dout[4] = {0.5f, -1, 2, 3};
  fl_maxpool2_backward(&s, dx, dout, am);
  for (int i = 0; i < 20; i++) {
    float w = i == 1 ? 0.5f : i == 2 ? -1 : i == 10 ? 2 : i == 12 ? 3 : 0;
    ASSERT_DBL_OP(dx[i], ==, w);
  }
}

TEST(pool_relu_dense_xent_gradients) {
  fl_rng_t r;
  fl_rng_seed(&r, 3);
  /* dense: fast = reference, then finite differences of sum(out * R) */
  const size_t B = 7, IN = 37, OUT = 11;
  float *x = rnd(&r, B * IN, 1), *w = rnd(&r, OUT * IN, 0.3), *b = rnd(&r, OUT, 0.3);
  float *R = rnd(&r, B * OUT, 1), *o1 = malloc(B * OUT * 4), *o2 = malloc(B * OUT * 4);
  float *dx1 = malloc(B * IN * 4), *dx2 = malloc(B * IN * 4), *dw1 = malloc(OUT * IN * 4),
        *dw2 = malloc(OUT * IN * 4), db1[11], db2[11];
  fl_dense_forward(o1, x, w, b, B, IN, OUT);
  fl_dense_forward_ref(o2, x, w, b, B, IN, OUT);
  fl_dense_backward(dx1, dw1, db1, R, x, w, B, IN, OUT);
  fl_dense_backward_ref(dx2, dw2, db2, R, x, w, B, IN, OUT);
  ASSERT_LE(rel_err(o1, o2, B * OUT), 1e-5);
  ASSERT_LE(rel_err(dx1, dx2, B * IN), 1e-5);
  ASSERT_LE(rel_err(dw1, dw2, OUT * IN), 1e-5);
  ASSERT_LE(rel_err(db1, db2, OUT), 1e-5);
  double worst = 0;
  for (size_t i = 0; i < OUT * IN; i += 13) {
    float keep = w[i];
    w[i] = keep + 1e-2f;
    fl_dense_forward(o1, x, w, b, B, IN, OUT);
    double lp = dot(o1, R, B * OUT);
    w[i] = keep - 1e-2f;
    fl_dense_forward(o1, x, w, b, B, IN, OUT);
    double lm = dot(o1, R, B * OUT);
    w[i] = keep;
    worst = fmax(worst, fabs((lp - lm) / 2e-2 - dw1[i]) / fmax(1, fabs(dw1[i])));
  }
  ASSERT_LE(worst, 1e-3);

  /* ReLU */
  float a[6] = {-1, 0, 0.5f, 2, -0.1f, 3}, ra[6], d[6] = {1, 1, 1, 1, 1, 1}, da[6];
  fl_relu_forward(ra, a, 6);
  fl_relu_backward(da, d, ra, 6);
  const float want_r[6] = {0, 0, 0.5f, 2, 0, 3}, want_d[6] = {0, 0, 1, 1, 0, 1};
  for (int i = 0; i < 6; i++) {
    ASSERT_DBL_OP(ra[i], ==, want_r[i]);
    ASSERT_DBL_OP(da[i], ==, want_d[i]);
  }

  /* softmax cross-entropy: log K for equal logits; gradient by differences */
  float z[3 * 4] = {0}, dz[12];
  int32_t y[3] = {0, 3, 2};
  ASSERT_NEAR(fl_softmax_xent(dz, z, y, 3, 4), log(4.0), 1e-6);
  ASSERT_NEAR(dz[0], (0.25 - 1) / 3, 1e-7);
  ASSERT_NEAR(dz[1], 0.25 / 3, 1e-7);
  for (int i = 0; i < 12; i++)
    z[i] = (float)(fl_rng_uniform(&r) * 6 - 3);
  fl_softmax_xent(dz, z, y, 3, 4);
  worst = 0;
  for (int i = 0; i < 12; i++) {
    float keep = z[i];
    z[i] = keep + 1e-3f;
    double lp = fl_softmax_xent(NULL, z, y, 3, 4);
    z[i] = keep - 1e-3f;
    double lm = fl_softmax_xent(NULL, z, y, 3, 4);
    z[i] = keep;
    worst = fmax(worst, fabs((lp - lm) / 2e-3 - dz[i]));
  }
  ASSERT_LE(worst, 2e-3);
  /* huge logits stay finite (computed from the row's maximum) */
  float big[2] = {1e30f, -1e30f}, dbig[2];
  int32_t y1[1] = {1};
  float l = fl_softmax_xent(dbig, big, y1, 1, 2);
  ASSERT_TRUE(isfinite(l) && isfinite(dbig[0]) && isfinite(dbig[1]));
  free(x), free(w), free(b), free(R), free(o1), free(o2), free(dx1), free(dx2), free(dw1);
  free(dw2);
}

/* A small CNN, end to end: conv 3x3 'same' (2 -> 3 channels) on 2 images of
 * 6x6, ReLU, 2x2 max pooling, flatten (NCHW), dense 27 -> 4, softmax
 * cross-entropy. Every parameter's gradient from the chained backward
 * against central differences of the loss. */
typedef struct {
  fl_conv2d_t cs;
  fl_pool2_t ps;
  float *x, *cw, *cb, *dw, *db; /* input, conv and dense parameters */
  int32_t y[2];
  float *a1, *p1, *z, *col;
  int32_t *am;
} net_t;

static double net_loss(net_t *n, float *dcw, float *dcb, float *ddw, float *ddb) {
  const fl_conv2d_t *s = &n->cs;
  const size_t A = 2 * 3 * 6 * 6; /* conv output: (2, 3, 6, 6) */
  fl_conv2d_forward(s, n->a1, n->x, n->cw, n->cb, n->col);
  fl_relu_forward(n->a1, n->a1, A);
  fl_maxpool2_forward(&n->ps, n->p1, n->am, n->a1);
  fl_dense_forward(n->z, n->p1, n->dw, n->db, 2, 27, 4);
  float dz[8];
  double loss = fl_softmax_xent(dcw ? dz : NULL, n->z, n->y, 2, 4);
  if (!dcw) return loss;
  float dp[54], da[216];
  fl_dense_backward(dp, ddw, ddb, dz, n->p1, n->dw, 2, 27, 4);
  fl_maxpool2_backward(&n->ps, da, dp, n->am);
  fl_relu_backward(da, da, n->a1, A);
  fl_conv2d_backward(s, NULL, dcw, dcb, da, n->x, n->cw, n->col);
  return loss;
}

TEST(small_cnn_end_to_end_gradients) {
  fl_rng_t r;
  fl_rng_seed(&r, 4);
  net_t n = {{2, 2, 6, 6, 3, 3, 3, 1},
             {2, 3, 6, 6},
             NULL,
             NULL,
             NULL,
             NULL,
             NULL,
             {1, 3},
             NULL,
             NULL,
             NULL,
             NULL,
             NULL};
  n.x = rnd(&r, 2 * 2 * 36, 1);
  n.cw = rnd(&r, 3 * 2 * 9, 0.4);
  n.cb = rnd(&r, 3, 0.1);
  n.dw = rnd(&r, 4 * 27, 0.3);
  n.db = rnd(&r, 4, 0.1);
  n.a1 = malloc(216 * sizeof(float));
  n.p1 = malloc(54 * sizeof(float));
  n.z = malloc(8 * sizeof(float));
  n.col = malloc(fl_conv2d_col_size(&n.cs) * sizeof(float));
  n.am = malloc(54 * sizeof(int32_t));
  float dcw[54], dcb[3], ddw[108], ddb[4];
  net_loss(&n, dcw, dcb, ddw, ddb);
  float *params[4] = {n.cw, n.cb, n.dw, n.db}, *grads[4] = {dcw, dcb, ddw, ddb};
  const size_t counts[4] = {54, 3, 108, 4};
  const float h = 1e-3f;
  double worst = 0;
  size_t checked = 0;
  for (int p = 0; p < 4; p++)
    for (size_t i = 0; i < counts[p]; i++) {
      float keep = params[p][i];
      params[p][i] = keep + h;
      double lp = net_loss(&n, NULL, NULL, NULL, NULL);
      params[p][i] = keep - h;
      double lm = net_loss(&n, NULL, NULL, NULL, NULL);
      params[p][i] = keep;
      double fd = (lp - lm) / (2 * (double)h);
      worst = fmax(worst, fabs(fd - grads[p][i]) / fmax(0.05, fabs(fd)));
      checked++;
    }
  if (worst > 2e-2) FL__FAIL("worst relative error %.3g over %zu parameters", worst, checked);
  ASSERT_EQ(checked, 169);
  free(n.x), free(n.cw), free(n.cb), free(n.dw), free(n.db), free(n.a1), free(n.p1), free(n.z);
  free(n.col), free(n.am);
}

FL_TEST_MAIN()
