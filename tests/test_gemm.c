/* fl_gemm: every kernel family (AVX-512, AVX2, OpenBLAS) against a product
 * in double on shapes of every kind (the 2NN's and the CNN's, and odd sizes
 * that exercise every row and column tail), in both modes (write, add); the
 * fused SGD step against the unfused one bit for bit; the kernels'
 * determinism; and fl_model_sgd_step against fl_model_loss_grad +
 * fl_optim_step("sgd") bit for bit, on each family; a convolution's
 * im2col/col2im on each family against their definitions. A family the CPU lacks
 * is skipped with a note (the CI machines have AVX-512; AVX2 is then
 * checked too, since an AVX-512 CPU runs AVX2 code). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fl_gemm.h"
#include "fl_model.h"
#include "fl_optim.h"
#include "fl_rng.h"
#include "fl_test.h"

static float *rnd(fl_rng_t *r, size_t n) {
  float *v = malloc((n ? n : 1) * sizeof *v);
  for (size_t i = 0; i < n; i++)
    v[i] = (float)(fl_rng_uniform(r) * 2 - 1);
  return v;
}

typedef struct {
  size_t M, N, K;
} shape_t;

static const shape_t shapes[] =
    {
        {10, 200, 784},  {200, 784, 10},  {10, 784, 200}, /* the 2NN's first layer */
        {10, 200, 200},  {200, 200, 10},  {10, 10, 200},  {10, 200, 10},
        {10, 512, 3136}, /* the CNN's dense layer, forward */
        {64, 196, 800},  /* its second convolution */
        {1, 1, 1},       {7, 13, 9},      {13, 37, 3},    {6, 64, 16},
        {5, 16, 17},     {11, 65, 33},    {3, 8, 1},      {31, 100, 7},
        {2, 129, 130},   {10, 3136, 512}, /* the dense input gradient: B's rows 12.5 KB apart */
        {5, 1100, 40},   {7, 1030, 17}};
#define NSHAPES (sizeof shapes / sizeof shapes[0])

enum { NT, TN, NN };

/* C (+)= op(A) op(B) in double, as the definitions in fl_gemm.h. */
static void ref(int form, const shape_t *s, const float *A, const float *B, const float *C0,
                int acc, double *out) {
  for (size_t i = 0; i < s->M; i++)
    for (size_t j = 0; j < s->N; j++) {
      double sum = acc ? C0[i * s->N + j] : 0;
      for (size_t k = 0; k < s->K; k++) {
        double a = form == TN ? A[k * s->M + i] : A[i * s->K + k];
        double b = form == NT ? B[j * s->K + k] : B[k * s->N + j];
        sum += a * b;
      }
      out[i * s->N + j] = sum;
    }
}

static void run(int form, fl_gemm_kind_t k, const shape_t *s, const float *A, const float *B,
                float *C, int acc) {
  if (form == NT) fl_gemm_nt_with(k, s->M, s->N, s->K, A, B, C, acc);
  if (form == TN) fl_gemm_tn_with(k, s->M, s->N, s->K, A, B, C, acc);
  if (form == NN) fl_gemm_nn_with(k, s->M, s->N, s->K, A, B, C, acc);
}

static int have(fl_gemm_kind_t k) {
  return k <= fl_gemm_cpu();
}

TEST(every_family_equals_double_products) {
  fl_rng_t r;
  fl_rng_seed(&r, 1);
  for (int k = FL_GEMM_BLAS; k <= FL_GEMM_AVX512; k++) {
    if (!have((fl_gemm_kind_t)k)) {
      SKIP_PART("this CPU has no %s: its kernels are not checked", fl_gemm_name((fl_gemm_kind_t)k));
      continue;
    }
    for (size_t si = 0; si < NSHAPES; si++) {
      const shape_t *s = &shapes[si];
      size_t na = s->M * s->K, nb = s->N * s->K, nc = s->M * s->N;
      float *A = rnd(&r, na), *B = rnd(&r, nb), *C0 = rnd(&r, nc);
      /* a guard float past C's end must survive every masked store */
      float *C = malloc((nc + 1) * sizeof *C);
      double *want = malloc(nc * sizeof *want);
      for (int form = NT; form <= NN; form++)
        for (int acc = 0; acc <= 1; acc++) {
          memcpy(C, C0, nc * sizeof *C);
          C[nc] = 12345.0f;
          run(form, (fl_gemm_kind_t)k, s, A, B, C, acc);
          ref(form, s, A, B, C0, acc, want);
          double worst = 0;
          for (size_t i = 0; i < nc; i++)
            worst = fmax(worst, fabs(C[i] - want[i]) / (1.0 + fabs(want[i])));
          /* sums of K products of magnitude <= 1 in float: a few ulps of K */
          if (!(worst <= 4e-7 * (double)(s->K + 8)) || C[nc] != 12345.0f)
            fprintf(stderr, "  %s form %d acc %d %zux%zux%zu: error %.3g\n",
                    fl_gemm_name((fl_gemm_kind_t)k), form, acc, s->M, s->N, s->K, worst);
          ASSERT_TRUE(worst <= 4e-7 * (double)(s->K + 8));
          ASSERT_TRUE(C[nc] == 12345.0f);
        }
      free(A), free(B), free(C0), free(C), free(want);
    }
  }
}

TEST(fused_sgd_step_is_the_unfused_step_bit_for_bit) {
  fl_rng_t r;
  fl_rng_seed(&r, 2);
  for (size_t si = 0; si < NSHAPES; si++) {
    const shape_t *s = &shapes[si];
    size_t nc = s->M * s->N;
    float *A = rnd(&r, s->K * s->M), *B = rnd(&r, s->K * s->N), *W = rnd(&r, nc);
    float *g = malloc(nc * sizeof *g), *w1 = malloc(nc * sizeof *w1);
    memcpy(w1, W, nc * sizeof *W);
    const float lr = 0.0371f;
    fl_gemm_tn(s->M, s->N, s->K, A, B, g, 0);
    for (size_t i = 0; i < nc; i++)
      w1[i] -= lr * g[i];
    if (fl_gemm_tn_sgd(s->M, s->N, s->K, A, B, W, lr)) {
      ASSERT_TRUE(memcmp(W, w1, nc * sizeof *W) == 0);
    } else {
      ASSERT_EQ(fl_gemm_kind(), FL_GEMM_BLAS); /* only OpenBLAS declines */
    }
    free(A), free(B), free(W), free(g), free(w1);
  }
}

/* im2col and col2im as fl_gemm.h defines them, exactly (copies, and sums in
 * (kh, kw, oh) order from +0), on every family, with a guard float past
 * each output; shapes with row tails on both vector widths, padding wider
 * than the kernel's half, even kernels, 'valid' convolutions. */
TEST(im2col_and_col2im_on_every_family) {
  static const fl_gemm_conv_t convs[] = {
      {1, 28, 28, 5, 5, 2}, {32, 14, 14, 5, 5, 2}, {3, 8, 8, 3, 3, 1},
      {2, 5, 7, 3, 3, 0},   {1, 1, 1, 1, 1, 0},    {2, 6, 40, 7, 5, 3},
      {1, 3, 3, 5, 5, 2},   {2, 4, 17, 4, 2, 1},   {1, 9, 33, 1, 9, 4}};
  fl_rng_t r;
  fl_rng_seed(&r, 5);
  for (size_t ci = 0; ci < sizeof convs / sizeof convs[0]; ci++) {
    const fl_gemm_conv_t *s = &convs[ci];
    const size_t OH = s->H + 2 * s->pad - s->KH + 1, OW = s->W + 2 * s->pad - s->KW + 1;
    const size_t nx = s->C * s->H * s->W, ncol = s->C * s->KH * s->KW * OH * OW;
    float *x = rnd(&r, nx), *dcol = rnd(&r, ncol);
    float *want_col = calloc(ncol, sizeof *want_col), *want_dx = calloc(nx, sizeof *want_dx);
    for (size_t c = 0; c < s->C; c++)
      for (size_t kh = 0; kh < s->KH; kh++)
        for (size_t kw = 0; kw < s->KW; kw++)
          for (size_t oh = 0; oh < OH; oh++)
            for (size_t ow = 0; ow < OW; ow++) {
              long ih = (long)(oh + kh) - (long)s->pad, iw = (long)(ow + kw) - (long)s->pad;
              size_t at = (((c * s->KH + kh) * s->KW + kw) * OH + oh) * OW + ow;
              if (ih < 0 || iw < 0 || ih >= (long)s->H || iw >= (long)s->W) continue;
              size_t px = (c * s->H + (size_t)ih) * s->W + (size_t)iw;
              want_col[at] = x[px];
              want_dx[px] += dcol[at];
            }
    for (int k = FL_GEMM_BLAS; k <= FL_GEMM_AVX512; k++) {
      if (!have((fl_gemm_kind_t)k)) {
        SKIP_PART("this CPU has no %s: its im2col is not checked", fl_gemm_name((fl_gemm_kind_t)k));
        continue;
      }
      float *col = malloc((ncol + 1) * sizeof *col), *dx = malloc((nx + 1) * sizeof *dx);
      for (size_t i = 0; i < ncol; i++)
        col[i] = 99.0f; /* every entry must be written, the zeros too */
      col[ncol] = 12345.0f;
      for (size_t i = 0; i < nx; i++)
        dx[i] = 99.0f;
      dx[nx] = 12345.0f;
      fl_gemm_im2col_with((fl_gemm_kind_t)k, s, col, x);
      fl_gemm_col2im_with((fl_gemm_kind_t)k, s, dx, dcol);
      if (memcmp(col, want_col, ncol * sizeof *col) || memcmp(dx, want_dx, nx * sizeof *dx))
        fprintf(stderr, "  %s: conv %zu (C %zu, %zux%zu, kernel %zux%zu, pad %zu) differs\n",
                fl_gemm_name((fl_gemm_kind_t)k), ci, s->C, s->H, s->W, s->KH, s->KW, s->pad);
      ASSERT_TRUE(memcmp(col, want_col, ncol * sizeof *col) == 0);
      ASSERT_TRUE(memcmp(dx, want_dx, nx * sizeof *dx) == 0);
      ASSERT_TRUE(col[ncol] == 12345.0f && dx[nx] == 12345.0f);
      free(col), free(dx);
    }
    free(x), free(dcol), free(want_col), free(want_dx);
  }
}

/* 2x2 max pooling on every family against its definition (the first
 * maximum in row-major order), bit for bit, index for index: planes with
 * odd sizes (the last row and column dropped), row tails on both vector
 * widths, ties, NaNs and signed zeros. */
TEST(maxpool2_on_every_family) {
  static const size_t dims[][3] = {{320, 28, 28}, {640, 14, 14}, {3, 5, 7},  {2, 2, 2},
                                   {1, 3, 3},     {4, 9, 33},    {2, 6, 66}, {1, 2, 31}};
  fl_rng_t r;
  fl_rng_seed(&r, 6);
  for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
    const size_t P = dims[di][0], H = dims[di][1], W = dims[di][2], OH = H / 2, OW = W / 2;
    const size_t n = P * H * W, no = P * OH * OW;
    float *x = rnd(&r, n);
    for (size_t i = 0; i < n; i++) { /* ties, zeros of both signs, NaNs */
      double u = fl_rng_uniform(&r);
      if (u < 0.2)
        x[i] = 0.0f;
      else if (u < 0.25)
        x[i] = -0.0f;
      else if (u < 0.3)
        x[i] = NAN;
      else if (u < 0.5)
        x[i] = (float)(int)(x[i] * 3);
    }
    float *want = malloc(no * sizeof *want);
    int32_t *want_at = malloc(no * sizeof *want_at);
    for (size_t p = 0; p < P; p++)
      for (size_t oh = 0; oh < OH; oh++)
        for (size_t ow = 0; ow < OW; ow++) {
          const float *pl = x + p * H * W;
          size_t best = 2 * oh * W + 2 * ow;
          const size_t c[3] = {best + 1, best + W, best + W + 1};
          for (int k = 0; k < 3; k++)
            if (pl[c[k]] > pl[best]) best = c[k];
          want[(p * OH + oh) * OW + ow] = pl[best];
          want_at[(p * OH + oh) * OW + ow] = (int32_t)best;
        }
    for (int k = FL_GEMM_BLAS; k <= FL_GEMM_AVX512; k++) {
      if (!have((fl_gemm_kind_t)k)) {
        SKIP_PART("this CPU has no %s: its pooling is not checked",
                  fl_gemm_name((fl_gemm_kind_t)k));
        continue;
      }
      float *out = malloc((no + 1) * sizeof *out);
      int32_t *at = malloc((no + 1) * sizeof *at);
      out[no] = 12345.0f;
      at[no] = 12345;
      fl_gemm_maxpool2_with((fl_gemm_kind_t)k, P, H, W, out, at, x);
      int same =
          memcmp(out, want, no * sizeof *out) == 0 && memcmp(at, want_at, no * sizeof *at) == 0;
      if (!same)
        fprintf(stderr, "  %s: pooling of %zu planes of %zux%zu differs\n",
                fl_gemm_name((fl_gemm_kind_t)k), P, H, W);
      ASSERT_TRUE(same);
      ASSERT_TRUE(out[no] == 12345.0f && at[no] == 12345);
      free(out), free(at);
    }
    free(x), free(want), free(want_at);
  }
}

/* fl_gemm_nn_bias = C filled with the bias, fl_gemm_nn adding to it, then
 * the ReLU of fl_relu_forward, bit for bit, on the family this process runs
 * (the three ctest runs), every shape (long K in blocks, row and column
 * tails), with NaNs and zeros reaching the ReLU. */
TEST(bias_and_relu_in_the_product_bit_for_bit) {
  fl_rng_t r;
  fl_rng_seed(&r, 4);
  for (size_t si = 0; si < NSHAPES; si++) {
    const shape_t *s = &shapes[si];
    size_t nc = s->M * s->N;
    float *A = rnd(&r, s->M * s->K), *B = rnd(&r, s->K * s->N), *bias = rnd(&r, s->M);
    if (s->M > 2) { /* a NaN row, and a row of zeros whose sums are -0 + 0 x: signed zeros */
      bias[1] = NAN;
      bias[2] = -0.0f;
      for (size_t k = 0; k < s->K; k++)
        A[2 * s->K + k] = 0.0f;
    }
    float *want = malloc(nc * sizeof *want), *got = malloc((nc + 1) * sizeof *got);
    for (int relu = 0; relu <= 1; relu++) {
      for (size_t i = 0; i < s->M; i++)
        for (size_t j = 0; j < s->N; j++)
          want[i * s->N + j] = bias[i];
      fl_gemm_nn(s->M, s->N, s->K, A, B, want, 1);
      if (relu)
        for (size_t i = 0; i < nc; i++)
          want[i] = want[i] > 0 ? want[i] : 0.0f;
      got[nc] = 12345.0f;
      fl_gemm_nn_bias(s->M, s->N, s->K, A, B, got, bias, relu);
      if (memcmp(got, want, nc * sizeof *got))
        fprintf(stderr, "  %s relu %d %zux%zux%zu differs\n", fl_gemm_name(fl_gemm_kind()), relu,
                s->M, s->N, s->K);
      ASSERT_TRUE(memcmp(got, want, nc * sizeof *got) == 0);
      ASSERT_TRUE(got[nc] == 12345.0f);
    }
    free(A), free(B), free(bias), free(want), free(got);
  }
}

TEST(kernels_are_deterministic) {
  fl_rng_t r;
  fl_rng_seed(&r, 3);
  const shape_t s = {10, 200, 784};
  float *A = rnd(&r, s.M * s.K), *B = rnd(&r, s.N * s.K);
  float *c1 = malloc(s.M * s.N * sizeof *c1), *c2 = malloc(s.M * s.N * sizeof *c2);
  for (int form = NT; form <= NN; form++) {
    run(form, fl_gemm_kind(), &s, A, B, c1, 0);
    for (int rep = 0; rep < 3; rep++) {
      run(form, fl_gemm_kind(), &s, A, B, c2, 0);
      ASSERT_TRUE(memcmp(c1, c2, s.M * s.N * sizeof *c1) == 0);
    }
  }
  free(A), free(B), free(c1), free(c2);
}

TEST(names_and_choice) {
  ASSERT_STR_EQ(fl_gemm_name(FL_GEMM_AVX512), "avx512");
  ASSERT_STR_EQ(fl_gemm_name(FL_GEMM_AVX2), "avx2");
  ASSERT_STR_EQ(fl_gemm_name(FL_GEMM_BLAS), "blas");
  const char *e = getenv("FEDLR_GEMM");
  if (e && strcmp(e, "blas") == 0) ASSERT_EQ(fl_gemm_kind(), FL_GEMM_BLAS);
  if (e && strcmp(e, "avx2") == 0 && fl_gemm_cpu() >= FL_GEMM_AVX2)
    ASSERT_EQ(fl_gemm_kind(), FL_GEMM_AVX2);
  if (!e) ASSERT_EQ(fl_gemm_kind(), fl_gemm_cpu());
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f")) ASSERT_EQ(fl_gemm_cpu(), FL_GEMM_AVX512);
#endif
}

/* fl_model_sgd_step = fl_model_loss_grad + fl_optim_step("sgd"), bit for
 * bit, over several steps of MLPs, softmax regression and CNNs, on the family
 * this process runs (ctest runs this program three times: as it is, with
 * FEDLR_GEMM=avx2 and with FEDLR_GEMM=blas). */
TEST(model_sgd_step_equals_gradient_then_optimizer) {
  const char *specs[] = {"mlp:200,200", "softmax", "mlp:33,7",
                         "mlp:5",       "cnn",     "cnn:conv5x5x4,pool2,conv3x3x8valid,fc32,fc16"};
  const size_t dims[] = {784, 50, 37, 3, 784, 196};
  const size_t Bs[] = {10, 7, 64, 1, 10, 3};
  fl_rng_t r;
  fl_rng_seed(&r, 4);
  for (size_t c = 0; c < sizeof specs / sizeof specs[0]; c++) {
    fl_model_spec_t m;
    ASSERT_EQ(fl_model_parse(specs[c], dims[c], 10, &m), 0);
    size_t B = Bs[c], P = m.num_params;
    float *p1 = malloc(P * sizeof *p1), *p2 = malloc(P * sizeof *p2);
    float *g = malloc(P * sizeof *g), *g2 = malloc(P * sizeof *g2);
    fl_model_init(&m, p1, 7 + c);
    memcpy(p2, p1, P * sizeof *p1);
    fl_model_ws_t *w1 = fl_model_ws_new(&m, B), *w2 = fl_model_ws_new(&m, B);
    fl_optim_config_t oc;
    ASSERT_EQ(fl_optim_parse("sgd", &oc), 0);
    fl_optim_t *o = fl_optim_new(&oc, P);
    float *x = rnd(&r, B * dims[c]);
    int32_t *y = malloc(B * sizeof *y);
    for (int step = 0; step < 4; step++) {
      for (size_t i = 0; i < B; i++)
        y[i] = (int32_t)((i * 7 + (size_t)step) % 10);
      float l1 = fl_model_loss_grad(&m, w1, p1, x, y, B, g);
      fl_optim_step(o, p1, g, 0.05f);
      float l2 = fl_model_sgd_step(&m, w2, p2, x, y, B, 0.05f, g2);
      ASSERT_TRUE(memcmp(&l1, &l2, sizeof l1) == 0);
      ASSERT_TRUE(memcmp(p1, p2, P * sizeof *p1) == 0);
    }
    fl_optim_destroy(&o);
    fl_model_ws_destroy(&w1), fl_model_ws_destroy(&w2);
    free(p1), free(p2), free(g), free(g2), free(x), free(y);
  }
}

FL_TEST_MAIN()
