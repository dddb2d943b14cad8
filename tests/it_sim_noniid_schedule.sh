# On pathological non-IID data (shards:2) with several local epochs, FedAvg
# under a fixed rate keeps drifting; a decaying round schedule with the same
# initial rate ends at least as accurate. Fair comparison: same seeds, same
# initial rate, same rounds, same clients per round; mean over 3 seeds of the
# mean test accuracy of the last 3 rounds.
source "$(dirname "$0")/lib.sh"

score() { # schedule seed
  "$SIM" --quiet --data-dir "$DATA_DIR" --model softmax --clients 100 --fraction 0.1 --rounds 40 \
    --local-epochs 5 --batch-size 10 --lr 0.1 --schedule "$1" --partition shards:2 --seed "$2" \
    --metrics "$TMP/m.jsonl" >/dev/null
  jsonl_eval "$TMP/m.jsonl" "sum(r['test_accuracy'] for r in rows[-3:]) / 3"
}
const=0; decay=0
for seed in 1 2 3; do
  c=$(score const $seed); d=$(score "exp:gamma=0.93" $seed)
  echo "seed $seed: const $c, exp:gamma=0.93 $d"
  const=$("$PY" -c "print($const + $c / 3)"); decay=$("$PY" -c "print($decay + $d / 3)")
done
echo "mean final accuracy: const $const, decaying $decay"
"$PY" -c "import sys; sys.exit(0 if $decay >= $const else 1)" \
  && ok "decaying schedule ($decay) >= constant ($const) on shards:2" || bad "decaying $decay < constant $const"
finish
