/* fl_attack: see fl_attack.h. */
#include "fl_attack.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"

/* The parts of a spec, one bit each: every part at most once. */
enum { PART_SIGN_FLIP = 1, PART_NAN = 2, PART_SCALE = 4, PART_EXAMPLES = 8 };

static const char forms[] = "none, or sign-flip, scale:K, nan, examples:N separated by commas";

int fl_attack_parse(const char *spec, fl_attack_t *a) {
  if (!spec || !a) return fl_err_set(FL_EINVAL, "fl_attack_parse: NULL argument");
  fl_attack_t r = {0, 1.0, 0, 0};
  *a = r;
  if (!strcmp(spec, "none")) return 0;
  unsigned seen = 0;
  for (const char *p = spec;;) {
    size_t n = strcspn(p, ",");
    char tok[64];
    if (n == 0 || n >= sizeof tok)
      return fl_err_set(FL_EINVAL, "'%s': empty or overlong part (%s)", spec, forms);
    memcpy(tok, p, n);
    tok[n] = '\0';
    unsigned part;
    char *end;
    if (!strcmp(tok, "sign-flip")) {
      part = PART_SIGN_FLIP;
      r.sign_flip = 1;
    } else if (!strcmp(tok, "nan")) {
      part = PART_NAN;
      r.nan = 1;
    } else if (!strncmp(tok, "scale:", 6)) {
      part = PART_SCALE;
      const char *num = tok + 6;
      errno = 0;
      r.scale = strtod(num, &end);
      if (isspace((unsigned char)num[0]) || end == num || *end || errno == ERANGE ||
          !isfinite(r.scale) || r.scale == 0)
        return fl_err_set(FL_EINVAL, "'%s': scale:K needs a finite K other than 0", spec);
    } else if (!strncmp(tok, "examples:", 9)) {
      part = PART_EXAMPLES;
      const char *num = tok + 9;
      errno = 0;
      r.examples = strtoull(num, &end, 10);
      /* Digits only: strtoull would take a sign and wrap "-1". */
      if (!isdigit((unsigned char)num[0]) || *end || errno == ERANGE || r.examples == 0)
        return fl_err_set(FL_EINVAL, "'%s': examples:N needs an integer N >= 1", spec);
    } else {
      return fl_err_set(FL_EINVAL, "'%s': unknown attack '%s' (%s)", spec, tok, forms);
    }
    if (seen & part) return fl_err_set(FL_EINVAL, "'%s': '%s' given twice", spec, tok);
    seen |= part;
    if (!p[n]) break;
    p += n + 1;
  }
  *a = r;
  return 0;
}

int fl_attack_active(const fl_attack_t *a) {
  return a && (a->sign_flip || a->scale != 1.0 || a->nan || a->examples);
}

/* After training's finiteness check: the point is to send what an honest
 * client would not. */
void fl_attack_apply(const fl_attack_t *a, float *d, size_t n, uint64_t seed) {
  double f = (a->sign_flip ? -1.0 : 1.0) * a->scale;
  if (f != 1.0)
    for (size_t i = 0; i < n; i++)
      d[i] = (float)((double)d[i] * f);
  if (a->nan) d[seed % n] = NAN;
}
