# A user's own data as CSV (label, features, with a header line): a
# 6,000/1,000 example slice of Fashion-MNIST exported to CSV trains with
# softmax to >= 0.70 test accuracy in 5 rounds.
source "$(dirname "$0")/lib.sh"

"$PY" - "$DATA_DIR" "$TMP" <<'PY'
import gzip, sys
import numpy as np
d, out = sys.argv[1], sys.argv[2]
def load(kind, n):
    x = np.frombuffer(gzip.open(f"{d}/{kind}-images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(-1, 784)[:n]
    y = np.frombuffer(gzip.open(f"{d}/{kind}-labels-idx1-ubyte.gz").read()[8:], np.uint8)[:n]
    return x / 255.0, y
for kind, n, name in (("train", 6000, "train.csv"), ("t10k", 1000, "test.csv")):
    x, y = load(kind, n)
    with open(f"{out}/{name}", "w") as f:
        f.write("label," + ",".join(f"px{i}" for i in range(784)) + "\n")
        for xi, yi in zip(x, y):
            f.write(str(int(yi)) + "," + ",".join(f"{v:.6g}" for v in xi) + "\n")
PY
"$SIM" --quiet --dataset "$TMP/train.csv" --test-data "$TMP/test.csv" --model softmax --clients 20 \
  --fraction 0.5 --rounds 5 --local-epochs 1 --lr 0.05 --metrics "$TMP/m.jsonl" >/dev/null
acc=$(jsonl_eval "$TMP/m.jsonl" "rows[-1]['test_accuracy']")
echo "CSV run: final test accuracy $acc"
"$PY" -c "import sys; sys.exit(0 if $acc >= 0.70 else 1)" && ok "CSV data trains ($acc)" || bad "CSV accuracy $acc"
finish
