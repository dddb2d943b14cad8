/* fedlr_io: libfedlr's I/O thread, a client's conversation with its
 * coordinator (see fedlr_internal.h for the threads, fedlr.h for the
 * contract).
 *
 * One DEALER socket owned by this thread: it joins, heartbeats every
 * heartbeat_ms whatever the caller's thread is doing, hands each RoundStart
 * and Evaluate to the caller's thread as a job, and sends what comes back.
 * Every message is one fedlr.Envelope in one ZeroMQ frame; everything
 * received goes through fl_wire_decode() with control-message limits until
 * a Welcome names the model, the model's limits after. A peer can make the
 * session log and ignore a message, rejoin, or end; never crash.
 *
 * Jobs. At most one job of each kind waits for the caller's thread: a new
 * RoundStart replaces a waiting one (and makes the one being trained
 * stale: fedlr_round_cancelled), a new Evaluate a waiting Evaluate, a new
 * Welcome everything waiting. They are handed over in arrival order.
 *
 * Acknowledgement: a RoundStart is acknowledged at once by a heartbeat
 * carrying its round (the coordinator paces its RoundStarts by these), and
 * every later heartbeat carries the last round received.
 *
 * Liveness: if nothing arrives from the coordinator for
 * max(5 heartbeats, 3 s) (2 s while waiting for a Welcome), the session
 * assumes it restarted or is unreachable: it opens a fresh socket (dropping
 * whatever queued for the silent peer, jobs and results of the old
 * connection included) and sends Join again, backing off 0.5 s, 1 s, 2 s,
 * ... up to 10 s between Joins; anything received resets the backoff. A
 * Stop{rejoin} (the coordinator does not know us) sends Join on the live
 * connection. With give_up > 0, once nothing at all has arrived for give_up
 * seconds (counted from the start until the first message, so an absent
 * coordinator counts too) the session ends with FEDLR_GAVE_UP. The
 * transport reconnects by itself (100 ms .. 5 s exponential). Sends never
 * block: a Join or result that cannot be queued is retried, a heartbeat is
 * dropped.
 *
 * CurveZMQ and the socket's options: fedlr_sock.c. */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "fedlr_internal.h"
#include "fl_error.h"
#include "fl_optim.h"
#include "fl_zmon.h"

/* Control messages: a Welcome lists the model's tensors (up to 4096, with
 * names of up to 255 bytes and 8 dimensions). */
#define IO_CTL_MAX_MESSAGE ((size_t)2 << 20)
#define IO_CTL_MAX_TENSORS FL_LAYOUT_MAX_TENSORS

#define IO_WELCOME_WAIT 2.0 /* s of silence before re-Joining while not joined */
#define IO_MIN_SILENCE 3.0  /* s, floor of 5 heartbeats once joined */
#define IO_BACKOFF_MIN 0.5  /* s between re-Joins, doubling ... */
#define IO_BACKOFF_MAX 10.0 /* ... up to this */
#define IO_RETRY 0.1        /* s between tries of a Join/result that could not go out */
#define IO_POLL_MAX 1.0     /* s, longest sleep */
#define IO_DRAIN_MAX 256    /* messages handled per wake-up */
#define IO_LAST_LOOK_MS 100 /* ms to wait for messages before calling the peer silent */
#define IO_QUEUE 3          /* jobs waiting: a Welcome, a RoundStart, an Evaluate */

struct fedlr__io {
  const fedlr__settings_t *st;
  fedlr__shared_t *sh;
  void *ctx, *pair;
  fedlr__sock_t sk; /* the DEALER socket and its handshake watch */
  int stop_fd;
  fl_wire_limits_t limits; /* control-message limits until a Welcome, then the model's */
  /* from the last Welcome */
  fedlr__model_t model;
  int have_model;
  uint32_t client_id;
  double heartbeat; /* s */
  int joined;       /* a Welcome answered our last Join */
  uint32_t round;   /* last round received */
  /* timers, monotonic seconds */
  double last_recv, last_heartbeat, last_join_sent, next_join;
  double backoff;   /* next gap between re-Joins */
  unsigned rejoins; /* re-Joins since the coordinator last spoke */
  int join_pending; /* a Join is due but not sent yet */
  int hb_dropped;   /* heartbeats are being dropped (logged once) */
  int no_eval_logged;
  /* the result waiting to go out (an Update or EvalResult), owned */
  uint8_t *out;
  size_t out_len;
  uint32_t out_round;
  int out_is_update;
  /* jobs for the caller's thread */
  fedlr__job_t queue[IO_QUEUE];
  size_t queued;
  int run_waiting; /* the caller's thread asked for a job and has none */
  int ended, result;
  char end_msg[1024];
};

#define SLOG(s, level, ...) fedlr__log((s)->st, (s)->sh, level, __VA_ARGS__)

static const char *errmsg(int rc) {
  return fl_err_msg()[0] ? fl_err_msg() : fl_strerror(rc);
}

/* Ends the session with `result`, the detail (if any) from fl_err_msg(). */
static void end(fedlr__io_t *s, int result) {
  if (s->ended) return;
  s->ended = 1;
  s->result = result;
  int quiet = result == FEDLR_DONE || result == FEDLR_STOPPED;
  snprintf(s->end_msg, sizeof s->end_msg, "%s", quiet ? "" : fl_err_msg());
  atomic_store(&s->sh->stopping, 1);
}

/* ---- jobs ---- */

static void job_free(fedlr__job_t *j) {
  fl_wire_free(&j->env);
  memset(j, 0, sizeof *j);
}

static void queue_remove(fedlr__io_t *s, size_t i) {
  job_free(&s->queue[i]);
  memmove(&s->queue[i], &s->queue[i + 1], (s->queued - i - 1) * sizeof s->queue[0]);
  s->queued--;
  memset(&s->queue[s->queued], 0, sizeof s->queue[0]);
}

static void queue_clear(fedlr__io_t *s) {
  while (s->queued)
    queue_remove(s, s->queued - 1);
}

/* Hands one job to the caller's thread (it is waiting for it). */
static void hand_over(fedlr__io_t *s, fedlr__job_t *j) {
  atomic_fetch_add_explicit(&s->sh->to_run, 1, memory_order_release);
  if (zmq_send(s->pair, j, sizeof *j, 0) != (int)sizeof *j) {
    SLOG(s, FEDLR_LOG_ERROR, "internal: cannot hand a job over: %s", zmq_strerror(errno));
    job_free(j);
    return;
  }
  memset(j, 0, sizeof *j); /* the envelope is the receiver's now */
  s->run_waiting = 0;
}

static void dispatch(fedlr__io_t *s) {
  if (!s->run_waiting || !s->queued) return;
  fedlr__job_t j = s->queue[0];
  memmove(&s->queue[0], &s->queue[1], (s->queued - 1) * sizeof s->queue[0]);
  s->queued--;
  memset(&s->queue[s->queued], 0, sizeof s->queue[0]);
  hand_over(s, &j);
}

/* Queues a job (taking *envp), replacing a waiting one of its kind. */
static void enqueue(fedlr__io_t *s, int kind, Fedlr__Envelope **envp, const fl_sched_t *local) {
  for (size_t i = 0; i < s->queued; i++) {
    fedlr__job_t *q = &s->queue[i];
    if (kind == IO_JOB_WELCOME || q->kind == kind) {
      if (q->kind == IO_JOB_ROUND)
        SLOG(s, FEDLR_LOG_WARN, "round %u: not trained: round %u came before it could start",
             q->env->round_start->round,
             kind == IO_JOB_ROUND ? (*envp)->round_start->round : s->round);
      queue_remove(s, i--);
    }
  }
  fedlr__job_t *j = &s->queue[s->queued++];
  j->kind = kind;
  j->epoch = atomic_load(&s->sh->epoch);
  j->seq = atomic_load(&s->sh->seq);
  j->env = *envp;
  *envp = NULL;
  if (local) j->local = *local;
  j->received = fedlr__now();
  dispatch(s);
}

/* Everything of the old connection is void: waiting jobs, the work in
 * progress (cancelled through the epoch) and an unsent result. */
static void new_epoch(fedlr__io_t *s, const char *why) {
  atomic_fetch_add(&s->sh->epoch, 1);
  queue_clear(s);
  if (s->out) {
    SLOG(s, FEDLR_LOG_WARN, "round %u: dropping the unsent %s (%s)", s->out_round,
         s->out_is_update ? "update" : "evaluation", why);
    free(s->out);
    s->out = NULL;
  }
}

/* ---- sending: never blocks ---- */

/* 0 sent (or queued for the connection), 1 not sent (the send queue is
 * full, or no socket): retry or drop. */
static int send_bytes(fedlr__io_t *s, const uint8_t *buf, size_t len) {
  if (!s->sk.sock) return 1;
  if (zmq_send(s->sk.sock, buf, len, ZMQ_DONTWAIT) >= 0) return 0;
  if (errno != EAGAIN && errno != EINTR)
    SLOG(s, FEDLR_LOG_WARN, "send failed: %s", zmq_strerror(errno));
  return 1;
}

static int send_env(fedlr__io_t *s, const Fedlr__Envelope *env) {
  uint8_t *buf = NULL;
  size_t len = 0;
  int rc = fl_wire_encode(env, &buf, &len);
  if (rc) {
    SLOG(s, FEDLR_LOG_ERROR, "cannot encode a message: %s", errmsg(rc));
    return 1;
  }
  rc = send_bytes(s, buf, len);
  free(buf);
  return rc;
}

static int send_join(fedlr__io_t *s) {
  Fedlr__Join j = FEDLR__JOIN__INIT;
  j.protocol_version = FEDLR_PROTOCOL_VERSION;
  /* From 2: a version-1 Welcome has no layout, and version-1 coordinators
   * (fedlr 0.1) do not answer a Join of a later version anyway. */
  j.min_protocol_version = FEDLR_MIN_PROTOCOL_VERSION;
  j.name = (char *)s->st->name;
  j.num_examples = s->st->num_examples;
  j.num_eval_examples = s->st->num_eval_examples;
  j.want_slot = s->st->want_slot;
  j.slot = s->st->slot;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_JOIN;
  env.join = &j;
  return send_env(s, &env);
}

/* Heartbeats are only useful now: one that cannot go out is dropped. */
static void send_heartbeat(fedlr__io_t *s, double now) {
  Fedlr__Heartbeat hb = FEDLR__HEARTBEAT__INIT;
  hb.client_id = s->client_id;
  hb.round = s->round;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_HEARTBEAT;
  env.heartbeat = &hb;
  s->last_heartbeat = now;
  if (send_env(s, &env)) {
    if (!s->hb_dropped)
      SLOG(s, FEDLR_LOG_WARN, "send queue full: dropping heartbeats until it drains");
    s->hb_dropped = 1;
  } else {
    s->hb_dropped = 0;
  }
}

/* Sends what is waiting, Join first: a result must not overtake it. */
static void flush(fedlr__io_t *s, double now) {
  if (s->join_pending) {
    if (send_join(s)) return;
    s->join_pending = 0;
    s->last_join_sent = now;
  }
  if (s->out && s->joined && !send_bytes(s, s->out, s->out_len)) {
    free(s->out);
    s->out = NULL;
  }
}

/* ---- liveness ---- */

static double silence_limit(const fedlr__io_t *s) {
  if (!s->joined) return IO_WELCOME_WAIT;
  double t = 5.0 * s->heartbeat;
  return t > IO_MIN_SILENCE ? t : IO_MIN_SILENCE;
}

/* When the next re-Join is due if the coordinator stays silent. */
static double rejoin_due(const fedlr__io_t *s) {
  return s->rejoins == 0 ? s->last_recv + silence_limit(s) : s->next_join;
}

static void drain(fedlr__io_t *s);

static int silence_due(const fedlr__io_t *s, double now) {
  return (s->st->give_up > 0 && now - s->last_recv >= s->st->give_up) || now >= rejoin_due(s);
}

static void check_liveness(fedlr__io_t *s, double now) {
  if (!silence_due(s, now)) return;
  /* Before calling the coordinator silent, read what has come: after a
   * stall of this process (a loaded machine, a debugger) its messages, the
   * final Stop among them, may be waiting here; a fresh socket would drop
   * them. A short wait lets ZeroMQ's I/O thread, stalled too, hand over
   * what the kernel holds. */
  if (s->sk.sock) {
    zmq_pollitem_t it = {s->sk.sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, IO_LAST_LOOK_MS) > 0) drain(s);
    if (s->ended) return;
    now = fedlr__now();
    if (!silence_due(s, now)) return;
  }
  const fedlr__settings_t *st = s->st;
  if (st->give_up > 0 && now - s->last_recv >= st->give_up) {
    fl_err_set(FL_EIO, "no message from the coordinator at %s for %.0f s (--give-up %g): giving up",
               st->endpoint, now - s->last_recv, st->give_up);
    end(s, FEDLR_GAVE_UP);
    return;
  }
  if (now < rejoin_due(s)) return;
  s->rejoins++;
  /* Every step until the cap, then once a minute. */
  if (s->backoff < IO_BACKOFF_MAX || s->rejoins % 6 == 0)
    SLOG(s, FEDLR_LOG_INFO,
         "no message from the coordinator at %s for %.0f s; joining again (attempt %u, next "
         "in %g s)",
         st->endpoint, now - s->last_recv, s->rejoins, s->backoff);
  /* A fresh socket (the Lazy Pirate pattern): what queued for the silent
   * coordinator (heartbeats, earlier Joins, a result) is dropped rather
   * than delivered to its successor, and the connection starts anew. */
  fedlr__sock_close(&s->sk, 0);
  if (fedlr__sock_open(&s->sk, s->ctx, s->st)) {
    SLOG(s, FEDLR_LOG_ERROR, "cannot reopen the socket: %s", fl_err_msg());
    fedlr__sock_close(&s->sk, 0);
  }
  new_epoch(s, "the coordinator went silent");
  s->joined = 0;
  s->join_pending = 1;
  s->next_join = now + s->backoff;
  s->backoff = fmin(2 * s->backoff, IO_BACKOFF_MAX);
}

/* ---- handling what arrives ---- */

/* Takes the model of a Welcome: 0, or an error (the session is refused). */
static int take_model(fedlr__io_t *s, const Fedlr__Welcome *w) {
  fedlr__model_t m;
  int rc = fedlr__model_from_welcome(w, &m);
  if (rc) return fl_err_set(rc, "the coordinator's model is unusable: %s", errmsg(rc));
  if (s->st->layout) {
    fedlr_tensors want = {s->st->layout, NULL, 0}, got = {m.layout, NULL, 0};
    if ((rc = fedlr_tensors_check_layout(&want, &got))) {
      fl_err_set(rc, "the coordinator's model '%s' is not this client's: %s", m.name,
                 fedlr_last_error());
      fedlr__model_clear(&m);
      return rc;
    }
  }
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m.spec, &lim);
  if (lim.max_message > FEDLR__MAX_MSGSIZE) {
    fl_err_set(FL_ETOOBIG,
               "model '%s' has %zu parameters: its messages exceed this client's %zu MiB limit",
               m.name, m.spec.num_params, FEDLR__MAX_MSGSIZE >> 20);
    fedlr__model_clear(&m);
    return FL_ETOOBIG;
  }
  fedlr__model_clear(&s->model);
  s->model = m;
  s->limits = lim;
  s->have_model = 1;
  return 0;
}

static void on_welcome(fedlr__io_t *s, Fedlr__Envelope **envp) {
  const Fedlr__Welcome *w = (*envp)->welcome;
  if (take_model(s, w)) {
    end(s, FEDLR_REFUSED);
    return;
  }
  s->client_id = w->client_id;
  s->heartbeat = w->heartbeat_ms ? (double)w->heartbeat_ms / 1000.0 : 1.0;
  s->joined = 1;
  /* An idle client hears from the coordinator once a heartbeat (its
   * answer): a bound below the rejoin window gives up on a coordinator that
   * is merely slow to answer. Said, not changed: the bound is the user's. */
  if (s->st->give_up > 0 && s->st->give_up < silence_limit(s))
    SLOG(s, FEDLR_LOG_WARN,
         "warning: --give-up %g s is shorter than this run's rejoin window (%g s): this client "
         "may give up on a coordinator that is only slow to answer",
         s->st->give_up, silence_limit(s));
  enqueue(s, IO_JOB_WELCOME, envp, NULL);
}

static void on_stop(fedlr__io_t *s, const Fedlr__Stop *st, double now) {
  const char *why = st->reason[0] ? st->reason : "no reason given";
  if (st->rejoin) {
    /* Every message we sent before our Join reaches a restarted coordinator
     * earns one of these: answer the first only. */
    if (s->join_pending || (!s->joined && now - s->last_join_sent < IO_BACKOFF_MIN)) return;
    SLOG(s, FEDLR_LOG_INFO, "the coordinator does not know this client (%s): joining again", why);
    s->joined = 0;
    s->join_pending = 1;
    new_epoch(s, "the coordinator restarted");
    return;
  }
  if (st->error) {
    fl_err_set(FL_EPROTO, "refused by the coordinator: %s", why);
    end(s, FEDLR_REFUSED);
    return;
  }
  SLOG(s, FEDLR_LOG_INFO, "the run is over: %s", why);
  end(s, FEDLR_DONE);
}

/* The checks of a RoundStart or Evaluate against the Welcome's model. */
static int check_weights(const fedlr__io_t *s, const char *model, Fedlr__Tensor *const *t,
                         size_t n) {
  if (strcmp(model, s->model.name) != 0)
    return fl_err_set(FL_ESHAPE, "it is for model '%s', this session's is '%s'", model,
                      s->model.name);
  return fl_wire_check_tensors(t, n, &s->model.spec);
}

static void on_round_start(fedlr__io_t *s, Fedlr__Envelope **envp) {
  const Fedlr__RoundStart *rs = (*envp)->round_start;
  if (!s->have_model) {
    SLOG(s, FEDLR_LOG_WARN, "ignoring round %u: no Welcome yet", rs->round);
    return;
  }
  s->round = rs->round;
  atomic_fetch_add(&s->sh->seq, 1); /* the round in training, if any, is stale */
  /* Acknowledge at once: the coordinator paces its round starts by these
   * (at most a few model-sized messages in flight), and it is a heartbeat. */
  send_heartbeat(s, fedlr__now());
  fl_optim_config_t oc;
  fl_sched_t local;
  fl_wire_optim_from(rs->optimizer, &oc);
  int rc = check_weights(s, rs->model, rs->weights, rs->n_weights);
  if (!rc) rc = fl_optim_validate(&oc);
  if (!rc) rc = fl_sched_parse_local(rs->local_schedule, &local);
  if (rc) {
    SLOG(s, FEDLR_LOG_WARN, "round %u: no update sent: %s", rs->round, errmsg(rc));
    return;
  }
  enqueue(s, IO_JOB_ROUND, envp, &local);
}

static void on_evaluate(fedlr__io_t *s, Fedlr__Envelope **envp) {
  const Fedlr__Evaluate *ev = (*envp)->evaluate;
  if (!s->have_model) {
    SLOG(s, FEDLR_LOG_WARN, "ignoring the evaluation of round %u: no Welcome yet", ev->round);
    return;
  }
  if (s->st->num_eval_examples == 0) {
    if (!s->no_eval_logged)
      SLOG(s, FEDLR_LOG_WARN,
           "ignoring evaluation requests: this client declared no held-out examples");
    s->no_eval_logged = 1;
    return;
  }
  int rc = check_weights(s, ev->model, ev->weights, ev->n_weights);
  if (rc) {
    SLOG(s, FEDLR_LOG_WARN, "round %u: no evaluation sent: %s", ev->round, errmsg(rc));
    return;
  }
  enqueue(s, IO_JOB_EVAL, envp, NULL);
}

static void on_message(fedlr__io_t *s, const uint8_t *buf, size_t len, double now) {
  Fedlr__Envelope *env = NULL;
  int rc = fl_wire_decode(buf, len, &s->limits, &env);
  if (rc) {
    if (!s->have_model && rc == FL_ETOOBIG)
      SLOG(s, FEDLR_LOG_WARN, "ignoring a %zu-byte message before any Welcome (a round start?): %s",
           len, errmsg(rc));
    else
      SLOG(s, FEDLR_LOG_WARN, "ignoring an invalid %zu-byte message: %s", len, errmsg(rc));
    return;
  }
  switch (env->body_case) {
  case FEDLR__ENVELOPE__BODY_WELCOME: on_welcome(s, &env); break;
  case FEDLR__ENVELOPE__BODY_ROUND_START: on_round_start(s, &env); break;
  case FEDLR__ENVELOPE__BODY_EVALUATE: on_evaluate(s, &env); break;
  case FEDLR__ENVELOPE__BODY_HEARTBEAT: break; /* a pong: receiving it was the point */
  case FEDLR__ENVELOPE__BODY_STOP: on_stop(s, env->stop, now); break;
  default:
    SLOG(s, FEDLR_LOG_WARN, "ignoring a message of kind %d: not one a coordinator sends",
         (int)env->body_case);
    break;
  }
  fl_wire_free(&env); /* NULL if a job took it */
}

/* Handles what the socket holds, up to IO_DRAIN_MAX messages, so timers
 * still run under a flood. */
static void drain(fedlr__io_t *s) {
  for (int i = 0; i < IO_DRAIN_MAX && !s->ended; i++) {
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, s->sk.sock, ZMQ_DONTWAIT) < 0) {
      if (errno != EAGAIN && errno != EINTR)
        SLOG(s, FEDLR_LOG_WARN, "receive failed: %s", zmq_strerror(errno));
      zmq_msg_close(&msg);
      return;
    }
    double now = fedlr__now();
    /* Anything at all proves the coordinator alive. */
    s->last_recv = now;
    s->rejoins = 0;
    s->backoff = IO_BACKOFF_MIN;
    if (zmq_msg_more(&msg)) {
      /* The rest of a multipart message is already here (atomic delivery). */
      size_t frames = 1;
      int more = 1;
      while (more) {
        zmq_msg_close(&msg);
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, s->sk.sock, ZMQ_DONTWAIT) < 0) break;
        frames++;
        more = zmq_msg_more(&msg);
      }
      zmq_msg_close(&msg);
      SLOG(s, FEDLR_LOG_WARN, "ignoring a %zu-frame message: fedlr messages are a single frame",
           frames);
      continue;
    }
    on_message(s, zmq_msg_data(&msg), zmq_msg_size(&msg), now);
    zmq_msg_close(&msg);
  }
}

/* ---- the caller's thread ---- */

/* A result from the caller's thread: sent unless its connection is gone. */
static void on_result(fedlr__io_t *s, fedlr__run_msg_t *m) {
  const char *what = m->is_update ? "update" : "evaluation";
  if (s->ended || m->epoch != atomic_load(&s->sh->epoch)) {
    if (!s->ended)
      SLOG(s, FEDLR_LOG_WARN, "round %u: dropping the %s: the coordinator was rejoined since",
           m->round, what);
    free(m->buf);
    return;
  }
  if (s->out) {
    SLOG(s, FEDLR_LOG_WARN, "round %u: dropping the unsent %s (a newer result replaces it)",
         s->out_round, s->out_is_update ? "update" : "evaluation");
    free(s->out);
  }
  s->out = m->buf;
  s->out_len = m->len;
  s->out_round = m->round;
  s->out_is_update = m->is_update;
  flush(s, fedlr__now());
  if (s->out) SLOG(s, FEDLR_LOG_WARN, "round %u: send queue full; the %s waits", m->round, what);
}

/* One message from the caller's thread; 1 if it asked for a job. */
static int on_run_msg(fedlr__io_t *s) {
  fedlr__run_msg_t m;
  int n = zmq_recv(s->pair, &m, sizeof m, ZMQ_DONTWAIT);
  if (n != (int)sizeof m) return 0;
  atomic_load_explicit(&s->sh->to_io, memory_order_acquire);
  switch (m.kind) {
  case RUN_NEXT: s->run_waiting = 1; return 1;
  case RUN_SEND: on_result(s, &m); return 0;
  case RUN_QUIT:
    fl_err_set(FL_ESTATE, "ended by the application");
    end(s, FEDLR_REFUSED);
    return 0;
  default: return 0;
  }
}

/* Reads the handshake watch's events; ends the session on a refusal that
 * retrying cannot change (fedlr_sock.c). */
static void drain_monitor(fedlr__io_t *s) {
  if (fedlr__sock_watch(&s->sk, s->st, s->sh) != 0) end(s, FEDLR_AUTH_FAILED);
}

fedlr__io_t *fedlr__io_new(const fedlr__settings_t *st, fedlr__shared_t *sh, void *ctx,
                           const char *pair_ep, int stop_fd, int *err) {
  int rc = 0;
  fedlr__io_t *s = calloc(1, sizeof *s);
  if (!s) {
    rc = fl_err_set(FL_ENOMEM, "out of memory");
    goto out;
  }
  s->st = st;
  s->sh = sh;
  s->ctx = ctx;
  s->stop_fd = stop_fd;
  s->limits.max_message = IO_CTL_MAX_MESSAGE;
  s->limits.max_tensors = IO_CTL_MAX_TENSORS;
  s->heartbeat = 1.0;
  s->backoff = IO_BACKOFF_MIN;
  s->pair = zmq_socket(ctx, ZMQ_PAIR);
  if (!s->pair || zmq_setsockopt(s->pair, ZMQ_LINGER, &(int){0}, sizeof(int)) ||
      zmq_bind(s->pair, pair_ep) != 0) {
    rc = fl_err_set(FL_EIO, "cannot create the I/O thread's pipe: %s", zmq_strerror(errno));
    goto out;
  }
  rc = fedlr__sock_open(&s->sk, s->ctx, s->st);
out:
  if (rc) fedlr__io_destroy(&s);
  if (err) *err = rc;
  return s;
}

/* How long the loop may sleep. */
static long poll_ms(const fedlr__io_t *s, double now) {
  double wake = fmin(rejoin_due(s), now + IO_POLL_MAX);
  if (s->st->give_up > 0) wake = fmin(wake, s->last_recv + s->st->give_up);
  if (s->joined) wake = fmin(wake, s->last_heartbeat + s->heartbeat);
  if (s->join_pending || (s->out && s->joined)) wake = fmin(wake, now + IO_RETRY);
  return wake > now ? (long)ceil((wake - now) * 1000.0) : 0;
}

/* The session until it ends. */
static void run_session(fedlr__io_t *s) {
  s->last_recv = fedlr__now();
  s->join_pending = 1;
  while (!s->ended) {
    double now = fedlr__now();
    check_liveness(s, now);
    if (s->ended) break;
    flush(s, now);
    if (s->joined && now - s->last_heartbeat >= s->heartbeat) send_heartbeat(s, now);
    zmq_pollitem_t items[4] = {{s->pair, 0, ZMQ_POLLIN, 0},
                               {NULL, s->stop_fd, ZMQ_POLLIN, 0},
                               {s->sk.sock, 0, ZMQ_POLLIN, 0},
                               {s->sk.mon, s->sk.mon ? 0 : -1, ZMQ_POLLIN, 0}};
    /* Without a socket (reopening failed): the pipes and the timers only. */
    int n = zmq_poll(items, s->sk.sock ? 4 : 2, poll_ms(s, now));
    if (n < 0) {
      if (errno == EINTR) continue;
      fl_err_set(FL_EIO, "zmq_poll: %s", zmq_strerror(errno));
      end(s, FL_EIO);
      break;
    }
    if (items[1].revents) {
      end(s, FEDLR_STOPPED);
      break;
    }
    while (items[0].revents && !s->ended && on_run_msg(s) >= 0) {
      dispatch(s);
      int more = 0;
      size_t sz = sizeof more;
      if (zmq_getsockopt(s->pair, ZMQ_EVENTS, &more, &sz) || !(more & ZMQ_POLLIN)) break;
    }
    if (s->sk.sock && (items[3].revents & ZMQ_POLLIN)) drain_monitor(s);
    if (s->sk.sock && !s->ended && (items[2].revents & ZMQ_POLLIN)) drain(s);
  }
}

void *fedlr__io_main(void *arg) {
  fedlr__io_t *s = arg;
  run_session(s);
  /* Tell the caller's thread once it asks (it may be in a callback, which
   * fedlr_round_cancelled() now tells to stop); drop what it still sends. */
  queue_clear(s);
  while (!s->run_waiting) {
    fedlr__run_msg_t m;
    if (zmq_recv(s->pair, &m, sizeof m, 0) != (int)sizeof m) {
      if (errno == EINTR) continue;
      return NULL;
    }
    atomic_load_explicit(&s->sh->to_io, memory_order_acquire);
    if (m.kind == RUN_NEXT) s->run_waiting = 1;
    if (m.kind == RUN_SEND) free(m.buf);
  }
  fedlr__job_t j = {.kind = IO_JOB_END, .result = s->result};
  hand_over(s, &j);
  return NULL;
}

const char *fedlr__io_end_msg(const fedlr__io_t *s) {
  return s->end_msg;
}
uint32_t fedlr__io_client_id(const fedlr__io_t *s) {
  return s->client_id;
}

void fedlr__io_destroy(fedlr__io_t **sp) {
  if (!sp || !*sp) return;
  fedlr__io_t *s = *sp;
  fedlr__sock_close(&s->sk, 1000);
  if (s->pair) zmq_close(s->pair);
  queue_clear(s);
  fedlr__model_clear(&s->model);
  free(s->out);
  free(s);
  *sp = NULL;
}
