/* Tests of fl_metrics: JSON Lines, progress line, SVG chart. */
#include "fl_metrics.h"

#include <errno.h>
#include <sys/stat.h>

#include "fl_error.h"
#include "fl_test.h"

static fl_round_metrics_t rec(uint32_t round, uint32_t total) {
  fl_round_metrics_t r = {
      .round = round,
      .rounds_total = total,
      .lr = 0.1 * pow(0.9, round - 1),
      .server_lr = 1, /* plain FedAvg */
      .clients_sampled = 10,
      .clients_reported = 9,
      .train_loss = 2.0 / round,
      .test_loss = round % 5 == 0 || round == total ? 2.2 / round : NAN,
      .test_accuracy = round % 5 == 0 || round == total ? 1.0 - 0.5 / round : NAN,
      .seconds = 0.5,
      .elapsed = 0.5 * round,
      .bytes_sent = 1000u * round,
      .bytes_received = 2000u * round,
  };
  return r;
}

TEST(jsonl_lines) {
  const char *path = fl_test_path("m.jsonl");
  fl_metrics_t *m = NULL;
  ASSERT_EQ(fl_metrics_new(path, 0, &m), 0);
  for (uint32_t r = 1; r <= 5; r++) {
    fl_round_metrics_t x = rec(r, 5);
    ASSERT_EQ(fl_metrics_add(m, &x, r == 2 ? "\"participants\":[1,5]" : NULL), 0);
  }
  ASSERT_EQ(fl_metrics_count(m), 5);
  ASSERT_EQ(fl_metrics_get(m, 4)->round, 5);
  ASSERT_TRUE(fl_metrics_get(m, 5) == NULL);
  /* Flushed per line: readable before the metrics object is closed. */
  char *text = fl_test_slurp(path);
  ASSERT_TRUE(text != NULL);
  size_t lines = fl_test_count(text, "\n");
  int first_ok = !strncmp(text, "{\"round\":1,", 11);
  int nulls = strstr(text, "\"test_loss\":null,\"test_accuracy\":null") != NULL;
  int extra = strstr(text, ",\"participants\":[1,5]}\n") != NULL;
  int exact = strstr(text, "\"lr\":0.10000000000000001,") != NULL;
  int no_nan = !strstr(text, "nan") && !strstr(text, "inf");
  free(text);
  ASSERT_EQ(lines, 5);
  ASSERT_TRUE(first_ok);
  ASSERT_TRUE(nulls);
  ASSERT_TRUE(extra);
  ASSERT_TRUE(exact);
  ASSERT_TRUE(no_nan);
  /* A newline in extra_json would break the one-object-per-line format. */
  fl_round_metrics_t x = rec(6, 6);
  ASSERT_EQ(fl_metrics_add(m, &x, "\"a\":1\n"), FL_EINVAL);
  fl_metrics_destroy(&m);
  ASSERT_TRUE(m == NULL);
  fl_metrics_destroy(&m); /* NULL-safe */

  /* Resume appends. */
  ASSERT_EQ(fl_metrics_new(path, 1, &m), 0);
  x = rec(6, 6);
  x.train_loss = INFINITY;
  ASSERT_EQ(fl_metrics_add(m, &x, NULL), 0);
  fl_metrics_destroy(&m);
  text = fl_test_slurp(path);
  ASSERT_TRUE(text != NULL);
  lines = fl_test_count(text, "\n");
  int inf_null =
      strstr(text, "\"round\":6,\"rounds_total\":6,") && strstr(text, "\"train_loss\":null");
  free(text);
  ASSERT_EQ(lines, 6);
  ASSERT_TRUE(inf_null);

  /* Every line is a JSON object with the documented keys (python3 is in CI). */
  if (fl_test_have_tool("python3")) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import json,sys\n"
             "keys={\"round\",\"lr\",\"clients_sampled\",\"clients_reported\",\"train_loss\","
             "\"test_loss\","
             "\"test_accuracy\",\"seconds\",\"elapsed\",\"bytes_sent\",\"bytes_received\"}\n"
             "rows=[json.loads(l) for l in open(sys.argv[1])]\n"
             "assert len(rows)==6 and all(keys<=set(r) for r in rows)\n"
             "assert rows[0][\"test_loss\"] is None and rows[4][\"test_accuracy\"]==0.9\n"
             "assert rows[1][\"participants\"]==[1,5] and rows[5][\"train_loss\"] is None\n"
             "assert rows[2][\"bytes_received\"]==6000' '%s'",
             path);
    ASSERT_EQ(system(cmd), 0);
  } else {
    SKIP("python3 is not installed: the JSON lines were not checked by a parser");
  }
}

TEST(memory_only_and_bad_paths) {
  fl_metrics_t *m = NULL;
  ASSERT_EQ(fl_metrics_new(NULL, 0, &m), 0);
  fl_round_metrics_t x = rec(1, 1);
  ASSERT_EQ(fl_metrics_add(m, &x, NULL), 0);
  ASSERT_EQ(fl_metrics_count(m), 1);
  fl_metrics_destroy(&m);
  ASSERT_EQ(fl_metrics_new("", 0, &m), 0);
  fl_metrics_destroy(&m);
  ASSERT_EQ(fl_metrics_new("/nonexistent-dir/m.jsonl", 0, &m), FL_EIO);
  ASSERT_TRUE(m == NULL);
  ASSERT_CONTAINS(fl_err_msg(), "/nonexistent-dir/m.jsonl");
}

static char *progress(const fl_round_metrics_t *r) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) return NULL;
  fl_metrics_print_progress(f, r);
  fclose(f);
  return buf;
}

TEST(progress_line) {
  fl_round_metrics_t r = {.round = 12,
                          .rounds_total = 100,
                          .lr = 0.05,
                          .server_lr = 1,
                          .clients_sampled = 10,
                          .clients_reported = 10,
                          .train_loss = 0.4123,
                          .test_loss = 0.4421,
                          .test_accuracy = 0.8412,
                          .seconds = 0.62,
                          .elapsed = 7.2};
  char *s = progress(&r);
  ASSERT_TRUE(s != NULL);
  /* ETA = 7.2 s / 12 rounds * 88 rounds left = 52.8 s. */
  char want[] = "round  12/100  lr 0.0500  clients 10/10  train 0.4123  test acc 0.8412 loss "
                "0.4421  0.62s  ETA 53s\n";
  int ok = !strcmp(s, want);
  if (!ok) fprintf(stderr, "  got  %s  want %s", s, want);
  free(s);
  ASSERT_TRUE(ok);

  r.test_loss = NAN;
  r.test_accuracy = NAN;
  r.lr = 1e-4;
  r.round = 1;
  r.elapsed = 60;
  s = progress(&r);
  ASSERT_TRUE(s != NULL);
  ok = strstr(s, "round   1/100  lr 1.00e-04  ") && strstr(s, "test acc - loss -  ") &&
       strstr(s, "ETA 1h39m\n");
  if (!ok) fprintf(stderr, "  got  %s", s);
  free(s);
  ASSERT_TRUE(ok);

  r.round = 100;
  r.elapsed = 100;
  s = progress(&r);
  ASSERT_TRUE(s != NULL);
  ok = strstr(s, "round 100/100  ") && strstr(s, "ETA 0s\n");
  free(s);
  ASSERT_TRUE(ok);

  r.round = 3;
  r.rounds_total = 3;
  s = progress(&r);
  ASSERT_TRUE(s != NULL);
  ok = !strncmp(s, "round   3/3  ", 13);
  free(s);
  ASSERT_TRUE(ok);
}

TEST(svg_chart) {
  fl_metrics_t *m = NULL;
  ASSERT_EQ(fl_metrics_new(NULL, 0, &m), 0);
  for (uint32_t r = 1; r <= 50; r++) {
    fl_round_metrics_t x = rec(r, 50);
    ASSERT_EQ(fl_metrics_add(m, &x, NULL), 0);
  }
  const char *path = fl_test_path("chart.svg");
  ASSERT_EQ(fl_metrics_write_svg(m, path, "fedavg <softmax> & \"iid\""), 0);
  char *svg = fl_test_slurp(path);
  ASSERT_TRUE(svg != NULL);
  int ok = fl_test_svg_ok(fl__failed, path, svg);
  size_t polylines = fl_test_count(svg, "<polyline");
  int escaped = strstr(svg, "fedavg &lt;softmax&gt; &amp; &quot;iid&quot;") != NULL;
  /* 0.1 * 0.9^49 = 5.7e-4: 2.2 decades, so the rate axis is logarithmic. */
  int log_axis = strstr(svg, "learning rate (log scale)") != NULL;
  int titles = strstr(svg, ">test accuracy</text>") && strstr(svg, ">loss</text>") &&
               strstr(svg, ">train loss</text>") && strstr(svg, ">round</text>");
  int no_data = strstr(svg, "no data") != NULL;
  free(svg);
  ASSERT_TRUE(ok);
  ASSERT_EQ(polylines, 4); /* accuracy, test loss, train loss, rate */
  ASSERT_TRUE(escaped);
  ASSERT_TRUE(log_axis);
  ASSERT_TRUE(titles);
  ASSERT_FALSE(no_data);
  /* Written atomically: no temporary left behind. */
  char tmp[700];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  ASSERT_TRUE(access(tmp, F_OK) != 0);
  fl_metrics_destroy(&m);
}

TEST(svg_linear_rate_and_breaks) {
  fl_metrics_t *m = NULL;
  ASSERT_EQ(fl_metrics_new(NULL, 0, &m), 0);
  for (uint32_t r = 1; r <= 30; r++) {
    fl_round_metrics_t x = rec(r, 30);
    x.lr = 0.1;
    if (r == 15) x.train_loss = INFINITY; /* divergence breaks the line */
    ASSERT_EQ(fl_metrics_add(m, &x, NULL), 0);
  }
  const char *path = fl_test_path("chart2.svg");
  ASSERT_EQ(fl_metrics_write_svg(m, path, NULL), 0);
  char *svg = fl_test_slurp(path);
  ASSERT_TRUE(svg != NULL);
  int ok = fl_test_svg_ok(fl__failed, path, svg);
  size_t polylines = fl_test_count(svg, "<polyline");
  int linear = !strstr(svg, "log scale");
  free(svg);
  ASSERT_TRUE(ok);
  ASSERT_EQ(polylines, 5); /* train loss in two pieces */
  ASSERT_TRUE(linear);
  fl_metrics_destroy(&m);
}

/* A server rate other than plain FedAvg's 1 shows in the progress line,
 * the JSON line and, as its own series, the chart's rate panel. */
TEST(server_rate_in_line_json_and_chart) {
  fl_round_metrics_t r = rec(3, 10);
  char *s = progress(&r);
  ASSERT_TRUE(s != NULL);
  int plain = !strstr(s, "server lr");
  free(s);
  ASSERT_TRUE(plain);
  r.server_lr = 0.03;
  s = progress(&r);
  ASSERT_TRUE(s != NULL);
  int shown = strstr(s, "  lr 0.0810  server lr 0.0300  clients 9/10") != NULL;
  if (!shown) fprintf(stderr, "  got %s", s);
  free(s);
  ASSERT_TRUE(shown);

  const char *jl = fl_test_path("server.jsonl");
  fl_metrics_t *m = NULL;
  ASSERT_EQ(fl_metrics_new(jl, 0, &m), 0);
  for (uint32_t k = 1; k <= 10; k++) {
    fl_round_metrics_t x = rec(k, 10);
    ASSERT_EQ(fl_metrics_add(m, &x, NULL), 0);
  }
  const char *plain_svg = fl_test_path("plain.svg");
  ASSERT_EQ(fl_metrics_write_svg(m, plain_svg, NULL), 0);
  fl_metrics_destroy(&m);
  ASSERT_EQ(fl_metrics_new(jl, 0, &m), 0);
  for (uint32_t k = 1; k <= 10; k++) {
    fl_round_metrics_t x = rec(k, 10);
    x.server_lr = 0.1 * pow(0.5, k - 1);
    ASSERT_EQ(fl_metrics_add(m, &x, NULL), 0);
  }
  const char *server_svg = fl_test_path("server.svg");
  ASSERT_EQ(fl_metrics_write_svg(m, server_svg, NULL), 0);
  fl_metrics_destroy(&m);
  char *a = fl_test_slurp(plain_svg), *b = fl_test_slurp(server_svg), *j = fl_test_slurp(jl);
  ASSERT_TRUE(a && b && j);
  int ok = fl_test_svg_ok(fl__failed, server_svg, b);
  size_t pa = fl_test_count(a, "<polyline"), pb = fl_test_count(b, "<polyline");
  int legend = strstr(b, ">server rate<") != NULL && !strstr(a, ">server rate<");
  int json = strstr(j, ",\"server_lr\":0.025000000000000001,\"clients_sampled\"") != NULL;
  free(a);
  free(b);
  free(j);
  ASSERT_TRUE(ok);
  ASSERT_EQ(pb, pa + 1);
  ASSERT_TRUE(legend);
  ASSERT_TRUE(json);

  /* Read back, server_lr comes back; a line without it (an older fedlr)
   * reads as NAN. */
  fl_round_metrics_t *back = NULL;
  size_t n = 0;
  ASSERT_EQ(fl_metrics_read(jl, &back, &n), 0);
  ASSERT_EQ(n, 10);
  ASSERT_TRUE(back[2].server_lr == 0.025);
  free(back);
  FILE *f = fopen(jl, "w");
  ASSERT_TRUE(f != NULL);
  fputs("{\"round\":1,\"rounds_total\":1,\"lr\":0.1}\n", f);
  fclose(f);
  ASSERT_EQ(fl_metrics_read(jl, &back, &n), 0);
  ASSERT_EQ(n, 1);
  ASSERT_TRUE(isnan(back[0].server_lr));
  free(back);
}

TEST(svg_empty_and_one_round) {
  fl_metrics_t *m = NULL;
  ASSERT_EQ(fl_metrics_new(NULL, 0, &m), 0);
  const char *path = fl_test_path("empty.svg");
  ASSERT_EQ(fl_metrics_write_svg(m, path, "empty"), 0);
  char *svg = fl_test_slurp(path);
  ASSERT_TRUE(svg != NULL);
  int ok = fl_test_svg_ok(fl__failed, path, svg);
  int no_data = strstr(svg, "no data") != NULL;
  free(svg);
  ASSERT_TRUE(ok);
  ASSERT_TRUE(no_data);

  fl_round_metrics_t x = rec(1, 1);
  ASSERT_EQ(fl_metrics_add(m, &x, NULL), 0);
  path = fl_test_path("one.svg");
  ASSERT_EQ(fl_metrics_write_svg(m, path, "one round"), 0);
  svg = fl_test_slurp(path);
  ASSERT_TRUE(svg != NULL);
  ok = fl_test_svg_ok(fl__failed, path, svg);
  size_t polylines = fl_test_count(svg, "<polyline"), circles = fl_test_count(svg, "<circle");
  free(svg);
  ASSERT_TRUE(ok);
  ASSERT_EQ(polylines, 4);
  ASSERT_EQ(circles, 4); /* a lone point shows as a dot */

  /* Never evaluated: the accuracy panel says so, the others draw. */
  fl_metrics_destroy(&m);
  ASSERT_EQ(fl_metrics_new(NULL, 0, &m), 0);
  for (uint32_t r = 1; r <= 3; r++) {
    x = rec(r, 10);
    x.test_accuracy = x.test_loss = NAN;
    ASSERT_EQ(fl_metrics_add(m, &x, NULL), 0);
  }
  path = fl_test_path("noeval.svg");
  ASSERT_EQ(fl_metrics_write_svg(m, path, "no eval"), 0);
  svg = fl_test_slurp(path);
  ASSERT_TRUE(svg != NULL);
  ok = fl_test_svg_ok(fl__failed, path, svg);
  size_t no_data_panels = fl_test_count(svg, "no data");
  polylines = fl_test_count(svg, "<polyline");
  free(svg);
  ASSERT_TRUE(ok);
  ASSERT_EQ(no_data_panels, 1);
  ASSERT_EQ(polylines, 2);
  fl_metrics_destroy(&m);
}

TEST(svg_size_is_bounded) {
  fl_metrics_t *m = NULL;
  ASSERT_EQ(fl_metrics_new(NULL, 0, &m), 0);
  for (uint32_t r = 1; r <= 200000; r++) {
    fl_round_metrics_t x = rec(r, 200000);
    x.lr = 0.1 / sqrt(r);
    ASSERT_EQ(fl_metrics_add(m, &x, NULL), 0);
  }
  const char *path = fl_test_path("big.svg");
  ASSERT_EQ(fl_metrics_write_svg(m, path, "big"), 0);
  char *svg = fl_test_slurp(path);
  ASSERT_TRUE(svg != NULL);
  size_t len = strlen(svg);
  int ok = fl_test_svg_ok(fl__failed, path, svg);
  free(svg);
  ASSERT_TRUE(ok);
  ASSERT_LT(len, 400000);
  ASSERT_NE(fl_metrics_write_svg(m, "/nonexistent-dir/x.svg", "x"), 0);
  fl_metrics_destroy(&m);
}

/* ---- a full disk ---- */

static long fsize(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* The rounds of the file's lines, "1,2,3", or "partial" if a line lacks its
 * newline or does not start as ours do. */
static void file_rounds(const char *path, char *out, size_t cap) {
  char *text = fl_test_slurp(path);
  size_t at = 0;
  out[0] = '\0';
  for (char *l = text; l && *l;) {
    char *nl = strchr(l, '\n');
    if (!nl || strncmp(l, "{\"round\":", 9) != 0 || nl[-1] != '}') {
      snprintf(out, cap, "partial");
      break;
    }
    at += (size_t)snprintf(out + at, cap - at, "%s%lu", at ? "," : "", strtoul(l + 9, NULL, 10));
    l = nl + 1;
  }
  free(text);
}

TEST(full_disk_cuts_partial_line_keeps_and_retries) {
  const char *path = fl_test_path("full.jsonl");
  fl_metrics_t *m = NULL;
  ASSERT_EQ(fl_metrics_new(path, 0, &m), 0);
  fl_round_metrics_t x;
  for (uint32_t r = 1; r <= 2; r++) {
    x = rec(r, 9);
    ASSERT_EQ(fl_metrics_add(m, &x, "\"participants\":[1,5]"), 0);
  }
  long two = fsize(path);
  ASSERT_GT(two, 200);
  /* Room for 100 more bytes: round 3's line is cut off after them. */
  ASSERT_EQ(fl_test_cap_file_size(two + 100), 0);
  x = rec(3, 9);
  int rc3 = fl_metrics_add(m, &x, "\"participants\":[1,5]");
  char msg3[512];
  snprintf(msg3, sizeof msg3, "%s", fl_err_msg());
  long size3 = fsize(path);
  x = rec(4, 9);
  fl_err_clear();
  int rc4 = fl_metrics_add(m, &x, NULL); /* still failing: quiet */
  size_t pending4 = fl_metrics_pending(m);
  int flush4 = fl_metrics_flush(m);
  char msgf[512];
  snprintf(msgf, sizeof msgf, "%s", fl_err_msg());
  long size4 = fsize(path);
  fl_test_cap_file_size(0);
  ASSERT_EQ(rc3, FL_EIO);
  ASSERT_CONTAINS(msg3, path);
  ASSERT_CONTAINS(msg3, strerror(EFBIG));
  ASSERT_CONTAINS(msg3, "round 3 and later are kept");
  ASSERT_EQ(size3, two); /* the 100 bytes written were cut off */
  ASSERT_EQ(rc4, 0);
  ASSERT_EQ(pending4, 2);
  ASSERT_EQ(flush4, FL_EIO);
  ASSERT_CONTAINS(msgf, "2 lines from round 3 on not written");
  ASSERT_CONTAINS(msgf, strerror(EFBIG));
  ASSERT_EQ(size4, two);
  char rounds[256];
  file_rounds(path, rounds, sizeof rounds);
  ASSERT_STR_EQ(rounds, "1,2");

  /* Room again: the next add writes the queue first, in order. */
  x = rec(5, 9);
  ASSERT_EQ(fl_metrics_add(m, &x, NULL), 0);
  ASSERT_EQ(fl_metrics_pending(m), 0);
  file_rounds(path, rounds, sizeof rounds);
  ASSERT_STR_EQ(rounds, "1,2,3,4,5");
  ASSERT_EQ(fl_metrics_flush(m), 0);

  /* A new failure after the recovery is reported again; a flush once
   * there is room writes what was queued. */
  ASSERT_EQ(fl_test_cap_file_size(fsize(path) + 10), 0);
  x = rec(6, 9);
  int rc6 = fl_metrics_add(m, &x, NULL);
  fl_test_cap_file_size(0);
  ASSERT_EQ(rc6, FL_EIO);
  ASSERT_EQ(fl_metrics_flush(m), 0);
  file_rounds(path, rounds, sizeof rounds);
  ASSERT_STR_EQ(rounds, "1,2,3,4,5,6");
  ASSERT_EQ(fl_metrics_count(m), 6);
  fl_metrics_destroy(&m);

  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "/usr/bin/python3 -c 'import json,sys\n"
           "rows=[json.loads(l) for l in open(sys.argv[1])]\n"
           "assert [r[\"round\"] for r in rows]==[1,2,3,4,5,6]\n"
           "assert rows[2][\"participants\"]==[1,5]' '%s'",
           path);
  ASSERT_EQ(system(cmd), 0);
}

/* A resumed run keeps the complete lines of the rounds its checkpoint holds. */
TEST(trim_keeps_complete_lines_of_done_rounds) {
  const char *path = fl_test_path("trim.jsonl");
  FILE *f = fopen(path, "w");
  ASSERT_TRUE(f != NULL);
  for (int r = 1; r <= 4; r++)
    fprintf(f, "{\"round\":%d,\"rounds_total\":9}\n", r);
  fputs("{\"round\":5,\"rounds_tot", f); /* cut by a crash */
  fclose(f);
  char rounds[256];
  ASSERT_EQ(fl_metrics_trim(path, 9), 0);
  file_rounds(path, rounds, sizeof rounds);
  ASSERT_STR_EQ(rounds, "1,2,3,4");
  ASSERT_EQ(fl_metrics_trim(path, 2), 0);
  file_rounds(path, rounds, sizeof rounds);
  ASSERT_STR_EQ(rounds, "1,2");
  ASSERT_EQ(fl_metrics_trim(fl_test_path("none.jsonl"), 2), 0); /* nothing to trim */
  ASSERT_EQ(fl_metrics_trim(fl_test_tmpdir(), 2), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "is a directory");
}

FL_TEST_MAIN()
