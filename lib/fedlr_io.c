/* fl_session: see fl_session.h. */
#include "fl_session.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "fl_error.h"
#include "fl_wire.h"
#include "fl_zmon.h"

/* ZMQ_MAXMSGSIZE applies to connections made after it is set, and the
 * model is known only after connecting: one generous bound for the
 * session's lifetime (a 64M-parameter model), checked against the model's
 * own limit at each Welcome. */
#define SESSION_MAX_MSGSIZE ((size_t)256 << 20)
/* Control messages: a Welcome lists the model's tensors (up to 4096, with
 * names of up to 255 bytes and 8 dimensions). */
#define SESSION_CTL_MAX_MESSAGE ((size_t)2 << 20)
#define SESSION_CTL_MAX_TENSORS FL_LAYOUT_MAX_TENSORS

#define SESSION_WELCOME_WAIT 2.0     /* s of silence before re-Joining while not joined */
#define SESSION_MIN_SILENCE 3.0      /* s, floor of 5 heartbeats once joined */
#define SESSION_BACKOFF_MIN 0.5      /* s between re-Joins, doubling ... */
#define SESSION_BACKOFF_MAX 10.0     /* ... up to this */
#define SESSION_RETRY 0.1            /* s between tries of a Join/update that could not go out */
#define SESSION_POLL_MAX 1.0         /* s, longest sleep */
#define SESSION_INTERRUPT_CHECK 0.05 /* s between interrupt checks while training */
#define SESSION_DRAIN_MAX 256        /* messages handled per wake-up */
#define SESSION_HS_FAILURES 3        /* CURVE handshakes failing in a row before giving up */
#define SESSION_KEY_LEN 40           /* a Z85 key */
#define SESSION_LAST_LOOK_MS 100     /* ms to wait for messages before calling the peer silent */

struct fl_session {
  char endpoint[256];
  char name[FL_WIRE_MAX_STRING];
  int want_slot;
  uint32_t slot;
  int quiet;
  int interrupt_fd;
  const fl_shard_t *shard;
  void *ctx, *sock;
  fl_wire_limits_t limits; /* control-message limits until a Welcome, then the model's */
  /* from the last Welcome */
  int have_model;
  fl_model_spec_t model;
  fl_trainer_t *trainer;
  uint32_t client_id;
  char run_id[FL_WIRE_MAX_STRING];
  double heartbeat; /* s */
  int joined;       /* a Welcome answered our last Join */
  uint32_t round;   /* last round seen */
  /* timers, monotonic seconds */
  double last_recv, last_heartbeat, last_join_sent, next_join, last_interrupt_check;
  double backoff;   /* next gap between re-Joins */
  double give_up;   /* s of silence before giving up, 0 = never */
  unsigned rejoins; /* re-Joins since the coordinator last spoke */
  int join_pending; /* a Join is due but not sent yet */
  int hb_dropped;   /* heartbeats are being dropped (logged once) */
  uint8_t *update;  /* an encoded Update not sent yet, owned */
  size_t update_len;
  uint32_t update_round;
  int interrupted;
  int ended, result; /* fl_session_run()'s result once ended */
  /* CurveZMQ (curve = 0: plaintext) and the handshake watch */
  int curve;
  char curve_public[SESSION_KEY_LEN + 1], curve_secret[SESSION_KEY_LEN + 1];
  char server_key[SESSION_KEY_LEN + 1];
  int handshake_ms;
  void *mon;         /* PAIR: the current socket's monitor events */
  unsigned mon_seq;  /* makes each socket's monitor endpoint unique */
  unsigned hs_fails; /* handshakes failed since the last one succeeded */
};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One line to stderr in one write, so lines of several clients sharing a
 * terminal do not interleave. */
__attribute__((format(printf, 2, 3))) static void slog(const fl_session_t *s, const char *fmt,
                                                       ...) {
  char line[1024];
  int n = snprintf(line, sizeof line, "fedlr-client[%s]: ", s->name);
  if (n < 0 || (size_t)n >= sizeof line) n = 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s\n", line);
}

static const char *errmsg(int rc) {
  return fl_err_msg()[0] ? fl_err_msg() : fl_strerror(rc);
}

static int session_tick(void *arg, uint64_t step);
static int open_socket(fl_session_t *s);
static void close_socket(fl_session_t *s, int linger);

static void end(fl_session_t *s, int result) {
  s->ended = 1;
  s->result = result;
}

/* ---- sending: never blocks ---- */

/* 0 sent (or queued for the connection), 1 not sent (the send queue is
 * full, or no socket): retry or drop. */
static int send_bytes(fl_session_t *s, const uint8_t *buf, size_t len) {
  if (!s->sock) return 1;
  if (zmq_send(s->sock, buf, len, ZMQ_DONTWAIT) >= 0) return 0;
  if (errno != EAGAIN && errno != EINTR) slog(s, "send failed: %s", zmq_strerror(errno));
  return 1;
}

static int send_env(fl_session_t *s, const Fedlr__Envelope *env) {
  uint8_t *buf = NULL;
  size_t len = 0;
  int rc = fl_wire_encode(env, &buf, &len);
  if (rc) {
    slog(s, "cannot encode a message: %s", errmsg(rc));
    return 1;
  }
  rc = send_bytes(s, buf, len);
  free(buf);
  return rc;
}

static int send_join(fl_session_t *s) {
  Fedlr__Join j = FEDLR__JOIN__INIT;
  j.protocol_version = FL_WIRE_PROTOCOL_VERSION;
  j.name = s->name;
  j.num_examples = fl_trainer_claimed_examples(s->shard); /* --attack examples:N lies here */
  j.want_slot = s->want_slot;
  j.slot = s->slot;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_JOIN;
  env.join = &j;
  return send_env(s, &env);
}

/* Heartbeats are only useful now: one that cannot go out is dropped. */
static void send_heartbeat(fl_session_t *s, double now) {
  Fedlr__Heartbeat hb = FEDLR__HEARTBEAT__INIT;
  hb.client_id = s->client_id;
  hb.round = s->round;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_HEARTBEAT;
  env.heartbeat = &hb;
  s->last_heartbeat = now;
  if (send_env(s, &env)) {
    if (!s->hb_dropped) slog(s, "send queue full: dropping heartbeats until it drains");
    s->hb_dropped = 1;
  } else {
    s->hb_dropped = 0;
  }
}

static void drop_update(fl_session_t *s, const char *why) {
  if (!s->update) return;
  slog(s, "round %u: dropping the unsent update (%s)", s->update_round, why);
  free(s->update);
  s->update = NULL;
  s->update_len = 0;
}

/* Sends what is waiting, Join first: an update must not overtake it. */
static void flush(fl_session_t *s, double now) {
  if (s->join_pending) {
    if (send_join(s)) return;
    s->join_pending = 0;
    s->last_join_sent = now;
  }
  if (s->update && !send_bytes(s, s->update, s->update_len)) {
    free(s->update);
    s->update = NULL;
    s->update_len = 0;
  }
}

/* ---- liveness ---- */

static double silence_limit(const fl_session_t *s) {
  if (!s->joined) return SESSION_WELCOME_WAIT;
  double t = 5.0 * s->heartbeat;
  return t > SESSION_MIN_SILENCE ? t : SESSION_MIN_SILENCE;
}

/* When the next re-Join is due if the coordinator stays silent. */
static double rejoin_due(const fl_session_t *s) {
  return s->rejoins == 0 ? s->last_recv + silence_limit(s) : s->next_join;
}

static void drain(fl_session_t *s);

static int silence_due(const fl_session_t *s, double now) {
  return (s->give_up > 0 && now - s->last_recv >= s->give_up) || now >= rejoin_due(s);
}

static void check_liveness(fl_session_t *s, double now) {
  if (!silence_due(s, now)) return;
  /* Before calling the coordinator silent, read what has come: after a
   * long step, or a stall of this process (a loaded machine, a debugger),
   * its messages, the final Stop among them, may be waiting here; a fresh
   * socket would drop them. A short wait lets ZeroMQ's I/O thread, stalled
   * too, hand over what the kernel holds. */
  if (s->sock) {
    zmq_pollitem_t it = {s->sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, SESSION_LAST_LOOK_MS) > 0) drain(s);
    if (s->ended || s->interrupted) return;
    now = now_s();
    if (!silence_due(s, now)) return;
  }
  if (s->give_up > 0 && now - s->last_recv >= s->give_up) {
    fl_err_set(FL_EIO, "no message from the coordinator at %s for %.0f s (--give-up %g): giving up",
               s->endpoint, now - s->last_recv, s->give_up);
    end(s, FL_SESSION_GAVE_UP);
    return;
  }
  if (now < rejoin_due(s)) return;
  s->rejoins++;
  /* Every step until the cap, then once a minute. */
  if (s->backoff < SESSION_BACKOFF_MAX || s->rejoins % 6 == 0)
    slog(s,
         "no message from the coordinator at %s for %.0f s; joining again (attempt %u, next "
         "in %g s)",
         s->endpoint, now - s->last_recv, s->rejoins, s->backoff);
  /* A fresh socket (the Lazy Pirate pattern): what queued for the silent
   * coordinator (heartbeats, earlier Joins, an update) is dropped rather
   * than delivered to its successor, and the connection starts anew. */
  close_socket(s, 0);
  if (open_socket(s)) {
    slog(s, "cannot reopen the socket: %s", fl_err_msg());
    close_socket(s, 0);
  }
  drop_update(s, "the coordinator went silent");
  s->joined = 0;
  s->join_pending = 1;
  s->next_join = now + s->backoff;
  s->backoff = fmin(2 * s->backoff, SESSION_BACKOFF_MAX);
}

/* ---- handling what arrives ---- */

static void on_welcome(fl_session_t *s, const Fedlr__Welcome *w) {
  const fl_dataset_t *d = s->shard->data;
  if (w->input_dim != d->dim) {
    fl_err_set(FL_ESHAPE,
               "the coordinator's model takes %u features, this client's data has %zu "
               "(wrong --dataset or --data for this run?)",
               w->input_dim, d->dim);
    end(s, FL_SESSION_REFUSED);
    return;
  }
  if (w->num_classes < d->num_classes) {
    fl_err_set(FL_ESHAPE,
               "the coordinator's model has %u classes, this client's data has %zu "
               "(wrong --dataset or --data for this run?)",
               w->num_classes, d->num_classes);
    end(s, FL_SESSION_REFUSED);
    return;
  }
  fl_model_spec_t m;
  int rc = fl_model_parse(w->model, w->input_dim, w->num_classes, &m);
  if (rc) {
    fl_err_set(rc, "the coordinator's model is unusable: %s", errmsg(rc));
    end(s, FL_SESSION_REFUSED);
    return;
  }
  fl_wire_limits_t lim;
  fl_wire_limits_for_model(&m, &lim);
  if (lim.max_message > SESSION_MAX_MSGSIZE) {
    fl_err_set(FL_ETOOBIG,
               "model '%s' has %zu parameters: its messages exceed this client's "
               "%zu MiB limit",
               m.spec, m.num_params, SESSION_MAX_MSGSIZE >> 20);
    end(s, FL_SESSION_REFUSED);
    return;
  }
  int same =
      s->trainer && strcmp(m.spec, s->model.spec) == 0 && m.num_params == s->model.num_params;
  if (!same) {
    fl_trainer_destroy(&s->trainer);
    s->have_model = 0;
    s->trainer = fl_trainer_new(&m);
    if (!s->trainer) {
      fl_err_set(FL_ENOMEM, "out of memory for a trainer of model '%s' (%zu parameters)", m.spec,
                 m.num_params);
      end(s, FL_SESSION_REFUSED);
      return;
    }
    s->model = m;
    s->limits = lim;
  }
  /* A tick every step: it costs one clock read unless something is due,
   * and a single step of a large model can outlast a heartbeat. */
  fl_trainer_set_tick(s->trainer, session_tick, s, 1);
  s->have_model = 1;
  s->client_id = w->client_id;
  snprintf(s->run_id, sizeof s->run_id, "%s", w->run_id);
  s->heartbeat = w->heartbeat_ms ? (double)w->heartbeat_ms / 1000.0 : 1.0;
  s->joined = 1;
  slog(s, "joined run %s as client %u: model %s (%zu parameters), %u rounds, heartbeat %u ms",
       s->run_id[0] ? s->run_id : "(unnamed)", s->client_id, s->model.spec, s->model.num_params,
       w->rounds, w->heartbeat_ms);
  /* An idle client hears from the coordinator once a heartbeat (its
   * answer): a bound below the rejoin window gives up on a coordinator that
   * is merely slow to answer. Said, not changed: the bound is the user's. */
  if (s->give_up > 0 && s->give_up < silence_limit(s))
    slog(s,
         "warning: --give-up %g s is shorter than this run's rejoin window (%g s): this client "
         "may give up on a coordinator that is only slow to answer",
         s->give_up, silence_limit(s));
}

static void on_stop(fl_session_t *s, const Fedlr__Stop *st, double now) {
  const char *why = st->reason[0] ? st->reason : "no reason given";
  if (st->rejoin) {
    /* Every message we sent before our Join reaches a restarted coordinator
     * earns one of these: answer the first only. */
    if (s->join_pending || (!s->joined && now - s->last_join_sent < SESSION_BACKOFF_MIN)) return;
    slog(s, "the coordinator does not know this client (%s): joining again", why);
    s->joined = 0;
    s->join_pending = 1;
    drop_update(s, "the coordinator restarted");
    return;
  }
  if (st->error) {
    fl_err_set(FL_EPROTO, "refused by the coordinator: %s", why);
    end(s, FL_SESSION_REFUSED);
    return;
  }
  slog(s, "the run is over: %s", why);
  end(s, FL_SESSION_DONE);
}

static void log_round(fl_session_t *s, uint32_t round, const uint8_t *upd, size_t len, double dt) {
  Fedlr__Envelope *env = NULL;
  if (fl_wire_decode(upd, len, &s->limits, &env) == 0 &&
      env->body_case == FEDLR__ENVELOPE__BODY_UPDATE) {
    slog(s, "round %u trained in %.2f s (loss %.4f, %llu steps, %llu examples)", round, dt,
         env->update->train_loss, (unsigned long long)env->update->steps,
         (unsigned long long)env->update->num_examples);
  } else {
    slog(s, "round %u trained in %.2f s", round, dt);
  }
  fl_wire_free(&env);
}

/* Trains on the message's bytes exactly as received: the update is then a
 * pure function of (message, shard), as in fedlr-sim. */
static void on_round_start(fl_session_t *s, const Fedlr__RoundStart *rs) {
  uint32_t round = rs->round;
  if (!s->have_model) {
    slog(s, "ignoring round %u: no Welcome yet", round);
    return;
  }
  s->round = round;
  drop_update(s, "a new round started");
  double t0 = now_s();
  /* Acknowledge at once: the coordinator paces its round starts by these
   * (at most a few model-sized messages in flight), and it is a heartbeat. */
  send_heartbeat(s, t0);
  uint8_t *out = NULL;
  size_t out_len = 0;
  int rc = fl_trainer_run_decoded(s->trainer, s->shard, s->client_id, rs, &out, &out_len);
  double dt = now_s() - t0;
  if (rc) {
    if (!s->interrupted) slog(s, "round %u: no update sent: %s", round, errmsg(rc));
    return;
  }
  if (!s->quiet) log_round(s, round, out, out_len, dt);
  s->update = out;
  s->update_len = out_len;
  s->update_round = round;
  flush(s, now_s());
  if (s->update) slog(s, "round %u: send queue full; the update waits", round);
}

static void on_message(fl_session_t *s, const uint8_t *buf, size_t len, double now) {
  Fedlr__Envelope *env = NULL;
  int rc = fl_wire_decode(buf, len, &s->limits, &env);
  if (rc) {
    if (!s->have_model && rc == FL_ETOOBIG)
      slog(s, "ignoring a %zu-byte message before any Welcome (a round start?): %s", len,
           errmsg(rc));
    else
      slog(s, "ignoring an invalid %zu-byte message: %s", len, errmsg(rc));
    return;
  }
  switch (env->body_case) {
  case FEDLR__ENVELOPE__BODY_WELCOME: on_welcome(s, env->welcome); break;
  case FEDLR__ENVELOPE__BODY_ROUND_START: on_round_start(s, env->round_start); break;
  case FEDLR__ENVELOPE__BODY_HEARTBEAT: break; /* a pong: receiving it was the point */
  case FEDLR__ENVELOPE__BODY_STOP: on_stop(s, env->stop, now); break;
  default:
    slog(s, "ignoring a message of kind %d: not one a coordinator sends", (int)env->body_case);
    break;
  }
  fl_wire_free(&env);
}

/* Handles what the socket holds, up to SESSION_DRAIN_MAX messages, so
 * timers still run under a flood. */
static void drain(fl_session_t *s) {
  for (int i = 0; i < SESSION_DRAIN_MAX && !s->ended && !s->interrupted; i++) {
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, s->sock, ZMQ_DONTWAIT) < 0) {
      if (errno != EAGAIN && errno != EINTR) slog(s, "receive failed: %s", zmq_strerror(errno));
      zmq_msg_close(&msg);
      return;
    }
    double now = now_s();
    /* Anything at all proves the coordinator alive. */
    s->last_recv = now;
    s->rejoins = 0;
    s->backoff = SESSION_BACKOFF_MIN;
    if (zmq_msg_more(&msg)) {
      /* The rest of a multipart message is already here (atomic delivery). */
      size_t frames = 1;
      int more = 1;
      while (more) {
        zmq_msg_close(&msg);
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, s->sock, ZMQ_DONTWAIT) < 0) break;
        frames++;
        more = zmq_msg_more(&msg);
      }
      zmq_msg_close(&msg);
      slog(s, "ignoring a %zu-frame message: fedlr messages are a single frame", frames);
      continue;
    }
    on_message(s, zmq_msg_data(&msg), zmq_msg_size(&msg), now);
    zmq_msg_close(&msg);
  }
}

static int fd_readable(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR));
}

/* The trainer's tick: heartbeats and interrupts while training, on this
 * thread and socket. */
static int session_tick(void *arg, uint64_t step) {
  (void)step;
  fl_session_t *s = arg;
  double now = now_s();
  if (s->joined && now - s->last_heartbeat >= s->heartbeat) send_heartbeat(s, now);
  if (s->interrupt_fd >= 0 && now - s->last_interrupt_check >= SESSION_INTERRUPT_CHECK) {
    s->last_interrupt_check = now;
    if (fd_readable(s->interrupt_fd)) {
      s->interrupted = 1;
      return 1;
    }
  }
  return 0;
}

/* ---- the handshake watch ---- */

static void auth_failed(fl_session_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void auth_failed(fl_session_t *s, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fl_err_set(FL_EPROTO, "%s", msg);
  end(s, FL_SESSION_AUTH_FAILED);
}

/* One monitor event of the socket. Refusals that will not change by
 * retrying end the session; under CURVE, so do SESSION_HS_FAILURES
 * failures in a row (the coordinator drops a client that encrypted for
 * another key without a word). */
static void on_monitor_event(fl_session_t *s, uint16_t ev, uint32_t value) {
  switch (ev) {
  case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: s->hs_fails = 0; return;
  case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
    if (value == 400) {
      auth_failed(s,
                  "the coordinator at %s refused this client's key (ZAP status 400): its public "
                  "key is not in the coordinator's --allow-clients",
                  s->endpoint);
      return;
    }
    slog(s, "the coordinator at %s could not check this client's key (ZAP status %u)", s->endpoint,
         value);
    break;
  case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
    if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
      if (s->curve)
        auth_failed(s,
                    "the coordinator at %s does not use CurveZMQ (it runs without "
                    "--curve-secret): refusing to talk to it in plaintext",
                    s->endpoint);
      else
        auth_failed(s,
                    "the coordinator at %s requires CurveZMQ: run this client with "
                    "--curve-secret FILE and --coordinator-key KEY",
                    s->endpoint);
      return;
    }
    slog(s, "handshake with %s failed: ZMTP protocol error 0x%08x", s->endpoint, value);
    break;
  case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
    if (s->curve)
      slog(s, "CURVE handshake with %s failed (%s)", s->endpoint, zmq_strerror((int)value));
    break;
  default: return;
  }
  if (!s->curve) return; /* plaintext: a transient failure; the transport retries */
  if (++s->hs_fails >= SESSION_HS_FAILURES)
    auth_failed(s,
                "the CURVE handshake with the coordinator at %s failed %u times in a row: "
                "--coordinator-key is probably not the coordinator's public key",
                s->endpoint, s->hs_fails);
}

static void drain_monitor(fl_session_t *s) {
  uint16_t ev;
  uint32_t value;
  for (int i = 0; i < SESSION_DRAIN_MAX && s->mon && !s->ended; i++) {
    if (!fl_zmon_recv(s->mon, &ev, &value)) return;
    on_monitor_event(s, ev, value);
  }
}

/* ---- the session ---- */

/* A new DEALER connected to the endpoint (connecting never waits). The
 * default ZMQ_IMMEDIATE=0 is deliberate: the pipe then survives
 * reconnects, so a message the coordinator sent just before it exited (the
 * final Stop) is still read after the connection drops; with IMMEDIATE=1
 * libzmq discards it on disconnect. */
static int open_socket(fl_session_t *s) {
  s->sock = zmq_socket(s->ctx, ZMQ_DEALER);
  if (!s->sock)
    return fl_err_set(FL_ENOMEM, "cannot create a ZeroMQ socket: %s", zmq_strerror(errno));
  int linger = 1000, ivl = 100, ivl_max = 5000;
  /* Transport heartbeats (answered by the peer's I/O thread) drop a
   * half-open connection, e.g. to a coordinator host that vanished, so the
   * transport reconnects instead of writing into a dead TCP stream. */
  int zhb_ivl = 1000, zhb_timeout = 5000;
  int64_t maxmsg = (int64_t)SESSION_MAX_MSGSIZE;
  if (s->handshake_ms > 0 &&
      zmq_setsockopt(s->sock, ZMQ_HANDSHAKE_IVL, &s->handshake_ms, sizeof s->handshake_ms))
    return fl_err_set(FL_EINVAL, "cannot set socket options: %s", zmq_strerror(errno));
  if (s->curve && (zmq_setsockopt(s->sock, ZMQ_CURVE_SERVERKEY, s->server_key, SESSION_KEY_LEN) ||
                   zmq_setsockopt(s->sock, ZMQ_CURVE_PUBLICKEY, s->curve_public, SESSION_KEY_LEN) ||
                   zmq_setsockopt(s->sock, ZMQ_CURVE_SECRETKEY, s->curve_secret, SESSION_KEY_LEN)))
    return fl_err_set(FL_EINVAL, "cannot set the CURVE keys: %s", zmq_strerror(errno));
  /* The monitor first, so that no handshake event of this socket is missed. */
  char mon_ep[64];
  snprintf(mon_ep, sizeof mon_ep, "inproc://fl-session-monitor-%u", s->mon_seq++);
  if (zmq_socket_monitor(s->sock, mon_ep,
                         ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0 ||
      !(s->mon = zmq_socket(s->ctx, ZMQ_PAIR)) ||
      zmq_setsockopt(s->mon, ZMQ_LINGER, &(int){0}, sizeof(int)) || zmq_connect(s->mon, mon_ep))
    return fl_err_set(FL_EIO, "cannot monitor the socket: %s", zmq_strerror(errno));
  if (zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger) ||
      zmq_setsockopt(s->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl) ||
      zmq_setsockopt(s->sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max) ||
      zmq_setsockopt(s->sock, ZMQ_HEARTBEAT_IVL, &zhb_ivl, sizeof zhb_ivl) ||
      zmq_setsockopt(s->sock, ZMQ_HEARTBEAT_TIMEOUT, &zhb_timeout, sizeof zhb_timeout) ||
      zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg))
    return fl_err_set(FL_EINVAL, "cannot set socket options: %s", zmq_strerror(errno));
  if (zmq_connect(s->sock, s->endpoint) != 0)
    return fl_err_set(FL_EINVAL, "--connect %s: %s", s->endpoint, zmq_strerror(errno));
  return 0;
}

static void close_socket(fl_session_t *s, int linger) {
  if (s->mon) {
    zmq_close(s->mon);
    s->mon = NULL;
  }
  if (!s->sock) return;
  zmq_socket_monitor(s->sock, NULL, 0);
  zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger);
  zmq_close(s->sock);
  s->sock = NULL;
}

fl_session_t *fl_session_new(const fl_session_config_t *c, const fl_shard_t *shard, int *err) {
  int rc = 0;
  fl_session_t *s = NULL;
  if (!c || !c->endpoint || !c->name || !shard || !shard->data || shard->n == 0) {
    rc = fl_err_set(FL_EINVAL, "fl_session_new: bad arguments");
    goto out;
  }
  if (fl_wire_check_name(c->name) != 0) {
    rc = fl_err_set(FL_EINVAL, "--name: %s", fl_err_msg());
    goto out;
  }
  if (!(c->give_up >= 0 && isfinite(c->give_up))) {
    rc = fl_err_set(FL_EINVAL, "give_up %g: must be a finite number of seconds >= 0 (0 = never)",
                    c->give_up);
    goto out;
  }
  if (strlen(c->endpoint) >= sizeof s->endpoint) {
    rc = fl_err_set(FL_EINVAL, "--connect: endpoint longer than %zu bytes", sizeof s->endpoint - 1);
    goto out;
  }
  s = calloc(1, sizeof *s);
  if (!s) {
    rc = fl_err_set(FL_ENOMEM, "out of memory");
    goto out;
  }
  snprintf(s->endpoint, sizeof s->endpoint, "%s", c->endpoint);
  snprintf(s->name, sizeof s->name, "%s", c->name);
  s->want_slot = c->want_slot;
  s->slot = c->slot;
  s->quiet = c->quiet;
  s->interrupt_fd = c->interrupt_fd;
  s->shard = shard;
  s->limits.max_message = SESSION_CTL_MAX_MESSAGE;
  s->limits.max_tensors = SESSION_CTL_MAX_TENSORS;
  s->limits.max_values = 0;
  s->heartbeat = 1.0;
  s->backoff = SESSION_BACKOFF_MIN;
  s->handshake_ms = c->handshake_timeout > 0 ? (int)(c->handshake_timeout * 1000.0) : 0;
  s->give_up = c->give_up;
  if (c->curve_public || c->curve_secret || c->server_key) {
    const char *keys[3] = {c->curve_public, c->curve_secret, c->server_key};
    char *dst[3] = {s->curve_public, s->curve_secret, s->server_key};
    for (int i = 0; i < 3; i++) {
      if (!keys[i] || strlen(keys[i]) != SESSION_KEY_LEN) {
        rc = fl_err_set(FL_EINVAL, "CurveZMQ needs three %d-character Z85 keys", SESSION_KEY_LEN);
        goto out;
      }
      memcpy(dst[i], keys[i], SESSION_KEY_LEN + 1);
    }
    s->curve = 1;
  }

  s->ctx = zmq_ctx_new();
  if (!s->ctx) {
    rc = fl_err_set(FL_ENOMEM, "cannot create a ZeroMQ context: %s", zmq_strerror(errno));
    goto out;
  }
  rc = open_socket(s);
out:
  if (rc) fl_session_destroy(&s);
  if (err) *err = rc;
  return s;
}

int fl_session_run(fl_session_t *s) {
  if (!s) return fl_err_set(FL_EINVAL, "fl_session_run: no session");
  slog(s, "connecting to %s with %zu examples", s->endpoint, s->shard->n);
  double now = now_s();
  s->last_recv = now;
  s->join_pending = 1;
  while (!s->ended && !s->interrupted) {
    now = now_s();
    check_liveness(s, now);
    if (s->ended) break;
    flush(s, now);
    if (s->joined && now - s->last_heartbeat >= s->heartbeat) send_heartbeat(s, now);

    double wake = fmin(rejoin_due(s), now + SESSION_POLL_MAX);
    if (s->give_up > 0) wake = fmin(wake, s->last_recv + s->give_up);
    if (s->joined) wake = fmin(wake, s->last_heartbeat + s->heartbeat);
    if (s->join_pending || s->update) wake = fmin(wake, now + SESSION_RETRY);
    long ms = wake > now ? (long)ceil((wake - now) * 1000.0) : 0;
    zmq_pollitem_t items[3] = {{s->sock, 0, ZMQ_POLLIN, 0},
                               {s->mon, s->mon ? 0 : -1, ZMQ_POLLIN, 0},
                               {NULL, s->interrupt_fd, ZMQ_POLLIN, 0}};
    if (!s->sock) { /* reopening failed: only the interrupt and the timers */
      items[0].socket = items[1].socket = NULL;
      items[0].fd = items[1].fd = -1;
    }
    int n = zmq_poll(items, s->interrupt_fd >= 0 ? 3 : 2, ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fl_err_set(FL_EIO, "zmq_poll: %s", zmq_strerror(errno));
    }
    if (s->interrupt_fd >= 0 && items[2].revents) {
      s->interrupted = 1;
    } else {
      if (items[1].revents & ZMQ_POLLIN) drain_monitor(s);
      if (!s->ended && (items[0].revents & ZMQ_POLLIN)) drain(s);
    }
  }
  if (s->interrupted) return FL_SESSION_INTERRUPTED;
  return s->result;
}

void fl_session_destroy(fl_session_t **sp) {
  if (!sp || !*sp) return;
  fl_session_t *s = *sp;
  close_socket(s, 1000);
  if (s->ctx) zmq_ctx_term(s->ctx);
  explicit_bzero(s->curve_secret, sizeof s->curve_secret);
  fl_trainer_destroy(&s->trainer);
  free(s->update);
  free(s);
  *sp = NULL;
}
