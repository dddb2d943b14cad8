/* fl_metrics: per-round records in memory, mirrored line by line to a JSON
 * Lines file, plus the progress line and an SVG chart drawn from the
 * records.
 *
 * The file never holds a partial line, and loses none while the process
 * lives and its queue (64 MiB) has room: each line goes out in one write() (O_APPEND, so it lands
 * at the end); if the write comes up short or fails (a full disk), the
 * file is cut back to its last complete line and the line stays queued,
 * with every later one, to be written in order at the next add or at
 * fl_metrics_flush(). */
#include "fl_metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fl_error.h"
#include "fl_file.h"
#include "fl_sbuf.h"
#include "fl_svg.h"

struct fl_metrics {
  fl_round_metrics_t *rec; /* (n) records, cap allocated */
  size_t n, cap;
  /* the JSON Lines file; fd -1: memory only */
  int fd;
  char *path;
  int regular;     /* a regular file, which a partial line can be cut off */
  uint64_t good;   /* the file's size up to its last complete line */
  int cut_pending; /* a partial line is still in the file: cut it first */
  fl_sbuf_t queue; /* lines not written yet, in order, each ending in '\n' (at most
                    * FL_SBUF_MAX_BYTES) */
  size_t queue_at; /* the first of them starts here */
  size_t queued;   /* how many */
  size_t lost;     /* lines dropped because the queue was full */
  int failing;     /* a failure was reported; quiet until the queue is empty */
  int last_errno;  /* why the last write failed */
};

int fl_metrics_new(const char *jsonl_path, int append, fl_metrics_t **out) {
  if (!out) return fl_err_set(FL_EINVAL, "fl_metrics_new: NULL out");
  *out = NULL;
  fl_metrics_t *m = calloc(1, sizeof *m);
  if (!m) return fl_err_set(FL_ENOMEM, "fl_metrics_new: out of memory");
  m->fd = -1;
  if (!jsonl_path || !jsonl_path[0]) {
    *out = m;
    return 0;
  }
  int rc = 0;
  struct stat st;
  if (!(m->path = strdup(jsonl_path))) {
    rc = fl_err_set(FL_ENOMEM, "fl_metrics_new: out of memory");
    goto out;
  }
  /* Append on resume: the file already holds the rounds before the
   * checkpoint. (They are not read back into memory, so the chart of a
   * resumed run starts at the resumed round.) O_APPEND in both cases, so
   * that after a cut the next line goes where the cut was. */
  m->fd = open(jsonl_path,
               O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY | (append ? 0 : O_TRUNC), 0644);
  if (m->fd < 0) {
    rc = fl_err_set(FL_EIO, "cannot open metrics file '%s': %s", jsonl_path, strerror(errno));
    goto out;
  }
  if (fstat(m->fd, &st) != 0) {
    rc = fl_err_set(FL_EIO, "cannot stat metrics file '%s': %s", jsonl_path, strerror(errno));
    goto out;
  }
  m->regular = S_ISREG(st.st_mode);
  m->good = m->regular ? (uint64_t)st.st_size : 0;
out:
  if (rc) {
    fl_metrics_destroy(&m);
    return rc;
  }
  *out = m;
  return 0;
}

void fl_metrics_destroy(fl_metrics_t **m) {
  if (!m || !*m) return;
  if ((*m)->fd >= 0) close((*m)->fd);
  free((*m)->path);
  free((*m)->queue.p);
  free((*m)->rec);
  free(*m);
  *m = NULL;
}

size_t fl_metrics_count(const fl_metrics_t *m) {
  return m ? m->n : 0;
}

const fl_round_metrics_t *fl_metrics_get(const fl_metrics_t *m, size_t i) {
  return m && i < m->n ? &m->rec[i] : NULL;
}

size_t fl_metrics_pending(const fl_metrics_t *m) {
  return m ? m->queued + m->lost : 0;
}

/* JSON has no NaN or Infinity; null marks "not measured". %.17g round-trips
 * a double exactly and is valid JSON for every finite value. */
static void json_number(fl_sbuf_t *b, const char *key, double v) {
  if (isfinite(v))
    fl_sbuf_printf(b, ",\"%s\":%.17g", key, v);
  else
    fl_sbuf_printf(b, ",\"%s\":null", key);
}

static void json_line(fl_sbuf_t *b, const fl_round_metrics_t *r, const char *extra_json) {
  fl_sbuf_printf(b, "{\"round\":%" PRIu32 ",\"rounds_total\":%" PRIu32, r->round, r->rounds_total);
  json_number(b, "lr", r->lr);
  json_number(b, "server_lr", r->server_lr);
  fl_sbuf_printf(b, ",\"clients_sampled\":%" PRIu32 ",\"clients_reported\":%" PRIu32,
                 r->clients_sampled, r->clients_reported);
  json_number(b, "train_loss", r->train_loss);
  json_number(b, "test_loss", r->test_loss);
  json_number(b, "test_accuracy", r->test_accuracy);
  json_number(b, "seconds", r->seconds);
  json_number(b, "elapsed", r->elapsed);
  fl_sbuf_printf(b, ",\"bytes_sent\":%" PRIu64 ",\"bytes_received\":%" PRIu64, r->bytes_sent,
                 r->bytes_received);
  fl_sbuf_printf(b, ",\"rejected\":%" PRIu32 ",\"clipped\":%" PRIu32 ",\"capped\":%" PRIu32,
                 r->rejected, r->clipped, r->capped);
  if (r->fed_eval_clients) {
    json_number(b, "fed_eval_loss", r->fed_eval_loss);
    json_number(b, "fed_eval_accuracy", r->fed_eval_accuracy);
    fl_sbuf_printf(b, ",\"fed_eval_examples\":%" PRIu64 ",\"fed_eval_clients\":%" PRIu32,
                   r->fed_eval_examples, r->fed_eval_clients);
  }
  if (extra_json && extra_json[0]) fl_sbuf_printf(b, ",%s", extra_json);
  fl_sbuf_printf(b, "}\n");
}

/* The round of the first queued line, for messages. */
static unsigned long queue_first_round(const fl_metrics_t *m) {
  return strtoul(m->queue.p + m->queue_at + strlen("{\"round\":"), NULL, 10);
}

/* Cuts the file back to its last complete line. */
static int cut_partial(fl_metrics_t *m) {
  if (!m->regular) return 0; /* a pipe or device keeps what it got */
  while (ftruncate(m->fd, (off_t)m->good) != 0) {
    if (errno == EINTR) continue;
    m->cut_pending = 1;
    return -1;
  }
  m->cut_pending = 0;
  return 0;
}

/* Writes one line at the end of the file: in one write(), unless that
 * comes up short (the file system ran out of room inside the line), when
 * the rest is tried, which either fits after all or fails with the reason
 * (ENOSPC, EFBIG, ...). On failure, cuts off whatever part got written,
 * sets m->last_errno and returns -1. */
static int write_line(fl_metrics_t *m, const char *line, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t w = write(m->fd, line + done, len - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      m->last_errno = w < 0 ? errno : EIO;
      if (done > 0) cut_partial(m);
      return -1;
    }
    done += (size_t)w;
  }
  m->good += len;
  return 0;
}

/* Writes the queued lines in order; stops at the first that fails.
 * 0 if the queue is empty. */
static int write_queue(fl_metrics_t *m) {
  if (m->cut_pending && cut_partial(m) != 0) {
    m->last_errno = errno;
    return -1;
  }
  while (m->queued) {
    const char *line = m->queue.p + m->queue_at;
    size_t len = (size_t)((const char *)memchr(line, '\n', m->queue.len - m->queue_at) - line) + 1;
    if (write_line(m, line, len) != 0) return -1;
    m->queue_at += len;
    m->queued--;
  }
  m->queue.len = m->queue_at = 0;
  return 0;
}

/* Appends the line to the queue, compacting it first when most of it has
 * been written. 0, or -1 if the queue is full (FL_SBUF_MAX_BYTES). */
static int queue_line(fl_metrics_t *m, const fl_round_metrics_t *r, const char *extra_json) {
  fl_sbuf_t *q = &m->queue;
  if (m->queue_at > 0 && m->queue_at >= q->len / 2) {
    memmove(q->p, q->p + m->queue_at, q->len - m->queue_at);
    q->len -= m->queue_at;
    m->queue_at = 0;
  }
  size_t before = q->len;
  json_line(q, r, extra_json);
  if (q->err) {
    q->err = 0;
    q->len = before;
    return -1;
  }
  m->queued++;
  return 0;
}

int fl_metrics_add(fl_metrics_t *m, const fl_round_metrics_t *r, const char *extra_json) {
  if (!m || !r) return fl_err_set(FL_EINVAL, "fl_metrics_add: NULL argument");
  /* A newline would split the record into two JSON Lines lines. */
  if (extra_json && strpbrk(extra_json, "\r\n"))
    return fl_err_set(FL_EINVAL, "fl_metrics_add: extra_json must be on one line");
  if (m->n == m->cap) {
    if (m->cap >= FL_METRICS_MAX_ROUNDS)
      return fl_err_set(FL_ENOMEM, "more than %zu rounds of metrics", FL_METRICS_MAX_ROUNDS);
    size_t cap = m->cap ? m->cap * 2 : 64;
    if (cap > FL_METRICS_MAX_ROUNDS) cap = FL_METRICS_MAX_ROUNDS;
    fl_round_metrics_t *rec = realloc(m->rec, cap * sizeof *rec);
    if (!rec) return fl_err_set(FL_ENOMEM, "out of memory for %zu rounds of metrics", cap);
    m->rec = rec;
    m->cap = cap;
  }
  m->rec[m->n++] = *r;
  if (m->fd < 0) return 0;

  /* A full queue: room is made by writing it, if the file takes it now. */
  if (queue_line(m, r, extra_json) != 0 &&
      (write_queue(m) != 0 || queue_line(m, r, extra_json) != 0)) {
    if (m->lost++) return 0; /* the first loss was reported */
    return fl_err_set(FL_EIO,
                      "metrics file '%s': the line of round %" PRIu32 " and later are lost: %zu "
                      "earlier lines are still waiting for room (%s)",
                      m->path, r->round, m->queued, strerror(m->last_errno));
  }
  if (write_queue(m) == 0) {
    m->failing = 0;
    return 0;
  }
  if (m->failing) return 0; /* reported when it began */
  m->failing = 1;
  return fl_err_set(FL_EIO,
                    "cannot write metrics file '%s': %s%s; round %lu and later are kept and "
                    "written when there is room",
                    m->path, strerror(m->last_errno),
                    m->cut_pending ? " (and cannot cut off a partial line)" : "",
                    queue_first_round(m));
}

int fl_metrics_flush(fl_metrics_t *m) {
  if (!m || m->fd < 0) return 0;
  if (write_queue(m) == 0) m->failing = 0;
  if (!m->queued && !m->lost && !m->cut_pending) return 0;
  if (!m->queued && !m->lost)
    return fl_err_set(FL_EIO, "metrics file '%s': cannot cut off a partial line: %s", m->path,
                      strerror(m->last_errno));
  char lost[96] = "";
  if (m->lost) snprintf(lost, sizeof lost, ", and %zu lines were lost", m->lost);
  if (m->queued)
    return fl_err_set(FL_EIO, "metrics file '%s': %zu lines from round %lu on not written: %s%s",
                      m->path, m->queued, queue_first_round(m), strerror(m->last_errno), lost);
  return fl_err_set(FL_EIO, "metrics file '%s': %zu lines lost", m->path, m->lost);
}

int fl_metrics_trim(const char *path, uint32_t rounds_done) {
  uint8_t *buf = NULL;
  char *out = NULL;
  size_t len, at = 0;
  int rc = fl_file_read_all(path, FL_METRICS_MAX_FILE_BYTES, FL_FILE_REGULAR, &buf, &len);
  if (rc == FL_ENOENT) return 0;
  if (rc) return rc;
  if (!(out = malloc(len + 1))) {
    rc = fl_err_set(FL_ENOMEM, "cannot allocate %zu bytes to trim '%s'", len, path);
    goto out;
  }
  for (char *line = (char *)buf; line < (char *)buf + len;) {
    char *nl = memchr(line, '\n', len - (size_t)(line - (char *)buf));
    if (!nl) break; /* a partial last line: never written whole */
    size_t l = (size_t)(nl - line) + 1;
    unsigned long round = !strncmp(line, "{\"round\":", 9) ? strtoul(line + 9, NULL, 10) : 0;
    if (round >= 1 && round <= rounds_done) {
      memcpy(out + at, line, l);
      at += l;
    }
    line = nl + 1;
  }
  rc = fl_file_write_atomic(path, out, at);
out:
  free(out);
  free(buf);
  return rc;
}

/* ---- progress line ---- */

static const char *fmt_metric(char *buf, size_t len, double v) {
  if (isfinite(v))
    snprintf(buf, len, "%.4f", v);
  else
    snprintf(buf, len, "-");
  return buf;
}

/* Fixed 4 decimals like the other columns, but a decayed rate below 1e-3
 * would print as 0.0000, so small rates switch to exponent form. */
static const char *fmt_lr(char *buf, size_t len, double lr) {
  if (isfinite(lr) && lr != 0 && fabs(lr) < 1e-3)
    snprintf(buf, len, "%.2e", lr);
  else
    fmt_metric(buf, len, lr);
  return buf;
}

static const char *fmt_duration(char *buf, size_t len, double s) {
  if (!isfinite(s) || s < 0)
    snprintf(buf, len, "-");
  else if (s < 59.5)
    snprintf(buf, len, "%.0fs", s);
  else if (s < 3600)
    snprintf(buf, len, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
  else if (s < 1e9)
    snprintf(buf, len, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
  else
    snprintf(buf, len, "-");
  return buf;
}

/* Width of the round column: at least 3 ("round  12/100"), more for long
 * runs, so the columns line up within a run. */
static int round_width(uint32_t total) {
  int d = 1;
  while (total >= 10)
    total /= 10, d++;
  return d < 3 ? 3 : d;
}

void fl_metrics_print_progress(FILE *f, const fl_round_metrics_t *r) {
  if (!f || !r) return;
  char lr[32], train[32], acc[32], loss[32], eta[32];
  /* ETA: the mean round time so far times the rounds still to run. */
  double eta_s = NAN;
  if (r->round > 0 && r->rounds_total >= r->round)
    eta_s = r->elapsed / r->round * (double)(r->rounds_total - r->round);
  /* The server rate when it is not plain FedAvg's 1. */
  char slr[48] = "";
  if (isfinite(r->server_lr) && r->server_lr != 1) {
    char v[32];
    snprintf(slr, sizeof slr, "  server lr %s", fmt_lr(v, sizeof v, r->server_lr));
  }
  fprintf(
      f,
      "round %*" PRIu32 "/%" PRIu32 "  lr %s%s  clients %" PRIu32 "/%" PRIu32
      "  train %s  test acc %s loss %s  %.2fs  ETA %s",
      round_width(r->rounds_total), r->round, r->rounds_total, fmt_lr(lr, sizeof lr, r->lr), slr,
      r->clients_reported, r->clients_sampled, fmt_metric(train, sizeof train, r->train_loss),
      fmt_metric(acc, sizeof acc, r->test_accuracy), fmt_metric(loss, sizeof loss, r->test_loss),
      isfinite(r->seconds) ? r->seconds : 0.0, fmt_duration(eta, sizeof eta, eta_s));
  /* Only when it happens, so an ordinary run's lines stay as they were. */
  if (r->rejected) fprintf(f, "  rejected %" PRIu32, r->rejected);
  if (r->clipped) fprintf(f, "  clipped %" PRIu32, r->clipped);
  if (r->capped) fprintf(f, "  capped %" PRIu32, r->capped);
  if (r->fed_eval_clients)
    fprintf(f, "  fed acc %s loss %s", fmt_metric(acc, sizeof acc, r->fed_eval_accuracy),
            fmt_metric(loss, sizeof loss, r->fed_eval_loss));
  fputc('\n', f);
}

/* ---- SVG chart (drawn with fl_svg, like every fedlr chart) ---- */

enum { SVG_H = 700 };
#define NUM_PANELS 3

typedef double (*metric_fn)(const fl_round_metrics_t *r);
static double get_acc(const fl_round_metrics_t *r) {
  return r->test_accuracy;
}
static double get_test_loss(const fl_round_metrics_t *r) {
  return r->test_loss;
}
static double get_fed_acc(const fl_round_metrics_t *r) {
  return r->fed_eval_clients ? r->fed_eval_accuracy : NAN;
}
static double get_fed_loss(const fl_round_metrics_t *r) {
  return r->fed_eval_clients ? r->fed_eval_loss : NAN;
}
static double get_train_loss(const fl_round_metrics_t *r) {
  return r->train_loss;
}
static double get_lr(const fl_round_metrics_t *r) {
  return r->lr;
}
static double get_server_lr(const fl_round_metrics_t *r) {
  return r->server_lr;
}

typedef struct {
  const char *label;
  const char *color;
  metric_fn get;
  double hide_if_all; /* not drawn if every value is this or NAN (NAN: always drawn) */
} series_t;

typedef struct {
  const char *title;
  int yk; /* FL_SVG_Y_* */
  size_t num_series;
  series_t series[3];
} panel_t;

static const panel_t panels[NUM_PANELS] = {
    {"accuracy",
     FL_SVG_Y_UNIT,
     2,
     {{"test accuracy", "#1f77b4", get_acc, NAN},
      {"federated accuracy", "#9467bd", get_fed_acc, NAN}}},
    {"loss",
     FL_SVG_Y_AUTO,
     3,
     {{"test loss", "#d62728", get_test_loss, NAN},
      {"train loss", "#ff7f0e", get_train_loss, NAN},
      {"federated loss", "#8c564b", get_fed_loss, NAN}}},
    {"learning rate",
     FL_SVG_Y_RATE,
     2,
     {{"learning rate", "#2ca02c", get_lr, NAN},
      /* the server rate, unless it is plain FedAvg's 1 throughout */
      {"server rate", "#17becf", get_server_lr, 1}}},
};

/* A series of the records, as fl_svg_series() takes it. */
typedef struct {
  const fl_metrics_t *m;
  metric_fn get;
} series_ctx_t;

static double series_point(const void *ctx, size_t i, double *x) {
  const series_ctx_t *c = ctx;
  *x = c->m->rec[i].round;
  return c->get(&c->m->rec[i]);
}

/* 1 if series `sr` is drawn: it has a value other than its hide_if_all. */
static int series_shown(const fl_metrics_t *m, const series_t *sr) {
  if (isnan(sr->hide_if_all)) return 1;
  for (size_t i = 0; i < m->n; i++) {
    double v = sr->get(&m->rec[i]);
    if (!isnan(v) && v != sr->hide_if_all) return 1;
  }
  return 0;
}

static void svg_panel(fl_sbuf_t *b, const fl_metrics_t *m, const panel_t *p,
                      const fl_svg_axis_t *xa, double top, int x_labels) {
  const series_t *shown[3];
  size_t ns = 0;
  for (size_t s = 0; s < p->num_series; s++)
    if (series_shown(m, &p->series[s])) shown[ns++] = &p->series[s];
  fl_svg_range_t range = FL_SVG_RANGE_INIT;
  for (size_t s = 0; s < ns; s++)
    for (size_t i = 0; i < m->n; i++)
      fl_svg_range_add(&range, shown[s]->get(&m->rec[i]));
  fl_svg_axis_t ya;
  if (fl_svg_panel_begin(b, p->title, p->yk, &range, xa, top, x_labels, &ya)) {
    /* Dots help when there are few points, e.g. sparse evaluations. */
    int markers = ns && range.count / ns <= 60;
    for (size_t s = 0; s < ns; s++) {
      series_ctx_t ctx = {m, shown[s]->get};
      fl_svg_series(b, shown[s]->color, m->n, series_point, &ctx, xa, &ya, top, markers);
    }
  }

  if (ns > 1) {
    fl_sbuf_printf(b, "<g class=\"legend\" font-size=\"11\">\n");
    for (size_t s = 0; s < ns; s++)
      fl_svg_legend_entry(b, FL_SVG_PLOT_R - 110, top + 14 + 16.0 * s, shown[s]->color,
                          shown[s]->label);
    fl_sbuf_printf(b, "</g>\n");
  }
  fl_sbuf_printf(b, "</g>\n");
}

static void svg_chart(fl_sbuf_t *b, const fl_metrics_t *m, const char *title) {
  fl_svg_begin(b, SVG_H, title);
  if (m->n == 0) {
    fl_sbuf_printf(b,
                   "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"20\" fill=\"#888\">"
                   "no data</text>\n</svg>\n",
                   FL_SVG_W / 2, SVG_H / 2);
    return;
  }

  double rmin = m->rec[0].round, rmax = rmin;
  for (size_t i = 1; i < m->n; i++) {
    rmin = fmin(rmin, m->rec[i].round);
    rmax = fmax(rmax, m->rec[i].round);
  }
  fl_svg_axis_t xa;
  fl_svg_round_axis(&xa, rmin, rmax);

  for (int i = 0; i < NUM_PANELS; i++)
    svg_panel(b, m, &panels[i], &xa, FL_SVG_PANEL_TOP + i * FL_SVG_PANEL_STEP, i == NUM_PANELS - 1);
  fl_svg_round_title(b, NUM_PANELS);
  fl_sbuf_printf(b, "</svg>\n");
}

int fl_metrics_write_svg(const fl_metrics_t *m, const char *path, const char *title) {
  if (!m || !path || !path[0]) return fl_err_set(FL_EINVAL, "fl_metrics_write_svg: bad arguments");
  fl_sbuf_t b = {0};
  svg_chart(&b, m, title ? title : "fedlr");
  int rc = 0;
  if (b.err)
    rc = fl_err_set(b.err, "chart '%s': larger than %zu bytes or out of memory", path,
                    FL_SBUF_MAX_BYTES);
  else
    rc = fl_file_write_atomic(path, b.p, b.len);
  free(b.p);
  return rc;
}
