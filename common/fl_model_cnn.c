/* fl_model_cnn: convolutional models (specs in fl_model.h) as a chain of
 * common/fl_layers: each layer's output kept for the backward pass, the
 * gradient passed back through two ping-pong buffers. Single-threaded and
 * in a fixed order, hence bitwise reproducible, like the MLP path. */
#include "fl_model_cnn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"
#include "fl_gemm.h"
#include "fl_layers.h"

#define CNN_DEFAULT "conv5x5x32,pool2,conv5x5x64,pool2,fc512"
#define CNN_MAX_WIDTH 65536
#define CNN_MAX_KERNEL 15

/* A layer of the chain: the spec's items, then the classifier. */
enum { L_CONV = FL_OP_CONV, L_POOL = FL_OP_POOL, L_FC = FL_OP_FC, L_OUT = 4 };
typedef struct {
  int kind;
  size_t c, h, w;    /* input (fc, out: c features, h = w = 1) */
  size_t oc, oh, ow; /* output */
  size_t kh, kw, pad;
  size_t in_n, out_n; /* per sample */
  size_t fan_in;      /* conv, fc, out: inputs of one output (C KH KW, or C); weight (oc, fan_in) */
  size_t woff;        /* conv, fc, out: the weight's offset in params; bias follows */
  size_t seq;         /* conv, fc, out: its index in the torch.nn.Sequential */
} layer_t;

/* The chain of m: fills L (num_ops + 1 entries) and returns their number. */
static size_t chain(const fl_model_spec_t *m, layer_t *L) {
  size_t c = m->in_c, h = m->in_h, w = m->in_w, off = 0, seq = 0, n = 0;
  int flat = 0;
  for (size_t i = 0; i <= m->num_ops; i++) {
    layer_t *l = &L[n++];
    memset(l, 0, sizeof *l);
    const fl_model_op_t *op = i < m->num_ops ? &m->ops[i] : NULL;
    l->kind = op ? op->kind : L_OUT;
    if ((l->kind == L_FC || l->kind == L_OUT) && !flat) {
      c = c * h * w, h = w = 1; /* nn.Flatten */
      flat = 1;
      seq++;
    }
    l->c = c, l->h = h, l->w = w, l->in_n = c * h * w;
    if (l->kind == L_CONV) {
      l->kh = op->kh, l->kw = op->kw, l->pad = op->valid ? 0 : (op->kh - 1) / 2;
      l->oc = op->out, l->oh = h + 2 * l->pad - l->kh + 1, l->ow = w + 2 * l->pad - l->kw + 1;
    } else if (l->kind == L_POOL) {
      l->oc = c, l->oh = h / 2, l->ow = w / 2;
    } else {
      l->oc = l->kind == L_OUT ? m->dims[m->num_layers] : op->out, l->oh = l->ow = 1;
    }
    l->out_n = l->oc * l->oh * l->ow;
    if (l->kind != L_POOL) {
      l->fan_in = l->kind == L_CONV ? c * l->kh * l->kw : c;
      l->woff = off;
      l->seq = seq;
      off += l->oc * l->fan_in + l->oc;
    }
    seq += l->kind == L_POOL || l->kind == L_OUT ? 1 : 2; /* conv/fc: and its ReLU */
    c = l->oc, h = l->oh, w = l->ow;
  }
  return n;
}

/* Parses an unsigned decimal from *p up to a non-digit, within [1, max]. */
static int num(const char **p, size_t max, size_t *out) {
  size_t v = 0, d = 0;
  while (**p >= '0' && **p <= '9' && d < 7)
    v = v * 10 + (size_t)(*(*p)++ - '0'), d++;
  if (d == 0 || v == 0 || v > max) return -1;
  *out = v;
  return 0;
}

/* Reads the items of `spec` into m->ops: their syntax and order only. */
static int parse_items(const char *spec, fl_model_spec_t *m) {
  const char *items = strcmp(spec, "cnn") == 0 ? CNN_DEFAULT : spec + 4;
  if (!*items)
    return fl_err_set(FL_EINVAL, "model '%s': 'cnn:' needs items, e.g. 'cnn:%s'", spec,
                      CNN_DEFAULT);
  int dense = 0;
  for (const char *p = items;;) {
    const char *start = p, *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (m->num_ops == FL_MODEL_MAX_OPS)
      return fl_err_set(FL_EINVAL, "model '%s': more than %d items", spec, FL_MODEL_MAX_OPS);
    fl_model_op_t *op = &m->ops[m->num_ops];
    size_t a, b, k;
    if (!strncmp(p, "conv", 4)) {
      p += 4;
      if (num(&p, CNN_MAX_KERNEL, &a) || *p++ != 'x' || num(&p, CNN_MAX_KERNEL, &b) ||
          *p++ != 'x' || num(&p, CNN_MAX_WIDTH, &k))
        goto bad;
      op->valid = !strncmp(p, "valid", 5);
      if (op->valid) p += 5;
      if (p != start + len) goto bad;
      if (dense)
        return fl_err_set(FL_EINVAL,
                          "model '%s': '%.*s' after a dense layer: convolutions and "
                          "pooling come first",
                          spec, (int)len, start);
      if (!op->valid && (a % 2 == 0 || a != b))
        return fl_err_set(FL_EINVAL,
                          "model '%s': '%.*s': 'same' padding needs a square kernel of odd size "
                          "(or add 'valid')",
                          spec, (int)len, start);
      op->kind = FL_OP_CONV, op->kh = (uint16_t)a, op->kw = (uint16_t)b, op->out = (uint32_t)k;
    } else if (len == 5 && !strncmp(p, "pool2", 5)) {
      if (dense)
        return fl_err_set(FL_EINVAL,
                          "model '%s': 'pool2' after a dense layer: convolutions and "
                          "pooling come first",
                          spec);
      op->kind = FL_OP_POOL;
    } else if (!strncmp(p, "fc", 2)) {
      p += 2;
      if (num(&p, CNN_MAX_WIDTH, &k) || p != start + len) goto bad;
      op->kind = FL_OP_FC, op->out = (uint32_t)k;
      dense = 1;
    } else {
      goto bad;
    }
    m->num_ops++;
    if (!end) break;
    p = end + 1;
    continue;
  bad:
    return fl_err_set(FL_EINVAL,
                      "model '%s': item '%.*s' is not convKxKxC (with 'valid' to drop the "
                      "padding; kernels up to %d), pool2 or fcN",
                      spec, (int)len, start, CNN_MAX_KERNEL);
  }
  size_t layers = 1;
  for (size_t i = 0; i < m->num_ops; i++)
    layers += m->ops[i].kind != FL_OP_POOL;
  if (layers > FL_MODEL_MAX_LAYERS)
    return fl_err_set(FL_EINVAL, "model '%s': more than %d layers with parameters", spec,
                      FL_MODEL_MAX_LAYERS);
  m->num_layers = layers;
  return 0;
}

/* Item i's text in `spec` (for messages). */
static void item_text(const char *spec, size_t i, char *buf, size_t cap) {
  const char *p = strcmp(spec, "cnn") == 0 ? CNN_DEFAULT : spec + 4;
  for (; i > 0 && p; i--)
    if ((p = strchr(p, ','))) p++;
  size_t len = p ? strcspn(p, ",") : 0;
  snprintf(buf, cap, "%.*s", (int)len, p ? p : "");
}

/* Walks the items over the input image m->in_c x in_h x in_w: every
 * convolution and pooling must get an input it fits. */
static int check_fit(const char *spec, const fl_model_spec_t *m) {
  size_t c = m->in_c, h = m->in_h, w = m->in_w;
  char item[FL_MODEL_SPEC_MAX];
  for (size_t i = 0; i < m->num_ops; i++) {
    const fl_model_op_t *op = &m->ops[i];
    item_text(spec, i, item, sizeof item);
    if (op->kind == FL_OP_CONV) {
      size_t pad = op->valid ? 0 : (op->kh - 1) / 2;
      if (op->kh > h + 2 * pad || op->kw > w + 2 * pad)
        return fl_err_set(FL_EINVAL,
                          "model '%s': '%s' does not fit the %zu x %zu input it gets (item %zu, "
                          "a %u x %u kernel%s on %zu channels of %zu x %zu; the input image is "
                          "%zux%zux%zu)",
                          spec, item, h, w, i + 1, op->kh, op->kw,
                          op->valid ? " without padding" : "", c, h, w, m->in_c, m->in_h, m->in_w);
      c = op->out, h = h + 2 * pad - op->kh + 1, w = w + 2 * pad - op->kw + 1;
    } else if (op->kind == FL_OP_POOL) {
      if (h < 2 || w < 2)
        return fl_err_set(FL_EINVAL,
                          "model '%s': 'pool2' on a %zu x %zu input: nothing to pool (item %zu, "
                          "%zu channels of %zu x %zu; the input image is %zux%zux%zu)",
                          spec, h, w, i + 1, c, h, w, m->in_c, m->in_h, m->in_w);
      h /= 2, w /= 2;
    } else {
      c = op->out, h = w = 1;
    }
  }
  return 0;
}

int fl_model__cnn_parse(const char *spec, size_t input_dim, const fl_shape_t *shape,
                        size_t num_classes, fl_model_spec_t *out) {
  fl_model_spec_t m;
  memset(&m, 0, sizeof m);
  if (shape && fl_shape_is_set(shape)) {
    m.in_c = shape->c, m.in_h = shape->h, m.in_w = shape->w;
  } else {
    size_t side = (size_t)llround(sqrt((double)input_dim));
    if (side * side != input_dim)
      return fl_err_set(FL_EINVAL,
                        "model '%s': a CNN takes a square one-channel image, and %zu features are "
                        "not one (28 x 28 = 784 for Fashion-MNIST); for other images give "
                        "--input-shape CxHxW (e.g. 3x32x32)",
                        spec, input_dim);
    m.in_c = 1, m.in_h = m.in_w = side;
  }
  if (m.in_c * m.in_h * m.in_w != input_dim)
    return fl_err_set(FL_ESHAPE, "model '%s': the input image %zux%zux%zu is not the %zu features",
                      spec, m.in_c, m.in_h, m.in_w, input_dim);
  int rc = parse_items(spec, &m);
  if (!rc) rc = check_fit(spec, &m);
  if (rc) return rc;
  const size_t layers = m.num_layers;
  m.dims[0] = input_dim;
  m.dims[layers] = num_classes;
  /* sizes and parameters, in double first: no overflow on the way */
  layer_t L[FL_MODEL_MAX_OPS + 1];
  size_t n = chain(&m, L), total = 0, l = 0;
  for (size_t i = 0; i < n; i++) {
    if (L[i].kind == L_POOL) continue;
    double wc = (double)L[i].oc * (double)L[i].fan_in;
    if (wc + (double)L[i].oc + (double)total > (double)FL_MODEL_MAX_PARAMS ||
        (double)L[i].out_n * 64 > (double)FL_MODEL_MAX_PARAMS)
      return fl_err_set(FL_ETOOBIG, "model '%s' on %zux%zux%zu inputs has more than %zu parameters",
                        spec, m.in_c, m.in_h, m.in_w, (size_t)FL_MODEL_MAX_PARAMS);
    total += (size_t)wc + L[i].oc;
    if (++l < layers) m.dims[l] = L[i].out_n;
  }
  m.num_params = total;
  snprintf(m.spec, sizeof m.spec, "%s", spec);
  *out = m;
  return 0;
}

int fl_model__cnn_check(const char *spec) {
  fl_model_spec_t m;
  memset(&m, 0, sizeof m);
  return parse_items(spec, &m);
}

void fl_model__cnn_tensor(const fl_model_spec_t *m, size_t i, fl_tensor_info_t *out) {
  layer_t L[FL_MODEL_MAX_OPS + 1];
  size_t n = chain(m, L), k = 0;
  const layer_t *l = NULL;
  for (size_t j = 0; j < n && !l; j++)
    if (L[j].kind != L_POOL && k++ == i / 2) l = &L[j];
  memset(out, 0, sizeof *out);
  if (!l) return;
  if (i % 2 == 0) {
    snprintf(out->name, sizeof out->name, "%zu.weight", l->seq);
    out->offset = l->woff;
    out->shape[0] = (uint32_t)l->oc;
    out->shape[1] = (uint32_t)l->c;
    if (l->kind == L_CONV) {
      out->ndim = 4;
      out->shape[2] = (uint32_t)l->kh;
      out->shape[3] = (uint32_t)l->kw;
      out->count = l->oc * l->c * l->kh * l->kw;
    } else {
      out->ndim = 2;
      out->count = l->oc * l->c;
    }
  } else {
    snprintf(out->name, sizeof out->name, "%zu.bias", l->seq);
    out->ndim = 1;
    out->shape[0] = (uint32_t)l->oc;
    out->count = l->oc;
    out->offset = l->woff + l->oc * l->fan_in;
  }
}

double fl_model__cnn_flops(const fl_model_spec_t *m) {
  layer_t L[FL_MODEL_MAX_OPS + 1];
  size_t n = chain(m, L);
  double f = 0;
  for (size_t i = 0; i < n; i++) {
    if (L[i].kind == L_POOL) continue;
    double macs = (double)L[i].out_n * (double)L[i].fan_in;
    f += (i == 0 ? 4.0 : 6.0) * macs; /* forward, dweight, and dinp but for the first */
  }
  return f;
}

size_t fl_model__cnn_ws_floats(const fl_model_spec_t *m) {
  layer_t L[FL_MODEL_MAX_OPS + 1];
  size_t n = chain(m, L), per = 0, big = 1;
  for (size_t i = 0; i < n; i++) {
    per += L[i].out_n * (L[i].kind == L_POOL ? 2 : 1); /* a pool's argmax too */
    if (L[i].in_n > big) big = L[i].in_n;
    if (L[i].out_n > big) big = L[i].out_n;
  }
  return per + 2 * big; /* and the two gradient buffers */
}

struct fl_cnn_ws {
  size_t max_batch, n;
  layer_t L[FL_MODEL_MAX_OPS + 1];
  float *act[FL_MODEL_MAX_OPS + 1];  /* (max_batch, out_n): each layer's output */
  int32_t *am[FL_MODEL_MAX_OPS + 1]; /* pools: (max_batch, out_n) */
  float *col;                        /* one image's im2col, the largest conv's */
  float *g[2];                       /* (max_batch, the largest in_n or out_n) */
};

void fl_model__cnn_ws_destroy(fl_cnn_ws_t *ws) {
  if (!ws) return;
  for (size_t i = 0; i <= FL_MODEL_MAX_OPS; i++) {
    free(ws->act[i]);
    free(ws->am[i]);
  }
  free(ws->col);
  free(ws->g[0]);
  free(ws->g[1]);
  free(ws);
}

fl_cnn_ws_t *fl_model__cnn_ws_new(const fl_model_spec_t *m, size_t max_batch) {
  fl_cnn_ws_t *ws = calloc(1, sizeof *ws);
  if (!ws) goto oom;
  ws->max_batch = max_batch;
  ws->n = chain(m, ws->L);
  size_t col = 1, big = 1;
  for (size_t i = 0; i < ws->n; i++) {
    const layer_t *l = &ws->L[i];
    if (!(ws->act[i] = fl_gemm_alloc(max_batch * l->out_n))) goto oom;
    if (l->kind == L_POOL && !(ws->am[i] = malloc(max_batch * l->out_n * sizeof(int32_t))))
      goto oom;
    if (l->kind == L_CONV) {
      fl_conv2d_t s = {1, l->c, l->h, l->w, l->oc, l->kh, l->kw, l->pad};
      if (fl_conv2d_col_size(&s) > col) col = fl_conv2d_col_size(&s);
    }
    if (l->in_n > big) big = l->in_n;
    if (l->out_n > big) big = l->out_n;
  }
  if (!(ws->col = fl_gemm_alloc(col))) goto oom;
  for (int k = 0; k < 2; k++)
    if (!(ws->g[k] = fl_gemm_alloc(max_batch * big))) goto oom;
  return ws;
oom:
  fl_model__cnn_ws_destroy(ws);
  fl_err_set(FL_ENOMEM, "model workspace: out of memory for a CNN at batch %zu", max_batch);
  return NULL;
}

static fl_conv2d_t conv_shape(const layer_t *l, size_t B) {
  fl_conv2d_t s = {B, l->c, l->h, l->w, l->oc, l->kh, l->kw, l->pad};
  return s;
}

/* The forward pass of B images: every layer's output in ws->act, the
 * logits last. `ref`: the naive kernels.
 *
 * The convolutions and poolings before the first dense layer go
 * CNN_GROUP images at a time, all of them for one group before the next
 * (depth first); without `keep` (an evaluation, which needs no backward)
 * every group but the last layer's reuses the start of the activation
 * buffers, so they stay in cache at an evaluation's large batch (layer by
 * layer, 78 images' first convolution alone wrote 7.8 MB: 80 -> 88
 * GFLOP/s); the dense layers then take the whole batch (one pass over their
 * weights for all of it). Every image is computed alone either way: the
 * same bits. */
#define CNN_GROUP 4 /* ~0.9 MB of the FedAvg CNN's activations: within L2 */
static void forward(fl_cnn_ws_t *ws, const float *params, const float *x, size_t B, int ref,
                    int keep) {
  size_t nconv = 0;
  while (nconv < ws->n && (ws->L[nconv].kind == L_CONV || ws->L[nconv].kind == L_POOL))
    nconv++;
  for (size_t s = 0; s < B && nconv; s += CNN_GROUP) {
    const size_t nb = B - s < CNN_GROUP ? B - s : CNN_GROUP;
    const float *a = x + s * ws->L[0].in_n;
    for (size_t i = 0; i < nconv; i++) {
      const layer_t *l = &ws->L[i];
      /* without `keep`, only the last one's outputs are needed by the dense layers */
      const size_t at = keep || i == nconv - 1 ? s : 0;
      float *o = ws->act[i] + at * l->out_n;
      const float *wt = params + l->woff;
      if (l->kind == L_CONV) {
        fl_conv2d_t cs = conv_shape(l, nb); /* the scratch holds one image: it goes by image */
        if (ref) {
          fl_conv2d_forward_ref(&cs, o, a, wt, wt + l->oc * l->fan_in);
          fl_relu_forward(o, o, nb * l->out_n);
        } else {
          fl_conv2d_forward_relu(&cs, o, a, wt, wt + l->oc * l->fan_in, ws->col);
        }
      } else {
        fl_pool2_t ps = {nb, l->c, l->h, l->w};
        fl_maxpool2_forward(&ps, o, ws->am[i] + at * l->out_n, a);
      }
      a = o;
    }
  }
  const float *a = nconv ? ws->act[nconv - 1] : x;
  for (size_t i = nconv; i < ws->n; i++) {
    const layer_t *l = &ws->L[i];
    float *o = ws->act[i];
    const float *wt = params + l->woff;
    (ref ? fl_dense_forward_ref : fl_dense_forward)(o, a, wt, wt + l->oc * l->fan_in, B, l->c,
                                                    l->oc);
    if (l->kind == L_FC) fl_relu_forward(o, o, B * l->out_n);
    a = o;
  }
}

/* The backward pass from the logits' gradient in g[0]: every parameter's
 * gradient into grad. With `step` (= params; fast kernels only), each layer
 * also takes its plain SGD step of rate lr as soon as its gradient exists
 * (it alone uses its weights, and its input gradient is formed first): a
 * dense layer fused (fl_dense_backward_sgd, its gradient never stored), a
 * convolution through grad. The same bits as the gradient, then the step. */
static void backward(fl_cnn_ws_t *ws, const float *params, const float *x, size_t B, int ref,
                     float *grad, float *step, float lr) {
  int cur = 0;
  for (size_t i = ws->n; i-- > 0;) {
    const layer_t *l = &ws->L[i];
    float *d = ws->g[cur], *dprev = i ? ws->g[1 - cur] : NULL;
    const float *a = i ? ws->act[i - 1] : x;
    const float *wt = params + l->woff;
    float *gw = grad + l->woff, *gb = gw + l->oc * l->fan_in;
    if (l->kind == L_POOL) {
      fl_pool2_t s = {B, l->c, l->h, l->w};
      if (dprev) fl_maxpool2_backward(&s, dprev, d, ws->am[i]); /* a first pool: nothing before */
    } else if (l->kind == L_CONV) {
      fl_relu_backward(d, d, ws->act[i], B * l->out_n);
      fl_conv2d_t s = conv_shape(l, B);
      if (ref)
        fl_conv2d_backward_ref(&s, dprev, gw, gb, d, a, wt);
      else
        fl_conv2d_backward(&s, dprev, gw, gb, d, a, wt, ws->col);
      if (step) {
        float *p = step + l->woff;
        for (size_t k = 0; k < l->oc * (l->fan_in + 1); k++)
          p[k] -= lr * gw[k];
      }
    } else {
      if (l->kind == L_FC) fl_relu_backward(d, d, ws->act[i], B * l->out_n);
      float *sw = step ? step + l->woff : NULL;
      if (!sw ||
          !fl_dense_backward_sgd(dprev, sw, sw + l->oc * l->fan_in, d, a, B, l->c, l->oc, lr)) {
        (ref ? fl_dense_backward_ref : fl_dense_backward)(dprev, gw, gb, d, a, wt, B, l->c, l->oc);
        if (sw)
          for (size_t k = 0; k < l->oc * (l->fan_in + 1); k++)
            sw[k] -= lr * gw[k];
      }
    }
    cur = 1 - cur;
  }
}

/* argmax with the lowest index on ties, as the MLP path counts. */
static size_t argmax(const float *z, size_t K) {
  size_t am = 0;
  for (size_t k = 1; k < K; k++)
    if (z[k] > z[am]) am = k;
  return am;
}

float fl_model__cnn_loss_grad(const fl_model_spec_t *m, fl_cnn_ws_t *ws, const float *params,
                              const float *x, const int32_t *y, size_t B, float *grad) {
  const size_t K = m->dims[m->num_layers];
  forward(ws, params, x, B, 0, 1);
  float loss = fl_softmax_xent(ws->g[0], ws->act[ws->n - 1], y, B, K);
  backward(ws, params, x, B, 0, grad, NULL, 0.0f);
  return loss;
}

float fl_model__cnn_sgd_step(const fl_model_spec_t *m, fl_cnn_ws_t *ws, float *params,
                             const float *x, const int32_t *y, size_t B, float lr, float *grad) {
  const size_t K = m->dims[m->num_layers];
  forward(ws, params, x, B, 0, 1);
  float loss = fl_softmax_xent(ws->g[0], ws->act[ws->n - 1], y, B, K);
  backward(ws, params, x, B, 0, grad, params, lr);
  return loss;
}

void fl_model__cnn_evaluate(const fl_model_spec_t *m, fl_cnn_ws_t *ws, const float *params,
                            const float *x, const int32_t *y, size_t B, double *loss_sum,
                            size_t *correct) {
  const size_t K = m->dims[m->num_layers], in = m->dims[0];
  double loss = 0;
  size_t ok = 0;
  for (size_t s = 0; s < B; s += ws->max_batch) {
    size_t nb = B - s < ws->max_batch ? B - s : ws->max_batch;
    forward(ws, params, x + s * in, nb, 0, 0);
    const float *z = ws->act[ws->n - 1];
    for (size_t b = 0; b < nb; b++) {
      loss += fl_softmax_xent(NULL, z + b * K, y + s + b, 1, K);
      ok += argmax(z + b * K, K) == (size_t)y[s + b];
    }
  }
  if (loss_sum) *loss_sum += loss;
  if (correct) *correct += ok;
}

float fl_model__cnn_loss_grad_ref(const fl_model_spec_t *m, const float *params, const float *x,
                                  const int32_t *y, size_t B, float *grad) {
  fl_cnn_ws_t *ws = fl_model__cnn_ws_new(m, B);
  if (!ws) return NAN; /* test-only helper: a NaN loss fails any comparison */
  forward(ws, params, x, B, 1, 1);
  float loss = fl_softmax_xent(ws->g[0], ws->act[ws->n - 1], y, B, m->dims[m->num_layers]);
  backward(ws, params, x, B, 1, grad, NULL, 0.0f);
  fl_model__cnn_ws_destroy(ws);
  return loss;
}
