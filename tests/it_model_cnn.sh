# Built-in CNNs end to end (--model cnn:...): fedlr-sim trains one on real
# Fashion-MNIST; its model.safetensors loads into the equivalent
# torch.nn.Sequential with the README's lines, whose test loss and accuracy
# equal fedlr's, and a numpy forward written from scratch agrees with torch
# (python/tests/test_cnn_interop.py); a networked CNN run (coordinator and
# two fedlr-client processes) is bit-identical to fedlr-sim; a spec that
# does not fit the data is refused.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib_py.sh"

FLAGS=(--model cnn:conv5x5x8,pool2,conv5x5x16,pool2,fc32 --clients 20 --fraction 0.1 --rounds 2
       --batch-size 10 --lr 0.05 --seed 3)
t=$SECONDS
"$SIM" --quiet --data-dir "$DATA_DIR" --partition iid "${FLAGS[@]}" --metrics "$TMP/sim.jsonl" \
  --out "$TMP/sim" > /dev/null 2> "$TMP/sim.err" || bad "fedlr-sim: $(tail -2 "$TMP/sim.err")"
acc=$(jsonl_eval "$TMP/sim.jsonl" "rows[-1]['test_accuracy']")
"$PY" -c "import sys; sys.exit(0 if $acc > 0.6 else 1)" \
  && ok "fedlr-sim trains a CNN: test accuracy $acc after 2 rounds of 2 clients ($((SECONDS - t)) s)" \
  || bad "CNN accuracy $acc after 2 rounds"

need_py numpy torch
py_checks "python/tests/test_cnn_interop.py" "$PY" "$SRC/python/tests/test_cnn_interop.py" \
  "$TMP/sim/model.safetensors" "$TMP/sim.jsonl" "$DATA_DIR"

# The networked run on 2,000 real training images and 500 test images (CSV):
# fedlr's kernels are instrumented under the sanitizers, which made two
# clients of 30,000 images each miss the round deadline there.
"$PY" - "$DATA_DIR" "$TMP" <<'PY'
import gzip, sys
import numpy as np
d, out = sys.argv[1], sys.argv[2]
x = np.frombuffer(gzip.open(f"{d}/train-images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(-1, 784)
y = np.frombuffer(gzip.open(f"{d}/train-labels-idx1-ubyte.gz").read()[8:], np.uint8)
for name, lo, n in (("small", 0, 2000), ("small-test", 50000, 500)):
    with open(f"{out}/{name}.csv", "w") as f:
        for i in range(lo, lo + n):
            f.write(str(int(y[i])) + "," + ",".join("%.4g" % (v / 255.0) for v in x[i]) + "\n")
PY
DATA=(--dataset "$TMP/small.csv" --test-data "$TMP/small-test.csv")
PORT=$(free_port)
timeout 300 "$COORD" --bind "tcp://127.0.0.1:$PORT" "${DATA[@]}" "${FLAGS[@]}" --clients 2 --fraction 1 \
  --start-clients 2 --round-timeout 120 --out "$TMP/net" > /dev/null 2> "$TMP/coord.log" &
CPID=$!; PIDS+=($CPID)
for i in 0 1; do
  timeout 300 "$CLIENT" --connect "tcp://127.0.0.1:$PORT" --dataset "$TMP/small.csv" \
    --partition iid --num-partitions 2 --partition-index $i --seed 3 2> "$TMP/c$i.log" &
  PIDS+=($!)
done
rc=0; wait $CPID || rc=$?
[ $rc -eq 0 ] && ok "networked CNN run: coordinator exited 0" || { bad "coordinator exit $rc"; tail -5 "$TMP/coord.log"; }
"$SIM" --quiet "${DATA[@]}" --partition iid "${FLAGS[@]}" --clients 2 --fraction 1 --out "$TMP/sim2" > /dev/null
st_equal "$TMP/net/model.safetensors" "$TMP/sim2/model.safetensors" \
  && ok "networked CNN (coordinator + 2 fedlr-clients, 28,874 parameters) = fedlr-sim, bit for bit" \
  || bad "networked CNN differs from fedlr-sim (max diff $(st_maxdiff "$TMP/net/model.safetensors" "$TMP/sim2/model.safetensors"))"

{ echo "label,a,b,c,d,e"; for i in $(seq 1 40); do echo "$((i % 2)),0.$i,0.5,0.25,1,0"; done; } > "$TMP/five.csv"
expect_fail "a CNN on data that is not a square image" "5 features are not one" \
  "$SIM" --model cnn:conv3x3x4 --dataset "$TMP/five.csv" --clients 2
expect_fail "a CNN that pools too often" "'pool2' on a 1 x 1 input: nothing to pool" \
  "$SIM" --data-dir "$DATA_DIR" --model cnn:pool2,pool2,pool2,pool2,pool2,pool2
finish
