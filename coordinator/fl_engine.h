/* fl_engine: the round engine. Transport-independent: it consumes and
 * produces encoded protobuf messages and never touches a socket or a thread,
 * so fedlr-sim (in-process clients) and fedlr-coordinator (ZeroMQ clients)
 * run exactly the same code.
 *
 * A run is a sequence of rounds. Each round:
 *   fl_engine_begin_round()        samples clients, fixes the round's rate
 *   fl_engine_encode_round_start() one RoundStart per sampled client
 *   fl_engine_submit()             each Update: decoded, validated, clipped,
 *                                  folded into the running FedAvg sum at
 *                                  once (or stored, for a robust rule)
 *   fl_engine_end_round()          applies the aggregate, evaluates on the
 *                                  test set, steps the schedule, returns the
 *                                  round's metrics
 * and, when federated evaluation is due (fl_engine_eval_open() after
 * fl_engine_end_round), the round's evaluation by clients:
 *   fl_engine_encode_evaluate()    one Evaluate per sampled evaluator
 *   fl_engine_submit_eval()        each EvalResult (fl_fedeval.h)
 *   fl_engine_end_eval()           the fed_eval_* metrics; the plateau
 *                                  schedule and the target accuracy follow
 *                                  them when there is no test set
 *
 * Determinism. Sampling, per-client seeds and the schedule depend only on
 * (seed, round, attempt) and on which clients are sampleable. Aggregation
 * (fl_agg.h) is exact and order-independent, so the result is bit-identical
 * whatever order updates arrive in, and the weights come from the accepted
 * updates alone: a client whose update is rejected, whatever it
 * registered, changes nothing. Memory is O(model) for FedAvg.
 *
 * Misbehaving clients and stuck rounds. An update rejected for its content
 * (values, tensors, example claim) answers for its client: the round need
 * not wait for it, and the quorum is a fraction of the sampled clients
 * whose updates can still count (sampled minus rejected), so clients that
 * send garbage cannot hold a round below its quorum. Such a client is
 * quarantined: not sampled again for cfg.quarantine_rounds rounds after
 * this one (nor in this round's retries), unless every available client
 * is quarantined; so is a client that a transport saw keep a round waiting
 * until its deadline (fl_engine_quarantine). A round abandoned
 * cfg.max_retries times in a row ends the run (fl_engine_abort_round()
 * fails): no progress is possible.
 *
 * Server step (cfg.server_optim, cfg.server_lr, cfg.server_sched): the
 * round's aggregate is the pseudo-gradient of a server optimizer (FedAvg,
 * FedAvgM, FedAdagrad, FedAdam, FedYogi: fl_server_optim.h) whose rate
 * follows its own round schedule; its state is O(model) and part of the
 * run state (fl_engine_server_state, checkpoints). FedProx (cfg.prox_mu)
 * is the clients' business: the engine only sends mu in every RoundStart.
 *
 * Rules (cfg.aggregator, cfg.trim_beta, cfg.clip_norm): FedAvg, median and
 * trimmed mean, with or without clipping, as fl_agg.h describes;
 * cfg.max_examples caps the example count a client is weighted by (FedAvg
 * and the train loss).
 *
 * Thread-safety: none inside. fl_engine_encode_round_start() only reads and
 * may run concurrently with itself; every other call needs exclusive access. */
#ifndef FL_ENGINE_H
#define FL_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "fl_agg.h"
#include "fl_config.h"
#include "fl_data.h"
#include "fl_fedeval.h"
#include "fl_init.h"
#include "fl_metrics.h"
#include "fl_model.h"
#include "fl_optim.h"
#include "fl_sched.h"
#include "fl_server_optim.h"
#include "fl_wire.h"

/* The most clients an engine registers (ids 0 .. 10^7 - 1). */
#define FL_ENGINE_MAX_CLIENTS 10000000u
/* A single delta component may not exceed this in magnitude. */
#define FL_ENGINE_MAX_DELTA FL_AGG_MAX_DELTA
/* The most examples one client may register: a larger registration is
 * refused. With FL_ENGINE_MAX_DELTA it bounds the fixed-point sum. */
#define FL_ENGINE_MAX_EXAMPLES FL_WIRE_MAX_EXAMPLES
/* The names of the server optimizer's state tensors in a checkpoint begin
 * with this ("fedlr.server_opt.m.0", fl_checkpoint.h): a custom model's
 * tensors may not when the server optimizer keeps a state. */
#define FL_ENGINE_STATE_PREFIX "fedlr.server_opt."
/* An update's train loss beyond this in magnitude is rejected. */
#define FL_ENGINE_MAX_LOSS 1e30

/* A checkpoint's weights may not exceed this in magnitude (2^20): fl_checkpoint_load
 * refuses a larger one, as it refuses NaN and infinity. Trained weights are
 * small: initialised at about 1/sqrt(fan-in), and the 2NN after 5 rounds on
 * Fashion-MNIST (lr 0.1) has max |w| = 0.93. At 2^20 a float's spacing is
 * already 1/8, so steps of any sane rate no longer move a weight: a model
 * there has diverged, and a value such as 1e30 overflows the next forward
 * pass to inf/NaN on every client. The same bound as one update's delta
 * (FL_ENGINE_MAX_DELTA). */
#define FL_ENGINE_MAX_WEIGHT 1048576.0

typedef struct {
  fl_model_spec_t model;     /* built-in or custom (its layout borrowed) */
  const float *init_weights; /* borrowed, num_params floats (--init), or NULL: initialised
                              * from the seed (built-in models only) */
  const fl_dataset_t *test;  /* borrowed, may be NULL: no evaluation on a test set */
  double eval_fraction;      /* federated evaluation: fraction of the clients holding
                              * evaluation examples asked to evaluate, when evaluation is due
                              * (eval_every); 0 = none */
  double lr0;                /* initial round rate */
  fl_sched_t sched;          /* round schedule */
  char local_schedule[FL_SCHED_SPEC_MAX];
  int local_unit; /* FEDLR__ROUND_START__LOCAL_UNIT__EPOCH / __STEP */
  fl_optim_config_t optim;
  fl_sopt_config_t server_optim; /* the server's step (fl_server_optim.h) */
  double server_lr;              /* the server rate at round 1 (before its schedule), > 0 */
  fl_sched_t server_sched;       /* round schedule of the server rate (plateau: follows the
                                  * same evaluation loss as sched, with its own state) */
  double prox_mu;                /* FedProx coefficient sent to clients, [0, FL_WIRE_MAX_PROX_MU];
                                  * 0 = off */
  uint32_t local_epochs;
  uint32_t batch_size;
  double fraction;      /* C: fraction of clients sampled per round */
  uint32_t min_clients; /* at least this many sampled per round */
  uint32_t rounds;      /* round limit */
  uint64_t seed;
  uint32_t eval_every;        /* evaluate every K rounds and at the last */
  double target_accuracy;     /* stop when reached; 0 = off */
  double quorum;              /* fraction of sampled updates needed, (0,1] */
  uint32_t eval_threads;      /* threads for evaluation, 0 = one per core; results do not
                               * depend on it */
  fl_agg_kind_t aggregator;   /* FL_AGG_FEDAVG (0), FL_AGG_MEDIAN, FL_AGG_TRIMMED_MEAN */
  double trim_beta;           /* trimmed mean: floor(beta * reported) values are cut from each
                               * end of every coordinate, [0, 0.5) */
  double clip_norm;           /* > 0: each delta is scaled to L2 norm <= clip_norm; 0 = off */
  uint64_t max_examples;      /* > 0: a client weighs at most this many examples; 0 = off */
  uint32_t quarantine_rounds; /* a client whose update was rejected in round r is not sampled
                               * up to round r + quarantine_rounds (0: only r's retries) */
  uint32_t max_retries;       /* abandoned attempts of one round before the run fails; 0 = no
                               * bound */
  /* Not used by the engine: recorded in checkpoints as part of the run's
   * identity (fl_checkpoint.h), with the settings above. */
  char lr_spec[64]; /* --lr as given ("0.05", "auto:10"); lr0 is what it resolved to */
  uint32_t clients; /* --clients: the federation's size K */
} fl_engine_config_t;

typedef struct fl_engine fl_engine_t;

/* The aggregation rule of a validated run config: --aggregator parsed by
 * fl_agg_parse() (fl_config only stores it), with --clip-norm. fedlr-sim
 * and fedlr-coordinator call it right after fl_config_parse(), so a bad
 * spec (a flag or a --config line) is refused before any data is loaded,
 * and hand the result to fl_engine_config_from(). 0, or FL_EINVAL with a
 * message naming the flag ("--aggregator: 'mean' is not fedavg, ..."). */
int fl_engine_agg_from(fl_agg_config_t *agg, const fl_config_t *c);

/* Fills *ec from a validated run config for data with `input_dim` features
 * of its own image shape `data_shape` (NULL or unset: none; fl_data.h) and
 * `num_classes` classes (0, NULL and 0 for a custom model): the model (a
 * CNN's input image is --input-shape, else data_shape, else inferred:
 * fl_shape_resolve, fl_model_parse_shape) and
 * its initial weights from `init` (fl_init_read(); NULL: the --model spec,
 * initialised from the seed; the weights stay borrowed), initial rate (a number or the
 * 1/sqrt(n) heuristic), round schedule, optimizer, the local schedule as
 * given (fl_config_parse() checked it, fl_sched_parse_local, and every
 * client checks it again with the same function), round settings, the
 * aggregation rule `agg` (from fl_engine_agg_from()), the example cap,
 * and --lr as given and --clients for the checkpoint's run identity.
 * `test` may be NULL. quorum is taken from c (fedlr-sim sets 1). Errors
 * name the flag ("--model: ..."). Shared by fedlr-sim and
 * fedlr-coordinator so both build exactly the same engine from the same
 * flags. */
int fl_engine_config_from(fl_engine_config_t *ec, const fl_config_t *c, const fl_agg_config_t *agg,
                          const fl_init_t *init, size_t input_dim, const fl_shape_t *data_shape,
                          size_t num_classes, const fl_dataset_t *test);

/* Creates an engine with global weights from cfg->init_weights or freshly
 * initialised from the seed (a custom model needs init_weights). Returns
 * NULL and sets *err (with fl_err_msg()) on failure. */
fl_engine_t *fl_engine_new(const fl_engine_config_t *cfg, int *err);
void fl_engine_destroy(fl_engine_t **e);

/* Registers a client at the lowest free id (fedlr-sim: ids 0, 1, 2, ... in
 * registration order). num_examples (1 .. FL_ENGINE_MAX_EXAMPLES, else
 * FL_EINVAL / FL_ERANGE) is the most the client may later claim in an
 * update. Names are unique: FL_EINVAL if the name is registered. Error
 * messages name only this client, never another (they may be sent back to
 * the peer). */
int fl_engine_add_client(fl_engine_t *e, const char *name, uint64_t num_examples, uint32_t *id);

/* Registers a client at id `id` (a networked client asking for its
 * partition index). Registering the same name at the same id again is
 * allowed and updates num_examples (a rejoin); FL_EINVAL if the id belongs to
 * another name or the name to another id. */
int fl_engine_add_client_at(fl_engine_t *e, uint32_t id, const char *name, uint64_t num_examples);

/* Sets how many held-out examples client `id` evaluates on (its Join's
 * num_eval_examples; 0 = it does not evaluate: the default). FL_ERANGE
 * beyond FL_ENGINE_MAX_EXAMPLES, FL_ENOENT for an unknown id. */
int fl_engine_set_eval_examples(fl_engine_t *e, uint32_t id, uint64_t n);

/* Id of the client called `name`: 0, or FL_ENOENT. */
int fl_engine_find_client(const fl_engine_t *e, const char *name, uint32_t *id);
const char *fl_engine_client_name(const fl_engine_t *e, uint32_t id);
size_t fl_engine_num_clients(const fl_engine_t *e);

/* Marks a registered client as (un)available for sampling (registered
 * clients start available). A coordinator marks dead clients unavailable. */
void fl_engine_set_available(fl_engine_t *e, uint32_t id, int available);
size_t fl_engine_num_available(const fl_engine_t *e);
/* 1 if client `id` is registered and available. */
int fl_engine_is_available(const fl_engine_t *e, uint32_t id);

/* Starts the next round: samples max(ceil(C*A), min_clients) clients
 * (capped at A) without replacement from the A available clients that are
 * not quarantined (all available ones if every one is), with a random
 * stream derived from (seed, round, attempt). FL_ESTATE if a round is open
 * or the run is finished; FL_EINVAL if no client is available.
 *
 * Never opens a round whose RoundStart clients would refuse: the message it
 * would send goes through the clients' own check first
 * (fl_wire_check_round_start: the rate, as the float sent, finite and >= 0,
 * every weight finite, ...). If it fails, FL_ENONFINITE or FL_ERANGE (the
 * check's code) with a detail naming the round and the value, and nothing
 * changes. That is fatal for the run, not a reason to retry: the same rate
 * and weights would come back, and every client would refuse them again. A
 * rate of 0 is allowed, as clients allow it (schedules that end at 0). */
int fl_engine_begin_round(fl_engine_t *e);

/* Gives up on the open round (no quorum by the deadline): its updates are
 * discarded and the next fl_engine_begin_round() runs the same round index
 * again with a fresh sample (attempt + 1), without the clients whose
 * updates were rejected. After cfg.max_retries abandoned attempts in a row
 * it returns FL_ESTATE with a detail saying so: the run cannot progress and
 * should end with that error. */
int fl_engine_abort_round(fl_engine_t *e);
/* Abandoned attempts of the current round index so far (0 on the first). */
uint32_t fl_engine_attempt(const fl_engine_t *e);

/* 1 if client `id` is sampled in the open round / has reported in it. */
int fl_engine_is_sampled(const fl_engine_t *e, uint32_t id);
int fl_engine_has_reported(const fl_engine_t *e, uint32_t id);

/* The open (or last) round: 1-based index, rate, sampled client ids
 * (ascending). */
uint32_t fl_engine_round(const fl_engine_t *e);
double fl_engine_round_lr(const fl_engine_t *e);
size_t fl_engine_sampled(const fl_engine_t *e, const uint32_t **ids);

/* Encodes the RoundStart message for sampled client `id` into a new malloc'd
 * buffer: the round, its rate, the local schedule and settings, the
 * client's seed for this attempt, the global weights and the attempt
 * (1-based: fl_engine_attempt() + 1). Read-only on the engine. */
int fl_engine_encode_round_start(const fl_engine_t *e, uint32_t id, uint8_t **buf, size_t *len);

/* Takes one encoded Update from client `sender`. Rejects, with a detail
 * message and without changing any state: undecodable or invalid messages,
 * a non-Update body, wrong round or attempt (FL_ESTALE; an attempt of 0 is
 * "not given", as from a protocol version 1 client), a sender that was not sampled
 * or a client_id that is not the sender's (FL_EPROTO), a duplicate
 * (FL_ESTALE), wrong tensors (FL_ESHAPE), non-finite values, more examples
 * than the client registered, deltas beyond FL_ENGINE_MAX_DELTA (FL_ERANGE).
 * The last three (the update's content, from a sampled client) are counted
 * in the round's `rejected` metric; nothing else changes. A claim above
 * cfg.max_examples is not an error: it is capped (and counted as `capped`),
 * as is the client's registered count when the round began. */
int fl_engine_submit(fl_engine_t *e, uint32_t sender, const uint8_t *buf, size_t len);

/* The same for an Update already decoded by fl_wire_decode() with
 * fl_engine_limits() (which leave the value check to the engine). The
 * tensors' data may be modified in place. */
int fl_engine_submit_update(fl_engine_t *e, uint32_t sender, Fedlr__Update *u);

/* 1 if sampled client `id` has had its say in the open round: its update
 * was accepted, or one was rejected for its content (non-finite or
 * out-of-range values, wrong tensors, an example claim beyond its
 * registration). A coordinator need not wait longer for such a client; a
 * valid update from it is still taken while the round is open. */
int fl_engine_has_answered(const fl_engine_t *e, uint32_t id);

/* Quarantines client `id` as a rejected update does: it is not sampled up
 * to round r + cfg.quarantine_rounds, r the open (or last) round, its
 * retries included (unless every available client is quarantined). For a
 * transport whose client kept a round waiting until its deadline without
 * answering. Returns that last round (0 for an unknown id). */
uint32_t fl_engine_quarantine(fl_engine_t *e, uint32_t id);

/* Number of sampled clients that have reported this round. */
size_t fl_engine_reported(const fl_engine_t *e);
/* Accepted updates the open round needs to close: max(1, ceil(quorum *
 * (sampled - clients whose update was rejected))). */
size_t fl_engine_quorum_need(const fl_engine_t *e);
/* 1 if enough sampled clients reported to close the round (quorum). */
int fl_engine_has_quorum(const fl_engine_t *e);

/* Closes the round: the aggregate of the accepted (clipped) deltas (their
 * example-weighted mean, FedAvg, or their coordinate-wise median or
 * trimmed mean) moves the global weights by the server optimizer's step at
 * the round's server rate (fl_server_optim.h; plain FedAvg at rate 1:
 * global += aggregate). Evaluates if due, feeds the plateau schedules,
 * fills *m (seconds/elapsed and byte counts are the caller's). FL_ESTATE
 * without quorum; FL_ENOMEM (round still open) if a robust rule cannot
 * get its scratch memory. */
int fl_engine_end_round(fl_engine_t *e, fl_round_metrics_t *m);

/* Federated evaluation. After fl_engine_end_round(), when evaluation is
 * due (every eval_every rounds and the last) and eval_fraction > 0, the
 * engine samples max(1, ceil(eval_fraction * A)) of the A available
 * clients that declared evaluation examples and are not kept from
 * evaluating (fl_engine_quarantine_eval), with a random stream of (seed,
 * round); if A > 0 an evaluation opens: fl_engine_eval_open() is 1 until
 * fl_engine_end_eval(), and no round can begin meanwhile. */
int fl_engine_eval_open(const fl_engine_t *e);
/* The open evaluation's clients (ascending). */
size_t fl_engine_eval_sampled(const fl_engine_t *e, const uint32_t **ids);
/* Encodes the Evaluate for evaluator `id`: the round and the new global
 * weights. Read-only on the engine. */
int fl_engine_encode_evaluate(const fl_engine_t *e, uint32_t id, uint8_t **buf, size_t *len);
/* Takes an EvalResult (decoded with fl_engine_limits) from `sender`, as
 * fl_fedeval_submit() does: *content says whether a rejection was about
 * what the client sent (it then counts as answered). */
int fl_engine_submit_eval(fl_engine_t *e, uint32_t sender, const Fedlr__EvalResult *r,
                          int *content);
/* 1 if evaluator `id` of the open evaluation has answered. */
int fl_engine_eval_answered(const fl_engine_t *e, uint32_t id);
/* Keeps client `id` from evaluating up to round r + quarantine_rounds
 * (its result was rejected, or it let the evaluation's deadline pass). */
void fl_engine_quarantine_eval(fl_engine_t *e, uint32_t id);
/* Closes the evaluation, whatever has arrived: m's fed_eval_* fields and
 * the other metrics as JSON members in extra (fl_fedeval_end). Without a
 * test set, fed_eval_loss then drives the plateau schedule and
 * fed_eval_accuracy the target accuracy. FL_ESTATE if none is open. */
int fl_engine_end_eval(fl_engine_t *e, fl_round_metrics_t *m, char *extra, size_t cap);
/* The named metrics of the evaluation last closed by fl_engine_end_eval
 * (its extra members, fl_fedeval_named): names valid until the next
 * evaluation opens. */
size_t fl_engine_eval_named(const fl_engine_t *e, const char **names, double *values, size_t cap);

/* 1 when the round limit or the target accuracy has been reached (and no
 * evaluation is open). */
int fl_engine_finished(const fl_engine_t *e);
/* Rounds completed so far. */
uint32_t fl_engine_rounds_done(const fl_engine_t *e);

/* The run state besides the weights and the clients (what a checkpoint
 * carries, fl_checkpoint.h). */
typedef struct {
  uint32_t rounds_done;
  fl_plateau_t plateau;
  double best_accuracy;
  int target_reached;
  fl_plateau_t server_plateau; /* the server schedule's (--server-schedule plateau) */
} fl_engine_state_t;

void fl_engine_get_state(const fl_engine_t *e, fl_engine_state_t *st);

/* The quarantine still running after the rounds done, as (id, last round)
 * pairs by ascending id, the restored entries of clients not registered
 * yet included: writes up to `cap` pairs to `pairs` (may be NULL with cap
 * 0) and returns how many there are. */
size_t fl_engine_quarantine_list(const fl_engine_t *e, uint32_t *pairs, size_t cap);

/* Restores a state, the weights (num_params) and the quarantine (`n`
 * pairs, ascending ids; it also applies to clients that register later),
 * between rounds (FL_ESTATE inside one, FL_ENOMEM). Values are the
 * caller's to validate (fl_checkpoint_load does). */
int fl_engine_set_state(fl_engine_t *e, const fl_engine_state_t *st, const float *weights,
                        const uint32_t *quarantine, size_t n);

/* The server optimizer's state (fl_server_optim.h): the number of vectors
 * of num_params floats it keeps (0 for plain FedAvg) and, if vecs is not
 * NULL, pointers to them in *vecs (the engine's own, valid while it is). */
size_t fl_engine_server_state(const fl_engine_t *e, const float *const **vecs);

/* Restores the server optimizer's state: fl_engine_server_state()'s
 * vectors, copied from vecs. Between rounds (FL_ESTATE); the values are
 * the caller's to validate (fl_sopt_check_state). */
int fl_engine_set_server_state(fl_engine_t *e, const float *const *vecs);

/* The open (or last) round's server rate (--server-lr through
 * --server-schedule). */
double fl_engine_server_lr(const fl_engine_t *e);

/* The configuration the engine runs with (a copy of fl_engine_new's). */
const fl_engine_config_t *fl_engine_config(const fl_engine_t *e);
/* 1 while a round is open. */
int fl_engine_round_open(const fl_engine_t *e);

/* The global weights (num_params floats). */
const float *fl_engine_weights(const fl_engine_t *e);
const fl_model_spec_t *fl_engine_model(const fl_engine_t *e);
const fl_wire_limits_t *fl_engine_limits(const fl_engine_t *e);

#endif
