# fedlr-coordinator and 5 fedlr-client processes over loopback TCP: training
# reaches a target accuracy and stops; every process exits 0; and the final
# weights are bit-identical to fedlr-sim's with the same configuration and
# seed (3 of 5 clients sampled per round, so sampling is exercised too).
# Then FedProx (--prox-mu 0.01) on a non-IID split (dirichlet:0.5), 4
# clients, 3 rounds: the clients speak protocol version 3 and train with the
# proximal term exactly as fedlr-sim's virtual clients do (final weights and
# every round's metrics bit-identical; the term changes the result), and
# the run refuses Joins of protocol versions 1 and 2 (tests/tools/fl_badpeer)
# with a Stop{error} that says why and lists version 3 only.
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

# ---- FedProx ----
BADPEER="$BUILD/tests/fl_badpeer"
PFLAGS=(--model mlp:32 --clients 4 --fraction 1 --rounds 3 --local-epochs 1 --batch-size 20 --lr 0.05
        --optimizer sgd --seed 17 --prox-mu 0.01)
PORT=$(free_port)
timeout 300 "$COORD" --bind "tcp://127.0.0.1:$PORT" "${PFLAGS[@]}" --start-clients 4 --round-timeout 60 \
  --metrics "$TMP/prox.jsonl" --out "$TMP/prox" > /dev/null 2> "$TMP/coord.log" &
CPID=$!; PIDS+=($CPID)
wait_until 30 grep -q "listening on" "$TMP/coord.log" || bad "FedProx: no coordinator: $(tail -3 "$TMP/coord.log")"
# Before the clients: refused Joins must leave no trace in the run.
if [ -x "$BADPEER" ]; then
  timeout -k 5 60 "$BADPEER" --connect "tcp://127.0.0.1:$PORT" --bad-joins prox --prox-mu 0.01 --timeout 10 \
    > "$TMP/proxjoins.out" 2>&1 && ok "FedProx: Joins of protocol versions 1 and 2 refused, version 3 listed" \
    || bad "FedProx joins: $(grep FAIL "$TMP/proxjoins.out" || tail -3 "$TMP/proxjoins.out")"
  sed 's/^/  /' "$TMP/proxjoins.out"
  grep -q "refused a join as 'old-client' .*this run uses FedProx (--prox-mu 0.01): clients must speak protocol version 3 or later; this client speaks up to 2" \
    "$TMP/coord.log" && ok "FedProx: the coordinator logs why it refused the old client" \
    || bad "FedProx: no refusal in the log: $(grep -m2 refused "$TMP/coord.log")"
else
  skip "FedProx refusals: $BADPEER is not built"
fi
CL=()
for i in 0 1 2 3; do
  timeout 300 "$CLIENT" --connect "tcp://127.0.0.1:$PORT" --dataset fashion-mnist --data-dir "$DATA_DIR" \
    --partition dirichlet:0.5 --num-partitions 4 --partition-index $i --seed 17 2> "$TMP/p$i.log" &
  CL+=($!); PIDS+=($!)
done
wait_run "FedProx"
"$SIM" --quiet --data-dir "$DATA_DIR" --partition dirichlet:0.5 "${PFLAGS[@]}" --metrics "$TMP/proxsim.jsonl" \
  --out "$TMP/proxsim" > /dev/null 2> "$TMP/sim.log" || bad "fedlr-sim --prox-mu failed: $(tail -3 "$TMP/sim.log")"
if st_equal "$TMP/prox/model.safetensors" "$TMP/proxsim/model.safetensors"; then
  ok "FedProx: networked weights are bit-identical to fedlr-sim's (dirichlet:0.5, --prox-mu 0.01)"
else
  bad "FedProx: weights differ from fedlr-sim's (max diff $(st_maxdiff "$TMP/prox/model.safetensors" "$TMP/proxsim/model.safetensors"))"
fi
same=$("$PY" - "$TMP/prox.jsonl" "$TMP/proxsim.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
keys = ["train_loss", "test_loss", "test_accuracy"]
diff = [(r["round"], k, r.get(k), s.get(k)) for r, s in zip(a, b) for k in keys if r.get(k) != s.get(k)]
print("same" if len(a) == len(b) == 3 and not diff else "differ: %s" % diff[:3])
PY
)
[ "$same" = same ] && ok "FedProx: train_loss, test_loss and test_accuracy equal fedlr-sim's in every round" \
  || bad "FedProx metrics vs fedlr-sim: $same"
"$SIM" --quiet --data-dir "$DATA_DIR" --partition dirichlet:0.5 "${PFLAGS[@]}" --prox-mu 0 \
  --out "$TMP/plainsim" > /dev/null 2> "$TMP/sim.log" || bad "fedlr-sim --prox-mu 0 failed: $(tail -3 "$TMP/sim.log")"
st_equal "$TMP/prox/model.safetensors" "$TMP/plainsim/model.safetensors" \
  && bad "FedProx: --prox-mu 0.01 gave the same weights as --prox-mu 0 (the term is not applied)" \
  || ok "FedProx: the proximal term changes the weights (max diff from --prox-mu 0: $(st_maxdiff "$TMP/prox/model.safetensors" "$TMP/plainsim/model.safetensors"))"
finish
