/* fl_attack: a malicious client's behaviour (--attack), for research and
 * tests. The client trainer applies it to the trained delta just before
 * encoding (fl_trainer.h), so fedlr-sim's virtual clients and a
 * fedlr-client process attack identically:
 *   sign-flip     sends -delta
 *   scale:K       sends K * delta (with sign-flip: -K * delta)
 *   nan           one coordinate of the delta (index: the round's client
 *                 seed mod the parameter count) is NaN
 *   examples:N    the update claims N examples (training uses the real
 *                 ones); fedlr-sim also registers the client with N */
#ifndef FL_ATTACK_H
#define FL_ATTACK_H

#include <stddef.h>
#include <stdint.h>

/* The sent delta is (sign_flip ? -1 : 1) * scale * delta, then one
 * coordinate is NaN if `nan`; the update (and fedlr-sim's registration)
 * claims `examples` examples instead of the true count if that is not 0.
 * "none" is {0, 1.0, 0, 0}: an honest client. */
typedef struct {
  int sign_flip;     /* send -delta */
  double scale;      /* send scale * delta; 1 = off */
  int nan;           /* one coordinate is NaN */
  uint64_t examples; /* examples claimed; 0 = the true count */
} fl_attack_t;

/* Parses an attack spec: "none", or a comma-separated combination of
 * "sign-flip", "scale:K" (K finite and not 0), "nan" and "examples:N"
 * (N >= 1), each at most once. 0, or FL_EINVAL with a message naming the
 * spec and the forms (without a flag: the caller adds it); *a is "none"
 * on error, never half an attack. */
int fl_attack_parse(const char *spec, fl_attack_t *a);

/* 1 if *a changes anything (is not "none"); 0 for NULL. */
int fl_attack_active(const fl_attack_t *a);

/* Turns the honest delta d (n >= 1 floats) into the attack's, `seed` being
 * the round's client seed (it picks the NaN coordinate). */
void fl_attack_apply(const fl_attack_t *a, float *d, size_t n, uint64_t seed);

#endif
