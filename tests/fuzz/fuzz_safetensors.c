/* fuzz_safetensors: fl_safetensors_load(), fl_safetensors_load_all() (listing
 * the metadata, checksum required) and fl_safetensors_meta() on the input as
 * a file, for a small model ("mlp:16" on 20 inputs, 4 classes). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fl_model.h"
#include "fl_safetensors.h"
#include "fuzz_util.h"

static fl_model_spec_t model;
static float *params, *before;
static fl_safetensors_meta_t meta;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!params) {
    if (fl_model_parse("mlp:16", 20, 4, &model) != 0) abort();
    params = calloc(model.num_params, sizeof *params);
    before = calloc(model.num_params, sizeof *before);
    if (!params || !before) abort();
  }
  const char *path = fuzz_path("st");
  fuzz_write(path, data, size, 0);
  for (size_t i = 0; i < model.num_params; i++)
    params[i] = before[i] = (float)i;
  if (fl_safetensors_load(path, &model, params) != 0 &&
      memcmp(params, before, model.num_params * sizeof *params) != 0)
    abort(); /* contract: params unchanged on error */
  for (size_t i = 0; i < model.num_params; i++)
    params[i] = before[i];
  if (fl_safetensors_load_all(path, &model, params, FL_SAFETENSORS_NEED_CHECKSUM, &meta) != 0 &&
      memcmp(params, before, model.num_params * sizeof *params) != 0)
    abort();
  char buf[256];
  (void)fl_safetensors_meta(path, "model", buf, sizeof buf);
  (void)fl_safetensors_meta(path, "round", buf, 4); /* a short buffer too */
  return 0;
}
