/* fuzz_wire: fl_wire_decode() on arbitrary bytes, under the limits of a small
 * model ("mlp:16" on 20 inputs, 4 classes: 404 parameters), both with the
 * codec checking tensor values and with caller_checks_values = 1. Whatever
 * decodes must pass through the caller-side helpers without harm and must
 * survive a re-encode + decode round trip under the same limits. */
#include <stdint.h>
#include <stdlib.h>

#include "fl_model.h"
#include "fl_optim.h"
#include "fl_wire.h"

static fl_model_spec_t model;
static float *params;

static void setup(void) {
  if (params) return;
  if (fl_model_parse("mlp:16", 20, 4, &model) != 0) abort();
  params = calloc(model.num_params, sizeof *params);
  if (!params) abort();
}

/* What a coordinator or client does with a decoded message's tensors. */
static void use_tensors(Fedlr__Tensor *const *t, size_t n) {
  if (fl_wire_check_tensors(t, n, &model) == 0) fl_wire_tensors_copy(t, n, &model, params);
}

static void one(const uint8_t *data, size_t size, const fl_wire_limits_t *lim) {
  Fedlr__Envelope *env = NULL, *again = NULL;
  uint8_t *buf = NULL;
  size_t len = 0;
  if (fl_wire_decode(data, size, lim, &env) != 0) {
    if (env) abort(); /* contract: *out is NULL on error */
    return;
  }
  if (!env) abort();
  switch (env->body_case) {
  case FEDLR__ENVELOPE__BODY_ROUND_START: {
    fl_optim_config_t oc;
    char spec[128];
    if (env->round_start->optimizer) {
      fl_wire_optim_from(env->round_start->optimizer, &oc);
      if (fl_optim_validate(&oc) == 0) (void)fl_optim_format(&oc, spec, sizeof spec);
    }
    use_tensors(env->round_start->weights, env->round_start->n_weights);
    break;
  }
  case FEDLR__ENVELOPE__BODY_UPDATE:
    use_tensors(env->update->weights, env->update->n_weights);
    break;
  default: break;
  }
  /* Anything accepted must re-encode, and the encoding must be accepted. */
  if (fl_wire_encode(env, &buf, &len) != 0) abort();
  if (fl_wire_decode(buf, len, lim, &again) != 0) abort();
  if (again->body_case != env->body_case) abort();
  fl_wire_free(&again);
  free(buf);
  fl_wire_free(&env);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&model, &lim);
  one(data, size, &lim);
  lim.caller_checks_values = 1;
  one(data, size, &lim);
  return 0;
}
