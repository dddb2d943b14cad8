/* bench_peak.h: the clock and the sgemm 1024^3 peak that every benchmark
 * reports its figures against (bench_fedlr, bench_xsmm). Header-only: each
 * benchmark is one file. Needs <cblas.h>, <stdlib.h>, <time.h>, fl_blas.h. */
#ifndef BENCH_PEAK_H
#define BENCH_PEAK_H

static inline double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline double sgemm_gflops(int threads) {
  const int n = 1024;
  float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n),
        *c = malloc(sizeof(float) * n * n);
  for (long i = 0; i < (long)n * n; i++) {
    a[i] = (float)(i % 7) * 0.1f;
    b[i] = (float)(i % 5) * 0.1f;
  }
  fl_blas_set_threads(threads);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
  double best = 0;
  for (int rep = 0; rep < 5; rep++) {
    double t = now_s();
    for (int i = 0; i < 4; i++)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    double g = 4 * 2.0 * n * n * n / (now_s() - t) / 1e9;
    if (g > best) best = g;
  }
  fl_blas_set_threads(1);
  free(a);
  free(b);
  free(c);
  return best;
}

#endif
