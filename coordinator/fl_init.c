/* fl_init: see fl_init.h. */
#include "fl_init.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"
#include "fl_safetensors.h"

void fl_init_free(fl_init_t *in) {
  if (!in) return;
  fl_layout_destroy(&in->layout);
  free(in->weights);
  memset(in, 0, sizeof *in);
}

int fl_init_read(const fl_config_t *c, fl_init_t *in) {
  memset(in, 0, sizeof *in);
  snprintf(in->spec, sizeof in->spec, "%s", c->model[0] ? c->model : "softmax");
  if (!c->init[0]) return 0;
  snprintf(in->path, sizeof in->path, "%s", c->init);
  fl_safetensors_meta_t *meta = malloc(sizeof *meta);
  if (!meta) return fl_err_set(FL_ENOMEM, "--init: out of memory");
  int rc = fl_safetensors_read(c->init, 0, &in->layout, &in->weights, meta);
  if (rc) {
    char m[1024];
    snprintf(m, sizeof m, "%s", fl_err_msg());
    free(meta);
    return fl_err_set(rc, "--init: %s", m);
  }
  const char *file_model = NULL;
  for (size_t i = 0; i < meta->n; i++)
    if (!strcmp(meta->e[i].key, "model")) file_model = meta->e[i].value;
  if (!strcmp(c->model, FL_MODEL_CUSTOM)) {
    in->custom = 1;
  } else if (c->model[0]) {
    snprintf(in->spec, sizeof in->spec, "%s", c->model); /* checked in fl_init_model */
  } else if (file_model && strcmp(file_model, FL_MODEL_CUSTOM) != 0) {
    /* Syntax only here (the data's widths come later): a spec fedlr
     * cannot parse is a custom model's name. */
    if (fl_model_check_spec(file_model) == 0)
      snprintf(in->spec, sizeof in->spec, "%s", file_model);
    else
      in->custom = 1;
  } else {
    in->custom = 1;
  }
  free(meta);
  if (in->custom) snprintf(in->spec, sizeof in->spec, "%s", FL_MODEL_CUSTOM);
  return 0;
}

int fl_init_model(const fl_init_t *in, size_t input_dim, const fl_shape_t *shape,
                  size_t num_classes, fl_model_spec_t *m) {
  int rc;
  if (in->custom) return fl_model_custom(in->layout, m);
  if ((rc = fl_model_parse_shape(in->spec, input_dim, shape, num_classes, m))) return rc;
  if (!in->layout) return 0;
  /* --init must hold exactly this model's tensors. */
  size_t nt = fl_model_num_tensors(m);
  char want[160], got[160];
  for (size_t i = 0; i < nt || i < in->layout->n; i++) {
    if (i >= nt || i >= in->layout->n)
      return fl_err_set(FL_ESHAPE,
                        "--init %s holds %zu tensors, model '%s' has %zu (for a model of your "
                        "own, use --model custom)",
                        in->path, in->layout->n, m->spec, nt);
    fl_tensor_info_t t;
    fl_model_tensor(m, i, &t);
    const fl_tensor_info_t *f = &in->layout->t[i];
    if (strcmp(t.name, f->name) != 0 || t.ndim != f->ndim ||
        memcmp(t.shape, f->shape, t.ndim * sizeof t.shape[0]) != 0)
      return fl_err_set(
          FL_ESHAPE,
          "--init %s: tensor %zu is '%s' %s, model '%s' on %zu inputs and %zu "
          "classes has '%s' %s (for a model of your own, use --model custom)",
          in->path, i, f->name, fl_layout_fmt_shape(f->shape, f->ndim, got, sizeof got), m->spec,
          input_dim, num_classes, t.name, fl_layout_fmt_shape(t.shape, t.ndim, want, sizeof want));
  }
  return 0;
}
