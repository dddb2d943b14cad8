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
"$BUILD/bench/bench_fedlr" "$DATA_DIR" | tee "$TMP/bench.txt"
echo
PEAK2=$(sed -n 's/^| sgemm 1024^3, 2 threads | \([0-9.]*\) GFLOP.*/\1/p' "$TMP/bench.txt")
PEAK1=$(sed -n 's/^| sgemm 1024^3, 1 thread | \([0-9.]*\) GFLOP.*/\1/p' "$TMP/bench.txt")
# The FedAvg reference configuration, the real binary, IID, 20 rounds.
for w in 1 2; do
  "$BUILD/fedlr-sim" --quiet --data-dir "$DATA_DIR" --model mlp:200,200 --clients 100 --fraction 0.1 \
    --rounds 20 --local-epochs 5 --batch-size 10 --lr 0.05 --partition iid --seed 1 --workers $w \
    --metrics "$TMP/ref$w.jsonl" >/dev/null
  "$PY" - "$TMP/ref$w.jsonl" "$w" "$PEAK1" "$PEAK2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
s = sorted(r["seconds"] for r in rows)
med = s[len(s)//2]
# The round's useful FLOPs: 10 clients x 600 examples x 5 epochs of training
# (879,200 a step's example, forward + backward) and the 10,000 test images'
# forward (397,600 each); aggregation and sampling count as time, not FLOPs.
flops = 10 * 600 * 5 * 879200 + 10000 * 397600
peak = float(sys.argv[3] if sys.argv[2] == "1" else sys.argv[4])
print(f"| fedlr-sim reference round (2NN, 100 clients IID, C=0.1, E=5, B=10), {sys.argv[2]} worker(s) "
      f"| median {med:.3f} s/round (min {s[0]:.3f}, max {s[-1]:.3f}), "
      f"final test accuracy {rows[-1]['test_accuracy']:.4f}; {flops / med / 1e9:.1f} GFLOP/s "
      f"| {100 * flops / med / 1e9 / peak:.0f}% of the {sys.argv[2]}-thread sgemm peak (target 70%) |")
PY
done
