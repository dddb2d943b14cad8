/* Tests of fl_sweep_report: scores, ranking, results.csv, summary.md,
 * curves.svg, reading metrics.jsonl. */
#include "fl_sweep_report.h"

#include <sys/stat.h>

#include "fl_error.h"
#include "fl_file.h"
#include "fl_test.h"

/* Fills r[0..n) as rounds 1..n with test accuracies acc (NAN: not
 * evaluated that round) and a loss and rate that go down. */
static void fill(fl_round_metrics_t *r, size_t n, const double *acc) {
  for (size_t i = 0; i < n; i++)
    r[i] = (fl_round_metrics_t){.round = (uint32_t)i + 1,
                                .rounds_total = (uint32_t)n,
                                .lr = 0.1 * pow(0.5, (double)i),
                                .clients_sampled = 10,
                                .clients_reported = 10,
                                .train_loss = 2.0 / (double)(i + 1),
                                .test_loss = isnan(acc[i]) ? NAN : 1 - acc[i],
                                .test_accuracy = acc[i],
                                .seconds = 0.25,
                                .elapsed = 0.25 * (double)(i + 1),
                                .fed_eval_loss = NAN,
                                .fed_eval_accuracy = NAN};
}

static fl_sweep_run_t run_of(size_t config, const fl_round_metrics_t *r, size_t n) {
  return (fl_sweep_run_t){.id = "r",
                          .config = config,
                          .status = FL_SWEEP_DONE,
                          .why = "",
                          .rounds = r,
                          .num_rounds = n};
}

/* DIR/name's content (malloc'd), or NULL. */
static char *read_out(const char *dir, const char *name) {
  char path[700];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return fl_test_slurp(path);
}

TEST(score_final_best_target) {
  fl_round_metrics_t r[5];
  fill(r, 5, (const double[]){NAN, 0.5, NAN, 0.7, 0.6});
  fl_sweep_run_t run = run_of(0, r, 5);
  ASSERT_NEAR(fl_sweep_score(&run, FL_RANK_FINAL, 0, 0), 0.6, 0);
  ASSERT_NEAR(fl_sweep_score(&run, FL_RANK_BEST, 0, 0), 0.7, 0);
  /* upto: the rounds up to it; past the run's end, what it has. */
  ASSERT_NEAR(fl_sweep_score(&run, FL_RANK_FINAL, 3, 0), 0.5, 0);
  ASSERT_NEAR(fl_sweep_score(&run, FL_RANK_BEST, 3, 0), 0.5, 0);
  ASSERT_TRUE(isnan(fl_sweep_score(&run, FL_RANK_FINAL, 1, 0)));
  ASSERT_NEAR(fl_sweep_score(&run, FL_RANK_FINAL, 10, 0), 0.6, 0);
  /* Rounds to the target: reached at >=, as the engine decides. */
  ASSERT_NEAR(fl_sweep_score(&run, FL_RANK_TARGET, 0, 0.65), 4, 0);
  ASSERT_NEAR(fl_sweep_score(&run, FL_RANK_TARGET, 0, 0.7), 4, 0);
  ASSERT_NEAR(fl_sweep_score(&run, FL_RANK_TARGET, 0, 0.5), 2, 0);
  ASSERT_TRUE(isinf(fl_sweep_score(&run, FL_RANK_TARGET, 0, 0.75)));
  ASSERT_TRUE(isinf(fl_sweep_score(&run, FL_RANK_TARGET, 3, 0.65)));
  ASSERT_TRUE(isnan(fl_sweep_score(&run, FL_RANK_TARGET, 0, 0)));
  ASSERT_TRUE(isnan(fl_sweep_score(&run, FL_RANK_TARGET, 0, NAN)));

  /* Without a test set, federated evaluation's accuracy; not without
   * evaluating clients. */
  r[2].fed_eval_clients = 3;
  r[2].fed_eval_accuracy = 0.9;
  r[0].fed_eval_accuracy = 0.95; /* fed_eval_clients 0: not measured */
  ASSERT_NEAR(fl_sweep_score(&run, FL_RANK_BEST, 0, 0), 0.9, 0);
  ASSERT_NEAR(fl_sweep_score(&run, FL_RANK_FINAL, 3, 0), 0.9, 0);
  ASSERT_NEAR(fl_sweep_score(&run, FL_RANK_TARGET, 0, 0.8), 3, 0);

  /* No accuracy at all; no rounds at all. */
  fill(r, 5, (const double[]){NAN, NAN, NAN, NAN, NAN});
  ASSERT_TRUE(isnan(fl_sweep_score(&run, FL_RANK_FINAL, 0, 0)));
  ASSERT_TRUE(isnan(fl_sweep_score(&run, FL_RANK_BEST, 0, 0)));
  ASSERT_TRUE(isinf(fl_sweep_score(&run, FL_RANK_TARGET, 0, 0.5)));
  fl_sweep_run_t empty = run_of(0, NULL, 0);
  ASSERT_TRUE(isnan(fl_sweep_score(&empty, FL_RANK_FINAL, 0, 0)));
  ASSERT_TRUE(isnan(fl_sweep_score(&empty, FL_RANK_TARGET, 0, 0.5)));
  ASSERT_TRUE(isnan(fl_sweep_score(NULL, FL_RANK_FINAL, 0, 0)));
}

TEST(rank_by_accuracy) {
  /* Final accuracies per run; configurations 0 and 2 have the same scores
   * in another order (an exact tie, broken by the index), 3 has none, 4
   * is left out by the mask, 5 has one run masked out. */
  static const struct {
    size_t config;
    double final;
    uint8_t include;
  } spec[] = {{0, 0.8, 1}, {2, 0.9, 1},  {1, 0.85, 1}, {0, 0.9, 1}, {3, NAN, 1},  {2, 0.7, 1},
              {0, 0.7, 1}, {4, 0.99, 0}, {2, 0.8, 1},  {5, 0.6, 1}, {5, 0.99, 0}, {3, NAN, 1}};
  enum { N = sizeof spec / sizeof spec[0] };
  fl_round_metrics_t r[N][3];
  fl_sweep_run_t runs[N];
  uint8_t include[N];
  for (size_t i = 0; i < N; i++) {
    fill(r[i], 3, (const double[]){isnan(spec[i].final) ? NAN : 0.1, NAN, spec[i].final});
    runs[i] = run_of(spec[i].config, r[i], 3);
    include[i] = spec[i].include;
  }
  fl_sweep_rank_t out[7];
  size_t n = fl_sweep_rank(runs, N, include, 7, FL_RANK_FINAL, 0, 0, out);
  ASSERT_EQ(n, 5); /* 4 left out (masked), 6 has no run */
  static const size_t order[] = {1, 0, 2, 5, 3};
  for (size_t i = 0; i < n; i++)
    ASSERT_EQ(out[i].config, order[i]);
  ASSERT_NEAR(out[0].mean, 0.85, 1e-15);
  ASSERT_NEAR(out[0].std, 0, 0);
  ASSERT_EQ(out[0].runs, 1);
  /* 0.7, 0.8, 0.9: mean 0.8, sample std sqrt((0.01 + 0 + 0.01) / 2) = 0.1 */
  ASSERT_NEAR(out[1].mean, 0.8, 1e-15);
  ASSERT_NEAR(out[1].std, 0.1, 1e-15);
  ASSERT_EQ(out[1].runs, 3);
  ASSERT_TRUE(out[1].mean == out[2].mean && out[1].std == out[2].std);
  ASSERT_NEAR(out[1].final_mean, 0.8, 1e-15);
  ASSERT_NEAR(out[3].mean, 0.6, 0);
  ASSERT_EQ(out[3].runs, 1);
  ASSERT_TRUE(isnan(out[4].mean) && isnan(out[4].std) && isnan(out[4].final_mean));
  ASSERT_EQ(out[4].runs, 0);

  /* Best accuracy, all runs: 4 (0.99) first; the 0.1 of round 1 is never best. */
  n = fl_sweep_rank(runs, N, NULL, 7, FL_RANK_BEST, 0, 0, out);
  ASSERT_EQ(n, 6);
  ASSERT_EQ(out[0].config, 4);
  ASSERT_EQ(out[5].config, 3);
  /* upto 2: only round 1 has an accuracy (0.1): every scored run ties; 3 has none. */
  n = fl_sweep_rank(runs, N, include, 7, FL_RANK_FINAL, 2, 0, out);
  ASSERT_EQ(n, 5);
  static const size_t order2[] = {0, 1, 2, 5, 3};
  for (size_t i = 0; i < n; i++)
    ASSERT_EQ(out[i].config, order2[i]);
  ASSERT_NEAR(out[0].mean, 0.1, 1e-15);

  /* The runs a report counts. */
  runs[0].status = FL_SWEEP_HALVED;
  ASSERT_TRUE(fl_sweep_counted(&runs[0]));
  runs[0].status = FL_SWEEP_FAILED;
  ASSERT_FALSE(fl_sweep_counted(&runs[0]));
  runs[0].status = FL_SWEEP_PENDING;
  ASSERT_FALSE(fl_sweep_counted(&runs[0]));
  runs[0].status = FL_SWEEP_DONE;
  ASSERT_TRUE(fl_sweep_counted(&runs[0]));

  /* Bad arguments. */
  ASSERT_EQ(fl_sweep_rank(runs, N, NULL, 5, FL_RANK_FINAL, 0, 0, out), (size_t)-1);
  ASSERT_CONTAINS(fl_err_msg(), "configuration 5 of 5");
  ASSERT_EQ(fl_sweep_rank(NULL, 1, NULL, 7, FL_RANK_FINAL, 0, 0, out), (size_t)-1);
  ASSERT_EQ(fl_sweep_rank(NULL, 0, NULL, 0, FL_RANK_FINAL, 0, 0, NULL), 0);
}

TEST(rank_by_rounds_to_target) {
  /* target 0.75. Round of reaching it, and the final accuracy:
   *   c0: rounds 4 and 2 (mean 3, std sqrt(2)), finals 0.8, 0.8
   *   c1: rounds 3 and 3 (mean 3, std 0), finals 0.9, 0.9: ties c0, better final
   *   c2: one run never reaches it: not reached, final mean 0.7
   *   c3, c4: never, final 0.72 each: tied, by index; both before c2
   *   c5: reaches it at round 1 */
  static const double acc[][5] = {
      {0.1, 0.2, 0.3, 0.76, 0.8}, {0.1, 0.75, 0.7, 0.7, 0.8}, {0.1, 0.2, 0.8, 0.9, 0.9},
      {0.1, 0.2, 0.75, 0.8, 0.9}, {0.1, 0.2, 0.3, 0.4, 0.6},  {0.1, 0.2, 0.8, 0.8, 0.8},
      {0.1, 0.2, 0.3, 0.7, 0.72}, {0.1, 0.2, 0.3, 0.7, 0.72}, {0.9, 0.9, 0.9, 0.9, 0.9}};
  static const size_t config[] = {0, 0, 1, 1, 2, 2, 3, 4, 5};
  enum { N = sizeof config / sizeof config[0] };
  fl_round_metrics_t r[N][5];
  fl_sweep_run_t runs[N];
  for (size_t i = 0; i < N; i++) {
    fill(r[i], 5, acc[i]);
    runs[i] = run_of(config[i], r[i], 5);
  }
  fl_sweep_rank_t out[6];
  size_t n = fl_sweep_rank(runs, N, NULL, 6, FL_RANK_TARGET, 0, 0.75, out);
  ASSERT_EQ(n, 6);
  static const size_t order[] = {5, 1, 0, 3, 4, 2};
  for (size_t i = 0; i < n; i++)
    ASSERT_EQ(out[i].config, order[i]);
  ASSERT_NEAR(out[0].mean, 1, 0);
  ASSERT_NEAR(out[1].mean, 3, 0);
  ASSERT_NEAR(out[1].std, 0, 0);
  ASSERT_NEAR(out[2].mean, 3, 0);
  ASSERT_NEAR(out[2].std, sqrt(2), 1e-15);
  ASSERT_TRUE(isinf(out[3].mean) && isnan(out[3].std));
  ASSERT_EQ(out[3].runs, 1);
  ASSERT_NEAR(out[3].final_mean, 0.72, 1e-15);
  ASSERT_TRUE(isinf(out[5].mean));
  ASSERT_EQ(out[5].runs, 2); /* a run that did not reach it is counted */
  ASSERT_NEAR(out[5].final_mean, 0.7, 1e-15);

  /* upto 2: only c0's second run (round 2) and c5 reach it. */
  n = fl_sweep_rank(runs, N, NULL, 6, FL_RANK_TARGET, 2, 0.75, out);
  ASSERT_EQ(out[0].config, 5);
  ASSERT_TRUE(isinf(out[1].mean));
  /* Tied at +inf by final accuracy at round 2 (0.2 for all but c0's 0.75). */
  ASSERT_EQ(out[1].config, 0);
}

/* A sweep of four configurations of a 3 x 2 x ... grid, to write reports
 * of: c0 and c2 ran three seeds, c1 was stopped by halving after round 4,
 * c3 failed on both seeds, and one run of c2 was not run. */
enum { EX_ROUNDS = 12, EX_RUNS = 10, EX_CONFIGS = 4 };
typedef struct {
  fl_round_metrics_t r[EX_RUNS][EX_ROUNDS];
  fl_sweep_run_t runs[EX_RUNS];
  fl_sweep_config_t configs[EX_CONFIGS];
  char ids[EX_RUNS][16];
} example_t;

static const char *const ex_names[] = {"lr", "schedule", "optimizer"};
static const char *const ex_values[EX_CONFIGS][3] = {
    {"0.03", "exp:gamma=0.97", "sgd,momentum=0.9"},
    {"0.3", "const", "sgd"},
    {"0.01", "step:every=5,gamma=0.5", "say \"hi\""},
    {"3", "const", "sgd"}};
static const char *const ex_labels[EX_CONFIGS] = {
    "lr=0.03 schedule=exp:gamma=0.97 optimizer=sgd,momentum=0.9", "lr=0.3 schedule=const",
    "lr=0.01 <step> & \"hi\"", "lr=3 diverges"};

static void example(example_t *e) {
  static const size_t config[EX_RUNS] = {0, 0, 0, 1, 1, 2, 2, 2, 3, 3};
  for (size_t c = 0; c < EX_CONFIGS; c++)
    e->configs[c] = (fl_sweep_config_t){ex_labels[c], 3, ex_names, ex_values[c]};
  for (size_t i = 0; i < EX_RUNS; i++) {
    size_t c = config[i], seed = i - (c == 0 ? 0 : c == 1 ? 3 : c == 2 ? 5 : 8);
    double acc[EX_ROUNDS];
    /* c0 ends at 0.80, 0.82, 0.84; c2 at 0.75, 0.76; evaluated every
     * other round. */
    double end = c == 0 ? 0.80 + 0.02 * seed : c == 2 ? 0.75 + 0.01 * seed : 0.5;
    for (size_t k = 0; k < EX_ROUNDS; k++)
      acc[k] = k % 2 == 1 ? end * (double)(k + 1) / EX_ROUNDS : NAN;
    fill(e->r[i], EX_ROUNDS, acc);
    snprintf(e->ids[i], sizeof e->ids[i], "c%02zu-s%zu", c, seed);
    e->runs[i] = (fl_sweep_run_t){.id = e->ids[i],
                                  .config = c,
                                  .seed = seed,
                                  .status = FL_SWEEP_DONE,
                                  .why = "",
                                  .seconds = 1.5 + (double)i,
                                  .rounds = e->r[i],
                                  .num_rounds = EX_ROUNDS};
  }
  for (size_t i = 3; i <= 4; i++) {
    e->runs[i].status = FL_SWEEP_HALVED;
    e->runs[i].stop_round = 4;
    e->runs[i].num_rounds = 4;
    e->runs[i].why = "halving at round 4: final accuracy 0.1667 is below the cut (0.5)";
  }
  e->runs[7].status = FL_SWEEP_PENDING;
  e->runs[7].num_rounds = 0;
  for (size_t i = 8; i <= 9; i++) {
    e->runs[i].status = FL_SWEEP_FAILED;
    e->runs[i].num_rounds = 3;
    e->runs[i].why = "the loss diverged:\nround 3 \"inf\" | stop";
    e->r[i][2].train_loss = INFINITY;
    e->r[i][2].test_loss = INFINITY;
  }
}

static fl_sweep_report_opts_t example_opts(const char *dir) {
  return (fl_sweep_report_opts_t){.dir = dir,
                                  .title = "fedlr-sweep: fashion-mnist <mlp> & co",
                                  .command = "fedlr-sweep --grid lr=0.03,0.3 --seeds 3",
                                  .rank_by = FL_RANK_FINAL,
                                  .halving = "eta=2,min=4"};
}

TEST(results_csv) {
  static example_t e;
  example(&e);
  const char *dir = fl_test_path("csv");
  fl_sweep_report_opts_t o = example_opts(dir);
  o.target = 0.75;
  ASSERT_EQ(fl_sweep_report_write(&o, e.configs, EX_CONFIGS, e.runs, EX_RUNS), 0);
  char *csv = read_out(dir, "results.csv");
  ASSERT_TRUE(csv != NULL);
  size_t lines = fl_test_count(csv, "\n");
  const char *want_head = "\"id\",\"config\",\"lr\",\"schedule\",\"optimizer\",\"seed\","
                          "\"status\",\"stop_round\",\"rounds\",\"final_accuracy\","
                          "\"best_accuracy\",\"final_loss\",\"final_train_loss\","
                          "\"rounds_to_target\",\"seconds\",\"why\"\n";
  int head = !strncmp(csv, want_head, strlen(want_head));
  /* c0's third seed: final accuracy 0.84, loss 0.16 at round 12; train
   * loss 2/12; 0.75 first reached at round 12 (0.84 * 10/12 = 0.7). */
  int row0 = strstr(csv, "\n\"c00-s2\",0,\"0.03\",\"exp:gamma=0.97\",\"sgd,momentum=0.9\",2,"
                         "\"done\",,12,0.84,0.84,0.16,0.166667,12,3.500,\n") != NULL;
  int halved = strstr(csv, "\n\"c01-s0\",1,\"0.3\",\"const\",\"sgd\",0,\"halved\",4,4,") != NULL;
  int quote = strstr(csv, ",\"say \"\"hi\"\"\",") != NULL;
  int pending = strstr(csv, "\"c02-s2\",2,\"0.01\",\"step:every=5,gamma=0.5\",\"say \"\"hi\"\"\","
                            "2,\"pending\",,0,,,,,,8.500,\n") != NULL;
  /* A failed run: accuracy 0.5 * 2/12 at round 2, then an infinite loss. */
  int failed = strstr(csv, "\"failed\",,3,0.0833333,0.0833333,inf,inf,,") &&
               strstr(csv, ",\"the loss diverged:\nround 3 \"\"inf\"\" | stop\"\n");
  if (!(head && row0 && halved && quote && pending && failed)) fprintf(stderr, "%s", csv);
  free(csv);
  ASSERT_EQ(lines, 1 + EX_RUNS + 2); /* a header, a row per run, two rows two lines long */
  ASSERT_TRUE(head);
  ASSERT_TRUE(row0);
  ASSERT_TRUE(halved);
  ASSERT_TRUE(quote);
  ASSERT_TRUE(pending);
  ASSERT_TRUE(failed);

  /* An RFC 4180 reader gets the values back (python3 is in CI). */
  if (!fl_test_have_tool("python3"))
    SKIP("python3 is not installed: results.csv was not read back by a CSV reader");
  char cmd[1500];
  snprintf(cmd, sizeof cmd,
           "python3 -c 'import csv,sys\n"
           "rows=list(csv.reader(open(sys.argv[1], newline=\"\")))\n"
           "assert len(rows)==11 and all(len(r)==16 for r in rows), rows\n"
           "assert rows[1][4]==\"sgd,momentum=0.9\" and rows[1][3]==\"exp:gamma=0.97\"\n"
           "assert rows[6][4]==\"say \\\"hi\\\"\" and rows[6][3]==\"step:every=5,gamma=0.5\"\n"
           "assert rows[9][15]==\"the loss diverged:\\nround 3 \\\"inf\\\" | stop\", rows[9]\n"
           "assert rows[1][15]==\"\" and rows[1][7]==\"\" and rows[4][7]==\"4\"\n"
           "assert float(rows[3][9])==0.84 and float(rows[3][14])==3.5' '%s/results.csv'",
           dir);
  ASSERT_EQ(system(cmd), 0);
}

/* The line of `md` that starts with `start`, copied into buf, or "". */
static const char *line_of(const char *md, const char *start, char *buf, size_t len) {
  buf[0] = '\0';
  for (const char *p = md; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
    if (strncmp(p, start, strlen(start)) != 0) continue;
    const char *e = strchr(p, '\n');
    snprintf(buf, len, "%.*s", (int)(e ? e - p : (ptrdiff_t)strlen(p)), p);
    break;
  }
  return buf;
}

TEST(summary_md) {
  static example_t e;
  example(&e);
  const char *dir = fl_test_path("md");
  fl_sweep_report_opts_t o = example_opts(dir);
  ASSERT_EQ(fl_sweep_report_write(&o, e.configs, EX_CONFIGS, e.runs, EX_RUNS), 0);
  char *md = read_out(dir, "summary.md");
  ASSERT_TRUE(md != NULL);
  char l[3][400];
  /* c0: final accuracies 0.80, 0.82, 0.84: mean 0.82, std 0.02; c2: 0.75,
   * 0.76: 0.755 ± 0.00707; c1 (halved at round 4): 0.5 * 4/12 twice. */
  line_of(md, "| 1 |", l[0], sizeof l[0]);
  line_of(md, "| 2 |", l[1], sizeof l[1]);
  line_of(md, "| 3 |", l[2], sizeof l[2]);
  int ok =
      strstr(md, "# fedlr-sweep: fashion-mnist \\<mlp> & co\n") &&
      strstr(md, "4 configurations, 10 runs: 5 ran to the end, 2 stopped by successive "
                 "halving, 2 failed, 1 not run.") &&
      strstr(md, "Ranked by **final accuracy**") &&
      strstr(md, "```\nfedlr-sweep --grid lr=0.03,0.3 --seeds 3\n```\n") &&
      strstr(md, "| rank | lr | schedule | optimizer | final accuracy (mean ± std) | seeds | final "
                 "accuracy (mean) | rounds (mean) |\n|---:|---|---|---|---|---:|---:|---:|\n");
  int rows = !strcmp(l[0], "| 1 | `0.03` | `exp:gamma=0.97` | `sgd,momentum=0.9` | 0.8200 ± "
                           "0.0200 | 3 | 0.8200 | 12.0 |") &&
             !strcmp(l[1], "| 2 | `0.01` | `step:every=5,gamma=0.5` | `say \"hi\"` | 0.7550 ± "
                           "0.0071 | 2 | 0.7550 | 12.0 |") &&
             !strcmp(l[2], "| 3 | `0.3` | `const` | `sgd` | 0.1667 ± 0.0000 | 2 | 0.1667 | 4.0 |");
  int winner =
      strstr(md, "**Winner:** `lr=0.03 schedule=exp:gamma=0.97 optimizer=sgd,momentum=0.9`, "
                 "final accuracy 0.8200 ± 0.0200 over 3 seeds.\n") &&
      strstr(md,
             "(seed 0), from this folder:\n\n    fedlr-sim --config runs/c00-s0/config.ini\n") &&
      strstr(md, "Its other seeds' runs: `c00-s1`, `c00-s2`.");
  int halving =
      strstr(md, "## Stopped by successive halving\n\nSuccessive halving `eta=2,min=4` stopped 1 "
                 "of 4 configurations.") &&
      strstr(md, "| 4 | `0.3` | `const` | `sgd` | 2 | halving at round 4: final accuracy 0.1667 "
                 "is below the cut (0.5) |\n");
  int failed = strstr(md, "| `c03-s0` | `lr=3 diverges` | 0 | 3 | the loss diverged: round 3 "
                          "\"inf\" \\| stop |\n") &&
               strstr(md, "## Not ranked\n\n- `lr=3 diverges`: 2 failed, 0 not run\n");
  if (!(ok && rows && winner && halving && failed)) fprintf(stderr, "%s", md);
  free(md);
  ASSERT_TRUE(ok);
  ASSERT_TRUE(rows);
  ASSERT_TRUE(winner);
  ASSERT_TRUE(halving);
  ASSERT_TRUE(failed);
}

TEST(summary_md_target_and_no_grid) {
  /* No grid: one configuration, its label a word; ranked by rounds to a
   * target that one seed of two never reached. */
  fl_round_metrics_t r[2][4];
  fill(r[0], 4, (const double[]){0.5, 0.9, 0.9, 0.95});
  fill(r[1], 4, (const double[]){0.5, 0.6, 0.7, 0.8});
  fl_sweep_config_t config = {"", 0, NULL, NULL};
  fl_sweep_run_t runs[2] = {run_of(0, r[0], 4), run_of(0, r[1], 4)};
  runs[0].id = "c00-s0", runs[1].id = "c00-s1";
  const char *dir = fl_test_path("md-target");
  fl_sweep_report_opts_t o = {.dir = dir, .rank_by = FL_RANK_TARGET, .target = 0.85};
  ASSERT_EQ(fl_sweep_report_write(&o, &config, 1, runs, 2), 0);
  char *md = read_out(dir, "summary.md");
  ASSERT_TRUE(md != NULL);
  char row[400];
  line_of(md, "| 1 |", row, sizeof row);
  int ok =
      strstr(md, "# fedlr-sweep\n") && strstr(md, "Ranked by **rounds to 0.85**") &&
      strstr(md, "| rank | configuration | rounds to 0.85 (mean ± std) | seeds |") &&
      !strcmp(row, "| 1 | `(base configuration)` | not reached (1 of 2) | 2 | 0.8750 | 4.0 |") &&
      strstr(md, "**No winner:** no configuration reached 0.85 on every seed; the first of "
                 "them by mean final accuracy is `(base configuration)`") &&
      !strstr(md, "halving");
  if (!ok) fprintf(stderr, "%s", md);
  free(md);
  ASSERT_TRUE(ok);

  /* Both reach it: 2 and 4 rounds, mean 3 ± sqrt(2). */
  fill(r[1], 4, (const double[]){0.5, 0.6, 0.7, 0.86});
  ASSERT_EQ(fl_sweep_report_write(&o, &config, 1, runs, 2), 0);
  md = read_out(dir, "summary.md");
  ASSERT_TRUE(md != NULL);
  ok = strstr(md, "| 1 | `(base configuration)` | 3.0 ± 1.4 | 2 | 0.9050 | 4.0 |") &&
       strstr(md, "**Winner:** `(base configuration)`, rounds to 0.85 3.0 ± 1.4 over 2 seeds.");
  if (!ok) fprintf(stderr, "%s", md);
  free(md);
  ASSERT_TRUE(ok);
}

/* Writes the report of the runs and checks its curves.svg; returns it
 * (malloc'd) or NULL after a failed assertion. */
static char *curves_of(int *fl__failed, const char *name, const fl_sweep_report_opts_t *o0,
                       const fl_sweep_config_t *configs, size_t nc, const fl_sweep_run_t *runs,
                       size_t nr) {
  fl_sweep_report_opts_t o = *o0;
  o.dir = fl_test_path(name);
  char path[700];
  snprintf(path, sizeof path, "%s/curves.svg", o.dir);
  int rc = fl_sweep_report_write(&o, configs, nc, runs, nr);
  char *svg = fl_test_slurp(path);
  if (rc != 0 || !svg || !fl_test_svg_ok(fl__failed, path, svg)) {
    fprintf(stderr, "  %s: rc %d, %s\n%s", path, rc, fl_err_msg(), svg ? svg : "(no file)");
    free(svg);
    *fl__failed = 1;
    return NULL;
  }
  return svg;
}

TEST(curves_svg) {
  static example_t e;
  example(&e);
  fl_sweep_report_opts_t o = example_opts(NULL);
  char *svg = curves_of(fl__failed, "svg", &o, e.configs, EX_CONFIGS, e.runs, EX_RUNS);
  if (!svg) return;
  int panels = fl_test_count(svg, "<g class=\"panel\">") == 3 && strstr(svg, ">accuracy</text>") &&
               strstr(svg, ">loss</text>") && strstr(svg, ">learning rate (log scale)</text>") &&
               strstr(svg, ">round</text>");
  /* The three ranked configurations, in rank order, escaped; not the failed one. */
  const char *a = strstr(svg, ">1. lr=0.03 schedule=exp:gamma=0.97 optimizer=sgd,momentum=0.9 "
                              "(0.8200 ± 0.0200, 3 seeds)</text>");
  const char *b = strstr(svg, ">2. lr=0.01 &lt;step&gt; &amp; &quot;hi&quot; (0.7550 ± 0.0071, "
                              "2 seeds)</text>");
  const char *c = strstr(svg, ">3. lr=0.3 schedule=const (0.1667 ± 0.0000, 2 seeds)</text>");
  int legend = a && b && c && a < b && b < c && !strstr(svg, "diverges") &&
               strstr(svg, "All 3 configurations by final accuracy. Line: the mean over seeds; "
                           "band: their min-max.");
  /* A band per configuration (2 or 3 seeds each) and panel; a line each. */
  size_t bands = fl_test_count(svg, "<polygon"), lines = fl_test_count(svg, "<polyline");
  int colors = strstr(svg, "stroke=\"#1f77b4\"") && strstr(svg, "stroke=\"#ff7f0e\"") &&
               strstr(svg, "stroke=\"#2ca02c\"") && !strstr(svg, "#d62728");
  free(svg);
  ASSERT_TRUE(panels);
  ASSERT_TRUE(legend);
  ASSERT_EQ(bands, 9);
  ASSERT_EQ(lines, 9);
  ASSERT_TRUE(colors);

  /* The top 2 only. */
  o.top = 2;
  svg = curves_of(fl__failed, "svg-top2", &o, e.configs, EX_CONFIGS, e.runs, EX_RUNS);
  if (!svg) return;
  int top2 = strstr(svg, "Top 2 of 3 configurations by") && strstr(svg, ">2. lr=0.01") &&
             !strstr(svg, ">3. ");
  free(svg);
  ASSERT_TRUE(top2);
}

TEST(curves_svg_edge_cases) {
  fl_sweep_report_opts_t o = {.title = "edge", .top = 50};
  /* Nothing to show. */
  char *svg = curves_of(fl__failed, "svg-none", &o, NULL, 0, NULL, 0);
  if (!svg) return;
  int none = strstr(svg, "no configuration has results yet") != NULL;
  free(svg);
  ASSERT_TRUE(none);

  /* One configuration, one seed, one round: a dot, no band. */
  fl_round_metrics_t one[1];
  fill(one, 1, (const double[]){0.5});
  fl_sweep_config_t config = {"solo", 0, NULL, NULL};
  fl_sweep_run_t run = run_of(0, one, 1);
  svg = curves_of(fl__failed, "svg-one", &o, &config, 1, &run, 1);
  if (!svg) return;
  int dot = fl_test_count(svg, "<circle") == 3 && !strstr(svg, "<polygon") &&
            strstr(svg, ">1. solo (0.5000 ± 0.0000, 1 seed)</text>") &&
            strstr(svg, "The 1 configuration by");
  free(svg);
  ASSERT_TRUE(dot);

  /* Twelve configurations (at most 10 shown), runs of different lengths,
   * huge and infinite values, rates down to 0, rounds without anything. */
  enum { NC = 12, NR = 24, LEN = 300 };
  static fl_round_metrics_t r[NR][LEN];
  static fl_sweep_run_t runs[NR];
  static fl_sweep_config_t configs[NC];
  static char labels[NC][32];
  for (size_t i = 0; i < NR; i++) {
    size_t c = i % NC, len = i < NC ? LEN : 10 + 20 * c;
    double acc[LEN];
    for (size_t k = 0; k < LEN; k++)
      acc[k] = k % 7 == 3 ? NAN : 0.9 * (double)(k + c) / (LEN + NC);
    fill(r[i], LEN, acc);
    for (size_t k = 0; k < LEN; k++) {
      /* The best configurations, so that they are shown. */
      if (c == NC - 1) r[i][k].test_loss = k == 50 ? INFINITY : 1e300;
      if (c == NC - 2) r[i][k].lr = k > 100 ? 0 : 1e-300;
      if (c == NC - 3 && k == 7) r[i][k].test_loss = r[i][k].test_accuracy = r[i][k].lr = NAN;
    }
    snprintf(labels[c], sizeof labels[c], "lr=%zu", c);
    configs[c] = (fl_sweep_config_t){labels[c], 0, NULL, NULL};
    runs[i] = run_of(c, r[i], len);
  }
  svg = curves_of(fl__failed, "svg-many", &o, configs, NC, runs, NR);
  if (!svg) return;
  int many = strstr(svg, "Top 10 of 12 configurations") && strstr(svg, ">10. ") &&
             !strstr(svg, ">11. ") && strstr(svg, "loss (log scale)");
  size_t len = strlen(svg);
  free(svg);
  ASSERT_TRUE(many);
  ASSERT_LT(len, 4u << 20); /* thinned: 300 rounds x 10 lines, bounded */
}

TEST(report_write_errors) {
  static example_t e;
  example(&e);
  fl_sweep_report_opts_t o = example_opts(NULL);
  /* DIR/results.csv is a directory: that file fails, the others are written. */
  const char *dir = fl_test_path("err");
  char path[700];
  snprintf(path, sizeof path, "%s/results.csv/x", dir);
  ASSERT_EQ(fl_file_mkdirs(path), 0);
  o.dir = dir;
  int rc = fl_sweep_report_write(&o, e.configs, EX_CONFIGS, e.runs, EX_RUNS);
  ASSERT_EQ(rc, FL_EIO);
  ASSERT_CONTAINS(fl_err_msg(), "results.csv");
  char *md = read_out(dir, "summary.md"), *svg = read_out(dir, "curves.svg");
  int others = md && svg;
  free(md);
  free(svg);
  ASSERT_TRUE(others);

  /* DIR cannot be made. */
  snprintf(path, sizeof path, "%s/summary.md/sub", dir);
  o.dir = path;
  ASSERT_EQ(fl_sweep_report_write(&o, e.configs, EX_CONFIGS, e.runs, EX_RUNS), FL_EIO);
  ASSERT_CONTAINS(fl_err_msg(), "summary.md");

  /* A caller's bugs. */
  o.dir = dir;
  e.runs[0].config = EX_CONFIGS;
  ASSERT_EQ(fl_sweep_report_write(&o, e.configs, EX_CONFIGS, e.runs, EX_RUNS), FL_EINVAL);
  e.runs[0].config = 0;
  o.dir = "";
  ASSERT_EQ(fl_sweep_report_write(&o, e.configs, EX_CONFIGS, e.runs, EX_RUNS), FL_EINVAL);
  ASSERT_EQ(fl_sweep_report_write(NULL, e.configs, EX_CONFIGS, e.runs, EX_RUNS), FL_EINVAL);
}

/* ---- fl_metrics_read ---- */

/* Writes text to the scratch file `name`; returns its path (fl_test_path). */
static const char *write_file(const char *name, const char *text) {
  const char *path = fl_test_path(name);
  if (fl_file_write_atomic(path, text, strlen(text)) != 0) fprintf(stderr, "%s\n", fl_err_msg());
  return path;
}

static int same_double(double a, double b) {
  return (isnan(a) && isnan(b)) || a == b;
}

TEST(read_metrics_round_trip) {
  char path[700];
  snprintf(path, sizeof path, "%s/metrics.jsonl", fl_test_tmpdir());
  fl_metrics_t *m = NULL;
  ASSERT_EQ(fl_metrics_new(path, 0, &m), 0);
  enum { N = 7 };
  fl_round_metrics_t want[N];
  fill(want, N, (const double[]){NAN, 0.3, NAN, 0.123456789012345678, 0.5, NAN, 1.0 / 3});
  want[1].bytes_sent = UINT64_MAX; /* past 2^53: read exactly */
  want[1].bytes_received = (UINT64_C(1) << 53) + 1;
  want[2].rejected = 2, want[2].clipped = 3, want[2].capped = UINT32_MAX;
  want[3].fed_eval_clients = 4, want[3].fed_eval_examples = 1234;
  want[3].fed_eval_loss = 0.25, want[3].fed_eval_accuracy = NAN;
  want[4].train_loss = INFINITY; /* written as null: read as NAN */
  want[5].lr = 1e-300;
  want[6].elapsed = 12345.678;
  for (size_t i = 0; i < N; i++)
    ASSERT_EQ(
        fl_metrics_add(m, &want[i], i == 2 ? "\"participants\":[1,5],\"x\":{\"y\":[\"}\"]}" : NULL),
        0);
  fl_metrics_destroy(&m);
  want[4].train_loss = NAN;

  fl_round_metrics_t *got = NULL;
  size_t n = 0;
  ASSERT_EQ(fl_metrics_read(path, &got, &n), 0);
  ASSERT_EQ(n, N);
  int same = 1;
  for (size_t i = 0; i < N; i++) {
    const fl_round_metrics_t *a = &got[i], *b = &want[i];
    int ok =
        a->round == b->round && a->rounds_total == b->rounds_total &&
        a->clients_sampled == b->clients_sampled && a->clients_reported == b->clients_reported &&
        a->bytes_sent == b->bytes_sent && a->bytes_received == b->bytes_received &&
        a->rejected == b->rejected && a->clipped == b->clipped && a->capped == b->capped &&
        a->fed_eval_clients == b->fed_eval_clients &&
        a->fed_eval_examples == b->fed_eval_examples && same_double(a->lr, b->lr) &&
        same_double(a->train_loss, b->train_loss) && same_double(a->test_loss, b->test_loss) &&
        same_double(a->test_accuracy, b->test_accuracy) && same_double(a->seconds, b->seconds) &&
        same_double(a->elapsed, b->elapsed) && same_double(a->fed_eval_loss, b->fed_eval_loss) &&
        same_double(a->fed_eval_accuracy, b->fed_eval_accuracy);
    if (!ok) fprintf(stderr, "  round %zu differs\n", i + 1);
    same &= ok;
  }
  /* Rounds without federated evaluation have no fed_eval_* members. */
  int absent = isnan(got[0].fed_eval_loss) && got[0].fed_eval_clients == 0;
  free(got);
  ASSERT_TRUE(same);
  ASSERT_TRUE(absent);

  /* An empty file: no rounds. A missing one: FL_ENOENT. */
  ASSERT_EQ(fl_metrics_read(write_file("empty.jsonl", ""), &got, &n), 0);
  ASSERT_EQ(n, 0);
  ASSERT_TRUE(got == NULL);
  snprintf(path, sizeof path, "%s/missing.jsonl", fl_test_tmpdir());
  ASSERT_EQ(fl_metrics_read(path, &got, &n), FL_ENOENT);
  ASSERT_CONTAINS(fl_err_msg(), "missing.jsonl");
  /* A last line without its newline is read if whole. */
  ASSERT_EQ(fl_metrics_read(write_file("nonl.jsonl", "{\"round\":1}\n { \"round\" : 2 , "
                                                           "\"lr\" : -1.5e-3 }"),
                                  &got, &n),
            0);
  int nonl = n == 2 && got[1].round == 2 && got[1].lr == -1.5e-3 && isnan(got[1].test_loss);
  free(got);
  ASSERT_TRUE(nonl);
}

TEST(read_metrics_refuses_malformed_lines) {
  static const struct {
    const char *text, *says;
  } bad[] = {
      {"{\"round\":1}\n{\"round\":3}\n", "line 2: round 3 where 2 was expected"},
      {"{\"round\":2}\n", "line 1: round 2 where 1 was expected"},
      {"{\"round\":1}\n\n{\"round\":2}\n", "line 2, column 1: '{' expected"},
      {"{\"round\":1}\n{\"round\":2,\"lr\":0.1,}\n", "line 2, column 21: a key expected"},
      {"{\"round\":1,\"lr\":NaN}\n", "line 1, column 17: a bad number"},
      {"{\"round\":1,\"lr\":0x10}\n", "line 1, column 18: ',' or '}' expected"},
      {"{\"round\":1,\"lr\":01}\n", "line 1, column 17: a bad number"},
      {"{\"round\":1,\"lr\":1e999}\n", "a number out of range"},
      {"{\"round\":1,\"rejected\":4294967296}\n", "line 1, column 23: a number out of range"},
      {"{\"round\":1,\"rejected\":-1}\n", "a whole number >= 0 expected"},
      {"{\"round\":1,\"rejected\":null}\n", "a bad number"},
      {"{\"round\":1.5}\n", "a whole number >= 0 expected"},
      {"{\"round\":1,\"round\":1}\n", "a key given twice"},
      {"{\"lr\":0.1}\n", "no \"round\""},
      {"{\"round\":1} x\n", "more after the object"},
      {"{\"round\":1,\"x\":[1,2}\n", "']' expected"},
      {"{\"round\":1,\"x\":\"a\\q\"}\n", "a bad escape"},
      {"{\"round\":1,\"x\":\"a\tb\"}\n", "a control character in a string"},
      {"{\"round\":1,\"x\":\"abc}\n", "a string without its closing quote"},
      {"{\"round\":1}\n{\"round\":2,\"lr\":0.", "line 2, column 17: a bad number (the last line, "
                                                "without its newline: cut short?)"},
      {"[1]\n", "'{' expected"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char name[32];
    snprintf(name, sizeof name, "bad%zu.jsonl", i);
    const char *path = write_file(name, bad[i].text);
    fl_round_metrics_t *got = (fl_round_metrics_t *)1;
    size_t n = 99;
    int rc = fl_metrics_read(path, &got, &n);
    if (rc != FL_EINVAL || !strstr(fl_err_msg(), bad[i].says) || !strstr(fl_err_msg(), path))
      fprintf(stderr, "  case %zu: rc %d, \"%s\"\n", i, rc, fl_err_msg());
    ASSERT_EQ(rc, FL_EINVAL);
    ASSERT_CONTAINS(fl_err_msg(), bad[i].says);
    ASSERT_CONTAINS(fl_err_msg(), path);
    ASSERT_TRUE(got == NULL && n == 0);
  }
  /* Deep nesting is bounded, not a stack overflow. */
  static char deep[4096];
  size_t at = (size_t)snprintf(deep, sizeof deep, "{\"round\":1,\"x\":");
  while (at < sizeof deep - 2)
    deep[at++] = '[';
  deep[at] = '\0';
  fl_round_metrics_t *got = NULL;
  size_t n = 0;
  ASSERT_EQ(fl_metrics_read(write_file("deep.jsonl", deep), &got, &n), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "nested too deeply");
  /* A directory is not a metrics file. */
  ASSERT_EQ(fl_metrics_read(fl_test_tmpdir(), &got, &n), FL_EINVAL);
}

FL_TEST_MAIN()
