/* fl_error: the one error convention of fedlr.
 *
 * Every fallible function returns int: 0 on success, a negative FL_E* code on
 * failure. fl_strerror() names the code. Because a code alone rarely says what
 * to fix, the function that detects an error also records a detail message
 * with fl_err_set(); fl_err_msg() returns the calling thread's last detail
 * (like dlerror(): per thread, overwritten by the next error). */
#ifndef FL_ERROR_H
#define FL_ERROR_H

#include <stddef.h>

enum {
  FL_OK = 0,
  FL_EINVAL = -1,       /* bad argument, flag, spec or config value */
  FL_ENOMEM = -2,       /* allocation failed or a size limit was hit */
  FL_EIO = -3,          /* read/write failed */
  FL_ENOENT = -4,       /* file or dataset not found */
  FL_EFORMAT = -5,      /* corrupt or undecodable file or message */
  FL_ESHAPE = -6,       /* tensor shape or count mismatch */
  FL_ENONFINITE = -7,   /* NaN or infinity where finite values are required */
  FL_ERANGE = -8,       /* value outside its allowed range */
  FL_ESTALE = -9,       /* message for another round, or duplicate */
  FL_EPROTO = -10,      /* message not allowed in this state / from this peer */
  FL_ETOOBIG = -11,     /* input larger than its limit */
  FL_ESTATE = -12,      /* call not valid in the object's current state */
  FL_EUNSUPPORTED = -13 /* feature or version not supported */
};

/* Name of an error code, e.g. "invalid argument". Never NULL. */
const char *fl_strerror(int err);

/* Records a printf-style detail message for the calling thread and returns
 * `err` unchanged, so detection sites read `return fl_err_set(FL_EINVAL, ...)`. */
int fl_err_set(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The calling thread's last detail message ("" if none). Valid until the next
 * fl_err_set() on this thread. */
const char *fl_err_msg(void);

/* Clears the calling thread's detail message. */
void fl_err_clear(void);

/* A program's report of error `err` on stderr: "PROG: WHAT: detail" (no
 * "WHAT: " when what is NULL; the detail is fl_err_msg(), or
 * fl_strerror(err) without one). Returns the exit status: 2 for a bad
 * flag or value (FL_EINVAL), else 1. */
int fl_err_exit(const char *prog, const char *what, int err);

#endif
