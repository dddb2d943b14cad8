/* fl_sweep_grid: see fl_sweep_grid.h. */
#include "fl_sweep_grid.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"

/* Keys a sweep does not vary, and why. */
static const struct {
  const char *key, *why;
} fixed_keys[] = {
    {"dataset", "the sweep loads its data once for every run"},
    {"data-dir", "the sweep loads its data once for every run"},
    {"test-data", "the sweep loads its data once for every run"},
    {"seed", "give the seeds with --seeds"},
    {"metrics", "each run's metrics go to runs/<id>/metrics.jsonl under --out"},
    {"out", "each run's outputs go to runs/<id>/ under --out"},
    {"workers", "--workers is the sweep's pool of threads, shared by its runs"},
    {"quiet", "--quiet is the sweep's"},
};

static int copy_str(char **out, const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (!p) return fl_err_set(FL_ENOMEM, "out of memory");
  memcpy(p, s, n);
  p[n] = '\0';
  *out = p;
  return 0;
}

int fl_grid_add_values(fl_grid_t *g, const fl_config_t *base, const char *name, const char *values,
                       const char *where) {
  const char *key = fl_config_key(name);
  if (!key)
    return fl_err_set(FL_EINVAL, "%s %s: '%s' is not a fedlr-sim key (see fedlr-sim --help)", where,
                      name, name);
  for (size_t i = 0; i < sizeof fixed_keys / sizeof fixed_keys[0]; i++)
    if (!strcmp(key, fixed_keys[i].key))
      return fl_err_set(FL_EINVAL, "%s %s: a sweep does not vary --%s (%s)", where, name, key,
                        fixed_keys[i].why);
  for (size_t d = 0; d < g->num_dims; d++)
    if (!strcmp(g->dims[d].name, key))
      return fl_err_set(FL_EINVAL, "%s %s: '%s' is already a dimension of the grid", where, name,
                        key);
  if (g->num_dims == FL_GRID_MAX_DIMS)
    return fl_err_set(FL_EINVAL, "%s %s: more than %d grid dimensions", where, name,
                      FL_GRID_MAX_DIMS);
  fl_grid_dim_t dim = {key, 0, NULL};
  int rc = 0;
  for (const char *p = values;; p++) {
    const char *bar = strchr(p, '|');
    size_t n = bar ? (size_t)(bar - p) : strlen(p);
    /* Blanks around a value are not part of it (an INI line "a | b"). */
    while (n && isspace((unsigned char)*p))
      p++, n--;
    while (n && isspace((unsigned char)p[n - 1]))
      n--;
    if (n == 0) {
      rc = fl_err_set(FL_EINVAL, "%s %s=%s: an empty value (values are separated by '|')", where,
                      key, values);
      break;
    }
    char *v = NULL;
    if ((rc = copy_str(&v, p, n))) break;
    for (size_t i = 0; i < dim.num_values && !rc; i++)
      if (!strcmp(dim.values[i], v))
        rc = fl_err_set(FL_EINVAL, "%s %s=%s: value '%s' is given twice", where, key, values, v);
    if (!rc && dim.num_values == FL_GRID_MAX_VALUES)
      rc = fl_err_set(FL_EINVAL, "%s %s: more than %d values", where, key, FL_GRID_MAX_VALUES);
    fl_config_t tmp = *base;
    if (!rc && fl_config_set(&tmp, FL_PROG_SIM, key, v) != 0) {
      char inner[400];
      snprintf(inner, sizeof inner, "%s", fl_err_msg());
      rc = fl_err_set(FL_EINVAL, "%s %s=%s: value '%s': %s", where, key, values, v, inner);
    }
    char **nv = rc ? NULL : realloc(dim.values, (dim.num_values + 1) * sizeof *nv);
    if (!rc && !nv) rc = fl_err_set(FL_ENOMEM, "out of memory");
    if (rc) {
      free(v);
      break;
    }
    dim.values = nv;
    dim.values[dim.num_values++] = v;
    if (!bar) break;
    p = bar;
  }
  if (rc) {
    for (size_t i = 0; i < dim.num_values; i++)
      free(dim.values[i]);
    free(dim.values);
    return rc;
  }
  g->dims[g->num_dims++] = dim;
  return 0;
}

int fl_grid_add(fl_grid_t *g, const fl_config_t *base, const char *spec, const char *where) {
  const char *eq = strchr(spec, '=');
  if (!eq || eq == spec)
    return fl_err_set(FL_EINVAL, "%s %s: expected NAME=V1|V2|... (e.g. lr=0.01|0.03|0.1)", where,
                      spec);
  char name[64];
  size_t n = (size_t)(eq - spec);
  if (n >= sizeof name)
    return fl_err_set(FL_EINVAL, "%s %.*s...: the name is too long", where, 32, spec);
  memcpy(name, spec, n);
  name[n] = '\0';
  return fl_grid_add_values(g, base, name, eq + 1, where);
}

/* One decimal seed at *p (digits only), advancing *p. */
static int parse_seed(const char **p, uint64_t *out) {
  if (!isdigit((unsigned char)**p)) return -1;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(*p, &end, 10);
  if (errno) return -1;
  *p = end;
  *out = v;
  return 0;
}

static int add_seed(fl_grid_t *g, uint64_t s, const char *spec) {
  for (size_t i = 0; i < g->num_seeds; i++)
    if (g->seeds[i] == s)
      return fl_err_set(FL_EINVAL, "--seeds %s: seed %llu is given twice", spec,
                        (unsigned long long)s);
  if (g->num_seeds == FL_GRID_MAX_SEEDS)
    return fl_err_set(FL_EINVAL, "--seeds %s: more than %d seeds", spec, FL_GRID_MAX_SEEDS);
  uint64_t *n = realloc(g->seeds, (g->num_seeds + 1) * sizeof *n);
  if (!n) return fl_err_set(FL_ENOMEM, "out of memory");
  g->seeds = n;
  g->seeds[g->num_seeds++] = s;
  return 0;
}

int fl_grid_set_seeds(fl_grid_t *g, const char *spec) {
  free(g->seeds);
  g->seeds = NULL;
  g->num_seeds = 0;
  const char *p = spec;
  int rc = 0;
  while (!rc) {
    uint64_t a, b;
    const char *at = p;
    if (parse_seed(&p, &a) != 0) {
      rc = fl_err_set(FL_EINVAL,
                      "--seeds %s: '%s' is not a seed (expected A-B, A,B,C or a mix such as "
                      "1-3,10)",
                      spec, at);
      break;
    }
    b = a;
    if (*p == '-') {
      p++;
      if (parse_seed(&p, &b) != 0 || b < a) {
        rc = fl_err_set(FL_EINVAL, "--seeds %s: the range at '%s' needs A-B with A <= B", spec, at);
        break;
      }
      if (b - a >= FL_GRID_MAX_SEEDS) {
        rc = fl_err_set(FL_EINVAL, "--seeds %s: more than %d seeds", spec, FL_GRID_MAX_SEEDS);
        break;
      }
    }
    for (uint64_t s = a; !rc; s++) {
      rc = add_seed(g, s, spec);
      if (s == b) break;
    }
    if (rc || !*p) break;
    if (*p != ',') {
      rc = fl_err_set(FL_EINVAL, "--seeds %s: unexpected '%s'", spec, p);
      break;
    }
    p++;
  }
  if (rc) {
    free(g->seeds);
    g->seeds = NULL;
    g->num_seeds = 0;
  }
  return rc;
}

size_t fl_grid_num_configs(const fl_grid_t *g) {
  size_t n = 1;
  for (size_t d = 0; d < g->num_dims; d++) {
    if (n > FL_GRID_MAX_CONFIGS) return FL_GRID_MAX_CONFIGS + 1;
    n *= g->dims[d].num_values;
  }
  return n;
}

size_t fl_grid_num_seeds(const fl_grid_t *g) {
  return g->seeds ? g->num_seeds : 1;
}

const char *fl_grid_value(const fl_grid_t *g, size_t k, size_t d) {
  /* The last dimension varies fastest. */
  for (size_t e = g->num_dims; e-- > d + 1;)
    k /= g->dims[e].num_values;
  return g->dims[d].values[k % g->dims[d].num_values];
}

void fl_grid_label(const fl_grid_t *g, size_t k, char *buf, size_t cap) {
  size_t len = 0;
  buf[0] = '\0';
  if (!g->num_dims) {
    snprintf(buf, cap, "base");
    return;
  }
  for (size_t d = 0; d < g->num_dims && len < cap; d++) {
    int n = snprintf(buf + len, cap - len, "%s%s=%s", d ? " " : "", g->dims[d].name,
                     fl_grid_value(g, k, d));
    if (n < 0) break;
    len += (size_t)n;
  }
}

int fl_grid_config(const fl_grid_t *g, const fl_config_t *base, size_t k, size_t s,
                   fl_config_t *out) {
  fl_config_t c = *base;
  char label[512];
  fl_grid_label(g, k, label, sizeof label);
  for (size_t d = 0; d < g->num_dims; d++)
    if (fl_config_set(&c, FL_PROG_SIM, g->dims[d].name, fl_grid_value(g, k, d)) != 0) {
      char inner[400];
      snprintf(inner, sizeof inner, "%s", fl_err_msg());
      return fl_err_set(FL_EINVAL, "configuration %s: %s", label, inner);
    }
  if (g->seeds) c.seed = g->seeds[s];
  if (fl_config_validate(&c, FL_PROG_SIM) != 0) {
    char inner[400];
    snprintf(inner, sizeof inner, "%s", fl_err_msg());
    return fl_err_set(FL_EINVAL, "configuration %s: %s", label, inner);
  }
  *out = c;
  return 0;
}

int fl_grid_check(const fl_grid_t *g, const fl_config_t *base) {
  size_t n = fl_grid_num_configs(g);
  if (n > FL_GRID_MAX_CONFIGS)
    return fl_err_set(FL_EINVAL, "the grid has more than %d configurations", FL_GRID_MAX_CONFIGS);
  if (n * fl_grid_num_seeds(g) > FL_GRID_MAX_CONFIGS)
    return fl_err_set(FL_EINVAL, "the grid's %zu configurations x %zu seeds exceed %d runs", n,
                      fl_grid_num_seeds(g), FL_GRID_MAX_CONFIGS);
  fl_config_t c;
  for (size_t k = 0; k < n; k++) {
    int rc = fl_grid_config(g, base, k, 0, &c);
    if (rc) return rc;
  }
  return 0;
}

void fl_grid_free(fl_grid_t *g) {
  for (size_t d = 0; d < g->num_dims; d++) {
    for (size_t i = 0; i < g->dims[d].num_values; i++)
      free(g->dims[d].values[i]);
    free(g->dims[d].values);
  }
  free(g->seeds);
  memset(g, 0, sizeof *g);
}
