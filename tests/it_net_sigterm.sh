# SIGTERM to the coordinator ends the run gracefully: the round in flight is
# abandoned, the checkpoint written, every client told to stop (exit 0), the
# coordinator exits 3. --resume with fresh clients then finishes the run,
# bit-identical to fedlr-sim. The clients here talk over ipc://.
source "$(dirname "$0")/lib.sh"

FLAGS=(--model mlp:100 --clients 4 --fraction 1 --rounds 6 --local-epochs 2 --batch-size 10
       --lr 0.05 --schedule "cos:T=6,min=0.005" --seed 21)
EP="ipc://$TMP/coord.sock"
coord() {
  timeout 300 "$COORD" --bind "$EP" "${FLAGS[@]}" --start-clients 4 --heartbeat 0.5 \
    --metrics "$TMP/m.jsonl" --out "$TMP/run" "$@" >> "$TMP/coord.out" 2>> "$TMP/coord.log" &
  CPID=$!; PIDS+=($CPID)
}
clients() {
  CL=()
  for i in 0 1 2 3; do
    timeout 300 "$CLIENT" --connect "$EP" --dataset fashion-mnist --data-dir "$DATA_DIR" --partition iid \
      --num-partitions 4 --partition-index $i --seed 21 2>> "$TMP/c$i.log" &
    CL+=($!); PIDS+=($!)
  done
}
coord
clients
wait_until 120 lines_at_least "$TMP/m.jsonl" 2 || bad "round 2 never finished"
kill -TERM "$(pgrep -P $CPID)" && ok "sent SIGTERM to the coordinator after $(wc -l < "$TMP/m.jsonl") rounds" \
  || bad "could not send SIGTERM to the coordinator"
rc=0; wait $CPID || rc=$?
[ $rc -eq 3 ] && ok "coordinator exited 3 (interrupted)" || { bad "coordinator exit $rc"; tail "$TMP/coord.log"; }
grep -q "interrupted by signal 15" "$TMP/coord.log" && ok "$(grep -m1 'interrupted by signal' "$TMP/coord.log" | cut -c1-120)" || bad "no interruption logged"
[ -s "$TMP/run/checkpoint.safetensors" ] && ok "checkpoint written" || bad "no checkpoint"
for i in 0 1 2 3; do
  crc=0; wait "${CL[$i]}" || crc=$?
  [ $crc -eq 0 ] && ok "client $i was told to stop and exited 0" || bad "client $i exit $crc"
done
coord --resume "$TMP/run"
clients
rc=0; wait $CPID || rc=$?
[ $rc -eq 0 ] && ok "resumed run finished (exit 0)" || { bad "resumed coordinator exit $rc"; tail "$TMP/coord.log"; }
for i in 0 1 2 3; do wait "${CL[$i]}" || bad "client $i of the resumed run failed"; done
rounds=$(jsonl_eval "$TMP/m.jsonl" "[r['round'] for r in rows]")
[ "$rounds" = "[1, 2, 3, 4, 5, 6]" ] && ok "metrics: $rounds" || bad "metrics rounds $rounds"
"$SIM" --quiet --data-dir "$DATA_DIR" --partition iid "${FLAGS[@]}" --out "$TMP/sim" > /dev/null
st_equal "$TMP/run/model.safetensors" "$TMP/sim/model.safetensors" \
  && ok "stopped-and-resumed run is bit-identical to fedlr-sim" \
  || bad "weights differ (max diff $(st_maxdiff "$TMP/run/model.safetensors" "$TMP/sim/model.safetensors"))"
finish
