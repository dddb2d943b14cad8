/* fl_optim: torch.optim update rules over one contiguous parameter buffer.
 *
 * Each step is a plain loop over n floats (the compiler vectorizes them) and
 * follows the PyTorch single-tensor implementation operation by operation,
 * so a client trained here matches one trained with torch.optim to float
 * rounding. Defaults match torch: dampening 0, Adagrad lr_decay 0 and
 * initial accumulator 0, RMSprop uncentered without momentum, Adam without
 * amsgrad. */
#include "fl_optim.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"

struct fl_optim {
  fl_optim_config_t c;
  size_t n;
  long long step; // steps taken since the last reset
  /* Two state buffers of n floats, enough for every kind, so configure()
   * can switch kind without allocating (it cannot fail). They come from
   * calloc, so a kind that never touches one (SGD touches neither) costs
   * address space only, not memory. */
  float *s1; // (n) momentum buf | adagrad state_sum | rmsprop square_avg | adam exp_avg
  float *s2; // (n) adam exp_avg_sq
};

static const char *kind_name(fl_optim_kind_t k) {
  switch (k) {
  case FL_OPT_SGD: return "sgd";
  case FL_OPT_MOMENTUM: return "momentum";
  case FL_OPT_NESTEROV: return "nesterov";
  case FL_OPT_ADAGRAD: return "adagrad";
  case FL_OPT_RMSPROP: return "rmsprop";
  case FL_OPT_ADAM: return "adam";
  }
  return NULL;
}

/* The keys each kind accepts, for error messages. */
static const char *kind_keys(fl_optim_kind_t k) {
  switch (k) {
  case FL_OPT_SGD: return "wd, keep";
  case FL_OPT_MOMENTUM:
  case FL_OPT_NESTEROV: return "momentum (or a bare number right after ':'), wd, keep";
  case FL_OPT_ADAGRAD: return "eps, wd, keep";
  case FL_OPT_RMSPROP: return "alpha, eps, wd, keep";
  case FL_OPT_ADAM: return "beta1, beta2, eps, wd, keep";
  }
  return "";
}

/* Number of state buffers a kind uses. */
static int kind_buffers(fl_optim_kind_t k) {
  switch (k) {
  case FL_OPT_SGD: return 0;
  case FL_OPT_ADAM: return 2;
  default: return 1;
  }
}

static void defaults(fl_optim_kind_t k, fl_optim_config_t *c) {
  memset(c, 0, sizeof *c);
  c->kind = k;
  c->momentum = 0.9f;
  c->beta1 = 0.9f;
  c->beta2 = 0.999f;
  c->alpha = 0.99f;
  c->eps = k == FL_OPT_ADAGRAD ? 1e-10f : 1e-8f;
}

/* Parses a whole float from s[0..len). */
static int parse_float(const char *s, size_t len, float *out) {
  char buf[64];
  if (len == 0 || len >= sizeof buf) return -1;
  memcpy(buf, s, len);
  buf[len] = 0;
  char *end;
  errno = 0;
  float v = strtof(buf, &end);
  if (*end || end == buf || errno == ERANGE || buf[0] == ' ' || buf[0] == '\t') return -1;
  *out = v;
  return 0;
}

int fl_optim_validate(const fl_optim_config_t *c) {
  if (!c) return fl_err_set(FL_EINVAL, "optimizer: NULL config");
  const char *name = kind_name(c->kind);
  if (!name)
    return fl_err_set(FL_EINVAL,
                      "optimizer: unknown kind %d (valid: 0 sgd, 1 momentum, 2 nesterov, "
                      "3 adagrad, 4 rmsprop, 5 adam)",
                      (int)c->kind);
  /* Negated comparisons so NaN fails them. */
  if (!(c->weight_decay >= 0.0f && isfinite(c->weight_decay)))
    return fl_err_set(FL_ERANGE, "optimizer %s: wd=%g must be finite and >= 0", name,
                      (double)c->weight_decay);
  switch (c->kind) {
  case FL_OPT_SGD: break;
  case FL_OPT_MOMENTUM:
    if (!(c->momentum >= 0.0f && c->momentum < 1.0f))
      return fl_err_set(FL_ERANGE, "optimizer %s: momentum=%g must be in [0, 1)", name,
                        (double)c->momentum);
    break;
  case FL_OPT_NESTEROV:
    /* torch.optim.SGD rejects nesterov without momentum. */
    if (!(c->momentum > 0.0f && c->momentum < 1.0f))
      return fl_err_set(FL_ERANGE, "optimizer %s: momentum=%g must be in (0, 1)", name,
                        (double)c->momentum);
    break;
  case FL_OPT_ADAGRAD: break;
  case FL_OPT_RMSPROP:
    if (!(c->alpha >= 0.0f && c->alpha < 1.0f))
      return fl_err_set(FL_ERANGE, "optimizer %s: alpha=%g must be in [0, 1)", name,
                        (double)c->alpha);
    break;
  case FL_OPT_ADAM:
    if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f))
      return fl_err_set(FL_ERANGE, "optimizer %s: beta1=%g must be in [0, 1)", name,
                        (double)c->beta1);
    if (!(c->beta2 >= 0.0f && c->beta2 < 1.0f))
      return fl_err_set(FL_ERANGE, "optimizer %s: beta2=%g must be in [0, 1)", name,
                        (double)c->beta2);
    break;
  }
  int uses_eps = c->kind == FL_OPT_ADAGRAD || c->kind == FL_OPT_RMSPROP || c->kind == FL_OPT_ADAM;
  if (uses_eps && !(c->eps > 0.0f && isfinite(c->eps)))
    return fl_err_set(FL_ERANGE, "optimizer %s: eps=%g must be finite and > 0", name,
                      (double)c->eps);
  if (c->keep_state != 0 && c->keep_state != 1)
    return fl_err_set(FL_EINVAL, "optimizer %s: keep_state=%d must be 0 or 1", name, c->keep_state);
  return 0;
}

int fl_optim_parse(const char *spec, fl_optim_config_t *out) {
  if (!spec || !out) return fl_err_set(FL_EINVAL, "optimizer: NULL spec");
  static const fl_optim_kind_t kinds[] = {FL_OPT_SGD,     FL_OPT_MOMENTUM, FL_OPT_NESTEROV,
                                          FL_OPT_ADAGRAD, FL_OPT_RMSPROP,  FL_OPT_ADAM};
  /* The kind ends at the first ':' or ','; what follows is the parameters. */
  size_t nlen = strcspn(spec, ":,");
  const char *params = spec[nlen] ? spec + nlen + 1 : NULL;
  int after_colon = spec[nlen] == ':';
  int kind = -1;
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    const char *nm = kind_name(kinds[i]);
    if (strlen(nm) == nlen && strncmp(spec, nm, nlen) == 0) kind = (int)kinds[i];
  }
  if (kind < 0)
    return fl_err_set(FL_EINVAL,
                      "optimizer '%s': unknown optimizer '%.*s' (valid: sgd, "
                      "momentum, nesterov, adagrad, rmsprop, adam)",
                      spec, (int)nlen, spec);
  fl_optim_kind_t k = (fl_optim_kind_t)kind;
  fl_optim_config_t c;
  defaults(k, &c);
  if (params) {
    const char *p = params;
    int first = 1;
    for (;;) {
      const char *comma = strchr(p, ',');
      size_t len = comma ? (size_t)(comma - p) : strlen(p);
      const char *eq = memchr(p, '=', len);
      size_t klen = eq ? (size_t)(eq - p) : len;
      const char *val = eq ? eq + 1 : NULL;
      size_t vlen = eq ? len - klen - 1 : 0;
      float *dst = NULL;
#define KEY_IS(s) (klen == strlen(s) && strncmp(p, s, klen) == 0)
      if (len == 0) {
        return fl_err_set(FL_EINVAL,
                          "optimizer '%s': empty parameter (after the kind come key=value or "
                          "keep, separated by commas; valid keys for %s: %s)",
                          spec, kind_name(k), kind_keys(k));
      } else if (!eq && first && after_colon && (k == FL_OPT_MOMENTUM || k == FL_OPT_NESTEROV) &&
                 !KEY_IS("keep")) {
        /* "momentum:0.9": a bare number right after the colon is the momentum. */
        dst = &c.momentum;
        val = p;
        vlen = len;
      } else if (KEY_IS("keep")) {
        if (!eq) {
          c.keep_state = 1;
        } else if (vlen == 1 && (*val == '0' || *val == '1')) {
          c.keep_state = *val - '0';
        } else {
          return fl_err_set(FL_EINVAL, "optimizer '%s': keep='%.*s' must be 0 or 1", spec,
                            (int)vlen, val);
        }
      } else if (KEY_IS("wd")) {
        dst = &c.weight_decay;
      } else if (KEY_IS("momentum") && (k == FL_OPT_MOMENTUM || k == FL_OPT_NESTEROV)) {
        dst = &c.momentum;
      } else if (KEY_IS("eps") &&
                 (k == FL_OPT_ADAGRAD || k == FL_OPT_RMSPROP || k == FL_OPT_ADAM)) {
        dst = &c.eps;
      } else if (KEY_IS("alpha") && k == FL_OPT_RMSPROP) {
        dst = &c.alpha;
      } else if (KEY_IS("beta1") && k == FL_OPT_ADAM) {
        dst = &c.beta1;
      } else if (KEY_IS("beta2") && k == FL_OPT_ADAM) {
        dst = &c.beta2;
      } else {
        return fl_err_set(FL_EINVAL, "optimizer '%s': unknown key '%.*s' for %s (valid: %s)", spec,
                          (int)klen, p, kind_name(k), kind_keys(k));
      }
#undef KEY_IS
      if (dst) {
        if (!val)
          return fl_err_set(FL_EINVAL, "optimizer '%s': key '%.*s' needs a value, e.g. '%.*s=0.1'",
                            spec, (int)klen, p, (int)klen, p);
        if (parse_float(val, vlen, dst) != 0)
          return fl_err_set(FL_EINVAL, "optimizer '%s': '%.*s' is not a number (in '%.*s')", spec,
                            (int)vlen, val, (int)len, p);
      }
      first = 0;
      if (!comma) break;
      p = comma + 1;
    }
  }
  int rc = fl_optim_validate(&c);
  if (rc != 0) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s", fl_err_msg());
    return fl_err_set(rc, "optimizer '%s': %s", spec, msg);
  }
  *out = c;
  return 0;
}

int fl_optim_format(const fl_optim_config_t *c, char *buf, size_t len) {
  if (!c || !buf || len == 0) return fl_err_set(FL_EINVAL, "optimizer format: NULL argument");
  const char *name = kind_name(c->kind);
  if (!name) return fl_err_set(FL_EINVAL, "optimizer format: unknown kind %d", (int)c->kind);
  /* %.9g round-trips every float through fl_optim_parse. */
  int w;
  switch (c->kind) {
  case FL_OPT_SGD: w = snprintf(buf, len, "sgd:wd=%.9g", (double)c->weight_decay); break;
  case FL_OPT_MOMENTUM:
  case FL_OPT_NESTEROV:
    w = snprintf(buf, len, "%s:momentum=%.9g,wd=%.9g", name, (double)c->momentum,
                 (double)c->weight_decay);
    break;
  case FL_OPT_ADAGRAD:
    w = snprintf(buf, len, "adagrad:eps=%.9g,wd=%.9g", (double)c->eps, (double)c->weight_decay);
    break;
  case FL_OPT_RMSPROP:
    w = snprintf(buf, len, "rmsprop:alpha=%.9g,eps=%.9g,wd=%.9g", (double)c->alpha, (double)c->eps,
                 (double)c->weight_decay);
    break;
  case FL_OPT_ADAM:
  default:
    w = snprintf(buf, len, "adam:beta1=%.9g,beta2=%.9g,eps=%.9g,wd=%.9g", (double)c->beta1,
                 (double)c->beta2, (double)c->eps, (double)c->weight_decay);
    break;
  }
  if (w >= 0 && (size_t)w < len && c->keep_state) {
    int w2 = snprintf(buf + w, len - (size_t)w, ",keep");
    w = w2 < 0 ? w2 : w + w2;
  }
  if (w < 0 || (size_t)w >= len)
    return fl_err_set(FL_ETOOBIG, "optimizer format: needs %d bytes, buffer has %zu", w + 1, len);
  return 0;
}

fl_optim_t *fl_optim_new(const fl_optim_config_t *c, size_t n) {
  if (fl_optim_validate(c) != 0) return NULL;
  fl_optim_t *o = calloc(1, sizeof *o);
  if (!o) goto oom;
  o->c = *c;
  o->n = n;
  if (n > 0) {
    o->s1 = calloc(n, sizeof(float));
    o->s2 = calloc(n, sizeof(float));
    if (!o->s1 || !o->s2) goto oom;
  }
  return o;
oom:
  fl_optim_destroy(&o);
  fl_err_set(FL_ENOMEM, "optimizer: out of memory for %zu parameters", n);
  return NULL;
}

void fl_optim_destroy(fl_optim_t **o) {
  if (!o || !*o) return;
  free((*o)->s1);
  free((*o)->s2);
  free(*o);
  *o = NULL;
}

void fl_optim_reset(fl_optim_t *o) {
  o->step = 0;
  /* Only the buffers the kind uses: the others stay untouched (see above). */
  int nb = kind_buffers(o->c.kind);
  if (o->n == 0) return;
  if (nb >= 1) memset(o->s1, 0, o->n * sizeof(float));
  if (nb >= 2) memset(o->s2, 0, o->n * sizeof(float));
}

/* The caller validates c (fl_optim_validate) first: a config from a peer. */
void fl_optim_configure(fl_optim_t *o, const fl_optim_config_t *c) {
  int changed = c->kind != o->c.kind;
  o->c = *c;
  if (changed) fl_optim_reset(o);
}

void fl_optim_step(fl_optim_t *o, float *restrict params, float *restrict grad, float lr) {
  const size_t n = o->n;
  const fl_optim_config_t *c = &o->c;
  float *restrict s1 = o->s1, *restrict s2 = o->s2;
  o->step++;
  if (n == 0) return;
  if (c->weight_decay != 0.0f) {
    const float wd = c->weight_decay;
    for (size_t i = 0; i < n; i++)
      grad[i] += wd * params[i];
  }
  switch (c->kind) {
  case FL_OPT_SGD:
    for (size_t i = 0; i < n; i++)
      params[i] -= lr * grad[i];
    break;
  case FL_OPT_MOMENTUM:
  case FL_OPT_NESTEROV: {
    const float mu = c->momentum;
    if (o->step == 1) {
      /* torch: buf = clone(grad) on the first step. */
      memcpy(s1, grad, n * sizeof(float));
    } else {
      for (size_t i = 0; i < n; i++)
        s1[i] = mu * s1[i] + grad[i];
    }
    if (c->kind == FL_OPT_NESTEROV) {
      for (size_t i = 0; i < n; i++)
        params[i] -= lr * (grad[i] + mu * s1[i]);
    } else {
      for (size_t i = 0; i < n; i++)
        params[i] -= lr * s1[i];
    }
    break;
  }
  case FL_OPT_ADAGRAD: {
    const float eps = c->eps;
    for (size_t i = 0; i < n; i++) {
      s1[i] += grad[i] * grad[i];
      params[i] -= lr * (grad[i] / (sqrtf(s1[i]) + eps));
    }
    break;
  }
  case FL_OPT_RMSPROP: {
    const float a = c->alpha, b = 1.0f - c->alpha, eps = c->eps;
    for (size_t i = 0; i < n; i++) {
      s1[i] = a * s1[i] + b * grad[i] * grad[i];
      params[i] -= lr * (grad[i] / (sqrtf(s1[i]) + eps));
    }
    break;
  }
  case FL_OPT_ADAM: {
    const float b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    /* torch computes the bias corrections in Python floats (double). */
    double bc1 = 1.0 - pow((double)b1, (double)o->step);
    double bc2 = 1.0 - pow((double)b2, (double)o->step);
    const float step_size = (float)((double)lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float one_b1 = 1.0f - b1, one_b2 = 1.0f - b2;
    for (size_t i = 0; i < n; i++) {
      float g = grad[i];
      s1[i] = b1 * s1[i] + one_b1 * g;
      s2[i] = b2 * s2[i] + one_b2 * g * g;
      float denom = sqrtf(s2[i]) / bc2_sqrt + eps;
      params[i] -= step_size * (s1[i] / denom);
    }
    break;
  }
  }
}
