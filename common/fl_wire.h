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

#define FL_WIRE_PROTOCOL_VERSION 1
#define FL_WIRE_MAX_STRING 256 /* specs, reasons, run ids */
#define FL_WIRE_MAX_NAME 64    /* client names, bytes of UTF-8 */
/* The most examples a client may declare in a Join or claim in an Update
 * (2^32): beyond any single client's data, and with |delta| <= 2^20 what
 * keeps the coordinator's exact fixed-point sum far from overflow. */
#define FL_WIRE_MAX_EXAMPLES 4294967296ULL
#define FL_WIRE_MAX_EPOCHS 1000
#define FL_WIRE_MAX_BATCH 65536

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
 * max_values = num_params, max_message = 4*num_params + 64 KiB of framing. */
void fl_wire_limits_for_model(const fl_model_spec_t *m, fl_wire_limits_t *out);

/* Decodes and validates one message. On success *out is a new envelope to
 * free with fl_wire_free(). On error returns FL_ETOOBIG, FL_EFORMAT,
 * FL_ESHAPE, FL_ENONFINITE or FL_ERANGE with a detail message, and *out is
 * NULL. Never crashes on any input. */
int fl_wire_decode(const uint8_t *buf, size_t len, const fl_wire_limits_t *lim,
                   Fedlr__Envelope **out);
void fl_wire_free(Fedlr__Envelope **env);

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

/* A zero-copy tensor list over a parameter buffer, for encoding RoundStart
 * and Update messages. A plain value; `ptrs`/`n` go into the message's
 * weights/n_weights. Valid while `params` is. */
typedef struct {
  Fedlr__Tensor t[2 * FL_MODEL_MAX_LAYERS];
  Fedlr__Tensor *ptrs[2 * FL_MODEL_MAX_LAYERS];
  uint32_t shape[2 * FL_MODEL_MAX_LAYERS][2];
  char names[2 * FL_MODEL_MAX_LAYERS][32];
  size_t n;
} fl_wire_tensors_t;
void fl_wire_tensors_init(fl_wire_tensors_t *tv, const fl_model_spec_t *m, const float *params);

/* Checks that `t[0..n)` are exactly model m's tensors (names, order,
 * shapes); FL_ESHAPE with a detail otherwise. */
int fl_wire_check_tensors(Fedlr__Tensor *const *t, size_t n, const fl_model_spec_t *m);

/* Copies checked tensors into a parameter buffer (num_params floats). */
void fl_wire_tensors_copy(Fedlr__Tensor *const *t, size_t n, const fl_model_spec_t *m,
                          float *params);

#endif
