/* fl_rng: deterministic pseudo-random numbers (xoshiro256**, seeded by
 * splitmix64). A value type: copy it to fork a stream. Every random choice in
 * fedlr comes from an fl_rng_t seeded by fl_rng_derive() of the run seed and
 * the choice's coordinates (round, client, purpose), so results never depend
 * on thread scheduling or on how many rounds ran before a resume. */
#ifndef FL_RNG_H
#define FL_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint64_t s[4];
} fl_rng_t;

/* Purposes for fl_rng_derive(), so different uses never share a stream. */
enum {
  FL_RNG_INIT = 1,      /* model initialization */
  FL_RNG_PARTITION = 2, /* data partitioning */
  FL_RNG_SAMPLE = 3,    /* per-round client sampling */
  FL_RNG_CLIENT = 4,    /* per-round, per-client training seed */
  FL_RNG_ATTACKERS = 5, /* fedlr-sim: which virtual clients attack */
  FL_RNG_HOLDOUT = 6,   /* a client's held-out evaluation examples */
  FL_RNG_EVAL = 7,      /* per-round sampling of evaluating clients */
  FL_RNG_TEST = 99
};

/* A 64-bit seed that depends on all four inputs (splitmix64 chain). */
uint64_t fl_rng_derive(uint64_t seed, uint64_t purpose, uint64_t a, uint64_t b);

void fl_rng_seed(fl_rng_t *r, uint64_t seed);
uint64_t fl_rng_u64(fl_rng_t *r);
/* Uniform in [0, 1) with 53 random bits. */
double fl_rng_uniform(fl_rng_t *r);
/* Uniform integer in [0, n), unbiased (Lemire). n must be > 0. */
uint64_t fl_rng_below(fl_rng_t *r, uint64_t n);
/* Standard normal (Box-Muller, no cached second value: stateless beyond s). */
double fl_rng_normal(fl_rng_t *r);
/* Gamma(shape, 1) for shape > 0 (Marsaglia-Tsang, with the shape<1 boost). */
double fl_rng_gamma(fl_rng_t *r, double shape);
/* Fisher-Yates shuffle of v[0..n). */
void fl_rng_shuffle_u32(fl_rng_t *r, uint32_t *v, size_t n);

#endif
