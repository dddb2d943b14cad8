#include "fl_error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char fl__errbuf[512];

const char *fl_strerror(int err) {
  switch (err) {
  case FL_OK: return "success";
  case FL_EINVAL: return "invalid argument";
  case FL_ENOMEM: return "out of memory or over a size limit";
  case FL_EIO: return "input/output error";
  case FL_ENOENT: return "not found";
  case FL_EFORMAT: return "malformed input";
  case FL_ESHAPE: return "shape mismatch";
  case FL_ENONFINITE: return "non-finite value";
  case FL_ERANGE: return "value out of range";
  case FL_ESTALE: return "stale or duplicate message";
  case FL_EPROTO: return "protocol violation";
  case FL_ETOOBIG: return "input too large";
  case FL_ESTATE: return "invalid state";
  case FL_EUNSUPPORTED: return "unsupported";
  default: return "unknown error";
  }
}

int fl_err_set(int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(fl__errbuf, sizeof fl__errbuf, fmt, ap);
  va_end(ap);
  return err;
}

const char *fl_err_msg(void) {
  return fl__errbuf;
}

void fl_err_clear(void) {
  fl__errbuf[0] = '\0';
}

int fl_err_exit(const char *prog, const char *what, int err) {
  const char *msg = fl__errbuf[0] ? fl__errbuf : fl_strerror(err);
  if (what)
    fprintf(stderr, "%s: %s: %s\n", prog, what, msg);
  else
    fprintf(stderr, "%s: %s\n", prog, msg);
  return err == FL_EINVAL ? 2 : 1;
}
