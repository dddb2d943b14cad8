/* fl_server_optim: server optimizers, the step a coordinator takes with the
 * round's aggregate (Reddi et al., "Adaptive Federated Optimization", ICLR
 * 2021, Algorithm 2; Hsu et al. 2019 for FedAvgM).
 *
 * The aggregate of a round's accepted client deltas (FedAvg's weighted
 * mean, or a robust rule's statistic, after clipping: fl_agg.h) is a
 * pseudo-gradient d_t pointing downhill. With the server rate eta_t (from
 * --server-lr and --server-schedule), per coordinate:
 *
 *   fedavg      x += eta_t d_t                       (eta 1: plain FedAvg)
 *   fedavgm     m  = beta m + d_t;  x += eta_t m     (torch.optim.SGD with
 *               momentum=beta, dampening 0, on the gradient -d_t)
 *   fedadagrad  m  = b1 m + (1-b1) d_t;  v = v + d_t^2
 *   fedadam     m  = b1 m + (1-b1) d_t;  v = b2 v + (1-b2) d_t^2
 *   fedyogi     m  = b1 m + (1-b1) d_t;  v = v - (1-b2) d_t^2 sign(v - d_t^2)
 *               and for the three adaptive ones x += eta_t m / (sqrt(v) + tau)
 *
 * as in the paper: no bias correction; m starts at 0 and v at tau^2 (the
 * paper asks v_{-1} >= tau^2). fedadagrad with b1 = 0 is torch.optim.Adagrad
 * with initial_accumulator_value tau^2 and eps tau. Defaults: fedavgm
 * beta 0.9; fedadam and fedyogi b1 0.9, b2 0.99, tau 1e-3; fedadagrad b1 0
 * (plain Adagrad), tau 1e-3.
 *
 * Arithmetic: each coordinate's step in double from the float state, the
 * state and the weights stored as float, in index order: the same inputs
 * give the same bits (no reduction, no threads). fedavg is computed as
 * x += (float)(eta * d), so at eta 1 it is x += d: today's FedAvg, bit for
 * bit. The state (m, v) is O(model): 0, 1 or 2 floats per parameter.
 *
 * Specs (--server-optimizer): KIND[:key=value,...], keys
 *   fedavg       none
 *   fedavgm      momentum (a bare number after ':' is the momentum)
 *   fedadagrad   beta1, tau
 *   fedadam      beta1, beta2, tau
 *   fedyogi      beta1, beta2, tau
 * with momentum, beta1 in [0, 1), beta2 in [0, 1) and tau > 0. */
#ifndef FL_SERVER_OPTIM_H
#define FL_SERVER_OPTIM_H

#include <stddef.h>

typedef enum {
  FL_SOPT_FEDAVG = 0,
  FL_SOPT_FEDAVGM = 1,
  FL_SOPT_FEDADAGRAD = 2,
  FL_SOPT_FEDADAM = 3,
  FL_SOPT_FEDYOGI = 4
} fl_sopt_kind_t;

typedef struct {
  fl_sopt_kind_t kind;
  double momentum; /* fedavgm: beta */
  double beta1;    /* adaptive kinds: first-moment decay */
  double beta2;    /* fedadam, fedyogi: second-moment decay */
  double tau;      /* adaptive kinds: the adaptivity constant, > 0 */
} fl_sopt_config_t;

/* The most state vectors a server optimizer keeps (m and v). */
#define FL_SOPT_MAX_STATE 2

/* Parses a spec (above) into *out with the kind's defaults for the keys
 * not given. 0, or FL_EINVAL (unknown kind or key, not a number, a key the
 * kind does not take) / FL_ERANGE (a value out of range) with a message
 * naming the spec, the part and what is allowed (without a flag: the
 * caller adds it); *out is unchanged on error. */
int fl_sopt_parse(const char *spec, fl_sopt_config_t *out);

/* The canonical spec of c ("fedadam:beta1=0.9,beta2=0.99,tau=0.001", every
 * key of the kind, numbers in the fewest digits that read back to the same
 * double): fl_sopt_parse() reads it back to an equal config. 0, or
 * FL_ETOOBIG if it does not fit `len` bytes. */
int fl_sopt_format(const fl_sopt_config_t *c, char *buf, size_t len);

/* The kind's name ("fedyogi"). */
const char *fl_sopt_name(fl_sopt_kind_t kind);

/* How many state vectors of num_params floats the kind keeps: 0 (fedavg),
 * 1 (fedavgm: m), 2 (the adaptive kinds: m, then v). */
size_t fl_sopt_num_state(const fl_sopt_config_t *c);

/* The state's names, as a checkpoint stores them ("m", "v"). */
const char *fl_sopt_state_name(size_t i);

/* Sets the state to its initial value: m = 0, v = tau^2 (as a float).
 * state[i] is num_params floats, i < fl_sopt_num_state(c). */
void fl_sopt_init(const fl_sopt_config_t *c, float *const *state, size_t num_params);

/* 1 if every state value is one the kind can hold: finite, and v >= 0
 * (every rule keeps v positive, up to float underflow). On failure
 * *bad_vec and *bad_index name the first offending value. For checkpoints. */
int fl_sopt_check_state(const fl_sopt_config_t *c, float *const *state, size_t num_params,
                        size_t *bad_vec, size_t *bad_index);

/* One server step: x (num_params) moves by the kind's rule above, with
 * pseudo-gradient d (num_params) and rate eta, updating the state. Pure
 * arithmetic, in index order. */
void fl_sopt_step(const fl_sopt_config_t *c, double eta, float *x, const float *d,
                  float *const *state, size_t num_params);

#endif
