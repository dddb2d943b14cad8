/* fl_sweep_grid: the configurations of a sweep, from --grid specs and
 * --seeds.
 *
 * A grid is a list of dimensions, each a fedlr-sim key with a list of
 * values: "--grid lr=0.01|0.03|0.1" or, in the config file's [grid]
 * section, "lr = 0.01|0.03|0.1". Its configurations are the cartesian
 * product, the first dimension varying slowest (as nested loops in the
 * order given); every configuration runs once per seed. Each value is
 * checked as the flag's value would be (fl_config_set) when it is added,
 * and each combination with the rules between keys (fl_grid_check), so a
 * bad spec is refused before anything runs, with a message naming the
 * part: "--grid lr=0.1|x: value 'x': --lr x: must be a number or auto". */
#ifndef FL_SWEEP_GRID_H
#define FL_SWEEP_GRID_H

#include <stddef.h>
#include <stdint.h>

#include "fl_config.h"

#define FL_GRID_MAX_DIMS 16
#define FL_GRID_MAX_VALUES 256 /* values in one dimension */
#define FL_GRID_MAX_CONFIGS 100000
#define FL_GRID_MAX_SEEDS 1000

typedef struct {
  const char *name; /* canonical key name (fl_config_key) */
  size_t num_values;
  char **values;
} fl_grid_dim_t;

typedef struct {
  fl_grid_dim_t dims[FL_GRID_MAX_DIMS];
  size_t num_dims;
  uint64_t *seeds; /* NULL: the base configuration's seed alone */
  size_t num_seeds;
} fl_grid_t;

/* Adds a dimension "NAME=V1|V2|..." (`where` names its origin in messages:
 * "--grid", "sweep.ini:4"). Checked against `base`: the key must be a
 * fedlr-sim key that a sweep may vary (not the shared data --dataset,
 * --data-dir, --test-data; not --seed: use --seeds; not the sweep's own
 * outputs --metrics, --out, --workers, --quiet), not already a dimension,
 * with 1..FL_GRID_MAX_VALUES distinct non-empty values each accepted by
 * fl_config_set. 0, or FL_EINVAL with a message. */
int fl_grid_add(fl_grid_t *g, const fl_config_t *base, const char *spec, const char *where);
/* The same with the name and the values apart (an INI line). */
int fl_grid_add_values(fl_grid_t *g, const fl_config_t *base, const char *name, const char *values,
                       const char *where);

/* Parses --seeds: "A-B" (inclusive), "A,B,C" or a mix ("1-3,10"), distinct,
 * at most FL_GRID_MAX_SEEDS. 0 or FL_EINVAL naming the bad part. */
int fl_grid_set_seeds(fl_grid_t *g, const char *spec);

/* Configurations (product of the dimensions' sizes; 1 without any) and
 * runs (configurations x seeds). */
size_t fl_grid_num_configs(const fl_grid_t *g);
size_t fl_grid_num_seeds(const fl_grid_t *g);

/* Configuration k's value in dimension d. */
const char *fl_grid_value(const fl_grid_t *g, size_t k, size_t d);

/* "lr=0.03 schedule=exp:gamma=0.97" into buf ("base" without dims). */
void fl_grid_label(const fl_grid_t *g, size_t k, char *buf, size_t cap);

/* The configuration of run (k, seed index s): base with configuration k's
 * values and the seed, validated as fedlr-sim validates its flags. 0, or
 * FL_EINVAL with a message naming the configuration. */
int fl_grid_config(const fl_grid_t *g, const fl_config_t *base, size_t k, size_t s,
                   fl_config_t *out);

/* Checks every configuration (fl_grid_config for each k and seed 0) and
 * the size limits. */
int fl_grid_check(const fl_grid_t *g, const fl_config_t *base);

void fl_grid_free(fl_grid_t *g);

#endif
