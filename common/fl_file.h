/* fl_file: small file utilities with hard limits and crash-safe writes. */
#ifndef FL_FILE_H
#define FL_FILE_H

#include <stddef.h>
#include <stdint.h>

/* Flags of fl_file_open_input() and fl_file_read_all(). */
enum {
  FL_FILE_REGULAR = 0,  /* only a regular file (or a symlink to one) */
  FL_FILE_STREAM_OK = 1 /* also a FIFO or pipe, e.g. /dev/stdin or bash's <(...): the reader
                         * must bound what it reads, since the size is not known */
};

/* Opens an input file for reading without ever blocking in open() (a FIFO
 * without a writer would) and checks its type first: a directory, a device
 * (/dev/zero, a tty), a socket, or a FIFO without FL_FILE_STREAM_OK is
 * refused with a message naming the path and what it is. A FIFO allowed
 * as a stream is waited on until its writer has written or hung up (as
 * reading a pipe would). On success *fd is a blocking, close-on-exec
 * descriptor and *size the file's size (0 for a stream). FL_ENOENT if
 * missing, FL_EINVAL for a wrong type, FL_EIO else. */
int fl_file_open_input(const char *path, unsigned flags, int *fd, uint64_t *size);

/* Reads a whole file into a new malloc'd buffer (NUL-terminated for
 * convenience; *len excludes the NUL), after fl_file_open_input(path,
 * flags). FL_ENOENT if missing, FL_ETOOBIG if larger than max_bytes (a
 * stream is read only up to the limit plus one byte). */
int fl_file_read_all(const char *path, size_t max_bytes, unsigned flags, uint8_t **buf,
                     size_t *len);

/* The reading half of fl_file_read_all(), for a caller that checks more
 * than the type between opening and reading (e.g. a secret file's mode):
 * reads fd (from fl_file_open_input(), `size` as it returned) to its end
 * into a new malloc'd, NUL-terminated buffer. At most max_bytes are read
 * (a stream: the limit plus one byte), FL_ETOOBIG beyond; `path` is for
 * the messages only. Does not close fd. */
int fl_file_read_fd(int fd, const char *path, uint64_t size, size_t max_bytes, uint8_t **buf,
                    size_t *len);

/* Writes `len` bytes atomically: temporary file in the same directory, fsync,
 * rename over `path`, fsync of the directory. Readers see the old or the new
 * content, never a torn file, even across a crash. */
int fl_file_write_atomic(const char *path, const void *data, size_t len);

/* mkdir -p; 0 if it exists already. */
int fl_file_mkdirs(const char *path);

/* Raises this process's open-file limit (RLIMIT_NOFILE) to its hard
 * maximum and returns the limit now in force (SIZE_MAX: none), so that a
 * program's own bound on open files bites before the kernel's. */
size_t fl_file_raise_open_limit(void);

#endif
