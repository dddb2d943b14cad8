/* fl_config: the run configuration, from flags and an INI config file.
 *
 * One table describes every key: its flag (--local-epochs), its config-file
 * key (local-epochs or local_epochs, in the file's top level or a [fedlr]
 * section), its type, default, range and help text, and which programs use
 * it. `--config FILE` is read first (libinih), then flags override the file.
 * Bad values are reported with the key, the value and what is allowed:
 *   "--fraction 1.5: must be in (0, 1]" / "config.ini:7: unknown key 'lr0'". */
#ifndef FL_CONFIG_H
#define FL_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define FL_PATH_MAX 512

/* Which program a key belongs to (bit mask). */
enum { FL_PROG_SIM = 1, FL_PROG_COORD = 2, FL_PROG_CLIENT = 4 };

typedef struct {
  /* data */
  char dataset[FL_PATH_MAX];   /* "fashion-mnist", "mnist", or a file (.csv / IDX) */
  char data_dir[FL_PATH_MAX];  /* "" = /usr/share/datasets/<dataset> */
  char test_data[FL_PATH_MAX]; /* test file when dataset is a file ("" = none) */
  char partition[64];          /* "iid" */
  double holdout;              /* 0: fraction of each client's examples held out for federated
                                * evaluation (fl_partition_holdout) */
  /* model and training */
  char input_shape[32];     /* "": CxHxW, the examples' image shape (fl_shape.h) */
  char model[128];          /* "softmax"; "custom" (a model given by --init); fl_config_parse
                             * sets "softmax" when neither --model nor --init is given, and
                             * leaves "" with --init alone: the model the file holds */
  char init[FL_PATH_MAX];   /* "": a safetensors file of initial weights */
  char optimizer[128];      /* "sgd" */
  char lr[64];              /* "0.1", or "auto" / "auto:SCALE" (1/sqrt(n_params)) */
  char schedule[256];       /* "const" */
  char local_schedule[256]; /* "const" */
  char local_unit[16];      /* "epoch" | "step" */
  uint32_t local_epochs;    /* 1 */
  uint32_t batch_size;      /* 10 */
  /* server optimizer and FedProx */
  char server_optimizer[128]; /* "fedavg": a spec for fl_sopt_parse() (fl_server_optim.h) */
  double server_lr;           /* 1 */
  char server_schedule[256];  /* "const" */
  double prox_mu;             /* 0 = off */
  /* federation */
  uint32_t clients;       /* 100 */
  double fraction;        /* 0.1 */
  uint32_t min_clients;   /* 1: minimum sampled per round (coordinator: to start) */
  uint32_t rounds;        /* 20 */
  uint64_t seed;          /* 1 */
  uint32_t workers;       /* 0 = one per core */
  uint32_t eval_every;    /* 1 */
  double eval_fraction;   /* 1: of the clients holding evaluation examples, asked to evaluate */
  double target_accuracy; /* 0 = off */
  /* robust aggregation (engine) and attacks (client trainer) */
  char aggregator[64];   /* "fedavg": a spec for fl_agg_parse() (coordinator/fl_agg.h) */
  double clip_norm;      /* 0 = off */
  uint64_t max_examples; /* 0 = off */
  uint32_t quarantine;   /* 5: rounds a client with a rejected update is not sampled */
  uint32_t max_retries;  /* 10: abandoned attempts of one round before the run fails */
  char attack[128];      /* "none": a spec for fl_attack_parse() (client/fl_attack.h) */
  uint32_t attackers;    /* 0: fedlr-sim's malicious virtual clients */
  /* output */
  char metrics[FL_PATH_MAX]; /* "" = none */
  char out[FL_PATH_MAX];     /* "" = none */
  int quiet;                 /* 0 */
  /* "" = none: the folder of TensorBoard run folders (fl_tboard) */
  char tensorboard[FL_PATH_MAX];
  /* networked (coordinator / client), used from the networking issue on */
  char bind[256];            /* "tcp://0.0.0.0:7070" */
  char connect[256];         /* "tcp://127.0.0.1:7070" */
  double round_timeout;      /* 60 s */
  double quorum;             /* 0.8 of sampled */
  char resume[FL_PATH_MAX];  /* "" */
  uint32_t checkpoint_every; /* 1 */
  uint32_t start_clients;    /* 0 = min_clients: joined clients before the first round */
  double start_timeout;      /* 600 s: longest wait for enough clients to start a round */
  double join_timeout;       /* 10 s: a connection that carries no client after it is closed */
  uint32_t max_connections;  /* 0 = 2 x clients + 64: open connections at most */
  double heartbeat;          /* 1 s: client heartbeat interval */
  double client_timeout;     /* 10 s: silence after which a client is dead */
  char name[128];            /* client name, "" = hostname-pid */
  char data[FL_PATH_MAX];    /* client's own data file */
  uint32_t num_partitions;   /* 0 */
  uint32_t partition_index;  /* 0 */
  double give_up;            /* 300 s: client exits after this long without a word, 0 = never */
  /* CurveZMQ and limits (issue 5) */
  char curve_secret[FL_PATH_MAX];    /* "" = plaintext: this side's secret key file */
  char allow_clients[FL_PATH_MAX];   /* coordinator: DIR of *.key files or a "KEY NAME" file */
  char coordinator_key[FL_PATH_MAX]; /* client: the coordinator's public key, Z85 or a file */
  double handshake_timeout;          /* 5 s: a ZMTP/CURVE handshake must finish within this */
  double join_rate;                  /* 100 joins/s admitted on average (token bucket) */
  uint32_t join_burst;               /* 200: the bucket's size */
} fl_config_t;

/* Fills every key with its default. */
void fl_config_defaults(fl_config_t *c);

/* Parses argv for program `prog` (one FL_PROG_* bit): reads --config FILE
 * first, then applies the flags. Flags take "--key value" or "--key=value".
 * Keys of other programs are rejected. Validates every value (ranges,
 * choices, endpoints, the rules between keys, and the specs whose parsers
 * live in common/: schedule, local schedule, rate, optimizer, partition,
 * model syntax). The specs of coordinator/ and client/ modules are stored
 * as given, for the program to parse right after this call (--aggregator:
 * fl_agg_parse via fl_engine_agg_from; --attack: fl_attack_parse).
 * Returns 0, or FL_EINVAL with a message naming the flag/line. If --help or
 * -h is given, sets *want_help = 1 and returns 0 without validating. */
int fl_config_parse(fl_config_t *c, int prog, int argc, char **argv, int *want_help);

/* fl_config_parse, where the config file may also hold the sections named
 * in `skip` (NULL-terminated; NULL: none), which are left to another
 * reader (fedlr-sweep's [grid] and [sweep]). */
int fl_config_parse_sections(fl_config_t *c, int prog, int argc, char **argv, int *want_help,
                             const char *const *skip);

/* Sets key `name` (a flag name without "--"; '_' matches '-') of program
 * `prog` from its text `value` (bools: true/false), validated as a flag's
 * value is: its range, choices or spec (not the rules between keys: see
 * fl_config_validate). 0, or FL_EINVAL with a message naming the key and
 * the value; c is unchanged on error. */
int fl_config_set(fl_config_t *c, int prog, const char *name, const char *value);

/* The canonical name of key `name` ('_' read as '-'), or NULL if there is
 * no such key. */
const char *fl_config_key(const char *name);

/* The largest config file read (a real one is a few KiB). */
#define FL_CONFIG_MAX_BYTES ((size_t)1 << 20)

/* Loads an INI file into c (no validation; used by fl_config_parse). The
 * file is a regular file or a pipe (a FIFO, /dev/stdin, bash's <(...)) of
 * at most FL_CONFIG_MAX_BYTES, read whole before parsing: a directory or a
 * device (/dev/zero) is refused at once (FL_EINVAL), a larger file or
 * stream with FL_ETOOBIG, a missing one with FL_ENOENT; a text with a NUL
 * byte is FL_EINVAL. c is unchanged on error. */
int fl_config_load_file(fl_config_t *c, int prog, const char *path);

/* Validates all values for program `prog`: each key's range, choices or
 * spec (as fl_config_parse; --aggregator and --attack are the program's),
 * then the rules between keys, e.g. for the coordinator
 *   --client-timeout >= 3 x --heartbeat   (a client heartbeats every
 *       --heartbeat s and drops one it cannot queue; the coordinator checks
 *       silence every 250 ms: three intervals survive a lost heartbeat and a
 *       late one, a shorter timeout makes idle clients flap dead/alive)
 *   --round-timeout >= --client-timeout   (a client that dies in a round is
 *       noticed before the deadline, so a round retried without quorum does
 *       not sample it again and again).
 * Returns 0, or FL_EINVAL with a message naming the flag(s) and what to
 * change. */
int fl_config_validate(const fl_config_t *c, int prog);

/* Checks a ZeroMQ endpoint for --bind (bind = 1) or --connect (bind = 0).
 * Accepted: "tcp://HOST:PORT" with PORT 1..65535 and HOST an IPv4 address
 * or a host name (--connect), or an IPv4 address, an interface name or "*"
 * for every interface (--bind: libzmq does not resolve names there);
 * "ipc://PATH" with a PATH of 1..107 bytes (a Unix socket's sun_path holds
 * 108 with the NUL; "@NAME" is Linux's abstract namespace). Refused: other
 * transports; a port that is missing, not decimal digits or above 65535
 * (libzmq would take 99999 modulo 65536, i.e. 34463); an ephemeral port
 * ("*" or 0) or IPC path ("*"), since the coordinator does not report what
 * the system picked and no client could find it; IPv6 addresses (fedlr
 * does not enable ZMQ_IPV6: libzmq would fail or retry forever). Whether
 * HOST exists is not checked. Returns 0, or FL_EINVAL with a message naming
 * the endpoint, what is wrong, the flag and the accepted forms. */
int fl_config_check_endpoint(const char *endpoint, int bind);

/* Prints usage for `prog`: every key with its default and help. */
void fl_config_print_help(FILE *f, int prog, const char *argv0);

/* Writes the config as an INI file body (for --out and checkpoints). */
void fl_config_write(const fl_config_t *c, int prog, FILE *f);

#endif
