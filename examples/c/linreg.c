/* linreg: federated linear regression in plain C on libfedlr (fedlr.h).
 *
 * A model fedlr does not have built in: y = w.x + b with D = 8 features,
 * the tensors "linear.weight" [1, 8] and "linear.bias" [1] (PyTorch's
 * nn.Linear(8, 1) names). Each client makes its own synthetic examples
 * from one true model (truth()) with its own seed and feature shift, keeps
 * some of them back for evaluation, and trains with minibatch SGD on the
 * squared error, at the rate the coordinator sends, scaled by the round's
 * local schedule (fedlr_local_lr), with FedProx's proximal term when the
 * round asks for it (fedlr_round.prox_mu).
 *
 *   linreg init FILE.safetensors       the initial model, for
 *                                      fedlr-coordinator --init FILE.safetensors
 *   linreg truth                       the true weights and bias, one line
 *   linreg client --connect EP --client K [--examples N] [--holdout N]
 *                 [--name NAME] [--slow SEC [--slow-call N]]
 *
 * --slow SEC sleeps that long in each train callback (in the N-th only
 * with --slow-call N): a trainer slower than the coordinator's
 * --client-timeout stays alive, since libfedlr heartbeats from its own
 * thread; one slower than its --round-timeout makes it retry the round.
 *
 * Build against the installed library: make (see Makefile), i.e.
 *   cc linreg.c $(pkg-config --cflags --libs fedlr) -lm */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fedlr.h>

#define D 8 /* features */

/* ---- data ---- */

typedef struct {
  size_t n;
  float (*x)[D]; /* (n, D) */
  float *y;      /* (n) */
} data_t;

/* splitmix64: a small, good generator, so the example needs nothing else. */
static uint64_t next_u64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
static double uniform(uint64_t *s) {
  return (double)(next_u64(s) >> 11) * 0x1.0p-53;
}
static double gaussian(uint64_t *s) {
  double u = uniform(s) + 0x1.0p-54, v = uniform(s);
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* The model every client's data comes from. */
static void truth(float w[D], float *b) {
  for (int j = 0; j < D; j++)
    w[j] = (float)((j % 2 ? -1.0 : 1.0) * (0.5 + 0.25 * j));
  *b = 0.75f;
}

/* n examples of client k: x ~ U(-1, 1) + a shift of its own (the clients'
 * data differ), y = w.x + b + N(0, 0.1^2). */
static int make_data(uint64_t k, size_t n, data_t *d) {
  float w[D], b;
  truth(w, &b);
  d->n = n;
  d->x = malloc(n * sizeof *d->x);
  d->y = malloc(n * sizeof *d->y);
  if (!d->x || !d->y) return -1;
  uint64_t s = 0x5eed0000ULL + k;
  double shift = 0.5 * ((double)(k % 5) - 2.0);
  for (size_t i = 0; i < n; i++) {
    double y = b;
    for (int j = 0; j < D; j++) {
      d->x[i][j] = (float)(2.0 * uniform(&s) - 1.0 + shift);
      y += (double)w[j] * d->x[i][j];
    }
    d->y[i] = (float)(y + 0.1 * gaussian(&s));
  }
  return 0;
}

/* ---- the model ---- */

/* The layout: what this program trains, and what --init must hold. */
static fedlr_tensors *layout_new(void) {
  fedlr_tensors *ts = fedlr_tensors_new();
  uint32_t wshape[2] = {1, D}, bshape[1] = {1};
  if (!ts || fedlr_tensors_add(ts, "linear.weight", 2, wshape) ||
      fedlr_tensors_add(ts, "linear.bias", 1, bshape))
    fedlr_tensors_destroy(&ts);
  return ts;
}

static double predict(const float *w, float b, const float *x) {
  double p = b;
  for (int j = 0; j < D; j++)
    p += (double)w[j] * x[j];
  return p;
}

/* Mean squared error over d, and R^2. */
static double mse(const data_t *d, const float *w, float b, double *r2) {
  double se = 0, mean = 0, var = 0;
  for (size_t i = 0; i < d->n; i++)
    mean += d->y[i] / (double)d->n;
  for (size_t i = 0; i < d->n; i++) {
    double e = predict(w, b, d->x[i]) - d->y[i];
    se += e * e;
    var += (d->y[i] - mean) * (d->y[i] - mean);
  }
  *r2 = var > 0 ? 1.0 - se / var : 0.0;
  return se / (double)d->n;
}

/* ---- the callbacks ---- */

typedef struct {
  data_t train, eval;
  uint32_t *order; /* (train.n) an epoch's permutation */
  double slow;     /* s to sleep in each train callback ... */
  long slow_call;  /* ... or in this one only (1-based; 0: all) */
  long trained;    /* train callbacks so far */
} app_t;

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* One minibatch step of SGD on 0.5 * mean squared error, plus FedProx's
 * mu/2 ||(w, b) - (w0, bias0)||^2 (the round's global model) when mu > 0;
 * returns the batch's mean squared error before the step. */
static double sgd_step(const app_t *a, const uint32_t *rows, size_t bs, float lr, float wd,
                       float mu, const float *w0, float bias0, float *w, float *b) {
  double gw[D] = {0}, gb = 0, loss = 0;
  for (size_t i = 0; i < bs; i++) {
    const float *x = a->train.x[rows[i]];
    double e = predict(w, *b, x) - a->train.y[rows[i]];
    loss += e * e;
    for (int j = 0; j < D; j++)
      gw[j] += e * x[j];
    gb += e;
  }
  for (int j = 0; j < D; j++)
    w[j] -= lr * (float)(gw[j] / (double)bs + mu * (w[j] - w0[j]) + wd * w[j]);
  *b -= lr * (float)(gb / (double)bs + mu * (*b - bias0));
  return loss / (double)bs;
}

static int train(void *user, const fedlr_round *r, const fedlr_tensors *global, fedlr_tensors *out,
                 fedlr_train_result *res) {
  app_t *a = user;
  /* `out` starts as a copy of `global`: train in place; `global` stays the
   * anchor of FedProx's term. */
  const float *w0 = fedlr_tensor_data(global, 0), bias0 = fedlr_tensor_data(global, 1)[0];
  if (r->optimizer.kind != FEDLR_OPT_SGD)
    return fedlr_set_error(FEDLR_EUNSUPPORTED, "this example trains with plain SGD only");
  a->trained++;
  if (a->slow > 0 && (a->slow_call == 0 || a->trained == a->slow_call)) sleep_s(a->slow);
  printf("round %u attempt %u: rate %g, %u epochs of batch %u\n", r->round, r->attempt,
         (double)r->lr, r->local_epochs, r->batch_size);
  fflush(stdout);
  float *w = fedlr_tensor_data_mut(out, 0), *b = fedlr_tensor_data_mut(out, 1);
  size_t n = a->train.n, B = r->batch_size < n ? r->batch_size : n;
  uint64_t rng = r->seed, step = 0, seen = 0;
  double loss_sum = 0;
  for (uint32_t e = 0; e < r->local_epochs && !fedlr_round_cancelled(r); e++) {
    for (size_t i = 0; i < n; i++) /* a fresh shuffle each epoch (Fisher-Yates) */
      a->order[i] = (uint32_t)i;
    for (size_t i = n - 1; i > 0; i--) {
      size_t j = (size_t)(next_u64(&rng) % (i + 1));
      uint32_t t = a->order[i];
      a->order[i] = a->order[j];
      a->order[j] = t;
    }
    for (size_t b0 = 0; b0 < n; b0 += B, step++) {
      size_t bs = n - b0 < B ? n - b0 : B;
      /* The round's rate under its local schedule, at this epoch or step. */
      float lr = (float)fedlr_local_lr(r, r->local_unit == FEDLR_UNIT_STEP ? step : e);
      loss_sum += sgd_step(a, a->order + b0, bs, lr, r->optimizer.weight_decay, r->prox_mu, w0,
                           bias0, w, b) *
                  (double)bs;
      seen += bs;
    }
  }
  if (!isfinite(*b)) return fedlr_set_error(FEDLR_ENONFINITE, "diverged: lower the rate");
  res->is_delta = 0; /* `out` holds the new weights */
  res->num_examples = n;
  res->steps = step;
  res->train_loss = seen ? loss_sum / (double)seen : 0; /* example-weighted mean */
  return 0;
}

static int evaluate(void *user, uint32_t round, const fedlr_tensors *weights,
                    fedlr_eval_result *res) {
  app_t *a = user;
  (void)round;
  double r2;
  res->num_examples = a->eval.n;
  res->loss = mse(&a->eval, fedlr_tensor_data(weights, 0), fedlr_tensor_data(weights, 1)[0], &r2);
  int rc = fedlr_eval_add_metric(res, "rmse", sqrt(res->loss));
  return rc ? rc : fedlr_eval_add_metric(res, "r2", r2);
}

/* ---- the program ---- */

static fedlr_client *running;
static void on_signal(int sig) {
  (void)sig;
  fedlr_client_stop(running); /* async-signal-safe */
}

static int usage(void) {
  fprintf(stderr, "usage: linreg init FILE.safetensors | linreg truth |\n"
                  "       linreg client --connect EP --client K [--examples N] [--holdout N]\n"
                  "                     [--name NAME] [--slow SEC [--slow-call N]]\n");
  return 2;
}

static int cmd_init(const char *path) {
  fedlr_tensors *ts = layout_new(); /* zeros: a linear model may start anywhere */
  int rc = ts ? fedlr_tensors_save(ts, path) : FEDLR_ENOMEM;
  if (rc) fprintf(stderr, "linreg: %s: %s\n", path, fedlr_last_error());
  fedlr_tensors_destroy(&ts);
  return rc ? 1 : 0;
}

static int cmd_truth(void) {
  float w[D], b;
  truth(w, &b);
  for (int j = 0; j < D; j++)
    printf("%g ", w[j]);
  printf("%g\n", b);
  return 0;
}

static int cmd_client(int argc, char **argv) {
  const char *connect = NULL, *name = NULL;
  long k = -1, n = 400, n_eval = 100, slow_call = 0;
  double slow = 0;
  for (int i = 0; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--connect"))
      connect = argv[i + 1];
    else if (!strcmp(argv[i], "--client"))
      k = atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--examples"))
      n = atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--holdout"))
      n_eval = atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--name"))
      name = argv[i + 1];
    else if (!strcmp(argv[i], "--slow"))
      slow = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--slow-call"))
      slow_call = atol(argv[i + 1]);
    else
      return usage();
  }
  if (!connect || k < 0 || n < 1 || n_eval < 0 || argc % 2) return usage();
  char defname[32];
  snprintf(defname, sizeof defname, "linreg-%ld", k);
  app_t a = {.slow = slow, .slow_call = slow_call};
  if (make_data((uint64_t)k, (size_t)n, &a.train) ||
      make_data((uint64_t)k + 1000, (size_t)n_eval, &a.eval) ||
      !(a.order = malloc((size_t)n * sizeof *a.order)))
    return 1;
  fedlr_tensors *layout = layout_new();
  fedlr_config c;
  fedlr_config_init(&c);
  c.endpoint = connect;
  c.name = name ? name : defname;
  c.num_examples = (uint64_t)n;
  c.num_eval_examples = (uint64_t)n_eval;
  c.layout = layout; /* the Welcome must offer exactly this model */
  c.train = train;
  c.evaluate = n_eval > 0 ? evaluate : NULL;
  c.user = &a;
  int rc;
  running = fedlr_client_new(&c, &rc);
  fedlr_tensors_destroy(&layout);
  if (!running) {
    fprintf(stderr, "linreg: %s\n", fedlr_last_error());
    return 2;
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  rc = fedlr_client_run(running);
  if (rc != FEDLR_DONE) fprintf(stderr, "linreg: %s: %s\n", fedlr_strerror(rc), fedlr_last_error());
  fedlr_client_destroy(&running);
  free(a.train.x);
  free(a.train.y);
  free(a.eval.x);
  free(a.eval.y);
  free(a.order);
  return rc == FEDLR_DONE ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "init")) return cmd_init(argv[2]);
  if (argc == 2 && !strcmp(argv[1], "truth")) return cmd_truth();
  if (argc >= 2 && !strcmp(argv[1], "client")) return cmd_client(argc - 2, argv + 2);
  return usage();
}
