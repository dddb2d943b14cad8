# A client whose coordinator is gone for good gives up: with --give-up SEC it
# exits with status 5 and says so once nothing at all has come from the
# coordinator for SEC seconds, whether the coordinator was SIGKILLed mid-run
# or was never there; with --give-up 0 it keeps rejoining.
source "$(dirname "$0")/lib.sh"

GIVE_UP=3
SLACK=5 # s on top of GIVE_UP for process start, a round in training, exit (linger 1 s) on a busy machine
# elapsed_since T0: seconds since $EPOCHREALTIME was T0, with 2 decimals.
elapsed_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
# within X LO HI: LO <= X <= HI.
within() { awk -v x="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(x >= lo && x <= hi) }'; }
GAVE_UP_RE="no message from the coordinator at .* for [0-9]+ s \(--give-up $GIVE_UP\): giving up"

# 200 examples with the coordinator's input width (Fashion-MNIST: 784), so
# that a client loads its data in a moment.
"$PY" - "$TMP/tiny.csv" <<'PY'
import random, sys
random.seed(1)
with open(sys.argv[1], "w") as f:
    for i in range(200):
        f.write(",".join([str(i % 10)] + ["%.3f" % random.random() for _ in range(784)]) + "\n")
PY

# 1. No coordinator at all (nothing listens on the port): --give-up 3 gives
#    up, --give-up 0 is still rejoining after that.
EP="tcp://127.0.0.1:$(free_port)"
t0=$EPOCHREALTIME
timeout -k 5 60 "$CLIENT" --connect "$EP" --data "$TMP/tiny.csv" --name lonely --give-up $GIVE_UP \
  2> "$TMP/lonely.log" &
LONELY=$!; PIDS+=($LONELY)
timeout -k 5 60 "$CLIENT" --connect "$EP" --data "$TMP/tiny.csv" --name patient --give-up 0 \
  2> "$TMP/patient.log" &
PATIENT=$!; PIDS+=($PATIENT)
rc=0; wait $LONELY || rc=$?
dt=$(elapsed_since "$t0")
[ $rc -eq 5 ] && ok "no coordinator: the client exited with status 5 after $dt s (--give-up $GIVE_UP)" \
  || { bad "no coordinator: client exit $rc after $dt s (want 5)"; tail -5 "$TMP/lonely.log"; }
within "$dt" $GIVE_UP $((GIVE_UP + SLACK)) && ok "... within [$GIVE_UP, $((GIVE_UP + SLACK))] s" \
  || bad "no coordinator: gave up after $dt s, not within [$GIVE_UP, $((GIVE_UP + SLACK))] s"
grep -Eq "$GAVE_UP_RE" "$TMP/lonely.log" && ok "it says: $(grep -Eo "$GAVE_UP_RE" "$TMP/lonely.log")" \
  || { bad "no give-up message"; tail -5 "$TMP/lonely.log"; }
# The patient client has been waiting as long as the other one, and longer:
# 2 s more than the bound, then it is stopped.
while ! within "$(elapsed_since "$t0")" $((GIVE_UP + 2)) 1e9; do sleep 0.2; done
if kill -0 $PATIENT 2>/dev/null && grep -q "joining again" "$TMP/patient.log" && ! grep -q "giving up" "$TMP/patient.log"; then
  ok "--give-up 0: still rejoining after $(elapsed_since "$t0") s"
else
  bad "--give-up 0: the client ended or never rejoined"; tail -5 "$TMP/patient.log"
fi
kill -TERM $PATIENT 2>/dev/null || true

# 2. A coordinator SIGKILLed mid-run: every client gives up within the bound.
PORT=$(free_port)
timeout -k 5 120 "$COORD" --bind "tcp://127.0.0.1:$PORT" --data-dir "$DATA_DIR" --model softmax --clients 2 \
  --start-clients 2 --fraction 1 --rounds 100000 --eval-every 100000 --local-epochs 1 --batch-size 20 \
  --heartbeat 0.5 --client-timeout 2 --round-timeout 10 --quiet --metrics "$TMP/m.jsonl" \
  > /dev/null 2> "$TMP/coord.log" &
CPID=$!; PIDS+=($CPID)
CLIENTS=()
for i in 0 1; do
  timeout -k 5 120 "$CLIENT" --connect "tcp://127.0.0.1:$PORT" --data "$TMP/tiny.csv" --name "c$i" \
    --give-up $GIVE_UP --quiet 2> "$TMP/c$i.log" &
  CLIENTS+=($!); PIDS+=($!)
done
if wait_until 60 lines_at_least "$TMP/m.jsonl" 3; then
  kill9 $CPID
  t0=$EPOCHREALTIME
  rc=0; wait $CPID 2>/dev/null || rc=$?
  [ $rc -eq 137 ] && ok "killed the coordinator (SIGKILL) after $(wc -l < "$TMP/m.jsonl") rounds" \
    || bad "the coordinator had exited ($rc) before the kill"
else
  bad "round 3 never finished"; tail -5 "$TMP/coord.log"
  t0=$EPOCHREALTIME
fi
for i in 0 1; do
  rc=0; wait "${CLIENTS[$i]}" || rc=$?
  dt=$(elapsed_since "$t0")
  # The bound runs from the client's last message, which came at most a
  # heartbeat or a round before the kill: up to 1 s earlier than t0.
  if [ $rc -eq 5 ] && within "$dt" $((GIVE_UP - 1)) $((GIVE_UP + SLACK)) && grep -Eq "$GAVE_UP_RE" "$TMP/c$i.log"; then
    ok "client $i gave up $dt s after the kill (exit 5): $(grep -Eo "$GAVE_UP_RE" "$TMP/c$i.log")"
  else
    bad "client $i: exit $rc after $dt s (want 5, within [$((GIVE_UP - 1)), $((GIVE_UP + SLACK))] s)"; tail -5 "$TMP/c$i.log"
  fi
  grep -q "joined run" "$TMP/c$i.log" || bad "client $i never joined"
done
finish
