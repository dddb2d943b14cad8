/* fuzz_config: fl_config_load_file() (INI via libinih) on the input as a
 * file, for each program, then fl_config_validate() and fl_config_write() on
 * whatever loaded. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fl_config.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const int progs[] = {FL_PROG_SIM, FL_PROG_COORD, FL_PROG_CLIENT};
  const char *path = fuzz_path("ini");
  fuzz_write(path, data, size, 0);
  for (size_t i = 0; i < sizeof progs / sizeof progs[0]; i++) {
    fl_config_t c;
    fl_config_defaults(&c);
    if (fl_config_load_file(&c, progs[i], path) != 0) continue;
    (void)fl_config_validate(&c, progs[i]);
    char *out = NULL;
    size_t outlen = 0;
    FILE *f = open_memstream(&out, &outlen);
    if (!f) abort();
    fl_config_write(&c, progs[i], f);
    fclose(f);
    free(out);
  }
  return 0;
}
