/* fl_sbuf: a growable text buffer with a hard maximum, for files rendered
 * in memory before an atomic write (charts, reports) and for queued lines.
 * The first failure sticks in err, so a writer appends without checking
 * each call and looks once at the end. */
#ifndef FL_SBUF_H
#define FL_SBUF_H

#include <stddef.h>

/* The largest text a buffer grows to; a larger one is a bug or a runaway. */
#define FL_SBUF_MAX_BYTES ((size_t)64 << 20)

/* Zero-initialise ({0}) to start; free(b.p) when done. p is NUL-terminated
 * once anything was appended (p is NULL before). */
typedef struct {
  char *p;
  size_t len, cap;
  int err; /* 0; FL_ENOMEM (past FL_SBUF_MAX_BYTES, or no memory) or FL_EINVAL (a bad format) */
} fl_sbuf_t;

/* Appends printf-style; does nothing once b->err is set. */
void fl_sbuf_printf(fl_sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
