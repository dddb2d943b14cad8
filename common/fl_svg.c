/* fl_svg: see fl_svg.h. */
#include "fl_svg.h"

#include <math.h>
#include <stdio.h>

void fl_svg_text(fl_sbuf_t *b, const char *s) {
  for (; *s; s++) {
    switch (*s) {
    case '&': fl_sbuf_printf(b, "&amp;"); break;
    case '<': fl_sbuf_printf(b, "&lt;"); break;
    case '>': fl_sbuf_printf(b, "&gt;"); break;
    case '"': fl_sbuf_printf(b, "&quot;"); break;
    case '\'': fl_sbuf_printf(b, "&apos;"); break;
    default:
      if ((unsigned char)*s >= 0x20) fl_sbuf_printf(b, "%c", *s);
    }
  }
}

void fl_svg_begin(fl_sbuf_t *b, int height, const char *title) {
  fl_sbuf_printf(b,
                 "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" "
                 "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" "
                 "font-size=\"12\">\n",
                 FL_SVG_W, height, FL_SVG_W, height);
  fl_sbuf_printf(b, "<title>");
  fl_svg_text(b, title);
  fl_sbuf_printf(b, "</title>\n<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", FL_SVG_W,
                 height);
  fl_sbuf_printf(b, "<text x=\"%d\" y=\"30\" text-anchor=\"middle\" font-size=\"16\">",
                 FL_SVG_W / 2);
  fl_svg_text(b, title);
  fl_sbuf_printf(b, "</text>\n");
}

/* ---- axes ---- */

void fl_svg_range_add(fl_svg_range_t *r, double v) {
  if (!isfinite(v)) return;
  r->mn = fmin(r->mn, v), r->mx = fmax(r->mx, v);
  if (v > 0) r->pos_mn = fmin(r->pos_mn, v);
  r->count++;
}

/* 1, 2 or 5 times a power of ten, near x. */
static double nice_step(double x) {
  double e = floor(log10(x)), f = x / pow(10, e);
  double nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
  return nf * pow(10, e);
}

static void axis_linear(fl_svg_axis_t *a, double mn, double mx, int ticks) {
  if (!(mn <= mx)) mn = 0, mx = 1; /* no data */
  if (mx - mn <= 1e-12 * fmax(1, fabs(mx))) {
    double pad = mn == 0 ? 1 : fabs(mn) * 0.1;
    mn -= pad, mx += pad;
  }
  a->log = 0;
  a->step = nice_step((mx - mn) / ticks);
  a->lo = floor(mn / a->step) * a->step;
  a->hi = ceil(mx / a->step) * a->step;
}

void fl_svg_y_axis(fl_svg_axis_t *a, int kind, const fl_svg_range_t *r) {
  /* A rate that decays over more than two decades is flat on a linear axis
   * after the first few rounds; on a log axis its whole course shows. Zero
   * rates (end of a linear decay) cannot be drawn there and are left out. */
  if (kind == FL_SVG_Y_RATE && r->count && r->pos_mn < INFINITY && r->mx / r->pos_mn > 100) {
    a->log = 1;
    a->lo = floor(log10(r->pos_mn));
    a->hi = ceil(log10(r->mx));
    a->step = ceil((a->hi - a->lo) / 8);
    a->hi = a->lo + a->step * ceil((a->hi - a->lo) / a->step);
    return;
  }
  axis_linear(a, r->count ? r->mn : NAN, r->count ? r->mx : NAN, 4);
  if (kind == FL_SVG_Y_UNIT) {
    a->lo = fmax(a->lo, 0);
    a->hi = fmin(a->hi, 1);
    if (!(a->hi > a->lo)) a->lo = 0, a->hi = 1, a->step = 0.2;
  }
}

void fl_svg_round_axis(fl_svg_axis_t *a, double rmin, double rmax) {
  if (rmin == rmax) rmin -= 1, rmax += 1; /* one round: centre it */
  axis_linear(a, rmin, rmax, 8);
  if (a->step < 1) { /* rounds are integers */
    a->step = 1;
    a->lo = floor(rmin), a->hi = ceil(rmax);
  }
  if (a->lo < 0) a->lo = 0;
}

static double axis_t_of(const fl_svg_axis_t *a, double v) {
  return a->log ? log10(v) : v;
}

double fl_svg_axis_frac(const fl_svg_axis_t *a, double v) {
  double t = (axis_t_of(a, v) - a->lo) / (a->hi - a->lo);
  return t < 0 ? 0 : t > 1 ? 1 : t;
}

static int axis_num_ticks(const fl_svg_axis_t *a) {
  return (int)floor((a->hi - a->lo) / a->step + 1e-9) + 1;
}

static void axis_tick_label(const fl_svg_axis_t *a, int k, char *buf, size_t len) {
  double t = a->lo + k * a->step;
  if (a->log) {
    int e = (int)lround(t);
    if (e >= -3 && e <= 3)
      snprintf(buf, len, "%g", pow(10, e));
    else
      snprintf(buf, len, "1e%d", e);
    return;
  }
  if (fabs(t) < a->step * 1e-9) t = 0; /* no "-0" */
  int dec = a->step >= 1 ? 0 : (int)ceil(-log10(a->step) - 1e-9);
  snprintf(buf, len, "%.*f", dec, t);
}

int fl_svg_plottable(double v, const fl_svg_axis_t *a) {
  return isfinite(v) && (!a->log || v > 0);
}

/* ---- panels ---- */

void fl_svg_panel_frame(fl_sbuf_t *b, const char *title, const fl_svg_axis_t *xa,
                        const fl_svg_axis_t *ya, double top, int x_labels) {
  const double bottom = top + FL_SVG_PANEL_H;
  const int ny = axis_num_ticks(ya), nx = axis_num_ticks(xa);
  char label[32];

  fl_sbuf_printf(b, "<text x=\"%d\" y=\"%.0f\" font-size=\"14\" font-weight=\"bold\">",
                 FL_SVG_PLOT_L, top - 10);
  fl_svg_text(b, title);
  fl_sbuf_printf(b, "%s</text>\n", ya->log ? " (log scale)" : "");

  /* Grid and tick labels. */
  fl_sbuf_printf(b, "<g stroke=\"#e0e0e0\" stroke-width=\"1\">\n");
  for (int k = 0; k < ny; k++) {
    double y = bottom - (double)k / (ny - 1) * FL_SVG_PANEL_H;
    fl_sbuf_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>\n", FL_SVG_PLOT_L, y,
                   FL_SVG_PLOT_R, y);
  }
  for (int k = 0; k < nx; k++) {
    double x = FL_SVG_PLOT_L + (double)k / (nx - 1) * (FL_SVG_PLOT_R - FL_SVG_PLOT_L);
    fl_sbuf_printf(b, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\"/>\n", x, top, x,
                   bottom);
  }
  fl_sbuf_printf(b, "</g>\n<g font-size=\"11\" fill=\"#333\">\n");
  for (int k = 0; k < ny; k++) {
    double y = bottom - (double)k / (ny - 1) * FL_SVG_PANEL_H;
    axis_tick_label(ya, k, label, sizeof label);
    fl_sbuf_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                   FL_SVG_PLOT_L - 6, y + 4, label);
  }
  if (x_labels) {
    for (int k = 0; k < nx; k++) {
      double x = FL_SVG_PLOT_L + (double)k / (nx - 1) * (FL_SVG_PLOT_R - FL_SVG_PLOT_L);
      axis_tick_label(xa, k, label, sizeof label);
      fl_sbuf_printf(b, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%s</text>\n", x,
                     bottom + 16, label);
    }
  }
  fl_sbuf_printf(b, "</g>\n");
  fl_sbuf_printf(
      b, "<rect x=\"%d\" y=\"%.0f\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#888\"/>\n",
      FL_SVG_PLOT_L, top, FL_SVG_PLOT_R - FL_SVG_PLOT_L, FL_SVG_PANEL_H);
}

void fl_svg_panel_no_data(fl_sbuf_t *b, double top) {
  fl_sbuf_printf(b,
                 "<text x=\"%d\" y=\"%.0f\" text-anchor=\"middle\" fill=\"#888\">no data</text>\n",
                 (FL_SVG_PLOT_L + FL_SVG_PLOT_R) / 2, top + FL_SVG_PANEL_H / 2.0);
}

size_t fl_svg_panel_begin(fl_sbuf_t *b, const char *title, int kind, const fl_svg_range_t *range,
                          const fl_svg_axis_t *xa, double top, int x_labels, fl_svg_axis_t *ya) {
  fl_svg_y_axis(ya, kind, range);
  fl_sbuf_printf(b, "<g class=\"panel\">\n");
  fl_svg_panel_frame(b, title, xa, ya, top, x_labels);
  if (range->count == 0) fl_svg_panel_no_data(b, top);
  return range->count;
}

void fl_svg_round_title(fl_sbuf_t *b, int num_panels) {
  fl_sbuf_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">round</text>\n",
                 (FL_SVG_PLOT_L + FL_SVG_PLOT_R) / 2,
                 FL_SVG_PANEL_TOP + (num_panels - 1) * FL_SVG_PANEL_STEP + FL_SVG_PANEL_H + 36);
}

const char *fl_svg_color(size_t i) {
  static const char *const colors[FL_SVG_NUM_COLORS] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                                        "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                                                        "#bcbd22", "#17becf"};
  return colors[i % FL_SVG_NUM_COLORS];
}

/* ---- series ---- */

/* One series' polyline being written: points are thinned to one per half
 * pixel, so a 10-million-round run still gives a chart of bounded size; the
 * last thinned-out point is held back and kept if it ends the line. */
typedef struct {
  fl_sbuf_t *b;
  const char *color;
  size_t n;      /* points written to the open polyline */
  double last_x; /* x of the last point written */
  int held;      /* a thinned-out point is waiting in hx, hy */
  double hx, hy;
  double fx, fy; /* the first point, for a lone-point marker */
} line_t;

static void line_write(line_t *L, double x, double y) {
  if (L->n == 0) {
    fl_sbuf_printf(L->b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"",
                   L->color);
    L->fx = x, L->fy = y;
  }
  fl_sbuf_printf(L->b, "%s%.1f,%.1f", L->n ? " " : "", x, y);
  L->n++;
  L->last_x = x;
}

static void line_add(line_t *L, double x, double y) {
  if (L->n > 0 && x - L->last_x < 0.5) {
    L->held = 1, L->hx = x, L->hy = y;
    return;
  }
  L->held = 0;
  line_write(L, x, y);
}

/* Ends the polyline; a lone point gets a dot, which a polyline does not show
 * (unless every point gets one anyway). */
static void line_close(line_t *L, int markers) {
  if (L->held) line_write(L, L->hx, L->hy);
  if (L->n > 0) fl_sbuf_printf(L->b, "\"/>\n");
  if (L->n == 1 && !markers)
    fl_sbuf_printf(L->b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n", L->fx, L->fy,
                   L->color);
  L->n = 0, L->held = 0;
}

void fl_svg_series(fl_sbuf_t *b, const char *color, size_t n, fl_svg_point_fn point,
                   const void *ctx, const fl_svg_axis_t *xa, const fl_svg_axis_t *ya, double top,
                   int markers) {
  const double w = FL_SVG_PLOT_R - FL_SVG_PLOT_L;
  line_t L = {.b = b, .color = color};
  for (int pass = 0; pass < 1 + markers; pass++) {
    fl_sbuf_printf(b, "<g class=\"%s\">\n", pass ? "markers" : "series");
    for (size_t i = 0; i < n; i++) {
      double round, v = point(ctx, i, &round);
      if (isnan(v)) continue;
      if (!fl_svg_plottable(v, ya)) {
        if (pass == 0) line_close(&L, markers);
        continue;
      }
      double x = FL_SVG_PLOT_L + fl_svg_axis_frac(xa, round) * w;
      double y = top + FL_SVG_PANEL_H - fl_svg_axis_frac(ya, v) * FL_SVG_PANEL_H;
      if (pass == 0)
        line_add(&L, x, y);
      else
        fl_sbuf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2\" fill=\"%s\"/>\n", x, y, color);
    }
    if (pass == 0) line_close(&L, markers);
    fl_sbuf_printf(b, "</g>\n");
  }
}

void fl_svg_legend_entry(fl_sbuf_t *b, int x, double y, const char *color, const char *label) {
  fl_sbuf_printf(
      b, "<line x1=\"%d\" y1=\"%.0f\" x2=\"%d\" y2=\"%.0f\" stroke=\"%s\" stroke-width=\"2\"/>\n",
      x, y - 4, x + 20, y - 4, color);
  fl_sbuf_printf(b, "<text x=\"%d\" y=\"%.0f\">", x + 26, y);
  fl_svg_text(b, label);
  fl_sbuf_printf(b, "</text>\n");
}
