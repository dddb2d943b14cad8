/* fl_model: softmax regression, ReLU MLPs and CNNs, on fl_gemm's kernels.
 *
 * A model is a stack of L linear layers; hidden layers use ReLU; the output
 * layer feeds softmax + cross-entropy. All parameters live in one contiguous
 * float buffer (so FedAvg and optimizer steps are single loops/BLAS calls),
 * laid out layer by layer as
 *   W_l  (dims[l+1], dims[l])  row-major, PyTorch nn.Linear layout
 *   b_l  (dims[l+1])
 * Tensor names (wire, safetensors) are "layers.<l>.weight" / "layers.<l>.bias".
 *
 * Specs: "softmax" (L=1), "mlp:H1,H2,..." (ReLU hidden layers). The FedAvg
 * paper's 2NN is "mlp:200,200" on 784 inputs: 199,210 parameters.
 *
 * Convolutional networks (fl_model_cnn.c, on common/fl_layers): "cnn" is the
 * FedAvg paper's CNN, "cnn:conv5x5x32,pool2,conv5x5x64,pool2,fc512"; in
 * general "cnn:" and a comma-separated list of
 *   convKxKxOC     a K x K convolution to OC channels, stride 1, 'same'
 *                  zero padding (K odd), then ReLU
 *   convKHxKWxOCvalid   any KH x KW kernel without padding ('valid')
 *   pool2          2x2 max pooling, stride 2 (floor)
 *   fcN            flatten (NCHW) if not yet, a dense layer of N, then ReLU
 * and always a final dense layer to the classes (softmax cross-entropy).
 * Activations are NCHW; the input is the image shape C x H x W given to
 * fl_model_parse_shape (--input-shape, or the IDX file's dimensions: see
 * fl_shape.h), or without one, as fedlr did first, one channel of
 * sqrt(n) x sqrt(n) (n = the data's features, a square: 28 x 28 for
 * Fashion-MNIST). The
 * tensors are those of the equivalent torch.nn.Sequential (Conv2d, ReLU,
 * MaxPool2d, Flatten, Linear modules in that order), named by module index
 * ("0.weight", "0.bias", "3.weight", ...), in PyTorch's layouts: conv
 * (OC, C, KH, KW), dense (OUT, IN), so model.safetensors loads into it with
 * load_state_dict. The FedAvg CNN on 28 x 28: 1,663,370 parameters.
 *
 * A custom model (spec "custom", fl_model_custom) is only a table of named
 * tensors (fl_layout.h) that fedlr aggregates, clips and stores without
 * knowing what they compute: the clients bring the code. Everything that
 * works on a model's tensors (fl_model_num_tensors, fl_model_tensor, the
 * codec, checkpoints) takes both; training and evaluation (the workspace
 * functions, fl_model_init) are for built-in models only. */
#ifndef FL_MODEL_H
#define FL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "fl_layout.h"
#include "fl_shape.h"

#define FL_MODEL_MAX_LAYERS 8
#define FL_MODEL_MAX_OPS 16 /* a CNN's conv, pool and fc items */

/* A CNN's item (fl_model_cnn.c). */
typedef enum { FL_OP_CONV = 1, FL_OP_POOL = 2, FL_OP_FC = 3 } fl_model_op_kind_t;
typedef struct {
  uint8_t kind;    /* fl_model_op_kind_t */
  uint8_t valid;   /* conv: no padding */
  uint16_t kh, kw; /* conv: kernel */
  uint32_t out;    /* conv: channels; fc: width */
} fl_model_op_t;
#define FL_MODEL_SPEC_MAX 128
#define FL_MODEL_CUSTOM "custom" /* the spec of a custom model */

typedef struct {
  size_t num_layers;                    /* L, linear layers (0: custom) */
  size_t dims[FL_MODEL_MAX_LAYERS + 1]; /* dims[0] input, dims[L] classes */
  size_t num_params;
  char spec[FL_MODEL_SPEC_MAX]; /* the spec it was parsed from, or "custom" */
  const fl_layout_t *layout;    /* custom: its tensors (borrowed); NULL: built-in */
  /* A CNN (in_c > 0): the input image C x H x W (dims[0] = C H W) and its
   * items; num_layers is then its layers with parameters (convs, fcs and
   * the classifier), dims[l] the per-sample output size of layer l - 1. */
  size_t in_c, in_h, in_w;
  size_t num_ops;
  fl_model_op_t ops[FL_MODEL_MAX_OPS];
} fl_model_spec_t;

/* Parses a spec for the given input width and class count. Errors name the
 * bad part ("model 'mlp:200,x': hidden width 'x' is not a positive integer"). */
int fl_model_parse(const char *spec, size_t input_dim, size_t num_classes, fl_model_spec_t *out);

/* fl_model_parse for inputs of image shape `shape` (NULL or unset: none,
 * as fl_model_parse). A CNN takes it as its input C x H x W, which must be
 * `input_dim` features (else FL_ESHAPE); a spec that does not fit it is
 * refused naming the item and the sizes it gets. Softmax and MLPs ignore
 * the shape. *out unchanged on error. */
int fl_model_parse_shape(const char *spec, size_t input_dim, const fl_shape_t *shape,
                         size_t num_classes, fl_model_spec_t *out);

/* The syntax of a spec alone, for a flag checked before the data is read:
 * a CNN's items are not fitted to any input; softmax and MLP specs are
 * parsed for 784 inputs and 10 classes. 0 or FL_EINVAL/FL_ETOOBIG. */
int fl_model_check_spec(const char *spec);

/* The input image of a CNN (in_c x in_h x in_w), else an unset shape. */
fl_shape_t fl_model_shape(const fl_model_spec_t *m);

/* 1 if m is a CNN whose input is not the 1 x sqrt(n) x sqrt(n) that
 * fl_model_parse infers from its n features: a peer that knows only the
 * spec and n (protocol version 3 or older) would build another model. */
int fl_model_needs_shape(const fl_model_spec_t *m);

/* A custom model over `layout` (borrowed: it must outlive every copy of
 * *out). FL_EINVAL for an empty layout. */
int fl_model_custom(const fl_layout_t *layout, fl_model_spec_t *out);

/* 1 for a built-in model (one that fedlr can train and evaluate). */
static inline int fl_model_is_builtin(const fl_model_spec_t *m) {
  return m->layout == NULL;
}

/* Number of tensors (2 * num_layers, or the layout's) and the i-th
 * tensor's info. */
size_t fl_model_num_tensors(const fl_model_spec_t *m);
void fl_model_tensor(const fl_model_spec_t *m, size_t i, fl_tensor_info_t *out);

/* PyTorch nn.Linear default init: U(-1/sqrt(in), 1/sqrt(in)) for W and b,
 * deterministic from seed. */
void fl_model_init(const fl_model_spec_t *m, float *params, uint64_t seed);

/* Scratch space for forward/backward at batch size <= max_batch. */
typedef struct fl_model_ws fl_model_ws_t;
fl_model_ws_t *fl_model_ws_new(const fl_model_spec_t *m, size_t max_batch);
void fl_model_ws_destroy(fl_model_ws_t **ws);

/* Forward + backward on one batch. x: (B, dims[0]); y: (B) labels.
 * Writes grad (num_params) = d(mean cross-entropy)/d(params), overwriting it.
 * Returns the mean loss. B <= max_batch. */
float fl_model_loss_grad(const fl_model_spec_t *m, fl_model_ws_t *ws, const float *params,
                         const float *x, const int32_t *y, size_t B, float *grad);

/* One step of plain SGD on one batch: params -= lr * grad, with the
 * gradient of fl_model_loss_grad, bit for bit the same as that call followed
 * by fl_optim_step with "sgd" (no weight decay). On fl_gemm's own kernels
 * the backward applies each dense layer's step as it forms the gradient,
 * which is then never stored (one pass over the weights instead of three);
 * a convolution's gradient, and everything on the OpenBLAS family, goes
 * through `grad` (num_params floats of scratch). Returns the mean loss. */
float fl_model_sgd_step(const fl_model_spec_t *m, fl_model_ws_t *ws, float *params, const float *x,
                        const int32_t *y, size_t B, float lr, float *grad);

/* The batch to evaluate `want` examples at a time with: `want` itself for
 * an MLP; for a CNN, whose activations take hundreds of KB an example, the
 * largest batch <= want whose workspace fits FL_MODEL_EVAL_WS_BYTES (at
 * least 1). fl_model_evaluate takes any number of examples in chunks of its
 * workspace's batch; the result does not depend on the threads, only on
 * the model and `want`. */
#define FL_MODEL_EVAL_WS_BYTES ((size_t)32 << 20)
size_t fl_model_eval_batch(const fl_model_spec_t *m, size_t want);

/* Forward only on B examples (any B: processed in chunks of max_batch).
 * Adds the summed cross-entropy to *loss_sum and correct predictions to
 * *correct. */
void fl_model_evaluate(const fl_model_spec_t *m, fl_model_ws_t *ws, const float *params,
                       const float *x, const int32_t *y, size_t B, double *loss_sum,
                       size_t *correct);

/* Naive reference (plain loops, no BLAS) of fl_model_loss_grad, for tests. */
float fl_model_loss_grad_ref(const fl_model_spec_t *m, const float *params, const float *x,
                             const int32_t *y, size_t B, float *grad);

/* FLOPs of one forward+backward pass per example (for benchmarks). */
double fl_model_flops_per_example(const fl_model_spec_t *m);

#endif
