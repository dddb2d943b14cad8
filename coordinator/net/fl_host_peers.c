/* fl_host_peers.c: the host's peers, what they send and what is sent to
 * them (see fl_host.h; fl_host_int.h for what is shared with fl_host.c). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "fl_error.h"
#include "fl_host_int.h"

/* ---- logs ---- */

void fl_host__log(const char *fmt, ...) {
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "fedlr-coordinator: %s\n", line);
}

/* A printable name for a routing id (hex), for logs about unknown peers. */
const char *fl_host__rid_hex(const uint8_t *rid, size_t len, char *buf, size_t cap) {
  size_t at = 0;
  for (size_t i = 0; i < len && at + 3 < cap; i++)
    at += (size_t)snprintf(buf + at, cap - at, "%02x", rid[i]);
  buf[at] = '\0';
  return buf;
}

const char *fl_host__label(const fl_host_t *h, uint32_t id, char *buf, size_t cap) {
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
void fl_host__tell_run(fl_host_t *h, uint32_t id) {
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
      fl_host__label(h, (uint32_t)pid, who, sizeof who);
    else
      snprintf(who, sizeof who, "peer %s", fl_host__rid_hex(rid, rid_len, hex, sizeof hex));
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
void fl_host__send_copy_quiet(fl_host_t *h, const uint8_t *rid, size_t rid_len, const uint8_t *buf,
                              size_t len) {
  if (!buf) return;
  if (zmq_send(h->sock, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_send(h->sock, buf, len, ZMQ_DONTWAIT) < 0) {
    fl_ratelog_count(h->rl, FL_ADMIT_R_SEND_FAILED, fl_clock_now());
    return;
  }
  fl_run_account(h->run, len, 0);
}

/* `versions`: the Stop lists the versions this run admits (all this
 * coordinator speaks, or from fl_wire_min_run_version on: a FedProx run, a
 * CNN on an image an older client would not infer). */
static void send_stop_versions(fl_host_t *h, const uint8_t *rid, size_t rid_len, const char *reason,
                               int error, int rejoin, int versions) {
  Fedlr__Stop st = FEDLR__STOP__INIT;
  st.reason = (char *)reason;
  st.error = error;
  st.rejoin = rejoin;
  uint32_t admitted[FL_WIRE_PROTOCOL_VERSION - FL_WIRE_MIN_PROTOCOL_VERSION + 1];
  if (versions) {
    for (uint32_t v = fl_wire_min_run_version((float)h->cfg->prox_mu, fl_engine_model(h->engine));
         v <= FL_WIRE_PROTOCOL_VERSION; v++)
      admitted[st.n_supported_versions++] = v;
    st.supported_versions = admitted;
  }
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_STOP;
  env.stop = &st;
  send_env(h, rid, rid_len, &env);
}

static void send_stop(fl_host_t *h, const uint8_t *rid, size_t rid_len, const char *reason,
                      int error, int rejoin) {
  send_stop_versions(h, rid, rid_len, reason, error, rejoin, 0);
}

static void send_round_start(fl_host_t *h, uint32_t id) {
  peer_t *p = &h->peers[id];
  if (!p->rid_len) return;
  uint8_t *buf;
  size_t len;
  if (fl_engine_encode_round_start(h->engine, id, &buf, &len) != 0) {
    fl_host__log("cannot encode round start: %s", fl_err_msg());
    return;
  }
  send_owned(h, p->rid, p->rid_len, buf, len);
}

/* Sends queued RoundStarts while fewer than SEND_WINDOW are unacknowledged;
 * ids no longer sampled (a closed round's) are skipped. */
void fl_host__pump_round_starts(fl_host_t *h) {
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
void fl_host__release_ack(fl_host_t *h, uint32_t id) {
  if (!h->peers[id].awaiting_ack) return;
  h->peers[id].awaiting_ack = 0;
  h->in_flight--;
  fl_host__pump_round_starts(h);
}

/* ---- receiving ---- */

/* Refuses a Join with a Stop{error} that says why (never naming another
 * client), and logs it; `versions`: the Stop lists the versions admitted. */
static void refuse_join_v(fl_host_t *h, const uint8_t *rid, size_t rid_len, const char *uid,
                          const char *name, const char *reason, int versions) {
  char hex[2 * RID_MAX + 1], esc[4 * FL_WIRE_MAX_NAME + 8];
  plog(h, FL_ADMIT_R_JOIN_REFUSED, "refused a join as '%s' from %s%s%s: %s",
       fl_wire_escape(name, strlen(name), FL_WIRE_MAX_NAME, esc, sizeof esc),
       fl_host__rid_hex(rid, rid_len, hex, sizeof hex), uid ? ", key of " : "", uid ? uid : "",
       reason);
  send_stop_versions(h, rid, rid_len, reason, 1, 0, versions);
}

static void refuse_join(fl_host_t *h, const uint8_t *rid, size_t rid_len, const char *uid,
                        const char *name, const char *reason) {
  refuse_join_v(h, rid, rid_len, uid, name, reason, 0);
}

static void send_welcome(fl_host_t *h, const uint8_t *rid, size_t rid_len, uint32_t id) {
  const fl_model_spec_t *m = fl_engine_model(h->engine);
  char run_id[16];
  snprintf(run_id, sizeof run_id, "%08x", h->run_id);
  Fedlr__Welcome w = FEDLR__WELCOME__INIT;
  w.client_id = id;
  w.run_id = run_id;
  w.model = (char *)m->spec;
  uint32_t shape[3] = {(uint32_t)m->in_c, (uint32_t)m->in_h, (uint32_t)m->in_w};
  if (fl_model_is_builtin(m)) {
    w.input_dim = (uint32_t)m->dims[0];
    w.num_classes = (uint32_t)m->dims[m->num_layers];
    if (m->in_c && h->peers[id].version >= FL_WIRE_SHAPE_VERSION) {
      w.n_input_shape = 3;
      w.input_shape = shape;
    }
  }
  w.heartbeat_ms = (uint32_t)(h->cfg->heartbeat * 1000.0);
  w.rounds = h->cfg->rounds;
  w.protocol_version = h->peers[id].version;
  w.n_layout = h->layout.n;
  w.layout = h->layout.ptrs;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_WELCOME;
  env.welcome = &w;
  send_env(h, rid, rid_len, &env);
}

/* A Join on the connection (rid, fd); `uid` is its authenticated name
 * under CURVE, else NULL. */
static void handle_join(fl_host_t *h, const uint8_t *rid, size_t rid_len, int fd, const char *uid,
                        const Fedlr__Join *j) {
  uint32_t id, version = 0;
  int rc;
  char reason[512];
  /* A FedProx run admits only clients that read RoundStart.prox_mu: an
   * older one would train without the proximal term and say nothing; a
   * CNN on an image an older client would not infer, only clients that
   * read Welcome.input_shape. */
  if (fl_wire_negotiate(j->protocol_version, j->min_protocol_version, &version) != 0 ||
      fl_wire_check_run_version(version, j->protocol_version, h->cfg->prox_mu,
                                fl_engine_model(h->engine)) != 0) {
    snprintf(reason, sizeof reason, "join refused: %s", fl_err_msg());
    refuse_join_v(h, rid, rid_len, uid, j->name, reason, 1);
    return;
  }
  if (uid && strcmp(j->name, uid) != 0)
    /* Under CURVE the key is the identity: the name only has to agree. */
    rc = fl_err_set(FL_EPROTO,
                    "this client's key is '%s' in the coordinator's --allow-clients, but it "
                    "joined as '%s': run it with --name %s, or without --name",
                    uid, j->name, uid);
  else
    rc = fl_run_register(h->run, j->name, j->num_examples, version >= 2 ? j->num_eval_examples : 0,
                         j->want_slot, j->slot, &id);
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
    fl_host__tell_run(h, (uint32_t)other);
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
  p->version = version;
  bind_conn(h, fd, id);
  p->alive = 1;
  p->last_seen = fl_clock_now();
  char label[300];
  plog(h, FL_ADMIT_R_JOIN, "client %s joined with %" PRIu64 " examples%s (%zu ready)",
       fl_host__label(h, id, label, sizeof label), j->num_examples, was_alive ? " (rejoin)" : "",
       fl_engine_num_available(h->engine));
  send_welcome(h, rid, rid_len, id);
  /* A sampled client that reconnects mid-round gets its round again. */
  if (fl_engine_is_sampled(h->engine, id) && !fl_engine_has_reported(h->engine, id))
    send_round_start(h, id);
  fl_host__tell_run(h, id);
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
    fl_host__send_copy_quiet(h, rid, rid_len, h->busy_stop, h->busy_stop_len);
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
  if (!was_alive || (!was_ready && p->proven)) fl_host__tell_run(h, (uint32_t)pid);
}

static void handle_heartbeat(fl_host_t *h, const uint8_t *rid, size_t rid_len, long pid,
                             const char *who, const Fedlr__Heartbeat *hb) {
  if (pid < 0) {
    plog(h, FL_ADMIT_R_UNKNOWN_PEER, "a heartbeat from %s, which has not joined: asked to join",
         who);
    send_stop(h, rid, rid_len, "unknown client: join again", 0, 1);
    return;
  }
  if (hb->round == fl_engine_round(h->engine)) fl_host__release_ack(h, (uint32_t)pid);
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
void fl_host__handle_message(fl_host_t *h, const uint8_t *rid, size_t rid_len, int fd,
                             const char *uid, const uint8_t *buf, size_t len) {
  fl_run_account(h->run, 0, len);
  fl_conn_t *cn = fl_conns_get(fl_admit_conns(h->admit), fd);
  if (cn) cn->messages++;
  if (h->stopping) {
    /* The run is over: whoever speaks now (a client that missed the Stop
     * and rejoins, say) hears it again. */
    fl_host__send_copy_quiet(h, rid, rid_len, h->final_stop, h->final_stop_len);
    return;
  }
  long pid = find_peer(h, rid, rid_len);
  char who[2 * RID_MAX + FL_CONNS_ADDR_MAX + 64], hex[2 * RID_MAX + 1];
  if (pid >= 0)
    fl_host__label(h, (uint32_t)pid, who, sizeof who);
  else
    snprintf(who, sizeof who, "unknown peer %s%s%s%s%s%s",
             fl_host__rid_hex(rid, rid_len, hex, sizeof hex), cn && cn->addr[0] ? " at " : "",
             cn ? cn->addr : "", uid ? " (CURVE key of " : "", uid ? uid : "", uid ? ")" : "");
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
      fl_host__send_copy_quiet(h, rid, rid_len, h->busy_stop, h->busy_stop_len);
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
      fl_host__release_ack(h, (uint32_t)pid); /* an update also acknowledges its round start */
      fl_run_update(h->run, (uint32_t)pid, env->update);
    }
    break;
  case FEDLR__ENVELOPE__BODY_EVAL_RESULT:
    if (pid < 0) {
      plog(h, FL_ADMIT_R_UNKNOWN_PEER,
           "dropped an evaluation result from %s: not joined (asked to join again)", who);
      send_stop(h, rid, rid_len, "unknown client: join again", 0, 1);
    } else {
      fl_run_eval_result(h->run, (uint32_t)pid, env->eval_result);
    }
    break;
  default:
    plog(h, FL_ADMIT_R_WRONG_KIND, "dropped a message of kind %d from %s: clients may not send it",
         (int)env->body_case, who);
    break;
  }
  fl_wire_free(&env);
}
