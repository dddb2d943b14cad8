#include "fl_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "fl_error.h"

/* First buffer for files whose size fstat can't tell (pipes, /proc). */
#define FILE_MIN_CHUNK ((size_t)4096)

/* What a non-regular file is, for the error message. */
static const char *file_kind(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISFIFO(m)) return "a FIFO (named pipe)";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

int fl_file_open_input(const char *path, unsigned flags, int *fd_out, uint64_t *size) {
  struct stat st;
  *fd_out = -1;
  *size = 0;
  /* O_NONBLOCK: open() of a FIFO would otherwise wait for a writer, and of
   * some devices have side effects; the type is checked before any read. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    if (errno == ENOENT) return fl_err_set(FL_ENOENT, "'%s' does not exist", path);
    return fl_err_set(FL_EIO, "cannot open '%s': %s", path, strerror(errno));
  }
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    return fl_err_set(FL_EIO, "cannot stat '%s': %s", path, strerror(e));
  }
  int stream = S_ISFIFO(st.st_mode) && (flags & FL_FILE_STREAM_OK);
  if (!S_ISREG(st.st_mode) && !stream) {
    close(fd);
    return fl_err_set(FL_EINVAL, "'%s' is %s, expected a regular file%s", path,
                      file_kind(st.st_mode), flags & FL_FILE_STREAM_OK ? " or a pipe" : "");
  }
  if (stream) {
    /* A FIFO reads as empty (EOF) until its writer comes: wait for the
     * writer's data or its hang-up, as a reader of a pipe expects. poll()
     * reports no hang-up for a writer that never came, so this waits for
     * one. The descriptor is kept, not reopened blocking: closing it would
     * leave a writer that its open released without a reader (SIGPIPE), and
     * a blocking open would wait for yet another writer if the first had
     * written and gone. */
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (poll(&pfd, 1, -1) < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(fd);
      return fl_err_set(FL_EIO, "cannot wait for '%s': %s", path, strerror(e));
    }
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
    int e = errno;
    close(fd);
    return fl_err_set(FL_EIO, "cannot read '%s': %s", path, strerror(e));
  }
  *fd_out = fd;
  *size = stream || st.st_size < 0 ? 0 : (uint64_t)st.st_size;
  return 0;
}

int fl_file_read_all(const char *path, size_t max_bytes, unsigned flags, uint8_t **buf,
                     size_t *len) {
  int fd = -1, rc;
  uint64_t size;
  *buf = NULL;
  *len = 0;
  if ((rc = fl_file_open_input(path, flags, &fd, &size))) return rc;
  rc = fl_file_read_fd(fd, path, size, max_bytes, buf, len);
  close(fd);
  return rc;
}

int fl_file_read_fd(int fd, const char *path, uint64_t size, size_t max_bytes, uint8_t **buf,
                    size_t *len) {
  int rc = 0;
  uint8_t *p = NULL;
  size_t used = 0, cap;
  *buf = NULL;
  *len = 0;
  /* One spare byte beyond max_bytes to tell "exactly at the limit" from "over",
   * one more for the NUL. */
  if (max_bytes > SIZE_MAX - 2) max_bytes = SIZE_MAX - 2;
  if (size > max_bytes) {
    rc = fl_err_set(FL_ETOOBIG, "'%s' is %llu bytes, the limit is %zu", path,
                    (unsigned long long)size, max_bytes);
    goto out;
  }
  cap = (size_t)size + 2;
  if (cap < FILE_MIN_CHUNK) cap = FILE_MIN_CHUNK;
  if (cap > max_bytes + 2) cap = max_bytes + 2;
  p = malloc(cap);
  if (!p) {
    rc = fl_err_set(FL_ENOMEM, "cannot allocate %zu bytes to read '%s'", cap, path);
    goto out;
  }
  for (;;) {
    if (used > max_bytes) {
      rc = size ? fl_err_set(FL_ETOOBIG, "'%s' grew beyond the limit of %zu bytes while reading",
                             path, max_bytes)
                : fl_err_set(FL_ETOOBIG, "'%s' holds more than the limit of %zu bytes", path,
                             max_bytes);
      goto out;
    }
    /* The file may have grown since fstat (or fstat said 0): grow to at
     * most the limit plus the two spare bytes. */
    if (used + 1 == cap) {
      size_t ncap = cap > (max_bytes + 2) / 2 ? max_bytes + 2 : 2 * cap;
      uint8_t *np = realloc(p, ncap);
      if (!np) {
        rc = fl_err_set(FL_ENOMEM, "cannot allocate %zu bytes to read '%s'", ncap, path);
        goto out;
      }
      p = np;
      cap = ncap;
    }
    ssize_t n = read(fd, p + used, cap - 1 - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      rc = fl_err_set(FL_EIO, "cannot read '%s': %s", path, strerror(errno));
      goto out;
    }
    if (n == 0) break;
    used += (size_t)n;
  }
  p[used] = '\0';
  *buf = p;
  *len = used;
  p = NULL;
out:
  free(p);
  return rc;
}

static int file_write_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Makes the rename durable: the new directory entry reaches the disk. */
static int file_fsync_dir(const char *path) {
  char dir[PATH_MAX];
  const char *slash = strrchr(path, '/');
  if (!slash) {
    strcpy(dir, ".");
  } else if (slash == path) {
    strcpy(dir, "/");
  } else {
    size_t n = (size_t)(slash - path);
    memcpy(dir, path, n);
    dir[n] = '\0';
  }
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return fl_err_set(FL_EIO, "cannot open directory '%s': %s", dir, strerror(errno));
  int rc = 0;
  /* Some file systems can't fsync a directory; the data itself is synced. */
  if (fsync(fd) < 0 && errno != EINVAL && errno != ENOTSUP)
    rc = fl_err_set(FL_EIO, "cannot sync directory '%s': %s", dir, strerror(errno));
  close(fd);
  return rc;
}

int fl_file_write_atomic(const char *path, const void *data, size_t len) {
  char tmp[PATH_MAX];
  int fd = -1, rc = 0, renamed = 0;
  int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  if (n < 0 || (size_t)n >= sizeof tmp) return fl_err_set(FL_EINVAL, "path too long: '%s'", path);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fl_err_set(FL_EIO, "cannot create '%s': %s", tmp, strerror(errno));
  if (file_write_all(fd, data, len) < 0) {
    rc = fl_err_set(FL_EIO, "cannot write '%s': %s", tmp, strerror(errno));
    goto out;
  }
  if (fsync(fd) < 0) {
    rc = fl_err_set(FL_EIO, "cannot sync '%s': %s", tmp, strerror(errno));
    goto out;
  }
  /* close() can report a deferred write error (NFS): check it. */
  int cr = close(fd);
  fd = -1;
  if (cr < 0) {
    rc = fl_err_set(FL_EIO, "cannot close '%s': %s", tmp, strerror(errno));
    goto out;
  }
  if (rename(tmp, path) < 0) {
    rc = fl_err_set(FL_EIO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    goto out;
  }
  renamed = 1;
  rc = file_fsync_dir(path);
out:
  if (fd >= 0) close(fd);
  if (!renamed) unlink(tmp);
  return rc;
}

int fl_file_mkdirs(const char *path) {
  char buf[PATH_MAX];
  struct stat st;
  size_t n = strlen(path);
  if (n == 0) return fl_err_set(FL_EINVAL, "empty directory path");
  if (n >= sizeof buf) return fl_err_set(FL_EINVAL, "path too long: '%s'", path);
  memcpy(buf, path, n + 1);
  /* Create each prefix ending before a '/', then the whole path. */
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] != '/' && buf[i] != '\0') continue;
    if (buf[i - 1] == '/') continue; /* "a//b" */
    char c = buf[i];
    buf[i] = '\0';
    if (mkdir(buf, 0755) < 0 && errno != EEXIST) {
      int e = errno;
      buf[i] = c;
      return fl_err_set(FL_EIO, "cannot create directory '%.*s': %s", (int)i, path, strerror(e));
    }
    buf[i] = c;
  }
  if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
    return fl_err_set(FL_EIO, "'%s' exists and is not a directory", path);
  return 0;
}

size_t fl_file_raise_open_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return SIZE_MAX;
  if (rl.rlim_cur < rl.rlim_max) {
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) rl.rlim_cur = old;
  }
  return rl.rlim_cur == RLIM_INFINITY ? SIZE_MAX : (size_t)rl.rlim_cur;
}
