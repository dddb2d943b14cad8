/* fl_engine_int.h: the round engine's state, shared by its two halves
 * (internal to coordinator/: fl_engine.c, clients, rounds, aggregation,
 * state; fl_engine_eval.c, evaluation on the test set and by clients).
 * Not for anyone else: everything outside uses fl_engine.h. */
#ifndef FL_ENGINE_INT_H
#define FL_ENGINE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "fl_engine.h"

#define FL_EVAL_BATCH 1000 /* test examples per evaluation chunk */

typedef struct {
  char *name; /* NULL: free id */
  uint64_t num_examples;
  int available;
  uint32_t quarantined_through; /* not sampled up to this round (a rejected update); 0 = never */
  uint64_t eval_examples;       /* held-out examples it evaluates on; 0 = none */
  uint32_t eval_kept_through;   /* not asked to evaluate up to this round */
} fl_client_rec_t;

/* Between rounds; a round open; a round's federated evaluation open. */
enum { ROUND_IDLE = 0, ROUND_OPEN = 1, EVAL_OPEN = 2 };
/* A sampled slot this round: no answer yet, an accepted update, or a
 * rejected one. */
enum { SLOT_NONE = 0, SLOT_REPORTED = 1, SLOT_REJECTED = 2 };

struct fl_engine {
  fl_engine_config_t cfg;
  fl_wire_limits_t limits;
  float *weights;          /* (num_params) global model */
  fl_wire_tensors_t tv;    /* the global model as wire tensors (points into weights) */
  fl_agg_t *agg;           /* the round's aggregate (see fl_agg.h) */
  fl_model_ws_t **eval_ws; /* (eval_threads) one workspace per evaluation thread */
  size_t eval_threads;
  double *chunk_loss;    /* (eval chunks) summed loss of each chunk */
  size_t *chunk_correct; /* (eval chunks) */

  fl_client_rec_t *clients; /* (cap_clients) indexed by id */
  size_t num_clients, cap_clients, num_available;
  uint32_t *name_index; /* (name_cap) open-addressing hash: id + 1, 0 = empty */
  size_t name_cap;
  uint32_t attempt; /* retries of the current round index */
  uint32_t *pool;   /* (cap_clients) scratch for sampling */

  int state;
  uint32_t round; /* open round, or last closed one; 0 before the first */
  uint32_t rounds_done;
  double lr;                 /* this round's rate */
  uint32_t *sampled;         /* (num_sampled) ascending client ids */
  uint8_t *reported;         /* (num_sampled) SLOT_* state of each sampled slot */
  double *slot_loss;         /* (num_sampled) train loss per slot */
  uint64_t *slot_examples;   /* (num_sampled) examples per reported slot (capped) */
  uint64_t *slot_registered; /* (num_sampled) registered examples when the round began
                              * (capped at max_examples) */
  size_t num_sampled, num_reported, num_answered_bad, cap_sampled;
  uint32_t num_rejected, num_clipped, num_capped; /* this round's counts, see fl_round_metrics_t */
  fl_plateau_t plateau;
  /* The server step (fl_server_optim.h): the round's server rate, its
   * schedule's plateau state, the optimizer's state (cfg.server_optim's
   * vectors, num_params floats each) and the round's aggregate. pseudo is
   * NULL when the step is plain FedAvg at rate 1 throughout (fl_agg_apply
   * then adds the aggregate directly). */
  double server_lr;
  fl_plateau_t server_plateau;
  float *sopt_state[FL_SOPT_MAX_STATE];
  float *pseudo;
  double best_accuracy;
  int target_reached;
  uint32_t *q_restore; /* (2 * num_q_restore) id, through: a checkpoint's quarantine */
  size_t num_q_restore;
  fl_fedeval_t *fedeval; /* the round's federated evaluation */
  uint64_t *eval_max;    /* (cap_clients) scratch: the evaluators' declared examples */
};

/* fl_engine.c */
int fl_engine__cmp_u32(const void *a, const void *b);

/* fl_engine_eval.c */
/* The test-set evaluation's workspaces (cfg.test set): FL_ENOMEM. */
int fl_engine__eval_setup(fl_engine_t *e);
void fl_engine__eval_free(fl_engine_t *e);
/* After a round's aggregation: evaluates on the test set if due (the
 * plateau schedule and the target follow it), then opens the federated
 * evaluation if due and possible. Fills m's test_* (NAN if not evaluated)
 * and fed_eval_* (NAN / 0 until fl_engine_end_eval). */
int fl_engine__after_round(fl_engine_t *e, fl_round_metrics_t *m);

#endif
