# libfedlr as an application sees it (issue 11, part 4): the library is
# installed into a fresh prefix (cmake --install), exports fedlr_* only, and
# examples/c (federated linear regression, a model fedlr does not have) is
# built against the installed copy with pkg-config, shared and static. Then
# real fedlr-coordinator runs started from the example's --init file:
#   1. three clients train it: every process exits 0, the federated
#      evaluation loss falls and the final model is the true one (within
#      the noise), EvalResults from every client in every round;
#   2. a retried round: a client slower than --round-timeout makes round 1
#      fail; the retry's update is accepted (attempt 2 echoed) and the slow
#      client's late update is dropped as attempt 1 (echoed too);
#   3. heartbeats from the library's thread: clients whose train callback
#      sleeps 2.5 s, longer than --client-timeout 1, are never declared
#      dead and report in every round.
source "$(dirname "$0")/lib.sh"

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX="$TMP/prefix"

# ---- install ----
if ! cmake --install "$BUILD" --prefix "$PREFIX" > "$TMP/install.log" 2>&1; then
  bad "cmake --install failed: $(tail -3 "$TMP/install.log")"
  finish
fi
LIBDIR=$(dirname "$(find "$PREFIX" -name fedlr.pc | head -1)")/..
LIBDIR=$(cd "$LIBDIR" && pwd)
for f in "$PREFIX/include/fedlr.h" "$LIBDIR/libfedlr.so.0" "$LIBDIR/libfedlr.so" "$LIBDIR/libfedlr.a" \
  "$LIBDIR/pkgconfig/fedlr.pc"; do
  [ -e "$f" ] && ok "installed ${f#"$PREFIX"/}" || bad "not installed: ${f#"$PREFIX"/}"
done
export PKG_CONFIG_PATH="$LIBDIR/pkgconfig"
want=$(sed -n 's/^#define FEDLR_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)$/\2/p' "$SRC/include/fedlr.h" | paste -sd.)
got=$(pkg-config --modversion fedlr 2>&1 || true)
[ "$got" = "$want" ] && ok "pkg-config --modversion fedlr: $got (the header's)" || bad "pkg-config version '$got', header $want"
[ "$(readlink "$LIBDIR/libfedlr.so.0")" = "libfedlr.so.$want" ] && ok "libfedlr.so.0 -> libfedlr.so.$want" \
  || bad "libfedlr.so.0 -> $(readlink "$LIBDIR/libfedlr.so.0")"

# ---- only fedlr_* is exported ----
syms=$(nm -D --defined-only "$LIBDIR/libfedlr.so.0" | awk 'NF == 3 { print $3 }')
n=$(grep -c . <<< "$syms" || true)
others=$(grep -v '^fedlr_[a-z]' <<< "$syms" | head -5 || true)
inner=$(grep '^fedlr__' <<< "$syms" | head -5 || true)
if [ "$n" -ge 30 ] && [ -z "$others" ] && [ -z "$inner" ]; then
  ok "nm -D: $n symbols, all fedlr_* (no fl_*, no protobuf, no fedlr__ internals)"
else
  bad "nm -D: $n symbols; not fedlr_*: $others $inner"
fi
for f in fedlr_client_new fedlr_client_run fedlr_client_stop fedlr_local_lr fedlr_tensors_save; do
  grep -qx "$f" <<< "$syms" || bad "nm -D: $f is not exported"
done
astat=$(nm -g --defined-only "$LIBDIR/libfedlr.a" | awk 'NF == 3 { print $3 }')
aothers=$(grep -v '^fedlr_[a-z]' <<< "$astat" | head -5 || true)
[ -n "$astat" ] && [ -z "$aothers" ] && ok "libfedlr.a: $(grep -c . <<< "$astat") global symbols, all fedlr_*" \
  || bad "libfedlr.a globals not fedlr_*: $aothers"

# ---- the example, built against the installed library ----
# A sanitizer tree's libfedlr carries the sanitizer's instrumentation: the
# example is then compiled and linked with the same -fsanitize (as any
# application linking an instrumented library must be), or libfedlr.a does
# not link and libfedlr.so refuses to start without its runtime first.
SAN=
grep -q '^FEDLR_SANITIZE:BOOL=ON' "$BUILD/CMakeCache.txt" && SAN="-fsanitize=address,undefined"
grep -q '^FEDLR_TSAN:BOOL=ON' "$BUILD/CMakeCache.txt" && SAN="-fsanitize=thread"
# (In the environment: make's command line would override the Makefile's +=.)
[ -n "$SAN" ] && export CFLAGS="-O2 -g -Wall -Wextra $SAN" LDFLAGS="$SAN"
cp -r "$SRC/examples/c" "$TMP/example"
if make -C "$TMP/example" > "$TMP/make.log" 2>&1 && mv "$TMP/example/linreg" "$TMP/linreg" &&
  make -C "$TMP/example" STATIC=1 >> "$TMP/make.log" 2>&1 &&
  mv "$TMP/example/linreg" "$TMP/linreg-static"; then
  ok "examples/c built with pkg-config, shared and static"
else
  bad "examples/c did not build: $(tail -5 "$TMP/make.log")"
  finish
fi
grep -q "Werror\|warning" "$TMP/make.log" && bad "warnings building the example: $(grep warning "$TMP/make.log" | head -3)"
export LD_LIBRARY_PATH="$LIBDIR"
grep -q "libfedlr.so.0 => $LIBDIR" <<< "$(ldd "$TMP/linreg")" && ok "linreg uses the installed libfedlr.so.0" \
  || bad "linreg: $(ldd "$TMP/linreg" | grep fedlr)"
grep -q libfedlr <<< "$(ldd "$TMP/linreg-static")" && bad "linreg-static links libfedlr.so" || ok "linreg-static carries libfedlr.a"
"$TMP/linreg" init "$TMP/init.safetensors" && ok "linreg init wrote the --init file" || bad "linreg init failed"

# run_coord NAME ARGS...: a coordinator from the example's --init on $PORT.
run_coord() {
  local name=$1
  shift
  PORT=$(free_port)
  timeout 120 "$BUILD/fedlr-coordinator" --bind "tcp://127.0.0.1:$PORT" --init "$TMP/init.safetensors" \
    --metrics "$TMP/$name.jsonl" --out "$TMP/$name" "$@" > "$TMP/$name.out" 2> "$TMP/$name.log" &
  CPID=$!
  PIDS+=($CPID)
}
# run_client NAME K BIN ARGS...: linreg client K, its pid appended to CL.
run_client() {
  local name=$1 k=$2 bin=$3
  shift 3
  timeout 120 "$bin" client --connect "tcp://127.0.0.1:$PORT" --client "$k" "$@" \
    > "$TMP/$name-c$k.out" 2> "$TMP/$name-c$k.log" &
  CL+=($!)
  PIDS+=($!)
}
# wait_all NAME: the coordinator and the clients in CL exit 0.
wait_all() {
  local rc=0 i bad_ones=""
  wait $CPID || rc=$?
  [ $rc -eq 0 ] && ok "$1: coordinator exit 0" || { bad "$1: coordinator exit $rc"; tail -5 "$TMP/$1.log"; }
  for i in "${!CL[@]}"; do
    rc=0
    wait "${CL[$i]}" || rc=$?
    [ $rc -eq 0 ] || bad_ones+=" $i:$rc"
  done
  [ -z "$bad_ones" ] && ok "$1: ${#CL[@]} clients exit 0" || { bad "$1: client exits$bad_ones"; tail -3 "$TMP/$1"-c*.log; }
}

# ---- 1. three clients train the model ----
run_coord train --clients 3 --start-clients 3 --fraction 1 --rounds 12 --lr 0.05 --batch-size 20 \
  --local-epochs 2 --local-schedule "exp:gamma=0.7" --seed 3
CL=()
run_client train 0 "$TMP/linreg"
run_client train 1 "$TMP/linreg-static"
run_client train 2 "$TMP/linreg" --examples 300 --holdout 50
wait_all train
rows=$(jsonl_eval "$TMP/train.jsonl" "len(rows)")
[ "$rows" = 12 ] && ok "1: 12 rounds in the metrics" || bad "1: $rows rounds in the metrics"
# A model without an "accuracy" metric ends on its federated loss.
grep -q "run finished after 12 rounds, federated loss [0-9]" "$TMP/train.log" \
  && ok "1: $(grep -m1 -o 'run finished after 12 rounds.*' "$TMP/train.log")" \
  || bad "1: no 'run finished ..., federated loss' line: $(grep -m1 'run finished' "$TMP/train.log")"
first=$(jsonl_eval "$TMP/train.jsonl" "rows[0]['fed_eval_loss']")
last=$(jsonl_eval "$TMP/train.jsonl" "rows[-1]['fed_eval_loss']")
"$PY" -c "import sys; sys.exit(0 if $last < $first / 10 and $last < 0.02 else 1)" \
  && ok "1: federated evaluation loss $first -> $last (noise variance 0.01)" || bad "1: fed_eval_loss $first -> $last"
every=$(jsonl_eval "$TMP/train.jsonl" "all(r['fed_eval_clients'] == 3 and r['fed_eval_examples'] == 250 and r['clients_reported'] == 3 for r in rows)")
[ "$every" = True ] && ok "1: every round: 3 updates and 3 EvalResults (250 held-out examples)" \
  || bad "1: rounds without every client: $(cut -c1-300 "$TMP/train.jsonl" | tail -2)"
r2=$(jsonl_eval "$TMP/train.jsonl" "rows[-1].get('fed_eval_r2', 0)")
"$PY" -c "import sys; sys.exit(0 if $r2 > 0.99 else 1)" && ok "1: metric r2 aggregated: $r2" || bad "1: fed_eval_r2 $r2"
truth=$("$TMP/linreg" truth)
diff=$("$PY" - "$TMP/train/model.safetensors" "$truth" <<'PY'
import json, struct, sys
import numpy as np
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
def get(name):
    a, b = hdr[name]["data_offsets"]
    return np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4")
got = np.concatenate([get("linear.weight"), get("linear.bias")])
want = np.array([float(v) for v in sys.argv[2].split()])
print("%.4f" % np.abs(got - want).max())
PY
)
"$PY" -c "import sys; sys.exit(0 if $diff < 0.05 else 1)" \
  && ok "1: final model within $diff of the true weights and bias" || bad "1: final model $diff from the truth"
grep -q "round 12 evaluated in" "$TMP/train-c0.log" && ok "1: $(grep -m1 -o 'round 12 evaluated in.*' "$TMP/train-c0.log")" \
  || bad "1: client 0 logged no evaluation of round 12: $(tail -2 "$TMP/train-c0.log")"
sched=$(grep -c "attempt 1: rate 0.05," "$TMP/train-c0.out" || true)
[ "$sched" = 12 ] && ok "1: client 0 trained 12 rounds at the round's rate 0.05" || bad "1: $sched rounds at rate 0.05"

# ---- 2. a retried round: attempts echoed ----
# Client 1 sleeps 7 s in round 1, past the 5 s deadline: the round is
# abandoned and retried without it (attempt 2); client 0 takes 3.5 s over
# the retry, so client 1's late update reaches an open attempt 2.
run_coord retry --clients 2 --start-clients 2 --fraction 1 --quorum 1 --rounds 3 --lr 0.05 --batch-size 20 \
  --heartbeat 0.3 --client-timeout 1 --round-timeout 5 --seed 5
CL=()
run_client retry 0 "$TMP/linreg" --slow 3.5 --slow-call 2
run_client retry 1 "$TMP/linreg" --slow 7 --slow-call 1
wait_all retry
grep -q "round 1: .*abandoned (attempt 1)" "$TMP/retry.log" \
  && ok "2: $(grep -m1 -o 'round 1: .*abandoned (attempt 1)' "$TMP/retry.log" | cut -c1-100)" \
  || bad "2: round 1 was not retried: $(grep 'round 1' "$TMP/retry.log" | head -3)"
grep -q "round 1 attempt 2:" "$TMP/retry-c0.out" && ok "2: client 0 trained round 1 attempt 2" \
  || bad "2: client 0 never saw attempt 2: $(cat "$TMP/retry-c0.out")"
r1=$(jsonl_eval "$TMP/retry.jsonl" "[r['clients_reported'] for r in rows if r['round'] == 1]")
[ "$r1" = "[1]" ] && ok "2: round 1 closed on the retry's update (attempt 2 echoed and accepted)" \
  || bad "2: round 1 reported $r1"
stale=$(grep -m1 -o "is for attempt 1 of round 1, the current attempt is 2" "$TMP/retry.log" || true)
[ -n "$stale" ] && ok "2: the slow client's late update echoed attempt 1: rejected ('$stale')" \
  || bad "2: no attempt-1 update from the slow client: $(grep -i 'rejected\|attempt' "$TMP/retry.log" | head -3)"

# ---- 3. heartbeats from the library's thread during a 2.5 s train callback ----
run_coord hb --clients 2 --start-clients 2 --fraction 1 --rounds 3 --lr 0.05 --batch-size 20 \
  --heartbeat 0.3 --client-timeout 1 --round-timeout 10 --seed 7
CL=()
run_client hb 0 "$TMP/linreg" --slow 2.5
run_client hb 1 "$TMP/linreg-static" --slow 2.5
wait_all hb
if grep -qE "is dead|did not answer" "$TMP/hb.log"; then
  bad "3: a sleeping client was declared dead: $(grep -m2 -E 'is dead|did not answer' "$TMP/hb.log")"
else
  ok "3: no client declared dead while its train callback slept 2.5 s (--client-timeout 1)"
fi
all=$(jsonl_eval "$TMP/hb.jsonl" "[r['clients_reported'] for r in rows]")
[ "$all" = "[2, 2, 2]" ] && ok "3: both clients reported in every round" || bad "3: reported per round $all"
secs=$(jsonl_eval "$TMP/hb.jsonl" "min(r['seconds'] for r in rows)")
"$PY" -c "import sys; sys.exit(0 if $secs >= 2.5 else 1)" && ok "3: rounds took >= 2.5 s ($secs s): the sleep was real" \
  || bad "3: a round took $secs s"
finish
