# Helpers for the Python package's integration tests (tests/it_py_*.sh), on
# top of tests/lib.sh (source that first).
#
# PYTHONPATH points at this source tree's package (python/), so the tests
# run the code under test, not an installed copy. Debian's python3 ($PY)
# must have python3-zmq, python3-protobuf and python3-numpy (and
# python3-torch for the PyTorch tests), which scripts/deps.sh installs:
# without them a test is skipped (exit 77), never passed.
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$SRC/python"
# One thread for torch and BLAS in each client: the tests run several
# processes on a 2-core machine shared with other work.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

# need_py MODULE...: skips the whole test (exit 77) if $PY cannot import a
# module, naming the Debian package to install.
need_py() {
  local m
  for m in "$@"; do
    if ! "$PY" -c "import $m" 2>/dev/null; then
      local pkg="python3-$m"
      [ "$m" = google.protobuf ] && pkg=python3-protobuf
      skip_rest "$PY cannot import $m (install $pkg: bash scripts/deps.sh)"
    fi
  done
}

# py_checks DESC CMD...: runs a Python check script (python/tests/*.py,
# which prints "ok: ...", "FAIL: ..." and "skip: ..." lines, see
# python/tests/checks.py) and relays each line to lib.sh's ok/bad/skip; its
# other output goes to $TMP/py.log. A script that exits non-zero without
# reporting a failure (it crashed) is a failure too.
py_checks() {
  local desc=$1
  shift
  local out rc=0 line nbad=$FAIL
  out=$("$@" 2>>"$TMP/py.log") || rc=$?
  while IFS= read -r line; do
    case "$line" in
      "ok: "*) ok "${line#ok: }" ;;
      "FAIL: "*) bad "${line#FAIL: }" ;;
      "skip: "*) skip "${line#skip: }" ;;
      *) echo "$line" ;;
    esac
  done <<<"$out"
  if [ "$rc" -ne 0 ] && [ "$FAIL" -eq "$nbad" ]; then
    bad "$desc: exit $rc"
    tail -20 "$TMP/py.log"
  fi
}
