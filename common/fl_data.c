/* fl_data: IDX and CSV readers. See fl_data.h for the contract. */
#include "fl_data.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "fl_error.h"
#include "fl_gemm.h" /* rows aligned as the kernels like them */
#include "fl_file.h"

/* Decompressed bytes handed to the float conversion per gzread() call: large
 * enough that call overhead vanishes, small enough to stay in L2. */
#define IDX_CHUNK (1u << 20)
/* IDX allows 255 dims; real files use 1-4. More is a corrupt header. */
#define IDX_MAX_DIMS 16
/* deflate's largest compression ratio (258-byte matches in 2 bits each, a
 * little over 1032:1); gzip framing only lowers it. */
#define IDX_GZ_MAX_RATIO 1032

static fl_dataset_t *dataset_alloc(size_t n, size_t dim) {
  fl_dataset_t *d = calloc(1, sizeof *d);
  if (!d) return NULL;
  d->n = n;
  d->dim = dim;
  d->x = fl_gemm_alloc(n * dim);
  d->y = malloc(n * sizeof *d->y);
  if (!d->x || !d->y) fl_dataset_destroy(&d);
  return d;
}

void fl_dataset_destroy(fl_dataset_t **d) {
  if (!d || !*d) return;
  free((*d)->x);
  free((*d)->y);
  free(*d);
  *d = NULL;
}

/* ---------------------------------------------------------------- IDX */

static const char *idx_type_name(unsigned t) {
  switch (t) {
  case 0x08: return "unsigned byte";
  case 0x09: return "signed byte";
  case 0x0B: return "int16";
  case 0x0C: return "int32";
  case 0x0D: return "float32";
  case 0x0E: return "float64";
  default: return NULL;
  }
}

/* Opens an IDX file, raw or gzip; *size is its size on disk. Only a
 * regular file: a FIFO or a device (/dev/zero) could be read forever. */
static int idx_open(const char *path, gzFile *out, uint64_t *size) {
  int fd;
  int rc = fl_file_open_input(path, FL_FILE_REGULAR, &fd, size);
  if (rc) return rc;
  gzFile g = gzdopen(fd, "rb");
  if (!g) {
    close(fd);
    return fl_err_set(FL_ENOMEM, "%s: out of memory opening it", path);
  }
  gzbuffer(g, 256 * 1024);
  *out = g;
  return 0;
}

/* After the header: can the file hold the `total` data bytes the header
 * declares? A raw file must have them; a gzip stream inflates to at most
 * IDX_GZ_MAX_RATIO times its size. So a header that lies by more than
 * that is refused before anything is allocated or inflated; a smaller lie
 * is caught as truncation when the data runs out. */
static int idx_check_size(gzFile g, const char *path, const char *what, uint64_t size,
                          size_t total) {
  uint64_t hdr = (uint64_t)gztell(g), need = hdr + total;
  if (gzdirect(g)) {
    if (need > size)
      return fl_err_set(FL_EFORMAT, "%s: truncated: expected %zu bytes of %s, got %llu", path,
                        total, what, (unsigned long long)(size > hdr ? size - hdr : 0));
    return 0;
  }
  if (need / IDX_GZ_MAX_RATIO > size)
    return fl_err_set(FL_EFORMAT,
                      "%s: the header declares %zu bytes of %s, more than a gzip file of %llu "
                      "bytes can hold (deflate inflates at most %dx): truncated or corrupt",
                      path, total, what, (unsigned long long)size, IDX_GZ_MAX_RATIO);
  return 0;
}

/* Reads up to len bytes; returns the count read (short only at end of data)
 * or a negative FL_E* code with a message naming `path` and `what`. */
static long long idx_read(gzFile g, const char *path, const char *what, void *buf, unsigned len) {
  int got = gzread(g, buf, len);
  if (got >= 0) return got;
  int zerr = 0;
  const char *zmsg = gzerror(g, &zerr);
  if (zerr == Z_ERRNO) return fl_err_set(FL_EIO, "%s: reading %s: %s", path, what, strerror(errno));
  /* zlib reports a gzip stream cut short as Z_BUF_ERROR, bad deflate data as
   * Z_DATA_ERROR; both are a damaged file, not an I/O failure. */
  if (!zmsg) zmsg = "unknown zlib error";
  /* gzerror() prefixes the path itself; we already name it. */
  size_t plen = strlen(path);
  if (strncmp(zmsg, path, plen) == 0 && zmsg[plen] == ':')
    zmsg += plen + 1 + (zmsg[plen + 1] == ' ');
  return fl_err_set(FL_EFORMAT, "%s: corrupt gzip stream while reading %s: %s", path, what, zmsg);
}

/* Reads exactly len bytes or fails with a "truncated" message. `done` is the
 * count of `what` bytes already read, so the message can say how far the
 * file got; `total` is how many were expected in all. */
static int idx_read_exact(gzFile g, const char *path, const char *what, void *buf, unsigned len,
                          size_t done, size_t total) {
  unsigned have = 0;
  while (have < len) {
    long long got = idx_read(g, path, what, (char *)buf + have, len - have);
    if (got < 0) {
      /* Distinguish a gzip stream that just stops (truncated download) from
       * data that is garbage; the former gets the usual truncation wording. */
      int zerr = 0;
      gzerror(g, &zerr);
      if (zerr == Z_BUF_ERROR)
        return fl_err_set(
            FL_EFORMAT, "%s: truncated: expected %zu bytes of %s, got %zu (gzip stream ends early)",
            path, total, what, done + have);
      return (int)got;
    }
    if (got == 0)
      return fl_err_set(FL_EFORMAT, "%s: truncated: expected %zu bytes of %s, got %zu", path, total,
                        what, done + have);
    have += (unsigned)got;
  }
  return 0;
}

static int idx_expect_eof(gzFile g, const char *path, size_t total) {
  unsigned char extra[64];
  long long got = idx_read(g, path, "trailing data", extra, sizeof extra);
  if (got < 0) return (int)got;
  if (got > 0)
    return fl_err_set(
        FL_EFORMAT,
        "%s: trailing data after the %zu bytes the header declares (file longer than expected)",
        path, total);
  return 0;
}

/* Parses the IDX header: magic 00 00 TYPE NDIMS, then NDIMS big-endian u32
 * sizes. Requires type ubyte; `min_dims`..`max_dims` bounds NDIMS. The first
 * size is the example count; *per_item receives the product of the rest,
 * checked against FL_DATA_MAX_DIM as it is formed so it cannot overflow;
 * *shape (if not NULL) the rest as an image shape (fl_data.h). */
static int idx_read_header(gzFile g, const char *path, const char *kind, unsigned min_dims,
                           unsigned max_dims, size_t *count, size_t *per_item, fl_shape_t *shape) {
  unsigned char magic[4];
  int rc = idx_read_exact(g, path, "IDX header", magic, 4, 0, 4);
  if (rc) return rc;
  if (magic[0] != 0 || magic[1] != 0)
    return fl_err_set(FL_EFORMAT,
                      "%s: not an IDX file: magic bytes %02x %02x %02x %02x, expected 00 00 08 0N",
                      path, magic[0], magic[1], magic[2], magic[3]);
  const char *tname = idx_type_name(magic[2]);
  if (!tname)
    return fl_err_set(FL_EFORMAT, "%s: not an IDX file: unknown element type byte 0x%02x", path,
                      magic[2]);
  if (magic[2] != 0x08)
    return fl_err_set(
        FL_EUNSUPPORTED,
        "%s: IDX element type 0x%02x (%s) is not supported; %s must be type 0x08 (unsigned byte)",
        path, magic[2], tname, kind);
  unsigned nd = magic[3];
  if (nd < min_dims || nd > max_dims)
    return fl_err_set(FL_EFORMAT, "%s: %s declares %u dimensions, expected %u..%u", path, kind, nd,
                      min_dims, max_dims);
  unsigned char raw[4 * IDX_MAX_DIMS];
  rc = idx_read_exact(g, path, "IDX header", raw, 4 * nd, 4, 4 + 4 * (size_t)nd);
  if (rc) return rc;
  size_t prod = 1, dims[IDX_MAX_DIMS];
  for (unsigned i = 0; i < nd; i++) {
    const unsigned char *b = raw + 4 * i;
    uint32_t v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    if (v == 0) return fl_err_set(FL_EFORMAT, "%s: dimension %u is 0", path, i);
    if (i == 0) {
      if (v > FL_DATA_MAX_EXAMPLES)
        return fl_err_set(FL_ETOOBIG, "%s: declares %u examples, limit is %u", path, v,
                          FL_DATA_MAX_EXAMPLES);
      *count = v;
      continue;
    }
    if (v > FL_DATA_MAX_DIM || prod * v > FL_DATA_MAX_DIM)
      return fl_err_set(FL_ETOOBIG,
                        "%s: declares more than %u features per example (dimension %u is %u)", path,
                        FL_DATA_MAX_DIM, i, v);
    prod *= v;
    dims[i] = v;
  }
  *per_item = prod;
  if (shape) {
    fl_shape_t s = {0, 0, 0};
    if (nd == 3) s = (fl_shape_t){1, dims[1], dims[2]};
    if (nd == 4) s = (fl_shape_t){dims[1], dims[2], dims[3]};
    *shape = s;
  }
  return 0;
}

static int idx_read_images(const char *path, float **x_out, size_t *n_out, size_t *dim_out,
                           fl_shape_t *shape) {
  gzFile g = NULL;
  float *x = NULL;
  unsigned char *chunk = NULL;
  size_t n = 0, dim = 0;
  uint64_t size;
  int rc = idx_open(path, &g, &size);
  if (rc) goto out;
  rc = idx_read_header(g, path, "an image file", 2, IDX_MAX_DIMS, &n, &dim, shape);
  if (rc) goto out;
  /* n <= 2^26 and dim <= 2^20, so n*dim fits in size_t. */
  size_t total = n * dim;
  if (total > FL_DATA_MAX_BYTES / sizeof(float)) {
    rc = fl_err_set(FL_ETOOBIG, "%s: %zu x %zu features need %zu MiB, limit is %zu MiB", path, n,
                    dim, total * sizeof(float) >> 20, FL_DATA_MAX_BYTES >> 20);
    goto out;
  }
  if ((rc = idx_check_size(g, path, "pixel data", size, total))) goto out;
  float lut[256];
  for (int i = 0; i < 256; i++)
    lut[i] = (float)i / 255.0f;
  chunk = malloc(IDX_CHUNK);
  if (!chunk) {
    rc = fl_err_set(FL_ENOMEM, "%s: out of memory", path);
    goto out;
  }
  /* The feature array grows with the data actually decompressed rather than
   * being sized from the header up front, so a header that lies about its
   * size costs at most twice the real data, never gigabytes. */
  size_t cap = 0, done = 0;
  while (done < total) {
    unsigned want = total - done < IDX_CHUNK ? (unsigned)(total - done) : IDX_CHUNK;
    if (done + want > cap) {
      size_t ncap = cap ? cap * 2 : (size_t)4 * IDX_CHUNK;
      if (ncap > total) ncap = total;
      float *nx = fl_gemm_alloc(ncap);
      if (!nx) {
        rc = fl_err_set(FL_ENOMEM, "%s: out of memory for %zu features", path, ncap);
        goto out;
      }
      if (x) memcpy(nx, x, done * sizeof *x);
      free(x);
      x = nx;
      cap = ncap;
    }
    rc = idx_read_exact(g, path, "pixel data", chunk, want, done, total);
    if (rc) goto out;
    float *dst = x + done;
    for (unsigned i = 0; i < want; i++)
      dst[i] = lut[chunk[i]];
    done += want;
  }
  rc = idx_expect_eof(g, path, total);
  if (rc) goto out;
  *x_out = x;
  x = NULL;
  *n_out = n;
  *dim_out = dim;
out:
  free(chunk);
  free(x);
  if (g) gzclose(g);
  return rc;
}

/* Reads labels into y[0..n); n comes from the image file, which already
 * proved that much data exists, so allocating by it is safe. */
static int idx_read_labels(const char *path, size_t n, int32_t *y, size_t *max_label) {
  gzFile g = NULL;
  unsigned char *buf = NULL;
  size_t count = 0, per = 0;
  uint64_t size;
  int rc = idx_open(path, &g, &size);
  if (rc) goto out;
  rc = idx_read_header(g, path, "a label file", 1, 1, &count, &per, NULL);
  if (rc) goto out;
  if (count != n) {
    rc = fl_err_set(FL_ESHAPE, "%s: %zu labels, but the image file has %zu examples", path, count,
                    n);
    goto out;
  }
  if ((rc = idx_check_size(g, path, "label data", size, n))) goto out;
  buf = malloc(n);
  if (!buf) {
    rc = fl_err_set(FL_ENOMEM, "%s: out of memory", path);
    goto out;
  }
  rc = idx_read_exact(g, path, "label data", buf, (unsigned)n, 0, n);
  if (rc) goto out;
  rc = idx_expect_eof(g, path, n);
  if (rc) goto out;
  size_t mx = 0;
  for (size_t i = 0; i < n; i++) {
    y[i] = buf[i];
    if (buf[i] > mx) mx = buf[i];
  }
  *max_label = mx;
out:
  free(buf);
  if (g) gzclose(g);
  return rc;
}

int fl_dataset_load_idx(const char *images_path, const char *labels_path, fl_dataset_t **out) {
  fl_dataset_t *d = NULL;
  float *x = NULL;
  size_t n = 0, dim = 0, max_label = 0;
  fl_shape_t shape;
  int rc;
  if (!images_path || !labels_path || !out)
    return fl_err_set(FL_EINVAL, "fl_dataset_load_idx: NULL argument");
  rc = idx_read_images(images_path, &x, &n, &dim, &shape);
  if (rc) goto out;
  d = calloc(1, sizeof *d);
  if (!d || !(d->y = malloc(n * sizeof *d->y))) {
    rc = fl_err_set(FL_ENOMEM, "%s: out of memory for %zu labels", labels_path, n);
    goto out;
  }
  d->n = n;
  d->dim = dim;
  d->shape = shape;
  d->x = x;
  x = NULL;
  rc = idx_read_labels(labels_path, n, d->y, &max_label);
  if (rc) goto out;
  d->num_classes = max_label + 1;
  *out = d;
  d = NULL;
out:
  free(x);
  fl_dataset_destroy(&d);
  return rc;
}

/* ---------------------------------------------------------------- named */

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && !S_ISDIR(st.st_mode);
}

/* Finds dir/stem.gz or dir/stem; on failure the message names the .gz path
 * (the form the Debian package installs) and how to get it. */
static int named_path(const char *name, const char *dir, const char *stem, char *buf, size_t cap) {
  int len = snprintf(buf, cap, "%s/%s.gz", dir, stem);
  if (len < 0 || (size_t)len >= cap)
    return fl_err_set(FL_EINVAL, "dataset '%s': directory path too long", name);
  if (file_exists(buf)) return 0;
  buf[len - 3] = '\0';
  if (file_exists(buf)) return 0;
  buf[len - 3] = '.';
  if (strcmp(name, "fashion-mnist") == 0)
    return fl_err_set(FL_ENOENT,
                      "dataset '%s': %s not found "
                      "(install the Debian package dataset-fashion-mnist or pass --data-dir)",
                      name, buf);
  return fl_err_set(FL_ENOENT,
                    "dataset '%s': %s not found (put the IDX files there or pass --data-dir)", name,
                    buf);
}

int fl_dataset_is_named(const char *dataset) {
  return dataset && (strcmp(dataset, "fashion-mnist") == 0 || strcmp(dataset, "mnist") == 0);
}

int fl_dataset_load_named(const char *name, const char *dir, int train, fl_dataset_t **out) {
  char defdir[256], img[4096], lab[4096];
  fl_dataset_t *d = NULL;
  int rc;
  if (!name || !out) return fl_err_set(FL_EINVAL, "fl_dataset_load_named: NULL argument");
  if (!fl_dataset_is_named(name))
    return fl_err_set(FL_EINVAL,
                      "unknown dataset '%s' (known: fashion-mnist, mnist; or pass a .csv/IDX file)",
                      name);
  if (!dir || !dir[0]) {
    snprintf(defdir, sizeof defdir, "/usr/share/datasets/%s", name);
    dir = defdir;
  }
  const char *split = train ? "train" : "t10k";
  char stem[64];
  snprintf(stem, sizeof stem, "%s-images-idx3-ubyte", split);
  rc = named_path(name, dir, stem, img, sizeof img);
  if (rc) goto out;
  snprintf(stem, sizeof stem, "%s-labels-idx1-ubyte", split);
  rc = named_path(name, dir, stem, lab, sizeof lab);
  if (rc) goto out;
  rc = fl_dataset_load_idx(img, lab, &d);
  if (rc) goto out;
  /* Both datasets have 10 classes; report that even for a subset file that
   * happens to lack the top class, so model shapes never depend on it. */
  if (d->num_classes > 10) {
    rc = fl_err_set(FL_EFORMAT, "dataset '%s': %s has label %zu, expected labels 0..9", name, lab,
                    d->num_classes - 1);
    goto out;
  }
  d->num_classes = 10;
  *out = d;
  d = NULL;
out:
  fl_dataset_destroy(&d);
  return rc;
}

int fl_dataset_load_file(const char *path, fl_dataset_t **out) {
  char lab[4096];
  if (!path || !out) return fl_err_set(FL_EINVAL, "fl_dataset_load_file: NULL argument");
  /* The type first: a directory (say, the folder of the IDX files given
   * as --data) is named as such, not judged by the file naming rules. */
  int fd;
  uint64_t size;
  int rc = fl_file_open_input(path, FL_FILE_REGULAR, &fd, &size);
  if (rc) return rc;
  close(fd);
  size_t len = strlen(path);
  if (len >= 4 && strcasecmp(path + len - 4, ".csv") == 0) return fl_dataset_load_csv(path, out);
  if (len >= sizeof lab) return fl_err_set(FL_EINVAL, "%s: path too long", path);
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  /* Prefer the full "images-idx3" token so the dims digit changes too
   * (train-images-idx3-ubyte -> train-labels-idx1-ubyte). */
  const char *from = "images-idx3", *to = "labels-idx1";
  const char *hit = strstr(base, from);
  if (!hit) {
    from = "images";
    to = "labels";
    hit = strstr(base, from);
  }
  if (!hit)
    return fl_err_set(
        FL_EINVAL,
        "%s: cannot find its labels: an IDX image file's name must contain 'images' "
        "(e.g. train-images-idx3-ubyte.gz), its labels being the same name with 'labels' "
        "(train-labels-idx1-ubyte.gz); CSV files must end in .csv",
        path);
  size_t pre = (size_t)(hit - path), flen = strlen(from);
  snprintf(lab, sizeof lab, "%.*s%s%s", (int)pre, path, to, hit + flen);
  return fl_dataset_load_idx(path, lab, out);
}

/* ---------------------------------------------------------------- CSV */

/* Finds the line starting at *p: returns its start, stores its end (at the
 * newline, or before a CR preceding it) in *e and advances *p past it. The
 * buffer is not modified, so callers that need a C string set *e = '\0'. */
static char *csv_next_line(char **p, char *end, char **e) {
  char *s = *p;
  char *nl = memchr(s, '\n', (size_t)(end - s));
  char *le = nl ? nl : end;
  *p = nl ? nl + 1 : end;
  if (le > s && le[-1] == '\r') le--;
  *e = le;
  return s;
}

static int csv_is_blank(const char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  return *s == '\0';
}

static size_t csv_count_fields(const char *s) {
  size_t k = 1;
  for (; *s; s++)
    k += *s == ',';
  return k;
}

/* Whether the first field parses fully as a number: a line whose first field
 * does not is a header ("label,pixel0,..."). */
static int csv_first_field_numeric(const char *s) {
  char *end;
  strtod(s, &end);
  if (end == s) return 0;
  while (*end == ' ' || *end == '\t')
    end++;
  return *end == ',' || *end == '\0';
}

static int csv_parse_label(const char *path, size_t line, char **p, int32_t *y) {
  char *s = *p, *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  char *q = end;
  while (*q == ' ' || *q == '\t')
    q++;
  if (end == s || (*q != ',' && *q != '\0')) {
    size_t flen = strcspn(s, ",");
    return fl_err_set(FL_EFORMAT, "%s:%zu: label '%.*s' is not an integer", path, line,
                      (int)(flen > 40 ? 40 : flen), s);
  }
  if (v < 0)
    return fl_err_set(FL_ERANGE, "%s:%zu: label %ld is negative; labels must be 0..%d", path, line,
                      v, FL_DATA_MAX_CLASSES - 1);
  if (errno == ERANGE || v > FL_DATA_MAX_CLASSES - 1)
    return fl_err_set(FL_ERANGE, "%s:%zu: label '%.*s' is too large; labels must be 0..%d", path,
                      line, (int)(end - s > 40 ? 40 : end - s), s, FL_DATA_MAX_CLASSES - 1);
  *y = (int32_t)v;
  *p = *q ? q + 1 : q;
  return 0;
}

/* Parses the dim features after the label; the field count was checked. */
static int csv_parse_features(const char *path, size_t line, char *s, float *x, size_t dim) {
  for (size_t j = 0; j < dim; j++) {
    char *end;
    float v = strtof(s, &end);
    char *q = end;
    while (*q == ' ' || *q == '\t')
      q++;
    if (end == s || (*q != ',' && *q != '\0')) {
      size_t flen = strcspn(s, ",");
      return fl_err_set(FL_EFORMAT, "%s:%zu: feature %zu ('%.*s') is not a number", path, line,
                        j + 1, (int)(flen > 40 ? 40 : flen), s);
    }
    if (!isfinite(v))
      return fl_err_set(FL_ENONFINITE,
                        "%s:%zu: feature %zu ('%.*s') is not finite (or overflows float)", path,
                        line, j + 1, (int)(end - s > 40 ? 40 : end - s), s);
    x[j] = v;
    s = *q ? q + 1 : q;
  }
  return 0;
}

int fl_dataset_load_csv(const char *path, fl_dataset_t **out) {
  char *buf = NULL;
  size_t len = 0;
  fl_dataset_t *d = NULL;
  int rc;
  if (!path || !out) return fl_err_set(FL_EINVAL, "fl_dataset_load_csv: NULL argument");
  /* NUL-terminated, so the parser can use strtof/strtol on it. */
  rc = fl_file_read_all(path, FL_DATA_MAX_CSV_BYTES, FL_FILE_REGULAR, (uint8_t **)&buf, &len);
  if (rc) goto out;
  char *end = buf + len;

  /* Pass 1: header, field count, number of data lines, blank-line rules.
   * Each line is NUL-terminated while it is looked at (strtod and friends
   * skip newlines as whitespace), then restored for pass 2. */
  size_t fields = 0, n = 0, line = 0, first_blank = 0, header_line = 0, first_line = 0;
  for (char *p = buf; p < end;) {
    char *le;
    char *s = csv_next_line(&p, end, &le);
    char saved = *le;
    *le = '\0';
    int blank = csv_is_blank(s), numeric = csv_first_field_numeric(s);
    size_t k = csv_count_fields(s);
    *le = saved;
    line++;
    if (blank) {
      if (!first_blank) first_blank = line;
      continue;
    }
    if (first_blank) {
      rc = fl_err_set(FL_EFORMAT,
                      "%s:%zu: blank line inside the data (only trailing blank lines are allowed)",
                      path, first_blank);
      goto out;
    }
    if (!fields) {
      fields = k;
      first_line = line;
      if (k < 2) {
        rc = fl_err_set(FL_EFORMAT, "%s:%zu: %zu field, need a label and at least one feature",
                        path, line, k);
        goto out;
      }
      if (!numeric) {
        header_line = line;
        continue;
      }
    } else if (k != fields) {
      rc = fl_err_set(
          FL_EFORMAT,
          "%s:%zu: %zu fields, but line %zu has %zu (every line needs label + %zu features)", path,
          line, k, first_line, fields, fields - 1);
      goto out;
    }
    n++;
  }
  if (n == 0) {
    rc = fl_err_set(FL_EFORMAT, "%s: no data lines (%s)", path,
                    len == 0 ? "empty file" : "only a header or blanks");
    goto out;
  }
  size_t dim = fields - 1;
  if (n > FL_DATA_MAX_EXAMPLES || dim > FL_DATA_MAX_DIM ||
      n * dim > FL_DATA_MAX_BYTES / sizeof(float)) {
    rc = fl_err_set(FL_ETOOBIG,
                    "%s: %zu examples x %zu features exceeds the limits (%u x %u, %zu MiB)", path,
                    n, dim, FL_DATA_MAX_EXAMPLES, FL_DATA_MAX_DIM, FL_DATA_MAX_BYTES >> 20);
    goto out;
  }
  /* Every feature took at least two bytes of the file, so this allocation is
   * bounded by twice the file size, itself bounded above. */
  d = dataset_alloc(n, dim);
  if (!d) {
    rc = fl_err_set(FL_ENOMEM, "%s: out of memory for %zu x %zu features", path, n, dim);
    goto out;
  }

  /* Pass 2: parse. Each line is NUL-terminated first, so strtof cannot run
   * into the next line even on an empty last field. */
  int32_t max_label = 0;
  size_t i = 0;
  line = 0;
  for (char *p = buf; p < end && i < n;) {
    char *le;
    char *s = csv_next_line(&p, end, &le);
    *le = '\0';
    line++;
    if (line == header_line || csv_is_blank(s)) continue;
    rc = csv_parse_label(path, line, &s, &d->y[i]);
    if (rc) goto out;
    rc = csv_parse_features(path, line, s, d->x + i * dim, dim);
    if (rc) goto out;
    if (d->y[i] > max_label) max_label = d->y[i];
    i++;
  }
  d->num_classes = (size_t)max_label + 1;
  *out = d;
  d = NULL;
out:
  free(buf);
  fl_dataset_destroy(&d);
  return rc;
}

int fl_dataset_load_flags(const char *dataset, const char *data_dir, const char *test_data,
                          fl_dataset_t **train, fl_dataset_t **test) {
  int rc = 0, named = fl_dataset_is_named(dataset);
  fl_dataset_t *tr = NULL, *te = NULL;
  if (train)
    rc = named ? fl_dataset_load_named(dataset, data_dir, 1, &tr)
               : fl_dataset_load_file(dataset, &tr);
  if (!rc && test) {
    if (test_data && test_data[0])
      rc = fl_dataset_load_file(test_data, &te);
    else if (named)
      rc = fl_dataset_load_named(dataset, data_dir, 0, &te);
  }
  if (rc) {
    fl_dataset_destroy(&tr);
    fl_dataset_destroy(&te);
    return rc;
  }
  if (train) *train = tr;
  if (test) *test = te;
  return 0;
}
