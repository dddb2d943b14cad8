#!/usr/bin/env bash
# Round time of Python clients (examples/python/mlp_client.py: PyTorch,
# fedlr.torch.Trainer) against fedlr-client (C, OpenBLAS) on the same
# built-in model and configuration: one coordinator and N clients of one
# kind at a time, every client sampled every round; prints the mean of the
# coordinator's per-round "seconds" (the round from its start to its last
# update) over the rounds after the first.
#
#   bash bench/bench_py_client.sh BUILD_DIR
#
# Settings (environment): CLIENTS [2], ROUNDS [6], MODEL [mlp:200,200],
# EPOCHS [1], BATCH [10], plus run_mixed.sh's. Each client trains
# 60000/CLIENTS examples (C: fedlr's iid share; Python: 90% of its share,
# 10% held out), one thread each (OMP_NUM_THREADS=1).
set -euo pipefail
BUILD=$(cd "${1:?usage: bench_py_client.sh BUILD_DIR}" && pwd)
HERE=$(cd "$(dirname "$0")/.." && pwd)
CLIENTS=${CLIENTS:-2} ROUNDS=${ROUNDS:-6}
export MODEL=${MODEL:-mlp:200,200} EPOCHS=${EPOCHS:-1} BATCH=${BATCH:-10} ROUNDS OMP_NUM_THREADS=1
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
mean() {
  /usr/bin/python3 -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])][1:]
ex = sum(1 for _ in rows)
print('%.3f s/round (rounds 2-%d), test accuracy %.4f' % (sum(r['seconds'] for r in rows) / len(rows), len(rows) + 1, json.loads(open(sys.argv[1]).readlines()[-1])['test_accuracy']))" "$1"
}
echo "model $MODEL, $CLIENTS clients, E=$EPOCHS, B=$BATCH, $ROUNDS rounds; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
C_CLIENTS=$CLIENTS PY_CLIENTS=0 PORT=7181 bash "$HERE/examples/python/run_mixed.sh" "$BUILD" "$OUT/c" > /dev/null
echo "C clients (fedlr-client):    $(mean "$OUT/c/metrics.jsonl")"
C_CLIENTS=0 PY_CLIENTS=$CLIENTS PORT=7182 bash "$HERE/examples/python/run_mixed.sh" "$BUILD" "$OUT/py" > /dev/null
echo "Python clients (fedlr.torch): $(mean "$OUT/py/metrics.jsonl")"
grep -h "trained in" "$OUT/py/"client-py-*.log | tail -2
