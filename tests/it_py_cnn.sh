# The PyTorch CNN example (examples/python/cnn_fashion_mnist.py) for real:
# the example exports its initial model, fedlr-coordinator --init starts from
# it, 2 Python clients train it on Fashion-MNIST shares for 4 rounds and
# evaluate each new global model on their held-out examples; the federated
# loss drives the coordinator's plateau schedule. Then the coordinator's
# model.safetensors is loaded back into torch and evaluated on the clients'
# held-out examples: its accuracy must be the last round's fed_eval_accuracy
# (and its loss fed_eval_loss) up to float rounding.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib_py.sh"
need_py numpy zmq google.protobuf torch
[ -f "$DATA_DIR/train-images-idx3-ubyte.gz" ] || skip_rest "no Fashion-MNIST in $DATA_DIR (install dataset-fashion-mnist)"

OUT="$TMP/cnn"
PORT=$(free_port)
# plateau with patience 0 and a 40% threshold: a round whose federated loss
# is not 40% below the best so far halves the rate, so the schedule visibly
# follows the clients' evaluations within 4 rounds.
SCHED="plateau:patience=0,factor=0.5,threshold=0.4"
rc=0
timeout 120 "$PY" "$SRC/examples/python/cnn_fashion_mnist.py" run "$BUILD" --out "$OUT" --clients 2 --rounds 4 \
  --limit 2500 --port "$PORT" --schedule "$SCHED" --data-dir "$DATA_DIR" > "$TMP/run.out" 2> "$TMP/run.err" || rc=$?
cat "$TMP/run.out"
if [ $rc -ne 0 ]; then
  bad "the CNN example exited $rc"
  tail -20 "$TMP/run.err" "$OUT/coord.log" "$OUT"/client-*.log 2>/dev/null
  finish
fi
ok "the CNN example ran: coordinator from --init and 2 Python clients exited 0"
grep -q "tensors from --init" "$OUT/coord.log" && ok "the coordinator started from the example's --init file: $(grep -o 'model: .*from --init' "$OUT/coord.log")" \
  || bad "the coordinator log does not show --init: $(head -3 "$OUT/coord.log")"

M="$OUT/metrics.jsonl"
n=$(jsonl_eval "$M" "len(rows)")
[ "$n" = 4 ] && ok "4 rounds in the metrics" || bad "$n rounds in the metrics, not 4"
fed=$(jsonl_eval "$M" "all(r.get('fed_eval_clients') == 2 and r.get('fed_eval_examples') == 500 and r.get('fed_eval_accuracy') is not None and r.get('fed_eval_loss') is not None for r in rows)")
[ "$fed" = True ] && ok "every round has federated metrics from both clients (500 held-out examples): $(jsonl_eval "$M" "[round(r['fed_eval_accuracy'], 4) for r in rows]")" \
  || bad "federated metrics missing: $(tail -1 "$M")"
acc=$(jsonl_eval "$M" "rows[-1]['fed_eval_accuracy']")
"$PY" -c "import sys; sys.exit(0 if $acc >= 0.75 else 1)" && ok "the CNN learns: federated accuracy $acc after 4 rounds (>= 0.75)" \
  || bad "federated accuracy $acc after 4 rounds (< 0.75)"
# The rates the coordinator used are the plateau schedule fed the federated
# losses (recomputed with fedlr.schedules, checked against C by it_py_sched).
plateau=$("$PY" - "$M" "$SCHED" <<'PY'
import json, sys
from fedlr import schedules
rows = [json.loads(l) for l in open(sys.argv[1])]
s, pl = schedules.parse(sys.argv[2]), schedules.Plateau()
want = []
for r in rows:
    want.append(s.lr(0.05, r["round"] - 1, pl))
    pl.observe(s, r["fed_eval_loss"])
got = [r["lr"] for r in rows]
ok = all(abs(a - b) <= 1e-12 for a, b in zip(want, got)) and min(got) < max(got)
print("%s rates %s, expected %s" % ("ok" if ok else "bad", got, want))
PY
)
case "$plateau" in
  ok*) ok "the plateau schedule followed fed_eval_loss: ${plateau#ok }" ;;
  *) bad "the plateau schedule did not follow fed_eval_loss (or never reduced): ${plateau#bad }" ;;
esac

F="$OUT/final.json"
if [ -f "$F" ]; then
  cmp=$("$PY" -c "
import json; f = json.load(open('$F'))
print(abs(f['heldout_accuracy'] - f['fed_eval_accuracy']) <= 1e-9, abs(f['heldout_loss'] - f['fed_eval_loss']) <= 1e-5 * max(1, abs(f['fed_eval_loss'])), f['heldout_accuracy'], f['fed_eval_accuracy'], f['heldout_loss'], f['fed_eval_loss'], f['test_accuracy'])")
  read -r same_acc same_loss hacc facc hloss floss tacc <<<"$cmp"
  [ "$same_acc" = True ] && ok "model.safetensors in torch: held-out accuracy $hacc = the last round's fed_eval_accuracy $facc (test set: $tacc)" \
    || bad "model.safetensors in torch: held-out accuracy $hacc, the coordinator reported $facc"
  [ "$same_loss" = True ] && ok "and its held-out loss $hloss = fed_eval_loss $floss up to float rounding" \
    || bad "held-out loss $hloss, the coordinator reported fed_eval_loss $floss"
else
  bad "the final evaluation wrote no $F"
fi
finish
