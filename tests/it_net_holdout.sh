# fedlr-client --holdout (federated evaluation on libfedlr): three clients
# hold out 20% of their Fashion-MNIST partitions, declare them in the Join
# and answer every Evaluate with fl_trainer_evaluate ("accuracy"); the
# coordinator, which has a test set too, records fed_eval_* each round. The
# clients hold out exactly what fedlr-sim's virtual clients hold out
# (fl_partition_holdout, client index = partition index), so the federated
# metrics and the final weights are bit-identical to fedlr-sim --holdout's.
source "$(dirname "$0")/lib.sh"

FLAGS=(--model softmax --clients 3 --fraction 1 --rounds 4 --local-epochs 1 --batch-size 50 --lr 0.05
       --seed 13)
PORT=$(free_port)
timeout 300 "$COORD" --bind "tcp://127.0.0.1:$PORT" "${FLAGS[@]}" --start-clients 3 --round-timeout 60 \
  --metrics "$TMP/net.jsonl" --out "$TMP/net" > /dev/null 2> "$TMP/coord.log" &
CPID=$!; PIDS+=($CPID)
CL=()
for i in 0 1 2; do
  timeout 300 "$CLIENT" --connect "tcp://127.0.0.1:$PORT" --dataset fashion-mnist --data-dir "$DATA_DIR" \
    --partition iid --num-partitions 3 --partition-index $i --seed 13 --holdout 0.2 2> "$TMP/c$i.log" &
  CL+=($!); PIDS+=($!)
done
wait_run "holdout"
grep -q -- "--holdout 0.2: 4000 examples held out for evaluation, 16000 to train on" "$TMP/c0.log" \
  && ok "client 0: $(grep -o -- '--holdout 0.2: .*' "$TMP/c0.log")" || bad "client 0: $(head -3 "$TMP/c0.log")"
grep -q "connecting to tcp://127.0.0.1:$PORT with 16000 examples" "$TMP/c0.log" \
  && ok "client 0 joins with its 16000 training examples" || bad "client 0: $(grep connecting "$TMP/c0.log")"
every=$(jsonl_eval "$TMP/net.jsonl" "len(rows) == 4 and all(r['fed_eval_clients'] == 3 and r['fed_eval_examples'] == 12000 for r in rows)")
[ "$every" = True ] && ok "every round evaluated by 3 clients on 12000 held-out examples" \
  || bad "fed_eval per round: $(jsonl_eval "$TMP/net.jsonl" "[(r.get('fed_eval_clients'), r.get('fed_eval_examples')) for r in rows]")"
acc=$(jsonl_eval "$TMP/net.jsonl" "rows[-1]['fed_eval_accuracy']")
test_acc=$(jsonl_eval "$TMP/net.jsonl" "rows[-1]['test_accuracy']")
"$PY" -c "import sys; sys.exit(0 if 0.7 < $acc < 0.95 and abs($acc - $test_acc) < 0.03 else 1)" \
  && ok "federated accuracy $acc, close to the test set's $test_acc" || bad "federated accuracy $acc, test $test_acc"
grep -qE "round 4 evaluated in [0-9.]+ s \(loss [0-9.]+, accuracy 0\.[0-9]+, 4000 examples\)" "$TMP/c1.log" \
  && ok "client 1: $(grep -m1 -oE 'round 4 evaluated in .*' "$TMP/c1.log")" || bad "client 1: $(tail -3 "$TMP/c1.log")"

"$SIM" --quiet --data-dir "$DATA_DIR" --partition iid "${FLAGS[@]}" --holdout 0.2 --metrics "$TMP/sim.jsonl" \
  --out "$TMP/sim" > /dev/null 2> "$TMP/sim.log" || bad "fedlr-sim --holdout failed: $(tail -3 "$TMP/sim.log")"
same=$("$PY" - "$TMP/net.jsonl" "$TMP/sim.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
keys = ["fed_eval_loss", "fed_eval_accuracy", "fed_eval_examples", "fed_eval_clients", "train_loss"]
diff = [(r["round"], k, r.get(k), s.get(k)) for r, s in zip(a, b) for k in keys if r.get(k) != s.get(k)]
print("same" if len(a) == len(b) == 4 and not diff else "differ: %s" % diff[:3])
PY
)
[ "$same" = same ] && ok "fed_eval_loss, fed_eval_accuracy and train_loss equal fedlr-sim --holdout's in every round" \
  || bad "metrics vs fedlr-sim: $same"
if st_equal "$TMP/net/model.safetensors" "$TMP/sim/model.safetensors"; then
  ok "networked weights are bit-identical to fedlr-sim --holdout's"
else
  bad "weights differ from fedlr-sim's (max diff $(st_maxdiff "$TMP/net/model.safetensors" "$TMP/sim/model.safetensors"))"
fi
finish
