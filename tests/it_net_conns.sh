# Issue 9, defect 4: a peer must not hold connections (file descriptors) open
# by connecting and never joining. A real run (fedlr-coordinator and 2
# fedlr-client processes) while fl_badpeer opens 200 connections that finish
# the ZMTP handshake and then stay silent:
#   (100 rounds: the run must outlast the idle connections.)
#   1. --join-timeout 2: every idle connection is closed about 2 s after it
#      was accepted, the coordinator's descriptors go back to where they
#      were, and the run is unaffected (bit-identical to fedlr-sim);
#   2. the number of open connections is bounded: with the default
#      --max-connections (2 x --clients + 64 = 68), connections beyond it are
#      closed as soon as the coordinator hears of them, so once the burst has
#      been handled the coordinator holds at most 68 connections, far below
#      its open-file limit (400 here, prlimit), and the run completes. (A
#      burst faster than the coordinator's event loop can exceed the bound
#      for a moment: README, "Not covered".)
#   3. a --max-connections that the open-file limit cannot honour is lowered
#      to what it can, and said so.
source "$(dirname "$0")/lib.sh"

BADPEER="$BUILD/tests/fl_badpeer"
[ -x "$BADPEER" ] || { echo "skip: $BADPEER is not built"; exit 77; }
command -v prlimit > /dev/null || { echo "skip: no prlimit (util-linux)"; exit 77; }
LIMIT=300
DATA=(--dataset fashion-mnist --data-dir "$DATA_DIR" --seed 9)
RUN=(--model softmax --clients 2 --fraction 1 --rounds 100 --local-epochs 1 --batch-size 20 --lr 0.05 "${DATA[@]}")

fds() { { ls "/proc/$1/fd" 2> /dev/null || true; } | wc -l; }

# start_run NAME PRLIMIT_ARGS... -- COORD_FLAGS...: a coordinator (its pid in
# COORD_PID, the timeout wrapper's in CPID) and 2 clients (in CL).
start_run() {
  local name=$1; shift
  local pl=()
  while [ "$1" != "--" ]; do pl+=("$1"); shift; done
  shift
  PORT=$(free_port)
  EP="tcp://127.0.0.1:$PORT"
  timeout -k 5 $LIMIT prlimit "${pl[@]}" "$COORD" --bind "$EP" "${RUN[@]}" --start-clients 2 \
    --metrics "$TMP/$name.jsonl" --out "$TMP/$name" "$@" > /dev/null 2> "$TMP/$name-coord.log" &
  CPID=$!; PIDS+=($CPID)
  wait_until 30 grep -q "listening on" "$TMP/$name-coord.log" || bad "$name: no coordinator"
  COORD_PID=$(pgrep -n -f -- "--bind $EP")
  CL=()
  for i in 0 1; do
    timeout -k 5 $LIMIT "$CLIENT" --connect "$EP" "${DATA[@]}" --partition iid --num-partitions 2 \
      --partition-index $i --quiet 2> "$TMP/$name-c$i.log" &
    CL+=($!); PIDS+=($!)
  done
  wait_until 30 lines_at_least "$TMP/$name.jsonl" 1 || bad "$name: no round completed"
}

# end_run NAME: waits for the run; the clients and coordinator must exit 0.
end_run() {
  local rc=0 i
  wait $CPID || rc=$?
  [ $rc -eq 0 ] && ok "$1: coordinator exited 0" || { bad "$1: coordinator exit $rc"; tail -5 "$TMP/$1-coord.log"; }
  for i in 0 1; do
    rc=0; wait "${CL[$i]}" || rc=$?
    [ $rc -eq 0 ] || bad "$1: client $i exit $rc"
  done
}

# max_fds PID SECONDS: the most descriptors PID held, sampled every 0.1 s.
max_fds() {
  local m=0 n end=$((SECONDS + $2))
  while [ $SECONDS -lt $end ]; do
    n=$(fds "$1"); [ "$n" -gt "$m" ] && m=$n
    sleep 0.1
  done
  echo "$m"
}

# 1. Idle connections are closed after --join-timeout.
start_run idle -- --join-timeout 2 --max-connections 512
base=$(fds "$COORD_PID")
"$BADPEER" --connect "$EP" --idle 200 --duration 5 --timeout 10 > "$TMP/idle.out" 2>&1 &
BP=$!; PIDS+=($BP)
peak=$(max_fds "$COORD_PID" 3)
wait $BP || true
cat "$TMP/idle.out"
kill -0 "$COORD_PID" 2> /dev/null || bad "1: the run ended before its descriptors could be counted"
after=$(fds "$COORD_PID")
read -r conn closed first last <<< "$(sed -nE 's/^idle: ([0-9]+) connected, ([0-9]+) closed .*first after ([0-9.]+) s, last after ([0-9.]+) s.*/\1 \2 \3 \4/p' "$TMP/idle.out")"
[ "${conn:-0}" -eq 200 ] && ok "1: 200 idle connections made the handshake" || bad "1: ${conn:-0} connected"
[ "${closed:-0}" -eq 200 ] && ok "1: all 200 closed by the coordinator, between ${first} and ${last} s" \
  || bad "1: ${closed:-0} of 200 closed"
"$PY" -c "import sys; sys.exit(0 if 1.9 <= ${first:-0} and ${last:-99} <= 5.0 else 1)" \
  && ok "1: closed after the 2 s --join-timeout (not before, not long after)" \
  || bad "1: closed between ${first:-?} and ${last:-?} s"
[ "$peak" -ge $((base + 150)) ] && ok "1: descriptors went from $base to $peak while they were open" \
  || bad "1: descriptors peaked at $peak (base $base): the connections were not held?"
[ "$after" -le $((base + 5)) ] && ok "1: and back to $after after they were closed" || bad "1: $after descriptors after (base $base)"
n=$(grep -c "no client joined on it within 2 s" "$TMP/idle-coord.log" || true)
[ "$n" -ge 1 ] && [ "$n" -le 41 ] && ok "1: closures logged, rate-limited ($n lines)" || bad "1: $n closure lines"
end_run idle
"$SIM" --quiet "${RUN[@]}" --partition iid --out "$TMP/sim" > /dev/null 2>&1 || bad "fedlr-sim failed"
st_equal "$TMP/idle/model.safetensors" "$TMP/sim/model.safetensors" \
  && ok "1: the run is bit-identical to fedlr-sim" || bad "1: the run differs from fedlr-sim"

# 2. A bounded number of open connections.
start_run capped --nofile=400:400 --
grep -q "limit" "$TMP/capped-coord.log" && grep "limit" "$TMP/capped-coord.log" | head -2
base=$(fds "$COORD_PID")
"$BADPEER" --connect "$EP" --idle 200 --duration 3 --timeout 10 > "$TMP/capped.out" 2>&1 &
BP=$!; PIDS+=($BP)
peak=$(max_fds "$COORD_PID" 2)
held=$(fds "$COORD_PID")
wait $BP || true
cat "$TMP/capped.out"
[ "$held" -le $((base + 68 + 4)) ] && ok "2: once the burst was handled the coordinator held $held descriptors (base $base + at most 68 connections; peak $peak)" \
  || bad "2: $held descriptors held after the burst (base $base, bound 68)"
[ "$peak" -lt 400 ] && ok "2: descriptors peaked at $peak, below the open-file limit of 400" \
  || bad "2: descriptors reached $peak of 400"
grep -q "the limit is 68 (--max-connections)" "$TMP/capped-coord.log" \
  && ok "2: connections beyond 68 closed at once: $(grep -c "the limit is 68" "$TMP/capped-coord.log") lines" \
  || bad "2: no over-the-limit closure logged"
if grep -qiE "too many open files|EMFILE" "$TMP/capped-coord.log"; then bad "2: the open-file limit bit"; else ok "2: the open-file limit never bit"; fi
end_run capped
rows=$(jsonl_eval "$TMP/capped.jsonl" "len(rows)")
[ "$rows" = 100 ] && ok "2: all 100 rounds completed" || bad "2: $rows rounds"

# 3. --max-connections beyond what the open-file limit allows is lowered.
timeout 20 prlimit --nofile=100:100 "$COORD" --bind "tcp://127.0.0.1:$(free_port)" "${RUN[@]}" --max-connections 5000 \
  --start-clients 2 --start-timeout 1 > /dev/null 2> "$TMP/lowered.log" || true
grep -q "max-connections 5000 exceeds what the open-file limit (ulimit -n 100) allows: using 50" "$TMP/lowered.log" \
  && ok "3: $(grep -o "max-connections 5000 exceeds.*" "$TMP/lowered.log")" || bad "3: $(head -3 "$TMP/lowered.log")"
finish
