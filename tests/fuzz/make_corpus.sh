#!/usr/bin/env bash
# Regenerates the seed files (seed-*) of the fuzz corpus in tests/fuzz/corpus/
# from the project's own encoders (tests/fuzz/make_corpus.c) and the example
# configs. Entries found by fuzzing (other names) are kept.
#   bash tests/fuzz/make_corpus.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-build}
cmake --build "$BUILD_DIR" --target fuzz_make_corpus >/dev/null
CORPUS=tests/fuzz/corpus
rm -f "$CORPUS"/*/seed-*
"$BUILD_DIR"/tests/fuzz_make_corpus "$CORPUS"
for f in examples/*.ini; do
  cp "$f" "$CORPUS/config/seed-example-$(basename "$f" .ini)"
done
du -sh "$CORPUS"
