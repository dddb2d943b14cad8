# Issue 9, defect 1: one client whose every update is rejected must not stop
# a run. fedlr-coordinator with 4 real fedlr-client processes, all sampled
# each round (--fraction 1) under the default --quorum 0.8, one of them
# sending NaN (--attack nan). Before the fix the quorum needed 4 accepted
# updates of 4, so every round was abandoned and retried with the same bad
# client: no round ever completed. Now:
#   1. the quorum counts the updates that can still count (sampled minus
#      rejected): round 1 closes with the 3 honest updates; the bad client is
#      quarantined (--quarantine 5: not sampled in rounds 2..6), so rounds 2-4
#      sample the 3 honest clients; no round waits for its deadline; the run
#      is bit-identical to fedlr-sim with the same attacker (the engine's
#      policy is shared);
#   2. with --quarantine 0 the bad client is sampled every round and every
#      round still closes at once with 3 of 4;
#   3. when no progress is possible (every client sends NaN) the run ends
#      with a clear error after --max-retries abandoned attempts, in
#      fedlr-coordinator (exit 1, the clients told and exiting) and in
#      fedlr-sim alike;
#   4. a client that stays alive (heartbeats) but never answers a RoundStart
#      (tests/tools/fl_badpeer --mute) holds round 1 until its deadline, is
#      then quarantined like a garbage sender, and the run completes; before,
#      every retry sampled it again and the run failed at --max-retries.
source "$(dirname "$0")/lib.sh"

LIMIT=120
DATA=(--dataset fashion-mnist --data-dir "$DATA_DIR" --seed 3)
RUN=(--model softmax --clients 4 --fraction 1 --rounds 4 --local-epochs 1 --batch-size 50 --lr 0.05 "${DATA[@]}")

# run_net NAME ATTACKER_IDS COORD_FLAGS...: a coordinator and 4 clients; the
# clients whose ids are in ATTACKER_IDS send NaN. Sets RC_COORD and T_RUN.
run_net() {
  local name=$1 attackers=" $2 " i
  shift 2
  local port; port=$(free_port)
  local t0=$SECONDS
  timeout -k 5 $LIMIT "$COORD" --bind "tcp://127.0.0.1:$port" "${RUN[@]}" --start-clients 4 \
    --round-timeout 60 --heartbeat 0.5 --metrics "$TMP/$name.jsonl" --out "$TMP/$name" "$@" \
    > /dev/null 2> "$TMP/$name-coord.log" &
  local cpid=$!; PIDS+=($cpid)
  local pids=()
  for i in 0 1 2 3; do
    local extra=()
    [[ "$attackers" == *" $i "* ]] && extra=(--attack nan)
    timeout -k 5 $LIMIT "$CLIENT" --connect "tcp://127.0.0.1:$port" "${DATA[@]}" --partition iid \
      --num-partitions 4 --partition-index $i --quiet "${extra[@]}" 2> "$TMP/$name-c$i.log" &
    pids+=($!); PIDS+=($!)
  done
  RC_COORD=0; wait $cpid || RC_COORD=$?
  T_RUN=$((SECONDS - t0))
  CLIENTS_OK=1
  for i in 0 1 2 3; do
    local rc=0; wait "${pids[$i]}" || rc=$?
    [ $rc -eq 0 ] || { CLIENTS_OK=0; echo "client $i exit $rc: $(tail -2 "$TMP/$name-c$i.log")"; }
  done
}

# The attacker fedlr-sim picks from the seed: the networked run uses the same id.
"$SIM" --quiet "${RUN[@]}" --partition iid --attackers 1 --attack nan --out "$TMP/sim1" \
  > /dev/null 2> "$TMP/sim1.err" || bad "fedlr-sim with a NaN attacker failed: $(tail -3 "$TMP/sim1.err")"
ATT=$(sed -n 's/^fedlr-sim: 1 of 4 clients attack (nan): //p' "$TMP/sim1.err")
[ -n "$ATT" ] && ok "fedlr-sim's NaN attacker: client $ATT" || { bad "no attacker id: $(cat "$TMP/sim1.err")"; finish; exit 1; }

# 1. Default quarantine.
run_net q5 "$ATT"
[ $RC_COORD -eq 0 ] && ok "1: coordinator exited 0 in ${T_RUN} s" || { bad "1: coordinator exit $RC_COORD"; tail -20 "$TMP/q5-coord.log"; }
[ $CLIENTS_OK -eq 1 ] && ok "1: every client exited 0" || bad "1: a client failed"
rows=$(jsonl_eval "$TMP/q5.jsonl" "[(r['clients_sampled'], r['clients_reported'], r['rejected']) for r in rows]")
[ "$rows" = "[(4, 3, 1), (3, 3, 0), (3, 3, 0), (3, 3, 0)]" ] \
  && ok "1: round 1: 3 of 4 reported (1 rejected); rounds 2-4: the attacker quarantined" \
  || bad "1: rounds (sampled, reported, rejected): $rows"
n=$(grep -c "abandoned\|round deadline" "$TMP/q5-coord.log" || true)
[ "$n" -eq 0 ] && ok "1: no round abandoned or waiting for its deadline" || bad "1: $n abandoned/deadline lines"
grep -q "not sampled again before round 7" "$TMP/q5-coord.log" \
  && ok "1: the quarantine is logged: $(grep -o "client [0-9]* is not sampled again before round 7" "$TMP/q5-coord.log" | head -1)" \
  || bad "1: no quarantine line in the log"
st_equal "$TMP/q5/model.safetensors" "$TMP/sim1/model.safetensors" \
  && ok "1: bit-identical to fedlr-sim with the same attacker" \
  || bad "1: differs from fedlr-sim (max diff $(st_maxdiff "$TMP/q5/model.safetensors" "$TMP/sim1/model.safetensors"))"

# 2. No quarantine: the attacker is in every round's sample, rounds still close.
run_net q0 "$ATT" --quarantine 0
[ $RC_COORD -eq 0 ] && ok "2: coordinator exited 0 in ${T_RUN} s" || { bad "2: coordinator exit $RC_COORD"; tail -20 "$TMP/q0-coord.log"; }
rows=$(jsonl_eval "$TMP/q0.jsonl" "[(r['clients_sampled'], r['clients_reported'], r['rejected']) for r in rows]")
[ "$rows" = "[(4, 3, 1), (4, 3, 1), (4, 3, 1), (4, 3, 1)]" ] \
  && ok "2: every round: 3 of 4 reported, the NaN update rejected" || bad "2: rounds: $rows"
n=$(grep -c "abandoned\|round deadline" "$TMP/q0-coord.log" || true)
[ "$n" -eq 0 ] && ok "2: no round abandoned or waiting for its deadline" || bad "2: $n abandoned/deadline lines"
"$SIM" --quiet "${RUN[@]}" --partition iid --attackers 1 --attack nan --quarantine 0 --out "$TMP/sim0" \
  > /dev/null 2>&1 || bad "2: fedlr-sim --quarantine 0 failed"
st_equal "$TMP/q0/model.safetensors" "$TMP/sim0/model.safetensors" \
  && ok "2: bit-identical to fedlr-sim --quarantine 0" || bad "2: differs from fedlr-sim"

# 3. Nothing can progress: every client sends NaN.
run_net all "0 1 2 3" --max-retries 3
[ $RC_COORD -eq 1 ] && ok "3: coordinator exited 1 in ${T_RUN} s" || bad "3: coordinator exit $RC_COORD"
grep -q "round 1 was abandoned 4 times in a row.*no progress is possible.*(--max-retries 3)" "$TMP/all-coord.log" \
  && ok "3: $(grep -o "round 1 was abandoned.*" "$TMP/all-coord.log" | head -1)" \
  || bad "3: no clear final error: $(tail -3 "$TMP/all-coord.log")"
[ $CLIENTS_OK -eq 1 ] && ok "3: the clients were told and exited 0" || bad "3: a client failed"
[ "$T_RUN" -lt 60 ] && ok "3: ended before any round deadline" || bad "3: took ${T_RUN} s"
rc=0
"$SIM" --quiet "${RUN[@]}" --partition iid --attackers 4 --attack nan --max-retries 3 \
  > /dev/null 2> "$TMP/simall.err" || rc=$?
[ $rc -eq 1 ] && grep -q "round 1 was abandoned 4 times in a row" "$TMP/simall.err" \
  && ok "3: fedlr-sim ends the same way (exit 1)" || bad "3: fedlr-sim exit $rc: $(tail -2 "$TMP/simall.err")"

# 4. A live client that never answers.
BADPEER="$BUILD/tests/fl_badpeer"
PORT=$(free_port)
t0=$SECONDS
timeout -k 5 $LIMIT "$COORD" --bind "tcp://127.0.0.1:$PORT" "${RUN[@]}" --start-clients 4 \
  --round-timeout 4 --client-timeout 4 --heartbeat 0.5 --max-retries 2 --metrics "$TMP/mute.jsonl" \
  > /dev/null 2> "$TMP/mute-coord.log" &
CPID=$!; PIDS+=($CPID)
timeout -k 5 $LIMIT "$BADPEER" --connect "tcp://127.0.0.1:$PORT" --name mute --slot 3 --model softmax \
  --input-dim 784 --classes 10 --rounds 100 --timeout 60 --mute yes > "$TMP/mute.out" 2>&1 &
BP=$!; PIDS+=($BP)
CL=()
for i in 0 1 2; do
  timeout -k 5 $LIMIT "$CLIENT" --connect "tcp://127.0.0.1:$PORT" "${DATA[@]}" --partition iid \
    --num-partitions 4 --partition-index $i --quiet 2> "$TMP/mute-c$i.log" &
  CL+=($!); PIDS+=($!)
done
rc=0; wait $CPID || rc=$?
[ $rc -eq 0 ] && ok "4: coordinator exited 0 in $((SECONDS - t0)) s" || { bad "4: coordinator exit $rc"; tail -5 "$TMP/mute-coord.log"; }
grep -q "round 1: mute (id 3) did not answer by the deadline (--round-timeout 4); not sampled again before round 7" "$TMP/mute-coord.log" \
  && ok "4: the silent client was quarantined at round 1's deadline" || bad "4: no quarantine: $(grep -m3 "round 1" "$TMP/mute-coord.log")"
rows=$(jsonl_eval "$TMP/mute.jsonl" "[(r['clients_sampled'], r['clients_reported']) for r in rows]")
[ "$rows" = "[(3, 3), (3, 3), (3, 3), (3, 3)]" ] && ok "4: every round closed with the 3 honest clients" \
  || bad "4: rounds (sampled, reported): $rows"
n=$(grep -c "round deadline" "$TMP/mute-coord.log" || true)
[ "$n" -le 1 ] && ok "4: at most one round waited for its deadline ($n)" || bad "4: $n deadline waits"
wait $BP || true
for i in 0 1 2; do rc=0; wait "${CL[$i]}" || rc=$?; [ $rc -eq 0 ] || bad "4: client $i exit $rc"; done
finish
