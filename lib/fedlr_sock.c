/* fedlr_sock: libfedlr's connection to its coordinator, a ZeroMQ DEALER
 * socket with its options (see fedlr_internal.h), and the watch on its
 * handshakes.
 *
 * CurveZMQ: with keys the socket is a CURVE client of the coordinator's
 * public key. A monitor on the socket watches the handshakes: the
 * coordinator refusing our key (ZAP status 400), a mechanism mismatch (one
 * side plaintext), or, under CURVE, SOCK_HS_FAILURES handshakes in a row
 * failing without one succeeding (a wrong coordinator key) are refusals
 * that retrying cannot change: fedlr__sock_watch() says so, and the
 * session ends with FEDLR_AUTH_FAILED instead of retrying forever. Used by
 * the I/O thread only. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <zmq.h>

#include "fedlr_internal.h"
#include "fl_error.h"
#include "fl_zmon.h"

#define SOCK_HS_FAILURES 3 /* CURVE handshakes failing in a row before giving up */
#define SOCK_DRAIN_MAX 256 /* monitor events read per call */

#define SLOG(level, ...) fedlr__log(st, sh, level, __VA_ARGS__)

/* ---- the handshake watch ---- */

static int auth_failed(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int auth_failed(const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fl_err_set(FL_EPROTO, "%s", msg);
  return FEDLR_AUTH_FAILED;
}

/* One monitor event of the socket. Refusals that will not change by
 * retrying end the session; under CURVE, so do IO_HS_FAILURES failures in
 * a row (the coordinator drops a client that encrypted for another key
 * without a word). */
static int on_monitor_event(fedlr__sock_t *k, const fedlr__settings_t *st, fedlr__shared_t *sh,
                            uint16_t ev, uint32_t value) {
  const char *ep = st->endpoint;
  switch (ev) {
  case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: k->hs_fails = 0; return 0;
  case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
    if (value == 400) {
      return auth_failed(
          "the coordinator at %s refused this client's key (ZAP status 400): its public "
          "key is not in the coordinator's --allow-clients",
          ep);
    }
    SLOG(FEDLR_LOG_WARN, "the coordinator at %s could not check this client's key (ZAP status %u)",
         ep, value);
    break;
  case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
    if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
      if (st->curve)
        return auth_failed("the coordinator at %s does not use CurveZMQ (it runs without "
                           "--curve-secret): refusing to talk to it in plaintext",
                           ep);
      else
        return auth_failed("the coordinator at %s requires CurveZMQ: run this client with "
                           "--curve-secret FILE and --coordinator-key KEY",
                           ep);
    }
    SLOG(FEDLR_LOG_WARN, "handshake with %s failed: ZMTP protocol error 0x%08x", ep, value);
    break;
  case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
    if (st->curve)
      SLOG(FEDLR_LOG_WARN, "CURVE handshake with %s failed (%s)", ep, zmq_strerror((int)value));
    break;
  default: return 0;
  }
  if (!st->curve) return 0; /* plaintext: a transient failure; the transport retries */
  if (++k->hs_fails >= SOCK_HS_FAILURES)
    return auth_failed("the CURVE handshake with the coordinator at %s failed %u times in a row: "
                       "--coordinator-key is probably not the coordinator's public key",
                       ep, k->hs_fails);
  return 0;
}

int fedlr__sock_watch(fedlr__sock_t *k, const fedlr__settings_t *st, fedlr__shared_t *sh) {
  uint16_t ev;
  uint32_t value;
  for (int i = 0; i < SOCK_DRAIN_MAX && k->mon; i++) {
    if (!fl_zmon_recv(k->mon, &ev, &value)) return 0;
    int rc = on_monitor_event(k, st, sh, ev, value);
    if (rc) return rc;
  }
  return 0;
}

/* ---- the socket ---- */

static int set_options(void *sock, const fedlr__settings_t *st) {
  int linger = 1000, ivl = 100, ivl_max = 5000;
  /* Transport heartbeats (answered by the peer's I/O thread) drop a
   * half-open connection, e.g. to a coordinator host that vanished, so the
   * transport reconnects instead of writing into a dead TCP stream. */
  int zhb_ivl = 1000, zhb_timeout = 5000;
  int64_t maxmsg = (int64_t)FEDLR__MAX_MSGSIZE;
  if (st->handshake_ms > 0 &&
      zmq_setsockopt(sock, ZMQ_HANDSHAKE_IVL, &st->handshake_ms, sizeof st->handshake_ms))
    return fl_err_set(FL_EINVAL, "cannot set socket options: %s", zmq_strerror(errno));
  if (st->curve && (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, st->server_key, FEDLR__KEY_LEN) ||
                    zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, st->curve_public, FEDLR__KEY_LEN) ||
                    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, st->curve_secret, FEDLR__KEY_LEN)))
    return fl_err_set(FL_EINVAL, "cannot set the CURVE keys: %s", zmq_strerror(errno));
  if (zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger) ||
      zmq_setsockopt(sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl) ||
      zmq_setsockopt(sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max) ||
      zmq_setsockopt(sock, ZMQ_HEARTBEAT_IVL, &zhb_ivl, sizeof zhb_ivl) ||
      zmq_setsockopt(sock, ZMQ_HEARTBEAT_TIMEOUT, &zhb_timeout, sizeof zhb_timeout) ||
      zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg))
    return fl_err_set(FL_EINVAL, "cannot set socket options: %s", zmq_strerror(errno));
  return 0;
}

/* A new DEALER connected to the endpoint (connecting never waits). The
 * default ZMQ_IMMEDIATE=0 is deliberate: the pipe then survives
 * reconnects, so a message the coordinator sent just before it exited (the
 * final Stop) is still read after the connection drops; with IMMEDIATE=1
 * libzmq discards it on disconnect. */
int fedlr__sock_open(fedlr__sock_t *k, void *ctx, const fedlr__settings_t *st) {
  k->sock = zmq_socket(ctx, ZMQ_DEALER);
  if (!k->sock)
    return fl_err_set(FL_ENOMEM, "cannot create a ZeroMQ socket: %s", zmq_strerror(errno));
  int rc = set_options(k->sock, st);
  if (rc) return rc;
  /* The monitor before connecting, so that no handshake event is missed. */
  char mon_ep[96];
  snprintf(mon_ep, sizeof mon_ep, "inproc://fedlr-monitor-%p-%u", (void *)k, k->mon_seq++);
  if (zmq_socket_monitor(k->sock, mon_ep,
                         ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0 ||
      !(k->mon = zmq_socket(ctx, ZMQ_PAIR)) ||
      zmq_setsockopt(k->mon, ZMQ_LINGER, &(int){0}, sizeof(int)) || zmq_connect(k->mon, mon_ep))
    return fl_err_set(FL_EIO, "cannot monitor the socket: %s", zmq_strerror(errno));
  if (zmq_connect(k->sock, st->endpoint) != 0)
    return fl_err_set(FL_EINVAL, "--connect %s: %s", st->endpoint, zmq_strerror(errno));
  return 0;
}

void fedlr__sock_close(fedlr__sock_t *k, int linger) {
  if (k->mon) {
    zmq_close(k->mon);
    k->mon = NULL;
  }
  if (!k->sock) return;
  zmq_socket_monitor(k->sock, NULL, 0);
  zmq_setsockopt(k->sock, ZMQ_LINGER, &linger, sizeof linger);
  zmq_close(k->sock);
  k->sock = NULL;
}
