# SIGKILL of the coordinator mid-run, then a restart with --resume: the
# clients rejoin by themselves, at most the round in flight is lost, and the
# final weights are bit-identical to an uninterrupted fedlr-sim run. First,
# a --resume DIR without a checkpoint fails and creates nothing.
source "$(dirname "$0")/lib.sh"

expect_fail "--resume of a directory without a checkpoint" "--resume $TMP/nx1/deep: no checkpoint.safetensors there" \
  timeout 60 "$COORD" --bind "tcp://127.0.0.1:$(free_port)" --resume "$TMP/nx1/deep" --metrics "$TMP/nx1/deep/m.jsonl"
[ ! -e "$TMP/nx1" ] && ok "... and created nothing" || bad "--resume created $(find "$TMP/nx1")"

FLAGS=(--model mlp:200,200 --clients 5 --fraction 1 --rounds 5 --local-epochs 4 --batch-size 10
       --lr 0.05 --schedule "plateau:factor=0.5,patience=0" --seed 9)
PORT=$(free_port)
coord() {
  timeout 300 "$COORD" --bind "tcp://127.0.0.1:$PORT" "${FLAGS[@]}" --start-clients 5 --round-timeout 120 \
    --heartbeat 0.5 --client-timeout 5 --metrics "$TMP/m.jsonl" "$@" >> "$TMP/coord.out" 2>> "$TMP/coord.log" &
  CPID=$!; PIDS+=($CPID)
}
coord --out "$TMP/run"
for i in 0 1 2 3 4; do
  timeout 300 "$CLIENT" --connect "tcp://127.0.0.1:$PORT" --dataset fashion-mnist --data-dir "$DATA_DIR" \
    --partition iid --num-partitions 5 --partition-index $i --seed 9 2> "$TMP/c$i.log" &
  PIDS+=($!)
done
# Rounds are 4 epochs of 12,000 examples on each of 5 clients (fast kernels
# ran 1 epoch's 5 rounds in about a second): the kill lands mid-run.
wait_until 120 lines_at_least "$TMP/m.jsonl" 2 || bad "round 2 never finished"
kill9 $CPID
rc=0; wait $CPID 2>/dev/null || rc=$?
done_before=$(grep -c . "$TMP/m.jsonl")
[ $rc -eq 137 ] && [ "$done_before" -lt 5 ] && ok "killed the coordinator (SIGKILL) after $done_before rounds" \
  || bad "the coordinator was not killed mid-run: exit $rc after $done_before of 5 rounds"
sleep 1
coord --resume "$TMP/run"
rc=0; wait $CPID || rc=$?
[ $rc -eq 0 ] && ok "resumed coordinator finished (exit 0)" || { bad "coordinator exit $rc"; tail -20 "$TMP/coord.log"; }
grep -m1 "resumed from" "$TMP/coord.log" | sed 's/^/  /'
for i in 1 2 3 4 5; do
  crc=0; wait "${PIDS[$i]}" || crc=$?
  [ $crc -eq 0 ] && ok "client $((i - 1)) rejoined and exited 0" || { bad "client $((i - 1)) exit $crc"; tail -5 "$TMP/c$((i - 1)).log"; }
done
rounds=$(jsonl_eval "$TMP/m.jsonl" "[r['round'] for r in rows]")
[ "$rounds" = "[1, 2, 3, 4, 5]" ] && ok "metrics hold each round once: $rounds (the kill came after $done_before)" || bad "metrics rounds $rounds"
"$SIM" --quiet --data-dir "$DATA_DIR" --partition iid "${FLAGS[@]}" --out "$TMP/sim" > /dev/null
if st_equal "$TMP/run/model.safetensors" "$TMP/sim/model.safetensors"; then
  ok "killed-and-resumed run is bit-identical to fedlr-sim"
else
  bad "resumed weights differ from fedlr-sim (max diff $(st_maxdiff "$TMP/run/model.safetensors" "$TMP/sim/model.safetensors"))"
fi
finish
