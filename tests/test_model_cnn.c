/* Convolutional models (common/fl_model_cnn.c through fl_model.h): the
 * specs, their errors, the tensors of the equivalent torch.nn.Sequential,
 * the initialisation, the gradients of the fast path and of the reference
 * against finite differences, fast = reference, evaluation and
 * determinism. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"
#include "fl_model.h"
#include "fl_rng.h"
#include "fl_test.h"

static void random_batch(uint64_t seed, size_t B, size_t in, size_t C, float *x, int32_t *y) {
  fl_rng_t r;
  fl_rng_seed(&r, seed);
  for (size_t i = 0; i < B * in; i++)
    x[i] = (float)fl_rng_uniform(&r);
  for (size_t i = 0; i < B; i++)
    y[i] = (int32_t)fl_rng_below(&r, C);
}

typedef struct {
  const char *name;
  uint32_t ndim, shape[4];
} want_t;

static void check_tensors(int *fl__failed, const fl_model_spec_t *m, const want_t *w, size_t n) {
  ASSERT_EQ(fl_model_num_tensors(m), n);
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    fl_tensor_info_t t;
    fl_model_tensor(m, i, &t);
    ASSERT_STR_EQ(t.name, w[i].name);
    ASSERT_EQ(t.ndim, w[i].ndim);
    size_t count = 1;
    for (uint32_t d = 0; d < t.ndim; d++) {
      ASSERT_EQ(t.shape[d], w[i].shape[d]);
      count *= t.shape[d];
    }
    ASSERT_EQ(t.count, count);
    ASSERT_EQ(t.offset, off); /* back to back, in order */
    off += count;
  }
  ASSERT_EQ(off, m->num_params);
}

TEST(fedavg_cnn_is_pytorchs_sequential) {
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("cnn", 784, 10, &m), 0);
  /* nn.Sequential(Conv2d(1,32,5,padding=2), ReLU(), MaxPool2d(2), Conv2d(32,64,5,padding=2),
   * ReLU(), MaxPool2d(2), Flatten(), Linear(3136,512), ReLU(), Linear(512,10)) */
  const want_t w[] = {{"0.weight", 4, {32, 1, 5, 5}},  {"0.bias", 1, {32}},
                      {"3.weight", 4, {64, 32, 5, 5}}, {"3.bias", 1, {64}},
                      {"7.weight", 2, {512, 3136}},    {"7.bias", 1, {512}},
                      {"9.weight", 2, {10, 512}},      {"9.bias", 1, {10}}};
  check_tensors(fl__failed, &m, w, 8);
  ASSERT_EQ(m.num_params, 1663370); /* the FedAvg paper's "about 1.66M" */
  ASSERT_EQ(m.num_layers, 4);
  ASSERT_EQ(m.dims[0], 784);
  ASSERT_EQ(m.dims[4], 10);
  ASSERT_EQ(m.in_c, 1);
  ASSERT_EQ(m.in_h, 28);
  ASSERT_STR_EQ(m.spec, "cnn");
  fl_model_spec_t g;
  ASSERT_EQ(fl_model_parse("cnn:conv5x5x32,pool2,conv5x5x64,pool2,fc512", 784, 10, &g), 0);
  ASSERT_EQ(g.num_params, m.num_params);
}

TEST(general_specs_and_their_module_indices) {
  fl_model_spec_t m;
  /* [Conv 0, ReLU 1, Pool 2, Flatten 3, Linear 4, ReLU 5, Linear 6] on 6 x 6:
   * valid 3x3 -> 4 x 4 x 4, pool -> 4 x 2 x 2 = 16 */
  ASSERT_EQ(fl_model_parse("cnn:conv3x3x4valid,pool2,fc16", 36, 3, &m), 0);
  const want_t a[] = {{"0.weight", 4, {4, 1, 3, 3}}, {"0.bias", 1, {4}},
                      {"4.weight", 2, {16, 16}},     {"4.bias", 1, {16}},
                      {"6.weight", 2, {3, 16}},      {"6.bias", 1, {3}}};
  check_tensors(fl__failed, &m, a, 6);
  /* [Flatten 0, Linear 1, ReLU 2, Linear 3]: an MLP in Sequential form */
  ASSERT_EQ(fl_model_parse("cnn:fc8", 16, 2, &m), 0);
  const want_t b[] = {
      {"1.weight", 2, {8, 16}}, {"1.bias", 1, {8}}, {"3.weight", 2, {2, 8}}, {"3.bias", 1, {2}}};
  check_tensors(fl__failed, &m, b, 4);
  /* [Pool 0, Conv 1, ReLU 2, Flatten 3, Linear 4]; a rectangular kernel
   * ('valid': 4 x 4 -> 2 x 2) */
  ASSERT_EQ(fl_model_parse("cnn:pool2,conv3x3x2,conv3x1x3valid", 64, 4, &m), 0);
  const want_t c[] = {{"1.weight", 4, {2, 1, 3, 3}}, {"1.bias", 1, {2}},
                      {"3.weight", 4, {3, 2, 3, 1}}, {"3.bias", 1, {3}},
                      {"6.weight", 2, {4, 24}},      {"6.bias", 1, {4}}};
  check_tensors(fl__failed, &m, c, 6);
}

TEST(bad_specs_name_the_problem) {
  fl_model_spec_t m, before;
  ASSERT_EQ(fl_model_parse("softmax", 784, 10, &m), 0);
  before = m;
  const struct {
    const char *spec;
    size_t in;
    const char *msg;
  } bad[] = {
      {"cnn", 100 + 1, "a CNN takes a square one-channel image, and 101 features are not one"},
      {"cnn:", 784, "'cnn:' needs items"},
      {"cnn:conv4x4x8", 784,
       "'conv4x4x8': 'same' padding needs a square kernel of odd size (or add 'valid')"},
      {"cnn:conv3x5x8", 784, "'conv3x5x8': 'same' padding needs a square kernel of odd size"},
      {"cnn:conv5x5x8,fc10,pool2", 784, "'pool2' after a dense layer"},
      {"cnn:fc10,conv3x3x2", 784, "'conv3x3x2' after a dense layer"},
      {"cnn:conv5x5", 784, "item 'conv5x5' is not convKxKxC"},
      {"cnn:conv5x5x0", 784, "item 'conv5x5x0' is not"},
      {"cnn:conv17x17x2", 784, "kernels up to 15"},
      {"cnn:pool3", 784, "item 'pool3' is not"},
      {"cnn:fc", 784, "item 'fc' is not"},
      {"cnn:conv3x3x2,,pool2", 784, "item '' is not"},
      {"cnn:conv9x9x2valid", 16, "'conv9x9x2valid' does not fit the 4 x 4 input it gets"},
      {"cnn:pool2,pool2,pool2", 16, "'pool2' on a 1 x 1 input: nothing to pool"},
      {"cnn:fc2,fc2,fc2,fc2,fc2,fc2,fc2,fc2", 16, "more than 8 layers with parameters"},
      {"cnn:convx", 784, "is not convKxKxC"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = fl_model_parse(bad[i].spec, bad[i].in, 10, &m);
    if (rc != FL_EINVAL || !strstr(fl_err_msg(), bad[i].msg))
      FL__FAIL("'%s': rc %d, \"%s\" lacks \"%s\"", bad[i].spec, rc, fl_err_msg(), bad[i].msg);
    ASSERT_TRUE(memcmp(&m, &before, sizeof m) == 0);
  }
  ASSERT_EQ(fl_model_parse("cnn:conv5x5x65536,conv5x5x65536", 784, 10, &m), FL_ETOOBIG);
}

TEST(init_is_pytorchs_bounds) {
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("cnn:conv5x5x16,pool2,conv3x3x8,pool2,fc32", 784, 10, &m), 0);
  float *p = malloc(m.num_params * sizeof *p), *q = malloc(m.num_params * sizeof *q);
  fl_model_init(&m, p, 9);
  fl_model_init(&m, q, 9);
  ASSERT_TRUE(memcmp(p, q, m.num_params * sizeof *p) == 0);
  /* nn.Conv2d / nn.Linear: U(+-1/sqrt(fan_in)), fan_in = C KH KW or IN,
   * for the weight and the bias alike */
  const double fan[4] = {25, 16 * 9, 8 * 7 * 7, 32};
  for (size_t t = 0; t < 8; t++) {
    fl_tensor_info_t ti;
    fl_model_tensor(&m, t, &ti);
    double bound = 1 / sqrt(fan[t / 2]), mx = 0;
    for (size_t i = 0; i < ti.count; i++)
      mx = fmax(mx, fabs(p[ti.offset + i]));
    ASSERT_DBL_OP(mx, <=, bound);
    if (ti.count > 500) ASSERT_DBL_OP(mx, >, 0.95 * bound);
  }
  free(p);
  free(q);
}

/* Both gradient paths against central differences of the loss, every
 * parameter. */
static void gradcheck_shape(int *fl__failed, const char *spec, size_t in, const fl_shape_t *shape,
                            size_t C, size_t B) {
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse_shape(spec, in, shape, C, &m), 0);
  const size_t n = m.num_params;
  float *p = malloc(n * sizeof *p), *g = malloc(n * sizeof *g), *gr = malloc(n * sizeof *gr),
        *scratch = malloc(n * sizeof *scratch), *x = malloc(B * in * sizeof *x);
  int32_t *y = malloc(B * sizeof *y);
  fl_model_init(&m, p, 7);
  for (size_t i = 0; i < n; i++)
    p[i] *= 2.0f; /* every layer matters */
  random_batch(11, B, in, C, x, y);
  fl_model_ws_t *ws = fl_model_ws_new(&m, B);
  ASSERT_TRUE(ws != NULL);
  memset(g, 0xff, n * sizeof *g); /* NaNs: every gradient must be written */
  float loss = fl_model_loss_grad(&m, ws, p, x, y, B, g);
  float loss_ref = fl_model_loss_grad_ref(&m, p, x, y, B, gr);
  ASSERT_NEAR(loss, loss_ref, 1e-5);
  double worst = 0;
  for (size_t i = 0; i < n; i++) {
    /* small: a ReLU's or a pool's kink within h would bias the difference */
    float orig = p[i], h = 1e-3f;
    p[i] = orig + h;
    double lp = fl_model_loss_grad_ref(&m, p, x, y, B, scratch);
    p[i] = orig - h;
    double lm = fl_model_loss_grad_ref(&m, p, x, y, B, scratch);
    p[i] = orig;
    double fd = (lp - lm) / (2 * (double)h);
    /* the loss is a float: its rounding (1e-7) over 2h is 1e-4 of noise */
    double scale = fmax(fmax(fabs(fd), fabs(g[i])), 5e-2);
    double e = fmax(fabs(fd - g[i]), fabs(fd - gr[i])) / scale;
    worst = fmax(worst, e);
    if (e >= 2e-2) FL__FAIL("%s param %zu: fd %.8g fast %.8g ref %.8g", spec, i, fd, g[i], gr[i]);
  }
  fprintf(stderr, "  %s B=%zu: worst relative gradient error %.2e over %zu parameters\n", spec, B,
          worst, n);
  fl_model_ws_destroy(&ws);
  free(p), free(g), free(gr), free(scratch), free(x), free(y);
}

static void gradcheck(int *fl__failed, const char *spec, size_t in, size_t C, size_t B) {
  gradcheck_shape(fl__failed, spec, in, NULL, C, B);
}

TEST(gradcheck_small_cnns) {
  gradcheck(fl__failed, "cnn:conv3x3x3,pool2,fc6", 64, 4, 3);
  gradcheck(fl__failed, "cnn:conv3x3x2valid,conv3x3x2,pool2", 49, 3, 2);
  gradcheck(fl__failed, "cnn:pool2,conv3x3x2,fc5", 36, 3, 1);
}

/* Images of several channels and not square (--input-shape, an IDX file's
 * dimensions): the input shape is the first convolution's C_in and sets
 * the flattened width. */
TEST(multichannel_tensors) {
  fl_model_spec_t m;
  const fl_shape_t rgb = {3, 8, 8};
  /* nn.Sequential(Conv2d(3,8,3,padding=1), ReLU(), MaxPool2d(2), Flatten(), Linear(128,16),
   * ReLU(), Linear(16,4)) */
  ASSERT_EQ(fl_model_parse_shape("cnn:conv3x3x8,pool2,fc16", 192, &rgb, 4, &m), 0);
  const want_t a[] = {{"0.weight", 4, {8, 3, 3, 3}}, {"0.bias", 1, {8}},
                      {"4.weight", 2, {16, 128}},    {"4.bias", 1, {16}},
                      {"6.weight", 2, {4, 16}},      {"6.bias", 1, {4}}};
  check_tensors(fl__failed, &m, a, 6);
  ASSERT_EQ(m.in_c, 3);
  ASSERT_EQ(m.in_h, 8);
  ASSERT_EQ(m.in_w, 8);
  ASSERT_EQ(m.dims[0], 192);
  ASSERT_TRUE(fl_model_needs_shape(&m));
  /* 2 x 6 x 16 (not square), valid 3x5: 6 x 4 x 12 -> pool 6 x 2 x 6 = 72 */
  const fl_shape_t wide = {2, 6, 16};
  ASSERT_EQ(fl_model_parse_shape("cnn:conv3x5x6valid,pool2", 192, &wide, 4, &m), 0);
  const want_t b[] = {{"0.weight", 4, {6, 2, 3, 5}},
                      {"0.bias", 1, {6}},
                      {"4.weight", 2, {4, 72}},
                      {"4.bias", 1, {4}}};
  check_tensors(fl__failed, &m, b, 4);
  ASSERT_TRUE(fl_model_needs_shape(&m));
  /* 1 x 28 x 28 given = inferred from 784: the same model, no shape needed
   * by an older peer; an unset shape infers it */
  const fl_shape_t sq = {1, 28, 28}, none = {0, 0, 0};
  fl_model_spec_t given, inferred, unset;
  ASSERT_EQ(fl_model_parse_shape("cnn", 784, &sq, 10, &given), 0);
  ASSERT_EQ(fl_model_parse("cnn", 784, 10, &inferred), 0);
  ASSERT_EQ(fl_model_parse_shape("cnn", 784, &none, 10, &unset), 0);
  ASSERT_TRUE(memcmp(&given, &inferred, sizeof given) == 0);
  ASSERT_TRUE(memcmp(&unset, &inferred, sizeof given) == 0);
  ASSERT_FALSE(fl_model_needs_shape(&given));
  /* 1 x 7 x 112 = 784 but not square: another model, which needs the shape */
  const fl_shape_t strip = {1, 7, 112};
  ASSERT_EQ(fl_model_parse_shape("cnn:conv3x3x2,fc4", 784, &strip, 10, &m), 0);
  ASSERT_TRUE(fl_model_needs_shape(&m));
  /* softmax and MLPs ignore the shape */
  ASSERT_EQ(fl_model_parse_shape("mlp:20", 192, &rgb, 4, &m), 0);
  ASSERT_EQ(m.in_c, 0);
  ASSERT_EQ(m.num_params, 192 * 20 + 20 + 20 * 4 + 4);
  ASSERT_FALSE(fl_model_needs_shape(&m));
  ASSERT_EQ(fl_model_parse_shape("softmax", 192, &wide, 4, &m), 0);
  ASSERT_EQ(m.num_params, 192 * 4 + 4);
}

TEST(multichannel_bad_fits_name_the_item_and_sizes) {
  fl_model_spec_t m, before;
  ASSERT_EQ(fl_model_parse("softmax", 784, 10, &m), 0);
  before = m;
  const fl_shape_t rgb = {3, 8, 8};
  const struct {
    const char *spec;
    int rc;
    const char *msg;
  } bad[] = {
      {"cnn:conv9x9x4valid", FL_EINVAL,
       "'conv9x9x4valid' does not fit the 8 x 8 input it gets (item 1, a 9 x 9 kernel without "
       "padding on 3 channels of 8 x 8; the input image is 3x8x8)"},
      {"cnn:conv3x3x4,pool2,conv5x5x2valid", FL_EINVAL,
       "'conv5x5x2valid' does not fit the 4 x 4 input it gets (item 3, a 5 x 5 kernel without "
       "padding on 4 channels of 4 x 4"},
      {"cnn:pool2,pool2,pool2,pool2", FL_EINVAL,
       "'pool2' on a 1 x 1 input: nothing to pool (item 4, 3 channels of 1 x 1; the input image "
       "is 3x8x8)"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = fl_model_parse_shape(bad[i].spec, 192, &rgb, 10, &m);
    if (rc != bad[i].rc || !strstr(fl_err_msg(), bad[i].msg))
      FL__FAIL("'%s': rc %d, \"%s\" lacks \"%s\"", bad[i].spec, rc, fl_err_msg(), bad[i].msg);
    ASSERT_TRUE(memcmp(&m, &before, sizeof m) == 0);
  }
  /* a shape that is not the data's width */
  ASSERT_EQ(fl_model_parse_shape("cnn:conv3x3x4", 191, &rgb, 10, &m), FL_ESHAPE);
  ASSERT_CONTAINS(fl_err_msg(), "the input image 3x8x8 is not the 191 features");
  /* fits 3 x 32 x 32, not 28 x 28: the spec's syntax is fine before the data comes */
  ASSERT_EQ(fl_model_check_spec("cnn:conv15x15x4valid,conv15x15x4valid"), 0);
  ASSERT_EQ(fl_model_parse("cnn:conv15x15x4valid,conv15x15x4valid", 784, 10, &m), FL_EINVAL);
  ASSERT_EQ(fl_model_check_spec("cnn:conv4x4x2"), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'same' padding needs a square kernel");
  ASSERT_EQ(fl_model_check_spec("mlp:x"), FL_EINVAL);
  ASSERT_EQ(fl_model_check_spec("mlp:200,200"), 0);
}

/* A 3 x 8 x 8 input: the convolutions' channel sums, both gradient paths
 * against finite differences, every parameter. */
TEST(gradcheck_multichannel) {
  const fl_shape_t rgb = {3, 8, 8}, rect = {2, 5, 7};
  gradcheck_shape(fl__failed, "cnn:conv3x3x4,pool2,fc6", 192, &rgb, 4, 3);
  gradcheck_shape(fl__failed, "cnn:conv3x3x3valid,conv3x3x2,pool2", 192, &rgb, 3, 2);
  gradcheck_shape(fl__failed, "cnn:conv3x1x2valid,pool2,fc4", 70, &rect, 3, 2);
}

/* The fast path = the reference on the FedAvg CNN's shapes (narrower). */
TEST(fast_matches_reference) {
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("cnn:conv5x5x8,pool2,conv5x5x16,pool2,fc32", 784, 10, &m), 0);
  const size_t B = 10, n = m.num_params;
  float *p = malloc(n * sizeof *p), *g = malloc(n * sizeof *g), *gr = malloc(n * sizeof *gr),
        *x = malloc(B * 784 * sizeof *x);
  int32_t y[10];
  fl_model_init(&m, p, 3);
  random_batch(5, B, 784, 10, x, y);
  fl_model_ws_t *ws = fl_model_ws_new(&m, 64);
  float loss = fl_model_loss_grad(&m, ws, p, x, y, B, g);
  float loss_ref = fl_model_loss_grad_ref(&m, p, x, y, B, gr);
  ASSERT_NEAR(loss, loss_ref, 1e-5);
  double d = 0, mx = 0;
  for (size_t i = 0; i < n; i++) {
    d = fmax(d, fabs((double)g[i] - gr[i]));
    mx = fmax(mx, fabs((double)gr[i]));
  }
  ASSERT_DBL_OP(d, <, 1e-5 * fmax(mx, 1.0));
  /* The same bits again, and evaluation = the loss of the same forward. */
  float *g2 = malloc(n * sizeof *g2);
  ASSERT_DBL_OP(fl_model_loss_grad(&m, ws, p, x, y, B, g2), ==, loss);
  ASSERT_TRUE(memcmp(g, g2, n * sizeof *g) == 0);
  double sum = 0;
  size_t correct = 0;
  fl_model_evaluate(&m, ws, p, x, y, B, &sum, &correct);
  ASSERT_NEAR(sum / (double)B, loss, 1e-5);
  ASSERT_LE(correct, B);
  /* in chunks (max batch 3): the same sum */
  fl_model_ws_t *small = fl_model_ws_new(&m, 3);
  double sum3 = 0;
  size_t correct3 = 0;
  fl_model_evaluate(&m, small, p, x, y, B, &sum3, &correct3);
  ASSERT_NEAR(sum3, sum, 1e-9);
  ASSERT_EQ(correct3, correct);
  ASSERT_NEAR(fl_model_flops_per_example(&m),
              4.0 * 8 * 784 * 25 + 6.0 * 16 * 196 * 200 + 6.0 * 32 * 784 + 6.0 * 10 * 32, 1);
  fl_model_ws_destroy(&ws);
  fl_model_ws_destroy(&small);
  free(p), free(g), free(gr), free(g2), free(x);
}

FL_TEST_MAIN()
