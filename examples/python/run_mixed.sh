#!/usr/bin/env bash
# A mixed federation: C fedlr-client processes and Python clients
# (mlp_client.py, PyTorch) train the same built-in model under one
# fedlr-coordinator, over loopback TCP, on Fashion-MNIST.
#
#   bash examples/python/run_mixed.sh BUILD_DIR [OUT_DIR]
#
# BUILD_DIR holds fedlr-coordinator and fedlr-client (e.g. build). Settings
# from the environment (defaults in brackets): C_CLIENTS [2], PY_CLIENTS [2],
# ROUNDS [5], MODEL [mlp:200,200], EPOCHS [1], BATCH [10], LR [0.05],
# SCHEDULE [exp:gamma=0.95], LOCAL_SCHEDULE [const], LIMIT [0: whole shares],
# SEED [1], PORT [7171]. Client i of N = C_CLIENTS + PY_CLIENTS trains share i:
# the C clients fedlr's iid partition (--partition-index 0..C-1), the Python
# clients their own split of the same training set (fmnist.client_split,
# shares C..N-1; the two splits may overlap, which does not matter here).
# Every client is sampled every round (--fraction 1).
#
# Writes OUT_DIR (default out/mixed): metrics.jsonl (one line per round:
# participants, rejected, seconds, ...), model.safetensors, coord.log and
# one log per client; prints the coordinator's progress lines and which
# clients reported in each round. Exit status 0 when every process exited 0
# and every client's update was accepted in every round.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=$(cd "${1:?usage: run_mixed.sh BUILD_DIR [OUT_DIR]}" && pwd)
OUT=${2:-out/mixed}
C_CLIENTS=${C_CLIENTS:-2} PY_CLIENTS=${PY_CLIENTS:-2} ROUNDS=${ROUNDS:-5}
MODEL=${MODEL:-mlp:200,200} EPOCHS=${EPOCHS:-1} BATCH=${BATCH:-10} LR=${LR:-0.05}
SCHEDULE=${SCHEDULE:-exp:gamma=0.95} LOCAL_SCHEDULE=${LOCAL_SCHEDULE:-const}
LIMIT=${LIMIT:-0} SEED=${SEED:-1} PORT=${PORT:-7171}
DATA_DIR=${FEDLR_DATA_DIR:-/usr/share/datasets/fashion-mnist}
PY=/usr/bin/python3
N=$((C_CLIENTS + PY_CLIENTS))
mkdir -p "$OUT"
rm -f "$OUT/metrics.jsonl"

pids=()
trap 'for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done' EXIT
"$BUILD/fedlr-coordinator" --bind "tcp://127.0.0.1:$PORT" --model "$MODEL" --clients "$N" --start-clients "$N" \
  --fraction 1 --rounds "$ROUNDS" --local-epochs "$EPOCHS" --batch-size "$BATCH" --lr "$LR" \
  --schedule "$SCHEDULE" --local-schedule "$LOCAL_SCHEDULE" --seed "$SEED" --data-dir "$DATA_DIR" \
  --start-timeout 120 --metrics "$OUT/metrics.jsonl" --out "$OUT" 2> "$OUT/coord.log" &
coord=$!
pids+=($coord)
limit=()
[ "$LIMIT" -gt 0 ] && limit=(--limit "$LIMIT")
for ((i = 0; i < C_CLIENTS; i++)); do
  "$BUILD/fedlr-client" --connect "tcp://127.0.0.1:$PORT" --dataset fashion-mnist --data-dir "$DATA_DIR" \
    --partition iid --num-partitions "$N" --partition-index $i --seed "$SEED" --name "c-$i" \
    2> "$OUT/client-c-$i.log" &
  pids+=($!)
done
for ((i = C_CLIENTS; i < N; i++)); do
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PY" "$HERE/mlp_client.py" --connect "tcp://127.0.0.1:$PORT" \
    --model "$MODEL" --num-partitions "$N" --partition-index $i --slot $i --seed "$SEED" --name "py-$i" \
    --data-dir "$DATA_DIR" "${limit[@]}" 2> "$OUT/client-py-$i.log" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do
  rc=0
  wait "$p" || rc=$?
  if [ $rc -ne 0 ]; then
    echo "run_mixed: process $p exited $rc" >&2
    status=1
  fi
done
pids=()
grep -E '^round|joined|finished' "$OUT/coord.log" || true
"$PY" - "$OUT/metrics.jsonl" "$N" "$ROUNDS" <<'PY' || status=1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n, rounds = int(sys.argv[2]), int(sys.argv[3])
ok = len(rows) == rounds
for r in rows:
    good = len(r["participants"]) == n and r["rejected"] == 0 and r["clients_reported"] == n
    ok &= good
    print("round %d: %d/%d clients reported (ids %s), %d rejected, %.2f s%s" % (
        r["round"], r["clients_reported"], r["clients_sampled"], r["participants"], r["rejected"], r["seconds"],
        "" if good else "  <-- not every client's update was accepted"))
if rows:
    print("final test accuracy %s" % rows[-1]["test_accuracy"])
sys.exit(0 if ok else 1)
PY
exit $status
