/* fl_tboard: a run's per-round metrics as a TensorBoard event file, for
 * `tensorboard --logdir DIR`.
 *
 * The format is TensorFlow's record file of tensorboard.Event protos (the
 * vendored third_party/tensorboard/.../event.proto, compiled by protoc-c):
 * each record is
 *   uint64 length (little-endian)  | uint32 masked CRC32C of those 8 bytes |
 *   `length` bytes: one Event      | uint32 masked CRC32C of those bytes
 * with masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (TensorFlow's
 * crc32c::Mask, so that a CRC of data holding CRCs is not trivial). The
 * first record is an Event with file_version "brain.Event:2"; each scalar
 * is an Event { wall_time, step, summary { value { tag, simple_value } } }.
 *
 * One writer owns one new file in one folder, which TensorBoard shows as a
 * run; it reads the files of a folder while they grow and merges them, so
 * a resumed run adds a file beside the old one.
 *
 * Writing. Records are queued in memory (fl_tboard_scalar, fl_tboard_round)
 * and written by fl_tboard_flush, once a round, so TensorBoard shows a
 * round when it is recorded. The file only ever holds whole records: the
 * queue goes out in write() calls at the end of the file; if one fails (a
 * full disk), whatever part got written is cut off again and the records
 * stay queued (up to FL_TBOARD_MAX_QUEUE bytes, later ones beyond that are
 * dropped and counted) to be written, in order, at the next flush. The
 * failure is reported once, when it begins; fl_tboard_close reports
 * whatever is still missing, for the program's exit status.
 *
 * Not thread-safe; no global state (two writers may live in one process). */
#ifndef FL_TBOARD_H
#define FL_TBOARD_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "fl_metrics.h"

/* Unwritten records kept at most; about 200,000 scalars. */
#define FL_TBOARD_MAX_QUEUE ((size_t)16 << 20)
/* The longest tag, in bytes. */
#define FL_TBOARD_MAX_TAG 256

typedef struct fl_tboard fl_tboard_t;

/* CRC-32C (Castagnoli, reflected polynomial 0x82f63b78, as iSCSI, ext4 and
 * TensorFlow use it) of p[0..len), continuing from `crc` (0 to start):
 * fl_tboard_crc32c(fl_tboard_crc32c(0, a, n), b, m) is the CRC of a
 * followed by b. fl_tboard_crc32c(0, "123456789", 9) == 0xe3069283. */
uint32_t fl_tboard_crc32c(uint32_t crc, const void *p, size_t len);
/* TensorFlow's masked CRC, what a record stores. */
uint32_t fl_tboard_crc_mask(uint32_t crc);

/* A run folder's name as PyTorch's SummaryWriter names its default one,
 * with `program` appended: <Mon>DD_HH-MM-SS_<host>-<program> at local time
 * t, e.g. "Dec01_14-05-09_lab7-fedlr-sim" (English month abbreviations
 * whatever the locale; a host name's bytes other than letters, digits,
 * '.', '_' and '-' become '_'). FL_EINVAL for an empty program or one
 * with '/', FL_ETOOBIG if the name does not fit in cap bytes. */
int fl_tboard_run_name(const char *program, time_t t, char *buf, size_t cap);

/* Creates `dir` (with its parents) and in it a new event file named as
 * TensorFlow and PyTorch name theirs,
 *   events.out.tfevents.<unix seconds, 10 digits>.<host>.<pid>
 * with ".1", ".2", ... appended if that name is taken (never overwrites),
 * and writes its first record (file_version) at once, so that a folder
 * that cannot be written is noticed before the run starts. FL_EINVAL for
 * a NULL or empty dir; FL_EIO with a message naming the folder or file and
 * the OS error. */
int fl_tboard_new(const char *dir, fl_tboard_t **out);

/* Closes the file if fl_tboard_close has not, dropping what is still
 * queued. NULL-safe; clears *tb. */
void fl_tboard_destroy(fl_tboard_t **tb);

/* The event file's path. */
const char *fl_tboard_path(const fl_tboard_t *tb);

/* Queues one scalar: an Event at `step` and `wall_time` (Unix seconds)
 * whose summary holds `tag` with value (float)value. Nothing is written
 * until fl_tboard_flush. A record that finds the queue full (writes have
 * been failing for long) is dropped and counted: fl_tboard_close reports
 * it. FL_EINVAL for an empty tag, one longer than FL_TBOARD_MAX_TAG or with
 * a byte that is not printable ASCII (fedlr's tags and metric names are;
 * a proto3 string must be valid UTF-8), or a closed writer. */
int fl_tboard_scalar(fl_tboard_t *tb, const char *tag, int64_t step, double wall_time,
                     double value);

/* Queues the scalars of one recorded round at step rm->round, stamped now,
 * and flushes (fl_tboard_flush's result):
 *   lr                   rm->lr
 *   train/loss           rm->train_loss
 *   test/accuracy        rm->test_accuracy
 *   test/loss            rm->test_loss
 *   fed_eval/loss        rm->fed_eval_loss       (rounds with a federated
 *   fed_eval/accuracy    rm->fed_eval_accuracy    evaluation only)
 *   fed_eval/<names[i]>  values[i], i < n_named: the clients' other metrics
 * A value that was not measured this round (NAN) is left out, so a chart
 * joins the rounds that have one. */
int fl_tboard_round(fl_tboard_t *tb, const fl_round_metrics_t *rm, const char *const *names,
                    const double *values, size_t n_named);

/* Writes the queued records. Returns 0 when the file holds every record
 * queued so far, and also while a failure that was already reported goes
 * on (a program logs the error once and carries on). FL_EIO, with a
 * message naming the file and the OS error, when a failure begins: the
 * first flush that cannot write everything since the file last held every
 * record. FL_EINVAL on a closed writer. */
int fl_tboard_flush(fl_tboard_t *tb);

/* Records not in the file (queued, or dropped with a full queue). */
size_t fl_tboard_pending(const fl_tboard_t *tb);

/* Writes what is queued and closes the file, once: later calls but
 * fl_tboard_destroy get FL_EINVAL. 0 if the file holds every record ever
 * queued and closed cleanly; else FL_EIO with a message naming the file,
 * how many records from which step on are missing, and the OS error. */
int fl_tboard_close(fl_tboard_t *tb);

#endif
