/* fl_tboard: see fl_tboard.h. */
#include "fl_tboard.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fl_error.h"
#include "fl_file.h"
#include "tensorboard/compat/proto/event.pb-c.h"

#define FILE_VERSION "brain.Event:2"
#define HEADER_BYTES 12 /* length, its masked CRC */
#define FOOTER_BYTES 4  /* the data's masked CRC */
#define MAX_SUFFIX 1000 /* ".1" .. ".999" when a file name is taken */

/* ---- CRC-32C ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    crc_table[i] = c;
  }
}

/* A byte at a time: an event file takes some 50 bytes a scalar, so a
 * faster kernel (slicing, SSE4.2's crc32) would buy nothing here. */
uint32_t fl_tboard_crc32c(uint32_t crc, const void *p, size_t len) {
  pthread_once(&crc_once, crc_init);
  const uint8_t *b = p;
  crc = ~crc;
  for (size_t i = 0; i < len; i++)
    crc = crc_table[(crc ^ b[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t fl_tboard_crc_mask(uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

static void put_le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- names ---- */

/* This host's name, with every byte but [A-Za-z0-9._-] replaced by '_'
 * (it goes into file and folder names); "localhost" if it has none. */
static void host_name(char *buf, size_t cap) {
  if (gethostname(buf, cap) != 0 || !buf[0]) snprintf(buf, cap, "localhost");
  buf[cap - 1] = '\0';
  for (char *c = buf; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
          *c == '.' || *c == '_' || *c == '-'))
      *c = '_';
}

int fl_tboard_run_name(const char *program, time_t t, char *buf, size_t cap) {
  static const char *const months[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  if (!program || !program[0] || strchr(program, '/') || !buf || !cap)
    return fl_err_set(FL_EINVAL, "fl_tboard_run_name: no program name");
  struct tm tm;
  if (!localtime_r(&t, &tm)) return fl_err_set(FL_EINVAL, "fl_tboard_run_name: bad time");
  char host[256];
  host_name(host, sizeof host);
  int w = snprintf(buf, cap, "%s%02d_%02d-%02d-%02d_%s-%s", months[tm.tm_mon % 12], tm.tm_mday,
                   tm.tm_hour, tm.tm_min, tm.tm_sec, host, program);
  if (w < 0 || (size_t)w >= cap)
    return fl_err_set(FL_ETOOBIG, "TensorBoard run name '%s...' is longer than %zu bytes", buf,
                      cap - 1);
  return 0;
}

/* ---- the writer ---- */

struct fl_tboard {
  int fd; /* -1 once closed */
  char *path;
  uint64_t good;   /* the file's size up to its last whole record */
  int cut_pending; /* a partial record is still at the end: cut it off first */
  uint8_t *queue;  /* (len) records not written yet, in order; cap allocated */
  size_t len, cap;
  size_t queued;      /* records in the queue */
  int64_t first_step; /* the first one's step (messages) */
  size_t lost;        /* records dropped: the queue was full, or no memory */
  int64_t lost_step;  /* the first dropped one's step */
  int failing;        /* a failure was reported: quiet until the queue is written */
  int last_errno;     /* why the last write failed */
};

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Appends ev as one record to the queue, or counts it lost. */
static void queue_event(fl_tboard_t *tb, const Tensorboard__Event *ev) {
  size_t n = tensorboard__event__get_packed_size(ev), need = HEADER_BYTES + n + FOOTER_BYTES;
  if (tb->len + need > tb->cap) {
    size_t cap = tb->cap ? tb->cap : 4096;
    while (cap < tb->len + need && cap <= FL_TBOARD_MAX_QUEUE / 2)
      cap *= 2;
    uint8_t *q = cap >= tb->len + need ? realloc(tb->queue, cap) : NULL;
    if (!q) {
      if (!tb->lost++) tb->lost_step = ev->step;
      return;
    }
    tb->queue = q;
    tb->cap = cap;
  }
  uint8_t *p = tb->queue + tb->len;
  put_le64(p, n);
  put_le32(p + 8, fl_tboard_crc_mask(fl_tboard_crc32c(0, p, 8)));
  tensorboard__event__pack(ev, p + HEADER_BYTES);
  put_le32(p + HEADER_BYTES + n, fl_tboard_crc_mask(fl_tboard_crc32c(0, p + HEADER_BYTES, n)));
  tb->len += need;
  if (!tb->queued++) tb->first_step = ev->step;
}

/* Cuts the file back to its last whole record. */
static int cut_partial(fl_tboard_t *tb) {
  while (ftruncate(tb->fd, (off_t)tb->good) != 0) {
    if (errno == EINTR) continue;
    tb->last_errno = errno;
    tb->cut_pending = 1;
    return -1;
  }
  tb->cut_pending = 0;
  return 0;
}

/* Writes the whole queue at the end of the file (O_APPEND), or, when a
 * write fails, nothing: what got written is cut off again and the queue
 * kept. 0, or -1 with tb->last_errno. */
static int write_queue(fl_tboard_t *tb) {
  if (tb->cut_pending && cut_partial(tb) != 0) return -1;
  size_t done = 0;
  while (done < tb->len) {
    ssize_t w = write(tb->fd, tb->queue + done, tb->len - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      tb->last_errno = w < 0 ? errno : EIO;
      if (done > 0) cut_partial(tb);
      return -1;
    }
    done += (size_t)w;
  }
  tb->good += tb->len;
  tb->len = tb->queued = 0;
  return 0;
}

int fl_tboard_new(const char *dir, fl_tboard_t **out) {
  if (!out) return fl_err_set(FL_EINVAL, "fl_tboard_new: NULL out");
  *out = NULL;
  if (!dir || !dir[0]) return fl_err_set(FL_EINVAL, "fl_tboard_new: no folder");
  int rc = fl_file_mkdirs(dir);
  if (rc) return rc;
  fl_tboard_t *tb = calloc(1, sizeof *tb);
  char host[256];
  size_t cap = strlen(dir) + sizeof host + 64;
  if (!tb || !(tb->path = malloc(cap))) {
    free(tb);
    return fl_err_set(FL_ENOMEM, "out of memory for a TensorBoard writer");
  }
  tb->fd = -1;
  host_name(host, sizeof host);
  long long secs = (long long)time(NULL);
  /* O_EXCL: two writers started in the same second in one folder (a
   * resumed run, another process on a shared folder) never share a file. */
  for (int k = 0; k < MAX_SUFFIX && tb->fd < 0; k++) {
    char suffix[16] = "";
    if (k) snprintf(suffix, sizeof suffix, ".%d", k);
    snprintf(tb->path, cap, "%s/events.out.tfevents.%010lld.%s.%ld%s", dir, secs, host,
             (long)getpid(), suffix);
    tb->fd = open(tb->path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC | O_NOCTTY, 0644);
    if (tb->fd < 0 && errno != EEXIST) break;
  }
  if (tb->fd < 0) {
    int e = errno;
    rc = fl_err_set(FL_EIO, "cannot create a TensorBoard event file in '%s': %s", dir, strerror(e));
    goto out;
  }
  Tensorboard__Event ev = TENSORBOARD__EVENT__INIT;
  ev.wall_time = wall_now();
  ev.what_case = TENSORBOARD__EVENT__WHAT_FILE_VERSION;
  ev.file_version = (char *)FILE_VERSION;
  queue_event(tb, &ev);
  if (tb->lost) {
    rc = fl_err_set(FL_ENOMEM, "out of memory for a TensorBoard writer");
  } else if (write_queue(tb) != 0) {
    rc = fl_err_set(FL_EIO, "cannot write TensorBoard event file '%s': %s", tb->path,
                    strerror(tb->last_errno));
  }
  if (rc) unlink(tb->path); /* a file without its first record would only mislead */
out:
  if (rc) {
    fl_tboard_destroy(&tb);
    return rc;
  }
  *out = tb;
  return 0;
}

void fl_tboard_destroy(fl_tboard_t **tb) {
  if (!tb || !*tb) return;
  if ((*tb)->fd >= 0) close((*tb)->fd);
  free((*tb)->path);
  free((*tb)->queue);
  free(*tb);
  *tb = NULL;
}

const char *fl_tboard_path(const fl_tboard_t *tb) {
  return tb ? tb->path : NULL;
}

size_t fl_tboard_pending(const fl_tboard_t *tb) {
  return tb ? tb->queued + tb->lost : 0;
}

int fl_tboard_scalar(fl_tboard_t *tb, const char *tag, int64_t step, double wall_time,
                     double value) {
  if (!tb || tb->fd < 0) return fl_err_set(FL_EINVAL, "fl_tboard_scalar: no open writer");
  size_t n = tag ? strnlen(tag, FL_TBOARD_MAX_TAG + 1) : 0;
  if (n == 0 || n > FL_TBOARD_MAX_TAG)
    return fl_err_set(FL_EINVAL, "TensorBoard tag: empty or longer than %d bytes",
                      FL_TBOARD_MAX_TAG);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)tag[i] < 0x20 || (unsigned char)tag[i] > 0x7e)
      return fl_err_set(FL_EINVAL, "TensorBoard tag: byte %zu is not printable ASCII", i);
  Tensorboard__Summary__Value val = TENSORBOARD__SUMMARY__VALUE__INIT;
  Tensorboard__Summary__Value *vals[1] = {&val};
  Tensorboard__Summary sum = TENSORBOARD__SUMMARY__INIT;
  Tensorboard__Event ev = TENSORBOARD__EVENT__INIT;
  val.tag = (char *)tag;
  val.value_case = TENSORBOARD__SUMMARY__VALUE__VALUE_SIMPLE_VALUE;
  val.simple_value = (float)value;
  sum.n_value = 1;
  sum.value = vals;
  ev.wall_time = wall_time;
  ev.step = step;
  ev.what_case = TENSORBOARD__EVENT__WHAT_SUMMARY;
  ev.summary = &sum;
  queue_event(tb, &ev);
  return 0;
}

int fl_tboard_round(fl_tboard_t *tb, const fl_round_metrics_t *rm, const char *const *names,
                    const double *values, size_t n_named) {
  if (!tb || !rm || (n_named && (!names || !values)))
    return fl_err_set(FL_EINVAL, "fl_tboard_round: NULL argument");
  const int fed = rm->fed_eval_clients > 0;
  const struct {
    const char *tag;
    double value;
  } s[] = {
      {"lr", rm->lr},
      {"server_lr", rm->server_lr},
      {"train/loss", rm->train_loss},
      {"test/accuracy", rm->test_accuracy},
      {"test/loss", rm->test_loss},
      {"fed_eval/loss", fed ? rm->fed_eval_loss : NAN},
      {"fed_eval/accuracy", fed ? rm->fed_eval_accuracy : NAN},
  };
  double t = wall_now();
  int rc = 0;
  for (size_t i = 0; i < sizeof s / sizeof s[0] && !rc; i++)
    if (!isnan(s[i].value)) rc = fl_tboard_scalar(tb, s[i].tag, rm->round, t, s[i].value);
  for (size_t i = 0; i < n_named && !rc; i++) {
    char tag[FL_TBOARD_MAX_TAG + 1];
    snprintf(tag, sizeof tag, "fed_eval/%s", names[i] ? names[i] : "");
    if (!isnan(values[i])) rc = fl_tboard_scalar(tb, tag, rm->round, t, values[i]);
  }
  int frc = fl_tboard_flush(tb); /* what was queued goes out, even after a bad tag */
  return rc ? rc : frc;
}

int fl_tboard_flush(fl_tboard_t *tb) {
  if (!tb || tb->fd < 0) return fl_err_set(FL_EINVAL, "fl_tboard_flush: no open writer");
  if (write_queue(tb) == 0) {
    tb->failing = 0;
    return 0;
  }
  if (tb->failing) return 0; /* reported when it began */
  tb->failing = 1;
  return fl_err_set(FL_EIO,
                    "cannot write TensorBoard event file '%s': %s; the records from step %" PRId64
                    " on are kept and written when there is room",
                    tb->path, strerror(tb->last_errno), tb->first_step);
}

int fl_tboard_close(fl_tboard_t *tb) {
  if (!tb || tb->fd < 0) return fl_err_set(FL_EINVAL, "fl_tboard_close: no open writer");
  if (tb->len) write_queue(tb);
  int closed = close(tb->fd) == 0, close_errno = errno;
  tb->fd = -1;
  size_t missing = tb->queued + tb->lost;
  if (missing) {
    int64_t from = tb->queued && (!tb->lost || tb->first_step < tb->lost_step) ? tb->first_step
                                                                               : tb->lost_step;
    return fl_err_set(
        FL_EIO, "TensorBoard event file '%s': %zu records from step %" PRId64 " on not written: %s",
        tb->path, missing, from, tb->last_errno ? strerror(tb->last_errno) : "out of memory");
  }
  if (!closed)
    return fl_err_set(FL_EIO, "cannot close TensorBoard event file '%s': %s", tb->path,
                      strerror(close_errno));
  return 0;
}
