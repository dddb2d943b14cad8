/* fl_agg: see fl_agg.h. */
#include "fl_agg.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"

/* The FedAvg accumulator: sum_k n_k * delta_k on a grid of 2^-40, as an
 * exact integer V = hi * 2^54 + lo in two int64 limbs. Bounds: |delta| <=
 * 2^20 (FL_AGG_MAX_DELTA), n_k <= 2^32 (FL_AGG_MAX_EXAMPLES), so one term
 * is below 2^92 and its hi part below 2^38; at most 2^24 terms
 * (FL_AGG_MAX_SLOTS) keep sum(hi) below 2^62. Each lo part is below 2^54 in
 * magnitude, so lo is carried into hi (normalized) every AGG_CARRY_EVERY
 * folds, before it could reach 2^63. */
#define AGG_SCALE 1099511627776.0    /* 2^40 */
#define AGG_LIMB 18014398509481984.0 /* 2^54 */
#define AGG_LIMB_BITS 54
#define AGG_CARRY_EVERY 255
/* Coordinates per block of the robust rules: (added x SEL_W) floats of
 * scratch stay in L1 for up to ~100 added clients. */
#define SEL_W 64

struct fl_agg {
  fl_agg_config_t cfg;
  size_t num_params;
  /* FedAvg only: */
  int64_t *hi, *lo; /* (num_params) the limbs of V */
  uint32_t terms;   /* folds since the limbs were last normalized */
  /* Robust rules only: */
  float *store; /* (cap_store, num_params) slot k's delta in row k */
  float *sel;   /* (cap_store, SEL_W) a block of coordinates, row per slot */
  size_t cap_store;
  uint32_t *net; /* (2 * net_len) comparators (i, j) sorting net_n values */
  size_t net_n, net_len;
  /* The round: */
  uint8_t *added; /* (cap_slots) 1 = slot k's update is in */
  size_t cap_slots, slots, num_added;
  uint64_t examples; /* sum of the added updates' examples (FedAvg's divisor) */
};

int fl_agg_parse(const char *spec, fl_agg_config_t *out) {
  if (!spec || !out) return fl_err_set(FL_EINVAL, "fl_agg_parse: NULL argument");
  if (!strcmp(spec, "fedavg") || !strcmp(spec, "median")) {
    out->kind = spec[0] == 'f' ? FL_AGG_FEDAVG : FL_AGG_MEDIAN;
    out->trim_beta = 0;
    return 0;
  }
  if (strncmp(spec, "trimmed-mean:", 13) != 0)
    return fl_err_set(FL_EINVAL, "'%s' is not fedavg, median or trimmed-mean:BETA", spec);
  const char *num = spec + 13;
  char *end;
  errno = 0;
  double b = strtod(num, &end);
  if (isspace((unsigned char)num[0]) || end == num || *end || errno == ERANGE ||
      !(b >= 0 && b < 0.5))
    return fl_err_set(FL_EINVAL, "'%s': BETA must be a number in [0, 0.5)", spec);
  out->kind = FL_AGG_TRIMMED_MEAN;
  out->trim_beta = b + 0.0; /* -0 -> +0, so it formats as "0" */
  return 0;
}

int fl_agg_format(const fl_agg_config_t *c, char *buf, size_t len) {
  int w = -1;
  switch (c->kind) {
  case FL_AGG_FEDAVG: w = snprintf(buf, len, "fedavg"); break;
  case FL_AGG_MEDIAN: w = snprintf(buf, len, "median"); break;
  case FL_AGG_TRIMMED_MEAN:
    /* The shortest of %.15g..%.17g that reads back to the same beta. */
    for (int digits = 15; digits <= 17; digits++) {
      w = snprintf(buf, len, "trimmed-mean:%.*g", digits, c->trim_beta);
      if (w < 0 || (size_t)w >= len || strtod(buf + 13, NULL) == c->trim_beta) break;
    }
    break;
  default: return fl_err_set(FL_EINVAL, "unknown aggregator %d", (int)c->kind);
  }
  if (w < 0 || (size_t)w >= len)
    return fl_err_set(FL_ETOOBIG, "aggregator spec: needs %d bytes, the buffer has %zu", w + 1,
                      len);
  return 0;
}

static int robust(const fl_agg_t *a) {
  return a->cfg.kind != FL_AGG_FEDAVG;
}

fl_agg_t *fl_agg_new(const fl_agg_config_t *c, size_t num_params, int *err) {
  int rc = FL_ENOMEM;
  fl_agg_t *a = NULL;
  if (c->kind != FL_AGG_FEDAVG && c->kind != FL_AGG_MEDIAN && c->kind != FL_AGG_TRIMMED_MEAN) {
    rc = fl_err_set(FL_EINVAL, "unknown aggregator %d", (int)c->kind);
    goto fail;
  }
  if (!(c->trim_beta >= 0 && c->trim_beta < 0.5)) {
    rc = fl_err_set(FL_EINVAL, "trimmed-mean beta %g must be in [0, 0.5)", c->trim_beta);
    goto fail;
  }
  if (!(c->clip_norm >= 0) || !isfinite(c->clip_norm)) {
    rc = fl_err_set(FL_EINVAL, "clip norm %g must be >= 0 and finite", c->clip_norm);
    goto fail;
  }
  if (!(a = calloc(1, sizeof *a))) goto fail;
  a->cfg = *c;
  a->num_params = num_params;
  if (!robust(a)) {
    a->hi = calloc(num_params, sizeof *a->hi);
    a->lo = calloc(num_params, sizeof *a->lo);
    if (!a->hi || !a->lo) goto fail;
  }
  return a;
fail:
  if (rc == FL_ENOMEM) fl_err_set(FL_ENOMEM, "out of memory for the aggregator");
  if (err) *err = rc;
  fl_agg_destroy(&a);
  return NULL;
}

void fl_agg_destroy(fl_agg_t **pa) {
  fl_agg_t *a = pa ? *pa : NULL;
  if (!a) return;
  free(a->hi);
  free(a->lo);
  free(a->store);
  free(a->sel);
  free(a->net);
  free(a->added);
  free(a);
  *pa = NULL;
}

int fl_agg_begin(fl_agg_t *a, size_t slots) {
  a->slots = a->num_added = 0;
  a->examples = 0;
  if (slots > FL_AGG_MAX_SLOTS)
    return fl_err_set(FL_ERANGE, "%zu sampled clients: at most %u per round", slots,
                      FL_AGG_MAX_SLOTS);
  if (slots > a->cap_slots) {
    uint8_t *p = realloc(a->added, slots);
    if (!p) return fl_err_set(FL_ENOMEM, "out of memory sampling %zu clients", slots);
    a->added = p;
    a->cap_slots = slots;
  }
  if (robust(a) && slots > a->cap_store) {
    /* Fresh buffers, not realloc: the old rows need not be copied. */
    size_t P = a->num_params;
    free(a->store);
    free(a->sel);
    a->store = slots <= SIZE_MAX / sizeof(float) / P ? malloc(slots * P * sizeof *a->store) : NULL;
    a->sel = malloc(slots * SEL_W * sizeof *a->sel);
    if (!a->store || !a->sel) {
      free(a->store);
      free(a->sel);
      a->store = a->sel = NULL;
      a->cap_store = 0;
      return fl_err_set(FL_ENOMEM,
                        "out of memory keeping the updates of %zu clients (%zu MiB) for the "
                        "robust aggregator",
                        slots, slots * P / 262144);
    }
    a->cap_store = slots;
  }
  memset(a->added, 0, slots);
  if (!robust(a)) {
    memset(a->hi, 0, a->num_params * sizeof *a->hi);
    memset(a->lo, 0, a->num_params * sizeof *a->lo);
    a->terms = 0;
  }
  a->slots = slots;
  return 0;
}

int fl_agg_added(const fl_agg_t *a, size_t slot) {
  return slot < a->slots && a->added[slot];
}

/* The fold: V += trunc(x * s) for the two-limb accumulator (hi, lo), s =
 * n_k * 2^40, returning 1 if any |x[i]| exceeded FL_AGG_MAX_DELTA or was
 * NaN (such values are folded as 0). The term t = x * s (one rounding, in
 * double) is split exactly: h = trunc(t / 2^54), l = t - h * 2^54 (exact:
 * its bits are t's low bits), so h * 2^54 + trunc(l) = trunc(t). Each term
 * depends only on this update and integer addition is associative, so the
 * sum does not depend on arrival order. trunc(-y) is -trunc(y), so folding
 * the same data with -s undoes a fold exactly: that is how a rejected
 * update is taken back.
 *
 * Speed: a block of FOLD_BLOCK values is scanned first (range test and the
 * largest |x|, on the float's bits: integer ops that vectorize); when every
 * |t| of the block is below 2^54, h is 0 for all of them and only lo is
 * touched (the same bits as the full split, at the single limb's memory
 * traffic: 20 bytes a value instead of 36). Real updates (|delta * n_k| <
 * 2^14) always take that path. The AVX-512 variant converts 8 doubles to
 * int64 per instruction (vcvttpd2qq); every step is an exact IEEE
 * operation, so both variants give the same bits. */
#define FOLD_BLOCK 512
#define FOLD_BODY                                                                                  \
  uint32_t lim_bits;                                                                               \
  const float lim = (float)FL_AGG_MAX_DELTA;                                                       \
  memcpy(&lim_bits, &lim, sizeof lim_bits);                                                        \
  uint32_t bad = 0;                                                                                \
  for (size_t b = 0; b < n; b += FOLD_BLOCK) {                                                     \
    const size_t e = n - b < FOLD_BLOCK ? n : b + FOLD_BLOCK;                                      \
    uint32_t top = 0, badb = 0;                                                                    \
    for (size_t i = b; i < e; i++) {                                                               \
      uint32_t u;                                                                                  \
      memcpy(&u, &x[i], sizeof u);                                                                 \
      u &= 0x7fffffffu;                                                                            \
      uint32_t out = u > lim_bits;                                                                 \
      badb |= out;                                                                                 \
      u &= out - 1u; /* zero when out of range */                                                  \
      top = u > top ? u : top;                                                                     \
    }                                                                                              \
    bad |= badb;                                                                                   \
    float topf;                                                                                    \
    memcpy(&topf, &top, sizeof topf);                                                              \
    const int split = (double)topf * s >= AGG_LIMB;                                                \
    for (size_t i = b; i < e; i++) {                                                               \
      uint32_t u;                                                                                  \
      memcpy(&u, &x[i], sizeof u);                                                                 \
      u &= ((u & 0x7fffffffu) > lim_bits) - 1u;                                                    \
      float v;                                                                                     \
      memcpy(&v, &u, sizeof v);                                                                    \
      double t = (double)v * s;                                                                    \
      if (!split) {                                                                                \
        lo[i] += (int64_t)t;                                                                       \
      } else {                                                                                     \
        int64_t h = (int64_t)(t * (1.0 / AGG_LIMB));                                               \
        hi[i] += h;                                                                                \
        lo[i] += (int64_t)(t - (double)h * AGG_LIMB);                                              \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
  return bad != 0;

static int fold_generic(int64_t *restrict hi, int64_t *restrict lo, const float *restrict x,
                        size_t n, double s) {
  FOLD_BODY
}

__attribute__((target("avx512f,avx512dq"))) static int fold_avx512(int64_t *restrict hi,
                                                                   int64_t *restrict lo,
                                                                   const float *restrict x,
                                                                   size_t n, double s) {
  FOLD_BODY
}

static int fold_limbs(int64_t *restrict hi, int64_t *restrict lo, const float *restrict x, size_t n,
                      double s) {
  /* Asked every time (a read of what the loader stored): no lazily
   * written static, since engines of several runs fold at once (fedlr-sweep). */
  return (__builtin_cpu_supports("avx512dq") ? fold_avx512 : fold_generic)(hi, lo, x, n, s);
}

/* Folds n values of an update into the accumulator at parameter `off`. */
static int fold(fl_agg_t *a, size_t off, const float *x, size_t n, double s) {
  return fold_limbs(a->hi + off, a->lo + off, x, n, s);
}

/* Carries lo into hi, leaving lo in [0, 2^54): the value hi * 2^54 + lo is
 * unchanged, and its representation is then unique, so it may run at any
 * time without changing a result. */
static void normalize(fl_agg_t *a) {
  const size_t n = a->num_params;
  int64_t *restrict hi = a->hi, *restrict lo = a->lo;
  for (size_t i = 0; i < n; i++) {
    int64_t c = lo[i] >> AGG_LIMB_BITS; /* floor: GCC shifts signed values arithmetically */
    hi[i] += c;
    lo[i] -= c * ((int64_t)1 << AGG_LIMB_BITS);
  }
  a->terms = 0;
}

/* Subtracts from a delta the global weights: turns a full-weights update
 * into a delta in place (in the decoded message, which we own). */
static void to_delta(float *restrict x, const float *restrict w, size_t n) {
  for (size_t i = 0; i < n; i++)
    x[i] -= w[i];
}

/* 1 if any |x[i]| exceeds FL_AGG_MAX_DELTA or is NaN: the fold's range
 * test without the fold, for the two-pass paths. */
static int values_bad(const float *restrict x, size_t n) {
  uint32_t lim_bits;
  const float lim = (float)FL_AGG_MAX_DELTA;
  memcpy(&lim_bits, &lim, sizeof lim_bits);
  uint32_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &x[i], sizeof u);
    bad |= (u & 0x7fffffffu) > lim_bits;
  }
  return bad != 0;
}

/* Sum of squares in double. Eight interleaved partial sums, added in a
 * fixed order at the end: the same bits on every run and machine, yet the
 * loop vectorizes (one sequential sum would not, without reassociation).
 * The square of a float is exact in double. */
static double sum_squares(const float *restrict x, size_t n) {
  double s[8] = {0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (size_t l = 0; l < 8; l++)
      s[l] += (double)x[i + l] * (double)x[i + l];
  for (; i < n; i++)
    s[i % 8] += (double)x[i] * (double)x[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* dst = f * x, rounded once to float (f = 1: a copy). */
static void scale_copy(float *restrict dst, const float *restrict x, size_t n, double f) {
  if (f == 1.0) {
    memcpy(dst, x, n * sizeof *dst);
    return;
  }
  for (size_t i = 0; i < n; i++)
    dst[i] = (float)((double)x[i] * f);
}

/* The detail of the first rejected value of tensor x (parameters from
 * `off`), which values_bad() or fold() found. */
static int value_error(uint32_t sender, const Fedlr__Tensor *x, size_t off) {
  size_t i = 0;
  while (i < x->n_data && fabsf(x->data[i]) <= (float)FL_AGG_MAX_DELTA)
    i++;
  if (i == x->n_data) i--; /* not reached: the caller found a bad value */
  if (isfinite(x->data[i]))
    return fl_err_set(FL_ERANGE, "update from client %u: value %g at parameter %zu exceeds %g",
                      sender, (double)x->data[i], off + i, FL_AGG_MAX_DELTA);
  return fl_err_set(FL_ENONFINITE, "update from client %u: tensor '%s' value %zu is %s", sender,
                    x->name, i, isnan(x->data[i]) ? "NaN" : "infinite");
}

int fl_agg_add(fl_agg_t *a, size_t slot, uint32_t sender, Fedlr__Tensor *const *t, size_t nt,
               int is_delta, const float *global, uint64_t examples, int *clipped) {
  *clipped = 0;
  if (slot >= a->slots || a->added[slot])
    return fl_err_set(FL_ESTATE, "slot %zu is not open for an update", slot);
  if (examples < 1 || examples > FL_AGG_MAX_EXAMPLES)
    return fl_err_set(FL_ERANGE, "update from client %u weighs %llu examples (1 .. %llu)", sender,
                      (unsigned long long)examples, (unsigned long long)FL_AGG_MAX_EXAMPLES);
  /* The weight of this update alone (exact in double: examples <= 2^32). */
  const double s = (double)examples * AGG_SCALE;
  const int rob = robust(a), clip = a->cfg.clip_norm > 0;
  if (!rob && a->terms >= AGG_CARRY_EVERY) normalize(a);
  size_t off = 0, k;
  if (!rob && !clip) {
    /* FedAvg: fold straight from the decoded tensors (model order,
     * contiguous offsets), no copy of the update. If any value is out of
     * range, the tensors folded so far are folded back out, bit for bit, so
     * a refused update leaves no trace. */
    for (k = 0; k < nt; k++) {
      Fedlr__Tensor *x = t[k];
      if (!is_delta) to_delta(x->data, global + off, x->n_data);
      if (fold(a, off, x->data, x->n_data, s)) break;
      off += x->n_data;
    }
    if (k < nt) {
      int rc = value_error(sender, t[k], off);
      for (size_t j = 0, o = 0; j <= k; j++) {
        fold(a, o, t[j]->data, t[j]->n_data, -s);
        o += t[j]->n_data;
      }
      return rc;
    }
  } else {
    /* Clipping or a robust rule: the whole delta must be valid, and its
     * norm known, before any of it is folded or counts. A robust rule's
     * row may be written before that: it is read only once the slot is
     * added. */
    float *row = rob ? a->store + slot * a->num_params : NULL;
    double ss = 0;
    for (k = 0; k < nt; k++) {
      Fedlr__Tensor *x = t[k];
      if (!is_delta) to_delta(x->data, global + off, x->n_data);
      if (values_bad(x->data, x->n_data)) return value_error(sender, x, off);
      if (clip)
        ss += sum_squares(x->data, x->n_data);
      else
        memcpy(row + off, x->data, x->n_data * sizeof *row); /* robust, unclipped */
      off += x->n_data;
    }
    if (clip) {
      double f = 1.0, norm = sqrt(ss);
      if (norm > a->cfg.clip_norm) {
        f = a->cfg.clip_norm / norm;
        *clipped = 1;
      }
      off = 0;
      for (k = 0; k < nt; k++) {
        const Fedlr__Tensor *x = t[k];
        /* The FedAvg term f * n_k * delta, still rounded once. */
        if (rob)
          scale_copy(row + off, x->data, x->n_data, f);
        else
          fold(a, off, x->data, x->n_data, s * f);
        off += x->n_data;
      }
    }
  }
  if (!rob) a->terms++;
  a->added[slot] = 1;
  a->num_added++;
  a->examples += examples;
  return 0;
}

/* Batcher's merge-exchange sorting network for n values (Knuth, TAOCP 3,
 * 5.2.2, Algorithm M): about n log2(n)^2 / 4 comparators (i, j), i < j,
 * for any n. Writes them to out (if not NULL); returns how many. */
static size_t batcher_network(size_t n, uint32_t *out) {
  size_t len = 0, t = 0;
  if (n < 2) return 0;
  while (((size_t)1 << t) < n)
    t++;
  for (size_t p = (size_t)1 << (t - 1); p > 0; p >>= 1) {
    size_t q = (size_t)1 << (t - 1), r = 0, d = p;
    for (;;) {
      for (size_t i = 0; i + d < n; i++) {
        if ((i & p) != r) continue;
        if (out) {
          out[2 * len] = (uint32_t)i;
          out[2 * len + 1] = (uint32_t)(i + d);
        }
        len++;
      }
      if (q == p) break;
      d = q - p;
      q >>= 1;
      r = p;
    }
  }
  return len;
}

/* The network for n values in a->net (kept while n does not change). */
static int ensure_network(fl_agg_t *a, size_t n) {
  if (a->net_n == n && (a->net || n < 2)) return 0;
  size_t len = batcher_network(n, NULL);
  uint32_t *net = len ? malloc(2 * len * sizeof *net) : NULL;
  if (len && !net) return fl_err_set(FL_ENOMEM, "out of memory sorting %zu updates", n);
  batcher_network(n, net);
  free(a->net);
  a->net = net;
  a->net_n = n;
  a->net_len = len;
  return 0;
}

/* Sorts each of the first w columns of v (rows of SEL_W floats) ascending:
 * for every comparator (i, j), row i takes the lane-wise min and row j the
 * max. The same branch-free steps for every column, so the lanes are SIMD
 * lanes; min and max are exact, so every variant gives the same bits. The
 * compare-exchange is a function of its own so that its rows are restrict
 * parameters (GCC then emits compare + blend; with the rows as locals it
 * versioned the loop and branched on the data). */
#define CMPX_BODY                                                                                  \
  for (size_t l = 0; l < w; l++) {                                                                 \
    float x = a[l], y = b[l];                                                                      \
    float lo = x < y ? x : y, hi = y > x ? y : x;                                                  \
    a[l] = lo;                                                                                     \
    b[l] = hi;                                                                                     \
  }
#define SORT_BODY(cmpx)                                                                            \
  for (size_t c = 0; c < len; c++)                                                                 \
    cmpx(v + (size_t)net[2 * c] * SEL_W, v + (size_t)net[2 * c + 1] * SEL_W, w);

static inline void cmpx_generic(float *restrict a, float *restrict b, size_t w) {
  CMPX_BODY
}

static void sort_columns_generic(float *v, size_t w, const uint32_t *net, size_t len) {
  SORT_BODY(cmpx_generic)
}

__attribute__((target("avx512f"))) static inline void cmpx_avx512(float *restrict a,
                                                                  float *restrict b, size_t w) {
  CMPX_BODY
}

__attribute__((target("avx512f"))) static void
sort_columns_avx512(float *v, size_t w, const uint32_t *net, size_t len) {
  SORT_BODY(cmpx_avx512)
}

static void sort_columns(float *v, size_t w, const uint32_t *net, size_t len) {
  static int use_avx512 = -1;
  if (use_avx512 < 0) use_avx512 = __builtin_cpu_supports("avx512f") ? 1 : 0;
  (use_avx512 ? sort_columns_avx512 : sort_columns_generic)(v, w, net, len);
}

/* global += (add) or = (not add) the coordinate-wise median or trimmed mean
 * of the added slots' deltas. A block of SEL_W coordinates at a time: the r reported rows are
 * copied (in slot order) into r x SEL_W scratch, sorted column-wise, and
 * the statistic is read off the sorted rows, in double, in a fixed order.
 * Median: the middle value, or the mean of the two middle ones. Trimmed
 * mean: the mean of sorted rows b .. r-b-1, b = floor(beta r). */
static int robust_apply(fl_agg_t *a, float *global, int add) {
  const size_t P = a->num_params, r = a->num_added;
  int rc = ensure_network(a, r);
  if (rc) return rc;
  const float **rows = malloc(r * sizeof *rows);
  if (!rows) return fl_err_set(FL_ENOMEM, "out of memory aggregating %zu updates", r);
  for (size_t i = 0, k = 0; i < a->slots; i++)
    if (a->added[i]) rows[k++] = a->store + i * P;
  size_t lo = 0, hi = r; /* the sorted rows averaged: [lo, hi) */
  if (a->cfg.kind == FL_AGG_MEDIAN) {
    lo = (r - 1) / 2;
    hi = r / 2 + 1;
  } else {
    /* + 1e-9: beta * r = 2 must not come out as 1.999... */
    size_t b = (size_t)floor(a->cfg.trim_beta * (double)r + 1e-9);
    if (2 * b >= r) b = (r - 1) / 2; /* not reached for beta < 0.5 */
    lo = b;
    hi = r - b;
  }
  const double cnt = (double)(hi - lo);
  float *v = a->sel;
  double sum[SEL_W];
  for (size_t j = 0; j < P; j += SEL_W) {
    size_t w = P - j < SEL_W ? P - j : SEL_W;
    for (size_t k = 0; k < r; k++)
      memcpy(v + k * SEL_W, rows[k] + j, w * sizeof *v);
    sort_columns(v, w, a->net, a->net_len);
    for (size_t l = 0; l < w; l++)
      sum[l] = 0;
    for (size_t k = lo; k < hi; k++)
      for (size_t l = 0; l < w; l++)
        sum[l] += (double)v[k * SEL_W + l];
    for (size_t l = 0; l < w; l++) {
      float stat = (float)(sum[l] / cnt);
      global[j + l] = add ? global[j + l] + stat : stat;
    }
  }
  free(rows);
  return 0;
}

/* dst += (add) or = (not add) the rule's aggregate. */
static int emit(fl_agg_t *a, float *dst, int add) {
  if (a->num_added == 0) return fl_err_set(FL_ESTATE, "no update to aggregate");
  if (robust(a)) return robust_apply(a, dst, add);
  /* V = sum_k n_k delta_k * 2^40 exactly; the mean is V / 2^40 / N. The
   * canonical limbs make the conversion, hence the bits, independent of
   * when carries happened. N <= 2^24 * 2^32: exact in a uint64. */
  normalize(a);
  const double inv = 1.0 / (double)a->examples;
  const double hi_scale = AGG_LIMB / AGG_SCALE; /* 2^14 */
  for (size_t i = 0; i < a->num_params; i++) {
    double v = (double)a->hi[i] * hi_scale + (double)a->lo[i] * (1.0 / AGG_SCALE);
    float d = (float)(v * inv);
    dst[i] = add ? dst[i] + d : d;
  }
  return 0;
}

int fl_agg_apply(fl_agg_t *a, float *global) {
  return emit(a, global, 1);
}

int fl_agg_result(fl_agg_t *a, float *delta) {
  return emit(a, delta, 0);
}
