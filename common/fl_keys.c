/* fl_keys: see fl_keys.h. */
#include "fl_keys.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "fl_error.h"
#include "fl_file.h"

#define KEY_FILE_MAX ((size_t)64 << 10) /* a certificate is a few hundred bytes */
/* A "KEY NAME" list of FL_ALLOWLIST_MAX entries is under 2 MiB. */
#define ALLOW_FILE_MAX ((size_t)4 << 20)

static const char z85_alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   ".-:+=^!/*?&<>()[]{}@%$#";

/* 1 if s is exactly 40 Z85 characters. */
static int is_z85_key(const char *s, size_t len) {
  if (len != FL_KEY_Z85_LEN) return 0;
  for (size_t i = 0; i < len; i++)
    if (!s[i] || !strchr(z85_alphabet, s[i])) return 0;
  return 1;
}

int fl_keys_decode(const char *z85, uint8_t out[FL_KEY_BYTES]) {
  size_t len = strlen(z85);
  if (len != FL_KEY_Z85_LEN)
    return fl_err_set(FL_EINVAL, "a key is %d Z85 characters, this one has %zu", FL_KEY_Z85_LEN,
                      len);
  if (!is_z85_key(z85, len)) return fl_err_set(FL_EINVAL, "a key has a character that is not Z85");
  uint8_t tmp[FL_KEY_BYTES];
  if (!zmq_z85_decode(tmp, z85)) return fl_err_set(FL_EINVAL, "a key is not valid Z85");
  if (out) memcpy(out, tmp, sizeof tmp);
  explicit_bzero(tmp, sizeof tmp);
  return 0;
}

/* Client names: 1..127 printable ASCII bytes, no blanks or quotes. */
static int name_valid(const char *s, size_t len) {
  if (len == 0 || len >= FL_KEY_NAME_MAX) return 0;
  for (size_t i = 0; i < len; i++)
    if (s[i] <= ' ' || s[i] > '~' || s[i] == '"') return 0;
  return 1;
}

void fl_keys_stem(const char *path, char *out, size_t cap) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  size_t n = strlen(base);
  static const char *const suffixes[] = {".key_secret", ".key"};
  for (size_t i = 0; i < 2; i++) {
    size_t sl = strlen(suffixes[i]);
    if (n > sl && strcmp(base + n - sl, suffixes[i]) == 0) {
      n -= sl;
      break;
    }
  }
  snprintf(out, cap, "%.*s", (int)n, base);
}

/* ---- reading certificate files ---- */

/* Reads a key file or an allowlist (NUL-terminated), at most `max` bytes,
 * refusing anything but a regular file (a FIFO would block, a device never
 * end). With `secret`, refuses a file that its group or others may access,
 * like ssh does with private keys. */
static int read_key_file(const char *path, int secret, size_t max, char **out) {
  *out = NULL;
  int fd = -1;
  uint64_t size;
  uint8_t *buf = NULL;
  size_t len = 0;
  struct stat st;
  int rc = fl_file_open_input(path, FL_FILE_REGULAR, &fd, &size);
  if (rc) return rc;
  if (fstat(fd, &st) != 0) {
    rc = fl_err_set(FL_EIO, "%s: %s", path, strerror(errno));
    goto out;
  }
  if (secret && (st.st_mode & 077)) {
    rc = fl_err_set(FL_EINVAL,
                    "%s: permissions %04o are too open: a secret key must be readable by its "
                    "owner only (chmod 600 %s)",
                    path, (unsigned)(st.st_mode & 07777), path);
    goto out;
  }
  if ((rc = fl_file_read_fd(fd, path, size, max, &buf, &len))) goto out;
  if (strlen((char *)buf) != len) rc = fl_err_set(FL_EINVAL, "%s: contains a NUL byte", path);
out:
  close(fd);
  if (rc) {
    if (buf) explicit_bzero(buf, len);
    free(buf);
  } else {
    *out = (char *)buf;
  }
  return rc;
}

/* Parses a certificate (CZMQ zcert / ZPL subset) into kp. Without
 * `want_secret` a secret key in the file is an error (a public file must
 * never carry one); with it, the secret key is required. */
static int parse_cert(const char *path, char *text, int want_secret, fl_keypair_t *kp) {
  enum { S_NONE, S_METADATA, S_CURVE } section = S_NONE;
  memset(kp, 0, sizeof *kp);
  int lineno = 0;
  char *save = NULL;
  for (char *line = text; line; line = save) {
    lineno++;
    char *nl = strchr(line, '\n');
    save = nl ? nl + 1 : NULL;
    if (nl) *nl = '\0';
    size_t len = strlen(line);
    while (len && (line[len - 1] == ' ' || line[len - 1] == '\r' || line[len - 1] == '\t'))
      line[--len] = '\0';
    size_t indent = strspn(line, " ");
    if (line[indent] == '\0' || line[indent] == '#') continue;
    if (line[indent] == '\t')
      return fl_err_set(FL_EINVAL, "%s:%d: indent with spaces, not tabs", path, lineno);
    if (indent == 0) {
      if (!strcmp(line, "metadata"))
        section = S_METADATA;
      else if (!strcmp(line, "curve"))
        section = S_CURVE;
      else
        return fl_err_set(FL_EINVAL, "%s:%d: unknown section '%.40s' (metadata or curve)", path,
                          lineno, line);
      continue;
    }
    /* name = "value" */
    char *name = line + indent;
    size_t nlen = strcspn(name, " =");
    char *p = name + nlen;
    p += strspn(p, " ");
    if (*p != '=') return fl_err_set(FL_EINVAL, "%s:%d: expected 'name = \"value\"'", path, lineno);
    p++;
    p += strspn(p, " ");
    char *value = p;
    size_t vlen = strlen(p);
    if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
      value++;
      vlen -= 2;
    }
    if (section == S_NONE)
      return fl_err_set(FL_EINVAL, "%s:%d: '%.*s' outside a section", path, lineno, (int)nlen,
                        name);
    if (section == S_METADATA) continue; /* free-form; the name comes from elsewhere */
    char *dst;
    if (nlen == 10 && !strncmp(name, "public-key", nlen)) {
      dst = kp->public_z85;
    } else if (nlen == 10 && !strncmp(name, "secret-key", nlen)) {
      if (!want_secret)
        return fl_err_set(FL_EINVAL,
                          "%s:%d: this file holds a secret key: give the public .key file, and "
                          "keep the secret one private",
                          path, lineno);
      dst = kp->secret_z85;
    } else {
      return fl_err_set(FL_EINVAL, "%s:%d: unknown key '%.*s' in section curve", path, lineno,
                        (int)nlen, name);
    }
    if (dst[0])
      return fl_err_set(FL_EINVAL, "%s:%d: '%.*s' repeated", path, lineno, (int)nlen, name);
    if (!is_z85_key(value, vlen))
      return fl_err_set(FL_EINVAL, "%s:%d: %.*s is not %d Z85 characters", path, lineno, (int)nlen,
                        name, FL_KEY_Z85_LEN);
    memcpy(dst, value, FL_KEY_Z85_LEN);
    dst[FL_KEY_Z85_LEN] = '\0';
    if (fl_keys_decode(dst, NULL) != 0)
      return fl_err_set(FL_EINVAL, "%s:%d: %.*s is not valid Z85", path, lineno, (int)nlen, name);
  }
  if (!kp->public_z85[0]) return fl_err_set(FL_EINVAL, "%s: no curve public-key", path);
  if (want_secret) {
    if (!kp->secret_z85[0]) return fl_err_set(FL_EINVAL, "%s: no curve secret-key", path);
    char derived[FL_KEY_Z85_LEN + 1];
    if (zmq_curve_public(derived, kp->secret_z85) != 0)
      return fl_err_set(FL_EUNSUPPORTED, "%s: cannot derive the public key: %s", path,
                        zmq_strerror(errno));
    if (strcmp(derived, kp->public_z85) != 0)
      return fl_err_set(FL_EINVAL, "%s: public-key does not belong to secret-key", path);
  }
  return 0;
}

int fl_keys_load_secret(const char *path, fl_keypair_t *kp) {
  if (!path || !path[0] || !kp) return fl_err_set(FL_EINVAL, "fl_keys_load_secret: no file");
  char *text;
  int rc = read_key_file(path, 1, KEY_FILE_MAX, &text);
  if (rc) return rc;
  size_t len = strlen(text);
  rc = parse_cert(path, text, 1, kp);
  explicit_bzero(text, len);
  free(text);
  if (rc) explicit_bzero(kp, sizeof *kp);
  return rc;
}

int fl_keys_load_public(const char *key_or_path, char out[FL_KEY_Z85_LEN + 1]) {
  if (!key_or_path || !key_or_path[0]) return fl_err_set(FL_EINVAL, "no public key given");
  struct stat st;
  /* A 40-character path is also valid Z85: one that names a key file
   * (.key, .key_secret) is a path even when the file is missing. */
  size_t n = strlen(key_or_path);
  int named_file = (n >= 4 && strcmp(key_or_path + n - 4, ".key") == 0) ||
                   (n >= 11 && strcmp(key_or_path + n - 11, ".key_secret") == 0);
  if (!named_file && is_z85_key(key_or_path, n) && stat(key_or_path, &st) != 0) {
    int rc = fl_keys_decode(key_or_path, NULL);
    if (rc) return rc;
    memcpy(out, key_or_path, FL_KEY_Z85_LEN + 1);
    return 0;
  }
  char *text;
  int rc = read_key_file(key_or_path, 0, KEY_FILE_MAX, &text);
  if (rc == FL_ENOENT)
    return fl_err_set(FL_ENOENT, "'%s' is neither a file nor a %d-character Z85 key", key_or_path,
                      FL_KEY_Z85_LEN);
  if (rc) return rc;
  /* A .key_secret file would do (its public key is what is wanted), but
   * the secret must not be needed nor kept. */
  fl_keypair_t kp;
  size_t len = strlen(text);
  rc = parse_cert(key_or_path, text, 0, &kp);
  explicit_bzero(text, len);
  free(text);
  if (!rc) memcpy(out, kp.public_z85, FL_KEY_Z85_LEN + 1);
  return rc;
}

/* ---- generating and writing ---- */

int fl_keys_generate(fl_keypair_t *kp) {
  memset(kp, 0, sizeof *kp);
  if (!zmq_has("curve"))
    return fl_err_set(FL_EUNSUPPORTED, "this libzmq was built without CURVE (libsodium)");
  if (zmq_curve_keypair(kp->public_z85, kp->secret_z85) != 0)
    return fl_err_set(FL_EUNSUPPORTED, "zmq_curve_keypair: %s", zmq_strerror(errno));
  return 0;
}

/* Creates `path` with O_EXCL and exactly `mode` (fchmod: the umask may only
 * have narrowed it), writes `text`, fsyncs. */
static int write_new_file(const char *path, const char *text, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0)
    return fl_err_set(errno == EEXIST ? FL_EINVAL : FL_EIO, "cannot create %s: %s", path,
                      strerror(errno));
  int rc = 0;
  size_t len = strlen(text), at = 0;
  if (fchmod(fd, mode) != 0) rc = fl_err_set(FL_EIO, "%s: chmod: %s", path, strerror(errno));
  while (!rc && at < len) {
    ssize_t w = write(fd, text + at, len - at);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0)
      rc = fl_err_set(FL_EIO, "%s: %s", path, strerror(errno));
    else
      at += (size_t)w;
  }
  if (!rc && fsync(fd) != 0) rc = fl_err_set(FL_EIO, "%s: fsync: %s", path, strerror(errno));
  if (close(fd) != 0 && !rc) rc = fl_err_set(FL_EIO, "%s: close: %s", path, strerror(errno));
  if (rc) unlink(path);
  return rc;
}

int fl_keys_save(const char *base, const char *name, const fl_keypair_t *kp, int force) {
  if (!base || !base[0] || !kp) return fl_err_set(FL_EINVAL, "fl_keys_save: bad arguments");
  if (!name || !name_valid(name, strlen(name)))
    return fl_err_set(FL_EINVAL,
                      "key name '%s' must be 1 to %d printable characters without blanks or "
                      "quotes",
                      name ? name : "", FL_KEY_NAME_MAX - 1);
  if (fl_keys_decode(kp->public_z85, NULL) || fl_keys_decode(kp->secret_z85, NULL))
    return fl_err_set(FL_EINVAL, "fl_keys_save: not a key pair");
  size_t blen = strlen(base);
  char *pub = malloc(blen + 8), *sec = malloc(blen + 16);
  char *text = malloc(1024);
  int rc = 0;
  if (!pub || !sec || !text) {
    rc = fl_err_set(FL_ENOMEM, "out of memory");
    goto out;
  }
  sprintf(pub, "%s.key", base);
  sprintf(sec, "%s.key_secret", base);
  struct stat st;
  for (int i = 0; i < 2; i++) {
    const char *p = i ? sec : pub;
    if (lstat(p, &st) != 0) continue;
    if (!force) {
      rc = fl_err_set(FL_EINVAL, "%s exists: not overwriting a key (--force replaces it)", p);
      goto out;
    }
    if (unlink(p) != 0) {
      rc = fl_err_set(FL_EIO, "%s: %s", p, strerror(errno));
      goto out;
    }
  }
  static const char head[] = "#   ****  Generated by fedlr-keygen  ****\n";
  snprintf(text, 1024,
           "%s#   fedlr CURVE secret key: keep it private (mode 0600), give %s.key instead.\n\n"
           "metadata\n    name = \"%s\"\ncurve\n    public-key = \"%s\"\n    secret-key = \"%s\"\n",
           head, name, name, kp->public_z85, kp->secret_z85);
  rc = write_new_file(sec, text, 0600);
  if (rc) goto out;
  snprintf(text, 1024,
           "%s#   fedlr CURVE public key of '%s': the coordinator lists it in --allow-clients,\n"
           "#   or clients pass it as --coordinator-key.\n\n"
           "metadata\n    name = \"%s\"\ncurve\n    public-key = \"%s\"\n",
           head, name, name, kp->public_z85);
  rc = write_new_file(pub, text, 0644);
  if (rc) unlink(sec);
out:
  if (text) explicit_bzero(text, 1024);
  free(text);
  free(pub);
  free(sec);
  return rc;
}

/* ---- the allowlist ---- */

typedef struct {
  uint8_t key[FL_KEY_BYTES];
  char name[FL_KEY_NAME_MAX];
} allow_entry_t;

struct fl_allowlist {
  allow_entry_t *e;
  size_t n, cap;
};

static int allow_add(fl_allowlist_t *a, const char *where, const char *z85, const char *name,
                     size_t name_len) {
  if (!name_valid(name, name_len))
    return fl_err_set(FL_EINVAL,
                      "%s: client name '%.*s' must be 1 to %d printable characters without "
                      "blanks or quotes",
                      where, (int)(name_len > 64 ? 64 : name_len), name, FL_KEY_NAME_MAX - 1);
  uint8_t key[FL_KEY_BYTES];
  if (fl_keys_decode(z85, key) != 0) {
    char inner[256];
    snprintf(inner, sizeof inner, "%s", fl_err_msg());
    return fl_err_set(FL_EINVAL, "%s: %s", where, inner);
  }
  for (size_t i = 0; i < a->n; i++) {
    if (!memcmp(a->e[i].key, key, sizeof key))
      return fl_err_set(FL_EINVAL, "%s: key listed twice (also for '%s')", where, a->e[i].name);
    if (strlen(a->e[i].name) == name_len && !memcmp(a->e[i].name, name, name_len))
      return fl_err_set(FL_EINVAL, "%s: client name '%.*s' listed twice", where, (int)name_len,
                        name);
  }
  if (a->n >= FL_ALLOWLIST_MAX)
    return fl_err_set(FL_ETOOBIG, "%s: more than %d client keys (the limit of --allow-clients)",
                      where, FL_ALLOWLIST_MAX);
  if (a->n == a->cap) {
    size_t cap = a->cap ? 2 * a->cap : 16;
    allow_entry_t *e = realloc(a->e, cap * sizeof *e);
    if (!e) return fl_err_set(FL_ENOMEM, "out of memory for the allowlist");
    a->e = e;
    a->cap = cap;
  }
  memcpy(a->e[a->n].key, key, sizeof key);
  memcpy(a->e[a->n].name, name, name_len);
  a->e[a->n].name[name_len] = '\0';
  a->n++;
  return 0;
}

static int key_file_filter(const struct dirent *d) {
  size_t n = strlen(d->d_name);
  return d->d_name[0] != '.' && n > 4 && !strcmp(d->d_name + n - 4, ".key");
}

static int allow_load_dir(fl_allowlist_t *a, const char *dir) {
  struct dirent **names = NULL;
  int n = scandir(dir, &names, key_file_filter, alphasort);
  if (n < 0) return fl_err_set(FL_EIO, "--allow-clients %s: %s", dir, strerror(errno));
  int rc = 0;
  /* Before reading any: each is at most KEY_FILE_MAX bytes, so this bounds
   * the bytes read too. */
  if (n > FL_ALLOWLIST_MAX)
    rc = fl_err_set(FL_ETOOBIG, "--allow-clients %s: %d .key files, the limit is %d", dir, n,
                    FL_ALLOWLIST_MAX);
  for (int i = 0; i < n; i++) {
    char path[4096], stem[FL_KEY_NAME_MAX + 8];
    if (!rc) {
      snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
      char *text;
      fl_keypair_t kp;
      if (!(rc = read_key_file(path, 0, KEY_FILE_MAX, &text))) {
        rc = parse_cert(path, text, 0, &kp);
        free(text);
      }
      if (!rc) {
        fl_keys_stem(path, stem, sizeof stem);
        rc = allow_add(a, path, kp.public_z85, stem, strlen(stem));
      }
    }
    free(names[i]);
  }
  free(names);
  if (!rc && a->n == 0)
    rc = fl_err_set(FL_EINVAL, "--allow-clients %s: no NAME.key files in the directory", dir);
  return rc;
}

static int allow_load_file(fl_allowlist_t *a, const char *path) {
  char *text;
  int rc = read_key_file(path, 0, ALLOW_FILE_MAX, &text);
  if (rc) return rc;
  int lineno = 0;
  char *save = NULL;
  for (char *line = text; line && !rc; line = save) {
    lineno++;
    char *nl = strchr(line, '\n');
    save = nl ? nl + 1 : NULL;
    if (nl) *nl = '\0';
    size_t len = strlen(line);
    while (len && (line[len - 1] == ' ' || line[len - 1] == '\t' || line[len - 1] == '\r'))
      line[--len] = '\0';
    line += strspn(line, " \t");
    if (!line[0] || line[0] == '#') continue;
    char where[4200];
    snprintf(where, sizeof where, "%s:%d", path, lineno);
    size_t klen = strcspn(line, " \t");
    if (!is_z85_key(line, klen) && !strncmp(line, "curve", 5) && klen == 5) {
      rc = fl_err_set(FL_EINVAL,
                      "%s: this is a certificate, not a list: give a directory of .key files, "
                      "or 'KEY NAME' lines",
                      where);
      break;
    }
    char *name = line + klen;
    name += strspn(name, " \t");
    if (!name[0]) {
      rc = fl_err_set(FL_EINVAL, "%s: expected 'KEY NAME' (a 40-character Z85 key, a name)", where);
      break;
    }
    char key[FL_KEY_Z85_LEN + 1];
    if (klen != FL_KEY_Z85_LEN) {
      rc = fl_err_set(FL_EINVAL, "%s: the key has %zu characters, not %d", where, klen,
                      FL_KEY_Z85_LEN);
      break;
    }
    memcpy(key, line, klen);
    key[klen] = '\0';
    rc = allow_add(a, where, key, name, strlen(name));
  }
  free(text);
  if (!rc && a->n == 0) rc = fl_err_set(FL_EINVAL, "--allow-clients %s: no keys listed", path);
  return rc;
}

int fl_allowlist_load(const char *path, fl_allowlist_t **out) {
  if (!path || !path[0] || !out) return fl_err_set(FL_EINVAL, "fl_allowlist_load: no path");
  *out = NULL;
  struct stat st;
  if (stat(path, &st) != 0)
    return fl_err_set(errno == ENOENT ? FL_ENOENT : FL_EIO, "--allow-clients %s: %s", path,
                      strerror(errno));
  fl_allowlist_t *a = calloc(1, sizeof *a);
  if (!a) return fl_err_set(FL_ENOMEM, "out of memory");
  int rc = S_ISDIR(st.st_mode) ? allow_load_dir(a, path) : allow_load_file(a, path);
  if (rc) fl_allowlist_destroy(&a);
  *out = a;
  return rc;
}

const char *fl_allowlist_find(const fl_allowlist_t *a, const uint8_t key[FL_KEY_BYTES]) {
  if (!a) return NULL;
  for (size_t i = 0; i < a->n; i++)
    if (!memcmp(a->e[i].key, key, FL_KEY_BYTES)) return a->e[i].name;
  return NULL;
}

size_t fl_allowlist_count(const fl_allowlist_t *a) {
  return a ? a->n : 0;
}

void fl_allowlist_destroy(fl_allowlist_t **a) {
  if (!a || !*a) return;
  free((*a)->e);
  free(*a);
  *a = NULL;
}
