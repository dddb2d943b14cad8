/* fl_init: the model a run starts from, by --model and --init.
 *
 *   no --init                  the built-in --model (default softmax), its
 *                              weights initialised from --seed
 *   --init FILE                the model FILE holds: a built-in one if its
 *                              metadata "model" names one (a fedlr
 *                              model.safetensors or checkpoint), else a
 *                              custom model over FILE's tensors
 *   --init FILE --model SPEC   FILE must hold exactly SPEC's tensors
 *   --init FILE --model custom a custom model over FILE's tensors, whatever
 *                              its metadata says
 *
 * A custom model is any named float32 tensors (fl_layout.h), e.g. a
 * PyTorch state_dict saved with safetensors: the coordinator aggregates it
 * without knowing what it computes, so it has no test set of its own
 * (federated evaluation replaces it) and fedlr-sim cannot train it.
 *
 * Used in two steps because a built-in model needs the data's input width
 * and class count, and a custom one needs no data at all:
 * fl_init_read() (before loading data), then fl_init_model(). */
#ifndef FL_INIT_H
#define FL_INIT_H

#include <stddef.h>

#include "fl_config.h"
#include "fl_layout.h"
#include "fl_model.h"

typedef struct {
  int custom;                   /* the run's model is custom (layout's tensors) */
  char spec[FL_MODEL_SPEC_MAX]; /* else its built-in spec */
  fl_layout_t *layout;          /* --init's tensors (NULL without --init) */
  float *weights;               /* and their values (layout->num_params) */
  char path[FL_PATH_MAX];
} fl_init_t;

/* Reads --init (if any) and decides the model by the rules above. 0, or
 * an error naming --init and the file (FL_ENOENT, FL_EFORMAT, ...) or
 * --model. *in is zeroed first; fl_init_free() it in every case. */
int fl_init_read(const fl_config_t *c, fl_init_t *in);

/* The run's model: custom over in->layout (borrowed: `in` must outlive
 * the run), or the built-in spec for input_dim x num_classes (and the
 * input image `shape`: fl_model_parse_shape) whose tensors
 * must be exactly --init's (FL_ESHAPE naming the first difference). */
int fl_init_model(const fl_init_t *in, size_t input_dim, const fl_shape_t *shape,
                  size_t num_classes, fl_model_spec_t *m);

void fl_init_free(fl_init_t *in);

#endif
