/* fl_wire: the bounded, validating codec for fedlr's protobuf messages.
 *
 * Every byte string from outside goes through fl_wire_decode(): the length is
 * checked against the limits before anything is allocated, protobuf-c unpacks
 * with a size-capped allocator, and the result is checked field by field
 * (exactly one body set, string lengths, tensor counts, shape products equal
 * data counts, all floats finite, round >= 1, batch size and epochs in range,
 * ...). Errors say what was wrong ("update: tensor 2 'layers.1.weight' has
 * 39999 values, shape [200,200] needs 40000"). Checks that need run state
 * (expected round, sampled sender, model shapes) are the caller's, helped by
 * fl_wire_check_tensors(). */
#ifndef FL_WIRE_H
#define FL_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "fedlr.pb-c.h"
#include "fl_model.h"
#include "fl_optim.h"

/* Protocol versions this code speaks (docs/protocol.md, "Versions"). */
#define FL_WIRE_PROTOCOL_VERSION 4
#define FL_WIRE_MIN_PROTOCOL_VERSION 1
#define FL_WIRE_MAX_STRING 256 /* specs, reasons, run ids, tensor names */
#define FL_WIRE_MAX_NAME 64    /* client names, bytes of UTF-8 */
/* The most examples a client may declare in a Join or claim in an Update
 * (2^32): beyond any single client's data, and with |delta| <= 2^20 what
 * keeps the coordinator's exact fixed-point sum far from overflow. */
#define FL_WIRE_MAX_EXAMPLES 4294967296ULL
#define FL_WIRE_MAX_EPOCHS 1000
#define FL_WIRE_MAX_BATCH 65536
#define FL_WIRE_MAX_DIMS 8     /* dimensions of a tensor (0: a scalar) */
#define FL_WIRE_MAX_METRICS 16 /* metrics in one EvalResult */
#define FL_WIRE_MAX_METRIC_NAME 32
#define FL_WIRE_MAX_VERSIONS 16 /* entries of Stop.supported_versions */
/* The largest FedProx coefficient (RoundStart.prox_mu, --prox-mu): with
 * mu * lr above 2 the proximal term alone diverges; 1e4 leaves room for
 * tiny rates and refuses nonsense. */
#define FL_WIRE_MAX_PROX_MU 1e4
/* The first protocol version with RoundStart.prox_mu. */
#define FL_WIRE_PROX_VERSION 3
/* The first protocol version with Welcome.input_shape. */
#define FL_WIRE_SHAPE_VERSION 4

typedef struct {
  size_t max_message; /* bytes of one encoded message */
  size_t max_tensors; /* tensors in one message */
  size_t max_values;  /* floats across all tensors of one message */
  /* 0 (default): fl_wire_decode() rejects NaN/Inf in tensors. 1: the caller
   * promises to check every tensor value itself before using any of it (the
   * round engine does, fused into its aggregation pass, which saves a full
   * pass over each update). Scalars are always checked here. */
  int caller_checks_values;
} fl_wire_limits_t;

/* Limits that admit exactly the messages a run with model `m` can produce:
 * max_values = num_params, max_tensors = its tensors, max_message =
 * 4*num_params + framing (64 KiB, plus 512 bytes a tensor for names and
 * shapes). */
void fl_wire_limits_for_model(const fl_model_spec_t *m, fl_wire_limits_t *out);

/* Decodes and validates one message. On success *out is a new envelope to
 * free with fl_wire_free(). On error returns FL_ETOOBIG, FL_EFORMAT,
 * FL_ESHAPE, FL_ENONFINITE or FL_ERANGE with a detail message, and *out is
 * NULL. Never crashes on any input. */
int fl_wire_decode(const uint8_t *buf, size_t len, const fl_wire_limits_t *lim,
                   Fedlr__Envelope **out);
void fl_wire_free(Fedlr__Envelope **env);

/* Negotiates a session's protocol version from a Join's protocol_version
 * (the highest the client speaks) and min_protocol_version (the lowest; 0
 * means the same as the highest): the highest version both sides speak,
 * this side speaking FL_WIRE_MIN_PROTOCOL_VERSION .. FL_WIRE_PROTOCOL_VERSION.
 * 0 and *chosen, or FL_EUNSUPPORTED with a detail that names both ranges
 * ("protocol version 7 is not supported: this coordinator speaks versions 1
 * to 3"). */
int fl_wire_negotiate(uint32_t max_version, uint32_t min_version, uint32_t *chosen);

/* The lowest protocol version a run of model `m` (NULL: any) admits:
 * FL_WIRE_SHAPE_VERSION when m is a CNN whose input image an older client
 * would not infer (fl_model_needs_shape: it would build another model);
 * else FL_WIRE_PROX_VERSION when its RoundStarts carry a FedProx prox_mu
 * above 0 (`prox_mu` as sent, a float: an older client would ignore the
 * field and silently train without the proximal term); else
 * FL_WIRE_MIN_PROTOCOL_VERSION. */
uint32_t fl_wire_min_run_version(float prox_mu, const fl_model_spec_t *m);

/* Whether a session of `version` (fl_wire_negotiate's choice for a Join
 * whose highest version is `client_max`) may join a run of FedProx
 * coefficient `prox_mu` (--prox-mu, sent as a float) and model `m` (NULL:
 * any): 0, or FL_EUNSUPPORTED with a detail that says why ("this run uses
 * FedProx (--prox-mu 0.01): clients must speak protocol version 3 or later;
 * this client speaks up to 2", "this run's CNN takes 3x8x8 images ..."). */
int fl_wire_check_run_version(uint32_t version, uint32_t client_max, double prox_mu,
                              const fl_model_spec_t *m);

/* The input image a Welcome gives (its input_shape; unset when it has
 * none), as fl_wire_decode() checked it. */
fl_shape_t fl_wire_welcome_shape(const Fedlr__Welcome *w);

/* Checks a metric name: 1 to FL_WIRE_MAX_METRIC_NAME bytes of
 * [A-Za-z0-9_.-] (it becomes part of a JSON key, "fed_eval_NAME"). */
int fl_wire_check_metric_name(const char *name);

/* Checks a client name: 1 to FL_WIRE_MAX_NAME bytes of valid UTF-8 (proto3
 * strings must be), without control characters (C0, DEL, C1), line or
 * paragraph separators or bidirectional overrides, so that a name printed in
 * a log or a table is what it looks like. FL_EFORMAT / FL_ETOOBIG with a
 * detail (the name itself escaped) otherwise. */
int fl_wire_check_name(const char *name);

/* Escapes untrusted bytes for a log line or an error message: printable
 * ASCII as is, a backslash as \\, anything else as \xNN; at most `max_in`
 * input bytes (then "..."). Always NUL-terminates buf (cap >= 8). Returns
 * buf. The result is ASCII, hence valid UTF-8 (it may go into a Stop). */
const char *fl_wire_escape(const void *data, size_t len, size_t max_in, char *buf, size_t cap);

/* The body kind (FEDLR__ENVELOPE__BODY_*) an encoded envelope starts with,
 * read from its first field tag without decoding anything, or
 * FEDLR__ENVELOPE__BODY__NOT_SET: to answer an undecodable Join with a
 * reason rather than silence. */
int fl_wire_peek_kind(const uint8_t *buf, size_t len);

/* The checks fl_wire_decode() applies to a RoundStart after unpacking it
 * (round >= 1, rate finite and >= 0, epochs and batch size in range, local
 * unit, strings, optimizer values finite, tensor shapes, counts within `lim`
 * and, unless lim->caller_checks_values, every value finite): the rule by
 * which a client refuses a RoundStart. A sender runs it on the message it is
 * about to send, so it never sends one that every client would refuse.
 * FL_ERANGE, FL_ENONFINITE, FL_EFORMAT, FL_ESHAPE or FL_ETOOBIG with a
 * detail. */
int fl_wire_check_round_start(const Fedlr__RoundStart *r, const fl_wire_limits_t *lim);

/* Encodes into a new malloc'd buffer (*buf, *len), caller frees. */
int fl_wire_encode(const Fedlr__Envelope *env, uint8_t **buf, size_t *len);

/* An optimizer config to and from its wire form (the same fields). */
void fl_wire_optim_to(const fl_optim_config_t *c, Fedlr__Optimizer *o);
void fl_wire_optim_from(const Fedlr__Optimizer *o, fl_optim_config_t *c);

/* A zero-copy tensor list over a parameter buffer, for encoding RoundStart,
 * Update and Evaluate messages (params given), or a Welcome's layout
 * (params NULL: names and shapes, no data). `ptrs`/`n` go into the
 * message's weights/n_weights. Valid while `params` and the model's layout
 * are; fl_wire_tensors_free() releases it (NULL-safe, zeroed tv too). */
typedef struct {
  Fedlr__Tensor *t;
  Fedlr__Tensor **ptrs;
  fl_tensor_info_t *info;
  size_t n;
} fl_wire_tensors_t;
int fl_wire_tensors_init(fl_wire_tensors_t *tv, const fl_model_spec_t *m, const float *params);
void fl_wire_tensors_free(fl_wire_tensors_t *tv);
/* Points the tensors at another parameter buffer of the same model. */
void fl_wire_tensors_point(fl_wire_tensors_t *tv, const float *params);

/* Checks that `t[0..n)` are exactly model m's tensors (names, order,
 * shapes); FL_ESHAPE with a detail otherwise. */
int fl_wire_check_tensors(Fedlr__Tensor *const *t, size_t n, const fl_model_spec_t *m);

/* Copies checked tensors into a parameter buffer (num_params floats). */
void fl_wire_tensors_copy(Fedlr__Tensor *const *t, size_t n, const fl_model_spec_t *m,
                          float *params);

#endif
