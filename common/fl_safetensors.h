/* fl_safetensors: model weights in the safetensors format
 * (https://huggingface.co/docs/safetensors): 8-byte little-endian header
 * length, a JSON header {"name":{"dtype":"F32","shape":[..],
 * "data_offsets":[begin,end]}, "__metadata__":{string:string}}, then the raw
 * little-endian data. Loadable with numpy or safetensors.torch.load_file().
 *
 * Checksum. Every file fedlr writes carries the metadata entry
 * "fedlr_crc32": the CRC-32 of the whole file (zlib's crc32(), the
 * ISO-HDLC / IEEE 802.3 polynomial, as Python's zlib.crc32), computed with
 * the entry's own 8 digits read as "00000000", written as 8 lowercase hex
 * digits. It covers everything: the length field, the JSON header (tensor
 * names, shapes, offsets, every metadata entry) and the data section, so
 * any flipped bit, torn write or truncation is caught (every burst of up to
 * 32 bits, otherwise all but 1 in 2^32). It guards against accidents, not
 * against someone who edits the file and recomputes it. Other readers see
 * one more metadata string and ignore it. */
#ifndef FL_SAFETENSORS_H
#define FL_SAFETENSORS_H

#include <stddef.h>

#include "fl_model.h"

#define FL_SAFETENSORS_MAX_HEADER (1u << 20)
#define FL_SAFETENSORS_CHECKSUM_KEY "fedlr_crc32"

/* Writes model m's tensors from `params` to `path` atomically (see fl_file).
 * `meta` is NULL or a NULL-terminated list of key, value, key, value, ...
 * strings stored in __metadata__; the model spec is always stored as
 * "model" and the checksum as FL_SAFETENSORS_CHECKSUM_KEY (both reserved:
 * FL_EINVAL if `meta` has them). */
int fl_safetensors_save(const char *path, const fl_model_spec_t *m, const float *params,
                        const char *const *meta);

/* Metadata entries as fl_safetensors_load_all() lists them. */
#define FL_SAFETENSORS_META_MAX 64      /* entries */
#define FL_SAFETENSORS_META_VALUE 16384 /* bytes of a value, with its NUL */
typedef struct {
  size_t n;
  struct {
    char key[64];                          /* NUL-terminated; longer keys are refused */
    char value[FL_SAFETENSORS_META_VALUE]; /* NUL-terminated; longer values are refused */
  } e[FL_SAFETENSORS_META_MAX];
} fl_safetensors_meta_t;

/* Flags of fl_safetensors_load_all(). */
enum {
  FL_SAFETENSORS_NEED_CHECKSUM = 1 /* a file without the checksum entry is refused */
};

/* Reads `path` into params (m->num_params floats), requiring exactly model
 * m's tensor names, F32 dtype, shapes and in-bounds, non-overlapping offsets,
 * and, if the file names its model (metadata "model", as fedlr writes it),
 * m's spec (FL_ESHAPE otherwise). A checksum entry, if present, must match
 * the content: FL_EFORMAT "checksum mismatch: the file is corrupt"
 * otherwise; with FL_SAFETENSORS_NEED_CHECKSUM a file without one is
 * FL_EFORMAT too (written by an older fedlr or another tool, or damaged).
 * If `meta` is not NULL it receives every metadata entry but the checksum,
 * in file order; then more than FL_SAFETENSORS_META_MAX entries, or a key or
 * value too long for it, is FL_ETOOBIG and a repeated key FL_EFORMAT.
 * Bounds the header before allocating; any mismatch is FL_EFORMAT/FL_ESHAPE
 * with a detail. Only a regular file is read: a FIFO, device or directory is
 * FL_EINVAL at once (fl_file_open_input), never a blocked open() or an
 * endless read. params and *meta are unchanged on error. */
int fl_safetensors_load_all(const char *path, const fl_model_spec_t *m, float *params,
                            unsigned flags, fl_safetensors_meta_t *meta);

/* fl_safetensors_load_all(path, m, params, 0, NULL): the plain load, which
 * also takes files from other tools (without a checksum). */
int fl_safetensors_load(const char *path, const fl_model_spec_t *m, float *params);

/* Reads every tensor of `path`, whatever their names (a model exported by
 * PyTorch or numpy, for --init): *layout receives them in data order
 * (fl_layout.h: names checked by fl_layout_check_name, 0 to 8 dimensions)
 * and *weights a new buffer of layout->num_params floats, the file's data
 * section (free() it; fl_layout_destroy the layout). Every tensor must be
 * F32 (FL_EFORMAT naming the tensor and its dtype otherwise) and together
 * they must tile the data section. Checksum and `flags` and `meta` as
 * fl_safetensors_load_all. Nothing is returned on error. */
int fl_safetensors_read(const char *path, unsigned flags, fl_layout_t **layout, float **weights,
                        fl_safetensors_meta_t *meta);

/* Reads one metadata value (e.g. "model") into buf; FL_ENOENT if absent.
 * Reads the header only, so it does not verify the checksum. */
int fl_safetensors_meta(const char *path, const char *key, char *buf, size_t len);

#endif
