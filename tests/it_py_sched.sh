# The Python package's schedules (python/fedlr/schedules.py) against the C
# code (common/fl_sched.c, through tests/tools/fl_sched_dump): every kind,
# its edge cases, plateau traces, the error message of every bad spec and
# a few thousand random specs (python/tests/test_sched.py).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib_py.sh"

DUMP="$BUILD/tests/fl_sched_dump"
[ -x "$DUMP" ] || { bad "$DUMP is missing (built with the tests)"; finish; exit 1; }
py_checks "python/tests/test_sched.py" "$PY" "$SRC/python/tests/test_sched.py" "$DUMP"
finish
