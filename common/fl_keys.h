/* fl_keys: CurveZMQ key files and the coordinator's client allowlist.
 *
 * Keys are 32-byte Curve25519 keys, written as 40-character Z85 text. A key
 * pair made by fedlr-keygen PATH is two files in CZMQ's certificate format
 * (ZPL: "section" lines, then 4-space indented 'name = "value"' lines, '#'
 * comments):
 *
 *   PATH.key          public, give it to the other side
 *     metadata
 *         name = "alice"
 *     curve
 *         public-key = "<40 chars of Z85>"
 *
 *   PATH.key_secret   the same plus secret-key = "...", mode 0600
 *
 * The reader is strict: unknown sections or keys in "curve", a key that is
 * not 40 Z85 characters, a public key that does not match the secret one, a
 * repeated key, or a secret file that its group or others may read (like
 * ssh) are errors that name the file and line.
 *
 * An allowlist (--allow-clients) is either a directory, where every *.key
 * file is one client named by the file's stem (alice.key is "alice"), or a
 * file of "KEY NAME" lines (Z85 key, blanks, a name; '#' comments and blank
 * lines allowed). Names are 1..127 printable ASCII bytes without blanks;
 * keys and names must be unique.
 *
 * Every file read must be a regular file (or a symlink to one): a
 * directory, FIFO or device is refused with what it is, also as an entry
 * NAME.key of an allowlist directory. A key file is at most 64 KiB, a list
 * file 4 MiB; a list holds at most FL_ALLOWLIST_MAX keys. */
#ifndef FL_KEYS_H
#define FL_KEYS_H

#include <stddef.h>
#include <stdint.h>

#define FL_KEY_BYTES 32
#define FL_KEY_Z85_LEN 40
#define FL_KEY_NAME_MAX 128    /* including the NUL */
#define FL_ALLOWLIST_MAX 10000 /* client keys in one --allow-clients list */

/* A key pair as Z85 text (NUL-terminated); secret is "" when unknown. */
typedef struct {
  char public_z85[FL_KEY_Z85_LEN + 1];
  char secret_z85[FL_KEY_Z85_LEN + 1];
} fl_keypair_t;

/* A fresh key pair (libsodium through libzmq). FL_EUNSUPPORTED if libzmq
 * was built without CURVE. */
int fl_keys_generate(fl_keypair_t *kp);

/* Writes base.key (mode 0644) and base.key_secret (mode 0600 whatever the
 * umask, created with O_EXCL), both with metadata name = `name`. Without
 * `force`, FL_EINVAL if either file exists and nothing is written; with it,
 * existing files are replaced. */
int fl_keys_save(const char *base, const char *name, const fl_keypair_t *kp, int force);

/* Reads a secret key file written by fl_keys_save(): both keys, checked to
 * match. FL_ENOENT if missing; FL_EINVAL if group or others may read it or
 * it is malformed. The message names the file. */
int fl_keys_load_secret(const char *path, fl_keypair_t *kp);

/* A public key given as 40 Z85 characters, or as a .key (or .key_secret:
 * only its public key is used) file. `out` gets the Z85 text. */
int fl_keys_load_public(const char *key_or_path, char out[FL_KEY_Z85_LEN + 1]);

/* Checks 40 Z85 characters and decodes them (out may be NULL). */
int fl_keys_decode(const char *z85, uint8_t out[FL_KEY_BYTES]);

/* "alice" for ".../alice.key_secret" or ".../alice.key" (the file's stem). */
void fl_keys_stem(const char *path, char *out, size_t cap);

typedef struct fl_allowlist fl_allowlist_t;

/* Loads a directory of *.key files or a "KEY NAME" file. An empty list is
 * an error (it would refuse everyone), a longer one than FL_ALLOWLIST_MAX
 * FL_ETOOBIG. Returns 0 and *out, or an error naming the file and line. */
int fl_allowlist_load(const char *path, fl_allowlist_t **out);

/* The name of the client with this 32-byte public key, or NULL. */
const char *fl_allowlist_find(const fl_allowlist_t *a, const uint8_t key[FL_KEY_BYTES]);

size_t fl_allowlist_count(const fl_allowlist_t *a);

/* NULL-safe; clears *a. */
void fl_allowlist_destroy(fl_allowlist_t **a);

#endif
