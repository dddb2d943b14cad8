/* fl_shape: the image shape of one example, C x H x W.
 *
 * The order is PyTorch's NCHW without the N: an example's features are
 * channel by channel, each channel row by row (x[(c * H + h) * W + w]).
 * Where a shape comes from (fl_shape_resolve): --input-shape CxHxW if
 * given, else the data's own (an IDX file's dimensions after the count),
 * else none, and a CNN then infers 1 x sqrt(D) x sqrt(D) from the D
 * features (fl_model_parse), as fedlr did before shapes existed. */
#ifndef FL_SHAPE_H
#define FL_SHAPE_H

#include <stddef.h>

/* The largest side or channel count accepted (a limit, not a real size). */
#define FL_SHAPE_MAX_SIDE 65536u

typedef struct {
  size_t c, h, w; /* all 0: no shape (flat features) */
} fl_shape_t;

static inline int fl_shape_is_set(const fl_shape_t *s) {
  return s->c != 0;
}

/* Parses "CxHxW" (e.g. "3x32x32"): three decimal numbers in
 * [1, FL_SHAPE_MAX_SIDE]. "" is no shape (*out all 0). FL_EINVAL with a
 * message that quotes the text and says what is wrong; *out unchanged. */
int fl_shape_parse(const char *s, fl_shape_t *out);

/* Writes "CxHxW" (or "none") into buf; returns buf. */
const char *fl_shape_fmt(const fl_shape_t *s, char *buf, size_t cap);

/* The shape of a run on data of `dim` features whose own shape is `data`
 * (NULL or unset: none): the --input-shape text `flag` if not "", else
 * `data`. A shape whose C x H x W is not `dim` is refused (FL_ESHAPE, with
 * both sizes and the flag's name); *out unchanged on error. */
int fl_shape_resolve(const char *flag, const fl_shape_t *data, size_t dim, fl_shape_t *out);

#endif
