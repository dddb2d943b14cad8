/* fuzz_idx: the IDX reader, fl_dataset_load_idx(), which reads through
 * zlib's gz* functions (gzip or raw, detected by magic).
 *
 * Input byte 0 selects the mode; the rest is the fuzzed file:
 *   bit 0  the harness gzips the fuzzed file (else written raw; a raw input
 *          that itself starts with the gzip magic is still inflated by the
 *          reader)
 *   bit 1  the fuzzed file is the label file, paired with a valid 3-image
 *          2x2 image file; else it is the image file, paired with a valid
 *          label file whose count matches the count its header declares
 *   bit 2  the harness gzips the generated companion file
 *   bit 3  the companion label file has one label too many (count mismatch) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fl_data.h"
#include "fuzz_util.h"

/* Decompressed size the harness admits: a 256 KiB gzip bomb inflates to
 * ~256 MiB, i.e. 1 GiB of floats, which is legitimate for the reader (its
 * limit is 8 GiB) but would only measure the fuzzer's RSS limit. */
#define MAX_INFLATED ((size_t)16 << 20)

/* Size gzread() would deliver from path (capped at MAX_INFLATED + 1), and
 * its first 8 bytes into head. */
static size_t inflated_size(const char *path, unsigned char head[8]) {
  static unsigned char buf[64 << 10];
  size_t total = 0;
  memset(head, 0, 8);
  gzFile g = gzopen(path, "rb");
  if (!g) abort();
  for (;;) {
    int got = gzread(g, buf, sizeof buf);
    if (got <= 0) break;
    if (total < 8) memcpy(head + total, buf, (size_t)got < 8 - total ? (size_t)got : 8 - total);
    total += (size_t)got;
    if (total > MAX_INFLATED) break;
  }
  gzclose(g);
  return total;
}

static void write_labels(const char *path, size_t n, int gz) {
  uint8_t *b = malloc(8 + n);
  if (!b) abort();
  const uint8_t hdr[8] = {
      0, 0, 8, 1, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
  memcpy(b, hdr, 8);
  for (size_t i = 0; i < n; i++)
    b[8 + i] = (uint8_t)(i * 7 % 10);
  fuzz_write(path, b, 8 + n, gz);
  free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const unsigned mode = data[0];
  data++;
  size--;
  const char *fuzzed = fuzz_path("idx-fuzzed");
  const char *other = fuzz_path("idx-other");
  const char *images, *labels;
  fuzz_write(fuzzed, data, size, mode & 1);
  unsigned char head[8];
  const size_t inflated = inflated_size(fuzzed, head);
  if (inflated > MAX_INFLATED) return 0;
  if (mode & 2) {
    static const uint8_t img[] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0,  0,
                                  0, 2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255};
    fuzz_write(other, img, sizeof img, mode & 4);
    images = other;
    labels = fuzzed;
  } else {
    /* The label count the image header declares. A count larger than the
     * inflated size cannot be backed by pixel data, so the image reader
     * fails before labels are read: any label file will do then. */
    size_t n = (size_t)head[4] << 24 | (size_t)head[5] << 16 | (size_t)head[6] << 8 | head[7];
    if (n > inflated) n = 1;
    write_labels(other, n + !!(mode & 8), mode & 4);
    images = fuzzed;
    labels = other;
  }
  fl_dataset_t *d = NULL;
  int rc = fl_dataset_load_idx(images, labels, &d);
  if (rc == 0) {
    if (!d || d->n == 0 || d->dim == 0 || d->num_classes == 0 || d->num_classes > 256) abort();
    for (size_t i = 0; i < d->n; i++)
      if (d->y[i] < 0 || (size_t)d->y[i] >= d->num_classes) abort();
    for (size_t i = 0; i < d->n * d->dim; i++)
      if (!(d->x[i] >= 0.0f && d->x[i] <= 1.0f)) abort();
  } else if (d) {
    abort();
  }
  fl_dataset_destroy(&d);
  return 0;
}
