/* fl_session: a networked client's conversation with its coordinator.
 *
 * One DEALER socket, one thread, no background work: the session joins,
 * trains each round it is sent (fl_trainer), sends the update, and keeps a
 * heartbeat going every heartbeat_ms, idle or training (from the trainer's
 * tick, on the same socket). Every message is one fedlr.Envelope in one
 * ZeroMQ frame; everything received goes through fl_wire_decode() with
 * control-message limits until a Welcome names the model, model limits
 * after. A peer can make the session log and ignore a message, rejoin, or
 * end; never crash.
 *
 * Liveness: if nothing arrives from the coordinator for
 * max(5 heartbeats, 3 s) (2 s while waiting for a Welcome), the session
 * assumes it restarted or is unreachable: it opens a fresh socket (dropping
 * whatever queued for the silent peer) and sends Join again, backing off
 * 0.5 s, 1 s, 2 s, ... up to 10 s between Joins; anything received resets
 * the backoff. A Stop{rejoin} (the coordinator does not know us) sends Join
 * on the live connection. With give_up > 0, once nothing at all has arrived
 * for give_up seconds (counted from fl_session_run() until the first
 * message, so an absent coordinator counts too) the session ends with
 * FL_SESSION_GAVE_UP instead of rejoining forever. A round being trained is
 * finished first: the coordinator's answers to the heartbeats sent while
 * training are read only afterwards, so the bound is checked between
 * rounds. The transport reconnects by itself (100 ms .. 5 s exponential).
 * Sends never block: a Join or update that cannot be queued is retried, a
 * heartbeat is dropped.
 *
 * CurveZMQ: with keys in the config the socket is a CURVE client of the
 * coordinator's public key. A monitor on the socket watches the handshakes:
 * the coordinator refusing our key (ZAP status 400), a mechanism mismatch
 * (one side plaintext), or, under CURVE, SESSION_HS_FAILURES handshakes in
 * a row failing without one succeeding (a wrong coordinator key) end the
 * session with FL_SESSION_AUTH_FAILED instead of retrying forever.
 */
#ifndef FL_SESSION_H
#define FL_SESSION_H

#include <stdint.h>

#include "fl_trainer.h"

typedef struct fl_session fl_session_t;

typedef struct {
  const char *endpoint; /* e.g. "tcp://127.0.0.1:7070" */
  const char *name;     /* Join name: see fl_wire_check_name() */
  int want_slot;        /* ask for client id `slot` (the partition index) */
  uint32_t slot;
  int quiet;        /* no per-round lines */
  int interrupt_fd; /* readable = stop now (e.g. a signal self-pipe); -1 = none */
  /* CurveZMQ: all three Z85 keys, or all NULL for plaintext. Copied. */
  const char *curve_public, *curve_secret; /* this client's key pair */
  const char *server_key;                  /* the coordinator's public key */
  double handshake_timeout;                /* s, 0 = libzmq's default (30 s) */
  double give_up; /* s without any message from the coordinator before giving up; 0 = never */
} fl_session_config_t;

/* How fl_session_run() ended (>= 0), or a negative FL_E* code. */
enum {
  FL_SESSION_DONE = 0,        /* Stop{error=false}: the run is over */
  FL_SESSION_REFUSED = 1,     /* Stop{error=true} or an unusable Welcome (model, shapes) */
  FL_SESSION_INTERRUPTED = 2, /* interrupt_fd became readable */
  FL_SESSION_AUTH_FAILED = 3, /* the handshake was refused or kept failing (fl_err_msg()) */
  FL_SESSION_GAVE_UP = 4      /* nothing from the coordinator for give_up s (fl_err_msg()) */
};

/* A session for the examples in `shard` (borrowed: must outlive the
 * session). Creates its own ZeroMQ context and connects (connecting never
 * waits for the peer). Strings in `c` are copied. Returns NULL with the
 * code in *err and a detail in fl_err_msg() on failure (FL_EINVAL for a bad
 * name, endpoint, keys, or a give_up that is negative or not finite). */
fl_session_t *fl_session_new(const fl_session_config_t *c, const fl_shard_t *shard, int *err);

/* Runs until the coordinator ends the run or refuses us, the handshake
 * fails for good, the coordinator stays silent for give_up seconds, or
 * interrupt_fd is readable. Progress and every event go to stderr, one line
 * each, prefixed "fedlr-client[NAME]: ". The reason of a REFUSED end is in fl_err_msg(). */
int fl_session_run(fl_session_t *s);

/* Closes the socket (linger 1 s) and terminates the context. NULL-safe. */
void fl_session_destroy(fl_session_t **s);

#endif
