/* fl_test: a minimal test harness. Each tests/test_*.c file is one ctest
 * executable holding several TEST()s; main() comes from FL_TEST_MAIN().
 * Assertions are typed and print both sides; a failed assertion fails the
 * current test and returns from it. The final line is "N passed, N failed". */
#ifndef FL_TEST_H
#define FL_TEST_H

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef void (*fl_test_fn)(int *fl__failed);
typedef struct {
  const char *name;
  fl_test_fn fn;
} fl_test_case;

#define FL_MAX_TESTS 256
static fl_test_case fl__tests[FL_MAX_TESTS];
static int fl__ntests;

#define TEST(name)                                                               \
  static void test_##name(int *fl__failed);                                      \
  __attribute__((constructor)) static void fl__reg_##name(void) {                \
    if (fl__ntests < FL_MAX_TESTS) fl__tests[fl__ntests++] = (fl_test_case){#name, test_##name}; \
  }                                                                              \
  static void test_##name(int *fl__failed)

#define FL__FAIL(...)                                                            \
  do {                                                                           \
    fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                            \
    fprintf(stderr, __VA_ARGS__);                                                \
    fprintf(stderr, "\n");                                                       \
    *fl__failed = 1;                                                             \
    return;                                                                      \
  } while (0)

#define ASSERT_TRUE(c)                                                           \
  do { if (!(c)) FL__FAIL("ASSERT_TRUE(%s) failed", #c); } while (0)
#define ASSERT_FALSE(c)                                                          \
  do { if (c) FL__FAIL("ASSERT_FALSE(%s) failed", #c); } while (0)
#define ASSERT_INT_OP(a, op, b)                                                  \
  do {                                                                           \
    long long fl__a = (long long)(a), fl__b = (long long)(b);                    \
    if (!(fl__a op fl__b))                                                       \
      FL__FAIL("ASSERT %s %s %s: %lld vs %lld", #a, #op, #b, fl__a, fl__b);      \
  } while (0)
#define ASSERT_EQ(a, b) ASSERT_INT_OP(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_INT_OP(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_INT_OP(a, <, b)
#define ASSERT_LE(a, b) ASSERT_INT_OP(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_INT_OP(a, >, b)
#define ASSERT_GE(a, b) ASSERT_INT_OP(a, >=, b)
/* Passes when |a-b| <= tol (absolute). */
#define ASSERT_NEAR(a, b, tol)                                                   \
  do {                                                                           \
    double fl__a = (double)(a), fl__b = (double)(b), fl__t = (double)(tol);      \
    if (!(fabs(fl__a - fl__b) <= fl__t))                                         \
      FL__FAIL("ASSERT_NEAR(%s, %s): %.10g vs %.10g (tol %g)", #a, #b, fl__a, fl__b, fl__t); \
  } while (0)
#define ASSERT_DBL_OP(a, op, b)                                                  \
  do {                                                                           \
    double fl__a = (double)(a), fl__b = (double)(b);                             \
    if (!(fl__a op fl__b))                                                       \
      FL__FAIL("ASSERT %s %s %s: %.10g vs %.10g", #a, #op, #b, fl__a, fl__b);    \
  } while (0)
#define ASSERT_STR_EQ(a, b)                                                      \
  do {                                                                           \
    const char *fl__a = (a), *fl__b = (b);                                       \
    if (!fl__a || !fl__b || strcmp(fl__a, fl__b) != 0)                           \
      FL__FAIL("ASSERT_STR_EQ(%s, %s): \"%s\" vs \"%s\"", #a, #b, fl__a ? fl__a : "(null)", fl__b ? fl__b : "(null)"); \
  } while (0)
/* Passes when needle occurs in haystack. */
#define ASSERT_CONTAINS(hay, needle)                                             \
  do {                                                                           \
    const char *fl__h = (hay), *fl__n = (needle);                                \
    if (!fl__h || !strstr(fl__h, fl__n))                                         \
      FL__FAIL("ASSERT_CONTAINS(%s, %s): \"%s\" lacks \"%s\"", #hay, #needle, fl__h ? fl__h : "(null)", fl__n); \
  } while (0)

/* A scratch directory for this test binary (created on demand). */
static inline const char *fl_test_tmpdir(void) {
  static char dir[512];
  if (!dir[0]) {
    const char *base = getenv("FEDLR_TEST_TMP");
    snprintf(dir, sizeof dir, "%s/t%d", base ? base : "/tmp/fedlr-test", (int)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot create %s\n", dir);
  }
  return dir;
}

/* Fashion-MNIST directory, or NULL (the test should then fail loudly). */
static inline const char *fl_test_data_dir(void) {
  const char *d = getenv("FEDLR_DATA_DIR");
  return d ? d : "/usr/share/datasets/fashion-mnist";
}

/* Monotonic clock in seconds, for tests that bound how long a call takes. */
static inline double fl_test_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define FL_TEST_MAIN()                                                           \
  int main(int argc, char **argv) {                                              \
    int passed = 0, failed = 0;                                                  \
    for (int i = 0; i < fl__ntests; i++) {                                       \
      if (argc > 1 && !strstr(fl__tests[i].name, argv[1])) continue;            \
      int f = 0;                                                                 \
      fprintf(stderr, "[ RUN  ] %s\n", fl__tests[i].name);                       \
      fl__tests[i].fn(&f);                                                       \
      fprintf(stderr, "[ %s ] %s\n", f ? "FAIL" : " OK ", fl__tests[i].name);    \
      if (f) failed++; else passed++;                                            \
    }                                                                            \
    printf("%d passed, %d failed\n", passed, failed);                            \
    return failed ? 1 : 0;                                                       \
  }

#endif
