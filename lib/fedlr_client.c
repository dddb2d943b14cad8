/* fedlr_client: libfedlr's session object and the caller's thread (see
 * fedlr.h for the contract, fedlr_internal.h for the threads).
 *
 * fedlr_client_run() starts the I/O thread (fedlr_io.c) and then loops:
 * ask it for a job over the inproc PAIR, run the job's callback, encode the
 * answer and hand it back. The callbacks see only public types; the values
 * they get were checked by the I/O thread (tensors against the Welcome's
 * layout, optimizer, local schedule) and what they report is checked here
 * before it is encoded (counts, finiteness of the scalars, metric names).
 * Tensor values from the application are sent as they are: the
 * coordinator rejects non-finite ones (and quarantines the client). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "fedlr_internal.h"
#include "fl_error.h"

struct fedlr_client {
  fedlr__settings_t st;
  fedlr__shared_t sh;
  fedlr_welcome_fn welcome;
  fedlr_train_fn train;
  fedlr_evaluate_fn evaluate;
  void *ctx, *pair;
  fedlr__io_t *io;
  int stop_pipe[2];
  int ran;
  /* the caller's thread's view of the session */
  fedlr__model_t model;   /* from the last Welcome job */
  fedlr_tensors *weights; /* the model's values in (global, or those to evaluate) */
  fedlr_tensors *out;     /* a train callback's values out */
  uint32_t client_id;
  char quit_msg[1024]; /* why this thread ended the session */
  int quit_result;
};

/* What fedlr_round.internal_ points to: what makes the round stale. */
typedef struct {
  fedlr__shared_t *sh;
  uint64_t epoch, seq;
} round_ctx_t;

#define CLOG(c, level, ...) fedlr__log(&(c)->st, &(c)->sh, level, __VA_ARGS__)

static const char *errmsg(int rc) {
  return fl_err_msg()[0] ? fl_err_msg() : fl_strerror(rc);
}

FEDLR_API void fedlr_config_init(fedlr_config *c) {
  if (!c) return;
  memset(c, 0, sizeof *c);
  c->handshake_timeout = 5.0;
  c->give_up = 300.0;
  c->log_level = FEDLR_LOG_ROUND;
}

/* ---- configuration ---- */

/* The CurveZMQ keys of c into st: none, or all three. */
static int copy_keys(const fedlr_config *c, fedlr__settings_t *st) {
  if (!c->curve_public && !c->curve_secret && !c->curve_secret_file && !c->server_key) return 0;
  int rc;
  fl_keypair_t kp;
  memset(&kp, 0, sizeof kp);
  if (c->curve_secret_file) {
    if ((rc = fl_keys_load_secret(c->curve_secret_file, &kp))) return rc;
  } else if (c->curve_public && c->curve_secret) {
    if (fl_keys_decode(c->curve_public, NULL) || fl_keys_decode(c->curve_secret, NULL))
      return fl_err_set(FL_EINVAL, "curve_public/curve_secret: not 40-character Z85 keys");
    snprintf(kp.public_z85, sizeof kp.public_z85, "%s", c->curve_public);
    snprintf(kp.secret_z85, sizeof kp.secret_z85, "%s", c->curve_secret);
  } else {
    return fl_err_set(FL_EINVAL, "CurveZMQ needs this client's key pair (curve_public and "
                                 "curve_secret, or curve_secret_file) and server_key");
  }
  if (!c->server_key)
    rc = fl_err_set(FL_EINVAL, "CurveZMQ needs server_key, the coordinator's");
  else
    rc = fl_keys_load_public(c->server_key, st->server_key);
  if (!rc) {
    memcpy(st->curve_public, kp.public_z85, sizeof st->curve_public);
    memcpy(st->curve_secret, kp.secret_z85, sizeof st->curve_secret);
    st->curve = 1;
  }
  explicit_bzero(&kp, sizeof kp);
  return rc;
}

static int check_config(const fedlr_config *c) {
  if (!c || !c->endpoint || !c->name)
    return fl_err_set(FL_EINVAL, "fedlr_client_new: the config needs an endpoint and a name");
  if (!c->train) return fl_err_set(FL_EINVAL, "fedlr_client_new: no train callback");
  if (fl_wire_check_name(c->name) != 0) return fl_err_set(FL_EINVAL, "--name: %s", fl_err_msg());
  if (strlen(c->endpoint) >= 256)
    return fl_err_set(FL_EINVAL, "--connect: endpoint longer than 255 bytes");
  if (c->num_examples < 1 || c->num_examples > FL_WIRE_MAX_EXAMPLES)
    return fl_err_set(FL_EINVAL, "num_examples %llu: must be 1 .. 2^32",
                      (unsigned long long)c->num_examples);
  if (c->num_eval_examples > FL_WIRE_MAX_EXAMPLES)
    return fl_err_set(FL_EINVAL, "num_eval_examples %llu: must be 0 .. 2^32",
                      (unsigned long long)c->num_eval_examples);
  if (c->num_eval_examples > 0 && !c->evaluate)
    return fl_err_set(FL_EINVAL, "num_eval_examples %llu without an evaluate callback",
                      (unsigned long long)c->num_eval_examples);
  if (!(c->give_up >= 0 && isfinite(c->give_up)))
    return fl_err_set(FL_EINVAL, "give_up %g: must be a finite number of seconds >= 0 (0 = never)",
                      c->give_up);
  if (!(c->handshake_timeout >= 0 && c->handshake_timeout <= 3600))
    return fl_err_set(FL_EINVAL, "handshake_timeout %g: must be 0 .. 3600 s", c->handshake_timeout);
  if (c->layout && fedlr_tensors_count(c->layout) == 0)
    return fl_err_set(FL_EINVAL, "layout: an expected layout with no tensors");
  return 0;
}

static int copy_settings(const fedlr_config *c, fedlr__settings_t *st) {
  snprintf(st->endpoint, sizeof st->endpoint, "%s", c->endpoint);
  snprintf(st->name, sizeof st->name, "%s", c->name);
  st->want_slot = c->want_slot;
  st->slot = c->slot;
  st->num_examples = c->num_examples;
  st->num_eval_examples = c->num_eval_examples;
  st->handshake_ms = c->handshake_timeout > 0 ? (int)(c->handshake_timeout * 1000.0) : 0;
  st->give_up = c->give_up;
  st->log = c->log;
  st->log_level = c->log_level;
  st->user = c->user;
  if (c->layout) {
    fedlr_tensors *copy = fedlr__tensors_from_layout(c->layout->layout, 0);
    if (!copy) return fl_err_set(FL_ENOMEM, "out of memory");
    st->layout = copy->layout; /* keep the layout, drop the wrapper */
    copy->layout = NULL;
    fedlr_tensors_destroy(&copy);
  }
  return copy_keys(c, st);
}

FEDLR_API fedlr_client *fedlr_client_new(const fedlr_config *cfg, int *err) {
  fedlr_client *c = NULL;
  int rc = check_config(cfg);
  if (rc) goto out;
  if (!(c = calloc(1, sizeof *c))) {
    rc = fl_err_set(FL_ENOMEM, "out of memory");
    goto out;
  }
  c->stop_pipe[0] = c->stop_pipe[1] = -1;
  pthread_mutex_init(&c->sh.log_mu, NULL);
  c->welcome = cfg->welcome;
  c->train = cfg->train;
  c->evaluate = cfg->evaluate;
  if ((rc = copy_settings(cfg, &c->st))) goto out;
  if (pipe2(c->stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    rc = fl_err_set(FL_EIO, "pipe: %s", strerror(errno));
    goto out;
  }
  if (!(c->ctx = zmq_ctx_new())) {
    rc = fl_err_set(FL_ENOMEM, "cannot create a ZeroMQ context: %s", zmq_strerror(errno));
    goto out;
  }
  char ep[64];
  snprintf(ep, sizeof ep, "inproc://fedlr-jobs-%p", (void *)c);
  if (!(c->io = fedlr__io_new(&c->st, &c->sh, c->ctx, ep, c->stop_pipe[0], &rc))) goto out;
  c->pair = zmq_socket(c->ctx, ZMQ_PAIR);
  if (!c->pair || zmq_setsockopt(c->pair, ZMQ_LINGER, &(int){0}, sizeof(int)) ||
      zmq_connect(c->pair, ep) != 0)
    rc = fl_err_set(FL_EIO, "cannot connect to the I/O thread: %s", zmq_strerror(errno));
out:
  if (rc) fedlr_client_destroy(&c);
  if (err) *err = rc;
  return c;
}

FEDLR_API void fedlr_client_stop(fedlr_client *c) {
  if (!c || c->stop_pipe[1] < 0) return;
  int saved = errno;
  ssize_t r = write(c->stop_pipe[1], "s", 1); /* full pipe: a stop is pending anyway */
  (void)r;
  errno = saved;
}

FEDLR_API uint32_t fedlr_client_id(const fedlr_client *c) {
  return c ? c->client_id : 0;
}

FEDLR_API void fedlr_client_destroy(fedlr_client **cp) {
  if (!cp || !*cp) return;
  fedlr_client *c = *cp;
  fedlr__io_destroy(&c->io);
  if (c->pair) zmq_close(c->pair);
  if (c->ctx) zmq_ctx_term(c->ctx);
  for (int i = 0; i < 2; i++)
    if (c->stop_pipe[i] >= 0) close(c->stop_pipe[i]);
  explicit_bzero(c->st.curve_secret, sizeof c->st.curve_secret);
  fl_layout_destroy(&c->st.layout);
  fedlr__model_clear(&c->model);
  fedlr_tensors_destroy(&c->weights);
  fedlr_tensors_destroy(&c->out);
  pthread_mutex_destroy(&c->sh.log_mu);
  free(c);
  *cp = NULL;
}

/* ---- rounds ---- */

FEDLR_API int fedlr_round_cancelled(const fedlr_round *r) {
  const round_ctx_t *x = r ? r->internal_ : NULL;
  if (!x) return 0;
  return atomic_load(&x->sh->stopping) || atomic_load(&x->sh->epoch) != x->epoch ||
         atomic_load(&x->sh->seq) != x->seq;
}

/* Sends m to the I/O thread (ownership of m->buf goes with it). */
static int to_io(fedlr_client *c, const fedlr__run_msg_t *m) {
  atomic_fetch_add_explicit(&c->sh.to_io, 1, memory_order_release);
  return zmq_send(c->pair, m, sizeof *m, 0) == (int)sizeof *m ? 0 : -1;
}

/* Ends the session from this thread (a refused Welcome, an internal error). */
static void quit(fedlr_client *c, int result) {
  snprintf(c->quit_msg, sizeof c->quit_msg, "%s", fl_err_msg());
  c->quit_result = result;
  fedlr__run_msg_t m = {.kind = RUN_QUIT};
  to_io(c, &m);
}

/* Hands an encoded answer to the I/O thread (which then owns buf). */
static void send_result(fedlr_client *c, const fedlr__job_t *j, uint32_t round, int is_update,
                        const Fedlr__Envelope *env) {
  fedlr__run_msg_t m = {
      .kind = RUN_SEND, .epoch = j->epoch, .is_update = is_update, .round = round};
  int rc = fl_wire_encode(env, &m.buf, &m.len);
  if (rc) {
    CLOG(c, FEDLR_LOG_WARN, "round %u: cannot encode the answer: %s", round, errmsg(rc));
    return;
  }
  if (to_io(c, &m)) free(m.buf);
}

static void on_welcome(fedlr_client *c, fedlr__job_t *j) {
  const Fedlr__Welcome *w = j->env->welcome;
  fedlr__model_t m;
  int rc = fedlr__model_from_welcome(w, &m);
  if (rc) { /* the I/O thread took this model: cannot happen */
    quit(c, FEDLR_REFUSED);
    return;
  }
  if (!c->weights || !fl_layout_equal(c->weights->layout, m.layout)) {
    fedlr_tensors_destroy(&c->weights);
    fedlr_tensors_destroy(&c->out);
    c->weights = fedlr__tensors_from_layout(m.layout, 1);
    c->out = fedlr__tensors_from_layout(m.layout, 1);
    if (!c->weights || !c->out) {
      fedlr__model_clear(&m);
      fl_err_set(FL_ENOMEM, "out of memory for model '%s' (%zu parameters)", w->model,
                 m.spec.num_params);
      quit(c, FL_ENOMEM);
      return;
    }
  }
  fedlr__model_clear(&c->model);
  c->model = m;
  c->client_id = w->client_id;
  fedlr_tensors layout = {c->model.layout, NULL, 0};
  fl_shape_t shape = fl_wire_welcome_shape(w);
  fedlr_welcome info = {w->client_id,   w->run_id,
                        w->model,       w->input_dim,
                        w->num_classes, w->heartbeat_ms,
                        w->rounds,      w->protocol_version,
                        &layout,        {(uint32_t)shape.c, (uint32_t)shape.h, (uint32_t)shape.w}};
  fl_err_clear();
  if (c->welcome && (rc = c->welcome(c->st.user, &info))) {
    if (!fl_err_msg()[0]) fl_err_set(rc, "the welcome callback refused: %s", fl_strerror(rc));
    quit(c, FEDLR_REFUSED);
    return;
  }
  CLOG(c, FEDLR_LOG_INFO,
       "joined run %s as client %u: model %s (%zu parameters), %u rounds, heartbeat %u ms",
       w->run_id[0] ? w->run_id : "(unnamed)", w->client_id, w->model, c->model.spec.num_params,
       w->rounds, w->heartbeat_ms);
}

static void round_info(const Fedlr__RoundStart *rs, const fedlr_schedule *local,
                       const round_ctx_t *x, fedlr_round *r) {
  const Fedlr__Optimizer *o = rs->optimizer;
  *r = (fedlr_round){
      .round = rs->round,
      .attempt = rs->attempt,
      .lr = rs->lr,
      .local_epochs = rs->local_epochs,
      .batch_size = rs->batch_size,
      .seed = rs->seed,
      .local_unit = rs->local_unit == FEDLR__ROUND_START__LOCAL_UNIT__STEP ? FEDLR_UNIT_STEP
                                                                           : FEDLR_UNIT_EPOCH,
      .local_schedule = rs->local_schedule,
      .local = local,
      .model = rs->model,
      .internal_ = x,
      .prox_mu = rs->prox_mu,
  };
  if (o)
    r->optimizer = (fedlr_optimizer){(fedlr_optimizer_kind)o->kind,
                                     o->momentum,
                                     o->beta1,
                                     o->beta2,
                                     o->eps,
                                     o->alpha,
                                     o->weight_decay,
                                     o->keep_state};
}

/* The train callback's report, checked. */
static int check_train_result(const fedlr_client *c, const fedlr_train_result *res) {
  if (res->num_examples < 1 || res->num_examples > c->st.num_examples)
    return fl_err_set(FL_ERANGE, "num_examples %llu: must be 1 .. %llu (the Join's)",
                      (unsigned long long)res->num_examples,
                      (unsigned long long)c->st.num_examples);
  if (!isfinite(res->train_loss))
    return fl_err_set(FL_ENONFINITE, "train_loss %g is not finite", res->train_loss);
  return 0;
}

static void on_round(fedlr_client *c, fedlr__job_t *j) {
  const Fedlr__RoundStart *rs = j->env->round_start;
  fedlr_schedule local = {j->local};
  round_ctx_t x = {&c->sh, j->epoch, j->seq};
  fedlr_round r;
  round_info(rs, &local, &x, &r);
  if (fedlr_round_cancelled(&r)) return; /* replaced or rejoined while it waited */
  float *g = fedlr_tensors_values_mut(c->weights);
  fl_wire_tensors_copy(rs->weights, rs->n_weights, &c->model.spec, g);
  memcpy(c->out->values, g, c->model.spec.num_params * sizeof *g);
  fedlr_train_result res = {0, c->st.num_examples, 0.0, 0};
  double t0 = fedlr__now();
  fl_err_clear();
  int rc = c->train(c->st.user, &r, c->weights, c->out, &res);
  double dt = fedlr__now() - t0;
  if (fedlr_round_cancelled(&r)) {
    if (!atomic_load(&c->sh.stopping))
      CLOG(c, FEDLR_LOG_WARN, "round %u: no update sent: the round was replaced or rejoined",
           rs->round);
    return;
  }
  if (!rc) rc = check_train_result(c, &res);
  if (rc) {
    CLOG(c, FEDLR_LOG_WARN, "round %u: no update sent: %s", rs->round, errmsg(rc));
    return;
  }
  CLOG(c, FEDLR_LOG_ROUND, "round %u trained in %.2f s (loss %.4f, %llu steps, %llu examples)",
       rs->round, dt, res.train_loss, (unsigned long long)res.steps,
       (unsigned long long)res.num_examples);
  fl_wire_tensors_t tv;
  if ((rc = fl_wire_tensors_init(&tv, &c->model.spec, c->out->values))) {
    CLOG(c, FEDLR_LOG_WARN, "round %u: no update sent: %s", rs->round, errmsg(rc));
    return;
  }
  Fedlr__Update up = FEDLR__UPDATE__INIT;
  up.round = rs->round;
  up.client_id = c->client_id;
  up.num_examples = res.num_examples;
  up.is_delta = res.is_delta != 0;
  up.n_weights = tv.n;
  up.weights = tv.ptrs;
  up.train_loss = res.train_loss;
  up.steps = res.steps;
  up.attempt = rs->attempt;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_UPDATE;
  env.update = &up;
  send_result(c, j, rs->round, 1, &env);
  fl_wire_tensors_free(&tv);
}

static int check_eval_result(const fedlr_client *c, const fedlr_eval_result *res) {
  if (res->num_examples < 1 || res->num_examples > c->st.num_eval_examples)
    return fl_err_set(FL_ERANGE, "num_examples %llu: must be 1 .. %llu (num_eval_examples)",
                      (unsigned long long)res->num_examples,
                      (unsigned long long)c->st.num_eval_examples);
  if (!isfinite(res->loss)) return fl_err_set(FL_ENONFINITE, "loss %g is not finite", res->loss);
  if (res->num_metrics > FEDLR_MAX_METRICS)
    return fl_err_set(FL_ETOOBIG, "%zu metrics, at most %d", res->num_metrics, FEDLR_MAX_METRICS);
  fedlr_eval_result check = {0};
  for (size_t i = 0; i < res->num_metrics; i++) {
    char name[FEDLR_MAX_METRIC_NAME + 1];
    snprintf(name, sizeof name, "%.*s", FEDLR_MAX_METRIC_NAME, res->metrics[i].name);
    int rc = fedlr_eval_add_metric(&check, name, res->metrics[i].value);
    if (rc) return rc;
  }
  return 0;
}

/* "loss 0.4123, accuracy 0.8512, 120 examples" */
static void eval_summary(const fedlr_eval_result *res, char *buf, size_t cap) {
  size_t n = (size_t)snprintf(buf, cap, "loss %.4f", res->loss);
  for (size_t i = 0; i < res->num_metrics && n < cap; i++)
    n += (size_t)snprintf(buf + n, cap - n, ", %s %.4f", res->metrics[i].name,
                          res->metrics[i].value);
  if (n < cap) snprintf(buf + n, cap - n, ", %llu examples", (unsigned long long)res->num_examples);
}

static void on_eval(fedlr_client *c, fedlr__job_t *j) {
  const Fedlr__Evaluate *ev = j->env->evaluate;
  if (j->epoch != atomic_load(&c->sh.epoch)) return;
  fl_wire_tensors_copy(ev->weights, ev->n_weights, &c->model.spec, c->weights->values);
  fedlr_eval_result res;
  memset(&res, 0, sizeof res);
  res.num_examples = c->st.num_eval_examples;
  double t0 = fedlr__now();
  fl_err_clear();
  int rc = c->evaluate(c->st.user, ev->round, c->weights, &res);
  double dt = fedlr__now() - t0;
  if (!rc) rc = check_eval_result(c, &res);
  if (rc) {
    CLOG(c, FEDLR_LOG_WARN, "round %u: no evaluation sent: %s", ev->round, errmsg(rc));
    return;
  }
  char sum[1024];
  eval_summary(&res, sum, sizeof sum);
  CLOG(c, FEDLR_LOG_ROUND, "round %u evaluated in %.2f s (%s)", ev->round, dt, sum);
  Fedlr__Metric mets[FEDLR_MAX_METRICS], *ptrs[FEDLR_MAX_METRICS];
  for (size_t i = 0; i < res.num_metrics; i++) {
    fedlr__metric__init(&mets[i]);
    mets[i].name = res.metrics[i].name;
    mets[i].value = res.metrics[i].value;
    ptrs[i] = &mets[i];
  }
  Fedlr__EvalResult er = FEDLR__EVAL_RESULT__INIT;
  er.round = ev->round;
  er.client_id = c->client_id;
  er.num_examples = res.num_examples;
  er.loss = res.loss;
  er.n_metrics = res.num_metrics;
  er.metrics = ptrs;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_EVAL_RESULT;
  env.eval_result = &er;
  send_result(c, j, ev->round, 0, &env);
}

/* Asks the I/O thread for the next job and waits for it. */
static int next_job(fedlr_client *c, fedlr__job_t *j) {
  fedlr__run_msg_t m = {.kind = RUN_NEXT};
  if (to_io(c, &m)) return -1;
  for (;;) {
    int n = zmq_recv(c->pair, j, sizeof *j, 0);
    if (n == (int)sizeof *j) {
      atomic_load_explicit(&c->sh.to_run, memory_order_acquire);
      return 0;
    }
    if (n < 0 && errno == EINTR) continue;
    return -1;
  }
}

static void *io_thread(void *arg) {
  return fedlr__io_main(arg);
}

FEDLR_API int fedlr_client_run(fedlr_client *c) {
  if (!c) return fl_err_set(FL_EINVAL, "fedlr_client_run: no client");
  if (c->ran) return fl_err_set(FL_ESTATE, "fedlr_client_run: a client runs once");
  c->ran = 1;
  CLOG(c, FEDLR_LOG_INFO, "connecting to %s with %llu examples", c->st.endpoint,
       (unsigned long long)c->st.num_examples);
  pthread_t tid;
  if (pthread_create(&tid, NULL, io_thread, c->io) != 0)
    return fl_err_set(FL_ENOMEM, "cannot start the I/O thread");
  int result = FL_EIO;
  fedlr__job_t j;
  while (next_job(c, &j) == 0) {
    if (j.kind == IO_JOB_END) {
      result = j.result;
      break;
    }
    if (!c->quit_result) {
      if (j.kind == IO_JOB_WELCOME) on_welcome(c, &j);
      if (j.kind == IO_JOB_ROUND) on_round(c, &j);
      if (j.kind == IO_JOB_EVAL) on_eval(c, &j);
    }
    fl_wire_free(&j.env);
  }
  pthread_join(tid, NULL);
  if (c->quit_result) return fl_err_set(c->quit_result, "%s", c->quit_msg);
  fl_err_clear();
  if (fedlr__io_end_msg(c->io)[0])
    fl_err_set(result < 0 ? result : FL_EPROTO, "%s", fedlr__io_end_msg(c->io));
  return result;
}
