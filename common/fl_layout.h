/* fl_layout: a model as a table of named float32 tensors.
 *
 * Every fedlr model is, to the coordinator, an ordered list of named dense
 * tensors laid out back to back in one float buffer (so aggregation and
 * clipping are single loops over the buffer). The built-in models
 * (fl_model.h) compute their list from the spec; any other model brings
 * its own, read from a safetensors file (fedlr-coordinator --init): the
 * coordinator aggregates, clips, checkpoints and sends it without knowing
 * what the tensors mean. That list is an fl_layout_t.
 *
 * Names: 1 to FL_LAYOUT_MAX_NAME bytes of printable ASCII without space,
 * '"' or '\\' (PyTorch state_dict keys such as "conv1.weight" or
 * "layers.0.attn.in_proj_bias"), unique. Shapes: 0 (a scalar) to
 * FL_LAYOUT_MAX_DIMS dimensions, each >= 1. At most FL_LAYOUT_MAX_TENSORS
 * tensors and FL_MODEL_MAX_PARAMS values in all. */
#ifndef FL_LAYOUT_H
#define FL_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#define FL_LAYOUT_MAX_TENSORS 4096
#define FL_LAYOUT_MAX_DIMS 8
#define FL_LAYOUT_MAX_NAME 255
/* The most parameters of any model, built-in or not (2^28: 1 GiB of floats). */
#define FL_MODEL_MAX_PARAMS ((size_t)1 << 28)

/* One named tensor inside a parameter buffer. */
typedef struct {
  char name[FL_LAYOUT_MAX_NAME + 1];
  size_t offset; /* in floats, into the parameter buffer */
  size_t count;  /* number of floats: the product of the shape (1 for a scalar) */
  uint32_t ndim; /* 0 .. FL_LAYOUT_MAX_DIMS */
  uint32_t shape[FL_LAYOUT_MAX_DIMS];
} fl_tensor_info_t;

typedef struct {
  size_t n;            /* tensors */
  size_t num_params;   /* floats in all, the sum of the counts */
  fl_tensor_info_t *t; /* n entries, offsets back to back in order */
  size_t cap;
} fl_layout_t;

/* An empty layout. NULL (out of memory) sets fl_err_msg(). */
fl_layout_t *fl_layout_new(void);
void fl_layout_destroy(fl_layout_t **l);

/* Appends a tensor at the end of the buffer. FL_EINVAL for a bad or
 * repeated name, a zero dimension, too many dimensions; FL_ETOOBIG beyond
 * FL_LAYOUT_MAX_TENSORS or FL_MODEL_MAX_PARAMS. Errors name the tensor. */
int fl_layout_add(fl_layout_t *l, const char *name, uint32_t ndim, const uint32_t *shape);

/* Checks a tensor name (the rule above): 0 or FL_EINVAL with a detail. */
int fl_layout_check_name(const char *name);

/* 1 if a and b have the same names, shapes and order. */
int fl_layout_equal(const fl_layout_t *a, const fl_layout_t *b);

/* A short fingerprint of the names and shapes (FNV-1a 64), for a run's
 * identity in checkpoints: 16 lowercase hex digits into buf (cap >= 17). */
const char *fl_layout_fingerprint(const fl_layout_t *l, char *buf, size_t cap);

/* "[a,b,c]" (or "[]") into buf; returns buf. */
const char *fl_layout_fmt_shape(const uint32_t *shape, uint32_t ndim, char *buf, size_t cap);

#endif
