/* fedlr-client: one federated-learning client over ZeroMQ.
 *
 * Loads its examples (its own file with --data, or one deterministic
 * partition of a named dataset with --num-partitions/--partition-index, the
 * split fedlr-sim makes with the same --partition and --seed), holds out
 * --holdout of them for federated evaluation (fl_partition_holdout, as
 * fedlr-sim does), then runs a libfedlr session (include/fedlr.h) against
 * the coordinator at --connect: the library joins, heartbeats from its own
 * thread, rejoins after a coordinator restart; this program is its
 * callbacks: the Welcome's model checked against the data (a built-in
 * model), each round trained by fl_trainer_train() and each Evaluate
 * answered by fl_trainer_evaluate() (loss and "accuracy").
 *
 * With --curve-secret FILE and --coordinator-key KEY|FILE the connection
 * is CurveZMQ: encrypted, and the coordinator knows this client by its key
 * (the client's name defaults to the key file's stem and must match the
 * name the coordinator lists the key under).
 *
 * Exit status: 0 the coordinator ended the run; 1 refused by the
 * coordinator, a model that does not fit the data, an unusable key file, or
 * a runtime error; 2 bad flags or config; 4 the handshake was refused or
 * kept failing (key not admitted, wrong --coordinator-key, one side
 * plaintext); 5 nothing came from the coordinator for --give-up seconds
 * (it is gone, or was never there); 128 + signal number on SIGINT (130) or
 * SIGTERM (143), after closing the socket. A second signal kills at once. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fl_blas.h"
#include "fl_config.h"
#include "fl_data.h"
#include "fl_error.h"
#include "fl_keys.h"
#include "fl_partition.h"
#include "fl_trainer.h"
#include "fl_wire.h"

#include "fedlr.h"

/* Signals reach the session through fedlr_client_stop() (a write to the
 * library's pipe): the handler may run on any thread (ZeroMQ's, OpenBLAS's
 * and the library's included). */
static fedlr_client *sig_client;
static volatile sig_atomic_t sig_caught;

static void on_signal(int sig) {
  if (!sig_caught) sig_caught = sig;
  fedlr_client_stop(sig_client);
}

static int install_signals(fedlr_client *c) {
  sig_client = c;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESETHAND; /* a second signal takes the default action */
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
    return fl_err_set(FL_EIO, "sigaction: %s", strerror(errno));
  return 0;
}

static int fail(const char *name, const char *what, int rc) {
  fprintf(stderr, "fedlr-client[%s]: %s: %s\n", name, what,
          fl_err_msg()[0] ? fl_err_msg() : fl_strerror(rc));
  return rc == FL_EINVAL ? 2 : 1;
}

#define EXIT_AUTH 4
#define EXIT_GAVE_UP 5

/* --name; under CURVE the key file's stem ("alice" for alice.key_secret:
 * the coordinator knows the client by its key); else "<host>-p<index>" for
 * a partition (a restarted process keeps its identity), or "<host>-<pid>". */
static void client_name(const fl_config_t *c, char *out, size_t cap) {
  if (c->name[0]) {
    snprintf(out, cap, "%s", c->name);
    return;
  }
  if (c->curve_secret[0]) {
    fl_keys_stem(c->curve_secret, out, cap);
    if (out[0]) return;
  }
  char host[64];
  if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "client");
  host[sizeof host - 1] = '\0';
  if (c->num_partitions > 0)
    snprintf(out, cap, "%s-p%u", host, c->partition_index);
  else
    snprintf(out, cap, "%s-%ld", host, (long)getpid());
}

/* Rows idx[0..n) of d as a dataset of their own, in that order, so the
 * rest of the training set can be freed. Training on it with idx NULL is
 * bit-identical to training on (d, idx): the trainer shuffles positions,
 * and position i holds row idx[i] either way. */
static int shard_copy(const fl_dataset_t *d, const uint32_t *idx, size_t n, fl_dataset_t **out) {
  fl_dataset_t *s = calloc(1, sizeof *s);
  if (!s || !(s->x = malloc(n * d->dim * sizeof *s->x)) || !(s->y = malloc(n * sizeof *s->y))) {
    fl_dataset_destroy(&s);
    return fl_err_set(FL_ENOMEM, "out of memory for %zu examples", n);
  }
  for (size_t i = 0; i < n; i++) {
    memcpy(s->x + i * d->dim, d->x + (size_t)idx[i] * d->dim, d->dim * sizeof *s->x);
    s->y[i] = d->y[idx[i]];
  }
  s->n = n;
  s->dim = d->dim;
  s->num_classes = d->num_classes;
  s->shape = d->shape;
  *out = s;
  return 0;
}

/* "labels [0:612 1:58 ...]" for up to 16 classes, "" beyond. */
static void label_summary(const fl_dataset_t *d, char *out, size_t cap) {
  out[0] = '\0';
  if (d->num_classes > 16) return;
  size_t count[16] = {0};
  for (size_t i = 0; i < d->n; i++)
    if (d->y[i] >= 0 && (size_t)d->y[i] < d->num_classes) count[d->y[i]]++;
  size_t len = (size_t)snprintf(out, cap, ", labels [");
  for (size_t k = 0; k < d->num_classes && len < cap; k++)
    len += (size_t)snprintf(out + len, cap - len, "%s%zu:%zu", k ? " " : "", k, count[k]);
  if (len < cap) snprintf(out + len, cap - len, "]");
}

static void print_help(void) {
  fl_config_print_help(stdout, FL_PROG_CLIENT, "fedlr-client");
  printf("\nData: exactly one of --data FILE or --num-partitions N (with --dataset,\n"
         "--partition, --seed and --partition-index as given to the coordinator).\n"
         "CurveZMQ: --curve-secret FILE (this client's key pair, from fedlr-keygen) with\n"
         "--coordinator-key KEY|FILE (the coordinator's public key); the name defaults to the\n"
         "key file's name and must be the one the coordinator lists the key under.\n"
         "Exit status: 0 run over, 1 refused or error, 2 bad flags, 4 handshake refused or\n"
         "failing (key not admitted, wrong --coordinator-key, one side plaintext), 5 nothing\n"
         "from the coordinator for --give-up seconds (it is gone, or was never there),\n"
         "130/143 on SIGINT/SIGTERM.\n");
}

/* Checks the flags that go together: 0, or an exit status (2) with the
 * error printed. */
static int check_flags(const fl_config_t *cfg) {
  if (!cfg->data[0] == !cfg->num_partitions) {
    fprintf(stderr, "fedlr-client: %s\n",
            cfg->data[0]
                ? "--data and --num-partitions exclude each other: train on your own file "
                  "or on a partition of --dataset, not both"
                : "no data: give --data FILE, or --num-partitions N and --partition-index I "
                  "to train on one partition of --dataset");
    return 2;
  }
  if (!cfg->curve_secret[0] != !cfg->coordinator_key[0]) {
    fprintf(stderr,
            "fedlr-client: %s without %s: CurveZMQ needs both, this client's secret key "
            "(--curve-secret FILE) and the coordinator's public key (--coordinator-key KEY|FILE)\n",
            cfg->curve_secret[0] ? "--curve-secret" : "--coordinator-key",
            cfg->curve_secret[0] ? "--coordinator-key" : "--curve-secret");
    return 2;
  }
  return 0;
}

/* The CurveZMQ keys, if any: 0, or an exit status with the error printed. */
static int load_keys(const fl_config_t *cfg, const char *name, fl_keypair_t *kp,
                     char server_key[FL_KEY_Z85_LEN + 1]) {
  if (!cfg->curve_secret[0]) return 0;
  if (fl_keys_load_secret(cfg->curve_secret, kp) != 0) {
    fprintf(stderr, "fedlr-client[%s]: --curve-secret: %s\n", name, fl_err_msg());
    return 1;
  }
  if (fl_keys_load_public(cfg->coordinator_key, server_key) != 0) {
    fprintf(stderr, "fedlr-client[%s]: --coordinator-key: %s\n", name, fl_err_msg());
    explicit_bzero(kp, sizeof *kp);
    return 1;
  }
  return 0;
}

/* This client's examples: --data FILE, or partition --partition-index of
 * --dataset (copied out, the rest freed). 0, or an exit status with the
 * error printed. */
static int load_examples(const fl_config_t *cfg, const char *name, fl_dataset_t **out) {
  int rc, status = 1;
  fl_dataset_t *train = NULL, *data = NULL;
  fl_partition_t *part = NULL;
  char labels[256];
  if (cfg->data[0]) {
    if ((rc = fl_dataset_load_file(cfg->data, &data))) {
      status = fail(name, "--data", rc);
      goto out;
    }
    label_summary(data, labels, sizeof labels);
    fprintf(stderr, "fedlr-client[%s]: %s: %zu examples, %zu features, %zu classes%s\n", name,
            cfg->data, data->n, data->dim, data->num_classes, labels);
  } else {
    /* --dataset is read as every program reads it (fl_dataset_load_flags). */
    if ((rc = fl_dataset_load_flags(cfg->dataset, cfg->data_dir, NULL, &train, NULL))) {
      status = fail(name, "loading --dataset", rc);
      goto out;
    }
    if (cfg->num_partitions > train->n) {
      fprintf(stderr, "fedlr-client[%s]: --num-partitions %u exceeds the %zu examples of %s\n",
              name, cfg->num_partitions, train->n, cfg->dataset);
      status = 2;
      goto out;
    }
    if ((rc = fl_partition_new(train, cfg->partition, cfg->num_partitions, cfg->seed, &part))) {
      status = fail(name, "--partition", rc);
      goto out;
    }
    size_t n;
    const uint32_t *idx = fl_partition_indices(part, cfg->partition_index, &n);
    if ((rc = shard_copy(train, idx, n, &data))) {
      status = fail(name, "partition", rc);
      goto out;
    }
    label_summary(data, labels, sizeof labels);
    fprintf(
        stderr,
        "fedlr-client[%s]: %s partition %u of %u (%s, seed %llu): %zu examples, %zu features%s\n",
        name, cfg->dataset, cfg->partition_index, cfg->num_partitions, cfg->partition,
        (unsigned long long)cfg->seed, data->n, data->dim, labels);
  }
  if (data->n == 0) {
    fprintf(stderr, "fedlr-client[%s]: no examples to train on\n", name);
    goto out;
  }
  *out = data;
  data = NULL;
  status = 0;
out:
  fl_partition_destroy(&part);
  fl_dataset_destroy(&train);
  fl_dataset_destroy(&data);
  return status;
}

/* ---- the callbacks: fl_trainer behind libfedlr ---- */

typedef struct {
  const char *name;
  fl_shard_t train;      /* the training examples (and --attack) */
  fl_shard_t eval;       /* the held-out examples (n = 0: none) */
  fl_model_spec_t model; /* the Welcome's built-in model */
  fl_trainer_t *trainer;
} app_t;

/* Model `m`'s tensors as a libfedlr layout, to hold against the Welcome's. */
static int model_layout(const fl_model_spec_t *m, fedlr_tensors **out) {
  fedlr_tensors *ts = fedlr_tensors_new();
  int rc = ts ? 0 : FEDLR_ENOMEM;
  for (size_t i = 0; !rc && i < fl_model_num_tensors(m); i++) {
    fl_tensor_info_t t;
    fl_model_tensor(m, i, &t);
    rc = fedlr_tensors_add(ts, t.name, t.ndim, t.shape);
  }
  if (rc) fedlr_tensors_destroy(&ts);
  *out = ts;
  return rc;
}

/* The Welcome's model must be a built-in one that fits the data: its
 * input image (a CNN's, protocol version 4) that of the data if the data
 * has one (an IDX file's dimensions); a CSV file takes the Welcome's. */
static int check_welcome(const fl_dataset_t *d, const fedlr_welcome *w, fl_model_spec_t *m) {
  if (strcmp(w->model, FL_MODEL_CUSTOM) == 0)
    return fedlr_set_error(FEDLR_EUNSUPPORTED,
                           "the coordinator's model is 'custom' (a model of its --init file): "
                           "fedlr-client trains the built-in models only; see README, 'Bring "
                           "your own model'");
  if (w->input_dim != d->dim)
    return fedlr_set_error(FEDLR_ESHAPE,
                           "the coordinator's model takes %u features, this client's data has %zu "
                           "(wrong --dataset or --data for this run?)",
                           w->input_dim, d->dim);
  if (w->num_classes < d->num_classes)
    return fedlr_set_error(FEDLR_ESHAPE,
                           "the coordinator's model has %u classes, this client's data has %zu "
                           "(wrong --dataset or --data for this run?)",
                           w->num_classes, d->num_classes);
  const fl_shape_t ws = {w->input_shape[0], w->input_shape[1], w->input_shape[2]};
  char a[64], b[64];
  if (fl_shape_is_set(&ws) && fl_shape_is_set(&d->shape) &&
      (ws.c != d->shape.c || ws.h != d->shape.h || ws.w != d->shape.w))
    return fedlr_set_error(FEDLR_ESHAPE,
                           "the coordinator's model takes %s images (C x H x W), this client's "
                           "data holds %s images (its IDX dimensions): wrong --dataset or --data "
                           "for this run, or the coordinator's --input-shape is not this data's",
                           fl_shape_fmt(&ws, a, sizeof a), fl_shape_fmt(&d->shape, b, sizeof b));
  int rc = fl_model_parse_shape(w->model, w->input_dim, &ws, w->num_classes, m);
  if (rc) return fedlr_set_error(rc, "the coordinator's model is unusable: %s", fl_err_msg());
  fedlr_tensors *mine = NULL;
  if ((rc = model_layout(m, &mine)) || (rc = fedlr_tensors_check_layout(mine, w->layout)))
    rc = fedlr_set_error(rc, "the coordinator's layout is not model '%s': %s", w->model,
                         fedlr_last_error());
  fedlr_tensors_destroy(&mine);
  return rc;
}

/* A tick every step: it costs three atomic loads, and stops a round that
 * no longer counts (a signal, the run's end, a newer round) at once. */
static int tick_cancelled(void *arg, uint64_t step) {
  (void)step;
  return fedlr_round_cancelled(arg);
}

static int app_welcome(void *user, const fedlr_welcome *w) {
  app_t *a = user;
  fl_model_spec_t m;
  int rc = check_welcome(a->train.data, w, &m);
  if (rc) return rc;
  if (a->trainer && strcmp(m.spec, a->model.spec) == 0 && m.in_c == a->model.in_c &&
      m.in_h == a->model.in_h && m.in_w == a->model.in_w)
    return 0;
  fl_trainer_destroy(&a->trainer);
  if (!(a->trainer = fl_trainer_new(&m)))
    return fedlr_set_error(FEDLR_ENOMEM,
                           "out of memory for a trainer of model '%s' (%zu parameters)", m.spec,
                           m.num_params);
  a->model = m;
  return 0;
}

/* The library's local schedule, as the trainer's rate function. */
static double round_lr(const void *round, uint64_t t) {
  return fedlr_local_lr(round, t);
}

static int app_train(void *user, const fedlr_round *r, const fedlr_tensors *global,
                     fedlr_tensors *out, fedlr_train_result *res) {
  app_t *a = user;
  const fedlr_optimizer *o = &r->optimizer;
  fl_train_plan_t p = {
      .round = r->round,
      .lr = round_lr,
      .lr_arg = r,
      .lr0 = r->lr,
      .step_unit = r->local_unit == FEDLR_UNIT_STEP,
      .optim = {(fl_optim_kind_t)o->kind, o->momentum, o->beta1, o->beta2, o->eps, o->alpha,
                o->weight_decay, o->keep_state},
      .local_epochs = r->local_epochs,
      .batch_size = r->batch_size,
      .seed = r->seed,
      .prox_mu = r->prox_mu,
  };
  fl_train_stats_t st;
  fl_trainer_set_tick(a->trainer, tick_cancelled, (void *)r, 1);
  int rc = fl_trainer_train(a->trainer, &a->train, &p, fedlr_tensors_values(global),
                            fedlr_tensors_values_mut(out), &st);
  if (rc) return fedlr_set_error(rc, "%s", fl_err_msg());
  res->is_delta = 1;
  res->num_examples = st.num_examples;
  res->train_loss = st.train_loss;
  res->steps = st.steps;
  return 0;
}

static int app_evaluate(void *user, uint32_t round, const fedlr_tensors *weights,
                        fedlr_eval_result *res) {
  app_t *a = user;
  double loss, acc;
  int rc = fl_trainer_evaluate(a->trainer, &a->eval, fedlr_tensors_values(weights), &loss, &acc);
  if (rc) return fedlr_set_error(rc, "%s", fl_err_msg());
  res->num_examples = a->eval.n;
  res->loss = loss;
  return fedlr_eval_add_metric(res, "accuracy", acc);
}

static void app_log(void *user, int level, const char *line) {
  (void)level;
  fprintf(stderr, "fedlr-client[%s]: %s\n", ((const app_t *)user)->name, line);
}

/* --holdout: the held-out examples of *data move to *eval (fl_partition_holdout
 * with client index `client`, as fedlr-sim); 0, or an exit status with the
 * error printed. */
static int hold_out(const fl_config_t *cfg, const char *name, uint64_t client, fl_dataset_t **data,
                    fl_dataset_t **eval) {
  size_t n = (*data)->n, n_train = 0, n_eval = 0;
  if (cfg->holdout <= 0) return 0;
  uint32_t *idx = malloc(n * sizeof *idx), *tr = malloc(n * sizeof *tr),
           *ev = malloc(n * sizeof *ev);
  int rc = idx && tr && ev ? 0 : fl_err_set(FL_ENOMEM, "out of memory");
  for (size_t i = 0; !rc && i < n; i++)
    idx[i] = (uint32_t)i;
  if (!rc)
    rc = fl_partition_holdout(idx, n, cfg->holdout, cfg->seed, client, tr, &n_train, ev, &n_eval);
  fl_dataset_t *t = NULL;
  if (!rc && n_eval > 0 && !(rc = shard_copy(*data, ev, n_eval, eval)) &&
      !(rc = shard_copy(*data, tr, n_train, &t))) {
    fl_dataset_destroy(data);
    *data = t;
  }
  free(idx);
  free(tr);
  free(ev);
  if (rc) return fail(name, "--holdout", rc);
  fprintf(stderr,
          "fedlr-client[%s]: --holdout %g: %zu examples held out for evaluation, %zu to train on\n",
          name, cfg->holdout, n_eval, n_train);
  return 0;
}

/* The exit status for how the session ended (printing why). */
static int session_status(int rc, const char *name) {
  switch (rc) {
  case FEDLR_DONE: return 0;
  case FEDLR_STOPPED:
    fprintf(stderr, "fedlr-client[%s]: %s: leaving\n", name, strsignal(sig_caught));
    return 128 + (sig_caught ? sig_caught : SIGTERM);
  case FEDLR_REFUSED: fprintf(stderr, "fedlr-client[%s]: %s\n", name, fedlr_last_error()); return 1;
  case FEDLR_AUTH_FAILED:
    fprintf(stderr, "fedlr-client[%s]: %s\n", name, fedlr_last_error());
    return EXIT_AUTH;
  case FEDLR_GAVE_UP:
    fprintf(stderr, "fedlr-client[%s]: %s\n", name, fedlr_last_error());
    return EXIT_GAVE_UP;
  default:
    fprintf(stderr, "fedlr-client[%s]: session: %s\n", name,
            fedlr_last_error()[0] ? fedlr_last_error() : fedlr_strerror(rc));
    return rc == FEDLR_EINVAL ? 2 : 1;
  }
}

/* The session: the library over the app's callbacks. */
static int run_session(const fl_config_t *cfg, app_t *a, const fl_keypair_t *kp,
                       const char *server_key) {
  fedlr_config fc;
  fedlr_config_init(&fc);
  fc.endpoint = cfg->connect;
  fc.name = a->name;
  fc.want_slot = cfg->num_partitions > 0;
  fc.slot = cfg->partition_index;
  fc.num_examples = fl_trainer_claimed_examples(&a->train); /* --attack examples:N lies here */
  fc.num_eval_examples = a->eval.n;
  fc.curve_public = kp->public_z85[0] ? kp->public_z85 : NULL;
  fc.curve_secret = kp->secret_z85[0] ? kp->secret_z85 : NULL;
  fc.server_key = server_key[0] ? server_key : NULL;
  fc.handshake_timeout = cfg->handshake_timeout;
  fc.give_up = cfg->give_up;
  fc.welcome = app_welcome;
  fc.train = app_train;
  fc.evaluate = a->eval.n ? app_evaluate : NULL;
  fc.log = app_log;
  fc.log_level = cfg->quiet ? FEDLR_LOG_INFO : FEDLR_LOG_ROUND;
  fc.user = a;
  int rc;
  fedlr_client *c = fedlr_client_new(&fc, &rc);
  if (!c) return session_status(rc, a->name);
  if ((rc = install_signals(c))) {
    fedlr_client_destroy(&c);
    return fail(a->name, "signals", rc);
  }
  int status = session_status(fedlr_client_run(c), a->name);
  sig_client = NULL;
  fedlr_client_destroy(&c);
  return status;
}

int main(int argc, char **argv) {
  fl_blas_setup(argc, argv);
  fl_config_t cfg;
  fl_config_defaults(&cfg);
  int want_help = 0;
  int rc = fl_config_parse(&cfg, FL_PROG_CLIENT, argc, argv, &want_help);
  if (want_help) {
    print_help();
    return 0;
  }
  if (rc) {
    fprintf(stderr, "fedlr-client: %s\n", fl_err_msg());
    return 2;
  }
  fl_attack_t attack; /* --attack, which fl_config only stores */
  if ((rc = fl_attack_parse(cfg.attack, &attack))) {
    fprintf(stderr, "fedlr-client: --attack: %s\n", fl_err_msg());
    return 2;
  }
  int status;
  if ((status = check_flags(&cfg))) return status;
  char name[FL_WIRE_MAX_STRING];
  client_name(&cfg, name, sizeof name);
  /* Keys before the data: a key problem is found in a moment. */
  fl_keypair_t kp;
  char server_key[FL_KEY_Z85_LEN + 1] = "";
  memset(&kp, 0, sizeof kp);
  if ((status = load_keys(&cfg, name, &kp, server_key))) return status;
  fl_dataset_t *data = NULL, *eval = NULL;
  app_t app = {.name = name};
  if ((status = load_examples(&cfg, name, &data))) goto out;
  /* The held-out examples of a partition are those fedlr-sim's virtual
   * client of that index holds out; a --data file is client 0. */
  uint64_t client = cfg.num_partitions > 0 ? cfg.partition_index : 0;
  if ((status = hold_out(&cfg, name, client, &data, &eval))) goto out;
  if (fl_attack_active(&attack))
    fprintf(stderr, "fedlr-client[%s]: ATTACKING: %s\n", name, cfg.attack);
  app.train = (fl_shard_t){data, NULL, data->n, &attack};
  app.eval = (fl_shard_t){eval, NULL, eval ? eval->n : 0, NULL};
  status = run_session(&cfg, &app, &kp, server_key);
out:
  explicit_bzero(&kp, sizeof kp);
  fl_trainer_destroy(&app.trainer);
  fl_dataset_destroy(&data);
  fl_dataset_destroy(&eval);
  return status;
}
