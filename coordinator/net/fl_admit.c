/* fl_admit: see fl_admit.h. */
#include "fl_admit.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "fl_clock.h"
#include "fl_error.h"
#include "fl_wire.h"
#include "fl_zmon.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define MON_ENDPOINT "inproc://fedlr-coordinator-monitor"
#define ZAP_DRAIN_MAX 64  /* ZAP requests per call */
#define MON_DRAIN_MAX 256 /* monitor events per call */

const char *const fl_admit_reasons[FL_ADMIT_R_NUM] = {"client joined",
                                                      "join refused",
                                                      "join over the rate",
                                                      "undecodable message",
                                                      "multipart message",
                                                      "wrong-direction message",
                                                      "message from an unknown peer",
                                                      "rejected update",
                                                      "failed send",
                                                      "failed handshake",
                                                      "wrong security mechanism",
                                                      "connection closed",
                                                      "client state"};

struct fl_admit {
  fl_admit_config_t cfg;
  void *zap, *mon; /* ZAP handler (REP, CURVE only), monitor of the ROUTER (PAIR) */
  int dead;        /* the ZAP handler failed: serve nothing more */
  int ending;      /* the run is over: closed connections are not logged */
  fl_conns_t *conns;
  uint32_t hs_failed_event; /* the last HANDSHAKE_FAILED_* event, for the next DISCONNECTED */
  uint32_t hs_failed_value;
  double join_tokens, join_refill_t;
  uint64_t joins_refused, zap_refused, hs_failed, closed_idle, closed_over;
};

/* A line a peer caused: through the rate limiter. */
#define plog(a, reason, ...) fl_ratelog_printf((a)->cfg.log, (reason), fl_clock_now(), __VA_ARGS__)

/* ZMQ_EVENTS of socket s (ZMQ_POLLIN, ZMQ_POLLOUT bits), -1 if it cannot be
 * read. */
static int sock_events(void *s) {
  int events = 0;
  size_t sz = sizeof events;
  return zmq_getsockopt(s, ZMQ_EVENTS, &events, &sz) == 0 ? events : -1;
}

/* Sends one ZAP reply (RFC 27): version, request id, status, text, user id,
 * empty metadata. */
static int zap_send_reply(fl_admit_t *a, zmq_msg_t *reqid, const char *status, const char *text,
                          const char *user) {
  if (zmq_send(a->zap, "1.0", 3, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_send(a->zap, zmq_msg_data(reqid), zmq_msg_size(reqid), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_send(a->zap, status, strlen(status), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_send(a->zap, text, strlen(text), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_send(a->zap, user, strlen(user), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_send(a->zap, "", 0, ZMQ_DONTWAIT) < 0)
    return -1;
  return 0;
}

/* Answers up to ZAP_DRAIN_MAX requests: frames "1.0", request id, domain,
 * address, routing id, mechanism, then the credentials (CURVE: the client's
 * 32-byte public key). 200 with User-Id = the client's name for a key of
 * the allowlist, 400 for anything else. Returns 1 if it stopped at its
 * bound, FL_EIO if the ZAP socket fails: fatal, since without its handler
 * libzmq would admit every client. */
static int handle_zap(fl_admit_t *a) {
  enum { F_VERSION, F_REQID, F_DOMAIN, F_ADDRESS, F_IDENTITY, F_MECH, F_KEY, F_MAX };
  for (int handled = 0;; handled++) {
    if (a->dead) return 0;
    int events = sock_events(a->zap);
    if (events < 0) return fl_err_set(FL_EIO, "the ZAP handler's socket failed");
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
      if (zmq_msg_recv(dst, a->zap, ZMQ_DONTWAIT) < 0) {
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
      return fl_err_set(FL_EIO, "the ZAP handler cannot receive: %s", zmq_strerror(errno));
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
        name = fl_allowlist_find(a->cfg.allow, zmq_msg_data(&f[F_KEY]));
        why = "key not in --allow-clients";
      }
    }
    int rc =
        zap_send_reply(a, &f[F_REQID], name ? "200" : "400", name ? "OK" : why, name ? name : "");
    if (!name) {
      a->zap_refused++;
      plog(a, FL_ADMIT_R_HANDSHAKE, "refused a CURVE client at %s with key %s: %s", addr, z85, why);
    }
    for (int i = 0; i < F_MAX; i++)
      zmq_msg_close(&f[i]);
    if (rc != 0) return fl_err_set(FL_EIO, "the ZAP handler cannot reply: %s", zmq_strerror(errno));
  }
}

/* Logs why a connection's handshake failed: the failure event comes first,
 * then its DISCONNECTED (with the fd, hence the address). */
static void log_handshake_failure(fl_admit_t *a, const fl_conn_t *cn, double now) {
  const char *addr = cn && cn->addr[0] ? cn->addr : "a peer";
  uint32_t ev = a->hs_failed_event, v = a->hs_failed_value;
  a->hs_failed++;
  if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) return; /* the ZAP handler logged it */
  if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && v == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
    plog(a, FL_ADMIT_R_MECHANISM, "refused a connection from %s: %s", addr,
         a->cfg.allow ? "it does not use CURVE (a plaintext client, without --curve-secret?)"
                      : "it uses CURVE, and this coordinator is plaintext (no --curve-secret)");
  else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && v == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
    plog(a, FL_ADMIT_R_HANDSHAKE,
         "refused a connection from %s: its CURVE handshake failed (a client with the wrong "
         "--coordinator-key?)",
         addr);
  else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
    plog(a, FL_ADMIT_R_HANDSHAKE,
         "refused a connection from %s: ZMTP protocol error 0x%08x in its handshake", addr, v);
  else if (cn && now - cn->since >= 0.9 * a->cfg.handshake_timeout)
    plog(a, FL_ADMIT_R_HANDSHAKE,
         "dropped a connection from %s: no handshake within %g s (--handshake-timeout)", addr,
         a->cfg.handshake_timeout);
  else
    plog(a, FL_ADMIT_R_HANDSHAKE, "a connection from %s closed during its handshake (%s)", addr,
         zmq_strerror((int)v));
}

/* A connection was accepted: tracked, or shut down at once beyond
 * --max-connections (the open-file limit must never be what bites). */
static void on_accepted(fl_admit_t *a, int fd, double now) {
  fl_conn_t *cn = fl_conns_accepted(a->conns, fd, now);
  if (cn && fl_conns_open(a->conns) <= a->cfg.max_connections) return;
  a->closed_over++;
  if (cn) fl_conns_shutdown(a->conns, fd);
  plog(a, FL_ADMIT_R_CONNECTION,
       "closed a connection from %s: %zu connections are open, the limit is %zu "
       "(--max-connections)",
       cn && cn->addr[0] ? cn->addr : "a peer", fl_conns_open(a->conns), a->cfg.max_connections);
}

/* A connection is gone. A client whose connection it was no longer holds
 * one (so the end of the run does not wait for it). A connection that
 * ended after its handshake is logged: ZeroMQ also closes one whose frame
 * is above ZMQ_MAXMSGSIZE, without telling which. */
static void on_disconnected(fl_admit_t *a, int fd, double now) {
  const fl_conn_t *cn = fl_conns_closed(a->conns, fd);
  if (a->hs_failed_event) {
    log_handshake_failure(a, cn, now);
    a->hs_failed_event = 0;
    return;
  }
  if (!cn) return;
  if (a->cfg.closed) a->cfg.closed(a->cfg.ctx, fd);
  if (cn->closing || a->ending) return; /* ours, logged when closed; or the run is over */
  char who[32] = "no client";
  if (cn->client >= 0) snprintf(who, sizeof who, "client %u", (uint32_t)cn->client);
  plog(a, FL_ADMIT_R_CONNECTION,
       "the connection from %s (%s, %" PRIu64 " messages) closed: the peer closed it, or it sent "
       "a frame over the %zu-byte limit (ZMQ_MAXMSGSIZE)",
       cn->addr[0] ? cn->addr : "a peer", who, cn->messages, a->cfg.max_message);
}

/* Closes the connections that have carried no client for --join-timeout:
 * a peer cannot hold descriptors open by connecting and never joining. */
static void close_idle_connections(fl_admit_t *a, double now) {
  for (int fd = -1; fl_conns_next_idle(a->conns, now, a->cfg.join_timeout, &fd);) {
    const fl_conn_t *cn = fl_conns_get(a->conns, fd);
    char addr[FL_CONNS_ADDR_MAX];
    snprintf(addr, sizeof addr, "%s", cn && cn->addr[0] ? cn->addr : "a peer");
    uint64_t msgs = cn ? cn->messages : 0;
    if (fl_conns_shutdown(a->conns, fd) != 0) continue;
    a->closed_idle++;
    plog(a, FL_ADMIT_R_CONNECTION,
         "closed the connection from %s: no client joined on it within %g s (--join-timeout; "
         "%" PRIu64 " messages)",
         addr, a->cfg.join_timeout, msgs);
  }
}

/* Reads up to MON_DRAIN_MAX monitor events of the ROUTER. Returns 1 if it
 * stopped at its bound. */
static int handle_monitor(fl_admit_t *a, double now) {
  for (int handled = 0;; handled++) {
    if (a->dead) return 0;
    int events = sock_events(a->mon);
    if (events < 0 || !(events & ZMQ_POLLIN)) return 0;
    if (handled >= MON_DRAIN_MAX) return 1;
    uint16_t ev;
    uint32_t value;
    if (!fl_zmon_recv(a->mon, &ev, &value)) return 0;

    switch (ev) {
    case ZMQ_EVENT_ACCEPTED: on_accepted(a, (int)value, now); break;
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: a->hs_failed_event = 0; break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
      a->hs_failed_event = ev;
      a->hs_failed_value = value;
      break;
    case ZMQ_EVENT_DISCONNECTED: on_disconnected(a, (int)value, now); break;
    default: break;
    }
  }
}

fl_admit_t *fl_admit_new(const fl_admit_config_t *c, void *zctx, int *err) {
  int rc = FL_ENOMEM, zero = 0;
  fl_admit_t *a = calloc(1, sizeof *a);
  if (!a || !(a->conns = fl_conns_new())) goto fail;
  a->cfg = *c;
  a->join_tokens = c->join_burst;
  a->join_refill_t = fl_clock_now();
  if (c->allow) {
    /* Before the ROUTER binds: a CURVE handshake with no handler on this
     * endpoint succeeds for any client that knows the server key. */
    a->zap = zmq_socket(zctx, ZMQ_REP);
    if (!a->zap || zmq_setsockopt(a->zap, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_bind(a->zap, ZAP_ENDPOINT) != 0) {
      rc = fl_err_set(FL_EIO, "cannot start the ZAP handler on %s: %s", ZAP_ENDPOINT,
                      zmq_strerror(errno));
      goto fail;
    }
  }
  if (!(a->mon = zmq_socket(zctx, ZMQ_PAIR)) ||
      zmq_setsockopt(a->mon, ZMQ_LINGER, &zero, sizeof zero)) {
    rc = fl_err_set(FL_EIO, "cannot create the socket monitor: %s", zmq_strerror(errno));
    goto fail;
  }
  return a;
fail:
  if (rc == FL_ENOMEM) fl_err_set(FL_ENOMEM, "out of memory for the admission");
  if (err) *err = rc;
  fl_admit_destroy(&a);
  return NULL;
}

void fl_admit_destroy(fl_admit_t **pa) {
  fl_admit_t *a = pa ? *pa : NULL;
  if (!a) return;
  if (a->mon) zmq_close(a->mon);
  if (a->zap) zmq_close(a->zap);
  fl_conns_destroy(&a->conns);
  free(a);
  *pa = NULL;
}

int fl_admit_watch(fl_admit_t *a, void *router) {
  int events = ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
  if (zmq_socket_monitor(router, MON_ENDPOINT, events) != 0 || zmq_connect(a->mon, MON_ENDPOINT))
    return fl_err_set(FL_EIO, "cannot monitor the socket: %s", zmq_strerror(errno));
  return 0;
}

void *fl_admit_zap_socket(const fl_admit_t *a) {
  return a->zap;
}
void *fl_admit_monitor_socket(const fl_admit_t *a) {
  return a->mon;
}
fl_conns_t *fl_admit_conns(fl_admit_t *a) {
  return a->conns;
}
void fl_admit_set_ending(fl_admit_t *a) {
  a->ending = 1;
}

int fl_admit_pump(fl_admit_t *a, double now) {
  int more = 0, rc;
  if (a->dead) return 0;
  if (a->zap) {
    if ((rc = handle_zap(a)) < 0) {
      a->dead = 1;
      return rc;
    }
    more |= rc;
  }
  return more | handle_monitor(a, now);
}

void fl_admit_tick(fl_admit_t *a, double now) {
  close_idle_connections(a, now);
}

/* A token bucket: join_burst tokens, refilled at join_rate per second. */
int fl_admit_join(fl_admit_t *a, double now) {
  a->join_tokens += (now - a->join_refill_t) * a->cfg.join_rate;
  if (a->join_tokens > a->cfg.join_burst) a->join_tokens = a->cfg.join_burst;
  a->join_refill_t = now;
  if (a->join_tokens < 1.0) {
    a->joins_refused++;
    return 0;
  }
  a->join_tokens -= 1.0;
  return 1;
}

void fl_admit_summary(const fl_admit_t *a, char *buf, size_t cap) {
  buf[0] = '\0';
  if (a->joins_refused || a->zap_refused || a->hs_failed || a->closed_idle || a->closed_over)
    snprintf(buf, cap,
             "refused: %" PRIu64 " joins over the rate limit, %" PRIu64 " keys by ZAP, %" PRIu64
             " failed handshakes; closed %" PRIu64 " idle connections and %" PRIu64
             " over the limit",
             a->joins_refused, a->zap_refused, a->hs_failed, a->closed_idle, a->closed_over);
}
