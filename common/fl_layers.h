/* fl_layers: the layers of a convolutional network, forward/backward pairs
 * over caller-owned buffers, in the manner of llm.c: plain functions, shapes
 * in the comments, no allocation, and beside every fast kernel a naive
 * reference (plain loops, double accumulators) that tests compare it with.
 *
 * Layout is PyTorch's, so weights load into torch.nn as they are:
 *   activations  NCHW, one sample after another (B, C, H, W); flattening
 *                is therefore free: sample b is the row (C*H*W) at b*C*H*W,
 *                in nn.Flatten's order
 *   conv weight  (OC, C, KH, KW), bias (OC)       nn.Conv2d
 *   dense weight (OUT, IN), bias (OUT)            nn.Linear
 *
 * Gradients: every backward overwrites what it writes (dinp, dweight,
 * dbias) with the gradient of this batch; dinp may be NULL where nothing
 * needs it (a network's first layer). All of it is single-threaded and in a
 * fixed order (fl_gemm's kernels; OpenBLAS pinned to one thread, fl_blas.h): the same inputs
 * give the same bits.
 *
 * fl_model_cnn chains them into the CNNs of --model cnn[:...]. */
#ifndef FL_LAYERS_H
#define FL_LAYERS_H

#include <stddef.h>
#include <stdint.h>

/* ---- 2-D convolution, stride 1, zero padding ---------------------------- */

/* A convolution's shape: B images of C x H x W, OC filters of C x KH x KW,
 * `pad` zeros on every side (0: 'valid'; (K - 1) / 2 for an odd K: 'same').
 * Output OC x OH x OW with OH = H + 2 pad - KH + 1, OW = W + 2 pad - KW + 1,
 * both >= 1. */
typedef struct {
  size_t B, C, H, W;
  size_t OC, KH, KW;
  size_t pad;
} fl_conv2d_t;

static inline size_t fl_conv2d_oh(const fl_conv2d_t *s) {
  return s->H + 2 * s->pad - s->KH + 1;
}
static inline size_t fl_conv2d_ow(const fl_conv2d_t *s) {
  return s->W + 2 * s->pad - s->KW + 1;
}
/* Floats of the scratch the fast path needs: the im2col matrix
 * (C*KH*KW) x (OH*OW), then (backward) one image's dout transposed
 * (OH*OW) x OC and the weight gradient transposed (C*KH*KW) x OC, each
 * starting on a 64-byte boundary of a 64-byte aligned scratch. */
#define FL_CONV2D_ALIGN16(n) (((n) + 15) & ~(size_t)15)
static inline size_t fl_conv2d_col_size(const fl_conv2d_t *s) {
  const size_t K = s->C * s->KH * s->KW, OHW = fl_conv2d_oh(s) * fl_conv2d_ow(s);
  return FL_CONV2D_ALIGN16(K * OHW) + FL_CONV2D_ALIGN16(OHW * s->OC) + K * s->OC;
}
/* 1 if the shape is valid (every size >= 1, kernel within the padded
 * image); 0 otherwise. */
int fl_conv2d_valid(const fl_conv2d_t *s);

/* out (B, OC, OH, OW) = conv(inp (B, C, H, W), weight (OC, C, KH, KW)) +
 * bias (OC): im2col of each image into col, then one GEMM (fl_gemm). */
void fl_conv2d_forward(const fl_conv2d_t *s, float *out, const float *inp, const float *weight,
                       const float *bias, float *col);
/* The same followed by a ReLU (fl_relu_forward's bits), applied as the
 * product is stored. */
void fl_conv2d_forward_relu(const fl_conv2d_t *s, float *out, const float *inp, const float *weight,
                            const float *bias, float *col);
/* From dout (B, OC, OH, OW): dweight (OC, C, KH, KW) = sum over images of
 * dout_b col_b^T; dbias (OC) = sums of dout; dinp (B, C, H, W) = col2im of
 * weight^T dout_b (skipped if NULL). col: fl_conv2d_col_size floats. */
void fl_conv2d_backward(const fl_conv2d_t *s, float *dinp, float *dweight, float *dbias,
                        const float *dout, const float *inp, const float *weight, float *col);
/* The definitions as loops (no scratch). */
void fl_conv2d_forward_ref(const fl_conv2d_t *s, float *out, const float *inp, const float *weight,
                           const float *bias);
void fl_conv2d_backward_ref(const fl_conv2d_t *s, float *dinp, float *dweight, float *dbias,
                            const float *dout, const float *inp, const float *weight);

/* ---- 2x2 max pooling, stride 2 ------------------------------------------ */

/* B x C planes of H x W in, H/2 x W/2 out (floor: an odd last row or column
 * is dropped, as nn.MaxPool2d(2) does). argmax (B, C, OH, OW) records the
 * index within the input plane of each maximum (the first in row-major
 * order on ties, as PyTorch's CPU kernel), for the backward. */
typedef struct {
  size_t B, C, H, W;
} fl_pool2_t;

void fl_maxpool2_forward(const fl_pool2_t *s, float *out, int32_t *argmax, const float *inp);
/* dinp (B, C, H, W) = dout scattered to the maxima, zero elsewhere. */
void fl_maxpool2_backward(const fl_pool2_t *s, float *dinp, const float *dout,
                          const int32_t *argmax);

/* ---- ReLU ---------------------------------------------------------------- */

/* out = max(inp, 0) (out may be inp). */
void fl_relu_forward(float *out, const float *inp, size_t n);
/* dinp = dout where out > 0, else 0 (dinp may be dout). */
void fl_relu_backward(float *dinp, const float *dout, const float *out, size_t n);

/* ---- dense (fully connected) --------------------------------------------- */

/* out (B, OUT) = inp (B, IN) weight^T + bias; weight (OUT, IN). */
void fl_dense_forward(float *out, const float *inp, const float *weight, const float *bias,
                      size_t B, size_t in, size_t outn);
/* dweight (OUT, IN) = dout^T inp; dbias = column sums of dout; dinp (B, IN)
 * = dout weight (skipped if NULL). */
void fl_dense_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                       const float *inp, const float *weight, size_t B, size_t in, size_t outn);
/* fl_dense_backward fused with a plain SGD step of rate lr on the layer:
 * weight -= lr dweight, bias -= lr dbias, each rounded as fl_optim_step
 * rounds it (the same bits as the two calls); dinp from the weights before
 * the step; dweight is never stored (fl_gemm_tn_sgd), which saves two
 * passes over a large layer's weights. Returns 0, having done nothing, when
 * fl_gemm has no fused kernel (its OpenBLAS family). */
int fl_dense_backward_sgd(float *dinp, float *weight, float *bias, const float *dout,
                          const float *inp, size_t B, size_t in, size_t outn, float lr);
void fl_dense_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                          size_t B, size_t in, size_t outn);
void fl_dense_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, size_t B, size_t in, size_t outn);

/* ---- softmax cross-entropy ------------------------------------------------ */

/* The mean over B of logsumexp(logits_b) - logits_b[y_b], logits (B, K),
 * labels y_b in [0, K). If dlogits is not NULL it receives the gradient
 * (softmax(logits) - onehot(y)) / B. Softmax is computed from the row's
 * maximum, in double. */
float fl_softmax_xent(float *dlogits, const float *logits, const int32_t *y, size_t B, size_t K);

#endif
