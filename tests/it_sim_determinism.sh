# Same config and seed => bit-identical metrics (minus wall time) and final
# weights, whatever --workers is. A different seed gives different weights.
source "$(dirname "$0")/lib.sh"

run() { # workers seed dir
  "$SIM" --quiet --data-dir "$DATA_DIR" --model mlp:32 --clients 50 --fraction 0.2 --rounds 4 \
    --local-epochs 2 --batch-size 16 --lr 0.05 --schedule "cos:T=4,min=0.005" --optimizer momentum:0.9 \
    --partition dirichlet:0.5 --seed "$2" --workers "$1" --metrics "$3/m.jsonl" --out "$3" >/dev/null
  "$PY" - "$3/m.jsonl" > "$3/m.det" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    for k in ("seconds", "elapsed"): r.pop(k, None)
    print(json.dumps(r, sort_keys=True))
PY
}
for w in 1 2 3; do mkdir -p "$TMP/w$w"; run $w 7 "$TMP/w$w"; done
for w in 2 3; do
  if cmp -s "$TMP/w1/model.safetensors" "$TMP/w$w/model.safetensors" && cmp -s "$TMP/w1/m.det" "$TMP/w$w/m.det"; then
    ok "workers 1 and $w: identical weights and metrics"
  else
    bad "workers 1 and $w differ"
  fi
done
mkdir -p "$TMP/s8"; run 2 8 "$TMP/s8"
cmp -s "$TMP/w1/model.safetensors" "$TMP/s8/model.safetensors" && bad "seed 8 gave seed 7's weights" || ok "another seed gives other weights"
finish
