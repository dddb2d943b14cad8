/* fl_trainer: the client side of a round. Turns an encoded RoundStart into
 * an encoded Update by local training on the client's examples: E epochs of
 * minibatch training (batch B, the last batch of an epoch may be smaller),
 * a fresh shuffle per epoch from the message's seed, the rate from the
 * message scaled by the local schedule, the optimizer from the message.
 * The update carries the delta (local - global) weights.
 *
 * A trainer is a workspace (parameters, gradients, optimizer state,
 * activations, one batch): O(model), independent of the client. fedlr-sim
 * keeps one per worker thread and lends it to many virtual clients; a
 * networked client keeps one for its lifetime. Same message and data in,
 * bit-identical update out.
 *
 * Attacks (for research and tests): a shard may carry an fl_attack_t
 * (fl_attack.h), which the trainer applies to the trained delta just
 * before encoding, so fedlr-sim's virtual clients and a fedlr-client
 * process attack identically.
 *
 * FedProx (Li et al., MLSys 2020): a round whose prox_mu is above 0
 * (RoundStart.prox_mu, protocol version 3) trains on the local objective
 * loss(w) + mu/2 ||w - w_global||^2: after every minibatch gradient the
 * trainer adds mu (w - w_global) to it (fl_trainer_prox_grad), and the
 * optimizer (weight decay included) then acts on the whole gradient, as
 * autograd would on that objective. The reported train_loss stays the data
 * loss, without the proximal term. prox_mu 0 runs the plain loop, bit for
 * bit the code of protocol version 2.
 *
 * A RoundStart is checked before any training: model spec and tensor
 * shapes against the trainer's model, the optimizer (fl_optim_validate)
 * and the local schedule (fl_sched_parse_local, the command line's own
 * check), so a coordinator cannot make a client train with what its flags
 * would have refused. */
#ifndef FL_TRAINER_H
#define FL_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "fl_attack.h"
#include "fl_data.h"
#include "fl_model.h"
#include "fl_optim.h"
#include "fl_wire.h"

typedef struct fl_trainer fl_trainer_t;

/* A trainer for model `m` whose examples have m->dims[0] features. */
fl_trainer_t *fl_trainer_new(const fl_model_spec_t *m);
void fl_trainer_destroy(fl_trainer_t **t);

/* A client's local data: rows idx[0..n) of `data` (idx NULL = rows 0..n-1),
 * and what the client does with it: honest (attack NULL or "none") or an
 * attack (borrowed). */
typedef struct {
  const fl_dataset_t *data;
  const uint32_t *idx;
  size_t n;
  const fl_attack_t *attack;
} fl_shard_t;

/* The example count the client behind `shard` claims (in its Join and
 * updates): n, or the attack's `examples`. */
uint64_t fl_trainer_claimed_examples(const fl_shard_t *shard);

/* A round's instructions, decoded (from a RoundStart, or from libfedlr's
 * fedlr_round in fedlr-client): the local schedule is a function, the rate
 * of local time t as a double (applied as a float), so the message path
 * (fl_sched_lr) and the library path (fedlr_local_lr) run one core. */
typedef double (*fl_trainer_lr_fn)(const void *arg, uint64_t t);
typedef struct {
  uint32_t round;
  fl_trainer_lr_fn lr; /* the rate at local time t (an epoch, or a step of the round) */
  const void *lr_arg;
  float lr0;     /* the round's rate, for messages */
  int step_unit; /* 1: t counts minibatch steps across the round; 0: t is the epoch */
  fl_optim_config_t optim;
  uint32_t local_epochs, batch_size;
  uint64_t seed; /* the epochs' shuffles; the attack's noise */
  float prox_mu; /* FedProx: mu in [0, FL_WIRE_MAX_PROX_MU]; 0 = plain local training */
} fl_train_plan_t;

typedef struct {
  double train_loss;     /* mean minibatch data loss over the round, example-weighted (without
                          * FedProx's proximal term) */
  uint64_t steps;        /* minibatch steps taken */
  uint64_t num_examples; /* what the client claims (fl_trainer_claimed_examples) */
} fl_train_stats_t;

/* The core of a round: trains the model from `global` (num_params floats,
 * borrowed) on `shard` as `p` says (E epochs of minibatch steps, a fresh
 * shuffle per epoch from p->seed, batch min(B, n), FedProx's term if
 * p->prox_mu > 0) and writes local - global to `delta` (num_params floats;
 * it may be the trainer's own parameter buffer), the shard's attack
 * applied. `global` is read until the end (FedProx's anchor at every step,
 * then the delta): it must not change during the call.
 * FL_ERANGE/FL_EINVAL for a bad optimizer or prox_mu, FL_ESHAPE for data
 * that does not fit the model, FL_ENONFINITE if training diverged,
 * FL_ESTATE if the tick aborted it; the detail is in fl_err_msg(). Same
 * inputs, same bits. */
int fl_trainer_train(fl_trainer_t *t, const fl_shard_t *shard, const fl_train_plan_t *p,
                     const float *global, float *delta, fl_train_stats_t *st);

/* FedProx's proximal gradient, the gradient of mu/2 ||w - w_global||^2:
 * grad[i] += mu * (w[i] - w_global[i]) for i in [0, n), in float, in index
 * order. What fl_trainer_train() adds to every minibatch gradient when
 * prox_mu > 0. */
void fl_trainer_prox_grad(float *grad, const float *w, const float *w_global, size_t n, float mu);

/* Trains on `shard` as instructed by the RoundStart in msg/len (decoded and
 * validated here: model spec and shapes must match the trainer's model) and
 * writes the encoded Update for `client_id` to a new malloc'd *out. On error
 * nothing is written to *out and the detail is in fl_err_msg(). */
int fl_trainer_run(fl_trainer_t *t, const fl_shard_t *shard, uint32_t client_id, const uint8_t *msg,
                   size_t len, uint8_t **out, size_t *out_len);

/* The same for a RoundStart already decoded by fl_wire_decode() with this
 * model's limits (a networked client decodes each message once to see its
 * kind). Both decode the message into an fl_train_plan_t and run
 * fl_trainer_train(). */
int fl_trainer_run_decoded(fl_trainer_t *t, const fl_shard_t *shard, uint32_t client_id,
                           const Fedlr__RoundStart *rs, uint8_t **out, size_t *out_len);

/* Evaluates `params` (the model's num_params floats) on every row of
 * `shard` (a client's held-out examples), in shard order: the mean
 * cross-entropy and the fraction classified correctly. The same rows and
 * weights give the same bits, whatever else the trainer did before.
 * FL_ESHAPE if the data does not fit the model. */
int fl_trainer_evaluate(fl_trainer_t *t, const fl_shard_t *shard, const float *params, double *loss,
                        double *accuracy);

/* Answers a decoded Evaluate (model spec and tensors checked against the
 * trainer's model): evaluates its weights on `shard` and writes the encoded
 * EvalResult for `client_id` (num_examples = shard->n, the loss, and the
 * metric "accuracy") to a new malloc'd *out. Uses the trainer's parameter
 * buffer: not during a round. */
int fl_trainer_evaluate_decoded(fl_trainer_t *t, const fl_shard_t *shard, uint32_t client_id,
                                const Fedlr__Evaluate *ev, uint8_t **out, size_t *out_len);

/* Optional hook called after every `every` local steps (e.g. to send a
 * heartbeat while training). Returning non-zero aborts the round
 * (fl_trainer_run returns FL_ESTATE). */
typedef int (*fl_trainer_tick_fn)(void *arg, uint64_t step);
void fl_trainer_set_tick(fl_trainer_t *t, fl_trainer_tick_fn fn, void *arg, uint64_t every);

#endif
