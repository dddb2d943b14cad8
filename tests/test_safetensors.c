/* Tests for fl_safetensors (and the fl_file helpers it writes through):
 * bitwise round trips, metadata, hand-written foreign headers, and rejection
 * of every kind of corrupt file with the parameters left untouched. */
#include "fl_test.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "fl_error.h"
#include "fl_file.h"
#include "fl_model.h"
#include "fl_rng.h"
#include "fl_safetensors.h"

/* The small test model: "mlp:4" on 3 inputs, 2 classes.
 *   layers.0.weight [4,3] floats 0..12    bytes 0..48
 *   layers.0.bias   [4]   floats 12..16   bytes 48..64
 *   layers.1.weight [2,4] floats 16..24   bytes 64..96
 *   layers.1.bias   [2]   floats 24..26   bytes 96..104 */
#define SMALL_P 26

static void small_model(fl_model_spec_t *m) {
  if (fl_model_parse("mlp:4", 3, 2, m) != 0 || m->num_params != SMALL_P) {
    fprintf(stderr, "fl_model_parse(mlp:4) broken: %s\n", fl_err_msg());
    abort();
  }
}

static void fill(float *p, size_t n, uint64_t seed) {
  fl_rng_t r;
  fl_rng_seed(&r, seed);
  for (size_t i = 0; i < n; i++)
    p[i] = (float)fl_rng_normal(&r);
}

static const char *tpath(const char *name) {
  static char buf[4][600];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", fl_test_tmpdir(), name);
  return buf[k];
}

/* Writes raw bytes (non-atomically: tests forge broken files on purpose). */
static int write_raw(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t w = fwrite(p, 1, n, f);
  return (fclose(f) == 0 && w == n) ? 0 : -1;
}

/* Writes a safetensors file from a header string, with the declared header
 * length `hlen_field` (use (uint64_t)-1 for strlen(header)) and `dlen` bytes
 * of data. */
static int write_forged(const char *path, const char *header, uint64_t hlen_field, const void *data,
                        size_t dlen) {
  size_t hl = strlen(header);
  uint64_t field = hlen_field == (uint64_t)-1 ? hl : hlen_field;
  uint8_t *b = malloc(8 + hl + dlen + 1);
  for (int k = 0; k < 8; k++)
    b[k] = (uint8_t)(field >> (8 * k));
  memcpy(b + 8, header, hl);
  if (dlen) memcpy(b + 8 + hl, data, dlen);
  int rc = write_raw(path, b, 8 + hl + dlen);
  free(b);
  return rc;
}

/* One tensor entry of a forged header. */
typedef struct {
  const char *name, *dtype, *shape;
  unsigned b, e;
} ent_t;

static const ent_t GOOD[4] = {
    {"layers.0.weight", "F32", "[4,3]", 0, 48},
    {"layers.0.bias", "F32", "[4]", 48, 64},
    {"layers.1.weight", "F32", "[2,4]", 64, 96},
    {"layers.1.bias", "F32", "[2]", 96, 104},
};

static void header_from(char *out, size_t cap, const ent_t *e, size_t n) {
  size_t at = (size_t)snprintf(out, cap, "{\"__metadata__\":{\"model\":\"mlp:4\"}");
  for (size_t i = 0; i < n; i++)
    at += (size_t)snprintf(out + at, cap - at,
                           ",\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%u,%u]}",
                           e[i].name, e[i].dtype, e[i].shape, e[i].b, e[i].e);
  snprintf(out + at, cap - at, "}");
}

TEST(save_load_roundtrip_bitwise) {
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_parse("mlp:20,10", 30, 5, &m), 0);
  size_t P = m.num_params;
  float *a = malloc(P * sizeof(float)), *b = calloc(P, sizeof(float));
  fill(a, P, 1);
  /* Values whose bits a text or double round trip would disturb. */
  a[0] = -0.0f;
  a[1] = 1e-45f; /* smallest denormal */
  a[2] = 3.4028235e38f;
  a[3] = 0.1f;
  const char *path = tpath("rt.safetensors");
  int rc = fl_safetensors_save(path, &m, a, NULL);
  if (rc) fprintf(stderr, "  %s\n", fl_err_msg());
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(fl_safetensors_load(path, &m, b), 0);
  ASSERT_EQ(memcmp(a, b, P * sizeof(float)), 0);

  /* Layout: 8-byte LE length, header padded to a multiple of 8, then the
   * parameter buffer verbatim. */
  uint8_t *raw = NULL;
  size_t len = 0;
  ASSERT_EQ(fl_file_read_all(path, 1 << 20, FL_FILE_REGULAR, &raw, &len), 0);
  uint64_t hl = 0;
  for (int k = 7; k >= 0; k--)
    hl = hl << 8 | raw[k];
  ASSERT_EQ(hl % 8, 0);
  ASSERT_EQ(len, 8 + hl + 4 * P);
  ASSERT_EQ(raw[8], '{');
  ASSERT_EQ(memcmp(raw + 8 + hl, a, 4 * P), 0);
  free(raw);
  free(a);
  free(b);
}

TEST(metadata) {
  fl_model_spec_t m;
  small_model(&m);
  float p[SMALL_P];
  fill(p, SMALL_P, 2);
  const char *meta[] = {"round", "42", "note", "quote\" back\\slash\nnewline \x01 Zürich", NULL};
  const char *path = tpath("meta.safetensors");
  ASSERT_EQ(fl_safetensors_save(path, &m, p, meta), 0);
  char buf[128];
  ASSERT_EQ(fl_safetensors_meta(path, "model", buf, sizeof buf), 0);
  ASSERT_STR_EQ(buf, "mlp:4");
  ASSERT_EQ(fl_safetensors_meta(path, "round", buf, sizeof buf), 0);
  ASSERT_STR_EQ(buf, "42");
  ASSERT_EQ(fl_safetensors_meta(path, "note", buf, sizeof buf), 0);
  ASSERT_STR_EQ(buf, meta[3]);
  ASSERT_EQ(fl_safetensors_meta(path, "missing", buf, sizeof buf), FL_ENOENT);
  ASSERT_CONTAINS(fl_err_msg(), "no metadata 'missing'");
  ASSERT_EQ(fl_safetensors_meta(path, "round", buf, 2), FL_ERANGE);
  ASSERT_EQ(fl_safetensors_meta(tpath("nope.safetensors"), "model", buf, sizeof buf), FL_ENOENT);

  /* "model" is the spec's; duplicates and dangling keys are refused. */
  const char *bad1[] = {"model", "x", NULL};
  ASSERT_EQ(fl_safetensors_save(path, &m, p, bad1), FL_EINVAL);
  const char *bad2[] = {"a", "1", "a", "2", NULL};
  ASSERT_EQ(fl_safetensors_save(path, &m, p, bad2), FL_EINVAL);
  const char *bad3[] = {"a", NULL};
  ASSERT_EQ(fl_safetensors_save(path, &m, p, bad3), FL_EINVAL);
  /* The failed saves left the earlier file alone. */
  ASSERT_EQ(fl_safetensors_meta(path, "round", buf, sizeof buf), 0);
}

/* Another writer's file: different entry and key order, whitespace, escapes
 * in names, no metadata, shuffled data layout. */
TEST(load_foreign_header) {
  fl_model_spec_t m;
  small_model(&m);
  float want[SMALL_P], got[SMALL_P], data[SMALL_P];
  fill(want, SMALL_P, 3);
  /* Data section order: layers.1.bias, layers.1.weight, layers.0.bias, layers.0.weight */
  memcpy(data + 0, want + 24, 2 * 4);
  memcpy(data + 2, want + 16, 8 * 4);
  memcpy(data + 10, want + 12, 4 * 4);
  memcpy(data + 14, want + 0, 12 * 4);
  const char *hdr =
      " {\n \"layers.0.weight\" : {\"shape\": [4, 3], \"data_offsets\": [56, 104], \"dtype\": "
      "\"F32\"},\n"
      "  \"layers.1.\\u0062ias\":{\"dtype\":\"F32\",\"data_offsets\":[0,8],\"shape\":[2]},\n"
      "  \"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[40,56]},\n"
      "  \"layers.1.weight\":{\"dtype\":\"F\\u00332\",\"shape\":[2,4],\"data_offsets\":[8,40]}\n"
      "}      ";
  const char *path = tpath("foreign.safetensors");
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, data, sizeof data), 0);
  int rc = fl_safetensors_load(path, &m, got);
  if (rc) fprintf(stderr, "  %s\n", fl_err_msg());
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(memcmp(want, got, sizeof want), 0);
  char buf[16];
  ASSERT_EQ(fl_safetensors_meta(path, "model", buf, sizeof buf), FL_ENOENT);
}

/* Loads `path` into a buffer of sentinels and checks it failed with `code`,
 * a detail containing `needle`, and no parameter changed. */
#define EXPECT_LOAD_FAILS(path, code, needle)                                                      \
  do {                                                                                             \
    float p_[SMALL_P], q_[SMALL_P];                                                                \
    fill(p_, SMALL_P, 99);                                                                         \
    memcpy(q_, p_, sizeof p_);                                                                     \
    int rc_ = fl_safetensors_load((path), &m, p_);                                                 \
    if (rc_ != (code)) FL__FAIL("load: rc %d (%s), expected %d", rc_, fl_err_msg(), (code));       \
    ASSERT_CONTAINS(fl_err_msg(), needle);                                                         \
    ASSERT_EQ(memcmp(p_, q_, sizeof p_), 0);                                                       \
  } while (0)

/* The file's bytes, and where the checksum's 8 digits are in them. */
static uint8_t *read_file(const char *path, size_t *len, size_t *crc_at) {
  uint8_t *raw = NULL;
  if (fl_file_read_all(path, 1 << 20, FL_FILE_REGULAR, &raw, len) != 0) return NULL;
  static const char key[] = "\"" FL_SAFETENSORS_CHECKSUM_KEY "\":\"";
  *crc_at = 0;
  for (size_t i = 0; i + sizeof key - 1 <= *len && !*crc_at; i++)
    if (!memcmp(raw + i, key, sizeof key - 1)) *crc_at = i + sizeof key - 1;
  return raw;
}

/* Writes raw[0..len) to path with one bit flipped at byte `at` (at == len:
 * none). */
static int write_flipped(const char *path, const uint8_t *raw, size_t len, size_t at, int bit) {
  uint8_t *b = malloc(len);
  memcpy(b, raw, len);
  if (at < len) b[at] ^= (uint8_t)(1u << bit);
  int rc = write_raw(path, b, len);
  free(b);
  return rc;
}

/* Every file fedlr writes carries the CRC-32 of its content (with the
 * digits read as 0), and any changed bit fails the load with params intact. */
TEST(checksum_written_and_verified) {
  fl_model_spec_t m;
  small_model(&m);
  float p[SMALL_P], q[SMALL_P];
  fill(p, SMALL_P, 12);
  const char *meta[] = {"round", "42", NULL};
  const char *path = tpath("crc.safetensors"), *bad = tpath("crc-bad.safetensors");
  ASSERT_EQ(fl_safetensors_save(path, &m, p, meta), 0);
  size_t len = 0, at = 0;
  uint8_t *raw = read_file(path, &len, &at);
  ASSERT_TRUE(raw != NULL);
  ASSERT_GT(at, 0);
  /* The recorded value is zlib's crc32 of the file with the digits as '0'. */
  char digits[9], want[9];
  memcpy(digits, raw + at, 8);
  digits[8] = '\0';
  uint8_t *z = malloc(len);
  memcpy(z, raw, len);
  memset(z + at, '0', 8);
  snprintf(want, sizeof want, "%08lx", crc32(0L, z, (uInt)len));
  free(z);
  ASSERT_STR_EQ(digits, want);
  char buf[16];
  ASSERT_EQ(fl_safetensors_meta(path, FL_SAFETENSORS_CHECKSUM_KEY, buf, sizeof buf), 0);
  ASSERT_STR_EQ(buf, want);
  ASSERT_EQ(fl_safetensors_load_all(path, &m, q, FL_SAFETENSORS_NEED_CHECKSUM, NULL), 0);
  ASSERT_EQ(memcmp(p, q, sizeof p), 0);

  /* One flipped bit that leaves a well-formed file: in a metadata key or
   * value ("round" -> "sound", "42" -> "43"), in the data (first, middle,
   * last byte). Flips that break the header's syntax or its tensor table
   * fail before the checksum is looked at (mutated_files_never_crash). */
  size_t hl = 0;
  for (int k = 7; k >= 0; k--)
    hl = hl << 8 | raw[k];
  const char *key_at = strstr((const char *)raw + 8, "\"round\"");
  const char *val_at = strstr((const char *)raw + 8, "\"42\"");
  ASSERT_TRUE(key_at && val_at);
  const struct {
    size_t at;
    int bit;
  } flips[] = {
      {(size_t)(key_at + 1 - (const char *)raw), 0},
      {(size_t)(val_at + 2 - (const char *)raw), 0},
      {8 + hl, 0},
      {8 + hl + 4 * 13 + 1, 3},
      {len - 1, 7},
  };
  for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
    ASSERT_EQ(write_flipped(bad, raw, len, flips[i].at, flips[i].bit), 0);
    EXPECT_LOAD_FAILS(bad, FL_EFORMAT, "checksum mismatch: the file is corrupt");
  }
  ASSERT_CONTAINS(fl_err_msg(), bad); /* the message names the file */
  /* Another value in the checksum's digits: the content no longer matches. */
  raw[at + 3] = raw[at + 3] == '0' ? '1' : '0';
  ASSERT_EQ(write_raw(bad, raw, len), 0);
  EXPECT_LOAD_FAILS(bad, FL_EFORMAT, "its header records");
  free(raw);

  /* A file from another tool has no checksum: loadable by the plain path,
   * refused when one is required. */
  char hdr[2048];
  header_from(hdr, sizeof hdr, GOOD, 4);
  ASSERT_EQ(write_forged(bad, hdr, (uint64_t)-1, p, sizeof p), 0);
  ASSERT_EQ(fl_safetensors_load(bad, &m, q), 0);
  ASSERT_EQ(memcmp(p, q, sizeof p), 0);
  fill(q, SMALL_P, 14);
  float s[SMALL_P];
  memcpy(s, q, sizeof q);
  ASSERT_EQ(fl_safetensors_load_all(bad, &m, q, FL_SAFETENSORS_NEED_CHECKSUM, NULL), FL_EFORMAT);
  ASSERT_CONTAINS(fl_err_msg(), "has no checksum (metadata 'fedlr_crc32'): it was written by an "
                                "older fedlr or another tool, or its header is damaged");
  ASSERT_EQ(memcmp(q, s, sizeof q), 0);

  /* The checksum entry must be 8 plain hex digits, given once; the key is
   * reserved for the writer. */
  const char *forms[] = {"\"fedlr_crc32\":\"1234567\"", "\"fedlr_crc32\":\"123456789\"",
                         "\"fedlr_crc32\":\"1234567g\"", "\"fedlr_crc32\":\"\\u00301234567\""};
  for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
    snprintf(hdr, sizeof hdr,
             "{\"__metadata__\":{%s},\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[4,3],"
             "\"data_offsets\":[0,48]}}",
             forms[i]);
    ASSERT_EQ(write_forged(bad, hdr, (uint64_t)-1, p, 48), 0);
    EXPECT_LOAD_FAILS(bad, FL_EFORMAT, "metadata 'fedlr_crc32' must be a CRC-32 as 8 hex digits");
  }
  snprintf(hdr, sizeof hdr,
           "{\"__metadata__\":{\"fedlr_crc32\":\"00000000\",\"fedlr_crc32\":"
           "\"00000000\"}}");
  ASSERT_EQ(write_forged(bad, hdr, (uint64_t)-1, p, 0), 0);
  EXPECT_LOAD_FAILS(bad, FL_EFORMAT, "metadata key 'fedlr_crc32' appears twice");
  const char *reserved[] = {FL_SAFETENSORS_CHECKSUM_KEY, "x", NULL};
  ASSERT_EQ(fl_safetensors_save(bad, &m, p, reserved), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'fedlr_crc32' is reserved");
}

/* fl_safetensors_load_all lists the metadata (not the checksum) in file
 * order, within its limits. */
TEST(load_all_lists_metadata) {
  fl_model_spec_t m;
  small_model(&m);
  float p[SMALL_P], q[SMALL_P];
  fill(p, SMALL_P, 15);
  const char *path = tpath("list.safetensors");
  const char *meta[] = {"b", "2", "a", "x\"y", NULL};
  ASSERT_EQ(fl_safetensors_save(path, &m, p, meta), 0);
  fl_safetensors_meta_t *l = calloc(1, sizeof *l);
  ASSERT_EQ(fl_safetensors_load_all(path, &m, q, FL_SAFETENSORS_NEED_CHECKSUM, l), 0);
  ASSERT_EQ(l->n, 3);
  ASSERT_STR_EQ(l->e[0].key, "model");
  ASSERT_STR_EQ(l->e[0].value, "mlp:4");
  ASSERT_STR_EQ(l->e[1].key, "b");
  ASSERT_STR_EQ(l->e[2].key, "a");
  ASSERT_STR_EQ(l->e[2].value, "x\"y");

  /* Too many entries, a value too long to list, a repeated key: refused
   * when listing (*l unchanged), while the plain load takes the file. */
  const char *many[2 * FL_SAFETENSORS_META_MAX + 1];
  char names[FL_SAFETENSORS_META_MAX][8];
  for (int i = 0; i < FL_SAFETENSORS_META_MAX; i++) {
    snprintf(names[i], sizeof names[i], "k%d", i);
    many[2 * i] = names[i];
    many[2 * i + 1] = "v";
  }
  many[2 * FL_SAFETENSORS_META_MAX] = NULL;
  ASSERT_EQ(fl_safetensors_save(path, &m, p, many), 0); /* with "model": one too many */
  ASSERT_EQ(fl_safetensors_load_all(path, &m, q, 0, l), FL_ETOOBIG);
  ASSERT_CONTAINS(fl_err_msg(), "more than 64 metadata entries");
  ASSERT_EQ(fl_safetensors_load(path, &m, q), 0);
  static char longv[FL_SAFETENSORS_META_VALUE + 44];
  memset(longv, 'v', sizeof longv - 1);
  longv[sizeof longv - 1] = '\0';
  const char *lm[] = {"long", longv, NULL};
  ASSERT_EQ(fl_safetensors_save(path, &m, p, lm), 0);
  ASSERT_EQ(fl_safetensors_load_all(path, &m, q, 0, l), FL_ETOOBIG);
  ASSERT_CONTAINS(fl_err_msg(), "metadata 'long' is 16427 bytes, a listed value holds 16383");
  ASSERT_EQ(fl_safetensors_load(path, &m, q), 0);
  char hdr[2048];
  snprintf(hdr, sizeof hdr, "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}");
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, p, 0), 0);
  ASSERT_EQ(fl_safetensors_load_all(path, &m, q, 0, l), FL_EFORMAT);
  ASSERT_CONTAINS(fl_err_msg(), "metadata key 'k' appears twice");
  ASSERT_EQ(l->n, 3); /* unchanged by the failed loads */
  ASSERT_STR_EQ(l->e[2].key, "a");
  free(l);
}

TEST(corrupt_files_rejected_params_unchanged) {
  fl_model_spec_t m;
  small_model(&m);
  float data[SMALL_P];
  fill(data, SMALL_P, 4);
  char hdr[2048];
  ent_t e[5];
  const char *path = tpath("bad.safetensors");

  /* Control: the forged-file helper makes a loadable file. */
  header_from(hdr, sizeof hdr, GOOD, 4);
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, data, sizeof data), 0);
  float ok[SMALL_P];
  ASSERT_EQ(fl_safetensors_load(path, &m, ok), 0);
  ASSERT_EQ(memcmp(ok, data, sizeof data), 0);

  /* Header length field larger than the file / than the limit. */
  ASSERT_EQ(write_forged(path, hdr, strlen(hdr) + sizeof data + 1, data, sizeof data), 0);
  EXPECT_LOAD_FAILS(path, FL_EFORMAT, "is larger than the file");
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)1 << 40, data, sizeof data), 0);
  EXPECT_LOAD_FAILS(path, FL_EFORMAT, "exceeds the limit");
  ASSERT_EQ(write_forged(path, hdr, UINT64_MAX - 1, data, sizeof data), 0);
  EXPECT_LOAD_FAILS(path, FL_EFORMAT, "exceeds the limit");

  /* Header not JSON. */
  ASSERT_EQ(write_forged(path, "hello, world", (uint64_t)-1, data, sizeof data), 0);
  EXPECT_LOAD_FAILS(path, FL_EFORMAT, "bad safetensors header at byte 0");

  /* Truncated data. */
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, data, sizeof data - 4), 0);
  EXPECT_LOAD_FAILS(path, FL_EFORMAT, "'layers.1.bias' data_offsets [96,104]");
  /* Trailing bytes no tensor claims. */
  float more[SMALL_P + 1] = {0};
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, more, sizeof more), 0);
  EXPECT_LOAD_FAILS(path, FL_EFORMAT, "data section is 108 bytes, the tensors use 104");

  /* Wrong dtype. */
  memcpy(e, GOOD, sizeof GOOD);
  e[2].dtype = "F16";
  header_from(hdr, sizeof hdr, e, 4);
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, data, sizeof data), 0);
  EXPECT_LOAD_FAILS(path, FL_EFORMAT, "'layers.1.weight' has dtype 'F16', expected F32");

  /* Wrong shape: transposed (same count), and a different rank. */
  memcpy(e, GOOD, sizeof GOOD);
  e[0].shape = "[3,4]";
  header_from(hdr, sizeof hdr, e, 4);
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, data, sizeof data), 0);
  EXPECT_LOAD_FAILS(path, FL_ESHAPE,
                    "'layers.0.weight' has shape [3,4], model 'mlp:4' expects [4,3]");
  memcpy(e, GOOD, sizeof GOOD);
  e[1].shape = "[4,1]";
  header_from(hdr, sizeof hdr, e, 4);
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, data, sizeof data), 0);
  EXPECT_LOAD_FAILS(path, FL_ESHAPE, "has shape [4,1]");

  /* Missing tensor. */
  header_from(hdr, sizeof hdr, GOOD, 3);
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, data, 96), 0);
  EXPECT_LOAD_FAILS(path, FL_ESHAPE, "missing tensor 'layers.1.bias'");

  /* Extra tensor (in data too, so only the name is wrong). */
  memcpy(e, GOOD, sizeof GOOD);
  e[4] = (ent_t){"layers.2.bias", "F32", "[1]", 104, 108};
  header_from(hdr, sizeof hdr, e, 5);
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, more, sizeof more), 0);
  EXPECT_LOAD_FAILS(path, FL_ESHAPE, "unexpected tensor 'layers.2.bias'");

  /* Duplicate tensor. */
  memcpy(e, GOOD, sizeof GOOD);
  e[4] = GOOD[1];
  header_from(hdr, sizeof hdr, e, 5);
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, data, sizeof data), 0);
  EXPECT_LOAD_FAILS(path, FL_EFORMAT, "'layers.0.bias' appears twice");

  /* Overlapping offsets (two tensors share bytes; the total still fits). */
  memcpy(e, GOOD, sizeof GOOD);
  e[1].b = 40;
  e[1].e = 56;
  header_from(hdr, sizeof hdr, e, 4);
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, data, sizeof data), 0);
  EXPECT_LOAD_FAILS(path, FL_EFORMAT, "'layers.0.weight' and 'layers.0.bias' overlap");

  /* Out-of-range, reversed and wrongly sized offsets. */
  memcpy(e, GOOD, sizeof GOOD);
  e[3].b = 100;
  e[3].e = 108;
  header_from(hdr, sizeof hdr, e, 4);
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, data, sizeof data), 0);
  EXPECT_LOAD_FAILS(path, FL_EFORMAT, "inside the 104-byte data section");
  memcpy(e, GOOD, sizeof GOOD);
  e[3].b = 104;
  e[3].e = 96;
  header_from(hdr, sizeof hdr, e, 4);
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, data, sizeof data), 0);
  EXPECT_LOAD_FAILS(path, FL_EFORMAT, "data_offsets [104,96]");
  memcpy(e, GOOD, sizeof GOOD);
  e[3].e = 100;
  header_from(hdr, sizeof hdr, e, 4);
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, data, sizeof data), 0);
  EXPECT_LOAD_FAILS(path, FL_EFORMAT, "must span 8 bytes");

  /* Empty, too short, missing, directory. */
  ASSERT_EQ(write_raw(path, "", 0), 0);
  EXPECT_LOAD_FAILS(path, FL_EFORMAT, "is 0 bytes, too short");
  ASSERT_EQ(write_raw(path, "\x10\0\0", 3), 0);
  EXPECT_LOAD_FAILS(path, FL_EFORMAT, "too short");
  EXPECT_LOAD_FAILS(tpath("does-not-exist.safetensors"), FL_ENOENT, "does not exist");
  EXPECT_LOAD_FAILS(fl_test_tmpdir(), FL_EINVAL, "is a directory, expected a regular file");
  EXPECT_LOAD_FAILS("/dev/zero", FL_EINVAL, "character device");

  /* A file saved for another model. */
  fl_model_spec_t big;
  ASSERT_EQ(fl_model_parse("mlp:5", 3, 2, &big), 0);
  float *bp = calloc(big.num_params, sizeof(float));
  ASSERT_EQ(fl_safetensors_save(path, &big, bp, NULL), 0);
  free(bp);
  EXPECT_LOAD_FAILS(path, FL_ESHAPE, "holds model 'mlp:5', expected 'mlp:4'");
}

/* A FIFO in place of the file (no writer will ever come) is refused at once
 * by every reader, not waited on in open(). alarm() turns a hang into a
 * loud failure instead of a ctest timeout. */
TEST(fifo_refused_without_blocking) {
  fl_model_spec_t m;
  small_model(&m);
  const char *fifo = tpath("fifo.safetensors");
  unlink(fifo);
  ASSERT_EQ(mkfifo(fifo, 0600), 0);
  alarm(10);
  double t0 = fl_test_now();
  EXPECT_LOAD_FAILS(fifo, FL_EINVAL, "is a FIFO (named pipe), expected a regular file");
  char buf[64];
  ASSERT_EQ(fl_safetensors_meta(fifo, "model", buf, sizeof buf), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "FIFO");
  double took = fl_test_now() - t0;
  alarm(0);
  ASSERT_DBL_OP(took, <, 1.0);
  unlink(fifo);
}

TEST(malformed_json_rejected) {
  fl_model_spec_t m;
  small_model(&m);
  float data[SMALL_P];
  fill(data, SMALL_P, 5);
  const char *path = tpath("json.safetensors");
  const char *T0 =
      "\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0,48]}";
  const char *REST =
      "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[48,64]},"
      "\"layers.1.weight\":{\"dtype\":\"F32\",\"shape\":[2,4],\"data_offsets\":[64,96]},"
      "\"layers.1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[96,104]}";
  /* Each case replaces the first tensor's entry (or the whole header). */
  const struct {
    const char *first; /* NULL: `whole` is the header */
    const char *whole;
    const char *needle;
  } cases[] = {
      {NULL, "", "expected '{'"},
      {NULL, "{", "bad safetensors header"},
      {NULL, "[]", "expected '{'"},
      {NULL, "{}", "missing tensor 'layers.0.weight'"},
      {NULL, "{\"a\":}", "unexpected tensor 'a'"},
      {NULL, "{\"layers.0.bias\":}", "expected '{'"},
      {NULL, "{\"__metadata__\":{\"k\":1}}", "metadata values must be strings"},
      {NULL, "{\"__metadata__\":{\"k\":\"v\",}}", "bad safetensors header"},
      {NULL, "{\"__metadata__\":{},\"__metadata__\":{}}", "two __metadata__"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0,48]},", NULL,
       "bad safetensors header"}, /* trailing comma → ",," */
      {"\"layers.0.weight\":{\"dtype\":{\"x\":1},\"shape\":[4,3],\"data_offsets\":[0,48]}", NULL,
       "expected '\"'"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[[4],3],\"data_offsets\":[0,48]}", NULL,
       "expected a non-negative integer"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[04,3],\"data_offsets\":[0,48]}", NULL,
       "leading zero"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[-4,3],\"data_offsets\":[0,48]}", NULL,
       "expected a non-negative integer"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[4.0,3],\"data_offsets\":[0,48]}", NULL,
       "expected ',' or ']'"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0,48e0]}", NULL,
       "expected ',' or ']'"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0,"
       "99999999999999999999]}",
       NULL, "overflows"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0,48,52]}", NULL,
       "too many array elements"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0]}", NULL,
       "data_offsets needs two integers"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,4,3],\"data_offsets\":[0,"
       "48]}",
       NULL, "too many array elements"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[4,3]}", NULL, "lacks data_offsets"},
      {"\"layers.0.weight\":{}", NULL, "empty tensor entry"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":["
       "0,48]}",
       NULL, "unknown or repeated field"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0,48],\"x\":"
       "\"y\"}",
       NULL, "unknown or repeated field"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\x01\",\"shape\":[4,3],\"data_offsets\":[0,48]}", NULL,
       "control character"},
      {"\"layers.0.weight\":{\"dtype\":\"F\\x32\",\"shape\":[4,3],\"data_offsets\":[0,48]}", NULL,
       "bad escape"},
      {"\"layers.0.weight\":{\"dtype\":\"F\\u00\",\"shape\":[4,3],\"data_offsets\":[0,48]}", NULL,
       "bad hex digit"},
      {"\"layers.0.weight\":{\"dtype\":\"\\udc00\",\"shape\":[4,3],\"data_offsets\":[0,48]}", NULL,
       "lone low surrogate"},
      {"\"layers.0.weight\":{\"dtype\":\"\\ud800x\",\"shape\":[4,3],\"data_offsets\":[0,48]}", NULL,
       "high surrogate"},
      {"\"layers.0.weight\\u0000\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0,48]}",
       NULL, "\\u0000"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0,48]} x", NULL,
       "expected ',' or '}'"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0,48]}}{", NULL,
       "data after the header object"},
      {"\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0,48]", NULL,
       "unknown or repeated field 'layers.0.bias'"},
      {"'layers.0.weight':{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0,48]}", NULL,
       "expected '\"'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char hdr[2048];
    if (cases[i].first)
      snprintf(hdr, sizeof hdr, "{%s,%s}", cases[i].first, REST);
    else
      snprintf(hdr, sizeof hdr, "%s", cases[i].whole);
    ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, data, sizeof data), 0);
    float p[SMALL_P], q[SMALL_P];
    fill(p, SMALL_P, 6);
    memcpy(q, p, sizeof p);
    int rc = fl_safetensors_load(path, &m, p);
    if (rc >= 0 || !strstr(fl_err_msg(), cases[i].needle))
      FL__FAIL("case %zu <%s>: rc %d, message \"%s\" lacks \"%s\"", i, hdr, rc, fl_err_msg(),
               cases[i].needle);
    ASSERT_EQ(memcmp(p, q, sizeof p), 0);
  }
  /* And the control: T0 + REST is fine. */
  char hdr[2048];
  snprintf(hdr, sizeof hdr, "{%s,%s}", T0, REST);
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, data, sizeof data), 0);
  float p[SMALL_P];
  ASSERT_EQ(fl_safetensors_load(path, &m, p), 0);
}

/* Random bit flips in a valid file: never a crash, a failed load never
 * touches the parameters, and with the checksum required no changed file
 * loads (CRC-32 catches every 1 to 3 flipped bits in a file this small). */
TEST(mutated_files_never_crash) {
  fl_model_spec_t m;
  small_model(&m);
  float p[SMALL_P];
  fill(p, SMALL_P, 7);
  const char *path = tpath("mut.safetensors"), *mpath = tpath("mut2.safetensors");
  const char *meta[] = {"k", "v", NULL};
  ASSERT_EQ(fl_safetensors_save(path, &m, p, meta), 0);
  uint8_t *orig = NULL;
  size_t len = 0;
  ASSERT_EQ(fl_file_read_all(path, 1 << 20, FL_FILE_REGULAR, &orig, &len), 0);
  uint8_t *b = malloc(len);
  fl_rng_t r;
  fl_rng_seed(&r, 8);
  int ok = 0, ok_need = 0, same = 0;
  fl_safetensors_meta_t *l = malloc(sizeof *l);
  for (int it = 0; it < 600; it++) {
    memcpy(b, orig, len);
    int nflip = 1 + (int)fl_rng_below(&r, 3);
    /* Mostly the length field and header, where the parser works. */
    size_t span = len - 4 * SMALL_P;
    for (int k = 0; k < nflip; k++)
      b[fl_rng_below(&r, span)] ^= (uint8_t)(1u << fl_rng_below(&r, 8));
    size_t cut = it % 5 == 0 ? fl_rng_below(&r, len) : len;
    ASSERT_EQ(write_raw(mpath, b, cut), 0);
    float q[SMALL_P], s[SMALL_P];
    fill(q, SMALL_P, 9);
    memcpy(s, q, sizeof q);
    int changed = cut < len || memcmp(b, orig, len) != 0;
    same += !changed;
    int rc = fl_safetensors_load(mpath, &m, q);
    if (rc == 0) {
      ok++;
    } else {
      ASSERT_TRUE(fl_err_msg()[0] != '\0');
      ASSERT_EQ(memcmp(q, s, sizeof q), 0);
    }
    fill(q, SMALL_P, 9);
    rc = fl_safetensors_load_all(mpath, &m, q, FL_SAFETENSORS_NEED_CHECKSUM, l);
    if (rc == 0 && changed) FL__FAIL("mutation %d loaded despite the checksum", it);
    ok_need += rc == 0;
    if (rc != 0) ASSERT_EQ(memcmp(q, s, sizeof q), 0);
    char mb[64];
    (void)fl_safetensors_meta(mpath, "k", mb, sizeof mb);
  }
  /* The plain load takes a file whose checksum key itself was hit: it is
   * then a file without a checksum, as another tool's. */
  fprintf(stderr,
          "  of 600 mutated files, %d still loaded, %d with the checksum required (%d were "
          "flipped back unchanged)\n",
          ok, ok_need, same);
  ASSERT_EQ(ok_need, same);
  free(l);
  free(b);
  free(orig);
}

static int count_tmp_files(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  if (!d) return -1;
  for (struct dirent *e; (e = readdir(d));)
    if (strstr(e->d_name, ".tmp.")) n++;
  closedir(d);
  return n;
}

TEST(atomic_write_leaves_no_tmp_files) {
  fl_model_spec_t m;
  small_model(&m);
  float p[SMALL_P], q[SMALL_P];
  char dir[600];
  snprintf(dir, sizeof dir, "%s/atomic/a/b", fl_test_tmpdir());
  ASSERT_EQ(fl_file_mkdirs(dir), 0);
  ASSERT_EQ(fl_file_mkdirs(dir), 0); /* exists already */
  char path[700];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  for (int i = 0; i < 3; i++) {
    fill(p, SMALL_P, 10 + (uint64_t)i);
    ASSERT_EQ(fl_safetensors_save(path, &m, p, NULL), 0);
    ASSERT_EQ(fl_safetensors_load(path, &m, q), 0);
    ASSERT_EQ(memcmp(p, q, sizeof p), 0); /* replaced, not appended */
  }
  ASSERT_EQ(count_tmp_files(dir), 0);

  /* A failed write (directory missing) reports the path and leaves nothing. */
  char bad[700];
  snprintf(bad, sizeof bad, "%s/no/such/dir/model.safetensors", fl_test_tmpdir());
  ASSERT_EQ(fl_safetensors_save(bad, &m, p, NULL), FL_EIO);
  ASSERT_CONTAINS(fl_err_msg(), "no/such/dir/model.safetensors.tmp.");
  /* A failed rename (target is a non-empty directory) cleans up its tmp file. */
  char occupied[700], inner[800];
  snprintf(occupied, sizeof occupied, "%s/occupied", dir);
  snprintf(inner, sizeof inner, "%s/x", occupied);
  ASSERT_EQ(fl_file_mkdirs(inner), 0);
  ASSERT_EQ(fl_file_write_atomic(occupied, "abc", 3), FL_EIO);
  ASSERT_CONTAINS(fl_err_msg(), "cannot rename");
  ASSERT_EQ(count_tmp_files(dir), 0);
}

TEST(file_read_all_limits) {
  const char *path = tpath("ra.txt");
  ASSERT_EQ(fl_file_write_atomic(path, "hello", 5), 0);
  uint8_t *b = NULL;
  size_t n = 0;
  ASSERT_EQ(fl_file_read_all(path, 5, FL_FILE_REGULAR, &b, &n), 0);
  ASSERT_EQ(n, 5);
  ASSERT_STR_EQ((char *)b, "hello");
  free(b);
  ASSERT_EQ(fl_file_read_all(path, 4, FL_FILE_REGULAR, &b, &n), FL_ETOOBIG);
  ASSERT_TRUE(b == NULL);
  ASSERT_EQ(fl_file_write_atomic(path, "", 0), 0);
  ASSERT_EQ(fl_file_read_all(path, 0, FL_FILE_REGULAR, &b, &n), 0);
  ASSERT_EQ(n, 0);
  ASSERT_EQ(b[0], 0);
  free(b);
  ASSERT_EQ(fl_file_read_all(tpath("absent.txt"), 10, FL_FILE_REGULAR, &b, &n), FL_ENOENT);
  /* A file whose size stat can't tell (procfs reports 0): the growth path. */
  ASSERT_EQ(fl_file_read_all("/proc/self/maps", 1 << 24, FL_FILE_REGULAR, &b, &n), 0);
  ASSERT_GT(n, 0);
  ASSERT_EQ(strlen((char *)b), n);
  free(b);
  ASSERT_EQ(fl_file_read_all("/proc/self/maps", 16, FL_FILE_REGULAR, &b, &n), FL_ETOOBIG);
  ASSERT_EQ(fl_file_read_all(fl_test_tmpdir(), 10, FL_FILE_REGULAR, &b, &n), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "is a directory");
  /* An endless device is refused before any read, whatever the limit. */
  ASSERT_EQ(fl_file_read_all("/dev/zero", (size_t)1 << 30, FL_FILE_REGULAR, &b, &n), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "character device");
  ASSERT_EQ(fl_file_read_all("/dev/zero", 16, FL_FILE_STREAM_OK, &b, &n), FL_EINVAL);
  /* A FIFO without a writer: refused at once as a regular file (open()
   * must not wait for a writer), read up to the limit as a stream. */
  const char *fifo = tpath("fifo");
  unlink(fifo);
  ASSERT_EQ(mkfifo(fifo, 0600), 0);
  ASSERT_EQ(fl_file_read_all(fifo, 10, FL_FILE_REGULAR, &b, &n), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "FIFO");
  pid_t pid = fork();
  ASSERT_TRUE(pid >= 0);
  if (pid == 0) { /* the writer: 100 bytes, more than the limit below */
    int w = open(fifo, O_WRONLY);
    char junk[100] = {0};
    ssize_t put = w >= 0 ? write(w, junk, sizeof junk) : -1;
    _exit(put == (ssize_t)sizeof junk ? 0 : 1);
  }
  ASSERT_EQ(fl_file_read_all(fifo, 10, FL_FILE_STREAM_OK, &b, &n), FL_ETOOBIG);
  waitpid(pid, NULL, 0);
  pid = fork();
  ASSERT_TRUE(pid >= 0);
  if (pid == 0) {
    int w = open(fifo, O_WRONLY);
    ssize_t put = w >= 0 ? write(w, "abc", 3) : -1;
    _exit(put == 3 ? 0 : 1);
  }
  ASSERT_EQ(fl_file_read_all(fifo, 10, FL_FILE_STREAM_OK, &b, &n), 0);
  ASSERT_EQ(n, 3);
  ASSERT_STR_EQ((char *)b, "abc");
  free(b);
  waitpid(pid, NULL, 0);
  unlink(fifo);

  /* mkdirs over a file fails. */
  ASSERT_EQ(fl_file_write_atomic(path, "x", 1), 0);
  char sub[700];
  snprintf(sub, sizeof sub, "%s/sub", path);
  ASSERT_LT(fl_file_mkdirs(sub), 0);
  ASSERT_LT(fl_file_mkdirs(path), 0);
}

/* Interop: plain json + numpy reads what we wrote. */
/* Any named float32 tensors (a model exported by PyTorch, for --init):
 * read in data order whatever the header's key order; a custom model's
 * file round-trips bit for bit; wrong dtypes, bad names and gaps are
 * refused with the tensor named. */
TEST(read_any_tensors) {
  /* Keys out of data order; a 4-D conv weight, a scalar. */
  float data[2 * 1 * 2 * 2 + 1 + 2];
  for (size_t i = 0; i < sizeof data / sizeof data[0]; i++)
    data[i] = (float)i * 0.5f - 1;
  const char *path = tpath("any.safetensors");
  const char *hdr =
      "{\"fc.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[36,44]},"
      "\"conv.weight\":{\"dtype\":\"F32\",\"shape\":[2,1,2,2],\"data_offsets\":[0,32]},"
      "\"__metadata__\":{\"format\":\"pt\"},"
      "\"scale\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[32,36]}}";
  ASSERT_EQ(write_forged(path, hdr, (uint64_t)-1, data, sizeof data), 0);
  fl_layout_t *l = NULL;
  float *w = NULL;
  fl_safetensors_meta_t meta;
  ASSERT_EQ(fl_safetensors_read(path, 0, &l, &w, &meta), 0);
  ASSERT_EQ(l->n, 3);
  ASSERT_STR_EQ(l->t[0].name, "conv.weight");
  ASSERT_EQ(l->t[0].ndim, 4);
  ASSERT_EQ(l->t[0].shape[3], 2);
  ASSERT_STR_EQ(l->t[1].name, "scale");
  ASSERT_EQ(l->t[1].ndim, 0);
  ASSERT_STR_EQ(l->t[2].name, "fc.bias");
  ASSERT_EQ(l->t[2].offset, 9);
  ASSERT_EQ(l->num_params, 11);
  ASSERT_EQ(memcmp(w, data, sizeof data), 0);
  ASSERT_EQ(meta.n, 1);
  ASSERT_STR_EQ(meta.e[0].key, "format");

  /* Saved by fedlr as a custom model and loaded back, checksum and all. */
  fl_model_spec_t m;
  ASSERT_EQ(fl_model_custom(l, &m), 0);
  const char *p2 = tpath("custom.safetensors");
  ASSERT_EQ(fl_safetensors_save(p2, &m, w, NULL), 0);
  float back[11] = {0};
  ASSERT_EQ(fl_safetensors_load_all(p2, &m, back, FL_SAFETENSORS_NEED_CHECKSUM, NULL), 0);
  ASSERT_EQ(memcmp(back, data, sizeof data), 0);
  char spec[32];
  ASSERT_EQ(fl_safetensors_meta(p2, "model", spec, sizeof spec), 0);
  ASSERT_STR_EQ(spec, "custom");
  fl_layout_t *l2 = NULL;
  float *w2 = NULL;
  ASSERT_EQ(fl_safetensors_read(p2, FL_SAFETENSORS_NEED_CHECKSUM, &l2, &w2, NULL), 0);
  ASSERT_TRUE(fl_layout_equal(l, l2));
  ASSERT_EQ(memcmp(w2, data, sizeof data), 0);
  free(w2);
  fl_layout_destroy(&l2);
  free(w);
  fl_layout_destroy(&l);

  const struct {
    const char *hdr, *want;
  } bad[] = {
      {"{\"steps\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
       "\"w\":{\"dtype\":\"F32\",\"shape\":[9],\"data_offsets\":[8,44]}}",
       "tensor 'steps' is I64: fedlr aggregates float32 tensors only"},
      {"{\"w\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,20]},"
       "\"v\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[24,44]}}",
       "tensor 'v' [5] has data_offsets [24,44]"},
      {"{\"a b\":{\"dtype\":\"F32\",\"shape\":[11],\"data_offsets\":[0,44]}}",
       "has byte 0x20 at 1"},
      {"{\"w\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
       "\"v\":{\"dtype\":\"F32\",\"shape\":[11],\"data_offsets\":[0,44]}}",
       "dimensions are 1 to"},
      {"{\"__metadata__\":{}}", "holds no tensors"},
      {"{\"w\":{\"dtype\":\"F32\",\"shape\":[10],\"data_offsets\":[0,40]}}",
       "data section is 44 bytes, the tensors use 40"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ASSERT_EQ(write_forged(path, bad[i].hdr, (uint64_t)-1, data, sizeof data), 0);
    l = (fl_layout_t *)1;
    w = (float *)1;
    ASSERT_EQ(fl_safetensors_read(path, 0, &l, &w, NULL), FL_EFORMAT);
    ASSERT_CONTAINS(fl_err_msg(), bad[i].want);
    ASSERT_TRUE(l == NULL && w == NULL);
  }
}

TEST(python_numpy_reads_file) {
  /* The first python3 on PATH may be a virtualenv or pyenv without numpy
   * while the system one has it. */
  const char *py = NULL, *cands[] = {"python3", "/usr/bin/python3"};
  for (size_t i = 0; i < 2 && !py; i++) {
    char probe[128];
    snprintf(probe, sizeof probe, "%s -c 'import numpy' >/dev/null 2>&1", cands[i]);
    if (system(probe) == 0) py = cands[i];
  }
  if (!py) SKIP("no python3 with numpy (python3-numpy): the interop check cannot run");
  fl_model_spec_t m;
  small_model(&m);
  float p[SMALL_P];
  fill(p, SMALL_P, 11);
  const char *path = tpath("py.safetensors"), *script = tpath("check.py");
  const char *meta[] = {"round", "7", NULL};
  ASSERT_EQ(fl_safetensors_save(path, &m, p, meta), 0);
  char src[2048];
  snprintf(src, sizeof src,
           "import json, struct, sys\n"
           "import numpy as np\n"
           "b = open(sys.argv[1], 'rb').read()\n"
           "n = struct.unpack('<Q', b[:8])[0]\n"
           "h = json.loads(b[8:8 + n])\n"
           "import zlib\n"
           "meta = h['__metadata__']\n"
           "crc = meta.pop('fedlr_crc32')\n"
           "assert meta == {'model': 'mlp:4', 'round': '7'}, meta\n"
           "at = b.index(b'\"fedlr_crc32\":\"') + len('\"fedlr_crc32\":\"')\n"
           "assert crc == b[at:at + 8].decode()\n"
           "want = '%%08x' %% zlib.crc32(b[:at] + b'00000000' + b[at + 8:])\n"
           "assert crc == want, (crc, want)\n"
           "t = h['layers.1.weight']\n"
           "assert t['dtype'] == 'F32' and t['shape'] == [2, 4], t\n"
           "s, e = t['data_offsets']\n"
           "w = np.frombuffer(b[8 + n + s:8 + n + e], dtype='<f4').reshape(t['shape'])\n"
           "assert w[1, 2] == np.float32(%.9g), (w[1, 2], %.9g)\n"
           "assert sorted(k for k in h if k != '__metadata__') == sorted(\n"
           "  ['layers.0.weight', 'layers.0.bias', 'layers.1.weight', 'layers.1.bias'])\n",
           (double)p[16 + 1 * 4 + 2], (double)p[16 + 1 * 4 + 2]);
  ASSERT_EQ(fl_file_write_atomic(script, src, strlen(src)), 0);
  char cmd[1500];
  snprintf(cmd, sizeof cmd, "%s '%s' '%s'", py, script, path);
  ASSERT_EQ(system(cmd), 0);
}

FL_TEST_MAIN()
