/* fl_checkpoint: a run's checkpoint file, written and read back exactly.
 *
 * One safetensors file (fl_safetensors.h): the global weights as the model's
 * tensors, and the run state as metadata (rounds done, seed, plateau-
 * schedule state, best accuracy, target reached, the quarantine still
 * running), doubles as hex floats so they come back bit for bit, under a
 * CRC-32 of the whole file. Written atomically (temporary file, fsync,
 * rename, directory fsync).
 *
 * A checkpoint is not trusted: fl_checkpoint_load() requires the checksum
 * and checks every value against the engine's configuration (a value this
 * run can have produced: rounds done within its round limit, a plateau state
 * its schedule reaches, weights finite and within FL_ENGINE_MAX_WEIGHT, ...),
 * naming the key, the value and what is allowed otherwise; the engine is
 * unchanged on every error. */
#ifndef FL_CHECKPOINT_H
#define FL_CHECKPOINT_H

#include "fl_engine.h"

/* Writes engine e's weights and run state to `path`. Only between rounds
 * (FL_ESTATE). FL_ETOOBIG if the quarantine list does not fit the metadata
 * (about 1,300 clients quarantined at once), FL_EIO from the write. */
int fl_checkpoint_save(const fl_engine_t *e, const char *path);

/* Restores a checkpoint written by fl_checkpoint_save() for the same model
 * and seed into e (FL_EINVAL / FL_EFORMAT / FL_ERANGE / FL_ENONFINITE naming
 * the problem otherwise). Only between rounds; e is unchanged on error. */
int fl_checkpoint_load(fl_engine_t *e, const char *path);

#endif
