/* fl_ratelog: one rate limiter for every log line a peer can cause.
 *
 * A hostile peer can make the coordinator refuse, drop or fail to send as
 * often as it likes; if each of those wrote a line, it would own the log
 * (and the disk). Every such line goes through fl_ratelog_printf() with a
 * reason: each reason may write at most `per_window` lines per window of
 * `window_s` seconds; the rest are counted, and when the window ends one
 * line per reason says how many were left out ("fedlr-coordinator: 1980 more
 * 'update from an unknown peer' lines in the last 10 s not logged"). So a
 * flood writes at most (reasons x (per_window + 1)) lines per window,
 * whatever its size.
 *
 * Lines go to a FILE (stderr), one fputs each, prefixed with `prefix`. The
 * clock is the caller's (monotonic seconds), so the limiter is testable and
 * knows nothing of event loops. Not thread-safe. */
#ifndef FL_RATELOG_H
#define FL_RATELOG_H

#include <stdint.h>
#include <stdio.h>

typedef struct fl_ratelog fl_ratelog_t;

/* `reasons[0..n)` name the reasons (borrowed, static strings); a reason is
 * its index. Returns NULL when out of memory. */
fl_ratelog_t *fl_ratelog_new(FILE *out, const char *prefix, const char *const *reasons, int n,
                             double window_s, unsigned per_window);
void fl_ratelog_destroy(fl_ratelog_t **l);

/* Writes the line (printf format, no trailing newline) if `reason` has
 * lines left in the current window, else counts it. Returns 1 if written.
 * Starts a new window first if the current one is over (see
 * fl_ratelog_tick). */
int fl_ratelog_printf(fl_ratelog_t *l, int reason, double now, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* 1 if a line of `reason` would be written now (to skip formatting work);
 * it does not count as a line. */
int fl_ratelog_would_log(fl_ratelog_t *l, int reason, double now);

/* Counts one event of `reason` without a line (e.g. a failed send, whose
 * details are not worth a line each): it shows in the window's summary. */
void fl_ratelog_count(fl_ratelog_t *l, int reason, double now);

/* Ends the window if it is over (or at once with `force`): one summary line
 * per reason that had lines left out, then every reason gets its lines
 * back. Call it from a timer so that summaries come even after a flood
 * stops. */
void fl_ratelog_tick(fl_ratelog_t *l, double now, int force);

/* Events of `reason` since the start (written, left out and counted). */
uint64_t fl_ratelog_total(const fl_ratelog_t *l, int reason);

#endif
