/* fl_checkpoint: see fl_checkpoint.h. */
#include "fl_checkpoint.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_agg.h"
#include "fl_error.h"
#include "fl_optim.h"
#include "fl_safetensors.h"
#include "fl_sched.h"
#include "fl_server_optim.h"

/* Checkpoint metadata keys of the run state; doubles are written as hex
 * floats (%a) so they come back bit for bit. */
enum {
  CK_ROUNDS,
  CK_BEST,
  CK_SCALE,
  CK_BAD,
  CK_COOL,
  CK_ACC,
  CK_TARGET,
  CK_QUARANTINE,
  CK_LIMIT, /* the round limit (--rounds): the identity's one allowed change */
  /* The server schedule's plateau state (--server-schedule plateau). A
   * checkpoint of a fedlr before server optimizers has none: its run's
   * server schedule was const, so they read as fl_plateau_init()'s. */
  CK_SBEST,
  CK_SSCALE,
  CK_SBAD,
  CK_SCOOL,
  CK_NUM
};
static const char *const ck_keys[CK_NUM] = {[CK_ROUNDS] = "fedlr_rounds_done",
                                            [CK_BEST] = "fedlr_plateau_best",
                                            [CK_SCALE] = "fedlr_plateau_scale",
                                            [CK_BAD] = "fedlr_plateau_bad",
                                            [CK_COOL] = "fedlr_plateau_cool",
                                            [CK_ACC] = "fedlr_best_accuracy",
                                            [CK_TARGET] = "fedlr_target_reached",
                                            [CK_QUARANTINE] = "fedlr_quarantine",
                                            [CK_LIMIT] = "fedlr_rounds",
                                            [CK_SBEST] = "fedlr_server_plateau_best",
                                            [CK_SSCALE] = "fedlr_server_plateau_scale",
                                            [CK_SBAD] = "fedlr_server_plateau_bad",
                                            [CK_SCOOL] = "fedlr_server_plateau_cool"};
/* 1 for the keys a checkpoint of an older fedlr may lack. */
static int ck_optional(int k) {
  return k == CK_LIMIT || k >= CK_SBEST;
}

/* The run's identity (fl_checkpoint.h): one key per setting, its flag, and
 * how its value is written: text compared as is, a whole number, or a
 * double as a hex float compared bit for bit. */
typedef enum { ID_TEXT, ID_UINT, ID_REAL } id_kind_t;
enum {
  ID_SEED,
  ID_LR,
  ID_LR0,
  ID_SCHEDULE,
  ID_LOCAL_SCHEDULE,
  ID_LOCAL_UNIT,
  ID_OPTIMIZER,
  ID_LOCAL_EPOCHS,
  ID_BATCH_SIZE,
  ID_FRACTION,
  ID_MIN_CLIENTS,
  ID_CLIENTS,
  ID_AGGREGATOR,
  ID_CLIP_NORM,
  ID_MAX_EXAMPLES,
  ID_QUARANTINE,
  ID_EVAL_EVERY,
  ID_TARGET,
  ID_SERVER_OPTIMIZER,
  ID_SERVER_LR,
  ID_SERVER_SCHEDULE,
  ID_PROX_MU,
  ID_INPUT_SHAPE,
  ID_NUM
};
/* `absent`: the value a checkpoint without the key stands for (it was
 * written by a fedlr before the setting existed, which ran with that
 * value), or NULL: the key is required. */
static const struct {
  const char *key, *flag;
  id_kind_t kind;
  const char *absent;
} id_items[ID_NUM] = {
    [ID_SEED] = {"fedlr_seed", "--seed", ID_UINT},
    [ID_LR] = {"fedlr_lr", "--lr", ID_TEXT},
    [ID_LR0] = {"fedlr_lr0", "--lr (the initial rate)", ID_REAL},
    [ID_SCHEDULE] = {"fedlr_schedule", "--schedule", ID_TEXT},
    [ID_LOCAL_SCHEDULE] = {"fedlr_local_schedule", "--local-schedule", ID_TEXT},
    [ID_LOCAL_UNIT] = {"fedlr_local_unit", "--local-unit", ID_TEXT},
    [ID_OPTIMIZER] = {"fedlr_optimizer", "--optimizer", ID_TEXT},
    [ID_LOCAL_EPOCHS] = {"fedlr_local_epochs", "--local-epochs", ID_UINT},
    [ID_BATCH_SIZE] = {"fedlr_batch_size", "--batch-size", ID_UINT},
    [ID_FRACTION] = {"fedlr_fraction", "--fraction", ID_REAL},
    [ID_MIN_CLIENTS] = {"fedlr_min_clients", "--min-clients", ID_UINT},
    [ID_CLIENTS] = {"fedlr_clients", "--clients", ID_UINT},
    [ID_AGGREGATOR] = {"fedlr_aggregator", "--aggregator", ID_TEXT},
    [ID_CLIP_NORM] = {"fedlr_clip_norm", "--clip-norm", ID_REAL},
    [ID_MAX_EXAMPLES] = {"fedlr_max_examples", "--max-examples", ID_UINT},
    [ID_QUARANTINE] = {"fedlr_quarantine_rounds", "--quarantine", ID_UINT},
    [ID_EVAL_EVERY] = {"fedlr_eval_every", "--eval-every", ID_UINT},
    [ID_TARGET] = {"fedlr_target_accuracy", "--target-accuracy", ID_REAL},
    [ID_SERVER_OPTIMIZER] = {"fedlr_server_optimizer", "--server-optimizer", ID_TEXT, "fedavg"},
    [ID_SERVER_LR] = {"fedlr_server_lr", "--server-lr", ID_REAL, "0x1p+0"},
    [ID_SERVER_SCHEDULE] = {"fedlr_server_schedule", "--server-schedule", ID_TEXT, "const"},
    [ID_PROX_MU] = {"fedlr_prox_mu", "--prox-mu", ID_REAL, "0x0p+0"},
    /* A CNN's input image where the spec and the tensors' shapes do not
     * fix it (1x8x24 and 1x24x8 can give the same tensors): CxHxW when it
     * is not the 1 x sqrt(D) x sqrt(D) inferred from D features, else
     * "none", as every run before shapes existed. */
    [ID_INPUT_SHAPE] = {"fedlr_input_shape", "--input-shape", ID_TEXT, "none"},
};

/* Every key, "model" and the checksum fit fl_safetensors' metadata list. */
_Static_assert(CK_NUM + ID_NUM + 2 <= FL_SAFETENSORS_META_MAX, "too many checkpoint keys");

/* The longest identity value: a canonical schedule writes every key. */
#define ID_VALUE_MAX 1024
typedef struct {
  char v[ID_NUM][ID_VALUE_MAX];
} ck_identity_t;

/* This run's identity, from its engine configuration, in the form
 * fl_checkpoint_save() writes. FL_ETOOBIG if a value does not fit. */
static int ck_identity(const fl_engine_config_t *c, ck_identity_t *id) {
  for (int i = 0; i < ID_NUM; i++) {
    char *b = id->v[i];
    const size_t cap = sizeof id->v[i];
    int w = 0, rc = 0;
    fl_agg_config_t agg = {c->aggregator, c->trim_beta, 0};
    switch (i) {
    case ID_SEED: w = snprintf(b, cap, "%llu", (unsigned long long)c->seed); break;
    case ID_LR: w = snprintf(b, cap, "%s", c->lr_spec); break;
    case ID_LR0: w = snprintf(b, cap, "%a", c->lr0); break;
    case ID_SCHEDULE: w = fl_sched_format(&c->sched, b, cap); break;
    case ID_LOCAL_SCHEDULE: w = snprintf(b, cap, "%s", c->local_schedule); break;
    case ID_LOCAL_UNIT:
      w = snprintf(b, cap, "%s",
                   c->local_unit == FEDLR__ROUND_START__LOCAL_UNIT__STEP ? "step" : "epoch");
      break;
    case ID_OPTIMIZER: rc = fl_optim_format(&c->optim, b, cap); break;
    case ID_LOCAL_EPOCHS: w = snprintf(b, cap, "%u", c->local_epochs); break;
    case ID_BATCH_SIZE: w = snprintf(b, cap, "%u", c->batch_size); break;
    case ID_FRACTION: w = snprintf(b, cap, "%a", c->fraction); break;
    case ID_MIN_CLIENTS: w = snprintf(b, cap, "%u", c->min_clients); break;
    case ID_CLIENTS: w = snprintf(b, cap, "%u", c->clients); break;
    case ID_AGGREGATOR: rc = fl_agg_format(&agg, b, cap); break;
    case ID_CLIP_NORM: w = snprintf(b, cap, "%a", c->clip_norm); break;
    case ID_MAX_EXAMPLES: w = snprintf(b, cap, "%llu", (unsigned long long)c->max_examples); break;
    case ID_QUARANTINE: w = snprintf(b, cap, "%u", c->quarantine_rounds); break;
    case ID_EVAL_EVERY: w = snprintf(b, cap, "%u", c->eval_every); break;
    case ID_TARGET: w = snprintf(b, cap, "%a", c->target_accuracy); break;
    case ID_SERVER_OPTIMIZER: rc = fl_sopt_format(&c->server_optim, b, cap); break;
    case ID_SERVER_LR: w = snprintf(b, cap, "%a", c->server_lr); break;
    case ID_SERVER_SCHEDULE: w = fl_sched_format(&c->server_sched, b, cap); break;
    case ID_PROX_MU: w = snprintf(b, cap, "%a", c->prox_mu); break;
    case ID_INPUT_SHAPE:
      if (fl_model_needs_shape(&c->model))
        w = snprintf(b, cap, "%zux%zux%zu", c->model.in_c, c->model.in_h, c->model.in_w);
      else
        w = snprintf(b, cap, "none");
      break;
    }
    if (rc) return rc;
    if (w < 0 || (size_t)w >= cap)
      return fl_err_set(FL_ETOOBIG, "the run's %s is longer than a checkpoint holds (%zu bytes)",
                        id_items[i].flag, cap - 1);
  }
  return 0;
}

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

/* The checkpoint's tensors: the model's, then those of each server
 * optimizer state vector (fl_engine_server_state), one per model tensor
 * with its shape, named by fl_checkpoint.h's rule. With a state, *layout receives
 * that layout (to destroy) and *spec a model over it that keeps the run's
 * model spec as its name, so the file's "model" entry is the run's; with
 * none, *spec is the run's model and *layout NULL. */
static int ck_spec(const fl_engine_t *e, fl_layout_t **layout, fl_model_spec_t *spec) {
  const fl_model_spec_t *m = fl_engine_model(e);
  size_t ns = fl_engine_server_state(e, NULL);
  *layout = NULL;
  *spec = *m;
  if (ns == 0) return 0;
  fl_layout_t *l = fl_layout_new();
  if (!l) return FL_ENOMEM;
  size_t nt = fl_model_num_tensors(m);
  int rc = 0;
  for (size_t s = 0; s <= ns && !rc; s++)
    for (size_t t = 0; t < nt && !rc; t++) {
      fl_tensor_info_t ti;
      fl_model_tensor(m, t, &ti);
      char name[FL_LAYOUT_MAX_NAME + 1];
      if (s > 0)
        snprintf(name, sizeof name, "%s%s.%zu", FL_ENGINE_STATE_PREFIX, fl_sopt_state_name(s - 1),
                 t);
      rc = fl_layout_add(l, s ? name : ti.name, ti.ndim, ti.shape);
    }
  if (!rc) rc = fl_model_custom(l, spec);
  if (rc) {
    fl_layout_destroy(&l);
    return rc;
  }
  snprintf(spec->spec, sizeof spec->spec, "%s", m->spec);
  *layout = l;
  return 0;
}

int fl_checkpoint_save(const fl_engine_t *e, const char *path) {
  if (fl_engine_round_open(e) || fl_engine_eval_open(e))
    return fl_err_set(FL_ESTATE, "cannot checkpoint inside a round");
  const fl_engine_config_t *c = fl_engine_config(e);
  fl_engine_state_t es;
  fl_engine_get_state(e, &es);
  char v[CK_NUM][40];
  fl_layout_t *layout = NULL;
  fl_model_spec_t spec;
  float *all = NULL;
  char *quarantine = malloc(FL_SAFETENSORS_META_VALUE);
  ck_identity_t *id = malloc(sizeof *id);
  int rc = quarantine && id ? 0 : fl_err_set(FL_ENOMEM, "out of memory writing %s", path);
  if (rc) goto out;
  if ((rc = quarantine_format(e, quarantine, FL_SAFETENSORS_META_VALUE))) goto out;
  if ((rc = ck_identity(c, id))) goto out;
  snprintf(v[CK_ROUNDS], sizeof v[0], "%u", es.rounds_done);
  snprintf(v[CK_BEST], sizeof v[0], "%a", es.plateau.best);
  snprintf(v[CK_SCALE], sizeof v[0], "%a", es.plateau.scale);
  snprintf(v[CK_BAD], sizeof v[0], "%u", es.plateau.num_bad);
  snprintf(v[CK_COOL], sizeof v[0], "%u", es.plateau.cooldown_left);
  snprintf(v[CK_ACC], sizeof v[0], "%a", es.best_accuracy);
  snprintf(v[CK_TARGET], sizeof v[0], "%d", es.target_reached);
  snprintf(v[CK_LIMIT], sizeof v[0], "%u", c->rounds);
  snprintf(v[CK_SBEST], sizeof v[0], "%a", es.server_plateau.best);
  snprintf(v[CK_SSCALE], sizeof v[0], "%a", es.server_plateau.scale);
  snprintf(v[CK_SBAD], sizeof v[0], "%u", es.server_plateau.num_bad);
  snprintf(v[CK_SCOOL], sizeof v[0], "%u", es.server_plateau.cooldown_left);
  const char *meta[2 * (CK_NUM + ID_NUM) + 1];
  size_t n = 0;
  for (int i = 0; i < CK_NUM; i++) {
    meta[n++] = ck_keys[i];
    meta[n++] = i == CK_QUARANTINE ? quarantine : v[i];
  }
  for (int i = 0; i < ID_NUM; i++) {
    meta[n++] = id_items[i].key;
    meta[n++] = id->v[i];
  }
  meta[n] = NULL;
  /* The weights, then the server optimizer's state, back to back. */
  const float *const *sv;
  const size_t ns = fl_engine_server_state(e, &sv), np = c->model.num_params;
  if ((rc = ck_spec(e, &layout, &spec))) goto out;
  const float *data = fl_engine_weights(e);
  if (ns) {
    if (!(all = malloc((ns + 1) * np * sizeof *all))) {
      rc = fl_err_set(FL_ENOMEM, "out of memory writing %s", path);
      goto out;
    }
    memcpy(all, data, np * sizeof *all);
    for (size_t i = 0; i < ns; i++)
      memcpy(all + (i + 1) * np, sv[i], np * sizeof *all);
    data = all;
  }
  rc = fl_safetensors_save(path, &spec, data, meta);
out:
  free(all);
  fl_layout_destroy(&layout);
  free(quarantine);
  free(id);
  return rc;
}

/* The run state a checkpoint restores, checked before any of it is used. */
typedef struct {
  uint32_t rounds_done;
  fl_plateau_t plateau;
  fl_plateau_t server_plateau;
  double best_accuracy;
  int target_reached;
  uint32_t *quarantine; /* (2 * num_quarantine) id, through; owned */
  size_t num_quarantine;
  uint32_t limit; /* the round limit it was written with (--rounds) */
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

/* A value of identity item i as shown in a message: as written, but a
 * double in decimal, with all its digits if `other` (the value it is
 * compared with) looks the same in fewer. */
static const char *id_show(int i, const char *txt, const char *other, char *buf, size_t cap) {
  double a, b;
  if (id_items[i].kind != ID_REAL || ck_double(txt, &a) < 0 || ck_double(other, &b) < 0) return txt;
  char sa[40], sb[40];
  snprintf(sa, sizeof sa, "%g", a);
  snprintf(sb, sizeof sb, "%g", b);
  snprintf(buf, cap, strcmp(sa, sb) ? "%g" : "%.17g", a);
  return buf;
}

/* Compares the identity the checkpoint was written with (v, by ID_*) with
 * this run's (`run`): FL_EFORMAT for a value that is not of its kind,
 * FL_EINVAL naming the first setting that differs, both values, and the
 * flags of the others that differ. */
static int ck_check_identity(const char *path, const char *const *v, const ck_identity_t *run) {
  int first = -1, lr_differs = 0;
  char others[200] = "";
  size_t at = 0;
  for (int i = 0; i < ID_NUM; i++) {
    const char *key = id_items[i].key;
    int same;
    if (id_items[i].kind == ID_UINT) {
      uint64_t a, b = 0;
      if (ck_uint(v[i], &a) < 0) return ck_bad(FL_EFORMAT, path, key, v[i], "not a whole number");
      (void)ck_uint(run->v[i], &b);
      same = a == b;
    } else if (id_items[i].kind == ID_REAL) {
      double a, b = 0;
      if (ck_double(v[i], &a) < 0 || !isfinite(a))
        return ck_bad(FL_EFORMAT, path, key, v[i], "not a finite number");
      (void)ck_double(run->v[i], &b);
      same = memcmp(&a, &b, sizeof a) == 0; /* bit for bit */
    } else {
      same = !strcmp(v[i], run->v[i]);
    }
    /* A different --lr resolves to a different rate: one change, not two. */
    if (same || (i == ID_LR0 && lr_differs)) continue;
    lr_differs |= i == ID_LR;
    if (first < 0) {
      first = i;
    } else if (at < sizeof others) {
      int w = snprintf(others + at, sizeof others - at, "%s%s", at ? ", " : "", id_items[i].flag);
      at += w > 0 ? (size_t)w : 0;
    }
  }
  if (first < 0) return 0;
  char was[48], now[48];
  const char *flag = id_items[first].flag;
  return fl_err_set(FL_EINVAL,
                    "checkpoint %s was written with %s %s; this run has %s %s%s%s%s: resume with "
                    "the same flags (or start a new run)",
                    path, flag, id_show(first, v[first], run->v[first], was, sizeof was), flag,
                    id_show(first, run->v[first], v[first], now, sizeof now),
                    others[0] ? " (and a different " : "", others, others[0] ? ")" : "");
}

/* Parses and checks a plateau state: the four keys from `k0` (best, scale,
 * bad, cool, in ck_keys order) of schedule s (`what`: "schedule" or "server
 * schedule"), into *pl. Best is +inf until an evaluation improves it, then
 * finite; the scale is a power of the factor; num_bad never exceeds the
 * patience, nor cooldown_left the cooldown, and a running cooldown keeps
 * num_bad at 0. Other schedules never leave fl_plateau_init()'s state. */
static int ck_plateau(const char *path, const char *const *v, int k0, const fl_sched_t *s,
                      const char *what, uint32_t rounds_done, fl_plateau_t *pl) {
  const int kb = k0, ks = k0 + 1, kbad = k0 + 2, kc = k0 + 3;
  const int plateau = s->kind == FL_SCHED_PLATEAU;
  uint64_t bad, cool;
  if (ck_double(v[kb], &pl->best) < 0 || !(isfinite(pl->best) || pl->best == INFINITY))
    return ck_bad(FL_ERANGE, path, ck_keys[kb], v[kb],
                  "must be a finite loss, or inf before the first evaluation");
  if (!plateau && pl->best != INFINITY)
    return ck_bad(FL_ERANGE, path, ck_keys[kb], v[kb], "must be inf: this run's %s is not plateau",
                  what);
  if (ck_double(v[ks], &pl->scale) < 0 ||
      !ck_scale_reachable(pl->scale, s->factor, plateau ? rounds_done : 0))
    return plateau ? ck_bad(FL_ERANGE, path, ck_keys[ks], v[ks],
                            "must be in (0, 1], a power factor^k of the plateau factor %g with "
                            "k <= %u (at most one reduction per round done)",
                            s->factor, rounds_done)
                   : ck_bad(FL_ERANGE, path, ck_keys[ks], v[ks],
                            "must be 1: this run's %s is not plateau", what);
  char why_cool[64], why_bad[64];
  snprintf(why_cool, sizeof why_cool,
           plateau ? "the %s's cooldown" : "this run's %s is not plateau", what);
  snprintf(why_bad, sizeof why_bad, plateau ? "the %s's patience" : "this run's %s is not plateau",
           what);
  if (ck_uint(v[kc], &cool) < 0 || cool > (plateau ? s->cooldown : 0))
    return ck_bad(FL_ERANGE, path, ck_keys[kc], v[kc],
                  "must be a whole number of evaluations in [0, %u] (%s)",
                  plateau ? s->cooldown : 0, why_cool);
  if (ck_uint(v[kbad], &bad) < 0 || bad > (plateau ? s->patience : 0))
    return ck_bad(FL_ERANGE, path, ck_keys[kbad], v[kbad],
                  "must be a whole number of evaluations in [0, %u] (%s)",
                  plateau ? s->patience : 0, why_bad);
  if (bad && cool)
    return ck_bad(FL_ERANGE, path, ck_keys[kbad], v[kbad],
                  "must be 0 while a cooldown runs (%s = %s)", ck_keys[kc], v[kc]);
  pl->num_bad = (uint32_t)bad;
  pl->cooldown_left = (uint32_t)cool;
  return 0;
}

/* Parses and checks the run state in `meta` against this engine's config:
 * every fedlr_* key present (and no other), the identity this run's (but
 * the round limit), each value one this run can have produced. */
static int ck_state(const fl_engine_t *e, const char *path, const fl_safetensors_meta_t *meta,
                    ck_state_t *st) {
  const fl_engine_config_t *c = fl_engine_config(e);
  const char *v[CK_NUM] = {0}, *idv[ID_NUM] = {0};
  int have_model = 0;
  for (size_t i = 0; i < meta->n; i++) {
    const char *k = meta->e[i].key;
    int j = 0, d = 0;
    while (j < CK_NUM && strcmp(k, ck_keys[j]) != 0)
      j++;
    while (d < ID_NUM && strcmp(k, id_items[d].key) != 0)
      d++;
    if (j < CK_NUM)
      v[j] = meta->e[i].value;
    else if (d < ID_NUM)
      idv[d] = meta->e[i].value;
    else if (!strcmp(k, "model")) /* fl_safetensors checked it is this run's */
      have_model = 1;
    else if (!strncmp(k, "fedlr_", 6))
      return fl_err_set(FL_EFORMAT,
                        "checkpoint %s: unknown key '%s' (written by a newer fedlr?): it "
                        "cannot be resumed faithfully",
                        path, k);
  }
  /* The server plateau's keys come all four or none (an older fedlr). */
  const int server_keys = !!v[CK_SBEST];
  for (int j = 0; j < CK_NUM; j++)
    if (!v[j] && (!ck_optional(j) || (j >= CK_SBEST && server_keys)))
      return fl_err_set(FL_EFORMAT,
                        "checkpoint %s: no %s (written by an older fedlr, or not a fedlr "
                        "checkpoint)",
                        path, ck_keys[j]);
  const char *missing = v[CK_LIMIT] ? NULL : ck_keys[CK_LIMIT];
  for (int d = 0; d < ID_NUM && !missing; d++) {
    if (!idv[d]) idv[d] = id_items[d].absent; /* a setting newer than the checkpoint */
    if (!idv[d]) missing = id_items[d].key;
  }
  if (missing)
    return fl_err_set(FL_EFORMAT,
                      "checkpoint %s: no %s: it was written by an older fedlr, which did not "
                      "record the run's flags, so it cannot be checked against this run's "
                      "(start a new run, or finish it with the fedlr that wrote it)",
                      path, missing);
  if (!have_model)
    return fl_err_set(FL_EFORMAT, "checkpoint %s: no model (not a fedlr checkpoint)", path);

  ck_identity_t *run = malloc(sizeof *run);
  if (!run) return fl_err_set(FL_ENOMEM, "out of memory restoring %s", path);
  int rc = ck_identity(c, run);
  if (!rc) rc = ck_check_identity(path, idv, run);
  free(run);
  if (rc) return rc;

  /* The round limit may change (fl_checkpoint.h), but not below the rounds
   * done; the rounds done are within the limit the run had. */
  uint64_t u, limit;
  if (ck_uint(v[CK_LIMIT], &limit) < 0 || limit < 1 || limit > UINT32_MAX)
    return ck_bad(FL_ERANGE, path, ck_keys[CK_LIMIT], v[CK_LIMIT],
                  "must be a whole number of rounds in [1, %u]", UINT32_MAX);
  if (ck_uint(v[CK_ROUNDS], &u) < 0 || u > limit)
    return ck_bad(FL_ERANGE, path, ck_keys[CK_ROUNDS], v[CK_ROUNDS],
                  "must be a whole number of rounds in [0, %llu] (the round limit it was "
                  "written with, %s)",
                  (unsigned long long)limit, ck_keys[CK_LIMIT]);
  if (u > c->rounds)
    return fl_err_set(FL_EINVAL,
                      "checkpoint %s was written after %llu rounds (of --rounds %llu); this run "
                      "has --rounds %u: resume with --rounds %llu or more (or start a new run)",
                      path, (unsigned long long)u, (unsigned long long)limit, c->rounds,
                      (unsigned long long)u);
  st->rounds_done = (uint32_t)u;
  st->limit = (uint32_t)limit;

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

  int rc2 = ck_plateau(path, v, CK_BEST, &c->sched, "schedule", st->rounds_done, &st->plateau);
  if (rc2) return rc2;
  if (!v[CK_SBEST]) /* an older fedlr: no server schedule, so fl_plateau_init()'s */
    return 0;
  return ck_plateau(path, v, CK_SBEST, &c->server_sched, "server schedule", st->rounds_done,
                    &st->server_plateau);
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

/* After fl_safetensors_load_all() failed with FL_ESHAPE (rc): if the file
 * names another model, or another server optimizer (whose state tensors
 * it holds or lacks), the identity's refusal for --model or
 * --server-optimizer; else rc with its message. Read from the header
 * alone: the checksum cannot be verified without reading the tensors, and
 * those are another run's. */
static int ck_model(const char *path, const fl_engine_config_t *c, int rc) {
  char msg[512], spec[FL_MODEL_SPEC_MAX], ours[256];
  snprintf(msg, sizeof msg, "%s", fl_err_msg());
  const fl_model_spec_t *model = &c->model;
  if (fl_safetensors_meta(path, "model", spec, sizeof spec) == 0 && strcmp(spec, model->spec))
    return fl_err_set(FL_EINVAL,
                      "checkpoint %s was written with --model %s; this run has --model %s: "
                      "resume with the same flags (or start a new run)",
                      path, spec, model->spec);
  if (fl_safetensors_meta(path, id_items[ID_SERVER_OPTIMIZER].key, spec, sizeof spec) != 0)
    snprintf(spec, sizeof spec, "%s", id_items[ID_SERVER_OPTIMIZER].absent);
  if (fl_sopt_format(&c->server_optim, ours, sizeof ours) == 0 && strcmp(spec, ours))
    return fl_err_set(FL_EINVAL,
                      "checkpoint %s was written with --server-optimizer %s; this run has "
                      "--server-optimizer %s: resume with the same flags (or start a new run)",
                      path, spec, ours);
  return fl_err_set(rc, "%s", msg);
}

int fl_checkpoint_load(fl_engine_t *e, const char *path, char *changes, size_t cap) {
  if (fl_engine_round_open(e) || fl_engine_eval_open(e))
    return fl_err_set(FL_ESTATE, "cannot restore inside a round");
  const fl_engine_config_t *c = fl_engine_config(e);
  const fl_model_spec_t *model = &c->model;
  const size_t n = model->num_params, ns = fl_engine_server_state(e, NULL);
  fl_layout_t *layout = NULL;
  fl_model_spec_t spec;
  /* (ns + 1) x num_params, staged: the weights, then the server state; the
   * engine changes only at the end */
  float *w = malloc((ns + 1) * n * sizeof *w);
  fl_safetensors_meta_t *meta = malloc(sizeof *meta);
  ck_state_t st = {0};
  fl_plateau_init(&st.server_plateau); /* an older fedlr's checkpoint has none */
  int rc = w && meta ? 0 : fl_err_set(FL_ENOMEM, "out of memory restoring %s", path);
  if (rc) goto out;
  /* One read of the file: the weights, the metadata and the checksum over
   * both, so what is checked is what was checksummed. */
  if ((rc = ck_spec(e, &layout, &spec))) goto out;
  rc = fl_safetensors_load_all(path, &spec, w, FL_SAFETENSORS_NEED_CHECKSUM, meta);
  if (rc == FL_ESHAPE) rc = ck_model(path, c, rc);
  if (rc) goto out;
  if ((rc = ck_state(e, path, meta, &st))) goto out;
  if ((rc = ck_weights(e, path, w))) goto out;
  float *sv[FL_SOPT_MAX_STATE];
  for (size_t i = 0; i < ns; i++)
    sv[i] = w + (i + 1) * n;
  size_t bv, bi;
  if (ns && !fl_sopt_check_state(&c->server_optim, sv, n, &bv, &bi)) {
    rc = fl_err_set(FL_ERANGE,
                    "checkpoint %s: server optimizer state %s, value %zu, is %.8g: it must be "
                    "finite%s; the checkpoint is damaged (resume from an intact one, or start "
                    "afresh)",
                    path, fl_sopt_state_name(bv), bi, (double)sv[bv][bi], bv ? " and >= 0" : "");
    goto out;
  }
  fl_engine_state_t es = {st.rounds_done, st.plateau, st.best_accuracy, st.target_reached,
                          st.server_plateau};
  if ((rc = fl_engine_set_state(e, &es, w, st.quarantine, st.num_quarantine))) goto out;
  if (ns) (void)fl_engine_set_server_state(e, (const float *const *)sv); /* between rounds */
  if (changes && cap) {
    changes[0] = '\0';
    if (st.limit != c->rounds) snprintf(changes, cap, "--rounds %u -> %u", st.limit, c->rounds);
  }
out:
  fl_layout_destroy(&layout);
  free(st.quarantine);
  free(w);
  free(meta);
  return rc;
}
