/* bench_xsmm: Debian's libxsmm (1.17) beside fl_gemm's AVX-512 and AVX2
 * kernels and OpenBLAS on the products of training (issue 14), measured in
 * the same run as the 1-thread sgemm peak.
 *
 *   shapes      the 2NN (784-200-200-10) at B=10 and B=64, the FedAvg CNN at
 *               B=10 (dense 3136->512, conv2 and conv1 as im2col products)
 *   candidates  OpenBLAS cblas_sgemm; fl_gemm_{nt,tn,nn}_with avx512 and
 *               avx2; a libxsmm JIT kernel (libxsmm_smmdispatch, called
 *               directly; for nt on a B^T prepared once); for nt, the two
 *               ways to reach a JIT kernel with transposes (libxsmm_otrans)
 *               on every call; libxsmm_sgemm (the frontend:
 *               JIT up to M*N*K = 64^3, else its BLAS fallback, here
 *               OpenBLAS)
 *   figures     GFLOP/s (2*M*N*K per product), the median of PASSES passes
 *               over all shapes and candidates (each timing >= 0.2 s), as %
 *               of the sgemm 1024^3 peak (median of the same passes), and
 *               the max abs error against a double-precision product
 *
 * Our matrices are row-major, libxsmm's column-major: a row-major C (M, N) is
 * a column-major C^T (N, M), so every product runs as C^T = op(B) op(A) with
 * m = N, n = M:
 *   nn  C = A B      C^T = B^T A^T: a' = B (ld N), b' = A (ld K), no transpose
 *   tn  C = A^T B    C^T = B^T A:   a' = B (ld N), b' = A (ld M) transposed
 *                                   (LIBXSMM_GEMM_FLAG_TRANS_B, JIT-able)
 *   nt  C = A B^T    C^T = B A^T:   a' = B (ld K) transposed, which needs
 *                                   LIBXSMM_GEMM_FLAG_TRANS_A: 1.17's JIT has
 *                                   no such kernel (dispatch returns NULL), so
 *                                   either B is transposed and the nn kernel
 *                                   runs (a' = B^T, ld N), or A is: column-
 *                                   major C^T (M, N) = A B^T with a' = A^T
 *                                   (ld M), b' = B (ld K), then C^T -> C
 *
 * Environment: OPENBLAS_CORETYPE=Haswell gives OpenBLAS's AVX2 kernels and
 * LIBXSMM_TARGET=hsw libxsmm's AVX2 code on an AVX-512 CPU (bench/bench_xsmm.sh
 * runs both). Output: Markdown on stdout (bench/RESULTS.md keeps a copy). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#include <libxsmm.h>

#include "fl_blas.h"
#include "fl_gemm.h"

#include "bench_peak.h"

#define PASSES 3
#define MIN_SECONDS 0.2

typedef enum { NT, TN, NN } form_t;
static const char *const form_names[] = {"nt", "tn", "nn"};

typedef struct {
  const char *name;
  size_t M, N, K;
  form_t form;
} shape_t;

static const shape_t shapes[] = {
    {"2NN B=10 fc1 fwd", 10, 200, 784, NT},    {"2NN B=10 fc1 dW", 200, 784, 10, TN},
    {"2NN B=10 fc2 fwd", 10, 200, 200, NT},    {"2NN B=10 fc2 dW", 200, 200, 10, TN},
    {"2NN B=10 fc2 dx", 10, 200, 200, NN},     {"2NN B=10 fc3 fwd", 10, 10, 200, NT},
    {"2NN B=10 fc3 dW", 10, 200, 10, TN},      {"2NN B=64 fc1 fwd", 64, 200, 784, NT},
    {"2NN B=64 fc1 dW", 200, 784, 64, TN},     {"2NN B=64 fc2 dx", 64, 200, 200, NN},
    {"CNN B=10 dense fwd", 10, 512, 3136, NT}, {"CNN B=10 dense dW", 512, 3136, 10, TN},
    {"CNN B=10 dense dx", 10, 3136, 512, NN},  {"CNN B=10 conv2 fwd", 64, 196, 800, NN},
    {"CNN B=10 conv2 dW", 64, 800, 196, NT},   {"CNN B=10 conv2 dcol", 800, 196, 64, TN},
    {"CNN B=10 conv1 fwd", 32, 784, 25, NN},   {"CNN B=10 conv1 dW", 32, 25, 784, NT},
};
#define NSHAPES (sizeof shapes / sizeof shapes[0])

enum { C_BLAS, C_AVX512, C_AVX2, C_XSMM, C_XSMM_TB, C_XSMM_TAC, C_XSMM_SGEMM, NCAND };
static const char *const cand_names[NCAND] = {
    "OpenBLAS",     "fl_gemm avx512",        "fl_gemm avx2",
    "libxsmm JIT",  "libxsmm nt: B^T + JIT", "libxsmm nt: A^T + JIT + C^T",
    "libxsmm_sgemm"};

/* One shape's operands, its reference, and its libxsmm kernel. */
typedef struct {
  const shape_t *s;
  float *A, *B, *C;
  float *Bt, *At, *Ct; /* nt through libxsmm: B^T (K, N), A^T (K, M), C^T (N, M) */
  double *ref;
  libxsmm_smmfunction kern;   /* NULL when 1.17 has no JIT kernel for the form */
  libxsmm_smmfunction kern_t; /* nt: column-major C^T = A B^T, on A^T and B */
  int trans_a_jit;            /* nt only: whether the TRANS_A kernel exists */
  int sgemm_jit;              /* whether libxsmm_sgemm takes its JIT path */
} problem_t;

static libxsmm_smmfunction dispatch(const problem_t *p, int flags) {
  const shape_t *s = p->s;
  libxsmm_blasint m = (libxsmm_blasint)s->N, n = (libxsmm_blasint)s->M, k = (libxsmm_blasint)s->K;
  libxsmm_blasint lda = flags & LIBXSMM_GEMM_FLAG_TRANS_A ? k : m;
  libxsmm_blasint ldb = flags & LIBXSMM_GEMM_FLAG_TRANS_B ? n : k, ldc = m;
  float alpha = 1, beta = 0;
  int prefetch = LIBXSMM_GEMM_PREFETCH_NONE;
  return libxsmm_smmdispatch(m, n, k, &lda, &ldb, &ldc, &alpha, &beta, &flags, &prefetch);
}

static void problem_init(problem_t *p, const shape_t *s) {
  size_t M = s->M, N = s->N, K = s->K;
  p->s = s;
  /* 64-byte aligned, as fedlr's parameters and batches are (fl_gemm_alloc) */
  p->A = fl_gemm_alloc(M * K);
  p->B = fl_gemm_alloc(N * K);
  p->Bt = fl_gemm_alloc(N * K);
  p->At = fl_gemm_alloc(M * K);
  p->Ct = fl_gemm_alloc(M * N);
  p->C = fl_gemm_alloc(M * N);
  p->ref = malloc(M * N * sizeof(double));
  unsigned x = 12345u + (unsigned)(M * 31 + N * 7 + K);
  for (size_t i = 0; i < M * K; i++) {
    x = x * 1664525u + 1013904223u;
    p->A[i] = (float)((x >> 8) & 0xffff) / 32768.0f - 1.0f;
  }
  for (size_t i = 0; i < N * K; i++) {
    x = x * 1664525u + 1013904223u;
    p->B[i] = (float)((x >> 8) & 0xffff) / 32768.0f - 1.0f;
  }
  /* A (M, K) for nt and nn, (K, M) for tn; B (N, K) for nt, (K, N) otherwise. */
  for (size_t i = 0; i < M; i++)
    for (size_t j = 0; j < N; j++) {
      double acc = 0;
      for (size_t k = 0; k < K; k++) {
        double a = s->form == TN ? p->A[k * M + i] : p->A[i * K + k];
        double b = s->form == NT ? p->B[j * K + k] : p->B[k * N + j];
        acc += a * b;
      }
      p->ref[i * N + j] = acc;
    }
  p->trans_a_jit = 0;
  p->kern_t = NULL;
  if (s->form == NT) {
    p->trans_a_jit = dispatch(p, LIBXSMM_GEMM_FLAG_TRANS_A) != NULL;
    p->kern = dispatch(p, LIBXSMM_GEMM_FLAG_NONE); /* on Bt */
    libxsmm_otrans(p->Bt, p->B, sizeof(float), (libxsmm_blasint)K, (libxsmm_blasint)N,
                   (libxsmm_blasint)K, (libxsmm_blasint)N);
    /* Or the other orientation: column-major C^T (M, N), ld M = A B^T with
     * a' = A^T (K, M) row-major (column-major (M, K), ld M) and b' = B as it
     * lies (column-major (K, N), ld K, no transpose); C^T is then transposed
     * into C. Two small transposes instead of one of B when M is small (a
     * batch of 10 against a weight). */
    libxsmm_blasint m = (libxsmm_blasint)M, n = (libxsmm_blasint)N, k = (libxsmm_blasint)K;
    float alpha = 1, beta = 0;
    int fl = LIBXSMM_GEMM_FLAG_NONE, prefetch = LIBXSMM_GEMM_PREFETCH_NONE;
    p->kern_t = libxsmm_smmdispatch(m, n, k, &m, &k, &m, &alpha, &beta, &fl, &prefetch);
  } else {
    p->kern = dispatch(p, s->form == TN ? LIBXSMM_GEMM_FLAG_TRANS_B : LIBXSMM_GEMM_FLAG_NONE);
  }
  /* libxsmm_sgemm's own test (LIBXSMM_SMM, then a dispatch with the same flags). */
  int flags = s->form == NT   ? LIBXSMM_GEMM_FLAG_TRANS_A
              : s->form == TN ? LIBXSMM_GEMM_FLAG_TRANS_B
                              : LIBXSMM_GEMM_FLAG_NONE;
  p->sgemm_jit = M * N * K <= LIBXSMM_MAX_MNK && dispatch(p, flags) != NULL;
}

static void problem_free(problem_t *p) {
  free(p->A);
  free(p->B);
  free(p->Bt);
  free(p->At);
  free(p->Ct);
  free(p->C);
  free(p->ref);
}

/* Whether candidate c can run problem p (the JIT columns need a kernel). */
static int runs(const problem_t *p, int c) {
  if (c == C_XSMM) return p->kern != NULL;
  if (c == C_XSMM_TB) return p->s->form == NT && p->kern != NULL;
  if (c == C_XSMM_TAC) return p->s->form == NT && p->kern_t != NULL;
  return 1;
}

static void run(problem_t *p, int c) {
  const shape_t *s = p->s;
  size_t M = s->M, N = s->N, K = s->K;
  switch (c) {
  case C_BLAS:
    if (s->form == NT)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, p->A,
                  (int)K, p->B, (int)K, 0.0f, p->C, (int)N);
    else if (s->form == TN)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, p->A,
                  (int)M, p->B, (int)N, 0.0f, p->C, (int)N);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, p->A,
                  (int)K, p->B, (int)N, 0.0f, p->C, (int)N);
    return;
  case C_AVX512:
  case C_AVX2: {
    fl_gemm_kind_t k = c == C_AVX512 ? FL_GEMM_AVX512 : FL_GEMM_AVX2;
    if (s->form == NT)
      fl_gemm_nt_with(k, M, N, K, p->A, p->B, p->C, 0);
    else if (s->form == TN)
      fl_gemm_tn_with(k, M, N, K, p->A, p->B, p->C, 0);
    else
      fl_gemm_nn_with(k, M, N, K, p->A, p->B, p->C, 0);
    return;
  }
  case C_XSMM_TAC:
    libxsmm_otrans(p->At, p->A, sizeof(float), (libxsmm_blasint)K, (libxsmm_blasint)M,
                   (libxsmm_blasint)K, (libxsmm_blasint)M);
    p->kern_t(p->At, p->B, p->Ct);
    libxsmm_otrans(p->C, p->Ct, sizeof(float), (libxsmm_blasint)M, (libxsmm_blasint)N,
                   (libxsmm_blasint)M, (libxsmm_blasint)N);
    return;
  case C_XSMM_TB:
    libxsmm_otrans(p->Bt, p->B, sizeof(float), (libxsmm_blasint)K, (libxsmm_blasint)N,
                   (libxsmm_blasint)K, (libxsmm_blasint)N);
    /* fall through */
  case C_XSMM: p->kern(s->form == NT ? p->Bt : p->B, p->A, p->C); return;
  case C_XSMM_SGEMM: {
    libxsmm_blasint m = (libxsmm_blasint)N, n = (libxsmm_blasint)M, k = (libxsmm_blasint)K;
    libxsmm_blasint lda = s->form == NT ? k : m, ldb = s->form == TN ? n : k, ldc = m;
    char ta = s->form == NT ? 'T' : 'N', tb = s->form == TN ? 'T' : 'N';
    float alpha = 1, beta = 0;
    libxsmm_sgemm(&ta, &tb, &m, &n, &k, &alpha, p->B, &lda, p->A, &ldb, &beta, p->C, &ldc);
    return;
  }
  }
}

static double max_err(problem_t *p, int c) {
  size_t n = p->s->M * p->s->N;
  for (size_t i = 0; i < n; i++)
    p->C[i] = NAN;
  run(p, c);
  double e = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)p->C[i] - p->ref[i]);
    if (!(d <= e)) e = d; /* NaN (an element not written) propagates */
  }
  return e;
}

/* GFLOP/s of one timing of >= MIN_SECONDS, after a warm-up. */
static double gflops(problem_t *p, int c) {
  double flop = 2.0 * (double)p->s->M * (double)p->s->N * (double)p->s->K;
  for (int i = 0; i < 3; i++)
    run(p, c);
  long iters = 0, batch = 1;
  double t0 = now_s(), t;
  for (;;) {
    for (long i = 0; i < batch; i++)
      run(p, c);
    iters += batch;
    t = now_s() - t0;
    if (t >= MIN_SECONDS) break;
    if (t < MIN_SECONDS / 16) batch *= 2;
  }
  return flop * (double)iters / t / 1e9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void cpu_model(char *out, size_t n) {
  snprintf(out, n, "unknown CPU");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "model name", 10) != 0) continue;
    char *v = strchr(line, ':');
    if (!v) break;
    v++;
    while (*v == ' ' || *v == '\t')
      v++;
    v[strcspn(v, "\n")] = 0;
    snprintf(out, n, "%s", v);
    break;
  }
  fclose(f);
}

int main(int argc, char **argv) {
  fl_blas_setup(argc, argv);
  libxsmm_init();
  char cpu[256];
  cpu_model(cpu, sizeof cpu);
  const char *xt = getenv("LIBXSMM_TARGET");
  printf("CPU: %s; OpenBLAS core %s; libxsmm %s, target arch %s%s%s; fl_gemm's best family on "
         "this CPU: %s (both fl_gemm columns run whatever the environment)\n\n",
         cpu, fl_blas_corename(), LIBXSMM_VERSION, libxsmm_get_target_arch(),
         xt ? ", LIBXSMM_TARGET=" : "", xt ? xt : "", fl_gemm_name(fl_gemm_cpu()));

  problem_t probs[NSHAPES];
  for (size_t i = 0; i < NSHAPES; i++)
    problem_init(&probs[i], &shapes[i]);

  /* PASSES passes over everything, so that a disturbance (the machine may be
   * shared) hits one pass of a figure rather than all its timings. */
  static double g[NSHAPES][NCAND][PASSES];
  double peaks[PASSES];
  for (int pass = 0; pass < PASSES; pass++) {
    peaks[pass] = sgemm_gflops(1);
    for (size_t i = 0; i < NSHAPES; i++)
      for (int c = 0; c < NCAND; c++)
        g[i][c][pass] = runs(&probs[i], c) ? gflops(&probs[i], c) : 0;
  }
  double peak = median(peaks, PASSES);
  printf("sgemm 1024^3, 1 thread: %.1f GFLOP/s (median of %d passes; the 100%% below)\n\n", peak,
         PASSES);

  printf("| product (M, N, K, form) |");
  for (int c = 0; c < NCAND; c++)
    printf(" %s |", cand_names[c]);
  printf(" libxsmm_sgemm path | max abs error (in the order of the columns) |\n");
  printf("|---|");
  for (int c = 0; c < NCAND; c++)
    printf("---|");
  printf("---|---|\n");
  for (size_t i = 0; i < NSHAPES; i++) {
    problem_t *p = &probs[i];
    const shape_t *s = p->s;
    printf("| %s (%zu, %zu, %zu, %s) |", s->name, s->M, s->N, s->K, form_names[s->form]);
    for (int c = 0; c < NCAND; c++) {
      if (!runs(p, c)) {
        printf(" %s |", c == C_XSMM_TB || c == C_XSMM_TAC ? "–" : "no kernel");
        continue;
      }
      double v = median(g[i][c], PASSES);
      printf(" %.1f (%.0f%%) |", v, 100 * v / peak);
    }
    printf(" %s |", p->sgemm_jit ? "JIT" : "BLAS fallback");
    for (int c = 0; c < NCAND; c++) {
      if (runs(p, c))
        printf(" %.1e", max_err(p, c));
      else
        printf(" –");
      printf(c < NCAND - 1 ? " /" : " |\n");
    }
  }
  int any_ta = 0;
  for (size_t i = 0; i < NSHAPES; i++)
    any_ta |= probs[i].trans_a_jit;
  printf("\nnt through libxsmm: a TRANS_A JIT kernel was %s; \"libxsmm JIT\" on nt rows runs the "
         "nn kernel on B^T prepared once (the transpose not counted); \"B^T + JIT\" transposes B "
         "(libxsmm_otrans) on every call, \"A^T + JIT + C^T\" transposes A and the result "
         "instead.\n",
         any_ta ? "dispatched for some shapes" : "refused for every shape (libxsmm 1.17)");
  for (size_t i = 0; i < NSHAPES; i++)
    problem_free(&probs[i]);
  libxsmm_finalize();
  return 0;
}
