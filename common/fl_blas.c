#include "fl_blas.h"

#include <cpuid.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

char *openblas_get_corename(void);
void openblas_set_num_threads(int num_threads);

const char *fl_blas_corename(void) { return openblas_get_corename(); }

void fl_blas_set_threads(int n) { openblas_set_num_threads(n); }

const char *fl_blas_preferred_core(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return "";
  int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1;
  unsigned a1 = 0, b1, c1, d1;
  __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1);
  int bf16 = (a1 >> 5) & 1;
  if (avx512f && bf16) return "Cooperlake";
  if (avx512f) return "SkylakeX";
  if (avx2) return "Haswell";
  return "";
}

void fl_blas_setup(int argc, char **argv) {
  (void)argc;
  fl_blas_set_threads(1);
  if (getenv("OPENBLAS_CORETYPE") || getenv("FEDLR_NO_REEXEC")) return;
  const char *want = fl_blas_preferred_core();
  const char *have = fl_blas_corename();
  if (!want[0] || (have && strcasecmp(have, want) == 0)) return;
  /* Re-exec once with the core type set; the guard variable stops loops. */
  setenv("OPENBLAS_CORETYPE", want, 1);
  setenv("FEDLR_NO_REEXEC", "1", 1);
  execv("/proc/self/exe", argv);
  /* execv failed: carry on with the kernels we have. */
}
