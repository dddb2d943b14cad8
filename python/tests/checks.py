"""Check reporting for the Python package's tests (python/tests/*.py).

Each test script prints one line per check, the way tests/lib.sh's helpers
do: "ok: WHAT" (it held), "FAIL: WHAT" (it did not), "skip: WHAT: WHY" (it
cannot run here). tests/lib_py.sh relays the lines to lib.sh's ok/bad/skip,
so a ctest test (tests/it_py_*.sh) counts them under the suite's one rule.
A script that dies (an exception) exits non-zero, which the relay counts as
a failure.
"""

import os
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The package in this source tree, unless PYTHONPATH says which to test.
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, os.path.join(REPO, "python"))


class Checks:
    def __init__(self):
        self.failed = 0

    def ok(self, what):
        print("ok: " + what, flush=True)

    def bad(self, what):
        self.failed += 1
        print("FAIL: " + what, flush=True)

    def skip(self, what):
        print("skip: " + what, flush=True)

    def check(self, cond, what, detail=""):
        """ok(what) if cond, else bad(what: detail)."""
        if cond:
            self.ok(what)
        else:
            self.bad(what + (": " + detail if detail else ""))
        return bool(cond)

    def raises(self, exc_type, fn, what, want=None):
        """fn() must raise exc_type (with `want` in its message)."""
        try:
            fn()
        except exc_type as e:
            msg = str(e)
            if want is not None and want not in msg:
                self.bad("%s: message %r lacks %r" % (what, msg, want))
                return None
            self.ok("%s: %s" % (what, msg))
            return e
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            self.bad("%s: raised %s: %s, not %s" % (what, type(e).__name__, e, exc_type.__name__))
            return None
        self.bad("%s: nothing raised" % what)
        return None
