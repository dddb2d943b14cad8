# Shared helpers for the integration tests (tests/it_*.sh). Each test is run
# by ctest as `bash tests/it_X.sh BUILD_DIR`; exit 0 pass, 77 skip, else fail.
set -euo pipefail
BUILD=${1:?usage: it_X.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
SIM="$BUILD/fedlr-sim"
DATA_DIR=${FEDLR_DATA_DIR:-/usr/share/datasets/fashion-mnist}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fedlr-it.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# Debian's python3 (with python3-numpy from scripts/deps.sh), not a PATH shim.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
PASS=0
FAIL=0

ok() { echo "ok: $*"; PASS=$((PASS + 1)); }
bad() { echo "FAIL: $*"; FAIL=$((FAIL + 1)); }
finish() {
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" -eq 0 ]
}

# jsonl_field FILE EXPR: evaluates a python expression over `rows` (the list
# of JSON objects in FILE) and prints the result.
jsonl_eval() {
  "$PY" - "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(eval(sys.argv[2]))
PY
}

# expect_fail DESC EXPECTED_SUBSTRING CMD...: the command must exit non-zero
# and print the substring on stderr.
expect_fail() {
  local desc=$1 want=$2
  shift 2
  local out rc=0
  out=$("$@" 2>&1 >/dev/null) || rc=$?
  if [ "$rc" -eq 0 ]; then
    bad "$desc: exited 0"
  elif ! grep -qF -- "$want" <<<"$out"; then
    bad "$desc: stderr lacks '$want': $out"
  else
    ok "$desc (exit $rc): $(grep -F -- "$want" <<<"$out" | head -1)"
  fi
}
