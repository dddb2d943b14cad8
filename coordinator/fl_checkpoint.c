/* fl_checkpoint: see fl_checkpoint.h. */
#include "fl_checkpoint.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"
#include "fl_safetensors.h"

/* Checkpoint metadata keys; doubles are written as hex floats (%a) so they
 * come back bit for bit. */
enum {
  CK_ROUNDS,
  CK_SEED,
  CK_BEST,
  CK_SCALE,
  CK_BAD,
  CK_COOL,
  CK_ACC,
  CK_TARGET,
  CK_QUARANTINE,
  CK_NUM
};
static const char *const ck_keys[CK_NUM] = {
    [CK_ROUNDS] = "fedlr_rounds_done",   [CK_SEED] = "fedlr_seed",
    [CK_BEST] = "fedlr_plateau_best",    [CK_SCALE] = "fedlr_plateau_scale",
    [CK_BAD] = "fedlr_plateau_bad",      [CK_COOL] = "fedlr_plateau_cool",
    [CK_ACC] = "fedlr_best_accuracy",    [CK_TARGET] = "fedlr_target_reached",
    [CK_QUARANTINE] = "fedlr_quarantine"};

/* Writes the quarantine still running as "ID:THROUGH" items,
 * comma-separated, ascending ids. FL_ETOOBIG if it does not fit `cap`. */
static int quarantine_format(const fl_engine_t *e, char *buf, size_t cap) {
  size_t n = fl_engine_quarantine_list(e, NULL, 0), at = 0;
  uint32_t *q = n ? malloc(2 * n * sizeof *q) : NULL;
  if (n && !q) return fl_err_set(FL_ENOMEM, "out of memory writing the quarantine");
  fl_engine_quarantine_list(e, q, n);
  buf[0] = '\0';
  int rc = 0;
  for (size_t k = 0; k < n && !rc; k++) {
    int w = snprintf(buf + at, cap - at, "%s%u:%u", at ? "," : "", q[2 * k], q[2 * k + 1]);
    if (w < 0 || (size_t)w >= cap - at)
      rc = fl_err_set(FL_ETOOBIG, "too many quarantined clients to checkpoint (%zu bytes)", cap);
    else
      at += (size_t)w;
  }
  free(q);
  return rc;
}

int fl_checkpoint_save(const fl_engine_t *e, const char *path) {
  if (fl_engine_round_open(e)) return fl_err_set(FL_ESTATE, "cannot checkpoint inside a round");
  const fl_engine_config_t *c = fl_engine_config(e);
  fl_engine_state_t es;
  fl_engine_get_state(e, &es);
  char v[CK_NUM][40];
  char *quarantine = malloc(FL_SAFETENSORS_META_VALUE);
  if (!quarantine) return fl_err_set(FL_ENOMEM, "out of memory writing %s", path);
  int rc = quarantine_format(e, quarantine, FL_SAFETENSORS_META_VALUE);
  snprintf(v[CK_ROUNDS], sizeof v[0], "%u", es.rounds_done);
  snprintf(v[CK_SEED], sizeof v[0], "%llu", (unsigned long long)c->seed);
  snprintf(v[CK_BEST], sizeof v[0], "%a", es.plateau.best);
  snprintf(v[CK_SCALE], sizeof v[0], "%a", es.plateau.scale);
  snprintf(v[CK_BAD], sizeof v[0], "%u", es.plateau.num_bad);
  snprintf(v[CK_COOL], sizeof v[0], "%u", es.plateau.cooldown_left);
  snprintf(v[CK_ACC], sizeof v[0], "%a", es.best_accuracy);
  snprintf(v[CK_TARGET], sizeof v[0], "%d", es.target_reached);
  const char *meta[2 * CK_NUM + 1];
  for (int i = 0; i < CK_NUM; i++) {
    meta[2 * i] = ck_keys[i];
    meta[2 * i + 1] = i == CK_QUARANTINE ? quarantine : v[i];
  }
  meta[2 * CK_NUM] = NULL;
  if (!rc) rc = fl_safetensors_save(path, &c->model, fl_engine_weights(e), meta);
  free(quarantine);
  return rc;
}

/* The run state a checkpoint restores, checked before any of it is used. */
typedef struct {
  uint32_t rounds_done;
  fl_plateau_t plateau;
  double best_accuracy;
  int target_reached;
  uint32_t *quarantine; /* (2 * num_quarantine) id, through; owned */
  size_t num_quarantine;
} ck_state_t;

static int ck_bad(int rc, const char *path, const char *key, const char *txt, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Parses CK_QUARANTINE: "" or "ID:THROUGH,..." with ascending ids below
 * FL_ENGINE_MAX_CLIENTS and each THROUGH in (rounds_done, rounds_done +
 * quarantine_rounds]. */
static int ck_quarantine(const fl_engine_t *e, const char *path, const char *txt, ck_state_t *st) {
  size_t n = txt[0] ? 1 : 0;
  for (const char *p = txt; *p; p++)
    n += *p == ',';
  st->quarantine = n ? malloc(2 * n * sizeof *st->quarantine) : NULL;
  if (n && !st->quarantine) return fl_err_set(FL_ENOMEM, "out of memory restoring %s", path);
  const char *p = txt;
  for (size_t k = 0; k < n; k++) {
    char *end;
    if (*p < '0' || *p > '9') goto bad;
    unsigned long long id = strtoull(p, &end, 10);
    if (*end != ':' || end[1] < '0' || end[1] > '9') goto bad;
    unsigned long long th = strtoull(end + 1, &end, 10);
    if ((*end != ',' && *end != '\0') || id >= FL_ENGINE_MAX_CLIENTS || th <= st->rounds_done ||
        th > (unsigned long long)st->rounds_done + fl_engine_config(e)->quarantine_rounds ||
        (k && id <= st->quarantine[2 * k - 2]))
      goto bad;
    st->quarantine[2 * k] = (uint32_t)id;
    st->quarantine[2 * k + 1] = (uint32_t)th;
    p = *end ? end + 1 : end;
  }
  st->num_quarantine = n;
  return 0;
bad:
  return ck_bad(FL_EFORMAT, path, ck_keys[CK_QUARANTINE], txt,
                "must be ID:ROUND items, ascending ids, each round after the rounds done and at "
                "most --quarantine (%u) after them",
                fl_engine_config(e)->quarantine_rounds);
}

/* Decimal digits only, as fl_checkpoint_save writes them (strtoull alone would
 * take a sign or spaces). 0, or -1 if txt is not such a number. */
static int ck_uint(const char *txt, uint64_t *out) {
  char *end;
  if (*txt < '0' || *txt > '9') return -1;
  errno = 0;
  *out = strtoull(txt, &end, 10);
  return *end || errno == ERANGE ? -1 : 0;
}

/* A number as strtod reads it (hex floats, "inf", "nan" included); -1 if
 * txt is not one, or a finite number beyond the double range. */
static int ck_double(const char *txt, double *out) {
  char *end;
  errno = 0;
  *out = strtod(txt, &end);
  return end == txt || *end || (errno == ERANGE && isinf(*out)) ? -1 : 0;
}

/* Refuses value `txt` of checkpoint key `key`: what it is, what is allowed
 * (the format), and what to make of it. */
static int ck_bad(int rc, const char *path, const char *key, const char *txt, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int ck_bad(int rc, const char *path, const char *key, const char *txt, const char *fmt,
                  ...) {
  char allowed[320];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(allowed, sizeof allowed, fmt, ap);
  va_end(ap);
  /* A hex float (as saved) is also shown in decimal. */
  char dec[40] = "";
  double d;
  if (strstr(txt, "0x") && ck_double(txt, &d) == 0) snprintf(dec, sizeof dec, " (%g)", d);
  return fl_err_set(rc,
                    "checkpoint %s: %s = '%s'%s: %s; the checkpoint is damaged or not from "
                    "this run (resume from an intact one, or start afresh)",
                    path, key, txt, dec, allowed);
}

/* 1 if `scale` is a multiplier the plateau schedule reaches in at most
 * `max_k` reductions: factor^k as fl_plateau_observe() computes it (1 times
 * factor, k times, in double). The floor `min` applies to the rate, not to
 * the scale, so it does not limit k; a run reduces at most once per
 * evaluation, and evaluates at most once per round. */
static int ck_scale_reachable(double scale, double factor, uint32_t max_k) {
  double s = 1;
  for (uint32_t k = 0; k < max_k && s > scale && s > 0; k++)
    s *= factor;
  return s == scale;
}

/* Parses and checks the run state in `meta` against this engine's config:
 * every fedlr_* key present (and no other), each value one this run can
 * have produced. */
static int ck_state(const fl_engine_t *e, const char *path, const fl_safetensors_meta_t *meta,
                    ck_state_t *st) {
  const fl_engine_config_t *c = fl_engine_config(e);
  const fl_sched_t *s = &c->sched;
  const char *v[CK_NUM] = {0};
  int have_model = 0;
  for (size_t i = 0; i < meta->n; i++) {
    const char *k = meta->e[i].key;
    int j = 0;
    while (j < CK_NUM && strcmp(k, ck_keys[j]) != 0)
      j++;
    if (j < CK_NUM)
      v[j] = meta->e[i].value;
    else if (!strcmp(k, "model")) /* fl_safetensors checked it is this run's */
      have_model = 1;
    else if (!strncmp(k, "fedlr_", 6))
      return fl_err_set(FL_EFORMAT,
                        "checkpoint %s: unknown key '%s' (written by a newer fedlr?): it "
                        "cannot be resumed faithfully",
                        path, k);
  }
  for (int j = 0; j < CK_NUM; j++)
    if (!v[j])
      return fl_err_set(FL_EFORMAT,
                        "checkpoint %s: no %s (written by an older fedlr, or not a fedlr "
                        "checkpoint)",
                        path, ck_keys[j]);
  if (!have_model)
    return fl_err_set(FL_EFORMAT, "checkpoint %s: no model (not a fedlr checkpoint)", path);

  uint64_t u, bad, cool;
  if (ck_uint(v[CK_SEED], &u) < 0)
    return ck_bad(FL_EFORMAT, path, ck_keys[CK_SEED], v[CK_SEED], "not a whole number");
  if (u != c->seed)
    return fl_err_set(FL_EINVAL, "checkpoint %s is for seed %s, this run uses seed %llu", path,
                      v[CK_SEED], (unsigned long long)c->seed);
  if (ck_uint(v[CK_ROUNDS], &u) < 0 || u > c->rounds)
    return ck_bad(FL_ERANGE, path, ck_keys[CK_ROUNDS], v[CK_ROUNDS],
                  "must be a whole number of rounds in [0, %u] (this run's round limit)",
                  c->rounds);
  st->rounds_done = (uint32_t)u;

  double acc;
  if (ck_double(v[CK_ACC], &acc) < 0 || !(acc >= 0 && acc <= 1))
    return ck_bad(FL_ERANGE, path, ck_keys[CK_ACC], v[CK_ACC], "must be an accuracy in [0, 1]");
  st->best_accuracy = acc;
  if (ck_uint(v[CK_TARGET], &u) < 0 || u > 1)
    return ck_bad(FL_ERANGE, path, ck_keys[CK_TARGET], v[CK_TARGET], "must be 0 or 1");
  if (u && !(c->target_accuracy > 0))
    return ck_bad(FL_ERANGE, path, ck_keys[CK_TARGET], v[CK_TARGET],
                  "this run has no target accuracy, so it cannot have reached one");
  if (u && !(acc >= c->target_accuracy))
    return ck_bad(FL_ERANGE, path, ck_keys[CK_TARGET], v[CK_TARGET],
                  "its best accuracy %g (%s) is below this run's target %g", acc, ck_keys[CK_ACC],
                  c->target_accuracy);
  st->target_reached = (int)u;
  int qrc = ck_quarantine(e, path, v[CK_QUARANTINE], st);
  if (qrc) return qrc;

  /* The plateau state (fl_sched.h): best is +inf until an evaluation
   * improves it, then finite; the scale is a power of the factor; num_bad
   * never exceeds the patience, nor cooldown_left the cooldown, and a
   * running cooldown keeps num_bad at 0. Other schedules never leave
   * fl_plateau_init()'s state. */
  fl_plateau_t *pl = &st->plateau;
  const int plateau = s->kind == FL_SCHED_PLATEAU;
  if (ck_double(v[CK_BEST], &pl->best) < 0 || !(isfinite(pl->best) || pl->best == INFINITY))
    return ck_bad(FL_ERANGE, path, ck_keys[CK_BEST], v[CK_BEST],
                  "must be a finite loss, or inf before the first evaluation");
  if (!plateau && pl->best != INFINITY)
    return ck_bad(FL_ERANGE, path, ck_keys[CK_BEST], v[CK_BEST],
                  "must be inf: this run's schedule is not plateau");
  if (ck_double(v[CK_SCALE], &pl->scale) < 0 ||
      !ck_scale_reachable(pl->scale, s->factor, plateau ? st->rounds_done : 0))
    return plateau ? ck_bad(FL_ERANGE, path, ck_keys[CK_SCALE], v[CK_SCALE],
                            "must be in (0, 1], a power factor^k of the plateau factor %g with "
                            "k <= %u (at most one reduction per round done)",
                            s->factor, st->rounds_done)
                   : ck_bad(FL_ERANGE, path, ck_keys[CK_SCALE], v[CK_SCALE],
                            "must be 1: this run's schedule is not plateau");
  if (ck_uint(v[CK_COOL], &cool) < 0 || cool > (plateau ? s->cooldown : 0))
    return ck_bad(FL_ERANGE, path, ck_keys[CK_COOL], v[CK_COOL],
                  "must be a whole number of evaluations in [0, %u] (%s)",
                  plateau ? s->cooldown : 0,
                  plateau ? "the schedule's cooldown" : "this run's schedule is not plateau");
  if (ck_uint(v[CK_BAD], &bad) < 0 || bad > (plateau ? s->patience : 0))
    return ck_bad(FL_ERANGE, path, ck_keys[CK_BAD], v[CK_BAD],
                  "must be a whole number of evaluations in [0, %u] (%s)",
                  plateau ? s->patience : 0,
                  plateau ? "the schedule's patience" : "this run's schedule is not plateau");
  if (bad && cool)
    return ck_bad(FL_ERANGE, path, ck_keys[CK_BAD], v[CK_BAD],
                  "must be 0 while a cooldown runs (%s = %s)", ck_keys[CK_COOL], v[CK_COOL]);
  pl->num_bad = (uint32_t)bad;
  pl->cooldown_left = (uint32_t)cool;
  return 0;
}

/* Checks checkpoint weights w (num_params): every one finite and within
 * FL_ENGINE_MAX_WEIGHT; the first that is not is named. */
static int ck_weights(const fl_engine_t *e, const char *path, const float *w) {
  const fl_model_spec_t *m = &fl_engine_config(e)->model;
  size_t nt = fl_model_num_tensors(m);
  for (size_t t = 0; t < nt; t++) {
    fl_tensor_info_t ti;
    fl_model_tensor(m, t, &ti);
    for (size_t i = 0; i < ti.count; i++) {
      float x = w[ti.offset + i];
      if (fabsf(x) <= (float)FL_ENGINE_MAX_WEIGHT) continue;
      return fl_err_set(isfinite(x) ? FL_ERANGE : FL_ENONFINITE,
                        "checkpoint %s: weight %zu of tensor '%s' is %.8g: weights must be "
                        "finite and within +-%.0f (FL_ENGINE_MAX_WEIGHT); the checkpoint is "
                        "damaged or its run diverged (resume from an intact one, or start afresh)",
                        path, i, ti.name, (double)x, FL_ENGINE_MAX_WEIGHT);
    }
  }
  return 0;
}

int fl_checkpoint_load(fl_engine_t *e, const char *path) {
  if (fl_engine_round_open(e)) return fl_err_set(FL_ESTATE, "cannot restore inside a round");
  const fl_model_spec_t *model = &fl_engine_config(e)->model;
  const size_t n = model->num_params;
  float *w = malloc(n * sizeof *w); /* (num_params) staged: the engine changes only at the end */
  fl_safetensors_meta_t *meta = malloc(sizeof *meta);
  ck_state_t st = {0};
  int rc = w && meta ? 0 : fl_err_set(FL_ENOMEM, "out of memory restoring %s", path);
  if (rc) goto out;
  /* One read of the file: the weights, the metadata and the checksum over
   * both, so what is checked is what was checksummed. */
  if ((rc = fl_safetensors_load_all(path, model, w, FL_SAFETENSORS_NEED_CHECKSUM, meta))) goto out;
  if ((rc = ck_state(e, path, meta, &st))) goto out;
  if ((rc = ck_weights(e, path, w))) goto out;
  fl_engine_state_t es = {st.rounds_done, st.plateau, st.best_accuracy, st.target_reached};
  rc = fl_engine_set_state(e, &es, w, st.quarantine, st.num_quarantine);
out:
  free(st.quarantine);
  free(w);
  free(meta);
  return rc;
}
