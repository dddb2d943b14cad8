# Shared helpers for the integration tests (tests/it_*.sh). Each test is run
# by ctest as `bash tests/it_X.sh BUILD_DIR`; exit 0 pass, 77 skip, else fail.
# The rule is tests/fl_test.h's: every check is an `ok` (it held), a `bad`
# (it did not) or a `skip` (it cannot run here, and why); `finish` prints
# "N passed, K skipped, M failed" and exits 1 if anything failed or nothing
# was checked, 77 if something was skipped (ctest then reports the test as
# skipped: a pass would claim checks that did not run), else 0. An `ok` must
# be able to fail: print it only under the condition it reports.
set -euo pipefail
BUILD=${1:?usage: it_X.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
SIM="$BUILD/fedlr-sim"
DATA_DIR=${FEDLR_DATA_DIR:-/usr/share/datasets/fashion-mnist}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fedlr-it.XXXXXX")
# Debian's python3 (with python3-numpy from scripts/deps.sh), not a PATH shim.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
PASS=0
FAIL=0
SKIP=0

ok() { echo "ok: $*"; PASS=$((PASS + 1)); }
bad() { echo "FAIL: $*"; FAIL=$((FAIL + 1)); }
# skip WHAT: WHY: a part of the test that cannot run here; the rest goes on.
skip() { echo "skip: $*"; SKIP=$((SKIP + 1)); }
finish() {
  echo "$PASS passed, $SKIP skipped, $FAIL failed"
  if [ "$FAIL" -ne 0 ]; then return 1; fi
  if [ "$SKIP" -ne 0 ]; then return 77; fi
  if [ "$PASS" -eq 0 ]; then
    echo "FAIL: nothing was checked"
    return 1
  fi
}
# skip_rest WHY: nothing more of the test can run here: a skip, then finish
# and exit (77, or 1 if something failed before).
skip_rest() {
  skip "$@"
  local rc=0
  finish || rc=$?
  exit "$rc"
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
# and print the substring on stderr. expect_exit STATUS DESC EXPECTED_SUBSTRING
# CMD...: the same with exactly that exit status.
expect_fail() { expect_exit nonzero "$@"; }
expect_exit() {
  local status=$1 desc=$2 want=$3
  shift 3
  local out rc=0
  out=$("$@" 2>&1 >/dev/null) || rc=$?
  if [ "$rc" -eq 0 ]; then
    bad "$desc: exited 0"
  elif [ "$status" != nonzero ] && [ "$rc" -ne "$status" ]; then
    bad "$desc: exit $rc, not $status: $out"
  elif ! grep -qF -- "$want" <<<"$out"; then
    bad "$desc: stderr lacks '$want': $out"
  else
    ok "$desc (exit $rc): $(grep -F -- "$want" <<<"$out" | head -1)"
  fi
}

# ---- networked runs ----
COORD="$BUILD/fedlr-coordinator"
CLIENT="$BUILD/fedlr-client"
PIDS=()
# cleanup_pids ends what the test started (PIDS, each `timeout N prog` or a
# plain process): SIGTERM first, which `timeout` forwards to its child, then
# SIGKILL to whatever is left, the program under a `timeout` included (a
# SIGKILL of the wrapper alone would orphan it).
cleanup_pids() {
  local p
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    local alive=0
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.2
  done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill9 "$p" || true; done
  return 0
}
trap 'cleanup_pids; [ -n "${KEEP_TMP:-}" ] && echo "kept $TMP" || rm -rf "$TMP"' EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# st_equal A B: the tensors (not the metadata) of two safetensors files are
# bit-identical. st_maxdiff A B prints the largest absolute difference.
st_py() {
  "$PY" - "$@" <<'PY'
import json, struct, sys
import numpy as np
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items()}
mode, a, b = sys.argv[1], load(sys.argv[2]), load(sys.argv[3])
if mode == "equal":
    sys.exit(0 if a == b else 1)
assert a.keys() == b.keys()
print(max(float(np.max(np.abs(np.frombuffer(a[k], "<f4") - np.frombuffer(b[k], "<f4")))) for k in a))
PY
}
st_equal() { st_py equal "$1" "$2"; }
st_maxdiff() { st_py maxdiff "$1" "$2"; }

# wait_until SECONDS CMD...: polls CMD every 0.2 s; fails after SECONDS.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
lines_at_least() { [ -f "$1" ] && [ "$(wc -l < "$1")" -ge "$2" ]; }
# kill9 PID: SIGKILL a process started as `timeout N prog &` — the program
# itself (timeout's child) first, then the wrapper. Succeeds when either is
# gone already (timeout exits as soon as its child dies), also under set -e.
kill9() { pkill -9 -P "$1" 2>/dev/null || true; kill -9 "$1" 2>/dev/null || true; }

# start_clients N SEED: N fedlr-client processes training partitions 0..N-1
# of Fashion-MNIST (IID, --seed SEED) for the coordinator on $PORT; their
# pids in CL (and PIDS), their logs appended to $TMP/cI.log.
start_clients() {
  local n=$1 seed=$2 i
  CL=()
  for ((i = 0; i < n; i++)); do
    timeout 120 "$CLIENT" --connect "tcp://127.0.0.1:$PORT" --dataset fashion-mnist --data-dir "$DATA_DIR" \
      --partition iid --num-partitions "$n" --partition-index $i --seed "$seed" 2>> "$TMP/c$i.log" &
    CL+=($!); PIDS+=($!)
  done
}

# wait_run DESC: the coordinator ($CPID, its log $TMP/coord.log) and the
# clients started by start_clients must all exit 0.
wait_run() {
  local rc=0 i
  wait $CPID || rc=$?
  [ $rc -eq 0 ] && ok "$1: coordinator exit 0" || { bad "$1: coordinator exit $rc"; tail -5 "$TMP/coord.log"; }
  for i in "${!CL[@]}"; do
    rc=0; wait "${CL[$i]}" || rc=$?
    [ $rc -eq 0 ] || { bad "$1: client $i exit $rc"; tail -3 "$TMP/c$i.log"; }
  done
}
