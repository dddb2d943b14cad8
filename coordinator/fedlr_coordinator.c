/* fedlr-coordinator: the round engine served over ZeroMQ.
 *
 * One ROUTER socket, driven by a libuv loop: the socket's ZMQ_FD is polled
 * with uv_poll (edge-triggered: after every wake-up and every send we drain
 * while ZMQ_EVENTS says POLLIN), a 250 ms tick checks client liveness, a
 * one-shot timer is the round deadline, and SIGINT/SIGTERM end the run
 * gracefully (checkpoint written, clients told to stop).
 *
 * Round policy. A round starts when at least --min-clients clients are
 * alive (the first round of this process: --start-clients, if larger, e.g.
 * the whole federation); it samples max(ceil(C*A), --min-clients) of the A
 * live clients. It closes as soon as every sampled client has reported or died; or
 * at the deadline (--round-timeout) if the reports reach the quorum
 * (--quorum of the sampled clients), the late ones being dropped; otherwise
 * the round is abandoned and run again with a fresh sample of live clients
 * (logged). With all clients healthy, every round closes with all updates,
 * which is what makes a networked run bit-identical to fedlr-sim.
 *
 * Input never hurts the coordinator: single-frame messages only,
 * ZMQ_MAXMSGSIZE from the model size, every message decoded by the bounded
 * codec and validated by the engine; a bad message is logged with its sender
 * and reason and dropped.
 *
 * CurveZMQ (--curve-secret, --allow-clients). The ROUTER is a CURVE server
 * and a ZAP handler (a REP socket on inproc://zeromq.zap.01, served by this
 * loop) is bound before the ROUTER binds, because libzmq admits every
 * client when no handler is there. It admits the keys of the allowlist with
 * User-Id = the client's name and refuses the rest (logged with the peer's
 * address and key). A client is its authenticated name: its Join must carry
 * that name (or is refused), and every message on a connection bound to a
 * client must carry that client's User-Id, else it is dropped. A new
 * connection with the same key takes the client over (a restart). A socket
 * monitor logs failed handshakes (plaintext clients, wrong keys, time-outs:
 * ZMQ_HANDSHAKE_IVL = --handshake-timeout, for plaintext runs too).
 *
 * Limits. At most --clients clients; frames up to ZMQ_MAXMSGSIZE =
 * 4 x parameters + 64 KiB. Joins from connections not yet bound to a client
 * pass a token bucket (--join-rate per second, --join-burst at once); the
 * others get a "busy, retry" Stop without reaching the engine. At most
 * DRAIN_MAX messages are handled per wake-up (an idle handle brings the loop
 * back for the rest, ZMQ_FD being edge-triggered), so timers and updates
 * progress under a flood. A joined client is sampled only once it has
 * proven itself live (a heartbeat or update after its Welcome), so
 * fire-and-forget Joins are never sampled. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>
#include <zmq.h>

#include "fl_blas.h"
#include "fl_config.h"
#include "fl_conns.h"
#include "fl_data.h"
#include "fl_checkpoint.h"
#include "fl_engine.h"
#include "fl_error.h"
#include "fl_file.h"
#include "fl_keys.h"
#include "fl_metrics.h"
#include "fl_outputs.h"
#include "fl_ratelog.h"
#include "fl_rng.h"
#include "fl_safetensors.h"
#include "fl_wire.h"
#include "fl_zmon.h"

#define RID_MAX 256
#define TICK_MS 250
/* RoundStart messages handed to ZeroMQ but not yet acknowledged by their
 * client (a client heartbeats as soon as it receives one). Each is a copy of
 * the model: without a window, a round sampling 100 clients would queue 100
 * model copies in ZeroMQ at once, O(clients x model) memory. */
#define SEND_WINDOW 16
#define ACK_TIMEOUT_S 2.0
#define EXIT_INTERRUPTED 3
#define DRAIN_MAX 256    /* messages handled per wake-up; the idle handle does the rest */
#define ZAP_DRAIN_MAX 64 /* ZAP requests per wake-up */
#define NOISY_MAX 20     /* log lines per reason per NOISY_WINDOW_S, the rest are counted */
#define NOISY_WINDOW_S 10.0
#define WAIT_LOG_S 30.0 /* while no round can start, say who is awaited this often */
#define FD_RESERVE 64   /* descriptors kept for libzmq's own, files and logs */
#define STOP_WAIT_MIN                                                                              \
  10.0                   /* s: the longest wait for clients to hear the final Stop is the          \
                          * larger of this and 6 heartbeats */
#define STOP_GRACE_S 2.0 /* s without any open connection before exiting */
#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_DOMAIN "fedlr"
#define MON_ENDPOINT "inproc://fedlr-coordinator-monitor"

/* Why a peer made us write a log line: each reason has its own budget of
 * NOISY_MAX lines per NOISY_WINDOW_S (fl_ratelog). */
enum {
  R_JOIN,         /* a client joined or rejoined */
  R_JOIN_REFUSED, /* a Join refused (name, version, slot, full) */
  R_JOIN_RATE,    /* Joins over --join-rate */
  R_BAD_MESSAGE,  /* undecodable */
  R_MULTIPART,    /* more than one frame */
  R_WRONG_KIND,   /* a message only the coordinator sends */
  R_UNKNOWN_PEER, /* a heartbeat or update from a peer that has not joined */
  R_REJECTED,     /* an update the engine rejected */
  R_SEND_FAILED,  /* a send that ZeroMQ refused (peer gone or not reading) */
  R_HANDSHAKE,    /* ZAP refusals and failed handshakes */
  R_CONNECTION,   /* connections closed: idle, over the limit, by the peer */
  R_PEER_STATE,   /* a client alive again, a message on another client's key */
  R_NUM
};
static const char *const reason_names[R_NUM] = {"client joined",
                                                "join refused",
                                                "join over the rate",
                                                "undecodable message",
                                                "multipart message",
                                                "wrong-direction message",
                                                "message from an unknown peer",
                                                "rejected update",
                                                "failed send",
                                                "failed handshake",
                                                "connection closed",
                                                "client state"};

/* A connected client, indexed by engine client id. */
typedef struct {
  uint8_t rid[RID_MAX]; /* ZeroMQ routing id of its current connection */
  size_t rid_len;       /* 0: no connection bound */
  int fd;               /* that connection's descriptor (ZMQ_SRCFD), -1 = unknown or closed */
  int alive;
  double last_seen;
  uint32_t rounds;  /* rounds it contributed an update to */
  int awaiting_ack; /* a RoundStart sent, not yet acknowledged */
  double sent_at;
  int proven; /* heartbeat or update on the current connection since its Join: sampleable */
} peer_t;

typedef struct {
  fl_config_t cfg;
  fl_engine_config_t ec;
  fl_engine_t *engine;
  fl_metrics_t *metrics;
  fl_dataset_t *test;
  void *zctx, *sock;
  uv_loop_t *loop;
  uv_poll_t poll;
  uv_timer_t tick, deadline;
  uv_signal_t sigint, sigterm;
  peer_t *peers;
  size_t cap_peers;
  int round_open;
  int started; /* this process has started a round */
  double run_t0, round_t0;
  uint64_t bytes_in, bytes_out; /* this round */
  uint32_t *send_queue;         /* sampled ids whose RoundStart is not sent yet */
  size_t queue_head, queue_len, in_flight;
  uint32_t run_id;
  char ckpt_path[FL_PATH_MAX + 32];
  uint32_t ckpt_failed; /* checkpoints failed in a row (logged at the first and the last) */
  int done;             /* the run is over: no more rounds; the loop ends when `stopping` does */
  int stopping;         /* the run is over; waiting (up to stop_deadline) for peers to hear it */
  double stop_t0, stop_quiet_since;
  int closed; /* the loop's handles are closing: nothing more is read */
  double stop_deadline;
  uint8_t *final_stop; /* encoded once: the Stop that ends the run, for every late peer */
  size_t final_stop_len;
  int exit_code;
  double wait_since, wait_logged; /* since when no round could start; last "awaited" line */
  /* CurveZMQ */
  int curve;
  fl_allowlist_t *allow;
  void *zap, *mon; /* ZAP handler (REP), monitor of the ROUTER (PAIR) */
  uv_poll_t zap_poll, mon_poll;
  fl_conns_t *conns;        /* open connections, by fd (from the monitor) */
  size_t max_conns;         /* --max-connections, or its default, within the open-file limit */
  uint32_t hs_failed_event; /* the last HANDSHAKE_FAILED_* event, for the next DISCONNECTED */
  uint32_t hs_failed_value;
  /* limits */
  uv_idle_t more; /* runs while a drain stopped at its bound */
  double join_tokens, join_refill_t;
  uint64_t joins_refused, joins_refused_window, zap_refused, hs_failed;
  uint8_t *busy_stop; /* encoded once: Stop{rejoin} for joins over the rate */
  size_t busy_stop_len;
  fl_ratelog_t *rl; /* every log line a peer can cause goes through it */
  uint64_t conns_closed_idle, conns_closed_over;
} coord_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "fedlr-coordinator: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}

/* A printable name for a routing id (hex), for logs about unknown peers. */
static const char *rid_hex(const uint8_t *rid, size_t len, char *buf, size_t cap) {
  size_t at = 0;
  for (size_t i = 0; i < len && at + 3 < cap; i++)
    at += (size_t)snprintf(buf + at, cap - at, "%02x", rid[i]);
  buf[at] = '\0';
  return buf;
}

static long find_peer(const coord_t *c, const uint8_t *rid, size_t len) {
  for (size_t i = 0; i < c->cap_peers; i++)
    if (c->peers[i].rid_len == len && memcmp(c->peers[i].rid, rid, len) == 0) return (long)i;
  return -1;
}

/* Grows *arr (of *cap elements of `size` bytes, new ones zeroed) to hold
 * n, doubling from `first`. */
static int grow_zeroed(void **arr, size_t *cap, size_t n, size_t size, size_t first) {
  if (n <= *cap) return 0;
  size_t c = *cap ? *cap : first;
  while (c < n)
    c *= 2;
  char *p = realloc(*arr, c * size);
  if (!p) return FL_ENOMEM;
  memset(p + *cap * size, 0, (c - *cap) * size);
  *arr = p;
  *cap = c;
  return 0;
}

static int ensure_peers(coord_t *c, size_t n) {
  size_t old = c->cap_peers;
  if (grow_zeroed((void **)&c->peers, &c->cap_peers, n, sizeof *c->peers, 64)) return FL_ENOMEM;
  for (size_t i = old; i < c->cap_peers; i++)
    c->peers[i].fd = -1;
  return 0;
}

static const char *client_label(const coord_t *c, uint32_t id, char *buf, size_t cap) {
  const char *name = fl_engine_client_name(c->engine, id);
  snprintf(buf, cap, "%s (id %u)", name ? name : "?", id);
  return buf;
}

/* A line a peer caused: through the rate limiter (see fl_ratelog.h). */
#define plog(c, reason, ...) fl_ratelog_printf((c)->rl, (reason), now_s(), __VA_ARGS__)

/* A token bucket: --join-burst tokens, refilled at --join-rate per second. */
static int join_admit(coord_t *c, double now) {
  c->join_tokens += (now - c->join_refill_t) * c->cfg.join_rate;
  if (c->join_tokens > c->cfg.join_burst) c->join_tokens = c->cfg.join_burst;
  c->join_refill_t = now;
  if (c->join_tokens < 1.0) return 0;
  c->join_tokens -= 1.0;
  return 1;
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
static int send_owned(coord_t *c, const uint8_t *rid, size_t rid_len, uint8_t *buf, size_t len) {
  zmq_msg_t msg;
  if (zmq_msg_init_data(&msg, buf, len, free_buf, NULL) != 0) {
    free(buf);
    return -1;
  }
  if (zmq_send(c->sock, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_msg_send(&msg, c->sock, ZMQ_DONTWAIT) < 0) {
    /* A peer that does not read (its queue is full) or is gone: a flood of
     * those must not flood the log. */
    int e = errno;
    char hex[2 * RID_MAX + 1];
    long pid = find_peer(c, rid, rid_len);
    char who[2 * RID_MAX + 64];
    if (pid >= 0)
      client_label(c, (uint32_t)pid, who, sizeof who);
    else
      snprintf(who, sizeof who, "peer %s", rid_hex(rid, rid_len, hex, sizeof hex));
    plog(c, R_SEND_FAILED, "send to %s failed: %s", who, zmq_strerror(e));
    zmq_msg_close(&msg);
    return -1;
  }
  c->bytes_out += len;
  return 0;
}

static int send_env(coord_t *c, const uint8_t *rid, size_t rid_len, const Fedlr__Envelope *env) {
  uint8_t *buf;
  size_t len;
  if (fl_wire_encode(env, &buf, &len) != 0) return -1;
  return send_owned(c, rid, rid_len, buf, len);
}

/* Sends a copy of buf, silently: for refusals of peers that may be gone
 * already (a flood), whose failed sends are not worth a log line. */
static void send_copy_quiet(coord_t *c, const uint8_t *rid, size_t rid_len, const uint8_t *buf,
                            size_t len) {
  if (zmq_send(c->sock, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_send(c->sock, buf, len, ZMQ_DONTWAIT) < 0) {
    fl_ratelog_count(c->rl, R_SEND_FAILED, now_s());
    return;
  }
  c->bytes_out += len;
}

static void send_stop(coord_t *c, const uint8_t *rid, size_t rid_len, const char *reason, int error,
                      int rejoin) {
  Fedlr__Stop st = FEDLR__STOP__INIT;
  st.reason = (char *)reason;
  st.error = error;
  st.rejoin = rejoin;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_STOP;
  env.stop = &st;
  send_env(c, rid, rid_len, &env);
}

static void send_round_start(coord_t *c, uint32_t id) {
  peer_t *p = &c->peers[id];
  if (!p->rid_len) return;
  uint8_t *buf;
  size_t len;
  if (fl_engine_encode_round_start(c->engine, id, &buf, &len) != 0) {
    logf_("cannot encode round start: %s", fl_err_msg());
    return;
  }
  send_owned(c, p->rid, p->rid_len, buf, len);
}

/* Sends queued RoundStarts while fewer than SEND_WINDOW are unacknowledged. */
static void pump_round_starts(coord_t *c) {
  while (c->round_open && c->in_flight < SEND_WINDOW && c->queue_head < c->queue_len) {
    uint32_t id = c->send_queue[c->queue_head++];
    peer_t *p = &c->peers[id];
    if (!p->alive || !p->rid_len) continue;
    send_round_start(c, id);
    p->awaiting_ack = 1;
    p->sent_at = now_s();
    c->in_flight++;
  }
}

/* Client `id` acknowledged (or can no longer acknowledge) its RoundStart. */
static void release_ack(coord_t *c, uint32_t id) {
  if (!c->peers[id].awaiting_ack) return;
  c->peers[id].awaiting_ack = 0;
  c->in_flight--;
  pump_round_starts(c);
}

/* ---- rounds ---- */

static void finish_run(coord_t *c, const char *why, int status);
static void on_deadline(uv_timer_t *t);

/* A bounded string builder for log lines: appends until full, never more. */
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

/* Appends `label` and the first 10 client ids (with names) that `pick`
 * selects, if any. */
static void list_clients(const coord_t *c, int (*pick)(const coord_t *, uint32_t), sbuf_t *b,
                         const char *label) {
  size_t n = 0;
  for (uint32_t id = 0; id < c->cfg.clients; id++) {
    if (!pick(c, id)) continue;
    if (n++ == 0) sb_printf(b, "%s", label);
    if (n > 10) continue;
    const char *name = fl_engine_client_name(c->engine, id);
    sb_printf(b, "%s%u", n > 1 ? ", " : "", id);
    if (name) sb_printf(b, " (%s)", name);
  }
  if (n > 10) sb_printf(b, ", ... (%zu in all)", n);
}
static int pick_dead(const coord_t *c, uint32_t id) {
  return fl_engine_client_name(c->engine, id) && (id >= c->cap_peers || !c->peers[id].alive);
}
static int pick_unproven(const coord_t *c, uint32_t id) {
  return fl_engine_client_name(c->engine, id) && id < c->cap_peers && c->peers[id].alive &&
         !c->peers[id].proven;
}
static int pick_missing(const coord_t *c, uint32_t id) {
  return !fl_engine_client_name(c->engine, id);
}

/* Why no round can start now, naming who is awaited. */
static void describe_wait(const coord_t *c, char *buf, size_t cap) {
  uint32_t need = c->cfg.min_clients;
  const char *flag = "--min-clients";
  if (!c->started && c->cfg.start_clients > need) {
    need = c->cfg.start_clients;
    flag = "--start-clients";
  }
  sbuf_t b = {buf, cap, 0};
  buf[0] = '\0';
  sb_printf(&b, "%zu of the %u clients needed (%s) are ready", fl_engine_num_available(c->engine),
            need, flag);
  list_clients(c, pick_dead, &b, "; dead: ");
  list_clients(c, pick_unproven, &b, "; joined, no heartbeat yet: ");
  list_clients(c, pick_missing, &b, "; not joined: ids ");
}

/* Starts a round if none is open and enough clients are ready; arms its
 * deadline. A round the engine refuses to start (its weights or rate are
 * not trainable) ends the run with that error: retrying could not help. */
static void maybe_start_round(coord_t *c) {
  if (c->done || c->round_open || fl_engine_finished(c->engine)) return;
  uint32_t need = c->cfg.min_clients;
  if (!c->started && c->cfg.start_clients > need) need = c->cfg.start_clients;
  if (fl_engine_num_available(c->engine) < need) return;
  c->started = 1;
  char why[1024];
  if (fl_engine_begin_round(c->engine) != 0) {
    snprintf(why, sizeof why, "round %u cannot start: %s", fl_engine_rounds_done(c->engine) + 1,
             fl_err_msg());
    finish_run(c, why, 1);
    return;
  }
  const uint32_t *ids;
  size_t m = fl_engine_sampled(c->engine, &ids);
  uint32_t *q = realloc(c->send_queue, m * sizeof *q);
  if (!q) {
    fl_engine_abort_round(c->engine);
    snprintf(why, sizeof why, "out of memory queueing %zu round starts", m);
    finish_run(c, why, 1);
    return;
  }
  c->round_open = 1;
  c->round_t0 = now_s();
  c->bytes_in = c->bytes_out = 0;
  c->send_queue = q;
  memcpy(q, ids, m * sizeof *q);
  c->queue_head = 0;
  c->queue_len = m;
  c->in_flight = 0;
  for (size_t i = 0; i < c->cap_peers; i++)
    c->peers[i].awaiting_ack = 0;
  pump_round_starts(c);
  uv_timer_start(&c->deadline, on_deadline, (uint64_t)(c->cfg.round_timeout * 1000.0), 0);
}

/* While no round can start: every WAIT_LOG_S says who is awaited, and after
 * --start-timeout ends the run (a client that died before joining must not
 * make the coordinator wait forever). */
static void check_waiting(coord_t *c, double now) {
  if (c->done || c->round_open) {
    c->wait_since = c->wait_logged = now;
    return;
  }
  char what[2048];
  double waited = now - c->wait_since;
  if (c->cfg.start_timeout > 0 && waited >= c->cfg.start_timeout) {
    describe_wait(c, what, sizeof what);
    char why[2300];
    snprintf(why, sizeof why,
             "no round could start for %.0f s (--start-timeout %g): %s; giving up (continue "
             "later with --resume)",
             waited, c->cfg.start_timeout, what);
    finish_run(c, why, 1);
    return;
  }
  if (now - c->wait_logged >= WAIT_LOG_S) {
    c->wait_logged = now;
    describe_wait(c, what, sizeof what);
    logf_("waiting %.0f s for clients: %s", waited, what);
  }
}

/* The checkpoint, and at the end (`final`) the outputs (fl_outputs_write)
 * and the metrics lines still queued. Failures are logged (a run of failed
 * checkpoints at its first, its recovery and the end, not every round);
 * the run goes on after a failed checkpoint, since the previous one stays
 * intact (atomic writes). Returns nonzero if anything failed. */
static int write_outputs(coord_t *c, int final) {
  int failed = 0;
  if (c->cfg.out[0] && fl_checkpoint_save(c->engine, c->ckpt_path) != 0) {
    if (!c->ckpt_failed++ || final)
      logf_("checkpoint not written (%u in a row; an earlier one, if any, is kept): %s",
            c->ckpt_failed, fl_err_msg());
    failed = 1;
  } else if (c->cfg.out[0] && c->ckpt_failed) {
    logf_("checkpoint %s written again, after %u failed", c->ckpt_path, c->ckpt_failed);
    c->ckpt_failed = 0;
  }
  if (!final) return failed;
  if (c->cfg.out[0] && fl_outputs_write(c->cfg.out, "fedlr-coordinator", &c->cfg, FL_PROG_COORD,
                                        fl_engine_model(c->engine), fl_engine_weights(c->engine),
                                        fl_engine_rounds_done(c->engine), c->metrics) != 0) {
    logf_("%s", fl_err_msg());
    failed = 1;
  }
  if (fl_metrics_flush(c->metrics) != 0) {
    logf_("%s", fl_err_msg());
    failed = 1;
  }
  return failed;
}

/* Closes the open round: with quorum, aggregate and evaluate; without,
 * abandon it so that the same round index runs again with a fresh sample
 * of live clients, without those whose updates were rejected (the engine
 * quarantines them). After --max-retries abandoned attempts in a row the
 * engine refuses, and the run ends with its error: no progress is possible
 * with these clients. `at_deadline`: the round's deadline passed, and its
 * live clients that never answered are quarantined as well. */
static void close_round(coord_t *c, const char *why, int at_deadline) {
  uv_timer_stop(&c->deadline);
  c->round_open = 0;
  c->queue_head = c->queue_len = c->in_flight = 0;
  c->wait_since = c->wait_logged = now_s();
  uint32_t round = fl_engine_round(c->engine);
  const uint32_t *ids;
  size_t m = fl_engine_sampled(c->engine, &ids);
  char label[300];
  if (at_deadline) {
    /* A live client that kept the round waiting until its deadline without
     * answering is quarantined like one that sent garbage: otherwise it
     * could hold every round it is sampled in (and every retry) this long. */
    for (size_t i = 0; i < m; i++)
      if (!fl_engine_has_answered(c->engine, ids[i]) && c->peers[ids[i]].alive)
        plog(c, R_REJECTED,
             "round %u: %s did not answer by the deadline (--round-timeout %g); not sampled "
             "again before round %u",
             round, client_label(c, ids[i], label, sizeof label), c->cfg.round_timeout,
             fl_engine_quarantine(c->engine, ids[i]) + 1);
  }
  if (!fl_engine_has_quorum(c->engine)) {
    logf_("round %u: %zu of %zu sampled clients reported, %zu needed for the quorum %.2f (%s): "
          "abandoned (attempt %u); running it again with a fresh sample of live clients",
          round, fl_engine_reported(c->engine), m, fl_engine_quorum_need(c->engine), c->cfg.quorum,
          why, fl_engine_attempt(c->engine) + 1);
    if (fl_engine_abort_round(c->engine) != 0) {
      char msg[1024];
      snprintf(msg, sizeof msg, "%s (--max-retries %u)", fl_err_msg(), c->cfg.max_retries);
      finish_run(c, msg, 1);
      return;
    }
    maybe_start_round(c);
    return;
  }
  /* Participants and drop-outs, for the metrics line. */
  size_t cap = 64 + 24 * m, at = 0, at2 = 0;
  char *parts = malloc(cap), *dropped = malloc(cap);
  if (parts && dropped) {
    parts[0] = dropped[0] = '\0';
    for (size_t i = 0; i < m; i++) {
      int rep = fl_engine_has_reported(c->engine, ids[i]);
      if (rep) {
        c->peers[ids[i]].rounds++;
        at += (size_t)snprintf(parts + at, cap - at, "%s%u", at ? "," : "", ids[i]);
      } else {
        at2 += (size_t)snprintf(dropped + at2, cap - at2, "%s%u", at2 ? "," : "", ids[i]);
        plog(c, R_REJECTED, "round %u: dropped %s (%s)", round,
             client_label(c, ids[i], label, sizeof label),
             fl_engine_has_answered(c->engine, ids[i]) ? "its update was rejected" : why);
      }
    }
  }
  fl_round_metrics_t rm;
  if (fl_engine_end_round(c->engine, &rm) != 0) {
    logf_("round %u: %s", round, fl_err_msg());
    free(parts);
    free(dropped);
    return;
  }
  double t = now_s();
  rm.seconds = t - c->round_t0;
  rm.elapsed = t - c->run_t0;
  rm.bytes_sent = c->bytes_out;
  rm.bytes_received = c->bytes_in;
  char *extra = NULL;
  if (parts && dropped) {
    extra = malloc(2 * cap + 64);
    if (extra)
      snprintf(extra, 2 * cap + 64, "\"participants\":[%s],\"dropped\":[%s]", parts, dropped);
  }
  /* Logged when a write failure begins; the lines are kept and retried. */
  if (fl_metrics_add(c->metrics, &rm, extra) != 0) logf_("%s", fl_err_msg());
  free(extra);
  free(parts);
  free(dropped);
  if (!c->cfg.quiet) {
    fl_metrics_print_progress(stdout, &rm);
    fflush(stdout);
  }
  int last = fl_engine_finished(c->engine);
  if (last || fl_engine_rounds_done(c->engine) % c->cfg.checkpoint_every == 0) write_outputs(c, 0);
  if (last) {
    char why_done[128];
    snprintf(why_done, sizeof why_done, "run finished after %u rounds, test accuracy %.4f",
             rm.round, rm.test_accuracy);
    finish_run(c, why_done, 0);
    return;
  }
  maybe_start_round(c);
}

/* Closes the round before its deadline once the outcome is known: every
 * sampled client has answered (an update, accepted or rejected) or died; or
 * the updates that can still arrive (from live clients that have not
 * answered) cannot reach the quorum any more, so waiting cannot help. */
static void check_round(coord_t *c) {
  if (!c->round_open) return;
  const uint32_t *ids;
  size_t m = fl_engine_sampled(c->engine, &ids), pending = 0;
  for (size_t i = 0; i < m; i++)
    if (!fl_engine_has_answered(c->engine, ids[i]) && c->peers[ids[i]].alive) pending++;
  size_t reported = fl_engine_reported(c->engine);
  if (pending == 0)
    close_round(
        c, reported == m ? "all reported" : "the others' updates were rejected or they died", 0);
  else if (reported + pending < fl_engine_quorum_need(c->engine))
    close_round(c, "sampled clients died: the quorum can no longer be reached", 0);
}

static void on_deadline(uv_timer_t *t) {
  coord_t *c = t->data;
  if (c->round_open) close_round(c, "round deadline", 1);
}

/* ---- receiving ---- */

static void mark_dead(coord_t *c, uint32_t id, const char *why) {
  peer_t *p = &c->peers[id];
  if (!p->alive) return;
  p->alive = 0;
  fl_engine_set_available(c->engine, id, 0);
  release_ack(c, id);
  char label[300];
  plog(c, R_PEER_STATE, "client %s is dead: %s", client_label(c, id, label, sizeof label), why);
}

/* Makes client `id` sampleable or not: it must be alive and have proven
 * itself live on its current connection. */
static void update_available(coord_t *c, uint32_t id) {
  peer_t *p = &c->peers[id];
  fl_engine_set_available(c->engine, id, p->alive && p->proven);
}

/* Binds the connection on fd to client `id` (or unbinds it, id < 0): a
 * connection without a client is closed after --join-timeout. */
static void bind_conn(coord_t *c, int fd, int64_t id) {
  fl_conn_t *cn = fl_conns_get(c->conns, fd);
  if (!cn) return;
  cn->client = id;
  cn->since = now_s();
}

/* Refuses a Join with a Stop{error} that says why (never naming another
 * client), and logs it. */
static void refuse_join(coord_t *c, const uint8_t *rid, size_t rid_len, const char *uid,
                        const char *name, const char *reason) {
  char hex[2 * RID_MAX + 1];
  plog(c, R_JOIN_REFUSED, "refused a join as '%s' from %s%s%s: %s", name,
       rid_hex(rid, rid_len, hex, sizeof hex), uid ? ", key of " : "", uid ? uid : "", reason);
  send_stop(c, rid, rid_len, reason, 1, 0);
}

/* `uid` is the connection's authenticated name under CURVE, else NULL; fd
 * the connection's descriptor (-1 if unknown). */
static void handle_join(coord_t *c, const uint8_t *rid, size_t rid_len, int fd, const char *uid,
                        const Fedlr__Join *j) {
  const fl_model_spec_t *m = fl_engine_model(c->engine);
  uint32_t id;
  int rc;
  char reason[512];
  if (uid && strcmp(j->name, uid) != 0) {
    /* Under CURVE the key is the identity: the name only has to agree. */
    rc = fl_err_set(FL_EPROTO,
                    "this client's key is '%s' in the coordinator's --allow-clients, but it "
                    "joined as '%.64s': run it with --name %s, or without --name",
                    uid, j->name, uid);
  } else if (fl_engine_find_client(c->engine, j->name, &id) == 0) {
    rc = j->want_slot && j->slot != id
             ? fl_err_set(FL_EINVAL, "name '%s' is client %u, not %u", j->name, id, j->slot)
             : fl_engine_add_client_at(c->engine, id, j->name, j->num_examples); /* rejoin */
  } else if (j->want_slot) {
    id = j->slot;
    rc = id >= c->cfg.clients
             ? fl_err_set(FL_ERANGE, "slot %u is beyond --clients %u", id, c->cfg.clients)
             : fl_engine_add_client_at(c->engine, id, j->name, j->num_examples);
  } else {
    /* The lowest free id is below --clients while fewer are registered. */
    rc = fl_engine_num_clients(c->engine) >= c->cfg.clients
             ? fl_err_set(FL_ERANGE, "the run is full (--clients %u)", c->cfg.clients)
             : fl_engine_add_client(c->engine, j->name, j->num_examples, &id);
  }
  if (!rc && ensure_peers(c, (size_t)id + 1) != 0)
    rc = fl_err_set(FL_ENOMEM, "out of memory for client %u", id);
  if (rc) {
    snprintf(reason, sizeof reason, "%s", fl_err_msg());
    refuse_join(c, rid, rid_len, uid, j->name, reason);
    return;
  }
  /* Bind this connection to the client; a connection bound to another
   * client before is released. A new connection (a restart, or a takeover
   * by the same key) must prove itself live again before it is sampled. */
  long other = find_peer(c, rid, rid_len);
  if (other >= 0 && (uint32_t)other != id) {
    c->peers[other].rid_len = 0;
    c->peers[other].proven = 0;
    c->peers[other].fd = -1;
    update_available(c, (uint32_t)other);
  }
  peer_t *p = &c->peers[id];
  int was_alive = p->alive;
  int same_conn = p->alive && p->rid_len == rid_len && memcmp(p->rid, rid, rid_len) == 0;
  if (!same_conn) {
    p->proven = 0;
    /* Its old connection, if still open, now carries no client: it is
     * closed after --join-timeout unless the client comes back on it. */
    if (p->fd >= 0 && p->fd != fd) bind_conn(c, p->fd, -1);
  }
  memcpy(p->rid, rid, rid_len);
  p->rid_len = rid_len;
  p->fd = fd;
  bind_conn(c, fd, id);
  p->alive = 1;
  p->last_seen = now_s();
  update_available(c, id);
  char label[300];
  plog(c, R_JOIN, "client %s joined with %" PRIu64 " examples%s (%zu ready)",
       client_label(c, id, label, sizeof label), j->num_examples, was_alive ? " (rejoin)" : "",
       fl_engine_num_available(c->engine));

  char run_id[16];
  snprintf(run_id, sizeof run_id, "%08x", c->run_id);
  Fedlr__Welcome w = FEDLR__WELCOME__INIT;
  w.client_id = id;
  w.run_id = run_id;
  w.model = (char *)m->spec;
  w.input_dim = (uint32_t)m->dims[0];
  w.num_classes = (uint32_t)m->dims[m->num_layers];
  w.heartbeat_ms = (uint32_t)(c->cfg.heartbeat * 1000.0);
  w.rounds = c->cfg.rounds;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_WELCOME;
  env.welcome = &w;
  send_env(c, rid, rid_len, &env);
  /* A sampled client that reconnects mid-round gets its round again. */
  if (c->round_open && fl_engine_is_sampled(c->engine, id) &&
      !fl_engine_has_reported(c->engine, id))
    send_round_start(c, id);
  maybe_start_round(c);
}

/* A Join that failed to decode (unsupported protocol version, a bad name,
 * ...) is answered with a Stop that says why, like any refused Join; other
 * undecodable messages are only logged. */
static void handle_bad_message(coord_t *c, const uint8_t *rid, size_t rid_len, long pid,
                               const char *uid, const char *who, const uint8_t *buf, size_t len) {
  char err[512];
  snprintf(err, sizeof err, "%s", fl_err_msg());
  if (fl_wire_peek_kind(buf, len) != FEDLR__ENVELOPE__BODY_JOIN) {
    plog(c, R_BAD_MESSAGE, "dropped a bad message from %s (%zu bytes): %s", who, len, err);
    return;
  }
  /* A bad Join costs a token like a good one, so refusals cannot be used
   * to make the coordinator reply faster than it admits. */
  if (pid < 0 && !join_admit(c, now_s())) {
    c->joins_refused++;
    fl_ratelog_count(c->rl, R_JOIN_RATE, now_s());
    send_copy_quiet(c, rid, rid_len, c->busy_stop, c->busy_stop_len);
    return;
  }
  char reason[600];
  snprintf(reason, sizeof reason, "join refused: %s", err);
  refuse_join(c, rid, rid_len, uid, "(undecodable)", reason);
}

/* Every message from a peer. `fd` is its connection's descriptor (from
 * ZMQ_SRCFD), `uid` the connection's authenticated name under CURVE. */
static void handle_message(coord_t *c, const uint8_t *rid, size_t rid_len, int fd, const char *uid,
                           const uint8_t *buf, size_t len) {
  c->bytes_in += len;
  fl_conn_t *cn = fl_conns_get(c->conns, fd);
  if (cn) cn->messages++;
  if (c->done) {
    /* The run is over: whoever speaks now (a client that missed the Stop
     * and rejoins, say) hears it again. */
    send_copy_quiet(c, rid, rid_len, c->final_stop, c->final_stop_len);
    return;
  }
  long pid = find_peer(c, rid, rid_len);
  char who[2 * RID_MAX + FL_CONNS_ADDR_MAX + 64], hex[2 * RID_MAX + 1];
  if (pid >= 0)
    client_label(c, (uint32_t)pid, who, sizeof who);
  else
    snprintf(who, sizeof who, "unknown peer %s%s%s%s", rid_hex(rid, rid_len, hex, sizeof hex),
             cn && cn->addr[0] ? " at " : "", cn ? cn->addr : "", uid ? " (CURVE key of " : "");
  if (pid < 0 && uid) snprintf(who + strlen(who), sizeof who - strlen(who), "%s)", uid);
  if (c->curve && !uid) {
    plog(c, R_BAD_MESSAGE, "dropped a message from %s: no authenticated User-Id (ZAP did not run?)",
         who);
    return;
  }
  Fedlr__Envelope *env = NULL;
  if (fl_wire_decode(buf, len, fl_engine_limits(c->engine), &env) != 0) {
    handle_bad_message(c, rid, rid_len, pid, uid, who, buf, len);
    return;
  }
  int is_join = env->body_case == FEDLR__ENVELOPE__BODY_JOIN;
  /* Under CURVE a connection bound to a client speaks for that client
   * only: its messages must carry the client's authenticated name. */
  if (uid && pid >= 0 && !is_join) {
    const char *name = fl_engine_client_name(c->engine, (uint32_t)pid);
    if (!name || strcmp(name, uid) != 0) {
      plog(c, R_PEER_STATE,
           "dropped a message on the connection of %s: it is authenticated as '%s'", who, uid);
      fl_wire_free(&env);
      return;
    }
  }
  int became_available = 0;
  const char *bound;
  if (pid >= 0) {
    peer_t *p = &c->peers[pid];
    int was = p->alive && p->proven;
    p->last_seen = now_s();
    if (fd >= 0) p->fd = fd;
    if (!p->alive) {
      p->alive = 1;
      plog(c, R_PEER_STATE, "client %s is alive again", who);
    }
    if (!is_join) p->proven = 1; /* a heartbeat or update after its Welcome */
    if (!was && p->alive && p->proven) {
      update_available(c, (uint32_t)pid);
      became_available = 1;
    }
  }
  switch (env->body_case) {
  case FEDLR__ENVELOPE__BODY_JOIN:
    /* Joins spend a token, except a client's rejoin on its own connection
     * (same name); over the rate they get a "busy" Stop{rejoin} and never
     * reach the engine. */
    bound = pid >= 0 ? fl_engine_client_name(c->engine, (uint32_t)pid) : NULL;
    if ((!bound || strcmp(env->join->name, bound) != 0) && !join_admit(c, now_s())) {
      c->joins_refused++;
      plog(c, R_JOIN_RATE,
           "join rate limit reached: refusing joins beyond --join-burst %u at --join-rate %g/s "
           "('%s' from %s)",
           c->cfg.join_burst, c->cfg.join_rate, env->join->name, who);
      send_copy_quiet(c, rid, rid_len, c->busy_stop, c->busy_stop_len);
      break;
    }
    handle_join(c, rid, rid_len, fd, uid, env->join);
    break;
  case FEDLR__ENVELOPE__BODY_HEARTBEAT:
    if (pid < 0) {
      plog(c, R_UNKNOWN_PEER, "a heartbeat from %s, which has not joined: asked to join", who);
      send_stop(c, rid, rid_len, "unknown client: join again", 0, 1);
    } else {
      if (env->heartbeat->round == fl_engine_round(c->engine)) release_ack(c, (uint32_t)pid);
      Fedlr__Heartbeat hb = FEDLR__HEARTBEAT__INIT;
      hb.client_id = (uint32_t)pid;
      hb.round = fl_engine_round(c->engine);
      Fedlr__Envelope reply = FEDLR__ENVELOPE__INIT;
      reply.body_case = FEDLR__ENVELOPE__BODY_HEARTBEAT;
      reply.heartbeat = &hb;
      send_env(c, rid, rid_len, &reply);
    }
    break;
  case FEDLR__ENVELOPE__BODY_UPDATE:
    if (pid < 0) {
      plog(c, R_UNKNOWN_PEER, "dropped an update from %s: not joined (asked to join again)", who);
      send_stop(c, rid, rid_len, "unknown client: join again", 0, 1);
    } else {
      release_ack(c, (uint32_t)pid); /* an update also acknowledges its round start */
      if (fl_engine_submit_update(c->engine, (uint32_t)pid, env->update) != 0)
        plog(c, R_REJECTED, "rejected an update from %s: %s", who, fl_err_msg());
      /* Accepted or rejected, it answered: the round may be decided. */
      check_round(c);
    }
    break;
  default:
    plog(c, R_WRONG_KIND, "dropped a message of kind %d from %s: clients may not send it",
         (int)env->body_case, who);
    break;
  }
  fl_wire_free(&env);
  if (became_available) maybe_start_round(c);
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
static int drain(coord_t *c) {
  static uint8_t rid[RID_MAX];
  for (int handled = 0;; handled++) {
    if (c->closed) return 0;
    int events = sock_events(c->sock);
    if (events < 0 || !(events & ZMQ_POLLIN)) return 0;
    if (handled >= DRAIN_MAX) return 1;
    int n = zmq_recv(c->sock, rid, sizeof rid, ZMQ_DONTWAIT);
    if (n < 0) return 0;
    size_t rid_len = (size_t)n > sizeof rid ? sizeof rid : (size_t)n;
    int more = 0;
    size_t sz = sizeof more;
    zmq_getsockopt(c->sock, ZMQ_RCVMORE, &more, &sz);
    if (!more) continue;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, c->sock, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&msg);
      continue;
    }
    zmq_getsockopt(c->sock, ZMQ_RCVMORE, &more, &sz);
    if (more) {
      /* Multipart: not ours. Drop every frame of it. */
      size_t frames = 1, bytes = zmq_msg_size(&msg);
      while (more) {
        if (zmq_msg_recv(&msg, c->sock, ZMQ_DONTWAIT) < 0) break;
        frames++;
        bytes += zmq_msg_size(&msg);
        zmq_getsockopt(c->sock, ZMQ_RCVMORE, &more, &sz);
      }
      char hex[2 * RID_MAX + 1];
      plog(c, R_MULTIPART,
           "dropped a %zu-frame message (%zu bytes) from %s: messages are "
           "single-frame",
           frames, bytes, rid_hex(rid, rid_len, hex, sizeof hex));
      c->bytes_in += bytes;
    } else {
      /* The authenticated name and the connection's descriptor travel
       * with every frame. */
      const char *uid = c->curve ? zmq_msg_gets(&msg, "User-Id") : NULL;
      int fd = zmq_msg_get(&msg, ZMQ_SRCFD);
      handle_message(c, rid, rid_len, fd, uid, zmq_msg_data(&msg), zmq_msg_size(&msg));
    }
    zmq_msg_close(&msg);
  }
}

/* ---- CurveZMQ: the ZAP handler and the socket monitor ---- */

static void fatal(coord_t *c, const char *why);
static void check_stopped(coord_t *c, double now);

/* Sends one ZAP reply (RFC 27): version, request id, status, text, user id,
 * empty metadata. */
static int zap_send_reply(coord_t *c, zmq_msg_t *reqid, const char *status, const char *text,
                          const char *user) {
  if (zmq_send(c->zap, "1.0", 3, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_send(c->zap, zmq_msg_data(reqid), zmq_msg_size(reqid), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_send(c->zap, status, strlen(status), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_send(c->zap, text, strlen(text), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_send(c->zap, user, strlen(user), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_send(c->zap, "", 0, ZMQ_DONTWAIT) < 0)
    return -1;
  return 0;
}

/* Answers up to ZAP_DRAIN_MAX requests: frames "1.0", request id, domain,
 * address, routing id, mechanism, then the credentials (CURVE: the client's
 * 32-byte public key). 200 with User-Id = the client's name for a key of
 * the allowlist, 400 for anything else. Returns 1 if it stopped at its
 * bound. A failing ZAP socket is fatal: without its handler libzmq would
 * admit every client. */
static int handle_zap(coord_t *c) {
  enum { F_VERSION, F_REQID, F_DOMAIN, F_ADDRESS, F_IDENTITY, F_MECH, F_KEY, F_MAX };
  for (int handled = 0;; handled++) {
    if (c->closed) return 0;
    int events = sock_events(c->zap);
    if (events < 0) {
      fatal(c, "the ZAP handler's socket failed");
      return 0;
    }
    if (!(events & ZMQ_POLLIN)) return 0;
    if (handled >= ZAP_DRAIN_MAX) return 1;
    zmq_msg_t f[F_MAX];
    size_t nf = 0, extra = 0;
    for (int i = 0; i < F_MAX; i++)
      zmq_msg_init(&f[i]);
    int more = 1, ok = 1;
    while (more) {
      zmq_msg_t tmp;
      zmq_msg_t *dst = nf < F_MAX ? &f[nf] : &tmp;
      if (dst == &tmp) zmq_msg_init(&tmp);
      if (zmq_msg_recv(dst, c->zap, ZMQ_DONTWAIT) < 0) {
        if (dst == &tmp) zmq_msg_close(&tmp);
        ok = 0;
        break;
      }
      more = zmq_msg_more(dst);
      if (dst == &tmp) {
        zmq_msg_close(&tmp);
        extra++;
      } else {
        nf++;
      }
    }
    if (!ok) {
      for (int i = 0; i < F_MAX; i++)
        zmq_msg_close(&f[i]);
      if (nf == 0 && errno == EAGAIN) return 0;
      fatal(c, "the ZAP handler cannot receive");
      return 0;
    }
    char addr[FL_CONNS_ADDR_MAX * 4 + 8] = "?", z85[FL_KEY_Z85_LEN + 1] = "?";
    const char *name = NULL, *why = "malformed ZAP request";
    if (nf > F_ADDRESS)
      fl_wire_escape(zmq_msg_data(&f[F_ADDRESS]), zmq_msg_size(&f[F_ADDRESS]), 40, addr,
                     sizeof addr);
    if (nf == F_MAX && !extra && zmq_msg_size(&f[F_VERSION]) == 3 &&
        !memcmp(zmq_msg_data(&f[F_VERSION]), "1.0", 3)) {
      if (zmq_msg_size(&f[F_MECH]) != 5 || memcmp(zmq_msg_data(&f[F_MECH]), "CURVE", 5)) {
        why = "not a CURVE client";
      } else if (zmq_msg_size(&f[F_KEY]) != FL_KEY_BYTES) {
        why = "malformed CURVE key";
      } else {
        zmq_z85_encode(z85, zmq_msg_data(&f[F_KEY]), FL_KEY_BYTES);
        name = fl_allowlist_find(c->allow, zmq_msg_data(&f[F_KEY]));
        why = "key not in --allow-clients";
      }
    }
    int rc =
        zap_send_reply(c, &f[F_REQID], name ? "200" : "400", name ? "OK" : why, name ? name : "");
    if (!name) {
      c->zap_refused++;
      plog(c, R_HANDSHAKE, "refused a CURVE client at %s with key %s: %s", addr, z85, why);
    }
    for (int i = 0; i < F_MAX; i++)
      zmq_msg_close(&f[i]);
    if (rc != 0) {
      fatal(c, "the ZAP handler cannot reply");
      return 0;
    }
  }
}

/* Logs why a connection's handshake failed: the failure event comes first,
 * then its DISCONNECTED (with the fd, hence the address). */
static void log_handshake_failure(coord_t *c, const fl_conn_t *cn, double now) {
  const char *addr = cn && cn->addr[0] ? cn->addr : "a peer";
  uint32_t ev = c->hs_failed_event, v = c->hs_failed_value;
  c->hs_failed++;
  if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) return; /* the ZAP handler logged it */
  if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && v == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
    plog(c, R_HANDSHAKE, "refused a connection from %s: %s", addr,
         c->curve ? "it does not use CURVE (a plaintext client, without --curve-secret?)"
                  : "it uses CURVE, and this coordinator is plaintext (no --curve-secret)");
  else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && v == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
    plog(c, R_HANDSHAKE,
         "refused a connection from %s: its CURVE handshake failed (a client with the wrong "
         "--coordinator-key?)",
         addr);
  else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
    plog(c, R_HANDSHAKE,
         "refused a connection from %s: ZMTP protocol error 0x%08x in its handshake", addr, v);
  else if (cn && now - cn->since >= 0.9 * c->cfg.handshake_timeout)
    plog(c, R_HANDSHAKE,
         "dropped a connection from %s: no handshake within %g s (--handshake-timeout)", addr,
         c->cfg.handshake_timeout);
  else
    plog(c, R_HANDSHAKE, "a connection from %s closed during its handshake (%s)", addr,
         zmq_strerror((int)v));
}

/* A connection was accepted: tracked, or shut down at once beyond
 * --max-connections (the open-file limit must never be what bites). */
static void on_accepted(coord_t *c, int fd, double now) {
  fl_conn_t *cn = fl_conns_accepted(c->conns, fd, now);
  if (cn && fl_conns_open(c->conns) <= c->max_conns) return;
  c->conns_closed_over++;
  if (cn) fl_conns_shutdown(c->conns, fd);
  plog(c, R_CONNECTION,
       "closed a connection from %s: %zu connections are open, the limit is %zu "
       "(--max-connections)",
       cn && cn->addr[0] ? cn->addr : "a peer", fl_conns_open(c->conns), c->max_conns);
}

/* A connection is gone. A client whose connection it was no longer holds
 * one (so the end of the run does not wait for it). A connection that
 * ended after its handshake is logged: ZeroMQ also closes one whose frame
 * is above ZMQ_MAXMSGSIZE, without telling which. */
static void on_disconnected(coord_t *c, int fd, double now) {
  const fl_conn_t *cn = fl_conns_closed(c->conns, fd);
  if (c->hs_failed_event) {
    log_handshake_failure(c, cn, now);
    c->hs_failed_event = 0;
    return;
  }
  if (!cn) return;
  for (size_t i = 0; i < c->cap_peers; i++)
    if (c->peers[i].fd == fd) c->peers[i].fd = -1;
  if (c->stopping) check_stopped(c, now);
  if (cn->closing || c->done) return; /* ours, logged when closed; or the run is over */
  char who[300] = "no client";
  if (cn->client >= 0) client_label(c, (uint32_t)cn->client, who, sizeof who);
  plog(c, R_CONNECTION,
       "the connection from %s (%s, %" PRIu64 " messages) closed: the peer closed it, or it sent "
       "a frame over the %zu-byte limit (ZMQ_MAXMSGSIZE)",
       cn->addr[0] ? cn->addr : "a peer", who, cn->messages,
       fl_engine_limits(c->engine)->max_message);
}

/* Closes the connections that have carried no client for --join-timeout:
 * a peer cannot hold descriptors open by connecting and never joining. */
static void close_idle_connections(coord_t *c, double now) {
  for (int fd = -1; fl_conns_next_idle(c->conns, now, c->cfg.join_timeout, &fd);) {
    const fl_conn_t *cn = fl_conns_get(c->conns, fd);
    char addr[FL_CONNS_ADDR_MAX];
    snprintf(addr, sizeof addr, "%s", cn && cn->addr[0] ? cn->addr : "a peer");
    uint64_t msgs = cn ? cn->messages : 0;
    if (fl_conns_shutdown(c->conns, fd) != 0) continue;
    c->conns_closed_idle++;
    plog(c, R_CONNECTION,
         "closed the connection from %s: no client joined on it within %g s (--join-timeout; "
         "%" PRIu64 " messages)",
         addr, c->cfg.join_timeout, msgs);
  }
}

/* Reads up to DRAIN_MAX monitor events of the ROUTER. Returns 1 if it
 * stopped at its bound. */
static int handle_monitor(coord_t *c) {
  for (int handled = 0;; handled++) {
    if (c->closed) return 0;
    int events = sock_events(c->mon);
    if (events < 0 || !(events & ZMQ_POLLIN)) return 0;
    if (handled >= DRAIN_MAX) return 1;
    uint16_t ev;
    uint32_t value;
    if (!fl_zmon_recv(c->mon, &ev, &value)) return 0;
    double now = now_s();
    switch (ev) {
    case ZMQ_EVENT_ACCEPTED: on_accepted(c, (int)value, now); break;
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: c->hs_failed_event = 0; break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
      c->hs_failed_event = ev;
      c->hs_failed_value = value;
      break;
    case ZMQ_EVENT_DISCONNECTED: on_disconnected(c, (int)value, now); break;
    default: break;
    }
  }
}

static void on_more(uv_idle_t *h);

/* Serves the ZAP handler, the monitor and the ROUTER, each up to its bound;
 * while any stopped at its bound, the idle handle brings the loop back
 * (without blocking, but after the timers and other I/O had their turn). */
static void pump(coord_t *c) {
  if (c->closed) return;
  int more = 0;
  if (c->zap) more |= handle_zap(c);
  if (c->mon) more |= handle_monitor(c);
  more |= drain(c);
  if (c->closed) return;
  if (more)
    uv_idle_start(&c->more, on_more);
  else
    uv_idle_stop(&c->more);
}

static void on_more(uv_idle_t *h) {
  pump(h->data);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  pump(h->data);
}

static void on_tick(uv_timer_t *t) {
  coord_t *c = t->data;
  double now = now_s();
  for (size_t i = 0; i < c->cap_peers && !c->done; i++) {
    peer_t *p = &c->peers[i];
    if (p->alive && now - p->last_seen > c->cfg.client_timeout) {
      char why[64];
      snprintf(why, sizeof why, "silent for %.1f s", now - p->last_seen);
      mark_dead(c, (uint32_t)i, why);
    }
  }
  for (size_t i = 0; i < c->cap_peers; i++)
    if (c->peers[i].awaiting_ack && now - c->peers[i].sent_at > ACK_TIMEOUT_S)
      release_ack(c, (uint32_t)i); /* an old client, or a lost ack: do not stall the window */
  check_round(c);
  maybe_start_round(c);
  check_waiting(c, now);
  close_idle_connections(c, now);
  fl_ratelog_tick(c->rl, now, 0);
  if (c->stopping) check_stopped(c, now);
  pump(c); /* sends above may have changed ZMQ_EVENTS */
}

static void on_close(uv_handle_t *h) {
  (void)h;
}

/* Closes every handle of the loop, so that uv_run() returns. */
static void end_loop(coord_t *c) {
  if (c->closed) return;
  c->closed = 1;
  uv_idle_stop(&c->more);
  uv_close((uv_handle_t *)&c->more, on_close);
  if (c->zap) {
    uv_poll_stop(&c->zap_poll);
    uv_close((uv_handle_t *)&c->zap_poll, on_close);
  }
  if (c->mon) {
    uv_poll_stop(&c->mon_poll);
    uv_close((uv_handle_t *)&c->mon_poll, on_close);
  }
  uv_timer_stop(&c->tick);
  uv_timer_stop(&c->deadline);
  uv_poll_stop(&c->poll);
  uv_signal_stop(&c->sigint);
  uv_signal_stop(&c->sigterm);
  uv_close((uv_handle_t *)&c->tick, on_close);
  uv_close((uv_handle_t *)&c->deadline, on_close);
  uv_close((uv_handle_t *)&c->poll, on_close);
  uv_close((uv_handle_t *)&c->sigint, on_close);
  uv_close((uv_handle_t *)&c->sigterm, on_close);
}

/* Ends the run at once on a broken invariant of our own (the ZAP handler
 * failing): exit status 1, no wait for the clients (without its ZAP handler
 * libzmq would admit anyone). */
static void fatal(coord_t *c, const char *why) {
  char msg[256];
  snprintf(msg, sizeof msg,
           "fatal: %s (%s); stopping, since without it libzmq would admit any "
           "client",
           why, zmq_strerror(errno));
  finish_run(c, msg, 1);
  end_loop(c);
}

/* After the run ended, the coordinator stays until every peer has heard it
 * and left: no connection has been open for STOP_GRACE_S (a client that
 * missed the Stop because it was replacing its connection comes back on a
 * new one within that time, and every message is answered with the Stop
 * meanwhile: handle_message); or until the wait is up (a peer that keeps a
 * connection open cannot keep the coordinator). Then the loop ends. */
static void check_stopped(coord_t *c, double now) {
  size_t open = fl_conns_open(c->conns);
  if (open) c->stop_quiet_since = now;
  if (!open && now - c->stop_quiet_since >= STOP_GRACE_S) {
    end_loop(c);
  } else if (now >= c->stop_deadline) {
    if (open)
      logf_("%zu connection(s) still open %.0f s after the end of the run: exiting anyway", open,
            now - c->stop_t0);
    end_loop(c);
  }
}

/* Ends the run with exit status `status`: writes the final outputs, tells
 * every client, and waits (check_stopped) until they have heard it. */
static void finish_run(coord_t *c, const char *why, int status) {
  if (c->done) return;
  c->done = 1;
  c->exit_code = status;
  double now = now_s();
  if (c->round_open) {
    uv_timer_stop(&c->deadline);
    fl_engine_abort_round(c->engine); /* an error here only repeats that the run ends */
    c->round_open = 0;
  }
  logf_("%s", why);
  Fedlr__Stop st = FEDLR__STOP__INIT;
  st.reason = (char *)why;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_STOP;
  env.stop = &st;
  if (fl_wire_encode(&env, &c->final_stop, &c->final_stop_len) != 0) {
    logf_("cannot encode the final Stop: %s", fl_err_msg());
    c->final_stop = NULL;
    c->final_stop_len = 0;
  }
  for (size_t i = 0; i < c->cap_peers && c->final_stop; i++)
    if (c->peers[i].rid_len)
      send_copy_quiet(c, c->peers[i].rid, c->peers[i].rid_len, c->final_stop, c->final_stop_len);
  /* An interrupted run: the checkpoint of its last completed round. A
   * final output that cannot be written makes the exit status 1. */
  if (write_outputs(c, 1) != 0) c->exit_code = 1;
  if (c->cap_peers) {
    uint32_t lo = UINT32_MAX, hi = 0, n = 0;
    double sum = 0;
    for (size_t i = 0; i < c->cap_peers; i++) {
      if (!fl_engine_client_name(c->engine, (uint32_t)i)) continue;
      uint32_t r = c->peers[i].rounds;
      lo = r < lo ? r : lo;
      hi = r > hi ? r : hi;
      sum += r;
      n++;
    }
    if (n)
      logf_("participation: %u clients, rounds per client min %u, mean %.1f, max %u", n, lo,
            sum / n, hi);
  }
  fl_ratelog_tick(c->rl, now, 1);
  if (c->joins_refused || c->zap_refused || c->hs_failed || c->conns_closed_idle ||
      c->conns_closed_over)
    logf_("refused: %" PRIu64 " joins over the rate limit, %" PRIu64 " keys by ZAP, %" PRIu64
          " failed handshakes; closed %" PRIu64 " idle connections and %" PRIu64 " over the limit",
          c->joins_refused, c->zap_refused, c->hs_failed, c->conns_closed_idle,
          c->conns_closed_over);
  c->stopping = 1;
  c->stop_t0 = c->stop_quiet_since = now;
  c->stop_deadline = now + fmax(STOP_WAIT_MIN, 6.0 * c->cfg.heartbeat);
  check_stopped(c, now);
}

static void on_signal(uv_signal_t *s, int signum) {
  coord_t *c = s->data;
  if (c->done) { /* a second signal: no more waiting for the clients */
    end_loop(c);
    return;
  }
  char why[FL_PATH_MAX + 128];
  snprintf(why, sizeof why, "interrupted by signal %d after %u rounds; continue with --resume %s",
           signum, fl_engine_rounds_done(c->engine), c->cfg.out[0] ? c->cfg.out : "DIR");
  finish_run(c, why, EXIT_INTERRUPTED);
}

/* ---- setup ---- */

/* The ROUTER, and with CURVE its ZAP handler, bound first; a monitor on
 * the ROUTER for handshake failures. `kp` (CURVE only) is wiped. */
static int setup_socket(coord_t *c, fl_keypair_t *kp) {
  const fl_wire_limits_t *lim = fl_engine_limits(c->engine);
  int64_t maxmsg = (int64_t)lim->max_message;
  int linger = 2000, mandatory = 1, zero = 0;
  int hs_ivl = (int)(c->cfg.handshake_timeout * 1000.0);
  c->zctx = zmq_ctx_new();
  if (!c->zctx) return fl_err_set(FL_ENOMEM, "zmq_ctx_new: %s", zmq_strerror(errno));
  if (c->curve) {
    /* Before the ROUTER binds: a CURVE handshake with no handler on this
     * endpoint succeeds for any client that knows the server key. */
    c->zap = zmq_socket(c->zctx, ZMQ_REP);
    if (!c->zap || zmq_setsockopt(c->zap, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_bind(c->zap, ZAP_ENDPOINT) != 0)
      return fl_err_set(FL_EIO, "cannot start the ZAP handler on %s: %s", ZAP_ENDPOINT,
                        zmq_strerror(errno));
  }
  c->sock = zmq_socket(c->zctx, ZMQ_ROUTER);
  if (!c->sock) return fl_err_set(FL_ENOMEM, "zmq_socket: %s", zmq_strerror(errno));
  if (zmq_setsockopt(c->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
      zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger) ||
      zmq_setsockopt(c->sock, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory) ||
      zmq_setsockopt(c->sock, ZMQ_HANDSHAKE_IVL, &hs_ivl, sizeof hs_ivl))
    return fl_err_set(FL_EINVAL, "zmq_setsockopt: %s", zmq_strerror(errno));
  if (c->curve) {
    uint8_t secret[FL_KEY_BYTES];
    int one = 1, rc = fl_keys_decode(kp->secret_z85, secret);
    if (!rc && (zmq_setsockopt(c->sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
                zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, secret, sizeof secret) ||
                zmq_setsockopt(c->sock, ZMQ_ZAP_DOMAIN, ZAP_DOMAIN, strlen(ZAP_DOMAIN))))
      rc = fl_err_set(FL_EINVAL, "CURVE socket options: %s", zmq_strerror(errno));
    explicit_bzero(secret, sizeof secret);
    explicit_bzero(kp, sizeof *kp);
    if (rc) return rc;
  }
  int mon_events = ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                   ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                   ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
  if (zmq_socket_monitor(c->sock, MON_ENDPOINT, mon_events) != 0 ||
      !(c->mon = zmq_socket(c->zctx, ZMQ_PAIR)) ||
      zmq_setsockopt(c->mon, ZMQ_LINGER, &zero, sizeof zero) || zmq_connect(c->mon, MON_ENDPOINT))
    return fl_err_set(FL_EIO, "cannot monitor the socket: %s", zmq_strerror(errno));
  if (zmq_bind(c->sock, c->cfg.bind) != 0)
    return fl_err_set(FL_EINVAL, "cannot bind %s: %s", c->cfg.bind, zmq_strerror(errno));
  return 0;
}

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

/* Starts polling `fd` (a ZeroMQ socket's ZMQ_FD) on the loop. */
static int start_poll(coord_t *c, void *zsock, uv_poll_t *h) {
  int fd, rc;
  size_t sz = sizeof fd;
  if (zmq_getsockopt(zsock, ZMQ_FD, &fd, &sz) != 0)
    return fl_err_set(FL_EIO, "ZMQ_FD: %s", zmq_strerror(errno));
  if ((rc = uv_poll_init(c->loop, h, fd)) != 0 ||
      (h->data = c, rc = uv_poll_start(h, UV_READABLE, on_poll)) != 0)
    return fl_err_set(FL_EIO, "uv_poll: %s", uv_strerror(rc));
  return 0;
}

/* The event loop's handles: the sockets' polls, the tick, the deadline,
 * the idle handle and the signals. */
static int setup_loop(coord_t *c) {
  int rc;
  c->loop = uv_default_loop();
  if (!c->loop) return fl_err_set(FL_ENOMEM, "cannot create the event loop");
  if (c->zap && (rc = start_poll(c, c->zap, &c->zap_poll))) return rc;
  if ((rc = start_poll(c, c->mon, &c->mon_poll)) || (rc = start_poll(c, c->sock, &c->poll)))
    return rc;
  c->more.data = c->tick.data = c->deadline.data = c->sigint.data = c->sigterm.data = c;
  if ((rc = uv_idle_init(c->loop, &c->more)) || (rc = uv_timer_init(c->loop, &c->tick)) ||
      (rc = uv_timer_init(c->loop, &c->deadline)) || (rc = uv_signal_init(c->loop, &c->sigint)) ||
      (rc = uv_signal_init(c->loop, &c->sigterm)) ||
      (rc = uv_timer_start(&c->tick, on_tick, TICK_MS, TICK_MS)) ||
      (rc = uv_signal_start(&c->sigint, on_signal, SIGINT)) ||
      (rc = uv_signal_start(&c->sigterm, on_signal, SIGTERM)))
    return fl_err_set(FL_EIO, "event loop: %s", uv_strerror(rc));
  return 0;
}

/* The Stop{rejoin} for joins over the rate limit, encoded once. */
static int make_busy_stop(coord_t *c) {
  Fedlr__Stop st = FEDLR__STOP__INIT;
  st.reason = "busy: too many joins at once, join again later";
  st.rejoin = 1;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_STOP;
  env.stop = &st;
  return fl_wire_encode(&env, &c->busy_stop, &c->busy_stop_len);
}

/* --curve-secret and --allow-clients: both or neither. Returns 0 (and
 * c->curve, c->allow, *kp), or an exit status with the error printed. */
static int load_curve(coord_t *c, fl_keypair_t *kp) {
  const fl_config_t *cfg = &c->cfg;
  if (!cfg->curve_secret[0] && !cfg->allow_clients[0]) return 0;
  if (!cfg->curve_secret[0] || !cfg->allow_clients[0]) {
    fprintf(stderr,
            "fedlr-coordinator: %s without %s: CurveZMQ needs both, the coordinator's secret key "
            "(--curve-secret FILE) and the client keys it admits (--allow-clients DIR|FILE)\n",
            cfg->curve_secret[0] ? "--curve-secret" : "--allow-clients",
            cfg->curve_secret[0] ? "--allow-clients" : "--curve-secret");
    return 2;
  }
  if (!zmq_has("curve")) {
    fprintf(stderr, "fedlr-coordinator: --curve-secret: this libzmq has no CURVE support\n");
    return 1;
  }
  if (fl_keys_load_secret(cfg->curve_secret, kp) != 0) {
    fprintf(stderr, "fedlr-coordinator: --curve-secret: %s\n", fl_err_msg());
    return 1;
  }
  if (fl_allowlist_load(cfg->allow_clients, &c->allow) != 0) {
    fprintf(stderr, "fedlr-coordinator: %s\n", fl_err_msg());
    explicit_bzero(kp, sizeof *kp);
    return 1;
  }
  c->curve = 1;
  return 0;
}

static int load_test(coord_t *c) {
  const char *ds = c->cfg.dataset;
  if (c->cfg.test_data[0]) return fl_dataset_load_file(c->cfg.test_data, &c->test);
  int is_file = !fl_dataset_is_named(ds);
  if (is_file)
    return fl_err_set(FL_EINVAL, "--dataset is a file: give the test set with --test-data (the "
                                 "coordinator evaluates; clients hold the training data)");
  return fl_dataset_load_named(ds, c->cfg.data_dir, 0, &c->test);
}

int main(int argc, char **argv) {
  fl_blas_setup(argc, argv);
  coord_t *c = calloc(1, sizeof *c);
  if (!c) return 1;
  fl_config_defaults(&c->cfg);
  int want_help = 0, status = 1, rc;
  if ((rc = fl_config_parse(&c->cfg, FL_PROG_COORD, argc, argv, &want_help)) || want_help) {
    if (want_help) {
      fl_config_print_help(stdout, FL_PROG_COORD, "fedlr-coordinator");
      printf("\nLimits: at most --clients clients join; every message is one ZeroMQ frame of at\n"
             "most 4 bytes per model parameter + 64 KiB (ZMQ_MAXMSGSIZE; a larger frame closes\n"
             "its connection); joins from new connections beyond --join-burst at --join-rate per\n"
             "second get a 'busy, retry' answer; a joined client is sampled once it has sent a\n"
             "heartbeat.\n"
             "CurveZMQ: --curve-secret FILE (from fedlr-keygen) with --allow-clients DIR|FILE\n"
             "encrypts everything and admits only the listed client keys; a client is named by\n"
             "its key (DIR/NAME.key, or 'KEY NAME' lines in FILE).\n");
    } else
      fprintf(stderr, "fedlr-coordinator: %s\n", fl_err_msg());
    free(c);
    return want_help ? 0 : 2;
  }
  fl_config_t *cfg = &c->cfg;
  /* --aggregator, which fl_config only stores, parsed once by fl_agg. */
  fl_agg_config_t agg;
  if ((rc = fl_engine_agg_from(&agg, cfg))) {
    fprintf(stderr, "fedlr-coordinator: %s\n", fl_err_msg());
    free(c);
    return 2;
  }
  if (cfg->resume[0] && !cfg->out[0]) snprintf(cfg->out, sizeof cfg->out, "%s", cfg->resume);
  if (cfg->min_clients > cfg->clients || cfg->start_clients > cfg->clients) {
    fprintf(stderr,
            "fedlr-coordinator: --min-clients %u / --start-clients %u exceed --clients %u\n",
            cfg->min_clients, cfg->start_clients, cfg->clients);
    free(c);
    return 2;
  }
  fl_keypair_t kp;
  memset(&kp, 0, sizeof kp);
  if ((status = load_curve(c, &kp)) != 0) goto out;
  status = 1;
  if ((rc = load_test(c))) {
    fprintf(stderr, "fedlr-coordinator: loading test data: %s\n", fl_err_msg());
    goto out;
  }
  rc = fl_engine_config_from(&c->ec, cfg, &agg, c->test->dim, c->test->num_classes, c->test);
  if (rc) {
    fprintf(stderr, "fedlr-coordinator: %s\n", fl_err_msg());
    status = 2;
    goto out;
  }
  c->engine = fl_engine_new(&c->ec, &rc);
  if (!c->engine) {
    fprintf(stderr, "fedlr-coordinator: %s\n", fl_err_msg());
    goto out;
  }
  int append = 0;
  if (cfg->resume[0]) {
    /* Before anything is created: a wrong --resume DIR leaves no trace. */
    char path[FL_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", cfg->resume);
    if (access(path, F_OK) != 0) {
      fprintf(stderr,
              "fedlr-coordinator: --resume %s: no checkpoint.safetensors there (DIR is the --out "
              "of the run to continue)\n",
              cfg->resume);
      goto out;
    }
    /* Exit 2 for FL_EINVAL, a bad flag: one the checkpoint's run did not
     * have, --rounds below its rounds done, a --resume DIR whose checkpoint
     * is not a regular file; 1 for a checkpoint that cannot be used
     * (damaged, or written by an older fedlr). */
    char changes[128];
    if ((rc = fl_checkpoint_load(c->engine, path, changes, sizeof changes))) {
      fprintf(stderr, "fedlr-coordinator: --resume: %s\n", fl_err_msg());
      if (rc == FL_EINVAL) status = 2;
      goto out;
    }
    logf_("resumed from %s after %u rounds%s%s", path, fl_engine_rounds_done(c->engine),
          changes[0] ? "; changed: " : "", changes);
    if (cfg->metrics[0] && (rc = fl_metrics_trim(cfg->metrics, fl_engine_rounds_done(c->engine)))) {
      fprintf(stderr, "fedlr-coordinator: --metrics: %s\n", fl_err_msg());
      goto out;
    }
    append = 1;
  }
  if (cfg->out[0]) {
    if ((rc = fl_file_mkdirs(cfg->out))) {
      fprintf(stderr, "fedlr-coordinator: --out: %s\n", fl_err_msg());
      goto out;
    }
    snprintf(c->ckpt_path, sizeof c->ckpt_path, "%s/checkpoint.safetensors", cfg->out);
  }
  if ((rc = fl_metrics_new(cfg->metrics, append, &c->metrics))) {
    fprintf(stderr, "fedlr-coordinator: --metrics: %s\n", fl_err_msg());
    goto out;
  }
  c->rl =
      fl_ratelog_new(stderr, "fedlr-coordinator: ", reason_names, R_NUM, NOISY_WINDOW_S, NOISY_MAX);
  c->conns = fl_conns_new();
  if (!c->rl || !c->conns) {
    fprintf(stderr, "fedlr-coordinator: out of memory\n");
    goto out;
  }
  c->max_conns = connection_limit(cfg);
  char server_key[FL_KEY_Z85_LEN + 1];
  memcpy(server_key, kp.public_z85, sizeof server_key);
  if ((rc = make_busy_stop(c)) || (rc = setup_socket(c, &kp))) {
    fprintf(stderr, "fedlr-coordinator: %s\n", fl_err_msg());
    goto out;
  }
  if (c->curve)
    logf_("CurveZMQ: encrypted; %zu client keys admitted (--allow-clients %s); this "
          "coordinator's public key is %s",
          fl_allowlist_count(c->allow), cfg->allow_clients, server_key);
  c->run_id = (uint32_t)fl_rng_derive(cfg->seed, 77, (uint64_t)time(NULL), (uint64_t)getpid());
  logf_("OpenBLAS core %s; model %s (%zu parameters); listening on %s; waiting for %u client(s)",
        fl_blas_corename(), c->ec.model.spec, c->ec.model.num_params, cfg->bind,
        cfg->start_clients > cfg->min_clients ? cfg->start_clients : cfg->min_clients);

  if ((rc = setup_loop(c))) {
    fprintf(stderr, "fedlr-coordinator: %s\n", fl_err_msg());
    goto out;
  }
  c->run_t0 = c->join_refill_t = c->wait_since = c->wait_logged = now_s();
  c->join_tokens = cfg->join_burst;
  if (fl_engine_finished(c->engine)) finish_run(c, "the checkpoint's run is already finished", 0);
  uv_run(c->loop, UV_RUN_DEFAULT);
  uv_loop_close(c->loop);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  logf_("exiting (status %d), peak memory %.0f MiB", c->exit_code, (double)ru.ru_maxrss / 1024.0);
  status = c->exit_code;
out:
  explicit_bzero(&kp, sizeof kp);
  if (c->mon) zmq_close(c->mon);
  if (c->sock) zmq_close(c->sock);
  if (c->zap) zmq_close(c->zap);
  if (c->zctx) zmq_ctx_term(c->zctx);
  fl_allowlist_destroy(&c->allow);
  fl_conns_destroy(&c->conns);
  fl_ratelog_destroy(&c->rl);
  free(c->busy_stop);
  free(c->final_stop);
  fl_metrics_destroy(&c->metrics);
  fl_engine_destroy(&c->engine);
  fl_dataset_destroy(&c->test);
  free(c->peers);
  free(c->send_queue);
  free(c);
  return status;
}
