/* fl_server_optim: see fl_server_optim.h. */
#include "fl_server_optim.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"

static const struct {
  const char *name;
  const char *keys; /* for messages */
} kinds[] = {
    [FL_SOPT_FEDAVG] = {"fedavg", "none"},
    [FL_SOPT_FEDAVGM] = {"fedavgm", "momentum (or a bare number right after ':')"},
    [FL_SOPT_FEDADAGRAD] = {"fedadagrad", "beta1, tau"},
    [FL_SOPT_FEDADAM] = {"fedadam", "beta1, beta2, tau"},
    [FL_SOPT_FEDYOGI] = {"fedyogi", "beta1, beta2, tau"},
};
#define NUM_KINDS (sizeof kinds / sizeof kinds[0])

const char *fl_sopt_name(fl_sopt_kind_t kind) {
  return (size_t)kind < NUM_KINDS ? kinds[kind].name : "?";
}

static void defaults(fl_sopt_kind_t k, fl_sopt_config_t *c) {
  memset(c, 0, sizeof *c);
  c->kind = k;
  c->momentum = 0.9;
  c->beta1 = k == FL_SOPT_FEDADAGRAD ? 0.0 : 0.9;
  c->beta2 = 0.99;
  c->tau = 1e-3;
}

/* The keys kind k takes. */
static int takes(fl_sopt_kind_t k, const char *key) {
  switch (k) {
  case FL_SOPT_FEDAVG: return 0;
  case FL_SOPT_FEDAVGM: return !strcmp(key, "momentum");
  case FL_SOPT_FEDADAGRAD: return !strcmp(key, "beta1") || !strcmp(key, "tau");
  case FL_SOPT_FEDADAM:
  case FL_SOPT_FEDYOGI:
    return !strcmp(key, "beta1") || !strcmp(key, "beta2") || !strcmp(key, "tau");
  }
  return 0;
}

/* A whole number from s (strtod's forms but no leading space, finite). */
static int parse_double(const char *s, double *out) {
  char *end;
  if (!*s || *s == ' ' || *s == '\t') return -1;
  errno = 0;
  double v = strtod(s, &end);
  if (*end || errno == ERANGE || !isfinite(v)) return -1;
  *out = v;
  return 0;
}

int fl_sopt_parse(const char *spec, fl_sopt_config_t *out) {
  static const char *const forms =
      "fedavg, fedavgm[:momentum=M], fedadagrad[:beta1=B1,tau=T], fedadam[:beta1=B1,beta2=B2,"
      "tau=T] or fedyogi[:beta1=B1,beta2=B2,tau=T]";
  if (!spec) spec = "";
  char buf[256];
  if (strlen(spec) >= sizeof buf)
    return fl_err_set(FL_EINVAL, "server optimizer '%.40s...': longer than %zu bytes", spec,
                      sizeof buf - 1);
  snprintf(buf, sizeof buf, "%s", spec);
  char *params = strchr(buf, ':');
  if (params) *params++ = '\0';
  size_t k = 0;
  while (k < NUM_KINDS && strcmp(buf, kinds[k].name) != 0)
    k++;
  if (k == NUM_KINDS)
    return fl_err_set(FL_EINVAL, "server optimizer '%s': unknown kind '%s' (%s)", spec, buf, forms);
  fl_sopt_config_t c;
  defaults((fl_sopt_kind_t)k, &c);
  if (params && !*params)
    return fl_err_set(FL_EINVAL, "server optimizer '%s': nothing after ':' (%s)", spec, forms);
  int first = 1;
  for (char *item = params, *next; item; item = next, first = 0) {
    next = strchr(item, ',');
    if (next) *next++ = '\0';
    char *eq = strchr(item, '=');
    const char *key = item, *val;
    if (!eq && first && c.kind == FL_SOPT_FEDAVGM) {
      key = "momentum"; /* fedavgm:0.9 */
      val = item;
    } else if (!eq) {
      return fl_err_set(FL_EINVAL, "server optimizer '%s': '%s' is not key=value (keys of %s: %s)",
                        spec, item, kinds[k].name, kinds[k].keys);
    } else {
      *eq = '\0';
      val = eq + 1;
    }
    if (!takes(c.kind, key))
      return fl_err_set(FL_EINVAL, "server optimizer '%s': unknown key '%s' for %s (keys: %s)",
                        spec, key, kinds[k].name, kinds[k].keys);
    double v;
    if (parse_double(val, &v))
      return fl_err_set(FL_EINVAL, "server optimizer '%s': %s='%s' is not a finite number", spec,
                        key, val);
    if (!strcmp(key, "tau")) {
      if (!(v > 0))
        return fl_err_set(FL_ERANGE,
                          "server optimizer '%s': tau=%g must be > 0 (the adaptivity constant "
                          "keeps the step finite where v is 0)",
                          spec, v);
      c.tau = v;
      continue;
    }
    if (!(v >= 0 && v < 1))
      return fl_err_set(FL_ERANGE, "server optimizer '%s': %s=%g must be in [0, 1)", spec, key, v);
    if (!strcmp(key, "momentum"))
      c.momentum = v;
    else if (!strcmp(key, "beta1"))
      c.beta1 = v;
    else
      c.beta2 = v;
  }
  *out = c;
  return 0;
}

/* The fewest digits that read back to d. */
static void shortest(double d, char *buf, size_t cap) {
  for (int p = 1; p <= 17; p++) {
    snprintf(buf, cap, "%.*g", p, d);
    if (strtod(buf, NULL) == d) return;
  }
}

int fl_sopt_format(const fl_sopt_config_t *c, char *buf, size_t len) {
  char a[32], b[32], t[32];
  int w;
  switch (c->kind) {
  case FL_SOPT_FEDAVG: w = snprintf(buf, len, "fedavg"); break;
  case FL_SOPT_FEDAVGM:
    shortest(c->momentum, a, sizeof a);
    w = snprintf(buf, len, "fedavgm:momentum=%s", a);
    break;
  case FL_SOPT_FEDADAGRAD:
    shortest(c->beta1, a, sizeof a);
    shortest(c->tau, t, sizeof t);
    w = snprintf(buf, len, "fedadagrad:beta1=%s,tau=%s", a, t);
    break;
  default:
    shortest(c->beta1, a, sizeof a);
    shortest(c->beta2, b, sizeof b);
    shortest(c->tau, t, sizeof t);
    w = snprintf(buf, len, "%s:beta1=%s,beta2=%s,tau=%s", fl_sopt_name(c->kind), a, b, t);
    break;
  }
  if (w < 0 || (size_t)w >= len)
    return fl_err_set(FL_ETOOBIG, "server optimizer spec longer than %zu bytes", len);
  return 0;
}

size_t fl_sopt_num_state(const fl_sopt_config_t *c) {
  switch (c->kind) {
  case FL_SOPT_FEDAVG: return 0;
  case FL_SOPT_FEDAVGM: return 1;
  default: return 2;
  }
}

const char *fl_sopt_state_name(size_t i) {
  return i == 0 ? "m" : "v";
}

void fl_sopt_init(const fl_sopt_config_t *c, float *const *state, size_t num_params) {
  size_t ns = fl_sopt_num_state(c);
  if (ns >= 1) memset(state[0], 0, num_params * sizeof *state[0]);
  if (ns >= 2) {
    const float v0 = (float)(c->tau * c->tau);
    for (size_t i = 0; i < num_params; i++)
      state[1][i] = v0;
  }
}

int fl_sopt_check_state(const fl_sopt_config_t *c, float *const *state, size_t num_params,
                        size_t *bad_vec, size_t *bad_index) {
  size_t ns = fl_sopt_num_state(c);
  for (size_t s = 0; s < ns; s++)
    for (size_t i = 0; i < num_params; i++) {
      float x = state[s][i];
      if (isfinite(x) && (s == 0 || x >= 0)) continue;
      *bad_vec = s;
      *bad_index = i;
      return 0;
    }
  return 1;
}

void fl_sopt_step(const fl_sopt_config_t *c, double eta, float *x, const float *d,
                  float *const *state, size_t n) {
  switch (c->kind) {
  case FL_SOPT_FEDAVG:
    for (size_t i = 0; i < n; i++)
      x[i] += (float)(eta * (double)d[i]);
    return;
  case FL_SOPT_FEDAVGM: {
    float *m = state[0];
    const double beta = c->momentum;
    for (size_t i = 0; i < n; i++) {
      m[i] = (float)(beta * (double)m[i] + (double)d[i]);
      x[i] += (float)(eta * (double)m[i]);
    }
    return;
  }
  default: break;
  }
  float *m = state[0], *v = state[1];
  const double b1 = c->beta1, b2 = c->beta2, tau = c->tau;
  for (size_t i = 0; i < n; i++) {
    const double g = (double)d[i], g2 = g * g, vi = (double)v[i];
    m[i] = (float)(b1 * (double)m[i] + (1 - b1) * g);
    double nv;
    switch (c->kind) {
    case FL_SOPT_FEDADAGRAD: nv = vi + g2; break;
    case FL_SOPT_FEDADAM: nv = b2 * vi + (1 - b2) * g2; break;
    default: /* fedyogi */ nv = vi - (1 - b2) * g2 * (double)((vi > g2) - (vi < g2)); break;
    }
    v[i] = (float)nv;
    x[i] += (float)(eta * (double)m[i] / (sqrt((double)v[i]) + tau));
  }
}
