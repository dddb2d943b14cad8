/* fl_keys: key pairs written and read back, strict parsing of key files,
 * the ssh-like permission check of secret files, and both allowlist forms. */
#include <fcntl.h>
#include <sys/stat.h>

#include "fl_error.h"
#include "fl_keys.h"
#include "fl_test.h"

static void path_in_tmp(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/%s", fl_test_tmpdir(), name);
}

static void write_text(const char *path, const char *text, mode_t mode) {
  unlink(path);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  if (fd < 0) return;
  ssize_t w = write(fd, text, strlen(text));
  (void)w;
  fchmod(fd, mode);
  close(fd);
}

/* Writes `text` as a 0600 secret key file at path and loads it. */
static int load_secret_text(const char *path, const char *text) {
  fl_keypair_t kp;
  write_text(path, text, 0600);
  return fl_keys_load_secret(path, &kp);
}

static mode_t file_mode(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (st.st_mode & 07777) : 0;
}

TEST(round_trip) {
  char base[600], pub[640], sec[640];
  path_in_tmp(base, sizeof base, "alice");
  snprintf(pub, sizeof pub, "%s.key", base);
  snprintf(sec, sizeof sec, "%s.key_secret", base);
  unlink(pub);
  unlink(sec);
  fl_keypair_t kp, back;
  ASSERT_EQ(fl_keys_generate(&kp), 0);
  ASSERT_EQ(strlen(kp.public_z85), FL_KEY_Z85_LEN);
  ASSERT_EQ(strlen(kp.secret_z85), FL_KEY_Z85_LEN);
  mode_t old = umask(0); /* the secret file is 0600 whatever the umask */
  int rc = fl_keys_save(base, "alice", &kp, 0);
  umask(old);
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(file_mode(sec), 0600);
  ASSERT_EQ(file_mode(pub), 0644);
  ASSERT_EQ(fl_keys_load_secret(sec, &back), 0);
  ASSERT_STR_EQ(back.public_z85, kp.public_z85);
  ASSERT_STR_EQ(back.secret_z85, kp.secret_z85);
  char p[FL_KEY_Z85_LEN + 1];
  ASSERT_EQ(fl_keys_load_public(pub, p), 0);
  ASSERT_STR_EQ(p, kp.public_z85);
  ASSERT_EQ(fl_keys_load_public(kp.public_z85, p), 0); /* a key on the command line */
  ASSERT_STR_EQ(p, kp.public_z85);
  /* No overwrite without force; with it, a new pair. */
  fl_keypair_t kp2;
  ASSERT_EQ(fl_keys_generate(&kp2), 0);
  ASSERT_EQ(fl_keys_save(base, "alice", &kp2, 0), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "exists");
  ASSERT_EQ(fl_keys_load_secret(sec, &back), 0);
  ASSERT_STR_EQ(back.secret_z85, kp.secret_z85);
  ASSERT_EQ(fl_keys_save(base, "alice", &kp2, 1), 0);
  ASSERT_EQ(fl_keys_load_secret(sec, &back), 0);
  ASSERT_STR_EQ(back.secret_z85, kp2.secret_z85);
  char stem[64];
  fl_keys_stem(sec, stem, sizeof stem);
  ASSERT_STR_EQ(stem, "alice");
  fl_keys_stem("dir/bob.key", stem, sizeof stem);
  ASSERT_STR_EQ(stem, "bob");
}

TEST(secret_file_permissions) {
  char base[600], sec[640];
  path_in_tmp(base, sizeof base, "perm");
  snprintf(sec, sizeof sec, "%s.key_secret", base);
  fl_keypair_t kp, back;
  ASSERT_EQ(fl_keys_generate(&kp), 0);
  ASSERT_EQ(fl_keys_save(base, "perm", &kp, 1), 0);
  ASSERT_EQ(chmod(sec, 0644), 0);
  ASSERT_EQ(fl_keys_load_secret(sec, &back), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "too open");
  ASSERT_CONTAINS(fl_err_msg(), sec);
  ASSERT_CONTAINS(fl_err_msg(), "chmod 600");
  ASSERT_EQ(chmod(sec, 0640), 0);
  ASSERT_EQ(fl_keys_load_secret(sec, &back), FL_EINVAL);
  ASSERT_EQ(chmod(sec, 0400), 0);
  ASSERT_EQ(fl_keys_load_secret(sec, &back), 0);
}

TEST(missing_file_names_it) {
  char path[600];
  path_in_tmp(path, sizeof path, "nope.key_secret");
  fl_keypair_t kp;
  ASSERT_EQ(fl_keys_load_secret(path, &kp), FL_ENOENT);
  ASSERT_CONTAINS(fl_err_msg(), path);
  char p[FL_KEY_Z85_LEN + 1];
  path_in_tmp(path, sizeof path, "nope.key");
  ASSERT_EQ(fl_keys_load_public(path, p), FL_ENOENT);
  ASSERT_CONTAINS(fl_err_msg(), path);
  /* A missing key file whose path happens to be 40 valid Z85 characters
   * is still a missing file, not a key. */
  const char *z85path = "/no/such/dir/of/keys/0000/abcdefghij.key";
  ASSERT_EQ(strlen(z85path), (size_t)FL_KEY_Z85_LEN);
  ASSERT_EQ(fl_keys_load_public(z85path, p), FL_ENOENT);
  fl_allowlist_t *a = NULL;
  ASSERT_EQ(fl_allowlist_load(path, &a), FL_ENOENT);
  ASSERT_CONTAINS(fl_err_msg(), path);
  ASSERT_TRUE(a == NULL);
}

TEST(malformed_keys) {
  fl_keypair_t kp;
  ASSERT_EQ(fl_keys_generate(&kp), 0);
  char path[600], text[1024];
  path_in_tmp(path, sizeof path, "bad.key_secret");
  /* A character outside Z85 (a space is not in the alphabet, '~' neither). */
  char badkey[FL_KEY_Z85_LEN + 1];
  memcpy(badkey, kp.secret_z85, sizeof badkey);
  badkey[7] = '~';
  snprintf(text, sizeof text, "curve\n    public-key = \"%s\"\n    secret-key = \"%s\"\n",
           kp.public_z85, badkey);
  ASSERT_EQ(load_secret_text(path, text), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "Z85");
  ASSERT_CONTAINS(fl_err_msg(), ":3:");
  /* Wrong length. */
  snprintf(text, sizeof text, "curve\n    public-key = \"%s\"\n    secret-key = \"%.39s\"\n",
           kp.public_z85, kp.secret_z85);
  ASSERT_EQ(load_secret_text(path, text), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "40 Z85");
  /* A public key that is not the secret key's. */
  fl_keypair_t other;
  ASSERT_EQ(fl_keys_generate(&other), 0);
  snprintf(text, sizeof text, "curve\n    public-key = \"%s\"\n    secret-key = \"%s\"\n",
           other.public_z85, kp.secret_z85);
  ASSERT_EQ(load_secret_text(path, text), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "does not belong");
  /* Unknown section, unknown key, missing secret, repeated key. */
  snprintf(text, sizeof text, "curvy\n    public-key = \"%s\"\n", kp.public_z85);
  ASSERT_EQ(load_secret_text(path, text), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "unknown section");
  snprintf(text, sizeof text, "curve\n    public-kee = \"%s\"\n", kp.public_z85);
  ASSERT_EQ(load_secret_text(path, text), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "unknown key");
  snprintf(text, sizeof text, "curve\n    public-key = \"%s\"\n", kp.public_z85);
  ASSERT_EQ(load_secret_text(path, text), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "no curve secret-key");
  snprintf(text, sizeof text, "curve\n    public-key = \"%s\"\n    public-key = \"%s\"\n",
           kp.public_z85, kp.public_z85);
  ASSERT_EQ(load_secret_text(path, text), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "repeated");
  /* A "public" file that carries a secret key is refused. */
  char pub[FL_KEY_Z85_LEN + 1];
  snprintf(text, sizeof text, "curve\n    public-key = \"%s\"\n    secret-key = \"%s\"\n",
           kp.public_z85, kp.secret_z85);
  write_text(path, text, 0600);
  ASSERT_EQ(fl_keys_load_public(path, pub), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "secret key");
  /* Command-line keys: wrong length or alphabet. */
  ASSERT_EQ(fl_keys_decode("abc", NULL), FL_EINVAL);
  ASSERT_EQ(fl_keys_decode(badkey, NULL), FL_EINVAL);
  ASSERT_EQ(fl_keys_decode(kp.public_z85, NULL), 0);
}

TEST(allowlist_dir_and_file) {
  char dir[600], base[700], path[700];
  path_in_tmp(dir, sizeof dir, "allow");
  mkdir(dir, 0755);
  fl_keypair_t a, b;
  ASSERT_EQ(fl_keys_generate(&a), 0);
  ASSERT_EQ(fl_keys_generate(&b), 0);
  snprintf(base, sizeof base, "%s/alice", dir);
  ASSERT_EQ(fl_keys_save(base, "alice", &a, 1), 0);
  snprintf(base, sizeof base, "%s/bob", dir);
  ASSERT_EQ(fl_keys_save(base, "not-bob", &b, 1), 0); /* the file name wins */
  /* The secret files next to them are not *.key and are ignored. */
  fl_allowlist_t *al = NULL;
  ASSERT_EQ(fl_allowlist_load(dir, &al), 0);
  ASSERT_EQ(fl_allowlist_count(al), 2);
  uint8_t ka[FL_KEY_BYTES], kb[FL_KEY_BYTES], kx[FL_KEY_BYTES];
  ASSERT_EQ(fl_keys_decode(a.public_z85, ka), 0);
  ASSERT_EQ(fl_keys_decode(b.public_z85, kb), 0);
  ASSERT_STR_EQ(fl_allowlist_find(al, ka), "alice");
  ASSERT_STR_EQ(fl_allowlist_find(al, kb), "bob");
  ASSERT_EQ(fl_keys_decode(a.secret_z85, kx), 0); /* any other 32 bytes */
  ASSERT_TRUE(fl_allowlist_find(al, kx) == NULL);
  fl_allowlist_destroy(&al);
  ASSERT_TRUE(al == NULL);

  /* The same as a "KEY NAME" file, with a comment and a blank line. */
  char text[1024];
  path_in_tmp(path, sizeof path, "allow.txt");
  snprintf(text, sizeof text, "# clients\n%s alice\n\n  %s\tbob  \n", a.public_z85, b.public_z85);
  write_text(path, text, 0644);
  ASSERT_EQ(fl_allowlist_load(path, &al), 0);
  ASSERT_EQ(fl_allowlist_count(al), 2);
  ASSERT_STR_EQ(fl_allowlist_find(al, kb), "bob");
  fl_allowlist_destroy(&al);
  /* Errors name the line: a short key, a missing name, duplicates. */
  snprintf(text, sizeof text, "%s alice\n%.30s bob\n", a.public_z85, b.public_z85);
  write_text(path, text, 0644);
  ASSERT_EQ(fl_allowlist_load(path, &al), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "allow.txt:2");
  snprintf(text, sizeof text, "%s\n", a.public_z85);
  write_text(path, text, 0644);
  ASSERT_EQ(fl_allowlist_load(path, &al), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "KEY NAME");
  snprintf(text, sizeof text, "%s alice\n%s bob\n", a.public_z85, a.public_z85);
  write_text(path, text, 0644);
  ASSERT_EQ(fl_allowlist_load(path, &al), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "listed twice");
  snprintf(text, sizeof text, "%s alice\n%s alice\n", a.public_z85, b.public_z85);
  write_text(path, text, 0644);
  ASSERT_EQ(fl_allowlist_load(path, &al), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "listed twice");
  write_text(path, "# nobody\n", 0644);
  ASSERT_EQ(fl_allowlist_load(path, &al), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "no keys");
  ASSERT_TRUE(al == NULL);
}

/* Only regular files are read: a FIFO (which would block in open()) or a
 * device (which never ends) is refused at once, named, also as an entry of
 * an allowlist directory. */
TEST(non_regular_files_refused) {
  char path[600], dir[600], entry[700];
  fl_keypair_t kp;
  char pub[FL_KEY_Z85_LEN + 1];
  fl_allowlist_t *al = NULL;
  path_in_tmp(path, sizeof path, "fifo.key_secret");
  unlink(path);
  ASSERT_EQ(mkfifo(path, 0600), 0);
  ASSERT_EQ(fl_keys_load_secret(path, &kp), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "is a FIFO (named pipe), expected a regular file");
  ASSERT_EQ(fl_keys_load_public(path, pub), FL_EINVAL);
  ASSERT_EQ(fl_allowlist_load(path, &al), FL_EINVAL);
  ASSERT_TRUE(al == NULL);
  unlink(path);
  ASSERT_EQ(fl_keys_load_public("/dev/zero", pub), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "'/dev/zero' is a character device");
  ASSERT_EQ(fl_allowlist_load("/dev/zero", &al), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "character device");
  /* In an allowlist directory: a subdirectory or a FIFO named NAME.key. */
  path_in_tmp(dir, sizeof dir, "allow-odd");
  mkdir(dir, 0755);
  ASSERT_EQ(fl_keys_generate(&kp), 0);
  snprintf(entry, sizeof entry, "%s/alice", dir);
  ASSERT_EQ(fl_keys_save(entry, "alice", &kp, 1), 0);
  snprintf(entry, sizeof entry, "%s/sub.key", dir);
  mkdir(entry, 0755);
  ASSERT_EQ(fl_allowlist_load(dir, &al), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "sub.key' is a directory");
  rmdir(entry);
  snprintf(entry, sizeof entry, "%s/pipe.key", dir);
  ASSERT_EQ(mkfifo(entry, 0644), 0);
  ASSERT_EQ(fl_allowlist_load(dir, &al), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "pipe.key' is a FIFO");
  unlink(entry);
  ASSERT_EQ(fl_allowlist_load(dir, &al), 0);
  ASSERT_EQ(fl_allowlist_count(al), 1);
  fl_allowlist_destroy(&al);
}

/* Sizes are bounded: a key file of more than 64 KiB, a list of more than
 * FL_ALLOWLIST_MAX keys or 4 MiB. */
TEST(sizes_bounded) {
  char path[600];
  fl_keypair_t kp;
  fl_allowlist_t *al = NULL;
  path_in_tmp(path, sizeof path, "big.key_secret");
  size_t big = (64 << 10) + 1;
  char *text = malloc(big + 1);
  ASSERT_TRUE(text != NULL);
  memset(text, '#', big);
  text[big] = '\0';
  ASSERT_EQ(load_secret_text(path, text), FL_ETOOBIG);
  ASSERT_CONTAINS(fl_err_msg(), "the limit is 65536");
  free(text);
  /* FL_ALLOWLIST_MAX + 1 distinct keys: refused at the one too many. */
  path_in_tmp(path, sizeof path, "many.txt");
  FILE *f = fopen(path, "w");
  ASSERT_TRUE(f != NULL);
  for (int i = 0; i <= FL_ALLOWLIST_MAX; i++) {
    ASSERT_EQ(fl_keys_generate(&kp), 0);
    fprintf(f, "%s c%d\n", kp.public_z85, i);
  }
  fclose(f);
  ASSERT_EQ(fl_allowlist_load(path, &al), FL_ETOOBIG);
  char want[64];
  snprintf(want, sizeof want, "many.txt:%d: more than %d client keys", FL_ALLOWLIST_MAX + 1,
           FL_ALLOWLIST_MAX);
  ASSERT_CONTAINS(fl_err_msg(), want);
  ASSERT_TRUE(al == NULL);
  /* A list file over 4 MiB (comments) is refused before parsing. */
  f = fopen(path, "w");
  ASSERT_TRUE(f != NULL);
  for (int i = 0; i < (4 << 20) / 64 + 1; i++)
    fprintf(f, "# %061d\n", i);
  fclose(f);
  ASSERT_EQ(fl_allowlist_load(path, &al), FL_ETOOBIG);
  ASSERT_CONTAINS(fl_err_msg(), "the limit is 4194304");
}

FL_TEST_MAIN()
