/* fl_config: one table of options drives the defaults, the flags, the INI
 * file, validation, --help and the INI writer, so a key is declared once and
 * the five views of it cannot drift apart. */
#include "fl_config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include "fl_error.h"
#include "fl_file.h"
#include "fl_model.h"
#include "fl_optim.h"
#include "fl_partition.h"
#include "fl_sched.h"
#include "fl_server_optim.h"

typedef enum {
  OPT_STR, /* char[size], the value verbatim */
  OPT_U32,
  OPT_U64,
  OPT_DOUBLE, /* finite */
  OPT_BOOL,   /* int; a flag takes no value, the file says true/false */
  OPT_CONFIG  /* --config FILE: read by fl_config_parse, no field */
} opt_type_t;

enum { G_DATA, G_TRAIN, G_SERVER, G_FED, G_ROBUST, G_NET, G_OUT, G_GENERAL, G_COUNT };
static const char *const group_title[G_COUNT] = {"Data",
                                                 "Model and training",
                                                 "Server optimizer and FedProx",
                                                 "Federation",
                                                 "Robust aggregation and attacks",
                                                 "Network",
                                                 "Output",
                                                 "General"};

enum { OPT_LO_OPEN = 1 }; /* the lower bound is exclusive: (lo, hi] */

/* --client-timeout >= this many --heartbeat intervals (see fl_config.h). */
enum { HEARTBEATS_PER_TIMEOUT = 3 };

/* Checks the syntax of a spec string; on error sets fl_err_msg(). */
typedef int (*opt_check_fn)(const char *value);

typedef struct {
  const char *name; /* flag without "--" and file key; '_' also accepted */
  opt_type_t type;
  size_t off, size;    /* the field in fl_config_t */
  int progs;           /* FL_PROG_* mask */
  int group;           /* G_*, for --help */
  const char *metavar; /* "N" in "--rounds N" */
  const char *def;     /* default as text, parsed like a flag value */
  double lo, hi;       /* numbers: allowed range (hi = HUGE_VAL: none) */
  unsigned flags;      /* OPT_LO_OPEN */
  const char *choices; /* strings: "a|b" allowed values, or NULL */
  opt_check_fn check;  /* strings: spec syntax, run by fl_config_validate */
  const char *help;    /* "(default X)" is appended when X is not empty */
} opt_t;

static int check_lr(const char *s);
static int check_sched(const char *s);
static int check_local_sched(const char *s);
static int check_optim(const char *s);
static int check_server_optim(const char *s);
static int check_partition(const char *s);
static int check_model(const char *s);
static int check_input_shape(const char *s);
static int check_bind(const char *s);
static int check_connect(const char *s);

#define FIELD(f) offsetof(fl_config_t, f), sizeof(((fl_config_t *)0)->f)
#define SIM FL_PROG_SIM
#define COORD FL_PROG_COORD
#define CLIENT FL_PROG_CLIENT
#define SC (FL_PROG_SIM | FL_PROG_COORD)
#define ALL (FL_PROG_SIM | FL_PROG_COORD | FL_PROG_CLIENT)
/* The tail of an entry: lo, hi, flags, choices, check. */
#define NONE 0, 0, 0, NULL, NULL
#define RANGE(lo, hi, flags) lo, hi, flags, NULL, NULL
#define POSITIVE RANGE(0, HUGE_VAL, OPT_LO_OPEN)
#define CHOICES(words) 0, 0, 0, words, NULL
#define CHECK(fn) 0, 0, 0, NULL, fn

/* Help order is table order within each group. */
static const opt_t opts[] = {
    /* {name, type, field, programs, help group, metavar, default, lo, hi, flags, choices, check},
     *  help */
    {"dataset", OPT_STR, FIELD(dataset), ALL, G_DATA, "NAME|FILE", "fashion-mnist", NONE,
     "fashion-mnist, mnist, or a .csv / IDX file"},
    {"data-dir", OPT_STR, FIELD(data_dir), ALL, G_DATA, "DIR", "", NONE,
     "directory of the named dataset (default /usr/share/datasets/NAME)"},
    {"test-data", OPT_STR, FIELD(test_data), SC, G_DATA, "FILE", "", NONE,
     "test set file when --dataset is a file (default none)"},
    {"partition", OPT_STR, FIELD(partition), SIM | CLIENT, G_DATA, "SPEC", "iid",
     CHECK(check_partition), "split among clients: iid, shards:K or dirichlet:ALPHA"},
    {"holdout", OPT_DOUBLE, FIELD(holdout), SIM | CLIENT, G_DATA, "F", "0", RANGE(0, 0.9, 0),
     "fraction of each client's examples held out to evaluate the global model on (federated "
     "evaluation)"},
    {"data", OPT_STR, FIELD(data), CLIENT, G_DATA, "FILE", "", NONE,
     "this client's own data file (default none)"},
    {"num-partitions", OPT_U32, FIELD(num_partitions), CLIENT, G_DATA, "N", "0",
     RANGE(0, 1000000, 0), "split --dataset into N partitions, 0 = use --data"},
    {"partition-index", OPT_U32, FIELD(partition_index), CLIENT, G_DATA, "I", "0",
     RANGE(0, 999999, 0), "the partition this client trains on, 0-based"},

    {"model", OPT_STR, FIELD(model), SC, G_TRAIN, "SPEC", "", CHECK(check_model),
     "softmax, mlp:H1,H2,... (ReLU hidden layers), cnn (the FedAvg CNN) or "
     "cnn:conv5x5x32,pool2,fc512,... or, with --init, custom (default softmax; with --init, the "
     "model the file holds)"},
    {"input-shape", OPT_STR, FIELD(input_shape), SC, G_TRAIN, "CxHxW", "", CHECK(check_input_shape),
     "the examples' image shape for a CNN, channels x height x width in PyTorch's NCHW order "
     "(e.g. 3x32x32; C*H*W must be the data's feature count); default: an IDX file's own "
     "dimensions, else 1 x sqrt(D) x sqrt(D) for D features"},
    {"init", OPT_STR, FIELD(init), SC, G_TRAIN, "FILE", "", NONE,
     "start from the weights in a safetensors FILE: a fedlr model.safetensors, or (coordinator) "
     "any named float32 tensors of a model of your own (default none)"},
    {"optimizer", OPT_STR, FIELD(optimizer), SC, G_TRAIN, "SPEC", "sgd", CHECK(check_optim),
     "sgd, momentum[:M], nesterov[:M], adagrad, rmsprop or adam, then ,key=value... (wd=W for "
     "any; eps, alpha, beta1, beta2) and ,keep (networked clients only); e.g. sgd,wd=1e-4 or "
     "adam:beta1=0.8,wd=1e-4"},
    {"lr", OPT_STR, FIELD(lr), SC, G_TRAIN, "RATE", "0.1", CHECK(check_lr),
     "a number, auto or auto:SCALE (= SCALE/sqrt(params))"},
    {"schedule", OPT_STR, FIELD(schedule), SC, G_TRAIN, "SPEC", "const", CHECK(check_sched),
     "per-round schedule: [warmup:W+]KIND[:k=v,...], KIND = const, linear, exp, inv, poly, step, "
     "piecewise, cos or plateau"},
    {"local-schedule", OPT_STR, FIELD(local_schedule), SC, G_TRAIN, "SPEC", "const",
     CHECK(check_local_sched), "schedule within a round, over --local-unit (no plateau)"},
    {"local-unit", OPT_STR, FIELD(local_unit), SC, G_TRAIN, "UNIT", "epoch", CHOICES("epoch|step"),
     "time index of --local-schedule: epoch or step"},
    {"local-epochs", OPT_U32, FIELD(local_epochs), SC, G_TRAIN, "N", "1", RANGE(1, 1000, 0),
     "local epochs per round"},
    {"batch-size", OPT_U32, FIELD(batch_size), SC, G_TRAIN, "N", "10", RANGE(1, 65536, 0),
     "local minibatch size"},

    {"server-optimizer", OPT_STR, FIELD(server_optimizer), SC, G_SERVER, "SPEC", "fedavg",
     CHECK(check_server_optim),
     "the server's step with the round's aggregate (Reddi et al. 2021): fedavg, "
     "fedavgm[:momentum=M], fedadagrad, fedadam or fedyogi[:beta1=B1,beta2=B2,tau=T]"},
    {"server-lr", OPT_DOUBLE, FIELD(server_lr), SC, G_SERVER, "RATE", "1",
     RANGE(0, HUGE_VAL, OPT_LO_OPEN),
     "the server rate: the step is RATE times the optimizer's direction (fedavg at 1: plain "
     "FedAvg)"},
    {"server-schedule", OPT_STR, FIELD(server_schedule), SC, G_SERVER, "SPEC", "const",
     CHECK(check_sched), "per-round schedule of --server-lr, in the --schedule language"},
    {"prox-mu", OPT_DOUBLE, FIELD(prox_mu), SC, G_SERVER, "MU", "0", RANGE(0, 1e4, 0),
     "FedProx (Li et al. 2020): clients add MU (w - w_global) to every local gradient, 0 = off "
     "(networked: needs clients of protocol version 3)"},

    {"clients", OPT_U32, FIELD(clients), SC, G_FED, "N", "100", RANGE(1, 1000000, 0),
     "number of clients (coordinator: the most that may join, ids 0..N-1)"},
    {"fraction", OPT_DOUBLE, FIELD(fraction), SC, G_FED, "F", "0.1", RANGE(0, 1, OPT_LO_OPEN),
     "fraction of the clients sampled per round"},
    {"min-clients", OPT_U32, FIELD(min_clients), SC, G_FED, "N", "1", RANGE(1, 1000000, 0),
     "minimum clients sampled per round (coordinator: to start)"},
    {"rounds", OPT_U32, FIELD(rounds), SC, G_FED, "N", "20", RANGE(1, 1000000, 0),
     "number of rounds"},
    {"seed", OPT_U64, FIELD(seed), ALL, G_FED, "N", "1", RANGE(0, HUGE_VAL, 0),
     "random seed (sampling, partition, initialization)"},
    {"workers", OPT_U32, FIELD(workers), SIM, G_FED, "N", "0", RANGE(0, 256, 0),
     "worker threads, 0 = one per core"},
    {"eval-every", OPT_U32, FIELD(eval_every), SC, G_FED, "N", "1", RANGE(1, 1000000, 0),
     "evaluate every N rounds and after the last one"},
    {"eval-fraction", OPT_DOUBLE, FIELD(eval_fraction), SC, G_FED, "F", "1", RANGE(0, 1, 0),
     "federated evaluation: fraction of the clients holding evaluation examples (--holdout) "
     "asked to evaluate each evaluated round, 0 = none"},
    {"target-accuracy", OPT_DOUBLE, FIELD(target_accuracy), SC, G_FED, "A", "0", RANGE(0, 1, 0),
     "stop once test accuracy reaches A, 0 = off"},

    /* --aggregator and --attack are parsed by the programs, with the modules
     * that own them (fl_agg_parse, fl_attack_parse). */
    {"aggregator", OPT_STR, FIELD(aggregator), SC, G_ROBUST, "RULE", "fedavg", NONE,
     "fedavg (example-weighted mean), median or trimmed-mean:BETA (coordinate-wise, unweighted; "
     "BETA in [0, 0.5) is cut from each end)"},
    {"clip-norm", OPT_DOUBLE, FIELD(clip_norm), SC, G_ROBUST, "C", "0", RANGE(0, HUGE_VAL, 0),
     "scale each client's update to L2 norm <= C before aggregating, 0 = off"},
    {"max-examples", OPT_U64, FIELD(max_examples), SC, G_ROBUST, "N", "0", RANGE(0, HUGE_VAL, 0),
     "weight a client by at most N examples (larger claims are capped and counted), 0 = off"},
    {"quarantine", OPT_U32, FIELD(quarantine), SC, G_ROBUST, "ROUNDS", "5", RANGE(0, 1000000, 0),
     "a client whose update is rejected is not sampled in the next ROUNDS rounds (nor in its "
     "round's retries)"},
    {"max-retries", OPT_U32, FIELD(max_retries), SC, G_ROBUST, "N", "10", RANGE(0, 1000000, 0),
     "a round abandoned N times in a row (no quorum) ends the run with an error, 0 = never"},
    {"attack", OPT_STR, FIELD(attack), SIM | CLIENT, G_ROBUST, "SPEC", "none", NONE,
     "make this client (fedlr-sim: the --attackers) malicious: none, or sign-flip, scale:K, nan, "
     "examples:N, comma-combined"},
    {"attackers", OPT_U32, FIELD(attackers), SIM, G_ROBUST, "N", "0", RANGE(0, 1000000, 0),
     "how many virtual clients run --attack, chosen from --seed"},

    {"bind", OPT_STR, FIELD(bind), COORD, G_NET, "ENDPOINT", "tcp://0.0.0.0:7070",
     CHECK(check_bind),
     "ZeroMQ endpoint to listen on: tcp://HOST:PORT (HOST an IPv4 address, an interface name or * "
     "for all; PORT 1..65535) or ipc://PATH"},
    {"connect", OPT_STR, FIELD(connect), CLIENT, G_NET, "ENDPOINT", "tcp://127.0.0.1:7070",
     CHECK(check_connect), "the coordinator's endpoint: tcp://HOST:PORT or ipc://PATH"},
    {"give-up", OPT_DOUBLE, FIELD(give_up), CLIENT, G_NET, "SEC", "300", RANGE(0, 604800, 0),
     "exit with status 5 once nothing at all has come from the coordinator for SEC seconds "
     "(before the first Welcome too), 0 = never"},
    {"name", OPT_STR, FIELD(name), CLIENT, G_NET, "NAME", "", NONE,
     "client name, unique in the run (default: with --curve-secret the key file's name, else "
     "HOST-pINDEX with --num-partitions, else HOST-PID)"},
    {"round-timeout", OPT_DOUBLE, FIELD(round_timeout), COORD, G_NET, "SEC", "60",
     RANGE(0, 604800, OPT_LO_OPEN),
     "seconds to wait for the clients' updates; at least --client-timeout"},
    {"quorum", OPT_DOUBLE, FIELD(quorum), COORD, G_NET, "F", "0.8", RANGE(0, 1, OPT_LO_OPEN),
     "fraction of the sampled clients that must report"},
    {"resume", OPT_STR, FIELD(resume), COORD, G_NET, "DIR", "", NONE,
     "continue the run whose --out was DIR, from DIR/checkpoint.safetensors (default none)"},
    {"checkpoint-every", OPT_U32, FIELD(checkpoint_every), COORD, G_NET, "N", "1",
     RANGE(1, 1000000, 0),
     "write --out/checkpoint.safetensors every N rounds (none without --out)"},
    {"start-clients", OPT_U32, FIELD(start_clients), COORD, G_NET, "N", "0", RANGE(0, 1000000, 0),
     "the first round waits for N joined clients, 0 = --min-clients"},
    {"start-timeout", OPT_DOUBLE, FIELD(start_timeout), COORD, G_NET, "SEC", "600",
     RANGE(0, 1e9, 0),
     "a round that cannot start for SEC s (too few clients; the first round: --start-clients) "
     "ends the run with an error, 0 = wait forever"},
    {"heartbeat", OPT_DOUBLE, FIELD(heartbeat), COORD, G_NET, "SEC", "1", RANGE(0.05, 60, 0),
     "clients send a heartbeat this often (also while training)"},
    {"client-timeout", OPT_DOUBLE, FIELD(client_timeout), COORD, G_NET, "SEC", "10",
     RANGE(0.1, 3600, 0),
     "a client silent this long is dead: dropped from its round, not sampled; at least 3 x "
     "--heartbeat"},
    {"curve-secret", OPT_STR, FIELD(curve_secret), COORD | CLIENT, G_NET, "FILE", "", NONE,
     "CurveZMQ: this side's secret key file from fedlr-keygen (mode 0600); encrypts all traffic "
     "(default none: plaintext)"},
    {"allow-clients", OPT_STR, FIELD(allow_clients), COORD, G_NET, "DIR|FILE", "", NONE,
     "CurveZMQ: the client keys admitted, a directory of NAME.key files or a file of 'KEY NAME' "
     "lines; needs --curve-secret (default none)"},
    {"coordinator-key", OPT_STR, FIELD(coordinator_key), CLIENT, G_NET, "KEY|FILE", "", NONE,
     "CurveZMQ: the coordinator's public key (Z85) or its .key file; needs --curve-secret "
     "(default none)"},
    {"handshake-timeout", OPT_DOUBLE, FIELD(handshake_timeout), COORD | CLIENT, G_NET, "SEC", "5",
     RANGE(0.1, 300, 0), "a connection whose handshake has not finished by then is dropped"},
    {"join-timeout", OPT_DOUBLE, FIELD(join_timeout), COORD, G_NET, "SEC", "10",
     RANGE(0.1, 3600, 0), "a connection on which no client has joined for SEC s is closed"},
    {"max-connections", OPT_U32, FIELD(max_connections), COORD, G_NET, "N", "0",
     RANGE(0, 1000000, 0),
     "open connections at most (more are closed at once), 0 = 2 x --clients + 64; kept below "
     "the open-file limit"},
    {"join-rate", OPT_DOUBLE, FIELD(join_rate), COORD, G_NET, "N", "100", POSITIVE,
     "joins admitted per second on average; joins beyond --join-burst are answered 'busy, retry'"},
    {"join-burst", OPT_U32, FIELD(join_burst), COORD, G_NET, "N", "200", RANGE(1, 1000000, 0),
     "joins admitted at once before --join-rate applies"},

    {"metrics", OPT_STR, FIELD(metrics), SC, G_OUT, "FILE", "", NONE,
     "write per-round metrics as JSON Lines (default none)"},
    {"out", OPT_STR, FIELD(out), SC, G_OUT, "DIR", "", NONE,
     "write the model, chart and config here (coordinator: and checkpoints) (default none)"},
    {"tensorboard", OPT_STR, FIELD(tensorboard), SC, G_OUT, "DIR", "", NONE,
     "write per-round scalars as TensorBoard event files into a new run folder under DIR, named "
     "like PyTorch's (MonDD_HH-MM-SS_HOST-PROGRAM), for tensorboard --logdir DIR (default none)"},
    {"quiet", OPT_BOOL, FIELD(quiet), ALL, G_OUT, NULL, "false", NONE, "no progress lines"},

    {"config", OPT_CONFIG, 0, 0, ALL, G_GENERAL, "FILE", "", NONE,
     "read options from an INI file first (a regular file or a pipe such as <(...), at most 1 "
     "MiB); flags override it"},
};
#define NUM_OPTS (sizeof opts / sizeof opts[0])

/* ---- names ---- */

static const char *prog_name(int prog) {
  switch (prog) {
  case FL_PROG_SIM: return "fedlr-sim";
  case FL_PROG_COORD: return "fedlr-coordinator";
  case FL_PROG_CLIENT: return "fedlr-client";
  default: return "fedlr";
  }
}

static int prog_valid(int prog) {
  return prog == FL_PROG_SIM || prog == FL_PROG_COORD || prog == FL_PROG_CLIENT;
}

/* Finds an option by the first len chars of name; '_' matches '-' so both
 * local_epochs (INI habit) and local-epochs work. */
static const opt_t *opt_find(const char *name, size_t len) {
  for (size_t i = 0; i < NUM_OPTS; i++) {
    const char *k = opts[i].name;
    size_t j = 0;
    for (; j < len && k[j]; j++) {
      char ch = name[j] == '_' ? '-' : name[j];
      if (ch != k[j]) break;
    }
    if (j == len && !k[j]) return &opts[i];
  }
  return NULL;
}

/* ---- values ---- */

static void *opt_field(const opt_t *o, fl_config_t *c) {
  return (char *)c + o->off;
}
static const void *opt_cfield(const opt_t *o, const fl_config_t *c) {
  return (const char *)c + o->off;
}

static int opt_in_range(const opt_t *o, double v) {
  if ((o->flags & OPT_LO_OPEN) ? !(v > o->lo) : !(v >= o->lo)) return 0;
  return v <= o->hi;
}

static void opt_range_text(const opt_t *o, char *buf, size_t len) {
  const char *lo_op = (o->flags & OPT_LO_OPEN) ? ">" : ">=";
  if (o->type == OPT_DOUBLE) {
    if (isinf(o->hi))
      snprintf(buf, len, "must be %s %g", lo_op, o->lo);
    else
      snprintf(buf, len, "must be in %c%g, %g]", (o->flags & OPT_LO_OPEN) ? '(' : '[', o->lo,
               o->hi);
  } else {
    if (isinf(o->hi))
      snprintf(buf, len, "must be %s %.0f", lo_op, o->lo);
    else
      snprintf(buf, len, "must be in %.0f..%.0f", o->lo, o->hi);
  }
}

/* Strict unsigned parse: digits only (strtoull would accept " -1" and wrap). */
static int parse_u64(const char *s, uint64_t *out, char *why, size_t len) {
  if (!isdigit((unsigned char)s[0])) {
    snprintf(why, len, s[0] == '-' ? "must not be negative" : "not a non-negative integer");
    return FL_EINVAL;
  }
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (*end) {
    snprintf(why, len, "not a non-negative integer");
    return FL_EINVAL;
  }
  if (errno == ERANGE) {
    snprintf(why, len, "too large");
    return FL_EINVAL;
  }
  *out = v;
  return 0;
}

static int parse_double(const char *s, double *out, char *why, size_t len) {
  char *end;
  if (!s[0] || isspace((unsigned char)s[0])) {
    snprintf(why, len, "not a number");
    return FL_EINVAL;
  }
  errno = 0;
  double v = strtod(s, &end);
  if (*end) {
    snprintf(why, len, "not a number");
    return FL_EINVAL;
  }
  if (!isfinite(v) || errno == ERANGE) {
    snprintf(why, len, "not a finite number in double range");
    return FL_EINVAL;
  }
  *out = v;
  return 0;
}

static int parse_bool(const char *s, int *out) {
  static const char *const yes[] = {"true", "yes", "on", "1"};
  static const char *const no[] = {"false", "no", "off", "0"};
  for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
    if (!strcasecmp(s, yes[i]) || !strcasecmp(s, no[i])) {
      *out = !strcasecmp(s, yes[i]);
      return 0;
    }
  }
  return FL_EINVAL;
}

/* Is s one of the '|'-separated words of choices? */
static int in_choices(const char *s, const char *choices) {
  size_t n = strlen(s);
  for (const char *p = choices; *p;) {
    size_t w = strcspn(p, "|");
    if (w == n && !strncmp(p, s, n)) return 1;
    p += w + (p[w] == '|');
  }
  return 0;
}

/* Parses `value` for option o into c. On error writes the reason (without
 * the key or value, the caller adds those) to why, returns FL_EINVAL and
 * leaves c unchanged. */
static int opt_set(const opt_t *o, fl_config_t *c, const char *value, char *why, size_t why_len) {
  void *dst = opt_field(o, c);
  uint64_t u = 0;
  double d = 0;
  switch (o->type) {
  case OPT_STR: {
    size_t n = strlen(value);
    if (n >= o->size) {
      snprintf(why, why_len, "longer than %zu characters", o->size - 1);
      return FL_EINVAL;
    }
    if (o->choices && !in_choices(value, o->choices)) {
      snprintf(why, why_len, "must be one of %s", o->choices);
      return FL_EINVAL;
    }
    /* Zero the tail too, so equal configs compare equal with memcmp. */
    memset(dst, 0, o->size);
    memcpy(dst, value, n);
    return 0;
  }
  case OPT_U32:
  case OPT_U64:
    if (parse_u64(value, &u, why, why_len) != 0) return FL_EINVAL;
    if (!opt_in_range(o, (double)u) || (o->type == OPT_U32 && u > UINT32_MAX)) {
      opt_range_text(o, why, why_len);
      return FL_EINVAL;
    }
    if (o->type == OPT_U32)
      *(uint32_t *)dst = (uint32_t)u;
    else
      *(uint64_t *)dst = u;
    return 0;
  case OPT_DOUBLE:
    if (parse_double(value, &d, why, why_len) != 0) return FL_EINVAL;
    if (!opt_in_range(o, d)) {
      opt_range_text(o, why, why_len);
      return FL_EINVAL;
    }
    *(double *)dst = d;
    return 0;
  case OPT_BOOL:
    if (parse_bool(value, (int *)dst) != 0) {
      snprintf(why, why_len, "must be true or false");
      return FL_EINVAL;
    }
    return 0;
  case OPT_CONFIG: break;
  }
  snprintf(why, why_len, "cannot be set here");
  return FL_EINVAL;
}

/* The field's current value as text, the inverse of opt_set. */
static void opt_format(const opt_t *o, const fl_config_t *c, char *buf, size_t len) {
  const void *src = opt_cfield(o, c);
  switch (o->type) {
  case OPT_STR: snprintf(buf, len, "%.*s", (int)o->size, (const char *)src); break;
  case OPT_U32: snprintf(buf, len, "%" PRIu32, *(const uint32_t *)src); break;
  case OPT_U64: snprintf(buf, len, "%" PRIu64, *(const uint64_t *)src); break;
  case OPT_DOUBLE: snprintf(buf, len, "%.17g", *(const double *)src); break;
  case OPT_BOOL: snprintf(buf, len, "%s", *(const int *)src ? "true" : "false"); break;
  case OPT_CONFIG: buf[0] = '\0'; break;
  }
}

void fl_config_defaults(fl_config_t *c) {
  memset(c, 0, sizeof *c);
  for (size_t i = 0; i < NUM_OPTS; i++) {
    char why[128];
    if (opts[i].type == OPT_CONFIG) continue;
    /* The defaults are constants of the table above; tests/test_config.c
     * checks that they all parse and validate. */
    (void)opt_set(&opts[i], c, opts[i].def, why, sizeof why);
  }
}

/* ---- spec checks, delegated to the modules that own the specs ---- */

static int check_lr(const char *s) {
  return fl_sched_parse_lr0(s, 0, NULL);
}

static int check_sched(const char *s) {
  fl_sched_t sc;
  return fl_sched_parse(s, &sc);
}

static int check_local_sched(const char *s) {
  fl_sched_t sc;
  return fl_sched_parse_local(s, &sc);
}

static int check_optim(const char *s) {
  fl_optim_config_t oc;
  return fl_optim_parse(s, &oc);
}

static int check_server_optim(const char *s) {
  fl_sopt_config_t c;
  return fl_sopt_parse(s, &c);
}

static int check_partition(const char *s) {
  return fl_partition_check_spec(s);
}

static int check_model(const char *s) {
  /* "": not given (fl_config_parse resolves it); "custom": --init's tensors
   * (a rule between keys, fl_config_validate). */
  if (!s[0] || !strcmp(s, FL_MODEL_CUSTOM)) return 0;
  /* Syntax only: the input (its width and shape) and the class count come
   * with the data. */
  return fl_model_check_spec(s);
}

static int check_input_shape(const char *s) {
  fl_shape_t shape;
  return fl_shape_parse(s, &shape);
}

int fl_config_check_endpoint(const char *ep, int bind) {
  const char *flag = bind ? "--bind" : "--connect";
  const char *forms = bind ? "tcp://HOST:PORT (HOST an IPv4 address, an interface name or * for "
                             "every interface; PORT 1..65535) or ipc://PATH"
                           : "tcp://HOST:PORT (HOST an IPv4 address or a host name; PORT "
                             "1..65535) or ipc://PATH";
  const size_t path_max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
  char why[256];
  if (!ep) return fl_err_set(FL_EINVAL, "fl_config_check_endpoint: NULL endpoint");
  if (!strncmp(ep, "ipc://", 6)) {
    const char *path = ep + 6;
    size_t n = strlen(path);
    if (n == 0)
      snprintf(why, sizeof why, "no PATH after ipc://");
    else if (!strcmp(path, "*"))
      snprintf(why, sizeof why, "ipc://* makes up a path that no client would know");
    else if (n > path_max)
      snprintf(why, sizeof why, "PATH has %zu bytes, a Unix socket's at most %zu", n, path_max);
    else
      return 0;
  } else if (!strncmp(ep, "tcp://", 6)) {
    const char *host = ep + 6, *colon = strrchr(host, ':');
    size_t hlen = colon ? (size_t)(colon - host) : strlen(host);
    int any = hlen == 1 && host[0] == '*';
    size_t ok = strspn(host, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_");
    const char *port = colon ? colon + 1 : "";
    size_t digits = strspn(port, "0123456789");
    unsigned long v = 0; /* stops growing past 65535: no overflow */
    for (size_t i = 0; i < digits && v <= 65535; i++)
      v = v * 10 + (unsigned long)(port[i] - '0');
    if (hlen == 0)
      snprintf(why, sizeof why, "no HOST");
    else if (host[0] == '[' || memchr(host, ':', hlen))
      snprintf(why, sizeof why, "IPv6 addresses are not supported (ZMQ_IPV6 is not enabled)");
    else if (any && !bind)
      snprintf(why, sizeof why, "HOST * (every interface) is only for --bind");
    else if (!any && ok < hlen)
      snprintf(why, sizeof why, "HOST '%.*s' has '%c' (letters, digits, '.', '-' and '_' only)",
               (int)(hlen < 64 ? hlen : 64), host, host[ok]);
    else if (!colon)
      snprintf(why, sizeof why, "no :PORT");
    else if (!strcmp(port, "*") || (digits > 0 && !port[digits] && v == 0))
      snprintf(why, sizeof why, "%s",
               bind ? "an ephemeral port (* or 0) is reported to no one, so no client could "
                      "connect: choose a port"
                    : "port 0: give the port the coordinator listens on");
    else if (digits == 0 || port[digits])
      snprintf(why, sizeof why, "PORT '%.64s' is not a decimal number", port);
    else if (v > 65535)
      snprintf(why, sizeof why, "port %.64s is above 65535 (libzmq would wrap it modulo 65536)",
               port);
    else
      return 0;
  } else {
    snprintf(why, sizeof why, "not a tcp:// or ipc:// endpoint");
  }
  /* At most 100 bytes of the endpoint: the whole message must fit the
   * callers' 400-byte copies, forms included. */
  return fl_err_set(FL_EINVAL, "'%.100s%s': %s; %s takes %s", ep, strlen(ep) > 100 ? "..." : "",
                    why, flag, forms);
}

static int check_bind(const char *s) {
  return fl_config_check_endpoint(s, 1);
}

static int check_connect(const char *s) {
  return fl_config_check_endpoint(s, 0);
}

/* ---- validation ---- */

static int opt_validate(const opt_t *o, const fl_config_t *c) {
  char why[128], val[64];
  const void *src = opt_cfield(o, c);
  switch (o->type) {
  case OPT_STR: {
    if (!memchr(src, '\0', o->size))
      return fl_err_set(FL_EINVAL, "--%s: longer than %zu characters", o->name, o->size - 1);
    if (o->choices && !in_choices(src, o->choices))
      return fl_err_set(FL_EINVAL, "--%s %s: must be one of %s", o->name, (const char *)src,
                        o->choices);
    if (o->check && o->check(src) != 0) {
      /* Copy first: fl_err_set must not read the buffer it writes. */
      char inner[400];
      snprintf(inner, sizeof inner, "%s", fl_err_msg());
      return fl_err_set(FL_EINVAL, "--%s: %s", o->name, inner);
    }
    return 0;
  }
  case OPT_U32:
  case OPT_U64:
  case OPT_DOUBLE: {
    double v = o->type == OPT_U32   ? (double)*(const uint32_t *)src
               : o->type == OPT_U64 ? (double)*(const uint64_t *)src
                                    : *(const double *)src;
    if (!isfinite(v) || !opt_in_range(o, v)) {
      opt_range_text(o, why, sizeof why);
      opt_format(o, c, val, sizeof val);
      return fl_err_set(FL_EINVAL, "--%s %s: %s", o->name, val, why);
    }
    return 0;
  }
  case OPT_BOOL:
  case OPT_CONFIG: return 0;
  }
  return 0;
}

int fl_config_validate(const fl_config_t *c, int prog) {
  if (!c || !prog_valid(prog)) return fl_err_set(FL_EINVAL, "fl_config_validate: bad arguments");
  for (size_t i = 0; i < NUM_OPTS; i++) {
    if (!(opts[i].progs & prog)) continue;
    int rc = opt_validate(&opts[i], c);
    if (rc != 0) return rc;
  }
  if ((prog & SC) && !strcmp(c->model, FL_MODEL_CUSTOM) && !c->init[0])
    return fl_err_set(FL_EINVAL,
                      "--model custom: needs --init FILE.safetensors, the model's tensors and "
                      "their initial values");
  if (prog == FL_PROG_SIM && !strcmp(c->model, FL_MODEL_CUSTOM))
    return fl_err_set(FL_EINVAL,
                      "--model custom: fedlr-sim trains the built-in models only (softmax, "
                      "mlp:...); a model of your own trains on its clients under "
                      "fedlr-coordinator");
  if ((prog & SC) && c->min_clients > c->clients)
    return fl_err_set(FL_EINVAL, "--min-clients %" PRIu32 ": must be <= --clients (%" PRIu32 ")",
                      c->min_clients, c->clients);
  if (prog == FL_PROG_SIM) {
    int attacking = strcmp(c->attack, "none") != 0;
    if (c->attackers > c->clients)
      return fl_err_set(FL_EINVAL, "--attackers %" PRIu32 ": must be <= --clients (%" PRIu32 ")",
                        c->attackers, c->clients);
    if (attacking && c->attackers == 0)
      return fl_err_set(FL_EINVAL,
                        "--attack %s: needs --attackers N (how many virtual clients "
                        "attack)",
                        c->attack);
    if (!attacking && c->attackers > 0)
      return fl_err_set(FL_EINVAL, "--attackers %" PRIu32 ": needs --attack SPEC (what they do)",
                        c->attackers);
  }
  if (prog == FL_PROG_COORD) {
    /* The rules of fl_config.h; a relative margin so that 3 x 0.1 is 0.3. */
    if (c->client_timeout < HEARTBEATS_PER_TIMEOUT * c->heartbeat * (1 - 1e-9))
      return fl_err_set(FL_EINVAL,
                        "--client-timeout %g: must be >= %d x --heartbeat (%g s), i.e. >= %g s: "
                        "clients heartbeat every --heartbeat s, so a shorter timeout declares "
                        "idle clients dead between two heartbeats (raise --client-timeout or "
                        "lower --heartbeat)",
                        c->client_timeout, HEARTBEATS_PER_TIMEOUT, c->heartbeat,
                        HEARTBEATS_PER_TIMEOUT * c->heartbeat);
    if (c->round_timeout < c->client_timeout)
      return fl_err_set(FL_EINVAL,
                        "--round-timeout %g: must be >= --client-timeout (%g s): a client that "
                        "dies during a round would be noticed only after the deadline, and every "
                        "retry of a round without quorum could sample it again (raise "
                        "--round-timeout or lower --client-timeout)",
                        c->round_timeout, c->client_timeout);
  }
  if (prog == FL_PROG_CLIENT && c->num_partitions > 0 && c->partition_index >= c->num_partitions)
    return fl_err_set(FL_EINVAL,
                      "--partition-index %" PRIu32 ": must be < --num-partitions (%" PRIu32 ")",
                      c->partition_index, c->num_partitions);
  return 0;
}

/* ---- the INI file ---- */

typedef struct {
  fl_config_t *c;
  int prog;
  const char *path;
  const char *p, *end;     /* the unread rest of the file's text */
  int line;                /* lines read so far: the line inih is working on */
  int err_line;            /* line of our first error, 0 if none */
  char msg[480];           /* its message */
  const char *const *skip; /* sections another reader takes (NULL-terminated), or NULL */
} ini_ctx_t;

/* Records the first error only (inih keeps going after a failed line);
 * returns 0, inih's "handler failed". */
__attribute__((format(printf, 2, 3))) static int ini_fail(ini_ctx_t *x, const char *fmt, ...) {
  if (x->err_line) return 0;
  char body[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(body, sizeof body, fmt, ap);
  va_end(ap);
  x->err_line = x->line;
  snprintf(x->msg, sizeof x->msg, "%s:%d: %s", x->path, x->line, body);
  return 0;
}

/* inih's line reader over the file's text (fgets-like), so that we know the
 * line number in the handler and a line longer than inih's buffer is an
 * error rather than being silently split into two lines. */
static char *text_read_line(char *str, int num, void *stream) {
  ini_ctx_t *x = stream;
  if (x->p >= x->end) return NULL;
  x->line++;
  const char *nl = memchr(x->p, '\n', (size_t)(x->end - x->p));
  size_t n = nl ? (size_t)(nl - x->p) : (size_t)(x->end - x->p); /* without the newline */
  const char *line = x->p;
  x->p = nl ? nl + 1 : x->end;
  if (n > (size_t)num - 1) {
    ini_fail(x, "line longer than %d characters", num - 1);
    str[0] = '\0';
    return str;
  }
  /* The newline too if it fits; inih does not need it. */
  size_t copy = nl && n < (size_t)num - 1 ? n + 1 : n;
  memcpy(str, line, copy);
  str[copy] = '\0';
  return str;
}

static int file_handler(void *user, const char *section, const char *name, const char *value) {
  ini_ctx_t *x = user;
  if (!name) return 1; /* new-section callback, if libinih was built with one */
  for (const char *const *k = x->skip; k && *k; k++)
    if (!strcmp(section, *k)) return 1;
  if (section[0] && strcmp(section, "fedlr") != 0)
    return ini_fail(x, "unknown section [%s] (keys go at the top level or under [fedlr])", section);
  const opt_t *o = opt_find(name, strlen(name));
  if (!o) return ini_fail(x, "unknown key '%s'", name);
  if (o->type == OPT_CONFIG) return ini_fail(x, "'%s' cannot be set inside a config file", name);
  if (!(o->progs & x->prog))
    return ini_fail(x, "'%s' is not an option of %s", name, prog_name(x->prog));
  char why[128];
  if (o->type == OPT_STR && strchr(value, '\n'))
    return ini_fail(x, "%s: continuation lines are not supported", name);
  if (opt_set(o, x->c, value, why, sizeof why) != 0)
    return ini_fail(x, "%s: %s (got '%.64s')", name, why, value);
  return 1;
}

static int load_file(fl_config_t *c, int prog, const char *path, const char *const *skip) {
  if (!c || !path || !prog_valid(prog))
    return fl_err_set(FL_EINVAL, "fl_config_load_file: bad arguments");
  uint8_t *text = NULL;
  size_t len = 0;
  /* The whole file first, bounded, and parsed from memory: a device
   * (/dev/zero), a directory or an endless pipe is refused at once instead
   * of being read forever. A pipe is allowed (--config <(...)). */
  int rc = fl_file_read_all(path, FL_CONFIG_MAX_BYTES, FL_FILE_STREAM_OK, &text, &len);
  if (rc) {
    char inner[400];
    snprintf(inner, sizeof inner, "%s", fl_err_msg());
    return fl_err_set(rc, "--config: %s", inner);
  }
  if (memchr(text, '\0', len)) {
    free(text);
    return fl_err_set(FL_EINVAL, "--config: '%s' holds a NUL byte: not a text (INI) file", path);
  }
  /* Load into a copy so that c is unchanged on error. */
  fl_config_t tmp = *c;
  ini_ctx_t x = {.c = &tmp,
                 .prog = prog,
                 .path = path,
                 .p = (const char *)text,
                 .end = (const char *)text + len,
                 .skip = skip};
  int ret = ini_parse_stream(text_read_line, &x, file_handler, &x);
  if (ret < 0) {
    rc = fl_err_set(FL_ENOMEM, "%s: out of memory while parsing", path);
  } else if (ret > 0 && (!x.err_line || ret < x.err_line)) {
    /* inih reports its first failed line; one before ours is a syntax error. */
    rc = fl_err_set(FL_EINVAL, "%s:%d: syntax error (expected 'key = value' or '[fedlr]')", path,
                    ret);
  } else if (x.err_line) {
    rc = fl_err_set(FL_EINVAL, "%s", x.msg);
  }
  free(text);
  if (rc == 0) *c = tmp;
  return rc;
}

int fl_config_load_file(fl_config_t *c, int prog, const char *path) {
  return load_file(c, prog, path, NULL);
}

const char *fl_config_key(const char *name) {
  const opt_t *o = name ? opt_find(name, strlen(name)) : NULL;
  return o && o->type != OPT_CONFIG ? o->name : NULL;
}

int fl_config_set(fl_config_t *c, int prog, const char *name, const char *value) {
  const opt_t *o = name ? opt_find(name, strlen(name)) : NULL;
  if (!o || o->type == OPT_CONFIG) return fl_err_set(FL_EINVAL, "unknown key '%s'", name);
  if (!(o->progs & prog))
    return fl_err_set(FL_EINVAL, "'%s' is not an option of %s", name, prog_name(prog));
  fl_config_t tmp = *c;
  char why[128];
  if (opt_set(o, &tmp, value, why, sizeof why) != 0)
    return fl_err_set(FL_EINVAL, "--%s %.64s: %s", o->name, value, why);
  if (opt_validate(o, &tmp) != 0) return FL_EINVAL;
  *c = tmp;
  return 0;
}

void fl_config_write(const fl_config_t *c, int prog, FILE *f) {
  char val[FL_PATH_MAX + 1];
  /* inih strips surrounding blanks and " ;comment" tails, so values with
   * those do not round-trip; none of the defaults or usual values have them. */
  fprintf(f, "# %s configuration\n", prog_name(prog));
  for (size_t i = 0; i < NUM_OPTS; i++) {
    if (!(opts[i].progs & prog) || opts[i].type == OPT_CONFIG) continue;
    opt_format(&opts[i], c, val, sizeof val);
    fprintf(f, "%s = %s\n", opts[i].name, val);
  }
}

/* ---- argv ---- */

enum { FLAG_HELP = 1 };

/* One flag of argv and its value (NULL for a bool). */
typedef struct {
  const opt_t *opt;
  const char *value;
  const char *text; /* the flag as typed, without "=value" */
  int text_len;
} flag_t;

/* Reads the flag at argv[*i], advancing *i past it and its value. Returns 0,
 * FLAG_HELP for -h/--help, or FL_EINVAL with a message. */
static int flag_next(int prog, int argc, char **argv, int *i, flag_t *fl) {
  const char *a = argv[(*i)++];
  if (!strcmp(a, "-h") || !strcmp(a, "--help")) return FLAG_HELP;
  if (a[0] != '-' || !strcmp(a, "-") || !strcmp(a, "--"))
    return fl_err_set(FL_EINVAL, "unexpected argument '%s' (%s takes only --options; see --help)",
                      a, prog_name(prog));
  size_t n = strcspn(a, "=");
  fl->text = a;
  fl->text_len = (int)n;
  fl->opt = a[1] == '-' ? opt_find(a + 2, n - 2) : NULL;
  if (!fl->opt) return fl_err_set(FL_EINVAL, "unknown flag '%.*s' (see --help)", (int)n, a);
  if (!(fl->opt->progs & prog))
    return fl_err_set(FL_EINVAL, "%.*s is not an option of %s", (int)n, a, prog_name(prog));
  if (fl->opt->type == OPT_BOOL) {
    if (a[n]) return fl_err_set(FL_EINVAL, "%.*s takes no value", (int)n, a);
    fl->value = NULL;
    return 0;
  }
  if (a[n]) {
    fl->value = a + n + 1;
    return 0;
  }
  /* A following "--flag" means the value was forgotten; "--key=--x" still
   * passes a value that starts with dashes. */
  if (*i >= argc || !strncmp(argv[*i], "--", 2))
    return fl_err_set(FL_EINVAL, "%s needs a value", a);
  fl->value = argv[(*i)++];
  return 0;
}

int fl_config_parse(fl_config_t *c, int prog, int argc, char **argv, int *want_help) {
  return fl_config_parse_sections(c, prog, argc, argv, want_help, NULL);
}

int fl_config_parse_sections(fl_config_t *c, int prog, int argc, char **argv, int *want_help,
                             const char *const *skip) {
  if (!c || !want_help || !prog_valid(prog) || argc < 0 || (argc > 0 && !argv))
    return fl_err_set(FL_EINVAL, "fl_config_parse: bad arguments");
  *want_help = 0;
  fl_config_defaults(c);

  /* Pass 1: --help anywhere wins (even after a bad flag), and --config is
   * loaded before the other flags so that they override it. */
  const char *config_path = NULL;
  flag_t fl;
  for (int i = 1; i < argc;) {
    int rc = flag_next(prog, argc, argv, &i, &fl);
    if (rc == FLAG_HELP) {
      *want_help = 1;
      return 0;
    }
    if (rc == 0 && fl.opt->type == OPT_CONFIG) {
      if (config_path) return fl_err_set(FL_EINVAL, "--config given twice");
      config_path = fl.value;
    }
  }
  fl_err_clear();
  if (config_path) {
    int rc = load_file(c, prog, config_path, skip);
    if (rc != 0) return rc;
  }

  /* Pass 2: the flags, in order; a repeated flag's last value wins. */
  for (int i = 1; i < argc;) {
    int rc = flag_next(prog, argc, argv, &i, &fl);
    if (rc != 0) return rc;
    if (fl.opt->type == OPT_CONFIG) continue;
    if (fl.opt->type == OPT_BOOL) {
      *(int *)opt_field(fl.opt, c) = 1;
      continue;
    }
    char why[128];
    if (opt_set(fl.opt, c, fl.value, why, sizeof why) != 0)
      return fl_err_set(FL_EINVAL, "--%s %.64s: %s", fl.opt->name, fl.value, why);
  }
  int rc = fl_config_validate(c, prog);
  /* No --model: softmax, or with --init the model the file holds (the
   * program reads it). */
  if (rc == 0 && (prog & SC) && !c->model[0] && !c->init[0])
    snprintf(c->model, sizeof c->model, "softmax");
  return rc;
}

/* ---- help ---- */

static const char *const prog_blurb[] = {
    [FL_PROG_SIM] =
        "Simulates federated training: the coordinator and every client in one process.",
    [FL_PROG_COORD] = "Runs the federated-learning coordinator; clients connect over ZeroMQ.",
    [FL_PROG_CLIENT] = "Runs one federated-learning client against a coordinator.",
};

enum { HELP_COLS = 100 };

/* Prints text from column col (the cursor is there), wrapping at spaces
 * before HELP_COLS with continuation lines indented to col; '\1' prints as
 * a space that is never broken. */
static void print_wrapped(FILE *f, const char *text, int col) {
  int pos = col;
  for (const char *p = text; *p;) {
    int w = (int)strcspn(p, " ");
    if (pos > col && pos + 1 + w > HELP_COLS) {
      fprintf(f, "\n%*s", col, "");
      pos = col;
    } else if (pos > col) {
      fputc(' ', f);
      pos++;
    }
    for (int i = 0; i < w; i++)
      fputc(p[i] == '\1' ? ' ' : p[i], f);
    pos += w;
    p += w;
    while (*p == ' ')
      p++;
  }
  fputc('\n', f);
}

static int opt_left(const opt_t *o, char *buf, size_t len) {
  return snprintf(buf, len, "--%s%s%s", o->name, o->metavar ? " " : "",
                  o->metavar ? o->metavar : "");
}

void fl_config_print_help(FILE *f, int prog, const char *argv0) {
  if (!prog_valid(prog)) return;
  char left[64];
  int width = (int)strlen("-h, --help");
  for (size_t i = 0; i < NUM_OPTS; i++) {
    if (!(opts[i].progs & prog)) continue;
    int w = opt_left(&opts[i], left, sizeof left);
    if (w > width) width = w;
  }
  fprintf(f, "usage: %s [--config FILE] [--option VALUE | --option=VALUE]...\n%s\n",
          argv0 && *argv0 ? argv0 : prog_name(prog), prog_blurb[prog]);
  for (int g = 0; g < G_COUNT; g++) {
    int header = 0;
    for (size_t i = 0; i < NUM_OPTS; i++) {
      const opt_t *o = &opts[i];
      if (!(o->progs & prog) || o->group != g) continue;
      if (!header) fprintf(f, "\n%s:\n", group_title[g]);
      header = 1;
      opt_left(o, left, sizeof left);
      char text[256];
      if (o->def[0] && o->type != OPT_BOOL)
        /* \1 is a space that print_wrapped does not break at. */
        snprintf(text, sizeof text, "%s (default\1%s)", o->help, o->def);
      else
        snprintf(text, sizeof text, "%s", o->help);
      fprintf(f, "  %-*s  ", width, left);
      print_wrapped(f, text, width + 4);
    }
    if (g == G_GENERAL) fprintf(f, "  %-*s  %s\n", width, "-h, --help", "show this help");
  }
  fprintf(f, "\nA config file holds 'option = value' lines (top level or under [fedlr]);\n"
             "'-' and '_' are the same in its keys.\n");
}
