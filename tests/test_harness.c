/* fl_test itself (tests/fl_test.h): registration has no limit and keeps the
 * source order, and fl_test_run reports passes, skips and failures by the
 * harness's rule: exit 1 when a test failed or nothing ran, 77 when none
 * failed and something was skipped, 0 when every test ran and passed.
 * Nested runs go over lists of their own, their output captured. */
#include "fl_test.h"

/* ---- a nested run, its summary and its stderr captured ---- */

typedef struct {
  int rc;
  char summary[1024]; /* what fl_test_run printed on its summary stream */
  char log[32768];    /* its stderr: [ RUN ] lines, assertion and SKIP messages */
} nested_t;

static void slurp_into(FILE *f, char *buf, size_t cap) {
  fflush(f);
  rewind(f);
  size_t n = fread(buf, 1, cap - 1, f);
  buf[n] = '\0';
}

/* Runs list (tests whose name contains filter; all if NULL) with stderr
 * redirected to a file; returns -1 where the redirection fails. */
static int nested_run(fl_test_case *list, const char *filter, nested_t *out) {
  FILE *sum = tmpfile(), *log = tmpfile();
  int saved = -1, rc = -1;
  if (!sum || !log) goto out;
  fflush(stderr);
  saved = dup(STDERR_FILENO);
  if (saved < 0 || dup2(fileno(log), STDERR_FILENO) < 0) goto out;
  out->rc = fl_test_run(list, filter, sum);
  fflush(stderr);
  dup2(saved, STDERR_FILENO);
  slurp_into(sum, out->summary, sizeof out->summary);
  slurp_into(log, out->log, sizeof out->log);
  rc = 0;
out:
  if (saved >= 0) close(saved);
  if (sum) fclose(sum);
  if (log) fclose(log);
  return rc;
}

/* ---- 300 tests: the old harness kept 256 in an array and dropped the rest
 * without a word ---- */

#define MANY_N 300
static fl_test_case *many;
static int many_ran[MANY_N], many_next; /* the order the tests ran in */

static void note_ran(int i) {
  if (many_next < MANY_N) many_ran[many_next] = i;
  many_next++;
}

/* many_HTU for HTU = 000..299, each noting its number when it runs. */
#define MANY1(h, t, u)                                                                             \
  FL__TEST_IN(many, many_##h##t##u) {                                                              \
    note_ran(1##h##t##u - 1000);                                                                   \
  }
#define MANY10(h, t)                                                                               \
  MANY1(h, t, 0)                                                                                   \
  MANY1(h, t, 1)                                                                                   \
  MANY1(h, t, 2)                                                                                   \
  MANY1(h, t, 3)                                                                                   \
  MANY1(h, t, 4)                                                                                   \
  MANY1(h, t, 5)                                                                                   \
  MANY1(h, t, 6)                                                                                   \
  MANY1(h, t, 7)                                                                                   \
  MANY1(h, t, 8)                                                                                   \
  MANY1(h, t, 9)
#define MANY100(h)                                                                                 \
  MANY10(h, 0)                                                                                     \
  MANY10(h, 1)                                                                                     \
  MANY10(h, 2)                                                                                     \
  MANY10(h, 3)                                                                                     \
  MANY10(h, 4)                                                                                     \
  MANY10(h, 5)                                                                                     \
  MANY10(h, 6)                                                                                     \
  MANY10(h, 7)                                                                                     \
  MANY10(h, 8)                                                                                     \
  MANY10(h, 9)
MANY100(0)
MANY100(1)
MANY100(2)

TEST(registration_has_no_limit_and_keeps_source_order) {
  int n = 0;
  unsigned last = 0;
  for (const fl_test_case *t = many; t; t = t->next, n++) {
    char want[32];
    snprintf(want, sizeof want, "many_%03d", n);
    ASSERT_STR_EQ(t->name, want);
    if (n > 0) ASSERT_GT(t->order, last);
    last = t->order;
  }
  ASSERT_EQ(n, MANY_N);
}

TEST(every_registered_test_runs_once_in_order) {
  nested_t r;
  many_next = 0;
  ASSERT_EQ(nested_run(many, NULL, &r), 0);
  ASSERT_EQ(r.rc, 0);
  ASSERT_STR_EQ(r.summary, "300 passed, 0 skipped, 0 failed\n");
  ASSERT_EQ(many_next, MANY_N);
  for (int i = 0; i < MANY_N; i++)
    ASSERT_EQ(many_ran[i], i);
  ASSERT_CONTAINS(r.log, "[ RUN  ] many_299\n[  OK  ] many_299\n");
}

/* ---- outcomes ---- */

static fl_test_case *outcomes;
static int ran_after_skip, ran_after_skip_part;

FL__TEST_IN(outcomes, o_pass_ok) {
  ASSERT_EQ(1 + 1, 2);
}
FL__TEST_IN(outcomes, o_skip_ok) {
  SKIP("no %s here", "widget");
  ran_after_skip = 1;
}
FL__TEST_IN(outcomes, o_fail) {
  ASSERT_EQ(1 + 1, 3);
}

TEST(a_failure_fails_the_run_and_skips_are_counted) {
  nested_t r;
  ran_after_skip = 0;
  ASSERT_EQ(nested_run(outcomes, NULL, &r), 0);
  ASSERT_EQ(r.rc, 1);
  ASSERT_CONTAINS(r.summary, "skipped: o_skip_ok\n");
  ASSERT_CONTAINS(r.summary, "1 passed, 1 skipped, 1 failed\n");
  ASSERT_CONTAINS(r.log, "SKIP: no widget here\n[ SKIP ] o_skip_ok\n");
  ASSERT_CONTAINS(r.log, "ASSERT 1 + 1 == 3: 2 vs 3\n[ FAIL ] o_fail\n");
  ASSERT_EQ(ran_after_skip, 0); /* SKIP returns */
}

TEST(a_skip_beside_passes_is_reported_as_a_skip) {
  nested_t r;
  ASSERT_EQ(nested_run(outcomes, "_ok", &r), 0);
  ASSERT_EQ(r.rc, FL_TEST_SKIP_CODE);
  ASSERT_STR_EQ(r.summary, "skipped: o_skip_ok\n1 passed, 1 skipped, 0 failed\n");
}

TEST(all_skipped_is_a_skip_all_passed_is_a_pass) {
  nested_t r;
  ASSERT_EQ(nested_run(outcomes, "o_skip", &r), 0);
  ASSERT_EQ(r.rc, FL_TEST_SKIP_CODE);
  ASSERT_STR_EQ(r.summary, "skipped: o_skip_ok\n0 passed, 1 skipped, 0 failed\n");
  ASSERT_EQ(nested_run(outcomes, "o_pass", &r), 0);
  ASSERT_EQ(r.rc, 0);
  ASSERT_STR_EQ(r.summary, "1 passed, 0 skipped, 0 failed\n");
}

TEST(a_run_that_checks_nothing_fails) {
  nested_t r;
  ASSERT_EQ(nested_run(outcomes, "no_such_test", &r), 0);
  ASSERT_EQ(r.rc, 1);
  ASSERT_STR_EQ(r.summary, "no test matches 'no_such_test': nothing was checked\n");
  fl_test_case *empty = NULL;
  ASSERT_EQ(nested_run(empty, NULL, &r), 0);
  ASSERT_EQ(r.rc, 1);
  ASSERT_STR_EQ(r.summary, "no test: nothing was checked\n");
}

/* ---- a skipped part, and a failure beating a skip ---- */

static fl_test_case *parts;

static void failing_helper(int *fl__failed) {
  ASSERT_TRUE(0 > 1);
}

FL__TEST_IN(parts, p_skip_part_then_the_rest) {
  SKIP_PART("part %d cannot run", 1);
  ran_after_skip_part = 1;
  ASSERT_TRUE(1);
}
FL__TEST_IN(parts, p_skip_part_then_a_failure) {
  SKIP_PART("part 1 cannot run");
  ASSERT_TRUE(0);
}
FL__TEST_IN(parts, p_failure_then_a_skip) {
  failing_helper(fl__failed); /* goes on, as test_data.c's helpers do */
  SKIP("the rest cannot run");
}

TEST(a_skipped_part_lets_the_rest_run_and_a_failure_beats_a_skip) {
  nested_t r;
  ran_after_skip_part = 0;
  ASSERT_EQ(nested_run(parts, "p_skip_part_then_the_rest", &r), 0);
  ASSERT_EQ(r.rc, FL_TEST_SKIP_CODE);
  ASSERT_EQ(ran_after_skip_part, 1);
  ASSERT_CONTAINS(r.log, "SKIP: part 1 cannot run\n");
  ASSERT_STR_EQ(r.summary, "skipped: p_skip_part_then_the_rest\n0 passed, 1 skipped, 0 failed\n");

  ASSERT_EQ(nested_run(parts, "p_skip_part_then_a_failure", &r), 0);
  ASSERT_EQ(r.rc, 1);
  ASSERT_STR_EQ(r.summary, "0 passed, 0 skipped, 1 failed\n");

  ASSERT_EQ(nested_run(parts, "p_failure_then_a_skip", &r), 0);
  ASSERT_EQ(r.rc, 1);
  ASSERT_STR_EQ(r.summary, "0 passed, 0 skipped, 1 failed\n");
  ASSERT_CONTAINS(r.log, "ASSERT_TRUE(0 > 1) failed");

  /* The whole list: statuses as reported. */
  ASSERT_EQ(nested_run(parts, NULL, &r), 0);
  ASSERT_EQ(r.rc, 1);
  ASSERT_STR_EQ(r.summary, "skipped: p_skip_part_then_the_rest\n0 passed, 1 skipped, 2 failed\n");
  const int want[] = {FL__SKIPPED, FL__FAILED, FL__FAILED};
  int i = 0;
  for (const fl_test_case *t = parts; t; t = t->next, i++)
    ASSERT_EQ(t->status, want[i]);
  ASSERT_EQ(i, 3);
}

FL_TEST_MAIN()
