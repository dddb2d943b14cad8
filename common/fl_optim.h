/* fl_optim: client optimizers with PyTorch semantics (torch.optim.*).
 *
 * Specs: "sgd", "momentum[:0.9]", "nesterov[:0.9]", "adagrad[:eps=1e-10]",
 * "rmsprop[:alpha=0.99,eps=1e-8]", "adam[:beta1=0.9,beta2=0.999,eps=1e-8]",
 * any of them with ",wd=W" (L2 weight decay added to the gradient, as
 * torch.optim's weight_decay) and ",keep" (keep state across rounds). By
 * default the optimizer state is reset at the start of every round: a client
 * is stateless between rounds, as in FedAvg.
 *
 * Grammar: KIND, then optionally ':' or ',' and a comma-separated list of
 * key=value parameters (and "keep" or keep=0|1), so "sgd,wd=1e-4",
 * "sgd:wd=1e-4", "momentum:0.9,wd=1e-4" and "adam:beta1=0.8,wd=0.01,keep"
 * all parse. For momentum and nesterov a bare number right after ':' is the
 * momentum ("momentum:0.9"). A key given twice: the last value wins. */
#ifndef FL_OPTIM_H
#define FL_OPTIM_H

#include <stddef.h>

typedef enum {
  FL_OPT_SGD = 0,
  FL_OPT_MOMENTUM = 1,
  FL_OPT_NESTEROV = 2,
  FL_OPT_ADAGRAD = 3,
  FL_OPT_RMSPROP = 4,
  FL_OPT_ADAM = 5
} fl_optim_kind_t; /* values match fedlr.Optimizer.Kind */

typedef struct {
  fl_optim_kind_t kind;
  float momentum;     /* momentum, nesterov (default 0.9) */
  float beta1, beta2; /* adam (0.9, 0.999) */
  float eps;          /* adagrad 1e-10, rmsprop 1e-8, adam 1e-8 */
  float alpha;        /* rmsprop (0.99) */
  float weight_decay; /* 0 */
  int keep_state;     /* 0: reset at round start */
} fl_optim_config_t;

/* Parses a spec (grammar above) into *out, range-checked as by
 * fl_optim_validate. Returns 0, FL_EINVAL (syntax, unknown kind or key) or
 * FL_ERANGE (a value out of range) with a message naming the bad part;
 * *out is unchanged on error. */
int fl_optim_parse(const char *spec, fl_optim_config_t *out);
/* Range-checks a config that arrived from the wire. */
int fl_optim_validate(const fl_optim_config_t *c);
int fl_optim_format(const fl_optim_config_t *c, char *buf, size_t len);

typedef struct fl_optim fl_optim_t;

/* An optimizer for n parameters (state buffers allocated as the kind needs). */
fl_optim_t *fl_optim_new(const fl_optim_config_t *c, size_t n);
void fl_optim_destroy(fl_optim_t **o);
/* Zeroes the state (step count, moments). */
void fl_optim_reset(fl_optim_t *o);
/* Replaces the config (same n); state kept unless kind changed. */
void fl_optim_configure(fl_optim_t *o, const fl_optim_config_t *c);
/* One step: params -= update(grad, lr). grad may be modified (weight decay). */
void fl_optim_step(fl_optim_t *o, float *params, float *grad, float lr);

#endif
