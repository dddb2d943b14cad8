# Joins the coordinator must refuse, each with a reason the client prints and
# exit status 1, without disturbing the run: a slot beyond --clients, a name
# already bound to another slot, and a join when the run is full.
source "$(dirname "$0")/lib.sh"

PORT=$(free_port)
EPT="tcp://127.0.0.1:$PORT"
timeout 120 "$COORD" --bind "$EPT" --model softmax --clients 2 --start-clients 2 --fraction 1 \
  --rounds 30 --local-epochs 2 --lr 0.05 --metrics "$TMP/m.jsonl" > /dev/null 2> "$TMP/coord.log" &
CPID=$!; PIDS+=($CPID)
DATA=(--dataset fashion-mnist --data-dir "$DATA_DIR" --partition iid --num-partitions 4)
refused() { # desc want args...
  local desc=$1 want=$2; shift 2
  local rc=0
  timeout 60 "$CLIENT" --connect "$EPT" "$@" 2> "$TMP/r.log" || rc=$?
  if [ $rc -eq 1 ] && grep -qF -- "$want" "$TMP/r.log"; then ok "$desc: exit 1, $(grep -m1 -F -- "$want" "$TMP/r.log" | cut -c1-110)"
  else bad "$desc: exit $rc: $(tail -2 "$TMP/r.log")"; fi
}
refused "slot beyond --clients" "beyond --clients 2" "${DATA[@]}" --partition-index 3 --name far
timeout 120 "$CLIENT" --connect "$EPT" "${DATA[@]}" --partition-index 0 --name a 2> "$TMP/a.log" & PIDS+=($!); A=$!
wait_until 30 grep -q "client a (id 0) joined" "$TMP/coord.log" || bad "a never joined"
refused "name bound to another slot" "is client 0, not 1" "${DATA[@]}" --partition-index 1 --name a
timeout 120 "$CLIENT" --connect "$EPT" "${DATA[@]}" --partition-index 1 --name b 2> "$TMP/b.log" & PIDS+=($!); B=$!
wait_until 30 grep -q "client b (id 1) joined" "$TMP/coord.log" || bad "b never joined"
printf '3,0.5,0.5\n' > "$TMP/tiny.csv"
refused "run full" "the run is full" --data "$TMP/tiny.csv" --name c
rc=0; wait $CPID || rc=$?
[ $rc -eq 0 ] && ok "the run finished (exit 0)" || bad "coordinator exit $rc"
wait $A && wait $B && ok "the two admitted clients exited 0" || bad "admitted clients failed"
[ "$(jsonl_eval "$TMP/m.jsonl" "len(rows) == 30 and all(r['clients_reported'] == 2 for r in rows)")" = True ] \
  && ok "30 rounds with both admitted clients" || bad "rounds: $(cat "$TMP/m.jsonl")"
finish
