/* fl_shape: see fl_shape.h. */
#include "fl_shape.h"

#include <stdio.h>
#include <string.h>

#include "fl_error.h"

/* One number of a shape: digits up to 'x' or the end, in [1, max]. */
static int side(const char **p, size_t *out) {
  size_t v = 0, d = 0;
  for (; **p >= '0' && **p <= '9'; (*p)++, d++) {
    v = v * 10 + (size_t)(**p - '0');
    if (v > FL_SHAPE_MAX_SIDE) return -1; /* before it can overflow */
  }
  if (d == 0 || v == 0) return -1;
  *out = v;
  return 0;
}

int fl_shape_parse(const char *s, fl_shape_t *out) {
  fl_shape_t r = {0, 0, 0};
  if (!s || !out) return fl_err_set(FL_EINVAL, "fl_shape_parse: NULL argument");
  if (*s) {
    const char *p = s;
    size_t v[3];
    for (int i = 0; i < 3; i++)
      if (side(&p, &v[i]) || *p++ != (i < 2 ? 'x' : '\0'))
        return fl_err_set(FL_EINVAL,
                          "'%s' is not CxHxW (channels x height x width, e.g. 3x32x32 or "
                          "1x28x28; each a whole number from 1 to %u)",
                          s, FL_SHAPE_MAX_SIDE);
    r.c = v[0], r.h = v[1], r.w = v[2];
  }
  *out = r;
  return 0;
}

const char *fl_shape_fmt(const fl_shape_t *s, char *buf, size_t cap) {
  if (fl_shape_is_set(s))
    snprintf(buf, cap, "%zux%zux%zu", s->c, s->h, s->w);
  else
    snprintf(buf, cap, "none");
  return buf;
}

int fl_shape_resolve(const char *flag, const fl_shape_t *data, size_t dim, fl_shape_t *out) {
  fl_shape_t s = {0, 0, 0};
  const int has = data && fl_shape_is_set(data);
  char msg[256], own[64];
  if (flag && *flag) {
    int rc = fl_shape_parse(flag, &s);
    if (rc) {
      snprintf(msg, sizeof msg, "%s", fl_err_msg());
      return fl_err_set(rc, "--input-shape %s", msg);
    }
    /* each side <= 2^16, so the product fits in 64 bits */
    if (s.c * s.h * s.w != dim)
      return fl_err_set(FL_EINVAL,
                        "--input-shape %s is %zu features per example, the data has %zu%s%s%s",
                        flag, s.c * s.h * s.w, dim, has ? " (its own shape is " : "",
                        has ? fl_shape_fmt(data, own, sizeof own) : "", has ? ")" : "");
  } else if (has) {
    s = *data;
    if (s.c * s.h * s.w != dim)
      return fl_err_set(FL_ESHAPE, "the data's shape %s is not its %zu features",
                        fl_shape_fmt(&s, own, sizeof own), dim);
  }
  *out = s;
  return 0;
}
