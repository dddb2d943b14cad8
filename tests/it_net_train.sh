# fedlr-coordinator and 5 fedlr-client processes over loopback TCP: training
# reaches a target accuracy and stops; every process exits 0; and the final
# weights are bit-identical to fedlr-sim's with the same configuration and
# seed (3 of 5 clients sampled per round, so sampling is exercised too).
source "$(dirname "$0")/lib.sh"

FLAGS=(--model mlp:64 --clients 5 --fraction 0.6 --rounds 12 --local-epochs 1
       --batch-size 20 --lr 0.05 --schedule "exp:gamma=0.9" --optimizer momentum:0.9 --seed 11
       --target-accuracy 0.84)
PORT=$(free_port)
timeout 300 "$COORD" --bind "tcp://127.0.0.1:$PORT" "${FLAGS[@]}" --start-clients 5 --round-timeout 60 \
  --metrics "$TMP/net.jsonl" --out "$TMP/net" > "$TMP/coord.out" 2> "$TMP/coord.log" &
CPID=$!; PIDS+=($CPID)
for i in 0 1 2 3 4; do
  timeout 300 "$CLIENT" --connect "tcp://127.0.0.1:$PORT" --dataset fashion-mnist --data-dir "$DATA_DIR" \
    --partition iid --num-partitions 5 --partition-index $i --seed 11 2> "$TMP/c$i.log" &
  PIDS+=($!)
done
rc=0; wait $CPID || rc=$?
[ $rc -eq 0 ] && ok "coordinator exited 0" || { bad "coordinator exit $rc"; cat "$TMP/coord.log"; }
for i in 1 2 3 4 5; do
  crc=0; wait "${PIDS[$i]}" || crc=$?
  [ $crc -eq 0 ] && ok "client $((i - 1)) exited 0" || { bad "client $((i - 1)) exit $crc"; tail -5 "$TMP/c$((i - 1)).log"; }
done
cat "$TMP/coord.out"
n=$(jsonl_eval "$TMP/net.jsonl" "len(rows)")
acc=$(jsonl_eval "$TMP/net.jsonl" "rows[-1]['test_accuracy']")
"$PY" -c "import sys; sys.exit(0 if $acc >= 0.84 and $n < 12 else 1)" \
  && ok "target accuracy 0.84 reached in $n rounds ($acc), run stopped" || bad "accuracy $acc after $n rounds"
bytes=$(jsonl_eval "$TMP/net.jsonl" "all(r['bytes_sent'] > 0 and r['bytes_received'] > 0 and len(r['participants']) == 3 for r in rows)")
[ "$bytes" = True ] && ok "metrics carry bytes and participants" || bad "metrics bytes/participants"

"$SIM" --quiet --data-dir "$DATA_DIR" --partition iid "${FLAGS[@]}" --out "$TMP/sim" > /dev/null
if st_equal "$TMP/net/model.safetensors" "$TMP/sim/model.safetensors"; then
  ok "networked weights are bit-identical to fedlr-sim's"
else
  bad "networked weights differ from fedlr-sim's (max diff $(st_maxdiff "$TMP/net/model.safetensors" "$TMP/sim/model.safetensors"))"
fi
finish
