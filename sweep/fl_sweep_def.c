/* fl_sweep_def: see fl_sweep_def.h. */
#include "fl_sweep_def.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>

#include "fl_error.h"
#include "fl_file.h"

#define MAX_ARGS 4096
#define PROG "fedlr-sweep"

void fl_sweep_def_help(FILE *f) {
  fprintf(
      f,
      "Usage: " PROG " --out DIR [--grid NAME=V1|V2|...]... [--seeds A-B] [fedlr-sim flags]\n"
      "Runs a grid of fedlr-sim configurations x seeds in one process (the data loaded once, the\n"
      "runs sharing every core) and ranks them; each run equals the standalone fedlr-sim run with\n"
      "the same flags, bit for bit. `" PROG " --resume DIR` continues an interrupted sweep.\n"
      "\n"
      "Sweep options (also as keys of a [sweep] section in the --config file; the grid as\n"
      "'NAME = V1|V2|...' lines of a [grid] section):\n"
      "  --out DIR            the sweep's folder: sweep.ini, runs/<id>/, results.csv, summary.md,\n"
      "                       curves.svg (required)\n"
      "  --grid NAME=V1|V2|...\n"
      "                       a dimension of the grid: any fedlr-sim key and its values, e.g.\n"
      "                       lr=0.01|0.03|0.1 or 'schedule=const|exp:gamma=0.97'; repeat\n"
      "                       for more dimensions (their cartesian product runs)\n"
      "  --seeds SPEC         seeds of every configuration: A-B, A,B,C or a mix (default --seed)\n"
      "  --rank-by WHAT       final | best (test accuracy, or federated accuracy without a test\n"
      "                       set) | target (rounds to --target-accuracy) (default final)\n"
      "  --top N              configurations drawn in curves.svg (default 5)\n"
      "  --halving ETA[,min_rounds=R]\n"
      "                       successive halving: at rounds R, R*ETA, R*ETA^2, ... keep the best\n"
      "                       1/ETA of the configurations still running (by the mean over seeds)\n"
      "                       and stop the rest (default R: --rounds / ETA^3, at least 1)\n"
      "  --lr-find[=min=A,max=B,rounds=N]\n"
      "                       a learning-rate range test instead of a grid over rates: each run\n"
      "                       grows the rate from A to B exponentially over N rounds (--lr A\n"
      "                       --schedule exp:gamma=(B/A)^(1/(N-1))) until the training loss\n"
      "                       diverges; writes lr_find.csv, lr_find.md, lr_find.svg and suggests\n"
      "                       an initial rate (defaults: min=1e-4,max=10,rounds=40)\n"
      "  --resume DIR         continue an interrupted sweep: its definition is DIR/sweep.ini;\n"
      "                       runs that ended (runs/<id>/result.ini) are not run again\n"
      "  --workers N          threads shared by the runs (default: one per core)\n"
      "  --quiet              no progress lines\n"
      "\n"
      "The fedlr-sim flags follow (--dataset, --data-dir and --test-data are shared by every\n"
      "run; --metrics is per run, in runs/<id>/metrics.jsonl).\n\n");
  fl_config_print_help(f, FL_PROG_SIM, "fedlr-sim");
}

/* ---- the command line and the config file ---- */

/* Sets a sweep option by name (a flag without "--" or a [sweep] key).
 * 1 if `name` is not a sweep option, 0 if set, FL_EINVAL if bad. */
static int sweep_opt_set(fl_sweep_opts_t *o, const char *name, const char *value) {
  struct {
    const char *name;
    char *dst;
    size_t cap;
  } strs[] = {{"out", o->out, sizeof o->out},
              {"resume", o->resume, sizeof o->resume},
              {"seeds", o->seeds, sizeof o->seeds},
              {"halving", o->halving, sizeof o->halving},
              {"lr-find", o->lr_find, sizeof o->lr_find},
              {"rank-by", o->rank_by, sizeof o->rank_by}};
  char key[32];
  snprintf(key, sizeof key, "%s", name);
  for (char *p = key; *p; p++)
    if (*p == '_') *p = '-';
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
    if (strcmp(key, strs[i].name) != 0) continue;
    if (!value || !value[0]) return fl_err_set(FL_EINVAL, "--%s needs a value", key);
    if (strlen(value) >= strs[i].cap)
      return fl_err_set(FL_EINVAL, "--%s: longer than %zu characters", key, strs[i].cap - 1);
    snprintf(strs[i].dst, strs[i].cap, "%s", value);
    return 0;
  }
  if (!strcmp(key, "top")) {
    char *end;
    unsigned long v = value ? strtoul(value, &end, 10) : 0;
    if (!value || !*value || *end || v < 1 || v > 100)
      return fl_err_set(FL_EINVAL, "--top %s: must be in 1..100", value ? value : "");
    o->top = (uint32_t)v;
    return 0;
  }
  return 1;
}

typedef struct {
  fl_sweep_def_t *sw;
  const char *path;
  int line_err;
  char msg[600];
  /* [grid] lines, kept for after the base configuration is known */
  char names[FL_GRID_MAX_DIMS][64];
  char *values[FL_GRID_MAX_DIMS];
  int lines[FL_GRID_MAX_DIMS];
  size_t num;
} ini_read_t;

static int sweep_ini_handler(void *user, const char *section, const char *name, const char *value) {
  ini_read_t *x = user;
  if (!name || x->line_err) return 1;
  if (!strcmp(section, "sweep")) {
    int rc = sweep_opt_set(&x->sw->o, name, value);
    if (rc == 1)
      snprintf(x->msg, sizeof x->msg,
               "%s: [sweep]: unknown key '%s' (keys: out, seeds, halving, lr-find, rank-by, top)",
               x->path, name);
    else if (rc)
      snprintf(x->msg, sizeof x->msg, "%s: [sweep]: %s", x->path, fl_err_msg());
    if (rc) x->line_err = 1;
  } else if (!strcmp(section, "grid")) {
    if (x->num == FL_GRID_MAX_DIMS || strlen(name) >= sizeof x->names[0]) {
      snprintf(x->msg, sizeof x->msg, "%s: [grid] %s: too many dimensions or too long a name",
               x->path, name);
      x->line_err = 1;
      return 1;
    }
    snprintf(x->names[x->num], sizeof x->names[0], "%s", name);
    x->values[x->num] = strdup(value);
    if (!x->values[x->num]) {
      snprintf(x->msg, sizeof x->msg, "out of memory");
      x->line_err = 1;
      return 1;
    }
    x->num++;
  }
  return 1; /* other sections: fl_config's */
}

/* The [sweep] and [grid] sections of --config FILE (fl_config reads the
 * rest). */
static int read_ini(fl_sweep_def_t *sw, const char *path, ini_read_t *x) {
  uint8_t *text = NULL;
  size_t len = 0;
  int rc = fl_file_read_all(path, FL_CONFIG_MAX_BYTES, FL_FILE_STREAM_OK, &text, &len);
  if (rc) return rc; /* fl_config reports it with the same words */
  char *s = realloc(text, len + 1);
  if (!s) {
    free(text);
    return fl_err_set(FL_ENOMEM, "out of memory");
  }
  s[len] = '\0';
  x->sw = sw;
  x->path = path;
  ini_parse_string(s, sweep_ini_handler, x); /* syntax errors: fl_config's message */
  free(s);
  if (x->line_err) return fl_err_set(FL_EINVAL, "%s", x->msg);
  return 0;
}

/* Splits argv into the sweep's options and fedlr-sim's (into sim_argv,
 * argv[0] first). */
static int split_args(fl_sweep_def_t *sw, int argc, char **argv, char **sim_argv, int *sim_argc,
                      const char **config, int *help) {
  int n = 0;
  sim_argv[n++] = argv[0];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      *help = 1;
      return 0;
    }
    if (strncmp(a, "--", 2) != 0) {
      sim_argv[n++] = argv[i];
      continue;
    }
    char name[64];
    size_t nl = strcspn(a + 2, "=");
    snprintf(name, sizeof name, "%.*s", (int)(nl < 63 ? nl : 63), a + 2);
    const char *value = a[2 + nl] == '=' ? a + 3 + nl : NULL;
    for (char *p = name; *p; p++)
      if (*p == '_') *p = '-';
    int takes_value = strcmp(name, "lr-find") != 0;
    int known = !strcmp(name, "grid") || !strcmp(name, "lr-find") ||
                sweep_opt_set(&(fl_sweep_opts_t){0}, name, "1") != 1;
    if (!known) {
      if (!strcmp(name, "config") && i + 1 < argc && !value) *config = argv[i + 1];
      if (!strcmp(name, "config") && value) *config = value;
      if (n + 2 >= MAX_ARGS) return fl_err_set(FL_EINVAL, "too many arguments");
      sim_argv[n++] = argv[i];
      continue;
    }
    if (takes_value && !value) {
      if (i + 1 >= argc || !strncmp(argv[i + 1], "--", 2))
        return fl_err_set(FL_EINVAL, "--%s needs a value", name);
      value = argv[++i];
    }
    if (!strcmp(name, "grid")) {
      if (sw->o.num_grid == FL_GRID_MAX_DIMS)
        return fl_err_set(FL_EINVAL, "--grid: more than %d dimensions", FL_GRID_MAX_DIMS);
      sw->o.grid[sw->o.num_grid++] = value;
    } else if (!strcmp(name, "lr-find")) {
      /* an optional spec: --lr-find, --lr-find=SPEC or --lr-find SPEC */
      if (!value && i + 1 < argc && argv[i + 1][0] != '-') value = argv[++i];
      snprintf(sw->o.lr_find, sizeof sw->o.lr_find, "%s", value ? value : "on");
    } else {
      int rc = sweep_opt_set(&sw->o, name, value);
      if (rc) return rc;
    }
  }
  *sim_argc = n;
  return 0;
}

static int parse_rank_by(const char *s, fl_rank_by_t *out) {
  if (!s[0] || !strcmp(s, "final"))
    *out = FL_RANK_FINAL;
  else if (!strcmp(s, "best"))
    *out = FL_RANK_BEST;
  else if (!strcmp(s, "target"))
    *out = FL_RANK_TARGET;
  else
    return fl_err_set(FL_EINVAL, "--rank-by %s: must be final, best or target", s);
  return 0;
}

/* --halving ETA[,min_rounds=R] and its rungs below --rounds. */
static int parse_halving(const char *spec, uint32_t rounds, fl_halving_t *h) {
  memset(h, 0, sizeof *h);
  if (!spec[0]) return 0;
  char *end;
  unsigned long eta = strtoul(spec, &end, 10);
  if (end == spec || eta < 2 || eta > 100)
    return fl_err_set(FL_EINVAL, "--halving %s: ETA must be an integer in 2..100 (e.g. 3)", spec);
  unsigned long r = 0;
  if (*end == ',') {
    const char *kv = end + 1;
    if (strncmp(kv, "min_rounds=", 11) != 0 && strncmp(kv, "min-rounds=", 11) != 0)
      return fl_err_set(FL_EINVAL, "--halving %s: unknown part '%s' (expected min_rounds=R)", spec,
                        kv);
    r = strtoul(kv + 11, &end, 10);
    if (end == kv + 11 || r < 1)
      return fl_err_set(FL_EINVAL, "--halving %s: min_rounds must be a positive integer", spec);
  }
  if (*end)
    return fl_err_set(FL_EINVAL, "--halving %s: unexpected '%s' (expected ETA[,min_rounds=R])",
                      spec, end);
  if (!r) {
    r = rounds / (eta * eta * eta);
    if (r < 1) r = 1;
  }
  if (r >= rounds)
    return fl_err_set(FL_EINVAL,
                      "--halving %s: min_rounds %lu is not below --rounds %u: nothing to halve",
                      spec, r, rounds);
  h->on = 1;
  h->eta = (uint32_t)eta;
  h->min_rounds = (uint32_t)r;
  for (uint64_t at = r; at < rounds && h->num_rungs < 32; at *= eta)
    h->rungs[h->num_rungs++] = (uint32_t)at;
  return 0;
}

/* ---- sweep.ini: the sweep's definition ---- */

int fl_sweep_def_write(const fl_sweep_def_t *sw) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) return fl_err_set(FL_ENOMEM, "out of memory");
  fprintf(f, "# fedlr-sweep: the definition of this sweep; `fedlr-sweep --resume DIR` goes on\n"
             "# with it, `fedlr-sweep --config sweep.ini --out NEWDIR` runs it again.\n");
  fl_config_t base = sw->base;
  base.out[0] = base.metrics[0] = '\0';
  fl_config_write(&base, FL_PROG_SIM, f);
  fprintf(f, "\n[grid]\n");
  for (size_t d = 0; d < sw->grid.num_dims; d++) {
    fprintf(f, "%s = ", sw->grid.dims[d].name);
    for (size_t i = 0; i < sw->grid.dims[d].num_values; i++)
      fprintf(f, "%s%s", i ? "|" : "", sw->grid.dims[d].values[i]);
    fprintf(f, "\n");
  }
  fprintf(f, "\n[sweep]\n");
  if (sw->grid.seeds) {
    fprintf(f, "seeds = ");
    for (size_t i = 0; i < sw->grid.num_seeds; i++)
      fprintf(f, "%s%" PRIu64, i ? "," : "", sw->grid.seeds[i]);
    fprintf(f, "\n");
  }
  if (sw->o.halving[0]) fprintf(f, "halving = %s\n", sw->o.halving);
  if (sw->o.lr_find[0]) fprintf(f, "lr-find = %s\n", sw->o.lr_find);
  if (sw->o.rank_by[0]) fprintf(f, "rank-by = %s\n", sw->o.rank_by);
  if (sw->o.top) fprintf(f, "top = %u\n", sw->o.top);
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return fl_err_set(FL_ENOMEM, "out of memory");
  }
  char path[FL_PATH_MAX + 96];
  snprintf(path, sizeof path, "%s/sweep.ini", sw->o.out);
  int rc = fl_file_write_atomic(path, buf, len);
  free(buf);
  return rc;
}

static void record_command(fl_sweep_def_t *sw, int argc, char **argv) {
  size_t len = 0;
  for (int i = 0; i < argc && len < sizeof sw->command - 1; i++) {
    int n = snprintf(sw->command + len, sizeof sw->command - len, "%s%s", i ? " " : "", argv[i]);
    if (n < 0) break;
    len += (size_t)n;
  }
}

/* Options, grid and base configuration: 0 or an exit status. */
int fl_sweep_def_parse(fl_sweep_def_t *sw, int argc, char **argv, int *help_out) {
  static char *sim_argv[MAX_ARGS];
  int sim_argc = 0, help = 0, rc;
  const char *config = NULL;
  if (argc >= MAX_ARGS) return fl_err_set(FL_EINVAL, "too many arguments");
  if ((rc = split_args(sw, argc, argv, sim_argv, &sim_argc, &config, &help))) return rc;
  if (help) {
    *help_out = 1;
    return 0;
  }
  char resume_ini[FL_PATH_MAX + 32];
  if (sw->o.resume[0]) {
    /* the definition is DIR/sweep.ini; only --workers (and its value) and
     * --quiet may come too */
    const char *other = NULL;
    for (int i = 1; i < sim_argc && !other; i++) {
      if (!strcmp(sim_argv[i], "--workers"))
        i++; /* its value */
      else if (strncmp(sim_argv[i], "--workers=", 10) && strcmp(sim_argv[i], "--quiet"))
        other = sim_argv[i];
    }
    if (!other && (sw->o.num_grid || sw->o.seeds[0] || sw->o.halving[0] || sw->o.lr_find[0] ||
                   sw->o.out[0] || sw->o.rank_by[0] || sw->o.top))
      other = "a sweep option";
    if (other)
      return fl_err_set(FL_EINVAL,
                        "--resume %s: the sweep's definition is %s/sweep.ini; give only --workers "
                        "or --quiet with it (not %s)",
                        sw->o.resume, sw->o.resume, other);
    snprintf(resume_ini, sizeof resume_ini, "%s/sweep.ini", sw->o.resume);
    if (access(resume_ini, F_OK) != 0)
      return fl_err_set(FL_ENOENT,
                        "--resume %s: no sweep.ini there (DIR is the --out of the "
                        "sweep to continue)",
                        sw->o.resume);
    config = resume_ini;
    if (sim_argc + 2 >= MAX_ARGS) return fl_err_set(FL_EINVAL, "too many arguments");
    sim_argv[sim_argc++] = "--config";
    sim_argv[sim_argc++] = resume_ini;
  }
  ini_read_t ini = {0};
  fl_sweep_opts_t flags = sw->o; /* flags override the file */
  memset(&sw->o, 0, sizeof sw->o);
  if (config && (rc = read_ini(sw, config, &ini)) && rc != FL_ENOENT && rc != FL_EINVAL &&
      rc != FL_ETOOBIG) {
    for (size_t i = 0; i < ini.num; i++)
      free(ini.values[i]);
    return rc;
  }
  int ini_rc = rc;
  char ini_msg[600];
  snprintf(ini_msg, sizeof ini_msg, "%s", fl_err_msg());
  fl_sweep_opts_t file = sw->o;
  sw->o = flags;
#define FROM_FILE(f)                                                                               \
  if (!sw->o.f[0]) snprintf(sw->o.f, sizeof sw->o.f, "%s", file.f)
  FROM_FILE(out);
  FROM_FILE(seeds);
  FROM_FILE(halving);
  FROM_FILE(lr_find);
  FROM_FILE(rank_by);
#undef FROM_FILE
  if (!sw->o.top) sw->o.top = file.top;
  if (sw->o.resume[0]) snprintf(sw->o.out, sizeof sw->o.out, "%s", sw->o.resume);
  const char *const skip[] = {"grid", "sweep", NULL};
  int want_help = 0;
  rc = fl_config_parse_sections(&sw->base, FL_PROG_SIM, sim_argc, sim_argv, &want_help, skip);
  if (!rc && ini_rc == FL_EINVAL && config) rc = fl_err_set(FL_EINVAL, "%s", ini_msg);
  if (rc) {
    for (size_t i = 0; i < ini.num; i++)
      free(ini.values[i]);
    return FL_EINVAL;
  }
  /* the grid: the file's dimensions unless a flag names the same key */
  for (size_t i = 0; i < ini.num && !rc; i++) {
    const char *key = fl_config_key(ini.names[i]);
    int overridden = 0;
    for (size_t j = 0; key && j < sw->o.num_grid; j++) {
      const char *g = sw->o.grid[j];
      size_t n = strcspn(g, "=");
      char nm[64];
      snprintf(nm, sizeof nm, "%.*s", (int)(n < 63 ? n : 63), g);
      const char *gk = fl_config_key(nm);
      overridden |= gk && !strcmp(gk, key);
    }
    char where[FL_PATH_MAX + 16];
    snprintf(where, sizeof where, "%.*s: [grid]", FL_PATH_MAX - 1, config);
    if (!overridden)
      rc = fl_grid_add_values(&sw->grid, &sw->base, ini.names[i], ini.values[i], where);
  }
  for (size_t i = 0; i < ini.num; i++)
    free(ini.values[i]);
  for (size_t j = 0; j < sw->o.num_grid && !rc; j++)
    rc = fl_grid_add(&sw->grid, &sw->base, sw->o.grid[j], "--grid");
  if (rc) return rc;
  if (sw->base.metrics[0])
    return fl_err_set(FL_EINVAL, "--metrics: a sweep writes each run's metrics to "
                                 "runs/<id>/metrics.jsonl under --out");
  if (!sw->o.out[0]) {
    if (sw->base.out[0])
      snprintf(sw->o.out, sizeof sw->o.out, "%s", sw->base.out);
    else
      return fl_err_set(FL_EINVAL, "--out DIR is required (the sweep's results)");
  }
  sw->base.out[0] = '\0';
  if (sw->o.seeds[0] && (rc = fl_grid_set_seeds(&sw->grid, sw->o.seeds))) return rc;
  if ((rc = parse_rank_by(sw->o.rank_by, &sw->rank_by))) return rc;
  if (sw->rank_by == FL_RANK_TARGET && !(sw->base.target_accuracy > 0))
    return fl_err_set(FL_EINVAL, "--rank-by target needs --target-accuracy");
  if ((rc = parse_halving(sw->o.halving, sw->base.rounds, &sw->halving))) return rc;
  if (sw->o.lr_find[0]) {
    if ((rc = fl_lrfind_parse(sw->o.lr_find, &sw->lrfind))) return rc;
    if (sw->halving.on) return fl_err_set(FL_EINVAL, "--lr-find and --halving do not go together");
    for (size_t d = 0; d < sw->grid.num_dims; d++) {
      const char *k = sw->grid.dims[d].name;
      if (!strcmp(k, "lr") || !strcmp(k, "schedule") || !strcmp(k, "rounds") ||
          !strcmp(k, "target-accuracy"))
        return fl_err_set(FL_EINVAL,
                          "--grid %s with --lr-find: the range test sets --lr, "
                          "--schedule and --rounds itself",
                          k);
    }
  }
  if ((rc = fl_grid_check(&sw->grid, &sw->base))) return rc;
  record_command(sw, argc, argv);
  return 0;
}

void fl_sweep_def_free(fl_sweep_def_t *d) {
  fl_grid_free(&d->grid);
  fl_lrfind_free(&d->lrfind);
}
