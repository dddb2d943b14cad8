# Issue 9, defects 10 and 11: how runs end.
#   1. --start-clients waits for a client that never comes: after
#      --start-timeout the coordinator ends the run with exit 1, naming who
#      is awaited; the clients that did join are told and exit 0.
#   2. A slow machine: a client stalled (SIGSTOP) through the end of the run
#      still hears that the run is over when it wakes up, although it wakes
#      up believing the coordinator silent: the coordinator waits for its
#      connection to close and answers its rejoin with the final Stop; the
#      client exits 0, and so does the coordinator.
#   3. A coordinator with no client at all exits promptly once the run is
#      over (the wait for clients to hear the end is bounded).
source "$(dirname "$0")/lib.sh"

LIMIT=120
DATA=(--dataset fashion-mnist --data-dir "$DATA_DIR" --seed 4)
RUN=(--model softmax --fraction 1 --local-epochs 1 --batch-size 50 --lr 0.05 "${DATA[@]}")

# 1. A missing client.
PORT=$(free_port)
t0=$SECONDS
timeout -k 5 $LIMIT "$COORD" --bind "tcp://127.0.0.1:$PORT" "${RUN[@]}" --rounds 2 --clients 3 \
  --start-clients 3 --start-timeout 4 > /dev/null 2> "$TMP/wait-coord.log" &
CPID=$!; PIDS+=($CPID)
CL=()
for i in 0 1; do
  timeout -k 5 $LIMIT "$CLIENT" --connect "tcp://127.0.0.1:$PORT" "${DATA[@]}" --partition iid \
    --num-partitions 3 --partition-index $i --name "site-$i" --quiet 2> "$TMP/wait-c$i.log" &
  CL+=($!); PIDS+=($!)
done
rc=0; wait $CPID || rc=$?
dt=$((SECONDS - t0))
[ $rc -eq 1 ] && ok "1: coordinator exited 1 after ${dt} s" || bad "1: coordinator exit $rc"
[ $dt -ge 4 ] && [ $dt -le 20 ] && ok "1: after --start-timeout 4 (and its wait for the clients to hear it)" \
  || bad "1: took ${dt} s"
line=$(grep -o "no round could start for .*" "$TMP/wait-coord.log" || true)
[[ "$line" == *"2 of the 3 clients needed (--start-clients) are ready"*"not joined: ids 2"* ]] \
  && ok "1: $line" || bad "1: no clear message: $(tail -3 "$TMP/wait-coord.log")"
for i in 0 1; do
  rc=0; wait "${CL[$i]}" || rc=$?
  [ $rc -eq 0 ] && grep -q "the run is over: no round could start" "$TMP/wait-c$i.log" \
    && ok "1: site-$i was told and exited 0" || bad "1: site-$i exit $rc: $(tail -2 "$TMP/wait-c$i.log")"
done

# 2. A client stalled through the end of the run. It stalls after round 1;
# the coordinator finds it dead (--client-timeout 3) and finishes rounds 2
# and 3 with the other client (--quorum 0.5); it wakes up 3 s after the end,
# past its own silence limit (3 s).
PORT=$(free_port)
# Rounds of about half a second (an MLP, B=10), so the stall lands mid-run;
# the round deadline (10 s) leaves room for a round ten times slower (ASan
# on a loaded machine): the stalled client is found dead by its silence.
timeout -k 5 $LIMIT "$COORD" --bind "tcp://127.0.0.1:$PORT" "${RUN[@]}" --rounds 3 --clients 2 \
  --model mlp:100 --local-epochs 1 --batch-size 10 \
  --start-clients 2 --quorum 0.5 --round-timeout 10 --client-timeout 3 --heartbeat 0.5 \
  --metrics "$TMP/slow.jsonl" > /dev/null 2> "$TMP/slow-coord.log" &
CPID=$!; PIDS+=($CPID)
CL=()
for i in 0 1; do
  timeout -k 5 $LIMIT "$CLIENT" --connect "tcp://127.0.0.1:$PORT" "${DATA[@]}" --partition iid \
    --num-partitions 2 --partition-index $i --name "node-$i" 2> "$TMP/slow-c$i.log" &
  CL+=($!); PIDS+=($!)
done
wait_until 60 lines_at_least "$TMP/slow.jsonl" 1 || bad "2: round 1 did not finish"
SLOW=$(pgrep -f "^$CLIENT .*--name node-1" | head -1 || true)
[ -n "$SLOW" ] || { bad "2: node-1 is not running"; finish; exit 1; }
kill -STOP "$SLOW"
t_stop=$SECONDS
wait_until 30 grep -q "run finished after 3 rounds" "$TMP/slow-coord.log" \
  && ok "2: the run ended while node-1 was stalled" || bad "2: the run did not end: $(tail -3 "$TMP/slow-coord.log")"
sleep 3
kill -0 $CPID 2> /dev/null && ok "2: the coordinator is still there $((SECONDS - t_stop)) s later, for node-1" \
  || bad "2: the coordinator left before node-1 heard the end"
kill -CONT "$SLOW"
rc=0; wait "${CL[1]}" || rc=$?
[ $rc -eq 0 ] && grep -q "the run is over" "$TMP/slow-c1.log" \
  && ok "2: the stalled client heard the end and exited 0 $((SECONDS - t_stop)) s after its stall began" \
  || bad "2: the stalled client exit $rc: $(tail -3 "$TMP/slow-c1.log")"
rc=0; wait "${CL[0]}" || rc=$?
[ $rc -eq 0 ] && ok "2: the other client exited 0" || bad "2: the other client exit $rc"
rc=0; wait $CPID || rc=$?
[ $rc -eq 0 ] && ok "2: coordinator exited 0" || bad "2: coordinator exit $rc"

# 3. Nobody left to tell: the coordinator does not linger.
PORT=$(free_port)
"$SIM" --quiet "${RUN[@]}" --rounds 1 --clients 1 --out "$TMP/one" > /dev/null 2>&1
mkdir -p "$TMP/res"
timeout -k 5 60 "$COORD" --bind "tcp://127.0.0.1:$PORT" "${RUN[@]}" --rounds 1 --clients 1 --out "$TMP/res" \
  > /dev/null 2> "$TMP/res1.log" &
CPID=$!; PIDS+=($CPID)
timeout -k 5 60 "$CLIENT" --connect "tcp://127.0.0.1:$PORT" "${DATA[@]}" --partition iid --num-partitions 1 \
  --partition-index 0 --quiet 2> /dev/null || bad "3: the client failed"
t0=$SECONDS
rc=0; wait $CPID || rc=$?
[ $rc -eq 0 ] && [ $((SECONDS - t0)) -le 5 ] && ok "3: the coordinator exited 0 $((SECONDS - t0)) s after its last client" \
  || bad "3: coordinator exit $rc after $((SECONDS - t0)) s"
t0=$SECONDS
rc=0
timeout -k 5 60 "$COORD" --bind "tcp://127.0.0.1:$(free_port)" "${RUN[@]}" --rounds 1 --clients 1 \
  --resume "$TMP/res" > /dev/null 2> "$TMP/res2.log" || rc=$?
[ $rc -eq 0 ] && [ $((SECONDS - t0)) -le 8 ] && grep -q "already finished" "$TMP/res2.log" \
  && ok "3: resuming a finished run exits 0 in $((SECONDS - t0)) s" || bad "3: exit $rc after $((SECONDS - t0)) s: $(tail -2 "$TMP/res2.log")"
finish
