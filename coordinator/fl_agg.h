/* fl_agg: the aggregation rules of a round, exact and order-independent.
 *
 * A round has `slots` sampled clients. Each accepted update is added for
 * its slot (fl_agg_add); at the end fl_agg_apply() moves the global weights
 * by the aggregate of the added slots' deltas:
 *
 *   FedAvg (FL_AGG_FEDAVG): sum_k n_k delta_k / sum_k n_k. Each term n_k
 *     delta_k is rounded once onto a grid of 2^-40 and summed exactly in
 *     integers (two int64 limbs per parameter, carried every 255 terms), so
 *     the result is the same bits in any order of arrival, and a term
 *     depends only on its own update: an update that is not added changes
 *     nothing. Memory O(model): 16 bytes per parameter.
 *   Median, trimmed mean (Yin et al. 2018): coordinate-wise over the added
 *     deltas, unweighted. Each delta is kept in the row of its slot (not its
 *     arrival), so again the same bits in any order; O(slots x model)
 *     memory (4 bytes per parameter per slot), allocated only for them.
 *   Clipping (clip_norm > 0, with every rule): a delta is scaled by
 *     min(1, C / ||delta||_2), the norm summed in double in a fixed order.
 *
 * Validation: an update whose values are NaN, infinite or beyond
 * FL_AGG_MAX_DELTA in magnitude is refused with a detail naming the sender,
 * and leaves no trace (a fold already begun is folded back out, bit for
 * bit). Shapes are the caller's to check (fl_wire_check_tensors).
 *
 * Bounds that keep the integer sum from overflowing: |delta| <= 2^20,
 * n_k <= 2^32, at most 2^24 slots. Not thread-safe. */
#ifndef FL_AGG_H
#define FL_AGG_H

#include <stddef.h>
#include <stdint.h>

#include "fl_wire.h"

/* A single delta component may not exceed this in magnitude. */
#define FL_AGG_MAX_DELTA 1048576.0
/* The most examples one update may weigh (FedAvg's n_k), and slots. */
#define FL_AGG_MAX_EXAMPLES FL_WIRE_MAX_EXAMPLES
#define FL_AGG_MAX_SLOTS (1u << 24)

/* The rules: FedAvg, the example-weighted mean; the others coordinate-wise
 * and unweighted (Yin et al. 2018). */
typedef enum { FL_AGG_FEDAVG = 0, FL_AGG_MEDIAN = 1, FL_AGG_TRIMMED_MEAN = 2 } fl_agg_kind_t;

typedef struct {
  fl_agg_kind_t kind; /* FL_AGG_FEDAVG, FL_AGG_MEDIAN or FL_AGG_TRIMMED_MEAN */
  double trim_beta;   /* trimmed mean: floor(beta * r) of r values cut from each end, [0, 0.5) */
  double clip_norm;   /* > 0: deltas scaled to L2 norm <= clip_norm; 0 = off */
} fl_agg_config_t;

/* Parses a rule's spec (--aggregator): "fedavg", "median" or
 * "trimmed-mean:BETA" with BETA a number in [0, 0.5), the fraction cut from
 * each end. Sets out->kind and out->trim_beta (0 but for the trimmed mean)
 * and leaves out->clip_norm, a setting of its own (--clip-norm). 0, or
 * FL_EINVAL with a message naming the spec and the forms (without a flag:
 * the caller adds it); *out is unchanged on error. */
int fl_agg_parse(const char *spec, fl_agg_config_t *out);

/* The canonical spec of c's rule ("median", "trimmed-mean:0.25"; BETA in
 * the fewest digits that read back to the same double), which
 * fl_agg_parse() reads back to the same kind and trim_beta. 0, or
 * FL_ETOOBIG if it does not fit `len` bytes, FL_EINVAL for a kind that is
 * none of the rules. */
int fl_agg_format(const fl_agg_config_t *c, char *buf, size_t len);

typedef struct fl_agg fl_agg_t;

/* An aggregator for `num_params` parameters. NULL with *err (FL_EINVAL for
 * a bad config, FL_ENOMEM) and a detail on failure. */
fl_agg_t *fl_agg_new(const fl_agg_config_t *c, size_t num_params, int *err);
void fl_agg_destroy(fl_agg_t **a);

/* Starts a round of `slots` sampled clients: nothing added yet. FL_ENOMEM
 * (a robust rule keeps every slot's delta) or FL_ERANGE beyond
 * FL_AGG_MAX_SLOTS, and the aggregator is then empty. */
int fl_agg_begin(fl_agg_t *a, size_t slots);

/* Adds the update of slot `slot` (not added yet this round): tensors t[0..n)
 * in model order with checked shapes, deltas (is_delta) or full weights
 * from which `global` is subtracted in place, weighing `examples` (1 ..
 * FL_AGG_MAX_EXAMPLES). FL_ENONFINITE / FL_ERANGE for a bad value (the
 * detail names client `sender` and the value), and nothing is added. Sets
 * *clipped to 1 if the delta was scaled down. */
int fl_agg_add(fl_agg_t *a, size_t slot, uint32_t sender, Fedlr__Tensor *const *t, size_t n,
               int is_delta, const float *global, uint64_t examples, int *clipped);

/* 1 if slot `slot` has been added this round. */
int fl_agg_added(const fl_agg_t *a, size_t slot);

/* global (num_params) += the rule's aggregate of the added deltas.
 * FL_ESTATE if nothing was added, FL_ENOMEM (global unchanged). */
int fl_agg_apply(fl_agg_t *a, float *global);

/* Writes the rule's aggregate of the added deltas to delta (num_params),
 * the values fl_agg_apply() would add, bit for bit: a server optimizer's
 * pseudo-gradient (fl_server_optim.h). FL_ESTATE if nothing was added,
 * FL_ENOMEM. */
int fl_agg_result(fl_agg_t *a, float *delta);

#endif
