/* fl_safetensors: model weights in the safetensors format
 * (https://huggingface.co/docs/safetensors): 8-byte little-endian header
 * length, a JSON header {"name":{"dtype":"F32","shape":[..],
 * "data_offsets":[begin,end]}, "__metadata__":{string:string}}, then the raw
 * little-endian data. Loadable with numpy or safetensors.torch.load_file(). */
#ifndef FL_SAFETENSORS_H
#define FL_SAFETENSORS_H

#include <stddef.h>

#include "fl_model.h"

#define FL_SAFETENSORS_MAX_HEADER (1u << 20)

/* Writes model m's tensors from `params` to `path` atomically (see fl_file).
 * `meta` is NULL or a NULL-terminated list of key, value, key, value, ...
 * strings stored in __metadata__ (the model spec is always stored as "model"). */
int fl_safetensors_save(const char *path, const fl_model_spec_t *m, const float *params,
                        const char *const *meta);

/* Reads `path` into params (m->num_params floats), requiring exactly model
 * m's tensor names, F32 dtype, shapes and in-bounds, non-overlapping offsets.
 * Bounds the header before allocating; any mismatch is FL_EFORMAT/FL_ESHAPE
 * with a detail. Only a regular file is read: a FIFO, device or directory is
 * FL_EINVAL at once (fl_file_open_input), never a blocked open() or an
 * endless read. params is unchanged on error. */
int fl_safetensors_load(const char *path, const fl_model_spec_t *m, float *params);

/* Reads one metadata value (e.g. "model") into buf; FL_ENOENT if absent. */
int fl_safetensors_meta(const char *path, const char *key, char *buf, size_t len);

#endif
