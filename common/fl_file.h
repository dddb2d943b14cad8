/* fl_file: small file utilities with hard limits and crash-safe writes. */
#ifndef FL_FILE_H
#define FL_FILE_H

#include <stddef.h>
#include <stdint.h>

/* Reads a whole file into a new malloc'd buffer (NUL-terminated for
 * convenience; *len excludes the NUL). FL_ENOENT if missing, FL_ETOOBIG if
 * larger than max_bytes. */
int fl_file_read_all(const char *path, size_t max_bytes, uint8_t **buf, size_t *len);

/* Writes `len` bytes atomically: temporary file in the same directory, fsync,
 * rename over `path`, fsync of the directory. Readers see the old or the new
 * content, never a torn file, even across a crash. */
int fl_file_write_atomic(const char *path, const void *data, size_t len);

/* mkdir -p; 0 if it exists already. */
int fl_file_mkdirs(const char *path);

#endif
