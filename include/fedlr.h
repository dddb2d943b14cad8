/* fedlr.h: libfedlr, the C client library of fedlr.
 *
 * A fedlr coordinator (fedlr-coordinator) owns the global model, the rounds
 * and the learning-rate schedule; a client trains the model it is sent on
 * data that never leaves it. libfedlr is the client's side of the wire: the
 * application gives callbacks and the library runs the whole session.
 *
 *   train(user, round, global, out, result)  weights in, weights or delta out,
 *                                             with the round's rate and its
 *                                             local schedule (fedlr_local_lr)
 *   evaluate(user, round, weights, result)    loss and named metrics out
 *   welcome(user, welcome)                    optional: the run's model, once
 *                                             per Welcome; refuse by returning
 *                                             an error
 *
 * What the library does (protocol version 4, docs/protocol.md):
 *   - joins (Join, protocol versions 2 to 4: a coordinator of fedlr 0.2
 *     speaks 2, one of 0.3 picks 3, one of 0.4 picks 4), checks the Welcome (its layout: the
 *     model's tensors, names and shapes, against config.layout if given);
 *   - heartbeats from its own I/O thread every heartbeat_ms, idle or while a
 *     callback runs, so a long train or evaluate never makes the client look
 *     dead; acknowledges each RoundStart at once with a heartbeat;
 *   - decodes every message with fedlr's bounded, validating codec: sizes,
 *     shapes, finiteness, the optimizer, the local schedule and FedProx's
 *     prox_mu are checked before a callback sees them; a bad message is
 *     logged and ignored;
 *   - sends the Update (echoing the round's attempt) and the EvalResult;
 *   - queues an Evaluate that arrives during training and answers it after;
 *     a newer RoundStart replaces a queued one and cancels the running one
 *     (fedlr_round_cancelled), since its update would be stale;
 *   - rejoins with backoff (0.5 s doubling to 10 s) when the coordinator is
 *     silent for max(5 heartbeats, 3 s) or says it does not know the client;
 *     gives up after give_up seconds without a word;
 *   - CurveZMQ: encrypts with the coordinator's public key and this client's
 *     key pair, and ends with FEDLR_AUTH_FAILED when the coordinator refuses
 *     the key, one side is plaintext, or 3 handshakes in a row fail.
 *
 * Threads. fedlr_client_run() starts one I/O thread that owns the socket;
 * every callback but `log` runs on the thread that called
 * fedlr_client_run(), one at a time. `log` may be called from either thread,
 * never from two at once. fedlr_client_stop() may be called from any thread
 * or a signal handler.
 *
 * Errors. Functions that can fail return 0 or a negative FEDLR_E* code;
 * fedlr_strerror() names the code and fedlr_last_error() holds the calling
 * thread's detail message ("round 3 is for model 'x', ..."). A callback
 * reports an error the same way: return fedlr_set_error(code, fmt, ...).
 * Messages name the settings by their fedlr-client flags where one exists:
 * --give-up is give_up, --coordinator-key server_key, --curve-secret
 * curve_secret / curve_secret_file, --handshake-timeout handshake_timeout.
 *
 * Build: pkg-config --cflags --libs fedlr (or --static for libfedlr.a). */
#ifndef FEDLR_H
#define FEDLR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(FEDLR_BUILDING) && defined(__GNUC__)
#define FEDLR_API __attribute__((visibility("default")))
#else
#define FEDLR_API
#endif

#if defined(__GNUC__)
#define FEDLR_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define FEDLR_PRINTF(f, a)
#endif

/* ---- versions ---- */

#define FEDLR_VERSION_MAJOR 0
#define FEDLR_VERSION_MINOR 4
#define FEDLR_VERSION_PATCH 0
#define FEDLR_VERSION_HEX                                                                          \
  ((FEDLR_VERSION_MAJOR << 16) | (FEDLR_VERSION_MINOR << 8) | FEDLR_VERSION_PATCH)
/* The wire protocol versions this library speaks: it joins with the range
 * [FEDLR_MIN_PROTOCOL_VERSION, FEDLR_PROTOCOL_VERSION] and the coordinator
 * picks the highest it speaks too (fedlr_welcome.protocol_version). 3 adds
 * FedProx (fedlr_round.prox_mu); 4 a CNN's input image
 * (fedlr_welcome.input_shape); 1 is not spoken (its Welcome has no model
 * layout). */
#define FEDLR_PROTOCOL_VERSION 4
#define FEDLR_MIN_PROTOCOL_VERSION 2

/* The library's version as FEDLR_VERSION_HEX (of the library actually
 * loaded, which may differ from the header's) and as "0.3.0". */
FEDLR_API unsigned fedlr_version(void);
FEDLR_API const char *fedlr_version_string(void);

/* ---- errors ---- */

enum {
  FEDLR_OK = 0,
  FEDLR_EINVAL = -1,       /* bad argument, setting or spec */
  FEDLR_ENOMEM = -2,       /* out of memory, or a size limit hit */
  FEDLR_EIO = -3,          /* I/O failed */
  FEDLR_ENOENT = -4,       /* no such file, or no such tensor */
  FEDLR_EFORMAT = -5,      /* corrupt or undecodable file or message */
  FEDLR_ESHAPE = -6,       /* tensors of the wrong names, shapes or count */
  FEDLR_ENONFINITE = -7,   /* NaN or infinity where a finite value is needed */
  FEDLR_ERANGE = -8,       /* value outside its allowed range */
  FEDLR_ESTALE = -9,       /* for another round */
  FEDLR_EPROTO = -10,      /* a message not allowed here */
  FEDLR_ETOOBIG = -11,     /* larger than its limit */
  FEDLR_ESTATE = -12,      /* not valid now (e.g. a cancelled round) */
  FEDLR_EUNSUPPORTED = -13 /* feature or version not supported */
};

/* The name of an error code ("invalid argument"). Never NULL. */
FEDLR_API const char *fedlr_strerror(int code);

/* The calling thread's last detail message ("" if none), valid until the
 * next libfedlr call on this thread that fails. */
FEDLR_API const char *fedlr_last_error(void);

/* Records a detail message for the calling thread and returns `code`, so a
 * callback can `return fedlr_set_error(FEDLR_EINVAL, "no data for %s", x);`. */
FEDLR_API int fedlr_set_error(int code, const char *fmt, ...) FEDLR_PRINTF(2, 3);

/* ---- tensors ----
 *
 * A fedlr_tensors is an ordered list of named dense float32 tensors,
 * row-major, laid out back to back in one buffer (tensor i starts where
 * tensor i-1 ends): a model's layout, and its values. Names: 1 to 255 bytes
 * of printable ASCII without space, '"' or '\\' (PyTorch state_dict keys
 * such as "fc1.weight"), unique. Shapes: 0 (a scalar, 1 value) to 8
 * dimensions, each >= 1. At most 4096 tensors and 2^28 values. */
typedef struct fedlr_tensors fedlr_tensors;

/* An empty list, to fill with fedlr_tensors_add(). NULL if out of memory. */
FEDLR_API fedlr_tensors *fedlr_tensors_new(void);

/* NULL-safe; clears *ts. Only for lists made by fedlr_tensors_new(). */
FEDLR_API void fedlr_tensors_destroy(fedlr_tensors **ts);

/* Appends a zero-filled tensor. FEDLR_EINVAL for a bad or repeated name, a
 * zero dimension or ndim > 8; FEDLR_ETOOBIG beyond the limits; FEDLR_ENOMEM.
 * `shape` may be NULL when ndim is 0. Moves fedlr_tensors_values(). */
FEDLR_API int fedlr_tensors_add(fedlr_tensors *ts, const char *name, uint32_t ndim,
                                const uint32_t *shape);

/* The number of tensors, and of float values in all. */
FEDLR_API size_t fedlr_tensors_count(const fedlr_tensors *ts);
FEDLR_API size_t fedlr_tensors_num_values(const fedlr_tensors *ts);

/* The index of the tensor called `name`, or FEDLR_ENOENT (< 0). */
FEDLR_API long fedlr_tensors_find(const fedlr_tensors *ts, const char *name);

/* Tensor i (0 <= i < count; NULL / 0 beyond): its name, its number of
 * dimensions, dimension d (0 beyond ndim), its number of values. */
FEDLR_API const char *fedlr_tensor_name(const fedlr_tensors *ts, size_t i);
FEDLR_API uint32_t fedlr_tensor_ndim(const fedlr_tensors *ts, size_t i);
FEDLR_API uint32_t fedlr_tensor_dim(const fedlr_tensors *ts, size_t i, uint32_t d);
FEDLR_API size_t fedlr_tensor_size(const fedlr_tensors *ts, size_t i);

/* Tensor i's values (fedlr_tensor_size() floats), or NULL beyond count and
 * for a layout without values (a Welcome's). The _mut form is for lists the
 * application may write: its own, and a train callback's `out`. */
FEDLR_API const float *fedlr_tensor_data(const fedlr_tensors *ts, size_t i);
FEDLR_API float *fedlr_tensor_data_mut(fedlr_tensors *ts, size_t i);

/* All values, tensor after tensor (fedlr_tensors_num_values() floats). */
FEDLR_API const float *fedlr_tensors_values(const fedlr_tensors *ts);
FEDLR_API float *fedlr_tensors_values_mut(fedlr_tensors *ts);

/* Checks that `got` has exactly the tensors of `expected`: the same names,
 * shapes and order (values are not compared). 0, or FEDLR_ESHAPE with the
 * first difference in fedlr_last_error() ("tensor 1: expected 'b' [3], got
 * 'b' [4]"). */
FEDLR_API int fedlr_tensors_check_layout(const fedlr_tensors *expected, const fedlr_tensors *got);

/* Writes the tensors with their values to a safetensors file (F32,
 * little-endian, with fedlr's checksum entry), atomically: what
 * `fedlr-coordinator --init FILE` starts a run from. */
FEDLR_API int fedlr_tensors_save(const fedlr_tensors *ts, const char *path);

/* ---- learning-rate schedules ----
 *
 * fedlr's schedule specs, evaluated by fedlr's own code (the coordinator's
 * and the built-in trainer's):  [warmup:W[,start=F]+]KIND[:key=value,...]
 * with KIND const, linear, exp, inv, poly, step, piecewise or cos (plateau
 * is a round schedule only). docs/protocol.md gives every formula. */
typedef struct fedlr_schedule fedlr_schedule;

/* Parses a local schedule spec ("" or NULL is const). NULL on error, with
 * the code in *err (if not NULL) and the detail in fedlr_last_error(). */
FEDLR_API fedlr_schedule *fedlr_schedule_new(const char *spec, int *err);
FEDLR_API void fedlr_schedule_destroy(fedlr_schedule **s);

/* The rate at time t (0-based) for the initial rate lr0. Pure. */
FEDLR_API double fedlr_schedule_lr(const fedlr_schedule *s, double lr0, uint64_t t);

/* ---- rounds ---- */

/* How a round's local time t counts: FEDLR_UNIT_EPOCH: t is the local epoch
 * (0 .. local_epochs-1); FEDLR_UNIT_STEP: t is the minibatch step, counted
 * from 0 across the whole round (not reset at each epoch). */
typedef enum { FEDLR_UNIT_EPOCH = 0, FEDLR_UNIT_STEP = 1 } fedlr_local_unit;

/* Optimizer kinds (PyTorch semantics, fedlr's common/fl_optim.h). */
typedef enum {
  FEDLR_OPT_SGD = 0,
  FEDLR_OPT_MOMENTUM = 1,
  FEDLR_OPT_NESTEROV = 2,
  FEDLR_OPT_ADAGRAD = 3,
  FEDLR_OPT_RMSPROP = 4,
  FEDLR_OPT_ADAM = 5
} fedlr_optimizer_kind;

typedef struct {
  fedlr_optimizer_kind kind;
  float momentum;     /* momentum, nesterov */
  float beta1, beta2; /* adam */
  float eps;          /* adagrad, rmsprop, adam */
  float alpha;        /* rmsprop smoothing constant */
  float weight_decay; /* any kind (L2 added to the gradient) */
  int keep_state;     /* 1: keep the optimizer's state across rounds; 0: reset it */
} fedlr_optimizer;

/* What the coordinator asks of one round (read-only; valid during the
 * train callback). Fields may be added at the end in later versions: the
 * library allocates this struct, so an application built against an older
 * header keeps working (it never reads the new fields); one that reads a
 * field added later needs a library that has it (each field says since
 * when: check fedlr_version() where an older libfedlr.so.0 may be loaded). */
typedef struct fedlr_round {
  uint32_t round;        /* 1-based */
  uint32_t attempt;      /* 1 on the round's first attempt, 2 on its first retry, ... */
  float lr;              /* the round's rate (the coordinator's round schedule) */
  uint32_t local_epochs; /* E >= 1 */
  uint32_t batch_size;   /* B >= 1 */
  uint64_t seed;         /* per client, round and attempt: shuffle with it */
  fedlr_local_unit local_unit;
  const char *local_schedule; /* its spec ("" = const) */
  const fedlr_schedule *local;
  const char *model; /* the Welcome's model ("custom" for --init models) */
  fedlr_optimizer optimizer;
  const void *internal_; /* the library's */
  /* Since fedlr 0.3 (protocol version 3; fedlr_version() >= 0x000300).
   * FedProx (Li et al. 2020): mu in [0, 10000]; 0 = off (also in a
   * version 2 session). When above 0, train on loss(w) + mu/2 ||w -
   * w_global||^2: add prox_mu * (w - w_global) to every local gradient
   * before the optimizer step (w_global: the train callback's `global`),
   * as fedlr's built-in trainer does; report train_loss without the term. */
  float prox_mu;
} fedlr_round;

/* The rate of local time t in this round: the local schedule at t with
 * lr0 = round->lr, computed in double. Apply it as the step size of the
 * minibatch step at epoch t (FEDLR_UNIT_EPOCH) or step t (FEDLR_UNIT_STEP);
 * fedlr's trainer converts it to float. */
FEDLR_API double fedlr_local_lr(const fedlr_round *r, uint64_t t);

/* 1 once this round's work is useless: the session is ending
 * (fedlr_client_stop(), the run is over), the coordinator was rejoined, or
 * a newer RoundStart arrived. A long train callback may poll it (it is one
 * atomic load) and return early; whatever it returns, no update is sent. */
FEDLR_API int fedlr_round_cancelled(const fedlr_round *r);

/* What the train callback reports. The library fills in the defaults
 * before the call: is_delta 0, num_examples = config.num_examples,
 * train_loss 0, steps 0. */
typedef struct {
  int is_delta;          /* 1: `out` holds local - global; 0: the new local weights */
  uint64_t num_examples; /* examples trained on: 1 .. config.num_examples (the FedAvg weight) */
  double train_loss;     /* mean loss over the round's steps, example-weighted; finite */
  uint64_t steps;        /* minibatch steps taken */
} fedlr_train_result;

/* ---- evaluation ---- */

#define FEDLR_MAX_METRICS 16
#define FEDLR_MAX_METRIC_NAME 32

typedef struct {
  char name[FEDLR_MAX_METRIC_NAME + 1]; /* [A-Za-z0-9_.-], 1..32 bytes */
  double value;                         /* finite */
} fedlr_metric;

/* What the evaluate callback reports; num_examples is preset to
 * config.num_eval_examples, the rest to zero. */
typedef struct {
  uint64_t num_examples; /* examples evaluated: 1 .. config.num_eval_examples */
  double loss;           /* mean loss over them; finite */
  size_t num_metrics;
  fedlr_metric metrics[FEDLR_MAX_METRICS]; /* means over them; "accuracy" in [0, 1] */
} fedlr_eval_result;

/* Appends a metric (fedlr_metric's rules, names unique). FEDLR_EINVAL for
 * a bad or repeated name, FEDLR_ENONFINITE, FEDLR_ETOOBIG past 16. */
FEDLR_API int fedlr_eval_add_metric(fedlr_eval_result *r, const char *name, double value);

/* ---- the session ---- */

/* What the coordinator's Welcome said (read-only, valid during the welcome
 * callback). Fields may be added at the end in later versions. */
typedef struct {
  uint32_t client_id;
  const char *run_id;
  const char *model;    /* "mlp:200,200", "softmax", or "custom" (--init) */
  uint32_t input_dim;   /* built-in models; 0 for custom */
  uint32_t num_classes; /* built-in models; 0 for custom */
  uint32_t heartbeat_ms;
  uint32_t rounds; /* the run's round limit */
  uint32_t protocol_version;
  const fedlr_tensors *layout; /* the model's tensors: names and shapes, no values */
  /* A built-in CNN's input image, C, H, W (NCHW, C H W = input_dim), from
   * protocol version 4; all 0 for other models, and from an older
   * coordinator (whose CNNs take 1 x sqrt(input_dim) x sqrt(input_dim)). */
  uint32_t input_shape[3];
} fedlr_welcome;

typedef int (*fedlr_welcome_fn)(void *user, const fedlr_welcome *w);

/* Trains one round. `global` is the round's global model (values in
 * layout order); `out` has the same layout and starts as a copy of
 * `global`: write the new weights (res->is_delta = 0) or local - global
 * (is_delta = 1) into it. Return 0 to send the update, or a negative code
 * (fedlr_set_error()) to send none: the library logs why. */
typedef int (*fedlr_train_fn)(void *user, const fedlr_round *round, const fedlr_tensors *global,
                              fedlr_tensors *out, fedlr_train_result *res);

/* Evaluates the global model `weights` that round `round` produced on the
 * client's held-out examples. Return 0 to send the result, or an error. */
typedef int (*fedlr_evaluate_fn)(void *user, uint32_t round, const fedlr_tensors *weights,
                                 fedlr_eval_result *res);

enum {
  FEDLR_LOG_ERROR = 0, /* the session cannot go on as asked */
  FEDLR_LOG_WARN = 1,  /* ignored messages, dropped updates, warnings */
  FEDLR_LOG_INFO = 2,  /* connecting, joined, rejoining, the run is over */
  FEDLR_LOG_ROUND = 3  /* one line per round trained or evaluated */
};
/* One line of text, without prefix or newline. */
typedef void (*fedlr_log_fn)(void *user, int level, const char *line);

typedef struct {
  const char *endpoint; /* the coordinator: "tcp://HOST:PORT" or "ipc://PATH" */
  const char *name;     /* unique in the run: 1..64 bytes of UTF-8, no control characters */
  int want_slot;        /* 1: ask for client id `slot` (e.g. the partition index) */
  uint32_t slot;
  uint64_t num_examples;      /* local training examples, 1 .. 2^32 (declared in the Join) */
  uint64_t num_eval_examples; /* held-out examples; 0: this client does not evaluate */
  /* CurveZMQ (all NULL: plaintext). This client's key pair as 40-character
   * Z85 strings (curve_public + curve_secret) or a fedlr-keygen secret key
   * file (curve_secret_file), and the coordinator's public key, as Z85 or
   * a .key file (server_key). Copied; the secret is wiped on destroy. */
  const char *curve_public, *curve_secret, *curve_secret_file;
  const char *server_key;
  double handshake_timeout; /* s a ZMTP/CURVE handshake may take (default 5) */
  double give_up; /* s without any message from the coordinator before giving up (300; 0 = never) */
  const fedlr_tensors *layout; /* expected model layout (copied), or NULL: accept any */
  fedlr_welcome_fn welcome;    /* optional */
  fedlr_train_fn train;        /* required */
  fedlr_evaluate_fn evaluate;  /* required when num_eval_examples > 0 */
  fedlr_log_fn log;            /* NULL: lines to stderr as "fedlr[NAME]: ..." */
  int log_level;               /* lines up to this level (FEDLR_LOG_ROUND); -1: none */
  void *user;                  /* passed to every callback */
} fedlr_config;

/* Fills c with the defaults (every pointer NULL, handshake_timeout 5,
 * give_up 300, log_level FEDLR_LOG_ROUND). Always start from it. */
FEDLR_API void fedlr_config_init(fedlr_config *c);

typedef struct fedlr_client fedlr_client;

/* A client for config c (strings and layout copied; c may go away).
 * Connects in the background (connecting never waits for the peer). NULL
 * on error, with the code in *err (if not NULL) and the detail in
 * fedlr_last_error(): FEDLR_EINVAL for a bad name, endpoint, keys, counts or
 * a missing callback; FEDLR_ENOENT for a missing key file. */
FEDLR_API fedlr_client *fedlr_client_new(const fedlr_config *c, int *err);

/* How fedlr_client_run() ended (>= 0); < 0 is an FEDLR_E* error. */
enum {
  FEDLR_DONE = 0,        /* the coordinator ended the run (Stop) */
  FEDLR_REFUSED = 1,     /* refused by the coordinator, or by the welcome callback/layout check */
  FEDLR_STOPPED = 2,     /* fedlr_client_stop() */
  FEDLR_AUTH_FAILED = 3, /* CurveZMQ: the handshake was refused or kept failing */
  FEDLR_GAVE_UP = 4      /* nothing from the coordinator for give_up seconds */
};

/* Runs the session until the run ends, the client is refused, the
 * handshake fails for good, the coordinator is silent for give_up seconds,
 * or fedlr_client_stop() is called; callbacks run on this thread. Returns
 * one of the values above, the reason in fedlr_last_error(). Once per
 * client. */
FEDLR_API int fedlr_client_run(fedlr_client *c);

/* Asks a running (or about to run) session to end: fedlr_client_run()
 * returns FEDLR_STOPPED once the running callback, if any, has returned.
 * Thread-safe and async-signal-safe (one write() to a pipe). */
FEDLR_API void fedlr_client_stop(fedlr_client *c);

/* The client id of the last Welcome (0 before any). */
FEDLR_API uint32_t fedlr_client_id(const fedlr_client *c);

/* Closes the socket (waiting up to 1 s for queued messages) and frees
 * everything; not while fedlr_client_run() runs. NULL-safe; clears *c. */
FEDLR_API void fedlr_client_destroy(fedlr_client **c);

#ifdef __cplusplus
}
#endif

#endif
