/* fl_parallel: run a function on n threads at once, for short bursts of
 * parallel work (evaluation) outside a worker pool. Results must not depend
 * on n: give each thread a fixed share of fixed-size work items and combine
 * per-item results in item order. */
#ifndef FL_PARALLEL_H
#define FL_PARALLEL_H

#include <stddef.h>

/* Calls fn(arg, t) for t = 0..n-1, t = 0 on the calling thread and the
 * others on new threads, and returns when all have returned. If a thread
 * cannot be created its share runs on the caller, so the work always gets
 * done. */
void fl_parallel_for(size_t n, void (*fn)(void *arg, size_t t), void *arg);

/* Online CPUs (at least 1). */
size_t fl_parallel_ncpu(void);

#endif
