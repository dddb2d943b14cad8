/* fl_checkpoint: a run's checkpoint file, written and read back exactly.
 *
 * One safetensors file (fl_safetensors.h): the global weights as the model's
 * tensors, then the server optimizer's state if it keeps one (fedavgm: m;
 * the adaptive ones: m, v), a tensor per model tensor with its shape,
 * named FL_ENGINE_STATE_PREFIX "m.0", "m.1", ..., "v.0", ... by the model
 * tensor's index; as metadata the run state (rounds done, the plateau
 * state of the round schedule and of the server schedule, best accuracy,
 * target reached, the quarantine still running) and the
 * run's identity (below), doubles as hex floats so they come back bit for
 * bit, under a CRC-32 of the whole file. Written atomically (temporary
 * file, fsync, rename, directory fsync).
 *
 * The run's identity is every setting that changes what the run computes,
 * one metadata key each, taken from the engine's configuration (numbers in
 * decimal, doubles as hex floats compared bit for bit, specs as text):
 *   model                    --model (fl_safetensors' own entry)
 *   fedlr_seed               --seed
 *   fedlr_lr, fedlr_lr0      --lr as given ("0.05", "auto:10"), and the
 *                            initial rate it resolved to
 *   fedlr_schedule           --schedule, canonical (fl_sched_format)
 *   fedlr_local_schedule     --local-schedule, as the clients receive it
 *   fedlr_local_unit         --local-unit: "epoch" or "step"
 *   fedlr_optimizer          --optimizer, canonical (fl_optim_format)
 *   fedlr_local_epochs       --local-epochs
 *   fedlr_batch_size         --batch-size
 *   fedlr_fraction           --fraction
 *   fedlr_min_clients        --min-clients (it sets the sample size)
 *   fedlr_clients            --clients
 *   fedlr_aggregator         --aggregator, canonical (fl_agg_format)
 *   fedlr_clip_norm          --clip-norm
 *   fedlr_max_examples       --max-examples
 *   fedlr_quarantine_rounds  --quarantine
 *   fedlr_eval_every         --eval-every      (they drive the plateau
 *   fedlr_target_accuracy    --target-accuracy  schedule and the stop)
 *   fedlr_server_optimizer   --server-optimizer, canonical (fl_sopt_format)
 *   fedlr_server_lr          --server-lr
 *   fedlr_server_schedule    --server-schedule, canonical
 *   fedlr_prox_mu            --prox-mu
 *   fedlr_input_shape        a CNN's input image CxHxW (--input-shape, or
 *                            the IDX data's), or "none" when it is the
 *                            1 x sqrt(D) x sqrt(D) inferred from D features
 *                            (and for other models): the tensors' shapes do
 *                            not always fix it (1x8x24 and 1x24x8)
 * A checkpoint of a fedlr 0.2 lacks fedlr_server_optimizer to
 * fedlr_prox_mu and the server plateau state: it reads as fedavg, 1, const
 * and 0, what that fedlr ran, so it resumes a run with those settings; one
 * of a fedlr before shapes (0.3) reads as fedlr_input_shape "none".
 * A resume with any of them changed would compute another experiment, so it
 * is refused. One change is allowed, and reported to the caller to log:
 *   fedlr_rounds             --rounds: raised to extend a run (or lowered,
 *                            but not below the rounds done). The rounds
 *                            that follow are those of an uninterrupted run
 *                            with the new limit, except that the old last
 *                            round was evaluated as the last: with
 *                            --eval-every above 1 that evaluation may be one
 *                            a longer run would not have made, which feeds
 *                            a plateau schedule or --target-accuracy one
 *                            more loss.
 * Not part of the identity (a resume may change them): how long and for
 * whom the coordinator waits (its timeouts, --quorum, --max-retries,
 * --start-clients, --start-timeout), --checkpoint-every, the join and
 * connection limits, CurveZMQ keys, paths (--out, --metrics, --data-dir),
 * --quiet; nor the test set (--dataset, --test-data), which is not
 * fingerprinted: resume with the same one.
 *
 * A checkpoint is not trusted either: fl_checkpoint_load() requires the
 * checksum and checks every value against the engine's configuration (a
 * value this run can have produced: rounds done within its round limit, a
 * plateau state its schedule reaches, weights finite and within
 * FL_ENGINE_MAX_WEIGHT, ...), naming the key, the value and what is allowed
 * otherwise; the engine is unchanged on every error. */
#ifndef FL_CHECKPOINT_H
#define FL_CHECKPOINT_H

#include <stddef.h>

#include "fl_engine.h"

/* Writes engine e's weights, run state and identity to `path`. Only between
 * rounds (FL_ESTATE). FL_ETOOBIG if the quarantine list does not fit the
 * metadata (about 1,300 clients quarantined at once), FL_EIO from the
 * write. */
int fl_checkpoint_save(const fl_engine_t *e, const char *path);

/* Restores a checkpoint written by fl_checkpoint_save() into e, whose
 * configuration must have the checkpoint's identity. Only between rounds
 * (FL_ESTATE); e is unchanged on every error.
 *   FL_EINVAL   a setting of the identity differs: "checkpoint P was written
 *               with --aggregator median; this run has --aggregator fedavg:
 *               resume with the same flags (or start a new run)" (the first
 *               one, and the flags of any others); or --rounds is below the
 *               rounds done; or `path` is not a regular file
 *   FL_EFORMAT  no checksum, or a key missing (a checkpoint of an older
 *               fedlr, which cannot be checked against this run), or an
 *               unknown fedlr_* key, or a value that is not a number where
 *               one is due
 *   FL_ERANGE, FL_ENONFINITE, FL_ESHAPE   a value this run cannot have
 *               produced, a weight, a tensor
 * On success the allowed changes are written to `changes` (cap bytes,
 * "--rounds 20 -> 40", "" if none), which may be NULL. */
int fl_checkpoint_load(fl_engine_t *e, const char *path, char *changes, size_t cap);

#endif
