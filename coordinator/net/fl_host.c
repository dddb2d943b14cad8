/* fl_host: see fl_host.h. */
#include "fl_host.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>
#include <zmq.h>

#include "fl_error.h"
#include "fl_file.h"
#include "fl_host_int.h"
#include "fl_rng.h"

/* ---- the run's transport ---- */

static void tp_round_opened(void *ctx) {
  fl_host_t *h = ctx;
  h->queue_head = h->queue_len = h->in_flight = 0;
  for (size_t i = 0; i < h->cap_peers; i++)
    h->peers[i].awaiting_ack = 0;
}

static void tp_send_round_start(void *ctx, uint32_t id) {
  fl_host_t *h = ctx;
  if (id >= h->cap_peers) return;
  if (h->queue_len == h->queue_cap) {
    size_t cap = h->queue_cap ? 2 * h->queue_cap : 64;
    uint32_t *q = realloc(h->queue, cap * sizeof *q);
    if (!q) {
      fl_host__log("out of memory queueing round starts: client %u misses round %u", id,
                   fl_engine_round(h->engine));
      return;
    }
    h->queue = q;
    h->queue_cap = cap;
  }
  h->queue[h->queue_len++] = id;
  fl_host__pump_round_starts(h);
}

static void free_eval(void *data, void *hint) {
  (void)hint;
  free(data);
}

/* Evaluate messages are the same for every evaluator of a round: encoded
 * once, and each send is a reference-counted copy (zmq_msg_copy shares
 * the buffer), not a copy of the model per client. */
static void tp_send_evaluate(void *ctx, uint32_t id) {
  fl_host_t *h = ctx;
  if (id >= h->cap_peers || !h->peers[id].alive || !h->peers[id].rid_len) return;
  peer_t *p = &h->peers[id];
  uint32_t round = fl_engine_round(h->engine);
  if (!h->have_eval_msg || h->eval_msg_round != round) {
    uint8_t *buf;
    size_t len;
    if (h->have_eval_msg) zmq_msg_close(&h->eval_msg);
    h->have_eval_msg = 0;
    if (fl_engine_encode_evaluate(h->engine, id, &buf, &len) != 0) {
      fl_host__log("cannot encode the evaluation of round %u: %s", round, fl_err_msg());
      return;
    }
    if (zmq_msg_init_data(&h->eval_msg, buf, len, free_eval, NULL) != 0) {
      free(buf);
      return;
    }
    h->have_eval_msg = 1;
    h->eval_msg_round = round;
  }
  zmq_msg_t m;
  zmq_msg_init(&m);
  if (zmq_msg_copy(&m, &h->eval_msg) != 0) {
    zmq_msg_close(&m);
    return;
  }
  size_t len = zmq_msg_size(&m);
  if (zmq_send(h->sock, p->rid, p->rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_msg_send(&m, h->sock, ZMQ_DONTWAIT) < 0) {
    /* It misses the evaluation: the deadline deals with it. */
    zmq_msg_close(&m);
    fl_ratelog_count(h->rl, FL_ADMIT_R_SEND_FAILED, fl_clock_now());
    return;
  }
  fl_run_account(h->run, len, 0);
}

static void on_deadline(uv_timer_t *t) {
  fl_host_t *h = t->data;
  fl_run_tick(h->run);
}

static void tp_wake_at(void *ctx, double at) {
  fl_host_t *h = ctx;
  double dt = at - fl_clock_now();
  uv_timer_start(&h->deadline, on_deadline, dt > 0 ? (uint64_t)ceil(dt * 1000.0) : 0, 0);
}

static void tp_log(void *ctx, int reason, const char *line) {
  fl_host_t *h = ctx;
  if (reason == FL_RUN_LOG_PEER)
    plog(h, FL_ADMIT_R_REJECTED, "%s", line);
  else
    fl_host__log("%s", line);
}

static void check_stopped(fl_host_t *h, double now);

/* The run is over: tell every client, then wait (check_stopped) until they
 * have heard it. */
static void tp_finished(void *ctx, const char *why, int status) {
  fl_host_t *h = ctx;
  (void)status;
  double now = fl_clock_now();
  uv_timer_stop(&h->deadline);
  Fedlr__Stop st = FEDLR__STOP__INIT;
  st.reason = (char *)why;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_STOP;
  env.stop = &st;
  if (fl_wire_encode(&env, &h->final_stop, &h->final_stop_len) != 0) {
    fl_host__log("cannot encode the final Stop: %s", fl_err_msg());
    h->final_stop = NULL;
  }
  for (size_t i = 0; i < h->cap_peers; i++)
    if (h->peers[i].rid_len)
      fl_host__send_copy_quiet(h, h->peers[i].rid, h->peers[i].rid_len, h->final_stop,
                               h->final_stop_len);
  fl_admit_set_ending(h->admit);
  fl_ratelog_tick(h->rl, now, 1);
  char summary[512];
  fl_admit_summary(h->admit, summary, sizeof summary);
  if (summary[0]) fl_host__log("%s", summary);
  h->stopping = 1;
  h->stop_t0 = h->stop_quiet_since = now;
  h->stop_deadline = now + fmax(STOP_WAIT_MIN, 6.0 * h->cfg->heartbeat);
  check_stopped(h, now);
}

/* ZMQ_EVENTS of socket s (ZMQ_POLLIN, ZMQ_POLLOUT bits), -1 if it cannot be
 * read. */
static int sock_events(void *s) {
  int events = 0;
  size_t sz = sizeof events;
  return zmq_getsockopt(s, ZMQ_EVENTS, &events, &sz) == 0 ? events : -1;
}

/* Receives up to DRAIN_MAX messages. ZMQ_FD is edge-triggered: unless it
 * read until ZMQ_EVENTS no longer reports POLLIN, the loop must come back
 * by itself (returns 1: the idle handle does that). */
static int drain(fl_host_t *h) {
  static uint8_t rid[RID_MAX];
  for (int handled = 0;; handled++) {
    if (h->closed) return 0;
    int events = sock_events(h->sock);
    if (events < 0 || !(events & ZMQ_POLLIN)) return 0;
    if (handled >= DRAIN_MAX) return 1;
    int n = zmq_recv(h->sock, rid, sizeof rid, ZMQ_DONTWAIT);
    if (n < 0) return 0;
    size_t rid_len = (size_t)n > sizeof rid ? sizeof rid : (size_t)n;
    int more = 0;
    size_t sz = sizeof more;
    zmq_getsockopt(h->sock, ZMQ_RCVMORE, &more, &sz);
    if (!more) continue;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, h->sock, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&msg);
      continue;
    }
    zmq_getsockopt(h->sock, ZMQ_RCVMORE, &more, &sz);
    if (more) {
      /* Multipart: not ours. Drop every frame of it. */
      size_t frames = 1, bytes = zmq_msg_size(&msg);
      while (more) {
        if (zmq_msg_recv(&msg, h->sock, ZMQ_DONTWAIT) < 0) break;
        frames++;
        bytes += zmq_msg_size(&msg);
        zmq_getsockopt(h->sock, ZMQ_RCVMORE, &more, &sz);
      }
      char hex[2 * RID_MAX + 1];
      plog(h, FL_ADMIT_R_MULTIPART,
           "dropped a %zu-frame message (%zu bytes) from %s: messages are single-frame", frames,
           bytes, fl_host__rid_hex(rid, rid_len, hex, sizeof hex));
      fl_run_account(h->run, 0, bytes);
    } else {
      /* The authenticated name and the connection's descriptor travel
       * with every frame. */
      const char *uid = h->curve ? zmq_msg_gets(&msg, "User-Id") : NULL;
      int fd = zmq_msg_get(&msg, ZMQ_SRCFD);
      fl_host__handle_message(h, rid, rid_len, fd, uid, zmq_msg_data(&msg), zmq_msg_size(&msg));
    }
    zmq_msg_close(&msg);
  }
}

/* ---- the loop ---- */

static void on_close(uv_handle_t *handle) {
  (void)handle;
}

/* Closes every handle of the loop, so that uv_run() returns. */
static void end_loop(fl_host_t *h) {
  if (h->closed) return;
  h->closed = 1;
  uv_idle_stop(&h->more);
  uv_timer_stop(&h->tick);
  uv_timer_stop(&h->deadline);
  uv_signal_stop(&h->sigint);
  uv_signal_stop(&h->sigterm);
  uv_poll_stop(&h->poll);
  uv_poll_stop(&h->mon_poll);
  if (fl_admit_zap_socket(h->admit)) {
    uv_poll_stop(&h->zap_poll);
    uv_close((uv_handle_t *)&h->zap_poll, on_close);
  }
  uv_handle_t *handles[] = {(uv_handle_t *)&h->more,     (uv_handle_t *)&h->tick,
                            (uv_handle_t *)&h->deadline, (uv_handle_t *)&h->sigint,
                            (uv_handle_t *)&h->sigterm,  (uv_handle_t *)&h->poll,
                            (uv_handle_t *)&h->mon_poll};
  for (size_t i = 0; i < sizeof handles / sizeof handles[0]; i++)
    uv_close(handles[i], on_close);
}

/* After the run ended, the coordinator stays until every peer has heard it
 * and left: no connection has been open for STOP_GRACE_S (a client that
 * missed the Stop because it was replacing its connection comes back on a
 * new one within that time, and every message is answered with the Stop
 * meanwhile: handle_message); or until the wait is up (a peer that keeps a
 * connection open cannot keep the coordinator). Then the loop ends. */
static void check_stopped(fl_host_t *h, double now) {
  size_t open = fl_conns_open(fl_admit_conns(h->admit));
  if (open) h->stop_quiet_since = now;
  if (!open && now - h->stop_quiet_since >= STOP_GRACE_S) {
    end_loop(h);
  } else if (now >= h->stop_deadline) {
    if (open)
      fl_host__log("%zu connection(s) still open %.0f s after the end of the run: exiting anyway",
                   open, now - h->stop_t0);
    end_loop(h);
  }
}

/* The ZAP handler failed: without it libzmq would admit any client. The
 * run ends at once, without waiting for the clients. */
static void fatal(fl_host_t *h) {
  char msg[600];
  snprintf(msg, sizeof msg, "fatal: %s; stopping, since without it libzmq would admit any client",
           fl_err_msg());
  fl_run_stop(h->run, msg, FL_RUN_FAILED);
  end_loop(h);
}

static void on_more(uv_idle_t *handle);

/* Serves admission (ZAP, monitor) and the ROUTER, each up to its bound;
 * while any stopped at its bound, the idle handle brings the loop back
 * (without blocking, but after the timers and other I/O had their turn). */
static void pump(fl_host_t *h) {
  if (h->closed) return;
  int more = fl_admit_pump(h->admit, fl_clock_now());
  if (more < 0) {
    fatal(h);
    return;
  }
  more |= drain(h);
  if (h->closed) return;
  if (more)
    uv_idle_start(&h->more, on_more);
  else
    uv_idle_stop(&h->more);
}

static void on_more(uv_idle_t *handle) {
  pump(handle->data);
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  (void)status;
  (void)events;
  pump(handle->data);
}

static void on_tick(uv_timer_t *t) {
  fl_host_t *h = t->data;
  double now = fl_clock_now();
  for (size_t i = 0; i < h->cap_peers && !h->stopping; i++) {
    peer_t *p = &h->peers[i];
    if (p->alive && now - p->last_seen > h->cfg->client_timeout) {
      char label[300];
      p->alive = 0;
      fl_host__release_ack(h, (uint32_t)i);
      plog(h, FL_ADMIT_R_PEER_STATE, "client %s is dead: silent for %.1f s",
           fl_host__label(h, (uint32_t)i, label, sizeof label), now - p->last_seen);
      fl_host__tell_run(h, (uint32_t)i);
    }
  }
  for (size_t i = 0; i < h->cap_peers; i++)
    if (h->peers[i].awaiting_ack && now - h->peers[i].sent_at > ACK_TIMEOUT_S)
      fl_host__release_ack(h,
                           (uint32_t)i); /* an old client, or a lost ack: do not stall the window */
  fl_run_tick(h->run);
  fl_admit_tick(h->admit, now);
  fl_ratelog_tick(h->rl, now, 0);
  if (h->stopping) check_stopped(h, now);
  pump(h); /* sends above may have changed ZMQ_EVENTS */
}

static void on_signal(uv_signal_t *s, int signum) {
  fl_host_t *h = s->data;
  if (fl_run_done(h->run)) { /* a second signal: no more waiting for the clients */
    end_loop(h);
    return;
  }
  char why[FL_PATH_MAX + 128];
  snprintf(why, sizeof why, "interrupted by signal %d after %u rounds; continue with --resume %s",
           signum, fl_engine_rounds_done(h->engine), h->cfg->out[0] ? h->cfg->out : "DIR");
  fl_run_stop(h->run, why, FL_RUN_INTERRUPTED);
}

/* A connection closed: a client whose connection it was holds none now;
 * the end of the run may be delivered. */
static void on_conn_closed(void *ctx, int fd) {
  fl_host_t *h = ctx;
  for (size_t i = 0; i < h->cap_peers; i++)
    if (h->peers[i].fd == fd) h->peers[i].fd = -1;
  if (h->stopping) check_stopped(h, fl_clock_now());
}

/* ---- setup ---- */

/* The most connections this process can hold: --max-connections (or 2 x
 * --clients + 64), within the open-file limit, which is first raised to its
 * hard maximum: our bound must bite before the kernel's does. */
static size_t connection_limit(const fl_config_t *cfg) {
  size_t want = cfg->max_connections ? cfg->max_connections : 2 * (size_t)cfg->clients + 64;
  size_t fds = fl_file_raise_open_limit();
  size_t room = fds > 2 * FD_RESERVE ? fds - FD_RESERVE : fds / 2;
  if (want > room) {
    fl_host__log("--max-connections %zu exceeds what the open-file limit (ulimit -n %zu) allows: "
                 "using %zu",
                 want, fds, room);
    want = room;
  }
  return want;
}

/* The ROUTER, watched by admission, with CURVE when keys are given (kp is
 * wiped). */
static int setup_socket(fl_host_t *h, fl_keypair_t *kp) {
  int64_t maxmsg = (int64_t)fl_engine_limits(h->engine)->max_message;
  int linger = 2000, mandatory = 1, rc;
  int hs_ivl = (int)(h->cfg->handshake_timeout * 1000.0);
  h->sock = zmq_socket(h->zctx, ZMQ_ROUTER);
  if (!h->sock) return fl_err_set(FL_ENOMEM, "zmq_socket: %s", zmq_strerror(errno));
  if (zmq_setsockopt(h->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
      zmq_setsockopt(h->sock, ZMQ_LINGER, &linger, sizeof linger) ||
      zmq_setsockopt(h->sock, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory) ||
      zmq_setsockopt(h->sock, ZMQ_HANDSHAKE_IVL, &hs_ivl, sizeof hs_ivl))
    return fl_err_set(FL_EINVAL, "zmq_setsockopt: %s", zmq_strerror(errno));
  if (h->curve) {
    uint8_t secret[FL_KEY_BYTES];
    int one = 1;
    rc = fl_keys_decode(kp->secret_z85, secret);
    if (!rc && (zmq_setsockopt(h->sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
                zmq_setsockopt(h->sock, ZMQ_CURVE_SECRETKEY, secret, sizeof secret) ||
                zmq_setsockopt(h->sock, ZMQ_ZAP_DOMAIN, ZAP_DOMAIN, strlen(ZAP_DOMAIN))))
      rc = fl_err_set(FL_EINVAL, "CURVE socket options: %s", zmq_strerror(errno));
    explicit_bzero(secret, sizeof secret);
    if (rc) return rc;
  }
  if ((rc = fl_admit_watch(h->admit, h->sock))) return rc;
  if (zmq_bind(h->sock, h->cfg->bind) != 0)
    return fl_err_set(FL_EINVAL, "cannot bind %s: %s", h->cfg->bind, zmq_strerror(errno));
  return 0;
}

/* Starts polling zsock's ZMQ_FD on the loop. */
static int start_poll(fl_host_t *h, void *zsock, uv_poll_t *handle) {
  int fd, rc;
  size_t sz = sizeof fd;
  if (zmq_getsockopt(zsock, ZMQ_FD, &fd, &sz) != 0)
    return fl_err_set(FL_EIO, "ZMQ_FD: %s", zmq_strerror(errno));
  handle->data = h;
  if ((rc = uv_poll_init(h->loop, handle, fd)) != 0 ||
      (rc = uv_poll_start(handle, UV_READABLE, on_poll)) != 0)
    return fl_err_set(FL_EIO, "uv_poll: %s", uv_strerror(rc));
  return 0;
}

/* The event loop's handles: the sockets' polls, the tick, the deadline,
 * the idle handle and the signals. */
static int setup_loop(fl_host_t *h) {
  int rc;
  h->loop = uv_default_loop();
  if (!h->loop) return fl_err_set(FL_ENOMEM, "cannot create the event loop");
  void *zap = fl_admit_zap_socket(h->admit);
  if (zap && (rc = start_poll(h, zap, &h->zap_poll))) return rc;
  if ((rc = start_poll(h, fl_admit_monitor_socket(h->admit), &h->mon_poll)) ||
      (rc = start_poll(h, h->sock, &h->poll)))
    return rc;
  h->more.data = h->tick.data = h->deadline.data = h->sigint.data = h->sigterm.data = h;
  if ((rc = uv_idle_init(h->loop, &h->more)) || (rc = uv_timer_init(h->loop, &h->tick)) ||
      (rc = uv_timer_init(h->loop, &h->deadline)) || (rc = uv_signal_init(h->loop, &h->sigint)) ||
      (rc = uv_signal_init(h->loop, &h->sigterm)) ||
      (rc = uv_timer_start(&h->tick, on_tick, TICK_MS, TICK_MS)) ||
      (rc = uv_signal_start(&h->sigint, on_signal, SIGINT)) ||
      (rc = uv_signal_start(&h->sigterm, on_signal, SIGTERM)))
    return fl_err_set(FL_EIO, "event loop: %s", uv_strerror(rc));
  return 0;
}

/* The Stop{rejoin} for joins over the rate limit, encoded once. */
static int make_busy_stop(fl_host_t *h) {
  Fedlr__Stop st = FEDLR__STOP__INIT;
  st.reason = "busy: too many joins at once, join again later";
  st.rejoin = 1;
  Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
  env.body_case = FEDLR__ENVELOPE__BODY_STOP;
  env.stop = &st;
  return fl_wire_encode(&env, &h->busy_stop, &h->busy_stop_len);
}

fl_host_t *fl_host_new(const fl_host_config_t *hc, fl_run_t *run, int *err) {
  int rc = FL_ENOMEM;
  fl_host_t *h = calloc(1, sizeof *h);
  if (!h) goto fail;
  h->cfg = hc->cfg;
  h->run = run;
  h->engine = fl_run_engine(run);
  h->curve = hc->allow != NULL;
  h->rl = fl_ratelog_new(stderr, "fedlr-coordinator: ", fl_admit_reasons, FL_ADMIT_R_NUM,
                         NOISY_WINDOW_S, NOISY_MAX);
  if (!h->rl || (rc = make_busy_stop(h))) goto fail;
  if ((rc = fl_wire_tensors_init(&h->layout, fl_engine_model(h->engine), NULL))) goto fail;
  if (!(h->zctx = zmq_ctx_new())) {
    rc = fl_err_set(FL_ENOMEM, "zmq_ctx_new: %s", zmq_strerror(errno));
    goto fail;
  }
  fl_admit_config_t ac = {.allow = hc->allow,
                          .join_rate = hc->cfg->join_rate,
                          .join_burst = hc->cfg->join_burst,
                          .join_timeout = hc->cfg->join_timeout,
                          .max_connections = connection_limit(hc->cfg),
                          .handshake_timeout = hc->cfg->handshake_timeout,
                          .max_message = fl_engine_limits(h->engine)->max_message,
                          .log = h->rl,
                          .closed = on_conn_closed,
                          .ctx = h};
  if (!(h->admit = fl_admit_new(&ac, h->zctx, &rc))) goto fail;
  if ((rc = setup_socket(h, hc->keys))) goto fail;
  h->run_id = (uint32_t)fl_rng_derive(hc->cfg->seed, 77, (uint64_t)time(NULL), (uint64_t)getpid());
  fl_run_transport_t tp = {.ctx = h,
                           .round_opened = tp_round_opened,
                           .send_round_start = tp_send_round_start,
                           .send_evaluate = tp_send_evaluate,
                           .wake_at = tp_wake_at,
                           .finished = tp_finished,
                           .log = tp_log};
  fl_run_set_transport(run, &tp);
  if ((rc = setup_loop(h))) goto fail;
  h->loop_ready = 1;
  if (hc->keys) explicit_bzero(hc->keys, sizeof *hc->keys);
  return h;
fail:
  if (hc->keys) explicit_bzero(hc->keys, sizeof *hc->keys);
  if (rc == FL_ENOMEM && !fl_err_msg()[0]) fl_err_set(FL_ENOMEM, "out of memory");
  if (err) *err = rc;
  fl_host_destroy(&h);
  return NULL;
}

int fl_host_run(fl_host_t *h) {
  fl_run_start(h->run);
  uv_run(h->loop, UV_RUN_DEFAULT);
  return fl_run_status(h->run);
}

void fl_host_destroy(fl_host_t **ph) {
  fl_host_t *h = ph ? *ph : NULL;
  if (!h) return;
  if (h->loop_ready) {
    end_loop(h);
    uv_run(h->loop, UV_RUN_DEFAULT); /* let the close callbacks run */
    uv_loop_close(h->loop);
  }
  fl_admit_destroy(&h->admit);
  if (h->sock) zmq_close(h->sock);
  if (h->zctx) zmq_ctx_term(h->zctx);
  fl_ratelog_destroy(&h->rl);
  fl_wire_tensors_free(&h->layout);
  if (h->have_eval_msg) zmq_msg_close(&h->eval_msg);
  free(h->busy_stop);
  free(h->final_stop);
  free(h->peers);
  free(h->queue);
  free(h);
  *ph = NULL;
}
