#!/usr/bin/env bash
# Networked benchmarks (not a test). Prints Markdown for bench/RESULTS.md.
#   bench/bench_net.sh [BUILD_DIR]
#
# 1. The FedAvg reference configuration (2NN, 100 clients IID, C=0.1, E=5,
#    B=10) with 100 fedlr-client processes over loopback TCP, against
#    fedlr-sim (2 workers) on the same machine: median seconds per round.
# 2. Bytes on the wire per round, against the raw weight bytes the round must
#    move (sampled clients x 2 directions x parameters x 4 bytes): both the
#    protobuf payload the coordinator counts, and everything that crossed the
#    loopback interface (TCP/IP headers, heartbeats, joins) — the run is in a
#    network namespace of its own, so lo's counters see only fedlr.
# 3. 200 fedlr-client processes with the softmax model complete rounds.
# 4. Coordinator peak memory with 20 and with 200 clients of the 2NN: it
#    stays O(model), not O(clients x model).
# Needs root (ip netns). Clients start in batches so 200 processes do not all
# decompress Fashion-MNIST at once.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(cd "${1:-build}" && pwd)
DATA_DIR=${FEDLR_DATA_DIR:-/usr/share/datasets/fashion-mnist}
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
TMP=$(mktemp -d)
NS=flbench-$$
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
in_ns() { ip netns exec "$NS" "$@"; }
lo_bytes() { in_ns cat /sys/class/net/lo/statistics/tx_bytes; }

jsonl() {
  "$PY" - "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(eval(sys.argv[2]))
PY
}

# net_run TAG MODEL CLIENTS FRACTION ROUNDS EPOCHS: one networked run in the
# namespace; leaves $TMP/TAG.jsonl, $TMP/TAG.log, and $TMP/TAG.lo (lo bytes).
net_run() {
  local tag=$1 model=$2 k=$3 frac=$4 rounds=$5 epochs=$6
  local before after
  before=$(lo_bytes)
  in_ns timeout 1200 "$BUILD/fedlr-coordinator" --bind tcp://127.0.0.1:7070 --model "$model" \
    --clients "$k" --start-clients "$k" --fraction "$frac" --rounds "$rounds" --local-epochs "$epochs" \
    --batch-size 10 --lr 0.05 --seed 1 --round-timeout 600 --client-timeout 60 --quiet \
    --metrics "$TMP/$tag.jsonl" 2> "$TMP/$tag.log" &
  local cpid=$!
  PIDS+=($cpid)
  local pids=()
  for ((i = 0; i < k; i++)); do
    in_ns timeout 1200 "$BUILD/fedlr-client" --connect tcp://127.0.0.1:7070 --dataset fashion-mnist \
      --data-dir "$DATA_DIR" --partition iid --num-partitions "$k" --partition-index $i --seed 1 \
      --quiet 2> /dev/null &
    pids+=($!)
    PIDS+=($!)
    if (((i + 1) % 10 == 0)); then sleep 1.5; fi
  done
  wait $cpid
  for p in "${pids[@]}"; do wait "$p" || true; done
  after=$(lo_bytes)
  echo $((after - before)) > "$TMP/$tag.lo"
}

ONLY=${BENCH_ONLY:-all} # ref | many | mem | all
echo "## Networked benchmarks, $(date -u +%Y-%m-%d), $(nproc) cores"
echo
ROUNDS=10
if [ "$ONLY" = all ] || [ "$ONLY" = ref ]; then
"$BUILD/fedlr-sim" --quiet --data-dir "$DATA_DIR" --model mlp:200,200 --clients 100 --fraction 0.1 \
  --rounds $ROUNDS --local-epochs 5 --batch-size 10 --lr 0.05 --partition iid --seed 1 --workers 2 \
  --metrics "$TMP/sim.jsonl" > /dev/null
net_run ref mlp:200,200 100 0.1 $ROUNDS 5
sim_s=$(jsonl "$TMP/sim.jsonl" "sorted(r['seconds'] for r in rows)[len(rows)//2]")
net_s=$(jsonl "$TMP/ref.jsonl" "sorted(r['seconds'] for r in rows)[len(rows)//2]")
P=199210
raw=$(jsonl "$TMP/ref.jsonl" "sum(r['clients_sampled'] * 2 * $P * 4 for r in rows)")
payload=$(jsonl "$TMP/ref.jsonl" "sum(r['bytes_sent'] + r['bytes_received'] for r in rows)")
lo=$(cat "$TMP/ref.lo")
"$PY" - "$sim_s" "$net_s" "$raw" "$payload" "$lo" "$ROUNDS" <<'PY'
import sys
sim, net, raw, payload, lo, rounds = map(float, sys.argv[1:])
print("| measurement | value | vs reference |\n|---|---|---|")
print(f"| reference round, fedlr-sim (2 workers) | {sim:.3f} s/round (median of {rounds:.0f}) | |")
print(f"| reference round, coordinator + 100 client processes, loopback TCP | {net:.3f} s/round | {net / sim:.2f}x the simulator (target <= 1.1x) |")
print(f"| raw weight bytes per round (10 clients x 2 x 199,210 x 4 B) | {raw / rounds / 1e6:.2f} MB | |")
print(f"| protobuf payload per round (coordinator's count) | {payload / rounds / 1e6:.2f} MB | {100 * (payload / raw - 1):+.2f}% of raw |")
print(f"| all bytes on loopback per run / round (TCP/IP, joins, heartbeats, 100 clients) | {lo / rounds / 1e6:.2f} MB | {100 * (lo / raw - 1):+.2f}% of raw (target within 2%) |")
PY
grep -h "peak memory" "$TMP/ref.log" | sed 's/^/  ref: /' >&2
fi

if [ "$ONLY" = all ] || [ "$ONLY" = many ]; then
net_run many softmax 200 0.5 5 1
n=$(jsonl "$TMP/many.jsonl" "len(rows)")
rep=$(jsonl "$TMP/many.jsonl" "sum(r['clients_reported'] for r in rows) / len(rows)")
sec=$(jsonl "$TMP/many.jsonl" "sorted(r['seconds'] for r in rows)[len(rows)//2]")
mem=$(sed -n 's/.*peak memory \([0-9]*\) MiB.*/\1/p' "$TMP/many.log")
echo "| 200 client processes, softmax, C=0.5 | $n rounds completed, $rep updates per round, median $(printf %.3f $sec) s/round | coordinator peak $mem MiB |"
fi

if [ "$ONLY" = all ] || [ "$ONLY" = mem ]; then
net_run mem20 mlp:200,200 20 0.5 3 1
net_run mem200 mlp:200,200 200 0.5 3 1
m20=$(sed -n 's/.*peak memory \([0-9]*\) MiB.*/\1/p' "$TMP/mem20.log")
m200=$(sed -n 's/.*peak memory \([0-9]*\) MiB.*/\1/p' "$TMP/mem200.log")
echo "| coordinator peak memory, 2NN, 20 clients (10 per round) | $m20 MiB | |"
echo "| coordinator peak memory, 2NN, 200 clients (100 per round) | $m200 MiB | model 0.8 MB, test set 31 MB: 100 updates of 0.8 MB would be 80 MB more if held |"
fi
