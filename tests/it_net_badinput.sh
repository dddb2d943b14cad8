# A hostile peer (tests/tools/fl_badpeer) in a networked run: fedlr-coordinator
# with 6 slots, 5 honest fedlr-client processes (slots 0..4) and fl_badpeer in
# slot 5. The peer sends garbage, a truncated Join (refused with a reason), a
# multipart message, an Update before joining, an oversize frame, then joins
# and answers each RoundStart with forged updates (wrong shapes, NaN, future
# round, another client's id, 10^12 examples), a Welcome and a duplicate
# Join, and never a valid update. The coordinator must log every rejection,
# stay up, drop the peer from each round (as soon as the honest clients have
# reported: a client whose update was rejected has had its say, so no round
# waits for its deadline) and finish the run with exactly the honest
# clients' model: the weights come from accepted updates alone, so the run
# is bit-identical to fedlr-sim with the 5 honest clients.
source "$(dirname "$0")/lib.sh"

BADPEER="$BUILD/tests/fl_badpeer"
for b in "$COORD" "$CLIENT" "$BADPEER" "$SIM"; do
  [ -x "$b" ] || { echo "skip: $b is not built"; exit 77; }
done

LIMIT=300 # seconds, for every process of the run
SEED=5
# --min-clients 6: round 1 starts only once the attacker has joined, so it is
# sampled. Rounds need 6 live clients, so the attacker stays alive
# (heartbeats) through all 3 rounds (--rounds 3); --quarantine 0 keeps it in
# the sample of every round (a quarantined client would sit rounds 2 and 3
# out: tests/it_net_livelock.sh covers that), so it attacks each one; each
# round closes with the 5 honest reports once they are in, the attacker's
# updates having been rejected. The 20 s deadline would close a round too,
# so the test checks it never did.
DATA=(--seed $SEED --dataset fashion-mnist --data-dir "$DATA_DIR")
RUN=(--model softmax --fraction 1 --rounds 3 --local-epochs 1 --batch-size 20 --lr 0.05 "${DATA[@]}")
PORT=$(free_port)
EP="tcp://127.0.0.1:$PORT"
t0=$SECONDS
timeout -k 5 $LIMIT "$COORD" --bind "$EP" "${RUN[@]}" --clients 6 --min-clients 6 \
  --round-timeout 20 --quorum 0.8 --client-timeout 3 --heartbeat 0.5 --quarantine 0 \
  --metrics "$TMP/net.jsonl" --out "$TMP/net" > "$TMP/coord.out" 2> "$TMP/coord.log" &
CPID=$!; PIDS+=($CPID)
if ! wait_until 30 grep -q "listening on" "$TMP/coord.log"; then
  bad "coordinator did not start listening on $EP: $(cat "$TMP/coord.log")"
  finish; exit 1
fi

timeout -k 5 $LIMIT "$BADPEER" --connect "$EP" --name evil --slot 5 --model softmax \
  --input-dim 784 --classes 10 --rounds 3 --examples 12000 --timeout 60 \
  > "$TMP/badpeer.out" 2>&1 &
BPID=$!; PIDS+=($BPID)
CLIENT_PIDS=()
for i in 0 1 2 3 4; do
  timeout -k 5 $LIMIT "$CLIENT" --connect "$EP" "${DATA[@]}" --partition iid --num-partitions 5 \
    --partition-index $i --quiet > "$TMP/c$i.out" 2> "$TMP/c$i.log" &
  CLIENT_PIDS+=($!); PIDS+=($!)
done

# The oversize frame costs the attacker its connection (ZMQ_MAXMSGSIZE), not
# the coordinator its life: it goes on to run all 3 rounds and exit 0 (below).
if wait_until 60 grep -q "e oversize: ok" "$TMP/badpeer.out"; then
  ok "the oversize frame closed the attacker's connection"
else
  bad "oversize frame: $(grep "e oversize" "$TMP/badpeer.out")"
fi

brc=0; wait $BPID || brc=$?
[ $brc -eq 0 ] && ok "fl_badpeer exited 0" || bad "fl_badpeer exit $brc"
sed 's/^/  /' "$TMP/badpeer.out"

crc=0; wait $CPID || crc=$?
[ $crc -eq 0 ] && ok "coordinator exited 0 after $((SECONDS - t0)) s" \
  || { bad "coordinator exit $crc"; tail -30 "$TMP/coord.log"; }
for i in 0 1 2 3 4; do
  rc=0; wait "${CLIENT_PIDS[$i]}" || rc=$?
  [ $rc -eq 0 ] && ok "client $i exited 0" || { bad "client $i exit $rc"; tail -5 "$TMP/c$i.log"; }
done

# Every rejection is in the log: count_log PATTERN MIN DESC.
count_log() {
  local n
  n=$(grep -cE -- "$1" "$TMP/coord.log" || true)
  [ "$n" -ge "$2" ] && ok "$3: $n x '$1'" || bad "$3: '$1' logged $n times, want >= $2"
}
count_log "dropped a bad message from unknown peer" 3 "random bytes"
count_log "refused a join as .* join refused: undecodable" 1 "truncated Join, answered with its reason"
if grep -q "b truncated join: ok: Stop" "$TMP/badpeer.out"; then
  ok "the truncated Join got a Stop{error} with the reason"
else
  bad "truncated Join: $(grep "b truncated" "$TMP/badpeer.out")"
fi
count_log "closed: the peer closed it, or it sent a frame over the [0-9]+-byte limit" 1 "oversize frame logged"
count_log "dropped a 2-frame message .*single-frame" 1 "multipart message"
count_log "dropped an update from unknown peer .*not joined" 1 "update before joining"
count_log "rejected an update from evil" 5 "forged updates"
count_log "rejected an update from evil .*got \[10,783\]" 1 "wrong shapes"
count_log "rejected an update from evil .*is NaN" 1 "NaN weight"
count_log "rejected an update from evil .*not sampled again before round" 1 "quarantine announced"
count_log "rejected an update from evil .*is for round 10[0-9]" 1 "future round"
count_log "rejected an update from evil .*claims to be from client 6" 1 "impersonation"
count_log "rejected an update from evil .*claims 1000000000000 examples" 1 "10^12 examples"
count_log "dropped a message of kind 2 from evil .*clients may not send" 1 "Welcome from a client"
# A repeated Join under the same name and slot is not refused: the protocol
# treats it as a rejoin (a client whose connection changed) and answers it.
count_log "client evil \(id 5\) joined .*\(rejoin\)" 1 "duplicate Join handled as a rejoin"
count_log "round [0-9]+: dropped evil \(id 5\) \(its update was rejected\)" 3 "attacker dropped from every round"
n=$(grep -c "round deadline" "$TMP/coord.log" || true)
[ "$n" -eq 0 ] && ok "no round waited for its deadline" || bad "$n rounds waited for the deadline"
if grep -qiE "assert|abort|segmentation|sanitizer" "$TMP/coord.log"; then
  bad "coordinator log shows a crash: $(grep -iE "assert|abort|segmentation|sanitizer" "$TMP/coord.log" | head -3)"
fi

rows=$(jsonl_eval "$TMP/net.jsonl" "len(rows)" 2>/dev/null || echo 0)
[ "$rows" = 3 ] && ok "metrics: 3 rounds" || bad "metrics: $rows rounds"
rep=$(jsonl_eval "$TMP/net.jsonl" "[(r['clients_sampled'], r['clients_reported'], r.get('dropped')) for r in rows]" 2>/dev/null || echo "?")
[ "$rep" = "[(6, 5, [5]), (6, 5, [5]), (6, 5, [5])]" ] \
  && ok "every round: 6 sampled, 5 reported, attacker dropped" || bad "rounds (sampled, reported, dropped): $rep"
acc=$(jsonl_eval "$TMP/net.jsonl" "rows[-1]['test_accuracy']" 2>/dev/null || echo 0)
"$PY" -c "import sys; sys.exit(0 if $acc >= 0.70 else 1)" \
  && ok "final test accuracy $acc >= 0.70" || bad "final test accuracy $acc < 0.70"

# The same run without the attacker: fedlr-sim with the 5 honest clients.
# Bit-identical: each accepted update is folded as trunc(n_k * delta * 2^40)
# and the sum divided by the accepted examples, so the attacker, sampled,
# registered with 12,000 examples and rejected, leaves no trace.
timeout -k 5 $LIMIT "$SIM" --quiet "${RUN[@]}" --partition iid --clients 5 --out "$TMP/sim" > /dev/null 2> "$TMP/sim.log" \
  || bad "fedlr-sim failed: $(tail -3 "$TMP/sim.log")"
if [ -f "$TMP/net/model.safetensors" ] && [ -f "$TMP/sim/model.safetensors" ]; then
  if st_equal "$TMP/net/model.safetensors" "$TMP/sim/model.safetensors"; then
    ok "final model is bit-identical to fedlr-sim's with the 5 honest clients"
  else
    bad "final model differs from fedlr-sim's (max diff $(st_maxdiff "$TMP/net/model.safetensors" "$TMP/sim/model.safetensors"))"
  fi
else
  bad "missing model.safetensors (net or sim)"
fi
finish
