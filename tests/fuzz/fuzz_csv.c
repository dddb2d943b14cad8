/* fuzz_csv: fl_dataset_load_csv() on the input, written to a temp file. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "fl_data.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_path("csv");
  fuzz_write(path, data, size, 0);
  fl_dataset_t *d = NULL;
  int rc = fl_dataset_load_csv(path, &d);
  if (rc == 0) {
    /* The contract: labels in [0, num_classes), features finite. */
    if (!d || d->n == 0 || d->dim == 0) abort();
    for (size_t i = 0; i < d->n; i++)
      if (d->y[i] < 0 || (size_t)d->y[i] >= d->num_classes) abort();
    for (size_t i = 0; i < d->n * d->dim; i++)
      if (!isfinite(d->x[i])) abort();
  } else if (d) {
    abort(); /* *out untouched on error */
  }
  fl_dataset_destroy(&d);
  return 0;
}
