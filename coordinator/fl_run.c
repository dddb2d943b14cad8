/* fl_run: see fl_run.h. */
#include "fl_run.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fl_checkpoint.h"
#include "fl_clock.h"
#include "fl_error.h"
#include "fl_file.h"
#include "fl_outputs.h"
#include "fl_tboard.h"

#define WAIT_LOG_S 30.0 /* while no round can start, say who is awaited this often */
#define LIST_MAX 10     /* clients named in one "awaited" list */

struct fl_run {
  fl_config_t cfg;
  fl_run_config_t rc; /* its pointers: cfg (ours), test (borrowed) */
  char producer[32];
  fl_run_transport_t tp;
  fl_engine_config_t ec;
  fl_engine_t *engine;
  fl_metrics_t *metrics;
  fl_tboard_t *tboard; /* NULL: no --tensorboard */
  char ckpt_path[FL_PATH_MAX + 32];
  uint32_t ckpt_failed; /* checkpoints failed in a row (logged at the first and the last) */
  /* clients, by engine id */
  uint8_t *alive;      /* (cap_ids) the transport hears from it */
  uint32_t *rounds_in; /* (cap_ids) rounds its update was aggregated in */
  size_t cap_ids;
  /* the run */
  int started;                /* this process has started a round: --min-clients from now on */
  int open;                   /* a round is open */
  int evaluating;             /* the closed round's federated evaluation is open */
  fl_round_metrics_t pending; /* that round's metrics, waiting for its evaluation */
  char *pending_extra;        /* and its extra JSON members (malloc'd, may be NULL) */
  double t0, round_t0, deadline;
  double wait_since, wait_logged;
  uint64_t sent, received; /* bytes of the open round */
  uint64_t rejected, clipped, capped;
  uint32_t pause_after; /* fl_run_pause_after: 0 = never */
  int begun, paused;    /* fl_run_start was called; paused (no round starts) */
  int done, status;
};

/* ---- small helpers ---- */

static double now(const fl_run_t *r) {
  return r->tp.now ? r->tp.now(r->tp.ctx) : fl_clock_now();
}

static void logv(const fl_run_t *r, int reason, const char *fmt, va_list ap) {
  char line[2048];
  vsnprintf(line, sizeof line, fmt, ap);
  if (r->tp.log)
    r->tp.log(r->tp.ctx, reason, line);
  else
    fprintf(stderr, "%s: %s\n", r->producer, line);
}

static void say(const fl_run_t *r, int reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(const fl_run_t *r, int reason, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  logv(r, reason, fmt, ap);
  va_end(ap);
}

/* "name (id N)" for logs; names are validated text (fl_wire_check_name). */
static const char *label(const fl_run_t *r, uint32_t id, char *buf, size_t cap) {
  const char *name = fl_engine_client_name(r->engine, id);
  snprintf(buf, cap, "%s (id %u)", name ? name : "?", id);
  return buf;
}

static int is_alive(const fl_run_t *r, uint32_t id) {
  return id < r->cap_ids && r->alive[id];
}

static int ensure_ids(fl_run_t *r, size_t n) {
  if (n <= r->cap_ids) return 0;
  size_t cap = r->cap_ids ? r->cap_ids : 64;
  while (cap < n)
    cap *= 2;
  uint8_t *a = realloc(r->alive, cap);
  if (a) r->alive = a;
  uint32_t *k = realloc(r->rounds_in, cap * sizeof *k);
  if (k) r->rounds_in = k;
  if (!a || !k) return fl_err_set(FL_ENOMEM, "out of memory for client %zu", n - 1);
  memset(r->alive + r->cap_ids, 0, cap - r->cap_ids);
  memset(r->rounds_in + r->cap_ids, 0, (cap - r->cap_ids) * sizeof *k);
  r->cap_ids = cap;
  return 0;
}

/* ---- outputs ---- */

/* The checkpoint (with --out and checkpoints), and at the end (`final`) the
 * outputs (fl_outputs_write) and the metrics lines still queued. Failures
 * are logged (a run of failed checkpoints at its first, its recovery and
 * the end, not every round); the run goes on after a failed checkpoint,
 * since the previous one stays intact (atomic writes). Nonzero if anything
 * failed. */
static int write_outputs(fl_run_t *r, int final) {
  int failed = 0;
  const int ckpt = r->rc.checkpoints && r->cfg.out[0];
  if (ckpt && fl_checkpoint_save(r->engine, r->ckpt_path) != 0) {
    if (!r->ckpt_failed++ || final)
      say(r, FL_RUN_LOG_INFO,
          "checkpoint not written (%u in a row; an earlier one, if any, is kept): %s",
          r->ckpt_failed, fl_err_msg());
    failed = 1;
  } else if (ckpt && r->ckpt_failed) {
    say(r, FL_RUN_LOG_INFO, "checkpoint %s written again, after %u failed", r->ckpt_path,
        r->ckpt_failed);
    r->ckpt_failed = 0;
  }
  if (!final) return failed;
  if (r->cfg.out[0] && fl_outputs_write(r->cfg.out, r->producer, &r->cfg, r->rc.prog,
                                        fl_engine_model(r->engine), fl_engine_weights(r->engine),
                                        fl_engine_rounds_done(r->engine), r->metrics) != 0) {
    say(r, FL_RUN_LOG_INFO, "%s", fl_err_msg());
    failed = 1;
  }
  if (fl_metrics_flush(r->metrics) != 0) {
    say(r, FL_RUN_LOG_INFO, "%s", fl_err_msg());
    failed = 1;
  }
  if (r->tboard && fl_tboard_close(r->tboard) != 0) {
    say(r, FL_RUN_LOG_INFO, "%s", fl_err_msg());
    failed = 1;
  }
  return failed;
}

/* ---- the end ---- */

static void end_eval(fl_run_t *r, int early);

static void finish(fl_run_t *r, const char *why, int status) {
  if (r->done) return;
  r->done = 1;
  r->status = status;
  if (r->evaluating) end_eval(r, 1); /* the round is recorded with the results that came */
  if (r->open) {
    fl_engine_abort_round(r->engine); /* an error here only repeats that the run ends */
    r->open = 0;
  }
  say(r, FL_RUN_LOG_INFO, "%s", why);
  /* An interrupted run: the checkpoint of its last completed round. A
   * final output that cannot be written makes the exit status 1. */
  if (write_outputs(r, 1) != 0) r->status = FL_RUN_FAILED;
  uint32_t lo = UINT32_MAX, hi = 0, n = 0;
  double sum = 0;
  for (uint32_t id = 0; id < r->cap_ids; id++) {
    if (!fl_engine_client_name(r->engine, id)) continue;
    uint32_t k = r->rounds_in[id];
    lo = k < lo ? k : lo;
    hi = k > hi ? k : hi;
    sum += k;
    n++;
  }
  if (n && r->rc.participants)
    say(r, FL_RUN_LOG_INFO,
        "participation: %u clients, rounds per client min %u, mean %.1f, max %u", n, lo, sum / n,
        hi);
  if (r->tp.finished) r->tp.finished(r->tp.ctx, why, r->status);
}

/* ---- starting rounds ---- */

/* A bounded string builder for the "awaited" lines. */
typedef struct {
  char *p;
  size_t cap, len;
} sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf_t *b, const char *fmt, ...) {
  if (b->len + 1 >= b->cap) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  if (n > 0) b->len = b->len + (size_t)n < b->cap ? b->len + (size_t)n : b->cap - 1;
}

/* Appends `label` and the first LIST_MAX client ids (with names) that
 * `pick` selects among ids 0 .. --clients - 1, if any. */
static void list_clients(const fl_run_t *r, int (*pick)(const fl_run_t *, uint32_t), sbuf_t *b,
                         const char *what) {
  size_t n = 0;
  for (uint32_t id = 0; id < r->cfg.clients; id++) {
    if (!pick(r, id)) continue;
    if (n++ == 0) sb_printf(b, "%s", what);
    if (n > LIST_MAX) continue;
    const char *name = fl_engine_client_name(r->engine, id);
    sb_printf(b, "%s%u", n > 1 ? ", " : "", id);
    if (name) sb_printf(b, " (%s)", name);
  }
  if (n > LIST_MAX) sb_printf(b, ", ... (%zu in all)", n);
}
static int pick_dead(const fl_run_t *r, uint32_t id) {
  return fl_engine_client_name(r->engine, id) && !is_alive(r, id);
}
static int pick_unready(const fl_run_t *r, uint32_t id) {
  return fl_engine_client_name(r->engine, id) && is_alive(r, id) &&
         !fl_engine_is_available(r->engine, id);
}
static int pick_missing(const fl_run_t *r, uint32_t id) {
  return !fl_engine_client_name(r->engine, id);
}

static uint32_t clients_needed(const fl_run_t *r, const char **flag) {
  *flag = "--min-clients";
  if (!r->started && r->cfg.start_clients > r->cfg.min_clients) {
    *flag = "--start-clients";
    return r->cfg.start_clients;
  }
  return r->cfg.min_clients;
}

/* Why no round can start now, naming who is awaited. */
static void describe_wait(const fl_run_t *r, char *buf, size_t cap) {
  const char *flag;
  uint32_t need = clients_needed(r, &flag);
  sbuf_t b = {buf, cap, 0};
  buf[0] = '\0';
  sb_printf(&b, "%zu of the %u clients needed (%s) are ready", fl_engine_num_available(r->engine),
            need, flag);
  list_clients(r, pick_dead, &b, "; dead: ");
  list_clients(r, pick_unready, &b, "; joined, no heartbeat yet: ");
  list_clients(r, pick_missing, &b, "; not joined: ids ");
}

/* Starts a round if none is open and enough clients are ready. A round the
 * engine refuses to start (weights or rate every client would refuse) ends
 * the run with that error: retrying could not help. */
static void maybe_start(fl_run_t *r) {
  if (r->done || r->open || r->evaluating || fl_engine_finished(r->engine)) return;
  if (r->pause_after && fl_engine_rounds_done(r->engine) >= r->pause_after) {
    if (!r->paused) {
      r->paused = 1;
      if (r->tp.paused) r->tp.paused(r->tp.ctx);
    }
    return;
  }
  const char *flag;
  if (fl_engine_num_available(r->engine) < clients_needed(r, &flag)) return;
  r->started = 1;
  if (fl_engine_begin_round(r->engine) != 0) {
    char why[1024];
    snprintf(why, sizeof why, "round %u cannot start: %s", fl_engine_rounds_done(r->engine) + 1,
             fl_err_msg());
    finish(r, why, FL_RUN_FAILED);
    return;
  }
  r->open = 1;
  r->round_t0 = now(r);
  r->sent = r->received = 0;
  if (r->rc.round_timeout > 0) {
    r->deadline = r->round_t0 + r->rc.round_timeout;
    if (r->tp.wake_at) r->tp.wake_at(r->tp.ctx, r->deadline);
  }
  if (r->tp.round_opened) r->tp.round_opened(r->tp.ctx);
  const uint32_t *ids;
  size_t m = fl_engine_sampled(r->engine, &ids);
  /* The transport may answer at once (fedlr-sim's workers): the round's
   * sample must not change under this loop, and it does not, since a round
   * closes only once every sampled client has answered. */
  for (size_t i = 0; i < m && r->tp.send_round_start; i++)
    r->tp.send_round_start(r->tp.ctx, ids[i]);
}

/* While no round can start: every WAIT_LOG_S says who is awaited, and after
 * start_timeout ends the run (a client that died before joining must not
 * make the run wait forever). */
static void check_waiting(fl_run_t *r, double t) {
  if (r->done || r->open || r->evaluating || r->paused) {
    r->wait_since = r->wait_logged = t;
    return;
  }
  char what[2048];
  double waited = t - r->wait_since;
  if (r->rc.start_timeout > 0 && waited >= r->rc.start_timeout) {
    describe_wait(r, what, sizeof what);
    char why[2300];
    snprintf(why, sizeof why,
             "no round could start for %.0f s (--start-timeout %g): %s; giving up (continue "
             "later with --resume)",
             waited, r->rc.start_timeout, what);
    finish(r, why, FL_RUN_FAILED);
    return;
  }
  if (t - r->wait_logged >= WAIT_LOG_S) {
    r->wait_logged = t;
    describe_wait(r, what, sizeof what);
    say(r, FL_RUN_LOG_INFO, "waiting %.0f s for clients: %s", waited, what);
  }
}

/* ---- closing rounds ---- */

static void record_round(fl_run_t *r, fl_round_metrics_t *rm, char *extra);
static void begin_eval(fl_run_t *r, const fl_round_metrics_t *rm, char *extra);
static void end_eval(fl_run_t *r, int early);
static void check_eval(fl_run_t *r);

/* The "participants" and "dropped" members of the round's metrics line
 * (malloc'd, NULL without memory), and the drop-outs logged. */
static char *participants_json(fl_run_t *r, const char *why) {
  const uint32_t *ids;
  size_t m = fl_engine_sampled(r->engine, &ids), cap = 64 + 24 * m, at = 0, at2 = 0;
  uint32_t round = fl_engine_round(r->engine);
  char *parts = malloc(cap), *dropped = malloc(cap), *json = malloc(2 * cap + 64), lb[300];
  if (!parts || !dropped || !json) {
    free(parts);
    free(dropped);
    free(json);
    return NULL;
  }
  parts[0] = dropped[0] = '\0';
  for (size_t i = 0; i < m; i++) {
    if (fl_engine_has_reported(r->engine, ids[i])) {
      at += (size_t)snprintf(parts + at, cap - at, "%s%u", at ? "," : "", ids[i]);
    } else {
      at2 += (size_t)snprintf(dropped + at2, cap - at2, "%s%u", at2 ? "," : "", ids[i]);
      say(r, FL_RUN_LOG_PEER, "round %u: dropped %s (%s)", round, label(r, ids[i], lb, sizeof lb),
          fl_engine_has_answered(r->engine, ids[i]) ? "its update was rejected" : why);
    }
  }
  snprintf(json, 2 * cap + 64, "\"participants\":[%s],\"dropped\":[%s]", parts, dropped);
  free(parts);
  free(dropped);
  return json;
}

/* Closes the open round: with quorum, aggregate and evaluate; without,
 * abandon it so that the same round index runs again with a fresh sample
 * of live clients, without those whose updates were rejected (the engine
 * quarantines them). After --max-retries abandoned attempts in a row the
 * engine refuses, and the run ends with its error. `at_deadline`: the
 * round's deadline passed, and its live clients that never answered are
 * quarantined as well: otherwise one could hold every round it is sampled
 * in (and every retry) this long. */
static void close_round(fl_run_t *r, const char *why, int at_deadline) {
  r->open = 0;
  r->wait_since = r->wait_logged = now(r);
  uint32_t round = fl_engine_round(r->engine);
  const uint32_t *ids;
  size_t m = fl_engine_sampled(r->engine, &ids);
  char lb[300], msg[1300];
  for (size_t i = 0; at_deadline && i < m; i++)
    if (!fl_engine_has_answered(r->engine, ids[i]) && is_alive(r, ids[i]))
      say(r, FL_RUN_LOG_PEER,
          "round %u: %s did not answer by the deadline (--round-timeout %g); not sampled again "
          "before round %u",
          round, label(r, ids[i], lb, sizeof lb), r->rc.round_timeout,
          fl_engine_quarantine(r->engine, ids[i]) + 1);
  if (!fl_engine_has_quorum(r->engine)) {
    say(r, FL_RUN_LOG_INFO,
        "round %u: %zu of %zu sampled clients reported, %zu needed for the quorum %.2f (%s): "
        "abandoned (attempt %u); running it again with a fresh sample of live clients",
        round, fl_engine_reported(r->engine), m, fl_engine_quorum_need(r->engine), r->ec.quorum,
        why, fl_engine_attempt(r->engine) + 1);
    if (fl_engine_abort_round(r->engine) != 0) {
      snprintf(msg, sizeof msg, "%s (--max-retries %u)", fl_err_msg(), r->cfg.max_retries);
      finish(r, msg, FL_RUN_FAILED);
      return;
    }
    maybe_start(r);
    return;
  }
  for (size_t i = 0; i < m; i++)
    if (fl_engine_has_reported(r->engine, ids[i])) r->rounds_in[ids[i]]++;
  char *extra = r->rc.participants ? participants_json(r, why) : NULL;
  fl_round_metrics_t rm;
  if (fl_engine_end_round(r->engine, &rm) != 0) {
    free(extra);
    snprintf(msg, sizeof msg, "round %u: %s", round, fl_err_msg());
    finish(r, msg, FL_RUN_FAILED);
    return;
  }
  if (fl_engine_eval_open(r->engine)) {
    begin_eval(r, &rm, extra);
    return;
  }
  record_round(r, &rm, extra);
}

/* The round's metrics line and progress line, the checkpoint, and the end
 * of the run or the next round. Takes `extra` (malloc'd or NULL). */
static void record_round(fl_run_t *r, fl_round_metrics_t *rm_, char *extra) {
  fl_round_metrics_t rm = *rm_;
  char msg[1300];
  double t = now(r);
  rm.seconds = t - r->round_t0;
  rm.elapsed = t - r->t0;
  rm.bytes_sent = r->sent;
  rm.bytes_received = r->received;
  r->rejected += rm.rejected;
  r->clipped += rm.clipped;
  r->capped += rm.capped;
  /* Logged when a write failure begins; the lines are kept and retried. */
  if (fl_metrics_add(r->metrics, &rm, extra) != 0) say(r, FL_RUN_LOG_INFO, "%s", fl_err_msg());
  free(extra);
  if (r->tboard) { /* the same: logged when a failure begins, the records kept */
    const char *names[FL_FEDEVAL_MAX_NAMES];
    double values[FL_FEDEVAL_MAX_NAMES];
    size_t n = rm.fed_eval_clients
                   ? fl_engine_eval_named(r->engine, names, values, FL_FEDEVAL_MAX_NAMES)
                   : 0;
    if (fl_tboard_round(r->tboard, &rm, names, values, n) != 0)
      say(r, FL_RUN_LOG_INFO, "%s", fl_err_msg());
  }
  if (!r->cfg.quiet) {
    fl_metrics_print_progress(stdout, &rm);
    fflush(stdout);
  }
  int last = fl_engine_finished(r->engine);
  if (!last && !r->done && rm.round % r->cfg.checkpoint_every == 0) write_outputs(r, 0);
  if (last && !r->done) {
    if (isnan(rm.test_accuracy) && rm.fed_eval_clients && !isnan(rm.fed_eval_accuracy))
      snprintf(msg, sizeof msg, "run finished after %u rounds, federated accuracy %.4f", rm.round,
               rm.fed_eval_accuracy);
    else if (isnan(rm.test_accuracy) && rm.fed_eval_clients)
      snprintf(msg, sizeof msg, "run finished after %u rounds, federated loss %.4g", rm.round,
               rm.fed_eval_loss);
    else if (isnan(rm.test_accuracy))
      snprintf(msg, sizeof msg, "run finished after %u rounds", rm.round);
    else
      snprintf(msg, sizeof msg, "run finished after %u rounds, test accuracy %.4f", rm.round,
               rm.test_accuracy);
    finish(r, msg, FL_RUN_OK);
    return;
  }
  maybe_start(r);
}

/* ---- federated evaluation ---- */

/* The closed round's evaluation opens: the round's metrics wait for it;
 * each evaluator gets its Evaluate; a deadline of --round-timeout. */
static void begin_eval(fl_run_t *r, const fl_round_metrics_t *rm, char *extra) {
  r->evaluating = 1;
  r->pending = *rm;
  r->pending_extra = extra;
  if (r->rc.round_timeout > 0) {
    r->deadline = now(r) + r->rc.round_timeout;
    if (r->tp.wake_at) r->tp.wake_at(r->tp.ctx, r->deadline);
  }
  const uint32_t *ids;
  size_t m = fl_engine_eval_sampled(r->engine, &ids);
  /* As for RoundStarts: the transport may answer at once, and the sample
   * does not change while the evaluation is open. */
  for (size_t i = 0; i < m && r->tp.send_evaluate; i++)
    r->tp.send_evaluate(r->tp.ctx, ids[i]);
  if (!r->tp.send_evaluate) end_eval(r, 0);
}

/* Closes the evaluation with the results that came and records the round.
 * `early`: the run is ending (no deadline passed). Evaluators still
 * silent at the deadline are kept from evaluating for --quarantine rounds:
 * otherwise one could hold every evaluation this long. */
static void end_eval(fl_run_t *r, int early) {
  const uint32_t *ids;
  size_t m = fl_engine_eval_sampled(r->engine, &ids);
  uint32_t round = fl_engine_round(r->engine);
  char lb[300];
  size_t silent = 0;
  for (size_t i = 0; i < m; i++) {
    if (fl_engine_eval_answered(r->engine, ids[i])) continue;
    silent++;
    if (early || !is_alive(r, ids[i])) continue;
    say(r, FL_RUN_LOG_PEER,
        "round %u: %s did not send its evaluation by the deadline (--round-timeout %g); not "
        "asked to evaluate again before round %u",
        round, label(r, ids[i], lb, sizeof lb), r->rc.round_timeout, round + r->cfg.quarantine + 1);
    fl_engine_quarantine_eval(r->engine, ids[i]);
  }
  char fed[FL_FEDEVAL_EXTRA_MAX];
  fl_round_metrics_t rm = r->pending;
  fl_engine_end_eval(r->engine, &rm, fed, sizeof fed);
  r->evaluating = 0;
  char *extra = r->pending_extra;
  r->pending_extra = NULL;
  if (fed[0]) {
    size_t n = (extra ? strlen(extra) : 0) + strlen(fed) + 2;
    char *both = malloc(n);
    if (both) snprintf(both, n, "%s%s%s", extra ? extra : "", extra ? "," : "", fed);
    free(extra);
    extra = both;
  }
  if (silent && !early)
    say(r, FL_RUN_LOG_INFO, "round %u: evaluated by %u of %zu clients", round, rm.fed_eval_clients,
        m);
  record_round(r, &rm, extra);
}

/* Closes the evaluation once every evaluator has answered or died. */
static void check_eval(fl_run_t *r) {
  if (!r->evaluating) return;
  const uint32_t *ids;
  size_t m = fl_engine_eval_sampled(r->engine, &ids);
  for (size_t i = 0; i < m; i++)
    if (!fl_engine_eval_answered(r->engine, ids[i]) && is_alive(r, ids[i])) return;
  end_eval(r, 0);
}

int fl_run_eval_result(fl_run_t *r, uint32_t id, const Fedlr__EvalResult *res) {
  if (r->done) return 0;
  int content = 0, rc = fl_engine_submit_eval(r->engine, id, res, &content);
  if (rc) {
    char lb[300];
    say(r, FL_RUN_LOG_PEER, "rejected an evaluation result from %s: %s%s",
        label(r, id, lb, sizeof lb), fl_err_msg(),
        content ? "; not asked to evaluate for --quarantine rounds" : "");
    if (content) fl_engine_quarantine_eval(r->engine, id);
  }
  check_eval(r);
  return 0;
}

/* Closes the round before its deadline once the outcome is known: every
 * sampled client has answered or died, or the updates that can still arrive
 * (from live clients that have not answered) cannot reach the quorum. */
static void check_round(fl_run_t *r) {
  if (!r->open) return;
  const uint32_t *ids;
  size_t m = fl_engine_sampled(r->engine, &ids), pending = 0;
  for (size_t i = 0; i < m; i++)
    pending += !fl_engine_has_answered(r->engine, ids[i]) && is_alive(r, ids[i]);
  size_t reported = fl_engine_reported(r->engine);
  if (pending == 0)
    close_round(
        r, reported == m ? "all reported" : "the others' updates were rejected or they died", 0);
  else if (reported + pending < fl_engine_quorum_need(r->engine))
    close_round(r, "sampled clients died: the quorum can no longer be reached", 0);
}

/* ---- the run ---- */

fl_run_t *fl_run_new(const fl_run_config_t *rc, int *err) {
  int rc_ = FL_ENOMEM, append = 0;
  fl_run_t *r = calloc(1, sizeof *r);
  if (!r) goto fail;
  r->cfg = *rc->cfg;
  r->rc = *rc;
  r->rc.cfg = &r->cfg;
  r->rc.resume = NULL;
  snprintf(r->producer, sizeof r->producer, "%s", rc->producer ? rc->producer : "fedlr");
  fl_config_t *c = &r->cfg;
  r->ec = *rc->engine;
  r->rc.engine = &r->ec;
  if (!(r->engine = fl_engine_new(&r->ec, &rc_))) goto fail;
  if (rc->resume && rc->resume[0]) {
    /* Before anything is created: a wrong --resume DIR leaves no trace. */
    char path[FL_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", rc->resume);
    if (access(path, F_OK) != 0) {
      rc_ = fl_err_set(FL_ENOENT,
                       "--resume %s: no checkpoint.safetensors there (DIR is the --out of the run "
                       "to continue)",
                       rc->resume);
      goto fail;
    }
    char changes[128];
    if ((rc_ = fl_checkpoint_load(r->engine, path, changes, sizeof changes))) {
      char m[1024];
      snprintf(m, sizeof m, "%s", fl_err_msg());
      rc_ = fl_err_set(rc_, "--resume: %s", m);
      goto fail;
    }
    say(r, FL_RUN_LOG_INFO, "resumed from %s after %u rounds%s%s", path,
        fl_engine_rounds_done(r->engine), changes[0] ? "; changed: " : "", changes);
    if (c->metrics[0] && (rc_ = fl_metrics_trim(c->metrics, fl_engine_rounds_done(r->engine)))) {
      char m[1024];
      snprintf(m, sizeof m, "%s", fl_err_msg());
      rc_ = fl_err_set(rc_, "--metrics: %s", m);
      goto fail;
    }
    append = 1;
  }
  if (c->out[0]) {
    if ((rc_ = fl_file_mkdirs(c->out))) {
      char m[1024];
      snprintf(m, sizeof m, "%s", fl_err_msg());
      rc_ = fl_err_set(rc_, "--out: %s", m);
      goto fail;
    }
    snprintf(r->ckpt_path, sizeof r->ckpt_path, "%s/checkpoint.safetensors", c->out);
  }
  if ((rc_ = fl_metrics_new(c->metrics, append, &r->metrics))) {
    char m[1024];
    snprintf(m, sizeof m, "%s", fl_err_msg());
    rc_ = fl_err_set(rc_, "--metrics: %s", m);
    goto fail;
  }
  if (rc->tensorboard_dir && (rc_ = fl_tboard_new(rc->tensorboard_dir, &r->tboard))) {
    char m[1024];
    snprintf(m, sizeof m, "%s", fl_err_msg());
    rc_ = fl_err_set(rc_, "--tensorboard: %s", m);
    goto fail;
  }
  r->rc.tensorboard_dir = NULL; /* not kept */
  return r;
fail:
  if (rc_ == FL_ENOMEM && !fl_err_msg()[0]) fl_err_set(FL_ENOMEM, "out of memory");
  if (err) *err = rc_;
  fl_run_destroy(&r);
  return NULL;
}

void fl_run_destroy(fl_run_t **pr) {
  fl_run_t *r = pr ? *pr : NULL;
  if (!r) return;
  fl_metrics_destroy(&r->metrics);
  fl_tboard_destroy(&r->tboard);
  fl_engine_destroy(&r->engine);
  free(r->pending_extra);
  free(r->alive);
  free(r->rounds_in);
  free(r);
  *pr = NULL;
}

void fl_run_set_transport(fl_run_t *r, const fl_run_transport_t *t) {
  r->tp = *t;
}

void fl_run_start(fl_run_t *r) {
  r->t0 = r->wait_since = r->wait_logged = now(r);
  r->begun = 1;
  if (fl_engine_finished(r->engine)) {
    finish(r, "the checkpoint's run is already finished", FL_RUN_OK);
    return;
  }
  maybe_start(r);
}

int fl_run_register(fl_run_t *r, const char *name, uint64_t num_examples, uint64_t eval_examples,
                    int want_slot, uint32_t slot, uint32_t *id) {
  fl_engine_t *e = r->engine;
  uint32_t have;
  int rc;
  if (fl_engine_find_client(e, name, &have) == 0) {
    if (want_slot && slot != have)
      return fl_err_set(FL_EINVAL, "name '%s' is client %u, not %u", name, have, slot);
    rc = fl_engine_add_client_at(e, have, name, num_examples); /* a rejoin */
    *id = have;
  } else if (want_slot) {
    if (slot >= r->cfg.clients)
      return fl_err_set(FL_ERANGE, "slot %u is beyond --clients %u", slot, r->cfg.clients);
    rc = fl_engine_add_client_at(e, slot, name, num_examples);
    *id = slot;
  } else {
    /* The lowest free id is below --clients while fewer are registered. */
    if (fl_engine_num_clients(e) >= r->cfg.clients)
      return fl_err_set(FL_ERANGE, "the run is full (--clients %u)", r->cfg.clients);
    rc = fl_engine_add_client(e, name, num_examples, id);
  }
  if (!rc) rc = fl_engine_set_eval_examples(e, *id, eval_examples);
  if (!rc) rc = ensure_ids(r, (size_t)*id + 1);
  return rc;
}

void fl_run_client(fl_run_t *r, uint32_t id, int alive, int ready) {
  if (id >= r->cap_ids || !fl_engine_client_name(r->engine, id)) return;
  int was_ready = fl_engine_is_available(r->engine, id), was_alive = r->alive[id];
  r->alive[id] = alive != 0;
  fl_engine_set_available(r->engine, id, alive && ready);
  if (r->done) return;
  if (was_alive && !alive) {
    check_round(r);
    check_eval(r);
  }
  if (!was_ready && alive && ready) maybe_start(r);
}

int fl_run_update(fl_run_t *r, uint32_t id, Fedlr__Update *u) {
  if (r->done) return 0;
  int rc = fl_engine_submit_update(r->engine, id, u);
  if (rc == FL_ENOMEM) {
    char why[1024];
    snprintf(why, sizeof why, "round %u: %s", fl_engine_round(r->engine), fl_err_msg());
    finish(r, why, FL_RUN_FAILED);
    return rc;
  }
  if (rc) {
    char lb[300];
    say(r, FL_RUN_LOG_PEER, "rejected an update from %s: %s", label(r, id, lb, sizeof lb),
        fl_err_msg());
  }
  /* Accepted or rejected, it answered: the round may be decided. */
  check_round(r);
  return 0;
}

void fl_run_account(fl_run_t *r, uint64_t sent, uint64_t received) {
  r->sent += sent;
  r->received += received;
}

void fl_run_tick(fl_run_t *r) {
  if (r->done) return;
  double t = now(r);
  if (r->open && r->rc.round_timeout > 0 && t >= r->deadline) close_round(r, "round deadline", 1);
  if (r->evaluating && r->rc.round_timeout > 0 && t >= r->deadline) end_eval(r, 0);
  check_round(r);
  maybe_start(r);
  check_waiting(r, t);
}

void fl_run_stop(fl_run_t *r, const char *why, int status) {
  finish(r, why, status);
}

void fl_run_pause_after(fl_run_t *r, uint32_t rounds) {
  r->pause_after = rounds;
  if (r->begun && !r->paused) maybe_start(r); /* already there: paused() at once */
}

void fl_run_resume(fl_run_t *r) {
  r->paused = 0;
  maybe_start(r);
}

int fl_run_paused(const fl_run_t *r) {
  return r->paused && !r->done;
}

int fl_run_done(const fl_run_t *r) {
  return r->done;
}
int fl_run_status(const fl_run_t *r) {
  return r->status;
}
const fl_engine_t *fl_run_engine(const fl_run_t *r) {
  return r->engine;
}
const fl_metrics_t *fl_run_metrics(const fl_run_t *r) {
  return r->metrics;
}
void fl_run_counts(const fl_run_t *r, uint64_t *rejected, uint64_t *clipped, uint64_t *capped) {
  *rejected = r->rejected;
  *clipped = r->clipped;
  *capped = r->capped;
}
