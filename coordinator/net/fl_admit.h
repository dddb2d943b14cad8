/* fl_admit: who gets to talk to the coordinator, and how much.
 *
 * The ZeroMQ host (fl_host) owns the ROUTER socket and the clients; this
 * module owns what stands before them:
 *   - the ZAP handler (CurveZMQ): a REP socket on inproc://zeromq.zap.01,
 *     bound before the ROUTER (libzmq admits every client when no handler
 *     is there), that admits the keys of the allowlist with User-Id = the
 *     client's name and refuses the rest;
 *   - the ROUTER's socket monitor: the table of open connections
 *     (fl_conns), connections beyond max_connections closed at once, idle
 *     ones (no client joined on them) closed after join_timeout, failed
 *     handshakes and closed connections logged;
 *   - the join token bucket (join_burst at once, join_rate per second);
 *   - the log reasons: every line a peer can cause goes through one
 *     fl_ratelog, by reason (FL_ADMIT_R_*).
 * It knows nothing of rounds or the run. Not thread-safe (the host's loop). */
#ifndef FL_ADMIT_H
#define FL_ADMIT_H

#include <stddef.h>
#include <stdint.h>

#include "fl_conns.h"
#include "fl_keys.h"
#include "fl_ratelog.h"

/* Why a peer made the coordinator write a log line: each reason has its own
 * budget in the rate limiter. */
enum {
  FL_ADMIT_R_JOIN,         /* a client joined or rejoined */
  FL_ADMIT_R_JOIN_REFUSED, /* a Join refused (name, version, slot, full) */
  FL_ADMIT_R_JOIN_RATE,    /* Joins over --join-rate */
  FL_ADMIT_R_BAD_MESSAGE,  /* undecodable */
  FL_ADMIT_R_MULTIPART,    /* more than one frame */
  FL_ADMIT_R_WRONG_KIND,   /* a message only the coordinator sends */
  FL_ADMIT_R_UNKNOWN_PEER, /* a heartbeat or update from a peer that has not joined */
  FL_ADMIT_R_REJECTED,     /* an update rejected, a client dropped or quarantined */
  FL_ADMIT_R_SEND_FAILED,  /* a send that ZeroMQ refused (peer gone or not reading) */
  FL_ADMIT_R_HANDSHAKE,    /* ZAP refusals and failed handshakes */
  FL_ADMIT_R_MECHANISM,    /* a handshake in the other security mechanism (plaintext against
                            * CURVE or the reverse): a misconfigured client retries it without
                            * end, and must not crowd out the other handshake lines */
  FL_ADMIT_R_CONNECTION,   /* connections closed: idle, over the limit, by the peer */
  FL_ADMIT_R_PEER_STATE,   /* a client dead or alive again, a message on another's key */
  FL_ADMIT_R_NUM
};
/* Their names, for the rate limiter's summaries. */
extern const char *const fl_admit_reasons[FL_ADMIT_R_NUM];

typedef struct {
  const fl_allowlist_t *allow; /* CurveZMQ: the admitted keys (borrowed); NULL = plaintext */
  double join_rate;            /* joins per second admitted on average */
  uint32_t join_burst;         /* joins admitted at once */
  double join_timeout;         /* s a connection may carry no client */
  size_t max_connections;      /* open at once */
  double handshake_timeout;    /* s (for the log of a dropped handshake) */
  size_t max_message;          /* bytes of a frame (for the log of a closed connection) */
  fl_ratelog_t *log;           /* borrowed */
  /* A connection closed (its fd may be reused from now on). */
  void (*closed)(void *ctx, int fd);
  void *ctx;
} fl_admit_config_t;

typedef struct fl_admit fl_admit_t;

/* Creates the admission of context zctx; with an allowlist it binds the ZAP
 * handler now, before any socket of zctx binds. NULL with *err and a detail
 * on failure. */
fl_admit_t *fl_admit_new(const fl_admit_config_t *c, void *zctx, int *err);
void fl_admit_destroy(fl_admit_t **a);

/* Starts monitoring the ROUTER socket `router` (before it binds). */
int fl_admit_watch(fl_admit_t *a, void *router);

/* The ZeroMQ sockets to poll: the ZAP handler (NULL when plaintext) and the
 * monitor. */
void *fl_admit_zap_socket(const fl_admit_t *a);
void *fl_admit_monitor_socket(const fl_admit_t *a);

/* Serves the ZAP handler and the monitor, each up to a bound per call.
 * Returns 1 if it stopped at a bound (call again soon), 0 if both are
 * drained, or FL_EIO if the ZAP handler failed: fatal, since without it
 * libzmq would admit any client (fl_err_msg says which). */
int fl_admit_pump(fl_admit_t *a, double now);

/* Closes the connections idle for join_timeout (call it every tick). */
void fl_admit_tick(fl_admit_t *a, double now);

/* Spends a join token: 1 if a Join may go on, 0 if over the rate (counted). */
int fl_admit_join(fl_admit_t *a, double now);

/* The open connections (the host binds them to clients and counts their
 * messages). */
fl_conns_t *fl_admit_conns(fl_admit_t *a);

/* The run is over: connections that close from now on are not logged. */
void fl_admit_set_ending(fl_admit_t *a);

/* One line of what was refused over the run ("refused: 12 joins over the
 * rate limit, ..."), or "" if nothing. */
void fl_admit_summary(const fl_admit_t *a, char *buf, size_t cap);

#endif
