/* replay_main: runs a fuzz harness over a corpus without libFuzzer, so the
 * normal (gcc) build replays every committed corpus file as a regression
 * test: `fuzz_replay_NAME DIR|FILE...`. A crash, sanitizer report or abort
 * fails the test; a nonzero return from the harness counts as a failure. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "replay: cannot open %s\n", path);
    return -1;
  }
  uint8_t *buf = NULL;
  size_t len = 0, cap = 0;
  int rc = 0;
  for (;;) {
    if (len == cap) {
      size_t ncap = cap ? cap * 2 : 4096;
      uint8_t *nb = realloc(buf, ncap);
      if (!nb) {
        rc = -1;
        goto out;
      }
      buf = nb;
      cap = ncap;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  if (ferror(f)) {
    fprintf(stderr, "replay: read error on %s\n", path);
    rc = -1;
    goto out;
  }
  /* A copy of exactly `len` bytes, so ASan catches reads past the input. */
  uint8_t *exact = malloc(len ? len : 1);
  if (!exact) {
    rc = -1;
    goto out;
  }
  if (len) memcpy(exact, buf, len);
  rc = LLVMFuzzerTestOneInput(exact, len);
  free(exact);
out:
  free(buf);
  fclose(f);
  return rc;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file of dir in name order. */
static void run_dir(const char *dir, size_t *passed, size_t *failed) {
  DIR *d = opendir(dir);
  if (!d) {
    fprintf(stderr, "replay: cannot open directory %s\n", dir);
    (*failed)++;
    return;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      char **nn = realloc(names, cap * sizeof *names);
      if (!nn) abort();
      names = nn;
    }
    size_t l = strlen(dir) + strlen(e->d_name) + 2;
    names[n] = malloc(l);
    if (!names[n]) abort();
    snprintf(names[n], l, "%s/%s", dir, e->d_name);
    n++;
  }
  closedir(d);
  if (n) qsort(names, n, sizeof *names, cmp_str);
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
      if (run_file(names[i]) == 0) {
        (*passed)++;
      } else {
        fprintf(stderr, "replay: FAILED %s\n", names[i]);
        (*failed)++;
      }
    }
    free(names[i]);
  }
  free(names);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR|FILE...\n", argv[0]);
    return 2;
  }
  size_t passed = 0, failed = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
      run_dir(argv[i], &passed, &failed);
    } else if (run_file(argv[i]) == 0) {
      passed++;
    } else {
      fprintf(stderr, "replay: FAILED %s\n", argv[i]);
      failed++;
    }
  }
  printf("%zu passed, %zu failed\n", passed, failed);
  /* An empty corpus tests nothing: treat it as a failure. */
  return failed == 0 && passed > 0 ? 0 : 1;
}
