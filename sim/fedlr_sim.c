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
#include "fl_partition.h"
#include "fl_rng.h"
#include "fl_run.h"
#include "fl_trainer.h"

#define PROG "fedlr-sim"
#define SIM_MAX_WORKERS 256

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
  const fl_attack_t *attack; /* what attackers do */
  const uint8_t *attacker;   /* (clients) 1 = this client runs the attack */
  int quiet;
  pthread_mutex_t mu;
  pthread_cond_t work, finished;
  uint32_t *jobs; /* client ids whose RoundStart is due (a FIFO) */
  size_t jobs_head, jobs_len, jobs_cap;
  int quit;
  size_t num_workers;
  sim_worker_t workers[SIM_MAX_WORKERS];
};

/* ---- the run's transport (called with mu held) ---- */

static void tp_send_round_start(void *ctx, uint32_t id) {
  sim_t *s = ctx;
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
    fl_shard_t shard = {s->train, NULL, 0, s->attacker[id] ? s->attack : NULL};
    shard.idx = fl_partition_indices(s->part, id, &shard.n);
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
    fl_shard_t shard = {s->train, NULL, 0, s->attacker[i] ? s->attack : NULL};
    fl_partition_indices(s->part, i, &shard.n);
    char name[32];
    uint32_t id;
    snprintf(name, sizeof name, "sim-%u", i);
    int rc = fl_run_register(s->run, name, fl_trainer_claimed_examples(&shard), 1, i, &id);
    if (rc) return rc;
    fl_run_client(s->run, id, 1, 1);
  }
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
static int setup_data(const fl_config_t *cfg, const fl_agg_config_t *agg, fl_dataset_t **train,
                      fl_dataset_t **test, fl_engine_config_t *ec, fl_partition_t **part) {
  int rc = fl_dataset_load_flags(cfg->dataset, cfg->data_dir, cfg->test_data, train, test);
  if (rc) return fail("loading data", rc);
  if (cfg->clients > (*train)->n) {
    fprintf(stderr, PROG ": --clients %u exceeds the %zu training examples\n", cfg->clients,
            (*train)->n);
    return 2;
  }
  size_t classes = (*train)->num_classes;
  if (*test && (*test)->num_classes > classes) classes = (*test)->num_classes;
  if ((rc = fl_engine_config_from(ec, cfg, agg, (*train)->dim, classes, *test)))
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
  fl_run_transport_t tp = {
      .ctx = s, .send_round_start = tp_send_round_start, .finished = tp_finished, .log = tp_log};
  fl_run_set_transport(s->run, &tp);
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
  sim_t *sim = calloc(1, sizeof *sim);
  if (!sim) return 1;
  pthread_mutex_init(&sim->mu, NULL);
  pthread_cond_init(&sim->work, NULL);
  pthread_cond_init(&sim->finished, NULL);
  if ((status = setup_data(&cfg, &agg, &train, &test, &ec, &part)) ||
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
  free(sim);
  free(attacker);
  fl_partition_destroy(&part);
  fl_dataset_destroy(&train);
  fl_dataset_destroy(&test);
  return status;
}
