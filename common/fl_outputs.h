/* fl_outputs: what a finished run leaves in its --out directory, written
 * the same way by fedlr-sim and fedlr-coordinator.
 *
 *   DIR/model.safetensors   the final weights (fl_safetensors), metadata
 *                           model, rounds, seed, producer
 *   DIR/chart.svg           the metrics chart (fl_metrics_write_svg)
 *   DIR/config.ini          the configuration (fl_config_write)
 *
 * Every file is written atomically (temporary file in DIR, fsync, rename,
 * directory fsync): after a failure, a file is its old content or absent,
 * never partial or empty, and no temporary file is left behind. */
#ifndef FL_OUTPUTS_H
#define FL_OUTPUTS_H

#include <stdint.h>

#include "fl_config.h"
#include "fl_metrics.h"
#include "fl_model.h"

/* Creates `dir` if needed and writes the three files. `producer` names the
 * program ("fedlr-sim") in the model's metadata and the chart's title,
 * which also shows cfg's model, dataset, clients, fraction and schedule;
 * `rounds` is the number of rounds the weights have seen; `prog` the
 * FL_PROG_* whose keys config.ini lists; weights is (model->num_params).
 *
 * Every file is attempted even after one fails (on a full disk a small
 * one may still fit). Returns 0, or the first failure's code with its
 * message, which names the file and the OS error, followed by the names of
 * the other files that failed, if any. */
int fl_outputs_write(const char *dir, const char *producer, const fl_config_t *cfg, int prog,
                     const fl_model_spec_t *model, const float *weights, uint32_t rounds,
                     const fl_metrics_t *metrics);

#endif
