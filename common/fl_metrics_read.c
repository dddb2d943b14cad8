/* fl_metrics_read: reading back a metrics.jsonl (see fl_metrics.h), by a
 * strict parser of exactly the JSON that fl_metrics_add writes. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"
#include "fl_file.h"
#include "fl_metrics.h"

/* A cursor in one line of a metrics file. */
typedef struct {
  const char *p, *end; /* the line, without its '\n' */
  const char *start;   /* for the column in messages */
  const char *path;
  size_t line;
  int unterminated; /* the file's last line, without its newline */
} jl_t;

static int jl_error(const jl_t *j, const char *what) {
  /* fl_metrics writes whole lines: one cut short was not written by it. */
  return fl_err_set(FL_EINVAL, "metrics file '%s' line %zu, column %zu: %s%s", j->path, j->line,
                    (size_t)(j->p - j->start) + 1, what,
                    j->unterminated ? " (the last line, without its newline: cut short?)" : "");
}

static void jl_space(jl_t *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r'))
    j->p++;
}

/* Skips white space, then c if it comes next: 1 if it did. */
static int jl_eat(jl_t *j, char c) {
  jl_space(j);
  if (j->p == j->end || *j->p != c) return 0;
  j->p++;
  return 1;
}

/* 1 if the line goes on with the literal word w (true, false, null). */
static int jl_word(jl_t *j, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(j->end - j->p) < n || memcmp(j->p, w, n) != 0) return 0;
  j->p += n;
  return 1;
}

/* A JSON string, after its opening quote: sets *s, *len to its text with
 * the escapes left in (keys of interest have none). */
static int jl_string(jl_t *j, const char **s, size_t *len) {
  *s = j->p;
  for (; j->p < j->end && *j->p != '"'; j->p++) {
    if ((unsigned char)*j->p < 0x20) return jl_error(j, "a control character in a string");
    if (*j->p != '\\') continue;
    if (++j->p == j->end) break;
    if (*j->p == 'u') {
      for (int k = 0; k < 4; k++)
        if (++j->p == j->end || !strchr("0123456789abcdefABCDEF", *j->p) || !*j->p)
          return jl_error(j, "a bad \\u escape");
    } else if (!*j->p || !strchr("\"\\/bfnrt", *j->p)) {
      return jl_error(j, "a bad escape");
    }
  }
  if (j->p == j->end) return jl_error(j, "a string without its closing quote");
  *len = (size_t)(j->p - *s);
  j->p++;
  return 0;
}

static const char *jl_digits(const char *p, const char *end) {
  while (p < end && *p >= '0' && *p <= '9')
    p++;
  return p;
}

/* A JSON number (RFC 8259 grammar, checked: strtod alone would take
 * "inf", "0x1p3" or " 1"): sets *v and *integer (no sign, fraction or
 * exponent). */
static int jl_number(jl_t *j, double *v, int *integer) {
  const char *p = j->p, *end = j->end;
  *integer = 1;
  if (p < end && *p == '-') p++, *integer = 0;
  const char *d = jl_digits(p, end);
  if (d == p || (*p == '0' && d - p > 1)) return jl_error(j, "a bad number");
  p = d;
  if (p < end && *p == '.') {
    d = jl_digits(++p, end);
    if (d == p) return jl_error(j, "a bad number");
    p = d, *integer = 0;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    if (++p < end && (*p == '+' || *p == '-')) p++;
    d = jl_digits(p, end);
    if (d == p) return jl_error(j, "a bad number");
    p = d, *integer = 0;
  }
  /* strtod on a copy of what the grammar took: on the line it would take
   * more of "0x10". fl_metrics writes at most 24 characters (%.17g). */
  char text[64], *q;
  size_t len = (size_t)(p - j->p);
  if (len >= sizeof text) return jl_error(j, "a number too long");
  memcpy(text, j->p, len);
  text[len] = '\0';
  errno = 0;
  *v = strtod(text, &q);
  if (q != text + len || (errno == ERANGE && isinf(*v)))
    return jl_error(j, "a number out of range");
  j->p = p;
  return 0;
}

/* Skips any JSON value (members fl_metrics's callers add, such as
 * "participants":[1,5]); nesting is bounded. */
static int jl_skip(jl_t *j, int depth) {
  const char *s;
  size_t len;
  double v;
  int integer;
  if (depth > 32) return jl_error(j, "values nested too deeply");
  jl_space(j);
  if (j->p == j->end) return jl_error(j, "a value expected");
  char open = *j->p, close = open == '{' ? '}' : ']';
  if (open == '"') return j->p++, jl_string(j, &s, &len);
  if (open != '{' && open != '[') {
    if (jl_word(j, "true") || jl_word(j, "false") || jl_word(j, "null")) return 0;
    return jl_number(j, &v, &integer);
  }
  j->p++;
  if (jl_eat(j, close)) return 0;
  do {
    if (open == '{') {
      if (!jl_eat(j, '"')) return jl_error(j, "a key expected");
      if (jl_string(j, &s, &len) != 0) return FL_EINVAL;
      if (!jl_eat(j, ':')) return jl_error(j, "':' expected");
    }
    if (jl_skip(j, depth + 1) != 0) return FL_EINVAL;
  } while (jl_eat(j, ','));
  return jl_eat(j, close) ? 0 : jl_error(j, open == '{' ? "'}' expected" : "']' expected");
}

/* The members of a metrics line that fill a record. */
enum { JL_U32, JL_U64, JL_DOUBLE };
static const struct {
  const char *key;
  int type;
  size_t offset;
} jl_members[] = {
#define M(name, type)                                                                              \
  { #name, type, offsetof(fl_round_metrics_t, name) }
    M(round, JL_U32),
    M(rounds_total, JL_U32),
    M(lr, JL_DOUBLE),
    M(server_lr, JL_DOUBLE),
    M(clients_sampled, JL_U32),
    M(clients_reported, JL_U32),
    M(train_loss, JL_DOUBLE),
    M(test_loss, JL_DOUBLE),
    M(test_accuracy, JL_DOUBLE),
    M(seconds, JL_DOUBLE),
    M(elapsed, JL_DOUBLE),
    M(bytes_sent, JL_U64),
    M(bytes_received, JL_U64),
    M(rejected, JL_U32),
    M(clipped, JL_U32),
    M(capped, JL_U32),
    M(fed_eval_loss, JL_DOUBLE),
    M(fed_eval_accuracy, JL_DOUBLE),
    M(fed_eval_examples, JL_U64),
    M(fed_eval_clients, JL_U32),
#undef M
};
#define JL_NUM_MEMBERS (sizeof jl_members / sizeof *jl_members)

/* A member's value into the record: a number, or null (a double that was
 * not measured). */
static int jl_member(jl_t *j, size_t m, fl_round_metrics_t *r) {
  char *field = (char *)r + jl_members[m].offset;
  double v;
  int integer;
  jl_space(j);
  if (jl_members[m].type == JL_DOUBLE && jl_word(j, "null")) {
    *(double *)field = NAN;
    return 0;
  }
  const char *start = j->p;
  if (jl_number(j, &v, &integer) != 0) return FL_EINVAL;
  if (jl_members[m].type == JL_DOUBLE) {
    *(double *)field = v;
    return 0;
  }
  /* Integers past 2^53 do not survive a double: read them again exactly. */
  if (!integer) return j->p = start, jl_error(j, "a whole number >= 0 expected");
  uint64_t max = jl_members[m].type == JL_U32 ? UINT32_MAX : UINT64_MAX;
  errno = 0;
  unsigned long long u = strtoull(start, NULL, 10);
  if (errno == ERANGE || u > max) return j->p = start, jl_error(j, "a number out of range");
  if (jl_members[m].type == JL_U32)
    *(uint32_t *)field = (uint32_t)u;
  else
    *(uint64_t *)field = (uint64_t)u;
  return 0;
}

/* One line: a JSON object whose members of jl_members fill *r (the others
 * are skipped); a double it lacks is NAN, an integer 0. */
static int jl_line(jl_t *j, fl_round_metrics_t *r) {
  uint32_t seen = 0; /* bit m: jl_members[m] was read */
  memset(r, 0, sizeof *r);
  for (size_t m = 0; m < JL_NUM_MEMBERS; m++)
    if (jl_members[m].type == JL_DOUBLE) *(double *)((char *)r + jl_members[m].offset) = NAN;
  if (!jl_eat(j, '{')) return jl_error(j, "'{' expected");
  if (!jl_eat(j, '}')) {
    do {
      const char *key;
      size_t len, m = 0;
      if (!jl_eat(j, '"')) return jl_error(j, "a key expected");
      if (jl_string(j, &key, &len) != 0) return FL_EINVAL;
      if (!jl_eat(j, ':')) return jl_error(j, "':' expected");
      while (m < JL_NUM_MEMBERS &&
             (strlen(jl_members[m].key) != len || memcmp(jl_members[m].key, key, len) != 0))
        m++;
      if (m == JL_NUM_MEMBERS) {
        if (jl_skip(j, 0) != 0) return FL_EINVAL;
        continue;
      }
      if (seen & (UINT32_C(1) << m)) return jl_error(j, "a key given twice");
      seen |= UINT32_C(1) << m;
      if (jl_member(j, m, r) != 0) return FL_EINVAL;
    } while (jl_eat(j, ','));
    if (!jl_eat(j, '}')) return jl_error(j, "',' or '}' expected");
  }
  jl_space(j);
  if (j->p != j->end) return jl_error(j, "more after the object");
  if (!(seen & 1)) return jl_error(j, "no \"round\"");
  return 0;
}

int fl_metrics_read(const char *path, fl_round_metrics_t **out, size_t *n) {
  if (!path || !out || !n) return fl_err_set(FL_EINVAL, "fl_metrics_read: NULL argument");
  *out = NULL, *n = 0;
  uint8_t *buf = NULL;
  size_t len, count = 0, cap = 0;
  fl_round_metrics_t *rec = NULL;
  int rc = fl_file_read_all(path, FL_METRICS_MAX_FILE_BYTES, FL_FILE_REGULAR, &buf, &len);
  if (rc) return rc;
  const char *p = (const char *)buf, *end = p + len;
  for (size_t line = 1; p < end; line++) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    jl_t j = {
        .p = p, .end = nl ? nl : end, .start = p, .path = path, .line = line, .unterminated = !nl};
    p = nl ? nl + 1 : end;
    if (count == cap) {
      if (cap >= FL_METRICS_MAX_ROUNDS) {
        rc = fl_err_set(FL_ETOOBIG, "metrics file '%s': more than %zu rounds", path,
                        FL_METRICS_MAX_ROUNDS);
        goto out;
      }
      size_t ncap = cap ? 2 * cap : 64;
      if (ncap > FL_METRICS_MAX_ROUNDS) ncap = FL_METRICS_MAX_ROUNDS;
      fl_round_metrics_t *x = realloc(rec, ncap * sizeof *x);
      if (!x) {
        rc = fl_err_set(FL_ENOMEM, "out of memory for %zu rounds of '%s'", ncap, path);
        goto out;
      }
      rec = x, cap = ncap;
    }
    if ((rc = jl_line(&j, &rec[count])) != 0) goto out;
    if (rec[count].round != count + 1) {
      rc = fl_err_set(FL_EINVAL,
                      "metrics file '%s' line %zu: round %" PRIu32 " where %zu was "
                      "expected (rounds go 1, 2, 3, ...)",
                      path, line, rec[count].round, count + 1);
      goto out;
    }
    count++;
  }
out:
  free(buf);
  if (rc) {
    free(rec);
    return rc;
  }
  *out = rec, *n = count;
  return 0;
}
