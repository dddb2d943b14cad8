/* fuzz_keys: the CurveZMQ key-file and allowlist readers (fl_keys) on the
 * input as a file. Public key files come from the clients (an operator
 * copies them into the --allow-clients directory), so they are outside
 * bytes. Each input is read as a public key file, as a secret key file
 * (mode 0600, as required), and as a "KEY NAME" allowlist file; a loaded
 * allowlist is queried with every key of a fixed set. */
#include <stdint.h>
#include <stdlib.h>

#include "fl_keys.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_path("keys");
  fuzz_write(path, data, size, 0);
  char pub[FL_KEY_Z85_LEN + 1];
  uint8_t raw[FL_KEY_BYTES];
  if (fl_keys_load_public(path, pub) == 0 && fl_keys_decode(pub, raw) != 0) abort();
  fl_keypair_t kp;
  if (fl_keys_load_secret(path, &kp) == 0 &&
      (fl_keys_decode(kp.public_z85, raw) != 0 || fl_keys_decode(kp.secret_z85, raw) != 0))
    abort();
  fl_allowlist_t *a = NULL;
  if (fl_allowlist_load(path, &a) == 0) {
    if (fl_allowlist_count(a) == 0) abort(); /* an empty allowlist is an error */
    for (int k = 0; k < 4; k++) {
      for (size_t i = 0; i < FL_KEY_BYTES; i++)
        raw[i] = (uint8_t)(k * 61 + i * 7);
      const char *name = fl_allowlist_find(a, raw);
      if (name && !name[0]) abort();
    }
    fl_allowlist_destroy(&a);
  }
  return 0;
}
