/* fl_run: the run driver, the one place where a run's rounds start and end.
 *
 * It owns the round engine (fl_engine), the metrics file, the outputs
 * (model, chart, config, checkpoints) and the run's policy: when a round
 * starts, when it closes or is abandoned and run again, which clients are
 * quarantined, when the run gives up, what is recorded and written, and the
 * progress line. It knows no socket, thread or event loop: a transport
 * feeds it events and it answers through a table of callbacks.
 *
 *   transport -> fl_run (events)      fl_run -> transport (actions)
 *   fl_run_register() a client joins   round_opened()        RoundStarts follow
 *                                      send_round_start(id) train this round
 *   fl_run_client()   alive / ready    send_evaluate(id)     evaluate the new model
 *   fl_run_update()   an Update        wake_at(t)            call fl_run_tick
 *   fl_run_eval_result() an EvalResult finished(why, status) the run is over
 *   fl_run_tick()     time passed      log(reason, line)     a log line
 *   fl_run_stop()     stop requested
 *
 * fedlr-sim (a worker pool, messages in memory) and fedlr-coordinator
 * (ZeroMQ on a libuv loop) are two transports of it, so both run the same
 * policy and produce the same metrics and weights, bit for bit.
 *
 * A round: it starts when at least --min-clients clients are ready (the
 * first round of a process: --start-clients) and samples among them; it
 * closes as soon as every sampled client has answered (an update accepted
 * or rejected) or died, or the live ones still to answer could no longer
 * make the quorum, or at its deadline (--round-timeout; a transport without
 * deadlines passes 0). Then it is aggregated (and, when the engine opens a
 * federated evaluation, the round's line waits for it: it closes once every
 * evaluator has answered or died, or at a deadline of --round-timeout,
 * with the results that came; evaluators silent at the deadline are not
 * asked again for --quarantine rounds), or abandoned and run again
 * with a fresh sample; clients whose update was rejected, or that let the
 * deadline pass without answering, are quarantined. The run ends when the
 * engine is finished (round limit, target accuracy), after --max-retries
 * abandoned attempts of a round, after --start-timeout without a round
 * able to start, when the engine refuses a round, or on fl_run_stop().
 *
 * Not thread-safe: a transport with threads serializes its calls. The
 * callbacks are called from inside the calls that cause them. */
#ifndef FL_RUN_H
#define FL_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "fl_config.h"
#include "fl_data.h"
#include "fl_engine.h"
#include "fl_metrics.h"

/* Exit statuses of a run (fl_run_status). */
enum { FL_RUN_OK = 0, FL_RUN_FAILED = 1, FL_RUN_INTERRUPTED = 3 };

/* Log reasons: lines a client's behaviour causes (a transport may
 * rate-limit them, fl_ratelog) and the others. */
enum { FL_RUN_LOG_INFO = -1, FL_RUN_LOG_PEER = 0 };

typedef struct {
  void *ctx;
  /* Seconds on a monotonic clock (NULL: fl_clock_now). */
  double (*now)(void *ctx);
  /* A round (or a retry of one) opens: its RoundStarts follow. NULL: none. */
  void (*round_opened)(void *ctx);
  /* Send the open round's RoundStart (fl_engine_encode_round_start) to
   * client `id`. */
  void (*send_round_start)(void *ctx, uint32_t id);
  /* Send the open evaluation's Evaluate (fl_engine_encode_evaluate) to
   * client `id`. NULL: the transport has no evaluating clients (an
   * evaluation closes at once, empty). */
  void (*send_evaluate)(void *ctx, uint32_t id);
  /* Call fl_run_tick() at time t (the round's deadline); NULL when the
   * transport has no deadlines. */
  void (*wake_at)(void *ctx, double t);
  /* The run is over: outputs are written; tell the clients `why`. */
  void (*finished)(void *ctx, const char *why, int status);
  /* The run paused (fl_run_pause_after): its rounds are done and recorded,
   * no round is open; fl_run_resume() goes on. NULL: none. */
  void (*paused)(void *ctx);
  /* A log line (no newline), FL_RUN_LOG_PEER if a client caused it. NULL:
   * lines go to stderr prefixed with the producer's name. */
  void (*log)(void *ctx, int reason, const char *line);
} fl_run_transport_t;

typedef struct {
  const fl_config_t *cfg;           /* the run's flags (outputs, clients, waits), copied */
  const fl_engine_config_t *engine; /* the engine, from the same flags (fl_engine_config_from),
                                     * copied; its test set is borrowed */
  int prog;                         /* FL_PROG_SIM or FL_PROG_COORD: the keys of config.ini */
  const char *producer;             /* "fedlr-sim", "fedlr-coordinator": outputs, logs */
  double round_timeout;             /* s, 0 = no deadline */
  double start_timeout;             /* s without a round able to start, 0 = forever */
  int checkpoints;    /* write --out/checkpoint.safetensors every --checkpoint-every */
  const char *resume; /* a --resume DIR, or NULL */
  int participants;   /* "participants" and "dropped" in each metrics line (networked) */
  /* Write each round's scalars as a TensorBoard event file into this
   * folder, the run's own (fl_tboard; created if need be); NULL = none. */
  const char *tensorboard_dir;
} fl_run_config_t;

typedef struct fl_run fl_run_t;

/* Builds the run: the engine, the metrics file, and with `resume` the
 * checkpoint restored and the metrics file trimmed to its rounds (nothing
 * is created before the checkpoint is found). NULL with *err and a detail
 * on failure. */
fl_run_t *fl_run_new(const fl_run_config_t *rc, int *err);
void fl_run_destroy(fl_run_t **r);

/* The transport, before fl_run_start (copied). */
void fl_run_set_transport(fl_run_t *r, const fl_run_transport_t *t);

/* Starts the run: the first round if enough clients are ready, or the end
 * at once if a resumed run is already finished. */
void fl_run_start(fl_run_t *r);

/* A client asks to join as `name` with `num_examples` (and
 * `eval_examples` held out for evaluation, 0 if it does not evaluate), at
 * client id `slot` if want_slot. Registers it (or re-registers it: a
 * rejoin) and sets *id.
 * FL_EINVAL / FL_ERANGE with a reason fit for the peer (never naming
 * another client) if refused. The client is not ready until fl_run_client
 * says so. */
int fl_run_register(fl_run_t *r, const char *name, uint64_t num_examples, uint64_t eval_examples,
                    int want_slot, uint32_t slot, uint32_t *id);

/* Client `id` is alive (the transport hears from it) and ready (it may be
 * sampled: alive and proven on its connection). A sampled client that died
 * may decide its round; a client that became ready may start one. */
void fl_run_client(fl_run_t *r, uint32_t id, int alive, int ready);

/* An Update from client `id` (decoded with fl_engine_limits; its tensors
 * may be modified). A rejection is logged and may decide the round;
 * nonzero only for an error of ours (FL_ENOMEM), which ends the run. */
int fl_run_update(fl_run_t *r, uint32_t id, Fedlr__Update *u);

/* An EvalResult from client `id` (decoded with fl_engine_limits). A
 * rejection is logged (the client, if its content was at fault, is not
 * asked to evaluate for --quarantine rounds); the evaluation may close.
 * Always 0. */
int fl_run_eval_result(fl_run_t *r, uint32_t id, const Fedlr__EvalResult *res);

/* Bytes the transport sent and received for the open round (metrics). */
void fl_run_account(fl_run_t *r, uint64_t sent, uint64_t received);

/* Time passed: the deadline, the wait for clients, and rounds that can
 * start. */
void fl_run_tick(fl_run_t *r);

/* Ends the run now (a signal): the open round is abandoned, the outputs
 * written, exit status `status`. */
void fl_run_stop(fl_run_t *r, const char *why, int status);

/* Pausing (fedlr-sweep's successive halving and range test): once
 * `rounds` rounds are done (0: never), no further round starts; the run
 * says so through the transport's paused() (at once if it is already
 * there and idle). fl_run_resume() starts the next round as if there had
 * been no pause, so a paused and resumed run is the same run, bit for bit;
 * a new fl_run_pause_after() first moves the pause. The round limit and
 * --target-accuracy still end the run (finished(), not paused()). */
void fl_run_pause_after(fl_run_t *r, uint32_t rounds);
void fl_run_resume(fl_run_t *r);
/* 1 while paused. */
int fl_run_paused(const fl_run_t *r);

/* 1 once the run is over; its exit status (FL_RUN_*). */
int fl_run_done(const fl_run_t *r);
int fl_run_status(const fl_run_t *r);

/* The engine, for a transport's reads (encoding, limits, names, the open
 * round). Never to change: events go through fl_run_*. */
const fl_engine_t *fl_run_engine(const fl_run_t *r);
/* The metrics so far (the last round's for a summary). */
const fl_metrics_t *fl_run_metrics(const fl_run_t *r);
/* Updates rejected, clipped and capped since the start. */
void fl_run_counts(const fl_run_t *r, uint64_t *rejected, uint64_t *clipped, uint64_t *capped);

#endif
