/* fedlr-sim: federated rounds simulated in one process.
 *
 * The command line of one simulated run (sim/fl_sim: the run driver and N
 * virtual clients on a pool of worker threads): the flags, the data, the
 * pool, the run, the final line. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "fl_blas.h"
#include "fl_clock.h"
#include "fl_config.h"
#include "fl_data.h"
#include "fl_error.h"
#include "fl_sim.h"
#include "fl_tboard.h"

#define PROG "fedlr-sim"

static int fail(const char *what, int rc) {
  return fl_err_exit(PROG, what, rc);
}

static void print_final(const fl_run_t *run, double seconds) {
  const fl_metrics_t *m = fl_run_metrics(run);
  size_t n = fl_metrics_count(m);
  if (n == 0) return;
  const fl_round_metrics_t *rm = fl_metrics_get(m, n - 1);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("final: round %u test accuracy %.4f loss %.4f, %.1f s, peak memory %.0f MiB", rm->round,
         rm->test_accuracy, rm->test_loss, seconds, (double)ru.ru_maxrss / 1024.0);
  uint64_t rejected, clipped, capped;
  fl_run_counts(run, &rejected, &clipped, &capped);
  if (rejected || clipped || capped)
    printf("; updates rejected %llu, clipped %llu, capped %llu", (unsigned long long)rejected,
           (unsigned long long)clipped, (unsigned long long)capped);
  printf("\n");
}

int main(int argc, char **argv) {
  fl_blas_setup(argc, argv);
  fl_config_t cfg;
  fl_config_defaults(&cfg);
  int want_help = 0;
  int rc = fl_config_parse(&cfg, FL_PROG_SIM, argc, argv, &want_help);
  if (want_help) {
    fl_config_print_help(stdout, FL_PROG_SIM, PROG);
    return 0;
  }
  if (rc || (rc = fl_sim_check_config(&cfg))) return fail(NULL, FL_EINVAL);
  size_t workers = cfg.workers ? cfg.workers : (size_t)sysconf(_SC_NPROCESSORS_ONLN);
  if (workers < 1) workers = 1;
  if (workers > FL_SIM_MAX_WORKERS) workers = FL_SIM_MAX_WORKERS;
  if (!cfg.quiet)
    fprintf(stderr, PROG ": OpenBLAS core %s, %zu worker(s)\n", fl_blas_corename(), workers);

  fl_dataset_t *train = NULL, *test = NULL;
  fl_sim_pool_t *pool = NULL;
  fl_sim_t *sim = NULL;
  int status;
  if ((rc = fl_dataset_load_flags(cfg.dataset, cfg.data_dir, cfg.test_data, &train, &test))) {
    status = fail("loading data", rc);
    goto out;
  }
  if (!(pool = fl_sim_pool_new(workers, &rc))) {
    status = fail("workers", rc);
    goto out;
  }
  fl_sim_config_t sc = {.cfg = &cfg, .train = train, .test = test, .producer = PROG, .announce = 1};
  char tb_run[256], tb_dir[FL_PATH_MAX + 256];
  if (cfg.tensorboard[0]) { /* a new run folder under --tensorboard DIR */
    if ((rc = fl_tboard_run_name(PROG, time(NULL), tb_run, sizeof tb_run))) {
      status = fail("--tensorboard", rc);
      goto out;
    }
    snprintf(tb_dir, sizeof tb_dir, "%s/%s", cfg.tensorboard, tb_run);
    sc.tensorboard_dir = tb_dir;
  }
  if (!(sim = fl_sim_new(pool, &sc, &rc))) {
    status = fail(NULL, rc);
    goto out;
  }
  if (cfg.tensorboard[0] && !cfg.quiet)
    fprintf(stderr, PROG ": TensorBoard events in %s (tensorboard --logdir %s)\n", tb_dir,
            cfg.tensorboard);
  double t0 = fl_clock_now();
  fl_sim_start(sim);
  fl_sim_wait(sim);
  print_final(fl_sim_run(sim), fl_clock_now() - t0);
  status = fl_run_status(fl_sim_run(sim));
  if (status == FL_RUN_OK && cfg.out[0] && !cfg.quiet)
    fprintf(stderr, PROG ": wrote %s/{model.safetensors,chart.svg,config.ini}\n", cfg.out);
out:
  fl_sim_destroy(&sim);
  fl_sim_pool_destroy(&pool);
  fl_dataset_destroy(&train);
  fl_dataset_destroy(&test);
  return status;
}
