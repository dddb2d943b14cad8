/* fl_outputs: the three files of --out, written atomically; a full disk
 * (RLIMIT_FSIZE here) leaves each file old or absent, never partial or
 * empty, no temporary file, and an error naming the file. */
#include "fl_outputs.h"

#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>

#include "fl_error.h"
#include "fl_safetensors.h"
#include "fl_test.h"

static long fsize(const char *dir, const char *name) {
  char path[700];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Files in dir whose name holds ".tmp." (a temporary of an atomic write). */
static int count_tmp(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d));)
    n += strstr(e->d_name, ".tmp.") != NULL;
  if (d) closedir(d);
  return n;
}

typedef struct {
  fl_config_t cfg;
  fl_model_spec_t model;
  float *w;
  fl_metrics_t *met;
} run_t;

static int run_init(run_t *r) {
  fl_config_defaults(&r->cfg);
  if (fl_model_parse("softmax", 784, 10, &r->model)) return -1;
  r->w = calloc(r->model.num_params, sizeof *r->w);
  if (!r->w || fl_metrics_new(NULL, 0, &r->met)) return -1;
  fl_model_init(&r->model, r->w, 7);
  for (uint32_t i = 1; i <= 5; i++) {
    fl_round_metrics_t x = {.round = i,
                            .rounds_total = 5,
                            .lr = 0.1,
                            .train_loss = 1.0 / i,
                            .test_loss = 1.1 / i,
                            .test_accuracy = 0.5 + 0.05 * i};
    if (fl_metrics_add(r->met, &x, NULL)) return -1;
  }
  return 0;
}

static void run_free(run_t *r) {
  free(r->w);
  fl_metrics_destroy(&r->met);
}

TEST(writes_all_three) {
  run_t r;
  ASSERT_EQ(run_init(&r), 0);
  char dir[600], path[700];
  snprintf(dir, sizeof dir, "%s/out-ok/sub", fl_test_tmpdir()); /* created */
  int rc = fl_outputs_write(dir, "fedlr-test", &r.cfg, FL_PROG_SIM, &r.model, r.w, 5, r.met);
  if (rc) fprintf(stderr, "  %s\n", fl_err_msg());
  ASSERT_EQ(rc, 0);
  ASSERT_GT(fsize(dir, "chart.svg"), 1000);
  ASSERT_EQ(count_tmp(dir), 0);
  /* The model loads back bit for bit, with its metadata. */
  float *back = calloc(r.model.num_params, sizeof *back);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  ASSERT_EQ(fl_safetensors_load(path, &r.model, back), 0);
  int same = memcmp(back, r.w, r.model.num_params * sizeof *back) == 0;
  free(back);
  ASSERT_TRUE(same);
  char meta[64];
  ASSERT_EQ(fl_safetensors_meta(path, "producer", meta, sizeof meta), 0);
  ASSERT_STR_EQ(meta, "fedlr-test");
  ASSERT_EQ(fl_safetensors_meta(path, "rounds", meta, sizeof meta), 0);
  ASSERT_STR_EQ(meta, "5");
  /* config.ini loads back into the same configuration. */
  fl_config_t c;
  fl_config_defaults(&c);
  snprintf(path, sizeof path, "%s/config.ini", dir);
  ASSERT_EQ(fl_config_load_file(&c, FL_PROG_SIM, path), 0);
  ASSERT_EQ(memcmp(&c, &r.cfg, sizeof c), 0);
  run_free(&r);
}

TEST(full_disk_leaves_old_or_nothing) {
  run_t r;
  ASSERT_EQ(run_init(&r), 0);
  char dir[600];
  snprintf(dir, sizeof dir, "%s/out-full", fl_test_tmpdir());
  /* A first run with room. */
  ASSERT_EQ(fl_outputs_write(dir, "fedlr-test", &r.cfg, FL_PROG_SIM, &r.model, r.w, 5, r.met), 0);
  long model0 = fsize(dir, "model.safetensors"), chart0 = fsize(dir, "chart.svg");
  ASSERT_GT(model0, 20000);
  /* A second whose files may not exceed 20 KB: the model (31 KB) does not
   * fit, the chart and config do. The old model stays. */
  r.cfg.rounds = 77;
  r.w[0] = 42.0f;
  ASSERT_EQ(fl_test_cap_file_size(20000), 0);
  int rc = fl_outputs_write(dir, "fedlr-test", &r.cfg, FL_PROG_SIM, &r.model, r.w, 6, r.met);
  fl_test_cap_file_size(0);
  fprintf(stderr, "  -> %s\n", fl_err_msg());
  ASSERT_EQ(rc, FL_EIO);
  ASSERT_CONTAINS(fl_err_msg(), "model.safetensors");
  ASSERT_CONTAINS(fl_err_msg(), strerror(EFBIG));
  ASSERT_EQ(fsize(dir, "model.safetensors"), model0);
  ASSERT_EQ(count_tmp(dir), 0);
  ASSERT_EQ(fsize(dir, "chart.svg"), chart0);
  char path[700];
  fl_config_t c;
  fl_config_defaults(&c);
  snprintf(path, sizeof path, "%s/config.ini", dir);
  ASSERT_EQ(fl_config_load_file(&c, FL_PROG_SIM, path), 0);
  ASSERT_EQ(c.rounds, 77); /* the new config fitted */

  /* Nothing fits (a 100-byte cap): every file fails and is named; a new
   * directory holds none of them, not even an empty config.ini. */
  snprintf(dir, sizeof dir, "%s/out-none", fl_test_tmpdir());
  ASSERT_EQ(fl_test_cap_file_size(100), 0);
  rc = fl_outputs_write(dir, "fedlr-test", &r.cfg, FL_PROG_SIM, &r.model, r.w, 6, r.met);
  fl_test_cap_file_size(0);
  fprintf(stderr, "  -> %s\n", fl_err_msg());
  ASSERT_EQ(rc, FL_EIO);
  ASSERT_CONTAINS(fl_err_msg(), "model.safetensors");
  ASSERT_CONTAINS(fl_err_msg(), "not written either: chart.svg, config.ini");
  ASSERT_EQ(fsize(dir, "model.safetensors"), -1);
  ASSERT_EQ(fsize(dir, "chart.svg"), -1);
  ASSERT_EQ(fsize(dir, "config.ini"), -1);
  ASSERT_EQ(count_tmp(dir), 0);
  run_free(&r);
}

FL_TEST_MAIN()
