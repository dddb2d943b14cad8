/* Tests of fl_config: defaults, flags, the INI file, errors, help, writer. */
#include "fl_config.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "fl_clock.h"
#include "fl_error.h"
#include "fl_test.h"

static int argc_of(char **argv) {
  int n = 0;
  while (argv[n])
    n++;
  return n;
}

/* Parses a NULL-terminated argv (argv[0] is the program name). */
static int parse(fl_config_t *c, int prog, char **argv, int *help) {
  int h = 0;
  int rc = fl_config_parse(c, prog, argc_of(argv), argv, help ? help : &h);
  return rc;
}

#define ARGV(...) ((char *[]){"fedlr", __VA_ARGS__, NULL})

/* Writes text to a file in the test's scratch directory; returns its path. */
static const char *write_file(const char *name, const char *text) {
  static char path[4][600];
  static int next;
  char *p = path[next++ % 4];
  snprintf(p, sizeof path[0], "%s/%s", fl_test_tmpdir(), name);
  FILE *f = fopen(p, "w");
  if (!f) return p;
  fputs(text, f);
  fclose(f);
  return p;
}

TEST(defaults) {
  fl_config_t c;
  fl_config_defaults(&c);
  ASSERT_STR_EQ(c.dataset, "fashion-mnist");
  ASSERT_STR_EQ(c.data_dir, ""); /* = /usr/share/datasets/<dataset> */
  ASSERT_STR_EQ(c.partition, "iid");
  ASSERT_STR_EQ(c.model, ""); /* softmax, or --init's model: fl_config_parse resolves it */
  ASSERT_STR_EQ(c.init, "");
  ASSERT_NEAR(c.eval_fraction, 1, 0);
  ASSERT_NEAR(c.holdout, 0, 0);
  ASSERT_STR_EQ(c.optimizer, "sgd");
  ASSERT_STR_EQ(c.lr, "0.1");
  ASSERT_STR_EQ(c.schedule, "const");
  ASSERT_STR_EQ(c.local_schedule, "const");
  ASSERT_STR_EQ(c.local_unit, "epoch");
  ASSERT_EQ(c.local_epochs, 1);
  ASSERT_EQ(c.batch_size, 10);
  ASSERT_EQ(c.clients, 100);
  ASSERT_NEAR(c.fraction, 0.1, 0);
  ASSERT_EQ(c.min_clients, 1);
  ASSERT_EQ(c.rounds, 20);
  ASSERT_EQ(c.seed, 1);
  ASSERT_EQ(c.workers, 0);
  ASSERT_EQ(c.eval_every, 1);
  ASSERT_NEAR(c.target_accuracy, 0, 0);
  ASSERT_STR_EQ(c.metrics, "");
  ASSERT_STR_EQ(c.out, "");
  ASSERT_EQ(c.quiet, 0);
  ASSERT_STR_EQ(c.bind, "tcp://0.0.0.0:7070");
  ASSERT_STR_EQ(c.connect, "tcp://127.0.0.1:7070");
  ASSERT_NEAR(c.round_timeout, 60, 0);
  ASSERT_NEAR(c.quorum, 0.8, 0);
  ASSERT_EQ(c.checkpoint_every, 1);
  ASSERT_EQ(c.num_partitions, 0);
  ASSERT_NEAR(c.heartbeat, 1, 0);
  ASSERT_NEAR(c.client_timeout, 10, 0);
  ASSERT_NEAR(c.give_up, 300, 0);
  /* The defaults in the table must be valid for every program. */
  ASSERT_EQ(fl_config_validate(&c, FL_PROG_SIM), 0);
  ASSERT_EQ(fl_config_validate(&c, FL_PROG_COORD), 0);
  ASSERT_EQ(fl_config_validate(&c, FL_PROG_CLIENT), 0);
  /* No arguments at all gives the defaults. */
  fl_config_t d;
  char *argv[] = {"fedlr-sim", NULL};
  ASSERT_EQ(parse(&d, FL_PROG_SIM, argv, NULL), 0);
  ASSERT_STR_EQ(d.model, "softmax"); /* the one key parsing resolves */
  snprintf(c.model, sizeof c.model, "softmax");
  ASSERT_EQ(memcmp(&c, &d, sizeof c), 0);
}

TEST(flags_override_file) {
  const char *ini = write_file("sim.ini", "; a comment\n"
                                          "rounds = 5\n"
                                          "local_epochs = 3\n"
                                          "[fedlr]\n"
                                          "fraction = 0.5   ; inline comment\n"
                                          "schedule = exp:gamma=0.9\n"
                                          "quiet = yes\n");
  fl_config_t c;
  char *argv[] = {"fedlr-sim", "--rounds",     "7",  "--config",
                  (char *)ini, "--batch-size", "32", NULL};
  ASSERT_EQ(parse(&c, FL_PROG_SIM, argv, NULL), 0);
  ASSERT_EQ(c.rounds, 7);       /* the flag wins even when it comes before --config */
  ASSERT_EQ(c.local_epochs, 3); /* from the file, underscore key */
  ASSERT_NEAR(c.fraction, 0.5, 0);
  ASSERT_STR_EQ(c.schedule, "exp:gamma=0.9");
  ASSERT_EQ(c.quiet, 1);
  ASSERT_EQ(c.batch_size, 32);
  ASSERT_EQ(c.clients, 100); /* untouched: default */
}

TEST(key_equals_value) {
  fl_config_t c;
  ASSERT_EQ(parse(&c, FL_PROG_SIM,
                  ARGV("--rounds=9", "--lr=auto:2", "--quiet", "--local_epochs", "4",
                       "--seed=18446744073709551615", "--metrics=m.jsonl", "--workers=256"),
                  NULL),
            0);
  ASSERT_EQ(c.rounds, 9);
  ASSERT_STR_EQ(c.lr, "auto:2");
  ASSERT_EQ(c.quiet, 1);
  ASSERT_EQ(c.local_epochs, 4);
  ASSERT_TRUE(c.seed == UINT64_MAX);
  ASSERT_STR_EQ(c.metrics, "m.jsonl");
  ASSERT_EQ(c.workers, 256);
  /* A repeated flag: the last one wins. */
  ASSERT_EQ(parse(&c, FL_PROG_SIM, ARGV("--rounds", "3", "--rounds", "4"), NULL), 0);
  ASSERT_EQ(c.rounds, 4);
  /* --key=value passes a value that starts with dashes. */
  ASSERT_EQ(parse(&c, FL_PROG_CLIENT, ARGV("--name=--odd"), NULL), 0);
  ASSERT_STR_EQ(c.name, "--odd");
}

TEST(help_flag) {
  fl_config_t c;
  int help = 0;
  /* --help wins even after a bad flag or with a missing config file. */
  ASSERT_EQ(
      parse(&c, FL_PROG_SIM, ARGV("--bogus", "--config", "/nonexistent.ini", "--help"), &help), 0);
  ASSERT_EQ(help, 1);
  help = 0;
  ASSERT_EQ(parse(&c, FL_PROG_COORD, ARGV("-h"), &help), 0);
  ASSERT_EQ(help, 1);
  /* A flag's value that happens to be "-h" is a value. */
  help = 0;
  ASSERT_EQ(parse(&c, FL_PROG_CLIENT, ARGV("--name", "-h"), &help), 0);
  ASSERT_EQ(help, 0);
  ASSERT_STR_EQ(c.name, "-h");
}

typedef struct {
  int prog;
  char *args[6];
  int code;
  const char *want[2]; /* substrings of the message */
} err_case_t;

TEST(flag_errors) {
  static char long_name[600];
  memset(long_name, 'a', sizeof long_name - 1);
  const err_case_t cases[] = {
      {FL_PROG_SIM, {"--bogus"}, FL_EINVAL, {"unknown flag '--bogus' (see --help)"}},
      {FL_PROG_SIM, {"--bogus=3"}, FL_EINVAL, {"unknown flag '--bogus' (see --help)"}},
      {FL_PROG_SIM, {"-x"}, FL_EINVAL, {"unknown flag '-x'"}},
      {FL_PROG_SIM, {"--rounds"}, FL_EINVAL, {"--rounds needs a value"}},
      {FL_PROG_SIM, {"--rounds", "--seed", "3"}, FL_EINVAL, {"--rounds needs a value"}},
      {FL_PROG_SIM, {"--rounds", "12x"}, FL_EINVAL, {"--rounds 12x: not a non-negative integer"}},
      {FL_PROG_SIM, {"--rounds", ""}, FL_EINVAL, {"--rounds : not a non-negative integer"}},
      {FL_PROG_SIM, {"--rounds", "-3"}, FL_EINVAL, {"--rounds -3: must not be negative"}},
      {FL_PROG_SIM, {"--rounds", " 3"}, FL_EINVAL, {"not a non-negative integer"}},
      {FL_PROG_SIM, {"--clients", "99999999999999999999999"}, FL_EINVAL, {"too large"}},
      {FL_PROG_SIM, {"--clients", "4294967297"}, FL_EINVAL, {"must be in 1..1000000"}},
      {FL_PROG_SIM, {"--fraction", "1.5"}, FL_EINVAL, {"--fraction 1.5: must be in (0, 1]"}},
      {FL_PROG_SIM, {"--fraction=0"}, FL_EINVAL, {"--fraction 0: must be in (0, 1]"}},
      {FL_PROG_SIM, {"--fraction", "nan"}, FL_EINVAL, {"not a finite number"}},
      {FL_PROG_SIM, {"--fraction", "0.5x"}, FL_EINVAL, {"--fraction 0.5x: not a number"}},
      {FL_PROG_SIM, {"--local-epochs", "0"}, FL_EINVAL, {"--local-epochs 0: must be in 1..1000"}},
      {FL_PROG_SIM, {"--batch-size", "65537"}, FL_EINVAL, {"must be in 1..65536"}},
      {FL_PROG_SIM, {"--workers", "257"}, FL_EINVAL, {"--workers 257: must be in 0..256"}},
      {FL_PROG_SIM, {"--eval-every", "0"}, FL_EINVAL, {"--eval-every 0"}},
      {FL_PROG_SIM, {"--target-accuracy", "1.01"}, FL_EINVAL, {"must be in [0, 1]"}},
      {FL_PROG_SIM,
       {"--local-unit", "batch"},
       FL_EINVAL,
       {"--local-unit batch: must be one of epoch|step"}},
      {FL_PROG_SIM, {"--lr", "fast"}, FL_EINVAL, {"--lr: ", "'fast'"}},
      {FL_PROG_SIM, {"--lr", "-0.1"}, FL_EINVAL, {"--lr: "}},
      {FL_PROG_SIM, {"--lr", "auto:0"}, FL_EINVAL, {"--lr: ", "auto:0"}},
      {FL_PROG_SIM, {"--schedule", "bogus:x=1"}, FL_EINVAL, {"--schedule: ", "bogus"}},
      {FL_PROG_SIM, {"--local-schedule", "plateau"}, FL_EINVAL, {"--local-schedule: ", "plateau"}},
      {FL_PROG_SIM, {"--optimizer", "sgdd"}, FL_EINVAL, {"--optimizer: ", "sgdd"}},
      {FL_PROG_SIM, {"--partition", "halves"}, FL_EINVAL, {"--partition: ", "halves"}},
      {FL_PROG_SIM, {"--model", "cnn:conv4x4x8"}, FL_EINVAL, {"--model: ", "odd size"}},
      {FL_PROG_SIM,
       {"--min-clients", "50", "--clients", "10"},
       FL_EINVAL,
       {"--min-clients 50: must be <= --clients (10)"}},
      {FL_PROG_SIM, {"--quiet=1"}, FL_EINVAL, {"--quiet takes no value"}},
      {FL_PROG_SIM, {"data.csv"}, FL_EINVAL, {"unexpected argument 'data.csv'"}},
      {FL_PROG_SIM, {"--rounds", "3", "--"}, FL_EINVAL, {"unexpected argument '--'"}},
      {FL_PROG_SIM,
       {"--dataset", long_name},
       FL_EINVAL,
       {"--dataset", "longer than 511 characters"}},
      {FL_PROG_SIM, {"--bind", "tcp://*:1"}, FL_EINVAL, {"--bind is not an option of fedlr-sim"}},
      {FL_PROG_COORD,
       {"--workers", "2"},
       FL_EINVAL,
       {"--workers is not an option of fedlr-coordinator"}},
      {FL_PROG_COORD,
       {"--round-timeout", "0"},
       FL_EINVAL,
       {"--round-timeout 0: must be in (0, 604800]"}},
      {FL_PROG_COORD, {"--round-timeout", "1e300"}, FL_EINVAL, {"must be in (0, 604800]"}},
      {FL_PROG_CLIENT, {"--give-up", "-1"}, FL_EINVAL, {"--give-up -1: must be in [0, 604800]"}},
      {FL_PROG_COORD,
       {"--give-up", "10"},
       FL_EINVAL,
       {"--give-up is not an option of fedlr-coordinator"}},
      {FL_PROG_COORD, {"--quorum", "0"}, FL_EINVAL, {"--quorum 0: must be in (0, 1]"}},
      {FL_PROG_COORD, {"--checkpoint-every", "0"}, FL_EINVAL, {"--checkpoint-every 0"}},
      {FL_PROG_CLIENT, {"--rounds", "2"}, FL_EINVAL, {"--rounds is not an option of fedlr-client"}},
      {FL_PROG_CLIENT,
       {"--num-partitions", "4", "--partition-index", "4"},
       FL_EINVAL,
       {"--partition-index 4: must be < --num-partitions (4)"}},
      {FL_PROG_SIM,
       {"--config", "/nonexistent/x.ini"},
       FL_ENOENT,
       {"--config: '/nonexistent/x.ini' does not exist"}},
      {FL_PROG_SIM, {"--config=/nonexistent/x.ini"}, FL_ENOENT, {"/nonexistent/x.ini"}},
      {FL_PROG_SIM,
       {"--config", "a.ini", "--config", "b.ini"},
       FL_EINVAL,
       {"--config given twice"}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const err_case_t *k = &cases[i];
    char *argv[8] = {"fedlr"};
    int argc = 1;
    for (int j = 0; j < 6 && k->args[j]; j++)
      argv[argc++] = k->args[j];
    fl_config_t c;
    int help = 0;
    fl_err_clear();
    int rc = fl_config_parse(&c, k->prog, argc, argv, &help);
    if (rc != k->code || help)
      fprintf(stderr, "  case %zu (%s): rc %d, msg \"%s\"\n", i, k->args[0], rc, fl_err_msg());
    ASSERT_EQ(rc, k->code);
    for (int j = 0; j < 2 && k->want[j]; j++)
      ASSERT_CONTAINS(fl_err_msg(), k->want[j]);
  }
}

typedef struct {
  int prog;
  const char *text;
  const char *want; /* substring after "FILE:" */
} ini_case_t;

TEST(file_errors) {
  const ini_case_t cases[] = {
      {FL_PROG_SIM, "rounds = 3\n\nlr0 = 0.1\n", ":3: unknown key 'lr0'"},
      {FL_PROG_SIM, "# c\nrounds = 0\n", ":2: rounds: must be in 1..1000000 (got '0')"},
      {FL_PROG_SIM, "fraction = 1.5\n", ":1: fraction: must be in (0, 1]"},
      {FL_PROG_SIM, "quiet = maybe\n", ":1: quiet: must be true or false"},
      {FL_PROG_COORD, "rounds = 3\nworkers = 2\n",
       ":2: 'workers' is not an option of fedlr-coordinator"},
      {FL_PROG_SIM, "rounds = 3\nthis is not ini\n", ":2: syntax error"},
      {FL_PROG_SIM, "[other]\nrounds = 3\n", ":2: unknown section [other]"},
      {FL_PROG_SIM, "config = x.ini\n", ":1: 'config' cannot be set inside a config file"},
      {FL_PROG_SIM, "rounds = 3\nbogus = 1\nrounds = x\n", ":2: unknown key 'bogus'"},
      {FL_PROG_SIM, "x\nbogus = 1\n", ":1: syntax error"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *path = write_file("bad.ini", cases[i].text);
    char want[700];
    snprintf(want, sizeof want, "%s%s", path, cases[i].want);
    fl_config_t c, before;
    fl_config_defaults(&c);
    before = c;
    int rc = fl_config_load_file(&c, cases[i].prog, path);
    if (rc != FL_EINVAL) fprintf(stderr, "  case %zu: rc %d, msg \"%s\"\n", i, rc, fl_err_msg());
    ASSERT_EQ(rc, FL_EINVAL);
    ASSERT_CONTAINS(fl_err_msg(), want);
    ASSERT_EQ(memcmp(&c, &before, sizeof c), 0); /* unchanged on error */
  }
  /* A line longer than libinih's buffer is an error, not two lines. */
  char text[1200];
  snprintf(text, sizeof text, "rounds = 3\nmetrics = /%01000d\n", 0);
  const char *path = write_file("long.ini", text);
  fl_config_t c;
  fl_config_defaults(&c);
  ASSERT_EQ(fl_config_load_file(&c, FL_PROG_SIM, path), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), ":2: line longer than");
  /* Through fl_config_parse the file error comes out unchanged. */
  path = write_file("bad2.ini", "rounds = 3\n\nlr0 = 0.1\n");
  char *argv[] = {"fedlr-sim", "--config", (char *)path, NULL};
  ASSERT_EQ(parse(&c, FL_PROG_SIM, argv, NULL), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), ":3: unknown key 'lr0'");
}

static char *help_text(int prog);

typedef struct {
  const char *ep;
  int bind;
  const char *want; /* NULL: accepted; else a substring of the message */
} ep_case_t;

TEST(endpoints) {
  static char long_ipc[200], max_ipc[200];
  snprintf(max_ipc, sizeof max_ipc, "ipc:///tmp/%0102d", 0); /* PATH of 107 bytes */
  snprintf(long_ipc, sizeof long_ipc, "ipc:///tmp/%0103d", 0);
  const ep_case_t cases[] = {
      {"tcp://0.0.0.0:7070", 1, NULL},
      {"tcp://*:7070", 1, NULL},
      {"tcp://127.0.0.1:1", 1, NULL},
      {"tcp://127.0.0.1:65535", 1, NULL},
      {"tcp://lo:7070", 1, NULL}, /* an interface */
      {"tcp://eth0.100:7070", 1, NULL},
      {"tcp://127.0.0.1:7070", 0, NULL},
      {"tcp://coordinator:7070", 0, NULL}, /* compose's service name */
      {"tcp://lab-7.example.org:07070", 0, NULL},
      {"ipc:///run/fedlr/coord.sock", 1, NULL},
      {"ipc://fedlr.sock", 0, NULL},
      {"ipc://@fedlr", 1, NULL}, /* Linux abstract namespace */
      {max_ipc, 1, NULL},
      {long_ipc, 1, "PATH has 108 bytes, a Unix socket's at most 107"},
      {long_ipc, 0, "PATH has 108 bytes"},
      {"tcp://127.0.0.1:99999", 1, "port 99999 is above 65535 (libzmq would wrap it"},
      {"tcp://127.0.0.1:65536", 0, "port 65536 is above 65535"},
      {"tcp://127.0.0.1:99999999999999999999999", 1, "is above 65535"},
      {"tcp://127.0.0.1:0", 1, "ephemeral port"},
      {"tcp://*:*", 1, "ephemeral port"},
      {"tcp://x:0", 0, "port 0: give the port the coordinator listens on"},
      {"tcp://x:*", 0, "port 0"},
      {"tcp://*:7070", 0, "HOST * (every interface) is only for --bind"},
      {"tcp://127.0.0.1", 1, "no :PORT"},
      {"tcp://127.0.0.1:", 0, "PORT '' is not a decimal number"},
      {"tcp://127.0.0.1:70x", 0, "PORT '70x' is not a decimal number"},
      {"tcp://127.0.0.1:+7070", 1, "PORT '+7070'"},
      {"tcp://127.0.0.1: 7070", 1, "PORT ' 7070'"},
      {"tcp://:7070", 0, "no HOST"},
      {"tcp://[::1]:7070", 0, "IPv6 addresses are not supported"},
      {"tcp://::1:7070", 1, "IPv6"},
      {"tcp://10.0.0.1;10.0.0.2:7070", 0, "HOST '10.0.0.1;10.0.0.2' has ';'"},
      {"tcp://a b:7070", 1, "has ' '"},
      {"ipc://", 1, "no PATH after ipc://"},
      {"ipc://*", 1, "ipc://* makes up a path"},
      {"inproc://fedlr", 1, "not a tcp:// or ipc:// endpoint"},
      {"udp://127.0.0.1:7070", 0, "not a tcp:// or ipc:// endpoint"},
      {"127.0.0.1:7070", 0, "not a tcp:// or ipc:// endpoint"},
      {"TCP://127.0.0.1:7070", 0, "not a tcp:// or ipc:// endpoint"},
      {"", 1, "not a tcp:// or ipc:// endpoint"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const ep_case_t *k = &cases[i];
    fl_err_clear();
    int rc = fl_config_check_endpoint(k->ep, k->bind);
    if (rc != (k->want ? FL_EINVAL : 0) || (k->want && !strstr(fl_err_msg(), k->want)))
      fprintf(stderr, "  case %zu (%s, %s): rc %d, msg \"%s\"\n", i, k->ep,
              k->bind ? "bind" : "connect", rc, fl_err_msg());
    ASSERT_EQ(rc, k->want ? FL_EINVAL : 0);
    if (!k->want) continue;
    ASSERT_CONTAINS(fl_err_msg(), k->want);
    /* Every refusal names the endpoint, the flag and the accepted forms. */
    ASSERT_CONTAINS(fl_err_msg(), k->bind ? "; --bind takes tcp://HOST:PORT"
                                          : "; --connect takes tcp://HOST:PORT");
    ASSERT_CONTAINS(fl_err_msg(), "PORT 1..65535) or ipc://PATH");
  }
  /* The longest endpoint the field holds: the message keeps its tail. */
  char longest[256] = "tcp://";
  memset(longest + 6, 'h', 240);
  strcpy(longest + 246, ":99999");
  ASSERT_EQ(fl_config_check_endpoint(longest, 1), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "hhh...': port 99999 is above 65535");
  ASSERT_CONTAINS(fl_err_msg(), "; --bind takes tcp://HOST:PORT");
  fl_config_t c;
  ASSERT_EQ(parse(&c, FL_PROG_COORD, ARGV("--bind", longest), NULL), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "or ipc://PATH");
  /* Through the flags, and through a config file, the message names the flag. */
  ASSERT_EQ(parse(&c, FL_PROG_COORD, ARGV("--bind", "tcp://127.0.0.1:99999"), NULL), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--bind: 'tcp://127.0.0.1:99999': port 99999 is above 65535");
  ASSERT_EQ(parse(&c, FL_PROG_CLIENT, ARGV("--connect=tcp://x:0"), NULL), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--connect: 'tcp://x:0': port 0");
  const char *path = write_file("ep.ini", "[fedlr]\nbind = tcp://*:0\n");
  ASSERT_EQ(parse(&c, FL_PROG_COORD, ARGV("--config", (char *)path), NULL), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--bind: 'tcp://*:0': an ephemeral port");
  ASSERT_EQ(parse(&c, FL_PROG_COORD, ARGV("--bind", "ipc:///tmp/fedlr.sock"), NULL), 0);
  ASSERT_STR_EQ(c.bind, "ipc:///tmp/fedlr.sock");
}

typedef struct {
  char *args[6];
  const char *want; /* NULL: accepted */
} timeout_case_t;

TEST(timeout_rules) {
  const timeout_case_t cases[] = {
      {{"--heartbeat", "5", "--client-timeout", "1"},
       "--client-timeout 1: must be >= 3 x --heartbeat (5 s), i.e. >= 15 s"},
      {{"--heartbeat", "5", "--client-timeout", "14.9", "--round-timeout", "60"},
       "--client-timeout 14.9: must be >= 3 x --heartbeat"},
      {{"--heartbeat", "5", "--client-timeout", "15", "--round-timeout", "15"}, NULL},
      {{"--heartbeat", "0.1", "--client-timeout", "0.3", "--round-timeout", "0.3"}, NULL},
      {{"--heartbeat", "0.5", "--client-timeout", "2"}, NULL}, /* the tests' usual pair */
      {{"--client-timeout", "2.9"}, "--client-timeout 2.9: must be >= 3 x --heartbeat (1 s)"},
      {{"--heartbeat", "60", "--client-timeout", "180", "--round-timeout", "180"}, NULL},
      {{"--round-timeout", "5"},
       "--round-timeout 5: must be >= --client-timeout (10 s): a client that dies during a "
       "round"},
      {{"--round-timeout", "5", "--client-timeout", "5", "--heartbeat", "1"}, NULL},
      {{"--round-timeout", "2", "--client-timeout", "3"}, "--round-timeout 2: must be >="},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const timeout_case_t *k = &cases[i];
    char *argv[8] = {"fedlr-coordinator"};
    int argc = 1;
    for (int j = 0; j < 6 && k->args[j]; j++)
      argv[argc++] = k->args[j];
    fl_config_t c;
    int help = 0;
    fl_err_clear();
    int rc = fl_config_parse(&c, FL_PROG_COORD, argc, argv, &help);
    if (rc != (k->want ? FL_EINVAL : 0))
      fprintf(stderr, "  case %zu: rc %d, msg \"%s\"\n", i, rc, fl_err_msg());
    ASSERT_EQ(rc, k->want ? FL_EINVAL : 0);
    if (k->want) ASSERT_CONTAINS(fl_err_msg(), k->want);
  }
  /* The config file goes through the same rules, and a flag can mend it. */
  const char *path = write_file("hb.ini", "heartbeat = 5\nclient-timeout = 1\n");
  fl_config_t c;
  ASSERT_EQ(parse(&c, FL_PROG_COORD, ARGV("--config", (char *)path), NULL), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--client-timeout 1: must be >= 3 x --heartbeat (5 s)");
  ASSERT_EQ(
      parse(&c, FL_PROG_COORD, ARGV("--config", (char *)path, "--client-timeout", "20"), NULL), 0);
  ASSERT_NEAR(c.client_timeout, 20, 0);
  /* The rules are the coordinator's: its keys are not the others' business. */
  fl_config_defaults(&c);
  c.heartbeat = 5, c.client_timeout = 1, c.round_timeout = 0.5;
  ASSERT_EQ(fl_config_validate(&c, FL_PROG_SIM), 0);
  ASSERT_EQ(fl_config_validate(&c, FL_PROG_CLIENT), 0);
  ASSERT_EQ(fl_config_validate(&c, FL_PROG_COORD), FL_EINVAL);
}

TEST(give_up) {
  fl_config_t c;
  ASSERT_EQ(parse(&c, FL_PROG_CLIENT, ARGV("--give-up", "0"), NULL), 0);
  ASSERT_NEAR(c.give_up, 0, 0); /* never */
  ASSERT_EQ(parse(&c, FL_PROG_CLIENT, ARGV("--give-up=2.5"), NULL), 0);
  ASSERT_NEAR(c.give_up, 2.5, 0);
  const char *path = write_file("gu.ini", "give_up = 30\n");
  ASSERT_EQ(parse(&c, FL_PROG_CLIENT, ARGV("--config", (char *)path), NULL), 0);
  ASSERT_NEAR(c.give_up, 30, 0);
  ASSERT_EQ(parse(&c, FL_PROG_CLIENT, ARGV("--give-up", "never"), NULL), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--give-up never: not a number");
  char *h = help_text(FL_PROG_CLIENT);
  ASSERT_TRUE(h != NULL);
  int listed = strstr(h, "  --give-up SEC") && strstr(h, "0 = never") && strstr(h, "status 5");
  free(h);
  ASSERT_TRUE(listed);
}

/* Loads `path` for fedlr-sim into a fresh config, returns the code; the
 * config must be unchanged on error. */
static int load_sim(const char *path, fl_config_t *c) {
  fl_config_defaults(c);
  fl_config_t before = *c;
  int rc = fl_config_load_file(c, FL_PROG_SIM, path);
  if (rc && memcmp(c, &before, sizeof *c) != 0) return -100;
  return rc;
}

TEST(file_type_and_size) {
  fl_config_t c;
  /* A device is refused before anything is read: /dev/zero never ends. */
  double t0 = fl_clock_now();
  ASSERT_EQ(load_sim("/dev/zero", &c), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'/dev/zero' is a character device");
  ASSERT_DBL_OP(fl_clock_now() - t0, <, 1.0);
  /* A directory says so (it used to be "read error"). */
  ASSERT_EQ(load_sim(fl_test_tmpdir(), &c), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "is a directory, expected a regular file or a pipe");
  /* Larger than the limit. */
  const char *path = write_file("big.ini", "");
  FILE *f = fopen(path, "w");
  ASSERT_TRUE(f != NULL);
  for (size_t i = 0; i <= FL_CONFIG_MAX_BYTES / 16; i++)
    fputs("# 0123456789abc\n", f);
  fclose(f);
  ASSERT_EQ(load_sim(path, &c), FL_ETOOBIG);
  ASSERT_CONTAINS(fl_err_msg(), "the limit is 1048576");
  /* Binary content. */
  path = write_file("nul.ini", "rounds = 3\n");
  f = fopen(path, "a");
  ASSERT_TRUE(f != NULL);
  fputc('\0', f);
  fclose(f);
  ASSERT_EQ(load_sim(path, &c), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "NUL byte");
  /* A file without a final newline still has its last line read. */
  path = write_file("nonl.ini", "clients = 7\nrounds = 3");
  ASSERT_EQ(load_sim(path, &c), 0);
  ASSERT_EQ(c.rounds, 3);
  ASSERT_EQ(c.clients, 7);
}

/* A FIFO is read like a file whether its writer comes before the reader
 * opens it, after, or has already written everything and gone (its data
 * held by another reader: bash's <(...) can look like that), and bounded:
 * an endless writer is cut off at the limit. (alarm: a hang fails the test
 * instead of blocking ctest until its timeout.) */
TEST(file_from_a_pipe) {
  enum { READER_FIRST, WRITER_FIRST, EMPTY, WRITER_GONE, ENDLESS, NUM_MODES };
  char path[600];
  snprintf(path, sizeof path, "%s/fifo.ini", fl_test_tmpdir());
  unlink(path);
  ASSERT_EQ(mkfifo(path, 0600), 0);
  alarm(20);
  for (int mode = 0; mode < NUM_MODES; mode++) {
    /* WRITER_GONE: this reader lets the writer in, and holds its data. */
    int held = mode == WRITER_GONE ? open(path, O_RDONLY | O_NONBLOCK) : -1;
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
      /* Raw writes as soon as open() returns: a reader that dropped the
       * FIFO for a moment after its open released this one would make
       * them fail (SIGPIPE). */
      signal(SIGPIPE, SIG_DFL);
      static const char text[] = "[fedlr]\nrounds = 4\nlr = 0.05\n", more[] = "# more and more\n";
      int fd = open(path, O_WRONLY);
      if (fd < 0) _exit(1);
      if (mode != EMPTY && write(fd, text, sizeof text - 1) != (ssize_t)sizeof text - 1) _exit(1);
      while (mode == ENDLESS && write(fd, more, sizeof more - 1) > 0) {
      }
      _exit(close(fd) == 0 ? 0 : 1);
    }
    int status = 0;
    if (mode == WRITER_GONE) waitpid(pid, &status, 0);
    /* The writer first: it waits in open() for a reader. */
    if (mode == WRITER_FIRST || mode == ENDLESS) usleep(100 * 1000);
    fl_config_t c;
    double t0 = fl_clock_now();
    int rc = load_sim(path, &c);
    if (mode != WRITER_GONE) waitpid(pid, &status, 0);
    if (held >= 0) close(held);
    fprintf(stderr, "  mode %d: rc %d, writer status %d\n", mode, rc, status);
    if (mode == ENDLESS) {
      ASSERT_EQ(rc, FL_ETOOBIG);
      ASSERT_CONTAINS(fl_err_msg(), "holds more than the limit of 1048576 bytes");
      ASSERT_DBL_OP(fl_clock_now() - t0, <, 5.0);
    } else {
      ASSERT_EQ(rc, 0);
      ASSERT_EQ(status, 0); /* the writer was never left without a reader */
      ASSERT_EQ(c.rounds, mode == EMPTY ? 20 : 4);
      ASSERT_STR_EQ(c.lr, mode == EMPTY ? "0.1" : "0.05");
    }
  }
  alarm(0);
  unlink(path);
}

TEST(file_spec_errors_name_the_flag) {
  /* Specs are checked after the merge, so the message names the flag. */
  const char *path = write_file("spec.ini", "schedule = bogus:1\n");
  fl_config_t c;
  char *argv[] = {"fedlr-sim", "--config", (char *)path, NULL};
  ASSERT_EQ(parse(&c, FL_PROG_SIM, argv, NULL), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--schedule: ");
  ASSERT_CONTAINS(fl_err_msg(), "bogus");
}

static char *help_text(int prog) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) return NULL;
  fl_config_print_help(f, prog, NULL);
  fclose(f);
  return buf;
}

TEST(help_lists_the_programs_options) {
  static const char *const sim[] = {
      "--dataset",      "--data-dir",   "--test-data",  "--partition",       "--model",
      "--optimizer",    "--lr",         "--schedule",   "--local-schedule",  "--local-unit",
      "--local-epochs", "--batch-size", "--clients",    "--fraction",        "--min-clients",
      "--rounds",       "--seed",       "--eval-every", "--target-accuracy", "--metrics",
      "--out",          "--quiet",      "--config",     "--workers",         "--help"};
  char *h = help_text(FL_PROG_SIM);
  ASSERT_TRUE(h != NULL);
  const char *missing = NULL;
  for (size_t i = 0; i < sizeof sim / sizeof sim[0] && !missing; i++) {
    char want[64];
    snprintf(want, sizeof want, "  %s ", sim[i]);
    if (!strcmp(sim[i], "--help")) snprintf(want, sizeof want, "-h, --help");
    if (!strstr(h, want)) missing = sim[i];
  }
  if (missing) free(h);
  ASSERT_TRUE(missing == NULL);
  int bad = strstr(h, "--bind") || strstr(h, "--connect") || strstr(h, "--quorum");
  ASSERT_CONTAINS(h, "usage: fedlr-sim");
  ASSERT_CONTAINS(h, "local epochs per round (default 1)");
  ASSERT_CONTAINS(h, "(default 0.1)");
  free(h);
  ASSERT_FALSE(bad);

  h = help_text(FL_PROG_CLIENT);
  ASSERT_TRUE(h != NULL);
  bad = !strstr(h, "  --connect ENDPOINT") || !strstr(h, "  --partition-index I") ||
        strstr(h, "--rounds") || strstr(h, "--workers") || strstr(h, "--model");
  free(h);
  ASSERT_FALSE(bad);

  h = help_text(FL_PROG_COORD);
  ASSERT_TRUE(h != NULL);
  bad = !strstr(h, "  --bind ENDPOINT") || !strstr(h, "  --round-timeout SEC") ||
        !strstr(h, "  --resume DIR") || strstr(h, "--workers") || strstr(h, "--connect") ||
        strstr(h, "--partition ");
  free(h);
  ASSERT_FALSE(bad);
}

/* Zero-fills the tail too, as fl_config does, so configs compare with memcmp. */
#define SET_STR(field, value)                                                                      \
  do {                                                                                             \
    memset(field, 0, sizeof field);                                                                \
    snprintf(field, sizeof field, "%s", value);                                                    \
  } while (0)

/* Sets every key of prog to a non-default value, writes, loads back. */
static int round_trip(int prog, const char *name) {
  fl_config_t c, d;
  fl_config_defaults(&c);
  SET_STR(c.dataset, "/data/train.csv");
  SET_STR(c.data_dir, "/srv/data");
  SET_STR(c.test_data, "/data/test.csv");
  SET_STR(c.partition, "dirichlet:0.5");
  SET_STR(c.model, "mlp:200,200");
  SET_STR(c.optimizer, "adam:beta1=0.8,wd=1e-4");
  SET_STR(c.lr, "auto:0.5");
  SET_STR(c.schedule, "warmup:5+cos:T=100,min=0.001");
  SET_STR(c.local_schedule, "exp:gamma=0.9");
  SET_STR(c.local_unit, "step");
  c.local_epochs = 5;
  c.batch_size = 50;
  c.clients = 1000;
  c.fraction = 0.1 + 1e-16; /* needs all 17 digits */
  c.min_clients = 7;
  c.rounds = 123;
  c.seed = UINT64_MAX - 1;
  c.workers = 3;
  c.eval_every = 4;
  c.target_accuracy = 0.875;
  SET_STR(c.metrics, "run/metrics.jsonl");
  SET_STR(c.out, "run");
  c.quiet = 1;
  SET_STR(c.bind, "tcp://127.0.0.1:9000");
  SET_STR(c.connect, "tcp://10.0.0.1:9000");
  c.round_timeout = 12.5;
  c.quorum = 2.0 / 3.0;
  SET_STR(c.resume, "run/ckpt.bin");
  c.checkpoint_every = 10;
  SET_STR(c.name, "client-7");
  SET_STR(c.data, "/data/mine.csv");
  c.num_partitions = 10;
  c.partition_index = 3;
  c.heartbeat = 0.5;
  c.client_timeout = 4;
  c.give_up = 42.5;

  char path[600];
  snprintf(path, sizeof path, "%s/%s", fl_test_tmpdir(), name);
  FILE *f = fopen(path, "w");
  if (!f) return -100;
  fl_config_write(&c, prog, f);
  fclose(f);
  fl_config_defaults(&d);
  int rc = fl_config_load_file(&d, prog, path);
  if (rc != 0) return rc;
  /* Keys of other programs keep their defaults in d; copy them over so the
   * whole struct can be compared: only prog's keys must round-trip. */
  if (!(prog & FL_PROG_SIM)) d.workers = c.workers;
  if (prog == FL_PROG_COORD) memcpy(d.partition, c.partition, sizeof d.partition);
  if (prog == FL_PROG_CLIENT) {
    memcpy(d.test_data, c.test_data, sizeof d.test_data);
    memcpy(d.model, c.model, sizeof d.model);
    memcpy(d.optimizer, c.optimizer, sizeof d.optimizer);
    memcpy(d.lr, c.lr, sizeof d.lr);
    memcpy(d.schedule, c.schedule, sizeof d.schedule);
    memcpy(d.local_schedule, c.local_schedule, sizeof d.local_schedule);
    memcpy(d.local_unit, c.local_unit, sizeof d.local_unit);
    memcpy(d.metrics, c.metrics, sizeof d.metrics);
    memcpy(d.out, c.out, sizeof d.out);
    d.local_epochs = c.local_epochs, d.batch_size = c.batch_size, d.clients = c.clients;
    d.fraction = c.fraction, d.min_clients = c.min_clients, d.rounds = c.rounds;
    d.eval_every = c.eval_every, d.target_accuracy = c.target_accuracy;
  }
  if (prog != FL_PROG_COORD) {
    memcpy(d.bind, c.bind, sizeof d.bind);
    memcpy(d.resume, c.resume, sizeof d.resume);
    d.round_timeout = c.round_timeout, d.quorum = c.quorum, d.checkpoint_every = c.checkpoint_every;
  }
  if (prog != FL_PROG_CLIENT) {
    memcpy(d.connect, c.connect, sizeof d.connect);
    memcpy(d.name, c.name, sizeof d.name);
    memcpy(d.data, c.data, sizeof d.data);
    d.num_partitions = c.num_partitions, d.partition_index = c.partition_index;
    d.give_up = c.give_up;
  }
  if (prog != FL_PROG_COORD) d.heartbeat = c.heartbeat, d.client_timeout = c.client_timeout;
  return memcmp(&c, &d, sizeof c) == 0 ? 0 : -101;
}

TEST(write_load_round_trip) {
  ASSERT_EQ(round_trip(FL_PROG_SIM, "sim.ini"), 0);
  ASSERT_EQ(round_trip(FL_PROG_COORD, "coord.ini"), 0);
  ASSERT_EQ(round_trip(FL_PROG_CLIENT, "client.ini"), 0);
}

TEST(write_lists_only_the_programs_keys) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ASSERT_TRUE(f != NULL);
  fl_config_t c;
  fl_config_defaults(&c);
  fl_config_write(&c, FL_PROG_COORD, f);
  fclose(f);
  int ok = strstr(buf, "\nbind = tcp://0.0.0.0:7070\n") && strstr(buf, "\nrounds = 20\n") &&
           strstr(buf, "\nfraction = 0.10000000000000001\n") && strstr(buf, "\nquiet = false\n") &&
           !strstr(buf, "workers") && !strstr(buf, "\nconnect =") && !strstr(buf, "config =");
  if (!ok) fprintf(stderr, "%s", buf);
  free(buf);
  ASSERT_TRUE(ok);
}

/* The specs whose parsers live in coordinator/ and client/ are stored as
 * given, from a flag or a file: each program parses them right after
 * fl_config_parse() (fl_engine_agg_from, fl_attack_parse). */
TEST(module_specs_are_stored_as_given) {
  fl_config_t c;
  ASSERT_EQ(parse(&c, FL_PROG_SIM,
                  ARGV("--aggregator", "bogus", "--attack", "x,y", "--attackers", "1"), NULL),
            0);
  ASSERT_STR_EQ(c.aggregator, "bogus");
  ASSERT_STR_EQ(c.attack, "x,y");
  const char *path = write_file("specs.ini", "aggregator = trimmed-mean:0.7\nattack = nan\n");
  ASSERT_EQ(parse(&c, FL_PROG_CLIENT, ARGV("--config", (char *)path), NULL), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'aggregator' is not an option of fedlr-client");
  path = write_file("specs.ini", "aggregator = trimmed-mean:0.7\n");
  ASSERT_EQ(parse(&c, FL_PROG_COORD, ARGV("--config", (char *)path), NULL), 0);
  ASSERT_STR_EQ(c.aggregator, "trimmed-mean:0.7");
  /* The rule between --attack and --attackers is fl_config's. */
  ASSERT_EQ(parse(&c, FL_PROG_SIM, ARGV("--attack", "bogus"), NULL), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--attack bogus: needs --attackers N");
}

TEST(validate_catches_programmatic_values) {
  fl_config_t c;
  fl_config_defaults(&c);
  c.fraction = NAN;
  ASSERT_EQ(fl_config_validate(&c, FL_PROG_SIM), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--fraction nan");
  fl_config_defaults(&c);
  c.batch_size = 0;
  ASSERT_EQ(fl_config_validate(&c, FL_PROG_SIM), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--batch-size 0: must be in 1..65536");
  /* Keys of other programs are not checked. */
  fl_config_defaults(&c);
  c.workers = 1000;
  ASSERT_EQ(fl_config_validate(&c, FL_PROG_COORD), 0);
  ASSERT_EQ(fl_config_validate(&c, FL_PROG_SIM), FL_EINVAL);
  ASSERT_EQ(fl_config_validate(&c, 3), FL_EINVAL);
}

/* --model: softmax by default; with --init alone the file decides; custom
 * needs --init and the coordinator. */
TEST(model_and_init) {
  fl_config_t c;
  int help;
  char *a1[] = {"fedlr-coordinator"};
  ASSERT_EQ(fl_config_parse(&c, FL_PROG_COORD, 1, a1, &help), 0);
  ASSERT_STR_EQ(c.model, "softmax");
  char *a2[] = {"fedlr-coordinator", "--init", "cnn.safetensors"};
  ASSERT_EQ(fl_config_parse(&c, FL_PROG_COORD, 3, a2, &help), 0);
  ASSERT_STR_EQ(c.model, "");
  ASSERT_STR_EQ(c.init, "cnn.safetensors");
  char *a3[] = {"fedlr-coordinator", "--model", "custom"};
  ASSERT_EQ(fl_config_parse(&c, FL_PROG_COORD, 3, a3, &help), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--model custom: needs --init FILE.safetensors");
  char *a4[] = {"fedlr-coordinator", "--model", "custom", "--init", "x.safetensors"};
  ASSERT_EQ(fl_config_parse(&c, FL_PROG_COORD, 5, a4, &help), 0);
  ASSERT_STR_EQ(c.model, "custom");
  char *a5[] = {"fedlr-sim", "--model", "custom", "--init", "x.safetensors"};
  ASSERT_EQ(fl_config_parse(&c, FL_PROG_SIM, 5, a5, &help), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "fedlr-sim trains the built-in models only");
  char *a6[] = {"fedlr-sim", "--holdout", "0.95"};
  ASSERT_EQ(fl_config_parse(&c, FL_PROG_SIM, 3, a6, &help), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--holdout 0.95: must be in [0, 0.9]");
  char *a7[] = {"fedlr-coordinator", "--eval-fraction", "1.5"};
  ASSERT_EQ(fl_config_parse(&c, FL_PROG_COORD, 3, a7, &help), FL_EINVAL);
  char *a8[] = {"fedlr-client", "--holdout", "0.2", "--data", "x.csv"};
  ASSERT_EQ(fl_config_parse(&c, FL_PROG_CLIENT, 5, a8, &help), 0);
  ASSERT_NEAR(c.holdout, 0.2, 0);
}

FL_TEST_MAIN()
