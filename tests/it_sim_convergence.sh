# fedlr-sim trains on real Fashion-MNIST to the accuracies the issue asks:
# softmax IID >= 0.80 within 10 rounds; the FedAvg 2NN (100 clients, C=0.1,
# E=5, B=10, IID) >= 0.84 within 20 rounds.
source "$(dirname "$0")/lib.sh"

"$SIM" --quiet --data-dir "$DATA_DIR" --model softmax --clients 10 --fraction 1 --rounds 10 \
  --local-epochs 1 --batch-size 10 --lr 0.05 --partition iid --seed 1 --metrics "$TMP/softmax.jsonl"
acc=$(jsonl_eval "$TMP/softmax.jsonl" "max(r['test_accuracy'] for r in rows if r['test_accuracy'] is not None)")
n=$(jsonl_eval "$TMP/softmax.jsonl" "len(rows)")
echo "softmax IID: best test accuracy $acc in $n rounds"
"$PY" -c "import sys; sys.exit(0 if $acc >= 0.80 and $n <= 10 else 1)" && ok "softmax >= 0.80 in 10 rounds ($acc)" || bad "softmax accuracy $acc"

"$SIM" --quiet --data-dir "$DATA_DIR" --model mlp:200,200 --clients 100 --fraction 0.1 --rounds 20 \
  --local-epochs 5 --batch-size 10 --lr 0.05 --partition iid --seed 1 --metrics "$TMP/2nn.jsonl"
acc=$(jsonl_eval "$TMP/2nn.jsonl" "max(r['test_accuracy'] for r in rows if r['test_accuracy'] is not None)")
sec=$(jsonl_eval "$TMP/2nn.jsonl" "round(sum(r['seconds'] for r in rows)/len(rows), 3)")
echo "2NN IID: best test accuracy $acc in 20 rounds, $sec s/round"
"$PY" -c "import sys; sys.exit(0 if $acc >= 0.84 else 1)" && ok "2NN >= 0.84 in 20 rounds ($acc)" || bad "2NN accuracy $acc"
finish
