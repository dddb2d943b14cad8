/* fedlr-sim: federated rounds simulated in one process.
 *
 * The run driver (coordinator/fl_run: the engine and the run's policy) and
 * N virtual clients (client/fl_trainer) exchange the same encoded protobuf
 * messages as networked runs; only the transport differs. Here it is a pool
 * of worker threads, each owning one trainer workspace and one BLAS thread:
 * when the run asks for a RoundStart to client k, the job goes to the pool;
 * a worker encodes the message, trains client k on its partition, decodes
 * the Update and hands it to the run. One mutex serializes every call into
 * the run, so a round closes (and the next one starts) inside the call that
 * brought its last answer. Results do not depend on the number of workers:
 * each client's training is a pure function of its message and data, and
 * the aggregation is order-independent.
 *
 * Federated evaluation: with --holdout F each virtual client keeps a
 * fraction of its partition to evaluate on (fl_partition_holdout, as a
 * fedlr-client with the same flags does); when the run opens an
 * evaluation, the workers answer its Evaluate messages the same way.
 *
 * Attacks: --attackers N virtual clients, chosen from the seed, run
 * --attack (applied by the same trainer a fedlr-client uses); their updates
 * meet the same checks as any other. A virtual client that cannot train at
 * all (its RoundStart refused) ends the run: without deadlines its round
 * could never close. */
#include <float.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "fl_blas.h"
#include "fl_clock.h"
#include "fl_config.h"
#include "fl_data.h"
#include "fl_engine.h"
#include "fl_error.h"
#include "fl_init.h"
#include "fl_partition.h"
#include "fl_rng.h"
#include "fl_run.h"
#include "fl_trainer.h"

#define PROG "fedlr-sim"
#define SIM_MAX_WORKERS 256
#define SIM_EVAL_JOB 0x80000000u /* a job id with this bit: evaluate, not train */

typedef struct sim sim_t;

typedef struct {
  sim_t *sim;
  fl_trainer_t *trainer;
  pthread_t thread;
} sim_worker_t;

/* Shared by the workers; `mu` guards every field below it and every call
 * into the run. */
struct sim {
  fl_run_t *run;
  const fl_dataset_t *train;
  const fl_partition_t *part;
  /* --holdout: each client's partition split into training and evaluation
   * rows, client i's at [off[i], off[i+1]) of idx (NULL: no holdout) */
  uint32_t *train_idx, *eval_idx;
  size_t *train_off, *eval_off;
  const fl_attack_t *attack; /* what attackers do */
  const uint8_t *attacker;   /* (clients) 1 = this client runs the attack */
  int quiet;
  pthread_mutex_t mu;
  pthread_cond_t work, finished;
  uint32_t *jobs; /* client ids whose RoundStart (| SIM_EVAL_JOB: Evaluate) is due, a FIFO */
  size_t jobs_head, jobs_len, jobs_cap;
  int quit;
  size_t num_workers;
  sim_worker_t workers[SIM_MAX_WORKERS];
};

/* ---- the run's transport (called with mu held) ---- */

static void queue_job(sim_t *s, uint32_t id) {
  if (s->jobs_head == s->jobs_len) s->jobs_head = s->jobs_len = 0;
  if (s->jobs_len == s->jobs_cap) {
    size_t cap = s->jobs_cap ? 2 * s->jobs_cap : 64;
    uint32_t *j = realloc(s->jobs, cap * sizeof *j);
    if (!j) {
      fl_run_stop(s->run, "out of memory queueing the round's clients", FL_RUN_FAILED);
      return;
    }
    s->jobs = j;
    s->jobs_cap = cap;
  }
  s->jobs[s->jobs_len++] = id;
  pthread_cond_signal(&s->work);
}

static void tp_send_round_start(void *ctx, uint32_t id) {
  queue_job(ctx, id);
}

static void tp_send_evaluate(void *ctx, uint32_t id) {
  queue_job(ctx, id | SIM_EVAL_JOB);
}

static void tp_finished(void *ctx, const char *why, int status) {
  sim_t *s = ctx;
  (void)why;
  (void)status;
  pthread_cond_broadcast(&s->finished);
}

/* Every line; a client's (a rejected update) only without --quiet. */
static void tp_log(void *ctx, int reason, const char *line) {
  sim_t *s = ctx;
  if (reason == FL_RUN_LOG_PEER && s->quiet) return;
  fprintf(stderr, PROG ": %s\n", line);
}

/* ---- the workers ---- */

/* Client `id`'s training rows (its partition, less its held-out rows). */
static fl_shard_t train_shard(const sim_t *s, uint32_t id) {
  fl_shard_t shard = {s->train, NULL, 0, s->attacker[id] ? s->attack : NULL};
  if (s->train_idx) {
    shard.idx = s->train_idx + s->train_off[id];
    shard.n = s->train_off[id + 1] - s->train_off[id];
  } else {
    shard.idx = fl_partition_indices(s->part, id, &shard.n);
  }
  return shard;
}

/* Virtual client `id`'s round: RoundStart out, training, Update back. */
static void run_client(sim_t *s, fl_trainer_t *tr, uint32_t id) {
  uint8_t *msg = NULL, *upd = NULL;
  size_t msg_len = 0, upd_len = 0;
  Fedlr__Envelope *env = NULL;
  /* The engine is only read here: its weights change in the call that
   * closes the round, and that call needs this client's update first. */
  const fl_engine_t *e = fl_run_engine(s->run);
  int rc = fl_engine_encode_round_start(e, id, &msg, &msg_len);
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
  pthread_mutex_unlock(&s->mu);
  fl_wire_free(&env);
  free(msg);
  free(upd);
}

/* Virtual client `id`'s evaluation: Evaluate out (decoded as a client
 * decodes it), its held-out rows evaluated, EvalResult back. */
static void run_eval(sim_t *s, fl_trainer_t *tr, uint32_t id) {
  uint8_t *msg = NULL, *res = NULL;
  size_t msg_len = 0, res_len = 0;
  Fedlr__Envelope *in = NULL, *out = NULL;
  const fl_engine_t *e = fl_run_engine(s->run);
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(fl_engine_model(e), &lim);
  fl_shard_t shard = {s->train, s->eval_idx + s->eval_off[id],
                      s->eval_off[id + 1] - s->eval_off[id], NULL};
  int rc = fl_engine_encode_evaluate(e, id, &msg, &msg_len);
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
  pthread_mutex_unlock(&s->mu);
  fl_wire_free(&in);
  fl_wire_free(&out);
  free(msg);
  free(res);
}

static void *worker_main(void *arg) {
  sim_worker_t *w = arg;
  sim_t *s = w->sim;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    while (!s->quit && s->jobs_head == s->jobs_len)
      pthread_cond_wait(&s->work, &s->mu);
    if (s->quit) break;
    uint32_t id = s->jobs[s->jobs_head++];
    pthread_mutex_unlock(&s->mu);
    if (id & SIM_EVAL_JOB)
      run_eval(s, w->trainer, id & ~SIM_EVAL_JOB);
    else
      run_client(s, w->trainer, id);
    pthread_mutex_lock(&s->mu);
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

static int start_workers(sim_t *s, const fl_model_spec_t *model, size_t n) {
  for (size_t i = 0; i < n; i++) {
    sim_worker_t *w = &s->workers[i];
    w->sim = s;
    w->trainer = fl_trainer_new(model);
    if (!w->trainer) return fl_err_set(FL_ENOMEM, "out of memory creating worker %zu", i);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
      fl_trainer_destroy(&w->trainer);
      return fl_err_set(FL_ENOMEM, "cannot start worker thread %zu", i);
    }
    s->num_workers++;
  }
  return 0;
}

static void stop_workers(sim_t *s) {
  pthread_mutex_lock(&s->mu);
  s->quit = 1;
  pthread_cond_broadcast(&s->work);
  pthread_mutex_unlock(&s->mu);
  for (size_t i = 0; i < s->num_workers; i++) {
    pthread_join(s->workers[i].thread, NULL);
    fl_trainer_destroy(&s->workers[i].trainer);
  }
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

static int fail(const char *what, int rc) {
  const char *msg = fl_err_msg()[0] ? fl_err_msg() : fl_strerror(rc);
  if (what)
    fprintf(stderr, PROG ": %s: %s\n", what, msg);
  else
    fprintf(stderr, PROG ": %s\n", msg);
  return rc == FL_EINVAL ? 2 : 1;
}

/* Registers the virtual clients 0 .. clients-1, all alive and ready. */
static int register_clients(sim_t *s, const fl_config_t *cfg) {
  for (uint32_t i = 0; i < cfg->clients; i++) {
    fl_shard_t shard = train_shard(s, i);
    char name[32];
    uint32_t id;
    snprintf(name, sizeof name, "sim-%u", i);
    uint64_t held = s->eval_idx ? s->eval_off[i + 1] - s->eval_off[i] : 0;
    int rc = fl_run_register(s->run, name, fl_trainer_claimed_examples(&shard), held, 1, i, &id);
    if (rc) return rc;
    fl_run_client(s->run, id, 1, 1);
  }
  return 0;
}

/* --holdout: every client's partition split into training and evaluation
 * rows (fl_partition_holdout, client index = its id). */
static int split_holdout(sim_t *s, const fl_config_t *cfg) {
  if (!(cfg->holdout > 0)) return 0;
  size_t total = s->train->n, at_t = 0, at_e = 0;
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
    if (rc) return rc;
    at_t += nt;
    at_e += ne;
  }
  s->train_off[cfg->clients] = at_t;
  s->eval_off[cfg->clients] = at_e;
  return 0;
}

static void print_final(const fl_run_t *run, double seconds) {
  const fl_metrics_t *m = fl_run_metrics(run);
  size_t n = fl_metrics_count(m);
  if (n == 0) return;
  const fl_round_metrics_t *rm = fl_metrics_get(m, n - 1);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("final: round %u test accuracy %.4f loss %.4f, %.1f s, peak memory %.0f MiB", rm->round,
         rm->test_accuracy, rm->test_loss, seconds, (double)ru.ru_maxrss / 1024.0);
  uint64_t rejected, clipped, capped;
  fl_run_counts(run, &rejected, &clipped, &capped);
  if (rejected || clipped || capped)
    printf("; updates rejected %llu, clipped %llu, capped %llu", (unsigned long long)rejected,
           (unsigned long long)clipped, (unsigned long long)capped);
  printf("\n");
}

/* The data, the engine's configuration from the flags and the partition:
 * 0, or an exit status with the error printed. */
static int setup_data(const fl_config_t *cfg, const fl_agg_config_t *agg, const fl_init_t *init,
                      fl_dataset_t **train, fl_dataset_t **test, fl_engine_config_t *ec,
                      fl_partition_t **part) {
  if (init->custom) {
    fprintf(stderr,
            PROG ": --init %s holds a model of your own (not a fedlr model.safetensors of a "
                 "built-in model): fedlr-sim trains the built-in models only (give --model "
                 "SPEC if the file holds one)\n",
            cfg->init);
    return 2;
  }
  int rc = fl_dataset_load_flags(cfg->dataset, cfg->data_dir, cfg->test_data, train, test);
  if (rc) return fail("loading data", rc);
  if (cfg->clients > (*train)->n) {
    fprintf(stderr, PROG ": --clients %u exceeds the %zu training examples\n", cfg->clients,
            (*train)->n);
    return 2;
  }
  size_t classes = (*train)->num_classes;
  if (*test && (*test)->num_classes > classes) classes = (*test)->num_classes;
  if ((rc = fl_engine_config_from(ec, cfg, agg, init, (*train)->dim, classes, *test)))
    return fail(NULL, rc);
  if (ec->optim.keep_state) {
    fprintf(stderr, PROG ": --optimizer ...,keep: optimizer state kept across rounds needs one "
                         "state per client (O(clients x model) memory); it is supported by "
                         "networked clients, not by the simulator\n");
    return 2;
  }
  /* Every sampled virtual client answers before the round closes; one valid
   * update is enough, as the others may be attacks the engine rejected. */
  ec->quorum = DBL_MIN;
  if ((rc = fl_partition_new(*train, cfg->partition, cfg->clients, cfg->seed, part)))
    return fail("--partition", rc);
  if (!cfg->quiet) {
    fprintf(stderr,
            PROG ": %s: %zu train / %zu test examples, %zu features, %zu classes; model %s (%zu "
                 "parameters), lr0 %g, schedule %s\n",
            cfg->dataset, (*train)->n, *test ? (*test)->n : 0, (*train)->dim, classes, cfg->model,
            ec->model.num_params, ec->lr0, cfg->schedule);
    fl_partition_print_summary(*part, *train, stderr, 5);
  }
  if (!*test) fprintf(stderr, PROG ": no test set (--test-data): no evaluation\n");
  return 0;
}

/* Which clients run --attack (printed, always: a run under attack should
 * say so): 0, or an exit status with the error printed. */
static int setup_attackers(const fl_config_t *cfg, uint8_t **attacker) {
  if (!(*attacker = choose_attackers(cfg->seed, cfg->clients, cfg->attackers))) {
    fprintf(stderr, PROG ": out of memory\n");
    return 1;
  }
  if (cfg->attackers) {
    fprintf(stderr, PROG ": %u of %u clients attack (%s):", cfg->attackers, cfg->clients,
            cfg->attack);
    for (uint32_t i = 0, k = 0; i < cfg->clients && k < 100; i++)
      if ((*attacker)[i]) fprintf(stderr, " %u", i), k++;
    fprintf(stderr, "%s\n", cfg->attackers > 100 ? " ..." : "");
  }
  return 0;
}

/* Runs the simulation to its end on `workers` threads: its exit status. */
static int simulate(sim_t *s, const fl_config_t *cfg, const fl_engine_config_t *ec,
                    size_t workers) {
  int rc;
  fl_run_config_t rcfg = {.cfg = cfg, .engine = ec, .prog = FL_PROG_SIM, .producer = PROG};
  if (!(s->run = fl_run_new(&rcfg, &rc))) return fail(NULL, rc);
  fl_run_transport_t tp = {.ctx = s,
                           .send_round_start = tp_send_round_start,
                           .send_evaluate = tp_send_evaluate,
                           .finished = tp_finished,
                           .log = tp_log};
  fl_run_set_transport(s->run, &tp);
  if ((rc = split_holdout(s, cfg))) return fail("--holdout", rc);
  if ((rc = register_clients(s, cfg))) return fail("registering clients", rc);
  if ((rc = start_workers(s, &ec->model, workers))) return fail("workers", rc);
  double t0 = fl_clock_now();
  pthread_mutex_lock(&s->mu);
  fl_run_start(s->run);
  while (!fl_run_done(s->run))
    pthread_cond_wait(&s->finished, &s->mu);
  pthread_mutex_unlock(&s->mu);
  print_final(s->run, fl_clock_now() - t0);
  int status = fl_run_status(s->run);
  if (status == FL_RUN_OK && cfg->out[0] && !cfg->quiet)
    fprintf(stderr, PROG ": wrote %s/{model.safetensors,chart.svg,config.ini}\n", cfg->out);
  return status;
}

int main(int argc, char **argv) {
  fl_blas_setup(argc, argv);
  fl_config_t cfg;
  fl_config_defaults(&cfg);
  int want_help = 0;
  int rc = fl_config_parse(&cfg, FL_PROG_SIM, argc, argv, &want_help);
  if (want_help) {
    fl_config_print_help(stdout, FL_PROG_SIM, PROG);
    return 0;
  }
  if (rc) return fail(NULL, FL_EINVAL);
  /* The specs fl_config only stores, parsed once by their own modules. */
  fl_agg_config_t agg;
  fl_attack_t attack;
  if ((rc = fl_engine_agg_from(&agg, &cfg))) return fail(NULL, FL_EINVAL);
  if ((rc = fl_attack_parse(cfg.attack, &attack))) return fail("--attack", FL_EINVAL);
  size_t workers = cfg.workers ? cfg.workers : (size_t)sysconf(_SC_NPROCESSORS_ONLN);
  if (workers < 1) workers = 1;
  if (workers > SIM_MAX_WORKERS) workers = SIM_MAX_WORKERS;
  if (!cfg.quiet)
    fprintf(stderr, PROG ": OpenBLAS core %s, %zu worker(s)\n", fl_blas_corename(), workers);

  int status;
  fl_dataset_t *train = NULL, *test = NULL;
  fl_partition_t *part = NULL;
  fl_engine_config_t ec;
  uint8_t *attacker = NULL;
  fl_init_t init;
  if ((rc = fl_init_read(&cfg, &init))) {
    fl_init_free(&init);
    return fail(NULL, rc);
  }
  sim_t *sim = calloc(1, sizeof *sim);
  if (!sim) return 1;
  pthread_mutex_init(&sim->mu, NULL);
  pthread_cond_init(&sim->work, NULL);
  pthread_cond_init(&sim->finished, NULL);
  if ((status = setup_data(&cfg, &agg, &init, &train, &test, &ec, &part)) ||
      (status = setup_attackers(&cfg, &attacker)))
    goto out;
  sim->train = train;
  sim->part = part;
  sim->attack = &attack;
  sim->attacker = attacker;
  sim->quiet = cfg.quiet;
  status = simulate(sim, &cfg, &ec, workers);
out:
  stop_workers(sim);
  fl_run_destroy(&sim->run);
  pthread_mutex_destroy(&sim->mu);
  pthread_cond_destroy(&sim->work);
  pthread_cond_destroy(&sim->finished);
  free(sim->jobs);
  free(sim->train_idx);
  free(sim->eval_idx);
  free(sim->train_off);
  free(sim->eval_off);
  free(sim);
  fl_init_free(&init);
  free(attacker);
  fl_partition_destroy(&part);
  fl_dataset_destroy(&train);
  fl_dataset_destroy(&test);
  return status;
}
