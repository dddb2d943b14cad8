#!/usr/bin/env bash
# The FedAvg CNN's reference run (issue 14): Fashion-MNIST IID, 100
# clients, C = 0.1, E = 1, B = 10, lr 0.05, seed 1, until 0.89 test
# accuracy (at most 100 rounds), evaluated on the 10,000 test images every
# round. Prints Markdown for bench/RESULTS.md: the CPU and OpenBLAS core,
# the rounds to 0.89, seconds per round (median), and the accuracy curve
# (every 5th round); keeps the run's chart as OUT/chart.svg.
# Not a test; ~5-10 minutes on 2 cores.
#   bench/bench_cnn.sh [BUILD_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
OUT=${2:-$(mktemp -d)}
DATA_DIR=${FEDLR_DATA_DIR:-/usr/share/datasets/fashion-mnist}
mkdir -p "$OUT"
BENCH_ONLY=peak "$BUILD/bench/bench_fedlr" "$DATA_DIR" > "$OUT/peak"
"$BUILD/fedlr-sim" --quiet --data-dir "$DATA_DIR" --model cnn --clients 100 --fraction 0.1 \
  --local-epochs 1 --batch-size 10 --lr 0.05 --rounds 100 --target-accuracy 0.89 --partition iid \
  --seed 1 --metrics "$OUT/m.jsonl" --out "$OUT" > /dev/null 2> "$OUT/log"
/usr/bin/python3 - "$OUT/m.jsonl" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" \
  "$(grep -m1 -o 'OpenBLAS core: [A-Za-z0-9]*; fl_gemm kernels: [a-z0-9]*' "$OUT/peak")" \
  "$(sed -n 's/^| sgemm 1024^3, 2 threads | \([0-9.]*\) GFLOP.*/\1/p' "$OUT/peak")" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
# A round's useful FLOPs: 10 clients x 600 examples of training (72,384,512
# an example, forward + backward: fl_model_flops_per_example) and the 10,000
# test images' forward (24,546,304 each).
flops = 10 * 600 * 72384512 + 10000 * 24546304
peak2 = float(sys.argv[4])
hit = next((r["round"] for r in rows if r["test_accuracy"] is not None and r["test_accuracy"] >= 0.89), None)
print("CPU:%s; %s" % (sys.argv[2], sys.argv[3]))
print()
print("| rounds to 0.89 | final accuracy | seconds per round (median, with the test-set evaluation) | total |")
print("|---|---|---|---|")
med = statistics.median(r["seconds"] for r in rows)
print("| %s | %.4f | %.2f s | %.0f s |" % (hit if hit else "not within %d" % len(rows), rows[-1]["test_accuracy"],
      med, rows[-1]["elapsed"]))
print()
print("A round: %.1f GFLOP/s of training and evaluation, %.0f%% of the 2-thread sgemm peak (%.1f) measured just before."
      % (flops / med / 1e9, 100 * flops / med / 1e9 / peak2, peak2))
print()
print("| round | " + " | ".join(str(r["round"]) for r in rows if r["round"] % 5 == 0 or r is rows[-1]) + " |")
print("|---" * (1 + sum(1 for r in rows if r["round"] % 5 == 0 or r is rows[-1])) + "|")
print("| test accuracy | " + " | ".join("%.4f" % r["test_accuracy"] for r in rows if r["round"] % 5 == 0 or r is rows[-1]) + " |")
PY
