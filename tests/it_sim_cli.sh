# fedlr-sim's command line: --help, config file + flag override, outputs
# (JSON Lines keys, safetensors readable with numpy, SVG chart), and clear
# errors for bad flags, bad specs, a missing dataset and corrupt files.
source "$(dirname "$0")/lib.sh"

"$SIM" --help > "$TMP/help.txt"
missing=""
for f in --dataset --data-dir --model --clients --fraction --rounds --local-epochs --batch-size \
         --optimizer --lr --schedule --local-schedule --partition --seed --workers --eval-every \
         --target-accuracy --metrics --out --config; do
  grep -q -- "$f" "$TMP/help.txt" || missing="$missing $f"
done
[ -z "$missing" ] && ok "--help lists every flag" || bad "--help lacks$missing"

# A config file, with a flag overriding one of its keys.
cat > "$TMP/run.ini" <<INI
[fedlr]
model = softmax
clients = 20
fraction = 0.5
rounds = 5
local-epochs = 1
batch_size = 20
lr = 0.05
schedule = warmup:2+cos:T=3,min=0.001
partition = dirichlet:0.5
seed = 3
INI
"$SIM" --config "$TMP/run.ini" --rounds 3 --data-dir "$DATA_DIR" --metrics "$TMP/m.jsonl" \
  --out "$TMP/out" > "$TMP/stdout.txt" 2> "$TMP/stderr.txt"
[ "$(jsonl_eval "$TMP/m.jsonl" "len(rows)")" = 3 ] && ok "flag --rounds 3 overrides the file's 5" || bad "rounds override"
[ "$(jsonl_eval "$TMP/m.jsonl" "rows[0]['clients_sampled']")" = 10 ] && ok "file's clients/fraction used" || bad "config keys"
keys=$(jsonl_eval "$TMP/m.jsonl" "all(all(k in r for k in ['round','lr','clients_sampled','clients_reported','train_loss','test_loss','test_accuracy','seconds']) for r in rows)")
[ "$keys" = True ] && ok "metrics have the required keys" || bad "metrics keys"
lrs=$(jsonl_eval "$TMP/m.jsonl" "[round(r['lr'], 6) for r in rows]")
[ "$lrs" = "[0.025, 0.0375, 0.05]" ] && ok "warmup round rates $lrs" || bad "warmup rates $lrs"
grep -q "round   3/3" "$TMP/stdout.txt" && grep -q "ETA" "$TMP/stdout.txt" && ok "progress lines" || bad "progress: $(cat "$TMP/stdout.txt")"
grep -q "OpenBLAS core" "$TMP/stderr.txt" && ok "reports the OpenBLAS core: $(grep -o 'OpenBLAS core [A-Za-z0-9]*' "$TMP/stderr.txt")" || bad "no core report"
"$PY" - "$TMP/out/model.safetensors" <<'PY' && ok "safetensors loads with numpy" || bad "safetensors"
import json, struct, sys
import numpy as np
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
w = h["layers.0.weight"]
assert w["dtype"] == "F32" and w["shape"] == [10, 784], w
s, e = w["data_offsets"]
a = np.frombuffer(b[8 + n + s:8 + n + e], dtype="<f4").reshape(w["shape"])
assert np.isfinite(a).all() and a.std() > 0
assert h["__metadata__"]["model"] == "softmax"
PY
if command -v xmllint >/dev/null; then
  xmllint --noout "$TMP/out/chart.svg" && ok "chart.svg is well-formed XML" || bad "chart.svg"
else
  skip "chart.svg well-formed: xmllint (libxml2-utils) is not installed"
fi
grep -q "<polyline" "$TMP/out/chart.svg" && ok "chart has data" || bad "chart has no polyline"

# The README's optimizer forms run (",wd=W" right after the kind was once
# refused as an unknown optimizer), and the decay is applied, not ignored.
ONE=(--data-dir "$DATA_DIR" --clients 10 --fraction 0.2 --rounds 1 --quiet)
for opt in sgd "sgd,wd=0.1" "momentum:0.9,wd=0.1"; do
  rc=0; "$SIM" "${ONE[@]}" --optimizer "$opt" --metrics "$TMP/opt-$opt.jsonl" > /dev/null 2> "$TMP/opt.err" || rc=$?
  [ $rc -eq 0 ] && [ "$(jsonl_eval "$TMP/opt-$opt.jsonl" "len(rows)")" = 1 ] \
    && ok "--optimizer $opt runs" || bad "--optimizer $opt: exit $rc: $(cat "$TMP/opt.err")"
done
[ "$(jsonl_eval "$TMP/opt-sgd.jsonl" "rows[0]['train_loss']")" != \
  "$(jsonl_eval "$TMP/opt-sgd,wd=0.1.jsonl" "rows[0]['train_loss']")" ] \
  && ok "sgd,wd=0.1 trains differently from sgd" || bad "sgd,wd=0.1 has the same train loss as sgd"

expect_fail "unknown flag" "--bogus" "$SIM" --bogus 1
expect_fail "bad number" "--rounds" "$SIM" --rounds ten
expect_fail "out of range" "--fraction" "$SIM" --fraction 1.5
expect_fail "bad schedule key" "gama" "$SIM" --schedule exp:gama=0.9
expect_fail "bad schedule kind" "cosine-ish" "$SIM" --schedule cosine-ish
expect_fail "bad optimizer" "--optimizer" "$SIM" --optimizer adamw
expect_fail "bad partition" "--partition" "$SIM" --partition shards:x
expect_fail "bad model" "--model" "$SIM" --model mlp:200,x
expect_fail "missing config file" "nope.ini" "$SIM" --config "$TMP/nope.ini"
# The specs that fl_config only stores are parsed right after it, from a
# flag or a file alike: exit 2, naming the flag, before any data is read.
expect_exit 2 "bad --aggregator" "fedlr-sim: --aggregator: 'mean' is not fedavg, median or trimmed-mean:BETA" \
  "$SIM" --aggregator mean --data-dir "$TMP/nodata"
printf 'aggregator = trimmed-mean:0.5\n' > "$TMP/agg.ini"
expect_exit 2 "bad aggregator in a config file" "fedlr-sim: --aggregator: 'trimmed-mean:0.5': BETA must be a number in [0, 0.5)" \
  "$SIM" --config "$TMP/agg.ini" --data-dir "$TMP/nodata"
expect_exit 2 "bad --attack" "fedlr-sim: --attack: 'sign-flip,flip': unknown attack 'flip'" \
  "$SIM" --attack sign-flip,flip --attackers 2 --data-dir "$TMP/nodata"
expect_exit 2 "plateau as --local-schedule" "--local-schedule: schedule 'plateau': plateau follows the evaluation loss" \
  "$SIM" --local-schedule plateau --data-dir "$TMP/nodata"
printf 'rounds = 3\nlr0 = 0.1\n' > "$TMP/bad.ini"
expect_fail "unknown config key" "lr0" "$SIM" --config "$TMP/bad.ini"
expect_fail "missing dataset" "dataset-fashion-mnist" "$SIM" --data-dir "$TMP/empty"
mkdir -p "$TMP/corrupt"
cp "$DATA_DIR"/t10k-labels-idx1-ubyte.gz "$DATA_DIR"/train-labels-idx1-ubyte.gz "$TMP/corrupt/"
head -c 100000 "$DATA_DIR/train-images-idx3-ubyte.gz" > "$TMP/corrupt/train-images-idx3-ubyte.gz"
cp "$DATA_DIR/t10k-images-idx3-ubyte.gz" "$TMP/corrupt/"
expect_fail "truncated images file" "train-images" "$SIM" --data-dir "$TMP/corrupt"
printf '0,0.5,0.5\n1,0.25\n' > "$TMP/ragged.csv"
expect_fail "ragged CSV" "ragged.csv:2:" "$SIM" --dataset "$TMP/ragged.csv"
expect_fail "more clients than examples" "--clients" "$SIM" --data-dir "$DATA_DIR" --clients 70000 --rounds 1
finish
