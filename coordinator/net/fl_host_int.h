/* fl_host_int.h: what the two halves of the host share (internal to
 * coordinator/net: fl_host.c, the loop, the socket, the run's transport and
 * the end of the run; fl_host_peers.c, the peers, what they send and what
 * is sent to them). Not for anyone else. */
#ifndef FL_HOST_INT_H
#define FL_HOST_INT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>
#include <zmq.h>

#include "fl_admit.h"
#include "fl_clock.h"
#include "fl_host.h"
#include "fl_ratelog.h"
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
  int proven;       /* heartbeat or update on the current connection since its Join: sampleable */
  uint32_t version; /* protocol version of its session (fl_wire_negotiate) */
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
  fl_wire_tensors_t layout; /* the model's tensors, names and shapes: every Welcome's */
  zmq_msg_t eval_msg;       /* the open evaluation's Evaluate, encoded once (have_eval_msg) */
  int have_eval_msg;
  uint32_t eval_msg_round;
  uint8_t *busy_stop; /* encoded once: Stop{rejoin} for joins over the rate */
  size_t busy_stop_len;
  uint8_t *final_stop; /* encoded once: the Stop that ends the run, for every late peer */
  size_t final_stop_len;
  int stopping;   /* the run is over; waiting (up to stop_deadline) for peers to hear it */
  int closed;     /* the loop's handles are closing: nothing more is read */
  int loop_ready; /* every handle of the loop is initialized */
  double stop_t0, stop_quiet_since, stop_deadline;
};

/* A line a peer caused: through the rate limiter (see fl_ratelog.h). */
#define plog(h, reason, ...) fl_ratelog_printf((h)->rl, (reason), fl_clock_now(), __VA_ARGS__)

/* fl_host_peers.c */
void fl_host__log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *fl_host__rid_hex(const uint8_t *rid, size_t len, char *buf, size_t cap);
const char *fl_host__label(const fl_host_t *h, uint32_t id, char *buf, size_t cap);
void fl_host__tell_run(fl_host_t *h, uint32_t id);
void fl_host__send_copy_quiet(fl_host_t *h, const uint8_t *rid, size_t rid_len, const uint8_t *buf,
                              size_t len);
void fl_host__pump_round_starts(fl_host_t *h);
void fl_host__release_ack(fl_host_t *h, uint32_t id);
/* Every message from a peer: `fd` its connection's descriptor (ZMQ_SRCFD),
 * `uid` the connection's authenticated name under CURVE, else NULL. */
void fl_host__handle_message(fl_host_t *h, const uint8_t *rid, size_t rid_len, int fd,
                             const char *uid, const uint8_t *buf, size_t len);

#endif
