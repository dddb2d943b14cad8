#include "fl_engine.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"
#include "fl_parallel.h"
#include "fl_rng.h"
#include "fl_safetensors.h"

/* The FedAvg accumulator (see fl_engine.h): sum_k n_k * delta_k on a grid
 * of 2^-40, as an exact integer V = hi * 2^54 + lo in two int64 limbs.
 * Bounds: |delta| <= 2^20 (FL_ENGINE_MAX_DELTA), n_k <= 2^32
 * (FL_ENGINE_MAX_EXAMPLES), so one term is below 2^92 and its hi part below
 * 2^38; at most 2^24 terms (FL_MAX_CLIENTS) keep sum(hi) below 2^62. Each lo
 * part is below 2^54 in magnitude, so lo is carried into hi (normalized)
 * every AGG_CARRY_EVERY folds, before it could reach 2^63. */
#define FL_AGG_SCALE 1099511627776.0 /* 2^40 */
#define AGG_LIMB 18014398509481984.0 /* 2^54 */
#define AGG_LIMB_BITS 54
#define AGG_CARRY_EVERY 255
#define FL_EVAL_BATCH 1000
#define FL_MAX_CLIENTS 10000000u
/* Coordinates per block of the robust rules: (reported x SEL_W) floats of
 * scratch stay in L1 for up to ~100 reported clients. */
#define SEL_W 64

typedef struct {
  char *name; /* NULL: free id */
  uint64_t num_examples;
  int available;
  uint32_t quarantined_through; /* not sampled up to this round (a rejected update); 0 = never */
} fl_client_rec_t;

enum { ROUND_IDLE = 0, ROUND_OPEN = 1 };
/* A sampled slot this round: no answer yet, an accepted update, or a
 * rejected one. */
enum { SLOT_NONE = 0, SLOT_REPORTED = 1, SLOT_REJECTED = 2 };

struct fl_engine {
  fl_engine_config_t cfg;
  fl_wire_limits_t limits;
  float *weights;          /* (num_params) global model */
  int64_t *acc_hi;         /* (num_params) FedAvg sum, high limb (see FL_AGG_SCALE) */
  int64_t *acc_lo;         /* (num_params) low limb */
  uint32_t acc_terms;      /* folds since the limbs were last normalized */
  fl_model_ws_t **eval_ws; /* (eval_threads) one workspace per evaluation thread */
  size_t eval_threads;
  double *chunk_loss;    /* (eval chunks) summed loss of each chunk */
  size_t *chunk_correct; /* (eval chunks) */

  fl_client_rec_t *clients; /* (cap_clients) indexed by id */
  size_t num_clients, cap_clients, num_available;
  uint32_t *name_index; /* (name_cap) open-addressing hash: id + 1, 0 = empty */
  size_t name_cap;
  uint32_t attempt; /* retries of the current round index */
  uint32_t *pool;   /* (cap_clients) scratch for sampling */

  int state;
  uint32_t round; /* open round, or last closed one; 0 before the first */
  uint32_t rounds_done;
  double lr;                 /* this round's rate */
  uint32_t *sampled;         /* (num_sampled) ascending client ids */
  uint8_t *reported;         /* (num_sampled) SLOT_* state of each sampled slot */
  double *slot_loss;         /* (num_sampled) train loss per slot */
  uint64_t *slot_examples;   /* (num_sampled) examples per reported slot (capped) */
  uint64_t *slot_registered; /* (num_sampled) registered examples when the round began
                              * (capped at max_examples) */
  size_t num_sampled, num_reported, num_answered_bad, cap_sampled;
  uint32_t num_rejected, num_clipped, num_capped; /* this round's counts, see fl_round_metrics_t */
  /* Robust rules only (cfg.aggregator != FL_AGG_FEDAVG): */
  float *store; /* (cap_store, num_params) slot k's delta in row k */
  float *sel;   /* (cap_store, SEL_W) a block of coordinates, row per client */
  size_t cap_store;
  uint32_t *net; /* (2 * net_len) comparators (i, j) sorting net_n values */
  size_t net_n, net_len;
  fl_plateau_t plateau;
  double best_accuracy;
  int target_reached;
  uint32_t *q_restore; /* (2 * num_q_restore) id, through: a checkpoint's quarantine */
  size_t num_q_restore;
};

static int robust_rule(const fl_engine_t *e) {
  return e->cfg.aggregator != FL_AGG_FEDAVG;
}

/* Prefixes the detail message of a failed parse with the flag's name. */
static int flag_error(const char *flag, int rc) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s", fl_err_msg());
  return fl_err_set(rc, "%s: %s", flag, msg);
}

int fl_engine_config_from(fl_engine_config_t *ec, const fl_config_t *c, size_t input_dim,
                          size_t num_classes, const fl_dataset_t *test) {
  int rc;
  memset(ec, 0, sizeof *ec);
  if ((rc = fl_model_parse(c->model, input_dim, num_classes, &ec->model)))
    return flag_error("--model", rc);
  if ((rc = fl_config_lr0(c, ec->model.num_params, &ec->lr0))) return flag_error("--lr", rc);
  if ((rc = fl_sched_parse(c->schedule, &ec->sched))) return flag_error("--schedule", rc);
  if ((rc = fl_optim_parse(c->optimizer, &ec->optim))) return flag_error("--optimizer", rc);
  fl_sched_t local;
  if ((rc = fl_sched_parse(c->local_schedule, &local))) return flag_error("--local-schedule", rc);
  snprintf(ec->local_schedule, sizeof ec->local_schedule, "%s", c->local_schedule);
  ec->local_unit = strcmp(c->local_unit, "step") == 0 ? FEDLR__ROUND_START__LOCAL_UNIT__STEP
                                                      : FEDLR__ROUND_START__LOCAL_UNIT__EPOCH;
  ec->test = test;
  ec->local_epochs = c->local_epochs;
  ec->batch_size = c->batch_size;
  ec->fraction = c->fraction;
  ec->min_clients = c->min_clients;
  ec->rounds = c->rounds;
  ec->seed = c->seed;
  ec->eval_every = c->eval_every;
  ec->target_accuracy = c->target_accuracy;
  ec->quorum = c->quorum;
  if ((rc = fl_config_aggregator(c->aggregator, &ec->aggregator, &ec->trim_beta)))
    return flag_error("--aggregator", rc);
  ec->clip_norm = c->clip_norm;
  ec->max_examples = c->max_examples;
  ec->quarantine_rounds = c->quarantine;
  ec->max_retries = c->max_retries;
  return 0;
}

fl_engine_t *fl_engine_new(const fl_engine_config_t *cfg, int *err) {
  int rc = FL_ENOMEM;
  fl_engine_t *e = calloc(1, sizeof *e);
  if (!e) goto fail;
  e->cfg = *cfg;
  if (!(cfg->lr0 > 0) || !isfinite(cfg->lr0)) {
    rc = fl_err_set(FL_EINVAL, "initial learning rate %g must be positive and finite", cfg->lr0);
    goto fail;
  }
  if (!(cfg->fraction > 0 && cfg->fraction <= 1)) {
    rc = fl_err_set(FL_EINVAL, "fraction %g must be in (0, 1]", cfg->fraction);
    goto fail;
  }
  if (!(cfg->quorum > 0 && cfg->quorum <= 1)) {
    rc = fl_err_set(FL_EINVAL, "quorum %g must be in (0, 1]", cfg->quorum);
    goto fail;
  }
  if (cfg->aggregator != FL_AGG_FEDAVG && cfg->aggregator != FL_AGG_MEDIAN &&
      cfg->aggregator != FL_AGG_TRIMMED_MEAN) {
    rc = fl_err_set(FL_EINVAL, "unknown aggregator %d", (int)cfg->aggregator);
    goto fail;
  }
  if (!(cfg->trim_beta >= 0 && cfg->trim_beta < 0.5)) {
    rc = fl_err_set(FL_EINVAL, "trimmed-mean beta %g must be in [0, 0.5)", cfg->trim_beta);
    goto fail;
  }
  if (!(cfg->clip_norm >= 0) || !isfinite(cfg->clip_norm)) {
    rc = fl_err_set(FL_EINVAL, "clip norm %g must be >= 0 and finite", cfg->clip_norm);
    goto fail;
  }
  if (cfg->rounds == 0 || cfg->local_epochs == 0 || cfg->batch_size == 0) {
    rc = fl_err_set(FL_EINVAL, "rounds, local epochs and batch size must be positive");
    goto fail;
  }
  if (cfg->test && cfg->test->dim != cfg->model.dims[0]) {
    rc = fl_err_set(FL_ESHAPE, "test set has %zu features, model expects %zu", cfg->test->dim,
                    cfg->model.dims[0]);
    goto fail;
  }
  if (e->cfg.eval_every == 0) e->cfg.eval_every = 1;
  size_t n = cfg->model.num_params;
  fl_wire_limits_for_model(&cfg->model, &e->limits);
  e->limits.caller_checks_values = 1; /* fold() rejects NaN/Inf/huge values */
  e->weights = malloc(n * sizeof *e->weights);
  e->acc_hi = calloc(n, sizeof *e->acc_hi);
  e->acc_lo = calloc(n, sizeof *e->acc_lo);
  if (!e->weights || !e->acc_hi || !e->acc_lo) goto fail;
  if (cfg->test) {
    size_t chunks = (cfg->test->n + FL_EVAL_BATCH - 1) / FL_EVAL_BATCH;
    size_t th = cfg->eval_threads ? cfg->eval_threads : fl_parallel_ncpu();
    if (th > chunks) th = chunks;
    if (th < 1) th = 1;
    e->eval_ws = calloc(th, sizeof *e->eval_ws);
    e->chunk_loss = calloc(chunks, sizeof *e->chunk_loss);
    e->chunk_correct = calloc(chunks, sizeof *e->chunk_correct);
    if (!e->eval_ws || !e->chunk_loss || !e->chunk_correct) goto fail;
    e->eval_threads = th;
    for (size_t i = 0; i < th; i++)
      if (!(e->eval_ws[i] = fl_model_ws_new(&cfg->model, FL_EVAL_BATCH))) goto fail;
  }
  fl_model_init(&cfg->model, e->weights, fl_rng_derive(cfg->seed, FL_RNG_INIT, 0, 0));
  fl_plateau_init(&e->plateau);
  return e;
fail:
  if (rc == FL_ENOMEM) fl_err_set(FL_ENOMEM, "engine: out of memory");
  if (err) *err = rc;
  fl_engine_destroy(&e);
  return NULL;
}

void fl_engine_destroy(fl_engine_t **pe) {
  fl_engine_t *e = pe ? *pe : NULL;
  if (!e) return;
  for (size_t i = 0; i < e->cap_clients; i++)
    free(e->clients[i].name);
  free(e->clients);
  free(e->name_index);
  free(e->pool);
  free(e->weights);
  free(e->acc_hi);
  free(e->acc_lo);
  for (size_t i = 0; e->eval_ws && i < e->eval_threads; i++)
    fl_model_ws_destroy(&e->eval_ws[i]);
  free(e->eval_ws);
  free(e->chunk_loss);
  free(e->chunk_correct);
  free(e->sampled);
  free(e->reported);
  free(e->slot_loss);
  free(e->slot_examples);
  free(e->slot_registered);
  free(e->store);
  free(e->sel);
  free(e->net);
  free(e->q_restore);
  free(e);
  *pe = NULL;
}

static uint64_t name_hash(const char *s) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 1099511628211ULL;
  return h;
}

/* Slot of `name` in the hash table: where it is, or the empty slot where it
 * would go. The table is kept at most half full. */
static size_t name_slot(const fl_engine_t *e, const char *name) {
  size_t mask = e->name_cap - 1, i = (size_t)name_hash(name) & mask;
  while (e->name_index[i] && strcmp(e->clients[e->name_index[i] - 1].name, name) != 0)
    i = (i + 1) & mask;
  return i;
}

static int name_index_grow(fl_engine_t *e) {
  size_t cap = e->name_cap ? 2 * e->name_cap : 256;
  uint32_t *t = calloc(cap, sizeof *t);
  if (!t) return fl_err_set(FL_ENOMEM, "out of memory indexing client names");
  uint32_t *old = e->name_index;
  size_t old_cap = e->name_cap;
  e->name_index = t;
  e->name_cap = cap;
  for (size_t i = 0; i < old_cap; i++)
    if (old[i]) e->name_index[name_slot(e, e->clients[old[i] - 1].name)] = old[i];
  free(old);
  return 0;
}

static int ensure_client_cap(fl_engine_t *e, size_t need) {
  if (need <= e->cap_clients) return 0;
  size_t cap = e->cap_clients ? e->cap_clients : 64;
  while (cap < need)
    cap *= 2;
  fl_client_rec_t *c = realloc(e->clients, cap * sizeof *c);
  if (!c) return fl_err_set(FL_ENOMEM, "out of memory registering clients");
  e->clients = c;
  memset(c + e->cap_clients, 0, (cap - e->cap_clients) * sizeof *c);
  uint32_t *p = realloc(e->pool, cap * sizeof *p);
  if (!p) return fl_err_set(FL_ENOMEM, "out of memory registering clients");
  e->pool = p;
  e->cap_clients = cap;
  return 0;
}

int fl_engine_find_client(const fl_engine_t *e, const char *name, uint32_t *id) {
  if (!e->name_cap || !name) return FL_ENOENT;
  uint32_t v = e->name_index[name_slot(e, name)];
  if (!v) return FL_ENOENT;
  if (id) *id = v - 1;
  return 0;
}

const char *fl_engine_client_name(const fl_engine_t *e, uint32_t id) {
  return id < e->cap_clients ? e->clients[id].name : NULL;
}

/* The quarantine a restored checkpoint holds for client `id` (0: none). */
static uint32_t restored_quarantine(const fl_engine_t *e, uint32_t id) {
  for (size_t r = 0; r < e->num_q_restore; r++)
    if (e->q_restore[2 * r] == id) return e->q_restore[2 * r + 1];
  return 0;
}

int fl_engine_add_client_at(fl_engine_t *e, uint32_t id, const char *name, uint64_t num_examples) {
  if (!name || !name[0]) return fl_err_set(FL_EINVAL, "client name is empty");
  if (num_examples == 0) return fl_err_set(FL_EINVAL, "client '%s' has no examples", name);
  if (num_examples > FL_ENGINE_MAX_EXAMPLES)
    return fl_err_set(
        FL_ERANGE, "client '%s' registers %llu examples, more than the limit of %llu per client",
        name, (unsigned long long)num_examples, (unsigned long long)FL_ENGINE_MAX_EXAMPLES);
  if (id >= FL_MAX_CLIENTS)
    return fl_err_set(FL_ETOOBIG, "client id %u is beyond the limit of %u clients", id,
                      FL_MAX_CLIENTS);
  uint32_t have;
  if (fl_engine_find_client(e, name, &have) == 0) {
    if (have != id)
      return fl_err_set(FL_EINVAL, "client name '%s' is already registered as client %u", name,
                        have);
    e->clients[id].num_examples = num_examples; /* a rejoin */
    return 0;
  }
  if (id < e->cap_clients && e->clients[id].name)
    /* Never the other client's name: this message may go back to the
     * joining peer. */
    return fl_err_set(FL_EINVAL, "client id %u is already taken by another client", id);
  int rc;
  if ((rc = ensure_client_cap(e, (size_t)id + 1))) return rc;
  if (2 * (e->num_clients + 1) > e->name_cap && (rc = name_index_grow(e))) return rc;
  char *copy = strdup(name);
  if (!copy) return fl_err_set(FL_ENOMEM, "out of memory registering client '%s'", name);
  e->clients[id] = (fl_client_rec_t){copy, num_examples, 1, restored_quarantine(e, id)};
  e->name_index[name_slot(e, name)] = id + 1;
  e->num_clients++;
  e->num_available++;
  return 0;
}

int fl_engine_add_client(fl_engine_t *e, const char *name, uint64_t num_examples, uint32_t *id) {
  uint32_t i = 0;
  while (i < e->cap_clients && e->clients[i].name)
    i++;
  int rc = fl_engine_add_client_at(e, i, name, num_examples);
  if (!rc && id) *id = i;
  return rc;
}

size_t fl_engine_num_clients(const fl_engine_t *e) {
  return e->num_clients;
}
size_t fl_engine_num_available(const fl_engine_t *e) {
  return e->num_available;
}

void fl_engine_set_available(fl_engine_t *e, uint32_t id, int available) {
  if (id >= e->cap_clients || !e->clients[id].name) return;
  available = available != 0;
  if (e->clients[id].available == available) return;
  e->clients[id].available = available;
  if (available)
    e->num_available++;
  else
    e->num_available--;
}

/* May client i be sampled in round `round`? Registered, available, and not
 * quarantined for a rejected update. */
static int sampleable(const fl_engine_t *e, size_t i, uint32_t round) {
  const fl_client_rec_t *c = &e->clients[i];
  return c->name && c->available && c->quarantined_through < round;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

/* The rate of round `round` (1-based) from the schedule and plateau state. */
static double round_lr(const fl_engine_t *e, uint32_t round) {
  return fl_sched_lr(&e->cfg.sched, e->cfg.lr0, round - 1, &e->plateau);
}

/* A RoundStart and what it points into; valid while the engine is. */
typedef struct {
  Fedlr__RoundStart rs;
  Fedlr__Optimizer opt;
  fl_wire_tensors_t tv;
} round_start_t;

/* The RoundStart of round `round` at rate `lr` with the global weights, for
 * a client whose training seed is `seed`. */
static void round_start_fill(const fl_engine_t *e, uint32_t round, double lr, uint64_t seed,
                             round_start_t *m) {
  const fl_engine_config_t *c = &e->cfg;
  fl_wire_optim_to(&c->optim, &m->opt);
  fl_wire_tensors_init(&m->tv, &c->model, e->weights);
  Fedlr__RoundStart rs = FEDLR__ROUND_START__INIT;
  rs.round = round;
  rs.lr = (float)lr;
  rs.local_schedule = (char *)c->local_schedule;
  rs.local_unit = (Fedlr__RoundStart__LocalUnit)c->local_unit;
  rs.optimizer = &m->opt;
  rs.local_epochs = c->local_epochs;
  rs.batch_size = c->batch_size;
  rs.seed = seed;
  rs.model = (char *)c->model.spec;
  rs.n_weights = m->tv.n;
  rs.weights = m->tv.ptrs;
  m->rs = rs;
}

/* Refuses the next round if clients would refuse its RoundStart: the very
 * check fl_wire_decode() runs on their side (fl_wire_check_round_start with
 * a client's limits), on the message this engine would send. What changes
 * from round to round is the rate (schedule, plateau state) and the weights
 * (aggregation, a checkpoint); the rest is fixed by the config. */
static int round_start_check(const fl_engine_t *e) {
  uint32_t round = e->rounds_done + 1;
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&e->cfg.model, &lim);
  round_start_t m;
  round_start_fill(e, round, round_lr(e, round), 0, &m);
  int rc = fl_wire_check_round_start(&m.rs, &lim);
  if (rc == 0) return 0;
  char why[512];
  snprintf(why, sizeof why, "%s", fl_err_msg());
  return fl_err_set(rc,
                    "round %u cannot start: every client would refuse its RoundStart (%s); the "
                    "rate comes from --lr and --schedule, the weights from the rounds so far or "
                    "the checkpoint, so retrying cannot help",
                    round, why);
}

int fl_engine_begin_round(fl_engine_t *e) {
  if (e->state == ROUND_OPEN) return fl_err_set(FL_ESTATE, "round %u is still open", e->round);
  if (fl_engine_finished(e)) return fl_err_set(FL_ESTATE, "the run is finished");
  int rc = round_start_check(e);
  if (rc) return rc;
  /* The pool: available clients in ascending id order. With every client
   * available (fedlr-sim, or a full networked federation) the sample is the
   * same in both. */
  uint32_t round = e->rounds_done + 1;
  size_t k = 0;
  for (size_t i = 0; i < e->cap_clients; i++)
    if (sampleable(e, i, round)) e->pool[k++] = (uint32_t)i;
  /* Every available client is quarantined: they are all there is, so they
   * are sampled after all, and if they keep failing, --max-retries ends
   * the run rather than a wait that nothing could end. */
  if (k == 0)
    for (size_t i = 0; i < e->cap_clients; i++)
      if (e->clients[i].name && e->clients[i].available) e->pool[k++] = (uint32_t)i;
  if (k == 0) return fl_err_set(FL_EINVAL, "no clients available");
  size_t m = (size_t)ceil(e->cfg.fraction * (double)k - 1e-9);
  if (m < e->cfg.min_clients) m = e->cfg.min_clients;
  if (m < 1) m = 1;
  if (m > k) m = k;
  if (m > e->cap_sampled) {
    uint32_t *s = realloc(e->sampled, m * sizeof *s);
    if (s) e->sampled = s;
    uint8_t *r = realloc(e->reported, m);
    if (r) e->reported = r;
    double *l = realloc(e->slot_loss, m * sizeof *l);
    if (l) e->slot_loss = l;
    uint64_t *x = realloc(e->slot_examples, m * sizeof *x);
    if (x) e->slot_examples = x;
    uint64_t *g = realloc(e->slot_registered, m * sizeof *g);
    if (g) e->slot_registered = g;
    if (!s || !r || !l || !x || !g)
      return fl_err_set(FL_ENOMEM, "out of memory sampling %zu clients", m);
    e->cap_sampled = m;
  }
  if (e->cfg.aggregator != FL_AGG_FEDAVG && m > e->cap_store) {
    /* Fresh buffers, not realloc: the old rows need not be copied. */
    size_t P = e->cfg.model.num_params;
    free(e->store);
    free(e->sel);
    e->store = m <= SIZE_MAX / sizeof(float) / P ? malloc(m * P * sizeof *e->store) : NULL;
    e->sel = malloc(m * SEL_W * sizeof *e->sel);
    if (!e->store || !e->sel) {
      free(e->store);
      free(e->sel);
      e->store = e->sel = NULL;
      e->cap_store = 0;
      return fl_err_set(FL_ENOMEM,
                        "out of memory keeping the updates of %zu clients (%zu MiB) "
                        "for the robust aggregator",
                        m, m * P / 262144);
    }
    e->cap_store = m;
  }
  uint32_t *ids = e->pool;
  fl_rng_t rng;
  fl_rng_seed(&rng, fl_rng_derive(e->cfg.seed, FL_RNG_SAMPLE, round, e->attempt));
  for (size_t i = 0; i < m; i++) {
    size_t j = i + (size_t)fl_rng_below(&rng, k - i);
    uint32_t t = ids[i];
    ids[i] = ids[j];
    ids[j] = t;
  }
  memcpy(e->sampled, ids, m * sizeof *ids);
  qsort(e->sampled, m, sizeof *e->sampled, cmp_u32);
  e->num_sampled = m;
  e->num_reported = 0;
  memset(e->reported, 0, m);
  e->num_answered_bad = 0;
  /* What a client may claim is fixed for the round: one that rejoins
   * mid-round claiming more examples cannot raise its weight. */
  for (size_t i = 0; i < m; i++) {
    uint64_t n = e->clients[e->sampled[i]].num_examples;
    if (e->cfg.max_examples && n > e->cfg.max_examples) n = e->cfg.max_examples;
    e->slot_registered[i] = n;
  }
  e->num_rejected = e->num_clipped = e->num_capped = 0;
  memset(e->acc_hi, 0, e->cfg.model.num_params * sizeof *e->acc_hi);
  memset(e->acc_lo, 0, e->cfg.model.num_params * sizeof *e->acc_lo);
  e->acc_terms = 0;
  e->round = round;
  e->lr = round_lr(e, round);
  e->state = ROUND_OPEN;
  return 0;
}

uint32_t fl_engine_round(const fl_engine_t *e) {
  return e->round;
}
double fl_engine_round_lr(const fl_engine_t *e) {
  return e->lr;
}

size_t fl_engine_sampled(const fl_engine_t *e, const uint32_t **ids) {
  if (ids) *ids = e->sampled;
  return e->num_sampled;
}

/* Slot of client `id` in the sample, or -1. */
static long sampled_slot(const fl_engine_t *e, uint32_t id) {
  const uint32_t *p = bsearch(&id, e->sampled, e->num_sampled, sizeof id, cmp_u32);
  return p ? (long)(p - e->sampled) : -1;
}

int fl_engine_encode_round_start(const fl_engine_t *e, uint32_t id, uint8_t **buf, size_t *len) {
  if (e->state != ROUND_OPEN) return fl_err_set(FL_ESTATE, "no round is open");
  if (sampled_slot(e, id) < 0)
    return fl_err_set(FL_EINVAL, "client %u is not sampled in round %u", id, e->round);
  round_start_t m;
  round_start_fill(e, e->round, e->lr, fl_rng_derive(e->cfg.seed, FL_RNG_CLIENT, e->round, id), &m);
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_ROUND_START;
  env.round_start = &m.rs;
  return fl_wire_encode(&env, buf, len);
}

/* The fold: V += trunc(x * s) for the two-limb accumulator (hi, lo), s =
 * n_k * 2^40, returning 1 if any |x[i]| exceeded FL_ENGINE_MAX_DELTA or was
 * NaN (such values are folded as 0). The term t = x * s (one rounding, in
 * double) is split exactly: h = trunc(t / 2^54), l = t - h * 2^54 (exact:
 * its bits are t's low bits), so h * 2^54 + trunc(l) = trunc(t). Each term
 * depends only on this update and integer addition is associative, so the
 * sum does not depend on arrival order. trunc(-y) is -trunc(y), so folding
 * the same data with -s undoes a fold exactly: that is how a rejected
 * update is taken back. The range test works on the float's bits (|x| as an
 * integer) so the loop has no FP compares and vectorizes; the AVX-512
 * variant converts 8 doubles to int64 per instruction (vcvttpd2qq). Every
 * step is an exact IEEE operation, so both variants give the same bits. */
#define FOLD_BODY                                                                                  \
  uint32_t lim_bits;                                                                               \
  const float lim = (float)FL_ENGINE_MAX_DELTA;                                                    \
  memcpy(&lim_bits, &lim, sizeof lim_bits);                                                        \
  uint32_t bad = 0;                                                                                \
  for (size_t i = 0; i < n; i++) {                                                                 \
    uint32_t u;                                                                                    \
    memcpy(&u, &x[i], sizeof u);                                                                   \
    uint32_t out = (u & 0x7fffffffu) > lim_bits;                                                   \
    bad |= out;                                                                                    \
    u &= out - 1u; /* zero when out of range */                                                    \
    float v;                                                                                       \
    memcpy(&v, &u, sizeof v);                                                                      \
    double t = (double)v * s;                                                                      \
    int64_t h = (int64_t)(t * (1.0 / AGG_LIMB));                                                   \
    hi[i] += h;                                                                                    \
    lo[i] += (int64_t)(t - (double)h * AGG_LIMB);                                                  \
  }                                                                                                \
  return bad != 0;

static int fold_generic(int64_t *restrict hi, int64_t *restrict lo, const float *restrict x,
                        size_t n, double s) {
  FOLD_BODY
}

__attribute__((target("avx512f,avx512dq"))) static int fold_avx512(int64_t *restrict hi,
                                                                   int64_t *restrict lo,
                                                                   const float *restrict x,
                                                                   size_t n, double s) {
  FOLD_BODY
}

static int fold_limbs(int64_t *restrict hi, int64_t *restrict lo, const float *restrict x, size_t n,
                      double s) {
  static int use_avx512 = -1;
  if (use_avx512 < 0) use_avx512 = __builtin_cpu_supports("avx512dq") ? 1 : 0;
  return (use_avx512 ? fold_avx512 : fold_generic)(hi, lo, x, n, s);
}

/* Folds n values of an update into the accumulator at parameter `off`. */
static int fold(fl_engine_t *e, size_t off, const float *x, size_t n, double s) {
  return fold_limbs(e->acc_hi + off, e->acc_lo + off, x, n, s);
}

/* Carries lo into hi, leaving lo in [0, 2^54): the value hi * 2^54 + lo is
 * unchanged, and its representation is then unique, so it may run at any
 * time without changing a result. */
static void acc_normalize(fl_engine_t *e) {
  const size_t n = e->cfg.model.num_params;
  int64_t *restrict hi = e->acc_hi, *restrict lo = e->acc_lo;
  for (size_t i = 0; i < n; i++) {
    int64_t c = lo[i] >> AGG_LIMB_BITS; /* floor: GCC shifts signed values arithmetically */
    hi[i] += c;
    lo[i] -= c * ((int64_t)1 << AGG_LIMB_BITS);
  }
  e->acc_terms = 0;
}

/* Subtracts from a delta the global weights: turns a full-weights update
 * into a delta in place (in the decoded message, which we own). */
static void to_delta(float *restrict x, const float *restrict w, size_t n) {
  for (size_t i = 0; i < n; i++)
    x[i] -= w[i];
}

int fl_engine_submit(fl_engine_t *e, uint32_t sender, const uint8_t *buf, size_t len) {
  Fedlr__Envelope *env = NULL;
  int rc = fl_wire_decode(buf, len, &e->limits, &env);
  if (rc) return rc;
  if (env->body_case != FEDLR__ENVELOPE__BODY_UPDATE)
    rc = fl_err_set(FL_EPROTO, "expected an update from client %u, got message kind %d", sender,
                    (int)env->body_case);
  else
    rc = fl_engine_submit_update(e, sender, env->update);
  fl_wire_free(&env);
  return rc;
}

/* 1 if any |x[i]| exceeds FL_ENGINE_MAX_DELTA or is NaN: the fold's range
 * test without the fold, for the two-pass paths. */
static int values_bad(const float *restrict x, size_t n) {
  uint32_t lim_bits;
  const float lim = (float)FL_ENGINE_MAX_DELTA;
  memcpy(&lim_bits, &lim, sizeof lim_bits);
  uint32_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &x[i], sizeof u);
    bad |= (u & 0x7fffffffu) > lim_bits;
  }
  return bad != 0;
}

/* Sum of squares in double. Eight interleaved partial sums, added in a
 * fixed order at the end: the same bits on every run and machine, yet the
 * loop vectorizes (one sequential sum would not, without reassociation).
 * The square of a float is exact in double. */
static double sum_squares(const float *restrict x, size_t n) {
  double s[8] = {0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (size_t l = 0; l < 8; l++)
      s[l] += (double)x[i + l] * (double)x[i + l];
  for (; i < n; i++)
    s[i % 8] += (double)x[i] * (double)x[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* dst = f * x, rounded once to float (f = 1: a copy). */
static void scale_copy(float *restrict dst, const float *restrict x, size_t n, double f) {
  if (f == 1.0) {
    memcpy(dst, x, n * sizeof *dst);
    return;
  }
  for (size_t i = 0; i < n; i++)
    dst[i] = (float)((double)x[i] * f);
}

/* The detail of the first rejected value of tensor x (parameters from
 * `off`), which values_bad() or fold() found. */
static int value_error(uint32_t sender, const Fedlr__Tensor *x, size_t off) {
  size_t i = 0;
  while (i < x->n_data && fabsf(x->data[i]) <= (float)FL_ENGINE_MAX_DELTA)
    i++;
  if (i == x->n_data) i--; /* not reached: the caller found a bad value */
  if (isfinite(x->data[i]))
    return fl_err_set(FL_ERANGE, "update from client %u: value %g at parameter %zu exceeds %g",
                      sender, (double)x->data[i], off + i, FL_ENGINE_MAX_DELTA);
  return fl_err_set(FL_ENONFINITE, "update from client %u: tensor '%s' value %zu is %s", sender,
                    x->name, i, isnan(x->data[i]) ? "NaN" : "infinite");
}

int fl_engine_submit_update(fl_engine_t *e, uint32_t sender, Fedlr__Update *u) {
  int rc = 0, content = 0;
  if (e->state != ROUND_OPEN || u->round != e->round) {
    rc = fl_err_set(FL_ESTALE, "update from client %u is for round %u, current round is %u%s",
                    sender, u->round, e->round, e->state == ROUND_OPEN ? "" : " (closed)");
    goto out;
  }
  if (u->client_id != sender) {
    rc = fl_err_set(FL_EPROTO, "update from client %u claims to be from client %u", sender,
                    u->client_id);
    goto out;
  }
  long slot = sampled_slot(e, sender);
  if (slot < 0) {
    rc = fl_err_set(FL_EPROTO, "client %u was not sampled in round %u", sender, e->round);
    goto out;
  }
  if (e->reported[slot] == SLOT_REPORTED) {
    rc = fl_err_set(FL_ESTALE, "duplicate update from client %u in round %u", sender, e->round);
    goto out;
  }
  /* From here on a rejection is about what this sampled client sent. */
  content = 1;
  uint64_t claim = u->num_examples;
  int capped = e->cfg.max_examples && claim > e->cfg.max_examples;
  if (capped) claim = e->cfg.max_examples;
  if (claim == 0) {
    /* Its weight would be 0, and a round of such updates a division by 0. */
    rc = fl_err_set(FL_ERANGE, "update from client %u claims 0 examples", sender);
    goto out;
  }
  if (!(fabs(u->train_loss) <= FL_ENGINE_MAX_LOSS)) {
    rc = fl_err_set(FL_ERANGE, "update from client %u: train loss %g is beyond %g", sender,
                    u->train_loss, FL_ENGINE_MAX_LOSS);
    goto out;
  }
  if (claim > e->slot_registered[slot]) {
    rc = fl_err_set(FL_ERANGE,
                    "client %u claims %llu examples, it had registered %llu when "
                    "round %u began",
                    sender, (unsigned long long)u->num_examples,
                    (unsigned long long)e->slot_registered[slot], e->round);
    goto out;
  }
  const fl_model_spec_t *m = &e->cfg.model;
  rc = fl_wire_check_tensors(u->weights, u->n_weights, m);
  if (rc) goto out;
  /* The weight of this update alone (exact in double: claim <= 2^32). */
  const double s = (double)claim * FL_AGG_SCALE;
  if (!robust_rule(e) && e->acc_terms >= AGG_CARRY_EVERY) acc_normalize(e);
  const int robust = robust_rule(e);
  int clipped = 0;
  size_t off = 0, t;
  if (!robust && !(e->cfg.clip_norm > 0)) {
    /* FedAvg: fold straight from the decoded tensors (model order,
     * contiguous offsets), no copy of the update. If any value is out of
     * range, the tensors folded so far are folded back out, bit for bit, so
     * a rejected update leaves no trace. */
    for (t = 0; t < u->n_weights; t++) {
      Fedlr__Tensor *x = u->weights[t];
      if (!u->is_delta) to_delta(x->data, e->weights + off, x->n_data);
      if (fold(e, off, x->data, x->n_data, s)) break;
      off += x->n_data;
    }
    if (t < u->n_weights) {
      rc = value_error(sender, u->weights[t], off);
      for (size_t k = 0, o = 0; k <= t; k++) {
        fold(e, o, u->weights[k]->data, u->weights[k]->n_data, -s);
        o += u->weights[k]->n_data;
      }
      goto out;
    }
  } else {
    /* Clipping or a robust rule: the whole delta must be valid, and its
     * norm known, before any of it is folded or counts. A robust rule's
     * row may be written before that: it is read only once the slot has
     * reported. */
    const int clip = e->cfg.clip_norm > 0;
    float *row = robust ? e->store + (size_t)slot * m->num_params : NULL;
    double ss = 0;
    for (t = 0; t < u->n_weights; t++) {
      Fedlr__Tensor *x = u->weights[t];
      if (!u->is_delta) to_delta(x->data, e->weights + off, x->n_data);
      if (values_bad(x->data, x->n_data)) {
        rc = value_error(sender, x, off);
        goto out;
      }
      if (clip)
        ss += sum_squares(x->data, x->n_data);
      else
        memcpy(row + off, x->data, x->n_data * sizeof *row); /* robust, unclipped */
      off += x->n_data;
    }
    if (clip) {
      double f = 1.0, norm = sqrt(ss);
      if (norm > e->cfg.clip_norm) {
        f = e->cfg.clip_norm / norm;
        clipped = 1;
      }
      off = 0;
      for (t = 0; t < u->n_weights; t++) {
        const Fedlr__Tensor *x = u->weights[t];
        /* The FedAvg term f * n_k * delta, still rounded once. */
        if (robust)
          scale_copy(row + off, x->data, x->n_data, f);
        else
          fold(e, off, x->data, x->n_data, s * f);
        off += x->n_data;
      }
    }
  }
  if (!robust) e->acc_terms++;
  if (e->reported[slot] == SLOT_REJECTED) e->num_answered_bad--;
  e->reported[slot] = SLOT_REPORTED;
  e->slot_loss[slot] = u->train_loss;
  e->slot_examples[slot] = claim;
  e->num_reported++;
  e->num_clipped += (uint32_t)clipped;
  e->num_capped += (uint32_t)capped;
out:
  if (rc && content) {
    /* The client has had its say: the round need not wait for it
     * (fl_engine_has_answered), though a valid update may still follow
     * while the round is open. It is not sampled again before round
     * round + quarantine_rounds, this round's retries included. */
    if (e->reported[slot] != SLOT_REJECTED) e->num_answered_bad++;
    e->reported[slot] = SLOT_REJECTED;
    e->num_rejected++;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", fl_err_msg());
    fl_err_set(rc, "%s; client %u is not sampled again before round %u", msg, sender,
               fl_engine_quarantine(e, sender) + 1);
  }
  return rc;
}

uint32_t fl_engine_quarantine(fl_engine_t *e, uint32_t id) {
  if (id >= e->cap_clients || !e->clients[id].name) return 0;
  uint32_t through = e->round + e->cfg.quarantine_rounds;
  fl_client_rec_t *cr = &e->clients[id];
  if (cr->quarantined_through < through) cr->quarantined_through = through;
  return cr->quarantined_through;
}

size_t fl_engine_reported(const fl_engine_t *e) {
  return e->num_reported;
}

size_t fl_engine_quorum_need(const fl_engine_t *e) {
  /* A rejected update is an answer that carries nothing: the quorum is a
   * fraction of the updates that can still count, so that clients which
   * send garbage cannot hold a round below its quorum. */
  size_t could = e->num_sampled - e->num_answered_bad;
  size_t need = (size_t)ceil(e->cfg.quorum * (double)could - 1e-9);
  return need < 1 ? 1 : need;
}

int fl_engine_has_quorum(const fl_engine_t *e) {
  if (e->state != ROUND_OPEN || e->num_reported == 0) return 0;
  return e->num_reported >= fl_engine_quorum_need(e);
}

/* Evaluation in fixed chunks of FL_EVAL_BATCH test examples: thread t takes
 * chunks t, t+T, t+2T, ... and the per-chunk sums are added in chunk order,
 * so the result is the same bits whatever the number of threads T. */
static void eval_task(void *arg, size_t t) {
  fl_engine_t *e = arg;
  const fl_dataset_t *d = e->cfg.test;
  size_t chunks = (d->n + FL_EVAL_BATCH - 1) / FL_EVAL_BATCH;
  for (size_t c = t; c < chunks; c += e->eval_threads) {
    size_t at = c * FL_EVAL_BATCH, n = d->n - at < FL_EVAL_BATCH ? d->n - at : FL_EVAL_BATCH;
    e->chunk_loss[c] = 0;
    e->chunk_correct[c] = 0;
    fl_model_evaluate(&e->cfg.model, e->eval_ws[t], e->weights, d->x + at * d->dim, d->y + at, n,
                      &e->chunk_loss[c], &e->chunk_correct[c]);
  }
}

static void evaluate(fl_engine_t *e, double *loss, double *acc) {
  const fl_dataset_t *t = e->cfg.test;
  fl_parallel_for(e->eval_threads, eval_task, e);
  double loss_sum = 0;
  size_t correct = 0, chunks = (t->n + FL_EVAL_BATCH - 1) / FL_EVAL_BATCH;
  for (size_t c = 0; c < chunks; c++) {
    loss_sum += e->chunk_loss[c];
    correct += e->chunk_correct[c];
  }
  *loss = loss_sum / (double)t->n;
  *acc = (double)correct / (double)t->n;
}

/* Batcher's merge-exchange sorting network for n values (Knuth, TAOCP 3,
 * 5.2.2, Algorithm M): about n log2(n)^2 / 4 comparators (i, j), i < j,
 * for any n. Writes them to out (if not NULL); returns how many. */
static size_t batcher_network(size_t n, uint32_t *out) {
  size_t len = 0, t = 0;
  if (n < 2) return 0;
  while (((size_t)1 << t) < n)
    t++;
  for (size_t p = (size_t)1 << (t - 1); p > 0; p >>= 1) {
    size_t q = (size_t)1 << (t - 1), r = 0, d = p;
    for (;;) {
      for (size_t i = 0; i + d < n; i++) {
        if ((i & p) != r) continue;
        if (out) {
          out[2 * len] = (uint32_t)i;
          out[2 * len + 1] = (uint32_t)(i + d);
        }
        len++;
      }
      if (q == p) break;
      d = q - p;
      q >>= 1;
      r = p;
    }
  }
  return len;
}

/* The network for n values in e->net (kept while n does not change). */
static int ensure_network(fl_engine_t *e, size_t n) {
  if (e->net_n == n && (e->net || n < 2)) return 0;
  size_t len = batcher_network(n, NULL);
  uint32_t *net = len ? malloc(2 * len * sizeof *net) : NULL;
  if (len && !net) return fl_err_set(FL_ENOMEM, "out of memory sorting %zu updates", n);
  batcher_network(n, net);
  free(e->net);
  e->net = net;
  e->net_n = n;
  e->net_len = len;
  return 0;
}

/* Sorts each of the first w columns of v (rows of SEL_W floats) ascending:
 * for every comparator (i, j), row i takes the lane-wise min and row j the
 * max. The same branch-free steps for every column, so the lanes are SIMD
 * lanes; min and max are exact, so every variant gives the same bits. The
 * compare-exchange is a function of its own so that its rows are restrict
 * parameters (GCC then emits compare + blend; with the rows as locals it
 * versioned the loop and branched on the data). */
#define CMPX_BODY                                                                                  \
  for (size_t l = 0; l < w; l++) {                                                                 \
    float x = a[l], y = b[l];                                                                      \
    float lo = x < y ? x : y, hi = y > x ? y : x;                                                  \
    a[l] = lo;                                                                                     \
    b[l] = hi;                                                                                     \
  }
#define SORT_BODY(cmpx)                                                                            \
  for (size_t c = 0; c < len; c++)                                                                 \
    cmpx(v + (size_t)net[2 * c] * SEL_W, v + (size_t)net[2 * c + 1] * SEL_W, w);

static inline void cmpx_generic(float *restrict a, float *restrict b, size_t w) {
  CMPX_BODY
}

static void sort_columns_generic(float *v, size_t w, const uint32_t *net, size_t len) {
  SORT_BODY(cmpx_generic)
}

__attribute__((target("avx512f"))) static inline void cmpx_avx512(float *restrict a,
                                                                  float *restrict b, size_t w) {
  CMPX_BODY
}

__attribute__((target("avx512f"))) static void
sort_columns_avx512(float *v, size_t w, const uint32_t *net, size_t len) {
  SORT_BODY(cmpx_avx512)
}

static void sort_columns(float *v, size_t w, const uint32_t *net, size_t len) {
  static int use_avx512 = -1;
  if (use_avx512 < 0) use_avx512 = __builtin_cpu_supports("avx512f") ? 1 : 0;
  (use_avx512 ? sort_columns_avx512 : sort_columns_generic)(v, w, net, len);
}

/* global += coordinate-wise median or trimmed mean of the reported slots'
 * deltas. A block of SEL_W coordinates at a time: the r reported rows are
 * copied (in slot order) into r x SEL_W scratch, sorted column-wise, and
 * the statistic is read off the sorted rows, in double, in a fixed order.
 * Median: the middle value, or the mean of the two middle ones. Trimmed
 * mean: the mean of sorted rows b .. r-b-1, b = floor(beta r). */
static int robust_apply(fl_engine_t *e) {
  const size_t P = e->cfg.model.num_params, r = e->num_reported;
  int rc = ensure_network(e, r);
  if (rc) return rc;
  const float **rows = malloc(r * sizeof *rows);
  if (!rows) return fl_err_set(FL_ENOMEM, "out of memory aggregating %zu updates", r);
  for (size_t i = 0, k = 0; i < e->num_sampled; i++)
    if (e->reported[i] == SLOT_REPORTED) rows[k++] = e->store + i * P;
  size_t lo = 0, hi = r; /* the sorted rows averaged: [lo, hi) */
  if (e->cfg.aggregator == FL_AGG_MEDIAN) {
    lo = (r - 1) / 2;
    hi = r / 2 + 1;
  } else {
    /* + 1e-9: beta * r = 2 must not come out as 1.999... */
    size_t b = (size_t)floor(e->cfg.trim_beta * (double)r + 1e-9);
    if (2 * b >= r) b = (r - 1) / 2; /* not reached for beta < 0.5 */
    lo = b;
    hi = r - b;
  }
  const double cnt = (double)(hi - lo);
  float *v = e->sel;
  double sum[SEL_W];
  for (size_t j = 0; j < P; j += SEL_W) {
    size_t w = P - j < SEL_W ? P - j : SEL_W;
    for (size_t k = 0; k < r; k++)
      memcpy(v + k * SEL_W, rows[k] + j, w * sizeof *v);
    sort_columns(v, w, e->net, e->net_len);
    for (size_t l = 0; l < w; l++)
      sum[l] = 0;
    for (size_t k = lo; k < hi; k++)
      for (size_t l = 0; l < w; l++)
        sum[l] += (double)v[k * SEL_W + l];
    for (size_t l = 0; l < w; l++)
      e->weights[j + l] += (float)(sum[l] / cnt);
  }
  free(rows);
  return 0;
}

int fl_engine_end_round(fl_engine_t *e, fl_round_metrics_t *m) {
  if (!fl_engine_has_quorum(e))
    return fl_err_set(FL_ESTATE, "round %u has %zu of %zu updates, below quorum", e->round,
                      e->num_reported, e->num_sampled);
  /* Weights come from the accepted updates only: R is the sum of their
   * (capped) claims, each <= 2^32, at most 2^24 of them: no overflow. */
  uint64_t reported_examples = 0;
  double loss_sum = 0;
  for (size_t i = 0; i < e->num_sampled; i++) {
    if (e->reported[i] != SLOT_REPORTED) continue;
    reported_examples += e->slot_examples[i];
    loss_sum += e->slot_loss[i] * (double)e->slot_examples[i];
  }
  if (robust_rule(e)) {
    int rc = robust_apply(e);
    if (rc) return rc;
  } else {
    /* V = sum_k n_k delta_k * 2^40 exactly; the mean is V / 2^40 / R. The
     * canonical limbs make the conversion, hence the bits, independent of
     * when carries happened. */
    acc_normalize(e);
    const double inv = 1.0 / (double)reported_examples;
    const double hi_scale = AGG_LIMB / FL_AGG_SCALE; /* 2^14 */
    const size_t n = e->cfg.model.num_params;
    for (size_t i = 0; i < n; i++) {
      double v = (double)e->acc_hi[i] * hi_scale + (double)e->acc_lo[i] * (1.0 / FL_AGG_SCALE);
      e->weights[i] += (float)(v * inv);
    }
  }

  memset(m, 0, sizeof *m);
  m->round = e->round;
  m->rounds_total = e->cfg.rounds;
  m->lr = e->lr;
  m->clients_sampled = (uint32_t)e->num_sampled;
  m->clients_reported = (uint32_t)e->num_reported;
  m->train_loss = loss_sum / (double)reported_examples;
  m->rejected = e->num_rejected;
  m->clipped = e->num_clipped;
  m->capped = e->num_capped;
  m->test_loss = NAN;
  m->test_accuracy = NAN;
  e->rounds_done = e->round;
  e->attempt = 0;
  e->state = ROUND_IDLE;
  int last = e->rounds_done >= e->cfg.rounds;
  if (e->cfg.test && (e->round % e->cfg.eval_every == 0 || last)) {
    evaluate(e, &m->test_loss, &m->test_accuracy);
    fl_plateau_observe(&e->cfg.sched, &e->plateau, m->test_loss);
    if (m->test_accuracy > e->best_accuracy) e->best_accuracy = m->test_accuracy;
    if (e->cfg.target_accuracy > 0 && m->test_accuracy >= e->cfg.target_accuracy)
      e->target_reached = 1;
  }
  return 0;
}

int fl_engine_finished(const fl_engine_t *e) {
  return e->state == ROUND_IDLE && (e->rounds_done >= e->cfg.rounds || e->target_reached);
}

uint32_t fl_engine_rounds_done(const fl_engine_t *e) {
  return e->rounds_done;
}

int fl_engine_abort_round(fl_engine_t *e) {
  if (e->state != ROUND_OPEN) return fl_err_set(FL_ESTATE, "no round is open");
  size_t reported = e->num_reported, bad = e->num_answered_bad, m = e->num_sampled;
  e->state = ROUND_IDLE;
  e->num_reported = 0;
  e->attempt++;
  if (e->cfg.max_retries && e->attempt > e->cfg.max_retries)
    return fl_err_set(FL_ESTATE,
                      "round %u was abandoned %u times in a row (the last time %zu of %zu sampled "
                      "clients reported, %zu updates were rejected): no progress is possible with "
                      "these clients",
                      e->round, e->attempt, reported, m, bad);
  return 0;
}

uint32_t fl_engine_attempt(const fl_engine_t *e) {
  return e->attempt;
}

int fl_engine_is_sampled(const fl_engine_t *e, uint32_t id) {
  return e->state == ROUND_OPEN && sampled_slot(e, id) >= 0;
}

int fl_engine_has_reported(const fl_engine_t *e, uint32_t id) {
  long slot = e->state == ROUND_OPEN ? sampled_slot(e, id) : -1;
  return slot >= 0 && e->reported[slot] == SLOT_REPORTED;
}

int fl_engine_has_answered(const fl_engine_t *e, uint32_t id) {
  long slot = e->state == ROUND_OPEN ? sampled_slot(e, id) : -1;
  return slot >= 0 && e->reported[slot] != SLOT_NONE;
}

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

/* Writes the quarantine still running after `rounds_done` as "ID:THROUGH"
 * items, comma-separated, ascending ids: the registered clients', and the
 * restored ones of clients that have not rejoined yet. FL_ETOOBIG if it
 * does not fit `cap`. */
static int quarantine_format(const fl_engine_t *e, char *buf, size_t cap) {
  size_t at = 0;
  buf[0] = '\0';
  for (size_t i = 0, r = 0; i < e->cap_clients || r < e->num_q_restore;) {
    uint32_t id, through;
    if (r < e->num_q_restore && (i >= e->cap_clients || e->q_restore[2 * r] <= i)) {
      id = e->q_restore[2 * r];
      through = e->q_restore[2 * r + 1];
      if (id == i) i++; /* a registered client: its own record wins */
      if (id < e->cap_clients && e->clients[id].name) through = e->clients[id].quarantined_through;
      r++;
    } else {
      id = (uint32_t)i;
      through = e->clients[i].name ? e->clients[i].quarantined_through : 0;
      i++;
    }
    if (through <= e->rounds_done) continue;
    int n = snprintf(buf + at, cap - at, "%s%u:%u", at ? "," : "", id, through);
    if (n < 0 || (size_t)n >= cap - at)
      return fl_err_set(FL_ETOOBIG, "too many quarantined clients to checkpoint (%zu bytes)", cap);
    at += (size_t)n;
  }
  return 0;
}

int fl_engine_save(const fl_engine_t *e, const char *path) {
  if (e->state == ROUND_OPEN) return fl_err_set(FL_ESTATE, "cannot checkpoint inside a round");
  char v[CK_NUM][40];
  char *quarantine = malloc(FL_SAFETENSORS_META_VALUE);
  if (!quarantine) return fl_err_set(FL_ENOMEM, "out of memory writing %s", path);
  int rc = quarantine_format(e, quarantine, FL_SAFETENSORS_META_VALUE);
  snprintf(v[CK_ROUNDS], sizeof v[0], "%u", e->rounds_done);
  snprintf(v[CK_SEED], sizeof v[0], "%llu", (unsigned long long)e->cfg.seed);
  snprintf(v[CK_BEST], sizeof v[0], "%a", e->plateau.best);
  snprintf(v[CK_SCALE], sizeof v[0], "%a", e->plateau.scale);
  snprintf(v[CK_BAD], sizeof v[0], "%u", e->plateau.num_bad);
  snprintf(v[CK_COOL], sizeof v[0], "%u", e->plateau.cooldown_left);
  snprintf(v[CK_ACC], sizeof v[0], "%a", e->best_accuracy);
  snprintf(v[CK_TARGET], sizeof v[0], "%d", e->target_reached);
  const char *meta[2 * CK_NUM + 1];
  for (int i = 0; i < CK_NUM; i++) {
    meta[2 * i] = ck_keys[i];
    meta[2 * i + 1] = i == CK_QUARANTINE ? quarantine : v[i];
  }
  meta[2 * CK_NUM] = NULL;
  if (!rc) rc = fl_safetensors_save(path, &e->cfg.model, e->weights, meta);
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
 * FL_MAX_CLIENTS and each THROUGH in (rounds_done, rounds_done +
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
    if ((*end != ',' && *end != '\0') || id >= FL_MAX_CLIENTS || th <= st->rounds_done ||
        th > (unsigned long long)st->rounds_done + e->cfg.quarantine_rounds ||
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
                e->cfg.quarantine_rounds);
}

/* Decimal digits only, as fl_engine_save writes them (strtoull alone would
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
  const fl_engine_config_t *c = &e->cfg;
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
  const fl_model_spec_t *m = &e->cfg.model;
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

int fl_engine_load(fl_engine_t *e, const char *path) {
  if (e->state == ROUND_OPEN) return fl_err_set(FL_ESTATE, "cannot restore inside a round");
  const size_t n = e->cfg.model.num_params;
  float *w = malloc(n * sizeof *w); /* (num_params) staged: the engine changes only at the end */
  fl_safetensors_meta_t *meta = malloc(sizeof *meta);
  ck_state_t st = {0};
  int rc = w && meta ? 0 : fl_err_set(FL_ENOMEM, "out of memory restoring %s", path);
  if (rc) goto out;
  /* One read of the file: the weights, the metadata and the checksum over
   * both, so what is checked is what was checksummed. */
  if ((rc = fl_safetensors_load_all(path, &e->cfg.model, w, FL_SAFETENSORS_NEED_CHECKSUM, meta)))
    goto out;
  if ((rc = ck_state(e, path, meta, &st))) goto out;
  if ((rc = ck_weights(e, path, w))) goto out;
  memcpy(e->weights, w, n * sizeof *w);
  /* The quarantine goes on: for clients registered now, and for those
   * that rejoin later (fl_engine_add_client_at). */
  free(e->q_restore);
  e->q_restore = st.quarantine;
  e->num_q_restore = st.num_quarantine;
  st.quarantine = NULL;
  for (size_t i = 0; i < e->cap_clients; i++)
    if (e->clients[i].name) e->clients[i].quarantined_through = restored_quarantine(e, (uint32_t)i);
  e->rounds_done = st.rounds_done;
  e->round = st.rounds_done;
  e->plateau = st.plateau;
  e->best_accuracy = st.best_accuracy;
  e->target_reached = st.target_reached;
  e->attempt = 0;
out:
  free(st.quarantine);
  free(w);
  free(meta);
  return rc;
}

const float *fl_engine_weights(const fl_engine_t *e) {
  return e->weights;
}
const fl_model_spec_t *fl_engine_model(const fl_engine_t *e) {
  return &e->cfg.model;
}
const fl_wire_limits_t *fl_engine_limits(const fl_engine_t *e) {
  return &e->limits;
}
