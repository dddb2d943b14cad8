/* fedlr-keygen: makes a CurveZMQ key pair for fedlr-coordinator and
 * fedlr-client.
 *
 *   fedlr-keygen [--force] [--name NAME] PATH
 *
 * writes PATH.key (the public key, to hand out) and PATH.key_secret (both
 * keys, mode 0600, created exclusively), in the format of fl_keys.h. NAME
 * (default: PATH's file name) goes into the files' metadata; a coordinator
 * names a client by the file name of its .key in --allow-clients.
 *
 * Exit status: 0 written; 1 could not write (e.g. the files exist without
 * --force); 2 bad usage. */
#include <stdio.h>
#include <string.h>

#include "fl_error.h"
#include "fl_keys.h"

static void usage(FILE *f) {
  fprintf(f, "usage: fedlr-keygen [--force] [--name NAME] PATH\n"
             "Makes a CurveZMQ key pair for fedlr-coordinator and fedlr-client.\n"
             "\n"
             "Options:\n"
             "  --force      replace PATH.key and PATH.key_secret if they exist\n"
             "  --name NAME  name recorded in the files (default the file name of PATH)\n"
             "  -h, --help   show this help\n"
             "\n"
             "Writes PATH.key, the public key (Z85, readable: give it to the other side), and\n"
             "PATH.key_secret, the public and secret keys (mode 0600 whatever the umask; keep it\n"
             "private). Refuses to overwrite either without --force.\n"
             "\n"
             "The coordinator takes its own PATH.key_secret with --curve-secret and the\n"
             "clients' public key files with --allow-clients DIR (a client's name is its file\n"
             "name without the extension); each client takes its own PATH.key_secret with\n"
             "--curve-secret and the coordinator's public key file with --coordinator-key.\n"
             "\n"
             "Exit status: 0 written, 1 not written (e.g. the files exist), 2 bad usage.\n");
}

int main(int argc, char **argv) {
  int force = 0;
  const char *path = NULL, *name = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--force")) {
      force = 1;
    } else if (!strcmp(a, "--name") || !strncmp(a, "--name=", 7)) {
      if (a[6] == '=') {
        name = a + 7;
      } else if (i + 1 < argc) {
        name = argv[++i];
      } else {
        fprintf(stderr, "fedlr-keygen: --name needs a value\n");
        return 2;
      }
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "fedlr-keygen: unknown flag '%s' (see --help)\n", a);
      return 2;
    } else if (path) {
      fprintf(stderr, "fedlr-keygen: one PATH only ('%s' and '%s')\n", path, a);
      return 2;
    } else {
      path = a;
    }
  }
  if (!path || !path[0]) {
    fprintf(stderr, "fedlr-keygen: no PATH (e.g. fedlr-keygen keys/alice writes keys/alice.key "
                    "and keys/alice.key_secret)\n");
    return 2;
  }
  char stem[FL_KEY_NAME_MAX + 16];
  if (!name) {
    fl_keys_stem(path, stem, sizeof stem);
    name = stem;
  }
  fl_keypair_t kp;
  int rc = fl_keys_generate(&kp);
  if (!rc) rc = fl_keys_save(path, name, &kp, force);
  explicit_bzero(&kp, sizeof kp);
  if (rc) {
    fprintf(stderr, "fedlr-keygen: %s\n", fl_err_msg()[0] ? fl_err_msg() : fl_strerror(rc));
    return rc == FL_EINVAL && strstr(fl_err_msg(), "key name") ? 2 : 1;
  }
  printf("fedlr-keygen: wrote %s.key (public) and %s.key_secret (secret, mode 0600) for '%s'\n",
         path, path, name);
  return 0;
}
