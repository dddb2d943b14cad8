/* fl_layout: see fl_layout.h. */
#include "fl_layout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"

fl_layout_t *fl_layout_new(void) {
  fl_layout_t *l = calloc(1, sizeof *l);
  if (!l) fl_err_set(FL_ENOMEM, "out of memory for a model layout");
  return l;
}

void fl_layout_destroy(fl_layout_t **lp) {
  if (!lp || !*lp) return;
  free((*lp)->t);
  free(*lp);
  *lp = NULL;
}

int fl_layout_check_name(const char *name) {
  size_t n = name ? strnlen(name, FL_LAYOUT_MAX_NAME + 1) : 0;
  if (n == 0) return fl_err_set(FL_EINVAL, "a tensor has an empty name");
  if (n > FL_LAYOUT_MAX_NAME)
    return fl_err_set(FL_EINVAL, "tensor name '%.40s...' is longer than %d bytes", name,
                      FL_LAYOUT_MAX_NAME);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)name[i];
    if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\')
      return fl_err_set(FL_EINVAL,
                        "tensor name '%.*s' has byte 0x%02x at %zu: names are printable ASCII "
                        "without spaces, quotes or backslashes",
                        (int)i, name, c, i);
  }
  return 0;
}

const char *fl_layout_fmt_shape(const uint32_t *shape, uint32_t ndim, char *buf, size_t cap) {
  size_t at = (size_t)snprintf(buf, cap, "[");
  for (uint32_t d = 0; d < ndim && at < cap; d++)
    at += (size_t)snprintf(buf + at, cap - at, "%s%u", d ? "," : "", (unsigned)shape[d]);
  if (at < cap) snprintf(buf + at, cap - at, "]");
  return buf;
}

int fl_layout_add(fl_layout_t *l, const char *name, uint32_t ndim, const uint32_t *shape) {
  int rc = fl_layout_check_name(name);
  if (rc) return rc;
  if (ndim > FL_LAYOUT_MAX_DIMS)
    return fl_err_set(FL_EINVAL, "tensor '%s' has %u dimensions, at most %d", name, (unsigned)ndim,
                      FL_LAYOUT_MAX_DIMS);
  if (l->n >= FL_LAYOUT_MAX_TENSORS)
    return fl_err_set(FL_ETOOBIG, "more than %d tensors (at '%s')", FL_LAYOUT_MAX_TENSORS, name);
  size_t count = 1;
  char sb[128];
  for (uint32_t d = 0; d < ndim; d++) {
    if (shape[d] == 0)
      return fl_err_set(FL_EINVAL, "tensor '%s' has an empty dimension %s", name,
                        fl_layout_fmt_shape(shape, ndim, sb, sizeof sb));
    if (__builtin_mul_overflow(count, (size_t)shape[d], &count) || count > FL_MODEL_MAX_PARAMS)
      return fl_err_set(FL_ETOOBIG, "tensor '%s' %s has more than %zu values", name,
                        fl_layout_fmt_shape(shape, ndim, sb, sizeof sb),
                        (size_t)FL_MODEL_MAX_PARAMS);
  }
  if (count > FL_MODEL_MAX_PARAMS - l->num_params)
    return fl_err_set(FL_ETOOBIG, "the model has more than %zu values (at '%s')",
                      (size_t)FL_MODEL_MAX_PARAMS, name);
  /* Names are unique: a linear scan, as layouts are built once. */
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->t[i].name, name) == 0)
      return fl_err_set(FL_EINVAL, "tensor '%s' appears twice", name);
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 16;
    fl_tensor_info_t *t = realloc(l->t, cap * sizeof *t);
    if (!t) return fl_err_set(FL_ENOMEM, "out of memory for a model layout");
    l->t = t;
    l->cap = cap;
  }
  fl_tensor_info_t *ti = &l->t[l->n++];
  memset(ti, 0, sizeof *ti);
  snprintf(ti->name, sizeof ti->name, "%s", name);
  ti->offset = l->num_params;
  ti->count = count;
  ti->ndim = ndim;
  if (ndim) memcpy(ti->shape, shape, ndim * sizeof *shape);
  l->num_params += count;
  return 0;
}

int fl_layout_equal(const fl_layout_t *a, const fl_layout_t *b) {
  if (a->n != b->n || a->num_params != b->num_params) return 0;
  for (size_t i = 0; i < a->n; i++) {
    const fl_tensor_info_t *x = &a->t[i], *y = &b->t[i];
    if (strcmp(x->name, y->name) != 0 || x->ndim != y->ndim ||
        memcmp(x->shape, y->shape, x->ndim * sizeof x->shape[0]) != 0)
      return 0;
  }
  return 1;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

const char *fl_layout_fingerprint(const fl_layout_t *l, char *buf, size_t cap) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < l->n; i++) {
    const fl_tensor_info_t *t = &l->t[i];
    h = fnv(h, t->name, strlen(t->name) + 1);
    char sb[128];
    fl_layout_fmt_shape(t->shape, t->ndim, sb, sizeof sb);
    h = fnv(h, sb, strlen(sb) + 1);
  }
  snprintf(buf, cap, "%016llx", (unsigned long long)h);
  return buf;
}
