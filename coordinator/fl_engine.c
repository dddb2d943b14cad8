/* fl_engine.c: the round engine (fl_engine.h): configuration, clients,
 * sampling, updates and aggregation, the run state. Its evaluation is in
 * fl_engine_eval.c; the state both share in fl_engine_int.h. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_agg.h"
#include "fl_engine_int.h"
#include "fl_error.h"
#include "fl_gemm.h"
#include "fl_rng.h"

/* Prefixes the detail message of a failed parse with the flag's name. */
static int flag_error(const char *flag, int rc) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s", fl_err_msg());
  return fl_err_set(rc, "%s: %s", flag, msg);
}

int fl_engine_agg_from(fl_agg_config_t *agg, const fl_config_t *c) {
  fl_agg_config_t a = {.clip_norm = c->clip_norm};
  int rc = fl_agg_parse(c->aggregator, &a);
  if (rc) return flag_error("--aggregator", rc);
  *agg = a;
  return 0;
}

int fl_engine_config_from(fl_engine_config_t *ec, const fl_config_t *c, const fl_agg_config_t *agg,
                          const fl_init_t *init, size_t input_dim, const fl_shape_t *data_shape,
                          size_t num_classes, const fl_dataset_t *test) {
  int rc;
  memset(ec, 0, sizeof *ec);
  fl_shape_t shape = {0, 0, 0};
  if (init && init->custom) {
    if (c->input_shape[0])
      return fl_err_set(FL_EINVAL,
                        "--input-shape %s: a custom model (--init %s) is its clients' "
                        "code, which knows its input; fedlr does not use a shape",
                        c->input_shape, init->path);
  } else if ((rc = fl_shape_resolve(c->input_shape, data_shape, input_dim, &shape))) {
    return rc;
  }
  if (init) {
    if ((rc = fl_init_model(init, input_dim, &shape, num_classes, &ec->model)))
      return init->layout ? rc : flag_error("--model", rc);
    ec->init_weights = init->weights;
  } else if ((rc = fl_model_parse_shape(c->model, input_dim, &shape, num_classes, &ec->model))) {
    return flag_error("--model", rc);
  }
  if ((rc = fl_sched_parse_lr0(c->lr, ec->model.num_params, &ec->lr0)))
    return flag_error("--lr", rc);
  if ((rc = fl_sched_parse(c->schedule, &ec->sched))) return flag_error("--schedule", rc);
  if ((rc = fl_optim_parse(c->optimizer, &ec->optim))) return flag_error("--optimizer", rc);
  if ((rc = fl_sopt_parse(c->server_optimizer, &ec->server_optim)))
    return flag_error("--server-optimizer", rc);
  if ((rc = fl_sched_parse(c->server_schedule, &ec->server_sched)))
    return flag_error("--server-schedule", rc);
  ec->server_lr = c->server_lr;
  ec->prox_mu = c->prox_mu;
  /* Checked by fl_config_parse() (fl_sched_parse_local), as every client
   * checks what it receives. */
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
  ec->eval_fraction = c->eval_fraction;
  ec->target_accuracy = c->target_accuracy;
  ec->quorum = c->quorum;
  ec->aggregator = agg->kind;
  ec->trim_beta = agg->trim_beta;
  ec->clip_norm = agg->clip_norm;
  ec->max_examples = c->max_examples;
  ec->quarantine_rounds = c->quarantine;
  ec->max_retries = c->max_retries;
  snprintf(ec->lr_spec, sizeof ec->lr_spec, "%s", c->lr);
  ec->clients = c->clients;
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
  if (!(cfg->server_lr > 0) || !isfinite(cfg->server_lr)) {
    rc = fl_err_set(FL_EINVAL, "server learning rate %g must be positive and finite",
                    cfg->server_lr);
    goto fail;
  }
  if (!(cfg->prox_mu >= 0 && cfg->prox_mu <= FL_WIRE_MAX_PROX_MU)) {
    rc = fl_err_set(FL_EINVAL, "FedProx mu %g must be in [0, %g]", cfg->prox_mu,
                    FL_WIRE_MAX_PROX_MU);
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
  if (cfg->rounds == 0 || cfg->local_epochs == 0 || cfg->batch_size == 0) {
    rc = fl_err_set(FL_EINVAL, "rounds, local epochs and batch size must be positive");
    goto fail;
  }
  if (!(cfg->eval_fraction >= 0 && cfg->eval_fraction <= 1)) {
    rc = fl_err_set(FL_EINVAL, "evaluation fraction %g must be in [0, 1]", cfg->eval_fraction);
    goto fail;
  }
  if (!fl_model_is_builtin(&cfg->model) && (cfg->test || !cfg->init_weights)) {
    rc = fl_err_set(FL_EINVAL, "a custom model needs its initial weights and has no test set");
    goto fail;
  }
  if (fl_sopt_num_state(&cfg->server_optim) > 0 && cfg->model.layout) {
    for (size_t t = 0; t < cfg->model.layout->n; t++) {
      const char *name = cfg->model.layout->t[t].name;
      if (strncmp(name, FL_ENGINE_STATE_PREFIX, strlen(FL_ENGINE_STATE_PREFIX)) == 0) {
        rc = fl_err_set(FL_EINVAL,
                        "model tensor '%s': names beginning with '%s' are the server "
                        "optimizer's in checkpoints; rename it",
                        name, FL_ENGINE_STATE_PREFIX);
        goto fail;
      }
    }
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
  e->weights = fl_gemm_alloc(n);
  if (!e->weights) goto fail;
  if ((rc = fl_wire_tensors_init(&e->tv, &cfg->model, e->weights))) goto fail;
  fl_agg_config_t ac = {cfg->aggregator, cfg->trim_beta, cfg->clip_norm};
  if (!(e->agg = fl_agg_new(&ac, n, &rc))) goto fail;
  if ((rc = fl_engine__eval_setup(e))) goto fail;
  if (!(e->fedeval = fl_fedeval_new())) goto fail;
  if (cfg->init_weights) {
    size_t bad = n;
    for (size_t i = 0; i < n && bad == n; i++)
      if (!(fabs(cfg->init_weights[i]) <= FL_ENGINE_MAX_WEIGHT)) bad = i;
    if (bad < n) {
      rc = fl_err_set(FL_ERANGE, "initial weight %zu is %g: weights must be finite and at most %g",
                      bad, (double)cfg->init_weights[bad], FL_ENGINE_MAX_WEIGHT);
      goto fail;
    }
    memcpy(e->weights, cfg->init_weights, n * sizeof *e->weights);
  } else {
    fl_model_init(&cfg->model, e->weights, fl_rng_derive(cfg->seed, FL_RNG_INIT, 0, 0));
  }
  e->cfg.init_weights = NULL; /* borrowed: not kept */
  fl_plateau_init(&e->plateau);
  fl_plateau_init(&e->server_plateau);
  const fl_sopt_config_t *so = &cfg->server_optim;
  if (so->kind != FL_SOPT_FEDAVG || cfg->server_lr != 1 ||
      cfg->server_sched.kind != FL_SCHED_CONST || cfg->server_sched.warmup) {
    if (!(e->pseudo = malloc(n * sizeof *e->pseudo))) goto fail;
    for (size_t i = 0; i < fl_sopt_num_state(so); i++)
      if (!(e->sopt_state[i] = malloc(n * sizeof *e->sopt_state[i]))) goto fail;
    fl_sopt_init(so, e->sopt_state, n);
  }
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
  fl_wire_tensors_free(&e->tv);
  fl_agg_destroy(&e->agg);
  fl_engine__eval_free(e);
  free(e->sampled);
  free(e->reported);
  free(e->slot_loss);
  free(e->slot_examples);
  free(e->slot_registered);
  free(e->q_restore);
  fl_fedeval_destroy(&e->fedeval);
  free(e->eval_max);
  free(e->pseudo);
  for (size_t i = 0; i < FL_SOPT_MAX_STATE; i++)
    free(e->sopt_state[i]);
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
  uint64_t *em = realloc(e->eval_max, cap * sizeof *em);
  if (!em) return fl_err_set(FL_ENOMEM, "out of memory registering clients");
  e->eval_max = em;
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
  if (id >= FL_ENGINE_MAX_CLIENTS)
    return fl_err_set(FL_ETOOBIG, "client id %u is beyond the limit of %u clients", id,
                      FL_ENGINE_MAX_CLIENTS);
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
  e->clients[id] = (fl_client_rec_t){copy, num_examples, 1, restored_quarantine(e, id), 0, 0};
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

int fl_engine_set_eval_examples(fl_engine_t *e, uint32_t id, uint64_t n) {
  if (id >= e->cap_clients || !e->clients[id].name)
    return fl_err_set(FL_ENOENT, "no client %u", id);
  if (n > FL_ENGINE_MAX_EXAMPLES)
    return fl_err_set(FL_ERANGE, "client %u declares %llu evaluation examples, more than %llu", id,
                      (unsigned long long)n, (unsigned long long)FL_ENGINE_MAX_EXAMPLES);
  e->clients[id].eval_examples = n;
  return 0;
}

size_t fl_engine_num_clients(const fl_engine_t *e) {
  return e->num_clients;
}
size_t fl_engine_num_available(const fl_engine_t *e) {
  return e->num_available;
}

int fl_engine_is_available(const fl_engine_t *e, uint32_t id) {
  return id < e->cap_clients && e->clients[id].name && e->clients[id].available;
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

int fl_engine__cmp_u32(const void *a, const void *b) {
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
} round_start_t;

/* The RoundStart of round `round` at rate `lr` with the global weights, for
 * a client whose training seed is `seed`. */
static void round_start_fill(const fl_engine_t *e, uint32_t round, double lr, uint64_t seed,
                             round_start_t *m) {
  const fl_engine_config_t *c = &e->cfg;
  fl_wire_optim_to(&c->optim, &m->opt);
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
  rs.n_weights = e->tv.n;
  rs.weights = e->tv.ptrs;
  rs.attempt = e->attempt + 1;
  rs.prox_mu = (float)c->prox_mu;
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
  if (e->state == EVAL_OPEN)
    return fl_err_set(FL_ESTATE, "round %u is still being evaluated", e->round);
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
  if ((rc = fl_agg_begin(e->agg, m))) return rc;
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
  qsort(e->sampled, m, sizeof *e->sampled, fl_engine__cmp_u32);
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
  e->round = round;
  e->lr = round_lr(e, round);
  e->server_lr = fl_sched_lr(&e->cfg.server_sched, e->cfg.server_lr, round - 1, &e->server_plateau);
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
  const uint32_t *p = bsearch(&id, e->sampled, e->num_sampled, sizeof id, fl_engine__cmp_u32);
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

int fl_engine_submit_update(fl_engine_t *e, uint32_t sender, Fedlr__Update *u) {
  int rc = 0, content = 0;
  if (e->state != ROUND_OPEN || u->round != e->round) {
    rc = fl_err_set(FL_ESTALE, "update from client %u is for round %u, current round is %u%s",
                    sender, u->round, e->round, e->state == ROUND_OPEN ? "" : " (closed)");
    goto out;
  }
  if (u->attempt != 0 && u->attempt != e->attempt + 1) {
    rc = fl_err_set(FL_ESTALE,
                    "update from client %u is for attempt %u of round %u, the current attempt "
                    "is %u",
                    sender, u->attempt, e->round, e->attempt + 1);
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
  int clipped = 0;
  rc = fl_agg_add(e->agg, (size_t)slot, sender, u->weights, u->n_weights, u->is_delta, e->weights,
                  claim, &clipped);
  if (rc) goto out;
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

/* global moves by the round's aggregate: added as is (plain FedAvg at
 * server rate 1), or as the server optimizer's step with it. */
static int server_step(fl_engine_t *e) {
  if (!e->pseudo) return fl_agg_apply(e->agg, e->weights);
  int rc = fl_agg_result(e->agg, e->pseudo);
  if (rc) return rc;
  fl_sopt_step(&e->cfg.server_optim, e->server_lr, e->weights, e->pseudo, e->sopt_state,
               e->cfg.model.num_params);
  return 0;
}

int fl_engine_end_round(fl_engine_t *e, fl_round_metrics_t *m) {
  if (!fl_engine_has_quorum(e))
    return fl_err_set(FL_ESTATE, "round %u has %zu of %zu updates, below quorum", e->round,
                      e->num_reported, e->num_sampled);
  /* The train loss, example-weighted over the accepted updates (the
   * aggregate is fl_agg's: from the accepted updates alone). */
  uint64_t reported_examples = 0;
  double loss_sum = 0;
  for (size_t i = 0; i < e->num_sampled; i++) {
    if (e->reported[i] != SLOT_REPORTED) continue;
    reported_examples += e->slot_examples[i];
    loss_sum += e->slot_loss[i] * (double)e->slot_examples[i];
  }
  int rc = server_step(e);
  if (rc) return rc;

  memset(m, 0, sizeof *m);
  m->round = e->round;
  m->rounds_total = e->cfg.rounds;
  m->lr = e->lr;
  m->server_lr = e->server_lr;
  m->clients_sampled = (uint32_t)e->num_sampled;
  m->clients_reported = (uint32_t)e->num_reported;
  m->train_loss = loss_sum / (double)reported_examples;
  m->rejected = e->num_rejected;
  m->clipped = e->num_clipped;
  m->capped = e->num_capped;
  e->rounds_done = e->round;
  e->attempt = 0;
  e->state = ROUND_IDLE;
  return fl_engine__after_round(e, m);
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

void fl_engine_get_state(const fl_engine_t *e, fl_engine_state_t *st) {
  st->rounds_done = e->rounds_done;
  st->plateau = e->plateau;
  st->server_plateau = e->server_plateau;
  st->best_accuracy = e->best_accuracy;
  st->target_reached = e->target_reached;
}

size_t fl_engine_quarantine_list(const fl_engine_t *e, uint32_t *pairs, size_t cap) {
  /* The registered clients' quarantine, merged (by ascending id) with the
   * restored one of clients that have not rejoined yet. */
  size_t n = 0;
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
    if (n < cap) {
      pairs[2 * n] = id;
      pairs[2 * n + 1] = through;
    }
    n++;
  }
  return n;
}

int fl_engine_set_state(fl_engine_t *e, const fl_engine_state_t *st, const float *weights,
                        const uint32_t *quarantine, size_t nq) {
  if (e->state != ROUND_IDLE) return fl_err_set(FL_ESTATE, "cannot restore inside a round");
  uint32_t *q = nq ? malloc(2 * nq * sizeof *q) : NULL;
  if (nq && !q) return fl_err_set(FL_ENOMEM, "out of memory restoring the quarantine");
  if (nq) memcpy(q, quarantine, 2 * nq * sizeof *q);
  memcpy(e->weights, weights, e->cfg.model.num_params * sizeof *e->weights);
  /* The quarantine goes on: for clients registered now, and for those
   * that rejoin later (fl_engine_add_client_at). */
  free(e->q_restore);
  e->q_restore = q;
  e->num_q_restore = nq;
  for (size_t i = 0; i < e->cap_clients; i++)
    if (e->clients[i].name) e->clients[i].quarantined_through = restored_quarantine(e, (uint32_t)i);
  e->rounds_done = st->rounds_done;
  e->round = st->rounds_done;
  e->plateau = st->plateau;
  e->server_plateau = st->server_plateau;
  e->best_accuracy = st->best_accuracy;
  e->target_reached = st->target_reached;
  e->attempt = 0;
  return 0;
}

const fl_engine_config_t *fl_engine_config(const fl_engine_t *e) {
  return &e->cfg;
}

int fl_engine_round_open(const fl_engine_t *e) {
  return e->state == ROUND_OPEN;
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

double fl_engine_server_lr(const fl_engine_t *e) {
  return e->server_lr;
}

size_t fl_engine_server_state(const fl_engine_t *e, const float *const **vecs) {
  if (vecs) *vecs = (const float *const *)e->sopt_state;
  return e->pseudo ? fl_sopt_num_state(&e->cfg.server_optim) : 0;
}

int fl_engine_set_server_state(fl_engine_t *e, const float *const *vecs) {
  if (e->state != ROUND_IDLE) return fl_err_set(FL_ESTATE, "cannot restore inside a round");
  size_t n = fl_engine_server_state(e, NULL);
  for (size_t i = 0; i < n; i++)
    memcpy(e->sopt_state[i], vecs[i], e->cfg.model.num_params * sizeof *e->sopt_state[i]);
  return 0;
}
