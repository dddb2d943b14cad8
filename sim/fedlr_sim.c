/* fedlr-sim: federated rounds simulated in one process.
 *
 * The round engine (coordinator/) and N virtual clients (client/) exchange
 * the same encoded protobuf messages as networked runs; only the transport
 * differs (a function call instead of a socket). A pool of worker threads,
 * each owning one trainer workspace and one BLAS thread, trains the sampled
 * clients of a round in parallel. Results do not depend on the number of
 * workers: each client's training is a pure function of its message and
 * data, and the engine's aggregation is order-independent.
 *
 * Attacks: --attackers N virtual clients, chosen from the seed, run
 * --attack (applied by the same trainer a fedlr-client uses). An update the
 * engine rejects (NaN, ...) from an attacker is dropped, printed and
 * counted, and the round goes on with the valid ones; any other error is
 * fatal. */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "fl_attack.h"
#include "fl_blas.h"
#include "fl_config.h"
#include "fl_data.h"
#include "fl_engine.h"
#include "fl_error.h"
#include "fl_file.h"
#include "fl_metrics.h"
#include "fl_outputs.h"
#include "fl_partition.h"
#include "fl_rng.h"
#include "fl_trainer.h"

#define SIM_MAX_WORKERS 256

typedef struct sim sim_t;

typedef struct {
  sim_t *sim;
  fl_trainer_t *trainer;
  pthread_t thread;
} sim_worker_t;

/* Shared state of one run. `mu` guards the job counter, the engine and the
 * first error; workers wait on `go` for a new round, main waits on `done`. */
struct sim {
  fl_engine_t *engine;
  const fl_dataset_t *train;
  const fl_partition_t *part;
  pthread_mutex_t mu;
  pthread_cond_t go, done;
  uint64_t generation; /* bumped at each round start */
  int quit;
  size_t next_job, jobs_done, num_jobs;
  const uint32_t *jobs; /* sampled client ids */
  int err;              /* first error of the round */
  char errmsg[512];
  const fl_attack_t *attack; /* what attackers do */
  const uint8_t *attacker;   /* (clients) 1 = this client runs the attack */
  char (*rejected)[256];     /* (cap_rejected) per job: why the engine rejected it, "" = taken */
  size_t cap_rejected;
  size_t num_workers;
  sim_worker_t workers[SIM_MAX_WORKERS];
};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void record_error(sim_t *s, int rc, uint32_t client) {
  if (s->err) return;
  s->err = rc;
  snprintf(s->errmsg, sizeof s->errmsg, "client %u: %s: %s", client, fl_strerror(rc), fl_err_msg());
}

/* One virtual client's round (job j): message out, training, update back. */
static void run_client(sim_t *s, fl_trainer_t *tr, uint32_t id, size_t j) {
  uint8_t *msg = NULL, *upd = NULL;
  size_t msg_len = 0, upd_len = 0;
  /* Encoding only reads the engine, and no submit runs concurrently with a
   * weight change: weights change only in fl_engine_end_round(), between
   * rounds. */
  int rc = fl_engine_encode_round_start(s->engine, id, &msg, &msg_len);
  if (!rc) {
    fl_shard_t shard = {s->train, NULL, 0, s->attacker[id] ? s->attack : NULL};
    shard.idx = fl_partition_indices(s->part, id, &shard.n);
    rc = fl_trainer_run(tr, &shard, id, msg, msg_len, &upd, &upd_len);
  }
  pthread_mutex_lock(&s->mu);
  if (!rc) {
    rc = fl_engine_submit(s->engine, id, upd, upd_len);
    /* A rejected attack is what the engine is for; from an honest virtual
     * client it would be a bug. */
    if (rc && rc != FL_ENOMEM && s->attacker[id]) {
      snprintf(s->rejected[j], sizeof s->rejected[j], "%s", fl_err_msg());
      rc = 0;
    }
  }
  if (rc) record_error(s, rc, id);
  pthread_mutex_unlock(&s->mu);
  free(msg);
  free(upd);
}

static void *worker_main(void *arg) {
  sim_worker_t *w = arg;
  sim_t *s = w->sim;
  uint64_t seen = 0;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    while (!s->quit && (s->generation == seen || s->next_job >= s->num_jobs))
      pthread_cond_wait(&s->go, &s->mu);
    if (s->quit) break;
    size_t j = s->next_job++;
    if (s->next_job >= s->num_jobs) seen = s->generation;
    uint32_t id = s->jobs[j];
    pthread_mutex_unlock(&s->mu);
    run_client(s, w->trainer, id, j);
    pthread_mutex_lock(&s->mu);
    if (++s->jobs_done == s->num_jobs) pthread_cond_signal(&s->done);
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

/* Trains every sampled client of the open round on the pool. */
static int run_round_jobs(sim_t *s) {
  const uint32_t *ids;
  size_t m = fl_engine_sampled(s->engine, &ids);
  if (m > s->cap_rejected) {
    char(*r)[256] = realloc(s->rejected, m * sizeof *r);
    if (!r) {
      snprintf(s->errmsg, sizeof s->errmsg, "out of memory for %zu jobs", m);
      return FL_ENOMEM;
    }
    s->rejected = r;
    s->cap_rejected = m;
  }
  for (size_t j = 0; j < m; j++)
    s->rejected[j][0] = '\0';
  pthread_mutex_lock(&s->mu);
  s->jobs = ids;
  s->num_jobs = m;
  s->next_job = 0;
  s->jobs_done = 0;
  s->err = 0;
  s->generation++;
  pthread_cond_broadcast(&s->go);
  while (s->jobs_done < s->num_jobs)
    pthread_cond_wait(&s->done, &s->mu);
  int rc = s->err;
  pthread_mutex_unlock(&s->mu);
  return rc;
}

static int start_workers(sim_t *s, const fl_model_spec_t *model, size_t n) {
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->go, NULL);
  pthread_cond_init(&s->done, NULL);
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
  pthread_cond_broadcast(&s->go);
  pthread_mutex_unlock(&s->mu);
  for (size_t i = 0; i < s->num_workers; i++) {
    pthread_join(s->workers[i].thread, NULL);
    fl_trainer_destroy(&s->workers[i].trainer);
  }
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->go);
  pthread_cond_destroy(&s->done);
}

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

static int load_data(const fl_config_t *c, fl_dataset_t **train, fl_dataset_t **test) {
  int rc;
  const char *ds = c->dataset;
  int is_file = !fl_dataset_is_named(ds);
  if (!is_file) {
    if ((rc = fl_dataset_load_named(ds, c->data_dir, 1, train))) return rc;
    return fl_dataset_load_named(ds, c->data_dir, 0, test);
  }
  if ((rc = fl_dataset_load_file(ds, train))) return rc;
  if (c->test_data[0]) return fl_dataset_load_file(c->test_data, test);
  *test = NULL;
  return 0;
}

static int fail(const char *what, int rc) {
  const char *msg = fl_err_msg()[0] ? fl_err_msg() : fl_strerror(rc);
  if (strcmp(what, "configuration") == 0)
    fprintf(stderr, "fedlr-sim: %s\n", msg);
  else
    fprintf(stderr, "fedlr-sim: %s: %s\n", what, msg);
  return rc == FL_EINVAL ? 2 : 1;
}

int main(int argc, char **argv) {
  fl_blas_setup(argc, argv);
  fl_config_t cfg;
  fl_config_defaults(&cfg);
  int want_help = 0;
  int rc = fl_config_parse(&cfg, FL_PROG_SIM, argc, argv, &want_help);
  if (want_help) {
    fl_config_print_help(stdout, FL_PROG_SIM, "fedlr-sim");
    return 0;
  }
  if (rc) {
    fprintf(stderr, "fedlr-sim: %s\n", fl_err_msg());
    return 2;
  }
  /* The specs fl_config only stores, parsed once by their own modules. */
  fl_agg_config_t agg;
  fl_attack_t attack;
  if ((rc = fl_engine_agg_from(&agg, &cfg))) {
    fprintf(stderr, "fedlr-sim: %s\n", fl_err_msg());
    return 2;
  }
  if ((rc = fl_attack_parse(cfg.attack, &attack))) {
    fprintf(stderr, "fedlr-sim: --attack: %s\n", fl_err_msg());
    return 2;
  }
  if (!cfg.quiet) {
    fprintf(stderr, "fedlr-sim: OpenBLAS core %s, %u worker(s)\n", fl_blas_corename(),
            cfg.workers ? cfg.workers : (unsigned)sysconf(_SC_NPROCESSORS_ONLN));
  }

  int status = 1;
  fl_dataset_t *train = NULL, *test = NULL;
  fl_partition_t *part = NULL;
  fl_engine_t *engine = NULL;
  fl_metrics_t *metrics = NULL;
  sim_t *sim = NULL;
  uint8_t *attacker = NULL;
  fl_engine_config_t ec;
  memset(&ec, 0, sizeof ec);

  if ((rc = load_data(&cfg, &train, &test))) {
    status = fail("loading data", rc);
    goto out;
  }
  if (cfg.clients > train->n) {
    fprintf(stderr, "fedlr-sim: --clients %u exceeds the %zu training examples\n", cfg.clients,
            train->n);
    status = 2;
    goto out;
  }
  size_t classes = train->num_classes;
  if (test && test->num_classes > classes) classes = test->num_classes;
  if ((rc = fl_engine_config_from(&ec, &cfg, &agg, train->dim, classes, test))) {
    status = fail("configuration", rc);
    goto out;
  }
  if (ec.optim.keep_state) {
    fprintf(stderr, "fedlr-sim: --optimizer ...,keep: optimizer state kept across rounds needs "
                    "one state per client (O(clients x model) memory); it is supported by "
                    "networked clients, not by the simulator\n");
    status = 2;
    goto out;
  }
  /* Every sampled virtual client trains before the round closes; one valid
   * update is enough, as the others may be attacks the engine rejected. */
  ec.quorum = DBL_MIN;

  if ((rc = fl_partition_new(train, cfg.partition, cfg.clients, cfg.seed, &part))) {
    status = fail("--partition", rc);
    goto out;
  }
  if (!cfg.quiet) {
    fprintf(stderr,
            "fedlr-sim: %s: %zu train / %zu test examples, %zu features, %zu classes; "
            "model %s (%zu parameters), lr0 %g, schedule %s\n",
            cfg.dataset, train->n, test ? test->n : 0, train->dim, classes, cfg.model,
            ec.model.num_params, ec.lr0, cfg.schedule);
    fl_partition_print_summary(part, train, stderr, 5);
  }
  if (!(attacker = choose_attackers(cfg.seed, cfg.clients, cfg.attackers))) {
    fprintf(stderr, "fedlr-sim: out of memory\n");
    goto out;
  }
  if (cfg.attackers) {
    /* Always printed: a run under attack should say so, and which clients. */
    fprintf(stderr, "fedlr-sim: %u of %u clients attack (%s):", cfg.attackers, cfg.clients,
            cfg.attack);
    for (uint32_t i = 0, k = 0; i < cfg.clients && k < 100; i++)
      if (attacker[i]) fprintf(stderr, " %u", i), k++;
    fprintf(stderr, "%s\n", cfg.attackers > 100 ? " ..." : "");
  }
  if (!test) fprintf(stderr, "fedlr-sim: no test set (--test-data): no evaluation\n");

  engine = fl_engine_new(&ec, &rc);
  if (!engine) {
    status = fail("engine", rc);
    goto out;
  }
  for (uint32_t i = 0; i < cfg.clients; i++) {
    fl_shard_t shard = {train, NULL, 0, attacker[i] ? &attack : NULL};
    fl_partition_indices(part, i, &shard.n);
    char name[32];
    snprintf(name, sizeof name, "sim-%u", i);
    if ((rc = fl_engine_add_client(engine, name, fl_trainer_claimed_examples(&shard), NULL))) {
      status = fail("registering clients", rc);
      goto out;
    }
  }
  /* --out first: --metrics may name a file inside it. */
  if (cfg.out[0] && (rc = fl_file_mkdirs(cfg.out))) {
    status = fail("--out", rc);
    goto out;
  }
  if ((rc = fl_metrics_new(cfg.metrics, 0, &metrics))) {
    status = fail("--metrics", rc);
    goto out;
  }

  sim = calloc(1, sizeof *sim);
  if (!sim) goto out;
  sim->engine = engine;
  sim->train = train;
  sim->part = part;
  sim->attack = &attack;
  sim->attacker = attacker;
  size_t nw = cfg.workers ? cfg.workers : (size_t)sysconf(_SC_NPROCESSORS_ONLN);
  if (nw < 1) nw = 1;
  if (nw > SIM_MAX_WORKERS) nw = SIM_MAX_WORKERS;
  if ((rc = start_workers(sim, &ec.model, nw))) {
    status = fail("workers", rc);
    stop_workers(sim);
    free(sim);
    sim = NULL;
    goto out;
  }

  double t_start = now_s();
  fl_round_metrics_t rm;
  memset(&rm, 0, sizeof rm);
  uint64_t rejected = 0, clipped = 0, capped = 0;
  while (!fl_engine_finished(engine)) {
    double t0 = now_s();
    if ((rc = fl_engine_begin_round(engine))) {
      status = fail("round", rc);
      goto out;
    }
    if ((rc = run_round_jobs(sim))) {
      fprintf(stderr, "fedlr-sim: round %u: %s\n", fl_engine_round(engine), sim->errmsg);
      goto out;
    }
    /* In job (= sample) order: the same lines whatever the thread count. */
    const uint32_t *ids;
    size_t m = fl_engine_sampled(engine, &ids);
    for (size_t j = 0; j < m && !cfg.quiet; j++)
      if (sim->rejected[j][0])
        fprintf(stderr, "fedlr-sim: round %u: rejected the update of attacker %u: %s\n",
                fl_engine_round(engine), ids[j], sim->rejected[j]);
    if (fl_engine_reported(engine) == 0) {
      /* Those clients are quarantined: the retry samples others, and the
       * engine ends the run once --max-retries attempts failed. */
      fprintf(stderr,
              "fedlr-sim: round %u: every update was rejected: running it again with a "
              "fresh sample\n",
              fl_engine_round(engine));
      rejected += m;
      if ((rc = fl_engine_abort_round(engine))) {
        fprintf(stderr, "fedlr-sim: %s\n", fl_err_msg());
        goto out;
      }
      continue;
    }
    if ((rc = fl_engine_end_round(engine, &rm))) {
      status = fail("round", rc);
      goto out;
    }
    double t1 = now_s();
    rm.seconds = t1 - t0;
    rm.elapsed = t1 - t_start;
    /* A line that cannot be written (a full disk) is kept and retried;
     * the failure is reported when it begins, and at the end if lines are
     * still missing then. */
    if ((rc = fl_metrics_add(metrics, &rm, NULL)) == FL_EIO) {
      fprintf(stderr, "fedlr-sim: %s\n", fl_err_msg());
    } else if (rc) {
      status = fail("--metrics", rc);
      goto out;
    }
    if (!cfg.quiet) fl_metrics_print_progress(stdout, &rm);
    fflush(stdout);
    rejected += rm.rejected;
    clipped += rm.clipped;
    capped += rm.capped;
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("final: round %u test accuracy %.4f loss %.4f, %.1f s, peak memory %.0f MiB", rm.round,
         rm.test_accuracy, rm.test_loss, now_s() - t_start, (double)ru.ru_maxrss / 1024.0);
  if (rejected || clipped || capped)
    printf("; updates rejected %llu, clipped %llu, capped %llu", (unsigned long long)rejected,
           (unsigned long long)clipped, (unsigned long long)capped);
  printf("\n");
  /* Every output is attempted; any that failed makes the status 1. */
  status = 0;
  if (cfg.out[0]) {
    if ((rc =
             fl_outputs_write(cfg.out, "fedlr-sim", &cfg, FL_PROG_SIM, fl_engine_model(engine),
                              fl_engine_weights(engine), fl_engine_rounds_done(engine), metrics))) {
      fprintf(stderr, "fedlr-sim: %s\n", fl_err_msg());
      status = 1;
    } else if (!cfg.quiet) {
      fprintf(stderr, "fedlr-sim: wrote %s/{model.safetensors,chart.svg,config.ini}\n", cfg.out);
    }
  }
  if ((rc = fl_metrics_flush(metrics))) {
    fprintf(stderr, "fedlr-sim: %s\n", fl_err_msg());
    status = 1;
  }
out:
  if (sim) {
    stop_workers(sim);
    free(sim->rejected);
    free(sim);
  }
  free(attacker);
  fl_metrics_destroy(&metrics);
  fl_engine_destroy(&engine);
  fl_partition_destroy(&part);
  fl_dataset_destroy(&train);
  fl_dataset_destroy(&test);
  return status;
}
