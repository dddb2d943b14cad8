/* fedlr_tensors: libfedlr's values: tensor lists and layouts, schedules,
 * rounds, metrics, errors, versions and the log (see fedlr.h). Everything
 * here is a thin, argument-checking face over common/: fl_layout,
 * fl_sched, fl_safetensors, fl_wire's name rules and fl_error. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fedlr_internal.h"
#include "fl_error.h"
#include "fl_safetensors.h"

#define STR_(x) #x
#define STR(x) STR_(x)

/* ---- versions, errors, log ---- */

FEDLR_API unsigned fedlr_version(void) {
  return FEDLR_VERSION_HEX;
}

FEDLR_API const char *fedlr_version_string(void) {
  return STR(FEDLR_VERSION_MAJOR) "." STR(FEDLR_VERSION_MINOR) "." STR(FEDLR_VERSION_PATCH);
}

/* The FEDLR_E* codes are fl_error's, value for value. */
_Static_assert((int)FEDLR_EINVAL == (int)FL_EINVAL && (int)FEDLR_ENOENT == (int)FL_ENOENT &&
                   (int)FEDLR_ESHAPE == (int)FL_ESHAPE && (int)FEDLR_ESTATE == (int)FL_ESTATE &&
                   (int)FEDLR_EUNSUPPORTED == (int)FL_EUNSUPPORTED,
               "fedlr.h error codes must equal fl_error.h's");

FEDLR_API const char *fedlr_strerror(int code) {
  switch (code) {
  case FEDLR_REFUSED: return "refused";
  case FEDLR_STOPPED: return "stopped";
  case FEDLR_AUTH_FAILED: return "authentication failed";
  case FEDLR_GAVE_UP: return "gave up: the coordinator is silent";
  default: return fl_strerror(code);
  }
}

FEDLR_API const char *fedlr_last_error(void) {
  return fl_err_msg();
}

FEDLR_API int fedlr_set_error(int code, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt ? fmt : "", ap);
  va_end(ap);
  return fl_err_set(code, "%s", msg);
}

void fedlr__log(const fedlr__settings_t *st, fedlr__shared_t *sh, int level, const char *fmt, ...) {
  if (level > st->log_level) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  pthread_mutex_lock(&sh->log_mu);
  if (st->log)
    st->log(st->user, level, line);
  else
    fprintf(stderr, "fedlr[%s]: %s\n", st->name, line); /* one call: lines do not interleave */
  pthread_mutex_unlock(&sh->log_mu);
}

double fedlr__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- tensors ---- */

FEDLR_API fedlr_tensors *fedlr_tensors_new(void) {
  fedlr_tensors *ts = calloc(1, sizeof *ts);
  if (!ts || !(ts->layout = fl_layout_new())) {
    free(ts);
    fl_err_set(FL_ENOMEM, "out of memory");
    return NULL;
  }
  return ts;
}

FEDLR_API void fedlr_tensors_destroy(fedlr_tensors **tsp) {
  if (!tsp || !*tsp) return;
  fl_layout_destroy(&(*tsp)->layout);
  free((*tsp)->values);
  free(*tsp);
  *tsp = NULL;
}

/* Grows the values to the layout's size, zero-filling the new part. */
static int ensure_values(fedlr_tensors *ts) {
  size_t n = ts->layout->num_params;
  if (n <= ts->cap && ts->values) return 0;
  size_t cap = ts->cap ? ts->cap : 64;
  while (cap < n)
    cap *= 2;
  float *v = realloc(ts->values, cap * sizeof *v);
  if (!v) return fl_err_set(FL_ENOMEM, "out of memory for %zu values", n);
  memset(v + ts->cap, 0, (cap - ts->cap) * sizeof *v);
  ts->values = v;
  ts->cap = cap;
  return 0;
}

FEDLR_API int fedlr_tensors_add(fedlr_tensors *ts, const char *name, uint32_t ndim,
                                const uint32_t *shape) {
  if (!ts || !name || (ndim > 0 && !shape))
    return fl_err_set(FL_EINVAL, "fedlr_tensors_add: NULL argument");
  if (ndim > FL_LAYOUT_MAX_DIMS)
    return fl_err_set(FL_EINVAL, "tensor '%.64s': %u dimensions, at most %d", name, ndim,
                      FL_LAYOUT_MAX_DIMS);
  int rc = fl_layout_add(ts->layout, name, ndim, shape);
  if (rc) return rc;
  if ((rc = ensure_values(ts))) {
    ts->layout->n--; /* undo the add: the list stays as it was */
    ts->layout->num_params -= ts->layout->t[ts->layout->n].count;
  }
  return rc;
}

fedlr_tensors *fedlr__tensors_from_layout(const fl_layout_t *l, int with_values) {
  fedlr_tensors *ts = fedlr_tensors_new();
  if (!ts) return NULL;
  for (size_t i = 0; i < l->n; i++) {
    if (fl_layout_add(ts->layout, l->t[i].name, l->t[i].ndim, l->t[i].shape)) {
      fedlr_tensors_destroy(&ts);
      return NULL;
    }
  }
  if (with_values && ensure_values(ts)) fedlr_tensors_destroy(&ts);
  return ts;
}

FEDLR_API size_t fedlr_tensors_count(const fedlr_tensors *ts) {
  return ts ? ts->layout->n : 0;
}

FEDLR_API size_t fedlr_tensors_num_values(const fedlr_tensors *ts) {
  return ts ? ts->layout->num_params : 0;
}

FEDLR_API long fedlr_tensors_find(const fedlr_tensors *ts, const char *name) {
  if (!ts || !name) return fl_err_set(FL_EINVAL, "fedlr_tensors_find: NULL argument");
  for (size_t i = 0; i < ts->layout->n; i++)
    if (strcmp(ts->layout->t[i].name, name) == 0) return (long)i;
  return fl_err_set(FL_ENOENT, "no tensor '%.255s'", name);
}

static const fl_tensor_info_t *info(const fedlr_tensors *ts, size_t i) {
  return ts && i < ts->layout->n ? &ts->layout->t[i] : NULL;
}

FEDLR_API const char *fedlr_tensor_name(const fedlr_tensors *ts, size_t i) {
  const fl_tensor_info_t *t = info(ts, i);
  return t ? t->name : NULL;
}

FEDLR_API uint32_t fedlr_tensor_ndim(const fedlr_tensors *ts, size_t i) {
  const fl_tensor_info_t *t = info(ts, i);
  return t ? t->ndim : 0;
}

FEDLR_API uint32_t fedlr_tensor_dim(const fedlr_tensors *ts, size_t i, uint32_t d) {
  const fl_tensor_info_t *t = info(ts, i);
  return t && d < t->ndim ? t->shape[d] : 0;
}

FEDLR_API size_t fedlr_tensor_size(const fedlr_tensors *ts, size_t i) {
  const fl_tensor_info_t *t = info(ts, i);
  return t ? t->count : 0;
}

FEDLR_API const float *fedlr_tensor_data(const fedlr_tensors *ts, size_t i) {
  const fl_tensor_info_t *t = info(ts, i);
  return t && ts->values ? ts->values + t->offset : NULL;
}

FEDLR_API float *fedlr_tensor_data_mut(fedlr_tensors *ts, size_t i) {
  const fl_tensor_info_t *t = info(ts, i);
  return t && ts->values ? ts->values + t->offset : NULL;
}

FEDLR_API const float *fedlr_tensors_values(const fedlr_tensors *ts) {
  return ts ? ts->values : NULL;
}

FEDLR_API float *fedlr_tensors_values_mut(fedlr_tensors *ts) {
  return ts ? ts->values : NULL;
}

FEDLR_API int fedlr_tensors_check_layout(const fedlr_tensors *expected, const fedlr_tensors *got) {
  if (!expected || !got) return fl_err_set(FL_EINVAL, "fedlr_tensors_check_layout: NULL argument");
  const fl_layout_t *a = expected->layout, *b = got->layout;
  char sa[128], sb[128];
  for (size_t i = 0; i < a->n || i < b->n; i++) {
    if (i >= b->n)
      return fl_err_set(FL_ESHAPE, "tensor %zu: expected '%s', got none", i, a->t[i].name);
    if (i >= a->n)
      return fl_err_set(FL_ESHAPE, "tensor %zu: expected none, got '%s'", i, b->t[i].name);
    const fl_tensor_info_t *x = &a->t[i], *y = &b->t[i];
    int same = strcmp(x->name, y->name) == 0 && x->ndim == y->ndim;
    for (uint32_t d = 0; same && d < x->ndim; d++)
      same = x->shape[d] == y->shape[d];
    if (!same)
      return fl_err_set(FL_ESHAPE, "tensor %zu: expected '%s' %s, got '%s' %s", i, x->name,
                        fl_layout_fmt_shape(x->shape, x->ndim, sa, sizeof sa), y->name,
                        fl_layout_fmt_shape(y->shape, y->ndim, sb, sizeof sb));
  }
  return 0;
}

FEDLR_API int fedlr_tensors_save(const fedlr_tensors *ts, const char *path) {
  if (!ts || !path) return fl_err_set(FL_EINVAL, "fedlr_tensors_save: NULL argument");
  if (!ts->values || ts->layout->n == 0)
    return fl_err_set(FL_EINVAL, "%s: no tensors with values to save", path);
  fl_model_spec_t m;
  int rc = fl_model_custom(ts->layout, &m);
  return rc ? rc : fl_safetensors_save(path, &m, ts->values, NULL);
}

/* ---- models ---- */

int fedlr__model_from_welcome(const Fedlr__Welcome *w, fedlr__model_t *m) {
  memset(m, 0, sizeof *m);
  if (w->protocol_version < FEDLR_MIN_PROTOCOL_VERSION ||
      w->protocol_version > FEDLR_PROTOCOL_VERSION || w->n_layout == 0)
    return fl_err_set(FL_EUNSUPPORTED,
                      "its Welcome is of protocol version %u%s; this client speaks versions %d "
                      "to %d (a coordinator of fedlr 0.2 or later)",
                      w->protocol_version ? w->protocol_version : 1,
                      w->n_layout ? "" : " without a model layout", FEDLR_MIN_PROTOCOL_VERSION,
                      FEDLR_PROTOCOL_VERSION);
  snprintf(m->name, sizeof m->name, "%s", w->model);
  if (!(m->layout = fl_layout_new())) return FL_ENOMEM;
  int rc = 0;
  for (size_t i = 0; i < w->n_layout && !rc; i++) {
    const Fedlr__Tensor *t = w->layout[i];
    rc = fl_layout_add(m->layout, t->name, (uint32_t)t->n_shape, t->shape);
  }
  if (!rc) rc = fl_model_custom(m->layout, &m->spec);
  if (rc) fedlr__model_clear(m);
  return rc;
}

void fedlr__model_clear(fedlr__model_t *m) {
  fl_layout_destroy(&m->layout);
  memset(m, 0, sizeof *m);
}

/* ---- schedules and rounds ---- */

FEDLR_API fedlr_schedule *fedlr_schedule_new(const char *spec, int *err) {
  fedlr_schedule *s = calloc(1, sizeof *s);
  int rc = s ? fl_sched_parse_local(spec, &s->s) : fl_err_set(FL_ENOMEM, "out of memory");
  if (rc) {
    free(s);
    s = NULL;
  }
  if (err) *err = rc;
  return s;
}

FEDLR_API void fedlr_schedule_destroy(fedlr_schedule **s) {
  if (!s) return;
  free(*s);
  *s = NULL;
}

FEDLR_API double fedlr_schedule_lr(const fedlr_schedule *s, double lr0, uint64_t t) {
  return s ? fl_sched_lr(&s->s, lr0, t, NULL) : lr0;
}

FEDLR_API double fedlr_local_lr(const fedlr_round *r, uint64_t t) {
  return r ? fedlr_schedule_lr(r->local, (double)r->lr, t) : 0.0;
}

/* ---- metrics ---- */

FEDLR_API int fedlr_eval_add_metric(fedlr_eval_result *r, const char *name, double value) {
  if (!r || !name) return fl_err_set(FL_EINVAL, "fedlr_eval_add_metric: NULL argument");
  int rc = fl_wire_check_metric_name(name);
  if (rc) return rc;
  if (!isfinite(value))
    return fl_err_set(FL_ENONFINITE, "metric '%s': %g is not finite", name, value);
  if (r->num_metrics >= FEDLR_MAX_METRICS)
    return fl_err_set(FL_ETOOBIG, "metric '%s': at most %d metrics", name, FEDLR_MAX_METRICS);
  for (size_t i = 0; i < r->num_metrics; i++)
    if (strcmp(r->metrics[i].name, name) == 0)
      return fl_err_set(FL_EINVAL, "metric '%s' given twice", name);
  snprintf(r->metrics[r->num_metrics].name, sizeof r->metrics[0].name, "%s", name);
  r->metrics[r->num_metrics++].value = value;
  return 0;
}
