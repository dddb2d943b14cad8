/* fedlr-coordinator: the command line of the networked coordinator.
 *
 * It reads the flags, the CurveZMQ keys and the test set, builds the run
 * (fl_run: the engine and the run's policy) and serves it over ZeroMQ
 * (fl_host, with admission in fl_admit). Exit status: 0 when the run
 * finished, 1 when it failed (data, files, no progress possible, an output
 * that could not be written), 2 for a bad flag, 3 when interrupted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <zmq.h>

#include "fl_blas.h"
#include "fl_config.h"
#include "fl_data.h"
#include "fl_engine.h"
#include "fl_error.h"
#include "fl_host.h"
#include "fl_keys.h"
#include "fl_run.h"

#define PROG "fedlr-coordinator"

static void print_help(void) {
  fl_config_print_help(stdout, FL_PROG_COORD, PROG);
  printf("\nLimits: at most --clients clients join; every message is one ZeroMQ frame of at\n"
         "most 4 bytes per model parameter + 64 KiB (ZMQ_MAXMSGSIZE; a larger frame closes\n"
         "its connection); joins from new connections beyond --join-burst at --join-rate per\n"
         "second get a 'busy, retry' answer; a connection on which no client joined within\n"
         "--join-timeout is closed, and so is every one beyond --max-connections; a joined\n"
         "client is sampled once it has sent a heartbeat; peer-caused log lines are limited\n"
         "to 20 per reason per 10 s.\n"
         "CurveZMQ: --curve-secret FILE (from fedlr-keygen) with --allow-clients DIR|FILE\n"
         "encrypts everything and admits only the listed client keys; a client is named by\n"
         "its key (DIR/NAME.key, or 'KEY NAME' lines in FILE).\n");
}

/* --curve-secret and --allow-clients: both or neither. Returns 0 (with
 * *allow and *kp, or neither), or an exit status with the error printed. */
static int load_curve(const fl_config_t *cfg, fl_allowlist_t **allow, fl_keypair_t *kp) {
  if (!cfg->curve_secret[0] && !cfg->allow_clients[0]) return 0;
  if (!cfg->curve_secret[0] || !cfg->allow_clients[0]) {
    fprintf(stderr,
            PROG ": %s without %s: CurveZMQ needs both, the coordinator's secret key "
                 "(--curve-secret FILE) and the client keys it admits (--allow-clients DIR|FILE)\n",
            cfg->curve_secret[0] ? "--curve-secret" : "--allow-clients",
            cfg->curve_secret[0] ? "--allow-clients" : "--curve-secret");
    return 2;
  }
  if (!zmq_has("curve")) {
    fprintf(stderr, PROG ": --curve-secret: this libzmq has no CURVE support\n");
    return 1;
  }
  if (fl_keys_load_secret(cfg->curve_secret, kp) != 0) {
    fprintf(stderr, PROG ": --curve-secret: %s\n", fl_err_msg());
    return 1;
  }
  if (fl_allowlist_load(cfg->allow_clients, allow) != 0) {
    fprintf(stderr, PROG ": %s\n", fl_err_msg());
    explicit_bzero(kp, sizeof *kp);
    return 1;
  }
  return 0;
}

/* The test set the coordinator evaluates on (clients hold the training
 * data). */
static int load_test(const fl_config_t *cfg, fl_dataset_t **test) {
  if (cfg->test_data[0]) return fl_dataset_load_file(cfg->test_data, test);
  if (!fl_dataset_is_named(cfg->dataset))
    return fl_err_set(FL_EINVAL, "--dataset is a file: give the test set with --test-data (the "
                                 "coordinator evaluates; clients hold the training data)");
  return fl_dataset_load_named(cfg->dataset, cfg->data_dir, 0, test);
}

int main(int argc, char **argv) {
  fl_blas_setup(argc, argv);
  fl_config_t cfg;
  fl_config_defaults(&cfg);
  int want_help = 0, rc;
  if ((rc = fl_config_parse(&cfg, FL_PROG_COORD, argc, argv, &want_help)) || want_help) {
    if (want_help)
      print_help();
    else
      fprintf(stderr, PROG ": %s\n", fl_err_msg());
    return want_help ? 0 : 2;
  }
  /* --aggregator, which fl_config only stores, parsed once by fl_agg. */
  fl_agg_config_t agg;
  if ((rc = fl_engine_agg_from(&agg, &cfg))) {
    fprintf(stderr, PROG ": %s\n", fl_err_msg());
    return 2;
  }
  if (cfg.resume[0] && !cfg.out[0]) snprintf(cfg.out, sizeof cfg.out, "%s", cfg.resume);
  if (cfg.start_clients > cfg.clients) {
    fprintf(stderr, PROG ": --start-clients %u exceeds --clients %u\n", cfg.start_clients,
            cfg.clients);
    return 2;
  }
  int status = 1;
  fl_allowlist_t *allow = NULL;
  fl_keypair_t kp;
  memset(&kp, 0, sizeof kp);
  fl_dataset_t *test = NULL;
  fl_run_t *run = NULL;
  fl_host_t *host = NULL;
  fl_init_t init;
  if ((rc = fl_init_read(&cfg, &init))) {
    fprintf(stderr, PROG ": %s\n", fl_err_msg());
    status = rc == FL_EINVAL ? 2 : 1;
    goto out;
  }
  if ((status = load_curve(&cfg, &allow, &kp)) != 0) goto out;
  status = 1;
  /* A custom model has no test set here: its clients evaluate it. */
  if (!init.custom && (rc = load_test(&cfg, &test))) {
    fprintf(stderr, PROG ": loading test data: %s\n", fl_err_msg());
    goto out;
  }
  fl_engine_config_t ec;
  if ((rc = fl_engine_config_from(&ec, &cfg, &agg, &init, test ? test->dim : 0,
                                  test ? test->num_classes : 0, test))) {
    fprintf(stderr, PROG ": %s\n", fl_err_msg());
    status = 2;
    goto out;
  }
  if (init.custom)
    fprintf(stderr,
            PROG ": model: %zu tensors from --init %s; no test set: clients evaluate it "
                 "(federated evaluation, --eval-fraction %g)\n",
            init.layout->n, cfg.init, cfg.eval_fraction);
  fl_run_config_t rcfg = {.cfg = &cfg,
                          .engine = &ec,
                          .prog = FL_PROG_COORD,
                          .producer = PROG,
                          .round_timeout = cfg.round_timeout,
                          .start_timeout = cfg.start_timeout,
                          .checkpoints = 1,
                          .resume = cfg.resume[0] ? cfg.resume : NULL,
                          .participants = 1};
  if (!(run = fl_run_new(&rcfg, &rc))) {
    /* FL_EINVAL: a flag that the checkpoint's run did not have, --rounds
     * below its rounds done (fl_checkpoint_load); else the checkpoint or a
     * file cannot be used. */
    fprintf(stderr, PROG ": %s\n", fl_err_msg());
    if (rc == FL_EINVAL) status = 2;
    goto out;
  }
  char server_key[FL_KEY_Z85_LEN + 1];
  memcpy(server_key, kp.public_z85, sizeof server_key);
  fl_host_config_t hc = {.cfg = &cfg, .allow = allow, .keys = allow ? &kp : NULL};
  if (!(host = fl_host_new(&hc, run, &rc))) {
    fprintf(stderr, PROG ": %s\n", fl_err_msg());
    goto out;
  }
  if (allow)
    fprintf(stderr,
            PROG ": CurveZMQ: encrypted; %zu client keys admitted (--allow-clients %s); this "
                 "coordinator's public key is %s\n",
            fl_allowlist_count(allow), cfg.allow_clients, server_key);
  fprintf(stderr,
          PROG ": OpenBLAS core %s; model %s (%zu parameters); listening on %s; waiting for %u "
               "client(s)\n",
          fl_blas_corename(), ec.model.spec, ec.model.num_params, cfg.bind,
          cfg.start_clients > cfg.min_clients ? cfg.start_clients : cfg.min_clients);
  status = fl_host_run(host);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  fprintf(stderr, PROG ": exiting (status %d), peak memory %.0f MiB\n", status,
          (double)ru.ru_maxrss / 1024.0);
out:
  explicit_bzero(&kp, sizeof kp);
  fl_host_destroy(&host);
  fl_run_destroy(&run);
  fl_allowlist_destroy(&allow);
  fl_dataset_destroy(&test);
  fl_init_free(&init);
  return status;
}
