/* fl_model: softmax regression and ReLU MLPs, forward/backward on fl_gemm.
 *
 * Notation, for layer l = 0..L-1 with in = dims[l], out = dims[l+1]:
 *   a_0 = x                                   (B, dims[0])
 *   z_l = a_l W_l^T + b_l                     (B, out)
 *   a_{l+1} = relu(z_l)       for l < L-1;    the last z is the logits
 *   loss = mean_b [ logsumexp(z_{L-1}[b]) - z_{L-1}[b][y_b] ]
 * Backward:
 *   dz_{L-1} = (softmax(z_{L-1}) - onehot(y)) / B
 *   dW_l = dz_l^T a_l,  db_l = column sums of dz_l
 *   dz_{l-1} = (dz_l W_l) * [a_l > 0]         (never formed for l = 0)
 *
 * The hot loop is a client's local training of the 2NN (784-200-200-10) at
 * batch 10 and 64, so the fast path avoids every pass it can: bias and ReLU
 * are fused into one pass after each GEMM, the logits' softmax, loss and dz
 * are one pass, and each backward step overwrites the activation buffer it
 * no longer needs with dz, so the workspace is just the activations. All of
 * it is single-threaded and in a fixed order, hence bitwise reproducible. */
#include "fl_model.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"
#include "fl_gemm.h"
#include "fl_model_cnn.h"
#include "fl_rng.h"

#define FL_MODEL_MAX_WIDTH 65536

/* ------------------------------------------------------------------------ */
/* Spec parsing and layout                                                  */

/* Parses a decimal width in [1, FL_MODEL_MAX_WIDTH] from s[0..len). */
static int parse_width(const char *s, size_t len, size_t *out) {
  if (len == 0 || len > 6) return -1;
  size_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (size_t)(s[i] - '0');
  }
  if (v == 0 || v > FL_MODEL_MAX_WIDTH) return -1;
  *out = v;
  return 0;
}

static int is_cnn(const char *spec) {
  return strcmp(spec, "cnn") == 0 || strncmp(spec, "cnn:", 4) == 0;
}

/* fl_model_parse_shape (shape NULL: none). */
static int parse(const char *spec, size_t input_dim, const fl_shape_t *shape, size_t num_classes,
                 fl_model_spec_t *out) {
  if (!spec || !out) return fl_err_set(FL_EINVAL, "model: NULL spec");
  size_t slen = strlen(spec);
  if (slen >= FL_MODEL_SPEC_MAX)
    return fl_err_set(FL_EINVAL, "model spec is %zu characters long; the limit is %d", slen,
                      FL_MODEL_SPEC_MAX - 1);
  if (input_dim == 0 || input_dim > FL_MODEL_MAX_PARAMS)
    return fl_err_set(FL_EINVAL, "model '%s': input dimension %zu is out of range [1, %zu]", spec,
                      input_dim, (size_t)FL_MODEL_MAX_PARAMS);
  if (num_classes == 0 || num_classes > FL_MODEL_MAX_PARAMS)
    return fl_err_set(FL_EINVAL, "model '%s': class count %zu is out of range [1, %zu]", spec,
                      num_classes, (size_t)FL_MODEL_MAX_PARAMS);

  fl_model_spec_t m;
  memset(&m, 0, sizeof m);
  m.dims[0] = input_dim;
  size_t nh = 0;
  if (strcmp(spec, "softmax") == 0) {
    nh = 0;
  } else if (strncmp(spec, "mlp:", 4) == 0) {
    const char *p = spec + 4;
    if (!*p)
      return fl_err_set(FL_EINVAL, "model '%s': 'mlp:' needs hidden widths, e.g. 'mlp:200,200'",
                        spec);
    for (;;) {
      const char *comma = strchr(p, ',');
      size_t len = comma ? (size_t)(comma - p) : strlen(p);
      if (nh == FL_MODEL_MAX_LAYERS - 1)
        return fl_err_set(FL_EINVAL, "model '%s': more than %d hidden layers", spec,
                          FL_MODEL_MAX_LAYERS - 1);
      size_t w;
      if (parse_width(p, len, &w) != 0)
        return fl_err_set(FL_EINVAL,
                          "model '%s': hidden width '%.*s' is not a positive integer <= %d", spec,
                          (int)len, p, FL_MODEL_MAX_WIDTH);
      m.dims[++nh] = w;
      if (!comma) break;
      p = comma + 1;
    }
  } else if (is_cnn(spec)) {
    return fl_model__cnn_parse(spec, input_dim, shape, num_classes, out);
  } else if (strcmp(spec, FL_MODEL_CUSTOM) == 0) {
    return fl_err_set(FL_EINVAL, "model 'custom': a custom model is given by its tensors "
                                 "(fedlr-coordinator --init FILE.safetensors), not by a spec");
  } else {
    return fl_err_set(FL_EINVAL,
                      "model '%s': unknown model; valid: 'softmax', 'mlp:H1,H2,...', 'cnn', "
                      "'cnn:ITEM,...' (convKxKxC, pool2, fcN)",
                      spec);
  }
  m.num_layers = nh + 1;
  m.dims[m.num_layers] = num_classes;

  size_t total = 0;
  for (size_t l = 0; l < m.num_layers; l++) {
    size_t wcount, lcount;
    if (__builtin_mul_overflow(m.dims[l], m.dims[l + 1], &wcount) ||
        __builtin_add_overflow(wcount, m.dims[l + 1], &lcount) ||
        __builtin_add_overflow(total, lcount, &total) || total > FL_MODEL_MAX_PARAMS)
      return fl_err_set(FL_ETOOBIG,
                        "model '%s' on %zu inputs and %zu classes has more than %zu "
                        "parameters",
                        spec, input_dim, num_classes, (size_t)FL_MODEL_MAX_PARAMS);
  }
  m.num_params = total;
  memcpy(m.spec, spec, slen + 1);
  *out = m;
  return 0;
}

int fl_model_parse(const char *spec, size_t input_dim, size_t num_classes, fl_model_spec_t *out) {
  return parse(spec, input_dim, NULL, num_classes, out);
}

int fl_model_parse_shape(const char *spec, size_t input_dim, const fl_shape_t *shape,
                         size_t num_classes, fl_model_spec_t *out) {
  return parse(spec, input_dim, shape, num_classes, out);
}

int fl_model_check_spec(const char *spec) {
  if (spec && strlen(spec) < FL_MODEL_SPEC_MAX && is_cnn(spec)) return fl_model__cnn_check(spec);
  fl_model_spec_t m;
  return parse(spec, 784, NULL, 10, &m);
}

fl_shape_t fl_model_shape(const fl_model_spec_t *m) {
  fl_shape_t s = {m->in_c, m->in_h, m->in_w};
  return s;
}

int fl_model_needs_shape(const fl_model_spec_t *m) {
  return m->in_c && (m->in_c != 1 || m->in_h != m->in_w);
}

int fl_model_custom(const fl_layout_t *layout, fl_model_spec_t *out) {
  if (!layout || layout->n == 0) return fl_err_set(FL_EINVAL, "a custom model needs tensors");
  memset(out, 0, sizeof *out);
  out->num_params = layout->num_params;
  out->layout = layout;
  snprintf(out->spec, sizeof out->spec, "%s", FL_MODEL_CUSTOM);
  return 0;
}

size_t fl_model_num_tensors(const fl_model_spec_t *m) {
  return m->layout ? m->layout->n : 2 * m->num_layers;
}

void fl_model_tensor(const fl_model_spec_t *m, size_t i, fl_tensor_info_t *out) {
  if (m->layout) {
    assert(i < m->layout->n);
    *out = m->layout->t[i];
    return;
  }
  assert(i < 2 * m->num_layers);
  if (m->in_c) {
    fl_model__cnn_tensor(m, i, out);
    return;
  }
  size_t l = i / 2, off = 0;
  for (size_t k = 0; k < l; k++)
    off += m->dims[k + 1] * m->dims[k] + m->dims[k + 1];
  size_t in = m->dims[l], outd = m->dims[l + 1];
  memset(out, 0, sizeof *out);
  if (i % 2 == 0) {
    snprintf(out->name, sizeof out->name, "layers.%u.weight", (unsigned)l);
    out->offset = off;
    out->count = outd * in;
    out->ndim = 2;
    out->shape[0] = (uint32_t)outd;
    out->shape[1] = (uint32_t)in;
  } else {
    snprintf(out->name, sizeof out->name, "layers.%u.bias", (unsigned)l);
    out->offset = off + outd * in;
    out->count = outd;
    out->ndim = 1;
    out->shape[0] = (uint32_t)outd;
  }
}

void fl_model_init(const fl_model_spec_t *m, float *params, uint64_t seed) {
  fl_rng_t r;
  fl_rng_seed(&r, seed);
  /* Tensor order is buffer order: W_0, b_0, W_1, b_1, ... and both tensors
   * of a layer share the bound 1/sqrt(in). */
  float *p = params;
  for (size_t l = 0; l < m->num_layers; l++) {
    size_t fan_in = m->dims[l], n = m->dims[l + 1] * m->dims[l] + m->dims[l + 1];
    if (m->in_c) { /* a CNN's layer: nn.Conv2d's bound is 1/sqrt(C KH KW) */
      fl_tensor_info_t w;
      fl_model__cnn_tensor(m, 2 * l, &w);
      fan_in = w.count / w.shape[0];
      n = w.count + w.shape[0];
    }
    double bound = 1.0 / sqrt((double)fan_in);
    for (size_t i = 0; i < n; i++)
      p[i] = (float)((2.0 * fl_rng_uniform(&r) - 1.0) * bound);
    p += n;
  }
}

double fl_model_flops_per_example(const fl_model_spec_t *m) {
  /* Per multiply-accumulate of each layer: forward z = a W^T (2 FLOPs),
   * dW = dz^T a (2), and dx = dz W (2) except for the first layer, whose dx is
   * never formed. Bias, ReLU and softmax are O(sum of widths): not counted. */
  if (m->in_c) return fl_model__cnn_flops(m);
  double f = 0;
  for (size_t l = 0; l < m->num_layers; l++) {
    double macs = (double)m->dims[l] * (double)m->dims[l + 1];
    f += (l == 0 ? 4.0 : 6.0) * macs;
  }
  return f;
}

/* ------------------------------------------------------------------------ */
/* Workspace                                                                */

struct fl_model_ws {
  size_t max_batch;
  size_t num_layers;
  /* act[l], l = 1..L: (max_batch, dims[l]). act[l] for l < L holds relu(z_{l-1})
   * in the forward pass and is overwritten with dz_{l-1} in the backward pass;
   * act[L] holds the logits, then dz_{L-1}. act[0] is unused (it is x). */
  float *act[FL_MODEL_MAX_LAYERS + 1];
  float *dx;        // (max_batch, max hidden width): dz_l W_l before the ReLU mask
  float *db;        // (max width): a bias gradient, in fl_model_sgd_step
  float *mem;       // the one allocation behind all of the above
  fl_cnn_ws_t *cnn; // a CNN's workspace instead (fl_model_cnn.c)
};

/* Floats rounded up to a 64-byte multiple, so every buffer is aligned. */
static size_t round16(size_t n) {
  return (n + 15) & ~(size_t)15;
}

fl_model_ws_t *fl_model_ws_new(const fl_model_spec_t *m, size_t max_batch) {
  if (!m || m->num_layers == 0 || m->num_layers > FL_MODEL_MAX_LAYERS || max_batch == 0 ||
      max_batch > (1u << 24)) {
    fl_err_set(FL_EINVAL, "model workspace: bad model or batch size %zu", max_batch);
    return NULL;
  }
  if (m->in_c) {
    fl_model_ws_t *ws = calloc(1, sizeof *ws);
    if (!ws || !(ws->cnn = fl_model__cnn_ws_new(m, max_batch))) {
      free(ws);
      if (!ws) fl_err_set(FL_ENOMEM, "model workspace: out of memory");
      return NULL;
    }
    ws->max_batch = max_batch;
    ws->num_layers = m->num_layers;
    return ws;
  }
  size_t total = 0, maxh = 0, maxw = 0;
  for (size_t l = 1; l <= m->num_layers; l++) {
    size_t n;
    if (__builtin_mul_overflow(max_batch, m->dims[l], &n) ||
        __builtin_add_overflow(total, round16(n), &total)) {
      fl_err_set(FL_ENOMEM, "model workspace: batch %zu is too large", max_batch);
      return NULL;
    }
    if (l < m->num_layers && m->dims[l] > maxh) maxh = m->dims[l];
    if (m->dims[l] > maxw) maxw = m->dims[l];
  }
  size_t ndx = round16(max_batch * maxh) + round16(maxw);
  if (__builtin_add_overflow(total, ndx, &total) || total > ((size_t)1 << 34)) {
    fl_err_set(FL_ENOMEM, "model workspace: batch %zu is too large", max_batch);
    return NULL;
  }
  fl_model_ws_t *ws = calloc(1, sizeof *ws);
  if (!ws) goto oom;
  ws->mem = aligned_alloc(64, (total ? total : 16) * sizeof(float));
  if (!ws->mem) goto oom;
  ws->max_batch = max_batch;
  ws->num_layers = m->num_layers;
  float *p = ws->mem;
  for (size_t l = 1; l <= m->num_layers; l++) {
    ws->act[l] = p;
    p += round16(max_batch * m->dims[l]);
  }
  ws->dx = p;
  ws->db = p + round16(max_batch * maxh);
  return ws;
oom:
  free(ws);
  fl_err_set(FL_ENOMEM, "model workspace: out of memory (%zu floats)", total);
  return NULL;
}

void fl_model_ws_destroy(fl_model_ws_t **ws) {
  if (!ws || !*ws) return;
  fl_model__cnn_ws_destroy((*ws)->cnn);
  free((*ws)->mem);
  free(*ws);
  *ws = NULL;
}

/* ------------------------------------------------------------------------ */
/* Fast path: forward/backward pairs over caller-owned buffers              */

/* z = x W^T, then z = relu(z + b) if relu, else z + b.
 * z (B, out); x (B, in); w (out, in); b (out). */
static void linear_forward(float *restrict z, const float *x, const float *w,
                           const float *restrict b, size_t B, size_t in, size_t out, int relu) {
  fl_gemm_nt(B, out, in, x, w, z, 0);
  for (size_t i = 0; i < B; i++) {
    float *zi = z + i * out;
    if (relu) {
      for (size_t j = 0; j < out; j++) {
        float v = zi[j] + b[j];
        zi[j] = v > 0.0f ? v : 0.0f;
      }
    } else {
      for (size_t j = 0; j < out; j++)
        zi[j] += b[j];
    }
  }
}

/* db = column sums of dz, row after row. db (out); dz (B, out). */
static void bias_grad(float *restrict db, const float *restrict dz, size_t B, size_t out) {
  memcpy(db, dz, out * sizeof(float));
  for (size_t i = 1; i < B; i++)
    for (size_t j = 0; j < out; j++)
      db[j] += dz[i * out + j];
}

/* dW = dz^T x, db = column sums of dz; and if dx is not NULL, dx = dz W.
 * dz (B, out); x (B, in); w (out, in); dW (out, in); db (out); dx (B, in). */
static void linear_backward(float *dx, float *dw, float *db, const float *dz, const float *x,
                            const float *w, size_t B, size_t in, size_t out) {
  fl_gemm_tn(out, in, B, dz, x, dw, 0);
  bias_grad(db, dz, B, out);
  if (dx) fl_gemm_nn(B, in, out, dz, w, dx, 0);
}

/* a = dx * [a > 0]: turns the post-ReLU activation into dz, in place.
 * a (n); dx (n). */
static void relu_backward(float *restrict a, const float *restrict dx, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float d = dx[i]; /* loaded either way, so the loop vectorizes (a select) */
    a[i] = a[i] > 0.0f ? d : 0.0f;
  }
}

/* Softmax cross-entropy on logits, row by row, as log-sum-exp shifted by the
 * row max: loss_b = log(sum_j exp(z_j - max)) - (z_y - max), which never
 * overflows and stays finite even when p_y underflows. Returns the summed
 * loss (double). If write_dz, overwrites the logits with
 * dz = (softmax(logits) - onehot(y)) * scale. If correct is not NULL, adds
 * the rows whose argmax (lowest index on ties) is y.
 * logits (B, C); y (B). */
static double softmax_xent_forward_backward(float *logits, const int32_t *y, size_t B, size_t C,
                                            float scale, int write_dz, size_t *correct) {
  double loss = 0.0;
  size_t ok = 0;
  for (size_t i = 0; i < B; i++) {
    float *zi = logits + i * C;
    size_t yi = (size_t)y[i];
    assert(y[i] >= 0 && yi < C);
    float mx = zi[0];
    size_t am = 0;
    for (size_t j = 1; j < C; j++)
      if (zi[j] > mx) {
        mx = zi[j];
        am = j;
      }
    ok += (am == yi);
    float sum = 0.0f;
    double zy = (double)(zi[yi] - mx);
    if (write_dz) {
      for (size_t j = 0; j < C; j++) {
        zi[j] = expf(zi[j] - mx);
        sum += zi[j];
      }
      loss += log((double)sum) - zy;
      float inv = scale / sum;
      for (size_t j = 0; j < C; j++)
        zi[j] *= inv;
      zi[yi] -= scale;
    } else {
      for (size_t j = 0; j < C; j++)
        sum += expf(zi[j] - mx);
      loss += log((double)sum) - zy;
    }
  }
  if (correct) *correct += ok;
  return loss;
}

/* Runs the forward pass on B <= max_batch rows; leaves the logits in
 * ws->act[L] and the ReLU activations in ws->act[1..L-1]. */
static void model_forward(const fl_model_spec_t *m, fl_model_ws_t *ws, const float *params,
                          const float *x, size_t B) {
  const float *p = params;
  const float *a = x;
  for (size_t l = 0; l < m->num_layers; l++) {
    size_t in = m->dims[l], out = m->dims[l + 1];
    const float *w = p;            // (out, in)
    const float *b = p + out * in; // (out)
    linear_forward(ws->act[l + 1], a, w, b, B, in, out, l + 1 < m->num_layers);
    a = ws->act[l + 1];
    p += out * in + out;
  }
}

/* Forward, loss, then backward layer by layer. With `grad`, the gradient
 * goes there and params stay as they are; with `step` (= params, grad NULL),
 * each layer instead takes its SGD step of rate lr in place as its gradient
 * is formed: dx first, from the weights before the step, then the weights
 * (fl_gemm_tn_sgd) and the biases, rounded as fl_optim_step rounds them. */
static float backprop(const fl_model_spec_t *m, fl_model_ws_t *ws, const float *params, float *step,
                      float lr, const float *x, const int32_t *y, size_t B, float *grad) {
  size_t L = m->num_layers;
  model_forward(m, ws, params, x, B);
  double loss =
      softmax_xent_forward_backward(ws->act[L], y, B, m->dims[L], 1.0f / (float)B, 1, NULL);

  /* Offsets of each layer's W in params/grad. */
  size_t off[FL_MODEL_MAX_LAYERS];
  size_t o = 0;
  for (size_t l = 0; l < L; l++) {
    off[l] = o;
    o += m->dims[l + 1] * m->dims[l] + m->dims[l + 1];
  }
  for (size_t l = L; l-- > 0;) {
    size_t in = m->dims[l], out = m->dims[l + 1];
    const float *dz = ws->act[l + 1];         // (B, out)
    const float *a = l == 0 ? x : ws->act[l]; // (B, in)
    float *dx = l == 0 ? NULL : ws->dx;       // (B, in)
    if (grad) {
      float *dw = grad + off[l]; // (out, in)
      linear_backward(dx, dw, dw + out * in, dz, a, params + off[l], B, in, out);
    } else {
      float *w = step + off[l], *b = w + out * in;
      if (dx) fl_gemm_nn(B, in, out, dz, w, dx, 0);
      fl_gemm_tn_sgd(out, in, B, dz, a, w, lr);
      bias_grad(ws->db, dz, B, out);
      for (size_t j = 0; j < out; j++)
        b[j] -= lr * ws->db[j];
    }
    if (dx) relu_backward(ws->act[l], dx, B * in);
  }
  return (float)(loss / (double)B);
}

float fl_model_loss_grad(const fl_model_spec_t *m, fl_model_ws_t *ws, const float *params,
                         const float *x, const int32_t *y, size_t B, float *grad) {
  assert(ws && B > 0 && B <= ws->max_batch && ws->num_layers == m->num_layers);
  if (m->in_c) return fl_model__cnn_loss_grad(m, ws->cnn, params, x, y, B, grad);
  return backprop(m, ws, params, NULL, 0.0f, x, y, B, grad);
}

float fl_model_sgd_step(const fl_model_spec_t *m, fl_model_ws_t *ws, float *params, const float *x,
                        const int32_t *y, size_t B, float lr, float *grad) {
  assert(ws && B > 0 && B <= ws->max_batch && ws->num_layers == m->num_layers);
  if (m->in_c) return fl_model__cnn_sgd_step(m, ws->cnn, params, x, y, B, lr, grad);
  if (fl_gemm_kind() == FL_GEMM_BLAS) { /* no fused kernel: the two steps */
    float loss = fl_model_loss_grad(m, ws, params, x, y, B, grad);
    for (size_t i = 0; i < m->num_params; i++)
      params[i] -= lr * grad[i];
    return loss;
  }
  return backprop(m, ws, params, params, lr, x, y, B, NULL);
}

size_t fl_model_eval_batch(const fl_model_spec_t *m, size_t want) {
  if (!m->in_c) return want;
  size_t per = fl_model__cnn_ws_floats(m) * sizeof(float);
  size_t b = FL_MODEL_EVAL_WS_BYTES / (per ? per : 1);
  return b < 1 ? 1 : b < want ? b : want;
}

void fl_model_evaluate(const fl_model_spec_t *m, fl_model_ws_t *ws, const float *params,
                       const float *x, const int32_t *y, size_t B, double *loss_sum,
                       size_t *correct) {
  if (m->in_c) {
    fl_model__cnn_evaluate(m, ws->cnn, params, x, y, B, loss_sum, correct);
    return;
  }
  size_t L = m->num_layers, C = m->dims[L], in = m->dims[0];
  double loss = 0.0;
  size_t ok = 0;
  for (size_t s = 0; s < B; s += ws->max_batch) {
    size_t nb = B - s < ws->max_batch ? B - s : ws->max_batch;
    model_forward(m, ws, params, x + s * in, nb);
    loss += softmax_xent_forward_backward(ws->act[L], y + s, nb, C, 0.0f, 0, &ok);
  }
  if (loss_sum) *loss_sum += loss;
  if (correct) *correct += ok;
}

/* ------------------------------------------------------------------------ */
/* Reference: plain loops, no BLAS, activations in double                   */

float fl_model_loss_grad_ref(const fl_model_spec_t *m, const float *params, const float *x,
                             const int32_t *y, size_t B, float *grad) {
  if (m->in_c) return fl_model__cnn_loss_grad_ref(m, params, x, y, B, grad);
  size_t L = m->num_layers;
  size_t off[FL_MODEL_MAX_LAYERS];
  size_t total_act = 0;
  for (size_t l = 0, o = 0; l < L; l++) {
    off[l] = o;
    o += m->dims[l + 1] * m->dims[l] + m->dims[l + 1];
  }
  for (size_t l = 0; l <= L; l++)
    total_act += B * m->dims[l];
  double *act = malloc(2 * total_act * sizeof(double)); // a_l then dz_l, all layers
  if (!act) return NAN; // test-only helper: a NaN loss fails any comparison
  double *A[FL_MODEL_MAX_LAYERS + 1], *D[FL_MODEL_MAX_LAYERS + 1];
  double *q = act;
  for (size_t l = 0; l <= L; l++) {
    A[l] = q; // (B, dims[l]): a_l for l < L, logits for l = L
    q += B * m->dims[l];
    D[l] = q; // (B, dims[l]): d loss / d z feeding layer l's output
    q += B * m->dims[l];
  }
  for (size_t i = 0; i < B * m->dims[0]; i++)
    A[0][i] = x[i];
  for (size_t l = 0; l < L; l++) {
    size_t in = m->dims[l], out = m->dims[l + 1];
    const float *w = params + off[l], *b = w + out * in;
    for (size_t i = 0; i < B; i++)
      for (size_t j = 0; j < out; j++) {
        double s = b[j];
        for (size_t k = 0; k < in; k++)
          s += A[l][i * in + k] * (double)w[j * in + k];
        if (l + 1 < L && s < 0) s = 0;
        A[l + 1][i * out + j] = s;
      }
  }
  size_t C = m->dims[L];
  double loss = 0;
  for (size_t i = 0; i < B; i++) {
    double *z = A[L] + i * C, mx = z[0], sum = 0;
    for (size_t j = 1; j < C; j++)
      mx = z[j] > mx ? z[j] : mx;
    for (size_t j = 0; j < C; j++)
      sum += exp(z[j] - mx);
    loss += log(sum) + mx - z[y[i]];
    for (size_t j = 0; j < C; j++)
      D[L][i * C + j] = (exp(z[j] - mx) / sum - (j == (size_t)y[i])) / (double)B;
  }
  for (size_t l = L; l-- > 0;) {
    size_t in = m->dims[l], out = m->dims[l + 1];
    const float *w = params + off[l];
    float *gw = grad + off[l], *gb = gw + out * in;
    for (size_t j = 0; j < out; j++) {
      double sb = 0;
      for (size_t i = 0; i < B; i++)
        sb += D[l + 1][i * out + j];
      gb[j] = (float)sb;
      for (size_t k = 0; k < in; k++) {
        double s = 0;
        for (size_t i = 0; i < B; i++)
          s += D[l + 1][i * out + j] * A[l][i * in + k];
        gw[j * in + k] = (float)s;
      }
    }
    if (l == 0) break;
    for (size_t i = 0; i < B; i++)
      for (size_t k = 0; k < in; k++) {
        double s = 0;
        for (size_t j = 0; j < out; j++)
          s += D[l + 1][i * out + j] * (double)w[j * in + k];
        D[l][i * in + k] = A[l][i * in + k] > 0 ? s : 0;
      }
  }
  free(act);
  return (float)(loss / (double)B);
}
