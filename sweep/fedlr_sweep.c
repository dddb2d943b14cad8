/* fedlr-sweep: many simulated runs in one process, to choose a rate and a
 * schedule.
 *
 * Takes every fedlr-sim flag, and any of them as a list (--grid
 * NAME=V1|V2|..., --seeds A-B, or [grid] and [sweep] sections of the
 * --config file). Every configuration of the grid runs once per seed, as
 * fedlr-sim would run it with the same flags (sim/fl_sim: the same run
 * driver and trainer), so its metrics and weights are bit-identical to the
 * standalone run's. The dataset is loaded once and shared read-only; the
 * runs share one pool of worker threads (--workers, one per core by
 * default), a few runs at a time, so every core is busy until the last
 * run. Its parts:
 *   - the definition (fl_sweep_def: flags, [sweep] and [grid], sweep.ini)
 *     and the grid and seeds (fl_sweep_grid), every configuration checked
 *     before anything runs;
 *   - this file: the runs' life (start, pause, resume, stop, end), the
 *     decisions of successive halving (--halving) and of the range test
 *     (--lr-find), the progress lines, resuming (--resume DIR);
 *   - the report (fl_sweep_report): results.csv, summary.md, curves.svg.
 *
 * --out DIR (required) holds sweep.ini (the sweep's definition: `fedlr-sweep
 * --config DIR/sweep.ini` runs it again, --resume DIR continues it),
 * runs/<id>/ for every run (metrics.jsonl, config.ini, model.safetensors,
 * chart.svg, run.log, and result.ini once it has ended) and the report;
 * with --tensorboard TB, each run's event files go to TB/<id>.
 * A run whose result.ini exists is not run again by --resume. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <ini.h> /* result.ini */

#include "fl_blas.h"
#include "fl_clock.h"
#include "fl_config.h"
#include "fl_data.h"
#include "fl_error.h"
#include "fl_file.h"
#include "fl_model.h"
#include "fl_sched.h"
#include "fl_sim.h"
#include "fl_sweep_def.h"
#include "fl_sweep_grid.h"
#include "fl_sweep_lrfind.h"
#include "fl_sweep_report.h"

#define PROG "fedlr-sweep"

/* ---- runs ---- */

enum { RUN_IDLE = 0, RUN_RUNNING, RUN_PAUSED, RUN_ENDED };

typedef struct sweep sweep_t;

typedef struct {
  sweep_t *sw;
  size_t index, config, seed_index;
  char id[48];
  char dir[FL_PATH_MAX + 64];
  fl_config_t cfg;
  int state;
  fl_sim_t *sim;
  FILE *log;
  double t_started, seconds;
  size_t rung;     /* halving: the rung it pauses at next */
  int stop_reason; /* 0, or FL_SWEEP_HALVED: the sweep stopped it */
  fl_sweep_status_t status;
  uint32_t stop_round;
  char why[512];
  fl_round_metrics_t *rounds;
  size_t num_rounds;
  int loaded; /* ended in an earlier session (--resume) */
} run_t;

struct sweep {
  fl_sweep_def_t def;
  size_t num_configs, num_seeds, num_runs;
  run_t *runs;
  uint8_t *config_alive; /* (num_configs) not stopped by halving */
  /* scratch for rank_runs: which runs count, the ranking */
  uint8_t *include;      /* (num_runs) */
  fl_sweep_rank_t *rank; /* (num_configs) */
  size_t decided_rungs;  /* halving decisions made */
  fl_dataset_t *train, *test;
  fl_sim_pool_t *pool;
  size_t active_max;
  /* events from the workers: run indices whose run paused or finished */
  pthread_mutex_t mu;
  pthread_cond_t cond;
  size_t *events;
  size_t num_events;
  /* progress */
  double t0;
  size_t ended;
  uint64_t rounds_done;
};

/* ---- messages ---- */

static int fail(const char *what, int rc) {
  return fl_err_exit(PROG, what, rc);
}

static void say(const sweep_t *sw, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const sweep_t *sw, const char *fmt, ...) {
  if (sw->def.base.quiet) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, PROG ": ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}

/* ---- a run's result.ini ---- */

static const char *status_name(fl_sweep_status_t s) {
  switch (s) {
  case FL_SWEEP_DONE: return "done";
  case FL_SWEEP_HALVED: return "halved";
  case FL_SWEEP_FAILED: return "failed";
  default: return "pending";
  }
}

static int write_result(const run_t *r) {
  char text[1200], path[FL_PATH_MAX + 96];
  /* why is one line (fl_run's sentences have no newline) */
  int n = snprintf(text, sizeof text,
                   "# fedlr-sweep: how run %s ended (a sweep resumed with --resume skips it)\n"
                   "status = %s\nstop_round = %u\nrounds = %zu\nseconds = %.3f\nwhy = %s\n",
                   r->id, status_name(r->status), r->stop_round, r->num_rounds, r->seconds, r->why);
  snprintf(path, sizeof path, "%s/result.ini", r->dir);
  return fl_file_write_atomic(path, text, n < (int)sizeof text ? (size_t)n : sizeof text - 1);
}

typedef struct {
  run_t *r;
  int seen;
} result_read_t;

static int result_handler(void *user, const char *section, const char *name, const char *value) {
  result_read_t *x = user;
  (void)section;
  run_t *r = x->r;
  if (!strcmp(name, "status")) {
    x->seen = 1;
    r->status = !strcmp(value, "done")     ? FL_SWEEP_DONE
                : !strcmp(value, "halved") ? FL_SWEEP_HALVED
                : !strcmp(value, "failed") ? FL_SWEEP_FAILED
                                           : FL_SWEEP_PENDING;
  } else if (!strcmp(name, "stop_round")) {
    r->stop_round = (uint32_t)strtoul(value, NULL, 10);
  } else if (!strcmp(name, "seconds")) {
    r->seconds = strtod(value, NULL);
  } else if (!strcmp(name, "why")) {
    snprintf(r->why, sizeof r->why, "%s", value);
  }
  return 1;
}

/* A run that ended in an earlier session: its result.ini and metrics.
 * 1 if loaded, 0 if it must run, or an error. */
static int load_result(run_t *r) {
  char path[FL_PATH_MAX + 96];
  snprintf(path, sizeof path, "%s/result.ini", r->dir);
  uint8_t *text = NULL;
  size_t len = 0;
  if (access(path, F_OK) != 0) return 0;
  int rc = fl_file_read_all(path, 1 << 16, 0, &text, &len);
  if (rc) return rc;
  char *s = realloc(text, len + 1);
  if (!s) {
    free(text);
    return fl_err_set(FL_ENOMEM, "out of memory");
  }
  s[len] = '\0';
  result_read_t x = {r, 0};
  ini_parse_string(s, result_handler, &x);
  free(s);
  if (!x.seen || r->status == FL_SWEEP_PENDING) return 0; /* run it again */
  snprintf(path, sizeof path, "%s/metrics.jsonl", r->dir);
  if ((rc = fl_metrics_read(path, &r->rounds, &r->num_rounds))) return rc;
  r->state = RUN_ENDED;
  r->loaded = 1;
  return 1;
}

/* ---- progress ---- */

/* A run's score for the progress line and the best so far. */
static double run_score(const sweep_t *sw, const run_t *r) {
  fl_sweep_run_t v = {.rounds = r->rounds, .num_rounds = r->num_rounds};
  return fl_sweep_score(&v, sw->def.rank_by, 0, sw->def.base.target_accuracy);
}

static void fmt_seconds(double s, char *buf, size_t cap) {
  if (!(s >= 0) || s > 1e7)
    snprintf(buf, cap, "?");
  else if (s >= 3600)
    snprintf(buf, cap, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
  else if (s >= 60)
    snprintf(buf, cap, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
  else
    snprintf(buf, cap, "%.0fs", s);
}

/* The runs as the report sees them (views into sw->runs). */
static fl_sweep_run_t *run_views(const sweep_t *sw) {
  fl_sweep_run_t *v = calloc(sw->num_runs ? sw->num_runs : 1, sizeof *v);
  if (!v) return NULL;
  for (size_t i = 0; i < sw->num_runs; i++) {
    const run_t *r = &sw->runs[i];
    v[i] = (fl_sweep_run_t){.id = r->id,
                            .config = r->config,
                            .seed = r->cfg.seed,
                            .status = r->status,
                            .stop_round = r->stop_round,
                            .why = r->why,
                            .seconds = r->seconds,
                            .rounds = r->rounds,
                            .num_rounds = r->num_rounds};
  }
  return v;
}

/* Ranks the configurations into sw->rank: by fl_sweep_rank over the runs
 * with sw->include set, up to round `upto`; or (final) the sweep's final
 * ranking (fl_sweep_rank_final). The number ranked, or (size_t)-1 without
 * memory. */
static size_t rank_runs(sweep_t *sw, uint32_t upto, int final) {
  fl_sweep_run_t *v = run_views(sw);
  if (!v) {
    fl_err_set(FL_ENOMEM, "out of memory");
    return (size_t)-1;
  }
  double target = sw->def.base.target_accuracy;
  size_t n = final ? fl_sweep_rank_final(v, sw->num_runs, sw->num_configs, sw->def.rank_by, target,
                                         sw->def.halving.on, sw->rank)
                   : fl_sweep_rank(v, sw->num_runs, sw->include, sw->num_configs, sw->def.rank_by,
                                   upto, target, sw->rank);
  free(v);
  return n;
}

static void print_progress(sweep_t *sw, const run_t *r) {
  if (sw->def.base.quiet) return;
  char label[400], best[400] = "", eta[32], took[32];
  fl_grid_label(&sw->def.grid, r->config, label, sizeof label);
  /* ETA from the rounds still planned at the rate rounds went so far */
  uint64_t planned = 0;
  for (size_t i = 0; i < sw->num_runs; i++) {
    const run_t *q = &sw->runs[i];
    planned += q->state == RUN_ENDED ? q->num_rounds : q->cfg.rounds;
  }
  double el = fl_clock_now() - sw->t0;
  fmt_seconds(sw->rounds_done ? el * (double)(planned - sw->rounds_done) / (double)sw->rounds_done
                              : -1,
              eta, sizeof eta);
  fmt_seconds(r->seconds, took, sizeof took);
  /* the best configuration among the ended runs */
  for (size_t i = 0; i < sw->num_runs; i++)
    sw->include[i] = sw->runs[i].state == RUN_ENDED && sw->runs[i].num_rounds > 0;
  size_t n = rank_runs(sw, 0, 0);
  const fl_sweep_rank_t *rk = sw->rank;
  if (n && n != (size_t)-1 && !isnan(rk[0].mean)) {
    char bl[300];
    fl_grid_label(&sw->def.grid, rk[0].config, bl, sizeof bl);
    snprintf(best, sizeof best, " | best %s: %.4g (%zu run%s)", bl, rk[0].mean, rk[0].runs,
             rk[0].runs == 1 ? "" : "s");
  }
  double sc = run_score(sw, r);
  /* configurations whose every run has ended */
  size_t configs_done = 0;
  for (size_t k = 0, i = 0; k < sw->num_configs; k++) {
    size_t ended = 0;
    for (size_t s = 0; s < sw->num_seeds; s++, i++)
      ended += sw->runs[i].state == RUN_ENDED;
    configs_done += ended == sw->num_seeds;
  }
  fprintf(stderr,
          PROG ": [runs %zu/%zu, configurations %zu/%zu] %s %s seed %" PRIu64
               ": %s, %s%.4g, %u rounds, %s%s | ETA %s\n",
          sw->ended, sw->num_runs, configs_done, sw->num_configs, r->id, label, r->cfg.seed,
          status_name(r->status),
          sw->def.rank_by == FL_RANK_TARGET ? "rounds to target " : "score ", sc,
          (unsigned)r->num_rounds, took, best, eta);
}

/* ---- the runs' life ---- */

static void on_change(void *ctx, fl_sim_t *s) {
  run_t *r = ctx;
  sweep_t *sw = r->sw;
  (void)s;
  pthread_mutex_lock(&sw->mu);
  sw->events[sw->num_events++] = r->index;
  pthread_cond_signal(&sw->cond);
  pthread_mutex_unlock(&sw->mu);
}

static void run_log(void *ctx, int reason, const char *line) {
  run_t *r = ctx;
  (void)reason;
  if (r->log) fprintf(r->log, "%s\n", line);
}

static int start_run(sweep_t *sw, run_t *r) {
  int rc;
  if ((rc = fl_file_mkdirs(r->dir))) return rc;
  char path[FL_PATH_MAX + 96];
  snprintf(path, sizeof path, "%s/result.ini", r->dir);
  unlink(path); /* a rerun: no stale result */
  snprintf(path, sizeof path, "%s/run.log", r->dir);
  r->log = fopen(path, "w");
  if (!r->log) return fl_err_set(FL_EIO, "%s: cannot create: %s", path, strerror(errno));
  char tb[FL_PATH_MAX + 64]; /* --tensorboard DIR: the run's folder is DIR/<id> */
  snprintf(tb, sizeof tb, "%s/%s", r->cfg.tensorboard, r->id);
  fl_sim_config_t sc = {.cfg = &r->cfg,
                        .train = sw->train,
                        .test = sw->test,
                        .producer = "fedlr-sim",
                        .eval_threads = 1,
                        .log = run_log,
                        .on_change = on_change,
                        .ctx = r,
                        .tensorboard_dir = r->cfg.tensorboard[0] ? tb : NULL};
  if (!(r->sim = fl_sim_new(sw->pool, &sc, &rc))) {
    /* A configuration fedlr-sim refuses: the run fails, the sweep goes on. */
    r->status = FL_SWEEP_FAILED;
    snprintf(r->why, sizeof r->why, "%s", fl_err_msg());
    fclose(r->log);
    r->log = NULL;
    r->state = RUN_ENDED;
    return 0;
  }
  r->t_started = fl_clock_now();
  uint32_t pause = 0;
  if (sw->def.halving.on && r->rung < sw->def.halving.num_rungs)
    pause = sw->def.halving.rungs[r->rung];
  if (sw->def.lrfind.on) pause = 1;
  if (pause) fl_sim_pause_after(r->sim, pause);
  r->state = RUN_RUNNING;
  fl_sim_start(r->sim);
  return 0;
}

/* Copies the run's rounds so far (paused or finished). */
static int take_rounds(run_t *r) {
  const fl_metrics_t *m = fl_run_metrics(fl_sim_run(r->sim));
  size_t n = fl_metrics_count(m);
  fl_round_metrics_t *a = realloc(r->rounds, (n ? n : 1) * sizeof *a);
  if (!a) return fl_err_set(FL_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++)
    a[i] = *fl_metrics_get(m, i);
  r->rounds = a;
  r->num_rounds = n;
  return 0;
}

/* A finished run: its status, result.ini, the sim freed. */
static int end_run(sweep_t *sw, run_t *r) {
  int rc = take_rounds(r);
  if (rc) return rc;
  r->seconds += fl_clock_now() - r->t_started;
  int status = fl_run_status(fl_sim_run(r->sim));
  const char *why = fl_sim_why(r->sim);
  if (status != FL_RUN_OK && r->stop_reason != FL_SWEEP_HALVED) {
    r->status = FL_SWEEP_FAILED;
    snprintf(r->why, sizeof r->why, "%s", why);
  } else if (status != FL_RUN_OK) {
    r->status = FL_SWEEP_FAILED; /* stopped, and its outputs could not be written */
    snprintf(r->why, sizeof r->why, "stopped by halving, but: %s", why);
  } else if (r->stop_reason == FL_SWEEP_HALVED) {
    r->status = FL_SWEEP_HALVED;
    r->stop_round = (uint32_t)r->num_rounds;
  } else {
    r->status = FL_SWEEP_DONE;
    if (sw->def.lrfind.on) snprintf(r->why, sizeof r->why, "%s", why);
  }
  fl_sim_destroy(&r->sim);
  if (r->log && fclose(r->log) != 0 && !rc)
    rc = fl_err_set(FL_EIO, "%s/run.log: write failed", r->dir);
  r->log = NULL;
  r->state = RUN_ENDED;
  sw->ended++;
  sw->rounds_done += r->num_rounds;
  if (!rc) rc = write_result(r);
  print_progress(sw, r);
  return rc;
}

/* --lr-find: after each round, stop the run once its training loss
 * diverged, else one more round. */
static void lrfind_step(sweep_t *sw, run_t *r) {
  if (take_rounds(r) != 0 || !r->num_rounds) {
    r->state = RUN_RUNNING;
    fl_sim_stop(r->sim, "out of memory", FL_RUN_FAILED);
    return;
  }
  char why[300];
  r->t_started = fl_clock_now();
  if (fl_lrfind_diverged(&sw->def.lrfind, r->rounds, r->num_rounds, why, sizeof why)) {
    r->state = RUN_RUNNING; /* until its finished event */
    fl_sim_stop(r->sim, why, FL_RUN_OK);
    return;
  }
  fl_sim_pause_after(r->sim, (uint32_t)r->num_rounds + 1);
  r->state = RUN_RUNNING;
  r->t_started = fl_clock_now();
  fl_sim_resume(r->sim);
}

/* Successive halving: when every run of every configuration still in the
 * race has paused at the next rung (or ended), rank those configurations
 * by the mean of their runs' scores up to the rung, keep the best 1/ETA
 * (at least one) and stop the others' runs. */
static int halving_step(sweep_t *sw) {
  fl_halving_t *h = &sw->def.halving;
  if (!h->on || sw->decided_rungs >= h->num_rungs) return 0;
  size_t rung = sw->decided_rungs;
  uint32_t at = h->rungs[rung];
  for (size_t i = 0; i < sw->num_runs; i++) {
    const run_t *r = &sw->runs[i];
    if (!sw->config_alive[r->config]) continue;
    if (r->state == RUN_ENDED) continue;
    if (r->state != RUN_PAUSED || r->num_rounds < at) return 0; /* still going */
  }
  size_t alive = 0;
  for (size_t k = 0; k < sw->num_configs; k++)
    alive += sw->config_alive[k];
  for (size_t i = 0; i < sw->num_runs; i++)
    sw->include[i] = sw->config_alive[sw->runs[i].config];
  /* every configuration still in the race is ranked (it has runs) */
  size_t n = rank_runs(sw, at, 0);
  if (n == (size_t)-1) return FL_ENOMEM;
  const fl_sweep_rank_t *rk = sw->rank;
  size_t keep = alive / h->eta;
  if (keep < 1) keep = 1;
  sw->decided_rungs++;
  say(sw, "successive halving at round %u: keeping the best %zu of %zu configurations", at, keep,
      alive);
  for (size_t j = keep; j < n; j++) {
    size_t k = rk[j].config;
    sw->config_alive[k] = 0;
    for (size_t i = 0; i < sw->num_runs; i++) {
      run_t *r = &sw->runs[i];
      if (r->config != k || r->state != RUN_PAUSED) continue;
      snprintf(r->why, sizeof r->why,
               "successive halving at round %u: rank %zu of %zu (mean %.4g over %zu seed%s), "
               "only the best %zu went on",
               at, j + 1, alive, rk[j].mean, rk[j].runs, rk[j].runs == 1 ? "" : "s", keep);
      r->stop_reason = FL_SWEEP_HALVED;
      r->state = RUN_RUNNING; /* until its finished event */
      r->t_started = fl_clock_now();
      fl_sim_stop(r->sim, r->why, FL_RUN_OK);
    }
  }
  /* the survivors go on to the next rung */
  for (size_t i = 0; i < sw->num_runs; i++) {
    run_t *r = &sw->runs[i];
    if (!sw->config_alive[r->config] || r->state != RUN_PAUSED) continue;
    r->rung = rung + 1;
    fl_sim_pause_after(r->sim, r->rung < h->num_rungs ? h->rungs[r->rung] : 0);
    r->state = RUN_RUNNING;
    r->t_started = fl_clock_now();
    fl_sim_resume(r->sim);
  }
  return 0;
}

static size_t count_state(const sweep_t *sw, int state) {
  size_t n = 0;
  for (size_t i = 0; i < sw->num_runs; i++)
    n += sw->runs[i].state == state;
  return n;
}

/* Runs every run to its end. 0, or an error of the sweep's own (I/O,
 * memory): the runs' failures are results. */
static int run_all(sweep_t *sw) {
  size_t next = 0;
  int rc = 0;
  sw->t0 = fl_clock_now();
  for (;;) {
    /* keep the pool busy: start runs while fewer than active_max run */
    while (!rc && next < sw->num_runs && count_state(sw, RUN_RUNNING) < sw->active_max) {
      run_t *r = &sw->runs[next++];
      if (r->state == RUN_ENDED) continue; /* loaded */
      if (sw->def.halving.on && !sw->config_alive[r->config]) {
        r->status = FL_SWEEP_HALVED; /* cannot happen before its rung; kept for safety */
        r->state = RUN_ENDED;
        continue;
      }
      rc = start_run(sw, r);
      if (!rc && r->state == RUN_ENDED) {
        sw->ended++;
        rc = write_result(r);
        print_progress(sw, r);
      }
    }
    if (rc) break;
    /* a halving decision may be due (e.g. after loaded runs) */
    if ((rc = halving_step(sw))) break;
    if (count_state(sw, RUN_ENDED) == sw->num_runs) break;
    /* wait for an event */
    pthread_mutex_lock(&sw->mu);
    while (!sw->num_events)
      pthread_cond_wait(&sw->cond, &sw->mu);
    size_t ev = sw->events[--sw->num_events];
    pthread_mutex_unlock(&sw->mu);
    run_t *r = &sw->runs[ev];
    if (!r->sim) continue;
    int st = fl_sim_state(r->sim);
    if (st == FL_SIM_FINISHED) {
      rc = end_run(sw, r);
    } else if (st == FL_SIM_PAUSED) {
      r->state = RUN_PAUSED;
      r->seconds += fl_clock_now() - r->t_started; /* a paused run's wait is not its time */
      if (sw->def.lrfind.on)
        lrfind_step(sw, r);
      else if ((rc = take_rounds(r)) == 0)
        rc = halving_step(sw);
    }
    if (rc) break;
  }
  return rc;
}

/* ---- setup ---- */

static int setup_runs(sweep_t *sw) {
  sw->num_configs = fl_grid_num_configs(&sw->def.grid);
  sw->num_seeds = fl_grid_num_seeds(&sw->def.grid);
  sw->num_runs = sw->num_configs * sw->num_seeds;
  sw->runs = calloc(sw->num_runs, sizeof *sw->runs);
  sw->config_alive = malloc(sw->num_configs);
  sw->events = malloc(sw->num_runs * 4 * sizeof *sw->events + 64);
  sw->include = malloc(sw->num_runs);
  sw->rank = malloc(sw->num_configs * sizeof *sw->rank);
  if (!sw->runs || !sw->config_alive || !sw->events || !sw->include || !sw->rank)
    return fl_err_set(FL_ENOMEM, "out of memory");
  memset(sw->config_alive, 1, sw->num_configs);
  int width = 1;
  for (size_t n = sw->num_configs - 1; n >= 10; n /= 10)
    width++;
  for (size_t k = 0, i = 0; k < sw->num_configs; k++)
    for (size_t s = 0; s < sw->num_seeds; s++, i++) {
      run_t *r = &sw->runs[i];
      r->sw = sw;
      r->index = i;
      r->config = k;
      r->seed_index = s;
      int rc = fl_grid_config(&sw->def.grid, &sw->def.base, k, s, &r->cfg);
      if (!rc && (rc = fl_sim_check_config(&r->cfg))) {
        char label[400], inner[600];
        fl_grid_label(&sw->def.grid, k, label, sizeof label);
        snprintf(inner, sizeof inner, "%s", fl_err_msg());
        rc = fl_err_set(FL_EINVAL, "configuration %s: %s", label, inner);
      }
      if (rc) return rc;
      if (sw->def.lrfind.on) fl_lrfind_apply(&sw->def.lrfind, &r->cfg);
      snprintf(r->id, sizeof r->id, "c%0*zu-s%" PRIu64, width < 8 ? width : 8, k, r->cfg.seed);
      snprintf(r->dir, sizeof r->dir, "%s/runs/%s", sw->def.o.out, r->id);
      if (strlen(r->dir) + 16 >= FL_PATH_MAX)
        return fl_err_set(FL_EINVAL, "--out %s: too long a path", sw->def.o.out);
      memcpy(r->cfg.out, r->dir, strlen(r->dir) + 1);
      memcpy(r->cfg.metrics, r->dir, strlen(r->dir));
      memcpy(r->cfg.metrics + strlen(r->dir), "/metrics.jsonl", 15);
      r->cfg.quiet = 1;
      r->cfg.workers = 1;
    }
  return 0;
}

/* The report: results.csv, summary.md, curves.svg (and the range test's). */
static int write_report(sweep_t *sw) {
  fl_sweep_config_t *cf = calloc(sw->num_configs, sizeof *cf);
  char **labels = calloc(sw->num_configs, sizeof *labels);
  const char **names = calloc(sw->def.grid.num_dims + 1, sizeof *names);
  const char **values = calloc(sw->num_configs * (sw->def.grid.num_dims + 1), sizeof *values);
  fl_sweep_run_t *v = run_views(sw);
  int rc = 0;
  if (!cf || !labels || !names || !values || !v) {
    rc = fl_err_set(FL_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t d = 0; d < sw->def.grid.num_dims; d++)
    names[d] = sw->def.grid.dims[d].name;
  for (size_t k = 0; k < sw->num_configs; k++) {
    char label[1024];
    fl_grid_label(&sw->def.grid, k, label, sizeof label);
    if (!(labels[k] = strdup(label))) {
      rc = fl_err_set(FL_ENOMEM, "out of memory");
      goto out;
    }
    const char **vk = values + k * (sw->def.grid.num_dims + 1);
    for (size_t d = 0; d < sw->def.grid.num_dims; d++)
      vk[d] = fl_grid_value(&sw->def.grid, k, d);
    cf[k] = (fl_sweep_config_t){labels[k], sw->def.grid.num_dims, names, vk};
  }
  char title[600];
  snprintf(title, sizeof title, "fedlr-sweep: %.200s, %s, %zu configuration%s x %zu seed%s",
           sw->def.base.dataset, sw->def.base.model, sw->num_configs,
           sw->num_configs == 1 ? "" : "s", sw->num_seeds, sw->num_seeds == 1 ? "" : "s");
  fl_sweep_report_opts_t o = {.dir = sw->def.o.out,
                              .title = title,
                              .command = sw->def.command,
                              .rank_by = sw->def.rank_by,
                              .target = sw->def.base.target_accuracy,
                              .top = sw->def.o.top,
                              .halving = sw->def.halving.on ? sw->def.o.halving : NULL};
  rc = fl_sweep_report_write(&o, cf, sw->num_configs, v, sw->num_runs);
  if (!rc && sw->def.lrfind.on)
    rc = fl_lrfind_report(&sw->def.lrfind, sw->def.o.out, cf, sw->num_configs, v, sw->num_runs);
out:
  for (size_t k = 0; labels && k < sw->num_configs; k++)
    free(labels[k]);
  free(labels);
  free(cf);
  free(names);
  free(values);
  free(v);
  return rc;
}

static void print_summary(sweep_t *sw) {
  size_t failed = 0, halved = 0;
  for (size_t i = 0; i < sw->num_runs; i++) {
    failed += sw->runs[i].status == FL_SWEEP_FAILED;
    halved += sw->runs[i].status == FL_SWEEP_HALVED;
  }
  const fl_sweep_rank_t *rk = sw->rank;
  size_t n = rank_runs(sw, 0, 1);
  for (size_t j = 0; j < n && j < 5 && n != (size_t)-1; j++) {
    char label[400];
    fl_grid_label(&sw->def.grid, rk[j].config, label, sizeof label);
    printf("%zu. %s: %.4f +- %.4f (%zu run%s)\n", j + 1, label, rk[j].mean, rk[j].std, rk[j].runs,
           rk[j].runs == 1 ? "" : "s");
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("%zu runs (%zu stopped by halving, %zu failed) in %.1f s, peak memory %.0f MiB; "
         "%s/summary.md\n",
         sw->num_runs, halved, failed, fl_clock_now() - sw->t0, (double)ru.ru_maxrss / 1024.0,
         sw->def.o.out);
}

int main(int argc, char **argv) {
  fl_blas_setup(argc, argv);
  static sweep_t sweep;
  sweep_t *sw = &sweep;
  pthread_mutex_init(&sw->mu, NULL);
  pthread_cond_init(&sw->cond, NULL);
  int help = 0, status = 0, rc = fl_sweep_def_parse(&sw->def, argc, argv, &help);
  if (help) fl_sweep_def_help(stdout);
  if (help || rc) {
    fl_sweep_def_free(&sw->def);
    return rc ? fail(NULL, rc) : 0;
  }
  size_t workers =
      sw->def.base.workers ? sw->def.base.workers : (size_t)sysconf(_SC_NPROCESSORS_ONLN);
  if (workers < 1) workers = 1;
  if (workers > FL_SIM_MAX_WORKERS) workers = FL_SIM_MAX_WORKERS;
  /* One run more than the workers: while a run closes its round (on one
   * worker), the others' clients keep every other worker busy. */
  sw->active_max = workers + 1;
  if ((rc = setup_runs(sw))) {
    status = fail(NULL, rc);
    goto out;
  }
  /* A run holds up to three files while it is open (metrics, run.log,
   * events); successive halving keeps every run open until its first rung. */
  size_t open_runs = sw->def.halving.on ? sw->num_runs : sw->active_max;
  size_t fds = fl_file_raise_open_limit();
  if (fds != SIZE_MAX && 3 * open_runs + 64 > fds) {
    status = fail(NULL, fl_err_set(FL_EINVAL,
                                   "--halving keeps all %zu runs open until its first rung, three "
                                   "files each, and the open-file limit is %zu (ulimit -n): raise "
                                   "it, or sweep fewer configurations x seeds at once",
                                   sw->num_runs, fds));
    goto out;
  }
  if ((rc = fl_file_mkdirs(sw->def.o.out))) {
    status = fail("--out", rc);
    goto out;
  }
  size_t loaded = 0;
  if (sw->def.o.resume[0])
    for (size_t i = 0; i < sw->num_runs; i++) {
      if ((rc = load_result(&sw->runs[i])) < 0 || rc > 1) {
        status = fail(sw->runs[i].id, rc);
        goto out;
      }
      loaded += (size_t)rc;
    }
  if ((rc = fl_sweep_def_write(&sw->def))) {
    status = fail("--out", rc);
    goto out;
  }
  say(sw, "OpenBLAS core %s, %zu worker(s); %zu configuration%s x %zu seed%s = %zu runs%s",
      fl_blas_corename(), workers, sw->num_configs, sw->num_configs == 1 ? "" : "s", sw->num_seeds,
      sw->num_seeds == 1 ? "" : "s", sw->num_runs, sw->def.o.resume[0] ? "" : "");
  if (loaded)
    say(sw, "--resume: %zu of %zu runs ended before, not run again", loaded, sw->num_runs);
  sw->ended = loaded;
  for (size_t i = 0; i < sw->num_runs; i++)
    if (sw->runs[i].loaded) sw->rounds_done += sw->runs[i].num_rounds;
  if ((rc = fl_dataset_load_flags(sw->def.base.dataset, sw->def.base.data_dir,
                                  sw->def.base.test_data, &sw->train, &sw->test))) {
    status = fail("loading data", rc);
    goto out;
  }
  if (sw->def.base.clients > sw->train->n) {
    status = fail(NULL, fl_err_set(FL_EINVAL, "--clients %u exceeds the %zu training examples",
                                   sw->def.base.clients, sw->train->n));
    goto out;
  }
  if (!(sw->pool = fl_sim_pool_new(workers, &rc))) {
    status = fail("workers", rc);
    goto out;
  }
  if ((rc = run_all(sw))) {
    status = fail(NULL, rc);
    goto out;
  }
  if (sw->def.lrfind.on) {
    /* --lr auto's rate for this model, for the comparison */
    fl_model_spec_t m;
    size_t classes = sw->train->num_classes;
    if (sw->test && sw->test->num_classes > classes) classes = sw->test->num_classes;
    fl_shape_t shape;
    if (fl_shape_resolve(sw->def.base.input_shape, &sw->train->shape, sw->train->dim, &shape) ==
            0 &&
        fl_model_parse_shape(sw->def.base.model, sw->train->dim, &shape, classes, &m) == 0)
      sw->def.lrfind.auto_lr = fl_sched_lr_heuristic(m.num_params, 1.0);
  }
  if ((rc = write_report(sw))) {
    status = fail("report", rc);
    goto out;
  }
  if (!sw->def.base.quiet) print_summary(sw);
  if (sw->def.lrfind.on) fl_lrfind_print(&sw->def.lrfind, stdout);
out:
  for (size_t i = 0; sw->runs && i < sw->num_runs; i++) {
    fl_sim_destroy(&sw->runs[i].sim);
    if (sw->runs[i].log) fclose(sw->runs[i].log);
    free(sw->runs[i].rounds);
  }
  fl_sim_pool_destroy(&sw->pool);
  fl_dataset_destroy(&sw->train);
  fl_dataset_destroy(&sw->test);
  fl_sweep_def_free(&sw->def);
  free(sw->runs);
  free(sw->config_alive);
  free(sw->include);
  free(sw->rank);
  free(sw->events);
  return status;
}
