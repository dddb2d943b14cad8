/* fl_clock: the one clock fedlr's programs measure time with. */
#ifndef FL_CLOCK_H
#define FL_CLOCK_H

/* Seconds on the monotonic clock (CLOCK_MONOTONIC): for deadlines, timeouts
 * and durations, never for dates. */
double fl_clock_now(void);

#endif
