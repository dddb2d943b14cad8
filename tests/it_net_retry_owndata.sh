# Two things a deployment meets: (1) clients with their own data files
# (--data, CSV) get ids from the coordinator; (2) a round that cannot reach
# its quorum (--quorum 1, a client killed mid-round) is abandoned, logged,
# and run again with a fresh sample of the live clients; the run completes.
source "$(dirname "$0")/lib.sh"

"$PY" - "$DATA_DIR" "$TMP" <<'PY'
import gzip, sys
import numpy as np
d, out = sys.argv[1], sys.argv[2]
x = np.frombuffer(gzip.open(f"{d}/train-images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(-1, 784)
y = np.frombuffer(gzip.open(f"{d}/train-labels-idx1-ubyte.gz").read()[8:], np.uint8)
for k in range(3):
    lo = k * 4000
    with open(f"{out}/client{k}.csv", "w") as f:
        for i in range(lo, lo + 4000):
            f.write(str(int(y[i])) + "," + ",".join("%.4g" % (v / 255.0) for v in x[i]) + "\n")
PY
PORT=$(free_port)
timeout 300 "$COORD" --bind "tcp://127.0.0.1:$PORT" --model mlp:200,200 --clients 3 --start-clients 3 \
  --fraction 1 --rounds 4 --local-epochs 16 --batch-size 10 --lr 0.05 --quorum 1 --round-timeout 60 \
  --client-timeout 2 --heartbeat 0.5 --metrics "$TMP/m.jsonl" > "$TMP/coord.out" 2> "$TMP/coord.log" &
CPID=$!; PIDS+=($CPID)
for k in 0 1 2; do
  timeout 300 "$CLIENT" --connect "tcp://127.0.0.1:$PORT" --data "$TMP/client$k.csv" --name "lab-$k" \
    2> "$TMP/c$k.log" &
  PIDS+=($!)
done
# Rounds are 16 epochs of 4,000 examples (about a second each, even with the
# fused kernels), so the kill lands in round 2.
wait_until 120 lines_at_least "$TMP/m.jsonl" 1 || bad "round 1 never finished"
kill9 "${PIDS[2]}"
rc=0; wait "${PIDS[2]}" || rc=$?
[ $rc -eq 137 ] && ok "killed lab-1 during round 2" || bad "lab-1 had exited ($rc) before the kill"
rc=0; wait $CPID || rc=$?
[ $rc -eq 0 ] && ok "coordinator finished (exit 0)" || { bad "coordinator exit $rc"; tail -20 "$TMP/coord.log"; }
for i in 1 3; do wait "${PIDS[$i]}" && ok "client exited 0" || bad "client exit $?"; done
grep -q "joined with 4000 examples" "$TMP/coord.log" && ok "own-data clients joined: $(grep -c 'joined with 4000' "$TMP/coord.log") joins" || bad "joins"
grep -q "abandoned (attempt 1); running it again with a fresh sample" "$TMP/coord.log" \
  && ok "$(grep -m1 'abandoned (attempt 1)' "$TMP/coord.log" | cut -c1-200)" || bad "no retry logged"
r=$(jsonl_eval "$TMP/m.jsonl" "[(x['round'], x['clients_sampled'], x['clients_reported']) for x in rows]")
check=$(jsonl_eval "$TMP/m.jsonl" "len(rows) == 4 and all(x['clients_reported'] == x['clients_sampled'] for x in rows) and rows[-1]['clients_sampled'] == 2")
[ "$check" = True ] && ok "every round closed with all its (re)sampled clients: $r" || bad "rounds $r"
finish
