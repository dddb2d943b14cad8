/* fl_host: the run driver (fl_run) served over ZeroMQ on a libuv loop.
 *
 * One ROUTER socket: its ZMQ_FD is polled with uv_poll (edge-triggered:
 * after every wake-up and every send the host drains while ZMQ_EVENTS says
 * POLLIN, at most DRAIN_MAX messages per wake-up, an idle handle bringing
 * the loop back for the rest, so timers and updates progress under a
 * flood); a 250 ms tick checks liveness and ticks the run; a one-shot timer
 * is the round's deadline; SIGINT/SIGTERM stop the run gracefully.
 *
 * The host keeps the peers (a client id's connection: routing id, fd,
 * liveness, whether it has proven itself live since its Join) and turns
 * their messages into the run's events: a Join registers (fl_run_register,
 * answered with a Welcome or a Stop that says why; the protocol version is
 * negotiated per session, fl_wire_negotiate, and a FedProx run, --prox-mu
 * above 0, admits sessions of version 3 or later only,
 * fl_wire_check_run_version), heartbeats keep a client
 * alive and acknowledge its RoundStart, updates go to fl_run_update and
 * evaluation results to fl_run_eval_result. It sends what the run asks:
 * RoundStarts through a window of SEND_WINDOW unacknowledged ones (each is
 * a copy of the model: without the window a round sampling 100 clients
 * would queue 100 copies at once); Evaluates, one encoded message shared
 * by reference (zmq_msg_copy) among the round's evaluators; and at the end
 * the final Stop, to everyone who speaks until no connection has been open
 * for a moment (bounded), so that every client hears it.
 *
 * Admission (CurveZMQ's ZAP handler, the socket monitor, idle and
 * over-the-limit connections, the join rate) is fl_admit's; every log line
 * a peer can cause goes through one fl_ratelog. */
#ifndef FL_HOST_H
#define FL_HOST_H

#include "fl_config.h"
#include "fl_keys.h"
#include "fl_run.h"

typedef struct {
  const fl_config_t *cfg;      /* the coordinator's flags (borrowed for the host's life) */
  const fl_allowlist_t *allow; /* CurveZMQ: the admitted client keys, or NULL (plaintext) */
  fl_keypair_t *keys;          /* CurveZMQ: this coordinator's key pair; wiped by fl_host_new */
} fl_host_config_t;

typedef struct fl_host fl_host_t;

/* Creates the host of run `run` (borrowed; the host becomes its transport):
 * the ZeroMQ context, admission, the ROUTER bound to cfg->bind, the loop.
 * NULL with *err and a detail (fl_err_msg) on failure. */
fl_host_t *fl_host_new(const fl_host_config_t *hc, fl_run_t *run, int *err);

/* Starts the run and serves it until it is over and its end delivered.
 * Returns the run's exit status (FL_RUN_*). */
int fl_host_run(fl_host_t *h);

/* Closes the sockets (linger 2 s, so the final Stops go out) and the
 * context. NULL-safe. */
void fl_host_destroy(fl_host_t **h);

#endif
