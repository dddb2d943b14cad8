/* fl_data: datasets in memory, and their readers.
 *
 * A dataset is n examples of `dim` float features with integer labels in
 * [0, num_classes). Readers: IDX (gzip or raw, e.g. Fashion-MNIST; pixel
 * bytes scaled to [0,1]) and CSV (one example per line: label, then dim
 * features; optional header line is detected and skipped).
 * Every reader bounds sizes before allocating and reports what was wrong
 * (file, line/offset, expected vs found) through fl_err_set().
 *
 * Files must be regular files (or symlinks to them): a directory, FIFO or
 * device is refused at once with what it is (FL_EINVAL), so nothing blocks
 * or reads forever. A CSV file is read whole, at most
 * FL_DATA_MAX_CSV_BYTES. An IDX file is read exactly as far as its header
 * declares (plus a few bytes to detect trailing data), and the header may
 * declare at most FL_DATA_MAX_BYTES of features: so a gzip bomb inflates
 * no further than that, and a header declaring more than the file can hold
 * (a raw file's size, or 1032 times a gzip file's size, deflate's largest
 * ratio) is refused before anything is allocated. */
#ifndef FL_DATA_H
#define FL_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "fl_shape.h"

#define FL_DATA_MAX_EXAMPLES (1u << 26)     /* 67M examples */
#define FL_DATA_MAX_DIM (1u << 20)          /* 1M features */
#define FL_DATA_MAX_BYTES ((size_t)8 << 30) /* 8 GiB of features */
#define FL_DATA_MAX_CLASSES 65536
#define FL_DATA_MAX_CSV_BYTES ((size_t)4 << 30) /* 4 GiB of CSV text */

typedef struct {
  size_t n;           /* number of examples */
  size_t dim;         /* features per example */
  size_t num_classes; /* max label + 1 (or the dataset's known count) */
  float *x;           /* (n, dim) row-major, owned */
  int32_t *y;         /* (n), owned */
  fl_shape_t shape;   /* an example's image shape (C H W = dim), or unset (flat) */
} fl_dataset_t;

/* Loads an IDX image file (idx3 ubyte, any number of dims >= 1 after the
 * count) and an IDX label file (idx1 ubyte). Either may be gzip-compressed
 * (detected by magic, not by name). Returns 0 and a new dataset in *out.
 * The dimensions after the count give the examples' shape, in PyTorch's
 * NCHW order without the N: two (H, W) are 1 x H x W (Fashion-MNIST's
 * 28 x 28), three are C x H x W; one, or more than three, leave the shape
 * unset (flat features). */
int fl_dataset_load_idx(const char *images_path, const char *labels_path, fl_dataset_t **out);

/* Loads a CSV file: label,f1,...,fD per line. All lines must have the same
 * number of fields; labels are non-negative integers; features finite.
 * A CSV file has no shape (--input-shape gives one). */
int fl_dataset_load_csv(const char *path, fl_dataset_t **out);

/* Loads a named dataset from `dir`: "fashion-mnist" or "mnist" (files
 * train-images-idx3-ubyte[.gz] etc.; dir NULL or "" means
 * /usr/share/datasets/NAME).
 * `train` selects train (1) or test (0). num_classes is always 10.
 * A missing file yields FL_ENOENT with a message that names the path and the
 * Debian package that provides it (dataset-fashion-mnist). */
int fl_dataset_load_named(const char *name, const char *dir, int train, fl_dataset_t **out);

/* 1 if `dataset` names a built-in dataset ("fashion-mnist", "mnist"), 0 if
 * it is a file to read with fl_dataset_load_file(). */
int fl_dataset_is_named(const char *dataset);

/* The data that the flags --dataset NAME|FILE, --data-dir DIR and
 * --test-data FILE name, resolved the same way by every program: the
 * training set (if `train` is not NULL) is the named dataset's training
 * split, or the file; the test set (if `test` is not NULL) is --test-data
 * when given, else the named dataset's test split, else none (*test =
 * NULL, for a file without --test-data). On error nothing is returned. */
int fl_dataset_load_flags(const char *dataset, const char *data_dir, const char *test_data,
                          fl_dataset_t **train, fl_dataset_t **test);

/* Loads `path` as CSV if it ends in .csv, else as an IDX image file whose
 * labels are found by replacing "images" with "labels" in its name. */
int fl_dataset_load_file(const char *path, fl_dataset_t **out);

void fl_dataset_destroy(fl_dataset_t **d);

#endif
