#!/usr/bin/env bash
# fedlr-sweep's benchmark (issue 12): a 48-run sweep (4 rates x 4 round
# schedules x 3 seeds; the 2NN, 100 clients IID, C=0.1, E=1, B=10, 50
# rounds) against the same 48 runs as standalone fedlr-sim processes:
#   parallel efficiency = (sum of the standalone runs' CPU time / cores)
#                         / the sweep's wall time      (target >= 90%)
#   peak memory of the sweep against one standalone run (one dataset copy)
#   every sweep run bit-identical to its standalone run (weights)
#   successive halving (--halving 3,min_rounds=5): rounds run, wall time,
#   and whether it keeps the full grid's winner.
# Prints Markdown for bench/RESULTS.md. Not a test; ~15 minutes on 2 cores.
#   bench/bench_sweep.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
DATA_DIR=${FEDLR_DATA_DIR:-/usr/share/datasets/fashion-mnist}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PY=/usr/bin/python3
CORES=$(nproc)
COMMON=(--data-dir "$DATA_DIR" --model mlp:200,200 --clients 100 --fraction 0.1 --rounds 50
  --local-epochs 1 --batch-size 10 --partition iid)
RATES=(0.01 0.03 0.1 0.3)
SCHEDS=(const exp:gamma=0.97 cos:T=50 step:gamma=0.5,every=15)
GRID=(--grid "lr=$(IFS='|'; echo "${RATES[*]}")" --grid "schedule=$(IFS='|'; echo "${SCHEDS[*]}")" --seeds 1-3)

# timed OUT CMD...: runs CMD, writes "wall user sys maxrss_kib" to OUT
timed() {
  local out=$1
  shift
  /usr/bin/time -f "%e %U %S %M" -o "$out" "$@" > /dev/null 2>> "$TMP/stderr.log"
}

echo "### fedlr-sweep, $(date -u +%Y-%m-%d): $CORES cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
core=$("$BUILD/fedlr-sim" --clients 10 --rounds 1 --data-dir "$DATA_DIR" 2>&1 >/dev/null | sed -n 's/.*OpenBLAS core \([^,]*\),.*/\1/p')
echo "OpenBLAS core $core; the 2NN (mlp:200,200), 100 clients IID, C=0.1, E=1, B=10, 50 rounds;"
echo "rates ${RATES[*]} x schedules ${SCHEDS[*]} x seeds 1-3 = 48 runs."
echo

timed "$TMP/sweep.t" "$BUILD/fedlr-sweep" --quiet "${COMMON[@]}" "${GRID[@]}" --workers "$CORES" --out "$TMP/sweep"
read -r s_wall s_user s_sys s_rss < "$TMP/sweep.t"

cpu=0
same=0
rss1=0
for r in "$TMP"/sweep/runs/*; do
  id=$(basename "$r")
  timed "$TMP/$id.t" "$BUILD/fedlr-sim" --quiet --config "$r/config.ini" --workers 1 \
    --out "$TMP/sa/$id" --metrics "$TMP/sa/$id.jsonl"
  read -r w u s m < "$TMP/$id.t"
  cpu=$("$PY" -c "print($cpu + $u + $s)")
  rss1=$m
  cmp -s "$r/model.safetensors" "$TMP/sa/$id/model.safetensors" && same=$((same + 1))
done
"$PY" - "$s_wall" "$s_user" "$s_sys" "$s_rss" "$cpu" "$CORES" "$rss1" "$same" <<'PY'
import sys
wall, user, sys_, rss, cpu, cores, rss1, same = map(float, sys.argv[1:])
ideal = cpu / cores
print("| measure | value |\n|---|---|")
print(f"| sweep wall time ({int(cores)} workers) | {wall:.1f} s (CPU {user + sys_:.1f} s) |")
print(f"| 48 standalone fedlr-sim runs, --workers 1: CPU time | {cpu:.1f} s; / {int(cores)} cores = {ideal:.1f} s |")
print(f"| parallel efficiency (standalone CPU / cores / sweep wall) | **{100 * ideal / wall:.1f}%** (target >= 90%) |")
print(f"| peak memory: sweep / one standalone run | {rss / 1024:.0f} MiB / {rss1 / 1024:.0f} MiB |")
print(f"| sweep runs bit-identical to their standalone run (weights) | {int(same)} of 48 |")
PY

timed "$TMP/half.t" "$BUILD/fedlr-sweep" --quiet "${COMMON[@]}" "${GRID[@]}" --workers "$CORES" \
  --halving 3,min_rounds=5 --out "$TMP/half"
read -r h_wall h_user h_sys h_rss < "$TMP/half.t"
"$PY" - "$TMP/sweep/results.csv" "$TMP/half/results.csv" "$s_wall" "$h_wall" <<'PY'
import csv, sys
full = list(csv.DictReader(open(sys.argv[1])))
half = list(csv.DictReader(open(sys.argv[2])))
key = lambda r: (r["lr"], r["schedule"])
def winner(rows):
    acc = {}
    for r in rows:
        if r["final_accuracy"]:
            acc.setdefault(key(r), []).append(float(r["final_accuracy"]))
    return max(acc, key=lambda k: sum(acc[k]) / len(acc[k])), acc
w_full, acc = winner(full)
survivors = sorted({key(r) for r in half if r["status"] == "done"})
rounds_full = sum(int(r["rounds"]) for r in full)
rounds_half = sum(int(r["rounds"]) for r in half)
mean = lambda k: sum(acc[k]) / len(acc[k])
print(f"| successive halving 3 from round 5 (rungs 5, 15, 45): rounds run | {rounds_half} of {rounds_full} "
      f"(**{100 * (1 - rounds_half / rounds_full):.0f}% saved**); wall {float(sys.argv[4]):.1f} s vs {float(sys.argv[3]):.1f} s |")
print(f"| full grid's winner (mean final accuracy over 3 seeds) | lr={w_full[0]} schedule={w_full[1]}: {mean(w_full):.4f} |")
order = sorted(acc, key=mean, reverse=True)
print(f"| halving's survivor(s) | {', '.join(f'lr={a} schedule={b} ({mean((a, b)):.4f}, rank {order.index((a, b)) + 1} of {len(order)} in the full grid)' for a, b in survivors)} "
      f"-- {'keeps' if w_full in survivors else 'does NOT keep'} the winner |")
print(f"| the full grid's top 5 | {'; '.join(f'lr={a} schedule={b} {mean((a, b)):.4f}' for a, b in order[:5])} |")
PY
