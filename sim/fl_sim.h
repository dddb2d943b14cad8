/* fl_sim: simulated runs, the in-process transport of the run driver.
 *
 * A simulated run is fl_run (coordinator/fl_run: the engine and the run's
 * policy) with N virtual clients (client/fl_trainer) that exchange the same
 * encoded protobuf messages as networked runs; only the transport differs.
 * Here it is a pool of worker threads (fl_sim_pool), each owning trainer
 * workspaces and one BLAS thread: when a run asks for a RoundStart to
 * client k, the job goes to the pool; a worker encodes the message, trains
 * client k on its partition, decodes the Update and hands it to the run. A
 * mutex per run serializes every call into it, so a round closes (and the
 * next one starts) inside the call that brought its last answer.
 *
 * One pool serves any number of runs at once (fedlr-sweep runs a grid of
 * configurations on one pool; fedlr-sim runs one): jobs of all runs share
 * one queue, first come first served, and the dataset is shared read-only.
 * Results do not depend on the pool's size or on the other runs: each
 * client's training is a pure function of its message and data, and the
 * aggregation is order-independent.
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
 * could never close.
 *
 * Lock order: a run's mutex, then the pool's; never the other way. The
 * on_change callback is called with the run's mutex held: it may take a
 * lock of its own but must not call back into fl_sim_* for any run. */
#ifndef FL_SIM_H
#define FL_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "fl_config.h"
#include "fl_data.h"
#include "fl_run.h"

typedef struct fl_sim_pool fl_sim_pool_t;
typedef struct fl_sim fl_sim_t;

/* The most worker threads in a pool. */
#define FL_SIM_MAX_WORKERS 256

/* A pool of `workers` threads (1 .. FL_SIM_MAX_WORKERS), each with one
 * BLAS thread. NULL with *err and a message on failure. */
fl_sim_pool_t *fl_sim_pool_new(size_t workers, int *err);
/* Stops the workers (after their current job) and frees the pool. Every
 * run on it must be destroyed first. NULL-safe; clears *p. */
void fl_sim_pool_destroy(fl_sim_pool_t **p);
size_t fl_sim_pool_workers(const fl_sim_pool_t *p);

typedef struct {
  const fl_config_t *cfg;           /* a validated fedlr-sim configuration (copied) */
  const fl_dataset_t *train, *test; /* the --dataset's data (borrowed, read-only; test may be
                                     * NULL); the configuration's dataset flags are not read */
  const char *producer;             /* "fedlr-sim": outputs and log lines */
  int announce;                     /* print the data, partition and attack summaries (fedlr-sim) */
  uint32_t eval_threads;            /* threads evaluating the test set (0: the pool's workers); the
                                     * results do not depend on it */
  /* Log lines of the run (no newline); NULL: stderr as "<producer>: <line>",
   * a client's (a rejected update) only without --quiet. */
  void (*log)(void *ctx, int reason, const char *line);
  /* The run finished or paused (see the lock order above); NULL: none. */
  void (*on_change)(void *ctx, fl_sim_t *s);
  void *ctx;
  /* The run's TensorBoard folder, the exact one (fl_run_config_t's
   * tensorboard_dir: created if need be; fedlr-sim passes --tensorboard
   * DIR/<run name>), read by fl_sim_new only; NULL: none. */
  const char *tensorboard_dir;
} fl_sim_config_t;

/* Checks the specs a configuration holds for the engine and the trainer
 * (--aggregator, --attack), which fl_config only stores: before any data
 * is loaded, so that a bad flag is reported as one. 0 or FL_EINVAL naming
 * the flag. */
int fl_sim_check_config(const fl_config_t *cfg);

/* Builds a run on `pool`: its --init, engine, partition, held-out rows and
 * attackers, and its virtual clients registered. Nothing runs yet. NULL
 * with *err and a message (naming the flag) on failure; FL_EINVAL for a
 * configuration fedlr-sim cannot run (a custom --init model, --clients
 * above the examples, an optimizer state kept across rounds). */
fl_sim_t *fl_sim_new(fl_sim_pool_t *pool, const fl_sim_config_t *c, int *err);

/* Starts the run (its first round's jobs go to the pool) and returns. */
void fl_sim_start(fl_sim_t *s);

/* Waits until the run is finished (returns 1) or paused (returns 0). */
int fl_sim_wait(fl_sim_t *s);

/* Where the run is now. */
enum { FL_SIM_RUNNING = 0, FL_SIM_PAUSED, FL_SIM_FINISHED };
int fl_sim_state(fl_sim_t *s);

/* fl_run_pause_after / fl_run_resume / fl_run_stop under the run's lock. */
void fl_sim_pause_after(fl_sim_t *s, uint32_t rounds);
void fl_sim_resume(fl_sim_t *s);
void fl_sim_stop(fl_sim_t *s, const char *why, int status);

/* The run, for reads once it is paused or finished (metrics, counts). */
const fl_run_t *fl_sim_run(const fl_sim_t *s);
/* Why it finished ("" before), as fl_run said it. */
const char *fl_sim_why(const fl_sim_t *s);

/* Stops the run if it is still going, waits for its jobs to drain, frees
 * it. NULL-safe; clears *s. */
void fl_sim_destroy(fl_sim_t **s);

#endif
