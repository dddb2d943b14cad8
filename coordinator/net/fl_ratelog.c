/* fl_ratelog: see fl_ratelog.h. */
#include "fl_ratelog.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *name;
  unsigned left;  /* lines this reason may still write in the window */
  uint64_t held;  /* events left out (or only counted) in the window */
  uint64_t total; /* events since the start */
} reason_t;

struct fl_ratelog {
  FILE *out;
  char prefix[64];
  double window_s, t0;
  unsigned per_window;
  int n;
  reason_t r[];
};

fl_ratelog_t *fl_ratelog_new(FILE *out, const char *prefix, const char *const *reasons, int n,
                             double window_s, unsigned per_window) {
  if (n < 1) return NULL;
  fl_ratelog_t *l = calloc(1, sizeof *l + (size_t)n * sizeof l->r[0]);
  if (!l) return NULL;
  l->out = out;
  snprintf(l->prefix, sizeof l->prefix, "%s", prefix ? prefix : "");
  l->window_s = window_s;
  l->per_window = per_window;
  l->t0 = -1e300; /* the first event starts a window */
  l->n = n;
  for (int i = 0; i < n; i++) {
    l->r[i].name = reasons[i];
    l->r[i].left = per_window;
  }
  return l;
}

void fl_ratelog_destroy(fl_ratelog_t **pl) {
  if (!pl || !*pl) return;
  free(*pl);
  *pl = NULL;
}

void fl_ratelog_tick(fl_ratelog_t *l, double now, int force) {
  if (!force && now - l->t0 < l->window_s) return;
  double dt = now - l->t0;
  for (int i = 0; i < l->n; i++) {
    reason_t *r = &l->r[i];
    if (r->held && l->t0 > -1e299)
      fprintf(l->out,
              "%s%llu more '%s' events in the last %.0f s not logged (at most %u lines "
              "per %.0f s each)\n",
              l->prefix, (unsigned long long)r->held, r->name, dt, l->per_window, l->window_s);
    r->held = 0;
    r->left = l->per_window;
  }
  l->t0 = now;
}

static reason_t *take(fl_ratelog_t *l, int reason, double now) {
  if (reason < 0 || reason >= l->n) reason = l->n - 1;
  fl_ratelog_tick(l, now, 0);
  return &l->r[reason];
}

int fl_ratelog_would_log(fl_ratelog_t *l, int reason, double now) {
  return take(l, reason, now)->left > 0;
}

void fl_ratelog_count(fl_ratelog_t *l, int reason, double now) {
  reason_t *r = take(l, reason, now);
  r->held++;
  r->total++;
}

int fl_ratelog_printf(fl_ratelog_t *l, int reason, double now, const char *fmt, ...) {
  reason_t *r = take(l, reason, now);
  r->total++;
  if (r->left == 0) {
    r->held++;
    return 0;
  }
  r->left--;
  /* One fputs per line, so lines of several writers never interleave. */
  char line[2048];
  int at = snprintf(line, sizeof line, "%s", l->prefix);
  if (at < 0 || (size_t)at >= sizeof line) at = 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + at, sizeof line - (size_t)at - 1, fmt, ap);
  va_end(ap);
  size_t len = strlen(line);
  line[len] = '\n';
  line[len + 1] = '\0';
  fputs(line, l->out);
  return 1;
}

uint64_t fl_ratelog_total(const fl_ratelog_t *l, int reason) {
  return reason >= 0 && reason < l->n ? l->r[reason].total : 0;
}
