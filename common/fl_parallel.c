#include "fl_parallel.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct {
  void (*fn)(void *arg, size_t t);
  void *arg;
  size_t t;
} job_t;

static void *run(void *p) {
  job_t *j = p;
  j->fn(j->arg, j->t);
  return NULL;
}

void fl_parallel_for(size_t n, void (*fn)(void *arg, size_t t), void *arg) {
  if (n <= 1) {
    if (n == 1) fn(arg, 0);
    return;
  }
  job_t *jobs = malloc(n * sizeof *jobs);
  pthread_t *th = malloc(n * sizeof *th);
  int *started = calloc(n, sizeof *started);
  if (!jobs || !th || !started) {
    for (size_t t = 0; t < n; t++)
      fn(arg, t);
    goto out;
  }
  for (size_t t = 1; t < n; t++) {
    jobs[t] = (job_t){fn, arg, t};
    started[t] = pthread_create(&th[t], NULL, run, &jobs[t]) == 0;
  }
  fn(arg, 0);
  for (size_t t = 1; t < n; t++) {
    if (started[t])
      pthread_join(th[t], NULL);
    else
      fn(arg, t);
  }
out:
  free(jobs);
  free(th);
  free(started);
}

size_t fl_parallel_ncpu(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (size_t)n : 1;
}
