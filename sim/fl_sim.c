/* fl_sim: see fl_sim.h. */
#include "fl_sim.h"

#include <float.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_attack.h"
#include "fl_blas.h"
#include "fl_engine.h"
#include "fl_error.h"
#include "fl_init.h"
#include "fl_partition.h"
#include "fl_rng.h"
#include "fl_trainer.h"
#include "fl_wire.h"

#define EVAL_JOB 0x80000000u  /* a job id with this bit: evaluate, not train */
#define TRAINERS_PER_WORKER 4 /* workspaces a worker keeps, one per model it met */

/* The current error with `what: ` before it (fl_err_set must not read the
 * buffer it writes). */
static int prefixed(int rc, const char *what) {
  char inner[600];
  snprintf(inner, sizeof inner, "%s", fl_err_msg());
  return fl_err_set(rc, "%s: %s", what, inner);
}

/* ---- the pool ---- */

typedef struct {
  fl_sim_t *sim;
  uint32_t id; /* client id, | EVAL_JOB */
} job_t;

typedef struct {
  fl_sim_pool_t *pool;
  pthread_t thread;
  /* trainer workspaces by model, the last used first */
  fl_trainer_t *tr[TRAINERS_PER_WORKER];
  fl_model_spec_t model[TRAINERS_PER_WORKER];
} worker_t;

struct fl_sim_pool {
  pthread_mutex_t mu; /* guards the queue and quit */
  pthread_cond_t work;
  job_t *jobs; /* a FIFO: [head, len) */
  size_t head, len, cap;
  int quit;
  size_t num_workers;
  worker_t workers[FL_SIM_MAX_WORKERS];
};

/* ---- a run ---- */

struct fl_sim {
  fl_sim_pool_t *pool;
  fl_sim_config_t c;
  fl_config_t cfg;
  fl_init_t init;
  fl_agg_config_t agg;
  fl_attack_t attack;
  fl_engine_config_t ec;
  fl_partition_t *part;
  uint8_t *attacker; /* (clients) 1 = this client runs the attack */
  /* --holdout: each client's partition split into training and evaluation
   * rows, client i's at [off[i], off[i+1]) of idx (NULL: no holdout) */
  uint32_t *train_idx, *eval_idx;
  size_t *train_off, *eval_off;
  /* `mu` guards every field below it and every call into the run */
  pthread_mutex_t mu;
  pthread_cond_t changed; /* finished, paused, or a job drained */
  fl_run_t *run;
  int started;     /* fl_sim_start was called */
  size_t inflight; /* jobs queued or running */
  char why[1024];
};

static int models_equal(const fl_model_spec_t *a, const fl_model_spec_t *b) {
  if (a->num_layers != b->num_layers || a->num_params != b->num_params) return 0;
  if (strcmp(a->spec, b->spec) != 0) return 0;
  for (size_t i = 0; i <= a->num_layers; i++)
    if (a->dims[i] != b->dims[i]) return 0;
  return 1;
}

/* The worker's trainer for `m`: a kept one, or a new one in place of the
 * least recently used. NULL without memory. */
static fl_trainer_t *worker_trainer(worker_t *w, const fl_model_spec_t *m) {
  size_t i = 0;
  while (i < TRAINERS_PER_WORKER && w->tr[i] && !models_equal(&w->model[i], m))
    i++;
  if (i == TRAINERS_PER_WORKER) {
    i = TRAINERS_PER_WORKER - 1;
    fl_trainer_destroy(&w->tr[i]);
  }
  fl_trainer_t *t = w->tr[i];
  fl_model_spec_t spec = t ? w->model[i] : *m;
  if (!t && !(t = fl_trainer_new(m))) return NULL;
  /* move to the front */
  memmove(&w->tr[1], &w->tr[0], i * sizeof w->tr[0]);
  memmove(&w->model[1], &w->model[0], i * sizeof w->model[0]);
  w->tr[0] = t;
  w->model[0] = spec;
  return t;
}

/* Client `id`'s training rows (its partition, less its held-out rows). */
static fl_shard_t train_shard(const fl_sim_t *s, uint32_t id) {
  fl_shard_t shard = {s->c.train, NULL, 0, s->attacker[id] ? &s->attack : NULL};
  if (s->train_idx) {
    shard.idx = s->train_idx + s->train_off[id];
    shard.n = s->train_off[id + 1] - s->train_off[id];
  } else {
    shard.idx = fl_partition_indices(s->part, id, &shard.n);
  }
  return shard;
}

/* A job is over: one fewer in flight. With mu held. */
static void job_done(fl_sim_t *s) {
  s->inflight--;
  pthread_cond_broadcast(&s->changed);
}

/* Virtual client `id`'s round: RoundStart out, training, Update back. */
static void run_client(fl_sim_t *s, fl_trainer_t *tr, uint32_t id) {
  uint8_t *msg = NULL, *upd = NULL;
  size_t msg_len = 0, upd_len = 0;
  Fedlr__Envelope *env = NULL;
  /* The engine is only read here: its weights change in the call that
   * closes the round, and that call needs this client's update first. */
  const fl_engine_t *e = fl_run_engine(s->run);
  int rc = tr ? 0 : fl_err_set(FL_ENOMEM, "out of memory for a trainer");
  if (!rc) rc = fl_engine_encode_round_start(e, id, &msg, &msg_len);
  if (!rc) {
    fl_shard_t shard = train_shard(s, id);
    rc = fl_trainer_run(tr, &shard, id, msg, msg_len, &upd, &upd_len);
  }
  if (!rc) rc = fl_wire_decode(upd, upd_len, fl_engine_limits(e), &env);
  if (!rc && env->body_case != FEDLR__ENVELOPE__BODY_UPDATE)
    rc = fl_err_set(FL_EPROTO, "the trainer sent message kind %d", (int)env->body_case);
  char why[700];
  if (rc) snprintf(why, sizeof why, "client %u cannot train: %s", id, fl_err_msg());
  pthread_mutex_lock(&s->mu);
  if (rc)
    fl_run_stop(s->run, why, FL_RUN_FAILED);
  else
    fl_run_update(s->run, id, env->update);
  job_done(s);
  pthread_mutex_unlock(&s->mu);
  fl_wire_free(&env);
  free(msg);
  free(upd);
}

/* Virtual client `id`'s evaluation: Evaluate out (decoded as a client
 * decodes it), its held-out rows evaluated, EvalResult back. */
static void run_eval(fl_sim_t *s, fl_trainer_t *tr, uint32_t id) {
  uint8_t *msg = NULL, *res = NULL;
  size_t msg_len = 0, res_len = 0;
  Fedlr__Envelope *in = NULL, *out = NULL;
  const fl_engine_t *e = fl_run_engine(s->run);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(fl_engine_model(e), &lim);
  fl_shard_t shard = {s->c.train, s->eval_idx + s->eval_off[id],
                      s->eval_off[id + 1] - s->eval_off[id], NULL};
  int rc = tr ? 0 : fl_err_set(FL_ENOMEM, "out of memory for a trainer");
  if (!rc) rc = fl_engine_encode_evaluate(e, id, &msg, &msg_len);
  if (!rc) rc = fl_wire_decode(msg, msg_len, &lim, &in);
  if (!rc) rc = fl_trainer_evaluate_decoded(tr, &shard, id, in->evaluate, &res, &res_len);
  if (!rc) rc = fl_wire_decode(res, res_len, fl_engine_limits(e), &out);
  char why[700];
  if (rc) snprintf(why, sizeof why, "client %u cannot evaluate: %s", id, fl_err_msg());
  pthread_mutex_lock(&s->mu);
  if (rc)
    fl_run_stop(s->run, why, FL_RUN_FAILED);
  else
    fl_run_eval_result(s->run, id, out->eval_result);
  job_done(s);
  pthread_mutex_unlock(&s->mu);
  fl_wire_free(&in);
  fl_wire_free(&out);
  free(msg);
  free(res);
}

static void *worker_main(void *arg) {
  worker_t *w = arg;
  fl_sim_pool_t *p = w->pool;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->quit && p->head == p->len)
      pthread_cond_wait(&p->work, &p->mu);
    if (p->quit) break;
    job_t j = p->jobs[p->head++];
    pthread_mutex_unlock(&p->mu);
    fl_sim_t *s = j.sim;
    pthread_mutex_lock(&s->mu);
    int over = fl_run_done(s->run); /* a finished run's late jobs are only counted */
    if (over) job_done(s);
    pthread_mutex_unlock(&s->mu);
    if (!over) {
      fl_trainer_t *tr = worker_trainer(w, &s->ec.model);
      if (j.id & EVAL_JOB)
        run_eval(s, tr, j.id & ~EVAL_JOB);
      else
        run_client(s, tr, j.id);
    }
    pthread_mutex_lock(&p->mu);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

fl_sim_pool_t *fl_sim_pool_new(size_t workers, int *err) {
  int rc = FL_ENOMEM;
  if (workers < 1 || workers > FL_SIM_MAX_WORKERS) {
    rc = fl_err_set(FL_EINVAL, "workers: %zu is not in 1..%d", workers, FL_SIM_MAX_WORKERS);
    goto fail;
  }
  fl_sim_pool_t *p = calloc(1, sizeof *p);
  if (!p) {
    rc = fl_err_set(FL_ENOMEM, "out of memory");
    goto fail;
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->work, NULL);
  for (size_t i = 0; i < workers; i++) {
    worker_t *w = &p->workers[i];
    w->pool = p;
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
      rc = fl_err_set(FL_ENOMEM, "cannot start worker thread %zu", i);
      fl_sim_pool_destroy(&p);
      goto fail;
    }
    p->num_workers++;
  }
  return p;
fail:
  if (err) *err = rc;
  return NULL;
}

void fl_sim_pool_destroy(fl_sim_pool_t **pp) {
  fl_sim_pool_t *p = pp ? *pp : NULL;
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->quit = 1;
  pthread_cond_broadcast(&p->work);
  pthread_mutex_unlock(&p->mu);
  for (size_t i = 0; i < p->num_workers; i++) {
    pthread_join(p->workers[i].thread, NULL);
    for (size_t k = 0; k < TRAINERS_PER_WORKER; k++)
      fl_trainer_destroy(&p->workers[i].tr[k]);
  }
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->work);
  free(p->jobs);
  free(p);
  *pp = NULL;
}

size_t fl_sim_pool_workers(const fl_sim_pool_t *p) {
  return p->num_workers;
}

/* ---- the run's transport (called with the run's mu held) ---- */

static void queue_job(fl_sim_t *s, uint32_t id) {
  fl_sim_pool_t *p = s->pool;
  int oom = 0;
  pthread_mutex_lock(&p->mu);
  if (p->head == p->len) p->head = p->len = 0;
  if (p->len == p->cap) {
    size_t cap = p->cap ? 2 * p->cap : 64;
    job_t *j = realloc(p->jobs, cap * sizeof *j);
    if (j) {
      p->jobs = j;
      p->cap = cap;
    } else {
      oom = 1;
    }
  }
  if (!oom) {
    p->jobs[p->len++] = (job_t){s, id};
    s->inflight++;
    pthread_cond_signal(&p->work);
  }
  pthread_mutex_unlock(&p->mu);
  if (oom) fl_run_stop(s->run, "out of memory queueing the round's clients", FL_RUN_FAILED);
}

static void tp_send_round_start(void *ctx, uint32_t id) {
  queue_job(ctx, id);
}

static void tp_send_evaluate(void *ctx, uint32_t id) {
  queue_job(ctx, id | EVAL_JOB);
}

static void tp_finished(void *ctx, const char *why, int status) {
  fl_sim_t *s = ctx;
  (void)status;
  snprintf(s->why, sizeof s->why, "%s", why);
  pthread_cond_broadcast(&s->changed);
  if (s->c.on_change) s->c.on_change(s->c.ctx, s);
}

static void tp_paused(void *ctx) {
  fl_sim_t *s = ctx;
  pthread_cond_broadcast(&s->changed);
  if (s->c.on_change) s->c.on_change(s->c.ctx, s);
}

/* Every line; a client's (a rejected update) only without --quiet. */
static void tp_log(void *ctx, int reason, const char *line) {
  fl_sim_t *s = ctx;
  if (s->c.log) {
    s->c.log(s->c.ctx, reason, line);
    return;
  }
  if (reason == FL_RUN_LOG_PEER && s->cfg.quiet) return;
  fprintf(stderr, "%s: %s\n", s->c.producer, line);
}

/* ---- setup ---- */

/* Marks `count` of the `clients` virtual clients as attackers: the first
 * `count` of a seeded shuffle (its own stream), so they depend only on the
 * seed, and a larger count keeps the smaller one's attackers. */
static uint8_t *choose_attackers(uint64_t seed, uint32_t clients, uint32_t count) {
  uint8_t *a = calloc(clients, 1);
  uint32_t *ids = malloc(clients * sizeof *ids);
  if (a && ids) {
    for (uint32_t i = 0; i < clients; i++)
      ids[i] = i;
    fl_rng_t r;
    fl_rng_seed(&r, fl_rng_derive(seed, FL_RNG_ATTACKERS, 0, 0));
    for (uint32_t i = 0; i < count; i++) {
      uint32_t j = i + (uint32_t)fl_rng_below(&r, clients - i), t = ids[i];
      ids[i] = ids[j];
      ids[j] = t;
      a[ids[i]] = 1;
    }
  } else {
    free(a);
    a = NULL;
  }
  free(ids);
  return a;
}

/* --holdout: every client's partition split into training and evaluation
 * rows (fl_partition_holdout, client index = its id). */
static int split_holdout(fl_sim_t *s) {
  const fl_config_t *cfg = &s->cfg;
  if (!(cfg->holdout > 0)) return 0;
  size_t total = s->c.train->n, at_t = 0, at_e = 0;
  s->train_idx = malloc(total * sizeof *s->train_idx);
  s->eval_idx = malloc(total * sizeof *s->eval_idx);
  s->train_off = malloc((cfg->clients + 1) * sizeof *s->train_off);
  s->eval_off = malloc((cfg->clients + 1) * sizeof *s->eval_off);
  if (!s->train_idx || !s->eval_idx || !s->train_off || !s->eval_off)
    return fl_err_set(FL_ENOMEM, "out of memory holding out evaluation examples");
  for (uint32_t i = 0; i < cfg->clients; i++) {
    size_t n, nt, ne;
    const uint32_t *idx = fl_partition_indices(s->part, i, &n);
    s->train_off[i] = at_t;
    s->eval_off[i] = at_e;
    int rc = fl_partition_holdout(idx, n, cfg->holdout, cfg->seed, i, s->train_idx + at_t, &nt,
                                  s->eval_idx + at_e, &ne);
    if (rc) return prefixed(rc, "--holdout");
    at_t += nt;
    at_e += ne;
  }
  s->train_off[cfg->clients] = at_t;
  s->eval_off[cfg->clients] = at_e;
  return 0;
}

/* Registers the virtual clients 0 .. clients-1, all alive and ready. */
static int register_clients(fl_sim_t *s) {
  for (uint32_t i = 0; i < s->cfg.clients; i++) {
    fl_shard_t shard = train_shard(s, i);
    char name[32];
    uint32_t id;
    snprintf(name, sizeof name, "sim-%u", i);
    uint64_t held = s->eval_idx ? s->eval_off[i + 1] - s->eval_off[i] : 0;
    int rc = fl_run_register(s->run, name, fl_trainer_claimed_examples(&shard), held, 1, i, &id);
    if (rc) return prefixed(rc, "registering clients");
    fl_run_client(s->run, id, 1, 1);
  }
  return 0;
}

/* The engine's configuration from the flags, the partition, attackers. */
/* The specs fl_config only stores: --aggregator for the engine, --attack
 * for the trainer. */
static int parse_specs(const fl_config_t *cfg, fl_agg_config_t *agg, fl_attack_t *attack) {
  int rc = fl_engine_agg_from(agg, cfg);
  if (!rc && (rc = fl_attack_parse(cfg->attack, attack))) rc = prefixed(rc, "--attack");
  return rc;
}

static int setup(fl_sim_t *s) {
  const fl_config_t *cfg = &s->cfg;
  const fl_dataset_t *train = s->c.train, *test = s->c.test;
  int rc;
  if ((rc = parse_specs(cfg, &s->agg, &s->attack))) return rc;
  if ((rc = fl_init_read(cfg, &s->init))) return rc;
  if (s->init.custom)
    return fl_err_set(FL_EINVAL,
                      "--init %s holds a model of your own (not a fedlr model.safetensors of a "
                      "built-in model): fedlr-sim trains the built-in models only (give --model "
                      "SPEC if the file holds one)",
                      cfg->init);
  if (cfg->clients > train->n)
    return fl_err_set(FL_EINVAL, "--clients %u exceeds the %zu training examples", cfg->clients,
                      train->n);
  size_t classes = train->num_classes;
  if (test && test->num_classes > classes) classes = test->num_classes;
  if ((rc = fl_engine_config_from(&s->ec, cfg, &s->agg, &s->init, train->dim, &train->shape,
                                  classes, test)))
    return rc;
  if (s->ec.optim.keep_state)
    return fl_err_set(FL_EINVAL,
                      "--optimizer ...,keep: optimizer state kept across rounds needs one "
                      "state per client (O(clients x model) memory); it is supported by "
                      "networked clients, not by the simulator");
  /* Every sampled virtual client answers before the round closes; one valid
   * update is enough, as the others may be attacks the engine rejected. */
  s->ec.quorum = DBL_MIN;
  /* The pool's workers are the run's parallelism; evaluation of the test
   * set takes one thread per worker (results do not depend on it). */
  s->ec.eval_threads =
      s->c.eval_threads ? s->c.eval_threads : (uint32_t)fl_sim_pool_workers(s->pool);
  if ((rc = fl_partition_new(train, cfg->partition, cfg->clients, cfg->seed, &s->part)))
    return prefixed(rc, "--partition");
  if (!(s->attacker = choose_attackers(cfg->seed, cfg->clients, cfg->attackers)))
    return fl_err_set(FL_ENOMEM, "out of memory");
  if (!s->c.announce) return 0;
  if (!cfg->quiet) {
    fl_shape_t in_shape = fl_model_shape(&s->ec.model);
    char in_text[64] = "";
    if (fl_shape_is_set(&in_shape))
      snprintf(in_text, sizeof in_text, " on %zux%zux%zu images", in_shape.c, in_shape.h,
               in_shape.w);
    fprintf(stderr,
            "%s: %s: %zu train / %zu test examples, %zu features, %zu classes; model %s%s (%zu "
            "parameters), lr0 %g, schedule %s\n",
            s->c.producer, cfg->dataset, train->n, test ? test->n : 0, train->dim, classes,
            cfg->model, in_text, s->ec.model.num_params, s->ec.lr0, cfg->schedule);
    fl_partition_print_summary(s->part, train, stderr, 5);
  }
  if (!test) fprintf(stderr, "%s: no test set (--test-data): no evaluation\n", s->c.producer);
  /* A run under attack says so, always. */
  if (cfg->attackers) {
    fprintf(stderr, "%s: %u of %u clients attack (%s):", s->c.producer, cfg->attackers,
            cfg->clients, cfg->attack);
    for (uint32_t i = 0, k = 0; i < cfg->clients && k < 100; i++)
      if (s->attacker[i]) fprintf(stderr, " %u", i), k++;
    fprintf(stderr, "%s\n", cfg->attackers > 100 ? " ..." : "");
  }
  return 0;
}

int fl_sim_check_config(const fl_config_t *cfg) {
  fl_agg_config_t agg;
  fl_attack_t attack;
  return parse_specs(cfg, &agg, &attack);
}

fl_sim_t *fl_sim_new(fl_sim_pool_t *pool, const fl_sim_config_t *c, int *err) {
  int rc = FL_ENOMEM;
  fl_sim_t *s = calloc(1, sizeof *s);
  if (!s) {
    if (err) *err = fl_err_set(FL_ENOMEM, "out of memory");
    return NULL;
  }
  s->pool = pool;
  s->c = *c;
  s->cfg = *c->cfg;
  s->c.cfg = &s->cfg;
  if (!s->c.producer) s->c.producer = "fedlr-sim";
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->changed, NULL);
  if ((rc = setup(s))) goto fail;
  fl_run_config_t rcfg = {.cfg = &s->cfg,
                          .engine = &s->ec,
                          .prog = FL_PROG_SIM,
                          .producer = s->c.producer,
                          .tensorboard_dir = c->tensorboard_dir};
  if (!(s->run = fl_run_new(&rcfg, &rc))) goto fail;
  fl_run_transport_t tp = {.ctx = s,
                           .send_round_start = tp_send_round_start,
                           .send_evaluate = tp_send_evaluate,
                           .finished = tp_finished,
                           .paused = tp_paused,
                           .log = tp_log};
  fl_run_set_transport(s->run, &tp);
  if ((rc = split_holdout(s)) || (rc = register_clients(s))) goto fail;
  return s;
fail:
  if (err) *err = rc;
  fl_sim_destroy(&s);
  return NULL;
}

void fl_sim_start(fl_sim_t *s) {
  pthread_mutex_lock(&s->mu);
  s->started = 1;
  fl_run_start(s->run);
  pthread_mutex_unlock(&s->mu);
}

int fl_sim_wait(fl_sim_t *s) {
  pthread_mutex_lock(&s->mu);
  while (!fl_run_done(s->run) && !fl_run_paused(s->run))
    pthread_cond_wait(&s->changed, &s->mu);
  int done = fl_run_done(s->run);
  pthread_mutex_unlock(&s->mu);
  return done;
}

int fl_sim_state(fl_sim_t *s) {
  pthread_mutex_lock(&s->mu);
  int st = fl_run_done(s->run)     ? FL_SIM_FINISHED
           : fl_run_paused(s->run) ? FL_SIM_PAUSED
                                   : FL_SIM_RUNNING;
  pthread_mutex_unlock(&s->mu);
  return st;
}

void fl_sim_pause_after(fl_sim_t *s, uint32_t rounds) {
  pthread_mutex_lock(&s->mu);
  fl_run_pause_after(s->run, rounds);
  pthread_mutex_unlock(&s->mu);
}

void fl_sim_resume(fl_sim_t *s) {
  pthread_mutex_lock(&s->mu);
  fl_run_resume(s->run);
  pthread_mutex_unlock(&s->mu);
}

void fl_sim_stop(fl_sim_t *s, const char *why, int status) {
  pthread_mutex_lock(&s->mu);
  fl_run_stop(s->run, why, status);
  pthread_mutex_unlock(&s->mu);
}

const fl_run_t *fl_sim_run(const fl_sim_t *s) {
  return s->run;
}

const char *fl_sim_why(const fl_sim_t *s) {
  return s->why;
}

void fl_sim_destroy(fl_sim_t **ps) {
  fl_sim_t *s = ps ? *ps : NULL;
  if (!s) return;
  if (s->run && s->started) {
    /* No job of this run may outlive it: the queued ones are dropped, the
     * running ones finish (into a finished run) first. A run that never
     * started has no job and writes nothing. */
    pthread_mutex_lock(&s->mu);
    if (!fl_run_done(s->run)) {
      s->c.on_change = NULL;
      fl_run_stop(s->run, "the run was stopped", FL_RUN_INTERRUPTED);
    }
    fl_sim_pool_t *p = s->pool;
    pthread_mutex_lock(&p->mu);
    size_t kept = p->head;
    for (size_t i = p->head; i < p->len; i++)
      if (p->jobs[i].sim == s)
        s->inflight--;
      else
        p->jobs[kept++] = p->jobs[i];
    p->len = kept;
    pthread_mutex_unlock(&p->mu);
    while (s->inflight)
      pthread_cond_wait(&s->changed, &s->mu);
    pthread_mutex_unlock(&s->mu);
  }
  fl_run_destroy(&s->run);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->changed);
  free(s->train_idx);
  free(s->eval_idx);
  free(s->train_off);
  free(s->eval_off);
  free(s->attacker);
  fl_partition_destroy(&s->part);
  fl_init_free(&s->init);
  free(s);
  *ps = NULL;
}
