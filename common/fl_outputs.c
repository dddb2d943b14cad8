/* fl_outputs: see fl_outputs.h. */
#include "fl_outputs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"
#include "fl_file.h"
#include "fl_safetensors.h"

/* config.ini, rendered in memory so that it goes through the atomic write:
 * a file opened in place would be left empty or cut by a full disk. */
static int write_config(const char *path, const fl_config_t *cfg, int prog) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) return fl_err_set(FL_ENOMEM, "cannot render '%s': out of memory", path);
  fl_config_write(cfg, prog, f);
  int bad = ferror(f);
  if (fclose(f) != 0 || bad) {
    free(text);
    return fl_err_set(FL_ENOMEM, "cannot render '%s': out of memory", path);
  }
  int rc = fl_file_write_atomic(path, text, len);
  free(text);
  return rc;
}

int fl_outputs_write(const char *dir, const char *producer, const fl_config_t *cfg, int prog,
                     const fl_model_spec_t *model, const float *weights, uint32_t rounds,
                     const fl_metrics_t *metrics) {
  enum { NUM_FILES = 3 };
  static const char *const names[NUM_FILES] = {"model.safetensors", "chart.svg", "config.ini"};
  if (!dir || !dir[0] || !producer || !cfg || !model || !weights || !metrics)
    return fl_err_set(FL_EINVAL, "fl_outputs_write: bad arguments");
  int rc = fl_file_mkdirs(dir);
  if (rc) return rc;

  char path[FL_PATH_MAX + 64], first_msg[512] = "", others[128] = "";
  char rounds_s[16], seed_s[24], title[FL_PATH_MAX + 1024];
  snprintf(rounds_s, sizeof rounds_s, "%u", rounds);
  snprintf(seed_s, sizeof seed_s, "%llu", (unsigned long long)cfg->seed);
  const char *meta[] = {"rounds", rounds_s, "seed", seed_s, "producer", producer, NULL};
  snprintf(title, sizeof title, "%s %s on %s, %u clients, C=%g, %s", producer, cfg->model,
           cfg->dataset, cfg->clients, cfg->fraction, cfg->schedule);
  int first = 0;
  for (int i = 0; i < NUM_FILES; i++) {
    int n = snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    if (n < 0 || (size_t)n >= sizeof path)
      return fl_err_set(FL_EINVAL, "--out too long: '%s'", dir);
    int r = i == 0   ? fl_safetensors_save(path, model, weights, meta)
            : i == 1 ? fl_metrics_write_svg(metrics, path, title)
                     : write_config(path, cfg, prog);
    if (!r) continue;
    if (!first) {
      first = r;
      snprintf(first_msg, sizeof first_msg, "%s", fl_err_msg());
    } else {
      size_t at = strlen(others);
      snprintf(others + at, sizeof others - at, "%s%s", at ? ", " : "", names[i]);
    }
  }
  if (!first) return 0;
  if (others[0]) return fl_err_set(first, "%s; not written either: %s", first_msg, others);
  return fl_err_set(first, "%s", first_msg);
}
