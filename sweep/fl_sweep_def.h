/* fl_sweep_def: what a sweep is, from its command line and config file.
 *
 * fedlr-sweep's flags are fedlr-sim's plus its own (--out, --grid, --seeds,
 * --halving, --lr-find, --rank-by, --top, --resume); the config file may
 * hold fedlr-sim's keys (top level or [fedlr]) and the sweep's in [sweep]
 * and [grid] sections; flags override the file, and a --grid flag replaces
 * the file's dimension of the same key. With --resume DIR the definition
 * is DIR/sweep.ini (only --workers and --quiet may be given with it).
 * Everything is checked here, before anything runs: every configuration of
 * the grid as fedlr-sim would check its flags. fl_sweep_def_write records
 * the definition as DIR/sweep.ini, which reads back to the same sweep. */
#ifndef FL_SWEEP_DEF_H
#define FL_SWEEP_DEF_H

#include <stdint.h>
#include <stdio.h>

#include "fl_config.h"
#include "fl_sweep_grid.h"
#include "fl_sweep_lrfind.h"
#include "fl_sweep_report.h"

#define FL_SWEEP_SPEC_MAX 256

/* The sweep's own options, as given (flags over the [sweep] section). */
typedef struct {
  char out[FL_PATH_MAX];
  char resume[FL_PATH_MAX];
  char seeds[FL_SWEEP_SPEC_MAX];
  char halving[FL_SWEEP_SPEC_MAX];
  char lr_find[FL_SWEEP_SPEC_MAX]; /* "" = off; "on" or "min=..,max=..,rounds=.." */
  char rank_by[32];
  uint32_t top;
  /* --grid specs from the flags, in order */
  const char *grid[FL_GRID_MAX_DIMS];
  size_t num_grid;
} fl_sweep_opts_t;

/* Successive halving: --halving ETA[,min_rounds=R]. */
typedef struct {
  int on;
  uint32_t eta, min_rounds;
  uint32_t rungs[32]; /* R, R*ETA, ... below --rounds */
  size_t num_rungs;
} fl_halving_t;

typedef struct {
  fl_sweep_opts_t o;
  fl_config_t base; /* fedlr-sim's flags; out and metrics empty */
  fl_grid_t grid;
  fl_halving_t halving;
  fl_lrfind_t lrfind; /* .on: a range test */
  fl_rank_by_t rank_by;
  char command[2048]; /* the command line, for summary.md */
} fl_sweep_def_t;

/* Reads the definition from argv (zero *d first). 0; or *help = 1 for
 * --help/-h (nothing else is read); or an error with a message naming the
 * flag, key or grid part (FL_EINVAL: a bad flag or value; FL_ENOENT: a
 * missing --config or --resume DIR). */
int fl_sweep_def_parse(fl_sweep_def_t *d, int argc, char **argv, int *help);

/* fedlr-sweep's --help: its own options, then fedlr-sim's. */
void fl_sweep_def_help(FILE *f);

/* Writes OUT/sweep.ini atomically. */
int fl_sweep_def_write(const fl_sweep_def_t *d);

void fl_sweep_def_free(fl_sweep_def_t *d);

#endif
