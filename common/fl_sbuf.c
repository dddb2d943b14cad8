/* fl_sbuf: see fl_sbuf.h. */
#include "fl_sbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "fl_error.h"

void fl_sbuf_printf(fl_sbuf_t *b, const char *fmt, ...) {
  for (;;) {
    if (b->err) return;
    size_t room = b->cap - b->len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->err = FL_EINVAL;
      return;
    }
    if ((size_t)n < room) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap ? b->cap * 2 : 65536;
    while (cap < b->len + (size_t)n + 1)
      cap *= 2;
    if (cap > FL_SBUF_MAX_BYTES) {
      b->err = FL_ENOMEM;
      return;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
      b->err = FL_ENOMEM;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
}
