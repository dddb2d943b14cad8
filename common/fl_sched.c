#include "fl_sched.h"

#include "fl_error.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double pi = 3.14159265358979323846;

/* ---- spec vocabulary ---------------------------------------------------- */

/* 0 terminates a kind's key list, so ids start at 1. */
typedef enum {
  KEY_NONE = 0,
  KEY_GAMMA,
  KEY_EVERY,
  KEY_T,
  KEY_P,
  KEY_POWER,
  KEY_END,
  KEY_MIN,
  KEY_MULT,
  KEY_STAIRCASE,
  KEY_RESTART,
  KEY_FACTOR,
  KEY_PATIENCE,
  KEY_COOLDOWN,
  KEY_THRESHOLD,
  KEY_COUNT
} key_id;

typedef enum { VAL_FLAG, VAL_REAL, VAL_UINT32 } val_type;

static const struct {
  const char *name;
  val_type type;
} key_info[KEY_COUNT] = {
  [KEY_GAMMA] = {"gamma", VAL_REAL},         [KEY_EVERY] = {"every", VAL_REAL},
  [KEY_T] = {"T", VAL_REAL},                 [KEY_P] = {"p", VAL_REAL},
  [KEY_POWER] = {"power", VAL_REAL},         [KEY_END] = {"end", VAL_REAL},
  [KEY_MIN] = {"min", VAL_REAL},             [KEY_MULT] = {"mult", VAL_REAL},
  [KEY_STAIRCASE] = {"staircase", VAL_FLAG}, [KEY_RESTART] = {"restart", VAL_FLAG},
  [KEY_FACTOR] = {"factor", VAL_REAL},       [KEY_PATIENCE] = {"patience", VAL_UINT32},
  [KEY_COOLDOWN] = {"cooldown", VAL_UINT32}, [KEY_THRESHOLD] = {"threshold", VAL_REAL},
};

#define KEY_BIT(k) (1u << (k))
#define MAX_KIND_KEYS 6

typedef struct {
  fl_sched_kind_t kind;
  const char *name;                  /* canonical, used by fl_sched_format */
  key_id keys[MAX_KIND_KEYS];        /* in canonical order, 0-terminated */
  unsigned required;                 /* KEY_BIT mask */
  const char *example;               /* shown when a required key is missing */
} kind_info;

/* Piecewise takes numeric keys and is parsed separately, so its key list is empty. */
static const kind_info kinds[] = {
  {FL_SCHED_CONST, "const", {0}, 0, "const"},
  {FL_SCHED_LINEAR, "linear", {KEY_T, KEY_END}, KEY_BIT(KEY_T), "linear:T=100"},
  {FL_SCHED_EXP, "exp", {KEY_GAMMA, KEY_EVERY, KEY_STAIRCASE}, KEY_BIT(KEY_GAMMA), "exp:gamma=0.95"},
  {FL_SCHED_INV, "inv", {KEY_T, KEY_P, KEY_STAIRCASE}, KEY_BIT(KEY_T), "inv:T=100"},
  {FL_SCHED_POLY, "poly", {KEY_T, KEY_POWER, KEY_END}, KEY_BIT(KEY_T), "poly:T=100"},
  {FL_SCHED_STEP, "step", {KEY_GAMMA, KEY_EVERY}, KEY_BIT(KEY_GAMMA) | KEY_BIT(KEY_EVERY),
   "step:gamma=0.1,every=30"},
  {FL_SCHED_PIECEWISE, "piecewise", {0}, 0, "piecewise:30=0.1,60=0.01"},
  {FL_SCHED_COS, "cos", {KEY_T, KEY_MIN, KEY_RESTART, KEY_MULT}, KEY_BIT(KEY_T), "cos:T=100"},
  {FL_SCHED_PLATEAU, "plateau", {KEY_FACTOR, KEY_PATIENCE, KEY_COOLDOWN, KEY_MIN, KEY_THRESHOLD},
   0, "plateau"},
};
#define NUM_KINDS (sizeof kinds / sizeof kinds[0])

static const char kind_list[] = "const, linear, exp, inv, poly, step, piecewise, cos, plateau";

static const struct {
  const char *alias;
  fl_sched_kind_t kind;
} aliases[] = {
  {"constant", FL_SCHED_CONST},  {"exponential", FL_SCHED_EXP}, {"inverse-time", FL_SCHED_INV},
  {"invtime", FL_SCHED_INV},     {"polynomial", FL_SCHED_POLY}, {"cosine", FL_SCHED_COS},
};

static const kind_info *kind_by_id(fl_sched_kind_t kind) {
  for (size_t i = 0; i < NUM_KINDS; i++)
    if (kinds[i].kind == kind) return &kinds[i];
  return NULL;
}

static const kind_info *kind_by_name(const char *name) {
  for (size_t i = 0; i < NUM_KINDS; i++)
    if (strcmp(kinds[i].name, name) == 0) return &kinds[i];
  for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
    if (strcmp(aliases[i].alias, name) == 0) return kind_by_id(aliases[i].kind);
  return NULL;
}

static key_id kind_key(const kind_info *ki, const char *name) {
  for (int i = 0; i < MAX_KIND_KEYS && ki->keys[i]; i++)
    if (strcmp(key_info[ki->keys[i]].name, name) == 0) return ki->keys[i];
  return KEY_NONE;
}

/* "keys: gamma, every, staircase" or "const takes no keys". */
static const char *kind_key_list(const kind_info *ki, char *buf, size_t len) {
  if (!ki->keys[0]) {
    snprintf(buf, len, "%s takes no keys", ki->name);
    return buf;
  }
  size_t pos = (size_t)snprintf(buf, len, "keys:");
  for (int i = 0; i < MAX_KIND_KEYS && ki->keys[i] && pos < len; i++)
    pos += (size_t)snprintf(buf + pos, len - pos, "%s %s", i ? "," : "", key_info[ki->keys[i]].name);
  return buf;
}

/* NULL when v is allowed for k, else the rule it breaks. */
static const char *key_range_error(key_id k, double v) {
  switch (k) {
  case KEY_GAMMA:
  case KEY_EVERY:
  case KEY_T:
  case KEY_P:
  case KEY_POWER: return v > 0 ? NULL : "must be > 0";
  case KEY_END:
  case KEY_MIN: return v >= 0 ? NULL : "must be >= 0";
  case KEY_MULT: return v >= 1 ? NULL : "must be >= 1";
  case KEY_FACTOR: return v > 0 && v < 1 ? NULL : "must be in (0, 1)";
  case KEY_THRESHOLD: return v >= 0 && v < 1 ? NULL : "must be in [0, 1)";
  default: return NULL;
  }
}

static void store_key(fl_sched_t *s, key_id k, double v) {
  switch (k) {
  case KEY_GAMMA: s->gamma = v; break;
  case KEY_EVERY: s->every = v; break;
  case KEY_T: s->T = v; break;
  case KEY_P:
  case KEY_POWER: s->p = v; break;
  case KEY_END: s->end = v; break;
  case KEY_MIN: s->min = v; break;
  case KEY_MULT: s->mult = v; break;
  case KEY_STAIRCASE: s->staircase = 1; break;
  case KEY_RESTART: s->restart = 1; break;
  case KEY_FACTOR: s->factor = v; break;
  case KEY_PATIENCE: s->patience = (uint32_t)v; break;
  case KEY_COOLDOWN: s->cooldown = (uint32_t)v; break;
  case KEY_THRESHOLD: s->threshold = v; break;
  default: break;
  }
}

/* Fields a kind reads but the spec may omit; every other field stays 0 so
 * that two parses of equivalent specs compare equal field by field. */
static void set_defaults(fl_sched_t *s) {
  switch (s->kind) {
  case FL_SCHED_EXP: s->every = 1; break;
  case FL_SCHED_INV:
  case FL_SCHED_POLY: s->p = 1; break;
  case FL_SCHED_COS: s->mult = 1; break;
  case FL_SCHED_PLATEAU:
    s->factor = 0.1;
    s->patience = 10;
    s->threshold = 1e-4;
    break;
  default: break;
  }
}

/* ---- parsing ------------------------------------------------------------ */

static int bad(const char *spec, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(const char *spec, const char *fmt, ...) {
  char detail[320];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  return fl_err_set(FL_EINVAL, "schedule '%s': %s", spec, detail);
}

/* Trims in place: returns the first non-space and cuts trailing spaces. */
static char *trim(char *s) {
  while (isspace((unsigned char)*s)) s++;
  size_t n = strlen(s);
  while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
  return s;
}

/* strtod with full consumption; 0, or -1 if not a number, -2 if not finite
 * (strtod accepts "inf", "nan" and overflows to inf). */
static int parse_real(const char *str, double *out) {
  char *end;
  errno = 0;
  double v = strtod(str, &end);
  if (end == str || *end) return -1;
  if (!isfinite(v)) return -2;
  *out = v + 0.0; /* -0 -> +0, so "min=-0" formats as "0" */
  return 0;
}

/* Decimal digits only: strtoull would accept signs (wrapping "-1") and spaces. */
static int parse_uint(const char *str, uint64_t max, uint64_t *out) {
  uint64_t v = 0;
  if (!*str) return -1;
  for (const char *c = str; *c; c++) {
    if (!isdigit((unsigned char)*c)) return -1;
    unsigned d = (unsigned)(*c - '0');
    if (v > (max - d) / 10) return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

static int parse_value(const char *spec, key_id k, const char *key, const char *val, double *v) {
  if (!*val) return bad(spec, "empty value for '%s'", key);
  if (key_info[k].type == VAL_UINT32) {
    uint64_t u = 0;
    if (parse_uint(val, UINT32_MAX, &u))
      return bad(spec, "%s '%s' must be a whole number in [0, %u]", key, val, (unsigned)UINT32_MAX);
    *v = (double)u;
    return 0;
  }
  int rc = parse_real(val, v);
  if (rc == -1) return bad(spec, "value '%s' for %s is not a number", val, key);
  if (rc == -2) return bad(spec, "value '%s' for %s is not finite", val, key);
  const char *why = key_range_error(k, *v);
  if (why) return bad(spec, "%s=%s is out of range (%s)", key, val, why);
  return 0;
}

/* Cuts the next ','-separated token off *cursor (NULL after the last). */
static char *next_option(char **cursor) {
  char *opt = *cursor;
  char *comma = strchr(opt, ',');
  if (comma) *comma++ = '\0';
  *cursor = comma;
  return trim(opt);
}

static int parse_option(const char *spec, const kind_info *ki, char *opt, fl_sched_t *s,
                        unsigned *seen) {
  char keys[96];
  if (!*opt) return bad(spec, "empty option for %s (stray ',' or ':')", ki->name);
  char *eq = strchr(opt, '=');
  char *val = NULL;
  if (eq) {
    *eq = '\0';
    val = trim(eq + 1);
  }
  char *key = trim(opt);
  if (!*key) return bad(spec, "missing key before '=%s'", val);
  key_id k = kind_key(ki, key);
  if (!k)
    return bad(spec, "unknown key '%s' for %s (%s)", key, ki->name,
               kind_key_list(ki, keys, sizeof keys));
  if (*seen & KEY_BIT(k)) return bad(spec, "duplicate key '%s'", key);
  *seen |= KEY_BIT(k);
  if (key_info[k].type == VAL_FLAG) {
    if (val)
      return bad(spec, "'%s' is a flag and takes no value (write '%s', not '%s=%s')", key, key, key,
                 val);
    store_key(s, k, 1);
    return 0;
  }
  if (!val) return bad(spec, "key '%s' needs a value (%s=...)", key, key);
  double v = 0;
  int rc = parse_value(spec, k, key, val, &v);
  if (rc) return rc;
  store_key(s, k, v);
  return 0;
}

static int parse_pieces(const char *spec, char *opts, fl_sched_t *s) {
  for (char *cursor = opts; cursor;) {
    char *opt = next_option(&cursor);
    if (!*opt) return bad(spec, "empty piece for piecewise (stray ',' or ':')");
    if (s->num_pieces == FL_SCHED_MAX_PIECES)
      return bad(spec, "more than %d pieces", FL_SCHED_MAX_PIECES);
    char *eq = strchr(opt, '=');
    if (!eq) return bad(spec, "piece '%s' needs a factor (%s=F)", opt, opt);
    *eq = '\0';
    char *at_text = trim(opt), *val = trim(eq + 1);
    uint64_t at = 0;
    if (parse_uint(at_text, UINT64_MAX, &at))
      return bad(spec, "boundary '%s' is not a whole number (piecewise takes T1=F1,T2=F2,...)", at_text);
    if (s->num_pieces > 0) {
      uint64_t prev = s->piece_at[s->num_pieces - 1];
      if (at == prev) return bad(spec, "duplicate boundary %s", at_text);
      if (at < prev)
        return bad(spec, "boundary %s is not after %llu (boundaries must be strictly ascending)",
                   at_text, (unsigned long long)prev);
    }
    double f = 0;
    int rc = parse_real(val, &f);
    if (rc == -1) return bad(spec, "factor '%s' at boundary %s is not a number", val, at_text);
    if (rc == -2) return bad(spec, "factor '%s' at boundary %s is not finite", val, at_text);
    if (f < 0) return bad(spec, "factor %s at boundary %s is out of range (must be >= 0)", val, at_text);
    s->piece_at[s->num_pieces] = at;
    s->piece_factor[s->num_pieces] = f;
    s->num_pieces++;
  }
  return 0;
}

/* KIND[:key=value,...] */
static int parse_kind(const char *spec, char *piece, fl_sched_t *s) {
  char *colon = strchr(piece, ':');
  if (colon) *colon = '\0';
  char *name = trim(piece);
  if (!*name) return bad(spec, "missing schedule kind (kinds: %s)", kind_list);
  const kind_info *ki = kind_by_name(name);
  if (!ki) return bad(spec, "unknown kind '%s' (kinds: %s)", name, kind_list);
  s->kind = ki->kind;
  set_defaults(s);

  if (ki->kind == FL_SCHED_PIECEWISE) {
    if (!colon) return bad(spec, "piecewise needs at least one boundary (e.g. '%s')", ki->example);
    return parse_pieces(spec, colon + 1, s);
  }

  unsigned seen = 0;
  for (char *cursor = colon ? colon + 1 : NULL; cursor;) {
    int rc = parse_option(spec, ki, next_option(&cursor), s, &seen);
    if (rc) return rc;
  }
  for (int i = 0; i < MAX_KIND_KEYS && ki->keys[i]; i++) {
    key_id k = ki->keys[i];
    if ((ki->required & KEY_BIT(k)) && !(seen & KEY_BIT(k)))
      return bad(spec, "missing required key '%s' for %s (e.g. '%s')", key_info[k].name, ki->name,
                 ki->example);
  }
  /* Silently ignoring mult would run plain cosine where the user asked for growing periods. */
  if ((seen & KEY_BIT(KEY_MULT)) && !s->restart)
    return bad(spec, "'mult' needs 'restart' (e.g. 'cos:T=10,restart,mult=2')");
  return 0;
}

/* warmup:W[,start=F] */
static int parse_warmup(const char *spec, char *piece, fl_sched_t *s) {
  char *colon = strchr(piece, ':');
  if (!colon) return bad(spec, "warmup needs a length (e.g. 'warmup:5+const')");
  char *cursor = colon + 1;
  char *w = next_option(&cursor);
  uint64_t W = 0;
  if (!*w || strchr(w, '=')) return bad(spec, "warmup needs its length first (warmup:W[,start=F])");
  if (parse_uint(w, UINT64_MAX, &W) || W == 0)
    return bad(spec, "warmup length '%s' must be a whole number >= 1", w);
  s->warmup = W;
  s->warmup_start = 1.0 / (double)W;
  int have_start = 0;
  while (cursor) {
    char *opt = next_option(&cursor);
    if (!*opt) return bad(spec, "empty option for warmup (stray ',')");
    char *eq = strchr(opt, '=');
    char *val = NULL;
    if (eq) {
      *eq = '\0';
      val = trim(eq + 1);
    }
    char *key = trim(opt);
    if (strcmp(key, "start") != 0) return bad(spec, "unknown key '%s' for warmup (keys: start)", key);
    if (have_start) return bad(spec, "duplicate key 'start'");
    have_start = 1;
    if (!val) return bad(spec, "key 'start' needs a value (start=...)");
    double f = 0;
    int rc = parse_real(val, &f);
    if (rc == -1) return bad(spec, "value '%s' for start is not a number", val);
    if (rc == -2) return bad(spec, "value '%s' for start is not finite", val);
    if (f < 0 || f > 1) return bad(spec, "start=%s is out of range (must be in [0, 1])", val);
    s->warmup_start = f;
  }
  return 0;
}

/* A '+' is a sign inside a number when it follows '=' ("gamma=+0.5") or is
 * an exponent sign ("1e+3"); any other '+' joins warmup to its schedule. */
static int plus_is_sign(const char *s, size_t i) {
  size_t j = i;
  while (j > 0 && isspace((unsigned char)s[j - 1])) j--;
  if (j > 0 && s[j - 1] == '=') return 1;
  return i >= 2 && (s[i - 1] == 'e' || s[i - 1] == 'E') &&
         (isdigit((unsigned char)s[i - 2]) || s[i - 2] == '.') && isdigit((unsigned char)s[i + 1]);
}

static int has_name(const char *piece, const char *name) {
  size_t n = strlen(name);
  while (isspace((unsigned char)*piece)) piece++;
  if (strncmp(piece, name, n) != 0) return 0;
  piece += n;
  while (isspace((unsigned char)*piece)) piece++;
  return *piece == '\0' || *piece == ':' || *piece == '+';
}

static int parse_spec(const char *spec, fl_sched_t *out) {
  char buf[FL_SCHED_SPEC_MAX];
  memcpy(buf, spec, strlen(spec) + 1);
  char *text = trim(buf);
  if (!*text) {
    out->kind = FL_SCHED_CONST;
    return 0;
  }

  size_t num_plus = 0, first_plus = 0;
  for (size_t i = 0; text[i]; i++) {
    if (text[i] == '+' && !plus_is_sign(text, i) && num_plus++ == 0) first_plus = i;
  }
  if (num_plus == 0) {
    if (has_name(text, "warmup"))
      return bad(spec, "warmup needs a schedule after '+' (e.g. 'warmup:5+const')");
    return parse_kind(spec, text, out);
  }

  text[first_plus] = '\0';
  char *head = trim(text), *tail = trim(text + first_plus + 1);
  if (!*head) return bad(spec, "nothing before '+' (syntax: [warmup:W[,start=F]+]KIND[:key=value,...])");
  if (!has_name(head, "warmup"))
    return bad(spec, "only warmup:W[,start=F] may come before '+', not '%s'", head);
  if (!*tail) return bad(spec, "missing schedule after '+' (e.g. 'warmup:5+const')");
  if (has_name(tail, "warmup")) return bad(spec, "warmup cannot be nested (only one 'warmup:W+' prefix)");
  if (num_plus > 1)
    return bad(spec, "more than one '+' (syntax: [warmup:W[,start=F]+]KIND[:key=value,...])");
  int rc = parse_warmup(spec, head, out);
  if (rc) return rc;
  return parse_kind(spec, tail, out);
}

int fl_sched_parse(const char *spec, fl_sched_t *out) {
  if (!out) return fl_err_set(FL_EINVAL, "fl_sched_parse: out is NULL");
  memset(out, 0, sizeof *out);
  if (!spec) return 0; /* CONST is 0 */
  if (strnlen(spec, FL_SCHED_SPEC_MAX) == FL_SCHED_SPEC_MAX)
    return fl_err_set(FL_EINVAL, "schedule '%.40s...': longer than %d characters", spec,
                      FL_SCHED_SPEC_MAX - 1);
  int rc = parse_spec(spec, out);
  if (rc) memset(out, 0, sizeof *out);
  return rc;
}

int fl_sched_parse_local(const char *spec, fl_sched_t *out) {
  int rc = fl_sched_parse(spec, out);
  if (rc || out->kind != FL_SCHED_PLATEAU) return rc;
  memset(out, 0, sizeof *out);
  return fl_err_set(FL_EINVAL,
                    "schedule '%s': plateau follows the evaluation loss, which exists once per "
                    "round, so it cannot be a local schedule (it is a round schedule, --schedule)",
                    spec);
}

/* ---- rates -------------------------------------------------------------- */

/* First t of restart cycle n: T * (1 + mult + ... + mult^(n-1)), mult > 1. */
static double cycle_start(const fl_sched_t *s, double n) {
  return s->T * (pow(s->mult, n) - 1) / (s->mult - 1);
}

static double cos_lr(const fl_sched_t *s, double lr0, double t) {
  double cur = t, period = s->T;
  if (!s->restart) {
    if (t >= s->T) return s->min;
  } else if (s->mult == 1) {
    cur = fmod(t, s->T);
  } else {
    /* Invert cycle_start with a log (PyTorch's closed form), then move n by
     * one where rounding put t on the wrong side of a cycle boundary. */
    double n = floor(log1p(t * (s->mult - 1) / s->T) / log(s->mult));
    while (n > 0 && cycle_start(s, n) > t) n--;
    while (cycle_start(s, n + 1) <= t) n++;
    cur = t - cycle_start(s, n);
    period = s->T * pow(s->mult, n);
  }
  return s->min + (lr0 - s->min) * (1 + cos(pi * cur / period)) / 2;
}

static double inner_lr(const fl_sched_t *s, double lr0, uint64_t step, const fl_plateau_t *pl) {
  double t = (double)step, e;
  switch (s->kind) {
  case FL_SCHED_CONST: return lr0;
  case FL_SCHED_LINEAR:
    if (t >= s->T) return s->end;
    return lr0 + (s->end - lr0) * (t / s->T);
  case FL_SCHED_EXP:
    e = t / s->every;
    return lr0 * pow(s->gamma, s->staircase ? floor(e) : e);
  case FL_SCHED_INV:
    e = t / s->T;
    return lr0 / pow(1 + (s->staircase ? floor(e) : e), s->p);
  case FL_SCHED_POLY:
    return (lr0 - s->end) * pow(1 - fmin(t, s->T) / s->T, s->p) + s->end;
  case FL_SCHED_STEP: return lr0 * pow(s->gamma, floor(t / s->every));
  case FL_SCHED_PIECEWISE: {
    double f = 1;
    for (size_t i = 0; i < s->num_pieces && step >= s->piece_at[i]; i++) f = s->piece_factor[i];
    return lr0 * f;
  }
  case FL_SCHED_COS: return cos_lr(s, lr0, t);
  case FL_SCHED_PLATEAU: return fmax(lr0 * (pl ? pl->scale : 1), s->min);
  }
  return lr0;
}

double fl_sched_lr(const fl_sched_t *s, double lr0, uint64_t t, const fl_plateau_t *pl) {
  if (!s) return lr0;
  if (t < s->warmup) {
    double f = s->warmup_start;
    return inner_lr(s, lr0, 0, pl) * (f + (1 - f) * (double)t / (double)s->warmup);
  }
  return inner_lr(s, lr0, t - s->warmup, pl);
}

/* ---- reduce on plateau -------------------------------------------------- */

void fl_plateau_init(fl_plateau_t *pl) {
  pl->best = INFINITY;
  pl->scale = 1;
  pl->num_bad = 0;
  pl->cooldown_left = 0;
}

/* Same order as torch.optim.lr_scheduler.ReduceLROnPlateau.step() with
 * mode='min', threshold_mode='rel', so traces match PyTorch step for step. */
int fl_plateau_observe(const fl_sched_t *s, fl_plateau_t *pl, double metric) {
  if (!s || !pl || s->kind != FL_SCHED_PLATEAU) return 0;
  /* -inf would become a best that nothing can beat; NaN compares false anyway. */
  if (isfinite(metric) && metric < pl->best * (1 - s->threshold)) {
    pl->best = metric;
    pl->num_bad = 0;
  } else if (pl->num_bad < UINT32_MAX) {
    pl->num_bad++;
  }
  if (pl->cooldown_left > 0) {
    pl->cooldown_left--;
    pl->num_bad = 0;
  }
  if (pl->num_bad > s->patience) {
    /* The floor is applied in fl_sched_lr (max(lr0*scale, min)), which gives
     * the same rates as PyTorch's per-step max(lr*factor, min_lr). */
    pl->scale *= s->factor;
    pl->cooldown_left = s->cooldown;
    pl->num_bad = 0;
    return 1;
  }
  return 0;
}

/* ---- formatting --------------------------------------------------------- */

typedef struct {
  char *buf;
  size_t len;
  size_t pos; /* length the full output would have */
} out_t;

static void put(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out_t *o, const char *fmt, ...) {
  size_t room = o->pos < o->len ? o->len - o->pos : 0;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(room ? o->buf + o->pos : NULL, room, fmt, ap);
  va_end(ap);
  if (n > 0) o->pos += (size_t)n;
}

/* Shortest of %.15g / %.17g that reads back as exactly v, so "0.1" stays
 * "0.1" and every value still round-trips bit for bit. */
static const char *real_text(double v, char buf[32]) {
  snprintf(buf, 32, "%.15g", v);
  if (strtod(buf, NULL) != v) snprintf(buf, 32, "%.17g", v);
  return buf;
}

static void put_key(out_t *o, const fl_sched_t *s, key_id k, int first) {
  char num[32];
  const char *sep = first ? ":" : ",";
  switch (k) {
  case KEY_STAIRCASE:
    if (s->staircase) put(o, "%sstaircase", sep);
    return;
  case KEY_RESTART:
    if (s->restart) put(o, "%srestart", sep);
    return;
  case KEY_MULT:
    if (s->restart) put(o, "%smult=%s", sep, real_text(s->mult, num));
    return;
  case KEY_PATIENCE: put(o, "%spatience=%u", sep, (unsigned)s->patience); return;
  case KEY_COOLDOWN: put(o, "%scooldown=%u", sep, (unsigned)s->cooldown); return;
  default: break;
  }
  double v = 0;
  switch (k) {
  case KEY_GAMMA: v = s->gamma; break;
  case KEY_EVERY: v = s->every; break;
  case KEY_T: v = s->T; break;
  case KEY_P:
  case KEY_POWER: v = s->p; break;
  case KEY_END: v = s->end; break;
  case KEY_MIN: v = s->min; break;
  case KEY_FACTOR: v = s->factor; break;
  case KEY_THRESHOLD: v = s->threshold; break;
  default: break;
  }
  put(o, "%s%s=%s", sep, key_info[k].name, real_text(v, num));
}

/* Every value is written out, defaults included, so a spec sent to a client
 * or stored in a checkpoint does not depend on the reader's defaults. */
int fl_sched_format(const fl_sched_t *s, char *buf, size_t len) {
  out_t o = {buf, len, 0};
  char num[32];
  if (len) buf[0] = '\0';
  const kind_info *ki = s ? kind_by_id(s->kind) : NULL;
  if (!ki) {
    put(&o, "invalid");
    return (int)o.pos;
  }
  if (s->warmup)
    put(&o, "warmup:%llu,start=%s+", (unsigned long long)s->warmup, real_text(s->warmup_start, num));
  put(&o, "%s", ki->name);
  if (ki->kind == FL_SCHED_PIECEWISE) {
    for (size_t i = 0; i < s->num_pieces && i < FL_SCHED_MAX_PIECES; i++)
      put(&o, "%s%llu=%s", i ? "," : ":", (unsigned long long)s->piece_at[i],
          real_text(s->piece_factor[i], num));
  }
  for (int i = 0; i < MAX_KIND_KEYS && ki->keys[i]; i++) put_key(&o, s, ki->keys[i], i == 0);
  return (int)o.pos;
}

double fl_sched_lr_heuristic(size_t num_params, double scale) {
  /* A model without parameters has no rate to scale; avoid returning inf. */
  if (num_params == 0) return scale;
  return scale / sqrt((double)num_params);
}

int fl_sched_parse_lr0(const char *text, size_t num_params, double *lr0) {
  if (!text) return fl_err_set(FL_EINVAL, "fl_sched_parse_lr0: NULL text");
  int is_auto = !strcmp(text, "auto") || !strncmp(text, "auto:", 5);
  const char *num = !strcmp(text, "auto") ? "1" : is_auto ? text + 5 : text;
  char *end;
  errno = 0;
  double v = strtod(num, &end);
  /* A number from the first character (strtod would skip blanks) to the
   * end, neither underflowing to a denormal nor overflowing to inf. */
  if (isspace((unsigned char)num[0]) || end == num || *end || errno == ERANGE || !isfinite(v) ||
      !(v > 0))
    return fl_err_set(FL_EINVAL, "'%s' is not a positive number, auto or auto:SCALE (SCALE > 0)",
                      text);
  if (!lr0) return 0;
  if (is_auto && num_params == 0)
    return fl_err_set(FL_EINVAL, "'%s' needs the model's parameter count", text);
  *lr0 = is_auto ? fl_sched_lr_heuristic(num_params, v) : v;
  return 0;
}
