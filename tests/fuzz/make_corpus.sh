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
# Key files and allowlists: a fresh pair from fedlr-keygen (random, so these
# seeds change each time), and an allowlist of two of its keys.
cmake --build "$BUILD_DIR" --target fedlr-keygen >/dev/null
KD=$(mktemp -d)
"$BUILD_DIR"/fedlr-keygen --name alice "$KD/alice" >/dev/null
"$BUILD_DIR"/fedlr-keygen "$KD/bob" >/dev/null
mkdir -p "$CORPUS/keys"
cp "$KD/alice.key" "$CORPUS/keys/seed-public"
cp "$KD/alice.key_secret" "$CORPUS/keys/seed-secret"
pub() { sed -n 's/.*public-key = "\(.*\)"/\1/p' "$1"; }
printf '# clients\n%s alice\n\n%s   bob # lab 2\n' "$(pub "$KD/alice.key")" "$(pub "$KD/bob.key")" \
  > "$CORPUS/keys/seed-allowlist"
rm -rf "$KD"
du -sh "$CORPUS"
