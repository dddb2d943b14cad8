#!/usr/bin/env bash
# One command: install dependencies, build (warnings are errors), and run the
# whole test suite with ctest; then again under ASan+UBSan, and the threaded
# parts under TSan (scripts/sanitize.sh). Arguments go to the first ctest and
# skip the sanitizer runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
BUILD_DIR=${BUILD_DIR:-build} bash scripts/build.sh -DFEDLR_WERROR=ON
(cd "${BUILD_DIR:-build}" && ctest --output-on-failure --timeout 900 -j2 "$@")
# Then the same suite under ASan+UBSan, and the threaded parts (worker pool,
# parallel evaluation, the coordinator's event loop and the clients' sessions
# in a networked run, libfedlr's I/O thread, fedlr-sweep's runs sharing one
# pool) under TSan; FEDLR_QUICK=1 skips both. The Docker test
# skips itself in sanitizer builds, so it is left out here; so is
# it_cnn_accuracy, minutes of arithmetic whose code (fl_gemm, fl_layers,
# fl_model_cnn, the trainer) the unit tests and it_model_cnn run under the
# sanitizers on the same paths.
if [ -z "${FEDLR_QUICK:-}" ] && [ $# -eq 0 ]; then
  BUILD_DIR= bash scripts/sanitize.sh -E "it_docker|it_cnn_accuracy"
  BUILD_DIR= SANITIZER=thread bash scripts/sanitize.sh -R "test_engine|test_trainer|test_libfedlr|it_sim_determinism|it_net_train|it_net_holdout|it_sweep"
fi
