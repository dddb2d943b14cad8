#!/usr/bin/env bash
# Runs fedlr's benchmarks and prints a Markdown report (copy it into
# bench/RESULTS.md). Not a test: numbers depend on the machine and its load.
#   bench/run.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
DATA_DIR=${FEDLR_DATA_DIR:-/usr/share/datasets/fashion-mnist}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3

echo "## fedlr benchmarks, $(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
"$BUILD/bench/bench_fedlr" "$DATA_DIR"
echo
# The FedAvg reference configuration, the real binary, IID, 20 rounds.
for w in 1 2; do
  "$BUILD/fedlr-sim" --quiet --data-dir "$DATA_DIR" --model mlp:200,200 --clients 100 --fraction 0.1 \
    --rounds 20 --local-epochs 5 --batch-size 10 --lr 0.05 --partition iid --seed 1 --workers $w \
    --metrics "$TMP/ref$w.jsonl" >/dev/null
  "$PY" - "$TMP/ref$w.jsonl" "$w" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
s = sorted(r["seconds"] for r in rows)
print(f"| fedlr-sim reference round (2NN, 100 clients IID, C=0.1, E=5, B=10), {sys.argv[2]} worker(s) "
      f"| median {s[len(s)//2]:.3f} s/round (min {s[0]:.3f}, max {s[-1]:.3f}), "
      f"final test accuracy {rows[-1]['test_accuracy']:.4f} | target <= 1.0 s |")
PY
done
