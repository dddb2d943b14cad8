/* Tests for fl_data: real Fashion-MNIST, IDX/CSV round trips, and one test
 * per kind of broken input, each checking the message says what is wrong. */
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>

#include "fl_data.h"
#include "fl_clock.h"
#include "fl_error.h"
#include "fl_test.h"

/* ------------------------------------------------------------ helpers */

static const char *tmp_path(const char *name) {
  static char buf[8][1024];
  static int slot;
  char *p = buf[slot++ % 8];
  snprintf(p, 1024, "%s/%s", fl_test_tmpdir(), name);
  return p;
}

static int write_bytes(const char *path, const void *data, size_t len, int gz) {
  if (gz) {
    gzFile g = gzopen(path, "wb");
    if (!g) return -1;
    int ok = len == 0 || gzwrite(g, data, (unsigned)len) == (int)len;
    return gzclose(g) == Z_OK && ok ? 0 : -1;
  }
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  int ok = fwrite(data, 1, len, f) == len;
  return fclose(f) == 0 && ok ? 0 : -1;
}

static int write_text(const char *path, const char *text) {
  return write_bytes(path, text, strlen(text), 0);
}

/* Builds an IDX ubyte file in memory: header for `nd` dims then `payload`
 * bytes of data (which may disagree with the dims, to make broken files). */
static size_t idx_build(uint8_t *out, uint8_t type, unsigned nd, const uint32_t *dims,
                        const uint8_t *payload, size_t payload_len) {
  size_t o = 0;
  out[o++] = 0;
  out[o++] = 0;
  out[o++] = type;
  out[o++] = (uint8_t)nd;
  for (unsigned i = 0; i < nd; i++) {
    out[o++] = (uint8_t)(dims[i] >> 24);
    out[o++] = (uint8_t)(dims[i] >> 16);
    out[o++] = (uint8_t)(dims[i] >> 8);
    out[o++] = (uint8_t)dims[i];
  }
  if (payload_len) memcpy(out + o, payload, payload_len);
  return o + payload_len;
}

/* A small valid pair: 5 images of 2x3 and their labels; returns paths. */
static int write_small_idx(const char *img, const char *lab, int gz) {
  uint8_t pix[30], labels[5] = {3, 0, 7, 7, 1}, buf[256];
  for (int i = 0; i < 30; i++)
    pix[i] = (uint8_t)(i * 8);
  pix[29] = 255;
  uint32_t idims[3] = {5, 2, 3}, ldims[1] = {5};
  size_t len = idx_build(buf, 0x08, 3, idims, pix, sizeof pix);
  if (write_bytes(img, buf, len, gz)) return -1;
  len = idx_build(buf, 0x08, 1, ldims, labels, sizeof labels);
  return write_bytes(lab, buf, len, gz);
}

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* ------------------------------------------------------------ Fashion-MNIST */

TEST(fashion_mnist_train) {
  SKIP_UNLESS_FASHION_MNIST();
  fl_dataset_t *d = NULL;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int rc = fl_dataset_load_named("fashion-mnist", fl_test_data_dir(), 1, &d);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (rc) fprintf(stderr, "  %s\n", fl_err_msg());
  ASSERT_EQ(rc, 0);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  fprintf(stderr, "  loaded train set in %.3f s\n", secs);
  ASSERT_EQ(d->n, 60000);
  ASSERT_EQ(d->dim, 784);
  ASSERT_EQ(d->num_classes, 10);
  ASSERT_EQ(d->y[0], 9); /* Ankle boot */
  ASSERT_EQ(d->y[1], 0); /* T-shirt/top */
  double sum = 0;
  float lo = 1, hi = 0;
  for (size_t i = 0; i < d->n * d->dim; i++) {
    float v = d->x[i];
    sum += v;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  ASSERT_NEAR(lo, 0.0, 0);
  ASSERT_NEAR(hi, 1.0, 0);
  ASSERT_NEAR(sum / (double)(d->n * d->dim), 0.2860, 5e-4);
  size_t per[10] = {0};
  for (size_t i = 0; i < d->n; i++) {
    ASSERT_TRUE(d->y[i] >= 0 && d->y[i] < 10);
    per[d->y[i]]++;
  }
  for (int k = 0; k < 10; k++)
    ASSERT_EQ(per[k], 6000);
  fl_dataset_destroy(&d);
  ASSERT_TRUE(d == NULL);
}

TEST(fashion_mnist_test) {
  SKIP_UNLESS_FASHION_MNIST();
  fl_dataset_t *d = NULL;
  int rc = fl_dataset_load_named("fashion-mnist", fl_test_data_dir(), 0, &d);
  if (rc) fprintf(stderr, "  %s\n", fl_err_msg());
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(d->n, 10000);
  ASSERT_EQ(d->dim, 784);
  ASSERT_EQ(d->num_classes, 10);
  ASSERT_EQ(d->y[0], 9); /* the test set also starts with an ankle boot */
  fl_dataset_destroy(&d);
}

TEST(fashion_mnist_via_load_file) {
  SKIP_UNLESS_FASHION_MNIST();
  char path[1024];
  snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte.gz", fl_test_data_dir());
  fl_dataset_t *d = NULL;
  int rc = fl_dataset_load_file(path, &d);
  if (rc) fprintf(stderr, "  %s\n", fl_err_msg());
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(d->n, 10000);
  ASSERT_EQ(d->num_classes, 10);
  fl_dataset_destroy(&d);
}

TEST(named_missing_names_package) {
  fl_dataset_t *d = NULL;
  int rc = fl_dataset_load_named("fashion-mnist", tmp_path("nowhere"), 1, &d);
  ASSERT_EQ(rc, FL_ENOENT);
  ASSERT_TRUE(d == NULL);
  ASSERT_CONTAINS(fl_err_msg(), "dataset 'fashion-mnist'");
  ASSERT_CONTAINS(fl_err_msg(), "nowhere/train-images-idx3-ubyte.gz not found");
  ASSERT_CONTAINS(fl_err_msg(), "dataset-fashion-mnist");
  ASSERT_CONTAINS(fl_err_msg(), "--data-dir");
}

TEST(named_unknown) {
  fl_dataset_t *d = NULL;
  ASSERT_EQ(fl_dataset_load_named("cifar10", NULL, 1, &d), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "cifar10");
  ASSERT_CONTAINS(fl_err_msg(), "fashion-mnist");
  ASSERT_CONTAINS(fl_err_msg(), "mnist");
}

TEST(named_uncompressed_fallback) {
  /* A data dir holding uncompressed files (as after gunzip) works too. */
  char dir[1024], img[1100], lab[1100];
  snprintf(dir, sizeof dir, "%s/plain", fl_test_tmpdir());
  mkdir(dir, 0755);
  snprintf(img, sizeof img, "%s/t10k-images-idx3-ubyte", dir);
  snprintf(lab, sizeof lab, "%s/t10k-labels-idx1-ubyte", dir);
  ASSERT_EQ(write_small_idx(img, lab, 0), 0);
  fl_dataset_t *d = NULL;
  int rc = fl_dataset_load_named("mnist", dir, 0, &d);
  if (rc) fprintf(stderr, "  %s\n", fl_err_msg());
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(d->n, 5);
  ASSERT_EQ(d->num_classes, 10); /* named sets always report 10 */
  fl_dataset_destroy(&d);
}

/* ------------------------------------------------------------ IDX round trip */

static void check_small(int *fl__failed, const fl_dataset_t *d) {
  ASSERT_EQ(d->n, 5);
  ASSERT_EQ(d->dim, 6);
  ASSERT_EQ(d->num_classes, 8); /* max label 7 + 1 */
  ASSERT_EQ(d->y[0], 3);
  ASSERT_EQ(d->y[4], 1);
  for (int i = 0; i < 29; i++)
    ASSERT_NEAR(d->x[i], (double)(i * 8) / 255.0, 1e-7);
  ASSERT_NEAR(d->x[29], 1.0, 0);
}

TEST(idx_round_trip_raw_and_gz) {
  for (int gz = 0; gz <= 1; gz++) {
    const char *img = tmp_path(gz ? "rt-images-idx3-ubyte.gz" : "rt-images-idx3-ubyte");
    const char *lab = tmp_path(gz ? "rt-labels-idx1-ubyte.gz" : "rt-labels-idx1-ubyte");
    ASSERT_EQ(write_small_idx(img, lab, gz), 0);
    fl_dataset_t *d = NULL;
    int rc = fl_dataset_load_idx(img, lab, &d);
    if (rc) fprintf(stderr, "  %s\n", fl_err_msg());
    ASSERT_EQ(rc, 0);
    check_small(fl__failed, d);
    fl_dataset_destroy(&d);
    if (*fl__failed) return;
    /* load_file derives the labels name from the images name. */
    rc = fl_dataset_load_file(img, &d);
    if (rc) fprintf(stderr, "  %s\n", fl_err_msg());
    ASSERT_EQ(rc, 0);
    check_small(fl__failed, d);
    fl_dataset_destroy(&d);
    if (*fl__failed) return;
  }
}

TEST(idx_gzip_detected_by_magic_not_name) {
  /* gzip content under a name without .gz still loads. */
  const char *img = tmp_path("mg-images"), *lab = tmp_path("mg-labels");
  ASSERT_EQ(write_small_idx(img, lab, 1), 0);
  fl_dataset_t *d = NULL;
  ASSERT_EQ(fl_dataset_load_file(img, &d), 0);
  check_small(fl__failed, d);
  fl_dataset_destroy(&d);
}

TEST(load_file_needs_images_in_name) {
  fl_dataset_t *d = NULL;
  ASSERT_EQ(fl_dataset_load_file(tmp_path("train-idx3-ubyte.gz"), &d), FL_ENOENT);
  ASSERT_CONTAINS(fl_err_msg(), "does not exist");
  ASSERT_EQ(write_text(tmp_path("train-idx3-ubyte.gz"), "x"), 0);
  ASSERT_EQ(fl_dataset_load_file(tmp_path("train-idx3-ubyte.gz"), &d), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'images'");
  ASSERT_CONTAINS(fl_err_msg(), "train-labels-idx1-ubyte.gz");
}

/* ------------------------------------------------------------ broken IDX */

/* Writes images `ibuf` and the small valid labels, loads, expects `err`
 * and a message containing `needle`. */
static void expect_idx_error(int *fl__failed, const char *name, const uint8_t *ibuf, size_t ilen,
                             int gz, int err, const char *needle) {
  char iname[256], lname[256];
  snprintf(iname, sizeof iname, "%s-images", name);
  snprintf(lname, sizeof lname, "%s-labels", name);
  const char *img = tmp_path(iname), *lab = tmp_path(lname);
  uint8_t lbuf[64], labels[5] = {1, 2, 3, 4, 5};
  uint32_t ld[1] = {5};
  size_t llen = idx_build(lbuf, 0x08, 1, ld, labels, 5);
  ASSERT_EQ(write_bytes(img, ibuf, ilen, gz), 0);
  ASSERT_EQ(write_bytes(lab, lbuf, llen, 0), 0);
  fl_dataset_t *d = NULL;
  int rc = fl_dataset_load_idx(img, lab, &d);
  fprintf(stderr, "  %s -> %s\n", name, fl_err_msg());
  ASSERT_EQ(rc, err);
  ASSERT_TRUE(d == NULL);
  ASSERT_CONTAINS(fl_err_msg(), needle);
  ASSERT_CONTAINS(fl_err_msg(), name); /* the path is named */
}

TEST(idx_bad_magic) {
  uint8_t buf[64] = "P5\n28 28\n255\n";
  expect_idx_error(fl__failed, "badmagic", buf, 40, 0, FL_EFORMAT, "not an IDX file");
}

TEST(idx_wrong_type_byte) {
  uint8_t buf[256], pix[120] = {0};
  uint32_t dims[3] = {5, 2, 3};
  size_t len = idx_build(buf, 0x0D, 3, dims, pix, 120); /* float32 */
  expect_idx_error(fl__failed, "float32", buf, len, 0, FL_EUNSUPPORTED,
                   "0x0d (float32) is not supported");
  len = idx_build(buf, 0x42, 3, dims, pix, 30);
  expect_idx_error(fl__failed, "type42", buf, len, 0, FL_EFORMAT, "unknown element type byte 0x42");
}

TEST(idx_truncated_raw) {
  uint8_t buf[256], pix[30] = {0};
  uint32_t dims[3] = {5, 2, 3};
  size_t len = idx_build(buf, 0x08, 3, dims, pix, 29);
  expect_idx_error(fl__failed, "truncraw", buf, len, 0, FL_EFORMAT,
                   "truncated: expected 30 bytes of pixel data, got 29");
  /* Cut inside the header, too. */
  expect_idx_error(fl__failed, "trunchdr", buf, 9, 0, FL_EFORMAT, "truncated");
}

TEST(idx_trailing_data) {
  uint8_t buf[256], pix[31] = {0};
  uint32_t dims[3] = {5, 2, 3};
  size_t len = idx_build(buf, 0x08, 3, dims, pix, 31);
  expect_idx_error(fl__failed, "trailing", buf, len, 0, FL_EFORMAT, "trailing data");
}

TEST(idx_truncated_gz) {
  /* A real compressed file cut in half: the gzip stream ends early. */
  enum { N = 200, D = 784 };
  static uint8_t pix[N * D], buf[N * D + 64];
  uint64_t s = 12345;
  for (size_t i = 0; i < sizeof pix; i++) {
    s = s * 6364136223846793005u + 1442695040888963407u;
    pix[i] = (uint8_t)(s >> 56);
  }
  uint32_t dims[3] = {N, 28, 28};
  size_t len = idx_build(buf, 0x08, 3, dims, pix, sizeof pix);
  const char *full = tmp_path("truncgz-full");
  ASSERT_EQ(write_bytes(full, buf, len, 1), 0);
  long gzlen = file_size(full);
  ASSERT_GT(gzlen, 1000);
  FILE *f = fopen(full, "rb");
  ASSERT_TRUE(f != NULL);
  uint8_t *gzb = malloc((size_t)gzlen);
  size_t got = fread(gzb, 1, (size_t)gzlen, f);
  fclose(f);
  ASSERT_EQ(got, gzlen);
  /* expect_idx_error writes raw bytes, so hand it the cut gzip bytes. */
  expect_idx_error(fl__failed, "truncgz", gzb, (size_t)gzlen / 2, 0, FL_EFORMAT,
                   "truncated: expected 156800 bytes of pixel data");
  free(gzb);
}

TEST(idx_corrupt_gz_body) {
  uint8_t buf[256], pix[30] = {0};
  uint32_t dims[3] = {5, 2, 3};
  size_t len = idx_build(buf, 0x08, 3, dims, pix, 30);
  const char *p = tmp_path("corruptgz-src");
  ASSERT_EQ(write_bytes(p, buf, len, 1), 0);
  FILE *f = fopen(p, "rb");
  ASSERT_TRUE(f != NULL);
  uint8_t gzb[512];
  size_t n = fread(gzb, 1, sizeof gzb, f);
  fclose(f);
  ASSERT_GT(n, 20);
  for (size_t i = 10; i < n - 8; i++)
    gzb[i] ^= 0xA5; /* garble the deflate data */
  char name[] = "corruptgz";
  char iname[64];
  snprintf(iname, sizeof iname, "%s-images", name);
  ASSERT_EQ(write_bytes(tmp_path(iname), gzb, n, 0), 0);
  fl_dataset_t *d = NULL;
  int rc = fl_dataset_load_idx(tmp_path(iname), tmp_path("rt-labels-idx1-ubyte"), &d);
  fprintf(stderr, "  corruptgz -> %s\n", fl_err_msg());
  ASSERT_EQ(rc, FL_EFORMAT);
  ASSERT_TRUE(d == NULL);
}

TEST(idx_huge_dims_rejected_before_alloc) {
  uint8_t buf[64];
  /* 2^26 examples of 784 features = 196 GiB of floats: over the byte limit. */
  uint32_t d1[3] = {FL_DATA_MAX_EXAMPLES, 28, 28};
  size_t len = idx_build(buf, 0x08, 3, d1, NULL, 0);
  expect_idx_error(fl__failed, "hugebytes", buf, len, 0, FL_ETOOBIG, "limit");
  uint32_t d2[3] = {0xFFFFFFFFu, 1, 1};
  len = idx_build(buf, 0x08, 3, d2, NULL, 0);
  expect_idx_error(fl__failed, "hugecount", buf, len, 0, FL_ETOOBIG, "examples");
  /* Feature dims whose product overflows 32 bits. */
  uint32_t d3[4] = {1, 0x10000u, 0x10000u, 0x10000u};
  len = idx_build(buf, 0x08, 4, d3, NULL, 0);
  expect_idx_error(fl__failed, "hugedim", buf, len, 0, FL_ETOOBIG, "features per example");
  uint32_t d4[3] = {5, 0, 3};
  len = idx_build(buf, 0x08, 3, d4, NULL, 0);
  expect_idx_error(fl__failed, "zerodim", buf, len, 0, FL_EFORMAT, "dimension 1 is 0");
  /* Within the limits (1.9 GiB of floats) but the file holds 10 bytes: the
   * reader must fail on truncation without reserving the declared size. */
  uint32_t d5[3] = {600000, 28, 28};
  uint8_t pix[10] = {0};
  len = idx_build(buf, 0x08, 3, d5, pix, 10);
  expect_idx_error(fl__failed, "liar", buf, len, 0, FL_EFORMAT,
                   "truncated: expected 470400000 bytes of pixel data, got 10");
}

TEST(idx_count_mismatch) {
  const char *img = tmp_path("mm-images"), *lab = tmp_path("mm-labels");
  ASSERT_EQ(write_small_idx(img, lab, 0), 0);
  uint8_t buf[64], labels[5] = {0, 1, 2, 3, 4};
  uint32_t ld[1] = {4};
  size_t len = idx_build(buf, 0x08, 1, ld, labels, 4);
  ASSERT_EQ(write_bytes(lab, buf, len, 0), 0);
  fl_dataset_t *d = NULL;
  ASSERT_EQ(fl_dataset_load_idx(img, lab, &d), FL_ESHAPE);
  ASSERT_CONTAINS(fl_err_msg(), "4 labels, but the image file has 5 examples");
  /* A label file with image-like dims is rejected too. */
  uint32_t ld2[2] = {5, 1};
  len = idx_build(buf, 0x08, 2, ld2, labels, 5);
  ASSERT_EQ(write_bytes(lab, buf, len, 0), 0);
  ASSERT_EQ(fl_dataset_load_idx(img, lab, &d), FL_EFORMAT);
  ASSERT_CONTAINS(fl_err_msg(), "declares 2 dimensions");
}

TEST(idx_missing_file) {
  fl_dataset_t *d = NULL;
  ASSERT_EQ(fl_dataset_load_idx(tmp_path("nope-images"), tmp_path("nope-labels"), &d), FL_ENOENT);
  ASSERT_CONTAINS(fl_err_msg(), "nope-images");
}

TEST(idx_empty_file) {
  expect_idx_error(fl__failed, "emptyidx", (const uint8_t *)"", 0, 0, FL_EFORMAT, "truncated");
}

/* One gzip member holding `len` bytes (malloc'd, length in *out_len). */
static uint8_t *gz_encode(const void *data, size_t len, size_t *out_len) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK) return NULL;
  size_t cap = deflateBound(&z, (uLong)len);
  uint8_t *out = malloc(cap);
  z.next_in = (Bytef *)data;
  z.avail_in = (uInt)len;
  z.next_out = out;
  z.avail_out = (uInt)cap;
  int ok = out && deflate(&z, Z_FINISH) == Z_STREAM_END;
  *out_len = z.total_out;
  deflateEnd(&z);
  if (!ok) {
    free(out);
    return NULL;
  }
  return out;
}

/* A gzip IDX file whose header promises more than deflate could inflate
 * from the file is refused before reading any data; a header within the
 * ratio but beyond the data is truncation; beyond the size limit, the
 * header alone is refused. */
TEST(idx_gz_header_beyond_the_data) {
  enum { N = 50, D = 64 };
  static uint8_t pix[N * D], buf[N * D + 64];
  for (size_t i = 0; i < sizeof pix; i++)
    pix[i] = (uint8_t)(i * 37);
  /* Declares 60,000 x 28 x 28 (47 MB) in a gzip file of a few KB. */
  uint32_t big[3] = {60000, 28, 28};
  size_t len = idx_build(buf, 0x08, 3, big, pix, sizeof pix), gzlen;
  uint8_t *gz = gz_encode(buf, len, &gzlen);
  ASSERT_TRUE(gz != NULL);
  expect_idx_error(fl__failed, "gzlie", gz, gzlen, 0, FL_EFORMAT,
                   "the header declares 47040000 bytes of pixel data, more than a gzip file of");
  free(gz);
  if (*fl__failed) return;
  /* Twice the data: within the ratio, so read until the stream ends. */
  uint32_t twice[3] = {2 * N, 8, 8};
  len = idx_build(buf, 0x08, 3, twice, pix, sizeof pix);
  expect_idx_error(fl__failed, "gztwice", buf, len, 1, FL_EFORMAT,
                   "truncated: expected 6400 bytes of pixel data, got 3200");
  if (*fl__failed) return;
  /* Over the size limit: refused on the header alone. */
  uint32_t huge[3] = {FL_DATA_MAX_EXAMPLES, 28, 28};
  len = idx_build(buf, 0x08, 3, huge, pix, 16);
  expect_idx_error(fl__failed, "gzhuge", buf, len, 1, FL_ETOOBIG, "limit is 8192 MiB");
}

/* A gzip bomb: about 1 MB on disk, 1 GiB inflated (1024 gzip members of
 * 1 MiB of zeros each), under a header for 5 images of 2x3. The reader
 * inflates what the header declares plus a few bytes, finds trailing data
 * and stops: in milliseconds, where inflating 1 GiB takes seconds. */
TEST(idx_gzip_bomb_read_no_further_than_the_header) {
  const size_t mib = (size_t)1 << 20;
  uint8_t *plain = calloc(1, mib);
  ASSERT_TRUE(plain != NULL);
  uint32_t dims[3] = {5, 2, 3};
  idx_build(plain, 0x08, 3, dims, NULL, 0); /* the 30 pixels are the zeros after it */
  size_t first_len, rest_len;
  uint8_t *first = gz_encode(plain, mib, &first_len);
  memset(plain, 0, mib);
  uint8_t *rest = gz_encode(plain, mib, &rest_len);
  free(plain);
  ASSERT_TRUE(first && rest);
  const char *img = tmp_path("bomb-images"), *lab = tmp_path("bomb-labels");
  ASSERT_EQ(write_small_idx(tmp_path("bomb-unused"), lab, 0), 0);
  FILE *f = fopen(img, "wb");
  ASSERT_TRUE(f != NULL);
  fwrite(first, 1, first_len, f);
  for (int i = 1; i < 1024; i++)
    fwrite(rest, 1, rest_len, f);
  ASSERT_EQ(fclose(f), 0);
  free(first);
  free(rest);
  ASSERT_LT(file_size(img), 4 << 20);
  fl_dataset_t *d = NULL;
  double t0 = fl_clock_now();
  ASSERT_EQ(fl_dataset_load_idx(img, lab, &d), FL_EFORMAT);
  double dt = fl_clock_now() - t0;
  unlink(img);
  ASSERT_CONTAINS(fl_err_msg(), "trailing data after the 30 bytes the header declares");
  ASSERT_DBL_OP(dt, <, 0.5);
}

/* Only regular files: a directory, a FIFO (without a writer: it must not
 * block) and a device are refused at once, named. */
TEST(non_regular_files_refused) {
  fl_dataset_t *d = NULL;
  ASSERT_EQ(fl_dataset_load_file(fl_test_tmpdir(), &d), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "is a directory, expected a regular file");
  const char *fifos[] = {tmp_path("fifo.csv"), tmp_path("fifo-images-idx3-ubyte")};
  for (int i = 0; i < 2; i++) {
    unlink(fifos[i]);
    ASSERT_EQ(mkfifo(fifos[i], 0600), 0);
    double t0 = fl_clock_now();
    ASSERT_EQ(fl_dataset_load_file(fifos[i], &d), FL_EINVAL);
    ASSERT_CONTAINS(fl_err_msg(), "is a FIFO (named pipe), expected a regular file");
    ASSERT_DBL_OP(fl_clock_now() - t0, <, 1.0);
    unlink(fifos[i]);
  }
  ASSERT_EQ(fl_dataset_load_csv("/dev/zero", &d), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'/dev/zero' is a character device");
  /* The labels of an image file too. */
  const char *img = tmp_path("devlab-images"), *lab = tmp_path("devlab-labels");
  ASSERT_EQ(write_small_idx(img, lab, 0), 0);
  ASSERT_EQ(fl_dataset_load_idx(img, "/dev/zero", &d), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'/dev/zero' is a character device");
  ASSERT_TRUE(d == NULL);
}

/* The examples' shape from the IDX dimensions after the count: (H, W) is
 * 1 x H x W, (C, H, W) is C x H x W (NCHW), one dimension none. The pixels
 * stay in file order, which is NCHW's. */
static void load_idx_dims(int *fl__failed, const char *name, unsigned nd, const uint32_t *dims,
                          fl_dataset_t **out) {
  size_t per = 1;
  for (unsigned i = 1; i < nd; i++)
    per *= dims[i];
  size_t total = dims[0] * per;
  uint8_t *pix = malloc(total), *buf = malloc(total + 64), labels[2] = {1, 0};
  ASSERT_TRUE(pix && buf);
  for (size_t i = 0; i < total; i++)
    pix[i] = (uint8_t)i;
  char img[256], lab[256];
  snprintf(img, sizeof img, "%s-images-idx3-ubyte", name);
  snprintf(lab, sizeof lab, "%s-labels-idx1-ubyte", name);
  uint32_t ldims[1] = {dims[0]};
  size_t len = idx_build(buf, 0x08, nd, dims, pix, total);
  int ok = write_bytes(tmp_path(img), buf, len, 1) == 0;
  len = idx_build(buf, 0x08, 1, ldims, labels, dims[0]);
  ok = ok && write_bytes(tmp_path(lab), buf, len, 0) == 0;
  free(pix);
  free(buf);
  ASSERT_TRUE(ok);
  int rc = fl_dataset_load_file(tmp_path(img), out);
  if (rc) fprintf(stderr, "  %s\n", fl_err_msg());
  ASSERT_EQ(rc, 0);
  ASSERT_EQ((*out)->dim, per);
  ASSERT_NEAR((*out)->x[per + 5], (double)(per + 5) / 255.0, 1e-7); /* example 1, in file order */
}

TEST(idx_shape_from_dimensions) {
  fl_dataset_t *d = NULL;
  uint32_t hw[3] = {2, 5, 7}, chw[4] = {2, 3, 4, 5}, flat[2] = {2, 9}, more[5] = {2, 2, 3, 2, 2};
  load_idx_dims(fl__failed, "hw", 3, hw, &d);
  if (*fl__failed) return;
  ASSERT_EQ(d->shape.c, 1);
  ASSERT_EQ(d->shape.h, 5);
  ASSERT_EQ(d->shape.w, 7);
  fl_dataset_destroy(&d);
  load_idx_dims(fl__failed, "chw", 4, chw, &d);
  if (*fl__failed) return;
  ASSERT_EQ(d->shape.c, 3);
  ASSERT_EQ(d->shape.h, 4);
  ASSERT_EQ(d->shape.w, 5);
  fl_dataset_destroy(&d);
  load_idx_dims(fl__failed, "flat", 2, flat, &d);
  if (*fl__failed) return;
  ASSERT_FALSE(fl_shape_is_set(&d->shape));
  fl_dataset_destroy(&d);
  load_idx_dims(fl__failed, "more", 5, more, &d);
  if (*fl__failed) return;
  ASSERT_FALSE(fl_shape_is_set(&d->shape));
  fl_dataset_destroy(&d);
}

TEST(fashion_mnist_shape) {
  fl_dataset_t *d = NULL;
  ASSERT_EQ(fl_dataset_load_named("fashion-mnist", NULL, 0, &d), 0);
  ASSERT_EQ(d->shape.c, 1);
  ASSERT_EQ(d->shape.h, 28);
  ASSERT_EQ(d->shape.w, 28);
  fl_dataset_destroy(&d);
}

TEST(shape_parse) {
  fl_shape_t s = {9, 9, 9};
  ASSERT_EQ(fl_shape_parse("3x32x32", &s), 0);
  ASSERT_EQ(s.c, 3);
  ASSERT_EQ(s.h, 32);
  ASSERT_EQ(s.w, 32);
  ASSERT_EQ(fl_shape_parse("", &s), 0);
  ASSERT_FALSE(fl_shape_is_set(&s));
  const char *bad[] = {"3x32",     "3x32x32x1", "0x28x28",   "1x0x28",
                       "1x28x",    "x28x28",    "3X32X32",   "3x32x32 ",
                       "-1x28x28", "1x28x28x",  "65537x1x1", "1x1x99999999999999999999",
                       "1.5x2x2",  "3,32,32"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    s = (fl_shape_t){7, 7, 7};
    ASSERT_EQ(fl_shape_parse(bad[i], &s), FL_EINVAL);
    ASSERT_CONTAINS(fl_err_msg(), bad[i]);
    ASSERT_CONTAINS(fl_err_msg(), "CxHxW");
    ASSERT_EQ(s.c, 7); /* unchanged */
  }
}

TEST(shape_resolve_precedence) {
  fl_shape_t data = {1, 8, 24}, s;
  ASSERT_EQ(fl_shape_resolve("3x8x8", &data, 192, &s), 0); /* the flag first */
  ASSERT_EQ(s.c, 3);
  ASSERT_EQ(fl_shape_resolve("", &data, 192, &s), 0); /* then the data's */
  ASSERT_EQ(s.c, 1);
  ASSERT_EQ(s.w, 24);
  ASSERT_EQ(fl_shape_resolve("", NULL, 192, &s), 0); /* else none */
  ASSERT_FALSE(fl_shape_is_set(&s));
  ASSERT_EQ(fl_shape_resolve("3x8x9", &data, 192, &s), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--input-shape 3x8x9 is 216 features per example, the data has "
                                "192 (its own shape is 1x8x24)");
  ASSERT_EQ(fl_shape_resolve("65536x65536x65536", NULL, 192, &s), FL_EINVAL); /* no overflow */
  ASSERT_CONTAINS(fl_err_msg(), "281474976710656 features");
  ASSERT_EQ(fl_shape_resolve("3x8", NULL, 192, &s), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--input-shape '3x8' is not CxHxW");
}

/* ------------------------------------------------------------ CSV */

TEST(csv_round_trip) {
  const char *p = tmp_path("rt.csv");
  ASSERT_EQ(write_text(p, "label,a,b,c\r\n"
                          "2,0.5,-1.25,3e2\r\n"
                          "0, 1,2 ,3\r\n"
                          "11,0,0,1e-3\r\n"
                          "\r\n"
                          "\n"),
            0);
  fl_dataset_t *d = NULL;
  int rc = fl_dataset_load_file(p, &d);
  if (rc) fprintf(stderr, "  %s\n", fl_err_msg());
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(d->n, 3);
  ASSERT_EQ(d->dim, 3);
  ASSERT_EQ(d->num_classes, 12);
  ASSERT_EQ(d->y[0], 2);
  ASSERT_EQ(d->y[1], 0);
  ASSERT_EQ(d->y[2], 11);
  ASSERT_NEAR(d->x[0], 0.5, 0);
  ASSERT_NEAR(d->x[1], -1.25, 0);
  ASSERT_NEAR(d->x[2], 300, 0);
  ASSERT_NEAR(d->x[3], 1, 0);
  ASSERT_NEAR(d->x[4], 2, 0);
  ASSERT_NEAR(d->x[8], 1e-3, 1e-9);
  ASSERT_FALSE(fl_shape_is_set(&d->shape)); /* CSV is flat: --input-shape gives a shape */
  fl_dataset_destroy(&d);
}

TEST(csv_no_header_no_final_newline) {
  const char *p = tmp_path("nohdr.csv");
  ASSERT_EQ(write_text(p, "1,0.25\n0,0.75"), 0);
  fl_dataset_t *d = NULL;
  ASSERT_EQ(fl_dataset_load_csv(p, &d), 0);
  ASSERT_EQ(d->n, 2);
  ASSERT_EQ(d->dim, 1);
  ASSERT_EQ(d->num_classes, 2);
  ASSERT_NEAR(d->x[1], 0.75, 0);
  fl_dataset_destroy(&d);
}

static void expect_csv_error(int *fl__failed, const char *name, const char *text, int err,
                             const char *needle) {
  const char *p = tmp_path(name);
  ASSERT_EQ(write_text(p, text), 0);
  fl_dataset_t *d = NULL;
  int rc = fl_dataset_load_csv(p, &d);
  fprintf(stderr, "  %s -> %s\n", name, fl_err_msg());
  ASSERT_EQ(rc, err);
  ASSERT_TRUE(d == NULL);
  ASSERT_CONTAINS(fl_err_msg(), needle);
}

TEST(csv_ragged_row) {
  expect_csv_error(fl__failed, "ragged.csv", "label,a,b\n1,2,3\n0,1,2\n1,2\n", FL_EFORMAT,
                   "ragged.csv:4: 2 fields, but line 1 has 3");
}

TEST(csv_non_numeric_feature) {
  expect_csv_error(fl__failed, "nonnum.csv", "1,2,3\n0,1,abc\n", FL_EFORMAT,
                   "nonnum.csv:2: feature 2 ('abc') is not a number");
  expect_csv_error(fl__failed, "trailjunk.csv", "1,2,3\n0,1,2x\n", FL_EFORMAT,
                   "trailjunk.csv:2: feature 2");
  expect_csv_error(fl__failed, "emptyfield.csv", "1,2,3\n0,1,\n5,5,5\n", FL_EFORMAT,
                   "emptyfield.csv:2: feature 2");
  expect_csv_error(fl__failed, "nan.csv", "1,2,3\n0,nan,1\n", FL_ENONFINITE,
                   "nan.csv:2: feature 1");
  expect_csv_error(fl__failed, "overflow.csv", "1,2,3\n0,1e60,1\n", FL_ENONFINITE,
                   "overflow.csv:2: feature 1");
}

TEST(csv_bad_labels) {
  expect_csv_error(fl__failed, "neg.csv", "1,2\n-1,3\n", FL_ERANGE,
                   "neg.csv:2: label -1 is negative");
  expect_csv_error(fl__failed, "biglab.csv", "1,2\n70000,3\n", FL_ERANGE,
                   "biglab.csv:2: label '70000' is too large");
  expect_csv_error(fl__failed, "fraclab.csv", "1,2\n1.5,3\n", FL_EFORMAT,
                   "fraclab.csv:2: label '1.5' is not an integer");
}

TEST(csv_empty_and_header_only) {
  expect_csv_error(fl__failed, "empty.csv", "", FL_EFORMAT, "empty file");
  expect_csv_error(fl__failed, "hdronly.csv", "label,x\n\n", FL_EFORMAT, "no data lines");
  expect_csv_error(fl__failed, "onecol.csv", "1\n2\n", FL_EFORMAT,
                   "need a label and at least one feature");
  expect_csv_error(fl__failed, "midblank.csv", "1,2\n\n3,4\n", FL_EFORMAT,
                   "midblank.csv:2: blank line");
  fl_dataset_t *d = NULL;
  ASSERT_EQ(fl_dataset_load_csv(tmp_path("absent.csv"), &d), FL_ENOENT);
  ASSERT_CONTAINS(fl_err_msg(), "absent.csv");
}

TEST(destroy_null_safe) {
  fl_dataset_destroy(NULL);
  fl_dataset_t *d = NULL;
  fl_dataset_destroy(&d);
  ASSERT_TRUE(d == NULL);
}

FL_TEST_MAIN()
