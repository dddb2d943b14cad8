/* fl_sched: learning-rate schedules, the heart of fedlr.
 *
 * A schedule maps a time index t (0-based: round r uses t = r-1; a local
 * schedule uses the local epoch or step) and an initial rate lr0 to a rate.
 * Schedules are plain values parsed from a text spec:
 *
 *   [warmup:W[,start=F]+]KIND[:key=value,...]
 *
 * KIND (defaults in brackets; absolute rates are `end`/`min`):
 *   const                               lr0
 *   linear:T=N[,end=0]                  lr0 -> end linearly over T, then end
 *   exp:gamma=G[,every=1][,staircase]   lr0 * G^(t/every)   (floor() if staircase)
 *   inv:T=N[,p=1][,staircase]           lr0 / (1 + t/T)^p   (floor(t/T) if staircase)
 *   poly:T=N[,power=1][,end=0]          (lr0-end)*(1-min(t,T)/T)^power + end   (Keras)
 *   step:gamma=G,every=N                lr0 * G^floor(t/every)                 (StepLR)
 *   piecewise:T1=F1,T2=F2,...           lr0 for t<T1, lr0*F1 for T1<=t<T2, ...  (T ascending)
 *   cos:T=N[,min=0][,restart][,mult=1]  min + (lr0-min)(1+cos(pi*t/T))/2, then min; with
 *                                       restart: SGDR warm restarts, period T, times mult
 *   plateau[:factor=0.1,patience=10,cooldown=0,min=0,threshold=1e-4]
 *                                       ReduceLROnPlateau (mode min, relative threshold),
 *                                       driven by fl_plateau_observe() with the eval loss
 * warmup:W[,start=F] (F default 1/W): for t < W, lr = inner(0) * (F + (1-F)*t/W);
 *   for t >= W, inner(t - W). Composes with any KIND.
 *
 * The initial rate lr0 is a number or auto[:SCALE], SCALE/sqrt(n_params)
 * (fl_sched_parse_lr0, fl_sched_lr_heuristic).
 */
#ifndef FL_SCHED_H
#define FL_SCHED_H

#include <stddef.h>
#include <stdint.h>

#define FL_SCHED_MAX_PIECES 32
#define FL_SCHED_SPEC_MAX 256

typedef enum {
  FL_SCHED_CONST = 0,
  FL_SCHED_LINEAR,
  FL_SCHED_EXP,
  FL_SCHED_INV,
  FL_SCHED_POLY,
  FL_SCHED_STEP,
  FL_SCHED_PIECEWISE,
  FL_SCHED_COS,
  FL_SCHED_PLATEAU
} fl_sched_kind_t;

typedef struct {
  fl_sched_kind_t kind;
  double gamma;   /* exp, step */
  double every;   /* exp, step */
  double T;       /* linear, inv, poly, cos (period) */
  double p;       /* inv exponent; poly power */
  double end;     /* linear, poly: final absolute rate */
  double min;     /* cos, plateau: floor, absolute rate */
  double mult;    /* cos restart period multiplier */
  int staircase;  /* exp, inv */
  int restart;    /* cos */
  double factor;  /* plateau */
  double threshold; /* plateau, relative */
  uint32_t patience, cooldown; /* plateau */
  size_t num_pieces;
  uint64_t piece_at[FL_SCHED_MAX_PIECES];   /* piecewise boundaries, ascending */
  double piece_factor[FL_SCHED_MAX_PIECES]; /* lr0 multipliers from each boundary */
  uint64_t warmup;      /* 0 = no warmup */
  double warmup_start;  /* F */
} fl_sched_t;

/* Mutable state of reduce-on-plateau; a plain value, saved in checkpoints. */
typedef struct {
  double best;          /* best metric so far (+inf initially) */
  double scale;         /* current lr multiplier, starts at 1 */
  uint32_t num_bad;     /* evaluations without improvement */
  uint32_t cooldown_left;
} fl_plateau_t;

/* Parses `spec` into `out`. On error returns FL_EINVAL, sets fl_err_msg() to a
 * message naming the bad part (e.g. "schedule 'exp:gama=0.9': unknown key
 * 'gama' for exp (keys: gamma, every, staircase)"), and leaves *out zeroed.
 * NULL or "" parses as const. */
int fl_sched_parse(const char *spec, fl_sched_t *out);

/* Parses a local schedule (one within a round, over local epochs or steps):
 * fl_sched_parse(), and plateau is refused, since it follows the evaluation
 * loss, which exists once per round. The one check of a local schedule: the
 * command line uses it (--local-schedule), and a client on every RoundStart
 * it receives. 0, or FL_EINVAL with a message naming the spec; *out is
 * zeroed on error. */
int fl_sched_parse_local(const char *spec, fl_sched_t *out);

/* Rate at time t for initial rate lr0. `pl` is the plateau state (used only
 * by plateau schedules; may be NULL, meaning scale 1). Pure. */
double fl_sched_lr(const fl_sched_t *s, double lr0, uint64_t t, const fl_plateau_t *pl);

void fl_plateau_init(fl_plateau_t *pl);

/* Feeds one evaluation metric (lower is better) to a plateau schedule;
 * no-op for other kinds. Returns 1 if the rate was reduced, else 0. */
int fl_plateau_observe(const fl_sched_t *s, fl_plateau_t *pl, double metric);

/* Canonical text form of `s` (parses back to an equal schedule). Returns the
 * length written (truncated like snprintf). */
int fl_sched_format(const fl_sched_t *s, char *buf, size_t len);

/* The 1/sqrt(n_params) initial-rate heuristic, times `scale`. */
double fl_sched_lr_heuristic(size_t num_params, double scale);

/* Parses an initial rate (--lr): a positive finite number ("0.05"), "auto"
 * or "auto:SCALE" (SCALE > 0) = fl_sched_lr_heuristic(num_params, SCALE).
 * With lr0 NULL only the text is checked (num_params is not needed); else
 * *lr0 receives the rate, and "auto" needs num_params >= 1. 0, or FL_EINVAL
 * with a message naming the text (without a flag: the caller adds it);
 * *lr0 is unchanged on error. */
int fl_sched_parse_lr0(const char *text, size_t num_params, double *lr0);

#endif
