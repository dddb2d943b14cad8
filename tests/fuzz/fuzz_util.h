/* fuzz_util: helpers shared by the fuzz harnesses (tests/fuzz/fuzz_*.c).
 *
 * The decoders under test read files, so each harness writes its input to a
 * per-process file in /tmp (named by tag and pid, reused across inputs and
 * removed at exit). Header-only: every harness is its own executable. */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define FUZZ_MAX_FILES 4

static char fuzz_files[FUZZ_MAX_FILES][64];
static int fuzz_nfiles;

static void fuzz_cleanup(void) {
  for (int i = 0; i < fuzz_nfiles; i++)
    unlink(fuzz_files[i]);
}

/* The per-process path for `tag` ("/tmp/fedlr-fuzz-TAG-PID"); registered for
 * removal at exit the first time it is asked for. */
static inline const char *fuzz_path(const char *tag) {
  char p[64];
  snprintf(p, sizeof p, "/tmp/fedlr-fuzz-%s-%ld", tag, (long)getpid());
  for (int i = 0; i < fuzz_nfiles; i++)
    if (strcmp(fuzz_files[i], p) == 0) return fuzz_files[i];
  if (fuzz_nfiles == FUZZ_MAX_FILES) abort(); /* harness bug */
  if (fuzz_nfiles == 0) atexit(fuzz_cleanup);
  memcpy(fuzz_files[fuzz_nfiles], p, sizeof p);
  return fuzz_files[fuzz_nfiles++];
}

/* Writes buf[0..len) to path, gzip-compressed if `gz`. Aborts on failure:
 * a harness that cannot write its input would silently test nothing.
 * The file is overwritten in place and then cut to length rather than opened
 * with O_TRUNC: on ext4, truncate-then-rewrite forces a flush at close
 * (auto_da_alloc), which made every execution ~2 ms. */
static inline void fuzz_write(const char *path, const uint8_t *buf, size_t len, int gz) {
  uint8_t *zbuf = NULL;
  if (gz) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
    size_t cap = deflateBound(&zs, (uLong)len) + 32;
    zbuf = malloc(cap);
    if (!zbuf) abort();
    zs.next_in = (Bytef *)(uintptr_t)buf;
    zs.avail_in = (uInt)len;
    zs.next_out = zbuf;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) abort();
    len = zs.total_out;
    buf = zbuf;
    deflateEnd(&zs);
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) abort();
  size_t done = 0;
  while (done < len) {
    ssize_t w = write(fd, buf + done, len - done);
    if (w <= 0) abort();
    done += (size_t)w;
  }
  if (ftruncate(fd, (off_t)len) != 0 || close(fd) != 0) abort();
  free(zbuf);
}

#endif
