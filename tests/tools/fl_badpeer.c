/* fl_badpeer: a hostile fedlr peer for integration tests (not a ctest test).
 *
 *   fl_badpeer --connect EP --name NAME --slot N --model SPEC --input-dim D
 *              --classes K [--timeout SEC] [--rounds R] [--examples E]
 *
 * Over one DEALER socket it sends, in order, and logs each step to stdout as
 * "badpeer: <step>: <result>":
 *   a) three random byte strings (fixed seed): no reply expected;
 *   b) the first half of an encoded Join: a Stop{error} with the reason;
 *   c) a 2-frame message (each frame a valid Heartbeat): no reply expected;
 *   d) an Update before joining: a Stop{rejoin} reply expected;
 *   e) one frame of max_message + 1 zero bytes: the coordinator's
 *      ZMQ_MAXMSGSIZE drops the connection and the DEALER reconnects;
 *   f) Join{NAME, slot N}: a Welcome expected; then for each of R RoundStarts
 *      (heartbeating meanwhile, so it stays alive and sampled) it sends an
 *      Update with wrong shapes, one with a NaN, one for round+100, one
 *      claiming client N+1, one with 10^12 examples, a Welcome and a
 *      duplicate Join. It never sends a valid update; the coordinator's log
 *      is where the rejections show;
 *   g) closes its socket and exits 0.
 * With --mute yes it skips a)-e) and, joined, answers no RoundStart at all
 * while it heartbeats (a live client that holds its rounds until their
 * deadline), until R RoundStarts came or the run ends.
 * Exit 1 if an expected reply does not come within --timeout, 2 on bad
 * usage.
 *
 *   fl_badpeer --connect EP --flood N [--conns K] [--duration SEC]
 *              [--name PREFIX] [--timeout SEC]
 *
 * is a join flood instead: K DEALER connections (default 50) send N Joins
 * in all, each with a fresh random name (PREFIX-...), as fast as the
 * sockets take them, spread over at least SEC seconds (default 0), never
 * heartbeating; then it reads the replies until none came for 2 s (or
 * --timeout) and prints one line "flood: sent N joins over K connections
 * in S s; replies: W welcome, B busy, R refused, O other" (busy: a
 * Stop{rejoin}; refused: a Stop{error}). SIGTERM or SIGINT ends the flood
 * early, with the same line. Exit 0 once all N were sent, or when stopped
 * by a signal after sending some. Every send is ZMQ_DONTWAIT
 * (retried while the queue is full, within the timeout); LINGER is 1000 ms.
 *
 *   fl_badpeer --connect EP --idle K [--duration SEC]
 *
 * opens K connections that finish the ZMTP handshake and then never send a
 * byte (no reconnection), holds them SEC seconds (default 10) and prints
 * "idle: K connected, C closed by the coordinator (first after A s, last
 * after B s), O still open". Exit 0 if all K connected.
 *
 *   fl_badpeer --connect EP --spam KIND --count N
 *
 * sends N messages of one kind as fast as the socket takes them, never
 * reading a reply: KIND update (an Update before joining), multipart (two
 * frames), welcome (a message only coordinators send), garbage (undecodable
 * bytes) or heartbeat (a Heartbeat before joining: each is answered, and
 * the answers pile up unread). Prints "spam: sent N KIND in S s".
 *
 *   fl_badpeer --connect EP --bad-joins all [--forbid NAME --taken-slot N]
 *
 * sends Joins that must each be refused with a Stop{error} that says why:
 * an unsupported protocol version, empty, overlong (65 and 300 bytes),
 * control-character, C1 and non-UTF-8 names, 2^63 examples, a slot beyond
 * --clients, and (with --taken-slot) another client's slot. For each it
 * prints "badjoin CASE: ok: Stop{error} 'reason'" when the reason is there,
 * contains the expected words, is valid UTF-8 without control characters
 * and does not contain --forbid (another client's name); else FAIL. A
 * refusal for the protocol version must list the versions the run admits
 * in supported_versions. Exit 0 if every case passed.
 *
 *   fl_badpeer --connect EP --bad-joins prox --prox-mu MU
 *   fl_badpeer --connect EP --bad-joins shape --input-shape CxHxW
 *
 * is the same against a FedProx run (--prox-mu MU, given as the
 * coordinator was): Joins of protocol versions 1, 2 and [1, 2], otherwise
 * valid, must be refused because the run needs version 3 ("this run uses
 * FedProx (--prox-mu MU): clients must speak protocol version 3 or later;
 * this client speaks up to 2"), and one of version 7 as any coordinator
 * refuses it; every refusal lists only version 3 and later. `shape` is the
 * same against a run of a CNN on CxHxW images that an older client would
 * not infer (--input-shape CxHxW as the coordinator logs it): versions 1,
 * 3 and [1, 3] refused because the run needs version 4 ("this run's CNN
 * takes 3x8x8 images ..."), only version 4 on listed. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#include "fl_error.h"
#include "fl_model.h"
#include "fl_rng.h"
#include "fl_wire.h"

#define MON_EP "inproc://fl-badpeer-monitor"

typedef struct {
  const char *connect, *name, *model;
  const char *spam, *forbid;       /* --spam KIND; --forbid NAME */
  const char *prox_mu;             /* --bad-joins prox: the run's --prox-mu, verbatim */
  const char *input_shape;         /* --bad-joins shape: the run's CxHxW */
  uint32_t idle, count;            /* --idle K; --spam's --count N */
  int bad_joins, have_taken, mute; /* bad_joins: 1 all, 2 prox, 3 shape */
  uint32_t taken_slot;
  uint32_t slot, rounds;
  uint32_t flood, conns; /* join flood: joins in all, connections */
  double duration;       /* s the flood is spread over */
  size_t input_dim, classes;
  uint64_t examples;
  double timeout;
} opts_t;

typedef struct {
  opts_t o;
  void *ctx, *sock, *mon;
  fl_model_spec_t m;
  fl_wire_limits_t lim;
  float *params;     /* (num_params) valid-looking weights */
  float *nan_params; /* (num_params) the same with one NaN */
  fl_model_spec_t bad_m;
  float *bad_params; /* (bad_m.num_params) a model with one input fewer */
  uint32_t client_id;
  uint32_t heartbeat_ms;
  uint32_t hb_sent, hb_replies; /* heartbeats sent after joining, answers */
} peer_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void step(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void step(const char *name, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("badpeer: %s: ", name);
  vprintf(fmt, ap);
  printf("\n");
  fflush(stdout);
  va_end(ap);
}

/* Sends one frame without blocking; while the queue is full (EAGAIN) it
 * retries for up to the timeout. 0 or -1. */
static int send_frame(peer_t *p, const void *buf, size_t len, int more) {
  double t0 = now_s(), t_end = t0 + p->o.timeout;
  for (;;) {
    if (zmq_send(p->sock, buf, len, ZMQ_DONTWAIT | (more ? ZMQ_SNDMORE : 0)) >= 0) {
      if (now_s() - t0 > 0.5)
        step("send", "%zu bytes waited %.1f s for queue space", len, now_s() - t0);
      return 0;
    }
    if (errno != EAGAIN || now_s() > t_end) {
      step("send", "FAIL: %zu bytes: %s", len, zmq_strerror(errno));
      return -1;
    }
    zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLOUT, 0};
    zmq_poll(&it, 1, 50);
  }
}

static int send_env(peer_t *p, const Fedlr__Envelope *env) {
  uint8_t *buf;
  size_t len;
  if (fl_wire_encode(env, &buf, &len) != 0) {
    step("encode", "FAIL: %s", fl_err_msg());
    return -1;
  }
  int rc = send_frame(p, buf, len, 0);
  free(buf);
  return rc;
}

/* Receives and decodes one message within `ms` milliseconds. 1 and *out set,
 * 0 on timeout, -1 on an undecodable reply (logged). */
static int recv_env(peer_t *p, long ms, Fedlr__Envelope **out) {
  *out = NULL;
  zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
  if (zmq_poll(&it, 1, ms < 0 ? 0 : ms) <= 0 || !(it.revents & ZMQ_POLLIN)) return 0;
  zmq_msg_t msg;
  zmq_msg_init(&msg);
  if (zmq_msg_recv(&msg, p->sock, ZMQ_DONTWAIT) < 0) {
    zmq_msg_close(&msg);
    return 0;
  }
  int rc = fl_wire_decode(zmq_msg_data(&msg), zmq_msg_size(&msg), &p->lim, out);
  if (rc) step("recv", "undecodable reply of %zu bytes: %s", zmq_msg_size(&msg), fl_err_msg());
  zmq_msg_close(&msg);
  return rc ? -1 : 1;
}

static const char *kind_name(int k) {
  switch (k) {
  case FEDLR__ENVELOPE__BODY_JOIN: return "Join";
  case FEDLR__ENVELOPE__BODY_WELCOME: return "Welcome";
  case FEDLR__ENVELOPE__BODY_ROUND_START: return "RoundStart";
  case FEDLR__ENVELOPE__BODY_UPDATE: return "Update";
  case FEDLR__ENVELOPE__BODY_HEARTBEAT: return "Heartbeat";
  case FEDLR__ENVELOPE__BODY_STOP: return "Stop";
  default: return "?";
  }
}

/* Expects silence for `ms`: 0 if nothing came, -1 (logged) otherwise. */
static int expect_silence(peer_t *p, const char *name, long ms) {
  Fedlr__Envelope *env;
  int r = recv_env(p, ms, &env);
  if (r == 0) {
    step(name, "ok: no reply within %ld ms", ms);
    return 0;
  }
  step(name, "FAIL: unexpected reply (%s)", env ? kind_name(env->body_case) : "undecodable");
  fl_wire_free(&env);
  return -1;
}

/* ---- messages ---- */

static void make_join(peer_t *p, Fedlr__Join *j, Fedlr__Envelope *env) {
  fedlr__join__init(j);
  j->protocol_version = FL_WIRE_PROTOCOL_VERSION;
  j->name = (char *)p->o.name;
  j->num_examples = p->o.examples;
  j->want_slot = 1;
  j->slot = p->o.slot;
  fedlr__envelope__init(env);
  env->body_case = FEDLR__ENVELOPE__BODY_JOIN;
  env->join = j;
}

static int send_join(peer_t *p) {
  Fedlr__Join j;
  Fedlr__Envelope env;
  make_join(p, &j, &env);
  return send_env(p, &env);
}

static int send_heartbeat(peer_t *p, uint32_t round) {
  Fedlr__Heartbeat hb = FEDLR__HEARTBEAT__INIT;
  hb.client_id = p->client_id;
  hb.round = round;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_HEARTBEAT;
  env.heartbeat = &hb;
  return send_env(p, &env);
}

/* An Update over `params` of model `m` (full weights, not a delta). */
static int send_update(peer_t *p, const fl_model_spec_t *m, const float *params, uint32_t round,
                       uint32_t client_id, uint64_t num_examples) {
  fl_wire_tensors_t tv;
  fl_wire_tensors_init(&tv, m, params);
  Fedlr__Update u = FEDLR__UPDATE__INIT;
  u.round = round;
  u.client_id = client_id;
  u.num_examples = num_examples;
  u.is_delta = 0;
  u.n_weights = tv.n;
  u.weights = tv.ptrs;
  u.train_loss = 1.0;
  u.steps = 1;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_UPDATE;
  env.update = &u;
  int rc = send_env(p, &env);
  fl_wire_tensors_free(&tv);
  return rc;
}

/* ---- steps ---- */

static int step_random(peer_t *p) {
  static const size_t lens[3] = {1, 57, 4096};
  fl_rng_t rng;
  fl_rng_seed(&rng, 0xbad0bad0ULL);
  uint8_t buf[4096];
  for (int i = 0; i < 3; i++) {
    for (size_t k = 0; k < lens[i]; k++)
      buf[k] = (uint8_t)fl_rng_u64(&rng);
    if (send_frame(p, buf, lens[i], 0)) return -1;
  }
  step("a random bytes", "sent 3 strings of 1, 57, 4096 bytes");
  return expect_silence(p, "a random bytes", 500);
}

static int step_truncated_join(peer_t *p) {
  Fedlr__Join j;
  Fedlr__Envelope env;
  make_join(p, &j, &env);
  uint8_t *buf;
  size_t len;
  if (fl_wire_encode(&env, &buf, &len) != 0) return -1;
  int rc = send_frame(p, buf, len / 2, 0);
  free(buf);
  if (rc) return -1;
  step("b truncated join", "sent %zu of %zu bytes", len / 2, len);
  /* An undecodable Join is refused with a reason, like any refused Join. */
  Fedlr__Envelope *r;
  if (recv_env(p, (long)(p->o.timeout * 1000.0), &r) <= 0) {
    step("b truncated join", "FAIL: no reply");
    return -1;
  }
  int ok = r->body_case == FEDLR__ENVELOPE__BODY_STOP && r->stop->error && r->stop->reason[0];
  step("b truncated join", "%s: %s '%s'", ok ? "ok" : "FAIL", kind_name(r->body_case),
       r->body_case == FEDLR__ENVELOPE__BODY_STOP ? r->stop->reason : "");
  fl_wire_free(&r);
  return ok ? 0 : -1;
}

static int step_multipart(peer_t *p) {
  Fedlr__Heartbeat hb = FEDLR__HEARTBEAT__INIT;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_HEARTBEAT;
  env.heartbeat = &hb;
  uint8_t *buf;
  size_t len;
  if (fl_wire_encode(&env, &buf, &len) != 0) return -1;
  /* Each frame alone would be answered (Stop{rejoin}, we are unknown): the
   * silence shows the coordinator dropped the message whole. */
  int rc = send_frame(p, buf, len, 1) || send_frame(p, buf, len, 0);
  free(buf);
  if (rc) return -1;
  step("c multipart", "sent a 2-frame message (a Heartbeat in each frame)");
  return expect_silence(p, "c multipart", 500);
}

static int step_update_unjoined(peer_t *p) {
  if (send_update(p, &p->m, p->params, 1, p->o.slot, p->o.examples)) return -1;
  double t_end = now_s() + p->o.timeout;
  while (now_s() < t_end) {
    Fedlr__Envelope *env;
    int r = recv_env(p, (long)((t_end - now_s()) * 1000.0) + 1, &env);
    if (r == 0) break;
    if (r < 0) continue;
    int is_stop = env->body_case == FEDLR__ENVELOPE__BODY_STOP;
    if (is_stop && env->stop->rejoin) {
      step("d update before join", "ok: Stop{rejoin=true, reason '%s'}", env->stop->reason);
      fl_wire_free(&env);
      return 0;
    }
    step("d update before join", "ignored a %s%s", kind_name(env->body_case),
         is_stop ? " without rejoin" : "");
    fl_wire_free(&env);
  }
  step("d update before join", "FAIL: no Stop{rejoin=true} within %.1f s", p->o.timeout);
  return -1;
}

/* Waits for the monitor event `want` (a ZMQ_EVENT_* bit) until t_end. */
static int wait_event(peer_t *p, int want, double t_end) {
  while (now_s() < t_end) {
    zmq_pollitem_t it = {p->mon, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, (long)((t_end - now_s()) * 1000.0) + 1) <= 0) continue;
    zmq_msg_t f1, f2;
    zmq_msg_init(&f1);
    zmq_msg_init(&f2);
    int ev = -1;
    if (zmq_msg_recv(&f1, p->mon, ZMQ_DONTWAIT) >= 0 && zmq_msg_size(&f1) >= 2) {
      uint16_t e16;
      memcpy(&e16, zmq_msg_data(&f1), sizeof e16);
      ev = e16;
      zmq_msg_recv(&f2, p->mon, 0); /* the endpoint frame */
    }
    zmq_msg_close(&f1);
    zmq_msg_close(&f2);
    if (ev == want) return 0;
  }
  return -1;
}

static int step_oversize(peer_t *p) {
  size_t len = p->lim.max_message + 1;
  uint8_t *buf = calloc(len, 1);
  if (!buf) return -1;
  int rc = send_frame(p, buf, len, 0);
  free(buf);
  if (rc) return -1;
  step("e oversize", "sent one frame of %zu bytes (limit %zu)", len, p->lim.max_message);
  double t_end = now_s() + p->o.timeout;
  if (wait_event(p, ZMQ_EVENT_DISCONNECTED, t_end) != 0) {
    step("e oversize", "FAIL: the coordinator kept the connection (ZMQ_MAXMSGSIZE not set?)");
    return -1;
  }
  if (wait_event(p, ZMQ_EVENT_HANDSHAKE_SUCCEEDED, t_end) != 0) {
    step("e oversize", "FAIL: dropped, but no reconnect within %.1f s", p->o.timeout);
    return -1;
  }
  step("e oversize", "ok: the coordinator dropped the connection; reconnected");
  return 0;
}

static int step_join(peer_t *p) {
  double t_end = now_s() + p->o.timeout, t_next = 0;
  while (now_s() < t_end) {
    /* Resend the Join every second: a message queued across the
     * reconnection may be lost. Repeats are idempotent rejoins. */
    if (now_s() >= t_next) {
      if (send_join(p)) return -1;
      t_next = now_s() + 1.0;
    }
    Fedlr__Envelope *env;
    int r = recv_env(p, (long)((t_next - now_s()) * 1000.0) + 1, &env);
    if (r <= 0) continue;
    if (env->body_case == FEDLR__ENVELOPE__BODY_WELCOME) {
      p->client_id = env->welcome->client_id;
      p->heartbeat_ms = env->welcome->heartbeat_ms ? env->welcome->heartbeat_ms : 1000;
      step("f join", "%s: Welcome as client %u (model %s, heartbeat %u ms)",
           p->client_id == p->o.slot ? "ok" : "FAIL", p->client_id, env->welcome->model,
           p->heartbeat_ms);
      int ok = p->client_id == p->o.slot;
      fl_wire_free(&env);
      return ok ? 0 : -1;
    }
    if (env->body_case == FEDLR__ENVELOPE__BODY_STOP) {
      step("f join", "FAIL: refused: %s", env->stop->reason);
      fl_wire_free(&env);
      return -1;
    }
    step("f join", "ignored a %s", kind_name(env->body_case));
    fl_wire_free(&env);
  }
  step("f join", "FAIL: no Welcome within %.1f s", p->o.timeout);
  return -1;
}

/* The hostile updates and messages for round `r`. */
static int attack_round(peer_t *p, uint32_t r) {
  uint32_t id = p->client_id;
  if (send_update(p, &p->bad_m, p->bad_params, r, id, p->o.examples)) return -1;
  step("f attack", "round %u: sent an update with wrong shapes (input dim %zu)", r,
       p->bad_m.dims[0]);
  if (send_update(p, &p->m, p->nan_params, r, id, p->o.examples)) return -1;
  step("f attack", "round %u: sent an update with a NaN weight", r);
  if (send_update(p, &p->m, p->params, r + 100, id, p->o.examples)) return -1;
  step("f attack", "round %u: sent an update for round %u", r, r + 100);
  if (send_update(p, &p->m, p->params, r, id + 1, p->o.examples)) return -1;
  step("f attack", "round %u: sent an update claiming client %u", r, id + 1);
  if (send_update(p, &p->m, p->params, r, id, UINT64_C(1000000000000))) return -1;
  step("f attack", "round %u: sent an update claiming 10^12 examples (joined with %" PRIu64 ")", r,
       p->o.examples);
  Fedlr__Welcome w = FEDLR__WELCOME__INIT;
  w.client_id = id;
  w.run_id = "badpeer";
  w.model = (char *)p->m.spec;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_WELCOME;
  env.welcome = &w;
  if (send_env(p, &env)) return -1;
  step("f attack", "round %u: sent a Welcome", r);
  if (send_join(p)) return -1;
  step("f attack", "round %u: sent a duplicate Join", r);
  return 0;
}

/* Heartbeats and waits for RoundStarts; attacks each new round, R times. */
static int step_rounds(peer_t *p) {
  uint32_t attacked = 0, last_round = 0, hb_round = 0;
  double t_end = now_s() + p->o.timeout, t_hb = 0;
  while (attacked < p->o.rounds) {
    double t = now_s();
    if (t > t_end) {
      step("f roundstart", "FAIL: no RoundStart within %.1f s (%u heartbeats sent, %u answered)",
           p->o.timeout, p->hb_sent, p->hb_replies);
      return -1;
    }
    if (t >= t_hb) {
      if (send_heartbeat(p, hb_round)) return -1;
      p->hb_sent++;
      t_hb = t + p->heartbeat_ms / 1000.0;
    }
    Fedlr__Envelope *env;
    int r = recv_env(p, (long)((t_hb - now_s()) * 1000.0) + 1, &env);
    if (r <= 0) continue;
    if (env->body_case == FEDLR__ENVELOPE__BODY_STOP) {
      step("f roundstart", "the run ended (Stop: %s) after %u attacked round(s)", env->stop->reason,
           attacked);
      int ok = attacked > 0 && !env->stop->error;
      fl_wire_free(&env);
      return ok ? 0 : -1;
    }
    if (env->body_case == FEDLR__ENVELOPE__BODY_HEARTBEAT) p->hb_replies++;
    if (env->body_case == FEDLR__ENVELOPE__BODY_ROUND_START) {
      uint32_t round = env->round_start->round;
      if (round == last_round) {
        step("f roundstart", "round %u again (answer to the duplicate Join): ignored", round);
      } else {
        step("f roundstart", "ok: RoundStart for round %u", round);
        int rc = p->o.mute ? 0 : attack_round(p, round);
        if (p->o.mute) step("f mute", "round %u: no answer", round);
        last_round = hb_round = round;
        attacked++;
        t_end = now_s() + p->o.timeout;
        if (rc) {
          fl_wire_free(&env);
          return -1;
        }
      }
    }
    fl_wire_free(&env);
  }
  return 0;
}

/* ---- join flood ---- */

static volatile sig_atomic_t flood_stop;

static void on_flood_signal(int sig) {
  (void)sig;
  flood_stop = 1;
}

static int run_flood(const opts_t *o) {
  void *ctx = zmq_ctx_new();
  void **socks = calloc(o->conns, sizeof *socks);
  int status = 1, linger = 0;
  uint64_t rng = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20) ^ 0x9E3779B97F4A7C15ull;
  uint32_t sent = 0, welcome = 0, busy = 0, refused = 0, other = 0;
  char busy_reason[128] = "", refused_reason[128] = "";
  if (!ctx || !socks) goto out;
  signal(SIGTERM, on_flood_signal);
  signal(SIGINT, on_flood_signal);
  for (uint32_t k = 0; k < o->conns; k++) {
    socks[k] = zmq_socket(ctx, ZMQ_DEALER);
    if (!socks[k] || zmq_setsockopt(socks[k], ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_connect(socks[k], o->connect)) {
      fprintf(stderr, "fl_badpeer: flood: connect %s: %s\n", o->connect, zmq_strerror(errno));
      goto out;
    }
  }
  double t0 = now_s(), t_end = t0 + o->timeout;
  zmq_pollitem_t *items = calloc(o->conns, sizeof *items);
  if (!items) goto out;
  for (uint32_t k = 0; k < o->conns; k++)
    items[k] = (zmq_pollitem_t){socks[k], 0, ZMQ_POLLIN, 0};
  double last_reply = now_s();
  while (!flood_stop) {
    double t = now_s();
    /* Paced so that sent/N <= elapsed/duration, in bursts of one Join per
     * connection. */
    while (sent < o->flood &&
           (o->duration <= 0 || (double)sent / o->flood <= (t - t0) / o->duration)) {
      uint32_t k = sent % o->conns;
      char name[96];
      rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
      snprintf(name, sizeof name, "%s-%u-%016llx", o->name ? o->name : "flood", sent,
               (unsigned long long)rng);
      Fedlr__Join j = FEDLR__JOIN__INIT;
      j.protocol_version = FL_WIRE_PROTOCOL_VERSION;
      j.name = name;
      j.num_examples = o->examples;
      Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
      env.body_case = FEDLR__ENVELOPE__BODY_JOIN;
      env.join = &j;
      uint8_t *buf;
      size_t len;
      if (fl_wire_encode(&env, &buf, &len) != 0) goto out_items;
      int rc = zmq_send(socks[k], buf, len, ZMQ_DONTWAIT);
      free(buf);
      if (rc < 0) break; /* that connection's queue is full: read replies first */
      sent++;
    }
    if (sent == o->flood && now_s() - last_reply > 2.0) break;
    if (now_s() > t_end) break;
    if (zmq_poll(items, (int)o->conns, 10) <= 0) continue;
    for (uint32_t k = 0; k < o->conns; k++) {
      if (!(items[k].revents & ZMQ_POLLIN)) continue;
      for (int n = 0; n < 1000; n++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, socks[k], ZMQ_DONTWAIT) < 0) {
          zmq_msg_close(&msg);
          break;
        }
        last_reply = now_s();
        Fedlr__Envelope *env = NULL;
        fl_wire_limits_t lim = {.max_message = 1 << 20, .max_tensors = 64, .max_values = 0};
        if (fl_wire_decode(zmq_msg_data(&msg), zmq_msg_size(&msg), &lim, &env) != 0) {
          other++;
        } else if (env->body_case == FEDLR__ENVELOPE__BODY_WELCOME) {
          welcome++;
        } else if (env->body_case == FEDLR__ENVELOPE__BODY_STOP && env->stop->rejoin) {
          if (!busy++) snprintf(busy_reason, sizeof busy_reason, "%s", env->stop->reason);
        } else if (env->body_case == FEDLR__ENVELOPE__BODY_STOP && env->stop->error) {
          if (!refused++) snprintf(refused_reason, sizeof refused_reason, "%s", env->stop->reason);
        } else {
          other++;
        }
        fl_wire_free(&env);
        zmq_msg_close(&msg);
      }
    }
  }
  /* Done flooding: a later signal must not land in the teardown (timeout(1)
   * sends its TERM twice, to the child and to the process group; CI saw a
   * flooder that had printed its summary never exit under ASan). */
  signal(SIGTERM, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  printf("flood: sent %u joins over %u connections in %.2f s; replies: %u welcome, %u busy, %u "
         "refused, %u other\n",
         sent, o->conns, now_s() - t0, welcome, busy, refused, other);
  if (busy) printf("flood: busy reason: %s\n", busy_reason);
  if (refused) printf("flood: refused reason: %s\n", refused_reason);
  fflush(stdout);
  status = sent == o->flood || (flood_stop && sent > 0) ? 0 : 1;
out_items:
  free(items);
out:
  for (uint32_t k = 0; socks && k < o->conns; k++)
    if (socks[k]) zmq_close(socks[k]);
  free(socks);
  if (ctx) zmq_ctx_term(ctx);
  return status;
}

/* ---- idle connections, spam, bad joins ---- */

/* A DEALER connected to o->connect that never reconnects, with a monitor
 * on inproc endpoint #k. */
static void *connect_quiet(void *ctx, const opts_t *o, unsigned k, void **mon) {
  int zero = 0, no_reconnect = -1;
  char ep[64];
  snprintf(ep, sizeof ep, "inproc://fl-badpeer-mon-%u", k);
  void *s = zmq_socket(ctx, ZMQ_DEALER);
  *mon = NULL;
  if (!s) return NULL;
  if (zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) ||
      zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &no_reconnect, sizeof no_reconnect) ||
      zmq_socket_monitor(s, ep, ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED) ||
      !(*mon = zmq_socket(ctx, ZMQ_PAIR)) || zmq_setsockopt(*mon, ZMQ_LINGER, &zero, sizeof zero) ||
      zmq_connect(*mon, ep) || zmq_connect(s, o->connect)) {
    fprintf(stderr, "fl_badpeer: connect %s: %s\n", o->connect, zmq_strerror(errno));
    if (*mon) zmq_close(*mon);
    zmq_close(s);
    *mon = NULL;
    return NULL;
  }
  return s;
}

/* The next monitor event of `mon` within ms, or -1. */
static int next_event(void *mon, long ms) {
  zmq_pollitem_t it = {mon, 0, ZMQ_POLLIN, 0};
  if (zmq_poll(&it, 1, ms) <= 0) return -1;
  zmq_msg_t f1, f2;
  zmq_msg_init(&f1);
  zmq_msg_init(&f2);
  int ev = -1;
  if (zmq_msg_recv(&f1, mon, ZMQ_DONTWAIT) >= 0 && zmq_msg_size(&f1) >= 2) {
    uint16_t e16;
    memcpy(&e16, zmq_msg_data(&f1), sizeof e16);
    ev = e16;
    zmq_msg_recv(&f2, mon, 0);
  }
  zmq_msg_close(&f1);
  zmq_msg_close(&f2);
  return ev;
}

static int run_idle(const opts_t *o) {
  void *ctx = zmq_ctx_new();
  void **socks = calloc(o->idle, sizeof *socks), **mons = calloc(o->idle, sizeof *mons);
  double *closed_at = calloc(o->idle, sizeof *closed_at);
  int *up = calloc(o->idle, sizeof *up), status = 1;
  uint32_t connected = 0, closed = 0;
  if (!ctx || !socks || !mons || !closed_at || !up) goto out;
  double t0 = now_s(), hold = o->duration > 0 ? o->duration : 10.0;
  for (uint32_t k = 0; k < o->idle; k++)
    if (!(socks[k] = connect_quiet(ctx, o, k, &mons[k]))) goto out;
  /* Every connection's handshake, then the hold: count who is closed. */
  while (now_s() - t0 < hold + o->timeout) {
    int any = 0;
    for (uint32_t k = 0; k < o->idle; k++) {
      int ev;
      while ((ev = next_event(mons[k], 0)) >= 0) {
        any = 1;
        if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED && !up[k]) {
          up[k] = 1;
          connected++;
        } else if (ev == ZMQ_EVENT_DISCONNECTED && up[k] == 1) {
          up[k] = 2;
          closed++;
          closed_at[k] = now_s() - t0;
        }
      }
    }
    if (connected == o->idle && now_s() - t0 >= hold) break;
    if (!any) zmq_poll(NULL, 0, 20);
  }
  double first = 1e9, last = 0;
  for (uint32_t k = 0; k < o->idle; k++)
    if (up[k] == 2) {
      first = closed_at[k] < first ? closed_at[k] : first;
      last = closed_at[k] > last ? closed_at[k] : last;
    }
  printf("idle: %u connected, %u closed by the coordinator (first after %.1f s, last after %.1f "
         "s), %u still open\n",
         connected, closed, closed ? first : 0.0, last, connected - closed);
  fflush(stdout);
  status = connected == o->idle ? 0 : 1;
out:
  for (uint32_t k = 0; socks && k < o->idle; k++) {
    if (mons && mons[k]) zmq_close(mons[k]);
    if (socks[k]) zmq_close(socks[k]);
  }
  free(socks);
  free(mons);
  free(closed_at);
  free(up);
  if (ctx) zmq_ctx_term(ctx);
  return status;
}

static int run_spam(peer_t *p) {
  const opts_t *o = &p->o;
  uint8_t *buf = NULL;
  size_t len = 0;
  int frames = 1;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  Fedlr__Heartbeat hb = FEDLR__HEARTBEAT__INIT;
  Fedlr__Welcome w = FEDLR__WELCOME__INIT;
  Fedlr__Update u = FEDLR__UPDATE__INIT;
  Fedlr__Tensor t = FEDLR__TENSOR__INIT, *tp = &t;
  float one = 1.0f;
  uint32_t shape = 1;
  if (!strcmp(o->spam, "update")) {
    t.name = "layers.0.weight";
    t.n_shape = 1;
    t.shape = &shape;
    t.n_data = 1;
    t.data = &one;
    u.round = 1;
    u.num_examples = 1;
    u.n_weights = 1;
    u.weights = &tp;
    env.body_case = FEDLR__ENVELOPE__BODY_UPDATE;
    env.update = &u;
  } else if (!strcmp(o->spam, "multipart") || !strcmp(o->spam, "heartbeat")) {
    env.body_case = FEDLR__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    frames = o->spam[0] == 'm' ? 2 : 1;
  } else if (!strcmp(o->spam, "welcome")) {
    w.run_id = "spam";
    w.model = "softmax";
    env.body_case = FEDLR__ENVELOPE__BODY_WELCOME;
    env.welcome = &w;
  } else if (strcmp(o->spam, "garbage") != 0) {
    fprintf(stderr, "fl_badpeer: --spam: update, multipart, welcome, garbage or heartbeat\n");
    return 2;
  }
  if (env.body_case != FEDLR__ENVELOPE__BODY__NOT_SET) {
    if (fl_wire_encode(&env, &buf, &len) != 0) return 1;
  } else {
    len = 33;
    buf = malloc(len);
    if (!buf) return 1;
    for (size_t i = 0; i < len; i++)
      buf[i] = (uint8_t)(0xf7 ^ (i * 29));
  }
  double t0 = now_s();
  uint32_t sent = 0;
  for (; sent < o->count; sent++) {
    int rc = 0;
    for (int f = 0; f < frames && !rc; f++)
      rc = send_frame(p, buf, len, f + 1 < frames);
    if (rc) break;
  }
  free(buf);
  printf("spam: sent %u %s in %.2f s\n", sent, o->spam, now_s() - t0);
  fflush(stdout);
  return sent == o->count ? 0 : 1;
}

/* 1 if s is valid UTF-8 without control characters (as a strict proto3
 * reader and a terminal need). */
static int clean_text(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    if (*p < 0x20 || *p == 0x7f) return 0;
    if (*p < 0x80) {
      p++;
      continue;
    }
    int n = (*p >> 5) == 6 ? 1 : (*p >> 4) == 14 ? 2 : (*p >> 3) == 30 ? 3 : -1;
    if (n < 0 || (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)) return 0; /* C1 */
    for (int i = 1; i <= n; i++)
      if ((p[i] & 0xc0) != 0x80) return 0;
    p += n + 1;
  }
  return 1;
}

/* Sends Join j and expects a Stop{error} whose reason contains `want`;
 * `versions_from` > 0: a refusal for the protocol version, which must list
 * versions_from .. FL_WIRE_PROTOCOL_VERSION (the versions the run admits). */
static int bad_join_case(peer_t *p, const char *name, Fedlr__Join *j, const char *want,
                         uint32_t versions_from) {
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_JOIN;
  env.join = j;
  if (send_env(p, &env)) return -1;
  double t_end = now_s() + p->o.timeout;
  while (now_s() < t_end) {
    Fedlr__Envelope *r;
    int got = recv_env(p, (long)((t_end - now_s()) * 1000.0) + 1, &r);
    if (got < 0) {
      step(name, "FAIL: an undecodable reply");
      return -1;
    }
    if (got == 0) break;
    if (r->body_case != FEDLR__ENVELOPE__BODY_STOP) {
      step(name, "FAIL: a %s instead of a Stop", kind_name(r->body_case));
      fl_wire_free(&r);
      return -1;
    }
    const char *why = r->stop->reason;
    int ok = r->stop->error && !r->stop->rejoin && strstr(why, want) && clean_text(why) &&
             !(p->o.forbid && strstr(why, p->o.forbid));
    /* A version refusal lists the versions admitted (protocol version 2). */
    size_t n = r->stop->n_supported_versions;
    int listed = n == (versions_from ? FL_WIRE_PROTOCOL_VERSION - versions_from + 1 : 0);
    for (size_t i = 0; listed && i < n; i++)
      listed = r->stop->supported_versions[i] == versions_from + i;
    if (!listed) {
      step(name, "FAIL: Stop '%s' lists %zu versions from %u, not %u to %u", why, n,
           n ? r->stop->supported_versions[0] : 0, versions_from, FL_WIRE_PROTOCOL_VERSION);
      fl_wire_free(&r);
      return -1;
    }
    step(name, "%s: Stop{error=%d} '%s'%s", ok ? "ok" : "FAIL", r->stop->error, why,
         ok ? "" : (!strstr(why, want) ? " (lacks the reason)" : " (unclean or names another)"));
    fl_wire_free(&r);
    return ok ? 0 : -1;
  }
  step(name, "FAIL: no reply within %.1f s", p->o.timeout);
  return -1;
}

static int run_bad_joins(peer_t *p) {
  char n65[66], n300[301];
  memset(n65, 'a', 65);
  n65[65] = '\0';
  memset(n300, 'b', 300);
  n300[300] = '\0';
  const struct {
    const char *name, *join_name, *want;
    uint32_t version, slot;
    uint64_t examples;
  } cases[] = {
      {"version 7", "v7-client", "this coordinator speaks versions 1 to 4", 7, 0, 10},
      {"version 0", "v0-client", "this coordinator speaks versions 1 to 4", 0, 0, 10},
      {"empty name", "", "the client name is empty", 1, 0, 10},
      {"65-byte name", n65, "longer than 64 bytes", 1, 0, 10},
      {"300-byte name", n300, "longer than 256 bytes", 1, 0, 10},
      {"escape sequence", "\x1b[31mred", "has a control character", 1, 0, 10},
      {"C1 control", "x\xc2\x85y", "has a control character", 1, 0, 10},
      {"Latin-1", "caf\xe9", "is not valid UTF-8", 1, 0, 10},
      {"2^63 examples", "greedy", "a client declares 1 to 4294967296", 1, 0, UINT64_C(1) << 63},
      {"0 examples", "empty-handed", "a client declares 1 to", 1, 0, 0},
      {"slot beyond --clients", "far-away", "beyond --clients", 1, 3999999, 10},
  };
  int bad = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    Fedlr__Join j = FEDLR__JOIN__INIT;
    j.protocol_version = cases[i].version;
    j.name = (char *)cases[i].join_name;
    j.num_examples = cases[i].examples;
    j.want_slot = cases[i].slot != 0;
    j.slot = cases[i].slot;
    char label[64];
    snprintf(label, sizeof label, "badjoin %s", cases[i].name);
    uint32_t from = strstr(cases[i].want, "speaks versions") ? FL_WIRE_MIN_PROTOCOL_VERSION : 0;
    bad |= bad_join_case(p, label, &j, cases[i].want, from) != 0;
  }
  if (p->o.have_taken) {
    Fedlr__Join j = FEDLR__JOIN__INIT;
    j.protocol_version = FL_WIRE_PROTOCOL_VERSION;
    j.name = "slot-thief";
    j.num_examples = 10;
    j.want_slot = 1;
    j.slot = p->o.taken_slot;
    bad |= bad_join_case(p, "badjoin taken slot", &j, "taken by another client", 0) != 0;
  }
  return bad ? 1 : 0;
}

/* --bad-joins prox / shape: Joins a run must refuse for their version,
 * every one below `from` (FL_WIRE_PROX_VERSION, FL_WIRE_SHAPE_VERSION) for
 * the reason `why`, and one of version 7 as any coordinator refuses it. */
static int run_version_joins(peer_t *p, uint32_t from, const char *why) {
  const struct {
    const char *name;
    uint32_t version, min_version, speaks;
  } cases[] = {{"the version below", from - 1, 0, from - 1},
               {"versions 1 to the one below", from - 1, 1, from - 1},
               {"version 1", 1, 0, 1},
               {"version 7", 7, 0, 0}};
  int bad = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    Fedlr__Join j = FEDLR__JOIN__INIT;
    j.protocol_version = cases[i].version;
    j.min_protocol_version = cases[i].min_version;
    j.name = "old-client";
    j.num_examples = 10;
    char want[512], label[96];
    if (cases[i].speaks)
      snprintf(want, sizeof want,
               "join refused: %s: clients must speak protocol version %u or later; this client "
               "speaks up to %u",
               why, from, cases[i].speaks);
    else
      snprintf(want, sizeof want, "this coordinator speaks versions %d to %d",
               FL_WIRE_MIN_PROTOCOL_VERSION, FL_WIRE_PROTOCOL_VERSION);
    snprintf(label, sizeof label, "badjoin %s (%u)", cases[i].name, cases[i].version);
    bad |= bad_join_case(p, label, &j, want, from) != 0;
  }
  return bad ? 1 : 0;
}

static int run_prox_joins(peer_t *p) {
  char why[128];
  snprintf(why, sizeof why, "this run uses FedProx (--prox-mu %s)", p->o.prox_mu);
  return run_version_joins(p, FL_WIRE_PROX_VERSION, why);
}

static int run_shape_joins(peer_t *p) {
  char why[256];
  snprintf(why, sizeof why,
           "this run's CNN takes %s images (--input-shape, or the IDX data's dimensions), which "
           "a client of protocol version 3 or older would build as one channel of a square",
           p->o.input_shape);
  return run_version_joins(p, FL_WIRE_SHAPE_VERSION, why);
}

/* ---- main ---- */

static int usage(const char *msg) {
  if (msg) fprintf(stderr, "fl_badpeer: %s\n", msg);
  fprintf(stderr,
          "usage: fl_badpeer --connect EP --name NAME --slot N --model SPEC "
          "--input-dim D --classes K [--timeout SEC] [--rounds R] [--examples E] [--mute yes]\n"
          "       fl_badpeer --connect EP --flood N [--conns K] [--duration SEC] "
          "[--name PREFIX] [--timeout SEC]\n"
          "       fl_badpeer --connect EP --idle K [--duration SEC]\n"
          "       fl_badpeer --connect EP --spam KIND --count N\n"
          "       fl_badpeer --connect EP --bad-joins all [--forbid NAME --taken-slot N]\n"
          "       fl_badpeer --connect EP --bad-joins prox --prox-mu MU\n"
          "       fl_badpeer --connect EP --bad-joins shape --input-shape CxHxW\n");
  return 2;
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static int parse_opts(int argc, char **argv, opts_t *o) {
  memset(o, 0, sizeof *o);
  o->timeout = 30;
  o->rounds = 1;
  o->examples = 10000;
  int have_slot = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    uint64_t n;
    if (!v) return usage("a flag lacks its value");
    i++;
    if (!strcmp(a, "--connect"))
      o->connect = v;
    else if (!strcmp(a, "--name"))
      o->name = v;
    else if (!strcmp(a, "--model"))
      o->model = v;
    else if (!strcmp(a, "--slot") && !parse_u64(v, 0, UINT32_MAX - 1, &n))
      o->slot = (uint32_t)n, have_slot = 1;
    else if (!strcmp(a, "--input-dim") && !parse_u64(v, 2, 1 << 24, &n))
      o->input_dim = n;
    else if (!strcmp(a, "--classes") && !parse_u64(v, 2, 1 << 16, &n))
      o->classes = n;
    else if (!strcmp(a, "--rounds") && !parse_u64(v, 1, 1000000, &n))
      o->rounds = (uint32_t)n;
    else if (!strcmp(a, "--examples") && !parse_u64(v, 1, UINT64_C(1) << 40, &n))
      o->examples = n;
    else if (!strcmp(a, "--timeout")) {
      char *end;
      o->timeout = strtod(v, &end);
      if (*end || !(o->timeout > 0 && o->timeout < 86400)) return usage("bad --timeout");
    } else if (!strcmp(a, "--flood") && !parse_u64(v, 1, 10000000, &n)) {
      o->flood = (uint32_t)n;
    } else if (!strcmp(a, "--idle") && !parse_u64(v, 1, 10000, &n)) {
      o->idle = (uint32_t)n;
    } else if (!strcmp(a, "--spam")) {
      o->spam = v;
    } else if (!strcmp(a, "--count") && !parse_u64(v, 1, 100000000, &n)) {
      o->count = (uint32_t)n;
    } else if (!strcmp(a, "--mute") && !strcmp(v, "yes")) {
      o->mute = 1;
    } else if (!strcmp(a, "--bad-joins") &&
               (!strcmp(v, "all") || !strcmp(v, "prox") || !strcmp(v, "shape"))) {
      o->bad_joins = !strcmp(v, "all") ? 1 : !strcmp(v, "prox") ? 2 : 3;
    } else if (!strcmp(a, "--prox-mu")) {
      o->prox_mu = v;
    } else if (!strcmp(a, "--input-shape")) {
      o->input_shape = v;
    } else if (!strcmp(a, "--forbid")) {
      o->forbid = v;
    } else if (!strcmp(a, "--taken-slot") && !parse_u64(v, 0, UINT32_MAX - 1, &n)) {
      o->taken_slot = (uint32_t)n, o->have_taken = 1;
    } else if (!strcmp(a, "--conns") && !parse_u64(v, 1, 10000, &n)) {
      o->conns = (uint32_t)n;
    } else if (!strcmp(a, "--duration")) {
      char *end;
      o->duration = strtod(v, &end);
      if (*end || !(o->duration >= 0 && o->duration < 86400)) return usage("bad --duration");
    } else {
      fprintf(stderr, "fl_badpeer: bad flag or value: %s %s\n", a, v);
      return usage(NULL);
    }
  }
  if (o->flood || o->idle || o->spam || o->bad_joins) {
    if (!o->connect) return usage("--connect is required");
    if (!o->conns) o->conns = 50;
    if (o->spam && !o->count) return usage("--spam needs --count N");
    if (o->bad_joins == 2 && !o->prox_mu) return usage("--bad-joins prox needs --prox-mu MU");
    if (o->bad_joins == 3 && !o->input_shape)
      return usage("--bad-joins shape needs --input-shape CxHxW");
    return 0;
  }
  if (!o->connect || !o->name || !o->model || !have_slot || !o->input_dim || !o->classes)
    return usage("--connect, --name, --slot, --model, --input-dim and --classes are required");
  return 0;
}

int main(int argc, char **argv) {
  peer_t p;
  memset(&p, 0, sizeof p);
  if (parse_opts(argc, argv, &p.o)) return 2;
  if (p.o.flood) return run_flood(&p.o);
  if (p.o.idle) return run_idle(&p.o);
  if (p.o.spam || p.o.bad_joins) {
    /* One plain connection, control-message limits for the replies. */
    int linger = 1000;
    p.lim.max_message = 1 << 16;
    p.lim.max_tensors = 16;
    p.ctx = zmq_ctx_new();
    p.sock = p.ctx ? zmq_socket(p.ctx, ZMQ_DEALER) : NULL;
    int rc = 1;
    if (p.sock && !zmq_setsockopt(p.sock, ZMQ_LINGER, &linger, sizeof linger) &&
        !zmq_connect(p.sock, p.o.connect))
      rc = p.o.spam             ? run_spam(&p)
           : p.o.bad_joins == 2 ? run_prox_joins(&p)
           : p.o.bad_joins == 3 ? run_shape_joins(&p)
                                : run_bad_joins(&p);
    else
      fprintf(stderr, "fl_badpeer: connect %s: %s\n", p.o.connect, zmq_strerror(errno));
    if (p.sock) zmq_close(p.sock);
    if (p.ctx) zmq_ctx_term(p.ctx);
    return rc;
  }
  int status = 1;
  if (fl_model_parse(p.o.model, p.o.input_dim, p.o.classes, &p.m) != 0 ||
      fl_model_parse(p.o.model, p.o.input_dim - 1, p.o.classes, &p.bad_m) != 0) {
    fprintf(stderr, "fl_badpeer: --model: %s\n", fl_err_msg());
    return 2;
  }
  fl_wire_limits_for_model(&p.m, &p.lim);
  p.params = malloc(p.m.num_params * sizeof *p.params);
  p.nan_params = malloc(p.m.num_params * sizeof *p.nan_params);
  p.bad_params = malloc(p.bad_m.num_params * sizeof *p.bad_params);
  if (!p.params || !p.nan_params || !p.bad_params) {
    fprintf(stderr, "fl_badpeer: out of memory\n");
    goto out;
  }
  fl_model_init(&p.m, p.params, 1);
  memcpy(p.nan_params, p.params, p.m.num_params * sizeof *p.params);
  p.nan_params[p.m.num_params / 2] = NAN;
  fl_model_init(&p.bad_m, p.bad_params, 1);

  int linger = 1000, ivl = 100;
  p.ctx = zmq_ctx_new();
  p.sock = p.ctx ? zmq_socket(p.ctx, ZMQ_DEALER) : NULL;
  if (!p.sock || zmq_setsockopt(p.sock, ZMQ_LINGER, &linger, sizeof linger) ||
      zmq_setsockopt(p.sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl) ||
      zmq_socket_monitor(p.sock, MON_EP, ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED)) {
    fprintf(stderr, "fl_badpeer: socket: %s\n", zmq_strerror(errno));
    goto out;
  }
  p.mon = zmq_socket(p.ctx, ZMQ_PAIR);
  if (!p.mon || zmq_setsockopt(p.mon, ZMQ_LINGER, &linger, sizeof linger) ||
      zmq_connect(p.mon, MON_EP) || zmq_connect(p.sock, p.o.connect)) {
    fprintf(stderr, "fl_badpeer: connect %s: %s\n", p.o.connect, zmq_strerror(errno));
    goto out;
  }
  step("start", "model %s (%zu parameters), slot %u, %u round(s), timeout %.1f s", p.m.spec,
       p.m.num_params, p.o.slot, p.o.rounds, p.o.timeout);
  if (wait_event(&p, ZMQ_EVENT_HANDSHAKE_SUCCEEDED, now_s() + p.o.timeout) != 0) {
    step("connect", "FAIL: no connection to %s within %.1f s", p.o.connect, p.o.timeout);
    goto out;
  }
  step("connect", "ok: connected to %s", p.o.connect);
  if (!p.o.mute && (step_random(&p) || step_truncated_join(&p) || step_multipart(&p) ||
                    step_update_unjoined(&p) || step_oversize(&p)))
    goto out;
  if (step_join(&p) || step_rounds(&p)) goto out;
  step("g close", "closing the socket; never sent a valid update (%u heartbeats sent, %u answered)",
       p.hb_sent, p.hb_replies);
  status = 0;
out:
  if (p.mon) zmq_close(p.mon);
  if (p.sock) zmq_close(p.sock);
  if (p.ctx) zmq_ctx_term(p.ctx);
  free(p.params);
  free(p.nan_params);
  free(p.bad_params);
  if (status) step("exit", "FAIL (status %d)", status);
  return status;
}
