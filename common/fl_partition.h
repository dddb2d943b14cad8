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

/* Holds out a client's evaluation examples: floor(fraction * n) of its n
 * examples idx[0..n), at most n - 1 (one is left to train on), chosen at
 * random from a stream of (seed, client); train[] receives the others and
 * eval[] the held-out ones, each in their order in idx (stable). Both
 * arrays hold n entries. fraction in [0, 1): 0 holds out nothing (train is
 * idx). fedlr-sim and fedlr-client (--holdout) split the same way, so a
 * virtual client and a process on the same partition evaluate on the same
 * examples. Returns 0, FL_EINVAL (bad fraction) or FL_ENOMEM. */
int fl_partition_holdout(const uint32_t *idx, size_t n, double fraction, uint64_t seed,
                         uint64_t client, uint32_t *train, size_t *n_train, uint32_t *eval,
                         size_t *n_eval);

/* Prints one line per client (up to max_rows, then a "..." line and totals):
 * "client 3: 612 examples, labels [0:61 1:58 ...]". */
void fl_partition_print_summary(const fl_partition_t *p, const fl_dataset_t *d, FILE *f,
                                size_t max_rows);

#endif
