/* fl_layers: see fl_layers.h.
 *
 * Convolution as im2col + GEMM. For image b, the column matrix
 *   col[(c KH + kh) KW + kw][oh OW + ow] = inp[b][c][oh + kh - pad][ow + kw - pad]
 * (0 outside the image) turns the convolution into
 *   out_b (OC, OH OW) = weight (OC, C KH KW) col (C KH KW, OH OW)
 * and its backward into
 *   dweight += dout_b col^T,   dcol = weight^T dout_b,   dinp_b = col2im(dcol)
 * (col2im adds each column entry back to the pixel it came from). */
#include "fl_layers.h"

#include <math.h>
#include <string.h>

#include "fl_gemm.h"

int fl_conv2d_valid(const fl_conv2d_t *s) {
  if (!s->B || !s->C || !s->H || !s->W || !s->OC || !s->KH || !s->KW) return 0;
  return s->KH <= s->H + 2 * s->pad && s->KW <= s->W + 2 * s->pad;
}

static fl_gemm_conv_t lowering(const fl_conv2d_t *s) {
  fl_gemm_conv_t g = {s->C, s->H, s->W, s->KH, s->KW, s->pad};
  return g;
}

static void conv_forward(const fl_conv2d_t *s, float *out, const float *inp, const float *weight,
                         const float *bias, float *col, int relu) {
  const size_t OHW = fl_conv2d_oh(s) * fl_conv2d_ow(s), K = s->C * s->KH * s->KW;
  const fl_gemm_conv_t g = lowering(s);
  for (size_t b = 0; b < s->B; b++) {
    fl_gemm_im2col(&g, col, inp + b * s->C * s->H * s->W);
    /* each sum starts from the bias; the ReLU as it is stored */
    fl_gemm_nn_bias(s->OC, OHW, K, weight, col, out + b * s->OC * OHW, bias, relu);
  }
}

void fl_conv2d_forward(const fl_conv2d_t *s, float *out, const float *inp, const float *weight,
                       const float *bias, float *col) {
  conv_forward(s, out, inp, weight, bias, col, 0);
}

void fl_conv2d_forward_relu(const fl_conv2d_t *s, float *out, const float *inp, const float *weight,
                            const float *bias, float *col) {
  conv_forward(s, out, inp, weight, bias, col, 1);
}

/* n floats added in double into 8 interleaved partial sums, which the
 * caller adds in a fixed tree (one chain of dependent additions cost the
 * CNN's step 6%). */
static void sum8(const float *v, size_t n, double acc[8]) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++)
      acc[j] += (double)v[i + j];
  for (; i < n; i++)
    acc[i % 8] += (double)v[i];
}

/* The weight gradient goes transposed, dweight^T (K, OC) += col_b dout_b^T,
 * a product whose B (dout_b^T, OH OW x OC) is short rows read in order:
 * fl_gemm's rank-K kernels run it at 170 GFLOP/s where OpenBLAS took the
 * untransposed form (dout_b col_b^T, a dot product over rows of col) at 105
 * (AVX-512, the CNN's second convolution); the two transposes cost a tenth
 * of that. */
void fl_conv2d_backward(const fl_conv2d_t *s, float *dinp, float *dweight, float *dbias,
                        const float *dout, const float *inp, const float *weight, float *col) {
  const size_t OHW = fl_conv2d_oh(s) * fl_conv2d_ow(s), K = s->C * s->KH * s->KW, OC = s->OC;
  const size_t CHW = s->C * s->H * s->W;
  const fl_gemm_conv_t g = lowering(s);
  float *dT = col + FL_CONV2D_ALIGN16(K * OHW), *gT = dT + FL_CONV2D_ALIGN16(OHW * OC);
  for (size_t oc = 0; oc < OC; oc++) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t b = 0; b < s->B; b++)
      sum8(dout + (b * OC + oc) * OHW, OHW, acc);
    dbias[oc] =
        (float)(((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])));
  }
  for (size_t b = 0; b < s->B; b++) {
    const float *d = dout + b * OC * OHW;
    fl_gemm_im2col(&g, col, inp + b * CHW);
    for (size_t p = 0; p < OHW; p++)
      for (size_t oc = 0; oc < OC; oc++)
        dT[p * OC + oc] = d[oc * OHW + p];
    fl_gemm_nn(K, OC, OHW, col, dT, gT, b > 0);
    if (!dinp) continue;
    /* col is free again: dcol = weight^T dout_b goes there */
    fl_gemm_tn(K, OHW, OC, weight, d, col, 0);
    fl_gemm_col2im(&g, dinp + b * CHW, col);
  }
  for (size_t k = 0; k < K; k++) /* reading gT in order: 2.5x faster here than writing in order */
    for (size_t oc = 0; oc < OC; oc++)
      dweight[oc * K + k] = gT[k * OC + oc];
}

void fl_conv2d_forward_ref(const fl_conv2d_t *s, float *out, const float *inp, const float *weight,
                           const float *bias) {
  const size_t OH = fl_conv2d_oh(s), OW = fl_conv2d_ow(s);
  for (size_t b = 0; b < s->B; b++)
    for (size_t oc = 0; oc < s->OC; oc++)
      for (size_t oh = 0; oh < OH; oh++)
        for (size_t ow = 0; ow < OW; ow++) {
          double acc = bias[oc];
          for (size_t c = 0; c < s->C; c++)
            for (size_t kh = 0; kh < s->KH; kh++)
              for (size_t kw = 0; kw < s->KW; kw++) {
                long ih = (long)(oh + kh) - (long)s->pad, iw = (long)(ow + kw) - (long)s->pad;
                if (ih < 0 || iw < 0 || ih >= (long)s->H || iw >= (long)s->W) continue;
                acc += (double)inp[((b * s->C + c) * s->H + (size_t)ih) * s->W + (size_t)iw] *
                       (double)weight[((oc * s->C + c) * s->KH + kh) * s->KW + kw];
              }
          out[((b * s->OC + oc) * OH + oh) * OW + ow] = (float)acc;
        }
}

void fl_conv2d_backward_ref(const fl_conv2d_t *s, float *dinp, float *dweight, float *dbias,
                            const float *dout, const float *inp, const float *weight) {
  const size_t OH = fl_conv2d_oh(s), OW = fl_conv2d_ow(s);
  const long pad = (long)s->pad;
  for (size_t oc = 0; oc < s->OC; oc++) {
    double db = 0;
    for (size_t b = 0; b < s->B; b++)
      for (size_t i = 0; i < OH * OW; i++)
        db += (double)dout[(b * s->OC + oc) * OH * OW + i];
    dbias[oc] = (float)db;
    for (size_t c = 0; c < s->C; c++)
      for (size_t kh = 0; kh < s->KH; kh++)
        for (size_t kw = 0; kw < s->KW; kw++) {
          double acc = 0;
          for (size_t b = 0; b < s->B; b++)
            for (size_t oh = 0; oh < OH; oh++)
              for (size_t ow = 0; ow < OW; ow++) {
                long ih = (long)(oh + kh) - pad, iw = (long)(ow + kw) - pad;
                if (ih < 0 || iw < 0 || ih >= (long)s->H || iw >= (long)s->W) continue;
                acc += (double)dout[((b * s->OC + oc) * OH + oh) * OW + ow] *
                       (double)inp[((b * s->C + c) * s->H + (size_t)ih) * s->W + (size_t)iw];
              }
          dweight[((oc * s->C + c) * s->KH + kh) * s->KW + kw] = (float)acc;
        }
  }
  if (!dinp) return;
  for (size_t b = 0; b < s->B; b++)
    for (size_t c = 0; c < s->C; c++)
      for (size_t ih = 0; ih < s->H; ih++)
        for (size_t iw = 0; iw < s->W; iw++) {
          double acc = 0;
          for (size_t oc = 0; oc < s->OC; oc++)
            for (size_t kh = 0; kh < s->KH; kh++)
              for (size_t kw = 0; kw < s->KW; kw++) {
                long oh = (long)ih + pad - (long)kh, ow = (long)iw + pad - (long)kw;
                if (oh < 0 || ow < 0 || oh >= (long)OH || ow >= (long)OW) continue;
                acc += (double)dout[((b * s->OC + oc) * OH + (size_t)oh) * OW + (size_t)ow] *
                       (double)weight[((oc * s->C + c) * s->KH + kh) * s->KW + kw];
              }
          dinp[((b * s->C + c) * s->H + ih) * s->W + iw] = (float)acc;
        }
}

void fl_maxpool2_forward(const fl_pool2_t *s, float *out, int32_t *argmax, const float *inp) {
  fl_gemm_maxpool2(s->B * s->C, s->H, s->W, out, argmax, inp);
}

void fl_maxpool2_backward(const fl_pool2_t *s, float *dinp, const float *dout,
                          const int32_t *argmax) {
  const size_t OH = s->H / 2, OW = s->W / 2;
  memset(dinp, 0, s->B * s->C * s->H * s->W * sizeof *dinp);
  for (size_t p = 0; p < s->B * s->C; p++)
    for (size_t i = 0; i < OH * OW; i++)
      dinp[p * s->H * s->W + (size_t)argmax[p * OH * OW + i]] += dout[p * OH * OW + i];
}

void fl_relu_forward(float *out, const float *inp, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = inp[i] > 0 ? inp[i] : 0.0f;
}

void fl_relu_backward(float *dinp, const float *dout, const float *out, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float d = dout[i]; /* loaded either way, so the loop vectorizes (a select) */
    dinp[i] = out[i] > 0 ? d : 0.0f;
  }
}

void fl_dense_forward(float *out, const float *inp, const float *weight, const float *bias,
                      size_t B, size_t in, size_t outn) {
  for (size_t b = 0; b < B; b++)
    memcpy(out + b * outn, bias, outn * sizeof *out);
  fl_gemm_nt(B, outn, in, inp, weight, out, 1);
}

/* dbias (outn) = column sums of dout (B, outn), in double. */
static float dense_bias_grad(const float *dout, size_t B, size_t outn, size_t j) {
  double sum = 0;
  for (size_t b = 0; b < B; b++)
    sum += (double)dout[b * outn + j];
  return (float)sum;
}

void fl_dense_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                       const float *inp, const float *weight, size_t B, size_t in, size_t outn) {
  fl_gemm_tn(outn, in, B, dout, inp, dweight, 0);
  for (size_t j = 0; j < outn; j++)
    dbias[j] = dense_bias_grad(dout, B, outn, j);
  if (dinp) fl_gemm_nn(B, in, outn, dout, weight, dinp, 0);
}

int fl_dense_backward_sgd(float *dinp, float *weight, float *bias, const float *dout,
                          const float *inp, size_t B, size_t in, size_t outn, float lr) {
  if (fl_gemm_kind() == FL_GEMM_BLAS) return 0;
  if (dinp) fl_gemm_nn(B, in, outn, dout, weight, dinp, 0); /* before the step */
  fl_gemm_tn_sgd(outn, in, B, dout, inp, weight, lr);
  for (size_t j = 0; j < outn; j++) {
    float g = dense_bias_grad(dout, B, outn, j);
    bias[j] -= lr * g;
  }
  return 1;
}

void fl_dense_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                          size_t B, size_t in, size_t outn) {
  for (size_t b = 0; b < B; b++)
    for (size_t j = 0; j < outn; j++) {
      double acc = bias[j];
      for (size_t i = 0; i < in; i++)
        acc += (double)inp[b * in + i] * (double)weight[j * in + i];
      out[b * outn + j] = (float)acc;
    }
}

void fl_dense_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, size_t B, size_t in,
                           size_t outn) {
  for (size_t j = 0; j < outn; j++) {
    double db = 0;
    for (size_t b = 0; b < B; b++)
      db += (double)dout[b * outn + j];
    dbias[j] = (float)db;
    for (size_t i = 0; i < in; i++) {
      double acc = 0;
      for (size_t b = 0; b < B; b++)
        acc += (double)dout[b * outn + j] * (double)inp[b * in + i];
      dweight[j * in + i] = (float)acc;
    }
  }
  if (!dinp) return;
  for (size_t b = 0; b < B; b++)
    for (size_t i = 0; i < in; i++) {
      double acc = 0;
      for (size_t j = 0; j < outn; j++)
        acc += (double)dout[b * outn + j] * (double)weight[j * in + i];
      dinp[b * in + i] = (float)acc;
    }
}

float fl_softmax_xent(float *dlogits, const float *logits, const int32_t *y, size_t B, size_t K) {
  double loss = 0;
  for (size_t b = 0; b < B; b++) {
    const float *z = logits + b * K;
    double mx = z[0];
    for (size_t k = 1; k < K; k++)
      if (z[k] > mx) mx = z[k];
    double sum = 0;
    for (size_t k = 0; k < K; k++)
      sum += exp((double)z[k] - mx);
    const double lse = mx + log(sum);
    loss += lse - (double)z[y[b]];
    if (!dlogits) continue;
    for (size_t k = 0; k < K; k++) {
      double p = exp((double)z[k] - lse);
      dlogits[b * K + k] = (float)((p - (k == (size_t)y[b] ? 1.0 : 0.0)) / (double)B);
    }
  }
  return (float)(loss / (double)B);
}
