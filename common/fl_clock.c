/* fl_clock: see fl_clock.h. */
#include "fl_clock.h"

#include <time.h>

double fl_clock_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
