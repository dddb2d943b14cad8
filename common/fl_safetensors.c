#include "fl_safetensors.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "fl_error.h"
#include "fl_file.h"

/* Tensor data is copied between the file and the parameter buffer as raw
 * bytes, and the format is little-endian float32. */
_Static_assert(sizeof(float) == 4, "fl_safetensors needs 32-bit floats");
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fl_safetensors assumes a little-endian host"
#endif

#define ST_MAX_DIMS FL_LAYOUT_MAX_DIMS /* shape entries accepted from a header */
#define ST_NAME_MAX 256                /* longest key we keep; longer keys match nothing */

/* ---- checksum ---------------------------------------------------------- */

/* crc = CRC-32 of the bytes before, continued over p[0..n) (zlib's crc32,
 * the checksum of FL_SAFETENSORS_CHECKSUM_KEY; crc32_z takes a size_t). */
static uint32_t st_crc(uint32_t crc, const void *p, size_t n) {
  return (uint32_t)crc32_z(crc, p, n);
}

/* The placeholder the checksum is computed with, and its written form. */
#define ST_CRC_DIGITS 8
static const char st_crc_zero[ST_CRC_DIGITS + 1] = "00000000";

static void st_crc_format(uint32_t crc, uint8_t out[ST_CRC_DIGITS]) {
  static const char hex[] = "0123456789abcdef";
  for (int i = ST_CRC_DIGITS - 1; i >= 0; i--, crc >>= 4)
    out[i] = (uint8_t)hex[crc & 15];
}

/* ---- writer ------------------------------------------------------------ */

/* A growable string that stops growing at FL_SAFETENSORS_MAX_HEADER. */
typedef struct {
  char *p;
  size_t len, cap;
  int err;
} st_sb_t;

static void st_sb_append(st_sb_t *b, const char *s, size_t n) {
  if (b->err) return;
  if (n > FL_SAFETENSORS_MAX_HEADER - b->len) {
    b->err = FL_ETOOBIG;
    return;
  }
  if (b->len + n + 1 > b->cap) {
    size_t ncap = b->cap ? b->cap : 1024;
    while (ncap < b->len + n + 1)
      ncap *= 2;
    char *np = realloc(b->p, ncap);
    if (!np) {
      b->err = FL_ENOMEM;
      return;
    }
    b->p = np;
    b->cap = ncap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void st_sb_printf(st_sb_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void st_sb_printf(st_sb_t *b, const char *fmt, ...) {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  /* Only used for fixed-size numeric fragments, which always fit. */
  if (n < 0 || (size_t)n >= sizeof tmp) {
    b->err = FL_EINVAL;
    return;
  }
  st_sb_append(b, tmp, (size_t)n);
}

static void st_sb_json_string(st_sb_t *b, const char *s) {
  st_sb_append(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') {
      char esc[2] = {'\\', (char)*p};
      st_sb_append(b, esc, 2);
    } else if (*p < 0x20) {
      st_sb_printf(b, "\\u%04x", *p);
    } else {
      st_sb_append(b, (const char *)p, 1);
    }
  }
  st_sb_append(b, "\"", 1);
}

static int st_check_meta(const char *const *meta) {
  for (size_t i = 0; meta && meta[i]; i += 2) {
    if (!meta[i + 1]) return fl_err_set(FL_EINVAL, "metadata key '%s' has no value", meta[i]);
    /* "model" is always written from the spec, so a caller's copy could only
     * contradict it. Duplicates would make readers disagree on the value. */
    if (!strcmp(meta[i], "model"))
      return fl_err_set(FL_EINVAL, "metadata key 'model' is reserved (it is the model spec)");
    if (!strcmp(meta[i], FL_SAFETENSORS_CHECKSUM_KEY))
      return fl_err_set(FL_EINVAL, "metadata key '%s' is reserved (it is the file's checksum)",
                        meta[i]);
    for (size_t j = 0; j < i; j += 2)
      if (!strcmp(meta[i], meta[j]))
        return fl_err_set(FL_EINVAL, "metadata key '%s' given twice", meta[i]);
  }
  return 0;
}

int fl_safetensors_save(const char *path, const fl_model_spec_t *m, const float *params,
                        const char *const *meta) {
  st_sb_t h = {0};
  uint8_t *file = NULL;
  size_t nt = fl_model_num_tensors(m), off = 0, total = 0, crc_at;
  int rc = st_check_meta(meta);
  if (rc < 0) goto out;

  st_sb_append(&h, "{\"__metadata__\":{\"model\":", 25);
  st_sb_json_string(&h, m->spec);
  for (size_t i = 0; meta && meta[i]; i += 2) {
    st_sb_append(&h, ",", 1);
    st_sb_json_string(&h, meta[i]);
    st_sb_append(&h, ":", 1);
    st_sb_json_string(&h, meta[i + 1]);
  }
  /* The checksum goes in last, as the placeholder; its digits are filled in
   * once the whole file is built. */
  static const char crc_key[] = ",\"" FL_SAFETENSORS_CHECKSUM_KEY "\":\"";
  st_sb_append(&h, crc_key, sizeof crc_key - 1);
  crc_at = h.len;
  st_sb_append(&h, st_crc_zero, ST_CRC_DIGITS);
  st_sb_append(&h, "\"}", 2);
  for (size_t i = 0; i < nt; i++) {
    fl_tensor_info_t t;
    fl_model_tensor(m, i, &t);
    st_sb_append(&h, ",", 1);
    st_sb_json_string(&h, t.name);
    st_sb_printf(&h, ":{\"dtype\":\"F32\",\"shape\":[");
    for (uint32_t d = 0; d < t.ndim; d++)
      st_sb_printf(&h, "%s%u", d ? "," : "", t.shape[d]);
    st_sb_append(&h, "],", 2);
    st_sb_printf(&h, "\"data_offsets\":[%zu,%zu]}", off, off + 4 * t.count);
    off += 4 * t.count;
  }
  st_sb_append(&h, "}", 1);
  /* The data section must start 8-byte aligned: pad the JSON with spaces. */
  while (!h.err && h.len % 8)
    st_sb_append(&h, " ", 1);
  if (h.err) {
    rc = h.err == FL_ETOOBIG
             ? fl_err_set(FL_ETOOBIG, "'%s': metadata makes the header exceed %u bytes", path,
                          FL_SAFETENSORS_MAX_HEADER)
             : fl_err_set(h.err, "'%s': cannot build the header", path);
    goto out;
  }

  total = 8 + h.len + off;
  file = malloc(total);
  if (!file) {
    rc = fl_err_set(FL_ENOMEM, "cannot allocate %zu bytes for '%s'", total, path);
    goto out;
  }
  for (int k = 0; k < 8; k++)
    file[k] = (uint8_t)((uint64_t)h.len >> (8 * k));
  memcpy(file + 8, h.p, h.len);
  /* Tensors are written in model order, which is the parameter layout: the
   * data section is the parameter buffer verbatim. */
  memcpy(file + 8 + h.len, params, off);
  st_crc_format(st_crc(0, file, total), file + 8 + crc_at);
  rc = fl_file_write_atomic(path, file, total);
out:
  free(h.p);
  free(file);
  return rc;
}

/* ---- header JSON parser ------------------------------------------------ */

/* A strict parser for exactly the safetensors header shape:
 *   { "__metadata__": {string: string, ...},
 *     name: {"dtype": string, "shape": [uint,...], "data_offsets": [uint,uint]}, ... }
 * Nesting is fixed by that shape (at most 3 levels), so it needs no recursion
 * and no general JSON value type. Anything else is an error. */
typedef struct {
  const char *path;
  const char *start, *p, *end;
} st_json_t;

typedef struct {
  int seen;
  char *name; /* reading any tensors (st_parse_t.any): its name, owned */
  char dtype[16];
  size_t dtype_len;
  uint64_t shape[ST_MAX_DIMS];
  size_t ndim;
  uint64_t off[2];
} st_entry_t;

typedef struct {
  const fl_model_spec_t *m; /* NULL: don't collect tensors (nor check "model") */
  int any;                  /* collect every tensor, whatever its name (fl_safetensors_read) */
  st_entry_t *ent;          /* (n_ent) m's tensors in model order, or any in file order */
  size_t n_ent, cap_ent;
  const char *want_key; /* NULL: don't look up metadata */
  char *want_buf;
  size_t want_cap;
  int want_found;
  fl_safetensors_meta_t *list; /* NULL: don't list metadata (never with want_key) */
  int have_crc;                /* the checksum entry was found: */
  size_t crc_at;               /* offset of its digits in the header */
  uint32_t crc_want;           /* and their value */
} st_parse_t;

static int st_syntax(const st_json_t *js, const char *what) {
  return fl_err_set(FL_EFORMAT, "'%s': bad safetensors header at byte %zu: %s", js->path,
                    (size_t)(js->p - js->start), what);
}

static void st_ws(st_json_t *js) {
  while (js->p < js->end && (*js->p == ' ' || *js->p == '\t' || *js->p == '\n' || *js->p == '\r'))
    js->p++;
}

static int st_expect(st_json_t *js, char c) {
  st_ws(js);
  if (js->p >= js->end || *js->p != c) {
    char what[16];
    snprintf(what, sizeof what, "expected '%c'", c);
    return st_syntax(js, what);
  }
  js->p++;
  return 0;
}

/* Next non-space character is ',' (returns 1, consumed) or `close`
 * (returns 0, consumed); anything else is an error. */
static int st_next(st_json_t *js, char close) {
  st_ws(js);
  if (js->p < js->end && *js->p == ',') {
    js->p++;
    return 1;
  }
  if (js->p < js->end && *js->p == close) {
    js->p++;
    return 0;
  }
  return st_syntax(js, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
}

/* Value of hex digit c, or -1. */
static int st_hexdigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int st_hex4(st_json_t *js, unsigned *v) {
  *v = 0;
  if (js->end - js->p < 4) return st_syntax(js, "truncated \\u escape");
  for (int i = 0; i < 4; i++) {
    int d = st_hexdigit(*js->p++);
    if (d < 0) return st_syntax(js, "bad hex digit in \\u escape");
    *v = *v << 4 | (unsigned)d;
  }
  return 0;
}

static void st_put(char *out, size_t cap, size_t *n, char c) {
  if (out && *n + 1 < cap) out[*n] = c;
  (*n)++;
}

/* Parses a JSON string. Decodes into out (NUL-terminated, truncated to
 * cap-1 bytes) when out is not NULL; *len is the full decoded length, so the
 * caller can tell truncation. */
static int st_string(st_json_t *js, char *out, size_t cap, size_t *len) {
  size_t n = 0;
  int rc = st_expect(js, '"');
  if (rc < 0) return rc;
  for (;;) {
    if (js->p >= js->end) return st_syntax(js, "unterminated string");
    unsigned char c = (unsigned char)*js->p++;
    if (c == '"') break;
    if (c < 0x20) return st_syntax(js, "control character in string");
    if (c != '\\') {
      st_put(out, cap, &n, (char)c);
      continue;
    }
    if (js->p >= js->end) return st_syntax(js, "unterminated string");
    c = (unsigned char)*js->p++;
    unsigned cp;
    switch (c) {
    case '"':
    case '\\':
    case '/': st_put(out, cap, &n, (char)c); continue;
    case 'b': st_put(out, cap, &n, '\b'); continue;
    case 'f': st_put(out, cap, &n, '\f'); continue;
    case 'n': st_put(out, cap, &n, '\n'); continue;
    case 'r': st_put(out, cap, &n, '\r'); continue;
    case 't': st_put(out, cap, &n, '\t'); continue;
    case 'u': break;
    default: return st_syntax(js, "bad escape in string");
    }
    if ((rc = st_hex4(js, &cp)) < 0) return rc;
    if (cp >= 0xdc00 && cp <= 0xdfff) return st_syntax(js, "lone low surrogate");
    if (cp >= 0xd800 && cp <= 0xdbff) {
      unsigned lo;
      if (js->end - js->p < 2 || js->p[0] != '\\' || js->p[1] != 'u')
        return st_syntax(js, "high surrogate without low surrogate");
      js->p += 2;
      if ((rc = st_hex4(js, &lo)) < 0) return rc;
      if (lo < 0xdc00 || lo > 0xdfff) return st_syntax(js, "high surrogate without low surrogate");
      cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    /* Keys and values are used as C strings: an embedded NUL would make two
     * different JSON strings compare equal. */
    if (cp == 0) return st_syntax(js, "\\u0000 in string");
    if (cp < 0x80) {
      st_put(out, cap, &n, (char)cp);
    } else if (cp < 0x800) {
      st_put(out, cap, &n, (char)(0xc0 | cp >> 6));
      st_put(out, cap, &n, (char)(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      st_put(out, cap, &n, (char)(0xe0 | cp >> 12));
      st_put(out, cap, &n, (char)(0x80 | ((cp >> 6) & 0x3f)));
      st_put(out, cap, &n, (char)(0x80 | (cp & 0x3f)));
    } else {
      st_put(out, cap, &n, (char)(0xf0 | cp >> 18));
      st_put(out, cap, &n, (char)(0x80 | ((cp >> 12) & 0x3f)));
      st_put(out, cap, &n, (char)(0x80 | ((cp >> 6) & 0x3f)));
      st_put(out, cap, &n, (char)(0x80 | (cp & 0x3f)));
    }
  }
  if (out && cap) out[n < cap ? n : cap - 1] = '\0';
  *len = n;
  return 0;
}

/* A non-negative JSON integer (no sign, fraction or exponent). */
static int st_uint(st_json_t *js, uint64_t *v) {
  st_ws(js);
  if (js->p >= js->end || *js->p < '0' || *js->p > '9')
    return st_syntax(js, "expected a non-negative integer");
  if (*js->p == '0' && js->end - js->p > 1 && js->p[1] >= '0' && js->p[1] <= '9')
    return st_syntax(js, "leading zero in integer");
  uint64_t x = 0;
  while (js->p < js->end && *js->p >= '0' && *js->p <= '9') {
    unsigned d = (unsigned)(*js->p - '0');
    if (x > (UINT64_MAX - d) / 10) return st_syntax(js, "integer overflows 64 bits");
    x = x * 10 + d;
    js->p++;
  }
  *v = x;
  return 0;
}

static int st_uint_array(st_json_t *js, uint64_t *out, size_t maxn, size_t *n) {
  int rc = st_expect(js, '[');
  if (rc < 0) return rc;
  *n = 0;
  st_ws(js);
  if (js->p < js->end && *js->p == ']') {
    js->p++;
    return 0;
  }
  do {
    if (*n == maxn) return st_syntax(js, "too many array elements");
    if ((rc = st_uint(js, &out[(*n)++])) < 0) return rc;
  } while ((rc = st_next(js, ']')) == 1);
  return rc;
}

/* The checksum entry's value, at js->p (its opening quote): exactly 8 hex
 * digits written as they are (no escapes), since the checksum is computed
 * over the raw bytes with those 8 read as '0'. */
static int st_crc_value(st_json_t *js, st_parse_t *ps) {
  const char *v = js->p + 1;
  uint32_t x = 0;
  int ok = js->end - v > ST_CRC_DIGITS && v[ST_CRC_DIGITS] == '"';
  for (int i = 0; ok && i < ST_CRC_DIGITS; i++) {
    int d = st_hexdigit(v[i]);
    ok = d >= 0;
    x = x << 4 | (uint32_t)(ok ? d : 0);
  }
  if (!ok)
    return fl_err_set(FL_EFORMAT, "'%s': metadata '%s' must be a CRC-32 as %d hex digits", js->path,
                      FL_SAFETENSORS_CHECKSUM_KEY, ST_CRC_DIGITS);
  if (ps->have_crc)
    return fl_err_set(FL_EFORMAT, "'%s': metadata key '%s' appears twice", js->path,
                      FL_SAFETENSORS_CHECKSUM_KEY);
  ps->have_crc = 1;
  ps->crc_at = (size_t)(v - js->start);
  ps->crc_want = x;
  return 0;
}

/* One metadata entry `key` (klen bytes, truncated to ST_NAME_MAX - 1), its
 * value's opening quote at js->p: decodes the value where it is wanted (the
 * looked-up key, the list, or the model check) and skips it otherwise. */
static int st_meta_entry(st_json_t *js, st_parse_t *ps, const char *key, size_t klen) {
  char spec[FL_MODEL_SPEC_MAX];
  char *dst = NULL;
  size_t cap = 0, vlen;
  fl_safetensors_meta_t *l = ps->list;
  int whole = klen < ST_NAME_MAX, listed = 0, rc;
  int is_crc = whole && !strcmp(key, FL_SAFETENSORS_CHECKSUM_KEY);
  int is_model = whole && ps->m && !strcmp(key, "model");
  int want = whole && ps->want_key && !strcmp(key, ps->want_key);
  if (is_crc && (rc = st_crc_value(js, ps)) < 0) return rc;
  if (want) {
    if (ps->want_found)
      return fl_err_set(FL_EFORMAT, "'%s': metadata key '%s' appears twice", js->path, key);
    dst = ps->want_buf;
    cap = ps->want_cap;
  } else if (l && !is_crc) {
    if (l->n == FL_SAFETENSORS_META_MAX)
      return fl_err_set(FL_ETOOBIG, "'%s': more than %d metadata entries", js->path,
                        FL_SAFETENSORS_META_MAX);
    if (klen >= sizeof l->e[0].key)
      return fl_err_set(FL_ETOOBIG, "'%s': metadata key '%.64s...' is longer than %zu bytes",
                        js->path, key, sizeof l->e[0].key - 1);
    for (size_t i = 0; i < l->n; i++)
      if (!strcmp(l->e[i].key, key))
        return fl_err_set(FL_EFORMAT, "'%s': metadata key '%s' appears twice", js->path, key);
    memcpy(l->e[l->n].key, key, klen + 1);
    listed = 1;
    dst = l->e[l->n].value;
    cap = sizeof l->e[0].value;
  } else if (is_model) {
    dst = spec;
    cap = sizeof spec;
  }
  if ((rc = st_string(js, dst, cap, &vlen)) < 0) return rc;
  if (is_model && (vlen >= cap || strcmp(dst, ps->m->spec) != 0))
    return fl_err_set(FL_ESHAPE, "'%s' holds model '%.*s', expected '%s'", js->path,
                      FL_MODEL_SPEC_MAX, dst, ps->m->spec);
  if (dst && vlen >= cap)
    return fl_err_set(want ? FL_ERANGE : FL_ETOOBIG,
                      "'%s': metadata '%s' is %zu bytes, %s holds %zu", js->path, key, vlen,
                      want ? "the buffer" : "a listed value", cap ? cap - 1 : 0);
  if (want) ps->want_found = 1;
  if (listed) l->n++;
  return 0;
}

static int st_metadata(st_json_t *js, st_parse_t *ps) {
  char key[ST_NAME_MAX];
  size_t klen;
  int rc = st_expect(js, '{');
  if (rc < 0) return rc;
  st_ws(js);
  if (js->p < js->end && *js->p == '}') {
    js->p++;
    return 0;
  }
  do {
    if ((rc = st_string(js, key, sizeof key, &klen)) < 0) return rc;
    if ((rc = st_expect(js, ':')) < 0) return rc;
    st_ws(js);
    if (js->p >= js->end || *js->p != '"') return st_syntax(js, "metadata values must be strings");
    if ((rc = st_meta_entry(js, ps, key, klen)) < 0) return rc;
  } while ((rc = st_next(js, '}')) == 1);
  return rc;
}

static int st_tensor(st_json_t *js, const char *name, st_entry_t *e) {
  char key[32];
  size_t klen, n;
  int have_dtype = 0, have_shape = 0, have_off = 0;
  int rc = st_expect(js, '{');
  if (rc < 0) return rc;
  st_ws(js);
  if (js->p < js->end && *js->p == '}') return st_syntax(js, "empty tensor entry");
  do {
    if ((rc = st_string(js, key, sizeof key, &klen)) < 0) return rc;
    if ((rc = st_expect(js, ':')) < 0) return rc;
    if (klen < sizeof key && !strcmp(key, "dtype") && !have_dtype) {
      have_dtype = 1;
      rc = st_string(js, e->dtype, sizeof e->dtype, &e->dtype_len);
    } else if (klen < sizeof key && !strcmp(key, "shape") && !have_shape) {
      have_shape = 1;
      rc = st_uint_array(js, e->shape, ST_MAX_DIMS, &e->ndim);
    } else if (klen < sizeof key && !strcmp(key, "data_offsets") && !have_off) {
      have_off = 1;
      rc = st_uint_array(js, e->off, 2, &n);
      if (rc == 0 && n != 2) return st_syntax(js, "data_offsets needs two integers");
    } else {
      return fl_err_set(FL_EFORMAT, "'%s': tensor '%.64s' has an unknown or repeated field '%s'",
                        js->path, name, key);
    }
    if (rc < 0) return rc;
  } while ((rc = st_next(js, '}')) == 1);
  if (rc < 0) return rc;
  if (!have_dtype || !have_shape || !have_off)
    return fl_err_set(FL_EFORMAT, "'%s': tensor '%s' lacks %s", js->path, name,
                      !have_dtype   ? "dtype"
                      : !have_shape ? "shape"
                                    : "data_offsets");
  return 0;
}

/* Finds model tensor `name`; -1 if the model has none. */
static int st_model_index(const fl_model_spec_t *m, const char *name) {
  size_t nt = fl_model_num_tensors(m);
  for (size_t i = 0; i < nt; i++) {
    fl_tensor_info_t t;
    fl_model_tensor(m, i, &t);
    if (!strcmp(t.name, name)) return (int)i;
  }
  return -1;
}

/* A new entry for tensor `key` when reading any tensors: a valid name
 * (fl_layout_check_name), not seen before, within FL_LAYOUT_MAX_TENSORS. */
static int st_any_entry(st_json_t *js, st_parse_t *ps, const char *key, size_t klen,
                        st_entry_t **out) {
  if (klen >= ST_NAME_MAX)
    return fl_err_set(FL_EFORMAT, "'%s': tensor name '%.40s...' is longer than %d bytes", js->path,
                      key, FL_LAYOUT_MAX_NAME);
  if (fl_layout_check_name(key) != 0) {
    char m[512];
    snprintf(m, sizeof m, "%s", fl_err_msg());
    return fl_err_set(FL_EFORMAT, "'%s': %s", js->path, m);
  }
  for (size_t i = 0; i < ps->n_ent; i++)
    if (!strcmp(ps->ent[i].name, key))
      return fl_err_set(FL_EFORMAT, "'%s': tensor '%s' appears twice", js->path, key);
  if (ps->n_ent == FL_LAYOUT_MAX_TENSORS)
    return fl_err_set(FL_ETOOBIG, "'%s': more than %d tensors", js->path, FL_LAYOUT_MAX_TENSORS);
  if (ps->n_ent == ps->cap_ent) {
    size_t cap = ps->cap_ent ? 2 * ps->cap_ent : 64;
    st_entry_t *e = realloc(ps->ent, cap * sizeof *e);
    if (!e) return fl_err_set(FL_ENOMEM, "out of memory reading '%s'", js->path);
    ps->ent = e;
    ps->cap_ent = cap;
  }
  st_entry_t *e = &ps->ent[ps->n_ent];
  memset(e, 0, sizeof *e);
  if (!(e->name = strdup(key)))
    return fl_err_set(FL_ENOMEM, "out of memory reading '%s'", js->path);
  ps->n_ent++;
  e->seen = 1;
  *out = e;
  return 0;
}

static void st_free_entries(st_parse_t *ps) {
  for (size_t i = 0; ps && ps->any && i < ps->n_ent; i++)
    free(ps->ent[i].name);
  if (ps) free(ps->ent);
}

static int st_parse(const char *path, const char *hdr, size_t hlen, st_parse_t *ps) {
  st_json_t js = {path, hdr, hdr, hdr + hlen};
  char key[ST_NAME_MAX];
  size_t klen;
  int have_meta = 0;
  int rc = st_expect(&js, '{');
  if (rc < 0) return rc;
  st_ws(&js);
  if (js.p < js.end && *js.p == '}') {
    js.p++;
    goto tail;
  }
  do {
    if ((rc = st_string(&js, key, sizeof key, &klen)) < 0) return rc;
    if ((rc = st_expect(&js, ':')) < 0) return rc;
    if (!strcmp(key, "__metadata__")) {
      if (have_meta) return fl_err_set(FL_EFORMAT, "'%s': two __metadata__ entries", path);
      have_meta = 1;
      rc = st_metadata(&js, ps);
    } else {
      st_entry_t scratch, *e = &scratch;
      memset(&scratch, 0, sizeof scratch);
      if (ps->any) {
        if ((rc = st_any_entry(&js, ps, key, klen, &e)) < 0) return rc;
      } else if (ps->m) {
        int i = klen < sizeof key ? st_model_index(ps->m, key) : -1;
        if (i < 0)
          return fl_err_set(FL_ESHAPE, "'%s': unexpected tensor '%.64s' for model '%s'", path, key,
                            ps->m->spec);
        e = &ps->ent[i];
        if (e->seen) return fl_err_set(FL_EFORMAT, "'%s': tensor '%s' appears twice", path, key);
        e->seen = 1;
      }
      rc = st_tensor(&js, key, e);
    }
    if (rc < 0) return rc;
  } while ((rc = st_next(&js, '}')) == 1);
  if (rc < 0) return rc;
tail:
  st_ws(&js);
  if (js.p != js.end) return st_syntax(&js, "data after the header object");
  return 0;
}

/* ---- reader ------------------------------------------------------------ */

static int st_pread_full(int fd, void *buf, size_t n, off_t at) {
  uint8_t *p = buf;
  while (n > 0) {
    ssize_t r = pread(fd, p, n, at);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return r < 0 ? -1 : 0;
    p += r;
    n -= (size_t)r;
    at += r;
  }
  return 1;
}

/* Opens `path` (a regular file: a FIFO, device or directory is refused
 * without blocking) and reads its header (bounded before allocating). On success
 * *fd is open, *hdr a new NUL-terminated buffer of *hlen bytes and *dlen the
 * size of the data section after it. */
static int st_open(const char *path, int *fd, char **hdr, size_t *hlen, size_t *dlen) {
  uint64_t size = 0;
  uint8_t lenb[8];
  int rc, r;
  *hdr = NULL;
  /* Refuses a FIFO, device or directory up front: open() never blocks. */
  if ((rc = fl_file_open_input(path, FL_FILE_REGULAR, fd, &size)) < 0) return rc;
  if (size < 8) {
    rc = fl_err_set(FL_EFORMAT, "'%s' is %llu bytes, too short for a safetensors file", path,
                    (unsigned long long)size);
    goto out;
  }
  if ((r = st_pread_full(*fd, lenb, 8, 0)) <= 0) {
    rc = fl_err_set(r < 0 ? FL_EIO : FL_EFORMAT, "cannot read the header length of '%s'", path);
    goto out;
  }
  uint64_t n = 0;
  for (int k = 7; k >= 0; k--)
    n = n << 8 | lenb[k];
  if (n > FL_SAFETENSORS_MAX_HEADER) {
    rc = fl_err_set(FL_EFORMAT, "'%s': header length %llu exceeds the limit of %u bytes", path,
                    (unsigned long long)n, FL_SAFETENSORS_MAX_HEADER);
    goto out;
  }
  if (n > size - 8) {
    rc = fl_err_set(FL_EFORMAT, "'%s': header length %llu is larger than the file (%llu bytes)",
                    path, (unsigned long long)n, (unsigned long long)size);
    goto out;
  }
  *hdr = malloc((size_t)n + 1);
  if (!*hdr) {
    rc = fl_err_set(FL_ENOMEM, "cannot allocate the header of '%s'", path);
    goto out;
  }
  if ((r = st_pread_full(*fd, *hdr, (size_t)n, 8)) <= 0) {
    rc = fl_err_set(r < 0 ? FL_EIO : FL_EFORMAT, "'%s': header truncated", path);
    goto out;
  }
  (*hdr)[n] = '\0';
  *hlen = (size_t)n;
  *dlen = (size_t)(size - 8 - n);
out:
  if (rc < 0) {
    free(*hdr);
    *hdr = NULL;
    close(*fd);
    *fd = -1;
  }
  return rc;
}

static const char *st_fmt_shape(const uint64_t *s, size_t n, char *buf, size_t cap) {
  size_t at = (size_t)snprintf(buf, cap, "[");
  for (size_t i = 0; i < n && at < cap; i++)
    at += (size_t)snprintf(buf + at, cap - at, "%s%llu", i ? "," : "", (unsigned long long)s[i]);
  if (at < cap) snprintf(buf + at, cap - at, "]");
  return buf;
}

/* Checks the parsed entries against the model and a data section of dlen
 * bytes. */
static int st_validate(const char *path, const fl_model_spec_t *m, const st_parse_t *ps,
                       size_t dlen) {
  char want[128], got[160];
  size_t nt = fl_model_num_tensors(m), used = 0;
  for (size_t i = 0; i < nt; i++) {
    fl_tensor_info_t t;
    fl_model_tensor(m, i, &t);
    const st_entry_t *e = &ps->ent[i];
    if (!e->seen)
      return fl_err_set(FL_ESHAPE, "'%s': missing tensor '%s' of model '%s'", path, t.name,
                        m->spec);
    if (e->dtype_len != 3 || strcmp(e->dtype, "F32") != 0)
      return fl_err_set(FL_EFORMAT, "'%s': tensor '%s' has dtype '%s', expected F32", path, t.name,
                        e->dtype);
    uint64_t ts[FL_LAYOUT_MAX_DIMS];
    for (uint32_t d = 0; d < t.ndim; d++)
      ts[d] = t.shape[d];
    int same = e->ndim == t.ndim;
    for (size_t d = 0; same && d < t.ndim; d++)
      same = e->shape[d] == ts[d];
    if (!same)
      return fl_err_set(FL_ESHAPE, "'%s': tensor '%s' has shape %s, model '%s' expects %s", path,
                        t.name, st_fmt_shape(e->shape, e->ndim, got, sizeof got), m->spec,
                        st_fmt_shape(ts, t.ndim, want, sizeof want));
    uint64_t b = e->off[0], end = e->off[1];
    if (b > end || end > dlen || end - b != 4 * (uint64_t)t.count)
      return fl_err_set(FL_EFORMAT,
                        "'%s': tensor '%s' data_offsets [%llu,%llu] must span %zu bytes inside "
                        "the %zu-byte data section",
                        path, t.name, (unsigned long long)b, (unsigned long long)end, 4 * t.count,
                        dlen);
    for (size_t j = 0; j < i; j++) {
      const st_entry_t *o = &ps->ent[j];
      if (b < o->off[1] && o->off[0] < end) {
        fl_tensor_info_t to;
        fl_model_tensor(m, j, &to);
        return fl_err_set(FL_EFORMAT, "'%s': tensors '%s' and '%s' overlap", path, to.name, t.name);
      }
    }
    used += 4 * t.count;
  }
  /* Like the reference implementation: the tensors tile the data section. */
  if (used != dlen)
    return fl_err_set(FL_EFORMAT, "'%s': data section is %zu bytes, the tensors use %zu", path,
                      dlen, used);
  return 0;
}

/* The file's checksum, computed as the writer did: over the 8-byte length,
 * the header with the checksum's digits read as '0' (hdr is modified), and
 * the data section. */
static uint32_t st_file_crc(char *hdr, size_t hlen, size_t crc_at, const uint8_t *data,
                            size_t dlen) {
  uint8_t lenb[8];
  for (int k = 0; k < 8; k++)
    lenb[k] = (uint8_t)((uint64_t)hlen >> (8 * k));
  memcpy(hdr + crc_at, st_crc_zero, ST_CRC_DIGITS);
  uint32_t crc = st_crc(0, lenb, sizeof lenb);
  crc = st_crc(crc, hdr, hlen);
  return st_crc(crc, data, dlen);
}

/* The checksum rule (FL_SAFETENSORS_NEED_CHECKSUM), then the data section
 * (dlen bytes after the header) read into a new *data and checked against
 * the header's checksum if it has one. */
static int st_read_data(const char *path, int fd, char *hdr, size_t hlen, size_t dlen,
                        const st_parse_t *ps, unsigned flags, uint8_t **data) {
  int r;
  *data = NULL;
  if (!ps->have_crc && (flags & FL_SAFETENSORS_NEED_CHECKSUM))
    return fl_err_set(FL_EFORMAT,
                      "'%s' has no checksum (metadata '%s'): it was written by an older fedlr or "
                      "another tool, or its header is damaged",
                      path, FL_SAFETENSORS_CHECKSUM_KEY);
  uint8_t *d = malloc(dlen ? dlen : 1);
  if (!d) return fl_err_set(FL_ENOMEM, "cannot allocate %zu bytes to read '%s'", dlen, path);
  if ((r = st_pread_full(fd, d, dlen, (off_t)(8 + hlen))) <= 0) {
    free(d);
    return fl_err_set(r < 0 ? FL_EIO : FL_EFORMAT, "'%s': data section truncated while reading",
                      path);
  }
  if (ps->have_crc) {
    uint32_t got = st_file_crc(hdr, hlen, ps->crc_at, d, dlen);
    if (got != ps->crc_want) {
      free(d);
      return fl_err_set(FL_EFORMAT,
                        "'%s': checksum mismatch: the file is corrupt (its content has CRC-32 "
                        "%08x, its header records %08x)",
                        path, (unsigned)got, (unsigned)ps->crc_want);
    }
  }
  *data = d;
  return 0;
}

int fl_safetensors_load_all(const char *path, const fl_model_spec_t *m, float *params,
                            unsigned flags, fl_safetensors_meta_t *meta) {
  int fd = -1;
  char *hdr = NULL;
  uint8_t *data = NULL;
  size_t hlen = 0, dlen = 0, nt = fl_model_num_tensors(m);
  st_parse_t *ps = calloc(1, sizeof *ps);
  fl_safetensors_meta_t *list = meta ? calloc(1, sizeof *list) : NULL;
  if (ps) ps->ent = calloc(nt ? nt : 1, sizeof *ps->ent);
  int rc = ps && ps->ent && (list || !meta)
               ? 0
               : fl_err_set(FL_ENOMEM, "out of memory loading '%s'", path);
  if (rc < 0) goto out;
  if ((rc = st_open(path, &fd, &hdr, &hlen, &dlen)) < 0) goto out;
  ps->m = m;
  ps->list = list;
  if ((rc = st_parse(path, hdr, hlen, ps)) < 0) goto out;
  if ((rc = st_validate(path, m, ps, dlen)) < 0) goto out;
  /* dlen == 4 * num_params now; staged, so params stay intact if the read
   * fails halfway or the checksum does not match. */
  if ((rc = st_read_data(path, fd, hdr, hlen, dlen, ps, flags, &data)) < 0) goto out;
  for (size_t i = 0; i < nt; i++) {
    fl_tensor_info_t t;
    fl_model_tensor(m, i, &t);
    memcpy(params + t.offset, data + ps->ent[i].off[0], 4 * t.count);
  }
  if (meta) *meta = *list;
out:
  if (fd >= 0) close(fd);
  free(hdr);
  free(data);
  st_free_entries(ps);
  free(ps);
  free(list);
  return rc;
}

int fl_safetensors_load(const char *path, const fl_model_spec_t *m, float *params) {
  return fl_safetensors_load_all(path, m, params, 0, NULL);
}

int fl_safetensors_meta(const char *path, const char *key, char *buf, size_t len) {
  int fd = -1;
  char *hdr = NULL;
  size_t hlen = 0, dlen = 0;
  st_parse_t ps = {.m = NULL, .want_key = key, .want_buf = buf, .want_cap = len};
  int rc = st_open(path, &fd, &hdr, &hlen, &dlen);
  if (rc < 0) goto out;
  if ((rc = st_parse(path, hdr, hlen, &ps)) < 0) goto out;
  if (!ps.want_found) rc = fl_err_set(FL_ENOENT, "'%s' has no metadata '%s'", path, key);
out:
  if (fd >= 0) close(fd);
  free(hdr);
  return rc;
}

/* ---- reading any tensors ------------------------------------------------ */

static int st_cmp_offset(const void *a, const void *b) {
  const st_entry_t *x = a, *y = b;
  return (x->off[0] > y->off[0]) - (x->off[0] < y->off[0]);
}

/* The parsed entries as a layout, in data order: every one F32, with a
 * shape of at most FL_LAYOUT_MAX_DIMS dimensions >= 1, together tiling the
 * data section of dlen bytes. */
static int st_any_layout(const char *path, st_parse_t *ps, size_t dlen, fl_layout_t *l) {
  char sb[160];
  if (ps->n_ent == 0) return fl_err_set(FL_EFORMAT, "'%s' holds no tensors", path);
  qsort(ps->ent, ps->n_ent, sizeof *ps->ent, st_cmp_offset);
  uint64_t at = 0;
  for (size_t i = 0; i < ps->n_ent; i++) {
    const st_entry_t *e = &ps->ent[i];
    if (strcmp(e->dtype, "F32") != 0)
      return fl_err_set(FL_EFORMAT,
                        "'%s': tensor '%s' is %s: fedlr aggregates float32 tensors only (export "
                        "it as float32, or keep it out of the file and local to the clients)",
                        path, e->name, e->dtype);
    uint32_t shape[FL_LAYOUT_MAX_DIMS];
    uint64_t count = 1;
    for (size_t d = 0; d < e->ndim; d++) {
      if (e->shape[d] == 0 || e->shape[d] > UINT32_MAX)
        return fl_err_set(FL_EFORMAT, "'%s': tensor '%s' has shape %s (dimensions are 1 to %u)",
                          path, e->name, st_fmt_shape(e->shape, e->ndim, sb, sizeof sb),
                          (unsigned)UINT32_MAX);
      shape[d] = (uint32_t)e->shape[d];
      count = count <= UINT64_MAX / e->shape[d] ? count * e->shape[d] : UINT64_MAX;
    }
    if (e->off[0] != at || e->off[1] < e->off[0] || count > FL_MODEL_MAX_PARAMS ||
        e->off[1] - e->off[0] != 4 * count)
      return fl_err_set(FL_EFORMAT,
                        "'%s': tensor '%s' %s has data_offsets [%llu,%llu]: the tensors must "
                        "tile the data section, each 4 bytes per value",
                        path, e->name, st_fmt_shape(e->shape, e->ndim, sb, sizeof sb),
                        (unsigned long long)e->off[0], (unsigned long long)e->off[1]);
    at = e->off[1];
    int rc = fl_layout_add(l, e->name, (uint32_t)e->ndim, shape);
    if (rc) {
      char m[512];
      snprintf(m, sizeof m, "%s", fl_err_msg());
      return fl_err_set(rc == FL_ENOMEM ? FL_ENOMEM : FL_EFORMAT, "'%s': %s", path, m);
    }
  }
  if (at != dlen)
    return fl_err_set(FL_EFORMAT, "'%s': data section is %zu bytes, the tensors use %llu", path,
                      dlen, (unsigned long long)at);
  return 0;
}

int fl_safetensors_read(const char *path, unsigned flags, fl_layout_t **layout, float **weights,
                        fl_safetensors_meta_t *meta) {
  int fd = -1;
  char *hdr = NULL;
  uint8_t *data = NULL;
  size_t hlen = 0, dlen = 0;
  *layout = NULL;
  *weights = NULL;
  fl_layout_t *l = fl_layout_new();
  st_parse_t *ps = calloc(1, sizeof *ps);
  fl_safetensors_meta_t *list = meta ? calloc(1, sizeof *list) : NULL;
  int rc =
      l && ps && (list || !meta) ? 0 : fl_err_set(FL_ENOMEM, "out of memory reading '%s'", path);
  if (rc < 0) goto out;
  if ((rc = st_open(path, &fd, &hdr, &hlen, &dlen)) < 0) goto out;
  ps->any = 1;
  ps->list = list;
  if ((rc = st_parse(path, hdr, hlen, ps)) < 0) goto out;
  if ((rc = st_any_layout(path, ps, dlen, l)) < 0) goto out;
  if ((rc = st_read_data(path, fd, hdr, hlen, dlen, ps, flags, &data)) < 0) goto out;
  /* The data section is the parameter buffer, tensors in data order. */
  *weights = (float *)(void *)data;
  data = NULL;
  *layout = l;
  l = NULL;
  if (meta) *meta = *list;
out:
  if (fd >= 0) close(fd);
  free(hdr);
  free(data);
  st_free_entries(ps);
  free(ps);
  free(list);
  fl_layout_destroy(&l);
  return rc;
}
