/* fl_test: a minimal test harness. Each tests/test_*.c file is one ctest
 * executable holding several TEST()s; main() comes from FL_TEST_MAIN().
 * Assertions are typed and print both sides; a failed assertion fails the
 * current test and returns from it.
 *
 * Outcomes. A test passes, fails, or is skipped: SKIP(why) says it cannot
 * run here (a missing tool or data set) and returns; SKIP_PART(why) says a
 * part of it cannot, and lets the rest run. A failure beats a skip. The
 * executable then reports "N passed, K skipped, M failed" and exits
 *   1  if a test failed, or if no test ran (a run that checks nothing is
 *      not a pass);
 *   77 (FL_TEST_SKIP_CODE) if none failed but something was skipped: ctest
 *      reports the whole executable as skipped (SKIP_RETURN_CODE), since
 *      "passed" would claim checks that did not run;
 *   0  if every test ran and passed.
 * tests/lib.sh applies the same rule to the integration tests.
 *
 * Registration. TEST(name) defines a statically allocated fl_test_case and
 * a constructor that links it into the executable's list, sorted by its
 * place in the source, so there is no limit on the number of tests and they
 * run in the order they are written. */
#ifndef FL_TEST_H
#define FL_TEST_H

#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define FL_TEST_SKIP_CODE 77

/* A test's status, kept in the int its function gets as fl__failed (the
 * name predates skips): 0 while nothing went wrong. */
enum { FL__PASSED = 0, FL__FAILED = 1, FL__SKIPPED = 2 };

typedef void (*fl_test_fn)(int *fl__failed);
typedef struct fl_test_case {
  const char *name;
  fl_test_fn fn;
  unsigned order;            /* __COUNTER__ at its TEST(): the source order */
  int status;                /* FL__PASSED, FL__FAILED, FL__SKIPPED; -1 before it ran */
  struct fl_test_case *next; /* the next test in source order */
} fl_test_case;

/* The executable's tests, in source order. */
static fl_test_case *fl__tests;

/* Links t into *list before the first test that comes after it. */
static inline void fl__register(fl_test_case **list, fl_test_case *t) {
  while (*list && (*list)->order < t->order)
    list = &(*list)->next;
  t->next = *list;
  *list = t;
}

/* FL__TEST_IN(list, name): TEST(name) registered in another list (the
 * harness's own test runs the registration on a list of its own). */
#define FL__TEST_IN(list, name)                                                                    \
  static void test_##name(int *fl__failed);                                                        \
  static fl_test_case fl__case_##name = {#name, test_##name, __COUNTER__, -1, NULL};               \
  __attribute__((constructor)) static void fl__reg_##name(void) {                                  \
    fl__register(&(list), &fl__case_##name);                                                       \
  }                                                                                                \
  static void test_##name(int *fl__failed)
#define TEST(name) FL__TEST_IN(fl__tests, name)

/* Marks the test skipped (unless it already failed) and prints why. */
__attribute__((format(printf, 4, 5))) static inline void fl__skip(int *status, const char *file,
                                                                  int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "  %s:%d: SKIP: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  if (*status == FL__PASSED) *status = FL__SKIPPED;
}
/* SKIP(fmt, ...): the test cannot run here; says why and returns from the
 * current function (in a helper that takes fl__failed, like a failed
 * assertion, from the helper: the test then checks *fl__failed).
 * SKIP_PART(fmt, ...): a part of it cannot; says why and goes on, the test
 * ending skipped unless something else fails. Both take printf arguments. */
#define SKIP(...)                                                                                  \
  do {                                                                                             \
    fl__skip(fl__failed, __FILE__, __LINE__, __VA_ARGS__);                                         \
    return;                                                                                        \
  } while (0)
#define SKIP_PART(...) fl__skip(fl__failed, __FILE__, __LINE__, __VA_ARGS__)

#define FL__FAIL(...)                                                                              \
  do {                                                                                             \
    fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                                              \
    fprintf(stderr, __VA_ARGS__);                                                                  \
    fprintf(stderr, "\n");                                                                         \
    *fl__failed = FL__FAILED;                                                                      \
    return;                                                                                        \
  } while (0)

#define ASSERT_TRUE(c)                                                                             \
  do {                                                                                             \
    if (!(c)) FL__FAIL("ASSERT_TRUE(%s) failed", #c);                                              \
  } while (0)
#define ASSERT_FALSE(c)                                                                            \
  do {                                                                                             \
    if (c) FL__FAIL("ASSERT_FALSE(%s) failed", #c);                                                \
  } while (0)
#define ASSERT_INT_OP(a, op, b)                                                                    \
  do {                                                                                             \
    long long fl__a = (long long)(a), fl__b = (long long)(b);                                      \
    if (!(fl__a op fl__b)) FL__FAIL("ASSERT %s %s %s: %lld vs %lld", #a, #op, #b, fl__a, fl__b);   \
  } while (0)
#define ASSERT_EQ(a, b) ASSERT_INT_OP(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_INT_OP(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_INT_OP(a, <, b)
#define ASSERT_LE(a, b) ASSERT_INT_OP(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_INT_OP(a, >, b)
#define ASSERT_GE(a, b) ASSERT_INT_OP(a, >=, b)
/* Passes when |a-b| <= tol (absolute). */
#define ASSERT_NEAR(a, b, tol)                                                                     \
  do {                                                                                             \
    double fl__a = (double)(a), fl__b = (double)(b), fl__t = (double)(tol);                        \
    if (!(fabs(fl__a - fl__b) <= fl__t))                                                           \
      FL__FAIL("ASSERT_NEAR(%s, %s): %.10g vs %.10g (tol %g)", #a, #b, fl__a, fl__b, fl__t);       \
  } while (0)
#define ASSERT_DBL_OP(a, op, b)                                                                    \
  do {                                                                                             \
    double fl__a = (double)(a), fl__b = (double)(b);                                               \
    if (!(fl__a op fl__b)) FL__FAIL("ASSERT %s %s %s: %.10g vs %.10g", #a, #op, #b, fl__a, fl__b); \
  } while (0)
#define ASSERT_STR_EQ(a, b)                                                                        \
  do {                                                                                             \
    const char *fl__a = (a), *fl__b = (b);                                                         \
    if (!fl__a || !fl__b || strcmp(fl__a, fl__b) != 0)                                             \
      FL__FAIL("ASSERT_STR_EQ(%s, %s): \"%s\" vs \"%s\"", #a, #b, fl__a ? fl__a : "(null)",        \
               fl__b ? fl__b : "(null)");                                                          \
  } while (0)
/* Passes when needle occurs in haystack. */
#define ASSERT_CONTAINS(hay, needle)                                                               \
  do {                                                                                             \
    const char *fl__h = (hay), *fl__n = (needle);                                                  \
    if (!fl__h || !strstr(fl__h, fl__n))                                                           \
      FL__FAIL("ASSERT_CONTAINS(%s, %s): \"%s\" lacks \"%s\"", #hay, #needle,                      \
               fl__h ? fl__h : "(null)", fl__n);                                                   \
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

/* fl_test_tmpdir()/name, in one of 4 buffers used in turn (so a few can
 * be held at once). */
static inline const char *fl_test_path(const char *name) {
  static char path[4][600];
  static int next;
  char *p = path[next++ % 4];
  snprintf(p, sizeof path[0], "%s/%s", fl_test_tmpdir(), name);
  return p;
}

/* Reads a whole (small) file into a malloc'd string, or NULL. */
static inline char *fl_test_slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  size_t n;
  while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (len + 1 == cap) {
      char *p = realloc(buf, cap *= 2);
      if (!p) free(buf);
      buf = p;
    }
  }
  fclose(f);
  if (buf) buf[len] = '\0';
  return buf;
}

/* How many times needle occurs in hay (not overlapping). */
static inline size_t fl_test_count(const char *hay, const char *needle) {
  size_t n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

/* 1 if the command `cmd` is on the PATH. */
static inline int fl_test_have_tool(const char *cmd) {
  char buf[256];
  snprintf(buf, sizeof buf, "command -v %s >/dev/null 2>&1", cmd);
  return system(buf) == 0;
}

/* Checks what a browser needs of the SVG file `path` holding `svg`: one
 * <svg> root in the SVG namespace, balanced groups and texts, no "nan" or
 * "inf" (a value printed unchecked), and xmllint's well-formedness check
 * (a skipped part of the test where xmllint is not installed). 1 if so. */
static inline int fl_test_svg_ok(int *fl__failed, const char *path, const char *svg) {
  size_t n = strlen(svg);
  if (strncmp(svg, "<svg ", 5) != 0 || !strstr(svg, "xmlns=\"http://www.w3.org/2000/svg\""))
    return 0;
  if (n < 7 || strcmp(svg + n - 7, "</svg>\n") != 0) return 0;
  if (fl_test_count(svg, "<g>") + fl_test_count(svg, "<g ") != fl_test_count(svg, "</g>")) return 0;
  if (fl_test_count(svg, "<svg") != 1 ||
      fl_test_count(svg, "<text") != fl_test_count(svg, "</text>"))
    return 0;
  if (strstr(svg, "nan") || strstr(svg, "inf")) return 0;
  if (fl_test_have_tool("xmllint")) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "xmllint --noout '%s'", path);
    if (system(cmd) != 0) return 0;
  } else {
    SKIP_PART("xmllint (libxml2-utils) is not installed: %s not checked by an XML parser", path);
  }
  return 1;
}

/* A full disk as write() sees it: RLIMIT_FSIZE makes a write that crosses
 * the cap come up short, and the next one fail (EFBIG; SIGXFSZ ignored).
 * bytes 0 lifts the cap. Nothing may be printed to a file while capped, so
 * a test notes results and asserts after lifting it. -1 if setrlimit
 * fails. */
static inline int fl_test_cap_file_size(off_t bytes) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_FSIZE, &rl) != 0) return -1;
  signal(SIGXFSZ, SIG_IGN);
  rl.rlim_cur = bytes ? (rlim_t)bytes : rl.rlim_max;
  return setrlimit(RLIMIT_FSIZE, &rl);
}

/* The Fashion-MNIST directory: $FEDLR_DATA_DIR, else the Debian package's. */
static inline const char *fl_test_data_dir(void) {
  const char *d = getenv("FEDLR_DATA_DIR");
  return d ? d : "/usr/share/datasets/fashion-mnist";
}

/* 1 if fl_test_data_dir() holds the four Fashion-MNIST files that
 * fl_dataset_load_named reads (each gzipped or not). */
static inline int fl_test_have_fashion_mnist(void) {
  static const char *const stems[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                      "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
  for (size_t i = 0; i < sizeof stems / sizeof stems[0]; i++) {
    char gz[1024], raw[1024];
    snprintf(gz, sizeof gz, "%s/%s.gz", fl_test_data_dir(), stems[i]);
    snprintf(raw, sizeof raw, "%s/%s", fl_test_data_dir(), stems[i]);
    if (access(gz, R_OK) != 0 && access(raw, R_OK) != 0) return 0;
  }
  return 1;
}

/* Skips the test where Fashion-MNIST is not installed. Where it is, a test
 * that cannot load it fails. */
#define SKIP_UNLESS_FASHION_MNIST()                                                                \
  do {                                                                                             \
    if (!fl_test_have_fashion_mnist())                                                             \
      SKIP("Fashion-MNIST is not in %s (install dataset-fashion-mnist or set FEDLR_DATA_DIR)",     \
           fl_test_data_dir());                                                                    \
  } while (0)

/* Monotonic clock in seconds, for tests that bound how long a call takes. */
static inline double fl_test_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs the tests of list whose name contains filter (every test if filter
 * is NULL), each test's lines on stderr, then the names of the skipped
 * tests and "N passed, K skipped, M failed" on summary. Returns the exit
 * status of the rule above: 1, FL_TEST_SKIP_CODE or 0. */
static inline int fl_test_run(fl_test_case *list, const char *filter, FILE *summary) {
  int passed = 0, skipped = 0, failed = 0;
  for (fl_test_case *t = list; t; t = t->next) {
    t->status = -1;
    if (filter && !strstr(t->name, filter)) continue;
    int status = FL__PASSED;
    fprintf(stderr, "[ RUN  ] %s\n", t->name);
    t->fn(&status);
    t->status = status;
    const char *word = status == FL__FAILED ? "FAIL" : status == FL__SKIPPED ? "SKIP" : " OK ";
    fprintf(stderr, "[ %s ] %s\n", word, t->name);
    if (status == FL__FAILED)
      failed++;
    else if (status == FL__SKIPPED)
      skipped++;
    else
      passed++;
  }
  if (passed + skipped + failed == 0) {
    fprintf(summary, "no test%s%s%s: nothing was checked\n", filter ? " matches '" : "",
            filter ? filter : "", filter ? "'" : "");
    return 1;
  }
  for (fl_test_case *t = list; t; t = t->next)
    if (t->status == FL__SKIPPED) fprintf(summary, "skipped: %s\n", t->name);
  fprintf(summary, "%d passed, %d skipped, %d failed\n", passed, skipped, failed);
  return failed ? 1 : skipped ? FL_TEST_SKIP_CODE : 0;
}

/* main(): `test_X [FILTER]` runs the tests whose name contains FILTER. */
#define FL_TEST_MAIN()                                                                             \
  int main(int argc, char **argv) {                                                                \
    return fl_test_run(fl__tests, argc > 1 ? argv[1] : NULL, stdout);                              \
  }

#endif
