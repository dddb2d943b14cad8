/* fedlr-client: one federated-learning client over ZeroMQ.
 *
 * Loads its examples (its own file with --data, or one deterministic
 * partition of a named dataset with --num-partitions/--partition-index, the
 * split fedlr-sim makes with the same --partition and --seed), then runs a
 * session (fl_session.h) against the coordinator at --connect: join, train
 * each round it is sent, heartbeat, rejoin after a coordinator restart.
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
#include <fcntl.h>
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
#include "fl_session.h"
#include "fl_trainer.h"
#include "fl_wire.h"

/* Signals reach the session through a self-pipe: the handler may run on
 * any thread (ZeroMQ's and OpenBLAS's included), and the session polls the
 * pipe's read end next to its socket. */
static int sig_pipe[2] = {-1, -1};
static volatile sig_atomic_t sig_caught;

static void on_signal(int sig) {
  int saved = errno;
  if (!sig_caught) sig_caught = sig;
  ssize_t r = write(sig_pipe[1], "s", 1);
  (void)r;
  errno = saved;
}

static int install_signals(void) {
  if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
    return fl_err_set(FL_EIO, "pipe: %s", strerror(errno));
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

/* The exit status for how the session ended (printing why). */
static int session_status(int rc, const char *name) {
  switch (rc) {
  case FL_SESSION_DONE: return 0;
  case FL_SESSION_INTERRUPTED:
    fprintf(stderr, "fedlr-client[%s]: %s: leaving\n", name, strsignal(sig_caught));
    return 128 + (sig_caught ? sig_caught : SIGTERM);
  case FL_SESSION_REFUSED: fprintf(stderr, "fedlr-client[%s]: %s\n", name, fl_err_msg()); return 1;
  case FL_SESSION_AUTH_FAILED:
    fprintf(stderr, "fedlr-client[%s]: %s\n", name, fl_err_msg());
    return EXIT_AUTH;
  case FL_SESSION_GAVE_UP:
    fprintf(stderr, "fedlr-client[%s]: %s\n", name, fl_err_msg());
    return EXIT_GAVE_UP;
  default: (void)fail(name, "session", rc); return 1;
  }
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
  fl_dataset_t *data = NULL;
  fl_session_t *session = NULL;
  if ((status = load_examples(&cfg, name, &data))) goto out;
  status = 1;
  if ((rc = install_signals())) {
    status = fail(name, "signals", rc);
    goto out;
  }
  if (fl_attack_active(&attack))
    fprintf(stderr, "fedlr-client[%s]: ATTACKING: %s\n", name, cfg.attack);
  fl_shard_t shard = {data, NULL, data->n, &attack};
  fl_session_config_t sc = {
      .endpoint = cfg.connect,
      .name = name,
      .want_slot = cfg.num_partitions > 0,
      .slot = cfg.partition_index,
      .quiet = cfg.quiet,
      .interrupt_fd = sig_pipe[0],
      .curve_public = kp.public_z85[0] ? kp.public_z85 : NULL,
      .curve_secret = kp.secret_z85[0] ? kp.secret_z85 : NULL,
      .server_key = server_key[0] ? server_key : NULL,
      .handshake_timeout = cfg.handshake_timeout,
      .give_up = cfg.give_up,
  };
  session = fl_session_new(&sc, &shard, &rc);
  explicit_bzero(&kp, sizeof kp); /* the session has its copy */
  if (!session) {
    status = fail(name, "session", rc);
    goto out;
  }
  status = session_status(fl_session_run(session), name);
out:
  explicit_bzero(&kp, sizeof kp);
  fl_session_destroy(&session);
  fl_dataset_destroy(&data);
  return status;
}
