# The integration tests' own harness (tests/lib.sh): each case runs a body in
# a fresh bash that sourced lib.sh as a test does (set -e, the EXIT trap),
# and checks its exit status and output against the rule: 1 when a check
# failed or nothing was checked, 77 when something was skipped, else 0, with
# "N passed, K skipped, M failed".
source "$(dirname "$0")/lib.sh"
LIB="$(cd "$(dirname "$0")" && pwd)/lib.sh"

# case_ DESC WANT_RC WANT_LAST_LINE BODY [MUST_NOT_PRINT]
case_() {
  local desc=$1 want_rc=$2 want=$3 body=$4 never=${5:-} out rc=0
  out=$(bash -c "source '$LIB' '$BUILD'; $body" 2>&1) || rc=$?
  if [ "$rc" -ne "$want_rc" ]; then
    bad "$desc: exit $rc, not $want_rc: $out"
  elif [ "$(tail -1 <<<"$out")" != "$want" ]; then
    bad "$desc: last line '$(tail -1 <<<"$out")', not '$want'"
  elif [ -n "$never" ] && grep -qF -- "$never" <<<"$out"; then
    bad "$desc: printed '$never': $out"
  else
    ok "$desc: exit $rc, '$want'"
  fi
}

case_ "all passed" 0 "2 passed, 0 skipped, 0 failed" 'ok a; ok b; finish'
case_ "one failed" 1 "1 passed, 0 skipped, 1 failed" 'ok a; bad b; finish'
case_ "a skip beside passes is a skip" 77 "1 passed, 1 skipped, 0 failed" 'ok a; skip "b: no tool"; finish'
case_ "all skipped" 77 "0 passed, 2 skipped, 0 failed" 'skip a; skip b; finish'
case_ "a failure beats a skip" 1 "0 passed, 1 skipped, 1 failed" 'skip a; bad b; finish'
case_ "nothing checked is a failure" 1 "FAIL: nothing was checked" 'finish'
case_ "skip_rest ends the test as skipped" 77 "1 passed, 1 skipped, 0 failed" \
  'ok a; skip_rest "no daemon"; ok never' "ok: never"
case_ "skip_rest after a failure fails" 1 "0 passed, 1 skipped, 1 failed" \
  'bad a; [ -n "" ] || skip_rest "no daemon"; ok never' "ok: never"
case_ "expect_exit: the status and the message" 0 "1 passed, 0 skipped, 0 failed" \
  'expect_exit 3 d boom bash -c "echo boom >&2; exit 3"; finish'
case_ "expect_exit: another status fails" 1 "0 passed, 0 skipped, 1 failed" \
  'expect_exit 3 d boom bash -c "echo boom >&2; exit 4"; finish'
case_ "expect_fail: exit 0 fails" 1 "0 passed, 0 skipped, 1 failed" 'expect_fail d boom true; finish'
case_ "expect_fail: a missing message fails" 1 "0 passed, 0 skipped, 1 failed" \
  'expect_fail d boom false; finish'

# The EXIT trap keeps finish's status and removes the test's TMP.
out=$(bash -c "source '$LIB' '$BUILD'; echo \"tmp \$TMP\"; skip a; finish" 2>&1) && rc=0 || rc=$?
t=$(sed -n 's/^tmp //p' <<<"$out")
[ "$rc" -eq 77 ] && [ -n "$t" ] && [ ! -e "$t" ] && ok "the EXIT trap keeps the status (77) and removes $t" \
  || bad "after the EXIT trap: exit $rc, TMP '$t' $([ -e "$t" ] && echo left)"
finish
