/* fl_sopt_dump: runs common/fl_server_optim's steps for
 * tests/server_optim_torch.py, which compares them with torch.optim and
 * with the paper's formulas.
 *
 * stdin, whitespace-separated: SPEC ETA N T, then N floats (x0), then T
 * times N floats (the pseudo-gradients d_1 .. d_T), numbers as strtod
 * reads them (hex floats welcome). stdout: T lines of N values, x after
 * each step, as C99 hex floats (%a: exact); or one line "err MESSAGE". */
#include <stdio.h>
#include <stdlib.h>

#include "fl_error.h"
#include "fl_server_optim.h"

int main(void) {
  char spec[256];
  double eta;
  size_t n, steps;
  if (scanf("%255s %lf %zu %zu", spec, &eta, &n, &steps) != 4 || n == 0 || n > 1000000) {
    printf("err bad header\n");
    return 1;
  }
  fl_sopt_config_t c;
  if (fl_sopt_parse(spec, &c)) {
    printf("err %s\n", fl_err_msg());
    return 0;
  }
  float *x = malloc(n * sizeof *x), *d = malloc(n * sizeof *d);
  float *st[FL_SOPT_MAX_STATE] = {malloc(n * sizeof(float)), malloc(n * sizeof(float))};
  if (!x || !d || !st[0] || !st[1]) return 1;
  double v;
  for (size_t i = 0; i < n; i++) {
    if (scanf("%lf", &v) != 1) return 1;
    x[i] = (float)v;
  }
  fl_sopt_init(&c, st, n);
  for (size_t t = 0; t < steps; t++) {
    for (size_t i = 0; i < n; i++) {
      if (scanf("%lf", &v) != 1) return 1;
      d[i] = (float)v;
    }
    fl_sopt_step(&c, eta, x, d, st, n);
    for (size_t i = 0; i < n; i++)
      printf("%s%a", i ? " " : "", (double)x[i]);
    printf("\n");
  }
  free(x);
  free(d);
  free(st[0]);
  free(st[1]);
  return 0;
}
