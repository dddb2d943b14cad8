/* Tests of fl_tboard: CRC-32C and its mask against published vectors and a
 * bitwise reference, run folder names, and the writer: its file name, the
 * records it writes (framed and decoded here with protobuf-c; the
 * independent reader is tests/tb_read.py, run by it_tensorboard.sh), bad
 * arguments and folders, and a full disk (RLIMIT_FSIZE). */
#include "fl_tboard.h"

#include <errno.h>
#include <sys/stat.h>

#include "fl_error.h"
#include "fl_test.h"
#include "tensorboard/compat/proto/event.pb-c.h"

/* ---- CRC-32C ---- */

/* The definition, a bit at a time: what the table-driven code must equal. */
static uint32_t crc32c_bitwise(const uint8_t *p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++)
      c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
  }
  return ~c;
}

TEST(crc32c_known_vectors) {
  /* The check value of CRC-32C, and RFC 3720 (iSCSI) appendix B.4. */
  uint8_t zeros[32] = {0}, ones[32], up[32], down[32];
  for (int i = 0; i < 32; i++)
    ones[i] = 0xff, up[i] = (uint8_t)i, down[i] = (uint8_t)(31 - i);
  ASSERT_EQ(fl_tboard_crc32c(0, "123456789", 9), 0xe3069283u);
  ASSERT_EQ(fl_tboard_crc32c(0, "", 0), 0u);
  ASSERT_EQ(fl_tboard_crc32c(0, zeros, 32), 0x8a9136aau);
  ASSERT_EQ(fl_tboard_crc32c(0, ones, 32), 0x62a8ab43u);
  ASSERT_EQ(fl_tboard_crc32c(0, up, 32), 0x46dd794eu);
  ASSERT_EQ(fl_tboard_crc32c(0, down, 32), 0x113fdb5cu);
}

TEST(crc32c_equals_bitwise_reference_and_continues) {
  uint8_t buf[1000];
  uint32_t x = 12345;
  for (size_t i = 0; i < sizeof buf; i++)
    x = x * 1103515245u + 12345u, buf[i] = (uint8_t)(x >> 16);
  for (size_t n = 0; n <= sizeof buf; n += n < 40 ? 1 : 37) {
    uint32_t want = crc32c_bitwise(buf, n);
    ASSERT_EQ(fl_tboard_crc32c(0, buf, n), want);
    size_t half = n / 3; /* in two pieces: the CRC of the whole */
    ASSERT_EQ(fl_tboard_crc32c(fl_tboard_crc32c(0, buf, half), buf + half, n - half), want);
  }
}

TEST(crc_mask_is_tensorflows) {
  /* Values from python3-crcmod's crc-32c and TensorFlow's mask formula. */
  ASSERT_EQ(fl_tboard_crc_mask(0), 0xa282ead8u);
  ASSERT_EQ(fl_tboard_crc_mask(fl_tboard_crc32c(0, "123456789", 9)), 0xc78ab0e5u);
  uint8_t len24[8] = {24, 0, 0, 0, 0, 0, 0, 0}; /* a record's length field */
  ASSERT_EQ(fl_tboard_crc_mask(fl_tboard_crc32c(0, len24, 8)), 0x224b7fa3u);
}

/* ---- run names ---- */

static void host(char *buf, size_t cap) {
  if (gethostname(buf, cap) != 0) buf[0] = '\0';
  buf[cap - 1] = '\0';
}

TEST(run_name_like_pytorch) {
  setenv("TZ", "UTC0", 1);
  tzset();
  char name[256], h[256], want[600];
  host(h, sizeof h);
  for (char *c = h; *c; c++)
    if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *c)) *c = '_';
  ASSERT_EQ(fl_tboard_run_name("fedlr-sim", 1764597909, name, sizeof name), 0); /* 2025-12-01 */
  snprintf(want, sizeof want, "Dec01_14-05-09_%s-fedlr-sim", h[0] ? h : "localhost");
  ASSERT_STR_EQ(name, want);
  ASSERT_EQ(fl_tboard_run_name("fedlr-coordinator", 1767225599, name, sizeof name), 0);
  snprintf(want, sizeof want, "Dec31_23-59-59_%s-fedlr-coordinator", h[0] ? h : "localhost");
  ASSERT_STR_EQ(name, want);
  ASSERT_EQ(fl_tboard_run_name("", 0, name, sizeof name), FL_EINVAL);
  ASSERT_EQ(fl_tboard_run_name("a/b", 0, name, sizeof name), FL_EINVAL);
  ASSERT_EQ(fl_tboard_run_name("fedlr-sim", 0, name, 10), FL_ETOOBIG);
  unsetenv("TZ");
  tzset();
}

/* ---- reading a file back ---- */

#define MAX_EVENTS 64

typedef struct {
  int64_t step;
  double wall_time;
  char tag[FL_TBOARD_MAX_TAG + 1]; /* "" for file_version */
  char file_version[32];
  float value;
} rec_t;

static uint64_t le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

/* The records of an event file, checked (framing, both CRCs, one Event
 * each): their count, or -1 with *why. */
static int read_events(const char *path, rec_t *out, int cap, const char **why) {
  static uint8_t buf[1 << 16];
  FILE *f = fopen(path, "rb");
  *why = "cannot open";
  if (!f) return -1;
  size_t len = fread(buf, 1, sizeof buf, f), at = 0;
  fclose(f);
  int n = 0;
  while (at < len) {
    *why = "truncated record";
    if (len - at < 12 || n == cap) return -1;
    uint64_t dlen = le(buf + at, 8);
    *why = "length CRC";
    if (le(buf + at + 8, 4) != fl_tboard_crc_mask(fl_tboard_crc32c(0, buf + at, 8))) return -1;
    *why = "truncated data";
    if (len - at - 12 < dlen + 4) return -1;
    const uint8_t *d = buf + at + 12;
    *why = "data CRC";
    if (le(d + dlen, 4) != fl_tboard_crc_mask(fl_tboard_crc32c(0, d, dlen))) return -1;
    Tensorboard__Event *ev = tensorboard__event__unpack(NULL, dlen, d);
    *why = "not an Event";
    if (!ev) return -1;
    rec_t *r = &out[n++];
    memset(r, 0, sizeof *r);
    r->step = ev->step;
    r->wall_time = ev->wall_time;
    if (ev->what_case == TENSORBOARD__EVENT__WHAT_FILE_VERSION) {
      snprintf(r->file_version, sizeof r->file_version, "%s", ev->file_version);
    } else if (ev->what_case == TENSORBOARD__EVENT__WHAT_SUMMARY && ev->summary->n_value == 1 &&
               ev->summary->value[0]->value_case ==
                   TENSORBOARD__SUMMARY__VALUE__VALUE_SIMPLE_VALUE) {
      snprintf(r->tag, sizeof r->tag, "%s", ev->summary->value[0]->tag);
      r->value = ev->summary->value[0]->simple_value;
    } else {
      tensorboard__event__free_unpacked(ev, NULL);
      *why = "neither file_version nor one simple_value";
      return -1;
    }
    tensorboard__event__free_unpacked(ev, NULL);
    at += 12 + dlen + 4;
  }
  return n;
}

static long fsize(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* ---- the writer ---- */

TEST(writer_creates_folders_names_file_and_writes_version_first) {
  const char *dir = fl_test_path("tb1/runs/Dec01_run");
  fl_tboard_t *tb = NULL;
  time_t t0 = time(NULL);
  ASSERT_EQ(fl_tboard_new(dir, &tb), 0);
  const char *path = fl_tboard_path(tb);
  char prefix[700], h[256];
  host(h, sizeof h);
  snprintf(prefix, sizeof prefix, "%s/events.out.tfevents.", dir);
  ASSERT_EQ(strncmp(path, prefix, strlen(prefix)), 0);
  const char *rest = path + strlen(prefix);
  char *end;
  long long secs = strtoll(rest, &end, 10);
  ASSERT_EQ(end - rest, 10); /* %010lld */
  ASSERT_TRUE(secs >= (long long)t0 && secs <= (long long)time(NULL));
  char tail[400];
  snprintf(tail, sizeof tail, ".%s.%ld", h, (long)getpid());
  ASSERT_STR_EQ(end, tail);
  /* The first record is in the file at once, before any flush. */
  rec_t ev[MAX_EVENTS];
  const char *why = "";
  ASSERT_EQ(read_events(path, ev, MAX_EVENTS, &why), 1);
  ASSERT_STR_EQ(ev[0].file_version, "brain.Event:2");
  ASSERT_EQ(ev[0].step, 0);
  /* time() reads the kernel's coarse clock, which can be a tick ahead of
   * CLOCK_REALTIME near a second's boundary: a second of slack each side. */
  ASSERT_TRUE(ev[0].wall_time >= (double)t0 - 1 && ev[0].wall_time < (double)time(NULL) + 1);

  ASSERT_EQ(fl_tboard_scalar(tb, "lr", 1, 1000.5, 0.1), 0);
  ASSERT_EQ(fl_tboard_scalar(tb, "train/loss", 1, 1000.5, 2.25), 0);
  ASSERT_EQ(fl_tboard_scalar(tb, "lr", 2, 1001.5, -1e-3), 0);
  ASSERT_EQ(fl_tboard_pending(tb), 3);
  ASSERT_EQ(read_events(path, ev, MAX_EVENTS, &why), 1); /* queued, not written */
  ASSERT_EQ(fl_tboard_flush(tb), 0);
  ASSERT_EQ(fl_tboard_pending(tb), 0);
  int n = read_events(path, ev, MAX_EVENTS, &why);
  if (n < 0) fprintf(stderr, "  %s: %s\n", path, why);
  ASSERT_EQ(n, 4);
  ASSERT_STR_EQ(ev[1].tag, "lr");
  ASSERT_EQ(ev[1].step, 1);
  ASSERT_DBL_OP(ev[1].wall_time, ==, 1000.5);
  ASSERT_DBL_OP(ev[1].value, ==, 0.1f);
  ASSERT_STR_EQ(ev[2].tag, "train/loss");
  ASSERT_DBL_OP(ev[2].value, ==, 2.25f);
  ASSERT_EQ(ev[3].step, 2);
  ASSERT_DBL_OP(ev[3].value, ==, -1e-3f);
  ASSERT_EQ(fl_tboard_close(tb), 0);
  ASSERT_EQ(fl_tboard_scalar(tb, "lr", 3, 0, 1), FL_EINVAL); /* closed */
  ASSERT_EQ(fl_tboard_flush(tb), FL_EINVAL);
  ASSERT_EQ(fl_tboard_close(tb), FL_EINVAL);
  fl_tboard_destroy(&tb);
  ASSERT_TRUE(tb == NULL);
  fl_tboard_destroy(&tb); /* NULL-safe */
}

TEST(round_writes_measured_metrics_only) {
  fl_tboard_t *tb = NULL;
  ASSERT_EQ(fl_tboard_new(fl_test_path("tb2"), &tb), 0);
  fl_round_metrics_t r1 = {.round = 1,
                           .lr = 0.05,
                           .server_lr = NAN, /* not measured: no event */
                           .train_loss = 1.5,
                           .test_loss = NAN,
                           .test_accuracy = NAN,
                           .fed_eval_loss = NAN,
                           .fed_eval_accuracy = NAN};
  ASSERT_EQ(fl_tboard_round(tb, &r1, NULL, NULL, 0), 0);
  fl_round_metrics_t r2 = {.round = 2,
                           .lr = 0.04,
                           .server_lr = 0.5,
                           .train_loss = 1.25,
                           .test_loss = 0.5,
                           .test_accuracy = 0.875,
                           .fed_eval_clients = 3,
                           .fed_eval_loss = 0.625,
                           .fed_eval_accuracy = NAN}; /* no client reported accuracy */
  const char *names[] = {"f1", "recall"};
  const double values[] = {0.75, NAN};
  ASSERT_EQ(fl_tboard_round(tb, &r2, names, values, 2), 0);
  rec_t ev[MAX_EVENTS];
  const char *why = "";
  int n = read_events(fl_tboard_path(tb), ev, MAX_EVENTS, &why);
  ASSERT_EQ(n, 1 + 2 + 7); /* flushed by fl_tboard_round */
  const char *tags[] = {"",           "lr",        "train/loss",    "lr",
                        "server_lr",  "train/loss", "test/accuracy", "test/loss",
                        "fed_eval/loss", "fed_eval/f1"};
  const float vals[] = {0, 0.05f, 1.5f, 0.04f, 0.5f, 1.25f, 0.875f, 0.5f, 0.625f, 0.75f};
  for (int i = 1; i < n; i++) {
    ASSERT_STR_EQ(ev[i].tag, tags[i]);
    ASSERT_DBL_OP(ev[i].value, ==, vals[i]);
    ASSERT_EQ(ev[i].step, i < 3 ? 1 : 2);
  }
  /* A round without federated evaluation: its fed_eval fields are not
   * looked at, whatever they hold. */
  fl_round_metrics_t r3 = r1;
  r3.round = 3;
  r3.fed_eval_loss = 9;
  ASSERT_EQ(fl_tboard_round(tb, &r3, names, values, 0), 0);
  ASSERT_EQ(read_events(fl_tboard_path(tb), ev, MAX_EVENTS, &why), n + 2);
  ASSERT_EQ(fl_tboard_close(tb), 0);
  fl_tboard_destroy(&tb);
}

TEST(bad_tags_are_refused) {
  fl_tboard_t *tb = NULL;
  ASSERT_EQ(fl_tboard_new(fl_test_path("tb3"), &tb), 0);
  char longtag[FL_TBOARD_MAX_TAG + 2];
  memset(longtag, 'a', sizeof longtag - 1);
  longtag[sizeof longtag - 1] = '\0';
  ASSERT_EQ(fl_tboard_scalar(tb, "", 1, 0, 1), FL_EINVAL);
  ASSERT_EQ(fl_tboard_scalar(tb, NULL, 1, 0, 1), FL_EINVAL);
  ASSERT_EQ(fl_tboard_scalar(tb, longtag, 1, 0, 1), FL_EINVAL);
  ASSERT_EQ(fl_tboard_scalar(tb, "caf\xc3\xa9", 1, 0, 1), FL_EINVAL);
  ASSERT_EQ(fl_tboard_scalar(tb, "a\nb", 1, 0, 1), FL_EINVAL);
  longtag[FL_TBOARD_MAX_TAG] = '\0';
  ASSERT_EQ(fl_tboard_scalar(tb, longtag, 1, 0, 1), 0); /* the longest allowed */
  ASSERT_EQ(fl_tboard_pending(tb), 1);
  ASSERT_EQ(fl_tboard_close(tb), 0);
  fl_tboard_destroy(&tb);
}

TEST(two_writers_in_one_folder_get_two_files) {
  const char *dir = fl_test_path("tb4");
  fl_tboard_t *a = NULL, *b = NULL;
  ASSERT_EQ(fl_tboard_new(dir, &a), 0);
  ASSERT_EQ(fl_tboard_new(dir, &b), 0);
  ASSERT_TRUE(strcmp(fl_tboard_path(a), fl_tboard_path(b)) != 0);
  /* In the same second the second name is the first's with ".1". */
  size_t la = strlen(fl_tboard_path(a));
  if (strncmp(fl_tboard_path(a), fl_tboard_path(b), la) == 0)
    ASSERT_STR_EQ(fl_tboard_path(b) + la, ".1");
  rec_t ev[MAX_EVENTS];
  const char *why = "";
  ASSERT_EQ(read_events(fl_tboard_path(a), ev, MAX_EVENTS, &why), 1);
  ASSERT_EQ(read_events(fl_tboard_path(b), ev, MAX_EVENTS, &why), 1);
  ASSERT_EQ(fl_tboard_close(a), 0);
  ASSERT_EQ(fl_tboard_close(b), 0);
  fl_tboard_destroy(&a);
  fl_tboard_destroy(&b);
}

TEST(unusable_folder_is_refused_naming_it) {
  fl_tboard_t *tb = NULL;
  const char *file = fl_test_path("tb5-file");
  FILE *f = fopen(file, "w");
  ASSERT_TRUE(f != NULL);
  fclose(f);
  char dir[700];
  snprintf(dir, sizeof dir, "%s/runs", file);
  ASSERT_EQ(fl_tboard_new(dir, &tb), FL_EIO);
  ASSERT_TRUE(tb == NULL);
  ASSERT_CONTAINS(fl_err_msg(), file);
  ASSERT_CONTAINS(fl_err_msg(), "Not a directory");
  ASSERT_EQ(fl_tboard_new(file, &tb), FL_EIO); /* a file where the folder should be */
  ASSERT_CONTAINS(fl_err_msg(), "is not a directory");
  ASSERT_EQ(fl_tboard_new("", &tb), FL_EINVAL);
  ASSERT_EQ(fl_tboard_new(NULL, &tb), FL_EINVAL);
}

/* ---- a full disk ---- */

static fl_round_metrics_t round_n(uint32_t k) {
  fl_round_metrics_t r = {.round = k,
                          .lr = 0.1 / k,
                          .server_lr = NAN,
                          .train_loss = 2.0 / k,
                          .test_loss = 1.0 / k,
                          .test_accuracy = 1 - 0.5 / k,
                          .fed_eval_loss = NAN,
                          .fed_eval_accuracy = NAN};
  return r;
}

TEST(full_disk_keeps_whole_records_retries_and_reports) {
  fl_tboard_t *tb = NULL;
  ASSERT_EQ(fl_tboard_new(fl_test_path("tb6"), &tb), 0);
  const char *path = fl_tboard_path(tb);
  long s0 = fsize(path);
  fl_round_metrics_t r1 = round_n(1), r2 = round_n(2), r3 = round_n(3), r4 = round_n(4);
  /* Room for part of a round's 4 records (about 50 bytes each). */
  if (fl_test_cap_file_size(s0 + 70) != 0) SKIP("setrlimit(RLIMIT_FSIZE): %s", strerror(errno));
  int rc1 = fl_tboard_round(tb, &r1, NULL, NULL, 0);
  char msg1[1024];
  snprintf(msg1, sizeof msg1, "%s", fl_err_msg());
  long s1 = fsize(path);
  size_t p1 = fl_tboard_pending(tb);
  int rc2 = fl_tboard_round(tb, &r2, NULL, NULL, 0); /* still failing: quiet */
  long s2 = fsize(path);
  fl_test_cap_file_size(0);
  ASSERT_EQ(rc1, FL_EIO);
  ASSERT_CONTAINS(msg1, path);
  ASSERT_CONTAINS(msg1, "File too large");
  ASSERT_CONTAINS(msg1, "from step 1 on are kept");
  ASSERT_EQ(s1, s0); /* the part that fitted was cut off again */
  ASSERT_EQ(p1, 4);
  ASSERT_EQ(rc2, 0);
  ASSERT_EQ(s2, s0);
  ASSERT_EQ(fl_tboard_pending(tb), 8);

  /* Room again: everything goes out, in order. */
  ASSERT_EQ(fl_tboard_round(tb, &r3, NULL, NULL, 0), 0);
  ASSERT_EQ(fl_tboard_pending(tb), 0);
  rec_t ev[MAX_EVENTS];
  const char *why = "";
  int n = read_events(path, ev, MAX_EVENTS, &why);
  if (n < 0) fprintf(stderr, "  %s: %s\n", path, why);
  ASSERT_EQ(n, 1 + 12);
  for (int i = 1; i < n; i++)
    ASSERT_EQ(ev[i].step, (i - 1) / 4 + 1);

  /* A new failure is reported again, and the close says what is missing. */
  long s3 = fsize(path);
  fl_test_cap_file_size(s3 + 10);
  int rc4 = fl_tboard_round(tb, &r4, NULL, NULL, 0);
  int rcc = fl_tboard_close(tb);
  char msgc[1024];
  snprintf(msgc, sizeof msgc, "%s", fl_err_msg());
  long s4 = fsize(path);
  fl_test_cap_file_size(0);
  ASSERT_EQ(rc4, FL_EIO);
  ASSERT_EQ(rcc, FL_EIO);
  ASSERT_CONTAINS(msgc, "4 records from step 4 on not written: File too large");
  ASSERT_EQ(s4, s3);
  ASSERT_EQ(read_events(path, ev, MAX_EVENTS, &why), n);
  fl_tboard_destroy(&tb);
}

TEST(full_queue_drops_and_counts) {
  fl_tboard_t *tb = NULL;
  ASSERT_EQ(fl_tboard_new(fl_test_path("tb7"), &tb), 0);
  const char *path = fl_tboard_path(tb);
  long s0 = fsize(path);
  if (fl_test_cap_file_size(s0 + 1) != 0) SKIP("setrlimit(RLIMIT_FSIZE): %s", strerror(errno));
  /* Records of some 50 bytes: more than the queue holds. */
  size_t k = FL_TBOARD_MAX_QUEUE / 30;
  int rc = 0;
  for (size_t i = 0; i < k; i++)
    rc |= fl_tboard_scalar(tb, "train/loss", (int64_t)i + 1, 1e9, 1.0);
  int frc = fl_tboard_flush(tb);
  fl_test_cap_file_size(0);
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(frc, FL_EIO);
  ASSERT_EQ(fl_tboard_pending(tb), k); /* every record counted: queued or dropped */
  ASSERT_EQ(fl_tboard_flush(tb), 0);   /* room again: the queue goes out */
  size_t lost = fl_tboard_pending(tb);
  long grew = fsize(path) - s0;
  ASSERT_TRUE(lost > 0 && lost < k);
  ASSERT_TRUE(grew > (long)FL_TBOARD_MAX_QUEUE / 2 && grew <= (long)FL_TBOARD_MAX_QUEUE);
  ASSERT_EQ(fl_tboard_close(tb), FL_EIO); /* the dropped ones are missing for good */
  char want[128];
  snprintf(want, sizeof want, "%zu records from step %zu on not written", lost, k - lost + 1);
  ASSERT_CONTAINS(fl_err_msg(), want);
  fl_tboard_destroy(&tb);
}

FL_TEST_MAIN()
