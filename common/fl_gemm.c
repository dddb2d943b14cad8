/* fl_gemm: small-batch matrix products of training (see fl_gemm.h). */
#include "fl_gemm.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#undef I /* cblas.h pulls in <complex.h> */

#if defined(__GNUC__) && !defined(__clang__)
#define FL_PLAIN_LOOPS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define FL_PLAIN_LOOPS
#endif

/* ---- Lowering a convolution: shared by the plain and the vector copies ---- */

/* A convolution's output rows and columns. */
static inline void conv_out(const fl_gemm_conv_t *s, size_t *OH, size_t *OW) {
  *OH = s->H + 2 * s->pad - s->KH + 1;
  *OW = s->W + 2 * s->pad - s->KW + 1;
}

/* The output columns ow whose input column ow + kw - pad is inside the
 * image: [*lo, *hi). */
static inline void valid_cols(const fl_gemm_conv_t *s, size_t kw, size_t OW, size_t *lo,
                              size_t *hi) {
  size_t a = s->pad > kw ? s->pad - kw : 0;               /* first ow with iw >= 0 */
  size_t b = s->W + s->pad > kw ? s->W + s->pad - kw : 0; /* first ow with iw >= W */
  *lo = a < OW ? a : OW;
  *hi = b < OW ? b : OW;
  if (*hi < *lo) *hi = *lo;
}

/* The lanes [*a, *b) of a chunk of `lim` lanes starting at column o that
 * fall in the columns [lo, hi). */
static inline void chunk_lanes(long lo, long hi, long o, long lim, size_t *a, size_t *b) {
  long x = lo - o, y = hi - o;
  x = x < 0 ? 0 : x > lim ? lim : x;
  y = y < x ? x : y > lim ? lim : y;
  *a = (size_t)x;
  *b = (size_t)y;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FL_GEMM_X86 1
/* The kernels are left out of ASan's instrumentation, as OpenBLAS always
 * was: instrumented, every vector load is checked and a sanitizer build's
 * networked tests trained 5-10x slower, past their deadlines. Their bounds
 * are tested without it (test_gemm: a guard float past C, masked tails). */
#define FL_NOSAN __attribute__((no_sanitize_address))
/* what a rank-K kernel does with C (a base, and FL_BC_RELU or'ed in) */
enum { FL_BC_SET, FL_BC_ADD, FL_BC_SGD, FL_BC_BIAS, FL_BC_BASE = 3, FL_BC_RELU = 4 };

/* ---- AVX-512: 32 registers, 16 floats each ------------------------------ */
/* Sums of a, b, c, d: pairs within 128-bit lanes, then the four lanes. */
FL_NOSAN __attribute__((target("avx512f"))) static inline __m128 hsum4_avx512(__m512 a, __m512 b,
                                                                              __m512 c, __m512 d) {
  __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  __m512 t = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
  __m256 h = _mm256_add_ps(_mm512_castps512_ps256(t),
                           _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1)));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}
#define SFX(n) n##_avx512
#define FL_TGT FL_NOSAN __attribute__((target("avx512f")))
#define VW 16
#define vf __m512
#define vm __mmask16
#define V_ZERO() _mm512_setzero_ps()
#define V_LOAD(p) _mm512_loadu_ps(p)
#define V_LOADM(p, m) _mm512_maskz_loadu_ps((m), (p))
#define V_STORE(p, v) _mm512_storeu_ps((p), (v))
#define V_STOREM(p, v, m) _mm512_mask_storeu_ps((p), (m), (v))
#define V_BCAST(p) _mm512_set1_ps(*(p))
#define V_FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define V_MUL(a, b) _mm512_mul_ps((a), (b))
#define V_SUB(a, b) _mm512_sub_ps((a), (b))
#define V_HSUM(v) _mm512_reduce_add_ps(v)
#define V_HSUM4(a, b, c, d) hsum4_avx512((a), (b), (c), (d))
#define V_MASK(n) ((__mmask16)((n) >= 16 ? 0xffffu : ((1u << (n)) - 1u)))
#define V_RANGE(a, b) ((__mmask16)(((1u << (b)) - 1u) & ~((1u << (a)) - 1u))) /* a <= b <= 16 */
#define V_ADD(a, b) _mm512_add_ps((a), (b))
#define V_MAX(a, b) _mm512_max_ps((a), (b))
#define MR_BC 6
#define NR_BC 4
#define MR_DOT 5
#define NR_DOT 4
#include "fl_gemm_simd.inc"
#undef SFX
#undef FL_TGT
#undef VW
#undef vf
#undef vm
#undef V_ZERO
#undef V_LOAD
#undef V_LOADM
#undef V_STORE
#undef V_STOREM
#undef V_BCAST
#undef V_FMA
#undef V_MUL
#undef V_SUB
#undef V_HSUM
#undef V_HSUM4
#undef V_MASK
#undef V_RANGE
#undef V_ADD
#undef V_MAX
#undef MR_BC
#undef NR_BC
#undef MR_DOT
#undef NR_DOT

/* ---- AVX2 + FMA: 16 registers, 8 floats each ---------------------------- */
FL_NOSAN __attribute__((target("avx2,fma"))) static inline float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
FL_NOSAN __attribute__((target("avx2,fma"))) static inline __m128 hsum4_avx2(__m256 a, __m256 b,
                                                                             __m256 c, __m256 d) {
  __m256 ab = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
  __m256 cd = _mm256_add_ps(_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
  __m256 t = _mm256_add_ps(_mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}
FL_NOSAN __attribute__((target("avx2,fma"))) static inline __m256i mask_avx2(size_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#define SFX(n) n##_avx2
#define FL_TGT FL_NOSAN __attribute__((target("avx2,fma")))
#define VW 8
#define vf __m256
#define vm __m256i
#define V_ZERO() _mm256_setzero_ps()
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_LOADM(p, m) _mm256_maskload_ps((p), (m))
#define V_STORE(p, v) _mm256_storeu_ps((p), (v))
#define V_STOREM(p, v, m) _mm256_maskstore_ps((p), (m), (v))
#define V_BCAST(p) _mm256_broadcast_ss(p)
#define V_FMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define V_MUL(a, b) _mm256_mul_ps((a), (b))
#define V_SUB(a, b) _mm256_sub_ps((a), (b))
#define V_HSUM(v) hsum_avx2(v)
#define V_HSUM4(a, b, c, d) hsum4_avx2((a), (b), (c), (d))
#define V_MASK(n) mask_avx2(n)
#define V_RANGE(a, b) _mm256_andnot_si256(mask_avx2(a), mask_avx2(b))
#define V_ADD(a, b) _mm256_add_ps((a), (b))
#define V_MAX(a, b) _mm256_max_ps((a), (b))
#define MR_BC 6
#define NR_BC 2
#define MR_DOT 3
#define NR_DOT 4
#include "fl_gemm_simd.inc"
#endif

float *fl_gemm_alloc(size_t n) {
  if (n > ((size_t)1 << 60)) return NULL;
  return aligned_alloc(64, ((n ? n : 1) * sizeof(float) + 63) & ~(size_t)63);
}

/* ---- Choice ---------------------------------------------------------------- */

fl_gemm_kind_t fl_gemm_cpu(void) {
#ifdef FL_GEMM_X86
  if (__builtin_cpu_supports("avx512f")) return FL_GEMM_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return FL_GEMM_AVX2;
#endif
  return FL_GEMM_BLAS;
}

/* The CPU's best family, or a weaker one that FEDLR_GEMM asks for. */
static fl_gemm_kind_t choose(void) {
  fl_gemm_kind_t best = fl_gemm_cpu();
  const char *e = getenv("FEDLR_GEMM");
  if (e) {
    if (strcmp(e, "blas") == 0) return FL_GEMM_BLAS;
    if (strcmp(e, "avx2") == 0 && best >= FL_GEMM_AVX2) return FL_GEMM_AVX2;
  }
  return best;
}

fl_gemm_kind_t fl_gemm_kind(void) {
  static int kind = -1; /* a benign race: every thread computes the same value */
  int k = __atomic_load_n(&kind, __ATOMIC_RELAXED);
  if (k < 0) {
    k = (int)choose();
    __atomic_store_n(&kind, k, __ATOMIC_RELAXED);
  }
  return (fl_gemm_kind_t)k;
}

const char *fl_gemm_name(fl_gemm_kind_t k) {
  return k == FL_GEMM_AVX512 ? "avx512" : k == FL_GEMM_AVX2 ? "avx2" : "blas";
}

/* A family the CPU lacks runs as OpenBLAS. */
static fl_gemm_kind_t usable(fl_gemm_kind_t k) {
  return k <= fl_gemm_cpu() ? k : FL_GEMM_BLAS;
}

/* ---- Products ---------------------------------------------------------------- */

/* The dot kernels pay a horizontal sum per element of C and do not block
 * for the cache: they win where the batch is small, or moderate with long
 * rows (K >= 512, M <= 128); OpenBLAS wins the rest (bench/RESULTS.md,
 * 2026-12-01, AVX-512: 64 x 800 x 196, a convolution's weight gradient in
 * this form, 87 against 114 GFLOP/s (fl_layers now forms its transpose with
 * the rank-K kernel instead, at 170); an evaluation chunk of 1000 x 200 x
 * 784, 58 against 125). On AVX-512 a narrow C (N < 32, a 10-class output
 * layer) also goes to OpenBLAS's Cooperlake kernel (95 against 81); its
 * Haswell kernel is slower there than the AVX2 dot kernel (21 against 70). */
static int nt_own(fl_gemm_kind_t k, size_t M, size_t N, size_t K) {
  if (k == FL_GEMM_AVX512 && N < 32) return 0;
  return M <= 16 || (K >= 512 && M <= 128);
}

void fl_gemm_nt_with(fl_gemm_kind_t k, size_t M, size_t N, size_t K, const float *A, const float *B,
                     float *C, int acc) {
  if (M == 0 || N == 0) return;
  switch (usable(k)) {
#ifdef FL_GEMM_X86
  case FL_GEMM_AVX512: dot_avx512(M, N, K, A, B, C, acc); return;
  case FL_GEMM_AVX2: dot_avx2(M, N, K, A, B, C, acc); return;
#endif
  default:
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, A, (int)K, B,
                (int)K, acc ? 1.0f : 0.0f, C, (int)N);
  }
}

/* The rank-K kernels (tn, nn) matched or beat OpenBLAS on every training
 * shape measured on AVX-512, and on AVX2 on all but one, the CNN's second
 * convolution's input gradient (tn 800 x 196 x 64: 79 against OpenBLAS
 * Haswell's 86 GFLOP/s; bench/RESULTS.md): they always run. */
void fl_gemm_tn_with(fl_gemm_kind_t k, size_t M, size_t N, size_t K, const float *A, const float *B,
                     float *C, int acc) {
  if (M == 0 || N == 0) return;
  switch (usable(k)) {
#ifdef FL_GEMM_X86
  case FL_GEMM_AVX512:
    bc_avx512(M, N, K, A, 1, M, B, C, acc ? FL_BC_ADD : FL_BC_SET, 0.0f, NULL);
    return;
  case FL_GEMM_AVX2:
    bc_avx2(M, N, K, A, 1, M, B, C, acc ? FL_BC_ADD : FL_BC_SET, 0.0f, NULL);
    return;
#endif
  default:
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, A, (int)M, B,
                (int)N, acc ? 1.0f : 0.0f, C, (int)N);
  }
}

void fl_gemm_nn_with(fl_gemm_kind_t k, size_t M, size_t N, size_t K, const float *A, const float *B,
                     float *C, int acc) {
  if (M == 0 || N == 0) return;
  switch (usable(k)) {
#ifdef FL_GEMM_X86
  case FL_GEMM_AVX512:
    bc_avx512(M, N, K, A, K, 1, B, C, acc ? FL_BC_ADD : FL_BC_SET, 0.0f, NULL);
    return;
  case FL_GEMM_AVX2:
    bc_avx2(M, N, K, A, K, 1, B, C, acc ? FL_BC_ADD : FL_BC_SET, 0.0f, NULL);
    return;
#endif
  default:
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, A, (int)K,
                B, (int)N, acc ? 1.0f : 0.0f, C, (int)N);
  }
}

void fl_gemm_nt(size_t M, size_t N, size_t K, const float *A, const float *B, float *C, int acc) {
  fl_gemm_kind_t k = fl_gemm_kind();
  fl_gemm_nt_with(nt_own(k, M, N, K) ? k : FL_GEMM_BLAS, M, N, K, A, B, C, acc);
}
void fl_gemm_tn(size_t M, size_t N, size_t K, const float *A, const float *B, float *C, int acc) {
  fl_gemm_tn_with(fl_gemm_kind(), M, N, K, A, B, C, acc);
}
void fl_gemm_nn(size_t M, size_t N, size_t K, const float *A, const float *B, float *C, int acc) {
  fl_gemm_nn_with(fl_gemm_kind(), M, N, K, A, B, C, acc);
}

void fl_gemm_nn_bias(size_t M, size_t N, size_t K, const float *A, const float *B, float *C,
                     const float *bias, int relu) {
  if (M == 0 || N == 0) return;
  const int mode = FL_BC_BIAS | (relu ? FL_BC_RELU : 0);
  switch (fl_gemm_kind()) {
#ifdef FL_GEMM_X86
  case FL_GEMM_AVX512: bc_avx512(M, N, K, A, K, 1, B, C, mode, 0.0f, bias); return;
  case FL_GEMM_AVX2: bc_avx2(M, N, K, A, K, 1, B, C, mode, 0.0f, bias); return;
#endif
  default:
    for (size_t i = 0; i < M; i++)
      for (size_t j = 0; j < N; j++)
        C[i * N + j] = bias[i];
    fl_gemm_nn_with(FL_GEMM_BLAS, M, N, K, A, B, C, 1);
    if (relu)
      for (size_t i = 0; i < M * N; i++)
        C[i] = C[i] > 0 ? C[i] : 0.0f;
  }
}

int fl_gemm_tn_sgd(size_t M, size_t N, size_t K, const float *A, const float *B, float *C,
                   float lr) {
  switch (fl_gemm_kind()) {
#ifdef FL_GEMM_X86
  case FL_GEMM_AVX512: bc_avx512(M, N, K, A, 1, M, B, C, FL_BC_SGD, lr, NULL); return 1;
  case FL_GEMM_AVX2: bc_avx2(M, N, K, A, 1, M, B, C, FL_BC_SGD, lr, NULL); return 1;
#endif
  default: return 0;
  }
}

/* ---- Lowering a convolution --------------------------------------------------- */

/* Plain loops for the OpenBLAS family, not the memcpy/memset calls GCC
 * would otherwise make of them (a call per 56 bytes cost the CNN's step
 * 12%): each row of col is, per output row, zeros, a copy of the input
 * row's valid run, zeros. */
FL_PLAIN_LOOPS static void im2col_plain(const fl_gemm_conv_t *s, float *restrict col,
                                        const float *restrict x) {
  size_t OH, OW;
  conv_out(s, &OH, &OW);
  const long pad = (long)s->pad;
  for (size_t c = 0; c < s->C; c++)
    for (size_t kh = 0; kh < s->KH; kh++)
      for (size_t kw = 0; kw < s->KW; kw++) {
        float *row = col + ((c * s->KH + kh) * s->KW + kw) * OH * OW;
        const float *plane = x + c * s->H * s->W;
        size_t lo, hi;
        valid_cols(s, kw, OW, &lo, &hi);
        for (size_t oh = 0; oh < OH; oh++) {
          long ih = (long)(oh + kh) - pad;
          float *r = row + oh * OW;
          if (ih < 0 || ih >= (long)s->H) {
            for (size_t ow = 0; ow < OW; ow++)
              r[ow] = 0.0f;
            continue;
          }
          const float *src = plane + (size_t)ih * s->W; /* r[ow] = x[ih][ow + kw - pad] */
          for (size_t ow = 0; ow < lo; ow++)
            r[ow] = 0.0f;
          for (size_t ow = lo; ow < hi; ow++) /* ow + kw >= pad from lo on */
            r[ow] = src[ow + kw - s->pad];
          for (size_t ow = hi; ow < OW; ow++)
            r[ow] = 0.0f;
        }
      }
}

/* A scatter into a zeroed dx, in (c, kh, kw, oh) order. */
static void col2im_plain(const fl_gemm_conv_t *s, float *restrict dx, const float *restrict dcol) {
  size_t OH, OW;
  conv_out(s, &OH, &OW);
  const long pad = (long)s->pad;
  memset(dx, 0, s->C * s->H * s->W * sizeof *dx);
  for (size_t c = 0; c < s->C; c++)
    for (size_t kh = 0; kh < s->KH; kh++)
      for (size_t kw = 0; kw < s->KW; kw++) {
        const float *row = dcol + ((c * s->KH + kh) * s->KW + kw) * OH * OW;
        float *plane = dx + c * s->H * s->W;
        size_t lo, hi;
        valid_cols(s, kw, OW, &lo, &hi);
        for (size_t oh = 0; oh < OH; oh++) {
          long ih = (long)(oh + kh) - pad;
          if (ih < 0 || ih >= (long)s->H) continue;
          float *dst = plane + (size_t)ih * s->W;
          const float *r = row + oh * OW;
          for (size_t ow = lo; ow < hi; ow++)
            dst[ow + kw - s->pad] += r[ow];
        }
      }
}

void fl_gemm_im2col_with(fl_gemm_kind_t k, const fl_gemm_conv_t *s, float *col, const float *x) {
  switch (usable(k)) {
#ifdef FL_GEMM_X86
  case FL_GEMM_AVX512: im2col_avx512(s, col, x); return;
  case FL_GEMM_AVX2: im2col_avx2(s, col, x); return;
#endif
  default: im2col_plain(s, col, x);
  }
}

void fl_gemm_col2im_with(fl_gemm_kind_t k, const fl_gemm_conv_t *s, float *dx, const float *dcol) {
  switch (usable(k)) {
#ifdef FL_GEMM_X86
  case FL_GEMM_AVX512: col2im_avx512(s, dx, dcol); return;
  case FL_GEMM_AVX2: col2im_avx2(s, dx, dcol); return;
#endif
  default: col2im_plain(s, dx, dcol);
  }
}

void fl_gemm_im2col(const fl_gemm_conv_t *s, float *col, const float *x) {
  fl_gemm_im2col_with(fl_gemm_kind(), s, col, x);
}
void fl_gemm_col2im(const fl_gemm_conv_t *s, float *dx, const float *dcol) {
  fl_gemm_col2im_with(fl_gemm_kind(), s, dx, dcol);
}

/* ---- 2x2 max pooling ------------------------------------------------------ */

/* Per output, the first maximum of x[at], x[at + 1], x[at + W], x[at + W + 1]
 * (a candidate replaces the current one only if greater, so a NaN is never
 * taken and a first NaN is kept): compare-and-select, 16 or 8 outputs at a
 * time (the branches of the plain loop mispredict on ReLU outputs: 645
 * against 37 us for the CNN's first pooling at B = 10). */
static void maxpool2_plain(size_t planes, size_t H, size_t W, float *out, int32_t *argmax,
                           const float *x) {
  const size_t OH = H / 2, OW = W / 2;
  for (size_t p = 0; p < planes; p++, x += H * W)
    for (size_t oh = 0; oh < OH; oh++)
      for (size_t ow = 0; ow < OW; ow++) {
        size_t at = 2 * oh * W + 2 * ow;
        const size_t cand[3] = {at + 1, at + W, at + W + 1};
        for (int k = 0; k < 3; k++)
          if (x[cand[k]] > x[at]) at = cand[k];
        out[(p * OH + oh) * OW + ow] = x[at];
        argmax[(p * OH + oh) * OW + ow] = (int32_t)at;
      }
}

#ifdef FL_GEMM_X86
FL_NOSAN __attribute__((target("avx512f"))) static void
maxpool2_avx512(size_t planes, size_t H, size_t W, float *out, int32_t *argmax, const float *x) {
  const size_t OH = H / 2, OW = W / 2;
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i d1 = _mm512_set1_epi32(1), dW = _mm512_set1_epi32((int)W),
                dW1 = _mm512_set1_epi32((int)W + 1);
  for (size_t p = 0; p < planes; p++, x += H * W)
    for (size_t oh = 0; oh < OH; oh++) {
      const float *r0 = x + 2 * oh * W, *r1 = r0 + W;
      for (size_t o = 0; o < OW; o += 16) {
        const size_t n = OW - o < 16 ? OW - o : 16, n2 = 2 * n;
        const __mmask16 mlo = (__mmask16)(n2 >= 16 ? 0xffffu : (1u << n2) - 1u);
        const __mmask16 mhi = (__mmask16)(n2 > 16 ? (1u << (n2 - 16)) - 1u : 0u);
        const __mmask16 mo = (__mmask16)(n >= 16 ? 0xffffu : (1u << n) - 1u);
        __m512 a0 = _mm512_maskz_loadu_ps(mlo, r0 + 2 * o);
        __m512 b0 = _mm512_maskz_loadu_ps(mhi, r0 + 2 * o + 16);
        __m512 a1 = _mm512_maskz_loadu_ps(mlo, r1 + 2 * o);
        __m512 b1 = _mm512_maskz_loadu_ps(mhi, r1 + 2 * o + 16);
        __m512 x01 = _mm512_permutex2var_ps(a0, odd, b0),
               x10 = _mm512_permutex2var_ps(a1, even, b1);
        __m512 x11 = _mm512_permutex2var_ps(a1, odd, b1),
               cur = _mm512_permutex2var_ps(a0, even, b0);
        const __m512i base = _mm512_add_epi32(_mm512_set1_epi32((int)(2 * oh * W + 2 * o)), even);
        __m512i idx = base;
        __mmask16 m = _mm512_cmp_ps_mask(x01, cur, _CMP_GT_OQ);
        cur = _mm512_mask_mov_ps(cur, m, x01);
        idx = _mm512_mask_add_epi32(idx, m, base, d1);
        m = _mm512_cmp_ps_mask(x10, cur, _CMP_GT_OQ);
        cur = _mm512_mask_mov_ps(cur, m, x10);
        idx = _mm512_mask_add_epi32(idx, m, base, dW);
        m = _mm512_cmp_ps_mask(x11, cur, _CMP_GT_OQ);
        cur = _mm512_mask_mov_ps(cur, m, x11);
        idx = _mm512_mask_add_epi32(idx, m, base, dW1);
        _mm512_mask_storeu_ps(out + (p * OH + oh) * OW + o, mo, cur);
        _mm512_mask_storeu_epi32(argmax + (p * OH + oh) * OW + o, mo, idx);
      }
    }
}

/* The even and the odd floats of lo:hi (8 + 8), in order. */
FL_NOSAN __attribute__((target("avx2,fma"))) static inline void
deinterleave_avx2(__m256 lo, __m256 hi, __m256 *ev, __m256 *od) {
  *ev = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)),
                                               _MM_SHUFFLE(3, 1, 2, 0)));
  *od = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xdd)),
                                               _MM_SHUFFLE(3, 1, 2, 0)));
}

FL_NOSAN __attribute__((target("avx2,fma"))) static void
maxpool2_avx2(size_t planes, size_t H, size_t W, float *out, int32_t *argmax, const float *x) {
  const size_t OH = H / 2, OW = W / 2;
  const __m256i lane2 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i d1 = _mm256_set1_epi32(1), dW = _mm256_set1_epi32((int)W),
                dW1 = _mm256_set1_epi32((int)W + 1);
  for (size_t p = 0; p < planes; p++, x += H * W)
    for (size_t oh = 0; oh < OH; oh++) {
      const float *r0 = x + 2 * oh * W, *r1 = r0 + W;
      for (size_t o = 0; o < OW; o += 8) {
        const size_t n = OW - o < 8 ? OW - o : 8;
        const __m256i mlo = mask_avx2(2 * n), mhi = mask_avx2(2 * n > 8 ? 2 * n - 8 : 0),
                      mo = mask_avx2(n);
        __m256 cur, x01, x10, x11;
        deinterleave_avx2(_mm256_maskload_ps(r0 + 2 * o, mlo),
                          _mm256_maskload_ps(r0 + 2 * o + 8, mhi), &cur, &x01);
        deinterleave_avx2(_mm256_maskload_ps(r1 + 2 * o, mlo),
                          _mm256_maskload_ps(r1 + 2 * o + 8, mhi), &x10, &x11);
        const __m256i base = _mm256_add_epi32(_mm256_set1_epi32((int)(2 * oh * W + 2 * o)), lane2);
        __m256 idx = _mm256_castsi256_ps(base);
        __m256 m = _mm256_cmp_ps(x01, cur, _CMP_GT_OQ);
        cur = _mm256_blendv_ps(cur, x01, m);
        idx = _mm256_blendv_ps(idx, _mm256_castsi256_ps(_mm256_add_epi32(base, d1)), m);
        m = _mm256_cmp_ps(x10, cur, _CMP_GT_OQ);
        cur = _mm256_blendv_ps(cur, x10, m);
        idx = _mm256_blendv_ps(idx, _mm256_castsi256_ps(_mm256_add_epi32(base, dW)), m);
        m = _mm256_cmp_ps(x11, cur, _CMP_GT_OQ);
        cur = _mm256_blendv_ps(cur, x11, m);
        idx = _mm256_blendv_ps(idx, _mm256_castsi256_ps(_mm256_add_epi32(base, dW1)), m);
        _mm256_maskstore_ps(out + (p * OH + oh) * OW + o, mo, cur);
        _mm256_maskstore_epi32(argmax + (p * OH + oh) * OW + o, mo, _mm256_castps_si256(idx));
      }
    }
}
#endif

void fl_gemm_maxpool2_with(fl_gemm_kind_t k, size_t planes, size_t H, size_t W, float *out,
                           int32_t *argmax, const float *x) {
  switch (usable(k)) {
#ifdef FL_GEMM_X86
  case FL_GEMM_AVX512: maxpool2_avx512(planes, H, W, out, argmax, x); return;
  case FL_GEMM_AVX2: maxpool2_avx2(planes, H, W, out, argmax, x); return;
#endif
  default: maxpool2_plain(planes, H, W, out, argmax, x);
  }
}

void fl_gemm_maxpool2(size_t planes, size_t H, size_t W, float *out, int32_t *argmax,
                      const float *x) {
  fl_gemm_maxpool2_with(fl_gemm_kind(), planes, H, W, out, argmax, x);
}
