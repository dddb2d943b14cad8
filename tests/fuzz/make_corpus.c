/* make_corpus: writes the seed corpus of the fuzz harnesses with the
 * project's own encoders (fl_wire_encode, fl_safetensors_save), plus
 * hand-made malformed variants. Run by make_corpus.sh:
 *   fuzz_make_corpus OUT_DIR   -> OUT_DIR/{wire,idx,csv,config,safetensors}/seed-* */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "fl_model.h"
#include "fl_optim.h"
#include "fl_safetensors.h"
#include "fl_wire.h"

static const char *outdir;

static void put(const char *sub, const char *name, const void *buf, size_t len) {
  char p[1024];
  snprintf(p, sizeof p, "%s/%s", outdir, sub);
  mkdir(p, 0755);
  snprintf(p, sizeof p, "%s/%s/seed-%s", outdir, sub, name);
  FILE *f = fopen(p, "wb");
  if (!f || (len && fwrite(buf, 1, len, f) != len) || fclose(f) != 0) {
    fprintf(stderr, "make_corpus: cannot write %s\n", p);
    exit(1);
  }
}

static void put_str(const char *sub, const char *name, const char *s) {
  put(sub, name, s, strlen(s));
}

/* ---- wire ---- */

static void put_env(const char *name, const Fedlr__Envelope *e, size_t cut) {
  uint8_t *buf = NULL;
  size_t len = 0;
  if (fl_wire_encode(e, &buf, &len) != 0) {
    fprintf(stderr, "make_corpus: cannot encode %s\n", name);
    exit(1);
  }
  put("wire", name, buf, cut && cut < len ? cut : len);
  free(buf);
}

static void wire(const fl_model_spec_t *m, float *params) {
  Fedlr__Envelope e = FEDLR__ENVELOPE__INIT;
  fl_wire_tensors_t tv;
  fl_wire_tensors_init(&tv, m, params);

  Fedlr__Join j = FEDLR__JOIN__INIT;
  j.protocol_version = FL_WIRE_PROTOCOL_VERSION;
  j.name = "client-3";
  j.num_examples = 600;
  j.want_slot = 1;
  j.slot = 3;
  e.body_case = FEDLR__ENVELOPE__BODY_JOIN;
  e.join = &j;
  put_env("join", &e, 0);

  Fedlr__Welcome w = FEDLR__WELCOME__INIT;
  w.client_id = 3;
  w.run_id = "run-0001";
  w.model = "mlp:16";
  w.input_dim = 20;
  w.num_classes = 4;
  w.heartbeat_ms = 1000;
  w.rounds = 20;
  e.body_case = FEDLR__ENVELOPE__BODY_WELCOME;
  e.welcome = &w;
  put_env("welcome", &e, 0);

  Fedlr__Optimizer o = FEDLR__OPTIMIZER__INIT;
  fl_optim_config_t oc = {0};
  oc.kind = FL_OPT_ADAM;
  oc.beta1 = 0.9f;
  oc.beta2 = 0.999f;
  oc.eps = 1e-8f;
  fl_wire_optim_to(&oc, &o);
  Fedlr__RoundStart r = FEDLR__ROUND_START__INIT;
  r.round = 4;
  r.lr = 0.05f;
  r.local_schedule = "cosine";
  r.local_unit = FEDLR__ROUND_START__LOCAL_UNIT__STEP;
  r.optimizer = &o;
  r.local_epochs = 2;
  r.batch_size = 10;
  r.seed = 12345;
  r.model = "mlp:16";
  r.n_weights = tv.n;
  r.weights = tv.ptrs;
  e.body_case = FEDLR__ENVELOPE__BODY_ROUND_START;
  e.round_start = &r;
  put_env("round_start", &e, 0);
  put_env("round_start-truncated", &e, 700);
  /* Protocol version 3: FedProx's mu, and one above the limit (refused). */
  r.attempt = 1;
  r.prox_mu = 0.01f;
  put_env("round_start-v3-prox", &e, 0);
  r.prox_mu = 2e4f;
  put_env("round_start-prox-too-big", &e, 0);

  Fedlr__Update u = FEDLR__UPDATE__INIT;
  u.round = 4;
  u.client_id = 3;
  u.num_examples = 600;
  u.is_delta = 1;
  u.train_loss = 0.7;
  u.steps = 60;
  u.n_weights = tv.n;
  u.weights = tv.ptrs;
  e.body_case = FEDLR__ENVELOPE__BODY_UPDATE;
  e.update = &u;
  put_env("update", &e, 0);
  /* Hostile variants: a NaN value (accepted only with caller_checks_values),
   * a shape that does not match the data, and a missing tensor. */
  float saved = params[5];
  params[5] = 0.0f / 0.0f;
  put_env("update-nan", &e, 0);
  params[5] = saved;
  tv.info[0].shape[0] = 15;
  put_env("update-badshape", &e, 0);
  tv.info[0].shape[0] = (uint32_t)m->dims[1];
  u.n_weights = tv.n - 1;
  put_env("update-missing-tensor", &e, 0);
  u.n_weights = tv.n;
  u.attempt = 2;
  put_env("update-v2", &e, 0);

  /* Protocol version 2: the evaluation exchange and the Welcome's layout. */
  Fedlr__Evaluate ev = FEDLR__EVALUATE__INIT;
  ev.round = 4;
  ev.model = "mlp:16";
  ev.n_weights = tv.n;
  ev.weights = tv.ptrs;
  e.body_case = FEDLR__ENVELOPE__BODY_EVALUATE;
  e.evaluate = &ev;
  put_env("evaluate", &e, 0);
  Fedlr__Metric acc = FEDLR__METRIC__INIT, f1 = FEDLR__METRIC__INIT;
  acc.name = "accuracy";
  acc.value = 0.81;
  f1.name = "f1.macro";
  f1.value = 0.77;
  Fedlr__Metric *mets[] = {&acc, &f1};
  Fedlr__EvalResult er = FEDLR__EVAL_RESULT__INIT;
  er.round = 4;
  er.client_id = 3;
  er.num_examples = 60;
  er.loss = 0.52;
  er.n_metrics = 2;
  er.metrics = mets;
  e.body_case = FEDLR__ENVELOPE__BODY_EVAL_RESULT;
  e.eval_result = &er;
  put_env("eval_result", &e, 0);
  f1.name = "accuracy";
  put_env("eval_result-dup-metric", &e, 0);
  j.min_protocol_version = 1;
  j.num_eval_examples = 60;
  e.body_case = FEDLR__ENVELOPE__BODY_JOIN;
  e.join = &j;
  put_env("join-v2", &e, 0);
  fl_wire_tensors_point(&tv, NULL);
  w.protocol_version = 2;
  w.n_layout = tv.n;
  w.layout = tv.ptrs;
  e.body_case = FEDLR__ENVELOPE__BODY_WELCOME;
  e.welcome = &w;
  put_env("welcome-v2", &e, 0);
  /* Protocol version 4: a CNN's input image (C H W = input_dim 20). */
  uint32_t shape[3] = {1, 4, 5};
  w.protocol_version = 4;
  w.n_input_shape = 3;
  w.input_shape = shape;
  put_env("welcome-v4-shape", &e, 0);
  shape[2] = 6; /* 24 values: not input_dim */
  put_env("welcome-shape-not-input-dim", &e, 0);
  w.n_input_shape = 0;
  fl_wire_tensors_free(&tv);

  Fedlr__Heartbeat h = FEDLR__HEARTBEAT__INIT;
  h.client_id = 3;
  h.round = 4;
  e.body_case = FEDLR__ENVELOPE__BODY_HEARTBEAT;
  e.heartbeat = &h;
  put_env("heartbeat", &e, 0);

  Fedlr__Stop s = FEDLR__STOP__INIT;
  s.reason = "run finished";
  s.rejoin = 1;
  e.body_case = FEDLR__ENVELOPE__BODY_STOP;
  e.stop = &s;
  put_env("stop", &e, 0);
  uint32_t versions[] = {1, 2, 3, 4};
  s.reason = "protocol version 7 is not supported: this coordinator speaks versions 1 to 4";
  s.rejoin = 0;
  s.error = 1;
  s.n_supported_versions = 4;
  s.supported_versions = versions;
  put_env("stop-versions", &e, 0);
  s.reason = "join refused: this run uses FedProx (--prox-mu 0.01): clients must speak protocol "
             "version 3 or later; this client speaks up to 2";
  s.n_supported_versions = 2;
  s.supported_versions = versions + 2;
  put_env("stop-versions-prox", &e, 0);
  s.reason = "join refused: this run's CNN takes 3x8x8 images (--input-shape, or the IDX data's "
             "dimensions), which a client of protocol version 3 or older would build as one "
             "channel of a square: clients must speak protocol version 4 or later; this client "
             "speaks up to 3";
  s.n_supported_versions = 1;
  s.supported_versions = versions + 3;
  put_env("stop-versions-shape", &e, 0);

  put("wire", "empty", "", 0);
  /* field 4 (update), length 0x7fffffff: a length far past the buffer */
  static const uint8_t biglen[] = {0x22, 0xff, 0xff, 0xff, 0xff, 0x07, 0x08, 0x01};
  put("wire", "biglen", biglen, sizeof biglen);
}

/* ---- idx (byte 0 is the harness's mode byte, see fuzz_idx.c) ---- */

static void put_idx(const char *name, unsigned mode, const uint8_t *b, size_t len) {
  uint8_t *buf = malloc(len + 1);
  buf[0] = (uint8_t)mode;
  memcpy(buf + 1, b, len);
  put("idx", name, buf, len + 1);
  free(buf);
}

static void idx(void) {
  /* 4 images of 3x5 */
  uint8_t img[16 + 60] = {0, 0, 8, 3, 0, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0, 5};
  for (int i = 0; i < 60; i++)
    img[16 + i] = (uint8_t)(i * 37);
  put_idx("images", 0, img, sizeof img);
  put_idx("images-gz", 1, img, sizeof img);
  put_idx("images-gz-labels-gz", 5, img, sizeof img);
  put_idx("images-label-count-mismatch", 8, img, sizeof img);
  put_idx("images-truncated", 0, img, sizeof img - 7);
  /* 2 images of C x H x W = 3 x 2 x 5 (the examples' shape, NCHW) */
  uint8_t chw[20 + 60] = {0, 0, 8, 4, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 5};
  for (int i = 0; i < 60; i++)
    chw[20 + i] = (uint8_t)(i * 11);
  put_idx("images-chw", 0, chw, sizeof chw);
  /* gzip done by the file itself, not the harness: a raw input with the
   * gzip magic, and the same stream cut short */
  uint8_t gz[256];
  uLongf gzlen = sizeof gz;
  z_stream zs = {0};
  deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  zs.next_in = img;
  zs.avail_in = sizeof img;
  zs.next_out = gz;
  zs.avail_out = sizeof gz;
  deflate(&zs, Z_FINISH);
  gzlen = zs.total_out;
  deflateEnd(&zs);
  put_idx("images-selfgz", 0, gz, gzlen);
  put_idx("images-selfgz-cut", 0, gz, gzlen / 2);
  uint8_t trailing[sizeof img + 3];
  memcpy(trailing, img, sizeof img);
  memset(trailing + sizeof img, 0xab, 3);
  put_idx("images-trailing", 0, trailing, sizeof trailing);
  uint8_t bad[sizeof img];
  memcpy(bad, img, sizeof img);
  bad[2] = 0x0d; /* float elements: unsupported */
  put_idx("images-float-type", 0, bad, sizeof bad);
  memcpy(bad, img, sizeof img);
  bad[8] = 0x7f; /* huge dimension */
  put_idx("images-huge-dim", 0, bad, sizeof bad);
  /* label files against the harness's 3-image file */
  static const uint8_t lab[] = {0, 0, 8, 1, 0, 0, 0, 3, 2, 0, 9};
  put_idx("labels", 2, lab, sizeof lab);
  put_idx("labels-gz", 3, lab, sizeof lab);
  put_idx("labels-short", 2, lab, sizeof lab - 1);
  static const uint8_t lab2d[] = {0, 0, 8, 2, 0, 0, 0, 3, 0, 0, 0, 1, 2, 0, 9};
  put_idx("labels-2d", 2, lab2d, sizeof lab2d);
}

/* ---- csv ---- */

static void csv(void) {
  put_str("csv", "header", "label,a,b,c\n0,0.5,1,2\n3,-1e3,0,7.25\n1,1,1,1\n");
  put_str("csv", "noheader-crlf", "2,0.1,0.2\r\n0,0.3,0.4\r\n1,0.5,0.6\r\n");
  put_str("csv", "no-final-newline", "1,0.5\n0,2.5");
  put_str("csv", "blank-lines", "\n0,1,2\n\n1,3,4\n\n");
  put_str("csv", "ragged", "0,1,2\n1,3\n");
  put_str("csv", "negative-label", "-1,1,2\n");
  put_str("csv", "float-label", "1.5,1,2\n");
  put_str("csv", "nan", "0,nan,2\n1,inf,3\n");
  put_str("csv", "huge-label", "99999999999999999999,1\n");
  put_str("csv", "empty", "");
  put_str("csv", "header-only", "label,x\n");
  put_str("csv", "spaces", " 1 , 2.0 ,3\n0,  4,5 \n");
}

/* ---- config (make_corpus.sh copies the example configs) ---- */

static void config(void) {
  put_str("config", "flat", "model = softmax\nrounds = 3\nlr = auto:0.5\nlocal_epochs=1\n");
  put_str("config", "unknown-key", "[fedlr]\nlr0 = 0.1\n");
  put_str("config", "other-section", "[other]\nrounds = 3\n[fedlr]\nrounds = 4\n");
  put_str("config", "bad-values",
          "[fedlr]\nfraction = 1.5\nrounds = -1\nseed = 99999999999999999999999\n");
  put_str("config", "syntax", "[fedlr\nrounds\n= 3\n");
  put_str("config", "specs",
          "schedule = step:size=2,gamma=0.5\nlocal-schedule = cosine\noptimizer = adam:beta1=0.8\n"
          "partition = dirichlet:0.1\nmodel = mlp:200,200,x\nlocal-unit = step\n");
  put_str("config", "nets", "bind = tcp://*:1\nconnect = ipc:///tmp/x\nquiet = yes\nquorum = 0\n");
  put_str("config", "endpoints",
          "bind = tcp://127.0.0.1:99999\nconnect = tcp://[::1]:0\ngive-up = 3\n"
          "optimizer = sgd,wd=0.1,keep\n");
  put_str("config", "timeouts", "heartbeat = 5\nclient-timeout = 14.9\nround-timeout = 1e300\n");
  char longv[1200] = "dataset = ";
  memset(longv + 10, 'a', 1100);
  longv[1110] = '\n';
  longv[1111] = 0;
  put_str("config", "long-value", longv);
}

/* ---- safetensors ---- */

static int read_all(const char *path, uint8_t **buf, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  *buf = malloc((size_t)n);
  *len = fread(*buf, 1, (size_t)n, f);
  fclose(f);
  return 0;
}

/* The file with the first occurrence of `from` in its JSON header replaced
 * by `to` (same length, so the header length stays right). */
static void put_st_edit(const char *name, const uint8_t *b, size_t len, const char *from,
                        const char *to) {
  uint8_t *c = malloc(len);
  memcpy(c, b, len);
  size_t fl = strlen(from);
  for (size_t i = 8; i + fl <= len; i++) {
    if (memcmp(c + i, from, fl) == 0) {
      memcpy(c + i, to, fl);
      put("safetensors", name, c, len);
      break;
    }
  }
  free(c);
}

static void safetensors(const fl_model_spec_t *m, const float *params) {
  char path[1024];
  snprintf(path, sizeof path, "%s/.tmp-model.safetensors", outdir);
  static const char *const meta[] = {"round", "7", "run_id", "run-0001", NULL};
  if (fl_safetensors_save(path, m, params, meta) != 0) {
    fprintf(stderr, "make_corpus: cannot save %s\n", path);
    exit(1);
  }
  uint8_t *b = NULL;
  size_t len = 0;
  if (read_all(path, &b, &len) != 0) exit(1);
  remove(path);
  put("safetensors", "model", b, len);
  put("safetensors", "truncated", b, len - 10);
  put("safetensors", "header-only", b, 8 + (size_t)b[0] + ((size_t)b[1] << 8));
  put_st_edit("dtype-f16", b, len, "F32", "F16");
  put_st_edit("wrong-name", b, len, "layers.0.bias", "layers.9.bias");
  put_st_edit("wrong-shape", b, len, "[16,20]", "[20,16]");
  put_st_edit("offset-overlap", b, len, "\"data_offsets\":[0,", "\"data_offsets\":[4,");
  put_st_edit("bad-json", b, len, "{", "[");
  uint8_t big[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
  put("safetensors", "huge-header-len", big, sizeof big);
  static const uint8_t empty_hdr[] = {2, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
  put("safetensors", "empty-header", empty_hdr, sizeof empty_hdr);
  free(b);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  outdir = argv[1];
  mkdir(outdir, 0755);
  fl_model_spec_t m;
  if (fl_model_parse("mlp:16", 20, 4, &m) != 0) return 1;
  float *params = malloc(m.num_params * sizeof *params);
  fl_model_init(&m, params, 1);
  wire(&m, params);
  idx();
  csv();
  config();
  safetensors(&m, params);
  free(params);
  return 0;
}
