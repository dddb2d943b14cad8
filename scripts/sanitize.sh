#!/usr/bin/env bash
# One command: install dependencies, build the ASan + UBSan tree (warnings are
# errors) in ${BUILD_DIR:-build-asan}, and run the whole test suite there with
# ctest. Sanitizer reports go to log files, and any report fails the run, even
# one from a process a test expected to fail (e.g. a leak on an error path).
# Extra args go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
# SANITIZER=thread: a ThreadSanitizer tree (build-tsan) instead, for the
# threaded parts (worker pool, parallel evaluation): pass e.g. -R to pick them.
if [ "${SANITIZER:-address}" = thread ]; then
  BUILD_DIR=${BUILD_DIR:-build-tsan}
  export BUILD_DIR
  BUILD_DIR=$BUILD_DIR bash scripts/build.sh -DFEDLR_TSAN=ON -DFEDLR_WERROR=ON
else
  BUILD_DIR=${BUILD_DIR:-build-asan}
  export BUILD_DIR
  BUILD_DIR=$BUILD_DIR bash scripts/build.sh -DFEDLR_SANITIZE=ON -DFEDLR_WERROR=ON
fi
SUPP=$PWD/tests/sanitizer-suppressions
LOGS=$PWD/$BUILD_DIR/sanitizer-logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
asan="detect_leaks=1:log_path=$LOGS/asan"
ubsan="print_stacktrace=1:halt_on_error=1:log_path=$LOGS/ubsan"
[ -f "$SUPP/lsan.supp" ] && export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
[ -f "$SUPP/ubsan.supp" ] && ubsan="$ubsan:suppressions=$SUPP/ubsan.supp"
export ASAN_OPTIONS="$asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
tsan="halt_on_error=1:log_path=$LOGS/tsan"
[ -f "$SUPP/tsan.supp" ] && tsan="$tsan:suppressions=$SUPP/tsan.supp"
export TSAN_OPTIONS="$tsan${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
export UBSAN_OPTIONS="$ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
cd "$BUILD_DIR"
rc=0
ctest --output-on-failure --timeout 900 -j2 "$@" || rc=$?
if compgen -G "$LOGS/*" >/dev/null; then
  echo "sanitize: sanitizer reports:" >&2
  for f in "$LOGS"/*; do
    echo "== $f" >&2
    cat "$f" >&2
  done
  rc=1
fi
exit "$rc"
