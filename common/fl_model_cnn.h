/* fl_model_cnn.h: the convolutional models' half of fl_model (internal to
 * common/fl_model.c and fl_model_cnn.c; everything else uses fl_model.h,
 * which documents the specs). */
#ifndef FL_MODEL_CNN_H
#define FL_MODEL_CNN_H

#include <stddef.h>
#include <stdint.h>

#include "fl_model.h"

/* Parses "cnn" or "cnn:ITEMS" for `input_dim` features, an input image of
 * `shape` (NULL or unset: 1 x sqrt(input_dim) x sqrt(input_dim), which must
 * be square) and `num_classes` classes into *out (errors name the item and
 * the sizes it gets). */
int fl_model__cnn_parse(const char *spec, size_t input_dim, const fl_shape_t *shape,
                        size_t num_classes, fl_model_spec_t *out);
/* The syntax of "cnn" or "cnn:ITEMS" alone (no input to fit). */
int fl_model__cnn_check(const char *spec);
/* Tensor i (2 l: layer l's weight, 2 l + 1: its bias). */
void fl_model__cnn_tensor(const fl_model_spec_t *m, size_t i, fl_tensor_info_t *out);
double fl_model__cnn_flops(const fl_model_spec_t *m);

/* The workspace for B <= max_batch images: NULL (fl_err_msg) on failure. */
typedef struct fl_cnn_ws fl_cnn_ws_t;
fl_cnn_ws_t *fl_model__cnn_ws_new(const fl_model_spec_t *m, size_t max_batch);
/* Floats (4 bytes each) of a workspace per example of its batch. */
size_t fl_model__cnn_ws_floats(const fl_model_spec_t *m);
void fl_model__cnn_ws_destroy(fl_cnn_ws_t *ws);
float fl_model__cnn_loss_grad(const fl_model_spec_t *m, fl_cnn_ws_t *ws, const float *params,
                              const float *x, const int32_t *y, size_t B, float *grad);
/* Forward on B <= max_batch: adds the summed loss and the correct rows. */
void fl_model__cnn_evaluate(const fl_model_spec_t *m, fl_cnn_ws_t *ws, const float *params,
                            const float *x, const int32_t *y, size_t B, double *loss_sum,
                            size_t *correct);
/* fl_model_sgd_step for a CNN (fl_model.h): the same bits as the gradient,
 * then params -= lr * grad; grad is scratch. */
float fl_model__cnn_sgd_step(const fl_model_spec_t *m, fl_cnn_ws_t *ws, float *params,
                             const float *x, const int32_t *y, size_t B, float lr, float *grad);
float fl_model__cnn_loss_grad_ref(const fl_model_spec_t *m, const float *params, const float *x,
                                  const int32_t *y, size_t B, float *grad);

#endif
