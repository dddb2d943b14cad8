#include "fl_wire.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"

/* Room for the envelope, submessages, strings, pointer arrays and
 * protobuf-c's scratch slabs on top of the payload itself. */
#define WIRE_ALLOC_SLACK ((size_t)1 << 20)

/* Longest tensor name or string echoed into an error message. */
#define WIRE_ECHO_MAX 64

void fl_wire_limits_for_model(const fl_model_spec_t *m, fl_wire_limits_t *out) {
  out->caller_checks_values = 0;
  out->max_values = m->num_params;
  out->max_tensors = fl_model_num_tensors(m);
  out->max_message = 4 * m->num_params + ((size_t)64 << 10) + 512 * out->max_tensors;
}

/* ---- size-capped allocator ------------------------------------------- */

/* Counts every byte protobuf-c allocates during one unpack (freed or not), so
 * both the peak footprint and the total allocation work are bounded by the
 * cap, whatever lengths and repetition counts a hostile peer encodes.
 * Allocations come from malloc, so the result is freed with the default
 * allocator (fl_wire_free). */
typedef struct {
  size_t used;
  size_t cap;
} wire_budget_t;

static void *wire_alloc(void *data, size_t size) {
  wire_budget_t *b = data;
  if (size > b->cap - b->used) return NULL;
  b->used += size;
  return malloc(size ? size : 1);
}

static void wire_free(void *data, void *p) {
  (void)data;
  free(p);
}

/* ---- validation helpers ---------------------------------------------- */

/* Copies a peer-supplied string for an error message: truncated, control
 * and non-ASCII bytes replaced so a hostile name can't forge log lines. */
static const char *wire_echo(const char *s, char buf[WIRE_ECHO_MAX + 4]) {
  size_t i = 0;
  for (; s && s[i] && i < WIRE_ECHO_MAX; i++) {
    unsigned char c = (unsigned char)s[i];
    buf[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
  }
  if (s && s[i]) {
    memcpy(buf + i, "...", 3);
    i += 3;
  }
  buf[i] = '\0';
  return buf;
}

/* protobuf-c NUL-terminates every string it unpacks (and points absent proto3
 * strings at a static ""), so strnlen is safe and bounded. */
static int wire_check_string(const char *kind, const char *field, const char *s) {
  if (!s) return fl_err_set(FL_EFORMAT, "%s: %s is missing", kind, field);
  size_t n = strnlen(s, FL_WIRE_MAX_STRING + 1);
  if (n > FL_WIRE_MAX_STRING)
    return fl_err_set(FL_ETOOBIG, "%s: %s is longer than %d bytes", kind, field,
                      FL_WIRE_MAX_STRING);
  return 0;
}

/* Formats a shape as "[a,b,...]" for error messages. */
static const char *wire_fmt_shape(const uint32_t *shape, size_t n, char *buf, size_t cap) {
  size_t at = 0;
  at += (size_t)snprintf(buf + at, cap - at, "[");
  for (size_t i = 0; i < n && at < cap; i++)
    at += (size_t)snprintf(buf + at, cap - at, "%s%u", i ? "," : "", (unsigned)shape[i]);
  if (at < cap) snprintf(buf + at, cap - at, "]");
  return buf;
}

/* Index of the first NaN/Inf in x[0..n), or n. Scans blocks with a
 * branch-free exponent test the compiler vectorizes: this runs over every
 * weight of every message, so it must go at memory speed. */
static size_t wire_first_nonfinite(const float *x, size_t n) {
  const size_t block = 1024;
  for (size_t b = 0; b < n; b += block) {
    size_t e = n - b < block ? n : b + block;
    uint32_t bad = 0;
    for (size_t i = b; i < e; i++) {
      uint32_t u;
      memcpy(&u, &x[i], sizeof u);
      bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    if (bad)
      for (size_t i = b; i < e; i++)
        if (!isfinite(x[i])) return i;
  }
  return n;
}

/* One tensor of a message; `layout`: of a Welcome's layout (a name and a
 * shape, no data). */
static int wire_check_tensor(const char *kind, size_t idx, const Fedlr__Tensor *t, size_t *total,
                             const fl_wire_limits_t *lim, int layout) {
  char echo[WIRE_ECHO_MAX + 4], sbuf[128];
  if (!t) return fl_err_set(FL_EFORMAT, "%s: tensor %zu is missing", kind, idx);
  if (!t->name) return fl_err_set(FL_EFORMAT, "%s: tensor %zu has no name", kind, idx);
  if (strnlen(t->name, FL_WIRE_MAX_STRING + 1) > FL_WIRE_MAX_STRING)
    return fl_err_set(FL_ETOOBIG, "%s: tensor %zu name is longer than %d bytes", kind, idx,
                      FL_WIRE_MAX_STRING);
  const char *name = wire_echo(t->name, echo);
  if (t->n_shape > FL_WIRE_MAX_DIMS)
    return fl_err_set(FL_ESHAPE, "%s: tensor %zu '%s' has %zu dimensions, at most %d", kind, idx,
                      name, t->n_shape, FL_WIRE_MAX_DIMS);
  size_t prod = 1;
  for (size_t d = 0; d < t->n_shape; d++) {
    if (t->shape[d] == 0)
      return fl_err_set(FL_ESHAPE, "%s: tensor %zu '%s' has a zero dimension %s", kind, idx, name,
                        wire_fmt_shape(t->shape, t->n_shape, sbuf, sizeof sbuf));
    if (prod > SIZE_MAX / t->shape[d])
      return fl_err_set(FL_ESHAPE, "%s: tensor %zu '%s' shape %s overflows", kind, idx, name,
                        wire_fmt_shape(t->shape, t->n_shape, sbuf, sizeof sbuf));
    prod *= t->shape[d];
  }
  if (layout) {
    /* A layout entry: name and shape, no values. */
    if (t->n_data != 0)
      return fl_err_set(FL_EFORMAT, "%s: layout tensor %zu '%s' carries %zu values (none allowed)",
                        kind, idx, name, t->n_data);
    if (prod > FL_MODEL_MAX_PARAMS - *total)
      return fl_err_set(FL_ETOOBIG, "%s: the layout holds more than %zu values (limit)", kind,
                        (size_t)FL_MODEL_MAX_PARAMS);
    *total += prod;
    return 0;
  }
  if (prod != t->n_data)
    return fl_err_set(FL_ESHAPE, "%s: tensor %zu '%s' has %zu values, shape %s needs %zu", kind,
                      idx, name, t->n_data, wire_fmt_shape(t->shape, t->n_shape, sbuf, sizeof sbuf),
                      prod);
  if (t->n_data > lim->max_values - *total)
    return fl_err_set(FL_ETOOBIG, "%s: tensors hold more than %zu values (limit)", kind,
                      lim->max_values);
  *total += t->n_data;
  size_t bad = lim->caller_checks_values ? t->n_data : wire_first_nonfinite(t->data, t->n_data);
  if (bad < t->n_data)
    return fl_err_set(FL_ENONFINITE, "%s: tensor %zu '%s' value %zu is %s", kind, idx, name, bad,
                      isnan(t->data[bad]) ? "NaN" : "infinite");
  return 0;
}

static int wire_check_tensors_as(const char *kind, Fedlr__Tensor *const *t, size_t n,
                                 const fl_wire_limits_t *lim, int layout) {
  if (n == 0 && !layout) return fl_err_set(FL_EFORMAT, "%s: no weights", kind);
  if (n > lim->max_tensors)
    return fl_err_set(FL_ETOOBIG, "%s: %zu tensors, limit is %zu", kind, n, lim->max_tensors);
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    int rc = wire_check_tensor(kind, i, t[i], &total, lim, layout);
    if (rc < 0) return rc;
  }
  return 0;
}

static int wire_check_tensors(const char *kind, Fedlr__Tensor *const *t, size_t n,
                              const fl_wire_limits_t *lim) {
  return wire_check_tensors_as(kind, t, n, lim, 0);
}

const char *fl_wire_escape(const void *data, size_t len, size_t max_in, char *buf, size_t cap) {
  const unsigned char *p = data;
  size_t at = 0, i = 0;
  for (; p && i < len && i < max_in; i++) {
    unsigned char c = p[i];
    if (at + 8 > cap) break;
    if (c >= 0x20 && c < 0x7f && c != '\\')
      buf[at++] = (char)c;
    else if (c == '\\')
      at += (size_t)snprintf(buf + at, cap - at, "\\\\");
    else
      at += (size_t)snprintf(buf + at, cap - at, "\\x%02x", c);
  }
  if (p && i < len && at + 4 <= cap) {
    memcpy(buf + at, "...", 3);
    at += 3;
  }
  buf[at] = '\0';
  return buf;
}

/* Decodes one UTF-8 sequence at s[0..n): the code point, or -1 if it is
 * malformed (truncated, overlong, a surrogate, beyond U+10FFFF); *used is
 * its length. */
static long utf8_decode(const unsigned char *s, size_t n, size_t *used) {
  unsigned char c = s[0];
  size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (len == 0 || len > n) return -1;
  long cp = len == 1 ? c : c & (0x7f >> len);
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80) return -1;
    cp = cp << 6 | (s[i] & 0x3f);
  }
  static const long min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return -1;
  *used = len;
  return cp;
}

int fl_wire_check_name(const char *name) {
  char esc[4 * FL_WIRE_MAX_NAME + 8];
  if (!name || !name[0]) return fl_err_set(FL_EFORMAT, "the client name is empty");
  size_t n = strnlen(name, FL_WIRE_MAX_NAME + 1);
  if (n > FL_WIRE_MAX_NAME)
    return fl_err_set(FL_ETOOBIG, "the client name '%s' is longer than %d bytes",
                      fl_wire_escape(name, strlen(name), 32, esc, sizeof esc), FL_WIRE_MAX_NAME);
  const unsigned char *p = (const unsigned char *)name;
  for (size_t i = 0, used = 0; i < n; i += used) {
    long cp = utf8_decode(p + i, n - i, &used);
    const char *why = NULL;
    if (cp < 0)
      why = "is not valid UTF-8";
    else if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
      why = "has a control character";
    else if (cp == 0x2028 || cp == 0x2029)
      why = "has a line separator";
    else if ((cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069))
      why = "has a bidirectional override";
    if (why)
      return fl_err_set(FL_EFORMAT,
                        "the client name '%s' %s at byte %zu (names are 1 to %d bytes of UTF-8 "
                        "text)",
                        fl_wire_escape(name, n, n, esc, sizeof esc), why, i, FL_WIRE_MAX_NAME);
  }
  return 0;
}

int fl_wire_peek_kind(const uint8_t *buf, size_t len) {
  /* The first field tag, a varint: field number << 3 | wire type 2. */
  uint64_t tag = 0;
  for (size_t i = 0; i < len && i < 5; i++) {
    tag |= (uint64_t)(buf[i] & 0x7f) << (7 * i);
    if (!(buf[i] & 0x80)) {
      uint64_t field = tag >> 3;
      if ((tag & 7) != 2 || field < FEDLR__ENVELOPE__BODY_JOIN ||
          field > FEDLR__ENVELOPE__BODY_EVAL_RESULT)
        return FEDLR__ENVELOPE__BODY__NOT_SET;
      return (int)field;
    }
  }
  return FEDLR__ENVELOPE__BODY__NOT_SET;
}

int fl_wire_negotiate(uint32_t max_version, uint32_t min_version, uint32_t *chosen) {
  uint32_t lo = min_version ? min_version : max_version;
  uint32_t v = max_version < FL_WIRE_PROTOCOL_VERSION ? max_version : FL_WIRE_PROTOCOL_VERSION;
  if (lo > max_version)
    return fl_err_set(FL_EFORMAT,
                      "min_protocol_version %u is above protocol_version %u (the lowest and the "
                      "highest version the client speaks)",
                      (unsigned)min_version, (unsigned)max_version);
  if (v < FL_WIRE_MIN_PROTOCOL_VERSION || v < lo) {
    if (lo == max_version)
      return fl_err_set(FL_EUNSUPPORTED,
                        "protocol version %u is not supported: this coordinator speaks versions "
                        "%d to %d",
                        (unsigned)max_version, FL_WIRE_MIN_PROTOCOL_VERSION,
                        FL_WIRE_PROTOCOL_VERSION);
    return fl_err_set(FL_EUNSUPPORTED,
                      "protocol versions %u to %u are not supported: this coordinator speaks "
                      "versions %d to %d",
                      (unsigned)lo, (unsigned)max_version, FL_WIRE_MIN_PROTOCOL_VERSION,
                      FL_WIRE_PROTOCOL_VERSION);
  }
  *chosen = v;
  return 0;
}

uint32_t fl_wire_min_run_version(float prox_mu, const fl_model_spec_t *m) {
  if (m && fl_model_needs_shape(m)) return FL_WIRE_SHAPE_VERSION;
  return prox_mu > 0 ? FL_WIRE_PROX_VERSION : FL_WIRE_MIN_PROTOCOL_VERSION;
}

int fl_wire_check_run_version(uint32_t version, uint32_t client_max, double prox_mu,
                              const fl_model_spec_t *m) {
  uint32_t lo = fl_wire_min_run_version((float)prox_mu, m);
  if (version >= lo) return 0;
  if (lo == FL_WIRE_SHAPE_VERSION)
    return fl_err_set(FL_EUNSUPPORTED,
                      "this run's CNN takes %zux%zux%zu images (--input-shape, or the IDX data's "
                      "dimensions), which a client of protocol version 3 or older would build as "
                      "one channel of a square: clients must speak protocol version %u or later; "
                      "this client speaks up to %u",
                      m->in_c, m->in_h, m->in_w, (unsigned)lo, (unsigned)client_max);
  return fl_err_set(FL_EUNSUPPORTED,
                    "this run uses FedProx (--prox-mu %g): clients must speak protocol version %u "
                    "or later; this client speaks up to %u",
                    prox_mu, (unsigned)lo, (unsigned)client_max);
}

int fl_wire_check_metric_name(const char *name) {
  char esc[4 * FL_WIRE_MAX_METRIC_NAME + 16];
  size_t n = name ? strnlen(name, FL_WIRE_MAX_METRIC_NAME + 1) : 0;
  if (n == 0) return fl_err_set(FL_EFORMAT, "a metric has no name");
  if (n > FL_WIRE_MAX_METRIC_NAME)
    return fl_err_set(FL_ETOOBIG, "metric name '%s' is longer than %d bytes",
                      fl_wire_escape(name, n, 32, esc, sizeof esc), FL_WIRE_MAX_METRIC_NAME);
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '.' || c == '-'))
      return fl_err_set(FL_EFORMAT,
                        "metric name '%s' has '%s' at byte %zu (names are letters, digits, '_', "
                        "'.' and '-')",
                        fl_wire_escape(name, n, n, esc, sizeof esc),
                        fl_wire_escape(name + i, 1, 1, esc + 2 * FL_WIRE_MAX_METRIC_NAME + 8, 8),
                        i);
  }
  return 0;
}

static int wire_check_join(const Fedlr__Join *j) {
  int rc;
  /* The versions are negotiated by the coordinator (fl_wire_negotiate),
   * which answers an unsupported one with a Stop listing its own. */
  if (j->num_examples < 1 || j->num_examples > FL_WIRE_MAX_EXAMPLES)
    return fl_err_set(FL_ERANGE, "%llu examples: a client declares 1 to %llu",
                      (unsigned long long)j->num_examples,
                      (unsigned long long)FL_WIRE_MAX_EXAMPLES);
  if (j->num_eval_examples > FL_WIRE_MAX_EXAMPLES)
    return fl_err_set(FL_ERANGE, "%llu evaluation examples: a client declares 0 to %llu",
                      (unsigned long long)j->num_eval_examples,
                      (unsigned long long)FL_WIRE_MAX_EXAMPLES);
  if ((rc = wire_check_string("join", "name", j->name)) < 0) return rc;
  /* Names end up in logs, metrics and replies. */
  return fl_wire_check_name(j->name);
}

fl_shape_t fl_wire_welcome_shape(const Fedlr__Welcome *w) {
  fl_shape_t s = {0, 0, 0};
  if (w->n_input_shape == 3)
    s = (fl_shape_t){w->input_shape[0], w->input_shape[1], w->input_shape[2]};
  return s;
}

static int wire_check_welcome(const Fedlr__Welcome *w, const fl_wire_limits_t *lim) {
  int rc;
  if ((rc = wire_check_string("welcome", "run_id", w->run_id)) < 0) return rc;
  if ((rc = wire_check_string("welcome", "model", w->model)) < 0) return rc;
  if (w->n_input_shape) {
    uint64_t n = 1;
    int ok = w->n_input_shape == 3;
    for (size_t i = 0; ok && i < 3; i++) {
      ok = w->input_shape[i] >= 1 && w->input_shape[i] <= FL_SHAPE_MAX_SIDE;
      n *= ok ? w->input_shape[i] : 1;
    }
    if (!ok || n != w->input_dim)
      return fl_err_set(FL_EFORMAT,
                        "welcome: input_shape has %zu values%s, expected C, H, W from 1 to %u with "
                        "C H W = input_dim %u",
                        w->n_input_shape,
                        ok ? " whose product is not input_dim" : " (or one out of range)",
                        FL_SHAPE_MAX_SIDE, w->input_dim);
  }
  return wire_check_tensors_as("welcome", w->layout, w->n_layout, lim, 1);
}

static int wire_check_optimizer(const Fedlr__Optimizer *o) {
  if (!o) return fl_err_set(FL_EFORMAT, "round_start: no optimizer settings");
  /* protobuf-c stores unknown enum numbers as they came. */
  if ((int)o->kind < FEDLR__OPTIMIZER__KIND__SGD || (int)o->kind > FEDLR__OPTIMIZER__KIND__ADAM)
    return fl_err_set(FL_ERANGE, "round_start: unknown optimizer kind %d", (int)o->kind);
  const struct {
    const char *name;
    float v;
  } f[] = {
      {"momentum", o->momentum},         {"beta1", o->beta1}, {"beta2", o->beta2}, {"eps", o->eps},
      {"weight_decay", o->weight_decay}, {"alpha", o->alpha}};
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
    if (!isfinite(f[i].v))
      return fl_err_set(FL_ENONFINITE, "round_start: optimizer %s is not finite", f[i].name);
  return 0;
}

int fl_wire_check_round_start(const Fedlr__RoundStart *r, const fl_wire_limits_t *lim) {
  int rc;
  if (r->round < 1) return fl_err_set(FL_ERANGE, "round_start: round 0 (rounds start at 1)");
  if (!isfinite(r->lr)) return fl_err_set(FL_ENONFINITE, "round_start: learning rate not finite");
  /* 0 is a valid rate: linear/poly/cos schedules end at end=0 / min=0 after
   * T rounds, and exp/step decay underflows the float to 0 in long runs. */
  if (r->lr < 0)
    return fl_err_set(FL_ERANGE, "round_start: learning rate %g is negative", (double)r->lr);
  if (!isfinite(r->prox_mu))
    return fl_err_set(FL_ENONFINITE,
                      "round_start: prox_mu (FedProx's mu) is %s, not a number in [0, %g]",
                      isnan(r->prox_mu) ? "NaN" : "infinite", FL_WIRE_MAX_PROX_MU);
  if (r->prox_mu < 0 || r->prox_mu > FL_WIRE_MAX_PROX_MU)
    return fl_err_set(FL_ERANGE, "round_start: prox_mu (FedProx's mu) %g outside [0, %g]",
                      (double)r->prox_mu, FL_WIRE_MAX_PROX_MU);
  if (r->local_epochs < 1 || r->local_epochs > FL_WIRE_MAX_EPOCHS)
    return fl_err_set(FL_ERANGE, "round_start: local_epochs %u outside [1, %d]",
                      (unsigned)r->local_epochs, FL_WIRE_MAX_EPOCHS);
  if (r->batch_size < 1 || r->batch_size > FL_WIRE_MAX_BATCH)
    return fl_err_set(FL_ERANGE, "round_start: batch_size %u outside [1, %d]",
                      (unsigned)r->batch_size, FL_WIRE_MAX_BATCH);
  if ((int)r->local_unit != FEDLR__ROUND_START__LOCAL_UNIT__EPOCH &&
      (int)r->local_unit != FEDLR__ROUND_START__LOCAL_UNIT__STEP)
    return fl_err_set(FL_ERANGE, "round_start: unknown local_unit %d", (int)r->local_unit);
  if ((rc = wire_check_string("round_start", "local_schedule", r->local_schedule)) < 0) return rc;
  if ((rc = wire_check_string("round_start", "model", r->model)) < 0) return rc;
  if ((rc = wire_check_optimizer(r->optimizer)) < 0) return rc;
  return wire_check_tensors("round_start", r->weights, r->n_weights, lim);
}

static int wire_check_update(const Fedlr__Update *u, const fl_wire_limits_t *lim) {
  if (u->round < 1) return fl_err_set(FL_ERANGE, "update: round 0 (rounds start at 1)");
  if (u->num_examples < 1) return fl_err_set(FL_ERANGE, "update: num_examples is 0");
  /* A larger claim is beyond any registration: the engine rejects it as
   * the client's answer (and caps it first with --max-examples). */
  if (!isfinite(u->train_loss)) return fl_err_set(FL_ENONFINITE, "update: train_loss not finite");
  return wire_check_tensors("update", u->weights, u->n_weights, lim);
}

static int wire_check_evaluate(const Fedlr__Evaluate *ev, const fl_wire_limits_t *lim) {
  int rc;
  if (ev->round < 1) return fl_err_set(FL_ERANGE, "evaluate: round 0 (rounds start at 1)");
  if ((rc = wire_check_string("evaluate", "model", ev->model)) < 0) return rc;
  return wire_check_tensors("evaluate", ev->weights, ev->n_weights, lim);
}

static int wire_check_eval_result(const Fedlr__EvalResult *r) {
  if (r->round < 1) return fl_err_set(FL_ERANGE, "eval_result: round 0 (rounds start at 1)");
  if (r->num_examples < 1 || r->num_examples > FL_WIRE_MAX_EXAMPLES)
    return fl_err_set(FL_ERANGE, "eval_result: %llu examples, outside [1, %llu]",
                      (unsigned long long)r->num_examples,
                      (unsigned long long)FL_WIRE_MAX_EXAMPLES);
  if (!isfinite(r->loss)) return fl_err_set(FL_ENONFINITE, "eval_result: loss not finite");
  if (r->n_metrics > FL_WIRE_MAX_METRICS)
    return fl_err_set(FL_ETOOBIG, "eval_result: %zu metrics, at most %d", r->n_metrics,
                      FL_WIRE_MAX_METRICS);
  for (size_t i = 0; i < r->n_metrics; i++) {
    const Fedlr__Metric *m = r->metrics[i];
    int rc;
    if (!m) return fl_err_set(FL_EFORMAT, "eval_result: metric %zu is missing", i);
    if ((rc = fl_wire_check_metric_name(m->name)) < 0) return rc;
    if (!isfinite(m->value))
      return fl_err_set(FL_ENONFINITE, "eval_result: metric '%s' is not finite", m->name);
    for (size_t k = 0; k < i; k++)
      if (strcmp(r->metrics[k]->name, m->name) == 0)
        return fl_err_set(FL_EFORMAT, "eval_result: metric '%s' appears twice", m->name);
  }
  return 0;
}

static int wire_check_stop(const Fedlr__Stop *st) {
  if (st->n_supported_versions > FL_WIRE_MAX_VERSIONS)
    return fl_err_set(FL_ETOOBIG, "stop: %zu supported versions, at most %d",
                      st->n_supported_versions, FL_WIRE_MAX_VERSIONS);
  return wire_check_string("stop", "reason", st->reason);
}

/* protobuf-c keeps fields it does not know (forward compatibility), but it
 * also keeps field number 0, which protobuf forbids, when the tag is written
 * as an over-long varint (0x85 0x00); re-encoded, that tag is the one byte
 * 0x05, which protobuf-c then rejects. Refusing it here keeps "decodes" and
 * "re-encodes to something that decodes" the same set (found by fuzz_wire). */
static int wire_check_unknown(const ProtobufCMessage *m) {
  for (unsigned i = 0; m && i < m->n_unknown_fields; i++)
    if (m->unknown_fields[i].tag == 0)
      return fl_err_set(FL_EFORMAT, "%s: field number 0 (not valid protobuf)",
                        m->descriptor->short_name);
  return 0;
}

static int wire_check_unknown_tensors(Fedlr__Tensor *const *t, size_t n) {
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++)
    rc = wire_check_unknown(t[i] ? &t[i]->base : NULL);
  return rc;
}

/* Every message of the envelope, in the schema's nesting. */
static int wire_check_unknown_all(const Fedlr__Envelope *e) {
  int rc = wire_check_unknown(&e->base);
  /* The body pointers share a union: any one names the set body. */
  if (rc == 0 && e->body_case != FEDLR__ENVELOPE__BODY__NOT_SET)
    rc = wire_check_unknown((const ProtobufCMessage *)e->join);
  if (rc == 0 && e->body_case == FEDLR__ENVELOPE__BODY_ROUND_START && e->round_start) {
    rc = wire_check_unknown(e->round_start->optimizer ? &e->round_start->optimizer->base : NULL);
    if (rc == 0)
      rc = wire_check_unknown_tensors(e->round_start->weights, e->round_start->n_weights);
  }
  if (rc == 0 && e->body_case == FEDLR__ENVELOPE__BODY_UPDATE && e->update)
    rc = wire_check_unknown_tensors(e->update->weights, e->update->n_weights);
  if (rc == 0 && e->body_case == FEDLR__ENVELOPE__BODY_WELCOME && e->welcome)
    rc = wire_check_unknown_tensors(e->welcome->layout, e->welcome->n_layout);
  if (rc == 0 && e->body_case == FEDLR__ENVELOPE__BODY_EVALUATE && e->evaluate)
    rc = wire_check_unknown_tensors(e->evaluate->weights, e->evaluate->n_weights);
  if (rc == 0 && e->body_case == FEDLR__ENVELOPE__BODY_EVAL_RESULT && e->eval_result)
    for (size_t i = 0; rc == 0 && i < e->eval_result->n_metrics; i++)
      rc = wire_check_unknown(&e->eval_result->metrics[i]->base);
  return rc;
}

static int wire_check_envelope(const Fedlr__Envelope *e, const fl_wire_limits_t *lim) {
  switch (e->body_case) {
  case FEDLR__ENVELOPE__BODY_JOIN:
    if (!e->join) break;
    return wire_check_join(e->join);
  case FEDLR__ENVELOPE__BODY_WELCOME:
    if (!e->welcome) break;
    return wire_check_welcome(e->welcome, lim);
  case FEDLR__ENVELOPE__BODY_ROUND_START:
    if (!e->round_start) break;
    return fl_wire_check_round_start(e->round_start, lim);
  case FEDLR__ENVELOPE__BODY_UPDATE:
    if (!e->update) break;
    return wire_check_update(e->update, lim);
  case FEDLR__ENVELOPE__BODY_HEARTBEAT:
    if (!e->heartbeat) break;
    return 0;
  case FEDLR__ENVELOPE__BODY_STOP:
    if (!e->stop) break;
    return wire_check_stop(e->stop);
  case FEDLR__ENVELOPE__BODY_EVALUATE:
    if (!e->evaluate) break;
    return wire_check_evaluate(e->evaluate, lim);
  case FEDLR__ENVELOPE__BODY_EVAL_RESULT:
    if (!e->eval_result) break;
    return wire_check_eval_result(e->eval_result);
  default: return fl_err_set(FL_EFORMAT, "envelope: no message body set");
  }
  return fl_err_set(FL_EFORMAT, "envelope: body case %d has no message", (int)e->body_case);
}

/* ---- public API -------------------------------------------------------- */

int fl_wire_decode(const uint8_t *buf, size_t len, const fl_wire_limits_t *lim,
                   Fedlr__Envelope **out) {
  Fedlr__Envelope *env = NULL;
  int rc = 0;
  *out = NULL;
  if (!buf && len) return fl_err_set(FL_EINVAL, "fl_wire_decode: NULL buffer");
  if (len > lim->max_message)
    return fl_err_set(FL_ETOOBIG, "message of %zu bytes exceeds the limit of %zu", len,
                      lim->max_message);
  /* A legitimate message decodes into about its own size plus small structs;
   * twice the limit plus slack never refuses one, and stops hostile length
   * prefixes and repetition counts from turning bytes into memory. */
  wire_budget_t budget = {0, SIZE_MAX};
  if (lim->max_message <= (SIZE_MAX - WIRE_ALLOC_SLACK) / 2)
    budget.cap = 2 * lim->max_message + WIRE_ALLOC_SLACK;
  ProtobufCAllocator alloc = {wire_alloc, wire_free, &budget};
  env = fedlr__envelope__unpack(&alloc, len, buf);
  if (!env) return fl_err_set(FL_EFORMAT, "undecodable message (%zu bytes)", len);
  if ((rc = wire_check_envelope(env, lim)) < 0) goto out;
  if ((rc = wire_check_unknown_all(env)) < 0) goto out;
  *out = env;
  env = NULL;
out:
  fl_wire_free(&env);
  return rc;
}

void fl_wire_free(Fedlr__Envelope **env) {
  if (!env || !*env) return;
  /* wire_alloc allocates with malloc, so the default allocator frees. */
  fedlr__envelope__free_unpacked(*env, NULL);
  *env = NULL;
}

int fl_wire_encode(const Fedlr__Envelope *env, uint8_t **buf, size_t *len) {
  *buf = NULL;
  *len = 0;
  size_t n = fedlr__envelope__get_packed_size(env);
  uint8_t *p = malloc(n ? n : 1);
  if (!p) return fl_err_set(FL_ENOMEM, "cannot allocate %zu bytes to encode a message", n);
  size_t got = fedlr__envelope__pack(env, p);
  if (got != n) {
    free(p);
    return fl_err_set(FL_EFORMAT, "encoder wrote %zu bytes, expected %zu", got, n);
  }
  *buf = p;
  *len = n;
  return 0;
}

int fl_wire_tensors_init(fl_wire_tensors_t *tv, const fl_model_spec_t *m, const float *params) {
  size_t n = fl_model_num_tensors(m);
  memset(tv, 0, sizeof *tv);
  tv->t = calloc(n ? n : 1, sizeof *tv->t);
  tv->ptrs = calloc(n ? n : 1, sizeof *tv->ptrs);
  tv->info = calloc(n ? n : 1, sizeof *tv->info);
  if (!tv->t || !tv->ptrs || !tv->info) {
    fl_wire_tensors_free(tv);
    return fl_err_set(FL_ENOMEM, "out of memory for %zu tensors", n);
  }
  tv->n = n;
  for (size_t i = 0; i < n; i++) {
    fl_tensor_info_t *info = &tv->info[i];
    fl_model_tensor(m, i, info);
    Fedlr__Tensor *t = &tv->t[i];
    fedlr__tensor__init(t);
    t->name = info->name;
    t->n_shape = info->ndim;
    t->shape = info->shape;
    tv->ptrs[i] = t;
  }
  fl_wire_tensors_point(tv, params);
  return 0;
}

void fl_wire_tensors_point(fl_wire_tensors_t *tv, const float *params) {
  for (size_t i = 0; i < tv->n; i++) {
    /* protobuf-c's struct is not const-correct; packing only reads it. */
    tv->t[i].n_data = params ? tv->info[i].count : 0;
    tv->t[i].data = params ? (float *)(params + tv->info[i].offset) : NULL;
  }
}

void fl_wire_tensors_free(fl_wire_tensors_t *tv) {
  if (!tv) return;
  free(tv->t);
  free(tv->ptrs);
  free(tv->info);
  memset(tv, 0, sizeof *tv);
}

int fl_wire_check_tensors(Fedlr__Tensor *const *t, size_t n, const fl_model_spec_t *m) {
  char echo[WIRE_ECHO_MAX + 4], want[128], got[128];
  size_t nt = fl_model_num_tensors(m);
  if (n != nt)
    return fl_err_set(FL_ESHAPE, "expected %zu tensors for model '%s', got %zu", nt, m->spec, n);
  for (size_t i = 0; i < n; i++) {
    fl_tensor_info_t info;
    fl_model_tensor(m, i, &info);
    if (!t[i] || !t[i]->name) return fl_err_set(FL_ESHAPE, "tensor %zu is missing", i);
    if (strcmp(t[i]->name, info.name) != 0)
      return fl_err_set(FL_ESHAPE, "tensor %zu: expected '%s', got '%s'", i, info.name,
                        wire_echo(t[i]->name, echo));
    int same = t[i]->n_shape == info.ndim && t[i]->n_data == info.count;
    for (size_t d = 0; same && d < info.ndim; d++)
      same = t[i]->shape[d] == info.shape[d];
    if (!same) {
      size_t ns = t[i]->n_shape < FL_WIRE_MAX_DIMS ? t[i]->n_shape : FL_WIRE_MAX_DIMS;
      return fl_err_set(FL_ESHAPE, "expected '%s' %s, got %s", info.name,
                        wire_fmt_shape(info.shape, info.ndim, want, sizeof want),
                        wire_fmt_shape(t[i]->shape, ns, got, sizeof got));
    }
  }
  return 0;
}

void fl_wire_tensors_copy(Fedlr__Tensor *const *t, size_t n, const fl_model_spec_t *m,
                          float *params) {
  for (size_t i = 0; i < n; i++) {
    fl_tensor_info_t info;
    fl_model_tensor(m, i, &info);
    memcpy(params + info.offset, t[i]->data, info.count * sizeof(float));
  }
}

void fl_wire_optim_to(const fl_optim_config_t *c, Fedlr__Optimizer *o) {
  fedlr__optimizer__init(o);
  o->kind = (Fedlr__Optimizer__Kind)c->kind;
  o->momentum = c->momentum;
  o->beta1 = c->beta1;
  o->beta2 = c->beta2;
  o->eps = c->eps;
  o->weight_decay = c->weight_decay;
  o->alpha = c->alpha;
  o->keep_state = c->keep_state != 0;
}

void fl_wire_optim_from(const Fedlr__Optimizer *o, fl_optim_config_t *c) {
  memset(c, 0, sizeof *c);
  c->kind = (fl_optim_kind_t)o->kind;
  c->momentum = o->momentum;
  c->beta1 = o->beta1;
  c->beta2 = o->beta2;
  c->eps = o->eps;
  c->alpha = o->alpha;
  c->weight_decay = o->weight_decay;
  c->keep_state = o->keep_state;
}
