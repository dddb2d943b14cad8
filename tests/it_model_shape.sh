# Image shapes (--input-shape CxHxW, an IDX file's dimensions): fedlr-sim
# trains a CNN on a CSV of 3-channel 8 x 8 images (--input-shape 3x8x8),
# whose model.safetensors loads into nn.Sequential(Conv2d(3, ...), ...)
# with fedlr's test loss and accuracy; the same run over the network
# (coordinator + 2 fedlr-clients on the CSV, which take the Welcome's shape)
# is bit-identical; Joins of protocol version 3 and older are refused with
# the reason (an older client would build a 1-channel square CNN); a client
# whose IDX data is of another shape refuses the run; bad --input-shape
# values, a shape that is not the data's features and a spec that does not
# fit the image are refused with clear errors, also from a config file and
# by fedlr-coordinator and fedlr-sweep.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib_py.sh"
BADPEER="$BUILD/tests/fl_badpeer"
SWEEP="$BUILD/fedlr-sweep"

# gen N SEED FILE: N examples of 3 x 8 x 8 (192 features in NCHW order) over
# uniform noise, 4 classes: class k < 3 lights the top half of channel k,
# class 3 the bottom half of channel 0 (so both the channel and the place
# matter).
gen() {
  LC_ALL=C awk -v n="$1" -v seed="$2" 'BEGIN {
    srand(seed)
    for (i = 0; i < n; i++) {
      k = i % 4; line = k
      for (c = 0; c < 3; c++) for (h = 0; h < 8; h++) for (w = 0; w < 8; w++) {
        v = 0.4 * rand()
        if ((k < 3 && c == k && h < 4) || (k == 3 && c == 0 && h >= 4)) v += 0.5
        line = line sprintf(",%.3f", v)
      }
      print line
    }
  }' > "$3"
}
gen 400 1 "$TMP/train.csv"
gen 200 2 "$TMP/test.csv"

FLAGS=(--input-shape 3x8x8 --model cnn:conv3x3x8,pool2,fc16 --fraction 1 --rounds 3 --batch-size 10
       --lr 0.3 --seed 5)
DATA=(--dataset "$TMP/train.csv" --test-data "$TMP/test.csv")
"$SIM" "${DATA[@]}" "${FLAGS[@]}" --clients 4 --partition iid --metrics "$TMP/sim.jsonl" --out "$TMP/sim" \
  > /dev/null 2> "$TMP/sim.err" || bad "fedlr-sim: $(tail -2 "$TMP/sim.err")"
grep -q "model cnn:conv3x3x8,pool2,fc16 on 3x8x8 images (2356 parameters)" \
  "$TMP/sim.err" && ok "fedlr-sim: $(grep -o 'model cnn.*parameters)' "$TMP/sim.err")" \
  || bad "fedlr-sim does not say the 3x8x8 input: $(grep model "$TMP/sim.err")"
acc=$(jsonl_eval "$TMP/sim.jsonl" "rows[-1]['test_accuracy']")
"$PY" -c "import sys; sys.exit(0 if $acc >= 0.9 else 1)" \
  && ok "fedlr-sim trains a CNN on 3-channel 8 x 8 images: test accuracy $acc after 3 rounds" \
  || bad "3-channel CNN accuracy $acc after 3 rounds"
# The tensors of Conv2d(3, 8, 3): (8, 3, 3, 3), and Linear(128, 16).
hdr=$(head -c 4096 "$TMP/sim/model.safetensors" | tr -d '\0' | LC_ALL=C tr -c '[:print:]' ' ')
grep -q '"0.weight":{"dtype":"F32","shape":\[8,3,3,3\]' <<<"$hdr" \
  && grep -q '"4.weight":{"dtype":"F32","shape":\[16,128\]' <<<"$hdr" \
  && ok "model.safetensors: 0.weight [8,3,3,3], 4.weight [16,128] (Conv2d(3, 8, 3), Linear(128, 16))" \
  || bad "model.safetensors tensors: $(grep -o '"[0-9]*.weight":{[^}]*}' <<<"$hdr" | tr '\n' ' ')"

# Over the network: the coordinator's --input-shape reaches the clients in
# the Welcome (protocol version 4); their CSV data has no shape of its own.
PORT=$(free_port)
timeout 300 "$COORD" --bind "tcp://127.0.0.1:$PORT" "${DATA[@]}" "${FLAGS[@]}" --clients 2 --start-clients 2 \
  --round-timeout 120 --out "$TMP/net" > /dev/null 2> "$TMP/coord.log" &
CPID=$!; PIDS+=($CPID)
wait_until 30 grep -q "listening on" "$TMP/coord.log" || bad "no coordinator: $(tail -3 "$TMP/coord.log")"
if [ -x "$BADPEER" ]; then
  timeout -k 5 60 "$BADPEER" --connect "tcp://127.0.0.1:$PORT" --bad-joins shape --input-shape 3x8x8 \
    --timeout 10 > "$TMP/joins.out" 2>&1 \
    && ok "Joins of protocol versions 1 to 3 refused (an older client would build a 1-channel square CNN), version 4 listed" \
    || bad "old Joins: $(grep FAIL "$TMP/joins.out" || tail -3 "$TMP/joins.out")"
  sed 's/^/  /' "$TMP/joins.out"
  grep -q "refused a join as 'old-client' .*this run's CNN takes 3x8x8 images (--input-shape, or the IDX data's dimensions), which a client of protocol version 3 or older would build as one channel of a square: clients must speak protocol version 4 or later; this client speaks up to 3" \
    "$TMP/coord.log" && ok "the coordinator logs why it refused the version-3 client" \
    || bad "no refusal in the log: $(grep -m2 refused "$TMP/coord.log")"
else
  skip "old Joins refused: $BADPEER is not built"
fi
CL=()
for i in 0 1; do
  timeout 300 "$CLIENT" --connect "tcp://127.0.0.1:$PORT" --dataset "$TMP/train.csv" --partition iid \
    --num-partitions 2 --partition-index $i --seed 5 2> "$TMP/c$i.log" &
  CL+=($!); PIDS+=($!)
done
wait_run "networked 3x8x8 CNN"
"$SIM" "${DATA[@]}" "${FLAGS[@]}" --quiet --clients 2 --partition iid --out "$TMP/sim2" > /dev/null 2>&1 \
  || bad "fedlr-sim with 2 clients failed"
st_equal "$TMP/net/model.safetensors" "$TMP/sim2/model.safetensors" \
  && ok "networked 3x8x8 CNN (coordinator + 2 fedlr-clients) = fedlr-sim, bit for bit" \
  || bad "networked 3x8x8 CNN differs from fedlr-sim (max diff $(st_maxdiff "$TMP/net/model.safetensors" "$TMP/sim2/model.safetensors"))"

# A client whose IDX data holds 1 x 8 x 24 images (192 features too) refuses
# a run on 3 x 8 x 8.
{ printf '\0\0\x08\x03\0\0\0\x28\0\0\0\x08\0\0\0\x18'
  LC_ALL=C awk 'BEGIN { for (i = 0; i < 40 * 192; i++) printf "%c", (i * 7) % 256 }'; } \
  > "$TMP/wide-images-idx3-ubyte"
{ printf '\0\0\x08\x01\0\0\0\x28'
  LC_ALL=C awk 'BEGIN { for (i = 0; i < 40; i++) printf "%c", i % 4 }'; } > "$TMP/wide-labels-idx1-ubyte"
PORT=$(free_port)
timeout 60 "$COORD" --bind "tcp://127.0.0.1:$PORT" "${DATA[@]}" "${FLAGS[@]}" --clients 2 --start-clients 2 \
  --round-timeout 30 > /dev/null 2> "$TMP/coord2.log" &
CPID=$!; PIDS+=($CPID)
wait_until 30 grep -q "listening on" "$TMP/coord2.log" || bad "no coordinator: $(tail -3 "$TMP/coord2.log")"
expect_fail "fedlr-client with IDX data of another shape" \
  "the coordinator's model takes 3x8x8 images (C x H x W), this client's data holds 1x8x24 images (its IDX dimensions)" \
  timeout 30 "$CLIENT" --connect "tcp://127.0.0.1:$PORT" --data "$TMP/wide-images-idx3-ubyte" --give-up 20
kill "$CPID" 2>/dev/null || true

# Bad values, each refused before any training.
ONE=(--clients 2 --rounds 1)
expect_exit 2 "--input-shape without a channel count" "--input-shape: '3x8' is not CxHxW (channels x height x width" \
  "$SIM" "${DATA[@]}" "${ONE[@]}" --model cnn:conv3x3x8 --input-shape 3x8
expect_exit 2 "--input-shape with a zero" "--input-shape: '0x8x8' is not CxHxW" \
  "$SIM" "${DATA[@]}" "${ONE[@]}" --model cnn:conv3x3x8 --input-shape 0x8x8
expect_exit 2 "--input-shape beyond the limit (no overflow)" "--input-shape: '99999999999999999999x1x1' is not CxHxW" \
  "$SIM" "${DATA[@]}" "${ONE[@]}" --model cnn:conv3x3x8 --input-shape 99999999999999999999x1x1
expect_exit 2 "--input-shape whose product is not the data's features" \
  "--input-shape 3x8x9 is 216 features per example, the data has 192" \
  "$SIM" "${DATA[@]}" "${ONE[@]}" --model cnn:conv3x3x8 --input-shape 3x8x9
expect_exit 2 "--input-shape of 2^48 features" "--input-shape 65536x65536x65536 is 281474976710656 features" \
  "$SIM" "${DATA[@]}" "${ONE[@]}" --model cnn:conv3x3x8 --input-shape 65536x65536x65536
expect_fail "a spec that does not fit the 3x8x8 image names the item and the sizes" \
  "'conv9x9x4valid' does not fit the 8 x 8 input it gets (item 2, a 9 x 9 kernel without padding on 8 channels of 8 x 8; the input image is 3x8x8)" \
  "$SIM" "${DATA[@]}" "${ONE[@]}" --model cnn:conv3x3x8,conv9x9x4valid --input-shape 3x8x8
expect_fail "a CNN on 192 CSV features without --input-shape" \
  "192 features are not one (28 x 28 = 784 for Fashion-MNIST); for other images give --input-shape CxHxW" \
  "$SIM" "${DATA[@]}" "${ONE[@]}" --model cnn:conv3x3x8
expect_exit 2 "--input-shape against Fashion-MNIST's own 28 x 28" \
  "--input-shape 3x8x8 is 192 features per example, the data has 784 (its own shape is 1x28x28)" \
  "$SIM" --data-dir "$DATA_DIR" "${ONE[@]}" --model cnn:conv3x3x8 --input-shape 3x8x8
expect_exit 2 "fedlr-coordinator: --input-shape that is not the test set's features" \
  "--input-shape 1x8x8 is 64 features per example, the data has 192" \
  "$COORD" --bind "tcp://127.0.0.1:$(free_port)" "${DATA[@]}" --model cnn:conv3x3x8 --input-shape 1x8x8
expect_exit 2 "fedlr-sweep: a malformed --input-shape" "--input-shape: 'x8x8' is not CxHxW" \
  "$SWEEP" "${DATA[@]}" "${ONE[@]}" --model cnn:conv3x3x8 --input-shape x8x8 --out "$TMP/sw" --grid 'lr=0.1|0.2'
printf '[fedlr]\ninput-shape = 3x4x17\n' > "$TMP/bad.ini"
expect_exit 2 "input-shape in a config file, checked like the flag" \
  "--input-shape 3x4x17 is 204 features per example, the data has 192" \
  "$SIM" --config "$TMP/bad.ini" "${DATA[@]}" "${ONE[@]}" --model cnn:conv3x3x8
# The config file's key works as the flag does; softmax and MLPs ignore the shape.
printf '[fedlr]\ninput_shape = 3x8x8\n' > "$TMP/good.ini"
"$SIM" --config "$TMP/good.ini" "${DATA[@]}" "${ONE[@]}" --model cnn:conv3x3x8,pool2 2> "$TMP/ini.err" > /dev/null \
  && grep -q "on 3x8x8 images" "$TMP/ini.err" && ok "input_shape = 3x8x8 in a config file: a 3x8x8 CNN" \
  || bad "config file input_shape: $(tail -2 "$TMP/ini.err")"
"$SIM" "${DATA[@]}" "${ONE[@]}" --model mlp:8 --input-shape 3x8x8 2> "$TMP/mlp.err" > /dev/null \
  && ! grep -q "images" "$TMP/mlp.err" && ok "an MLP with --input-shape trains on the flat features" \
  || bad "MLP with --input-shape: $(tail -2 "$TMP/mlp.err")"

need_py numpy torch
py_checks "python/tests/test_shape_interop.py" "$PY" "$SRC/python/tests/test_shape_interop.py" \
  "$TMP/sim/model.safetensors" "$TMP/sim.jsonl" "$TMP/test.csv"
finish
