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
#include <time.h>

#include <zmq.h>

#include "fl_blas.h"
#include "fl_config.h"
#include "fl_data.h"
#include "fl_engine.h"
#include "fl_error.h"
#include "fl_file.h"
#include "fl_host.h"
#include "fl_keys.h"
#include "fl_run.h"
#include "fl_tboard.h"

#define PROG "fedlr-coordinator"
/* In --out: the name of the run's folder under --tensorboard DIR. */
#define TB_RUN_FILE "tensorboard-run"

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

/* --tensorboard DIR: the name of this run's folder in DIR. A new run gets
 * a new one (fl_tboard_run_name), which --out keeps in TB_RUN_FILE, so
 * that --resume carries on in the same folder (TensorBoard merges a
 * folder's files into one run; the round that was in flight is written
 * again). Returns 0, or an exit status with the error printed. */
static int tensorboard_run(const fl_config_t *cfg, char *name, size_t cap) {
  if (cfg->resume[0]) {
    char path[FL_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/" TB_RUN_FILE, cfg->resume);
    uint8_t *text = NULL;
    size_t len = 0;
    int rc = fl_file_read_all(path, 1024, FL_FILE_REGULAR, &text, &len);
    if (rc == 0) {
      while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        len--;
      text[len] = '\0';
      int ok = len > 0 && len < cap && strcmp((char *)text, ".") && strcmp((char *)text, "..");
      for (size_t i = 0; ok && i < len; i++)
        ok = text[i] > 0x20 && text[i] < 0x7f && text[i] != '/';
      if (ok) snprintf(name, cap, "%.*s", (int)len, (char *)text);
      free(text);
      if (ok) return 0;
      fprintf(stderr,
              PROG ": --resume: %s does not hold a folder name (remove it to start a new "
                   "TensorBoard run folder)\n",
              path);
      return 1;
    }
    if (rc != FL_ENOENT) {
      fprintf(stderr, PROG ": --resume: %s\n", fl_err_msg());
      return 1;
    }
    /* The run began without --tensorboard: a new folder from here on. */
  }
  if (fl_tboard_run_name(PROG, time(NULL), name, cap) != 0) {
    fprintf(stderr, PROG ": --tensorboard: %s\n", fl_err_msg());
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
  if ((rc =
           fl_engine_config_from(&ec, &cfg, &agg, &init, test ? test->dim : 0,
                                 test ? &test->shape : NULL, test ? test->num_classes : 0, test))) {
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
  char tb_run[256], tb_dir[FL_PATH_MAX + 256];
  if (cfg.tensorboard[0]) {
    if ((status = tensorboard_run(&cfg, tb_run, sizeof tb_run)) != 0) goto out;
    status = 1;
    snprintf(tb_dir, sizeof tb_dir, "%s/%s", cfg.tensorboard, tb_run);
    rcfg.tensorboard_dir = tb_dir;
  }
  if (!(run = fl_run_new(&rcfg, &rc))) {
    /* FL_EINVAL: a flag that the checkpoint's run did not have, --rounds
     * below its rounds done (fl_checkpoint_load); else the checkpoint or a
     * file cannot be used. */
    fprintf(stderr, PROG ": %s\n", fl_err_msg());
    if (rc == FL_EINVAL) status = 2;
    goto out;
  }
  if (cfg.tensorboard[0]) {
    char keep[FL_PATH_MAX + 32], line[260];
    snprintf(line, sizeof line, "%s\n", tb_run);
    snprintf(keep, sizeof keep, "%s/" TB_RUN_FILE, cfg.out);
    if (cfg.out[0] && fl_file_write_atomic(keep, line, strlen(line)) != 0) {
      fprintf(stderr, PROG ": --tensorboard: %s\n", fl_err_msg());
      goto out;
    }
    fprintf(stderr, PROG ": TensorBoard events in %s (tensorboard --logdir %s)\n", tb_dir,
            cfg.tensorboard);
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
  fl_shape_t in_shape = fl_model_shape(&ec.model);
  char in_text[64] = "";
  if (fl_shape_is_set(&in_shape))
    snprintf(in_text, sizeof in_text, " on %zux%zux%zu images", in_shape.c, in_shape.h, in_shape.w);
  fprintf(stderr,
          PROG ": OpenBLAS core %s; model %s%s (%zu parameters); listening on %s; waiting for %u "
               "client(s)\n",
          fl_blas_corename(), ec.model.spec, in_text, ec.model.num_params, cfg.bind,
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
