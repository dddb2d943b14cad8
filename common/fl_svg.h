/* fl_svg: the pieces of fedlr's SVG charts, so that every chart (a run's
 * chart.svg from fl_metrics, a sweep's curves.svg) looks the same: 900 px
 * wide, stacked panels against the round with grid lines, tick labels and
 * a bold title each, series as polylines thinned to one point per half
 * pixel, dots where points are few.
 *
 * Everything is appended to an fl_sbuf_t; nothing here fails on its own
 * (a full buffer sticks in its err). Values that are NaN or infinite are
 * never printed: callers map them through an axis, which clamps. */
#ifndef FL_SVG_H
#define FL_SVG_H

#include <math.h>
#include <stddef.h>

#include "fl_sbuf.h"

/* The geometry: a panel's plot spans x in [PLOT_L, PLOT_R] and PANEL_H
 * pixels down from its top; panel i's top is PANEL_TOP + i * PANEL_STEP. */
enum {
  FL_SVG_W = 900,
  FL_SVG_PLOT_L = 80,
  FL_SVG_PLOT_R = 870,
  FL_SVG_PANEL_H = 160,
  FL_SVG_PANEL_TOP = 60,
  FL_SVG_PANEL_STEP = 205
};

/* Appends s as XML text or attribute value: escapes markup, drops the
 * control bytes that XML 1.0 forbids. */
void fl_svg_text(fl_sbuf_t *b, const char *s);

/* Opens the document: the <svg> element (FL_SVG_W wide, `height` high),
 * its <title>, a white background and the title centred at the top. The
 * caller ends it with "</svg>\n". */
void fl_svg_begin(fl_sbuf_t *b, int height, const char *title);

/* An axis: data value v maps to (t(v) - lo) / (hi - lo) of the length, with
 * t = log10 when log is set. Ticks at lo, lo + step, ..., hi (in t units). */
typedef struct {
  double lo, hi, step;
  int log;
} fl_svg_axis_t;

/* The finite values a panel shows: start from FL_SVG_RANGE_INIT and
 * fl_svg_range_add() each value (non-finite ones are not counted). */
typedef struct {
  double mn, mx, pos_mn; /* least, greatest, least positive */
  size_t count;
} fl_svg_range_t;
#define FL_SVG_RANGE_INIT                                                                          \
  { INFINITY, -INFINITY, INFINITY, 0 }
void fl_svg_range_add(fl_svg_range_t *r, double v);

/* How a panel's y axis is chosen from its range. */
enum {
  FL_SVG_Y_UNIT, /* linear, clamped to [0, 1] (accuracies) */
  FL_SVG_Y_AUTO, /* linear over the range */
  FL_SVG_Y_RATE  /* linear, or log10 when the positive values span more than two decades
                  * (a decaying rate, a diverging loss); values <= 0 then cannot be drawn */
};
void fl_svg_y_axis(fl_svg_axis_t *a, int kind, const fl_svg_range_t *r);

/* The x axis of rounds rmin..rmax: integer ticks, a single round centred. */
void fl_svg_round_axis(fl_svg_axis_t *a, double rmin, double rmax);

/* Position of v in [0, 1] along the axis, clamped. */
double fl_svg_axis_frac(const fl_svg_axis_t *a, double v);

/* Can v be drawn on the axis? Not if it is not finite, or <= 0 on a log
 * axis. */
int fl_svg_plottable(double v, const fl_svg_axis_t *a);

/* A panel's frame at `top`: its bold title (with " (log scale)" on a log y
 * axis), grid lines at the ticks of both axes, y tick labels, x tick
 * labels if x_labels, and the border. */
void fl_svg_panel_frame(fl_sbuf_t *b, const char *title, const fl_svg_axis_t *xa,
                        const fl_svg_axis_t *ya, double top, int x_labels);

/* "no data" in the middle of the panel at `top`. */
void fl_svg_panel_no_data(fl_sbuf_t *b, double top);

/* The usual start of a panel at `top`, in one call: opens it as a
 * <g class="panel"> that the caller closes with "</g>\n" after drawing in
 * it, sets *ya to the y axis of `kind` for the range of its values
 * (fl_svg_y_axis), draws its frame (fl_svg_panel_frame) and "no data" if
 * the range is empty. Returns range->count (0: nothing to draw). */
size_t fl_svg_panel_begin(fl_sbuf_t *b, const char *title, int kind, const fl_svg_range_t *range,
                          const fl_svg_axis_t *xa, double top, int x_labels, fl_svg_axis_t *ya);

/* "round", the x axis's title, under the last of num_panels panels. */
void fl_svg_round_title(fl_sbuf_t *b, int num_panels);

/* Series colours that can be told apart (matplotlib's "tab10"): the i-th,
 * i taken modulo FL_SVG_NUM_COLORS. */
#define FL_SVG_NUM_COLORS 10
const char *fl_svg_color(size_t i);

/* The point i (0 <= i < n) of a series: returns its value (NaN: not
 * measured there) and sets *x, its position on the x axis (the round). */
typedef double (*fl_svg_point_fn)(const void *ctx, size_t i, double *x);

/* Draws a series in the panel at `top` as a polyline of `color`, with a
 * dot at each point if markers. NaN points are skipped and the line joins
 * their measured neighbours (--eval-every 10 would otherwise be dots);
 * a point that cannot be drawn (infinite: divergence; <= 0 on a log axis)
 * breaks it. A lone point gets a dot. */
void fl_svg_series(fl_sbuf_t *b, const char *color, size_t n, fl_svg_point_fn point,
                   const void *ctx, const fl_svg_axis_t *xa, const fl_svg_axis_t *ya, double top,
                   int markers);

/* A legend entry: a short line of `color` from x, then the label, on the
 * baseline y. */
void fl_svg_legend_entry(fl_sbuf_t *b, int x, double y, const char *color, const char *label);

#endif
