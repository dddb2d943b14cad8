/* Tests for common/fl_model: parsing and layout, init, the BLAS path against
 * the plain-loop reference, both against central finite differences,
 * evaluate(), determinism and a short training run. */
#include "fl_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fl_blas.h"
#include "fl_error.h"
#include "fl_rng.h"
#include "fl_test.h"

/* Random inputs in [-1, 1) and labels in [0, C). x (B, in); y (B). */
static void random_batch(uint64_t seed, size_t B, size_t in, size_t C, float *x, int32_t *y) {
  fl_rng_t r;
  fl_rng_seed(&r, seed);
  for (size_t i = 0; i < B * in; i++) x[i] = (float)(2.0 * fl_rng_uniform(&r) - 1.0);
  for (size_t i = 0; i < B; i++) y[i] = (int32_t)fl_rng_below(&r, C);
}

/* Test oracle, independent of fl_model.c: the mean loss in double. */
static double loss_double(const fl_model_spec_t *m, const float *params, const float *x,
                          const int32_t *y, size_t B) {
  double total = 0;
  for (size_t i = 0; i < B; i++) {
    double a[2][1024] = {{0}};
    for (size_t k = 0; k < m->dims[0]; k++) a[0][k] = x[i * m->dims[0] + k];
    const float *p = params;
    int cur = 0;
    for (size_t l = 0; l < m->num_layers; l++) {
      size_t in = m->dims[l], out = m->dims[l + 1];
      for (size_t j = 0; j < out; j++) {
        double s = p[out * in + j];
        for (size_t k = 0; k < in; k++) s += (double)p[j * in + k] * a[cur][k];
        a[!cur][j] = (l + 1 < m->num_layers && s < 0) ? 0 : s;
      }
      p += out * in + out;
      cur = !cur;
    }
    size_t C = m->dims[m->num_layers];
    double mx = a[cur][0], sum = 0;
    for (size_t j = 1; j < C; j++) mx = fmax(mx, a[cur][j]);
    for (size_t j = 0; j < C; j++) sum += exp(a[cur][j] - mx);
    total += log(sum) + mx - a[cur][y[i]];
  }
  return total / (double)B;
}

TEST(parse_softmax_and_mlp) {
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("softmax", 784, 10, &m), 0);
  ASSERT_EQ(m.num_layers, 1);
  ASSERT_EQ(m.dims[0], 784);
  ASSERT_EQ(m.dims[1], 10);
  ASSERT_EQ(m.num_params, 7850);
  ASSERT_STR_EQ(m.spec, "softmax");
  ASSERT_EQ(fl_model_parse("mlp:200,200", 784, 10, &m), 0);
  ASSERT_EQ(m.num_layers, 3);
  ASSERT_EQ(m.num_params, 199210);
  ASSERT_EQ(m.dims[1], 200);
  ASSERT_EQ(m.dims[3], 10);
  ASSERT_STR_EQ(m.spec, "mlp:200,200");
  ASSERT_EQ(fl_model_parse("mlp:1,2,3,4,5,6,7", 3, 2, &m), 0);
  ASSERT_EQ(m.num_layers, 8);
  ASSERT_EQ(fl_model_parse("mlp:65536", 1, 1, &m), 0);
}

TEST(parse_errors_name_the_bad_part) {
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("mlp:200,x", 784, 10, &m), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'x'");
  ASSERT_EQ(fl_model_parse("mlp:200,,3", 784, 10, &m), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "hidden width ''");
  ASSERT_EQ(fl_model_parse("mlp:0", 784, 10, &m), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'0'");
  ASSERT_EQ(fl_model_parse("mlp:-5", 784, 10, &m), FL_EINVAL);
  ASSERT_EQ(fl_model_parse("mlp: 5", 784, 10, &m), FL_EINVAL);
  ASSERT_EQ(fl_model_parse("mlp:5,", 784, 10, &m), FL_EINVAL);
  ASSERT_EQ(fl_model_parse("mlp:65537", 784, 10, &m), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "65537");
  ASSERT_EQ(fl_model_parse("mlp:99999999999999999999", 784, 10, &m), FL_EINVAL);
  ASSERT_EQ(fl_model_parse("mlp:", 784, 10, &m), FL_EINVAL);
  ASSERT_EQ(fl_model_parse("mlp:1,2,3,4,5,6,7,8", 3, 2, &m), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "hidden layers");
  ASSERT_EQ(fl_model_parse("resnet", 784, 10, &m), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "softmax");
  ASSERT_CONTAINS(fl_err_msg(), "'cnn:ITEM,...'");
  ASSERT_EQ(fl_model_parse("softmax", 0, 10, &m), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "input");
  ASSERT_EQ(fl_model_parse("softmax", 784, 0, &m), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "class");
  /* 65536^2 * 7 layers: far over the parameter limit, must not wrap. */
  ASSERT_EQ(fl_model_parse("mlp:65536,65536,65536,65536,65536,65536,65536", 65536, 65536, &m),
            FL_ETOOBIG);
  ASSERT_EQ(fl_model_parse("softmax", (size_t)1 << 20, 1024, &m), FL_ETOOBIG);
  char longspec[300];
  memset(longspec, '1', sizeof longspec);
  memcpy(longspec, "mlp:", 4);
  longspec[sizeof longspec - 1] = 0;
  ASSERT_EQ(fl_model_parse(longspec, 3, 2, &m), FL_EINVAL);
}

TEST(tensor_layout) {
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("mlp:5,4", 7, 3, &m), 0);
  ASSERT_EQ(fl_model_num_tensors(&m), 6);
  fl_tensor_info_t t;
  size_t expect_off = 0;
  for (size_t i = 0; i < 6; i++) {
    fl_model_tensor(&m, i, &t);
    ASSERT_EQ(t.offset, expect_off);
    expect_off += t.count;
  }
  ASSERT_EQ(expect_off, m.num_params);
  fl_model_tensor(&m, 2, &t);
  ASSERT_STR_EQ(t.name, "layers.1.weight");
  ASSERT_EQ(t.ndim, 2);
  ASSERT_EQ(t.shape[0], 4);
  ASSERT_EQ(t.shape[1], 5);
  ASSERT_EQ(t.offset, 5 * 7 + 5);
  fl_model_tensor(&m, 5, &t);
  ASSERT_STR_EQ(t.name, "layers.2.bias");
  ASSERT_EQ(t.ndim, 1);
  ASSERT_EQ(t.shape[0], 3);
  ASSERT_EQ(t.count, 3);
}

/* A custom model: any named tensors, back to back in one buffer. */
TEST(custom_layout) {
  fl_layout_t *l = fl_layout_new();
  ASSERT_TRUE(l != NULL);
  uint32_t conv[4] = {8, 1, 3, 3}, fc[2] = {10, 72}, bias[1] = {10};
  ASSERT_EQ(fl_layout_add(l, "conv1.weight", 4, conv), 0);
  ASSERT_EQ(fl_layout_add(l, "fc.weight", 2, fc), 0);
  ASSERT_EQ(fl_layout_add(l, "fc.bias", 1, bias), 0);
  ASSERT_EQ(fl_layout_add(l, "temperature", 0, NULL), 0); /* a scalar */
  ASSERT_EQ(fl_layout_add(l, "fc.bias", 1, bias), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "tensor 'fc.bias' appears twice");
  ASSERT_EQ(fl_layout_add(l, "bad name", 1, bias), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "byte 0x20 at 3");
  ASSERT_EQ(fl_layout_add(l, "q\"", 1, bias), FL_EINVAL);
  uint32_t zero[2] = {3, 0};
  ASSERT_EQ(fl_layout_add(l, "empty", 2, zero), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "tensor 'empty' has an empty dimension [3,0]");
  uint32_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  ASSERT_EQ(fl_layout_add(l, "deep", 9, nine), FL_EINVAL);
  uint32_t huge[2] = {1u << 20, 1u << 20};
  ASSERT_EQ(fl_layout_add(l, "huge", 2, huge), FL_ETOOBIG);
  ASSERT_EQ(l->n, 4);
  ASSERT_EQ(l->num_params, 72 + 720 + 10 + 1);

  fl_model_spec_t m;
  ASSERT_EQ(fl_model_custom(l, &m), 0);
  ASSERT_STR_EQ(m.spec, "custom");
  ASSERT_FALSE(fl_model_is_builtin(&m));
  ASSERT_EQ(m.num_params, 803);
  ASSERT_EQ(fl_model_num_tensors(&m), 4);
  fl_tensor_info_t t;
  fl_model_tensor(&m, 2, &t);
  ASSERT_STR_EQ(t.name, "fc.bias");
  ASSERT_EQ(t.offset, 792);
  ASSERT_EQ(t.count, 10);
  fl_model_tensor(&m, 3, &t);
  ASSERT_EQ(t.ndim, 0);
  ASSERT_EQ(t.count, 1);
  ASSERT_EQ(fl_model_parse("custom", 10, 2, &m), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--init");

  fl_layout_t *l2 = fl_layout_new();
  ASSERT_EQ(fl_layout_add(l2, "conv1.weight", 4, conv), 0);
  ASSERT_EQ(fl_layout_add(l2, "fc.weight", 2, fc), 0);
  ASSERT_EQ(fl_layout_add(l2, "fc.bias", 1, bias), 0);
  ASSERT_FALSE(fl_layout_equal(l, l2));
  char f1[32], f2[32];
  ASSERT_TRUE(strcmp(fl_layout_fingerprint(l, f1, sizeof f1), fl_layout_fingerprint(l2, f2, sizeof f2)) != 0);
  ASSERT_EQ(fl_layout_add(l2, "temperature", 0, NULL), 0);
  ASSERT_TRUE(fl_layout_equal(l, l2));
  ASSERT_STR_EQ(fl_layout_fingerprint(l, f1, sizeof f1), fl_layout_fingerprint(l2, f2, sizeof f2));
  fl_layout_destroy(&l);
  fl_layout_destroy(&l2);
  fl_layout_destroy(&l2); /* NULL-safe */
}

TEST(init_bounds_and_determinism) {
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("mlp:200,200", 784, 10, &m), 0);
  float *a = malloc(m.num_params * sizeof(float)), *b = malloc(m.num_params * sizeof(float));
  fl_model_init(&m, a, 42);
  fl_model_init(&m, b, 42);
  ASSERT_EQ(memcmp(a, b, m.num_params * sizeof(float)), 0);
  fl_model_init(&m, b, 43);
  ASSERT_NE(memcmp(a, b, m.num_params * sizeof(float)), 0);
  /* First value is U(-1/sqrt(784), 1/sqrt(784)) from the first draw. */
  fl_rng_t r;
  fl_rng_seed(&r, 42);
  ASSERT_NEAR(a[0], (2.0 * fl_rng_uniform(&r) - 1.0) / 28.0, 1e-7);
  for (size_t i = 0; i < 6; i++) {
    fl_tensor_info_t t;
    fl_model_tensor(&m, i, &t);
    double bound = 1.0 / sqrt((double)m.dims[i / 2]), mx = 0, mean = 0;
    for (size_t k = 0; k < t.count; k++) {
      mx = fmax(mx, fabs(a[t.offset + k]));
      mean += a[t.offset + k];
    }
    ASSERT_DBL_OP(mx, <=, bound);
    if (t.count > 1000) ASSERT_DBL_OP(mx, >, 0.99 * bound);
    if (t.count > 1000) ASSERT_NEAR(mean / (double)t.count, 0.0, 0.05 * bound);
  }
  free(a);
  free(b);
}

/* Both gradient paths against central differences of the double-precision
 * loss, every parameter, relative error below 1e-2. */
static void gradcheck(int *fl__failed, const char *spec, size_t in, size_t C, size_t B) {
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse(spec, in, C, &m), 0);
  size_t n = m.num_params;
  float *p = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float)),
        *gr = malloc(n * sizeof(float)), *x = malloc(B * in * sizeof(float));
  int32_t *y = malloc(B * sizeof(int32_t));
  fl_model_init(&m, p, 7);
  /* Larger weights than the default init, so every layer matters. */
  for (size_t i = 0; i < n; i++) p[i] *= 3.0f;
  random_batch(11, B, in, C, x, y);
  fl_model_ws_t *ws = fl_model_ws_new(&m, B);
  ASSERT_TRUE(ws != NULL);
  float loss = fl_model_loss_grad(&m, ws, p, x, y, B, g);
  float loss_ref = fl_model_loss_grad_ref(&m, p, x, y, B, gr);
  ASSERT_NEAR(loss, loss_double(&m, p, x, y, B), 1e-5);
  ASSERT_NEAR(loss_ref, loss_double(&m, p, x, y, B), 1e-6);
  double worst = 0;
  for (size_t i = 0; i < n; i++) {
    float orig = p[i];
    float h = 1e-2f * fmaxf(1.0f, fabsf(orig));
    p[i] = orig + h;
    float hp = p[i];
    double lp = loss_double(&m, p, x, y, B);
    p[i] = orig - h;
    float hm = p[i];
    double lm = loss_double(&m, p, x, y, B);
    p[i] = orig;
    double fd = (lp - lm) / ((double)hp - (double)hm);
    double scale = fmax(fmax(fabs(fd), fabs(g[i])), 1e-3);
    double e1 = fabs(fd - g[i]) / scale, e2 = fabs(fd - gr[i]) / scale;
    worst = fmax(worst, fmax(e1, e2));
    if (e1 >= 1e-2 || e2 >= 1e-2)
      FL__FAIL("%s param %zu: fd %.8g fast %.8g ref %.8g", spec, i, fd, g[i], gr[i]);
  }
  fprintf(stderr, "  %s B=%zu: worst relative gradient error %.2e\n", spec, B, worst);
  fl_model_ws_destroy(&ws);
  ASSERT_TRUE(ws == NULL);
  free(p);
  free(g);
  free(gr);
  free(x);
  free(y);
}

TEST(gradcheck_mlp) { gradcheck(fl__failed, "mlp:5,4", 7, 3, 6); }
TEST(gradcheck_softmax) { gradcheck(fl__failed, "softmax", 7, 3, 4); }
TEST(gradcheck_deep_batch1) { gradcheck(fl__failed, "mlp:6,5,4", 5, 4, 1); }

/* The BLAS path agrees with the reference on the real shapes. */
static void fast_vs_ref(int *fl__failed, const char *spec, size_t in, size_t B) {
  fl_model_spec_t m;
  size_t C = 10;
  ASSERT_EQ(fl_model_parse(spec, in, C, &m), 0);
  size_t n = m.num_params;
  float *p = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float)),
        *gr = malloc(n * sizeof(float)), *x = malloc(B * in * sizeof(float));
  int32_t *y = malloc(B * sizeof(int32_t));
  fl_model_init(&m, p, 3);
  random_batch(5, B, in, C, x, y);
  fl_model_ws_t *ws = fl_model_ws_new(&m, 64);
  ASSERT_TRUE(ws != NULL);
  memset(g, 0xff, n * sizeof(float)); /* NaNs: every gradient must be overwritten */
  float loss = fl_model_loss_grad(&m, ws, p, x, y, B, g);
  float loss_ref = fl_model_loss_grad_ref(&m, p, x, y, B, gr);
  ASSERT_NEAR(loss, loss_ref, 1e-5);
  double maxdiff = 0, maxg = 0;
  for (size_t i = 0; i < n; i++) {
    ASSERT_TRUE(isfinite(g[i]));
    maxdiff = fmax(maxdiff, fabs((double)g[i] - gr[i]));
    maxg = fmax(maxg, fabs((double)gr[i]));
  }
  fprintf(stderr, "  %s B=%zu: max |fast-ref| %.2e (max |g| %.2e)\n", spec, B, maxdiff, maxg);
  ASSERT_DBL_OP(maxdiff, <, 1e-5 * fmax(maxg, 1.0));
  fl_model_ws_destroy(&ws);
  free(p);
  free(g);
  free(gr);
  free(x);
  free(y);
}

TEST(fast_matches_ref_softmax_b10) { fast_vs_ref(fl__failed, "softmax", 784, 10); }
TEST(fast_matches_ref_softmax_b64) { fast_vs_ref(fl__failed, "softmax", 784, 64); }
TEST(fast_matches_ref_2nn_b10) { fast_vs_ref(fl__failed, "mlp:200,200", 784, 10); }
TEST(fast_matches_ref_2nn_b64) { fast_vs_ref(fl__failed, "mlp:200,200", 784, 64); }
TEST(fast_matches_ref_2nn_b37) { fast_vs_ref(fl__failed, "mlp:200,200", 784, 37); }
/* Odd shapes for the small-batch kernel's tails: batch % 5 in 1..4, widths
 * not a multiple of 4, inputs not a multiple of 16. */
TEST(fast_matches_ref_odd_shapes) {
  for (size_t B = 1; B <= 9; B++) {
    fast_vs_ref(fl__failed, "mlp:37,65", 70, B);
    if (*fl__failed) return;
  }
  fast_vs_ref(fl__failed, "mlp:33", 64, 32);
}

TEST(uniform_init_loss_is_log10) {
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("mlp:200,200", 784, 10, &m), 0);
  float *p = calloc(m.num_params, sizeof(float)), *g = malloc(m.num_params * sizeof(float));
  float x[64 * 784];
  int32_t y[64];
  random_batch(9, 64, 784, 10, x, y);
  fl_model_ws_t *ws = fl_model_ws_new(&m, 64);
  /* Zero weights: exactly uniform softmax. */
  ASSERT_NEAR(fl_model_loss_grad(&m, ws, p, x, y, 64, g), log(10.0), 1e-6);
  /* Default init: close to uniform. */
  fl_model_init(&m, p, 1);
  ASSERT_NEAR(fl_model_loss_grad(&m, ws, p, x, y, 64, g), log(10.0), 0.1);
  fl_model_ws_destroy(&ws);
  fl_model_ws_destroy(&ws); /* NULL-safe */
  free(p);
  free(g);
}

TEST(evaluate_counts_and_chunks) {
  /* softmax on 3 inputs, 3 classes, W = identity, b = 0: argmax of x. */
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("softmax", 3, 3, &m), 0);
  float p[12] = {1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0};
  float x[7 * 3] = {
      5, 1, 1, /* 0 */
      1, 5, 1, /* 1 */
      1, 1, 5, /* 2 */
      2, 2, 1, /* tie 0/1 -> 0 */
      1, 3, 3, /* tie 1/2 -> 1 */
      4, 4, 4, /* tie all -> 0 */
      0, 0, 9, /* 2 */
  };
  int32_t y[7] = {0, 1, 0, 0, 2, 0, 1};
  /* correct: rows 0, 1, 3, 5 -> 4 */
  fl_model_ws_t *ws = fl_model_ws_new(&m, 3); /* forces chunks 3, 3, 1 */
  double loss = 1.0;
  size_t correct = 100;
  fl_model_evaluate(&m, ws, p, x, y, 7, &loss, &correct);
  ASSERT_EQ(correct, 104); /* adds to the caller's counters */
  double expect = 0;
  for (int i = 0; i < 7; i++) {
    double s = 0;
    for (int j = 0; j < 3; j++) s += exp(x[i * 3 + j]);
    expect += log(s) - x[i * 3 + y[i]];
  }
  ASSERT_NEAR(loss - 1.0, expect, 1e-5);
  /* The same as the mean loss of loss_grad over the first 3 rows. */
  float g[12];
  double l3 = 0;
  size_t c3 = 0;
  fl_model_evaluate(&m, ws, p, x, y, 3, &l3, &c3);
  ASSERT_NEAR(fl_model_loss_grad(&m, ws, p, x, y, 3, g), l3 / 3.0, 1e-6);
  fl_model_ws_destroy(&ws);
}

TEST(extreme_logits_stay_finite) {
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("softmax", 2, 2, &m), 0);
  float p[6] = {100, 0, -100, 0, 0, 0};
  float x[2] = {10, 0}; /* logits 1000 and -1000 */
  int32_t y[1] = {1};
  float g[6];
  fl_model_ws_t *ws = fl_model_ws_new(&m, 1);
  float loss = fl_model_loss_grad(&m, ws, p, x, y, 1, g);
  ASSERT_NEAR(loss, 2000.0, 1e-3);
  for (int i = 0; i < 6; i++) ASSERT_TRUE(isfinite(g[i]));
  ASSERT_NEAR(g[4], 1.0, 1e-6);
  ASSERT_NEAR(g[5], -1.0, 1e-6);
  fl_model_ws_destroy(&ws);
}

TEST(deterministic_bitwise) {
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("mlp:200,200", 784, 10, &m), 0);
  size_t n = m.num_params, B = 64;
  float *p = malloc(n * sizeof(float)), *g1 = malloc(n * sizeof(float)),
        *g2 = malloc(n * sizeof(float)), *x = malloc(B * 784 * sizeof(float));
  int32_t y[64];
  fl_model_init(&m, p, 5);
  random_batch(6, B, 784, 10, x, y);
  fl_model_ws_t *ws1 = fl_model_ws_new(&m, 64), *ws2 = fl_model_ws_new(&m, 100);
  for (size_t b = 10; b <= 64; b += 54) {
    float l1 = fl_model_loss_grad(&m, ws1, p, x, y, b, g1);
    float l2 = fl_model_loss_grad(&m, ws2, p, x, y, b, g2);
    ASSERT_EQ(memcmp(&l1, &l2, sizeof l1), 0);
    ASSERT_EQ(memcmp(g1, g2, n * sizeof(float)), 0);
    l2 = fl_model_loss_grad(&m, ws1, p, x, y, b, g2);
    ASSERT_EQ(memcmp(&l1, &l2, sizeof l1), 0);
    ASSERT_EQ(memcmp(g1, g2, n * sizeof(float)), 0);
  }
  double e1 = 0, e2 = 0;
  size_t c1 = 0, c2 = 0;
  fl_model_evaluate(&m, ws1, p, x, y, B, &e1, &c1);
  fl_model_evaluate(&m, ws1, p, x, y, B, &e2, &c2);
  ASSERT_EQ(memcmp(&e1, &e2, sizeof e1), 0);
  ASSERT_EQ(c1, c2);
  fl_model_ws_destroy(&ws1);
  fl_model_ws_destroy(&ws2);
  free(p);
  free(g1);
  free(g2);
  free(x);
}

TEST(sgd_training_drives_loss_down) {
  /* Separable synthetic problem: 4 classes, class = argmax of a fixed
   * linear map of the input. */
  enum { N = 512, D = 20, K = 4, B = 16 };
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("mlp:32", D, K, &m), 0);
  float *x = malloc(N * D * sizeof(float));
  int32_t y[N];
  float proj[K][D];
  fl_rng_t r;
  fl_rng_seed(&r, 77);
  for (int k = 0; k < K; k++)
    for (int d = 0; d < D; d++) proj[k][d] = (float)fl_rng_normal(&r);
  for (int i = 0; i < N; i++) {
    float best = -1e30f;
    for (int d = 0; d < D; d++) x[i * D + d] = (float)fl_rng_normal(&r);
    for (int k = 0; k < K; k++) {
      float s = 0;
      for (int d = 0; d < D; d++) s += proj[k][d] * x[i * D + d];
      if (s > best) best = s, y[i] = k;
    }
  }
  float *p = malloc(m.num_params * sizeof(float)), *g = malloc(m.num_params * sizeof(float));
  fl_model_init(&m, p, 1);
  fl_model_ws_t *ws = fl_model_ws_new(&m, 128);
  double l0 = 0, l1 = 0;
  size_t c0 = 0, c1 = 0;
  fl_model_evaluate(&m, ws, p, x, y, N, &l0, &c0);
  for (int epoch = 0; epoch < 20; epoch++)
    for (int s = 0; s < N; s += B) {
      fl_model_loss_grad(&m, ws, p, x + s * D, y + s, B, g);
      for (size_t i = 0; i < m.num_params; i++) p[i] -= 0.1f * g[i];
    }
  fl_model_evaluate(&m, ws, p, x, y, N, &l1, &c1);
  fprintf(stderr, "  loss %.4f -> %.4f, accuracy %.3f -> %.3f\n", l0 / N, l1 / N,
          (double)c0 / N, (double)c1 / N);
  ASSERT_DBL_OP(l1 / N, <, 0.3 * l0 / N);
  ASSERT_DBL_OP((double)c1 / N, >, 0.9);
  fl_model_ws_destroy(&ws);
  free(x);
  free(p);
  free(g);
}

TEST(flops_formula) {
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("mlp:200,200", 784, 10, &m), 0);
  /* 4 * 784*200 + 6 * (200*200 + 200*10) */
  ASSERT_NEAR(fl_model_flops_per_example(&m), 879200.0, 0.5);
  ASSERT_EQ(fl_model_parse("softmax", 784, 10, &m), 0);
  ASSERT_NEAR(fl_model_flops_per_example(&m), 4.0 * 7840, 0.5);
}

TEST(ws_new_rejects_bad_batch) {
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("softmax", 3, 2, &m), 0);
  ASSERT_TRUE(fl_model_ws_new(&m, 0) == NULL);
  ASSERT_CONTAINS(fl_err_msg(), "batch");
}

__attribute__((constructor(101))) static void single_thread(void) { fl_blas_set_threads(1); }

FL_TEST_MAIN()
