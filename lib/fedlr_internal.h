/* lib/: libfedlr, the C client library (include/fedlr.h is its contract).
 *
 * What lives here: the library's public functions (fedlr_*) and its
 * internals (fedlr__*, hidden: the .so exports only fedlr_*):
 *   fedlr_io.c       the I/O thread: Join/Welcome, heartbeats, liveness,
 *                    rejoin and backoff, the job queue for the caller's
 *                    thread
 *   fedlr_sock.c     its DEALER socket: options, CURVE keys, the handshake
 *                    watch
 *   fedlr_client.c   fedlr_client_new/run/stop/destroy: the caller's thread,
 *                    which runs the callbacks and encodes Update/EvalResult
 *   fedlr_tensors.c  tensors and layouts, schedules, rounds, metrics, errors
 * What it may touch: common/ (compiled into the library: the codec fl_wire,
 * fl_sched, fl_layout, fl_keys, fl_error, the generated protobuf code) and
 * ZeroMQ. Never client/, coordinator/ or sim/: fedlr-client is built on
 * this library, not the other way round.
 *
 * Threads: the I/O thread owns the DEALER socket and its monitor; the
 * caller's thread owns everything the callbacks see. They talk over an
 * inproc PAIR: the caller's thread asks for work (RUN_NEXT), the I/O thread
 * answers with one job (io_job_t: Welcome, RoundStart, Evaluate, or the
 * end); results go back as encoded messages (RUN_SEND). Only the atomics
 * of fedlr__shared_t are read by both while they run. */
#ifndef FEDLR_INTERNAL_H
#define FEDLR_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "fedlr.h"
#include "fl_keys.h"
#include "fl_layout.h"
#include "fl_model.h"
#include "fl_sched.h"
#include "fl_wire.h"

#define FEDLR__KEY_LEN 40 /* a Z85 key */
/* ZMQ_MAXMSGSIZE applies to connections made after it is set, and the
 * model is known only after connecting: one generous bound for the
 * session's lifetime (a 64M-parameter model), checked against the model's
 * own limit at each Welcome. */
#define FEDLR__MAX_MSGSIZE ((size_t)256 << 20)

struct fedlr_tensors {
  fl_layout_t *layout; /* owned */
  float *values;       /* layout->num_params floats, owned; NULL: a layout only */
  size_t cap;          /* floats allocated */
};

struct fedlr_schedule {
  fl_sched_t s;
};

/* A copy of a layout, with zeroed values if with_values. NULL and an
 * fl_err_msg() on failure. */
fedlr_tensors *fedlr__tensors_from_layout(const fl_layout_t *l, int with_values);

/* A model as a Welcome gives it: its name, its layout and the spec over
 * that layout (fl_model_custom), which fl_wire_check_tensors() and
 * fl_wire_limits_for_model() take whatever the model is. */
typedef struct {
  char name[FL_WIRE_MAX_STRING];
  fl_layout_t *layout; /* owned */
  fl_model_spec_t spec;
} fedlr__model_t;

/* Builds *m from a Welcome's layout (protocol versions 2 and 3).
 * FL_EUNSUPPORTED for another version, FL_EINVAL/FL_ETOOBIG for a bad
 * layout. */
int fedlr__model_from_welcome(const Fedlr__Welcome *w, fedlr__model_t *m);
void fedlr__model_clear(fedlr__model_t *m);

/* What the session was asked: the checked, copied configuration. */
typedef struct {
  char endpoint[256];
  char name[FL_WIRE_MAX_STRING];
  int want_slot;
  uint32_t slot;
  uint64_t num_examples, num_eval_examples;
  int curve;
  char curve_public[FEDLR__KEY_LEN + 1], curve_secret[FEDLR__KEY_LEN + 1];
  char server_key[FEDLR__KEY_LEN + 1];
  int handshake_ms;
  double give_up;
  fedlr_log_fn log;
  int log_level;
  void *user;
  fl_layout_t *layout; /* expected, owned; NULL: any */
} fedlr__settings_t;

/* What both threads read: the log lock and the cancellation atomics. */
typedef struct {
  pthread_mutex_t log_mu;
  atomic_int stopping;        /* the session is ending */
  atomic_uint_fast64_t epoch; /* bumped at each rejoin: older work is void */
  atomic_uint_fast64_t seq;   /* bumped at each RoundStart received */
  /* Handing a job or a result over the PAIR passes ownership of memory (an
   * envelope, an encoded message): a release before each send and an
   * acquire after each receive order it, whatever libzmq does inside (and
   * make the order visible to ThreadSanitizer, which cannot see into an
   * uninstrumented libzmq). */
  atomic_uint_fast64_t to_run, to_io;
} fedlr__shared_t;

/* One line to the log (level filtered, serialized between threads). */
void fedlr__log(const fedlr__settings_t *st, fedlr__shared_t *sh, int level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- the socket (fedlr_sock.c) ---- */

/* The DEALER socket to the coordinator and the monitor that watches its
 * handshakes. A zeroed value is a closed socket. */
typedef struct {
  void *sock;        /* DEALER */
  void *mon;         /* PAIR: the socket's monitor events */
  unsigned mon_seq;  /* makes each socket's monitor endpoint unique */
  unsigned hs_fails; /* handshakes failed since the last one succeeded */
} fedlr__sock_t;

/* Opens the socket with its options (CURVE keys, handshake timeout,
 * reconnect, transport heartbeats, message bound) and its monitor, and
 * connects (without waiting). 0, or an error with fl_err_msg(). */
int fedlr__sock_open(fedlr__sock_t *k, void *ctx, const fedlr__settings_t *st);
/* Closes both (NULL-safe), lingering `linger` ms. */
void fedlr__sock_close(fedlr__sock_t *k, int linger);
/* Reads the monitor's pending events: 0, or FEDLR_AUTH_FAILED with the
 * reason in fl_err_msg() when the coordinator refused us in a way that
 * retrying cannot change. Transient failures are logged. */
int fedlr__sock_watch(fedlr__sock_t *k, const fedlr__settings_t *st, fedlr__shared_t *sh);

/* ---- the I/O thread and its jobs ---- */

enum { IO_JOB_WELCOME = 1, IO_JOB_ROUND, IO_JOB_EVAL, IO_JOB_END };

typedef struct {
  int kind;
  uint64_t epoch;       /* of the connection it came on */
  uint64_t seq;         /* ROUND: its RoundStart number */
  Fedlr__Envelope *env; /* WELCOME, ROUND, EVAL: owned by the receiver */
  fl_sched_t local;     /* ROUND: the parsed local schedule */
  double received;      /* monotonic s */
  int result;           /* END: how the session ended (FEDLR_DONE ...) */
} fedlr__job_t;

enum { RUN_NEXT = 1, RUN_SEND, RUN_QUIT };

typedef struct {
  int kind;
  uint64_t epoch; /* SEND: of the job it answers */
  int is_update;  /* SEND: an Update (else an EvalResult) */
  uint32_t round; /* SEND */
  uint8_t *buf;   /* SEND: the encoded message, owned by the receiver */
  size_t len;
} fedlr__run_msg_t;

typedef struct fedlr__io fedlr__io_t;

/* The I/O side of a session over settings `st` and `sh` (borrowed), in
 * ZeroMQ context ctx: creates the DEALER (connecting in the background)
 * and the PAIR end bound to `pair_ep`. stop_fd readable = stop. NULL and
 * fl_err_msg() on failure. */
fedlr__io_t *fedlr__io_new(const fedlr__settings_t *st, fedlr__shared_t *sh, void *ctx,
                           const char *pair_ep, int stop_fd, int *err);

/* The thread body: runs the session until it ends and the caller's thread
 * has been sent IO_JOB_END. */
void *fedlr__io_main(void *io);

/* The end's detail message and the last client id (read after the join). */
const char *fedlr__io_end_msg(const fedlr__io_t *io);
uint32_t fedlr__io_client_id(const fedlr__io_t *io);

void fedlr__io_destroy(fedlr__io_t **io);

double fedlr__now(void);

#endif
