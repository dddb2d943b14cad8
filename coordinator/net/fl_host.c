/* fl_host: see fl_host.h. */
#include "fl_host.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>
#include <zmq.h>

#include "fl_admit.h"
#include "fl_clock.h"
#include "fl_error.h"
#include "fl_ratelog.h"
#include "fl_rng.h"
#include "fl_wire.h"

#define RID_MAX 256
#define TICK_MS 250
#define SEND_WINDOW 16    /* RoundStarts sent and not yet acknowledged */
#define ACK_TIMEOUT_S 2.0 /* an unacknowledged RoundStart stops counting after this */
#define DRAIN_MAX 256     /* messages handled per wake-up; the idle handle does the rest */
#define NOISY_MAX 20      /* log lines per reason per NOISY_WINDOW_S, the rest are counted */
#define NOISY_WINDOW_S 10.0
#define FD_RESERVE 64 /* descriptors kept for libzmq's own, files and logs */
#define STOP_WAIT_MIN                                                                              \
  10.0                   /* s: the longest wait for clients to hear the final Stop is the          \
                          * larger of this and 6 heartbeats */
#define STOP_GRACE_S 2.0 /* s without any open connection before exiting */
#define ZAP_DOMAIN "fedlr"

/* A client's connection, indexed by engine client id. */
typedef struct {
  uint8_t rid[RID_MAX]; /* ZeroMQ routing id of its current connection */
  size_t rid_len;       /* 0: no connection bound */
  int fd;               /* that connection's descriptor (ZMQ_SRCFD), -1 = unknown or closed */
  int alive;
  double last_seen;
  int awaiting_ack; /* a RoundStart sent, not yet acknowledged */
  double sent_at;
  int proven; /* heartbeat or update on the current connection since its Join: sampleable */
} peer_t;

struct fl_host {
  const fl_config_t *cfg;
  fl_run_t *run;
  const fl_engine_t *engine;
  void *zctx, *sock;
  int curve;
  fl_admit_t *admit;
  fl_ratelog_t *rl; /* every log line a peer can cause goes through it */
  uv_loop_t *loop;
  uv_poll_t poll, zap_poll, mon_poll;
  uv_timer_t tick, deadline;
  uv_signal_t sigint, sigterm;
  uv_idle_t more; /* runs while a drain stopped at its bound */
  peer_t *peers;
  size_t cap_peers;
  uint32_t *queue; /* sampled ids whose RoundStart is not sent yet */
  size_t queue_head, queue_len, queue_cap, in_flight;
  uint32_t run_id;
  uint8_t *busy_stop; /* encoded once: Stop{rejoin} for joins over the rate */
  size_t busy_stop_len;
  uint8_t *final_stop; /* encoded once: the Stop that ends the run, for every late peer */
  size_t final_stop_len;
  int stopping;   /* the run is over; waiting (up to stop_deadline) for peers to hear it */
  int closed;     /* the loop's handles are closing: nothing more is read */
  int loop_ready; /* every handle of the loop is initialized */
  double stop_t0, stop_quiet_since, stop_deadline;
};

/* ---- logs ---- */

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...) {
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "fedlr-coordinator: %s\n", line);
}

/* A line a peer caused: through the rate limiter (see fl_ratelog.h). */
#define plog(h, reason, ...) fl_ratelog_printf((h)->rl, (reason), fl_clock_now(), __VA_ARGS__)

/* A printable name for a routing id (hex), for logs about unknown peers. */
static const char *rid_hex(const uint8_t *rid, size_t len, char *buf, size_t cap) {
  size_t at = 0;
  for (size_t i = 0; i < len && at + 3 < cap; i++)
    at += (size_t)snprintf(buf + at, cap - at, "%02x", rid[i]);
  buf[at] = '\0';
  return buf;
}

static const char *client_label(const fl_host_t *h, uint32_t id, char *buf, size_t cap) {
  const char *name = fl_engine_client_name(h->engine, id);
  snprintf(buf, cap, "%s (id %u)", name ? name : "?", id);
  return buf;
}

/* ---- peers ---- */

static long find_peer(const fl_host_t *h, const uint8_t *rid, size_t len) {
  for (size_t i = 0; i < h->cap_peers; i++)
    if (h->peers[i].rid_len == len && memcmp(h->peers[i].rid, rid, len) == 0) return (long)i;
  return -1;
}

static int ensure_peers(fl_host_t *h, size_t n) {
  if (n <= h->cap_peers) return 0;
  size_t cap = h->cap_peers ? h->cap_peers : 64;
  while (cap < n)
    cap *= 2;
  peer_t *p = realloc(h->peers, cap * sizeof *p);
  if (!p) return FL_ENOMEM;
  memset(p + h->cap_peers, 0, (cap - h->cap_peers) * sizeof *p);
  for (size_t i = h->cap_peers; i < cap; i++)
    p[i].fd = -1;
  h->peers = p;
  h->cap_peers = cap;
  return 0;
}

/* Tells the run what the host knows of client `id`: alive, and sampleable
 * (alive and proven live on its current connection). */
static void tell_run(fl_host_t *h, uint32_t id) {
  peer_t *p = &h->peers[id];
  fl_run_client(h->run, id, p->alive, p->alive && p->proven);
}

/* Binds the connection on fd to client `id` (or unbinds it, id < 0): a
 * connection without a client is closed after --join-timeout. */
static void bind_conn(fl_host_t *h, int fd, int64_t id) {
  fl_conn_t *cn = fl_conns_get(fl_admit_conns(h->admit), fd);
  if (!cn) return;
  cn->client = id;
  cn->since = fl_clock_now();
}

/* ---- sending ---- */

static void free_buf(void *data, void *hint) {
  (void)hint;
  free(data);
}

/* Sends a malloc'd encoded message without copying it: ZeroMQ frees it
 * once written to the socket (a RoundStart is a copy of the model). Takes
 * ownership of buf in every case. Never blocks: a peer that is gone or
 * whose queue is full just misses the message (its liveness and the round
 * deadline deal with the consequences). */
static int send_owned(fl_host_t *h, const uint8_t *rid, size_t rid_len, uint8_t *buf, size_t len) {
  zmq_msg_t msg;
  if (zmq_msg_init_data(&msg, buf, len, free_buf, NULL) != 0) {
    free(buf);
    return -1;
  }
  if (zmq_send(h->sock, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_msg_send(&msg, h->sock, ZMQ_DONTWAIT) < 0) {
    /* A peer that does not read (its queue is full) or is gone: a flood of
     * those must not flood the log. */
    int e = errno;
    char hex[2 * RID_MAX + 1], who[2 * RID_MAX + 64];
    long pid = find_peer(h, rid, rid_len);
    if (pid >= 0)
      client_label(h, (uint32_t)pid, who, sizeof who);
    else
      snprintf(who, sizeof who, "peer %s", rid_hex(rid, rid_len, hex, sizeof hex));
    plog(h, FL_ADMIT_R_SEND_FAILED, "send to %s failed: %s", who, zmq_strerror(e));
    zmq_msg_close(&msg);
    return -1;
  }
  fl_run_account(h->run, len, 0);
  return 0;
}

static int send_env(fl_host_t *h, const uint8_t *rid, size_t rid_len, const Fedlr__Envelope *env) {
  uint8_t *buf;
  size_t len;
  if (fl_wire_encode(env, &buf, &len) != 0) return -1;
  return send_owned(h, rid, rid_len, buf, len);
}

/* Sends a copy of buf, its failure only counted: for answers to peers that
 * may be gone already (a flood). */
static void send_copy_quiet(fl_host_t *h, const uint8_t *rid, size_t rid_len, const uint8_t *buf,
                            size_t len) {
  if (!buf) return;
  if (zmq_send(h->sock, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_send(h->sock, buf, len, ZMQ_DONTWAIT) < 0) {
    fl_ratelog_count(h->rl, FL_ADMIT_R_SEND_FAILED, fl_clock_now());
    return;
  }
  fl_run_account(h->run, len, 0);
}

static void send_stop(fl_host_t *h, const uint8_t *rid, size_t rid_len, const char *reason,
                      int error, int rejoin) {
  Fedlr__Stop st = FEDLR__STOP__INIT;
  st.reason = (char *)reason;
  st.error = error;
  st.rejoin = rejoin;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_STOP;
  env.stop = &st;
  send_env(h, rid, rid_len, &env);
}

static void send_round_start(fl_host_t *h, uint32_t id) {
  peer_t *p = &h->peers[id];
  if (!p->rid_len) return;
  uint8_t *buf;
  size_t len;
  if (fl_engine_encode_round_start(h->engine, id, &buf, &len) != 0) {
    logf_("cannot encode round start: %s", fl_err_msg());
    return;
  }
  send_owned(h, p->rid, p->rid_len, buf, len);
}

/* Sends queued RoundStarts while fewer than SEND_WINDOW are unacknowledged;
 * ids no longer sampled (a closed round's) are skipped. */
static void pump_round_starts(fl_host_t *h) {
  while (h->in_flight < SEND_WINDOW && h->queue_head < h->queue_len) {
    uint32_t id = h->queue[h->queue_head++];
    peer_t *p = &h->peers[id];
    if (!p->alive || !p->rid_len || !fl_engine_is_sampled(h->engine, id)) continue;
    send_round_start(h, id);
    p->awaiting_ack = 1;
    p->sent_at = fl_clock_now();
    h->in_flight++;
  }
}

/* Client `id` acknowledged (or can no longer acknowledge) its RoundStart. */
static void release_ack(fl_host_t *h, uint32_t id) {
  if (!h->peers[id].awaiting_ack) return;
  h->peers[id].awaiting_ack = 0;
  h->in_flight--;
  pump_round_starts(h);
}

/* ---- the run's transport ---- */

static void tp_round_opened(void *ctx) {
  fl_host_t *h = ctx;
  h->queue_head = h->queue_len = h->in_flight = 0;
  for (size_t i = 0; i < h->cap_peers; i++)
    h->peers[i].awaiting_ack = 0;
}

static void tp_send_round_start(void *ctx, uint32_t id) {
  fl_host_t *h = ctx;
  if (id >= h->cap_peers) return;
  if (h->queue_len == h->queue_cap) {
    size_t cap = h->queue_cap ? 2 * h->queue_cap : 64;
    uint32_t *q = realloc(h->queue, cap * sizeof *q);
    if (!q) {
      logf_("out of memory queueing round starts: client %u misses round %u", id,
            fl_engine_round(h->engine));
      return;
    }
    h->queue = q;
    h->queue_cap = cap;
  }
  h->queue[h->queue_len++] = id;
  pump_round_starts(h);
}

static void on_deadline(uv_timer_t *t) {
  fl_host_t *h = t->data;
  fl_run_tick(h->run);
}

static void tp_wake_at(void *ctx, double at) {
  fl_host_t *h = ctx;
  double dt = at - fl_clock_now();
  uv_timer_start(&h->deadline, on_deadline, dt > 0 ? (uint64_t)ceil(dt * 1000.0) : 0, 0);
}

static void tp_log(void *ctx, int reason, const char *line) {
  fl_host_t *h = ctx;
  if (reason == FL_RUN_LOG_PEER)
    plog(h, FL_ADMIT_R_REJECTED, "%s", line);
  else
    logf_("%s", line);
}

static void check_stopped(fl_host_t *h, double now);

/* The run is over: tell every client, then wait (check_stopped) until they
 * have heard it. */
static void tp_finished(void *ctx, const char *why, int status) {
  fl_host_t *h = ctx;
  (void)status;
  double now = fl_clock_now();
  uv_timer_stop(&h->deadline);
  Fedlr__Stop st = FEDLR__STOP__INIT;
  st.reason = (char *)why;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_STOP;
  env.stop = &st;
  if (fl_wire_encode(&env, &h->final_stop, &h->final_stop_len) != 0) {
    logf_("cannot encode the final Stop: %s", fl_err_msg());
    h->final_stop = NULL;
  }
  for (size_t i = 0; i < h->cap_peers; i++)
    if (h->peers[i].rid_len)
      send_copy_quiet(h, h->peers[i].rid, h->peers[i].rid_len, h->final_stop, h->final_stop_len);
  fl_admit_set_ending(h->admit);
  fl_ratelog_tick(h->rl, now, 1);
  char summary[512];
  fl_admit_summary(h->admit, summary, sizeof summary);
  if (summary[0]) logf_("%s", summary);
  h->stopping = 1;
  h->stop_t0 = h->stop_quiet_since = now;
  h->stop_deadline = now + fmax(STOP_WAIT_MIN, 6.0 * h->cfg->heartbeat);
  check_stopped(h, now);
}

/* ---- receiving ---- */

/* Refuses a Join with a Stop{error} that says why (never naming another
 * client), and logs it. */
static void refuse_join(fl_host_t *h, const uint8_t *rid, size_t rid_len, const char *uid,
                        const char *name, const char *reason) {
  char hex[2 * RID_MAX + 1];
  plog(h, FL_ADMIT_R_JOIN_REFUSED, "refused a join as '%s' from %s%s%s: %s", name,
       rid_hex(rid, rid_len, hex, sizeof hex), uid ? ", key of " : "", uid ? uid : "", reason);
  send_stop(h, rid, rid_len, reason, 1, 0);
}

static void send_welcome(fl_host_t *h, const uint8_t *rid, size_t rid_len, uint32_t id) {
  const fl_model_spec_t *m = fl_engine_model(h->engine);
  char run_id[16];
  snprintf(run_id, sizeof run_id, "%08x", h->run_id);
  Fedlr__Welcome w = FEDLR__WELCOME__INIT;
  w.client_id = id;
  w.run_id = run_id;
  w.model = (char *)m->spec;
  w.input_dim = (uint32_t)m->dims[0];
  w.num_classes = (uint32_t)m->dims[m->num_layers];
  w.heartbeat_ms = (uint32_t)(h->cfg->heartbeat * 1000.0);
  w.rounds = h->cfg->rounds;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_WELCOME;
  env.welcome = &w;
  send_env(h, rid, rid_len, &env);
}

/* A Join on the connection (rid, fd); `uid` is its authenticated name
 * under CURVE, else NULL. */
static void handle_join(fl_host_t *h, const uint8_t *rid, size_t rid_len, int fd, const char *uid,
                        const Fedlr__Join *j) {
  uint32_t id;
  int rc;
  char reason[512];
  if (uid && strcmp(j->name, uid) != 0)
    /* Under CURVE the key is the identity: the name only has to agree. */
    rc = fl_err_set(FL_EPROTO,
                    "this client's key is '%s' in the coordinator's --allow-clients, but it "
                    "joined as '%s': run it with --name %s, or without --name",
                    uid, j->name, uid);
  else
    rc = fl_run_register(h->run, j->name, j->num_examples, j->want_slot, j->slot, &id);
  if (!rc && ensure_peers(h, (size_t)id + 1) != 0)
    rc = fl_err_set(FL_ENOMEM, "out of memory for client %u", id);
  if (rc) {
    snprintf(reason, sizeof reason, "%s", fl_err_msg());
    refuse_join(h, rid, rid_len, uid, j->name, reason);
    return;
  }
  /* Bind this connection to the client; a connection bound to another
   * client before is released. A new connection (a restart, or a takeover
   * by the same key) must prove itself live again before it is sampled. */
  long other = find_peer(h, rid, rid_len);
  if (other >= 0 && (uint32_t)other != id) {
    peer_t *o = &h->peers[other];
    o->rid_len = 0;
    o->proven = 0;
    o->fd = -1;
    tell_run(h, (uint32_t)other);
  }
  peer_t *p = &h->peers[id];
  int was_alive = p->alive;
  int same_conn = p->alive && p->rid_len == rid_len && memcmp(p->rid, rid, rid_len) == 0;
  if (!same_conn) {
    p->proven = 0;
    /* Its old connection, if still open, now carries no client: it is
     * closed after --join-timeout unless the client comes back on it. */
    if (p->fd >= 0 && p->fd != fd) bind_conn(h, p->fd, -1);
  }
  memcpy(p->rid, rid, rid_len);
  p->rid_len = rid_len;
  p->fd = fd;
  bind_conn(h, fd, id);
  p->alive = 1;
  p->last_seen = fl_clock_now();
  char label[300];
  plog(h, FL_ADMIT_R_JOIN, "client %s joined with %" PRIu64 " examples%s (%zu ready)",
       client_label(h, id, label, sizeof label), j->num_examples, was_alive ? " (rejoin)" : "",
       fl_engine_num_available(h->engine));
  send_welcome(h, rid, rid_len, id);
  /* A sampled client that reconnects mid-round gets its round again. */
  if (fl_engine_is_sampled(h->engine, id) && !fl_engine_has_reported(h->engine, id))
    send_round_start(h, id);
  tell_run(h, id);
}

/* A Join that failed to decode (unsupported protocol version, a bad name,
 * ...) is answered with a Stop that says why, like any refused Join; other
 * undecodable messages are only logged. */
static void handle_bad_message(fl_host_t *h, const uint8_t *rid, size_t rid_len, long pid,
                               const char *uid, const char *who, const uint8_t *buf, size_t len) {
  char err[512];
  snprintf(err, sizeof err, "%s", fl_err_msg());
  if (fl_wire_peek_kind(buf, len) != FEDLR__ENVELOPE__BODY_JOIN) {
    plog(h, FL_ADMIT_R_BAD_MESSAGE, "dropped a bad message from %s (%zu bytes): %s", who, len, err);
    return;
  }
  /* A bad Join costs a token like a good one, so refusals cannot be used
   * to make the coordinator reply faster than it admits. */
  if (pid < 0 && !fl_admit_join(h->admit, fl_clock_now())) {
    fl_ratelog_count(h->rl, FL_ADMIT_R_JOIN_RATE, fl_clock_now());
    send_copy_quiet(h, rid, rid_len, h->busy_stop, h->busy_stop_len);
    return;
  }
  char reason[600];
  snprintf(reason, sizeof reason, "join refused: %s", err);
  refuse_join(h, rid, rid_len, uid, "(undecodable)", reason);
}

/* What a message says of its known sender `pid`: alive (and proven, unless
 * it is a Join: a connection proves itself after its Welcome). */
static void seen(fl_host_t *h, long pid, int fd, int is_join, const char *who) {
  peer_t *p = &h->peers[pid];
  int was_alive = p->alive, was_ready = p->alive && p->proven;
  p->last_seen = fl_clock_now();
  if (fd >= 0) p->fd = fd;
  if (!p->alive) {
    p->alive = 1;
    plog(h, FL_ADMIT_R_PEER_STATE, "client %s is alive again", who);
  }
  if (!is_join) p->proven = 1;
  if (!was_alive || (!was_ready && p->proven)) tell_run(h, (uint32_t)pid);
}

static void handle_heartbeat(fl_host_t *h, const uint8_t *rid, size_t rid_len, long pid,
                             const char *who, const Fedlr__Heartbeat *hb) {
  if (pid < 0) {
    plog(h, FL_ADMIT_R_UNKNOWN_PEER, "a heartbeat from %s, which has not joined: asked to join",
         who);
    send_stop(h, rid, rid_len, "unknown client: join again", 0, 1);
    return;
  }
  if (hb->round == fl_engine_round(h->engine)) release_ack(h, (uint32_t)pid);
  Fedlr__Heartbeat reply_hb = FEDLR__HEARTBEAT__INIT;
  reply_hb.client_id = (uint32_t)pid;
  reply_hb.round = fl_engine_round(h->engine);
  Fedlr__Envelope reply = FEDLR__ENVELOPE__INIT;
  reply.body_case = FEDLR__ENVELOPE__BODY_HEARTBEAT;
  reply.heartbeat = &reply_hb;
  send_env(h, rid, rid_len, &reply);
}

/* Every message from a peer. `fd` is its connection's descriptor (from
 * ZMQ_SRCFD), `uid` the connection's authenticated name under CURVE. */
static void handle_message(fl_host_t *h, const uint8_t *rid, size_t rid_len, int fd,
                           const char *uid, const uint8_t *buf, size_t len) {
  fl_run_account(h->run, 0, len);
  fl_conn_t *cn = fl_conns_get(fl_admit_conns(h->admit), fd);
  if (cn) cn->messages++;
  if (h->stopping) {
    /* The run is over: whoever speaks now (a client that missed the Stop
     * and rejoins, say) hears it again. */
    send_copy_quiet(h, rid, rid_len, h->final_stop, h->final_stop_len);
    return;
  }
  long pid = find_peer(h, rid, rid_len);
  char who[2 * RID_MAX + FL_CONNS_ADDR_MAX + 64], hex[2 * RID_MAX + 1];
  if (pid >= 0)
    client_label(h, (uint32_t)pid, who, sizeof who);
  else
    snprintf(who, sizeof who, "unknown peer %s%s%s%s%s%s", rid_hex(rid, rid_len, hex, sizeof hex),
             cn && cn->addr[0] ? " at " : "", cn ? cn->addr : "", uid ? " (CURVE key of " : "",
             uid ? uid : "", uid ? ")" : "");
  if (h->curve && !uid) {
    plog(h, FL_ADMIT_R_BAD_MESSAGE,
         "dropped a message from %s: no authenticated User-Id (ZAP did not run?)", who);
    return;
  }
  Fedlr__Envelope *env = NULL;
  if (fl_wire_decode(buf, len, fl_engine_limits(h->engine), &env) != 0) {
    handle_bad_message(h, rid, rid_len, pid, uid, who, buf, len);
    return;
  }
  int is_join = env->body_case == FEDLR__ENVELOPE__BODY_JOIN;
  /* Under CURVE a connection bound to a client speaks for that client
   * only: its messages must carry the client's authenticated name. */
  const char *bound = pid >= 0 ? fl_engine_client_name(h->engine, (uint32_t)pid) : NULL;
  if (uid && pid >= 0 && !is_join && (!bound || strcmp(bound, uid) != 0)) {
    plog(h, FL_ADMIT_R_PEER_STATE,
         "dropped a message on the connection of %s: it is authenticated as '%s'", who, uid);
    fl_wire_free(&env);
    return;
  }
  if (pid >= 0) seen(h, pid, fd, is_join, who);
  switch (env->body_case) {
  case FEDLR__ENVELOPE__BODY_JOIN:
    /* Joins spend a token, except a client's rejoin on its own connection
     * (same name); over the rate they get a "busy" Stop{rejoin} and never
     * reach the run. */
    if ((!bound || strcmp(env->join->name, bound) != 0) &&
        !fl_admit_join(h->admit, fl_clock_now())) {
      plog(h, FL_ADMIT_R_JOIN_RATE,
           "join rate limit reached: refusing joins beyond --join-burst %u at --join-rate %g/s "
           "('%s' from %s)",
           h->cfg->join_burst, h->cfg->join_rate, env->join->name, who);
      send_copy_quiet(h, rid, rid_len, h->busy_stop, h->busy_stop_len);
      break;
    }
    handle_join(h, rid, rid_len, fd, uid, env->join);
    break;
  case FEDLR__ENVELOPE__BODY_HEARTBEAT:
    handle_heartbeat(h, rid, rid_len, pid, who, env->heartbeat);
    break;
  case FEDLR__ENVELOPE__BODY_UPDATE:
    if (pid < 0) {
      plog(h, FL_ADMIT_R_UNKNOWN_PEER,
           "dropped an update from %s: not joined (asked to join again)", who);
      send_stop(h, rid, rid_len, "unknown client: join again", 0, 1);
    } else {
      release_ack(h, (uint32_t)pid); /* an update also acknowledges its round start */
      fl_run_update(h->run, (uint32_t)pid, env->update);
    }
    break;
  default:
    plog(h, FL_ADMIT_R_WRONG_KIND, "dropped a message of kind %d from %s: clients may not send it",
         (int)env->body_case, who);
    break;
  }
  fl_wire_free(&env);
}

/* ZMQ_EVENTS of socket s (ZMQ_POLLIN, ZMQ_POLLOUT bits), -1 if it cannot be
 * read. */
static int sock_events(void *s) {
  int events = 0;
  size_t sz = sizeof events;
  return zmq_getsockopt(s, ZMQ_EVENTS, &events, &sz) == 0 ? events : -1;
}

/* Receives up to DRAIN_MAX messages. ZMQ_FD is edge-triggered: unless it
 * read until ZMQ_EVENTS no longer reports POLLIN, the loop must come back
 * by itself (returns 1: the idle handle does that). */
static int drain(fl_host_t *h) {
  static uint8_t rid[RID_MAX];
  for (int handled = 0;; handled++) {
    if (h->closed) return 0;
    int events = sock_events(h->sock);
    if (events < 0 || !(events & ZMQ_POLLIN)) return 0;
    if (handled >= DRAIN_MAX) return 1;
    int n = zmq_recv(h->sock, rid, sizeof rid, ZMQ_DONTWAIT);
    if (n < 0) return 0;
    size_t rid_len = (size_t)n > sizeof rid ? sizeof rid : (size_t)n;
    int more = 0;
    size_t sz = sizeof more;
    zmq_getsockopt(h->sock, ZMQ_RCVMORE, &more, &sz);
    if (!more) continue;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, h->sock, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&msg);
      continue;
    }
    zmq_getsockopt(h->sock, ZMQ_RCVMORE, &more, &sz);
    if (more) {
      /* Multipart: not ours. Drop every frame of it. */
      size_t frames = 1, bytes = zmq_msg_size(&msg);
      while (more) {
        if (zmq_msg_recv(&msg, h->sock, ZMQ_DONTWAIT) < 0) break;
        frames++;
        bytes += zmq_msg_size(&msg);
        zmq_getsockopt(h->sock, ZMQ_RCVMORE, &more, &sz);
      }
      char hex[2 * RID_MAX + 1];
      plog(h, FL_ADMIT_R_MULTIPART,
           "dropped a %zu-frame message (%zu bytes) from %s: messages are single-frame", frames,
           bytes, rid_hex(rid, rid_len, hex, sizeof hex));
      fl_run_account(h->run, 0, bytes);
    } else {
      /* The authenticated name and the connection's descriptor travel
       * with every frame. */
      const char *uid = h->curve ? zmq_msg_gets(&msg, "User-Id") : NULL;
      int fd = zmq_msg_get(&msg, ZMQ_SRCFD);
      handle_message(h, rid, rid_len, fd, uid, zmq_msg_data(&msg), zmq_msg_size(&msg));
    }
    zmq_msg_close(&msg);
  }
}

/* ---- the loop ---- */

static void on_close(uv_handle_t *handle) {
  (void)handle;
}

/* Closes every handle of the loop, so that uv_run() returns. */
static void end_loop(fl_host_t *h) {
  if (h->closed) return;
  h->closed = 1;
  uv_idle_stop(&h->more);
  uv_timer_stop(&h->tick);
  uv_timer_stop(&h->deadline);
  uv_signal_stop(&h->sigint);
  uv_signal_stop(&h->sigterm);
  uv_poll_stop(&h->poll);
  uv_poll_stop(&h->mon_poll);
  if (fl_admit_zap_socket(h->admit)) {
    uv_poll_stop(&h->zap_poll);
    uv_close((uv_handle_t *)&h->zap_poll, on_close);
  }
  uv_handle_t *handles[] = {(uv_handle_t *)&h->more,     (uv_handle_t *)&h->tick,
                            (uv_handle_t *)&h->deadline, (uv_handle_t *)&h->sigint,
                            (uv_handle_t *)&h->sigterm,  (uv_handle_t *)&h->poll,
                            (uv_handle_t *)&h->mon_poll};
  for (size_t i = 0; i < sizeof handles / sizeof handles[0]; i++)
    uv_close(handles[i], on_close);
}

/* After the run ended, the coordinator stays until every peer has heard it
 * and left: no connection has been open for STOP_GRACE_S (a client that
 * missed the Stop because it was replacing its connection comes back on a
 * new one within that time, and every message is answered with the Stop
 * meanwhile: handle_message); or until the wait is up (a peer that keeps a
 * connection open cannot keep the coordinator). Then the loop ends. */
static void check_stopped(fl_host_t *h, double now) {
  size_t open = fl_conns_open(fl_admit_conns(h->admit));
  if (open) h->stop_quiet_since = now;
  if (!open && now - h->stop_quiet_since >= STOP_GRACE_S) {
    end_loop(h);
  } else if (now >= h->stop_deadline) {
    if (open)
      logf_("%zu connection(s) still open %.0f s after the end of the run: exiting anyway", open,
            now - h->stop_t0);
    end_loop(h);
  }
}

/* The ZAP handler failed: without it libzmq would admit any client. The
 * run ends at once, without waiting for the clients. */
static void fatal(fl_host_t *h) {
  char msg[600];
  snprintf(msg, sizeof msg, "fatal: %s; stopping, since without it libzmq would admit any client",
           fl_err_msg());
  fl_run_stop(h->run, msg, FL_RUN_FAILED);
  end_loop(h);
}

static void on_more(uv_idle_t *handle);

/* Serves admission (ZAP, monitor) and the ROUTER, each up to its bound;
 * while any stopped at its bound, the idle handle brings the loop back
 * (without blocking, but after the timers and other I/O had their turn). */
static void pump(fl_host_t *h) {
  if (h->closed) return;
  int more = fl_admit_pump(h->admit, fl_clock_now());
  if (more < 0) {
    fatal(h);
    return;
  }
  more |= drain(h);
  if (h->closed) return;
  if (more)
    uv_idle_start(&h->more, on_more);
  else
    uv_idle_stop(&h->more);
}

static void on_more(uv_idle_t *handle) {
  pump(handle->data);
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  (void)status;
  (void)events;
  pump(handle->data);
}

static void on_tick(uv_timer_t *t) {
  fl_host_t *h = t->data;
  double now = fl_clock_now();
  for (size_t i = 0; i < h->cap_peers && !h->stopping; i++) {
    peer_t *p = &h->peers[i];
    if (p->alive && now - p->last_seen > h->cfg->client_timeout) {
      char label[300];
      p->alive = 0;
      release_ack(h, (uint32_t)i);
      plog(h, FL_ADMIT_R_PEER_STATE, "client %s is dead: silent for %.1f s",
           client_label(h, (uint32_t)i, label, sizeof label), now - p->last_seen);
      tell_run(h, (uint32_t)i);
    }
  }
  for (size_t i = 0; i < h->cap_peers; i++)
    if (h->peers[i].awaiting_ack && now - h->peers[i].sent_at > ACK_TIMEOUT_S)
      release_ack(h, (uint32_t)i); /* an old client, or a lost ack: do not stall the window */
  fl_run_tick(h->run);
  fl_admit_tick(h->admit, now);
  fl_ratelog_tick(h->rl, now, 0);
  if (h->stopping) check_stopped(h, now);
  pump(h); /* sends above may have changed ZMQ_EVENTS */
}

static void on_signal(uv_signal_t *s, int signum) {
  fl_host_t *h = s->data;
  if (fl_run_done(h->run)) { /* a second signal: no more waiting for the clients */
    end_loop(h);
    return;
  }
  char why[FL_PATH_MAX + 128];
  snprintf(why, sizeof why, "interrupted by signal %d after %u rounds; continue with --resume %s",
           signum, fl_engine_rounds_done(h->engine), h->cfg->out[0] ? h->cfg->out : "DIR");
  fl_run_stop(h->run, why, FL_RUN_INTERRUPTED);
}

/* A connection closed: a client whose connection it was holds none now;
 * the end of the run may be delivered. */
static void on_conn_closed(void *ctx, int fd) {
  fl_host_t *h = ctx;
  for (size_t i = 0; i < h->cap_peers; i++)
    if (h->peers[i].fd == fd) h->peers[i].fd = -1;
  if (h->stopping) check_stopped(h, fl_clock_now());
}

/* ---- setup ---- */

/* The most connections this process can hold: --max-connections (or 2 x
 * --clients + 64), within the open-file limit, which is first raised to its
 * hard maximum: our bound must bite before the kernel's does. */
static size_t connection_limit(const fl_config_t *cfg) {
  size_t want = cfg->max_connections ? cfg->max_connections : 2 * (size_t)cfg->clients + 64;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return want;
  if (rl.rlim_cur < rl.rlim_max) {
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) rl.rlim_cur = old;
  }
  size_t fds = rl.rlim_cur == RLIM_INFINITY ? SIZE_MAX : (size_t)rl.rlim_cur;
  size_t room = fds > 2 * FD_RESERVE ? fds - FD_RESERVE : fds / 2;
  if (want > room) {
    logf_("--max-connections %zu exceeds what the open-file limit (ulimit -n %zu) allows: "
          "using %zu",
          want, fds, room);
    want = room;
  }
  return want;
}

/* The ROUTER, watched by admission, with CURVE when keys are given (kp is
 * wiped). */
static int setup_socket(fl_host_t *h, fl_keypair_t *kp) {
  int64_t maxmsg = (int64_t)fl_engine_limits(h->engine)->max_message;
  int linger = 2000, mandatory = 1, rc;
  int hs_ivl = (int)(h->cfg->handshake_timeout * 1000.0);
  h->sock = zmq_socket(h->zctx, ZMQ_ROUTER);
  if (!h->sock) return fl_err_set(FL_ENOMEM, "zmq_socket: %s", zmq_strerror(errno));
  if (zmq_setsockopt(h->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
      zmq_setsockopt(h->sock, ZMQ_LINGER, &linger, sizeof linger) ||
      zmq_setsockopt(h->sock, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory) ||
      zmq_setsockopt(h->sock, ZMQ_HANDSHAKE_IVL, &hs_ivl, sizeof hs_ivl))
    return fl_err_set(FL_EINVAL, "zmq_setsockopt: %s", zmq_strerror(errno));
  if (h->curve) {
    uint8_t secret[FL_KEY_BYTES];
    int one = 1;
    rc = fl_keys_decode(kp->secret_z85, secret);
    if (!rc && (zmq_setsockopt(h->sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
                zmq_setsockopt(h->sock, ZMQ_CURVE_SECRETKEY, secret, sizeof secret) ||
                zmq_setsockopt(h->sock, ZMQ_ZAP_DOMAIN, ZAP_DOMAIN, strlen(ZAP_DOMAIN))))
      rc = fl_err_set(FL_EINVAL, "CURVE socket options: %s", zmq_strerror(errno));
    explicit_bzero(secret, sizeof secret);
    if (rc) return rc;
  }
  if ((rc = fl_admit_watch(h->admit, h->sock))) return rc;
  if (zmq_bind(h->sock, h->cfg->bind) != 0)
    return fl_err_set(FL_EINVAL, "cannot bind %s: %s", h->cfg->bind, zmq_strerror(errno));
  return 0;
}

/* Starts polling zsock's ZMQ_FD on the loop. */
static int start_poll(fl_host_t *h, void *zsock, uv_poll_t *handle) {
  int fd, rc;
  size_t sz = sizeof fd;
  if (zmq_getsockopt(zsock, ZMQ_FD, &fd, &sz) != 0)
    return fl_err_set(FL_EIO, "ZMQ_FD: %s", zmq_strerror(errno));
  handle->data = h;
  if ((rc = uv_poll_init(h->loop, handle, fd)) != 0 ||
      (rc = uv_poll_start(handle, UV_READABLE, on_poll)) != 0)
    return fl_err_set(FL_EIO, "uv_poll: %s", uv_strerror(rc));
  return 0;
}

/* The event loop's handles: the sockets' polls, the tick, the deadline,
 * the idle handle and the signals. */
static int setup_loop(fl_host_t *h) {
  int rc;
  h->loop = uv_default_loop();
  if (!h->loop) return fl_err_set(FL_ENOMEM, "cannot create the event loop");
  void *zap = fl_admit_zap_socket(h->admit);
  if (zap && (rc = start_poll(h, zap, &h->zap_poll))) return rc;
  if ((rc = start_poll(h, fl_admit_monitor_socket(h->admit), &h->mon_poll)) ||
      (rc = start_poll(h, h->sock, &h->poll)))
    return rc;
  h->more.data = h->tick.data = h->deadline.data = h->sigint.data = h->sigterm.data = h;
  if ((rc = uv_idle_init(h->loop, &h->more)) || (rc = uv_timer_init(h->loop, &h->tick)) ||
      (rc = uv_timer_init(h->loop, &h->deadline)) || (rc = uv_signal_init(h->loop, &h->sigint)) ||
      (rc = uv_signal_init(h->loop, &h->sigterm)) ||
      (rc = uv_timer_start(&h->tick, on_tick, TICK_MS, TICK_MS)) ||
      (rc = uv_signal_start(&h->sigint, on_signal, SIGINT)) ||
      (rc = uv_signal_start(&h->sigterm, on_signal, SIGTERM)))
    return fl_err_set(FL_EIO, "event loop: %s", uv_strerror(rc));
  return 0;
}

/* The Stop{rejoin} for joins over the rate limit, encoded once. */
static int make_busy_stop(fl_host_t *h) {
  Fedlr__Stop st = FEDLR__STOP__INIT;
  st.reason = "busy: too many joins at once, join again later";
  st.rejoin = 1;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_STOP;
  env.stop = &st;
  return fl_wire_encode(&env, &h->busy_stop, &h->busy_stop_len);
}

fl_host_t *fl_host_new(const fl_host_config_t *hc, fl_run_t *run, int *err) {
  int rc = FL_ENOMEM;
  fl_host_t *h = calloc(1, sizeof *h);
  if (!h) goto fail;
  h->cfg = hc->cfg;
  h->run = run;
  h->engine = fl_run_engine(run);
  h->curve = hc->allow != NULL;
  h->rl = fl_ratelog_new(stderr, "fedlr-coordinator: ", fl_admit_reasons, FL_ADMIT_R_NUM,
                         NOISY_WINDOW_S, NOISY_MAX);
  if (!h->rl || (rc = make_busy_stop(h))) goto fail;
  if (!(h->zctx = zmq_ctx_new())) {
    rc = fl_err_set(FL_ENOMEM, "zmq_ctx_new: %s", zmq_strerror(errno));
    goto fail;
  }
  fl_admit_config_t ac = {.allow = hc->allow,
                          .join_rate = hc->cfg->join_rate,
                          .join_burst = hc->cfg->join_burst,
                          .join_timeout = hc->cfg->join_timeout,
                          .max_connections = connection_limit(hc->cfg),
                          .handshake_timeout = hc->cfg->handshake_timeout,
                          .max_message = fl_engine_limits(h->engine)->max_message,
                          .log = h->rl,
                          .closed = on_conn_closed,
                          .ctx = h};
  if (!(h->admit = fl_admit_new(&ac, h->zctx, &rc))) goto fail;
  if ((rc = setup_socket(h, hc->keys))) goto fail;
  h->run_id = (uint32_t)fl_rng_derive(hc->cfg->seed, 77, (uint64_t)time(NULL), (uint64_t)getpid());
  fl_run_transport_t tp = {.ctx = h,
                           .round_opened = tp_round_opened,
                           .send_round_start = tp_send_round_start,
                           .wake_at = tp_wake_at,
                           .finished = tp_finished,
                           .log = tp_log};
  fl_run_set_transport(run, &tp);
  if ((rc = setup_loop(h))) goto fail;
  h->loop_ready = 1;
  if (hc->keys) explicit_bzero(hc->keys, sizeof *hc->keys);
  return h;
fail:
  if (hc->keys) explicit_bzero(hc->keys, sizeof *hc->keys);
  if (rc == FL_ENOMEM && !fl_err_msg()[0]) fl_err_set(FL_ENOMEM, "out of memory");
  if (err) *err = rc;
  fl_host_destroy(&h);
  return NULL;
}

int fl_host_run(fl_host_t *h) {
  fl_run_start(h->run);
  uv_run(h->loop, UV_RUN_DEFAULT);
  return fl_run_status(h->run);
}

void fl_host_destroy(fl_host_t **ph) {
  fl_host_t *h = ph ? *ph : NULL;
  if (!h) return;
  if (h->loop_ready) {
    end_loop(h);
    uv_run(h->loop, UV_RUN_DEFAULT); /* let the close callbacks run */
    uv_loop_close(h->loop);
  }
  fl_admit_destroy(&h->admit);
  if (h->sock) zmq_close(h->sock);
  if (h->zctx) zmq_ctx_term(h->zctx);
  fl_ratelog_destroy(&h->rl);
  free(h->busy_stop);
  free(h->final_stop);
  free(h->peers);
  free(h->queue);
  free(h);
  *ph = NULL;
}
