/* fl_fedeval: see fl_fedeval.h. */
#include "fl_fedeval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"
#include "fl_wire.h"

enum { SLOT_NONE = 0, SLOT_ACCEPTED = 1, SLOT_REJECTED = 2 };

typedef struct {
  char name[FL_WIRE_MAX_METRIC_NAME + 1];
  double value;
} metric_t;

typedef struct {
  uint8_t state;
  uint64_t max_examples, examples;
  double loss;
  size_t n_metrics;
  metric_t metrics[FL_WIRE_MAX_METRICS];
} slot_t;

struct fl_fedeval {
  int open;
  uint32_t round;
  uint32_t *ids; /* (n) ascending */
  slot_t *slots; /* (n) */
  size_t n, cap, accepted;
};

fl_fedeval_t *fl_fedeval_new(void) {
  fl_fedeval_t *f = calloc(1, sizeof *f);
  if (!f) fl_err_set(FL_ENOMEM, "out of memory for federated evaluation");
  return f;
}

void fl_fedeval_destroy(fl_fedeval_t **pf) {
  if (!pf || !*pf) return;
  free((*pf)->ids);
  free((*pf)->slots);
  free(*pf);
  *pf = NULL;
}

int fl_fedeval_begin(fl_fedeval_t *f, uint32_t round, const uint32_t *ids,
                     const uint64_t *max_examples, size_t n) {
  if (n > f->cap) {
    uint32_t *i = realloc(f->ids, n * sizeof *i);
    if (i) f->ids = i;
    slot_t *s = realloc(f->slots, n * sizeof *s);
    if (s) f->slots = s;
    if (!i || !s) return fl_err_set(FL_ENOMEM, "out of memory for %zu evaluators", n);
    f->cap = n;
  }
  memcpy(f->ids, ids, n * sizeof *ids);
  for (size_t k = 0; k < n; k++) {
    f->slots[k].state = SLOT_NONE;
    f->slots[k].max_examples = max_examples[k];
  }
  f->n = n;
  f->accepted = 0;
  f->round = round;
  f->open = 1;
  return 0;
}

int fl_fedeval_is_open(const fl_fedeval_t *f) {
  return f->open;
}
uint32_t fl_fedeval_round(const fl_fedeval_t *f) {
  return f->round;
}
size_t fl_fedeval_sampled(const fl_fedeval_t *f, const uint32_t **ids) {
  if (ids) *ids = f->ids;
  return f->open ? f->n : 0;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

static long slot_of(const fl_fedeval_t *f, uint32_t id) {
  if (!f->open) return -1;
  const uint32_t *p = bsearch(&id, f->ids, f->n, sizeof id, cmp_u32);
  return p ? (long)(p - f->ids) : -1;
}

int fl_fedeval_has_answered(const fl_fedeval_t *f, uint32_t id) {
  long k = slot_of(f, id);
  return k >= 0 && f->slots[k].state != SLOT_NONE;
}

size_t fl_fedeval_accepted(const fl_fedeval_t *f) {
  return f->accepted;
}

/* The content checks of a result from evaluator slot k. */
static int check_content(const fl_fedeval_t *f, long k, uint32_t sender,
                         const Fedlr__EvalResult *r) {
  const slot_t *s = &f->slots[k];
  if (r->num_examples > s->max_examples)
    return fl_err_set(FL_ERANGE,
                      "evaluation result from client %u claims %llu examples, it declared %llu "
                      "for evaluation",
                      sender, (unsigned long long)r->num_examples,
                      (unsigned long long)s->max_examples);
  if (!(fabs(r->loss) <= FL_FEDEVAL_MAX_VALUE))
    return fl_err_set(FL_ERANGE, "evaluation result from client %u: loss %g is beyond %g", sender,
                      r->loss, FL_FEDEVAL_MAX_VALUE);
  for (size_t i = 0; i < r->n_metrics; i++)
    if (!(fabs(r->metrics[i]->value) <= FL_FEDEVAL_MAX_VALUE))
      return fl_err_set(FL_ERANGE,
                        "evaluation result from client %u: metric '%s' = %g is beyond %g", sender,
                        r->metrics[i]->name, r->metrics[i]->value, FL_FEDEVAL_MAX_VALUE);
  return 0;
}

int fl_fedeval_submit(fl_fedeval_t *f, uint32_t sender, const Fedlr__EvalResult *r, int *content) {
  *content = 0;
  if (!f->open || r->round != f->round)
    return fl_err_set(FL_ESTALE,
                      "evaluation result from client %u is for round %u; %s%u is being evaluated",
                      sender, r->round, f->open ? "round " : "no round (last ", f->round);
  if (r->client_id != sender)
    return fl_err_set(FL_EPROTO, "evaluation result from client %u claims to be from client %u",
                      sender, r->client_id);
  long k = slot_of(f, sender);
  if (k < 0)
    return fl_err_set(FL_EPROTO, "client %u was not asked to evaluate round %u", sender, f->round);
  slot_t *s = &f->slots[k];
  if (s->state != SLOT_NONE)
    return fl_err_set(FL_ESTALE, "a second evaluation result from client %u in round %u", sender,
                      f->round);
  *content = 1;
  int rc = check_content(f, k, sender, r);
  if (rc) {
    s->state = SLOT_REJECTED;
    return rc;
  }
  s->state = SLOT_ACCEPTED;
  s->examples = r->num_examples;
  s->loss = r->loss;
  s->n_metrics = r->n_metrics; /* at most FL_WIRE_MAX_METRICS: fl_wire_decode checked */
  for (size_t i = 0; i < r->n_metrics; i++) {
    snprintf(s->metrics[i].name, sizeof s->metrics[i].name, "%s", r->metrics[i]->name);
    s->metrics[i].value = r->metrics[i]->value;
  }
  f->accepted++;
  return 0;
}

/* The example-weighted mean of metric `name` over the accepted results
 * that report it, summed in slot (ascending id) order; NAN if none. */
static double weighted_mean(const fl_fedeval_t *f, const char *name) {
  double sum = 0, n = 0;
  for (size_t k = 0; k < f->n; k++) {
    const slot_t *s = &f->slots[k];
    if (s->state != SLOT_ACCEPTED) continue;
    for (size_t i = 0; i < s->n_metrics; i++)
      if (!strcmp(s->metrics[i].name, name)) {
        sum += s->metrics[i].value * (double)s->examples;
        n += (double)s->examples;
        break;
      }
  }
  return n > 0 ? sum / n : NAN;
}

static int cmp_name(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The distinct metric names of the accepted results but "accuracy" (and
 * "loss", "examples", "clients", whose keys fed_eval_* already has),
 * sorted, at most FL_FEDEVAL_MAX_NAMES (the smallest). */
static size_t distinct_names(const fl_fedeval_t *f, const char **names) {
  size_t n = 0;
  for (size_t k = 0; k < f->n; k++) {
    const slot_t *s = &f->slots[k];
    for (size_t i = 0; s->state == SLOT_ACCEPTED && i < s->n_metrics; i++) {
      const char *nm = s->metrics[i].name;
      /* accuracy has its own field; the others would repeat a key */
      if (!strcmp(nm, "accuracy") || !strcmp(nm, "loss") || !strcmp(nm, "examples") ||
          !strcmp(nm, "clients"))
        continue;
      size_t j = 0;
      while (j < n && strcmp(names[j], nm) != 0)
        j++;
      if (j < n) continue;
      if (n < FL_FEDEVAL_MAX_NAMES) {
        names[n++] = nm;
        qsort(names, n, sizeof *names, cmp_name);
      } else if (strcmp(nm, names[n - 1]) < 0) {
        names[n - 1] = nm; /* keep the smallest names, whatever the arrival order */
        qsort(names, n, sizeof *names, cmp_name);
      }
    }
  }
  return n;
}

void fl_fedeval_end(fl_fedeval_t *f, fl_round_metrics_t *m, char *extra, size_t cap) {
  double loss = 0;
  uint64_t examples = 0;
  uint32_t clients = 0;
  for (size_t k = 0; k < f->n; k++) {
    const slot_t *s = &f->slots[k];
    if (s->state != SLOT_ACCEPTED) continue;
    loss += s->loss * (double)s->examples;
    examples += s->examples;
    clients++;
  }
  m->fed_eval_clients = clients;
  m->fed_eval_examples = examples;
  m->fed_eval_loss = examples ? loss / (double)examples : NAN;
  m->fed_eval_accuracy = weighted_mean(f, "accuracy");
  const char *names[FL_FEDEVAL_MAX_NAMES];
  double values[FL_FEDEVAL_MAX_NAMES];
  size_t nn = fl_fedeval_named(f, names, values, FL_FEDEVAL_MAX_NAMES), at = 0;
  if (cap) extra[0] = '\0';
  for (size_t i = 0; i < nn && at < cap; i++)
    at += (size_t)snprintf(extra + at, cap - at, "%s\"fed_eval_%s\":%.17g", at ? "," : "", names[i],
                           values[i]);
  if (at >= cap && cap) extra[0] = '\0'; /* never a truncated member */
  f->open = 0;
}

size_t fl_fedeval_named(const fl_fedeval_t *f, const char **names, double *values, size_t cap) {
  const char *all[FL_FEDEVAL_MAX_NAMES];
  size_t n = distinct_names(f, all);
  if (n > cap) n = cap;
  for (size_t i = 0; i < n; i++) {
    names[i] = all[i];
    values[i] = weighted_mean(f, all[i]);
  }
  return n;
}
