/* fl_partition: splitting a dataset among clients, deterministically.
 *
 * Specs: "iid" (shuffle, split into near-equal parts), "shards:K" (FedAvg's
 * pathological non-IID split: sort by label, cut into num_clients*K equal
 * shards, give each client K random shards), "dirichlet:ALPHA" (per class,
 * client proportions drawn from Dirichlet(ALPHA); no client is left empty).
 * The same (dataset, spec, num_clients, seed) always gives the same split.
 * Each example goes to exactly one client; memory is one index array. */
#ifndef FL_PARTITION_H
#define FL_PARTITION_H

#include <stdint.h>
#include <stdio.h>

#include "fl_data.h"

typedef struct fl_partition fl_partition_t;

/* Validates the spec without a dataset (for flag checking). */
int fl_partition_check_spec(const char *spec);

/* Splits `d` among num_clients (1 <= num_clients <= d->n). */
int fl_partition_new(const fl_dataset_t *d, const char *spec, size_t num_clients, uint64_t seed,
                     fl_partition_t **out);
void fl_partition_destroy(fl_partition_t **p);

size_t fl_partition_num_clients(const fl_partition_t *p);
/* Indices (into the dataset) of client c's examples; *n receives the count.
 * The pointer stays valid for the partition's lifetime. */
const uint32_t *fl_partition_indices(const fl_partition_t *p, size_t c, size_t *n);

/* Prints one line per client (up to max_rows, then a "..." line and totals):
 * "client 3: 612 examples, labels [0:61 1:58 ...]". */
void fl_partition_print_summary(const fl_partition_t *p, const fl_dataset_t *d, FILE *f,
                                size_t max_rows);

#endif
