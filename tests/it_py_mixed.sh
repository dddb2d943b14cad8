# A mixed federation (examples/python/run_mixed.sh): 2 C fedlr-client
# processes and 2 Python clients (examples/python/mlp_client.py, PyTorch)
# train the built-in MLP together under one fedlr-coordinator for 3 rounds.
# Every process must exit 0, every round must count all 4 updates (the
# JSONL's participants, rejected 0), and each client's log must show it
# trained every round.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib_py.sh"
need_py numpy zmq google.protobuf torch
[ -f "$DATA_DIR/train-images-idx3-ubyte.gz" ] || skip_rest "no Fashion-MNIST in $DATA_DIR (install dataset-fashion-mnist)"

OUT="$TMP/mixed"
rc=0
C_CLIENTS=2 PY_CLIENTS=2 ROUNDS=3 MODEL=mlp:64 BATCH=20 LR=0.05 LOCAL_SCHEDULE="exp:gamma=0.9" PORT=$(free_port) \
  FEDLR_DATA_DIR="$DATA_DIR" timeout 120 bash "$SRC/examples/python/run_mixed.sh" "$BUILD" "$OUT" > "$TMP/run.out" 2>&1 || rc=$?
cat "$TMP/run.out"
[ $rc -eq 0 ] && ok "run_mixed.sh: coordinator, 2 C and 2 Python clients exited 0, every update accepted" \
  || { bad "run_mixed.sh exited $rc"; tail -5 "$OUT"/*.log; }

M="$OUT/metrics.jsonl"
if [ -s "$M" ]; then
  all=$(jsonl_eval "$M" "len(rows) == 3 and all(sorted(r['participants']) == [0, 1, 2, 3] and r['clients_reported'] == 4 and r['rejected'] == 0 for r in rows)")
  [ "$all" = True ] && ok "metrics: 3 rounds, each with participants [0, 1, 2, 3] and rejected 0" \
    || bad "metrics: $(jsonl_eval "$M" "[(r['round'], r['participants'], r['rejected']) for r in rows]")"
  acc=$(jsonl_eval "$M" "rows[-1]['test_accuracy']")
  "$PY" -c "import sys; sys.exit(0 if $acc >= 0.8 else 1)" && ok "the mixed federation learns: test accuracy $acc after 3 rounds (>= 0.8)" \
    || bad "test accuracy $acc after 3 rounds"
else
  bad "no metrics written"
fi
for who in c-0 c-1; do
  n=$(grep -c "round [0-9]* trained" "$OUT/client-$who.log" || true)
  [ "$n" -eq 3 ] && ok "C client $who trained 3 rounds" || bad "C client $who trained $n rounds: $(tail -2 "$OUT/client-$who.log")"
done
for who in py-2 py-3; do
  n=$(grep -c "round [0-9]* trained" "$OUT/client-$who.log" || true)
  [ "$n" -eq 3 ] && ok "Python client $who trained 3 rounds" || bad "Python client $who trained $n rounds: $(tail -2 "$OUT/client-$who.log")"
done
# Who reported: the coordinator's joins name all four.
joined=$(grep -c "joined with" "$OUT/coord.log" || true)
[ "$joined" -eq 4 ] && ok "the coordinator log shows 4 joins: $(grep -o "client [a-z0-9-]* (id [0-9])" "$OUT/coord.log" | tr '\n' ' ')" \
  || bad "the coordinator log shows $joined joins"
finish
